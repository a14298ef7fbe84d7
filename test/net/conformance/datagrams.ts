/**
 * Conformance: UDP channels (IPv4 and IPv6): round trips with source addresses, many
 * datagrams, truncation, close semantics.
 */
import { describe, expect, test } from "bun:test";
import { ClosedError, InvalidArgumentError } from "../../../src/core/errors.ts";
import { expectQuiescent, rejection, type StackUnderTest } from "./harness.ts";

const text = (v: Uint8Array) => new TextDecoder().decode(v);

export function datagramConformance(s: StackUnderTest): void {
  const stack = s.stack;
  const families = s.families.filter((f) => f !== "unix") as ("ipv4" | "ipv6")[];

  for (const family of families) {
    const host = family === "ipv4" ? "127.0.0.1:0" : "[::1]:0";
    describe(`${s.name} ${family} udp`, () => {
      test("round trip: the receiver sees the sender's address and answers it", async () => {
        const a = stack.bindUdp(host);
        const b = stack.bindUdp(host);
        expect(a.localAddress.family).toBe(family);
        await a.send("ping", b.localAddress);
        const d = (await b.receive())!;
        expect(text(d.data)).toBe("ping");
        expect(d.from).toEqual(a.localAddress);
        expect(d.truncated).toBe(false);
        await b.send(new TextEncoder().encode("pong"), d.from);
        expect(text((await a.receive())!.data)).toBe("pong");
        await a.close();
        await b.close();
        await expectQuiescent(stack);
      });

      test("a thousand datagrams echo back in order of arrival, none lost on loopback", async () => {
        const server = stack.bindUdp(host);
        const client = stack.bindUdp(host);
        const echoing = (async () => {
          for await (const d of server) await server.send(d.data, d.from);
        })();
        const n = 1000;
        const seen = new Set<number>();
        for (let i = 0; i < n; i += 50) {
          // 50 in flight at a time: within the channel's queue, so loopback drops nothing.
          await Promise.all(Array.from({ length: 50 }, (_, k) => client.send(`${i + k}`, server.localAddress)));
          for (let k = 0; k < 50; k++) seen.add(Number(text((await client.receive())!.data)));
        }
        expect(seen.size).toBe(n);
        await server.close();
        await echoing;
        await client.close();
        await expectQuiescent(stack);
      });

      test("a datagram over the largest UDP payload rejects with EMSGSIZE; the largest one is sent", async () => {
        const a = stack.bindUdp(host);
        const b = stack.bindUdp(host);
        const max = family === "ipv4" ? 65507 : 65527;
        for (const size of [max + 1, 70_000, 2_000_000]) {
          const err = await rejection(a.send(new Uint8Array(size), b.localAddress));
          expect(err).toMatchObject({ code: "EMSGSIZE", op: "sendmsg" });
        }
        await a.send(new Uint8Array(max).fill(9), b.localAddress);
        const d = (await b.receive())!;
        expect(d.data[0]).toBe(9);
        await a.close();
        await b.close();
        await expectQuiescent(stack);
      });

      test("a datagram larger than a stream receive buffer arrives whole, not truncated", async () => {
        // UDP carries up to 65507 (IPv4) / 65527 (IPv6) bytes: a stack receives them whole
        // (the posix stack cut them at its 16 KiB stream buffers and flagged them truncated).
        const a = stack.bindUdp(host);
        const b = stack.bindUdp(host);
        const big = new Uint8Array(Math.min(60_000, s.recvBufferSize + 1000)).fill(4);
        big[big.length - 1] = 5;
        await a.send(big, b.localAddress);
        const d = (await b.receive())!;
        expect(d.truncated).toBe(false);
        expect(d.data).toEqual(big);
        await a.close();
        await b.close();
        await expectQuiescent(stack);
      });
    });
  }

  describe(`${s.name} udp channel life cycle`, () => {
    test("close ends a pending receive with null; later sends reject with ClosedError", async () => {
      const a = stack.bindUdp("127.0.0.1:0");
      const pending = a.receive();
      await a.close();
      expect(await pending).toBeNull();
      expect(await a.receive()).toBeNull();
      expect(await rejection(a.send("x", "127.0.0.1:9"))).toBeInstanceOf(ClosedError);
      expect(() => stack.bindUdp("unix:/tmp/nope.sock")).toThrow(InvalidArgumentError);
      const b = stack.bindUdp("127.0.0.1:0");
      expect(await rejection(b.send("x", "[::1]:9"))).toBeInstanceOf(InvalidArgumentError);
      const first = b.receive();
      expect(() => b.receive()).toThrow(InvalidArgumentError);
      await b.close();
      expect(await first).toBeNull();
      await expectQuiescent(stack);
    });
  });
}
