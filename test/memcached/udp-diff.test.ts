/**
 * UDP requests as large as a datagram, against stock memcached 1.6.18 side by side (both with
 * `-U PORT -p PORT`): a `set` of a 30,000-byte value in one datagram and the `get` answered in
 * 1400-byte datagrams, then requests that fill the largest datagram (65507 bytes over IPv4,
 * 65527 over IPv6). Every answer datagram, frame header included, must be stock's byte for
 * byte (same request ids on both). Ours received datagrams into 16 KiB buffers and dropped any
 * longer one: the set got no answer at all.
 */
import { describe, expect, test } from "bun:test";
import { spawn, type Subprocess } from "bun";
import { existsSync, readFileSync } from "node:fs";
import { freeUdpPort, udpRequest, waitForPort } from "./lib/harness.ts";

type Which = "stock" | "ours";

const hasIpv6 = existsSync("/proc/net/if_inet6") && readFileSync("/proc/net/if_inet6", "utf8").trim() !== "";

async function launch(which: Which, threads: number): Promise<{ proc: Subprocess; port: number }> {
  const port = await freeUdpPort();
  const listen = hasIpv6 ? "127.0.0.1,::1" : "127.0.0.1";
  const args = ["-t", String(threads), "-l", listen, "-p", String(port), "-U", String(port)];
  const cmd = which === "stock" ? ["memcached", "-u", "root", ...args] : [process.execPath, "examples/memcached/main.ts", ...args];
  const proc = spawn(cmd, { stdin: "ignore", stdout: "ignore", stderr: "ignore" });
  try {
    // TCP accepting means UDP is bound too (both servers bind UDP first).
    await waitForPort(port, 30_000);
  } catch (e) {
    proc.kill("SIGKILL");
    throw e;
  }
  return { proc, port };
}

/** One request's answer datagrams in sequence order, as hex (harness.ts udpRequest). */
async function request(family: "udp4" | "udp6", port: number, id: number, payload: Uint8Array): Promise<string[]> {
  return (await udpRequest(port, id, payload, family)).map((p) => p.toString("hex"));
}

/** `size` pseudo-random bytes (any byte value: a data block is counted, not scanned). */
function value(size: number, seed: number): Buffer {
  const v = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    v[i] = x & 0xff;
  }
  return v;
}

/** A `set` request whose datagram (frame header included) is exactly `datagram` bytes. */
function setFilling(key: string, datagram: number, seed: number): Buffer {
  // "set KEY 0 0 N\r\n" + N bytes + "\r\n": N has as many digits as the room left for it.
  for (let n = datagram; n > 0; n--) {
    const head = `set ${key} 0 0 ${n}\r\n`;
    if (8 + head.length + n + 2 === datagram) return Buffer.concat([Buffer.from(head), value(n, seed), Buffer.from("\r\n")]);
  }
  throw new Error("unreachable");
}

/** What each server answered to the same requests, in order: [label, datagrams as hex][]. */
async function answers(which: Which, threads: number): Promise<[string, string[]][]> {
  const { proc, port } = await launch(which, threads);
  const out: [string, string[]][] = [];
  try {
    const v30 = value(30_000, 7);
    out.push(["set 30000", await request("udp4", port, 1, Buffer.concat([Buffer.from("set big30 0 0 30000\r\n"), v30, Buffer.from("\r\n")]))]);
    out.push(["get 30000", await request("udp4", port, 2, Buffer.from("get big30\r\n"))]);
    out.push(["set 65507-byte datagram (IPv4)", await request("udp4", port, 3, setFilling("max4", 65507, 11))]);
    out.push(["get max4", await request("udp4", port, 4, Buffer.from("get max4\r\n"))]);
    if (hasIpv6) {
      out.push(["set 65527-byte datagram (IPv6)", await request("udp6", port, 5, setFilling("max6", 65527, 13))]);
      out.push(["get max6", await request("udp6", port, 6, Buffer.from("get max6\r\n"))]);
    }
  } finally {
    proc.kill("SIGKILL");
    await proc.exited;
  }
  return out;
}

describe("UDP requests as large as a datagram, as stock", () => {
  test.each([1, 2])("a 30,000-byte set and its get in 1400-byte datagrams, then the largest datagrams: stock's answers byte for byte (-t %d)", async (threads) => {
    const stock = await answers("stock", threads);
    const ours = await answers("ours", threads);
    // What stock answers: STORED, and the value in 22 datagrams (1400 bytes each but the last).
    const datagrams = (hex: string[]) => hex.map((h) => Buffer.from(h, "hex"));
    expect(datagrams(stock[0]![1]).map((d) => d.subarray(8).toString())).toEqual(["STORED\r\n"]);
    const get = datagrams(stock[1]![1]);
    expect(get.length).toBe(Math.ceil(("VALUE big30 0 30000\r\n".length + 30_000 + "\r\nEND\r\n".length) / 1392));
    expect(get.slice(0, -1).every((d) => d.length === 1400)).toBe(true);
    expect(get.every((d, i) => d.readUInt16BE(0) === 2 && d.readUInt16BE(2) === i && d.readUInt16BE(4) === get.length)).toBe(true);
    expect(datagrams(stock[2]![1]).map((d) => d.subarray(8).toString())).toEqual(["STORED\r\n"]);
    if (hasIpv6) expect(datagrams(stock[4]![1]).map((d) => d.subarray(8).toString())).toEqual(["STORED\r\n"]);
    // Every request was answered (two silent servers would compare equal).
    for (const [label, d] of stock) expect({ label, answered: d.length > 0 }).toEqual({ label, answered: true });
    // Ours: the same datagrams (compared per request, so a difference names its request).
    for (let i = 0; i < stock.length; i++) {
      expect({ request: ours[i]?.[0], datagrams: ours[i]?.[1] }).toEqual({ request: stock[i]![0], datagrams: stock[i]![1] });
    }
    expect(ours.length).toBe(stock.length);
  }, 120_000);
});
