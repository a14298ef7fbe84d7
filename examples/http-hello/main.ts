/**
 * A bare HTTP/1.1 "hello" server for benchmarks (not an HTTP implementation): every request
 * gets the same 200 response, keep-alive and pipelining included. Requests are found in place
 * with input.consume(), without copying or decoding them; responses are queued and leave in one
 * send per loop turn.
 *
 * It reads request heads only, and answers what it cannot serve instead of misreading it:
 * - a request with a body (Content-Length > 0) gets 413, Transfer-Encoding ending in chunked
 *   gets 501: a body would otherwise be parsed as further requests. Transfer-Encoding whose last
 *   coding is not chunked, or in an HTTP/1.0 request, gets 400: its body has no length (RFC 9112
 *   6.1, 6.3: a server MUST answer 400);
 * - CONNECT gets 501: a 2xx answer to it would open a tunnel (RFC 9110 9.3.6);
 * - a request line that is not "METHOD target HTTP/1.x" (the method a token, the target without
 *   spaces or control bytes, in one of the four forms of RFC 9112 3.2), a malformed header line
 *   (its name not a token), and an HTTP/1.1 request without exactly one Host field with a valid
 *   value (RFC 9112 3.2), get 400;
 * - a head over 8 KiB gets 431 (414 when its request line is still unfinished: RFC 9112 3);
 *   a head not complete within --header-timeout-ms (default 10 s)
 *   of its first byte gets 408 (a client trickling one forever would hold its connection);
 * - lines may end in LF alone as well as CRLF (RFC 9112 2.2 allows it, and many servers do);
 *   empty lines before a request line are skipped, and begin no head (RFC 9112 2.2);
 * - HTTP/1.0 without "Connection: keep-alive", or "Connection: close", is answered and closed;
 * - HEAD gets the answer's head only, refusals included (RFC 9110 9.3.2);
 * - a keep-alive connection idle for 30 s is closed with FIN, not reset (RFC 9112 9.5: a server
 *   that times out SHOULD close gracefully).
 * Every answer that closes says "Connection: close", then the server sends FIN and reads and
 * drops what the client still sends, up to 64 KiB for up to 1 s (a lingering close), so that
 * closing does not reset the connection under the response.
 *
 *   bun examples/http-hello/main.ts --port 8080 --smp 1
 *   wrk -t1 -c64 -d10s http://127.0.0.1:8080/
 */
import { app, now, Timer, sharded, ShoalError, CONSUME_ALL, needBytes, parseAddress, serve, type Connection, type Server } from "shoal";

const encoder = new TextEncoder();
const BODY = "Hello, World!";
const HELLO = `HTTP/1.1 200 OK\r\nServer: shoal\r\nContent-Type: text/plain\r\nContent-Length: ${BODY.length}\r\n`;
const RESPONSE = encoder.encode(`${HELLO}\r\n${BODY}`);
const RESPONSE_KEEP_ALIVE = encoder.encode(`${HELLO}Connection: keep-alive\r\n\r\n${BODY}`); // HTTP/1.0 asked for it
const RESPONSE_CLOSE = encoder.encode(`${HELLO}Connection: close\r\n\r\n${BODY}`);
// HEAD gets the same head without the body (RFC 9110 9.3.2): a body would be read as the next response.
const HEAD_ONLY = [RESPONSE, RESPONSE_KEEP_ALIVE, RESPONSE_CLOSE].map((r) => r.subarray(0, r.length - BODY.length));
const [RESPONSE_HEAD, RESPONSE_KEEP_ALIVE_HEAD, RESPONSE_CLOSE_HEAD] = HEAD_ONLY as [Uint8Array, Uint8Array, Uint8Array];

/** Each refusal's head alone: the answer to HEAD, refusals included, has no content (RFC 9110 9.3.2: MUST NOT). */
const REFUSAL_HEADS = new Map<Uint8Array, Uint8Array>();

function refusal(status: string, why: string): Uint8Array {
  const body = `${why}\n`;
  const answer = encoder.encode(`HTTP/1.1 ${status}\r\nServer: shoal\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  REFUSAL_HEADS.set(answer, answer.subarray(0, answer.length - body.length));
  return answer;
}
const BAD_REQUEST = refusal("400 Bad Request", "malformed request");
const TIMED_OUT = refusal("408 Request Timeout", "request head not received in time");
const BODY_REFUSED = refusal("413 Content Too Large", "request bodies are not supported");
const HEAD_TOO_LARGE = refusal("431 Request Header Fields Too Large", "request head over 8 KiB");
// A request line that does not fit the head limit: RFC 9112 3 says a server MUST answer 414 to a
// request-target longer than it wishes to parse (431 names the header fields).
const URI_TOO_LONG = refusal("414 URI Too Long", "request line over 8 KiB");
const CODING_REFUSED = refusal("501 Not Implemented", "Transfer-Encoding is not supported");
const CONNECT_REFUSED = refusal("501 Not Implemented", "CONNECT is not supported");

/** Longest request head, blank line included. */
const MAX_HEAD_BYTES = 8192;
const HIGH_WATER = 256 * 1024;
/** Lingering close: read and drop this much, for at most this long, after the last answer. */
const LINGER_BYTES = 64 * 1024;
const LINGER_MS = 1000;
/** A keep-alive connection without a request this long is closed gracefully. */
const KEEP_ALIVE_MS = 30_000;
/**
 * serve()'s idle timeout, which resets: only for what the keep-alive close does not end (a client
 * that does not read its answers, or does not close after the FIN). Longer than KEEP_ALIVE_MS,
 * so that an idle keep-alive connection gets the FIN first.
 */
const STALLED_MS = KEEP_ALIVE_MS + 10_000;

// What a request head says, as bits; refusals are the high ones (flags >= F_BAD), and all but
// F_UNSERVED stop the reading of the head at once.
const F_REQUEST_LINE = 1; // the request line was read
const F_HTTP10 = 2;
const F_CLOSE = 4; // Connection: close
const F_KEEP_ALIVE = 8; // Connection: keep-alive
const F_HEAD = 16; // the method is HEAD
const F_HOST = 32; // a Host field was read
// A body: refused once the head has ended, when every Transfer-Encoding line has been read (the
// last coding decides between 400 and 501) and the head is known to be well-formed.
const F_BODY = 64; // Content-Length > 0
const F_CODING = 128; // a Transfer-Encoding field
const F_CHUNKED = 256; // the last transfer coding listed so far is chunked
const F_UNCHUNKED = 512; // ... is another one
const F_BAD = 1024;
const F_TOO_LARGE = 2048;
const F_CONNECT = 4096;
const F_UNSERVED = 8192; // F_BODY or F_CODING, refused at the end of a well-formed head
/** Set by a Transfer-Encoding line that lists a coding: later codings come after the earlier ones. */
const F_LAST_CODING = F_CHUNKED | F_UNCHUNKED;

const LF = 10;
const CR = 13;
const SP = 32;
const HTAB = 9;
const COLON = 58;
const COMMA = 44;
const NUL = 0;
const SLASH = 47;
const STAR = 42;
const LBRACKET = 91;
const RBRACKET = 93;
const CONTENT_LENGTH = encoder.encode("content-length");
const CONNECTION = encoder.encode("connection");
const TRANSFER_ENCODING = encoder.encode("transfer-encoding");
const HOST = encoder.encode("host");
const CLOSE = encoder.encode("close");
const KEEP_ALIVE = encoder.encode("keep-alive");
const CHUNKED = encoder.encode("chunked");
// Methods are case-sensitive (RFC 9110 9.1).
const CONNECT = encoder.encode("CONNECT");
const OPTIONS = encoder.encode("OPTIONS");

/** 1 for the bytes of a token (RFC 9110 5.6.2): what methods and header names are made of. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TCHAR[c.charCodeAt(0)] = 1;
const DEL = 127;
/**
 * 1 for the bytes of a reg-name (RFC 3986 3.2.2): unreserved, sub-delims and '%'; 2 for those an
 * IP literal adds between its brackets (':', as in "[::1]"; the RFC 6874 zone is "%25" and a name).
 */
const HOSTCHAR = new Uint8Array(256);
for (const c of "-._~!$&'()*+,;=%0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") HOSTCHAR[c.charCodeAt(0)] = 1;
HOSTCHAR[COLON] = 2;

/** v[s, e) equals `word` (lower case), letters compared without case. */
function sameWord(v: Uint8Array, s: number, e: number, word: Uint8Array): boolean {
  if (e - s !== word.length) return false;
  for (let i = 0; i < word.length; i++) {
    const b = v[s + i]!;
    const w = word[i]!;
    if (b !== w && !(w >= 97 && w <= 122 && (b | 0x20) === w)) return false;
  }
  return true;
}

/** v[s, e) is `word`, byte for byte. */
function sameBytes(v: Uint8Array, s: number, e: number, word: Uint8Array): boolean {
  if (e - s !== word.length) return false;
  for (let i = 0; i < word.length; i++) if (v[s + i] !== word[i]) return false;
  return true;
}

/** An ASCII letter. */
function isAlpha(b: number): boolean {
  const lower = b | 0x20;
  return lower >= 97 && lower <= 122;
}

/**
 * The request-target v[s, e) (no spaces or control bytes in it) is in a form its method may use
 * (RFC 9112 3.2): origin-form ("/..."), absolute-form ("scheme:..."), or "*" for OPTIONS alone.
 * (Authority-form is CONNECT's, refused before this.) RFC 9112 3 says to answer 400 to any other.
 */
function targetForm(v: Uint8Array, s: number, e: number, options: boolean): boolean {
  if (v[s] === SLASH) return true;
  if (e - s === 1 && v[s] === STAR) return options;
  // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then ":" (RFC 3986 3.1).
  if (!isAlpha(v[s]!)) return false;
  for (let i = s + 1; i < e; i++) {
    const b = v[i]!;
    if (b === COLON) return true;
    if (!isAlpha(b) && !(b >= 48 && b <= 57) && b !== 43 && b !== 45 && b !== 46) return false;
  }
  return false;
}

/** Flags of a request line v[s, e) (its line end excluded): "METHOD SP target SP HTTP/1.d", else F_BAD. */
function requestLine(v: Uint8Array, s: number, e: number): number {
  // A method (a token), one space, a target without spaces or control bytes, one space, the
  // version. Plain loops: the parts are short, and indexOf() costs a native call each.
  const sp = e - 9; // the space before "HTTP/1.d"
  if (sp <= s || v[sp] !== SP) return F_BAD;
  let first = s;
  while (first < sp && TCHAR[v[first]!] === 1) first++;
  if (first === s || v[first] !== SP || first + 1 >= sp) return F_BAD;
  for (let i = first + 1; i < sp; i++) {
    const b = v[i]!;
    if (b <= SP || b === DEL) return F_BAD;
  }
  // "HTTP/1." (versions are case-sensitive)
  if (v[sp + 1] !== 72 || v[sp + 2] !== 84 || v[sp + 3] !== 84 || v[sp + 4] !== 80 || v[sp + 5] !== 47 || v[sp + 6] !== 49 || v[sp + 7] !== 46) {
    return F_BAD;
  }
  const minor = v[e - 1]!;
  if (minor < 48 || minor > 57) return F_BAD;
  // Refused whatever its target: the 200 it got opened a tunnel in the client's eyes (RFC 9110
  // 9.3.6: what follows a 2xx to CONNECT is tunnelled bytes, and such an answer MUST NOT carry
  // Content-Length), so its body and every later answer reached the client as tunnel data.
  if (sameBytes(v, s, first, CONNECT)) return F_REQUEST_LINE | F_CONNECT;
  if (!targetForm(v, first + 1, sp, sameBytes(v, s, first, OPTIONS))) return F_BAD;
  const head = first - s === 4 && v[s] === 72 && v[s + 1] === 69 && v[s + 2] === 65 && v[s + 3] === 68 ? F_HEAD : 0; // "HEAD"
  return (minor === 48 ? F_REQUEST_LINE | F_HTTP10 : F_REQUEST_LINE) | head;
}

/** Flags of a header line v[s, e): only the three fields that change how a request is answered are read. */
function headerLine(v: Uint8Array, s: number, e: number): number {
  let colon = s;
  while (colon < e && TCHAR[v[colon]!] === 1) colon++;
  // The name is a token right before the colon: no name, no colon, a folded line (it starts
  // with white space), white space or any other byte in the name or before the colon (RFC
  // 9112 5.1, 5.2) are all malformed.
  if (colon === s || colon === e || v[colon] !== COLON) return F_BAD;
  const lower = v[s]! | 0x20;
  if (lower === 99) {
    if (sameWord(v, s, colon, CONTENT_LENGTH)) return contentLength(v, colon + 1, e);
    if (sameWord(v, s, colon, CONNECTION)) return connection(v, colon + 1, e);
  } else if (lower === 116 && sameWord(v, s, colon, TRANSFER_ENCODING)) {
    return transferEncoding(v, colon + 1, e);
  } else if (lower === 104 && sameWord(v, s, colon, HOST)) {
    return host(v, colon + 1, e);
  }
  return 0;
}

/**
 * Host value v[s, e): F_HOST, or F_BAD unless it is uri-host [":" port] (RFC 9112 3.2; it may be
 * empty). Checking its bytes alone let "a:b", "::1" or "[::1" through, which a server MUST refuse.
 */
function host(v: Uint8Array, s: number, e: number): number {
  while (s < e && (v[s] === SP || v[s] === HTAB)) s++;
  while (e > s && (v[e - 1] === SP || v[e - 1] === HTAB)) e--;
  let i = s;
  if (i < e && v[i] === LBRACKET) {
    // An IP literal: "[", an IPv6 address or IPvFuture (not parsed further), "]".
    for (i++; i < e && v[i] !== RBRACKET; i++) if (HOSTCHAR[v[i]!] === 0) return F_BAD;
    if (i === e || i === s + 1) return F_BAD;
    i++;
  } else {
    while (i < e && HOSTCHAR[v[i]!] === 1) i++; // a reg-name or an IPv4 address
  }
  if (i === e) return F_HOST;
  // The port: digits after one colon (none is allowed).
  if (v[i] !== COLON) return F_BAD;
  for (i++; i < e; i++) if (v[i]! < 48 || v[i]! > 57) return F_BAD;
  return F_HOST;
}

/** Content-Length value v[s, e): digits only; F_BODY unless zero. */
function contentLength(v: Uint8Array, s: number, e: number): number {
  while (s < e && (v[s] === SP || v[s] === HTAB)) s++;
  while (e > s && (v[e - 1] === SP || v[e - 1] === HTAB)) e--;
  if (s === e) return F_BAD;
  let flags = 0;
  for (let i = s; i < e; i++) {
    const d = v[i]!;
    if (d < 48 || d > 57) return F_BAD;
    if (d !== 48) flags = F_BODY;
  }
  return flags;
}

/**
 * Transfer-Encoding value v[s, e), a comma-separated list of codings: F_CODING, with F_CHUNKED or
 * F_UNCHUNKED for its last coding (none when it lists none: empty elements do not count, RFC
 * 9110 5.6.1). Coding names are case-insensitive (RFC 9112 7); one with parameters is not chunked.
 */
function transferEncoding(v: Uint8Array, s: number, e: number): number {
  while (e > s && (v[e - 1] === SP || v[e - 1] === HTAB || v[e - 1] === COMMA)) e--;
  if (e === s) return F_CODING;
  let a = e;
  while (a > s && v[a - 1] !== COMMA) a--;
  while (a < e && (v[a] === SP || v[a] === HTAB)) a++;
  return F_CODING | (sameWord(v, a, e, CHUNKED) ? F_CHUNKED : F_UNCHUNKED);
}

/**
 * White space around a Connection option. A bare CR or a NUL in a field value counts as a space:
 * RFC 9110 5.5 and 9112 2.2 allow only that or refusing the request, and taken as they were,
 * "close" followed by one was not "close" (the connection stayed open).
 */
function optionSpace(b: number): boolean {
  return b === SP || b === HTAB || b === CR || b === NUL;
}

/** Connection value v[s, e): a comma-separated list; "close" and "keep-alive" count. */
function connection(v: Uint8Array, s: number, e: number): number {
  let flags = 0;
  while (s < e) {
    let t = s;
    while (t < e && v[t] !== COMMA) t++;
    let a = s;
    let b = t;
    while (a < b && optionSpace(v[a]!)) a++;
    while (b > a && optionSpace(v[b - 1]!)) b--;
    if (sameWord(v, a, b, CLOSE)) flags |= F_CLOSE;
    else if (sameWord(v, a, b, KEEP_ALIVE)) flags |= F_KEEP_ALIVE;
    s = t + 1;
  }
  return flags;
}

/**
 * Sends FIN after the last answer, then reads and drops what the client still sends until it
 * closes too, for at most LINGER_MS or LINGER_BYTES: closing with unread bytes would send RST,
 * and a client still sending (a body, pipelined requests) could lose the answer to it.
 */
async function lingeringClose(c: Connection): Promise<void> {
  const abort = new AbortController();
  const timer = new Timer(() => abort.abort()).arm(LINGER_MS);
  // Not awaited: a client that writes before it reads must be read from while the answer drains.
  c.shutdownOutput().catch(() => {});
  try {
    const opts = { signal: abort.signal };
    for (let left = LINGER_BYTES; left > 0; ) {
      const data = await c.input.read(opts);
      if (data === null) break;
      left -= data.length;
    }
  } catch {
    // Out of time, or the peer reset: close anyway.
  } finally {
    timer.cancel();
  }
}

/** The answer to a request refused with `flags` (>= F_BAD): without its body when the method is HEAD. */
function refusalFor(flags: number): Uint8Array {
  const answer = refusalOf(flags);
  return flags & F_HEAD ? REFUSAL_HEADS.get(answer)! : answer;
}

function refusalOf(flags: number): Uint8Array {
  if (flags & F_TOO_LARGE) return flags & F_REQUEST_LINE ? HEAD_TOO_LARGE : URI_TOO_LONG;
  if (flags & F_BAD) return BAD_REQUEST;
  if (flags & F_CONNECT) return CONNECT_REFUSED;
  // Transfer-Encoding whose last coding is not chunked, or in HTTP/1.0: the body's length is
  // unknown, and RFC 9112 6.3 says a server MUST answer 400 (6.1: HTTP/1.0 framing is faulty).
  // With Content-Length too, Transfer-Encoding decides (RFC 9112 6.3).
  if (flags & F_CODING) return (flags & (F_HTTP10 | F_CHUNKED)) === F_CHUNKED ? CODING_REFUSED : BAD_REQUEST;
  return BODY_REFUSED;
}

async function http(c: Connection, headerTimeoutMs: number): Promise<void> {
  const output = c.output;
  // The head being read, in offsets from its first byte: each later view starts there (the
  // parser consumes up to it, or nothing), so scanning resumes where it stopped.
  let lineAt = 0; // start of the line being read
  let scanAt = 0; // bytes already searched for a line end
  let flags = 0;
  // The last answer was queued: close after it.
  let closing = false;
  // A head is incomplete and its deadline runs. consume() gets the deadline's signal only then:
  // heads that arrive whole (the benchmark case) arm nothing.
  let pending = false;
  let deadline: Timer | undefined;
  let expired: AbortController | undefined;
  let deadlineOpts: { signal: AbortSignal } | undefined;
  const startDeadline = () => {
    if (deadline === undefined) {
      const abort = (expired = new AbortController());
      deadlineOpts = { signal: abort.signal };
      deadline = new Timer(() => abort.abort());
    }
    pending = true;
    deadline.arm(headerTimeoutMs);
  };
  // Keep-alive: when the last request head ended, and a timer (armed once per connection, not per
  // request: it arms itself again for the time left) that closes the connection once none came for
  // KEEP_ALIVE_MS. close() sends FIN, and the waiting consume() ends with end of stream.
  let seenAt = now();
  const keepAlive = new Timer(() => {
    if (closing) return; // the lingering close ends it
    const idleMs = now() - seenAt;
    // Not idle: a head being read has its own deadline; requests not yet parsed (held back while
    // answers leave) and answers still leaving are serve()'s to time out.
    if (pending || c.input.buffered > 0 || output.buffered > 0) keepAlive.arm(KEEP_ALIVE_MS);
    else if (idleMs < KEEP_ALIVE_MS) keepAlive.arm(KEEP_ALIVE_MS - idleMs);
    else void c.close();
  })
    .unref()
    .arm(KEEP_ALIVE_MS);

  const parser = (v: Uint8Array): number => {
    const wasPending = pending;
    let pos = 0; // start of the head being read
    for (;;) {
      let line = pos + lineAt;
      let at = pos + scanAt;
      let end = -1;
      while (flags < F_BAD) {
        const lf = v.indexOf(LF, at);
        if (lf < 0) break;
        if (lf - pos >= MAX_HEAD_BYTES) {
          flags |= F_TOO_LARGE;
          break;
        }
        const lineEnd = lf > line && v[lf - 1] === CR ? lf - 1 : lf;
        if (flags & F_REQUEST_LINE) {
          if (lineEnd === line) {
            end = lf + 1;
            break;
          }
          const field = headerLine(v, line, lineEnd);
          // Transfer-Encoding lines make one list: the last coding is the last one listed.
          if (field & F_LAST_CODING) flags &= ~F_LAST_CODING;
          // A second Host line is malformed (RFC 9112 3.2).
          flags |= field & flags & F_HOST ? F_BAD : field;
        } else if (lineEnd > line) {
          flags |= requestLine(v, line, lineEnd);
        } else {
          // An empty line before the request line is skipped (RFC 9112 2.2: some clients send
          // one after a body) and consumed: no head has begun, so its deadline does not start
          // (a client idling after one got 408).
          pos = lf + 1;
        }
        at = line = lf + 1;
      }
      if (flags < F_BAD && end < 0 && v.length - pos >= MAX_HEAD_BYTES) flags |= F_TOO_LARGE;
      if (end >= 0) {
        // An HTTP/1.1 request without a Host field gets 400 (RFC 9112 3.2: a server MUST).
        if ((flags & (F_HTTP10 | F_HOST)) === 0) flags |= F_BAD;
        else if (flags & (F_BODY | F_CODING)) flags |= F_UNSERVED;
      }
      if (flags >= F_BAD) {
        void output.write(refusalFor(flags));
        closing = true;
        return pos; // the rest is dropped by the lingering close
      }
      if (end < 0) {
        // The head at `pos` is incomplete (or absent).
        lineAt = line - pos;
        scanAt = v.length - pos;
        if (pos === v.length) {
          // Nothing of a head is left (the last bytes were a request or empty lines).
          if (pending) {
            pending = false;
            deadline!.cancel();
          }
          return wasPending ? pos : CONSUME_ALL; // leave the deadline's consume
        }
        if (!pending) {
          startDeadline();
          return pos; // consume again, with the deadline's signal
        }
        if (pos > 0) return pos; // the next consume shows this head first
        return needBytes(v.length + 1); // the head spans receive buffers: show more, contiguous
      }
      if (pending) {
        pending = false;
        deadline!.cancel();
      }
      seenAt = now();
      if (flags & F_CLOSE || (flags & (F_HTTP10 | F_KEEP_ALIVE)) === F_HTTP10) {
        void output.write(flags & F_HEAD ? RESPONSE_CLOSE_HEAD : RESPONSE_CLOSE);
        closing = true;
        return end; // anything after it is dropped by the lingering close
      }
      if (flags & F_HEAD) void output.write(flags & F_HTTP10 ? RESPONSE_KEEP_ALIVE_HEAD : RESPONSE_HEAD);
      else void output.write(flags & F_HTTP10 ? RESPONSE_KEEP_ALIVE : RESPONSE);
      pos = end;
      lineAt = scanAt = flags = 0;
      // Many pipelined requests: stop and let the responses drain first.
      if (output.buffered > HIGH_WATER) return pos;
    }
  };

  try {
    for (;;) {
      let more: boolean;
      try {
        more = await c.input.consume(parser, pending ? deadlineOpts : undefined);
      } catch (e) {
        if (!expired?.signal.aborted) throw e;
        // A HEAD whose request line came gets the head alone, as every answer to HEAD.
        void output.write(flags & F_HEAD ? REFUSAL_HEADS.get(TIMED_OUT)! : TIMED_OUT);
        closing = true;
        more = true;
      }
      if (!more) return;
      if (closing) return await lingeringClose(c);
      if (output.buffered > HIGH_WATER) await output.flush();
    }
  } finally {
    deadline?.cancel();
    keepAlive.cancel();
  }
}

/** One listener per shard on the shared port. */
class HttpShard {
  private readonly server: Server;
  constructor(host: string, port: number, headerTimeoutMs: number) {
    // Idle keep-alive connections are closed after KEEP_ALIVE_MS, unfinished heads answered after
    // headerTimeoutMs; serve()'s idle timeout resets what neither ends.
    this.server = serve({ host, port }, (c) => http(c, headerTimeoutMs), { backlog: 4096, idleTimeoutMs: STALLED_MS });
  }
  /**
   * Stops accepting; every connection answers the requests its client had sent (received, or
   * arriving within 100 ms), then closes once the answers are flushed; after 5 s the rest are reset.
   */
  async stop(): Promise<void> {
    await this.server.drain();
  }
}

/** --host must be an address literal: refused with the command line, not by a shard's listen() later. */
function checkHost(host: string): void {
  parseAddress({ host, port: 1 }, "listen");
}

/**
 * Starts the listeners; a port that cannot be listened on (EADDRINUSE, EACCES...) is reported
 * in one line, not as a failed main with its stack.
 */
async function started(start: () => Promise<void>, options: { host: string; port: number }): Promise<boolean> {
  try {
    await start();
    return true;
  } catch (e) {
    if (!(e instanceof ShoalError)) throw e;
    console.error(`http-hello: cannot listen on ${options.host} port ${options.port}: ${e.message}`);
    return false;
  }
}

const shards = sharded(HttpShard, { name: "http-hello" });

await app(
  {
    name: "http-hello",
    description: "Bare HTTP/1.1 hello server for benchmarks: every request gets the same 200 response.",
    options: {
      port: { type: "integer", default: 8080, min: 1, max: 65535, description: "TCP port every shard listens on" },
      host: { type: "string", default: "0.0.0.0", description: "address to listen on", check: checkHost },
      headerTimeoutMs: {
        type: "integer",
        default: 10_000,
        min: 1,
        max: 3_600_000,
        valueName: "MS",
        description: "a request head not complete this long after its first byte gets 408 and the connection closes",
      },
    },
  },
  async ({ options, signal }) => {
    if (!(await started(() => shards.start(options.host, options.port, options.headerTimeoutMs), options))) return 1;
    console.log(`http-hello: listening on port ${options.port}`);
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener("abort", () => resolve(), { once: true });
    });
    return 0;
  },
);
