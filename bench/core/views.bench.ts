/**
 * Views of native memory by address (what a value lent across shards costs the shard that
 * sends it): a view made per value with bun:ffi's toArrayBuffer and let go with transfer() (a
 * NativeBuffer handed over: smp/handover.ts), a view made per value only, and a subarray of one
 * view made once (foreignView over the owner's arena: memcached's OwnerArena). 60,000-byte
 * values at 200 places in a 16 MiB mapping. Run: node_modules/.bin/bun bench/core/views.bench.ts
 */
import { toArrayBuffer, type Pointer } from "bun:ffi";
import { allocateAlignedBuffer, foreignView } from "../../src/index.ts";
import { interleaved } from "../lib/interleave.ts";

const LEN = 60_000;
const CALLS = 64;
const arena = allocateAlignedBuffer(1 << 24);
const base = arena.address;
const whole = foreignView(base, arena.length);
let sink = 0;
let at = 0;
const next = () => (at = (at + 1) % 200) * 65_536;

await interleaved(
  `a view of a ${LEN}-byte value by address`,
  {
    name: "subarray of one view made once (foreignView)",
    opsPerCall: CALLS,
    fn: () => {
      for (let i = 0; i < CALLS; i++) {
        const off = next();
        sink += whole.subarray(off, off + LEN).length;
      }
    },
  },
  [
    {
      name: "toArrayBuffer per value",
      opsPerCall: CALLS,
      fn: () => {
        for (let i = 0; i < CALLS; i++) sink += new Uint8Array(toArrayBuffer((base + next()) as Pointer, 0, LEN)).length;
      },
    },
    {
      name: "toArrayBuffer per value, then transfer() (a handover's release)",
      opsPerCall: CALLS,
      fn: () => {
        for (let i = 0; i < CALLS; i++) {
          const ab = toArrayBuffer((base + next()) as Pointer, 0, LEN);
          sink += new Uint8Array(ab).length;
          ab.transfer();
        }
      },
    },
  ],
);
if (sink === 0) console.log(sink);
