/**
 * Helpers for the tests of values sent from their items' memory (Store.lend): items set straight
 * into a Store, one-shot commands and stats over TCP, and a stalled reader (a child process with
 * a small receive buffer that asks for values and reads nothing until told).
 */
import { expect } from "bun:test";
import net from "node:net";
import { spawn } from "bun";
import { Comm, type Store, StoreResult } from "../../../examples/memcached/store.ts";
import { murmur3 } from "../../../examples/memcached/hash.ts";

const enc = new TextEncoder();

/** Sets `key` in `s` to `nbytes` (the trailing CRLF included) of `fill`; returns the item. */
export function setItem(s: Store, key: string, nbytes: number, fill: number): number {
  const k = enc.encode(key);
  const hv = murmur3(k, 0, k.length);
  const ref = s.alloc(k, 0, k.length, 0, 0, nbytes);
  expect(ref).toBeGreaterThanOrEqual(0);
  s.mem.fill(fill, s.valueOffset(ref), s.valueOffset(ref) + nbytes - 2);
  s.mem[s.valueOffset(ref) + nbytes - 2] = 13;
  s.mem[s.valueOffset(ref) + nbytes - 1] = 10;
  expect(s.storeItem(ref, Comm.SET, hv, 0, false)).toBe(StoreResult.STORED);
  return ref;
}

/** The item `key` names in `s`, or -1. */
export function find(s: Store, key: string): number {
  const k = enc.encode(key);
  return s.get(k, 0, k.length, murmur3(k, 0, k.length), false);
}

/** Sends `bytes` on a fresh connection and returns what came back once it ends with `until`. */
export async function command(port: number, bytes: Uint8Array, until: string): Promise<string> {
  const c = net.connect(port, "127.0.0.1");
  let got = "";
  await new Promise<void>((resolve, reject) => {
    c.on("data", (d) => {
      got += d.toString("latin1");
      if (got.endsWith(until)) resolve();
    });
    c.on("error", reject);
    c.write(bytes);
  });
  c.destroy();
  return got;
}

/** `stats` as a map. */
export async function stats(port: number): Promise<Map<string, number>> {
  const text = await command(port, enc.encode("stats\r\n"), "END\r\n");
  return new Map([...text.matchAll(/STAT (\S+) (\S+)/g)].map((m) => [m[1]!, Number(m[2])]));
}

/** get_hits once it stopped moving (the server stopped taking a reader's gets). */
export async function settledHits(port: number): Promise<number> {
  let hits = -1;
  for (let i = 0; i < 100; i++) {
    await Bun.sleep(100);
    const h = (await stats(port)).get("get_hits")!;
    if (h === hits) return h;
    hits = h;
  }
  throw new Error("get_hits never settled");
}

/**
 * The reader: connects with a 4 KiB receive buffer, sends `get P0` .. `get P<N-1>` one per write
 * (each a read of its own on the server, so the first value the kernel no longer takes whole is
 * sent from its item, and stays queued there), says "asked", waits for a line on stdin, then
 * copies everything the server sends until it has seen N END lines to stdout.
 */
const READER = `
import socket, sys, time
port, prefix, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", port))
for i in range(n):
    s.sendall(("get %s%d\\r\\n" % (prefix, i)).encode())
    time.sleep(0.01)
sys.stdout.write("asked\\n"); sys.stdout.flush()
sys.stdin.readline()
got = bytearray()
while got.count(b"END\\r\\n") < n:
    d = s.recv(1 << 20)
    if not d: break
    got += d
sys.stdout.buffer.write(bytes(got)); sys.stdout.flush()
`;

/** A reader that asked for `prefix`0 .. `prefix`<n-1> and reads nothing until go(), which returns all it then read. */
export async function stalledReader(port: number, prefix: string, n: number): Promise<{ go(): Promise<Buffer> }> {
  const proc = spawn(["python3", "-c", READER, String(port), prefix, String(n)], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  const out = proc.stdout.getReader();
  const first = await out.read();
  expect(new TextDecoder().decode(first.value)).toBe("asked\n");
  return {
    async go(): Promise<Buffer> {
      proc.stdin.write("go\n");
      await proc.stdin.end();
      const parts: Uint8Array[] = [];
      for (;;) {
        const r = await out.read();
        if (r.done) break;
        parts.push(r.value);
      }
      expect(await proc.exited).toBe(0);
      return Buffer.concat(parts);
    },
  };
}
