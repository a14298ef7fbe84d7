// examples/http-hello against what RFC 9110/9112 require of the framing of a request and of its
// answer: CONNECT, request-target forms, Transfer-Encoding lists, and how an idle keep-alive
// connection ends. Raw TCP clients, so that every byte is ours. Each test failed on the old code.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect, createServer } from "node:net";
import { startHttpHello as start, stopHttpHello as stop } from "./fixtures/http-hello.ts";

const HELLO = "Hello, World!";

/** A port nobody listens on right now (the server listens with SO_REUSEPORT: a fixed one could be shared silently). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

let port = 0;
let server: ReturnType<typeof Bun.spawn> | undefined;

beforeAll(async () => {
  port = await freePort();
  server = await start(port);
}, 30_000);

afterAll(async () => {
  await stop(server);
}, 30_000);

interface Reply {
  text: string;
  /** How the connection ended: the server's FIN, a reset, or still open when we stopped. */
  end: "fin" | "reset" | "open";
}

/**
 * Sends `request` on a new connection and collects the reply until the server closes, or until
 * `until` holds and `graceMs` more passed, or `waitMs` passed.
 */
function talk(request: string | string[], opts: { until?: (text: string) => boolean; graceMs?: number; waitMs?: number; gapMs?: number; port?: number } = {}): Promise<Reply> {
  const pieces = typeof request === "string" ? [request] : request;
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
    const s = connect({ host: "127.0.0.1", port: opts.port ?? port, noDelay: true }, async () => {
      for (let i = 0; i < pieces.length && !settled; i++) {
        if (i > 0) await Bun.sleep(opts.gapMs ?? 0);
        if (pieces[i] !== "" && !settled) s.write(pieces[i]!);
      }
    });
    s.on("data", (d) => {
      text += d.toString("latin1");
      if (opts.until?.(text)) setTimeout(finish, opts.graceMs ?? 200);
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

/** Status codes of the answers in a reply. */
function statuses(text: string): string[] {
  return [...text.matchAll(/HTTP\/1\.1 (\d\d\d) /g)].map((m) => m[1]!);
}

/** The outcome of one request: its answers' statuses and how the connection ended (a closing answer gets FIN). */
async function outcome(request: string): Promise<{ request: string; statuses: string[]; end: Reply["end"] }> {
  const r = await talk(request, { until: (t) => t.endsWith(HELLO) });
  return { request, statuses: statuses(r.text), end: r.end };
}

describe("request framing (RFC 9112)", () => {
  test("CONNECT gets 501 and a close, not a 200 with Content-Length (RFC 9110 9.3.6: a 2xx makes the connection a tunnel)", async () => {
    // It got the usual 200 with "Content-Length: 13": a client reads a 2xx to CONNECT as the
    // tunnel opening (RFC 9110 9.3.6: such an answer MUST NOT carry Content-Length), so the body
    // and every later answer reached it as tunnelled bytes; and what the client then sent into
    // its "tunnel" was parsed as requests.
    for (const request of [
      "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
      "CONNECT example.com:443 HTTP/1.0\r\n\r\n",
    ]) {
      const r = await talk(request, { until: (t) => t.endsWith(HELLO) || t.endsWith("\n") });
      expect({ request, statuses: statuses(r.text), end: r.end }).toEqual({ request, statuses: ["501"], end: "fin" });
      expect(r.text).toContain("\r\nConnection: close\r\n");
    }
    // Methods are case-sensitive: "connect" is some other method, served as any other.
    expect(await outcome("connect a:1 HTTP/1.1\r\nHost: h\r\n\r\n")).toEqual({ request: "connect a:1 HTTP/1.1\r\nHost: h\r\n\r\n", statuses: ["200"], end: "open" });
  }, 30_000);

  test("a request-target in none of the forms its method may use gets 400 (RFC 9112 3, 3.2)", async () => {
    // Each got 200: "*" is for OPTIONS only (3.2.4), and a target that starts with neither "/"
    // nor a scheme is none of the forms.
    for (const target of ["*", "foo", "?x", "1http://a/", ":x", "http", "*/", "**"]) {
      const request = `GET ${target} HTTP/1.1\r\nHost: h\r\n\r\n`;
      expect(await outcome(request)).toEqual({ request, statuses: ["400"], end: "fin" });
    }
    // Still served: origin-form, absolute-form, and OPTIONS *.
    for (const line of ["GET /a?b HTTP/1.1", "GET http://example.com/x HTTP/1.1", "GET h1+.-x:y HTTP/1.1", "OPTIONS * HTTP/1.1", "HEAD /%7e HTTP/1.0\r\nConnection: keep-alive"]) {
      const request = `${line}\r\nHost: h\r\n\r\n`;
      const r = await talk(request, { until: (t) => /\r\n\r\n(Hello, World!)?$/.test(t) });
      expect({ request, statuses: statuses(r.text), end: r.end }).toEqual({ request, statuses: ["200"], end: "open" });
    }
  }, 60_000);

  test("Transfer-Encoding whose last coding is not chunked, or in HTTP/1.0, gets 400 (RFC 9112 6.1, 6.3: a server MUST), not 501", async () => {
    // The body's length cannot be known: RFC 9112 6.3 says the server MUST answer 400 and close.
    // They got 501 Not Implemented.
    const bad = [
      "Transfer-Encoding: chunked, gzip",
      "Transfer-Encoding: gzip",
      "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip", // one list over both lines
      "Transfer-Encoding:",
      "Transfer-Encoding: chunked;x=1",
      "Transfer-Encoding: xchunked",
      "Content-Length: 5\r\nTransfer-Encoding: gzip", // Transfer-Encoding decides, not Content-Length
    ];
    for (const fields of bad) {
      const request = `POST / HTTP/1.1\r\nHost: h\r\n${fields}\r\n\r\n5\r\nhello\r\n0\r\n\r\n`;
      const r = await talk(request);
      expect({ request, statuses: statuses(r.text), end: r.end }).toEqual({ request, statuses: ["400"], end: "fin" });
    }
    // HTTP/1.0 framing with Transfer-Encoding is faulty (RFC 9112 6.1), chunked or not.
    const old = await talk("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    expect({ statuses: statuses(old.text), end: old.end }).toEqual({ statuses: ["400"], end: "fin" });
    // Ending in chunked, the length is known and the server just does not take bodies: 501, as before.
    for (const fields of ["Transfer-Encoding: gzip, chunked", "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked", "Transfer-Encoding: CHUNKED", "Transfer-Encoding: , chunked ,", "Transfer-Encoding: chunked\r\nTransfer-Encoding:"]) {
      const request = `POST / HTTP/1.1\r\nHost: h\r\n${fields}\r\n\r\n0\r\n\r\n`;
      const r = await talk(request);
      expect({ request, statuses: statuses(r.text), end: r.end }).toEqual({ request, statuses: ["501"], end: "fin" });
    }
  }, 60_000);
});

test("a refusal of a HEAD request has no content (RFC 9110 9.3.2: the server MUST NOT send any)", async () => {
  // Each refusal came with its text body: a client takes the answer to HEAD to end with its head
  // (RFC 9112 6.3), so those bytes were left over, where it looks for the next answer.
  // An unfinished HEAD head: 408 after the default --header-timeout-ms (10 s), meanwhile the rest.
  const slowHead = talk("HEAD / HTTP/1.1\r\nHost: h\r\n", { waitMs: 20_000 });
  for (const [request, status] of [
    ["HEAD / HTTP/1.1\r\n\r\n", "400"], // no Host
    ["HEAD / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", "413"],
    ["HEAD / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "501"],
    [`HEAD / HTTP/1.1\r\nHost: h\r\nX: ${"a".repeat(9000)}\r\n\r\n`, "431"],
  ] as const) {
    const r = await talk(request);
    expect({ request: request.slice(0, 60), statuses: statuses(r.text), end: r.end, endsWithHead: r.text.endsWith("\r\n\r\n") }).toEqual({
      request: request.slice(0, 60),
      statuses: [status],
      end: "fin",
      endsWithHead: true,
    });
    // The head is the one a GET gets, Content-Length included (RFC 9110 9.3.2).
    expect(r.text).toMatch(/\r\nContent-Length: [1-9]\d*\r\n/);
  }
  // A refused GET keeps its body.
  const get = await talk("GET / HTTP/1.1\r\n\r\n");
  expect(get.text).toEndWith("\r\n\r\nmalformed request\n");
  const r = await slowHead;
  expect({ statuses: statuses(r.text), end: r.end, endsWithHead: r.text.endsWith("\r\n\r\n") }).toEqual({ statuses: ["408"], end: "fin", endsWithHead: true });
}, 60_000);

test("an idle keep-alive connection is closed with FIN after 30 s, not reset (RFC 9112 9.5: a server timing out SHOULD close gracefully)", async () => {
  // serve()'s idle timeout reset them: a client whose next request crossed the close got
  // ECONNRESET instead of the end of stream that tells it the server closed an idle connection.
  const [afterRequest, neverSent] = await Promise.all([
    talk("GET / HTTP/1.1\r\nHost: h\r\n\r\n", { waitMs: 50_000 }),
    talk("", { waitMs: 50_000 }), // connected, never sent a byte
  ]);
  expect({ statuses: statuses(afterRequest.text), end: afterRequest.end }).toEqual({ statuses: ["200"], end: "fin" });
  expect({ text: neverSent.text, end: neverSent.end }).toEqual({ text: "", end: "fin" });
}, 90_000);

test("an empty line after a request (RFC 9112 2.2: to be ignored) does not start a head's deadline: no 408 on an idle connection", async () => {
  // Some clients send CRLF after a request's body. It was skipped but kept as the start of the
  // next head, so --header-timeout-ms later the idle keep-alive connection got an unasked-for
  // 408 and was closed; a request the client sent meanwhile was answered by that 408.
  const deadlinePort = await freePort();
  const p = await start(deadlinePort, "--header-timeout-ms", "1000");
  try {
    const get = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    const talks = [[`${get}\r\n`], [`${get}\n\r\n`], [`${get}\r`, "\n"], ["\r\n"]].map((pieces) => talk(pieces, { port: deadlinePort, gapMs: 100, waitMs: 3000 }));
    const replies = await Promise.all(talks);
    expect(replies.map((r) => ({ statuses: statuses(r.text), end: r.end }))).toEqual([
      { statuses: ["200"], end: "open" },
      { statuses: ["200"], end: "open" },
      { statuses: ["200"], end: "open" },
      { statuses: [], end: "open" },
    ]);
    // Empty lines before a request are still skipped, and the request after them answered.
    const r = await talk(["\r\n", `\n${get}`], { port: deadlinePort, gapMs: 1500, until: (t) => t.endsWith(HELLO) });
    expect({ statuses: statuses(r.text), end: r.end }).toEqual({ statuses: ["200"], end: "open" });
    // A head begun and not finished still gets 408.
    const slow = await talk(`\r\n${get.slice(0, 20)}`, { port: deadlinePort, waitMs: 5000 });
    expect({ statuses: statuses(slow.text), end: slow.end }).toEqual({ statuses: ["408"], end: "fin" });
  } finally {
    await stop(p);
  }
}, 60_000);
