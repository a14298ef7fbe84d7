/**
 * connect()'s signal and timeoutMs cover name resolution too. The system resolver cannot be
 * made slow on demand here (no DNS server is reachable), so node:dns/promises is replaced by a
 * resolver that answers after 10 s; everything else (connect, the stack, the loop) is real.
 */
import { expect, mock, test } from "bun:test";

let lookups = 0;
let lastOptions: unknown;
mock.module("node:dns/promises", () => ({
  // As node:dns lookup: an array of every address with { all: true }.
  lookup: async (host: string, options?: { all?: boolean }) => {
    lookups++;
    lastOptions = options;
    const answer = (a: { address: string; family: number }) => (options?.all ? [a] : a);
    if (host === "v6.example") return answer({ address: "::1", family: 6 });
    await new Promise((r) => setTimeout(r, 10_000).unref());
    return answer({ address: "127.0.0.1", family: 4 });
  },
}));
const { connect, listen } = await import("../../src/net/api.ts");
const { AbortError, SystemError } = await import("../../src/core/errors.ts");

test("an abort during name resolution ends connect at once with AbortError", async () => {
  const l = listen("127.0.0.1:0");
  const port = (l.localAddress as { port: number }).port;
  const ac = new AbortController();
  setTimeout(() => ac.abort("user gave up"), 50);
  const t0 = performance.now();
  const err = await connect(`slow.example:${port}`, { signal: ac.signal }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AbortError);
  expect((err as Error).cause).toBe("user gave up");
  expect(performance.now() - t0).toBeLessThan(5000); // not the resolver's 10 s
  await l.close();
});

test("timeoutMs counts the resolution: ETIMEDOUT, not a late connection", async () => {
  const l = listen("127.0.0.1:0");
  const port = (l.localAddress as { port: number }).port;
  const err = await connect(`slow.example:${port}`, { timeoutMs: 100 }).then(
    (c) => (c.reset(), undefined),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SystemError);
  expect((err as { code: string }).code).toBe("ETIMEDOUT");
  await l.close();
});

test("a signal aborted before the call rejects with AbortError without asking the resolver", async () => {
  const before = lookups;
  const err = await connect("slow.example:80", { signal: AbortSignal.abort() }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AbortError);
  expect(lookups).toBe(before);
});

test("a family asked for in the address reaches the resolver (AAAA for ipv6)", async () => {
  const l = listen("[::1]:0");
  const port = (l.localAddress as { port: number }).port;
  const c = await connect({ host: "v6.example", port, family: "ipv6" });
  expect(lastOptions).toEqual({ all: true, family: 6 }); // every address of that family
  expect(c.remoteAddress.family).toBe("ipv6");
  await c.close();
  await l.close();
});
