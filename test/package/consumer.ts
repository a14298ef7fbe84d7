/**
 * What the package tests share: running a command (its output, or an Error with it), and a
 * fresh consumer project that installed this repository's packed tarball with `bun add`,
 * offline (the registry points nowhere: the install needs nothing beyond the tarball).
 */
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const repo = join(import.meta.dir, "..", "..");

/** Runs `cmd` in `cwd` (`env` over the process's; undefined removes a variable); its stdout. Throws with the output if it fails. */
export function run(cmd: string[], cwd: string, env: Record<string, string | undefined> = {}): string {
  const merged: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...env })) if (v !== undefined) merged[k] = v;
  const out = Bun.spawnSync({ cmd, cwd, env: merged, stdout: "pipe", stderr: "pipe", timeout: 30_000 });
  const text = `${out.stdout.toString()}${out.stderr.toString()}`;
  if (out.exitCode !== 0) throw new Error(`\`${cmd.join(" ")}\` in ${cwd} exited ${out.exitCode}:\n${text}`);
  return out.stdout.toString();
}

/** Packs the repository into `work`/dist; returns the tarballs there (one expected). */
export function pack(work: string): string[] {
  const dest = join(work, "dist");
  mkdirSync(dest);
  run([process.execPath, "pm", "pack", "--destination", dest, "--ignore-scripts", "--quiet"], repo);
  return readdirSync(dest)
    .filter((f) => f.endsWith(".tgz"))
    .map((f) => join(dest, f));
}

/** A project `work`/app named `name` that installed `tarball` offline; returns its folder. */
export function consumerProject(work: string, name: string, tarball: string): string {
  const app = join(work, "app");
  mkdirSync(app);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name, private: true, type: "module" }));
  run([process.execPath, "add", tarball], app, {
    BUN_CONFIG_REGISTRY: "http://127.0.0.1:9/",
    BUN_INSTALL_CACHE_DIR: join(work, "bun-cache"),
    NPM_CONFIG_REGISTRY: "http://127.0.0.1:9/",
  });
  return app;
}
