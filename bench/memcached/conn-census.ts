/**
 * What one idle connection costs in the JavaScript heap, by object type: a 1-shard memcached
 * server in this process, N clients in a child process that each send one `get` and stay open;
 * heap statistics (bun:jsc, after full collections) before and after, per connection.
 *
 *   bun bench/memcached/conn-census.ts [N=5000]
 */
import { heapStats } from "bun:jsc";
import { parseCommandLine } from "../../examples/memcached/cli.ts";
import { ShardServer } from "../../examples/memcached/server.ts";

const N = Number(process.argv[2] ?? 5000);
if (process.argv[2] === "--clients") {
  // The child: N clients of the server at PORT, kept open until a line arrives on stdin.
  const net = await import("node:net");
  const [port, n] = [Number(process.argv[3]), Number(process.argv[4])];
  const socks: import("node:net").Socket[] = [];
  for (let i = 0; i < n; i += 200) {
    await Promise.all(
      Array.from({ length: Math.min(200, n - i) }, () => new Promise<void>((resolve, reject) => {
        const s = net.connect(port, "127.0.0.1", () => s.write("get k\r\n"));
        s.once("data", () => resolve());
        s.once("error", reject);
        socks.push(s);
      })),
    );
  }
  console.log("connected");
  await new Promise((resolve) => process.stdin.once("data", resolve));
  for (const s of socks) s.destroy();
  process.exit(0);
}

const port = 21500 + (process.pid % 1000);
const cl = parseCommandLine(["-p", String(port), "-l", "127.0.0.1", "-U", "0", "-t", "1", "-c", String(N + 100)]);
const server = new ShardServer(cl.settings, { shards: 1, shardId: 0 });
server.start();
await Bun.sleep(300);
const snap = () => {
  Bun.gc(true);
  Bun.gc(true);
  return heapStats();
};
const before = snap();
const child = Bun.spawn([process.execPath, import.meta.path, "--clients", String(port), String(N)], { stdout: "pipe", stdin: "pipe", stderr: "inherit" });
await child.stdout.getReader().read();
await Bun.sleep(1000);
const after = snap();
const per = (a: number, b: number) => ((a - b) / N / 1024).toFixed(2);
console.log(`${N} idle connections: heap ${per(after.heapSize, before.heapSize)} KiB, external ${per(after.extraMemorySize, before.extraMemorySize)} KiB, ${((after.objectCount - before.objectCount) / N).toFixed(1)} objects per connection`);
const rows: [string, number][] = [];
for (const [k, v] of Object.entries(after.objectTypeCounts)) {
  const d = (v - (before.objectTypeCounts[k] ?? 0)) / N;
  if (d >= 0.5) rows.push([k, d]);
}
rows.sort((a, b) => b[1] - a[1]);
for (const [k, d] of rows) console.log(`  ${k}: ${d.toFixed(2)}`);
child.stdin.write("x\n");
child.stdin.end();
await child.exited;
await server.stop();
process.exit(0);
