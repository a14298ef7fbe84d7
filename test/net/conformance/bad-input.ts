/**
 * Conformance: bad input. A small line protocol served with serve(): peers that send garbage,
 * flood without reading, or vanish mid-request affect only their own connection; errors are
 * typed; no unhandled rejection escapes the server; an honest client is served throughout.
 */
import { describe, expect, test } from "bun:test";
import { ShoalError } from "../../../src/core/errors.ts";
import { serve } from "../../../src/net/api.ts";
import { expectQuiescent, fillRandom, until, type StackUnderTest } from "./harness.ts";
import { needBytes, type Connection } from "../../../src/net/types.ts";

const NL = 10;
const MAX_LINE = 1024;
const encoder = new TextEncoder();

/**
 * "ECHO <text>\n" answers "<text>\n"; anything else answers "ERR\n" and closes. A line longer
 * than MAX_LINE is an error too. Parsed in place with consume().
 */
async function lineServer(c: Connection): Promise<void> {
  for (;;) {
    let line = undefined as Uint8Array | undefined;
    let tooLong = false;
    const more = await c.input.consume((v) => {
      const nl = v.indexOf(NL);
      if (nl < 0) {
        if (v.length >= MAX_LINE) {
          tooLong = true;
          return 0;
        }
        return needBytes(v.length + 1); // the line goes on: show me more
      }
      line = v.slice(0, nl);
      return nl + 1;
    });
    if (!more) return;
    if (tooLong || line === undefined || line.length < 5 || new TextDecoder().decode(line.subarray(0, 5)) !== "ECHO ") {
      await c.output.write("ERR\n");
      return;
    }
    await c.output.writev([line.subarray(5), "\n"]);
  }
}

export function badInputConformance(s: StackUnderTest): void {
  const stack = s.stack;

  describe(`${s.name} bad input`, () => {
    test(
      "garbage, floods and vanishing peers affect only their own connections; no unhandled rejection",
      async () => {
        let unhandled = 0;
        const onUnhandled = () => unhandled++;
        process.on("unhandledRejection", onUnhandled);
        const handlerErrors: unknown[] = [];
        const l = serve("127.0.0.1:0", lineServer, {
          stack,
          writeHighWater: 64 * 1024,
          maxReadBuffered: 64 * 1024,
          onError: (e) => handlerErrors.push(e),
        });

        // An honest client keeps being served while the others misbehave.
        const honest = await stack.connect(l.localAddress);
        let honestRounds = 0;
        let stop = false;
        const honestLoop = (async () => {
          while (!stop) {
            const msg = `hello ${honestRounds}`;
            await honest.output.write(`ECHO ${msg}\n`);
            const back = await honest.input.readExactly(msg.length + 1);
            expect(new TextDecoder().decode(back!)).toBe(`${msg}\n`);
            honestRounds++;
          }
        })();

        // Garbage: random bytes get ERR and the connection closed.
        const garbage = await Promise.all(Array.from({ length: 20 }, () => stack.connect(l.localAddress)));
        await Promise.all(
          garbage.map(async (g, i) => {
            const junk = new Uint8Array(2000);
            fillRandom(junk, i + 1);
            junk[0] = 0x47; // never "ECHO "
            junk[junk.length - 1] = NL;
            await g.output.write(junk);
            const answer = await g.input.read();
            expect(new TextDecoder().decode(answer!)).toBe("ERR\n");
            expect(await g.input.read()).toBeNull();
            await g.close();
          }),
        );

        // A line that never ends: cut off at MAX_LINE.
        const endless = await stack.connect(l.localAddress);
        await endless.output.write(encoder.encode("ECHO " + "y".repeat(5000)));
        expect(new TextDecoder().decode((await endless.input.read())!)).toBe("ERR\n");
        await endless.close();

        // A flood of valid requests from a peer that never reads its answers.
        const flood = await stack.connect(l.localAddress, { maxReadBuffered: 64 * 1024, writeHighWater: 64 * 1024 });
        const request = encoder.encode("ECHO " + "z".repeat(1000) + "\n");
        const flooding = (async () => {
          for (;;) await flood.output.write(request);
        })();
        flooding.catch(() => {});
        await until(() => stack.stats().recvPauses > 0, 5000, "the flood to be throttled");
        await Bun.sleep(100);
        const st = stack.stats();
        expect(st.recvBuffersHeld).toBeLessThan(64);
        expect(st.sendMemoryInUse).toBeLessThan(2 * 1024 * 1024);

        // Vanishing peers: half a request, then gone (reset or plain close).
        for (let i = 0; i < 100; i++) {
          const v = await stack.connect(l.localAddress);
          await v.output.write("ECHO half a li");
          if (i % 2 === 0) v.reset();
          else await v.close();
        }

        const roundsBefore = honestRounds;
        await Bun.sleep(100);
        expect(honestRounds).toBeGreaterThan(roundsBefore);

        flood.reset();
        await flooding.catch(() => {});
        stop = true;
        await honestLoop;
        await honest.close();
        await l.close();
        await until(() => stack.stats().connectionsOpen === 0, 10_000, "every connection to close");
        await expectQuiescent(stack);
        process.off("unhandledRejection", onUnhandled);
        expect(unhandled).toBe(0);
        // Whatever handlers threw was typed (peer resets show as ShoalErrors).
        for (const e of handlerErrors) expect(e).toBeInstanceOf(ShoalError);
        expect(honestRounds).toBeGreaterThan(10);
      },
      60_000,
    );
  });
}
