// The network examples start, serve, and stop on SIGTERM: examples/echo and examples/http-hello.
import { afterEach, expect, test } from "bun:test";
import { connect as nodeConnect, createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { BUN } from "../smp/helpers.ts";
import { listen } from "../../src/net/api.ts";

const procs: ReturnType<typeof Bun.spawn>[] = [];
afterEach(() => {
  for (const p of procs.splice(0)) p.kill("SIGKILL");
});

/** A port nobody listens on right now. */
async function freePort(): Promise<number> {
  const l = listen("127.0.0.1:0", { reusePort: false });
  const port = (l.localAddress as { port: number }).port;
  await l.close();
  return port;
}

async function start(script: string, port: number): Promise<ReturnType<typeof Bun.spawn>> {
  const p = Bun.spawn([BUN, fileURLToPath(new URL(`../../${script}`, import.meta.url)), "--port", String(port), "--host", "127.0.0.1", "--smp", "2", "--overprovisioned"], {
    stdout: "pipe",
    stderr: "pipe",
  });
  procs.push(p);
  const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
  let out = "";
  while (!out.includes("listening")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${script} exited: ${out}`);
    out += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  return p;
}

test("examples/echo echoes on every shard and exits 0 on SIGTERM", async () => {
  const port = await freePort();
  const p = await start("examples/echo/main.ts", port);
  for (let i = 0; i < 8; i++) {
    const text = await new Promise<string>((resolve, reject) => {
      const s = nodeConnect({ host: "127.0.0.1", port }, () => s.end(`hello ${i}`));
      let got = "";
      s.on("data", (d) => (got += d));
      s.on("end", () => resolve(got));
      s.on("error", reject);
    });
    expect(text).toBe(`hello ${i}`);
  }
  p.kill("SIGTERM");
  expect(await p.exited).toBe(0);
}, 60_000);

/**
 * Sends `request` to the example on `port` without reading, so that its answers back up into
 * the server, then SIGTERMs `p` and reads everything: what arrived, and how the connection ended
 * ("fin", or "error" with the error's message).
 */
/** Bytes the kernel holds in the send queue of the local TCP socket on `localPort` (ss's Send-Q). */
function kernelSendQueue(localPort: number): number {
  const r = Bun.spawnSync(["ss", "-tnH", "state", "established", `( sport = :${localPort} )`]);
  const line = r.stdout.toString().trim().split("\n")[0] ?? "";
  const f = line.trim().split(/\s+/);
  if (r.exitCode !== 0 || f.length < 2) throw new Error(`ss found no socket on port ${localPort}: ${r.stderr.toString()}${line}`);
  return Number(f[1]);
}

/**
 * A client sends `request` without reading, until the answers back up into the server (its
 * output's high-water mark then holds its input); then SIGTERM. `unsent`: the request's bytes
 * the server had not received when the signal went (in the client's own buffer or its kernel
 * send queue: the server's receive window closes while it holds its input, and how much its
 * kernel takes first depends on buffer autotuning). The server must answer at least everything
 * else: what it had received (and what it takes during its grace).
 */
async function unreadThenSigterm(p: ReturnType<typeof Bun.spawn>, port: number, request: Uint8Array | string): Promise<{ got: Buffer; how: string; error: string | undefined; unsent: number }> {
  const s = nodeConnect({ host: "127.0.0.1", port });
  await new Promise<void>((r) => s.once("connect", () => r()));
  s.pause();
  // Written in 64 KiB pieces, each handed to the kernel before the next: what the client still
  // holds itself is at most one piece, and `flushed` counts what its kernel took.
  const bytes = typeof request === "string" ? Buffer.from(request, "latin1") : request;
  let flushed = 0;
  const written = (async () => {
    for (let at = 0; at < bytes.length; at += 65536) {
      const piece = bytes.subarray(at, Math.min(bytes.length, at + 65536));
      await new Promise<void>((r) => s.write(piece, () => r()));
      flushed += piece.length;
    }
  })();
  // Usually the whole request fits in the kernel's buffers and the writes complete, within
  // seconds on a loaded machine; now and then the server's receive window closes first.
  await Promise.race([written, Bun.sleep(10_000)]);
  await Bun.sleep(300);
  const unsent = bytes.length - flushed + kernelSendQueue(s.localPort!);
  const chunks: Buffer[] = [];
  let error: Error | undefined;
  const ended = new Promise<string>((resolve) => {
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("end", () => resolve("fin"));
    s.on("error", (e) => {
      error = e;
      resolve("error");
    });
  });
  p.kill("SIGTERM");
  await Bun.sleep(50);
  s.resume();
  const how = await ended;
  s.destroy();
  return { got: Buffer.concat(chunks), how, error: error?.message, unsent };
}

test("examples/echo on SIGTERM echoes what it had received, then closes with FIN, not a reset", async () => {
  // The client sends without reading: the echo backs up into the server's output (its
  // high-water mark then holds its input), so answers are still queued in the server when the
  // signal arrives. The old stop closed the listener only and the shard exited under them.
  const port = await freePort();
  const p = await start("examples/echo/main.ts", port);
  // 16 MiB: more than the kernel's buffers on both sides hold (1 MiB fitted in them, and the
  // kernel delivered it after the old shard exited).
  const size = 16 * 1024 * 1024;
  const payload = new Uint8Array(size);
  for (let i = 0; i < size; i++) payload[i] = (i * 2654435761) >>> 24;
  const { got, how, error, unsent } = await unreadThenSigterm(p, port, payload);
  expect({ how, error }).toEqual({ how: "fin", error: undefined });
  // Everything received is echoed (what the server takes during its grace too), in order.
  expect(got.length).toBeGreaterThanOrEqual(size - unsent);
  expect(got.length).toBeLessThanOrEqual(size);
  expect(Buffer.compare(got, Buffer.from(payload).subarray(0, got.length))).toBe(0);
  expect(await p.exited).toBe(0);
}, 60_000);

test("examples/http-hello answers keep-alive and pipelined requests", async () => {
  const port = await freePort();
  const p = await start("examples/http-hello/main.ts", port);
  for (let i = 0; i < 5; i++) {
    const r = await fetch(`http://127.0.0.1:${port}/x`);
    expect(r.status).toBe(200);
    expect(await r.text()).toBe("Hello, World!");
  }
  // Three pipelined requests in one write, split across the headers.
  const answers = await new Promise<string>((resolve, reject) => {
    const s = nodeConnect({ host: "127.0.0.1", port }, () => {
      s.write("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHo");
      setTimeout(() => s.write("st: b\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), 20);
    });
    let got = "";
    s.on("data", (d) => {
      got += d;
      if (got.split("Hello, World!").length === 4) {
        s.end();
        resolve(got);
      }
    });
    s.on("error", reject);
  });
  expect(answers.split("HTTP/1.1 200 OK").length).toBe(4);
  // Headers over 8 KiB get 431 even when the request arrives whole in one read.
  const tooLong = await new Promise<string>((resolve, reject) => {
    const s = nodeConnect({ host: "127.0.0.1", port }, () => s.write(`GET / HTTP/1.1\r\nHost: h\r\nX: ${"a".repeat(9000)}\r\n\r\n`));
    let got = "";
    s.on("data", (d) => (got += d));
    s.on("close", () => resolve(got));
    s.on("error", reject);
  });
  expect(tooLong).toStartWith("HTTP/1.1 431 ");
  p.kill("SIGTERM");
  expect(await p.exited).toBe(0);
}, 60_000);

/** Runs an example to its exit (it must not start serving). */
async function runToExit(script: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = Bun.spawn([BUN, fileURLToPath(new URL(`../../${script}`, import.meta.url)), ...args], { stdout: "pipe", stderr: "pipe" });
  procs.push(p);
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout as ReadableStream).text(), new Response(p.stderr as ReadableStream).text(), p.exited]);
  return { code, stdout, stderr };
}

test("examples/http-hello on SIGTERM answers every request it had received, then closes with FIN", async () => {
  // As for echo: a client pipelines requests without reading until the answers back up into the
  // server, then the signal comes. 200,000 requests: ~21 MB of answers, more than the kernel holds.
  const port = await freePort();
  const p = await start("examples/http-hello/main.ts", port);
  const n = 200_000;
  const request = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
  const { got, how, error, unsent } = await unreadThenSigterm(p, port, request.repeat(n));
  expect({ how, error }).toEqual({ how: "fin", error: undefined });
  const text = got.toString("latin1");
  // Every request received is answered (those taken during the grace too), each answer whole.
  const answers = text.split("HTTP/1.1 200 OK\r\n").length - 1;
  expect(answers).toBeGreaterThanOrEqual(n - Math.floor(unsent / request.length));
  expect(answers).toBeLessThanOrEqual(n);
  expect(text.endsWith("Hello, World!")).toBe(true);
  expect(await p.exited).toBe(0);
}, 60_000);

test("a --host that is not an address is refused with the command line (exit 2), a port in use in one line (exit 1); no stack", async () => {
  for (const [script, name] of [
    ["examples/echo/main.ts", "echo"],
    ["examples/http-hello/main.ts", "http-hello"],
  ] as const) {
    const bad = await runToExit(script, ["--port", String(await freePort()), "--host", "no-such-host", "--smp", "1"]);
    expect({ code: bad.code, stdout: bad.stdout }).toEqual({ code: 2, stdout: "" });
    expect(bad.stderr).toStartWith(`${name}: --host: `);
    expect(bad.stderr).toContain('"no-such-host" is not an IP address literal');
    expect(bad.stderr).not.toContain("    at ");
    // Another process holds the port (without SO_REUSEPORT): every shard's listen fails.
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const port = (holder.address() as { port: number }).port;
    try {
      const busy = await runToExit(script, ["--port", String(port), "--host", "127.0.0.1", "--smp", "2", "--overprovisioned"]);
      expect(busy.code).toBe(1);
      expect(busy.stderr).toBe(`${name}: cannot listen on 127.0.0.1 port ${port}: listen failed: EADDRINUSE (127.0.0.1:${port})\n`);
    } finally {
      await new Promise<void>((resolve) => holder.close(() => resolve()));
    }
  }
}, 60_000);
