/**
 * writev() reads each piece once, before anything is queued (close-review.test.ts); it must
 * still stop at the first piece that is not data. It copied the whole array first, then checked
 * it: writev(new Array(2 ** 32 - 1)), rejected at once before, copied four billion holes (minutes,
 * tens of GiB) before failing on piece 0. Shown with a Proxy whose pieces past the first bad one
 * must not be read (reading one throws).
 */
import { expect, test } from "bun:test";
import { InvalidArgumentError } from "../../src/core/errors.ts";
import { posixStack } from "../../src/net/posix/stack.ts";
import { expectQuiescent, readBytes, rejection } from "./conformance/harness.ts";

const stack = posixStack();

test("writev stops at the first bad piece: the pieces after it are not read, and nothing is queued", async () => {
  const l = stack.listen("127.0.0.1:0");
  const accepted = l.accept();
  const c = await stack.connect(l.localAddress);
  const srv = await accepted;
  let readPast = 0;
  // As long as an array can be; only piece 0 exists (and is not data).
  const huge = new Proxy(new Array(2 ** 32 - 1), {
    get(target, key, receiver) {
      if (typeof key === "string" && /^\d+$/.test(key) && Number(key) > 0) {
        readPast++;
        throw new Error(`piece ${key} was read after the bad piece 0`);
      }
      return Reflect.get(target, key, receiver);
    },
  });
  const e = await rejection(srv.output.writev(huge as never));
  expect(e).toBeInstanceOf(InvalidArgumentError);
  expect((e as Error).message).toBe("writev: piece 0: data must be a Uint8Array, a string or a NativeBuffer");
  expect(readPast).toBe(0);
  // A bad piece after good ones: the good ones are not queued either (all or nothing).
  const e2 = await rejection(srv.output.writev(["good", new Uint8Array(3), 42 as never, "never read"]));
  expect((e2 as Error).message).toBe("writev: piece 2: data must be a Uint8Array, a string or a NativeBuffer");
  expect(srv.output.buffered).toBe(0);
  // The output still works.
  await srv.output.writev(["o", "k"]);
  expect(new TextDecoder().decode(await readBytes(c, 2))).toBe("ok");
  await srv.close();
  await c.close();
  await l.close();
  await expectQuiescent(stack);
}, 60_000);
