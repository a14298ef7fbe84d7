/**
 * The app's SignalPolicy: which signals stop it, which are ignored, and whether a repeated one
 * cuts the shutdown short. The default (SIGINT/SIGTERM stop, a repeat exits 1 at once) stays.
 */
import { describe, expect, test } from "bun:test";
import { checkSignalPolicy } from "../../src/smp/supervisor.ts";
import { runApp, smpArgs } from "./helpers.ts";

const FIXTURE = "./fixtures/signals.ts";
const memcachedPolicy = { SIGNALS_POLICY: "memcached", SIGNALS_STOP_MS: "400" };

describe("SignalPolicy", () => {
  test("an ignored signal leaves the app running; a listed shutdown signal stops it gracefully, exit 0", async () => {
    let step = 0;
    const run = await runApp(FIXTURE, smpArgs(2), {
      timeoutMs: 30_000,
      env: memcachedPolicy,
      onStdout: (text, proc) => {
        if (step === 0 && text.includes("READY")) {
          step = 1;
          proc.kill("SIGHUP");
          // Still running after the SIGHUP (it was not fatal): the next signal stops it.
          setTimeout(() => proc.kill("SIGUSR1"), 300);
        }
      },
    });
    expect(run.signal, run.stderr).toBeNull();
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain("SHUTDOWN SIGUSR1\n");
    expect(run.stdout).not.toContain("SHUTDOWN SIGHUP");
    expect(run.stdout.match(/^STOPPED \d$/gm)?.length).toBe(2);
  });

  test('repeat: "ignore": a second signal during the shutdown lets it finish, exit 0', async () => {
    let sent = 0;
    const run = await runApp(FIXTURE, smpArgs(2), {
      timeoutMs: 30_000,
      env: memcachedPolicy,
      onStdout: (text, proc) => {
        if (sent === 0 && text.includes("READY")) {
          sent = 1;
          proc.kill("SIGTERM");
        } else if (sent === 1 && text.includes("STOPPING")) {
          sent = 2;
          proc.kill("SIGTERM");
        }
      },
    });
    expect(sent).toBe(2);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).not.toContain("again");
    expect(run.stdout.match(/^STOPPED \d$/gm)?.length).toBe(2);
    // onShutdown replaced the log line, and ran once.
    expect(run.stdout.match(/SHUTDOWN/g)?.length).toBe(1);
    expect(run.stderr).not.toContain("received: shutting down");
    expect(run.stderr).not.toContain("already shutting down");
  });

  test("the default policy: a second SIGTERM during the shutdown exits 1 at once", async () => {
    let sent = 0;
    const run = await runApp(FIXTURE, smpArgs(2), {
      timeoutMs: 30_000,
      env: { SIGNALS_STOP_MS: "2000" },
      onStdout: (text, proc) => {
        if (sent === 0 && text.includes("READY")) {
          sent = 1;
          proc.kill("SIGTERM");
        } else if (sent === 1 && text.includes("STOPPING")) {
          sent = 2;
          // Past the 250 ms in which a repeat is the same delivery (the next test).
          setTimeout(() => proc.kill("SIGTERM"), 500);
        }
      },
    });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("SIGTERM again: exiting without waiting for services to stop");
    expect(run.stdout).not.toContain("STOPPED");
  });

  test("the same signal twice in a row (GNU timeout signals the child and its group) is one delivery: graceful, exit 0", async () => {
    let sent = false;
    const run = await runApp(FIXTURE, smpArgs(2), {
      timeoutMs: 30_000,
      env: { SIGNALS_STOP_MS: "400" },
      onStdout: (text, proc) => {
        if (!sent && text.includes("READY")) {
          sent = true;
          proc.kill("SIGTERM");
          // Apart enough to be two deliveries (two kills at once merge in the kernel), within
          // the window (250 ms) in which the same signal is the same delivery.
          setTimeout(() => proc.kill("SIGTERM"), 20);
        }
      },
    });
    expect(sent).toBe(true);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).not.toContain("again");
    expect(run.stdout.match(/^STOPPED \d$/gm)?.length).toBe(2);
  });

  test("a malformed policy is refused before anything starts", () => {
    expect(() => checkSignalPolicy({ shutdown: ["SIGKILL"] })).toThrow(/not a signal a process can catch/);
    expect(() => checkSignalPolicy({ shutdown: ["SIGNOPE" as NodeJS.Signals] })).toThrow(/not a signal/);
    expect(() => checkSignalPolicy({ shutdown: ["SIGTERM"], ignore: ["SIGTERM"] })).toThrow(/listed twice/);
    expect(() => checkSignalPolicy({ repeat: "maybe" as "exit" })).toThrow(/repeat/);
    expect(() => checkSignalPolicy({ shutdown: ["SIGTERM", "SIGUSR2"], ignore: ["SIGHUP"], repeat: "ignore" })).not.toThrow();
  });
});
