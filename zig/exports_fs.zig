//! C ABI exports of the fs layer (imported by exports.zig). They only check and forward to
//! file.zig; pointers arrive as integers from JS native scratch memory.
const std = @import("std");
const linux = std.os.linux;
const file = @import("file.zig");

fn einval() i32 {
    return -@as(i32, @intFromEnum(linux.E.INVAL));
}

/// statfs(2) of the NUL-terminated path at `path` into the FsInfo at `out`. 0 or -errno.
export fn shoal_fs_statfs(path: usize, out: usize) i32 {
    if (path == 0 or out == 0 or out % @alignOf(file.FsInfo) != 0) return einval();
    return file.statfs(@ptrFromInt(path), @ptrFromInt(out));
}

/// fstatfs(2) of `fd` into the FsInfo at `out`. 0 or -errno.
export fn shoal_fs_fstatfs(fd: i32, out: usize) i32 {
    if (fd < 0) return -@as(i32, @intFromEnum(linux.E.BADF));
    if (out == 0 or out % @alignOf(file.FsInfo) != 0) return einval();
    return file.fstatfs(fd, @ptrFromInt(out));
}

/// One getdents64(2) batch of directory `fd` into `len` bytes at `buf`. Bytes filled or -errno.
export fn shoal_fs_getdents(fd: i32, buf: usize, len: u32) i32 {
    if (fd < 0) return -@as(i32, @intFromEnum(linux.E.BADF));
    if (buf == 0 or buf % 8 != 0 or len < 512) return einval();
    const p: [*]u8 = @ptrFromInt(buf);
    return file.getdents(fd, p[0..len]);
}
