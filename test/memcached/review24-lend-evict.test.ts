/**
 * A get's large value read on another shard is lent by its owner (router.ts LENDS_FLAG) until
 * the requester says it is done. Stock 1.6.18 sends a get's reply before it reads the
 * connection's next command (conn_mwrite) and lets go of the item once it is sent, so that
 * command never meets the item still referenced. With -t 2, from a connection on the other
 * shard, ours must behave the same way:
 * a set that needs the memory of the item just read, at the LRU tail, evicts that one item and
 * reuses its chunk (evicting one more item, which stock keeps, is a divergence), whether the
 * client waited for the value first or sent the set right behind the get. (A delete of that
 * item right behind the get in the same read is not covered: the value is still being sent
 * from the item then, so `stats slabs` counts its chunk until it is sent; see the README's
 * differences.)
 * The connection's shard is found with `stats conns` and the keys are the other shard's.
 */
import { expect, test } from "bun:test";
import net from "node:net";
import { keysOwnedBy, type ServerProcess, startOurs, startStock } from "./lib/harness.ts";

const L = (s: string) => Buffer.from(s, "latin1");

/** One client connection: requests and the answers up to a terminator. */
class Conn {
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];

  private constructor(readonly socket: net.Socket) {
    socket.on("data", (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on("error", () => {});
  }

  static async open(port: number): Promise<Conn> {
    const s = net.connect(port, "127.0.0.1");
    s.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      s.once("connect", resolve);
      s.once("error", reject);
    });
    return new Conn(s);
  }

  /** Sends `data` (one write) and returns what came back once it ends with `until`. */
  async req(data: Buffer | string, until: string): Promise<string> {
    this.socket.write(typeof data === "string" ? L(data) : data);
    const deadline = Date.now() + 20_000;
    for (;;) {
      const t = this.buf.toString("latin1");
      if (t.endsWith(until)) {
        this.buf = Buffer.alloc(0);
        return t;
      }
      if (Date.now() > deadline) throw new Error(`no ${JSON.stringify(until)} after ${JSON.stringify(t.slice(-200))}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 1000);
      });
    }
  }

  async stats(what = ""): Promise<Map<string, number>> {
    const t = await this.req(`stats${what}\r\n`, "END\r\n");
    return new Map([...t.matchAll(/STAT (\S+) (\S+)/g)].map((m) => [m[1]!, Number(m[2])]));
  }

  /** Our server: the shard this connection is served by (`stats conns` ids are shard * 100000 + n). */
  async shard(): Promise<number> {
    const t = await this.req("stats conns\r\n", "END\r\n");
    const port = (this.socket.address() as net.AddressInfo).port;
    const m = new RegExp(`STAT (\\d+):addr tcp:127\\.0\\.0\\.1:${port}\\r\\n`).exec(t);
    if (m === null) throw new Error(`this connection (port ${port}) is not in stats conns:\n${t}`);
    return Math.floor(Number(m[1]) / 100000);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Keys of the shard this connection is not on (ours), or the same family for stock. */
async function otherShardKeys(c: Conn, ours: boolean, prefix: string, n: number): Promise<string[]> {
  const owner = ours ? 1 - (await c.shard()) : 1;
  return keysOwnedBy(owner, 2, n, prefix);
}

/** Large enough to be lent (ITEM_SPLICE_MIN, 16 KiB). */
const value = Buffer.alloc(20_000, 0x61);
const setCmd = (key: string) => Buffer.concat([L(`set ${key} 0 0 ${value.length}\r\n`), value, L("\r\n")]);

/**
 * Fills memory with 20 KB values one by one until the first eviction, then, `rounds` times,
 * reads the LRU tail's value and sets a new key (after reading the answer, or in the same
 * write): whether each read found its value, what each set evicted, and which of the items
 * after the tails read are still there.
 */
async function readThenSet(port: number, ours: boolean, sameWrite: boolean, rounds: number): Promise<{ hits: boolean[]; evicted: number[]; kept: boolean[] }> {
  const c = await Conn.open(port);
  try {
    const keys = await otherShardKeys(c, ours, "a", 1000);
    let n = 0;
    for (; ; n++) {
      expect(await c.req(setCmd(keys[n]!), "STORED\r\n")).toBe("STORED\r\n");
      if ((await c.stats()).get("evictions")! > 0) break;
    }
    n++;
    let e = (await c.stats()).get("evictions")!;
    const first = e;
    const evicted: number[] = [];
    const hits: boolean[] = [];
    for (let r = 0; r < rounds; r++, n++) {
      const tail = keys[first + r]!;
      const got = sameWrite
        ? await c.req(Buffer.concat([L(`get ${tail}\r\n`), setCmd(keys[n]!)]), "STORED\r\n")
        : await c.req(`get ${tail}\r\n`, "END\r\n");
      hits.push(got.startsWith(`VALUE ${tail} 0 ${value.length}\r\n${value.toString("latin1")}\r\nEND\r\n`));
      if (!sameWrite) expect(await c.req(setCmd(keys[n]!), "STORED\r\n")).toBe("STORED\r\n");
      const now = (await c.stats()).get("evictions")!;
      evicted.push(now - e);
      e = now;
    }
    const kept: boolean[] = [];
    for (let k = first + rounds; k < first + rounds + 3; k++) kept.push((await c.req(`mg ${keys[k]}\r\n`, "\r\n")) === "HD\r\n");
    return { hits, evicted, kept };
  } finally {
    c.close();
  }
}

async function both<T>(args: string[], run: (port: number, ours: boolean) => Promise<T>): Promise<{ stock: T; ours: T }> {
  let stock: T;
  let server: ServerProcess = await startStock(args);
  try {
    stock = await run(server.port, false);
  } finally {
    await server.stop();
  }
  server = await startOurs(args);
  try {
    return { stock, ours: await run(server.port, true) };
  } finally {
    await server.stop();
  }
}

test("-t 2: a set right after a client read another shard's value at the LRU tail evicts that item only, as stock (the owner had it lent still)", async () => {
  const { stock, ours } = await both(["-t", "2", "-m", "4"], (port, isOurs) => readThenSet(port, isOurs, false, 6));
  expect(stock).toEqual({ hits: Array(6).fill(true), evicted: Array(6).fill(1), kept: [true, true, true] });
  expect(ours).toEqual(stock);
}, 120_000);

test("-t 2: a get of another shard's value at the LRU tail and a set in the same write: the set evicts that item only, as stock", async () => {
  const { stock, ours } = await both(["-t", "2", "-m", "4"], (port, isOurs) => readThenSet(port, isOurs, true, 3));
  expect(stock).toEqual({ hits: Array(3).fill(true), evicted: Array(3).fill(1), kept: [true, true, true] });
  expect(ours).toEqual(stock);
}, 120_000);
