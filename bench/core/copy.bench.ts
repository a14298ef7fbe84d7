/**
 * Byte copies (issue 2's native layer): copyBytes (one bun:ffi call into Zig's copy: a byte loop
 * up to 16 bytes, `rep movsb` from 512) against `dst.set(src.subarray(...))`, which
 * JavaScriptCore does with glibc's memmove, at sizes from a short key to a large value; cache-hot
 * buffers. Run: node_modules/.bin/bun bench/core/copy.bench.ts
 */
import { copyBytes } from "../../src/core/bytes.ts";
import { interleaved } from "../lib/interleave.ts";

const PER_CALL = 64;
for (const size of [16, 256, 4096, 65_536, 1_048_576]) {
  const src = Uint8Array.from({ length: size + 64 }, (_, i) => i & 0xff);
  const dst = new Uint8Array(size + 64);
  const calls = size >= 65_536 ? 4 : PER_CALL;
  await interleaved(
    `copy ${size} bytes`,
    {
      name: "dst.set(src.subarray(...))",
      opsPerCall: calls,
      fn: () => {
        for (let i = 0; i < calls; i++) dst.set(src.subarray(i & 7, (i & 7) + size), 3);
      },
    },
    [
      {
        name: "copyBytes(dst, at, src, from, len)",
        opsPerCall: calls,
        fn: () => {
          for (let i = 0; i < calls; i++) copyBytes(dst, 3, src, i & 7, size);
        },
      },
    ],
  );
}
