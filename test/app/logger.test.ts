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

  test("a lone CR cannot forge a line either (readline and splitlines split on it; a terminal overprints)", () => {
    capture();
    const log = new Logger("http");
    log.info("GET /x\rERROR [shard 0] admin - forged");
    log.info("a\r\nb");
    expect(lines).toEqual(["INFO  http - GET /x\n    ERROR [shard 0] admin - forged\n", "INFO  http - a\n    b\n"]);
    // Every line a line reader sees past the first is an indented continuation.
    for (const line of lines) for (const part of line.slice(0, -1).split(/\r\n|\r|\n/).slice(1)) expect(part).toStartWith("    ");
  });

  test('an override for a logger named "__proto__" is kept, not silently dropped', () => {
    capture();
    expect(parseLogLevel("info,__proto__=debug").overrides).toHaveProperty("__proto__", "debug");
    setLogLevel("info,__proto__=debug");
    logger("__proto__").debug("shown");
    expect(lines).toEqual(["DEBUG __proto__ - shown\n"]);
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

  test("a value that cannot be formatted (%j of a BigInt, a throwing toString or stack) is logged, not thrown at the caller", () => {
    capture();
    const log = new Logger("stats");
    // u64 counters arrive as BigInt: JSON.stringify throws on them, and the caller's path with it.
    expect(() => log.info("counters %j", { completed: 12n })).not.toThrow();
    expect(() => log.warn("peer %s", { toString: () => { throw new Error("no string"); } })).not.toThrow();
    const hostile = new Error("boom");
    Object.defineProperty(hostile, "stack", { get: () => { throw new Error("no stack"); } });
    expect(() => log.error(hostile)).not.toThrow();
    expect(lines).toHaveLength(3);
    expect(lines[0]).toStartWith("INFO  stats - counters ");
    expect(lines[0]).toContain("12n");
    expect(lines[1]).toStartWith("WARN  stats - peer ");
    expect(lines[2]).toStartWith("ERROR stats - ");
    for (const line of lines) expect(line.split("\n")).toHaveLength(2); // still one line each
  });

  test("setLogLevel with a bad spec object changes nothing", () => {
    capture();
    setLogLevel("warn,db=trace");
    const db = logger("db");
    const web = logger("web");
    // The default level was set and the overrides cleared before the bad one threw.
    expect(() => setLogLevel({ level: "debug", overrides: { db: "loud" as never } })).toThrow("bad log level");
    expect(logLevel()).toBe("warn");
    expect(() => setLogLevel({ level: "debug" } as never)).toThrow("overrides");
    expect(logLevel()).toBe("warn");
    expect([db.isEnabled("trace"), web.isEnabled("info"), new Logger("db").isEnabled("trace"), new Logger("x").isEnabled("info")]).toEqual([true, false, true, false]);
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
