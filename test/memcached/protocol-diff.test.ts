/**
 * Differential protocol test: every case in lib/cases.ts goes, in order and on a fresh
 * connection each, to stock memcached 1.6.18 and to our protocol engine (in process); the
 * answers must be the same bytes (CAS values included) and the connection must close in the
 * same cases. The engine then replays every case byte by byte and in random pieces, and must
 * give the same answers again: parsing does not depend on how the bytes arrive.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { allCases, BIN_SENTINEL, BIN_SENTINEL_ANSWER, TEXT_SENTINEL, TEXT_SENTINEL_ANSWER, type Case } from "./lib/cases.ts";
import { cat, exchange, InProcess, show, startStock, type Answer, type ServerProcess } from "./lib/harness.ts";

const cases = allCases();
let stock: ServerProcess;
const stockAnswers: Answer[] = [];

function request(c: Case): Uint8Array {
  if (c.noSentinel) return c.send;
  return cat(c.send, c.binary ? BIN_SENTINEL : TEXT_SENTINEL);
}

function randomChunks(n: number, seed: number): number[] {
  let x = seed;
  const r: number[] = [];
  let left = n;
  while (left > 0) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const k = Math.min(left, 1 + (x % 37));
    r.push(k);
    left -= k;
  }
  return r;
}

beforeAll(async () => {
  stock = await startStock(["-t", "1"]);
  for (const c of cases) {
    const until = c.noSentinel ? undefined : c.binary ? BIN_SENTINEL_ANSWER : TEXT_SENTINEL_ANSWER;
    stockAnswers.push(await exchange(stock.port, request(c), { until, idleMs: c.noSentinel ? 200 : 1000 }));
  }
}, 120_000);

afterAll(async () => {
  await stock?.stop();
}, 30_000);

function compare(c: Case, ours: Answer, theirs: Answer): void {
  if (show(ours.bytes) !== show(theirs.bytes) || ours.closed !== theirs.closed) {
    console.log(`--- case "${c.name}"\n--- stock (closed=${theirs.closed}):\n${show(theirs.bytes)}\n--- ours (closed=${ours.closed}):\n${show(ours.bytes)}`);
  }
  expect(show(ours.bytes)).toBe(show(theirs.bytes));
  expect(ours.closed).toBe(theirs.closed);
}

describe("same answers as stock memcached 1.6.18", () => {
  test(`${cases.length} cases, whole requests`, () => {
    const engine = new InProcess();
    let failed = 0;
    for (let i = 0; i < cases.length; i++) {
      const c = cases[i]!;
      const ours = engine.answer(request(c));
      try {
        compare(c, ours, stockAnswers[i]!);
      } catch (e) {
        failed++;
        if (failed > 5) throw e;
      }
    }
    engine.close();
    expect(failed).toBe(0);
  });

  test("byte by byte", () => {
    const engine = new InProcess();
    for (let i = 0; i < cases.length; i++) {
      const c = cases[i]!;
      const req = request(c);
      const chunks = c.segmentSensitive ? [] : Array.from({ length: Math.min(req.length, 4000) }, () => 1);
      compare(c, engine.answer(req, chunks), stockAnswers[i]!);
    }
    engine.close();
  });

  test("random pieces", () => {
    const engine = new InProcess();
    for (let i = 0; i < cases.length; i++) {
      const c = cases[i]!;
      const req = request(c);
      compare(c, engine.answer(req, c.segmentSensitive ? [] : randomChunks(req.length, i + 1)), stockAnswers[i]!);
    }
    engine.close();
  });
});
