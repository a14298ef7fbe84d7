/** The supervisor's shutdown paths from the outside: signal policies, a hook that throws, logs at exit. */
import { describe, expect, test } from "bun:test";
import { fileURLToPath } from "node:url";
import { BUN, CPUS, runApp } from "../smp/helpers.ts";

const FIXTURE = "../app/fixtures/app-shutdown.ts";
const smp = (n: number) => (CPUS >= n ? ["--smp", String(n)] : ["--smp", String(n), "--overprovisioned"]);
const stopped = (stdout: string) =>
  stdout
    .split("\n")
    .filter((l) => l.startsWith("STOPPED "))
    .map((l) => Number(l.slice(8)))
    .sort();

describe("signal policy", () => {
  test("an onShutdown hook that throws is reported; the shutdown still stops every service (it killed the supervisor, exit 1, nothing stopped)", async () => {
    let sent = false;
    const run = await runApp(FIXTURE, smp(2), {
      timeoutMs: 30_000,
      env: { APP_MODE: "throw-hook" },
      onStdout: (text, proc) => {
        if (!sent && text.includes("READY")) {
          sent = true;
          proc.kill("SIGTERM");
        }
      },
    });
    expect(sent).toBe(true);
    expect(run.stderr).toContain("app-shutdown: signals.onShutdown threw on SIGTERM: Error: the hook failed");
    expect(run.stdout).toContain("MAIN-SAW-SIGNAL");
    expect(stopped(run.stdout)).toEqual([0, 1]);
    expect(run.code).toBe(1);
  });

  test('{ ignore: ["SIGINT"] } alone: SIGINT is ignored, not also a shutdown (the default list still held it)', async () => {
    const file = fileURLToPath(new URL(FIXTURE, import.meta.url));
    const proc = Bun.spawn([BUN, file, ...smp(1), "--log-level", "smp=debug"], {
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, APP_MODE: "ignore-int" },
    });
    const killer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
    const text = { stdout: "", stderr: "" };
    let wake = () => {};
    const pump = async (stream: ReadableStream<Uint8Array>, key: "stdout" | "stderr") => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) {
        text[key] += decoder.decode(chunk, { stream: true });
        wake();
      }
    };
    const pumps = Promise.all([pump(proc.stdout as ReadableStream<Uint8Array>, "stdout"), pump(proc.stderr as ReadableStream<Uint8Array>, "stderr")]);
    const until = async (ok: () => boolean) => {
      while (!ok() && proc.exitCode === null) await new Promise<void>((r) => (wake = r));
    };
    await until(() => text.stdout.includes("READY"));
    proc.kill("SIGINT");
    // The supervisor logs every SIGINT: "ignored" (debug) on the fixed code, "shutting down" before.
    await until(() => text.stderr.includes("SIGINT received"));
    proc.kill("SIGTERM");
    const code = await proc.exited;
    clearTimeout(killer);
    await pumps;
    const { stdout, stderr } = text;
    expect(stderr).toContain("SIGINT received: ignored");
    expect(stderr).not.toContain("SIGINT received: shutting down");
    expect(stderr).toContain("SIGTERM received: shutting down");
    expect(stderr).not.toContain("again");
    expect(stopped(stdout)).toEqual([0]);
    expect(code).toBe(0);
  });
});

describe("log lines at exit", () => {
  test("every line logged before the app exits reaches a stderr pipe its reader drains late (the queued tail was dropped at exit)", async () => {
    const file = fileURLToPath(new URL(FIXTURE, import.meta.url));
    const lines = 3000; // ~300 KB: several times a pipe's 64 KiB buffer
    // The reader starts once the app has exited (or after 5 s, when a blocking writer waits for
    // it): what the app had only queued in its own memory by then is lost at its exit.
    const script =
      'm="$(mktemp -u)"; ( "$0" "$1" --smp 1 2>&1 >/dev/null; echo $? > "$m" ) | ' +
      '( i=0; while [ ! -e "$m" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; cat ); ' +
      'while [ ! -e "$m" ]; do sleep 0.1; done; echo "EXIT $(cat "$m")"; rm -f "$m"';
    const proc = Bun.spawn(["sh", "-c", script, BUN, file], {
      stdout: "pipe",
      stderr: "inherit",
      env: { ...process.env, APP_MODE: "flood", APP_LINES: String(lines) },
    });
    const killer = setTimeout(() => proc.kill("SIGKILL"), 60_000);
    const out = await new Response(proc.stdout as ReadableStream<Uint8Array>).text();
    await proc.exited;
    clearTimeout(killer);
    expect(out).toContain("EXIT 0");
    expect(out.split("\n").filter((l) => / app-shutdown - line \d+ x+$/.test(l)).length).toBe(lines);
    expect(out).toContain("app-shutdown - LAST LINE");
  }, 90_000);
});
