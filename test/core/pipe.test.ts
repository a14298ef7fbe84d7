import { describe, expect, test } from "bun:test";
import { AbortError, ClosedError, InvalidArgumentError, ShoalError } from "../../src/core/errors.ts";
import { BrokenPipeError, Pipe } from "../../src/core/pipe.ts";
import { sleep } from "../../src/core/timer.ts";
import { errorOf, quiet, status } from "./fixtures/util.ts";


describe("Pipe", () => {
  test("validates its arguments", () => {
    for (const bad of [0, -3, 2.5, "1"]) expect(() => new Pipe<number>(bad as number)).toThrow(InvalidArgumentError);
    expect(() => new Pipe<number>(0)).toThrow(/size/);
    const { reader, writer } = new Pipe<number>(1);
    expect(() => writer.write(undefined as never)).toThrow(InvalidArgumentError);
    expect(() => reader.read({ signal: 1 as never })).toThrow(InvalidArgumentError);
  });

  test("a read waits for the write; a ready item is read at once (Seastar simple_pipe_test)", async () => {
    const p = new Pipe<number>(1);
    const f0 = p.reader.read();
    expect(status(f0)).toBe("pending");
    await p.writer.write(17);
    expect(await f0).toBe(17);
    await p.writer.write(42);
    const f2 = p.reader.read();
    expect(status(f2)).toBe("fulfilled");
    expect(await f2).toBe(42);
  });

  test("closing the writer is EOF after the queued items are drained", async () => {
    const { reader, writer } = new Pipe<number>(4);
    await writer.write(1);
    await writer.write(2);
    writer.close();
    expect(writer.isOpen).toBe(false);
    expect(await reader.read()).toBe(1);
    expect(await reader.read()).toBe(2);
    expect(await reader.read()).toBeUndefined();
    expect(await reader.read()).toBeUndefined();
  });

  test("closing the writer wakes every blocked read with EOF", async () => {
    const { reader, writer } = new Pipe<number>(2);
    const reads = [reader.read(), reader.read(), reader.read()];
    writer.close();
    expect(await Promise.all(reads)).toEqual([undefined, undefined, undefined]);
  });

  test("writes still waiting for room when the writer closes are delivered before EOF", async () => {
    const { reader, writer } = new Pipe<string>(1);
    const writes = ["a", "b", "c"].map((s) => writer.write(s));
    expect(status(writes[1]!)).toBe("pending");
    writer.close();
    const got: string[] = [];
    for (let item = await reader.read(); item !== undefined; item = await reader.read()) got.push(item);
    expect(got).toEqual(["a", "b", "c"]);
    await Promise.all(writes);
  });

  test("closing the reader breaks the pipe for pending and later writes", async () => {
    const { reader, writer } = new Pipe<number>(1);
    await writer.write(1);
    const blocked = quiet(writer.write(2));
    reader.close();
    expect(reader.isOpen).toBe(false);
    const err = await errorOf(blocked);
    expect(err).toBeInstanceOf(BrokenPipeError);
    expect((err as BrokenPipeError).code).toBe("ERR_BROKEN_PIPE");
    expect(await errorOf(writer.write(3))).toBeInstanceOf(BrokenPipeError);
    // A closed reader reads EOF.
    expect(await reader.read()).toBeUndefined();
  });

  test("closing the reader turns its own blocked reads into EOF", async () => {
    const { reader } = new Pipe<number>(1);
    const pending = reader.read();
    reader.close();
    expect(await pending).toBeUndefined();
  });

  test("reader.abort(err) fails the writer with err", async () => {
    const { reader, writer } = new Pipe<number>(1);
    const oops = new Error("oops");
    reader.abort(oops);
    expect(await errorOf(writer.write(1))).toBe(oops);
  });

  test("writer.abort(err) fails pending and later reads with err", async () => {
    const { reader, writer } = new Pipe<number>(1);
    const pending = quiet(reader.read());
    const oops = new Error("oops");
    writer.abort(oops);
    expect(await errorOf(pending)).toBe(oops);
    expect(await errorOf(reader.read())).toBe(oops);
    const dflt = new Pipe<number>(1);
    dflt.writer.abort();
    expect(((await errorOf(dflt.reader.read())) as ShoalError).code).toBe("ERR_PIPE_ABORTED");
  });

  test("writing after the writer closed fails with ClosedError", async () => {
    const { writer } = new Pipe<number>(1);
    writer.close();
    writer.close(); // idempotent
    const err = await errorOf(writer.write(1));
    expect(err).toBeInstanceOf(ClosedError);
    expect((err as ClosedError).code).toBe("ERR_PIPE_CLOSED");
  });

  test("unread() pushes one item back", async () => {
    const { reader, writer } = new Pipe<number>(2);
    await writer.write(1);
    await writer.write(2);
    const first = (await reader.read())!;
    reader.unread(first);
    expect(() => reader.unread(9)).toThrow(ShoalError);
    expect(await reader.read()).toBe(1);
    expect(await reader.read()).toBe(2);
  });

  test("an aborted read leaves nothing behind: the next item goes to the next read", async () => {
    const { reader, writer } = new Pipe<number>(2);
    const ac = new AbortController();
    const gone = quiet(reader.read({ signal: ac.signal }));
    ac.abort("why");
    const err = await errorOf(gone);
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).cause).toBe("why");
    await writer.write(5);
    expect(await reader.read()).toBe(5);
    expect(await errorOf(reader.read({ signal: AbortSignal.abort() }))).toBeInstanceOf(AbortError);
  });

  test("an aborted write is not delivered", async () => {
    const { reader, writer } = new Pipe<number>(1);
    await writer.write(1);
    const ac = new AbortController();
    const gone = quiet(writer.write(2, { signal: ac.signal }));
    ac.abort();
    expect(await errorOf(gone)).toBeInstanceOf(AbortError);
    writer.close();
    expect(await reader.read()).toBe(1);
    expect(await reader.read()).toBeUndefined();
  });

  test("for await reads until EOF, and null is a valid item", async () => {
    const { reader, writer } = new Pipe<number | null>(2);
    const producer = (async () => {
      for (const v of [1, null, 3]) {
        await writer.write(v);
        await sleep(0);
      }
      writer.close();
    })();
    const got: (number | null)[] = [];
    for await (const item of reader) got.push(item);
    expect(got).toEqual([1, null, 3]);
    await producer;
  });

  test("breaking out of for await closes the reader", async () => {
    const { reader, writer } = new Pipe<number>(4);
    await writer.write(1);
    await writer.write(2);
    for await (const item of reader) {
      expect(item).toBe(1);
      break;
    }
    expect(reader.isOpen).toBe(false);
    expect(await errorOf(writer.write(3))).toBeInstanceOf(BrokenPipeError);
  });

  test("using closes both ends", async () => {
    const p = new Pipe<number>(1);
    {
      using writer = p.writer;
      await writer.write(1);
    }
    expect(await p.reader.read()).toBe(1);
    expect(await p.reader.read()).toBeUndefined();
    {
      using reader = p.reader;
      void reader;
    }
    expect(p.reader.isOpen).toBe(false);
  });
});

describe("Pipe: read with a signal aborted before the call", () => {
  test("rejects with AbortError even with an item ready or after the writer closed", async () => {
    const { reader, writer } = new Pipe<number>(4);
    await writer.write(1);
    const ac = new AbortController();
    ac.abort();
    expect(await errorOf(reader.read({ signal: ac.signal }))).toBeInstanceOf(AbortError);
    expect(await reader.read()).toBe(1); // the item was not consumed
    writer.close();
    expect(await errorOf(reader.read({ signal: ac.signal }))).toBeInstanceOf(AbortError);
    expect(await reader.read()).toBeUndefined();
  });
});
