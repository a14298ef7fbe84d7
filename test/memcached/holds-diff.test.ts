/**
 * A reply not yet sent holds its item across connections too: while one connection's value is
 * still arriving, stock has sent none of its replies (its mg still holds the item), so another
 * connection's ma writes a new item instead of padding the old one in place. Once the first
 * connection ran out of input, stock sent its replies and the item is free again. Stock
 * memcached 1.6.18 and our server (one shard) get the same two-connection script. (With
 * several shards, a command run on the key's owner holds the item until that shard's answers
 * for the batch leave or the connection reaches a send point, whichever is first: a value still
 * arriving on the connection does not keep it.)
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { startOurs, startStock, type ServerProcess } from "./lib/harness.ts";

/** A connection that collects everything it receives. */
class Conn {
  private got = "";
  private constructor(private readonly sock: net.Socket) {
    sock.on("data", (d: Buffer) => (this.got += d.toString("latin1")));
  }

  static async open(port: number): Promise<Conn> {
    const sock = net.connect(port, "127.0.0.1");
    sock.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      sock.once("connect", () => resolve());
      sock.once("error", reject);
    });
    return new Conn(sock);
  }

  send(s: string): void {
    this.sock.write(Buffer.from(s, "latin1"));
  }

  /** Everything received once it ends with `suffix` (or what came within 3 s). */
  async until(suffix: string): Promise<string> {
    for (let i = 0; i < 1500 && !this.got.endsWith(suffix); i++) await Bun.sleep(2);
    const r = this.got;
    this.got = "";
    return r;
  }

  close(): void {
    this.sock.destroy();
  }
}

/**
 * Connection a reads `key` with mg and (maybe) leaves a set's value half sent; b decrements it,
 * (maybe) after its own mg was sent: a's hold must outlast the end of b's.
 */
async function script(port: number, key: string, midValue: boolean, bReadsFirst = false): Promise<string[]> {
  const a = await Conn.open(port);
  const b = await Conn.open(port);
  try {
    b.send(`ms ${key} 3\r\n100\r\nmn\r\n`);
    const set = await b.until("MN\r\n");
    a.send(midValue ? `mg ${key} v\r\nset ${key}-x 0 0 3\r\n1` : `mg ${key} v\r\nmn\r\n`);
    const early = midValue ? "" : await a.until("MN\r\n");
    if (midValue) await Bun.sleep(100);
    if (bReadsFirst) {
      b.send(`mg ${key} v\r\nmn\r\n`);
      await b.until("MN\r\n");
    }
    b.send(`ma ${key} MD D99\r\nmg ${key} v s\r\nmn\r\n`);
    const decr = await b.until("MN\r\n");
    if (midValue) a.send("23\r\nmn\r\n");
    const late = midValue ? await a.until("MN\r\n") : "";
    b.send(`mg ${key} v s\r\nmn\r\n`);
    return [set, early, decr, late, await b.until("MN\r\n")];
  } finally {
    a.close();
    b.close();
  }
}

describe("another connection's unsent mg reply", () => {
  let stock: ServerProcess;
  let ours: ServerProcess;
  beforeAll(async () => {
    stock = await startStock(["-t", "1"]);
    ours = await startOurs(["-t", "1"]);
  }, 60_000);
  afterAll(async () => {
    await stock?.stop();
    await ours?.stop();
  }, 30_000);

  for (const key of ["hk1", "hk2"]) {
    test(`${key}: while its value arrives, ma writes a new item`, async () => {
      const theirs = await script(stock.port, key, true);
      expect(theirs[2]).toContain("VA 1 s1\r\n1\r\n");
      expect(await script(ours.port, key, true)).toEqual(theirs);
    });
    test(`${key}: while its value arrives, ma writes a new item after b's own mg was sent`, async () => {
      const theirs = await script(stock.port, `${key}b`, true, true);
      expect(theirs[2]).toContain("VA 1 s1\r\n1\r\n");
      expect(await script(ours.port, `${key}b`, true, true)).toEqual(theirs);
    });
    test(`${key}: once its replies are sent, ma pads in place`, async () => {
      const theirs = await script(stock.port, `${key}p`, false);
      expect(theirs[2]).toContain("VA 3 s3\r\n1  \r\n");
      expect(await script(ours.port, `${key}p`, false)).toEqual(theirs);
    });
  }
});
