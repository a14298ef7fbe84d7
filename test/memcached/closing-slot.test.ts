/**
 * A connection that asked for a large answer and quit counts (curr_conns, the -c limit) until
 * that answer was handed to the kernel, as stock's does, not while its close lingers for a
 * client that has not read it yet; and the client still gets all of it.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { spawn } from "bun";
import net from "node:net";
import { startOurs, startStock, type ServerProcess } from "./lib/harness.ts";

const VALUE = 1_000_000;

/** A `stats` counter, over a fresh connection. */
async function stat(port: number, name: string): Promise<number> {
  const sock = net.connect(port, "127.0.0.1");
  let text = "";
  await new Promise<void>((resolve, reject) => {
    sock.on("data", (d: Buffer) => {
      text += d.toString("latin1");
      if (text.endsWith("END\r\n")) resolve();
    });
    sock.once("error", reject);
    sock.write("stats\r\n");
  });
  sock.destroy();
  return Number(new RegExp(`STAT ${name} (\\d+)`).exec(text)![1]);
}

async function setValue(port: number): Promise<void> {
  const sock = net.connect(port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => {
    sock.on("data", (d: Buffer) => (d.toString().includes("STORED") ? resolve() : reject(new Error(d.toString()))));
    sock.once("error", reject);
    sock.write(`set big 0 0 ${VALUE}\r\n${"v".repeat(VALUE)}\r\n`);
  });
  sock.destroy();
}

/**
 * A client with a small receive buffer asks for the value and quits, reads nothing for
 * `waitMs`, then reads everything: prints how many bytes it got.
 */
const CLIENT = `
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"get big\\r\\nquit\\r\\n")
print("sent", flush=True)
time.sleep(float(sys.argv[2]) / 1000)
n = 0
while True:
    d = s.recv(1 << 20)
    if not d: break
    n += len(d)
print(n)
`;

/** Polls curr_connections while a non-reading client's answer is under way; returns the lowest seen. */
async function scenario(port: number): Promise<{ lowest: number; got: number }> {
  await setValue(port);
  const client = spawn(["python3", "-c", CLIENT, String(port), "6000"], { stdout: "pipe", stderr: "pipe" });
  const reader = client.stdout.getReader();
  let printed = "";
  while (!printed.includes("sent\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the client ended: ${await new Response(client.stderr).text()}`);
    printed += new TextDecoder().decode(value);
  }
  // The request is in; the answer is in the server's hands (and then the kernel's) from here.
  await Bun.sleep(500);
  let lowest = Infinity;
  // The stats connection is one; the other, while it counts, is the client's (which reads
  // nothing for 6 s: a close lingering for it lasts that long).
  for (let i = 0; i < 30 && lowest > 1; i++) {
    lowest = Math.min(lowest, await stat(port, "curr_connections"));
    await Bun.sleep(100);
  }
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    printed += new TextDecoder().decode(value);
  }
  const got = Number(printed.replace("sent\n", "").trim());
  expect(await client.exited).toBe(0);
  return { lowest, got };
}

const expected = "VALUE big 0 1000000\r\n".length + VALUE + "\r\nEND\r\n".length;
let ours: ServerProcess;
let stock: ServerProcess;
beforeAll(async () => {
  [ours, stock] = await Promise.all([startOurs(["-t", "1"]), startStock(["-t", "1"])]);
});
afterAll(async () => {
  await Promise.all([ours?.stop(), stock?.stop()]);
});

test("stock: the connection stops counting once its answer is in the kernel", async () => {
  const r = await scenario(stock.port);
  expect(r.lowest).toBe(1);
  expect(r.got).toBe(expected);
}, 30_000);

test("ours: the same, while the close lingers until the client took everything", async () => {
  const r = await scenario(ours.port);
  expect(r.lowest).toBe(1);
  expect(r.got).toBe(expected);
}, 30_000);
