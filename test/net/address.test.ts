import { describe, expect, test } from "bun:test";
import { InvalidArgumentError } from "../../src/core/errors.ts";
import {
  SOCKADDR_MAX,
  decodeSockaddr,
  encodeSockaddr,
  formatAddress,
  formatIpv6,
  needsLookup,
  parseAddress,
  parseIpv4,
  parseIpv6,
} from "../../src/net/address.ts";
import { resolveAddresses } from "../../src/net/resolve.ts";
import { resolve } from "node:path";

describe("address parsing", () => {
  test("IPv4 literals", () => {
    expect(parseIpv4("127.0.0.1")).toBe(0x7f000001);
    expect(parseIpv4("255.255.255.255")).toBe(0xffffffff);
    for (const bad of ["256.0.0.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "a.b.c.d", ""]) expect(parseIpv4(bad)).toBe(-1);
  });

  test("IPv6 literals round-trip to RFC 5952 form", () => {
    const cases: [string, string][] = [
      ["::1", "::1"],
      ["::", "::"],
      ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
      ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
      ["fe80::1:2", "fe80::1:2"],
      ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
      ["1:0:3:4:5:6:7:8", "1:0:3:4:5:6:7:8"],
      ["::ffff:1.2.3.4", "::ffff:1.2.3.4"],
      ["64:ff9b::192.0.2.33", "64:ff9b::c000:221"],
      ["1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"],
    ];
    for (const [input, out] of cases) {
      const g = parseIpv6(input);
      expect(g).toBeDefined();
      expect(formatIpv6(g!)).toBe(out);
    }
    for (const bad of ["1:2:3:4:5:6:7:8:9", ":::", "1::2::3", "12345::", "g::1", "1:2:3:4:5:6:7", ":1", "1.2.3.4"]) {
      expect(parseIpv6(bad)).toBeUndefined();
    }
  });

  test("the forms listen and connect accept", () => {
    expect(parseAddress("127.0.0.1:80")).toEqual({ family: "ipv4", host: "127.0.0.1", port: 80 });
    expect(parseAddress("[::1]:8080")).toEqual({ family: "ipv6", host: "::1", port: 8080, flowInfo: 0, scopeId: 0 });
    expect(parseAddress("[fe80::1%3]:1")).toMatchObject({ family: "ipv6", host: "fe80::1", scopeId: 3 });
    expect(parseAddress(":9")).toEqual({ family: "ipv4", host: "0.0.0.0", port: 9 });
    expect(parseAddress("[]:9")).toMatchObject({ family: "ipv6", host: "::", port: 9 });
    expect(parseAddress(9)).toEqual({ family: "ipv4", host: "0.0.0.0", port: 9 });
    expect(parseAddress("localhost:5")).toEqual({ family: "ipv4", host: "127.0.0.1", port: 5 });
    expect(parseAddress({ host: "localhost", port: 5, family: "ipv6" })).toMatchObject({ family: "ipv6", host: "::1" });
    expect(parseAddress({ port: 7 })).toEqual({ family: "ipv4", host: "0.0.0.0", port: 7 });
    expect(parseAddress("unix:/tmp/a.sock")).toEqual({ family: "unix", path: "/tmp/a.sock" });
    expect(parseAddress("/tmp/b.sock")).toEqual({ family: "unix", path: "/tmp/b.sock" });
    expect(parseAddress("@abstract")).toEqual({ family: "unix", path: "\0abstract" });
    expect(parseAddress({ path: "/x" })).toEqual({ family: "unix", path: "/x" });
  });

  test("malformed addresses are InvalidArgumentError naming the operation", () => {
    for (const bad of ["127.0.0.1", "1.2.3.4:70000", "example.com:80", "[::1]", "unix:", { port: -1 }, { host: "1.2.3.4", port: 1.5 }, null, "a".repeat(5)]) {
      let err: unknown;
      try {
        parseAddress(bad as never, "listen");
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect((err as Error).message).toContain("listen");
    }
    expect(() => parseAddress(`unix:/${"p".repeat(200)}`)).toThrow(InvalidArgumentError);
  });

  test("host names are left for connect to resolve", () => {
    expect(needsLookup("example.com:80")).toEqual({ host: "example.com", port: 80 });
    expect(needsLookup({ host: "db.internal", port: 5432 })).toEqual({ host: "db.internal", port: 5432 });
    expect(needsLookup("127.0.0.1:80")).toBeUndefined();
    expect(needsLookup("localhost:80")).toBeUndefined();
    expect(needsLookup("[::1]:80")).toBeUndefined();
  });

  test("formatting", () => {
    expect(formatAddress(parseAddress("[2001:db8::1]:443"))).toBe("[2001:db8::1]:443");
    expect(formatAddress(parseAddress("@x"))).toBe("unix:@x");
    expect(formatAddress(parseAddress("10.0.0.1:1"))).toBe("10.0.0.1:1");
  });
});

describe("round trips and ranges (a review)", () => {
  test("formatAddress of an abstract Unix address parses back to it (it named a file \"@name\")", () => {
    for (const input of ["@abc", "unix:@abc", { path: "\0abc" }]) {
      const a = parseAddress(input as never);
      expect(a).toEqual({ family: "unix", path: "\0abc" });
      expect(parseAddress(formatAddress(a))).toEqual(a);
    }
    expect(parseAddress("unix:./@file")).toEqual({ family: "unix", path: "./@file" });
  });

  test("IPv6 zones, scopeId and flowInfo past 32 bits are refused (they wrapped: 2^32 + 4 named interface 4)", () => {
    for (const bad of ["[fe80::1%4294967300]:1", "[fe80::1%99999999999999999999]:1"]) {
      expect(() => parseAddress(bad)).toThrow(InvalidArgumentError);
    }
    for (const o of [{ scopeId: 2 ** 32 + 4 }, { scopeId: -1 }, { scopeId: 1.5 }, { flowInfo: 2 ** 32 }, { flowInfo: -4 }]) {
      expect(() => parseAddress({ host: "fe80::1", port: 1, ...o })).toThrow(InvalidArgumentError);
    }
    expect(parseAddress({ host: "fe80::1", port: 1, scopeId: 0xffff_ffff })).toMatchObject({ scopeId: 0xffff_ffff });
  });
});

describe("Unix paths and destinations (a review)", () => {
  test('"unix:8080" is the file "8080" for connect too, not the host "unix" (it went to getaddrinfo: ENOENT)', async () => {
    expect(needsLookup("unix:8080")).toBeUndefined();
    expect(needsLookup("unix:db")).toBeUndefined();
    expect(await resolveAddresses("unix:8080", "connect")).toEqual([{ family: "unix", path: "8080" }]);
    expect(needsLookup("db:8080")).toEqual({ host: "db", port: 8080 });
  });

  test('a file path starting with "@" formats as "unix:./@x" (it read back as the abstract name); odd paths read back as the same socket', () => {
    expect(formatAddress(parseAddress({ path: "@x" }))).toBe("unix:./@x");
    const files = ["@x", "@", "./@x", "8080", "unix:x", "unix:@x", "/tmp/@x", "rel/a.sock", " sp", "a:80", "[::1]:80", "@abstract:1"];
    for (const path of files) {
      const text = formatAddress(parseAddress({ path }));
      const back = parseAddress(text);
      expect(back.family).toBe("unix");
      const p = (back as { path: string }).path;
      expect(p.startsWith("\0")).toBe(false);
      expect(resolve("/cwd", p)).toBe(resolve("/cwd", path));
      expect(formatAddress(back)).toBe(text);
    }
    for (const path of ["\0x", "\0", "\0@x", "\0./x", "\0unix:x", "\u00008080"]) {
      const a = parseAddress({ path });
      expect(parseAddress(formatAddress(a))).toEqual(a);
    }
  });

  test("port 0 is refused as a destination (the kernel answered ECONNREFUSED or EINVAL), and still means any port for a bind", () => {
    for (const to of ["127.0.0.1:0", "[::1]:0", ":0", 0, { host: "::1", port: 0 }, { port: 0 }, { family: "ipv4" as const, host: "10.0.0.1", port: 0 }]) {
      let err: unknown;
      try {
        parseAddress(to, "send", { destination: true });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect((err as InvalidArgumentError).code).toBe("ERR_INVALID_ARG");
      expect((err as Error).message).toContain("send");
      expect(parseAddress(to, "bindUdp")).toMatchObject({ port: 0 });
    }
    expect(parseAddress("127.0.0.1:1", "send", { destination: true })).toEqual({ family: "ipv4", host: "127.0.0.1", port: 1 });
    expect(parseAddress("unix:0", "send", { destination: true })).toEqual({ family: "unix", path: "0" });
    expect(parseAddress("@0", "send", { destination: true })).toEqual({ family: "unix", path: "\x000" });
    // A name with port 0 is refused before any lookup.
    expect(() => needsLookup("example.com:0")).toThrow(InvalidArgumentError);
    expect(() => needsLookup({ host: "db.internal", port: 0 })).toThrow(InvalidArgumentError);
  });
});

describe("sockaddr encoding", () => {
  const buf = new Uint8Array(SOCKADDR_MAX + 8);
  test("IPv4, IPv6 and Unix addresses survive encode then decode", () => {
    for (const input of ["10.1.2.3:4567", "[2001:db8::5]:1", "[fe80::1%2]:80", "unix:/tmp/s.sock", "@abstract-name"]) {
      const a = parseAddress(input);
      const len = encodeSockaddr(a, buf, 8);
      expect(decodeSockaddr(buf, 8, len)).toEqual(a);
    }
    expect(encodeSockaddr(parseAddress("1.2.3.4:80"), buf)).toBe(16);
    expect(Array.from(buf.subarray(0, 8))).toEqual([2, 0, 0, 80, 1, 2, 3, 4]);
    expect(encodeSockaddr(parseAddress("[::1]:80"), buf)).toBe(28);
    expect(encodeSockaddr(parseAddress("unix:/a"), buf)).toBe(2 + 2 + 1);
    expect(encodeSockaddr(parseAddress("@a"), buf)).toBe(2 + 2);
    expect(decodeSockaddr(buf, 0, 2)).toEqual({ family: "unix", path: "" });
  });
});
