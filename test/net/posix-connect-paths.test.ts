/**
 * connect()'s failure paths on a real network: fixtures/connect-paths.ts runs inside a private
 * network namespace of its own (unshare -n, as root; gone when the process ends), set up here
 * (with a mount namespace too where it needs its own /etc/hosts).
 */
import { expect, test } from "bun:test";
import { rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";

/**
 * Runs the fixture in mode `mode` inside `unshare -n sh -c "<setup> && exec bun ..."`; returns
 * its RESULT. With `hosts`, in a private mount namespace too, with that as its /etc/hosts.
 */
async function inNamespace(setup: string, mode: string, hosts?: string): Promise<any> {
  const fixture = new URL("./fixtures/connect-paths.ts", import.meta.url).pathname;
  let unshare = ["unshare", "-n"];
  const file = `${tmpdir()}/shoal-hosts-${process.pid}`;
  if (hosts !== undefined) {
    writeFileSync(file, hosts);
    unshare = ["unshare", "-n", "-m"];
    setup = `mount --bind ${file} /etc/hosts && ${setup}`;
  }
  const run = Bun.spawn([...unshare, "sh", "-c", `${setup} && exec "${process.execPath}" "${fixture}" ${mode}`], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(run.stdout).text(), new Response(run.stderr).text(), run.exited]);
  if (hosts !== undefined) rmSync(file, { force: true });
  if (code !== 0) console.log(out, err);
  expect(code).toBe(0);
  const line = out.split("\n").find((l) => l.startsWith("RESULT "));
  return JSON.parse(line!.slice(7));
}

// 10.200.0.2 is reached over a veth whose peer has no address: SYNs leave and nothing answers.
// 10.201.0.0/24 is an unreachable route (EHOSTUNREACH at once).
const blackhole = [
  "ip link set lo up",
  "ip link add v0 type veth peer name v1",
  "ip link set v0 up",
  "ip link set v1 up",
  "ip addr add 10.200.0.1/24 dev v0",
  "ip neigh add 10.200.0.2 lladdr 02:00:00:00:00:02 dev v0 nud permanent",
  "ip route add unreachable 10.201.0.0/24",
].join(" && ");
/** One run serves both tests below. */
let blackholeRun: Promise<any> | undefined;
const blackholeResult = () => (blackholeRun ??= inNamespace(blackhole, "blackhole"));

test("connect to an address that never answers: timeoutMs is ETIMEDOUT, the signal AbortError (before, during, with both, at once); after the kernel connected neither matters; nothing is left armed", async () => {
  const r = await blackholeResult();
  expect(r.before).toBe("AbortError cause=early");
  expect(r.beforeWithTimeout).toBe("AbortError cause=early2");
  expect(r.timeout).toBe("ETIMEDOUT op=connect connect failed: ETIMEDOUT (10.200.0.2:80 did not answer within 50 ms)");
  expect(r.during).toBe("AbortError cause=during");
  expect(r.signalFirst).toBe("AbortError cause=signal first");
  expect(r.timeoutFirst).toBe("ETIMEDOUT op=connect connect failed: ETIMEDOUT (10.200.0.2:80 did not answer within 30 ms)");
  expect(r.atOnce).toBe("typed");
  // The timeout's timer is cancelled when connect settles, either way.
  expect(r.timersAfterTimeoutFirst).toBe(0);
  expect(r.timersWhileConnected).toBe(0);
  expect(r.after).toBe("connected");
  expect(r.refused).toStartWith("ECONNREFUSED op=connect");
  expect(r.unreachable).toBe("EHOSTUNREACH op=connect connect failed: EHOSTUNREACH (10.201.0.2:80)");
}, 60_000);

test("3000 concurrent connects, refused, timed out, aborted, unreachable and accepted mixed: no descriptor, timer, ring operation, message block or socket is left", async () => {
  const r = await blackholeResult();
  const t = r.tally as Record<string, number>;
  // Every outcome is one of the typed ones (3000 in all).
  expect(Object.keys(t).sort()).toEqual(["AbortError", "ECONNREFUSED", "EHOSTUNREACH", "ETIMEDOUT", "ok"]);
  expect(Object.values(t).reduce((x, y) => x + y, 0)).toBe(3000);
  expect(t.ECONNREFUSED).toBe(429);
  expect(t.EHOSTUNREACH).toBe(428);
  expect(t.ETIMEDOUT).toBe(429);
  expect(r.leaked).toEqual({ fds: 0, timers: 0, inFlight: 0, blocks: 0, open: 0 });
  expect(r.sockets).toEqual([]);
}, 60_000);

test('"localhost" with IPv6 off (no ::1): connects over 127.0.0.1; a closed port is ECONNREFUSED from 127.0.0.1, not the EADDRNOTAVAIL of ::1 tried after it', async () => {
  const r = await inNamespace("ip link set lo up && sysctl -q -w net.ipv6.conf.lo.disable_ipv6=1", "no-ipv6");
  expect(r.localhost).toBe("ok");
  expect(r.closed).toMatch(/^ECONNREFUSED op=connect connect failed: ECONNREFUSED \(127\.0\.0\.1:\d+\)$/);
  expect(r.v6).toStartWith("EADDRNOTAVAIL op=connect");
}, 30_000);

test('"localhost" where policy refuses 127.0.0.1 (connect EACCES, as a local firewall answers): ::1 is tried next (EACCES ended connect)', async () => {
  const rules = "ip link set lo up && ip rule del pref 0 lookup local && ip rule add pref 100 lookup local && ip rule add pref 10 prohibit to 127.0.0.1";
  const r = await inNamespace(rules, "prohibit");
  expect(r.localhost).toBe("ok");
  expect(r.v4).toMatch(/^EACCES op=connect connect failed: EACCES \(127\.0\.0\.1:\d+\)$/);
  expect(r.closed).toMatch(/^ECONNREFUSED op=connect connect failed: ECONNREFUSED \(\[::1\]:\d+\)$/);
}, 30_000);

test("a name whose first address swallows SYNs: the next is tried beside it after 250 ms and connects (the first took the whole timeoutMs); timeouts name every address still waiting; nothing is left behind", async () => {
  const setup = [
    "ip link set lo up",
    "ip link add v0 type veth peer name v1",
    "ip link set v0 up",
    "ip link set v1 up",
    "ip addr add 10.200.0.1/24 dev v0",
    "ip -6 addr add 2001:db8::1/64 dev v0 nodad",
    "ip -6 neigh add 2001:db8::2 lladdr 02:00:00:00:00:02 dev v0 nud permanent",
    "ip -6 neigh add 2001:db8::3 lladdr 02:00:00:00:00:03 dev v0 nud permanent",
    "ip neigh add 10.200.0.2 lladdr 02:00:00:00:00:02 dev v0 nud permanent",
  ].join(" && ");
  // The resolver puts the IPv6 address first (RFC 6724's precedence), whatever the file's order.
  const hosts =
    "127.0.0.1 localhost\n2001:db8::2 dual.test\n10.200.0.1 dual.test\n2001:db8::2 gone.test\n10.200.0.2 gone.test\n2001:db8::1 mixed.test\n10.200.0.2 mixed.test\n" +
    "2001:db8::2 triple.test\n2001:db8::3 triple.test\n10.200.0.1 triple.test\n";
  const r = await inNamespace(setup, "eyeballs", hosts);
  expect(r.dual).toBe("ok 10.200.0.1");
  expect(r.short).toMatch(/^ETIMEDOUT op=connect connect failed: ETIMEDOUT \(\[2001:db8::2\]:\d+ did not answer within 100 ms\)$/);
  expect(r.gone).toMatch(/^ETIMEDOUT op=connect connect failed: ETIMEDOUT \(\[2001:db8::2\]:\d+, 10\.200\.0\.2:\d+ did not answer within 600 ms\)$/);
  // A refused address did answer: only the one still waiting is named.
  expect(r.mixed).toMatch(/^ETIMEDOUT op=connect connect failed: ETIMEDOUT \(10\.200\.0\.2:\d+ did not answer within 600 ms\)$/);
  // Families alternate (RFC 8305 section 4): the IPv4 address started after 250 ms, not 500.
  expect(r.triple).toBe("ok 10.200.0.1");
  expect(r.aborted).toBe("AbortError cause=stop");
  expect(r.leaked).toEqual({ fds: 0, timers: 0, inFlight: 0, blocks: 0, open: 0 });
}, 60_000);
