#!/usr/bin/env python3
"""Names JavaScriptCore's JIT-compiled code in `perf report`.

Bun writes a jitdump (one record per compiled function) when started with
BUN_JSC_useJITDump=1 BUN_JSC_jitDumpDirectory=DIR. `perf inject -j` would read it, but only
from a file named jit-PID.dump, and JavaScriptCore names it jit-PID-TID.dump; this turns it
into the perf map that perf report reads by itself (/tmp/perf-PID.map).

    mkdir -p /tmp/jd
    BUN_JSC_useJITDump=1 BUN_JSC_jitDumpDirectory=/tmp/jd perf record -g -o /tmp/jd/perf.data -- \\
        node_modules/.bin/bun examples/memcached/main.ts -t 1      # load it, then Ctrl-C
    scripts/jitdump-map.py /tmp/jd/jit-*.dump                     # writes /tmp/perf-PID.map
    perf report -i /tmp/jd/perf.data --no-children --sort sym

Record from the start (not with -p): the map's addresses are those of the recorded process.
"""
import struct
import sys

JIT_CODE_LOAD = 0
HEADER = struct.Struct("<IIIIIIQQ")  # magic, version, total_size, elf_mach, pad1, pid, timestamp, flags
RECORD = struct.Struct("<IIQ")  # id, total_size, timestamp
LOAD = struct.Struct("<IIQQQQ")  # pid, tid, vma, code_addr, code_size, code_index
MAGIC = 0x4A695444  # "JiTD" as written by a little-endian host


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: jitdump-map.py JIT_DUMP_FILE", file=sys.stderr)
        return 2
    with open(argv[1], "rb") as f:
        data = f.read()
    if len(data) < HEADER.size:
        print(f"{argv[1]}: too short for a jitdump header", file=sys.stderr)
        return 1
    magic, _version, header_size, _mach, _pad, pid, _ts, _flags = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        print(f"{argv[1]}: not a jitdump file (magic {magic:#x})", file=sys.stderr)
        return 1
    lines = []
    off = header_size
    while off + RECORD.size <= len(data):
        kind, size, _ts = RECORD.unpack_from(data, off)
        if size == 0 or off + size > len(data):
            break  # the writer was stopped mid-record
        if kind == JIT_CODE_LOAD:
            _pid, _tid, _vma, addr, code_size, _index = LOAD.unpack_from(data, off + RECORD.size)
            name_at = off + RECORD.size + LOAD.size
            name_end = data.index(b"\0", name_at)
            name = data[name_at:name_end].decode("utf-8", "replace").replace(" ", "_")
            lines.append(f"{addr:x} {code_size:x} {name}\n")
        off += size
    out = f"/tmp/perf-{pid}.map"
    with open(out, "w") as f:
        f.writelines(lines)
    print(f"{out}: {len(lines)} functions")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
