/**
 * A small blocking-style memcached text client for workload tests (node:net, so nothing of
 * Shoal is on the client side): one request at a time, answers read whole, values of any size.
 */
import net from "node:net";

const values = new Map<number, Buffer>();

/** A value of `size` bytes (shared per size). */
function valueOf(size: number): Buffer {
  let v = values.get(size);
  if (v === undefined) {
    v = Buffer.alloc(size, 0x78);
    values.set(size, v);
  }
  return v;
}

/** One connection. */
export class MemClient {
  private buf: Buffer = Buffer.alloc(0);
  private wanted: ((b: Buffer) => number) | null = null;
  private resolve: ((b: Buffer) => void) | null = null;
  private reject: ((e: Error) => void) | null = null;

  private constructor(private readonly sock: net.Socket) {
    sock.on("data", (d: Buffer) => {
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      this.check();
    });
    sock.on("close", () => this.reject?.(new Error("connection closed")));
    sock.on("error", (e) => this.reject?.(e));
  }

  static async connect(port: number): Promise<MemClient> {
    const sock = net.connect(port, "127.0.0.1");
    sock.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      sock.once("connect", () => resolve());
      sock.once("error", reject);
    });
    return new MemClient(sock);
  }

  private check(): void {
    if (this.wanted === null) return;
    const n = this.wanted(this.buf);
    if (n < 0) return;
    const answer = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    const resolve = this.resolve!;
    this.wanted = this.resolve = this.reject = null;
    resolve(answer);
  }

  /** Sends `parts` and waits until `complete` returns the answer's length (-1: not yet). */
  private request(parts: (string | Buffer)[], complete: (b: Buffer) => number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.wanted = complete;
      this.resolve = resolve;
      this.reject = reject;
      for (const p of parts) this.sock.write(p);
      this.check();
    });
  }

  /** set with a value of `size` bytes; the answer line without "\r\n". */
  async set(key: string, size: number): Promise<string> {
    const a = await this.request([`set ${key} 0 0 ${size}\r\n`, valueOf(size), "\r\n"], lineLength);
    return a.toString("latin1", 0, a.length - 2);
  }

  /**
   * Starts a set of `size` bytes and sends only `sent` of them (an upload in progress); finish()
   * sends the rest and returns the answer line.
   */
  startSet(key: string, size: number, sent: number): { finish(): Promise<string> } {
    const answer = this.request([`set ${key} 0 0 ${size}\r\n`, valueOf(size).subarray(0, sent)], lineLength);
    return {
      finish: async () => {
        this.sock.write(valueOf(size).subarray(sent));
        this.sock.write("\r\n");
        const a = await answer;
        return a.toString("latin1", 0, a.length - 2);
      },
    };
  }

  /** A text command with a one-line answer (without "\r\n"). */
  async line(command: string): Promise<string> {
    const a = await this.request([`${command}\r\n`], lineLength);
    return a.toString("latin1", 0, a.length - 2);
  }

  /** get: true on a hit. */
  async get(key: string): Promise<boolean> {
    const a = await this.request([`get ${key}\r\n`], getLength);
    return a[0] === 0x56; // "VALUE"
  }

  /** stats [sub] as a map. */
  async stats(sub = ""): Promise<Record<string, string>> {
    const a = await this.request([sub === "" ? "stats\r\n" : `stats ${sub}\r\n`], (b) => {
      const i = b.indexOf("END\r\n");
      return i < 0 || (i > 0 && b[i - 1] !== 0x0a) ? -1 : i + 5;
    });
    const out: Record<string, string> = {};
    for (const l of a.toString("latin1").split("\r\n")) {
      const m = /^STAT (\S+) (.*)$/.exec(l);
      if (m) out[m[1]!] = m[2]!;
    }
    return out;
  }

  close(): void {
    this.sock.destroy();
  }
}

function lineLength(b: Buffer): number {
  const i = b.indexOf("\r\n");
  return i < 0 ? -1 : i + 2;
}

/** Length of a complete answer to a one-key get (a miss, or one value then END). */
function getLength(b: Buffer): number {
  const eol = b.indexOf("\r\n");
  if (eol < 0) return -1;
  if (b[0] !== 0x56) return eol + 2; // END (or an error line)
  const header = b.toString("latin1", 0, eol).split(" ");
  const total = eol + 2 + Number(header[3]) + 2 + 5;
  return b.length >= total ? total : -1;
}
