/**
 * Where the server listens and how it shows its listeners, against stock memcached 1.6.18 side
 * by side: -s (Unix socket), the -l forms stock accepts (host:port, ';', names, proto[...]:),
 * an address in use, -o no_maxconns_fast at the connection limit, `stats conns` and UDP's
 * bytes_read.
 */
import { describe, expect, test } from "bun:test";
import { spawn, type Subprocess } from "bun";
import net from "node:net";
import dgram from "node:dgram";
import { chmodSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { lookup } from "node:dns/promises";
import { join } from "node:path";
import { b, dec, freePort, freeUdpPort } from "./lib/harness.ts";

type Which = "stock" | "ours";

function command(which: Which, args: string[]): string[] {
  return which === "stock" ? ["memcached", "-u", "root", "-t", "1", ...args] : [process.execPath, "examples/memcached/main.ts", "-t", "1", ...args];
}

interface Run {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  stderr: Promise<string>;
}

function launch(which: Which, args: string[]): Run {
  const proc = spawn(command(which, args), { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  void new Response(proc.stdout).text();
  return { proc, stderr: new Response(proc.stderr).text() };
}

async function kill(run: Run): Promise<void> {
  run.proc.kill("SIGKILL");
  await run.proc.exited;
}

/** Sends `data` on a new connection to `to` ({host, port} or a Unix path), returns what came back until `until` or idle. */
async function talk(to: { host: string; port: number } | string, data: string, until = "\r\n", idleMs = 1000): Promise<string | null> {
  return await new Promise((resolve) => {
    const s = typeof to === "string" ? net.connect(to) : net.connect(to.port, to.host);
    let got = "";
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = (v: string | null): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(v);
    };
    const idle = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => done(got), idleMs);
    };
    s.once("connect", () => {
      s.write(data);
      idle();
    });
    s.on("data", (d: Buffer) => {
      got += dec.decode(d);
      if (got.endsWith(until)) done(got);
      else idle();
    });
    s.once("close", () => done(got));
    s.once("error", () => done(null));
  });
}

/** Whether `to` answers `version` (polling until `proc` exits or 30 s pass). */
async function serving(proc: Subprocess, to: { host: string; port: number } | string): Promise<boolean> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) return false;
    const a = await talk(to, "version\r\n");
    if (a?.startsWith("VERSION ")) return true;
    await Bun.sleep(50);
  }
  return false;
}

const v4 = (port: number) => ({ host: "127.0.0.1", port });
const v6 = (port: number) => ({ host: "::1", port });

describe("-s: the Unix socket", () => {
  test("serves on the socket only, mode 0700 (-a's default), replaces a stale socket file, leaves it at exit", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mc-unix-"));
    try {
      const seen: Record<string, unknown> = {};
      for (const which of ["stock", "ours"] as Which[]) {
        const path = join(dir, `${which}.sock`);
        // A previous server's socket file, left behind (its process was killed).
        const old = spawn([process.execPath, "-e", `require("net").createServer().listen(${JSON.stringify(path)}); setInterval(() => {}, 1000)`]);
        while (!existsSync(path)) await Bun.sleep(20);
        old.kill("SIGKILL");
        await old.exited;
        const port = await freePort();
        const run = launch(which, ["-s", path, "-p", String(port)]);
        try {
          const up = await serving(run.proc, path);
          const mode = (lstatSync(path).mode & 0o777).toString(8);
          const tcp = await talk(v4(port), "version\r\n");
          // The probes' connections close asynchronously on both servers (a closed peer is
          // reaped when its thread next reads): ask until only the listener and this one show.
          let raw = "";
          for (let tries = 0; tries < 100; tries++) {
            raw = (await talk(path, "stats conns\r\n", "END\r\n")) ?? "";
            if ((raw.match(/:state /g) ?? []).length <= 2) break;
            await Bun.sleep(20);
          }
          const conns = raw.replaceAll(path, "PATH").replaceAll(path.slice(0, 26), "PATH26").replace(/STAT \d+:/g, "STAT N:").replace(/secs_since_last_cmd \d+/g, "secs_since_last_cmd S");
          run.proc.kill("SIGTERM");
          const code = await run.proc.exited;
          seen[which] = { up, mode, tcp, conns, code, left: existsSync(path) };
        } finally {
          await kill(run);
        }
      }
      expect(seen.stock).toMatchObject({ up: true, mode: "700", tcp: null, code: 0, left: true });
      // Stock shows the listening socket's path cut to the 26 bytes a sockaddr_in6 holds.
      expect(seen.stock).toMatchObject({ conns: expect.stringContaining("STAT N:state conn_listening\r\nSTAT N:secs_since_last_cmd S\r\nSTAT N:addr ?:<AF 0>\r\nSTAT N:listen_addr unix:PATH\r\n") });
      expect(seen.ours).toEqual(seen.stock);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);

  test("-a sets the socket file's mode (octal, as strtol reads it); stats settings shows domain_socket, umask, and -p/-U/-l as given", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mc-unix-"));
    try {
      for (const [mask, extra] of [["755", []], ["1777", ["-U", "0", "-l", "127.0.0.1"]], ["abc", []], ["0640x", []]] as [string, string[]][]) {
        const seen: Record<string, unknown> = {};
        for (const which of ["stock", "ours"] as Which[]) {
          const path = join(dir, `${which}.sock`);
          const run = launch(which, ["-s", path, "-a", mask, "-p", "11999", ...extra]);
          try {
            const up = await serving(run.proc, path);
            const mode = (lstatSync(path).mode & 0o7777).toString(8);
            const settings = (await talk(path, "stats settings\r\n", "END\r\n"))!
              .split("\r\n")
              .filter((l) => /^STAT (domain_socket|umask|tcpport|udpport|inter) /.test(l))
              .map((l) => l.replace(path, "PATH"));
            seen[which] = { up, mode, settings };
          } finally {
            await kill(run);
          }
        }
        expect(seen.stock).toMatchObject({ up: true });
        expect(seen.ours).toEqual(seen.stock);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);

  // Dropping privileges needs root (CI runs as root); as another user -u changes nothing.
  test.skipIf(process.getuid?.() !== 0)("-u nobody as root: every thread switches to the user before the socket exists (the file is the user's), as stock", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mc-unix-"));
    chmodSync(dir, 0o777);
    try {
      const seen: Record<string, unknown> = {};
      for (const which of ["stock", "ours"] as Which[]) {
        const path = join(dir, `${which}.sock`);
        const run = launch(which, ["-u", "nobody", "-s", path]);
        try {
          const up = await serving(run.proc, path);
          const owner = lstatSync(path).uid;
          // Every thread of the process (ours: the main thread, the shards' Workers, Bun's own).
          const uids = new Set<string>();
          for (const t of readdirSync(`/proc/${run.proc.pid}/task`)) {
            uids.add(/^Uid:\s+(.*)$/m.exec(readFileSync(`/proc/${run.proc.pid}/task/${t}/status`, "latin1"))![1]!.trim());
          }
          seen[which] = { up, owner, uids: [...uids] };
        } finally {
          await kill(run);
        }
      }
      expect(seen.stock).toEqual({ up: true, owner: 65534, uids: ["65534\t65534\t65534\t65534"] });
      expect(seen.ours).toEqual(seen.stock);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  test("a path that cannot be bound: exit 71, one line, no stack trace", async () => {
    const run = launch("ours", ["-s", "/nonexistent-dir/x.sock"]);
    const code = await run.proc.exited;
    // Nothing else: the loop's stall reports, which a loaded host produces at start-up, are shown with -v only.
    const err = (await run.stderr).trim();
    const lines = err.split("\n");
    expect(code).toBe(71);
    expect(lines).toEqual([lines[0]!]);
    expect(err).toContain("/nonexistent-dir/x.sock");
    expect(err).toContain("No such file or directory");
  }, 30_000);
});

describe("-l forms stock accepts", () => {
  /** Which of `probes` answer `version` once `probes[0]` does, for `args`; null if it did not start. */
  async function reach(which: Which, args: string[], probes: { host: string; port: number }[]): Promise<boolean[] | null> {
    const run = launch(which, args);
    try {
      if (!(await serving(run.proc, probes[0]!))) return null;
      const out: boolean[] = [];
      for (const p of probes) out.push((await talk(p, "version\r\n"))?.startsWith("VERSION ") ?? false);
      return out;
    } finally {
      await kill(run);
    }
  }

  test("HOST:PORT: that port, not -p's", async () => {
    const [p, q] = [await freePort(), await freePort()];
    for (const which of ["stock", "ours"] as Which[]) {
      expect(await reach(which, ["-p", String(p), "-l", `127.0.0.1:${q}`], [v4(q), v4(p)])).toEqual([true, false]);
    }
  }, 60_000);

  test("';' separates addresses as ',' does; [v6]:PORT", async () => {
    const [p, q] = [await freePort(), await freePort()];
    for (const which of ["stock", "ours"] as Which[]) {
      expect(await reach(which, ["-p", String(p), "-l", "127.0.0.1;::1"], [v4(p), v6(p)])).toEqual([true, true]);
      expect(await reach(which, ["-p", String(p), "-l", `[::1]:${q}`], [v6(q), v4(q)])).toEqual([true, false]);
    }
  }, 60_000);

  test("a host name is resolved (this machine's name)", async () => {
    const name = hostname();
    const found = await lookup(name, { family: 4 }).catch(() => null);
    if (found === null) return; // the name does not resolve here: nothing to compare
    const p = await freePort();
    for (const which of ["stock", "ours"] as Which[]) {
      expect(await reach(which, ["-p", String(p), "-l", name], [{ host: found.address, port: p }])).toEqual([true]);
    }
  }, 60_000);

  test("proto[binary]: and tag[..]: prefixes: the listener's protocol is fixed (text on a binary listener: same answer)", async () => {
    const [p, q] = [await freePort(), await freePort()];
    const answers: (string | null)[] = [];
    for (const which of ["stock", "ours"] as Which[]) {
      const run = launch(which, ["-p", String(await freePort()), "-l", `tag[t1]:127.0.0.1:${p},proto[binary]:127.0.0.1:${q}`]);
      try {
        expect(await serving(run.proc, v4(p))).toBe(true);
        answers.push(await talk(v4(q), "version\r\n", "\r\n", 500));
      } finally {
        await kill(run);
      }
    }
    expect(answers[1]).toEqual(answers[0]!);
  }, 60_000);

  test("an unresolvable name or a bad port: exit 71, one line, no stack trace", async () => {
    // "unix:PATH" is not a form -l takes (stock: Invalid port number); -s is how to get a Unix socket.
    for (const l of ["nosuchhost.invalid", "127.0.0.1:abc", "proto[proxy]:127.0.0.1", "unix:/tmp/mc-l-unix.sock"]) {
      const codes: number[] = [];
      for (const which of ["stock", "ours"] as Which[]) {
        const run = launch(which, ["-p", String(await freePort()), "-l", l]);
        codes.push(await run.proc.exited);
        if (which === "ours") {
          const err = (await run.stderr).trim();
          const lines = err.split("\n");
          expect(lines).toEqual([lines[0]!]);
          expect(err).not.toContain("    at ");
          if (l === "nosuchhost.invalid") expect(err).toContain("getaddrinfo(): Name or service not known");
        }
      }
      expect(codes).toEqual([71, 71]);
    }
  }, 60_000);
});

describe("an address in use", () => {
  test("without -l, an IPv4 port held elsewhere is skipped (IPv6 serves); both held: exit 71", async () => {
    const port = await freePort();
    // The holders: stock itself, on one family each (its IPv6 sockets are IPV6_V6ONLY).
    const held4 = launch("stock", ["-p", String(port), "-l", "0.0.0.0"]);
    try {
      expect(await serving(held4.proc, v4(port))).toBe(true);
      for (const which of ["stock", "ours"] as Which[]) {
        const run = launch(which, ["-p", String(port)]);
        try {
          expect(await serving(run.proc, v6(port))).toBe(true);
        } finally {
          await kill(run);
        }
      }
      // A killed server's io_uring may hold its listening socket a moment after the process is gone.
      let held6 = launch("stock", ["-p", String(port), "-l", "::"]);
      for (let tries = 0; !(await serving(held6.proc, v6(port))) && tries < 50; tries++) {
        await Bun.sleep(100);
        held6 = launch("stock", ["-p", String(port), "-l", "::"]);
      }
      try {
        expect(held6.proc.exitCode).toBeNull();
        for (const which of ["stock", "ours"] as Which[]) {
          const run = launch(which, ["-p", String(port)]);
          expect(await run.proc.exited).toBe(71);
          expect(await run.stderr).toContain("Address already in use");
        }
      } finally {
        await kill(held6);
      }
    } finally {
      await kill(held4);
    }
  }, 60_000);
});

describe("-o no_maxconns_fast", () => {
  test("at -c, accepting stops: a new peer waits (no ERROR line) and is served once a connection closes", async () => {
    const port = await freePort();
    const run = launch("ours", ["-l", "127.0.0.1", "-p", String(port), "-c", "3", "-o", "no_maxconns_fast"]);
    const socks: net.Socket[] = [];
    try {
      expect(await serving(run.proc, v4(port))).toBe(true);
      /** Opens a connection, sends `version`, resolves with the socket and a promise of its first line. */
      const open = async (): Promise<{ s: net.Socket; line: Promise<string> }> => {
        const s = net.connect(port, "127.0.0.1");
        socks.push(s);
        await new Promise((r) => s.once("connect", r));
        const line = new Promise<string>((resolve) => {
          let got = "";
          s.on("data", (d: Buffer) => {
            got += dec.decode(d);
            if (got.includes("\r\n")) resolve(got);
          });
          s.once("close", () => resolve(got || "<closed>"));
        });
        s.write(b("version\r\n"));
        return { s, line };
      };
      const first = await open();
      expect(await first.line).toStartWith("VERSION ");
      /** Sends `command` on `s`, resolves with its answer up to END. */
      const ask = (s: net.Socket, command: string): Promise<string> => {
        s.write(b(command));
        return new Promise<string>((resolve) => {
          let got = "";
          const on = (d: Buffer) => {
            got += dec.decode(d);
            if (got.endsWith("END\r\n") || got === "RESET\r\n") {
              s.off("data", on);
              resolve(got);
            }
          };
          s.on("data", on);
        });
      };
      const stat = (text: string, key: string): number => Number(new RegExp(`STAT ${key} (\\d+)\r\n`).exec(text)?.[1] ?? NaN);
      // The readiness probes are gone once the server counts only this connection (plus its listener, less one).
      for (;;) {
        if (/curr_connections 1\r\n/.test(await ask(first.s, "stats\r\n"))) break;
        await Bun.sleep(20);
      }
      const before = await ask(first.s, "stats\r\n");
      expect([stat(before, "accepting_conns"), stat(before, "listen_disabled_num"), stat(before, "time_in_listen_disabled_us")]).toEqual([1, 0, 0]);
      const second = await open();
      expect(await second.line).toStartWith("VERSION ");
      expect(await (await open()).line).toStartWith("VERSION ");
      const waiting = await open();
      const early = await Promise.race([waiting.line, Bun.sleep(500).then(() => "<nothing yet>")]);
      expect(early).toBe("<nothing yet>");
      // As stock: accepting is off and counted once; the time is added when it resumes.
      const during = await ask(second.s, "stats\r\n");
      expect([stat(during, "accepting_conns"), stat(during, "listen_disabled_num"), stat(during, "time_in_listen_disabled_us")]).toEqual([0, 1, 0]);
      first.s.destroy();
      expect(await waiting.line).toStartWith("VERSION ");
      const after = await ask(second.s, "stats\r\n");
      expect([stat(after, "accepting_conns"), stat(after, "listen_disabled_num")]).toEqual([1, 1]);
      expect(stat(after, "time_in_listen_disabled_us")).toBeGreaterThan(0);
      // stats reset zeroes both counters (stock's resettable struct stats).
      expect(await ask(second.s, "stats reset\r\n")).toBe("RESET\r\n");
      const reset = await ask(second.s, "stats\r\n");
      expect([stat(reset, "accepting_conns"), stat(reset, "listen_disabled_num"), stat(reset, "time_in_listen_disabled_us")]).toEqual([1, 0, 0]);
    } finally {
      for (const s of socks) s.destroy();
      await kill(run);
    }
  }, 60_000);
});

describe("stats conns and UDP", () => {
  async function started(which: Which, threads = 1): Promise<Run & { port: number }> {
    const port = await freeUdpPort();
    const run = launch(which, ["-p", String(port), "-U", String(port), "-t", String(threads)]);
    if (!(await serving(run.proc, v4(port)))) throw new Error(`${which} did not start: ${await run.stderr}`);
    return { ...run, port };
  }

  test.each([1, 2])("stats conns lists the listening sockets first (TCP conn_listening, UDP conn_read, one per address per thread), as stock with -t %d", async (threads) => {
    const seen: string[] = [];
    for (const which of ["stock", "ours"] as Which[]) {
      const run = await started(which, threads);
      try {
        // The readiness probe's connection may still be listed until the server has seen it
        // close (an "addr ?" entry): ask again until only the asking client is left.
        let a = "";
        for (let i = 0; i < 200; i++) {
          a = (await talk(v4(run.port), "stats conns\r\n", "END\r\n"))!;
          if ((a.match(/:listen_addr /g) ?? []).length === 1) break;
          await Bun.sleep(50);
        }
        seen.push(
          a
            .replace(/STAT \d+:/g, "STAT N:")
            .replace(/secs_since_last_cmd \d+/g, "secs_since_last_cmd S")
            .replace(/127\.0\.0\.1:\d+\r\n/, "127.0.0.1:PEER\r\n")
            .replaceAll(`:${run.port}`, ":PORT"),
        );
      } finally {
        await kill(run);
      }
    }
    expect(seen[0]).toContain("STAT N:addr tcp6:[::]:PORT\r\nSTAT N:state conn_listening");
    expect(seen[1]).toBe(seen[0]!);
  }, 60_000);

  test("UDP bytes_read counts only datagrams longer than the 8-byte frame header", async () => {
    const deltas: number[] = [];
    for (const which of ["stock", "ours"] as Which[]) {
      const run = await started(which);
      try {
        const bytesRead = async (): Promise<number> => Number(/bytes_read (\d+)/.exec((await talk(v4(run.port), "stats\r\n", "END\r\n"))!)![1]);
        const before = await bytesRead();
        const sock = dgram.createSocket("udp4");
        for (const d of [b("\x00\x01\x00\x00\x00\x01\x00\x00"), b("\x00\x01\x00"), b("\x00\x02\x00\x00\x00\x01\x00\x00version\r\n")]) {
          await new Promise<void>((r) => sock.send(d, run.port, "127.0.0.1", () => r()));
        }
        // The version datagram is answered: everything sent before it was read.
        await new Promise<void>((r) => sock.once("message", () => r()));
        sock.close();
        // Less the two stats commands' own bytes (7 each): what the datagrams added.
        deltas.push((await bytesRead()) - before - 7);
      } finally {
        await kill(run);
      }
    }
    expect(deltas[1]).toBe(deltas[0]!);
  }, 60_000);
});
