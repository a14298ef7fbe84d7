/**
 * A bare HTTP/1.1 "hello" server for benchmarks (not an HTTP implementation): every request
 * (headers up to the blank line; bodies are not supported) gets the same 200 response, keep-
 * alive and pipelining included. Requests are found in place with input.consume(), without
 * copying or decoding them; responses are queued and leave in one send per loop turn.
 *
 *   bun examples/http-hello/main.ts --port 8080 --smp 1
 *   wrk -t1 -c64 -d10s http://127.0.0.1:8080/
 */
import { app } from "../../src/app/index.ts";
import { sharded } from "../../src/smp/index.ts";
import { CONSUME_ALL, needBytes, serve, type Connection, type Listener } from "../../src/net/index.ts";

const BODY = "Hello, World!";
const RESPONSE = new TextEncoder().encode(
  `HTTP/1.1 200 OK\r\nServer: shoal\r\nContent-Type: text/plain\r\nContent-Length: ${BODY.length}\r\n\r\n${BODY}`,
);
const BAD_REQUEST = new TextEncoder().encode("HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
const MAX_HEADER = 8192;
const HIGH_WATER = 256 * 1024;

/** Index just past the next "\r\n\r\n" at or after `from`, or -1. */
function headerEnd(v: Uint8Array, from: number): number {
  for (let i = v.indexOf(13, from); i >= 0 && i + 3 < v.length; i = v.indexOf(13, i + 1)) {
    if (v[i + 1] === 10 && v[i + 2] === 13 && v[i + 3] === 10) return i + 4;
  }
  return -1;
}

async function http(c: Connection): Promise<void> {
  const output = c.output;
  let bad = false;
  const parser = (v: Uint8Array): number => {
    let pos = 0;
    for (;;) {
      const end = headerEnd(v, pos);
      if (end < 0) break;
      if (end - pos > MAX_HEADER) {
        // Too long even though complete (it came in one piece).
        bad = true;
        return pos;
      }
      void output.write(RESPONSE);
      pos = end;
      // Many pipelined requests: stop and let the responses drain first.
      if (output.buffered > HIGH_WATER) return pos;
    }
    if (pos === v.length) return CONSUME_ALL;
    if (pos > 0) return pos; // a partial request follows: the next consume sees it first
    if (v.length > MAX_HEADER) {
      bad = true;
      return 0;
    }
    return needBytes(v.length + 1); // headers span receive buffers: show more, contiguous
  };
  while (await c.input.consume(parser)) {
    if (bad) {
      await output.write(BAD_REQUEST);
      return;
    }
    if (output.buffered > HIGH_WATER) await output.flush();
  }
}

/** One listener per shard on the shared port. */
class HttpShard {
  private readonly listener: Listener;
  constructor(host: string, port: number) {
    // A client that goes quiet (headers never finished) is dropped after 30 s.
    this.listener = serve({ host, port }, http, { backlog: 4096, idleTimeoutMs: 30_000 });
  }
  async stop(): Promise<void> {
    await this.listener.close();
  }
}

const shards = sharded(HttpShard, { name: "http-hello" });

await app(
  {
    name: "http-hello",
    description: "Bare HTTP/1.1 hello server for benchmarks: every request gets the same 200 response.",
    options: {
      port: { type: "integer", default: 8080, min: 1, max: 65535, description: "TCP port every shard listens on" },
      host: { type: "string", default: "0.0.0.0", description: "address to listen on" },
    },
  },
  async ({ options, signal }) => {
    await shards.start(options.host, options.port);
    console.log(`http-hello: listening on port ${options.port}`);
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener("abort", () => resolve(), { once: true });
    });
    return 0;
  },
);
