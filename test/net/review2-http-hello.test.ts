// examples/http-hello, after a second review: what RFC 9112 requires of a server's answer to an
// over-long request line, a Host field with an invalid value, and a Connection value holding a
// bare CR or a NUL.
// Raw TCP clients, so that every byte is ours.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { connect, createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { BUN } from "../smp/helpers.ts";

const MAIN = fileURLToPath(new URL("../../examples/http-hello/main.ts", import.meta.url));

/** A port nobody listens on right now. */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

let port = 0;
let server: ReturnType<typeof Bun.spawn> | undefined;
beforeAll(async () => {
  port = await freePort();
  const p = Bun.spawn([BUN, MAIN, "--port", String(port), "--host", "127.0.0.1", "--smp", "1", "--overprovisioned"], { stdout: "pipe", stderr: "pipe" });
  server = p;
  const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
  let out = "";
  while (!out.includes("listening")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`http-hello exited: ${out}`);
    out += new TextDecoder().decode(value);
  }
  reader.releaseLock();
}, 30_000);
afterAll(async () => {
  if (server === undefined) return;
  server.kill("SIGTERM");
  const code = await Promise.race([server.exited, Bun.sleep(10_000).then(() => "hung")]);
  server.kill("SIGKILL");
  expect(code).toBe(0);
}, 30_000);

/**
 * Sends `request` on a new connection; collects the reply until the server closes, or until
 * it holds a whole 200 answer and the connection stayed open `openMs` longer ("open"). Where a
 * close is expected, openMs is long: a slow close must not read as "open".
 */
function talk(request: string, openMs = 200): Promise<{ text: string; end: "fin" | "reset" | "open" }> {
  return new Promise((resolve) => {
    let text = "";
    let end: "fin" | "reset" | "open" = "open";
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(giveUp);
      s.destroy();
      resolve({ text, end });
    };
    const giveUp = setTimeout(finish, 5000);
    const s = connect({ host: "127.0.0.1", port, noDelay: true }, () => s.write(request));
    s.on("data", (d) => {
      text += d.toString("latin1");
      // A keep-alive answer: the connection would stay open; wait a little for a close anyway.
      if (text.endsWith("Hello, World!")) setTimeout(finish, openMs);
    });
    s.on("end", () => (end = "fin"));
    s.on("error", (e: NodeJS.ErrnoException) => {
      end = e.code === "ECONNRESET" || e.code === "EPIPE" ? "reset" : "open";
      finish();
    });
    s.on("close", finish);
  });
}

const statuses = (text: string) => [...text.matchAll(/HTTP\/1\.1 (\d\d\d) /g)].map((m) => m[1]!);

test("a request line over the head limit gets 414 URI Too Long (RFC 9112 3: a server MUST), not 431", async () => {
  // It got 431 "Request Header Fields Too Large", which names the wrong part of the request.
  for (const request of [`GET /${"a".repeat(9000)} HTTP/1.1\r\nHost: h\r\n\r\n`, `GET /${"a".repeat(9000)}`]) {
    const r = await talk(request);
    expect({ statuses: statuses(r.text), end: r.end }).toEqual({ statuses: ["414"], end: "fin" });
    expect(r.text).toContain("\r\nConnection: close\r\n");
  }
  // Long fields after a short request line still get 431.
  const fields = await talk(`GET / HTTP/1.1\r\nHost: h\r\nX: ${"a".repeat(9000)}\r\n\r\n`);
  expect({ statuses: statuses(fields.text), end: fields.end }).toEqual({ statuses: ["431"], end: "fin" });
}, 30_000);

test("a Host field whose value is not uri-host [ \":\" port ] gets 400 (RFC 9112 3.2: a server MUST)", async () => {
  // Each got 200: only the value's bytes were checked, not its form.
  for (const host of ["a:b", "a:8080:1", "::1", "[::1", "a]b", "[::1]x", "[::1]:8x", "a[b]", "[]"]) {
    const request = `GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
    const r = await talk(request);
    expect({ request, statuses: statuses(r.text), end: r.end }).toEqual({ request, statuses: ["400"], end: "fin" });
  }
  // Still served: names, IPv4 and IPv6 literals, with and without a port (an empty port too,
  // RFC 3986 allows it), and an empty value.
  for (const host of ["example.com", "a:", "127.0.0.1:8080", "[::1]", "[::1]:8080", "[fe80::1%25eth0]", "[v1.x]:1", ""]) {
    const request = `GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
    const r = await talk(request);
    expect({ request, statuses: statuses(r.text), end: r.end }).toEqual({ request, statuses: ["200"], end: "open" });
  }
}, 60_000);

test('"Connection: close" with a bare CR or a NUL around "close" is still "close" (RFC 9110 5.5, RFC 9112 2.2)', async () => {
  // The RFCs allow only refusing such a value or reading each of these bytes as a space; taken as
  // they were, "close\0" or "close\r" was not "close": answered 200 and left open, and the
  // pipelined request after it was answered too.
  for (const value of ["close\x00", "close\r", "\x00close", "keep-alive, \rclose\x00\t"]) {
    const request = `GET / HTTP/1.1\r\nHost: h\r\nConnection: ${value}\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n`;
    const r = await talk(request, 5000);
    expect({ value, statuses: statuses(r.text), end: r.end }).toEqual({ value, statuses: ["200"], end: "fin" });
    expect(r.text).toContain("\r\nConnection: close\r\n");
  }
  // A CR or NUL inside an option is no space around it: "clo\0se" is not "close".
  const r = await talk("GET / HTTP/1.1\r\nHost: h\r\nConnection: clo\x00se\r\n\r\n");
  expect({ statuses: statuses(r.text), end: r.end }).toEqual({ statuses: ["200"], end: "open" });
}, 30_000);
