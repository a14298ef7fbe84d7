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
  } finally {
    await l.close();
  }
});
