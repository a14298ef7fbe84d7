/**
 * README.md's TypeScript examples work for a consumer: every ```ts block is taken from the
 * README as it stands, put into a fresh project that installed the packed tarball (as
 * pack.test.ts does), type-checked under what `bun init` sets up plus the strict options the
 * README promises (exactOptionalPropertyTypes, noPropertyAccessFromIndexSignature,
 * noUncheckedIndexedAccess), and run. A block that names things it does not define (`fd`,
 * `items`...) gets a prelude that defines them; a block that serves gets a postlude that talks
 * to it. A new block fails the test until it is given a harness here.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { consumerProject, pack, repo, run } from "./consumer.ts";

const tsc = join(repo, "node_modules", ".bin", "tsc");
let work = "";
let app = "";

/** The README's ```ts blocks, in order. */
function readmeBlocks(): string[] {
  const text = readFileSync(join(repo, "README.md"), "utf8");
  return [...text.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
}

/** The last line of a run's output that is JSON. */
function lastJson(out: string): Record<string, unknown> {
  const line = out.trim().split("\n").filter((l) => l.startsWith("{")).at(-1);
  if (line === undefined) throw new Error(`no JSON line in:\n${out}`);
  return JSON.parse(line) as Record<string, unknown>;
}

/** A free TCP port on loopback (closed again before the block listens on it). */
function freePort(): number {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

interface Harness {
  /** How the block is recognised (its imports). */
  matches: (block: string) => boolean;
  /** The file to type-check and run. */
  source: (block: string) => string;
  /** Checks the run's output. */
  check: (out: string) => void;
}

const dataFile = () => join(work, "data.txt");
let echoPort = 0;

const harnesses: Record<string, Harness> = {
  overview: {
    matches: (b) => b.includes("createSchedulingGroup") && b.includes("BufferPool"),
    // fd, items, handle, work and crunch are the reader's own: defined here so that the block
    // compiles and runs as written.
    source: (b) => `import { openSync as __openSync } from "node:fs";
import { reactor as __reactor, BufferPool as __BufferPool, SystemError as __SystemError, sleep as __sleep } from "shoal";
const fd = __openSync(${JSON.stringify(dataFile())}, "r");
const items = [1, 2, 3, 4, 5];
const __handled: number[] = [];
async function handle(item: number): Promise<void> { await __sleep(1); __handled.push(item); }
const work = [1, 2, 3];
let __crunched = 0;
function crunch(chunk: number): void { __crunched += chunk; }
// ---- README block
${b}
// ---- checks
tick.cancel();
while (__crunched < 6) await __sleep(1);
const __bad = new __BufferPool({ bufferSize: 4096, count: 1 }).acquire();
let __error = ""; // fd 999999: open in no test process
try { await __reactor().read(999_999, __bad, { offset: 0 }); } catch (e) { __error = e instanceof __SystemError ? e.message : String(e); }
console.log(JSON.stringify({ n, handled: __handled, crunched: __crunched, gateClosed: gate.isClosed, error: __error }));
`,
    check: (out) => {
      // The block printed the file's bytes it read (Bun's rendering of a Uint8Array).
      expect(out).toContain("Uint8Array(12) [ 104, 101, 108, 108, 111, 32, 115, 104, 111, 97, 108, 10 ]");
      expect(lastJson(out)).toEqual({
        n: 12,
        handled: [1, 2, 3, 4, 5],
        crunched: 6,
        gateClosed: true,
        error: "read failed: EBADF",
      });
    },
  },
  push: {
    matches: (b) => b.includes("c.input.receive(") && b.includes("serve("),
    source: (b) => {
      expect(b).toContain("serve(7000,");
      return `import { connect as __connect } from "shoal";
// ---- README block (its port 7000 replaced by a free one)
${b.replace("serve(7000,", `serve(${echoPort},`)}
// ---- checks: the server echoes
const __c = await __connect({ host: "127.0.0.1", port: ${echoPort} });
__c.output.write(new TextEncoder().encode("ping"));
await __c.output.flush();
const __got = await __c.input.readExactly(4);
console.log(JSON.stringify({ echoed: __got === null ? null : new TextDecoder().decode(__got) }));
process.exit(0);
`;
    },
    check: (out) => expect(lastJson(out)).toEqual({ echoed: "ping" }),
  },
  consumer: {
    matches: (b) => b.includes("version") && b.includes("await sleep(10)") && !b.includes("BufferPool"),
    source: (b) => b,
    check: (out) => {
      const pkg = JSON.parse(readFileSync(join(repo, "package.json"), "utf8")) as { version: string };
      expect(out.trim().split("\n").at(-1)).toBe(`shoal ${pkg.version}`);
    },
  },
};

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "shoal-readme-"));
  app = consumerProject(work, "shoal-readme", pack(work)[0]!);
  writeFileSync(dataFile(), "hello shoal\n");
});

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

test(
  "every ```ts block of README.md type-checks and runs in a project that installed the packed package",
  () => {
    expect(existsSync(join(repo, "zig-out/lib/libshoal.so"))).toBe(true); // scripts/zig build first
    echoPort = freePort();
    const blocks = readmeBlocks();
    expect(blocks.length).toBeGreaterThan(0);
    const files: { name: string; harness: Harness }[] = [];
    for (const [i, block] of blocks.entries()) {
      const found = Object.entries(harnesses).filter(([, h]) => h.matches(block));
      if (found.length !== 1) {
        throw new Error(`README.md's ts block ${i} matches ${found.length} harnesses here (give it one in this test):\n${block}`);
      }
      const [name, harness] = found[0]!;
      writeFileSync(join(app, `${name}.ts`), harness.source(block));
      files.push({ name: `${name}.ts`, harness });
    }
    expect(files.map((f) => f.name).sort()).toEqual(Object.keys(harnesses).map((n) => `${n}.ts`).sort());

    // What `bun init` writes (allowImportingTsExtensions with noEmit: Shoal ships .ts source),
    // plus the strict options the README says src/ passes. Types for Bun from this repository:
    // the install above is offline.
    writeFileSync(
      join(app, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          lib: ["ESNext"],
          target: "ESNext",
          module: "Preserve",
          moduleDetection: "force",
          moduleResolution: "bundler",
          allowImportingTsExtensions: true,
          verbatimModuleSyntax: true,
          noEmit: true,
          strict: true,
          skipLibCheck: true,
          noFallthroughCasesInSwitch: true,
          noUncheckedIndexedAccess: true,
          noImplicitOverride: true,
          exactOptionalPropertyTypes: true,
          noPropertyAccessFromIndexSignature: true,
          types: ["bun"],
          typeRoots: [join(repo, "node_modules", "@types")],
        },
        files: files.map((f) => f.name),
      }),
    );
    run([tsc, "--noEmit", "-p", "tsconfig.json"], app);

    for (const f of files) {
      const out = run([process.execPath, f.name], app, { SHOAL_LIB: undefined });
      f.harness.check(out);
    }
  },
  60_000,
);
