import { afterEach, describe, expect, test } from "bun:test";
import { Logger, logger, logLevel, parseLogLevel, setLogLevel, setLogSink, setLogTimestamps } from "../../src/log/index.ts";
import { setLogPrefix } from "../../src/log/logger.ts";

const lines: string[] = [];
function capture(): void {
  lines.length = 0;
  setLogSink((line) => lines.push(line));
  setLogTimestamps(false);
}

afterEach(() => {
  setLogSink(undefined);
  setLogTimestamps(true);
  setLogLevel("info");
  setLogPrefix("");
});

describe("Logger", () => {
  test("levels filter, the prefix names the shard, arguments are formatted", () => {
    capture();
    setLogPrefix("shard 3");
    const log = new Logger("http");
    log.info("listening on %s:%d", "::", 8080);
    log.debug("hidden");
    log.warn({ a: 1 });
    log.error(new Error("boom").message);
    expect(lines).toEqual([
      "INFO  [shard 3] http - listening on :::8080\n",
      "WARN  [shard 3] http - { a: 1 }\n",
      "ERROR [shard 3] http - boom\n",
    ]);
  });

  test("a message cannot forge a line of its own; a sink that throws does not reach the caller", () => {
    capture();
    const log = new Logger("http");
    log.info("GET /x\nERROR [shard 0] admin - forged");
    expect(lines).toEqual(["INFO  http - GET /x\n    ERROR [shard 0] admin - forged\n"]);
    setLogSink(() => {
      throw new Error("sink down");
    });
    expect(() => log.error("still fine")).not.toThrow();
  });

  test("per-logger levels, and a logger's own level", () => {
    capture();
    setLogLevel("warn,db=trace");
    logger("db").trace("t");
    logger("web").info("i");
    logger("web").warn("w");
    expect(lines).toEqual(["TRACE db - t\n", "WARN  web - w\n"]);
    expect(logLevel()).toBe("warn");
    const own = new Logger("own");
    own.setLevel("error");
    own.warn("no");
    own.error("yes");
    expect(lines.at(-1)).toBe("ERROR own - yes\n");
    expect(own.isEnabled("warn")).toBe(false);
    own.setLevel(undefined);
    expect(own.isEnabled("warn")).toBe(true);
  });

  test("timestamps by default", () => {
    lines.length = 0;
    setLogSink((line) => lines.push(line));
    new Logger("t").info("x");
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO  t - x\n$/);
  });

  test("bad specifications are rejected", () => {
    expect(() => parseLogLevel("loud")).toThrow('bad log level "loud"');
    expect(() => parseLogLevel("=debug")).toThrow("logger name is missing");
    expect(() => parseLogLevel("")).toThrow("non-empty");
    expect(parseLogLevel("debug,a=error")).toEqual({ level: "debug", overrides: { a: "error" } });
    expect(() => new Logger("")).toThrow("non-empty");
    expect(() => new Logger("x").log("loud" as never, "x")).toThrow("bad log level");
  });
});
