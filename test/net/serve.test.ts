// serve(): handler errors reset only their connection and reach onError; nothing escapes as an
// unhandled rejection; returning closes gracefully.
import { expect, test } from "bun:test";
import { serve, connect } from "../../src/net/api.ts";
import { InvalidArgumentError } from "../../src/core/errors.ts";
import { expectQuiescent, rejection, until } from "./conformance/harness.ts";
import { posixStack } from "../../src/net/posix/stack.ts";

test("a throwing handler resets its connection and reports to onError; others are served", async () => {
  let unhandled = 0;
  const onUnhandled = () => unhandled++;
  process.on("unhandledRejection", onUnhandled);
  const errors: unknown[] = [];
  const l = serve(
    "127.0.0.1:0",
    async (c) => {
      const v = (await c.input.read())!;
      if (v[0] === 33) throw new Error("boom"); // "!"
      await c.output.write(v);
    },
    { onError: (e) => errors.push(e) },
  );
  const bad = await connect(l.localAddress);
  await bad.output.write("!oops");
  expect(await rejection(bad.input.read())).toMatchObject({ code: "ECONNRESET" });
  const good = await connect(l.localAddress);
  await good.output.write("fine");
  expect(new TextDecoder().decode((await good.input.readExactly(4))!)).toBe("fine");
  expect(await good.input.read()).toBeNull(); // the handler returned: graceful close
  await until(() => errors.length === 1, 2000, "onError");
  expect((errors[0] as Error).message).toBe("boom");
  await bad.close();
  await good.close();
  await l.close();
  await expectQuiescent(posixStack());
  process.off("unhandledRejection", onUnhandled);
  expect(unhandled).toBe(0);
  expect(() => serve("127.0.0.1:0", 5 as never)).toThrow(InvalidArgumentError);
});
