/**
 * The reactor under ring pressure (review 23): more completions than the CQ holds, more
 * descriptors than the SQ takes, cancellation racing completion, slots reused after a cancel.
 * Reactors with 4- and 8-entry rings make every turn overflow. What must hold: every operation
 * settles exactly once with a result of its own kind, nothing stays in flight, and a slot's
 * next owner never receives a completion of the operation before it. (The native reactor's
 * own cases, the backlog and an enter that fails or takes nothing, are Zig tests in
 * zig/reactor.zig.)
 */
import { afterEach, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { AbortError, CQE_F_MORE, IoOp, Reactor, allocateAlignedBuffer, type NativeBuffer } from "../../src/index.ts";
import { POLLIN, POLLOUT, pipe, type PipePair } from "./fixtures/posix.ts";
import { bunTick, errorOf, prng, quiet } from "./fixtures/util.ts";

const pipes: PipePair[] = [];
const buffers: NativeBuffer[] = [];
afterEach(() => {
  for (const p of pipes.splice(0)) p.close();
  for (const b of buffers.splice(0)) if (!b.isReleased) b.release();
});

function newPipe(): PipePair {
  const p = pipe();
  pipes.push(p);
  return p;
}

function buffer(size: number): NativeBuffer {
  const b = allocateAlignedBuffer(size);
  buffers.push(b);
  return b;
}

/** Turns `r` (not the loop's reactor) until `done()`, at most `max` times; returns the turns. */
async function drive(r: Reactor, done: () => boolean, waitUs = 1000, max = 5000): Promise<number> {
  let i = 0;
  for (; i < max && !done(); i++) {
    r.turn(waitUs);
    await bunTick();
  }
  return i;
}

const POLL_ADD_MULTI = 1;

describe("more completions than the CQ holds", () => {
  test("64 multishot polls on an 8-entry CQ: each ends with one final completion and none after it", async () => {
    const r = new Reactor({ sqEntries: 8, cqEntries: 8 });
    try {
      const n = 64;
      const finals = new Array(n).fill(0);
      const late: string[] = [];
      const slots: number[] = [];
      const owners = Array.from({ length: n }, (_, i) => ({
        complete(res: number, flags: number) {
          if (finals[i] > 0) late.push(`poll ${i} got ${res} after its final completion`);
          if ((flags & CQE_F_MORE) === 0) finals[i]++;
        },
      }));
      const ps = Array.from({ length: n }, () => newPipe());
      for (let i = 0; i < n; i++) slots.push(r.prepare(IoOp.POLL_ADD, ps[i]!.readFd, 0, POLL_ADD_MULTI, 0, POLLIN, owners[i]!));
      await drive(r, () => r.queuedCount === 0);
      // Every pipe readable at once, three times: up to 192 completions for 8 CQ entries. The
      // kernel ends a multishot whose next completion finds the CQ full (its final one then).
      for (let round = 0; round < 3; round++) {
        for (const p of ps) writeFileSync(p.writeFd, new Uint8Array([1]));
        await drive(r, () => false, 0, 20);
      }
      for (let i = 0; i < n; i++) r.cancelSlot(slots[i]!, owners[i]);
      await drive(r, () => r.inFlight === 0);
      expect(r.inFlight).toBe(0);
      expect(late).toEqual([]);
      expect(finals).toEqual(new Array(n).fill(1));
      // Their slots go to new operations, which get their own results only.
      const nops = Array.from({ length: 32 }, () => r.submit("nop", IoOp.NOP, -1, 0, 0, 0, 0));
      let done = 0;
      for (const p of nops) void p.then(() => done++);
      await drive(r, () => done === 32);
      expect(await Promise.all(nops)).toEqual(new Array(32).fill(0));
    } finally {
      r.destroy();
    }
  });

  test("200 kernel timeouts firing together on a 4-entry CQ are each delivered once, and the turns never sleep on the overflow", async () => {
    const r = new Reactor({ sqEntries: 4, cqEntries: 4 });
    try {
      const n = 200;
      let settled = 0;
      const all = Array.from({ length: n }, () => r.timeout(5).then(() => settled++));
      await drive(r, () => r.queuedCount === 0, 0);
      // All have fired before the next turn: 196 wait outside the CQ. Turns asked to sleep 1 s
      // must not sleep while completions wait there: 200 completions in far fewer than 1 s each.
      await Bun.sleep(20);
      const t0 = performance.now();
      const turns = await drive(r, () => settled === n, 1_000_000, 500);
      expect(settled).toBe(n);
      expect(turns).toBeLessThan(100);
      expect(performance.now() - t0).toBeLessThan(10_000);
      await Promise.all(all);
      expect(r.inFlight).toBe(0);
      expect(r.counters().completed).toBe(n);
    } finally {
      r.destroy();
    }
  });

  test("the shard's own loop on a 4-entry SQ and CQ: 2,000 mixed operations and aborts all settle once, and the process exits", () => {
    const out = Bun.spawnSync({
      cmd: [process.execPath, join(import.meta.dir, "fixtures", "review23-tiny-ring.ts")],
      stdout: "pipe",
      stderr: "pipe",
      timeout: 60_000,
    });
    const stdout = out.stdout.toString();
    const output = `${stdout}${out.stderr.toString()}`;
    expect(out.exitCode, output).toBe(0);
    const result = JSON.parse(stdout.trim().split("\n").pop() ?? "{}");
    expect(result, output).toEqual({ settled: 2000, wrong: [], inFlight: 0, queued: 0 });
  }, 90_000);
});

describe("cancellation racing completion", () => {
  test("an abort after the completion reached the CQ (not yet reaped): the read resolves with its bytes, none are lost", async () => {
    const r = new Reactor({ sqEntries: 8 });
    try {
      const p = newPipe();
      writeFileSync(p.writeFd, new Uint8Array([7, 8, 9]));
      const ac = new AbortController();
      const buf = buffer(8);
      const read = quiet(r.read(p.readFd, buf, { signal: ac.signal }));
      r.submitNow(); // the read completes at once, in the kernel: its completion waits in the CQ
      ac.abort(); // too late: the cancel finds nothing
      let done = false;
      void read.finally(() => (done = true));
      await drive(r, () => done && r.inFlight === 0);
      expect(await read).toBe(3);
      expect([...buf.bytes.subarray(0, 3)]).toEqual([7, 8, 9]);
      expect(r.inFlight).toBe(0);
    } finally {
      r.destroy();
    }
  });

  test("a multishot poll cancelled twice (two cancels in flight at once): one final completion, and the slot's next owner gets its own", async () => {
    const r = new Reactor({ sqEntries: 8 });
    try {
      const p = newPipe();
      const seen: { res: number; flags: number }[] = [];
      const owner = { complete: (res: number, flags: number) => void seen.push({ res, flags }) };
      const slot = r.prepare(IoOp.POLL_ADD, p.writeFd, 0, POLL_ADD_MULTI, 0, POLLOUT, owner);
      await drive(r, () => seen.length > 0);
      expect(seen[0]!.flags & CQE_F_MORE).toBe(CQE_F_MORE);
      r.cancelSlot(slot, owner);
      r.cancelSlot(slot, owner);
      await drive(r, () => r.inFlight === 0);
      const finals = seen.filter((c) => (c.flags & CQE_F_MORE) === 0);
      expect(finals).toEqual([{ res: -125, flags: 0 }]);
      expect((seen.at(-1)!.flags & CQE_F_MORE) === 0).toBe(true);
      // The slot is free again: its next owner (a nop) completes with 0, not a poll mask.
      let got: unknown = "pending";
      const next = { complete: (res: number) => void (got = res) };
      expect(r.prepare(IoOp.NOP, -1, 0, 0, 0, 0, next)).toBe(slot);
      await drive(r, () => got !== "pending");
      expect(got).toBe(0);
      expect(seen.length).toBe(seen.indexOf(finals[0]!) + 1);
    } finally {
      r.destroy();
    }
  });

  test("a read cancelled in the kernel: the operation reusing its slot is never cancelled or completed by it", async () => {
    const r = new Reactor({ sqEntries: 4, cqEntries: 4 });
    try {
      const p = newPipe();
      const ac = new AbortController();
      const read = quiet(r.read(p.readFd, buffer(4), { signal: ac.signal }));
      r.turn(0); // parked on the empty pipe
      ac.abort();
      ac.abort(); // a second abort is nothing
      await drive(r, () => r.inFlight === 0);
      expect(await errorOf(read)).toBeInstanceOf(AbortError);
      // A new read takes a freed slot; data then arrives for it, not for the cancelled one.
      const next = r.read(p.readFd, buffer(4));
      writeFileSync(p.writeFd, new Uint8Array([5]));
      let done = false;
      void next.finally(() => (done = true));
      await drive(r, () => done);
      expect(await next).toBe(1);
      expect(r.inFlight).toBe(0);
    } finally {
      r.destroy();
    }
  });

  for (const seed of [1, 2, 3, 4, 5, 6]) {
    test(`random operations, submits, turns and aborts on a 4-entry ring (seed ${seed}): each settles once with a result of its kind`, async () => {
      const rand = prng(seed);
      const r = new Reactor({ sqEntries: 4, cqEntries: 4 });
      const wrong: string[] = [];
      const aborts: AbortController[] = [];
      let issued = 0;
      let settled = 0;
      const mask = (allowed: number) => (v: unknown) => typeof v === "number" && v > 0 && (v & ~allowed) === 0;
      try {
        const ps = Array.from({ length: 6 }, () => newPipe());
        for (let step = 0; step < 3000; step++) {
          const k = rand();
          const p = ps[Math.floor(rand() * ps.length)]!;
          if (k < 0.5) {
            const ac = new AbortController();
            aborts.push(ac);
            const signal = ac.signal;
            const kind = Math.floor(rand() * 6);
            const [name, op, ok]: [string, Promise<unknown>, (v: unknown) => boolean] =
              kind === 0 ? ["nop", r.nop({ signal }), (v) => v === undefined]
              : kind === 1 ? ["timeout", r.timeout(rand() * 2, { signal }), (v) => v === undefined]
              : kind === 2 ? ["poll-out", r.poll(p.writeFd, POLLOUT, { signal }), mask(POLLOUT | 8)]
              : kind === 3 ? ["poll-in", r.poll(p.readFd, POLLIN, { signal }), mask(POLLIN | 16)]
              : kind === 4 ? ["submit-nop", r.submit("nop", IoOp.NOP, -1, 0, 0, 0, 0, { signal }), (v) => v === 0]
              : ["poll-multi", r.submit("poll-multi", IoOp.POLL_ADD, p.readFd, 0, POLL_ADD_MULTI, 0, POLLIN, { signal }), mask(POLLIN | 16)];
            issued++;
            op.then(
              (v) => {
                settled++;
                if (!ok(v)) wrong.push(`${name} resolved ${String(v)}`);
              },
              (e) => {
                settled++;
                if (!(e instanceof AbortError)) wrong.push(`${name} rejected ${String(e)}`);
              },
            );
            const when = rand();
            if (when < 0.2) ac.abort();
            else if (when < 0.5) setTimeout(() => ac.abort(), rand() * 3);
          } else if (k < 0.6) {
            r.submitNow();
          } else if (k < 0.9) {
            r.turn(0);
            await bunTick();
          } else {
            writeFileSync(p.writeFd, new Uint8Array([1]));
          }
        }
        await Bun.sleep(5);
        for (const a of aborts) a.abort(); // ends the multishot polls and the parked polls
        await drive(r, () => settled === issued && r.inFlight === 0);
        expect(wrong).toEqual([]);
        expect(settled).toBe(issued);
        expect(r.inFlight).toBe(0);
      } finally {
        r.destroy();
      }
    }, 60_000);
  }
});
