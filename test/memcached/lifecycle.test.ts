/**
 * The server as a process: graceful SIGTERM (requests already sent are answered, then every
 * connection closes and the process exits 0), UDP with its 8-byte frame header and answers cut
 * into datagrams of at most 1400 bytes, and memcached's command line (-h, -V, both `-p N` and
 * `-pN`, long options, unknown flags refused clearly).
 */
import { describe, expect, test } from "bun:test";
import { spawnSync } from "bun";
import dgram from "node:dgram";
import net from "node:net";
import { accepts, b, dec, exchange, freePort, freeUdpPort, keysOwnedBy, startOurs, udpRequest, waitForPort } from "./lib/harness.ts";
import { existsSync, readFileSync } from "node:fs";
import { parseCommandLine, UsageError } from "../../examples/memcached/cli.ts";
import { connect } from "../../src/net/index.ts";

describe("graceful SIGTERM", () => {
  test("pipelined requests sent before the signal are all answered, then connections close", async () => {
    const server = await startOurs(["-t", "2"]);
    const idle = net.connect(server.port, "127.0.0.1");
    let idleClosed = false;
    idle.on("close", () => (idleClosed = true));
    idle.on("error", () => {});
    await new Promise<void>((r) => idle.once("connect", () => r()));
    // Both connections answered once before the signal: accepted by the server, not still in the
    // kernel's backlog, which closing the listener drops (stock's too). Without this the busy
    // one now and then closed with nothing answered.
    const answered = (sock: net.Socket): Promise<void> =>
      new Promise<void>((r) => {
        sock.once("data", () => r());
        sock.write("version\r\n");
      });
    await answered(idle);

    const busy = net.connect(server.port, "127.0.0.1");
    await new Promise<void>((r) => busy.once("connect", () => r()));
    await answered(busy);
    let answer = "";
    let busyClosed = false;
    busy.on("data", (d) => (answer += d.toString("latin1")));
    busy.on("close", () => (busyClosed = true));
    busy.on("error", () => {});
    let req = "";
    const n = 2000;
    for (let i = 0; i < n; i++) req += `set g${i} 0 0 2\r\nok\r\nget g${i}\r\n`;
    busy.write(req);
    server.proc.kill("SIGTERM");
    const code = await server.proc.exited;
    for (let i = 0; i < 100 && !(busyClosed && idleClosed); i++) await Bun.sleep(10);
    expect(code).toBe(0);
    expect(busyClosed).toBe(true);
    expect(idleClosed).toBe(true);
    expect(answer.split("STORED\r\n").length - 1).toBe(n);
    expect(answer.split("END\r\n").length - 1).toBe(n);
    expect(answer.endsWith("VALUE g1999 0 2\r\nok\r\nEND\r\n")).toBe(true);
    // Nothing listens any more.
    expect(await accepts(server.port)).toBe(false);
  }, 60_000);

  test("a client that reads slowly gets every answer in full before its connection closes", async () => {
    // 60 gets of 100 KB values (6 MB of answers) are all received before the signal, but the
    // client reads only after it, slowly: the answers wait in the connection's output. The server
    // used to stop counting the connection before its output was flushed and exit with part
    // of a value sent, followed by a normal close.
    const server = await startOurs(["-t", "2"]);
    const value = "z".repeat(100_000);
    const keys = Array.from({ length: 10 }, (_, i) => `slow${i}`);
    let fill = "";
    for (const k of keys) fill += `set ${k} 0 0 ${value.length}\r\n${value}\r\n`;
    const setup = await exchange(server.port, b(fill + "mn\r\n"), { until: b("MN\r\n"), idleMs: 5000 });
    expect(dec.decode(setup.bytes).split("STORED\r\n").length - 1).toBe(keys.length);

    const n = 60;
    let req = "";
    for (let i = 0; i < n; i++) req += `get ${keys[i % keys.length]}\r\n`;
    // Shoal's own client: it stops receiving once 64 KiB wait unread, so the answers back up
    // into the server (a Bun socket would keep reading while paused).
    const c = await connect(`127.0.0.1:${server.port}`, { maxReadBuffered: 64 * 1024 });
    await c.output.write(req);
    await c.output.flush();
    await Bun.sleep(300);
    server.proc.kill("SIGTERM");
    await Bun.sleep(300);
    let got = 0;
    let tail = "";
    for (;;) {
      // Slowly: the server's connection ends (its input shut, its last write accepted) while
      // about a megabyte still waits in its output.
      await Bun.sleep(4);
      const chunk = await c.input.read();
      if (chunk === null) break;
      got += chunk.length;
      tail = (tail + dec.decode(chunk.subarray(Math.max(0, chunk.length - 64)))).slice(-64);
    }
    await c.close();
    const one = `VALUE slow0 0 ${value.length}\r\n`.length + value.length + "\r\nEND\r\n".length;
    expect(got).toBe(one * n);
    expect(tail.endsWith("zzzz\r\nEND\r\n")).toBe(true);
    expect(await server.proc.exited).toBe(0);
  }, 60_000);
});

/** `count` keys named `${prefix}N` that shard `shard` of `shards` owns. */
const keysOf = (prefix: string, shard: number, shards: number, count: number): string[] => keysOwnedBy(shard, shards, count, prefix);

describe("shutdown (-A)", () => {
  test("the shutdown command stops the whole server, as stock's does (it only closed the connection)", async () => {
    for (const args of [["-t", "1", "-A"], ["-t", "2", "-A"]]) {
      const server = await startOurs(args);
      const answer = await exchange(server.port, b("shutdown\r\n"), { idleMs: 500 });
      expect(answer.closed).toBe(true);
      const code = await Promise.race([server.proc.exited, Bun.sleep(10_000).then(() => "still running")]);
      if (code === "still running") server.proc.kill("SIGKILL");
      expect(code).toBe(0);
    }
  }, 60_000);
});

describe("shards start and stop together", () => {
  test("a stopping shard keeps its store until every shard has drained: late requests forwarded to it are answered", async () => {
    // One connection (on whichever shard the kernel picks) reads slowly, so the second half of
    // its pipeline is still unparsed when SIGTERM arrives. The other shard has no connection of
    // its own and drains at once; the store it owns must still answer what the busy shard
    // forwards afterwards (it went with its own drain: those gets failed or came back empty).
    const server = await startOurs(["-t", "2"]);
    const big = "v".repeat(100_000);
    const bigKeys = [...keysOf("big", 0, 2, 5), ...keysOf("big", 1, 2, 5)];
    const small = [...keysOf("small", 0, 2, 10), ...keysOf("small", 1, 2, 10)];
    let fill = "";
    for (const k of bigKeys) fill += `set ${k} 0 0 ${big.length}\r\n${big}\r\n`;
    for (const k of small) fill += `set ${k} 7 0 ${k.length}\r\n${k}\r\n`;
    const setup = await exchange(server.port, b(fill + "mn\r\n"), { until: b("MN\r\n"), idleMs: 5000 });
    expect(dec.decode(setup.bytes).split("STORED\r\n").length - 1).toBe(bigKeys.length + small.length);

    const c = await connect(`127.0.0.1:${server.port}`, { maxReadBuffered: 64 * 1024 });
    let first = "";
    for (let i = 0; i < 100; i++) first += `get ${bigKeys[i % bigKeys.length]}\r\n`;
    await c.output.write(first);
    await c.output.flush();
    await Bun.sleep(300); // 10 MB of answers: more than the kernel buffers, the rest waits in the server
    let second = "";
    for (const k of small) second += `get ${k}\r\n`;
    await c.output.write(second);
    await c.output.flush();
    await Bun.sleep(100);
    server.proc.kill("SIGTERM");
    await Bun.sleep(600); // the idle shard has drained long ago
    const chunks: Uint8Array[] = [];
    for (;;) {
      const chunk = await c.input.read();
      if (chunk === null) break;
      chunks.push(chunk.slice());
    }
    await c.close();
    let expected = "";
    for (let i = 0; i < 100; i++) expected += `VALUE ${bigKeys[i % bigKeys.length]} 0 ${big.length}\r\n${big}\r\nEND\r\n`;
    for (const k of small) expected += `VALUE ${k} 7 ${k.length}\r\n${k}\r\nEND\r\n`;
    const got = dec.decode(Buffer.concat(chunks));
    expect(got.length).toBe(expected.length);
    expect(got.slice(-2000)).toBe(expected.slice(-2000));
    expect(got === expected).toBe(true);
    expect(await server.proc.exited).toBe(0);
  }, 60_000);

  test("UDP is served as soon as the TCP port accepts (fresh starts, 2 shards)", async () => {
    // Readiness is "the TCP port accepts": every shard binds UDP before TCP, and no shard
    // listens before every shard's store can take forwarded requests. (Binding TCP first lost
    // the first datagram of about 1 start in 15 here.)
    for (let round = 0; round < 12; round++) {
      const server = await startOurs(["-t", "2"], { udp: true });
      try {
        const set = await udpRequest(server.udpPort, round, `set r${round} 0 0 2\r\nok\r\n`);
        expect(set.map((d) => d.subarray(8).toString())).toEqual(["STORED\r\n"]);
      } finally {
        await server.stop();
      }
    }
  }, 120_000);
});

/** The machine has IPv6 (an address on some interface, ::1 at least). */
const hasIpv6 = existsSync("/proc/net/if_inet6") && readFileSync("/proc/net/if_inet6", "utf8").trim() !== "";

describe("listening without -l", () => {
  // Skipped only on a machine without IPv6 (no /proc/net/if_inet6 entries): nothing to compare.
  test.skipIf(!hasIpv6)("IPv4 and IPv6, TCP and UDP, as stock; connection counts include the listening sockets", async () => {
    const tcp = [await freePort(), await freePort()];
    const udp = [await freeUdpPort(), await freeUdpPort()];
    const stock = Bun.spawn(["memcached", "-u", "root", "-t", "2", "-p", String(tcp[0]), "-U", String(udp[0])], { stdout: "ignore", stderr: "ignore" });
    const ours = Bun.spawn([process.execPath, "examples/memcached/main.ts", "-t", "2", "-p", String(tcp[1]), "-U", String(udp[1])], { stdout: "ignore", stderr: "pipe" });
    try {
      await waitForPort(tcp[0]!);
      await waitForPort(tcp[1]!, 30000);
      const seen: string[][] = [];
      for (const port of tcp) {
        const lines: string[] = [];
        // One connection over each family, then the counts as the second one sees them.
        for (const host of ["127.0.0.1", "::1"]) {
          const s = net.connect(port!, host);
          let text = "";
          s.on("data", (d) => (text += d.toString("latin1")));
          await new Promise<void>((r, j) => {
            s.once("connect", () => r());
            s.once("error", j);
          });
          s.write("stats\r\n");
          for (let i = 0; i < 200 && !text.endsWith("END\r\n"); i++) await Bun.sleep(5);
          lines.push(...text.split("\r\n").filter((l) => /^STAT (curr_connections|total_connections) /.test(l)).map((l) => `${host} ${l}`));
          s.destroy();
          await Bun.sleep(50);
        }
        // UDP over IPv6 answers too.
        const sock = dgram.createSocket("udp6");
        const got = new Promise<string>((r) => sock.once("message", (m) => r(m.subarray(8).toString("latin1"))));
        sock.send(Buffer.concat([Buffer.from([0, 7, 0, 0, 0, 1, 0, 0]), Buffer.from("version\r\n")]), udp[tcp.indexOf(port)]!, "::1");
        lines.push(`udp6 ${(await got).startsWith("VERSION ") ? "VERSION" : "?"}`);
        sock.close();
        seen.push(lines);
      }
      // connection_structures is not compared: stock's counts fd slots ever used, ours sums
      // each shard's peak (a probe connection on one shard and the test's on the other count
      // twice).
      expect(seen[0]!.length).toBe(5);
      expect(seen[1]).toEqual(seen[0]!);
    } finally {
      stock.kill("SIGTERM");
      ours.kill("SIGTERM");
      await stock.exited;
      await ours.exited;
    }
  }, 60_000);
});

describe("UDP (-U)", () => {
  test("frame header, every shard answers, large answers in ≤1400-byte datagrams", async () => {
    const server = await startOurs(["-t", "2"], { udp: true });
    try {
      const set = await udpRequest(server.udpPort, 7, "set u1 0 0 5\r\nhello\r\n");
      expect(set.length).toBe(1);
      expect(set[0]!.readUInt16BE(0)).toBe(7);
      expect(set[0]!.readUInt16BE(2)).toBe(0);
      expect(set[0]!.readUInt16BE(4)).toBe(1);
      expect(set[0]!.subarray(8).toString()).toBe("STORED\r\n");
      // A value visible over TCP too (whichever shard owns it).
      const tcp = await exchange(server.port, b("get u1\r\n"), { until: b("END\r\n") });
      expect(dec.decode(tcp.bytes)).toBe("VALUE u1 0 5\r\nhello\r\nEND\r\n");

      const big = "z".repeat(5000);
      await exchange(server.port, b(`set big 0 0 5000\r\n${big}\r\n`), { until: b("STORED\r\n") });
      const parts = await udpRequest(server.udpPort, 300, "get big\r\n");
      const expected = `VALUE big 0 5000\r\n${big}\r\nEND\r\n`;
      expect(parts.length).toBe(Math.ceil(expected.length / 1392));
      for (const [i, p] of parts.entries()) {
        expect(p.length).toBeLessThanOrEqual(1400);
        expect(p.readUInt16BE(0)).toBe(300);
        expect(p.readUInt16BE(2)).toBe(i);
        expect(p.readUInt16BE(4)).toBe(parts.length);
      }
      expect(Buffer.concat(parts.map((p) => p.subarray(8))).toString("latin1")).toBe(expected);

      // quit: a bare 8-byte frame header whose datagram count is 0, as stock answers.
      const quit = await udpRequest(server.udpPort, 9, "quit\r\n");
      expect(quit.length).toBe(1);
      expect([...quit[0]!]).toEqual([0, 9, 0, 0, 0, 0, 0, 0]);
    } finally {
      await server.stop();
    }
  }, 60_000);
});

describe("command line", () => {
  test("memcached's syntax: -p N, -pN, --port=N, grouped -vv, -o lists, --smp", () => {
    expect(parseCommandLine(["-p", "1234"]).settings.port).toBe(1234);
    expect(parseCommandLine(["-p1234"]).settings.port).toBe(1234);
    expect(parseCommandLine(["--port=1234"]).settings.port).toBe(1234);
    expect(parseCommandLine(["--port", "1234"]).settings.port).toBe(1234);
    expect(parseCommandLine(["--po", "1234"]).settings.port).toBe(1234);
    expect(parseCommandLine(["-vv"]).settings.verbose).toBe(2);
    const cl = parseCommandLine(["-U11211", "-l", "127.0.0.1", "-m", "128", "-c", "50", "-I", "2m", "-t", "3", "-u", "nobody"]);
    expect(cl.settings).toMatchObject({ udpPort: 11211, listen: "127.0.0.1", maxBytes: 128 << 20, maxConns: 50, itemSizeMax: 2 << 20, threads: 3 });
    expect(cl.user).toBe("nobody");
    expect(parseCommandLine(["--smp", "2"]).settings.threads).toBe(2);
    expect(parseCommandLine(["-o", "idle_timeout=5,hashpower=20,no_maxconns_fast"]).settings).toMatchObject({
      idleTimeout: 5,
      hashpowerInit: 20,
      maxconnsFast: false,
    });
  });

  test("unknown or impossible options are refused with a clear message", () => {
    const fails = (args: string[], message: RegExp): void => {
      let err: unknown;
      try {
        parseCommandLine(args);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UsageError);
      expect((err as Error).message).toMatch(message);
    };
    fails(["-x"], /invalid option -- 'x'/);
    fails(["--bogus"], /unrecognized option '--bogus'/);
    fails(["-p"], /requires an argument/);
    fails(["-I", "100"], /less than 1024/);
    fails(["-m", "1", "-I", "1m"], /1\/2 of memory max/);
    fails(["-o", "nonsense"], /Illegal suboption "nonsense"/);
    fails(["-o", "ext_page_size=64"], /extstore is not supported/);
    fails(["-o", "ssl_chain_cert=x"], /TLS is not supported/);
    // slab_chunk_max is in bytes, as stock's code reads it (its -h says kilobytes): a stock
    // command line like this one was refused (65536 KiB > -I).
    expect(parseCommandLine(["-I", "2m", "-o", "slab_chunk_max=65536"]).settings.slabChunkMax).toBe(65536);
    // Stock's tuning sub-options are taken (with a warning), as the help says.
    expect(parseCommandLine(["-o", "sock_cookie_id=1,slab_automove_freeratio=0.01"]).warnings.length).toBe(2);
    fails(["-d"], /daemon/);
    fails(["-t", "0"], /greater than 0/);
    // A stray argument is ignored, as stock (GNU getopt) ignores it.
    expect(parseCommandLine(["stray", "-p", "1234"]).settings.port).toBe(1234);
  });

  test("the process: -h prints the options, -V the version, a bad flag exits non-zero", async () => {
    const help = spawnSync([process.execPath, "examples/memcached/main.ts", "-h"]);
    expect(help.exitCode).toBe(0);
    expect(help.stdout.toString()).toContain("-p, --port=<num>");
    const version = spawnSync([process.execPath, "examples/memcached/main.ts", "-V"]);
    expect(version.stdout.toString()).toBe("memcached 1.6.18\n");
    const bad = spawnSync([process.execPath, "examples/memcached/main.ts", "-Q"]);
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stderr.toString()).toContain("invalid option -- 'Q'");
    // -p with the value attached, on a real server.
    const server = await startOurs(["-t1"]);
    await waitForPort(server.port);
    const a = await exchange(server.port, b("version\r\n"), { until: b("\r\n") });
    expect(dec.decode(a.bytes)).toBe("VERSION 1.6.18\r\n");
    await server.stop();
  }, 60_000);

  test("a port in use: one clear line and exit 71 (stock's EX_OSERR), on any shard, UDP or TCP", async () => {
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, "127.0.0.1", () => r()));
    const busy = (holder.address() as net.AddressInfo).port;
    const udpHolder = dgram.createSocket("udp4");
    await new Promise<void>((r) => udpHolder.bind(0, "127.0.0.1", () => r()));
    const busyUdp = udpHolder.address().port;
    try {
      const free = await freePort();
      for (const args of [["-p", String(busy)], ["-p", String(free), "-U", String(busyUdp)]]) {
        const run = Bun.spawn([process.execPath, "examples/memcached/main.ts", "-l", "127.0.0.1", "-t", "2", ...args], { stdout: "pipe", stderr: "pipe" });
        const code = await run.exited;
        const err = await new Response(run.stderr).text();
        expect(code).toBe(71);
        expect(err).toContain("memcached: failed to listen:");
        expect(err).toContain("EADDRINUSE (127.0.0.1:");
        expect(err).not.toContain("    at ");
      }
    } finally {
      holder.close();
      udpHolder.close();
    }
  }, 60_000);
});
