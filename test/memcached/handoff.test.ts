/**
 * Large answers leave in place: a connection's answer of 32 KiB or more is sent from the shard's
 * shared response buffer itself (Out.handOff), which goes back to the shard's cache only once
 * the kernel has taken it, while the shard renders further answers into a fresh one. A client
 * that pipelines large gets and reads slowly keeps several such buffers queued while other
 * clients are served: every byte it gets must still be its own values' (with poisoning on, a
 * buffer recycled too early reads 0xDE; one rendered into again reads another value).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { startOurs, type ServerProcess } from "./lib/harness.ts";
import { murmur3, shardOf } from "../../examples/memcached/hash.ts";

const KEYS = 8;

/** Key i's value: distinct length and bytes per key. */
function valueOf(i: number): Buffer {
  const v = Buffer.alloc(150_000 + i * 7_919);
  for (let j = 0; j < v.length; j++) v[j] = (j * 31 + i * 101 + (j >>> 8)) & 0xff;
  return v;
}

/** Parses `count` text get answers (one VALUE each, then END) from `buf`, or null if incomplete. */
function parseAnswers(buf: Buffer, count: number): { key: string; value: Buffer }[] | null {
  const out: { key: string; value: Buffer }[] = [];
  let at = 0;
  while (out.length < count) {
    const eol = buf.indexOf("\r\n", at);
    if (eol < 0) return null;
    const head = buf.toString("latin1", at, eol).split(" ");
    if (head[0] !== "VALUE") throw new Error(`unexpected line: ${buf.toString("latin1", at, Math.min(eol, at + 80))}`);
    const len = Number(head[3]);
    const end = eol + 2 + len;
    if (buf.length < end + 7) return null;
    expect(buf.toString("latin1", end, end + 7)).toBe("\r\nEND\r\n");
    out.push({ key: head[1]!, value: buf.subarray(eol + 2, end) });
    at = end + 7;
  }
  expect(at).toBe(buf.length);
  return out;
}

/** A connection that sends a request and waits for a whole answer. */
class Client {
  private parts: Buffer[] = [];
  private waiter: (() => void) | null = null;

  private constructor(readonly sock: net.Socket) {
    sock.on("data", (d: Buffer) => {
      this.parts.push(d);
      this.waiter?.();
    });
  }

  static async connect(port: number): Promise<Client> {
    const sock = net.connect(port, "127.0.0.1");
    await new Promise<void>((resolve, reject) => {
      sock.once("connect", () => resolve());
      sock.once("error", reject);
    });
    return new Client(sock);
  }

  /** Sends `req`, then waits until `parse` makes sense of what came back (null: not yet). */
  async ask<T>(req: string | Buffer, parse: (b: Buffer) => T | null): Promise<T> {
    this.parts = [];
    this.sock.write(req);
    for (;;) {
      const got = parse(Buffer.concat(this.parts));
      if (got !== null) return got;
      await new Promise<void>((resolve) => (this.waiter = resolve));
      this.waiter = null;
    }
  }

  set(key: string, value: Buffer): Promise<string> {
    const req = Buffer.concat([Buffer.from(`set ${key} 0 0 ${value.length}\r\n`), value, Buffer.from("\r\n")]);
    return this.ask(req, (b) => (b.indexOf("\r\n") >= 0 ? b.toString("latin1").trimEnd() : null));
  }

  async get(key: string): Promise<Buffer> {
    const answers = await this.ask(`get ${key}\r\n`, (b) => parseAnswers(b, 1));
    expect(answers[0]!.key).toBe(key);
    return answers[0]!.value;
  }

  close(): void {
    this.sock.destroy();
  }
}

for (const shards of [1, 2]) {
  describe(`${shards} shard(s)`, () => {
    let server: ServerProcess;

    beforeAll(async () => {
      server = await startOurs(["-t", String(shards), "-m", "256"], { env: { SHOAL_DEBUG_POISON: "1" } });
      const c = await Client.connect(server.port);
      for (let i = 0; i < KEYS; i++) expect(await c.set(`big${i}`, valueOf(i))).toBe("STORED");
      c.close();
    }, 60_000);

    afterAll(async () => {
      await server?.stop();
    }, 30_000);

    test("a slow reader's pipelined large answers stay intact while others are served", async () => {
      const gets = 48;
      const slow = net.connect(server.port, "127.0.0.1");
      await new Promise<void>((resolve, reject) => {
        slow.once("connect", () => resolve());
        slow.once("error", reject);
      });
      const parts: Buffer[] = [];
      slow.on("data", (d: Buffer) => parts.push(d));
      // ~8 MB of answers asked at once, read only after the others are done: most of it waits
      // in the shard's output queue (the kernel's socket buffers take a few MB at most).
      slow.pause();
      let req = "";
      for (let g = 0; g < gets; g++) req += `get big${g % KEYS}\r\n`;
      slow.write(req);
      const others = await Promise.all(
        [0, 1, 2].map(async (n) => {
          const c = await Client.connect(server.port);
          let checked = 0;
          for (let g = 0; g < 40; g++) {
            const i = (g * 3 + n) % KEYS;
            const v = await c.get(`big${i}`);
            expect(v.equals(valueOf(i))).toBe(true);
            checked++;
          }
          c.close();
          return checked;
        }),
      );
      expect(others).toEqual([40, 40, 40]);
      slow.resume();
      let answers: { key: string; value: Buffer }[] | null = null;
      const deadline = Date.now() + 30_000;
      while (answers === null && Date.now() < deadline) {
        await Bun.sleep(20);
        answers = parseAnswers(Buffer.concat(parts), gets);
      }
      slow.destroy();
      expect(answers).not.toBeNull();
      for (let g = 0; g < gets; g++) {
        const i = g % KEYS;
        expect(answers![g]!.key).toBe(`big${i}`);
        expect(answers![g]!.value.equals(valueOf(i))).toBe(true);
      }
    }, 60_000);

    test("a large answer sent in place while a later answer waits for a value: the held part arrives intact", async () => {
      // A get is a send point; the mg answer after it waits (stock sends nothing while the set's
      // value is arriving). The get's answer (150+ KB) leaves in place from the buffer it is in,
      // and the mg answer after it moves to a fresh one: rendered here (the shared buffer), or,
      // for a key of the other shard, filled into the connection's own buffer first. One round
      // per owner, so that every connection runs both paths wherever the kernel placed it.
      const owners = new Map<number, number>();
      for (let i = 0; i < KEYS; i++) owners.set(shardOf(murmur3(Buffer.from(`big${i}`), 0, 5), shards), i);
      expect(owners.size).toBe(shards);
      const small = Buffer.from("s".repeat(100));
      for (let n = 0; n < 4; n++) {
        const c = await Client.connect(server.port);
        expect(await c.set("small", small)).toBe("STORED");
        for (const i of owners.values()) {
          const value = valueOf(i);
          const head = Buffer.concat([Buffer.from(`VALUE big${i} 0 ${value.length}\r\n`), value, Buffer.from("\r\nEND\r\n")]);
          const early = await c.ask(`get big${i}\r\nmg small v\r\nset tail 0 0 5\r\nhal`, (b) => (b.length >= head.length ? b : null));
          // Nothing past the get arrives before the value is complete (give it time to show up).
          await Bun.sleep(50);
          const rest = await c.ask("lo\r\n", (b) => (b.toString("latin1").endsWith("STORED\r\n") ? b : null));
          expect(early.equals(head)).toBe(true);
          expect(rest.toString("latin1")).toBe(`VA 100\r\n${small.toString("latin1")}\r\nSTORED\r\n`);
        }
        c.close();
      }
    }, 60_000);
  });
}
