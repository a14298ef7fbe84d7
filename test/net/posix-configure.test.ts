// configureNet before any socket: every option is checked before any is applied, and only a
// boolean turns receive-buffer poisoning on or off. Its own process: the settings are fixed
// once the first socket opens.
import { expect, test } from "bun:test";
import { InvalidArgumentError } from "../../src/core/errors.ts";
import { configureNet } from "../../src/net/api.ts";
import { posixStack } from "../../src/net/posix/stack.ts";

test("configureNet refuses a poisonBuffers that is not a boolean, and a bad option changes nothing", async () => {
  // The string "false" (and 1) were taken as true: poisoning on, silently.
  for (const v of ["false", "true", 0, 1, null]) {
    expect(() => configureNet({ poisonBuffers: v as never })).toThrow(InvalidArgumentError);
  }
  for (const o of [null, "x", 5]) expect(() => configureNet(o as never)).toThrow(InvalidArgumentError);
  // The options before the bad one were applied anyway: a 4 KiB pool, poisoning on.
  expect(() => configureNet({ recvBufferSize: 4096, recvBufferCount: 0 })).toThrow(InvalidArgumentError);
  expect(() => configureNet({ recvBufferMax: 16, recvBufferCount: 17 })).toThrow(InvalidArgumentError);
  expect(() => configureNet({ zeroCopySendMin: 1000, poisonBuffers: "no" as never })).toThrow(InvalidArgumentError);
  expect(() => configureNet({ poisonBuffers: true, zeroCopySendMin: 0 })).toThrow(InvalidArgumentError);
  // The datagram ring's options are checked as the stream ring's are.
  for (const bad of [0, 1, 3, 1000, 65536, 1.5, "8", Infinity]) {
    expect(() => configureNet({ udpRecvBufferMax: bad as number })).toThrow(InvalidArgumentError);
  }
  for (const bad of [0, -1, 1.5, "8", 1025]) {
    expect(() => configureNet({ udpRecvBufferCount: bad as number })).toThrow(InvalidArgumentError);
  }
  expect(() => configureNet({ udpRecvBufferMax: 16, udpRecvBufferCount: 17 })).toThrow(/udpRecvBufferCount must be an integer in 1..udpRecvBufferMax \(16\)/);
  // Neither is applied (the next test sees the default count, 32).
  expect(() => configureNet({ udpRecvBufferCount: 5, udpRecvBufferMax: 3 })).toThrow(InvalidArgumentError);
  expect(() => configureNet({ udpRecvBufferCount: 5, poisonBuffers: "no" as never })).toThrow(InvalidArgumentError);

  const stack = posixStack();
  const l = stack.listen("127.0.0.1:0");
  try {
    expect(stack.rx.bufferSize).toBe(16384);
    expect(stack.rx.entries).toBe(8192);
    expect(stack.stats().recvBuffersTotal).toBe(256);
    expect(stack.rx.poison).toBe(false);
    expect(stack.zeroCopySendMin).toBe(65536);
    configureNet({ poisonBuffers: true });
    expect(stack.rx.poison).toBe(true);
    expect(() => configureNet({ poisonBuffers: "false" as never })).toThrow(InvalidArgumentError);
    expect(stack.rx.poison).toBe(true);
    configureNet({ poisonBuffers: false });
    expect(stack.rx.poison).toBe(false);
    // A shard without UDP channels has no datagram ring.
    expect(stack.udpRx).toBeUndefined();
    expect(stack.stats().udpRecvBuffersTotal).toBe(0);
  } finally {
    await l.close();
  }
});

test("the datagram ring is made when the first UDP channel binds, with the configured count and cap, and is then fixed", async () => {
  const stack = posixStack();
  // Allowed while no UDP channel exists, even with TCP sockets opened before.
  configureNet({ udpRecvBufferMax: 64 });
  const a = stack.bindUdp("127.0.0.1:0");
  try {
    const u = stack.udpRx!;
    expect(u).toBeDefined();
    expect(u.bgid).not.toBe(stack.rx.bgid);
    // The recvmsg header, the name area and the largest payload, in a 64-byte multiple.
    expect(u.bufferSize).toBe(65728);
    expect(u.entries).toBe(64);
    expect(stack.stats().udpRecvBuffersTotal).toBe(32);
    expect(u.poison).toBe(false);
    configureNet({ poisonBuffers: true });
    expect(u.poison).toBe(true);
    configureNet({ poisonBuffers: false });
    expect(() => configureNet({ udpRecvBufferCount: 4 })).toThrow(/fixed once the first UDP channel bound/);
    expect(() => configureNet({ udpRecvBufferMax: 128 })).toThrow(InvalidArgumentError);
    expect(u.entries).toBe(64);
  } finally {
    await a.close();
  }
});
