/**
 * Directory and file utilities on ext4: listing (getdents64 in batches, early exit closes the
 * directory), mkdir, remove, removeTree, rename, link, stat, fileExists, fileSize, fsSpace,
 * withTempDir, readSmallFile/writeSmallFile, and their typed errors.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync, existsSync, statfsSync } from "node:fs";
import { InvalidArgumentError, SystemError, reactor } from "../../src/index.ts";
import {
  fileExists,
  fileSize,
  fsSpace,
  link,
  listDirectory,
  mkdir,
  readSmallFile,
  remove,
  removeTree,
  rename,
  stat,
  withTempDir,
  writeSmallFile,
} from "../../src/fs/index.ts";
import { ext4Scratch } from "./fixtures/ext4.ts";

const scratch = ext4Scratch("dir");
const root = scratch.dir;
afterAll(() => scratch.cleanup());

let seq = 0;
const fresh = (name = "d") => `${root}/${name}-${++seq}`;

async function codeOf(p: Promise<unknown>): Promise<string> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  if (!(e instanceof SystemError)) throw new Error(`expected a SystemError, got ${String(e)}`);
  return e.code;
}

function openFds(): number {
  return readdirSync("/proc/self/fd").length;
}

describe("listDirectory", () => {
  test("lists every entry with its type, across several getdents batches", async () => {
    const d = fresh();
    await mkdir(d);
    // Long names: 1,500 entries of ~120 bytes span several 32 KiB batches.
    const names = new Set<string>();
    for (let i = 0; i < 1500; i++) {
      const n = `file-${i}-${"x".repeat(100)}`;
      names.add(n);
      writeFileSync(`${d}/${n}`, "");
    }
    await mkdir(`${d}/sub`);
    symlinkSync("sub", `${d}/link`);
    const seen = new Map<string, string>();
    for await (const e of listDirectory(d)) seen.set(e.name, e.type);
    expect(seen.size).toBe(1502);
    for (const n of names) expect(seen.get(n)).toBe("file");
    expect(seen.get("sub")).toBe("directory");
    expect(seen.get("link")).toBe("symlink");
    expect(seen.has(".")).toBe(false);
    expect(seen.has("..")).toBe(false);
  });

  test("leaving the loop early closes the directory", async () => {
    const d = fresh();
    await mkdir(d);
    for (let i = 0; i < 10; i++) writeFileSync(`${d}/${i}`, "");
    const before = openFds();
    let count = 0;
    for await (const _ of listDirectory(d)) {
      if (++count === 3) break;
    }
    expect(count).toBe(3);
    expect(openFds()).toBe(before);
    expect(reactor().counters().inFlight).toBe(0);
  });

  test("errors: missing, not a directory, aborted, bad arguments", async () => {
    const drain = async (path: string, signal?: AbortSignal) => {
      for await (const _ of listDirectory(path, { signal })) void _;
    };
    expect(await codeOf(drain(`${root}/nope`))).toBe("ENOENT");
    const f = fresh("file");
    writeFileSync(f, "x");
    expect(await codeOf(drain(f))).toBe("ENOTDIR");
    const ac = new AbortController();
    ac.abort();
    expect(((await drain(root, ac.signal).catch((e: unknown) => e)) as Error).name).toBe("AbortError");
    await expect(drain("")).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(drain("a\0b")).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

describe("mkdir, remove, removeTree", () => {
  test("mkdir creates one level; recursive creates parents and accepts an existing directory", async () => {
    const d = fresh();
    await mkdir(d, { mode: 0o750 });
    expect(statSync(d).isDirectory()).toBe(true);
    expect(await codeOf(mkdir(d))).toBe("EEXIST");
    expect(await codeOf(mkdir(`${fresh()}/a/b`))).toBe("ENOENT");
    const deep = `${fresh()}/a/b/c`;
    await mkdir(deep, { recursive: true });
    expect(statSync(deep).isDirectory()).toBe(true);
    await mkdir(deep, { recursive: true }); // exists: fine
    const file = fresh("file");
    writeFileSync(file, "");
    expect(await codeOf(mkdir(file, { recursive: true }))).toBe("EEXIST");
    await expect(mkdir(d, { mode: -1 })).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  test("remove deletes a file or an empty directory; removeTree deletes a tree", async () => {
    const d = fresh();
    await mkdir(`${d}/x/y`, { recursive: true });
    writeFileSync(`${d}/x/y/f`, "data");
    writeFileSync(`${d}/x/g`, "data");
    symlinkSync("/etc", `${d}/x/etc-link`); // removed, never followed
    expect(await codeOf(remove(`${d}/x`))).toBe("ENOTEMPTY");
    await remove(`${d}/x/g`);
    expect(existsSync(`${d}/x/g`)).toBe(false);
    await removeTree(d);
    expect(existsSync(d)).toBe(false);
    expect(existsSync("/etc/passwd")).toBe(true);
    await removeTree(d); // missing: not an error
    expect(await codeOf(remove(d))).toBe("ENOENT");
    const e = await mkdir(`${root}`).catch((x: unknown) => x);
    expect((e as SystemError).message).toContain(root); // messages name the path
  });
});

describe("rename, link, stat, fileExists, fileSize", () => {
  test("rename moves atomically; noReplace refuses to overwrite", async () => {
    const a = fresh("a");
    const b = fresh("b");
    writeFileSync(a, "one");
    writeFileSync(b, "two");
    expect(await codeOf(rename(a, b, { noReplace: true }))).toBe("EEXIST");
    await rename(a, b);
    expect(existsSync(a)).toBe(false);
    expect(readFileSync(b, "utf8")).toBe("one");
    expect(await codeOf(rename(a, b))).toBe("ENOENT");
    await expect(rename(a, "")).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  test("link makes a second name for the same inode", async () => {
    const a = fresh("a");
    const b = fresh("b");
    writeFileSync(a, "shared");
    await link(a, b);
    const sa = await stat(a);
    const sb = await stat(b);
    expect(sb.inode).toBe(sa.inode);
    expect(sb.links).toBe(2);
    expect(await codeOf(link(a, b))).toBe("EEXIST");
  });

  test("stat, fileExists and fileSize agree with node:fs", async () => {
    const a = fresh("a");
    writeFileSync(a, new Uint8Array(12345));
    const s = await stat(a);
    const n = statSync(a);
    expect(s.type).toBe("file");
    expect(s.size).toBe(12345);
    expect(s.inode).toBe(n.ino);
    expect(s.mode).toBe(n.mode & 0o7777);
    expect(Math.abs(s.mtimeMs - n.mtimeMs)).toBeLessThan(1);
    expect(await fileSize(a)).toBe(12345);
    expect(await fileExists(a)).toBe(true);
    expect(await fileExists(`${a}.missing`)).toBe(false);
    expect(await fileExists(`${a}/below-a-file`)).toBe(false); // ENOTDIR
    const l = fresh("l");
    symlinkSync(a, l);
    expect((await stat(l)).type).toBe("file");
    expect((await stat(l, { followSymlinks: false })).type).toBe("symlink");
    expect(await codeOf(fileSize(`${a}.missing`))).toBe("ENOENT");
    await expect(fileExists(7 as never)).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

describe("fsSpace and withTempDir", () => {
  test("fsSpace reports the file system and its space like statfs", () => {
    const s = fsSpace(root);
    const n = statfsSync(root);
    expect(s.fileSystem).toBe("ext4");
    expect(s.totalBytes).toBe(n.blocks * n.bsize);
    expect(s.availableBytes).toBeLessThanOrEqual(s.freeBytes);
    expect(s.freeBytes).toBeLessThanOrEqual(s.totalBytes);
    expect(s.files).toBe(n.files);
    expect(s.readOnly).toBe(false);
    expect(() => fsSpace(`${root}/missing/dir`)).toThrow(SystemError);
    expect(() => fsSpace("")).toThrow(InvalidArgumentError);
  });

  test("withTempDir gives a private directory and removes it, also when fn throws", async () => {
    let kept = "";
    const result = await withTempDir(async (d) => {
      kept = d;
      expect(statSync(d).mode & 0o777).toBe(0o700);
      await mkdir(`${d}/inner`);
      writeFileSync(`${d}/inner/f`, "x");
      return 42;
    }, { parent: root, prefix: "t-" });
    expect(result).toBe(42);
    expect(existsSync(kept)).toBe(false);
    const err = await withTempDir(() => {
      throw new Error("boom");
    }, { parent: root }).catch((e: unknown) => e);
    expect((err as Error).message).toBe("boom");
    expect(readdirSync(root).filter((n) => n.startsWith("shoal-"))).toEqual([]);
    await expect(withTempDir(() => 1, { parent: root, prefix: "a/b" })).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  test("writeSmallFile replaces a file atomically; readSmallFile reads it back", async () => {
    const p = fresh("props");
    await writeSmallFile(p, "first\n");
    await writeSmallFile(p, "second ü\n");
    expect(await readSmallFile(p)).toBe("second ü\n");
    expect(readdirSync(root).some((n) => n.includes(".tmp-"))).toBe(false);
    expect(await codeOf(readSmallFile(`${p}.missing`))).toBe("ENOENT");
  });

  test("readSmallFile/writeSmallFile refuse bad options, modes and text before opening anything", async () => {
    const p = fresh("args");
    const fds = () => readdirSync("/proc/self/fd").length;
    const before = fds();
    const bad: [() => Promise<unknown>, RegExp][] = [
      [() => readSmallFile(p, { signal: {} as never }), /signal must be an AbortSignal/],
      [() => writeSmallFile(p, "x", { signal: 1 as never }), /signal must be an AbortSignal/],
      [() => writeSmallFile(p, "x", { mode: -1 }), /mode/],
      [() => writeSmallFile(p, "x", { mode: 0o104755 }), /mode/], // setuid: refused
      [() => writeSmallFile(p, "x", { mode: 0o4755 }), /mode/],
      [() => writeSmallFile(p, "x", { mode: 1.5 }), /mode/],
      [() => writeSmallFile(p, "x", { mode: "abc" as never }), /mode/],
      [() => writeSmallFile(p, 42 as never), /text must be a string/],
      // A path just under PATH_MAX whose temporary name is over it: the name was cut without
      // its NUL and the kernel read past it (ENAMETOOLONG by luck).
      [() => writeSmallFile("/" + "a".repeat(4090), "x"), /PATH_MAX/],
    ];
    for (const [call, message] of bad) {
      const err = await call().then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect((err as Error).message).toMatch(message);
    }
    expect(fds()).toBe(before); // nothing was opened (a bad signal used to leak the descriptor)
    expect(existsSync(p) || readdirSync(root).some((n) => n.includes(".tmp-"))).toBe(false);
    expect(reactor().counters().inFlight).toBe(0);
    await writeSmallFile(p, "ok", { mode: 0o600 });
    expect(statSync(p).mode & 0o7777).toBe(0o600);
  });

  test("readSmallFile of a directory names the call and the path; a failed writeSmallFile leaves no temporary file", async () => {
    const dir = fresh("adir");
    mkdirSync(dir);
    const err = (await readSmallFile(dir).catch((e: unknown) => e)) as SystemError;
    expect(err.code).toBe("EISDIR");
    expect(err.op).toBe(`readSmallFile: read ${dir}`);
    // The rename fails (a directory is in the way): the temporary file is removed.
    expect(await codeOf(writeSmallFile(dir, "x"))).toBe("EISDIR");
    expect(readdirSync(root).some((n) => n.includes(".tmp-"))).toBe(false);
  });
});

describe("after a second review", () => {
  test("a recursive walk keeps every parent listing open: 11 levels finish (the ninth waited for a buffer for good)", async () => {
    const top = fresh("deep");
    let p = top;
    for (let i = 0; i < 11; i++) {
      p = `${p}/d${i}`;
      mkdirSync(p, { recursive: true });
      writeFileSync(`${p}/f`, "x");
    }
    let deepest = 0;
    const walk = async (dir: string, depth: number): Promise<void> => {
      deepest = Math.max(deepest, depth);
      for await (const e of listDirectory(dir)) if (e.type === "directory") await walk(`${dir}/${e.name}`, depth + 1);
    };
    await walk(top, 0);
    expect(deepest).toBe(11);
  });

  test("names that are not UTF-8: listed with their bytes, removed by removeTree and withTempDir", async () => {
    const d = fresh("bytes");
    mkdirSync(d);
    const bad = Buffer.from([0xff, 0x78]); // not UTF-8
    writeFileSync(Buffer.concat([Buffer.from(`${d}/`), bad]), "x");
    mkdirSync(Buffer.concat([Buffer.from(`${d}/`), Buffer.from([0xfe]), Buffer.from("sub")]) as unknown as string);
    writeFileSync(Buffer.concat([Buffer.from(`${d}/`), Buffer.from([0xfe]), Buffer.from("sub/"), bad]), "y");
    const listed: { name: string; raw?: number[] }[] = [];
    for await (const e of listDirectory(d)) listed.push({ name: e.name, raw: e.rawName && [...e.rawName] });
    listed.sort((a, b) => a.name.localeCompare(b.name));
    expect(listed).toEqual([
      { name: "\uFFFDsub", raw: [0xfe, 0x73, 0x75, 0x62] },
      { name: "\uFFFDx", raw: [0xff, 0x78] },
    ]);
    await removeTree(d); // rmdir failed with ENOTEMPTY: the decoded names named nothing
    expect(existsSync(d)).toBe(false);
    const result = await withTempDir((dir) => {
      writeFileSync(Buffer.concat([Buffer.from(`${dir}/`), bad]), "z");
      return 42;
    }, { parent: root });
    expect(result).toBe(42);
    expect(readdirSync(root).filter((n) => n.startsWith("shoal-"))).toEqual([]);
  });

  test("writeSmallFile: two writers of one path each publish a whole file (they shared a temporary file)", async () => {
    const p = fresh("race");
    const a = "A".repeat(100_000);
    const b = "B".repeat(10);
    for (let i = 0; i < 5; i++) {
      await Promise.all([writeSmallFile(p, a), writeSmallFile(p, b)]);
      const text = readFileSync(p, "utf8");
      expect(text === a || text === b).toBe(true);
    }
    expect(readdirSync(root).filter((n) => n.includes(".tmp-"))).toEqual([]);
  });
});
