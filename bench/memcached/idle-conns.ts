/**
 * What an idle connection costs: stock memcached (-t 1) and ours (1 shard), each given N clients
 * that send one `get` and then stay open; RSS before and after, per connection.
 *
 *   bun bench/memcached/idle-conns.ts [N=10000]
 */
import net from "node:net";
import { readFileSync } from "node:fs";
import { spawn } from "bun";

const N = Number(process.argv[2] ?? 10_000);
const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await Bun.sleep(50);
  }
  throw new Error(`nothing listens on ${port}`);
}

async function measure(name: string, cmd: string[], port: number): Promise<number> {
  const proc = spawn(cmd, { stdout: "ignore", stderr: "ignore" });
  try {
    await waitForPort(port);
    await Bun.sleep(500);
    const base = rssMiB(proc.pid);
    const socks: net.Socket[] = [];
    for (let i = 0; i < N; i += 200) {
      await Promise.all(
        Array.from({ length: Math.min(200, N - i) }, () => new Promise<void>((resolve, reject) => {
          const s = net.connect(port, "127.0.0.1", () => s.write("get k\r\n"));
          s.once("data", () => resolve());
          s.once("error", reject);
          socks.push(s);
        })),
      );
    }
    await Bun.sleep(1500);
    const after = rssMiB(proc.pid);
    const each = ((after - base) * 1024) / N;
    console.log(`${name}: RSS ${base.toFixed(1)} -> ${after.toFixed(1)} MiB with ${N} idle connections: ${each.toFixed(2)} KiB each`);
    for (const s of socks) s.destroy();
    return each;
  } finally {
    proc.kill();
    await proc.exited;
  }
}

const stock = await measure("stock -t 1", ["memcached", "-u", "root", "-l", "127.0.0.1", "-p", "21411", "-U", "0", "-t", "1", "-c", String(N + 100)], 21411);
const ours = await measure("ours, 1 shard", [process.execPath, new URL("../../examples/memcached/main.ts", import.meta.url).pathname, "-l", "127.0.0.1", "-p", "21412", "-U", "0", "-t", "1", "-c", String(N + 100)], 21412);
console.log(`per connection: ours / stock = ${(ours / stock).toFixed(1)}x`);
