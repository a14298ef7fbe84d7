/** The app template from the outside: --help, rejected command lines, options reaching main, logging. */
import { describe, expect, test } from "bun:test";
import { runApp } from "../smp/helpers.ts";

const APP = "../app/fixtures/echo-app.ts";

describe("command line", () => {
  test("--help prints usage, the app's options and Shoal's, and exits 0 without starting shards", async () => {
    const run = await runApp(APP, ["--help"]);
    expect(run.code).toBe(0);
    expect(run.stdout).toStartWith("Usage: echo-app [options]\n\nPrints what it was given.\n");
    expect(run.stdout).toContain("--greeting TEXT");
    expect(run.stdout).toContain("--smp N");
    expect(run.stdout).not.toContain("RESULT");
  });

  test("an unknown option is rejected with a clear message and exit 2", async () => {
    const run = await runApp(APP, ["--greetin", "x"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toBe("echo-app: unknown option --greetin; did you mean --greeting?\nRun `echo-app --help` to list the options.\n");
  });

  test("bad values and impossible shard counts exit 2", async () => {
    expect((await runApp(APP, ["--times", "0"])).stderr).toContain("--times must be at least 1");
    const tooMany = await runApp(APP, ["--smp", "64"]);
    expect(tooMany.code).toBe(2);
    expect(tooMany.stderr).toContain("--smp 64 needs 64 CPUs");
    expect(tooMany.stderr).toContain("--overprovisioned");
    const cpuset = await runApp(APP, ["--cpuset", "1000"]);
    expect(cpuset.code).toBe(2);
    expect(cpuset.stderr).toContain("CPU 1000 is not available to this process");
    // Overprovisioned shards are confined to the cpuset too: it is checked the same way.
    const loose = await runApp(APP, ["--cpuset", "1000", "--overprovisioned"]);
    expect(loose.code).toBe(2);
    expect(loose.stderr).toContain("CPU 1000 is not available to this process");
    // Rings grow with the square of the shard count: a clear message, not an allocation failure.
    const huge = await runApp(APP, ["--smp", "1000", "--overprovisioned"]);
    expect(huge.code).toBe(2);
    expect(huge.stderr).toContain("--smp 1000 needs 244.1 GiB of shared memory");
    expect(huge.stderr).not.toContain("    at ");
  });

  test("the config's numbers are checked when app() is called, before anything starts", async () => {
    const { app } = await import("../../src/app/index.ts");
    const { InvalidArgumentError } = await import("../../src/core/errors.ts");
    // Past 2^31-1 ms a timer fires at once: a start timeout of 2^31 ms failed every start.
    for (const bad of [
      { ringBytes: 1000 },
      { startTimeoutMs: 0 },
      { shutdownTimeoutMs: -1 },
      { mainGraceMs: Number.NaN },
      { startTimeoutMs: 2 ** 31 },
      { shutdownTimeoutMs: 2 ** 31 },
      { mainGraceMs: 2 ** 40 },
      { module: "" },
      { module: 7 as unknown as string },
    ]) {
      expect(() => app({ name: "x", ...bad }, () => 0)).toThrow(InvalidArgumentError);
    }
  });

  test("bad option specs are a bad config: InvalidArgumentError naming them, and app() may still be called after", async () => {
    const { app } = await import("../../src/app/index.ts");
    const { InvalidArgumentError } = await import("../../src/core/errors.ts");
    const call = () => app({ name: "x", options: { smp: { type: "integer", description: "" } } }, () => 0);
    expect(call).toThrow(InvalidArgumentError);
    expect(call).toThrow("app: config.options: option \"smp\": --smp is one of Shoal's own options");
  });

  test("config.module as a relative path is taken from the working directory (it was resolved against Shoal's own files)", async () => {
    const { mkdtempSync, writeFileSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join, resolve } = await import("node:path");
    const dir = mkdtempSync(join(tmpdir(), "shoal-module-"));
    try {
      const appIndex = resolve("src/app/index.ts");
      writeFileSync(
        join(dir, "rel-app.ts"),
        `import { app } from ${JSON.stringify(appIndex)};\n` +
          `app({ name: "rel", module: "./rel-app.ts" }, () => { console.log("MAIN RAN"); return 0; });\n`,
      );
      const run = Bun.spawn([process.execPath, "rel-app.ts", "--smp", "1"], { cwd: dir, stdout: "pipe", stderr: "pipe" });
      const [out, err, code] = await Promise.all([new Response(run.stdout).text(), new Response(run.stderr).text(), run.exited]);
      expect(err).not.toContain("Cannot find module");
      expect(out).toContain("MAIN RAN");
      expect(code).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("parsed options reach main on shard 0", async () => {
    const run = await runApp(APP, ["--smp", "2", "--overprovisioned", "--greeting", "hi", "--times=3"]);
    expect(run.code).toBe(0);
    expect(run.result.count).toBe(2);
    expect(run.result.options).toMatchObject({ greeting: "hi", times: 3, smp: 2, overprovisioned: true, logLevel: "info" });
    expect(run.result.local).toBe("taken"); // a local call passes a function straight through
  });

  test("--encode-local-calls makes a local call with a function fail as it would across shards", async () => {
    const run = await runApp(APP, ["--smp", "1", "--encode-local-calls"]);
    expect(run.code).toBe(0);
    expect(run.result.local).toBe("ERR_SMP_ENCODE");
  });
});

describe("logging", () => {
  test("a shard's first log line, written from a task, is not reported as a stall", async () => {
    // A Worker's first process.stderr access and first local-time Date cost ~22 ms together;
    // paid inside main's first task they were reported as a stall of the reactor (most runs at
    // a 10 ms threshold). The shard now pays them before its loop runs.
    const run = await runApp("../app/fixtures/first-log.ts", ["--smp", "1", "--blocked-reactor-notify-ms", "10"]);
    expect(run.code).toBe(0);
    expect(run.stderr).toContain("the first line");
    expect(run.stderr).not.toContain("stalled");
  });

  test("lines carry a timestamp, the level, the shard and the logger; levels filter per logger", async () => {
    const run = await runApp(APP, ["--smp", "1", "--log-level", "info,other=debug"]);
    expect(run.code).toBe(0);
    const lines = run.stderr.trim().split("\n");
    expect(lines.some((l) => /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO  \[shard 0\] echo-app - info from main$/.test(l))).toBe(true);
    expect(lines.some((l) => /DEBUG \[shard 0\] other - debug from other$/.test(l))).toBe(true);
    expect(run.stderr).not.toContain("debug from main");
  });

  test("a bad --log-level is rejected", async () => {
    const run = await runApp(APP, ["--log-level", "chatty"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('bad log level "chatty"');
  });
});

describe("examples/hello", () => {
  test("SIGINT ends it even while it waits for its duration; a bad duration is a usage error", async () => {
    const proc = Bun.spawn([process.execPath, "examples/hello/main.ts", "100"], { stdout: "pipe", stderr: "pipe" });
    // Its first tick (a second in) comes after its signal handlers are installed: a fixed
    // sleep instead sent the SIGINT to a process still starting under load (killed, no code 0).
    let stdout = "";
    const decoder = new TextDecoder();
    const reader = (proc.stdout as ReadableStream<Uint8Array>).getReader();
    while (!stdout.includes("tick 1:")) {
      const { value, done } = await reader.read();
      if (done) break;
      stdout += decoder.decode(value, { stream: true });
    }
    expect(stdout).toContain("tick 1:");
    proc.kill("SIGINT");
    const code = await Promise.race([proc.exited, Bun.sleep(10_000).then(() => "still running")]);
    if (code === "still running") proc.kill("SIGKILL"); // it kept running for the whole 100 s
    expect(code).toBe(0);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      stdout += decoder.decode(value, { stream: true });
    }
    expect(stdout).toContain("hello: stopped");
    const bad = Bun.spawnSync([process.execPath, "examples/hello/main.ts", "abc"]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr.toString()).toContain("SECONDS must be a number");
  }, 20_000);

  test("SECONDS is a plain decimal number and the only argument (an empty one ran forever, 0x10 ran 16 s)", () => {
    for (const args of [[""], [" "], ["0x10"], ["1e"], ["1", "2"]]) {
      // Killed after 10 s if it took the argument and ran (an empty one ran until a signal).
      const run = Bun.spawnSync([process.execPath, "examples/hello/main.ts", ...args], { timeout: 10_000 });
      expect({ args, code: run.exitCode }).toEqual({ args, code: 2 });
      expect(run.stderr.toString()).toContain("usage: bun examples/hello/main.ts [SECONDS]");
    }
    const short = Bun.spawnSync([process.execPath, "examples/hello/main.ts", "0.5"], { timeout: 10_000 });
    expect(short.exitCode).toBe(0);
    expect(short.stdout.toString()).toContain("hello: stopped");
  }, 60_000);
});
