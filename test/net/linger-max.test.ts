/**
 * Lingering closes are bounded per shard (configureNet lingerMax): each keeps a descriptor
 * until its peer took everything or closeTimeoutMs, so clients that ask for answers, never
 * read them and go could otherwise make closed connections hold every descriptor. Past the
 * bound a close is a plain one: the kernel still delivers what was queued.
 */
import { afterAll, expect, test } from "bun:test";
import net from "node:net";
import { configureNet, listen, netStats } from "../../src/net/api.ts";
import { InvalidArgumentError } from "../../src/core/errors.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import { expectQuiescent, until } from "./conformance/harness.ts";

const SIZE = 2 * 1024 * 1024;
const payload = new Uint8Array(SIZE).fill(0x61);

/** A client that reads nothing until resumed. */
async function pausedClient(port: number) {
  const sock = net.connect(port, "127.0.0.1");
  await new Promise<void>((r) => sock.once("connect", () => r()));
  sock.pause();
  let got = 0;
  const ended = new Promise<string>((resolve) => {
    sock.on("data", (d: Buffer) => (got += d.length));
    sock.on("end", () => resolve("fin"));
    sock.on("error", (e: Error) => resolve(`error ${(e as { code?: string }).code}`));
  });
  return { sock, ended, got: () => got };
}

afterAll(() => configureNet({ lingerMax: 4096 }));

test("lingerMax is checked", () => {
  for (const bad of [-1, 1.5, Number.NaN, "2"]) expect(() => configureNet({ lingerMax: bad as number })).toThrow(InvalidArgumentError);
});

test("past lingerMax a close does not linger (it closes at once, counted) and its peer still gets everything", async () => {
  configureNet({ lingerMax: 1 });
  const before = netStats().closesNotLingered;
  const l = listen("127.0.0.1:0", { closeTimeoutMs: 60_000 });
  const port = l.localAddress.family === "ipv4" ? l.localAddress.port : 0;
  const clients = [];
  const conns = [];
  for (let i = 0; i < 2; i++) {
    const accepted = l.accept();
    clients.push(await pausedClient(port));
    conns.push(await accepted);
  }
  for (const c of conns) {
    await c.output.write(payload);
    await c.output.flush();
  }
  // The first lingers (its peer has not taken the answer), the second may not: closed at once.
  const first = conns[0]!.close();
  await until(() => netStats().closesLingering === 1, 5_000, "the first close to linger");
  await conns[1]!.close();
  expect(netStats().closesNotLingered).toBe(before + 1);
  expect(netStats().closesLingering).toBe(1);
  // Both peers get every byte, then FIN: the plain close left the kernel sending its queue.
  for (const c of clients) c.sock.resume();
  for (const c of clients) expect(await c.ended).toBe("fin");
  for (const c of clients) expect(c.got()).toBe(SIZE);
  await first;
  expect(netStats().closesLingering).toBe(0);
  for (const c of clients) c.sock.destroy();
  await l.close();
  await expectQuiescent(posixStack());
}, 60_000);
