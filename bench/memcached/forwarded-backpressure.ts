/**
 * Back-pressure for answers forwarded from another shard: clients pipeline `get k` for keys one
 * shard owns (1 MB values) and never read; prints the server's peak RSS and how long a probe
 * connection waits for `version` meanwhile (bench/memcached/RESULTS-memcached.md).
 *
 *   bun examples/memcached/main.ts -p 22130 -t 2 -m 256 &
 *   bun bench/memcached/forwarded-backpressure.ts 22130 <server pid> [clients=4] [gets=3000]
 */
import net from "node:net";
import { readFileSync } from "node:fs";
import { murmur3, shardOf } from "../../examples/memcached/hash.ts";

const port = Number(process.argv[2]);
const pid = Number(process.argv[3]);
const clients = Number(process.argv[4] ?? 4);
const gets = Number(process.argv[5] ?? 3000);
if (!(port > 0) || !(pid > 0)) throw new Error("usage: forwarded-backpressure.ts PORT SERVER_PID [clients] [gets]");
const rss = (): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;
const enc = new TextEncoder();
// Four keys of each shard (2 shards): a client on the other shard forwards every get.
const keys: string[][] = [[], []];
for (let i = 0; keys[0]!.length < 4 || keys[1]!.length < 4; i++) {
  const k = `bp${i}`;
  const o = shardOf(murmur3(enc.encode(k), 0, k.length), 2);
  if (keys[o]!.length < 4) keys[o]!.push(k);
}
const V = 1_000_000;
const connect = (): Promise<net.Socket> => new Promise((resolve) => { const s = net.connect(port, "127.0.0.1", () => resolve(s)); });
const setter = await connect();
let stored = 0;
setter.on("data", (d) => (stored += d.toString().split("STORED").length - 1));
for (const k of keys.flat()) setter.write(`set ${k} 0 0 ${V}\r\n${"v".repeat(V)}\r\n`);
while (stored < 8) await Bun.sleep(10);
const base = rss();
const socks: net.Socket[] = [];
for (let c = 0; c < clients; c++) {
  const s = await connect();
  s.pause();
  s.on("error", () => {});
  const ks = keys[c % 2]!;
  s.write(Array.from({ length: gets }, (_, i) => `get ${ks[i % 4]}\r\n`).join(""));
  socks.push(s);
}
let peak = 0;
for (let i = 0; i < 40; i++) {
  await Bun.sleep(100);
  peak = Math.max(peak, rss());
}
const t0 = performance.now();
const probe = await connect();
let got = "";
probe.on("data", (d) => (got += d.toString()));
probe.write("version\r\n");
while (!got.includes("\r\n")) await Bun.sleep(1);
console.log(`base RSS ${base.toFixed(0)} MiB, peak ${peak.toFixed(0)} MiB, probe answered in ${(performance.now() - t0).toFixed(1)} ms`);
for (const s of socks) s.destroy();
probe.destroy();
setter.destroy();
