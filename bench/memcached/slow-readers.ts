/**
 * What a client that never reads costs: N clients each pipeline 20,000 gets of a 100 KB value
 * and read nothing; the server's peak RSS growth over 5 s, per client. Stock memcached (-t T)
 * and ours (T shards).
 *
 *   bun bench/memcached/slow-readers.ts [N=50] [T=1]
 */
import net from "node:net";
import { readFileSync } from "node:fs";
import { spawn } from "bun";

const N = Number(process.argv[2] ?? 50);
const T = String(process.argv[3] ?? 1);
const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;

async function connected(port: number): Promise<net.Socket> {
  for (let i = 0; ; i++) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect(port, "127.0.0.1", () => resolve(s));
        s.once("error", reject);
      });
    } catch (e) {
      if (i > 200) throw e;
      await Bun.sleep(50);
    }
  }
}

async function measure(name: string, cmd: string[], port: number): Promise<number> {
  const proc = spawn(cmd, { stdout: "ignore", stderr: "ignore" });
  const socks: net.Socket[] = [];
  try {
    const setter = await connected(port);
    socks.push(setter);
    setter.write(`set big 0 0 100000\r\n${"v".repeat(100_000)}\r\n`);
    await new Promise((r) => setter.once("data", r));
    await Bun.sleep(500);
    const base = rssMiB(proc.pid);
    for (let i = 0; i < N; i++) {
      const s = net.connect(port, "127.0.0.1");
      s.pause();
      s.on("error", () => {});
      s.write("get big\r\n".repeat(20_000));
      socks.push(s);
    }
    let peak = 0;
    for (let t = 0; t < 20; t++) {
      await Bun.sleep(250);
      peak = Math.max(peak, rssMiB(proc.pid) - base);
    }
    const each = peak / N;
    console.log(`${name}: ${N} clients never reading: RSS +${peak.toFixed(1)} MiB peak, ${each.toFixed(2)} MiB each`);
    return each;
  } finally {
    for (const s of socks) s.destroy();
    proc.kill();
    await proc.exited;
  }
}

const stock = await measure(`stock -t ${T}`, ["memcached", "-u", "root", "-l", "127.0.0.1", "-p", "21421", "-U", "0", "-t", T], 21421);
const ours = await measure(`ours, ${T} shard(s)`, [process.execPath, new URL("../../examples/memcached/main.ts", import.meta.url).pathname, "-l", "127.0.0.1", "-p", "21422", "-U", "0", "-t", T], 21422);
console.log(`per client: ours ${ours.toFixed(2)} MiB, stock ${stock.toFixed(2)} MiB`);
