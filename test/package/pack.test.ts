/**
 * Another project can use Shoal: pack this repository as npm would publish it, install the
 * tarball into a fresh project with `bun add` (offline: the registry points nowhere), and
 * run a script there that imports "shoal", loads the prebuilt native library it ships and
 * sleeps on Shoal's reactor.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { consumerProject, pack, repo, run } from "./consumer.ts";

const repoPackage = (await Bun.file(join(repo, "package.json")).json()) as { name: string; version: string };
let work = "";

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "shoal-pack-"));
});

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

test(
  "bun add of the packed tarball gives a project that imports shoal and runs on its native library",
  () => {
    expect(existsSync(join(repo, "zig-out/lib/libshoal.so"))).toBe(true); // scripts/zig build first

    const tarballs = pack(work);
    expect(tarballs.map((t) => t.slice(t.lastIndexOf("/") + 1))).toEqual([`${repoPackage.name}-${repoPackage.version}.tgz`]);
    // An unreachable registry proves the install needs nothing beyond the tarball.
    const app = consumerProject(work, "shoal-consumer", tarballs[0]!);
    const installed = join(app, "node_modules", "shoal");
    expect(existsSync(join(installed, "zig-out/lib/libshoal.so"))).toBe(true);
    expect(existsSync(join(installed, "test"))).toBe(false);

    writeFileSync(
      join(app, "main.ts"),
      `import { sleep, version } from "shoal";
import { dlopen, FFIType } from "bun:ffi";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
const dir = dirname(fileURLToPath(import.meta.resolve("shoal/package.json")));
const lib = dlopen(join(dir, "zig-out/lib/libshoal.so"), { shoal_abi_version: { args: [], returns: FFIType.u32 } });
const abi = lib.symbols.shoal_abi_version();
lib.close();
const t0 = performance.now();
await sleep(20);
const slept_ms = performance.now() - t0;
console.log(JSON.stringify({ version, abi, slept_ms, dir }));
`,
    );
    const out = run([process.execPath, "main.ts"], app, { SHOAL_LIB: undefined });
    const result = JSON.parse(out.trim().split("\n").at(-1)!) as {
      version: string;
      abi: number;
      slept_ms: number;
      dir: string;
    };
    expect(result.version).toBe(repoPackage.version);
    expect(result.abi).toBeGreaterThan(0);
    expect(result.slept_ms).toBeGreaterThanOrEqual(19);
    expect(result.slept_ms).toBeLessThan(5_000);
    expect(result.dir.startsWith(app)).toBe(true);
  },
  60_000,
);
