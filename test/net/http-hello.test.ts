// examples/http-hello answers what it cannot serve (bodies, HTTP/1.0, Connection: close,
// malformed or slow or oversized heads) clearly and closes without a reset, while keep-alive and
// pipelining clients go on unaffected. Raw TCP clients, so that every byte is ours.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { startHttpHello as start, stopHttpHello as stop } from "./fixtures/http-hello.ts";

// Ports 19100-19199 are this file's: listeners use SO_REUSEPORT, so a stray server on the same
// port would share it silently.
const PORT = 19131;
const DEADLINE_PORT = 19132;
const HELLO = "HTTP/1.1 200 OK\r\n";


interface Reply {
  text: string;
  /** How the connection ended: the server's FIN, a reset, or still open when we stopped. */
  end: "fin" | "reset" | "open";
}

interface TalkOptions {
  port?: number;
  /** Pause between pieces (ms). Pieces after the server's FIN are not sent, unless `keepSending`. */
  gapMs?: number;
  /** Send every piece even after the server's FIN, then FIN (a client sending blindly, as an upload does). */
  keepSending?: boolean;
  /** Stop once the reply satisfies this, then wait `graceMs` more to see whether it closes. */
  until?: (text: string) => boolean;
  graceMs?: number;
  /** Give up (end "open") after this long. */
  waitMs?: number;
}

/** Sends `pieces` on a new connection and collects the reply until the server closes (or `until`). */
function talk(pieces: string | string[], opts: TalkOptions = {}): Promise<Reply> {
  const list = typeof pieces === "string" ? [pieces] : pieces;
  return new Promise<Reply>((resolve) => {
    let text = "";
    let end: Reply["end"] = "open";
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(giveUp);
      s.destroy();
      resolve({ text, end });
    };
    const giveUp = setTimeout(finish, opts.waitMs ?? 5000);
    const stopped = () => settled || s.destroyed || (s.readableEnded && !opts.keepSending);
    const s = connect({ host: "127.0.0.1", port: opts.port ?? PORT, noDelay: true, allowHalfOpen: opts.keepSending }, async () => {
      for (let i = 0; i < list.length && !stopped(); i++) {
        if (i > 0 && opts.gapMs) await Bun.sleep(opts.gapMs);
        if (!stopped()) s.write(list[i]!);
      }
      if (opts.keepSending && !stopped()) s.end();
    });
    s.on("data", (d) => {
      text += d;
      if (opts.until?.(text)) setTimeout(finish, opts.graceMs ?? 150);
    });
    s.on("end", () => {
      end = "fin";
    });
    s.on("error", (e: NodeJS.ErrnoException) => {
      end = e.code === "ECONNRESET" || e.code === "EPIPE" ? "reset" : "open";
      finish();
    });
    s.on("close", finish);
  });
}

/** Status lines in a reply. */
function statuses(text: string): string[] {
  return [...text.matchAll(/HTTP\/1\.1 (\d\d\d) /g)].map((m) => m[1]!);
}

const twice = (text: string) => statuses(text).length >= 2 && text.endsWith("Hello, World!");

let server: ReturnType<typeof Bun.spawn> | undefined;
beforeAll(async () => {
  server = await start(PORT);
}, 30_000);
afterAll(async () => {
  await stop(server);
}, 30_000);

describe("bodies", () => {
  test("Content-Length > 0 gets 413 and a close; the body is not read as a request", async () => {
    const r = await talk("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 24\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n");
    expect(statuses(r.text)).toEqual(["413"]);
    expect(r.text).toContain("\r\nConnection: close\r\n");
    expect(r.end).toBe("fin");
    // Header names are case-insensitive.
    const lower = await talk("POST / HTTP/1.1\r\nHost: h\r\ncontent-LENGTH:5\r\n\r\nhello");
    expect(statuses(lower.text)).toEqual(["413"]);
    expect(lower.end).toBe("fin");
  }, 30_000);

  test("Transfer-Encoding gets 501 and a close", async () => {
    for (const name of ["Transfer-Encoding", "transfer-encoding", "TRANSFER-ENCODING"]) {
      const r = await talk(`POST / HTTP/1.1\r\nHost: a\r\n${name}: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`);
      expect(statuses(r.text)).toEqual(["501"]);
      expect(r.text).toContain("\r\nConnection: close\r\n");
      expect(r.end).toBe("fin");
    }
  }, 30_000);

  test("Content-Length: 0 is served and the connection stays", async () => {
    const r = await talk("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\ncontent-length: 00\r\n\r\n", { until: twice });
    expect(statuses(r.text)).toEqual(["200", "200"]);
    expect(r.end).toBe("open");
  }, 30_000);
});

describe("closing requests", () => {
  test("HTTP/1.0 is answered with Connection: close and closed", async () => {
    const r = await talk("GET / HTTP/1.0\r\n\r\n");
    expect(r.text).toStartWith(HELLO);
    expect(r.text).toContain("\r\nConnection: close\r\n");
    expect(r.text).toEndWith("Hello, World!");
    expect(r.end).toBe("fin");
  }, 30_000);

  test("HTTP/1.0 with Connection: keep-alive stays open", async () => {
    const r = await talk("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n", { until: twice });
    expect(statuses(r.text)).toEqual(["200", "200"]);
    expect(r.text.split("\r\nConnection: keep-alive\r\n").length).toBe(3);
    expect(r.end).toBe("open");
  }, 30_000);

  test("Connection: close on HTTP/1.1 is the last request answered", async () => {
    for (const value of ["close", "CLOSE", "keep-alive, Close"]) {
      const r = await talk(`GET / HTTP/1.1\r\nHost: a\r\nConnection: ${value}\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n`);
      expect(statuses(r.text)).toEqual(["200"]);
      expect(r.text).toContain("\r\nConnection: close\r\n");
      expect(r.end).toBe("fin");
    }
  }, 30_000);

  test("malformed requests get 400 and a close", async () => {
    const bad = [
      "GARBAGE\r\nHost: h\r\n\r\n",
      "GET /\r\nHost: h\r\n\r\n", // HTTP/0.9
      "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
      "GET / http/1.1\r\nHost: h\r\n\r\n",
      "GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET / x HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nNo colon here\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\n: no name\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nHost : a\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n",
      // Methods and header names are tokens; the target has no control bytes (these got 200).
      "G<T / HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET\x00 / HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /a\x00b HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /a\x7fb HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX\x00Y: z\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\n(x): y\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nContent Length: 5\r\n\r\nhello",
    ];
    for (const request of bad) {
      const r = await talk(request);
      expect({ request, statuses: statuses(r.text), end: r.end }).toEqual({ request, statuses: ["400"], end: "fin" });
      expect(r.text).toContain("\r\nConnection: close\r\n");
    }
  }, 60_000);
});

test("an HTTP/1.1 request needs exactly one Host field with a valid value (RFC 9112 3.2); HTTP/1.0 does not", async () => {
  for (const request of [
    "GET / HTTP/1.1\r\n\r\n",
    "GET / HTTP/1.1\r\nX: y\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.1\r\nhost: a\r\nHOST: b\r\n\r\n",
    "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n",
  ]) {
    const r = await talk(request);
    expect({ request, statuses: statuses(r.text), end: r.end }).toEqual({ request, statuses: ["400"], end: "fin" });
  }
  // Served: names, IP literals with ports, an empty value (a target without an authority), case
  // and white space around the value, and HTTP/1.0 without one (then closed, as HTTP/1.0 is).
  for (const host of ["example.com", "EXAMPLE.com:8080", "127.0.0.1:80", "[::1]:8080", "", " \ta-b_c~d%41 \t"]) {
    const request = `GET / HTTP/1.1\r\nhOsT:${host}\r\n\r\n`;
    const r = await talk(request, { until: (t) => t.endsWith("Hello, World!") });
    expect({ request, statuses: statuses(r.text), end: r.end }).toEqual({ request, statuses: ["200"], end: "open" });
  }
  const old = await talk("GET / HTTP/1.0\r\n\r\n");
  expect({ statuses: statuses(old.text), end: old.end }).toEqual({ statuses: ["200"], end: "fin" });
}, 60_000);

test("unknown but well-formed methods and header names, and bytes past ASCII in the target, are served", async () => {
  const ok = await talk("PURGE /caf\u00e9 HTTP/1.1\r\nHost: h\r\nX-Odd_Name!#$%&'*+.^`|~: v\r\n\r\n", { until: (t) => t.endsWith("Hello, World!") });
  expect(statuses(ok.text)).toEqual(["200"]);
}, 30_000);

test("HEAD is answered without a body, so pipelined answers after it stay in step", async () => {
  const head = "HTTP/1.1 200 OK\r\nServer: shoal\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n";
  const r = await talk("HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\nHEAD /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\nHEAD / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
  expect(r.text).toBe(`${head}\r\n${head}\r\nHello, World!${head}Connection: keep-alive\r\n\r\n${head}Connection: close\r\n\r\n`);
  expect(r.end).toBe("fin");
}, 30_000);

test("LF-only line ends are accepted", async () => {
  const r = await talk("GET / HTTP/1.1\nHost: a\n\nGET / HTTP/1.1\r\nHost: b\n\r\n", { until: twice });
  expect(statuses(r.text)).toEqual(["200", "200"]);
  expect(r.end).toBe("open");
  const bare = await talk("GET / HTTP/1.1\nHost: h\n\n", { until: (t) => t.endsWith("Hello, World!") });
  expect(statuses(bare.text)).toEqual(["200"]);
}, 30_000);

test("a head that arrives in many pieces is read once and answered", async () => {
  // CRs and long lines split anywhere: the scan resumes where it stopped, lines are parsed whole.
  const head = `GET /${"p".repeat(300)} HTTP/1.1\r\nHost: a\r\nX-CR: ${"\r".repeat(3000)}\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n`;
  const pieces: string[] = [];
  for (let i = 0; i < head.length; i += 97) pieces.push(head.slice(i, i + 97));
  pieces.push("GET / HTTP/1.1\r\nHost: h\r\n", "Connection: clo", "se\r", "\n\r", "\n");
  const r = await talk(pieces, { gapMs: 2 });
  expect(statuses(r.text)).toEqual(["200", "200"]);
  expect(r.end).toBe("fin");
}, 30_000);

describe("oversized heads", () => {
  // The client's bytes are still arriving when the server answers: closing with them unread
  // would reset the connection, and the reset can overtake the answer.
  test("431 reaches a client that is still sending, then FIN, not a reset", async () => {
    const pieces = ["GET / HTTP/1.1\r\nHost: a\r\n"];
    for (let i = 0; i < 40; i++) pieces.push(`X-${i}: ${"a".repeat(1000)}\r\n`);
    const r = await talk(pieces, { gapMs: 2, keepSending: true });
    expect(statuses(r.text)).toEqual(["431"]);
    expect(r.text).toContain("\r\nConnection: close\r\n");
    expect(r.end).toBe("fin");
  }, 30_000);

  test("413 reaches a client still sending its body, then FIN, not a reset", async () => {
    const pieces = ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 40000\r\n\r\n"];
    for (let i = 0; i < 40; i++) pieces.push("b".repeat(1000));
    const r = await talk(pieces, { gapMs: 2, keepSending: true });
    expect(statuses(r.text)).toEqual(["413"]);
    expect(r.end).toBe("fin");
  }, 30_000);

  test("a 9000-byte head in one piece gets 431", async () => {
    const r = await talk(`GET / HTTP/1.1\r\nHost: h\r\nX: ${"a".repeat(9000)}\r\n\r\n`);
    expect(statuses(r.text)).toEqual(["431"]);
    expect(r.end).toBe("fin");
  }, 30_000);
});

test("a head not complete within --header-timeout-ms gets 408; idle keep-alive connections stay", async () => {
  const p = await start(DEADLINE_PORT, "--header-timeout-ms", "1000");
  try {
    // Slowloris: a byte every 100 ms, forever (the idle timeout never fires).
    const pieces = ["GET / HTTP/1.1\r\nHost: a\r\n", ...Array.from({ length: 100 }, () => "x")];
    const slow = talk(pieces, { port: DEADLINE_PORT, gapMs: 100, waitMs: 8000 });
    // Meanwhile a keep-alive client idles between requests longer than the deadline.
    const idle = talk(["GET / HTTP/1.1\r\nHost: h\r\n\r\n", "GET / HTTP/1.1\r\nHost: h\r\n\r\n"], { port: DEADLINE_PORT, gapMs: 2000, until: twice, graceMs: 1500 });
    const r = await slow;
    expect(statuses(r.text)).toEqual(["408"]);
    expect(r.text).toContain("\r\nConnection: close\r\n");
    expect(r.end).toBe("fin");
    const i = await idle;
    expect(statuses(i.text)).toEqual(["200", "200"]);
    expect(i.end).toBe("open");
  } finally {
    await stop(p);
  }
}, 30_000);

test("keep-alive and pipelining clients are unaffected while bad clients are refused", async () => {
  const done = { value: false };
  // One request at a time on one connection, until the bad clients are through.
  const keepAlive = new Promise<{ answered: number; sent: number; end: string }>((resolve, reject) => {
    let sent = 0;
    let text = "";
    const s = connect({ host: "127.0.0.1", port: PORT, noDelay: true }, () => {
      s.write("GET / HTTP/1.1\r\nHost: k\r\n\r\n");
      sent++;
    });
    s.on("data", (d) => {
      text += d;
      const answered = text.split("Hello, World!").length - 1;
      if (answered < sent) return;
      if (done.value && sent >= 20) {
        const end = s.readableEnded ? "fin" : "open";
        s.destroy();
        resolve({ answered: statuses(text).filter((x) => x === "200").length, sent, end });
        return;
      }
      s.write("GET / HTTP/1.1\r\nHost: k\r\n\r\n");
      sent++;
    });
    s.on("error", reject);
  });
  // Batches of 16 pipelined requests, split at odd places.
  const pipelined = new Promise<{ answered: number; sent: number }>((resolve, reject) => {
    const batch = "GET / HTTP/1.1\r\nHost: p\r\n\r\n".repeat(16);
    let sent = 0;
    let text = "";
    const s = connect({ host: "127.0.0.1", port: PORT, noDelay: true }, () => {
      s.write(batch.slice(0, 50));
      s.write(batch.slice(50));
      sent += 16;
    });
    s.on("data", (d) => {
      text += d;
      if (text.split("Hello, World!").length - 1 < sent) return;
      if (done.value && sent >= 64) {
        s.destroy();
        resolve({ answered: statuses(text).filter((x) => x === "200").length, sent });
        return;
      }
      s.write(batch.slice(0, 77));
      s.write(batch.slice(77));
      sent += 16;
    });
    s.on("error", reject);
  });
  const stalled = talk("GET / HTTP/1.1\r\nHost: stalled", { waitMs: 1500 });
  const refused = await Promise.all([
    talk("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789"),
    talk("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    talk("NOT HTTP AT ALL\r\n\r\n"),
    talk(`GET / HTTP/1.1\r\nHost: h\r\nX: ${"a".repeat(20_000)}\r\n\r\n`),
    talk("GET / HTTP/1.0\r\n\r\n"),
  ]);
  expect(refused.map((r) => [statuses(r.text), r.end])).toEqual([
    [["413"], "fin"],
    [["501"], "fin"],
    [["400"], "fin"],
    [["431"], "fin"],
    [["200"], "fin"],
  ]);
  expect((await stalled).end).toBe("open");
  done.value = true;
  const k = await keepAlive;
  expect(k.answered).toBe(k.sent);
  expect(k.end).toBe("open");
  const p = await pipelined;
  expect(p.answered).toBe(p.sent);
}, 30_000);

test("wrk gets only 200s; curl's HTTP/1.0 and body requests get their answers", async () => {
  const wrk = Bun.spawnSync(["wrk", "-t1", "-c16", "-d2s", `http://127.0.0.1:${PORT}/`]);
  const out = wrk.stdout.toString();
  expect(wrk.exitCode).toBe(0);
  expect(out).not.toContain("Non-2xx");
  expect(out).not.toContain("Socket errors");
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
  expect(requests).toBeGreaterThan(0);
  const curl = (...args: string[]) => Bun.spawnSync(["curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", ...args, `http://127.0.0.1:${PORT}/`]).stdout.toString();
  expect(curl("--http1.0")).toBe("200");
  expect(curl("-d", "hello")).toBe("413");
}, 30_000);

describe("what RFC 9112 requires of the answer", () => {
  /** Until a whole 200 answer came, then `graceMs` more to see whether the server closes. */
  const served = (graceMs = 200): TalkOptions => ({ until: (t) => t.endsWith("Hello, World!"), graceMs });

  test("a request line over the head limit gets 414 URI Too Long (RFC 9112 3: a server MUST), not 431", async () => {
    // It got 431 "Request Header Fields Too Large", which names the wrong part of the request.
    for (const request of [`GET /${"a".repeat(9000)} HTTP/1.1\r\nHost: h\r\n\r\n`, `GET /${"a".repeat(9000)}`]) {
      const r = await talk(request, served());
      expect({ statuses: statuses(r.text), end: r.end }).toEqual({ statuses: ["414"], end: "fin" });
      expect(r.text).toContain("\r\nConnection: close\r\n");
    }
    // Long fields after a short request line still get 431.
    const fields = await talk(`GET / HTTP/1.1\r\nHost: h\r\nX: ${"a".repeat(9000)}\r\n\r\n`, served());
    expect({ statuses: statuses(fields.text), end: fields.end }).toEqual({ statuses: ["431"], end: "fin" });
  }, 30_000);

  test("a Host field whose value is not uri-host [ \":\" port ] gets 400 (RFC 9112 3.2: a server MUST)", async () => {
    // Each got 200: only the value's bytes were checked, not its form.
    for (const host of ["a:b", "a:8080:1", "::1", "[::1", "a]b", "[::1]x", "[::1]:8x", "a[b]", "[]"]) {
      const request = `GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
      const r = await talk(request, served());
      expect({ request, statuses: statuses(r.text), end: r.end }).toEqual({ request, statuses: ["400"], end: "fin" });
    }
    // Still served: names, IPv4 and IPv6 literals, with and without a port (an empty port too,
    // RFC 3986 allows it), and an empty value.
    for (const host of ["example.com", "a:", "127.0.0.1:8080", "[::1]", "[::1]:8080", "[fe80::1%25eth0]", "[v1.x]:1", ""]) {
      const request = `GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
      const r = await talk(request, served());
      expect({ request, statuses: statuses(r.text), end: r.end }).toEqual({ request, statuses: ["200"], end: "open" });
    }
  }, 60_000);

  test('"Connection: close" with a bare CR or a NUL around "close" is still "close" (RFC 9110 5.5, RFC 9112 2.2)', async () => {
    // The RFCs allow only refusing such a value or reading each of these bytes as a space; taken as
    // they were, "close\0" or "close\r" was not "close": answered 200 and left open, and the
    // pipelined request after it was answered too.
    for (const value of ["close\x00", "close\r", "\x00close", "keep-alive, \rclose\x00\t"]) {
      const request = `GET / HTTP/1.1\r\nHost: h\r\nConnection: ${value}\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n`;
      const r = await talk(request, served(5000));
      expect({ value, statuses: statuses(r.text), end: r.end }).toEqual({ value, statuses: ["200"], end: "fin" });
      expect(r.text).toContain("\r\nConnection: close\r\n");
    }
    // A CR or NUL inside an option is no space around it: "clo\0se" is not "close".
    const r = await talk("GET / HTTP/1.1\r\nHost: h\r\nConnection: clo\x00se\r\n\r\n", served());
    expect({ statuses: statuses(r.text), end: r.end }).toEqual({ statuses: ["200"], end: "open" });
  }, 30_000);
});
