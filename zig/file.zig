//! File-system calls that io_uring has no operation for. Everything else the fs layer does
//! (openat, statx, read/write, fallocate, fsync, ftruncate, rename, unlink, mkdir, link,
//! close) goes through the ring as generic descriptors; only these run as plain syscalls:
//!
//! - getdents64: IORING_OP_GETDENTS was proposed (2021) but never merged, so directory reads
//!   are a synchronous syscall, one per batch of entries.
//! - statfs/fstatfs: no io_uring op exists; they read in-memory superblock counters and do
//!   not wait for the device.
//!
//! Each call is one syscall, bounded by the caller's buffer, and returns a negative errno.
const std = @import("std");
const linux = std.os.linux;
const assert = std.debug.assert;

comptime {
    // The statfs layout below is the 64-bit kernel ABI (`__statfs_word` is a 64-bit long).
    assert(@sizeOf(usize) == 8);
}

/// The kernel's `struct statfs` on 64-bit Linux (x86_64, aarch64, riscv64).
pub const KernelStatfs = extern struct {
    f_type: i64,
    f_bsize: i64,
    f_blocks: u64,
    f_bfree: u64,
    f_bavail: u64,
    f_files: u64,
    f_ffree: u64,
    f_fsid: [2]i32,
    f_namelen: i64,
    f_frsize: i64,
    f_flags: i64,
    f_spare: [4]i64,

    comptime {
        assert(@sizeOf(KernelStatfs) == 120);
    }
};

/// What JS reads: every field an f64 (exact below 2^53), so no BigInt crosses the boundary.
pub const FsInfo = extern struct {
    /// File-system magic (EXT4_SUPER_MAGIC 0xEF53, TMPFS_MAGIC 0x01021994, ...).
    type: f64,
    /// Preferred I/O block size in bytes.
    block_size: f64,
    /// Fragment size: the unit of the block counts below.
    fragment_size: f64,
    blocks: f64,
    blocks_free: f64,
    /// Blocks available to unprivileged users (free minus reserved).
    blocks_available: f64,
    files: f64,
    files_free: f64,
    name_max: f64,
    /// ST_RDONLY (1), ST_NOSUID (2), ...
    mount_flags: f64,

    comptime {
        assert(@sizeOf(FsInfo) == 80);
    }
};

fn to_info(s: *const KernelStatfs, out: *FsInfo) void {
    // A zero fragment size comes from old kernels; the block size is the unit then. Both are
    // whatever the file system says (a FUSE daemon answers statfs itself, zero included): a
    // zero passes through, it is no invariant of ours to assert.
    const frsize = if (s.f_frsize > 0) s.f_frsize else s.f_bsize;
    out.* = .{
        .type = @floatFromInt(@as(u64, @bitCast(s.f_type)) & 0xffff_ffff),
        .block_size = @floatFromInt(s.f_bsize),
        .fragment_size = @floatFromInt(frsize),
        .blocks = @floatFromInt(s.f_blocks),
        .blocks_free = @floatFromInt(s.f_bfree),
        .blocks_available = @floatFromInt(s.f_bavail),
        .files = @floatFromInt(s.f_files),
        .files_free = @floatFromInt(s.f_ffree),
        .name_max = @floatFromInt(s.f_namelen),
        .mount_flags = @floatFromInt(s.f_flags),
    };
}

fn errno_of(rc: usize) i32 {
    return -@as(i32, @intCast(@intFromEnum(linux.E.init(rc))));
}

/// statfs(2) on a NUL-terminated path. Returns 0 or a negative errno.
pub fn statfs(path: [*:0]const u8, out: *FsInfo) i32 {
    var s: KernelStatfs = undefined;
    const rc = linux.syscall2(.statfs, @intFromPtr(path), @intFromPtr(&s));
    if (linux.E.init(rc) != .SUCCESS) return errno_of(rc);
    to_info(&s, out);
    return 0;
}

/// fstatfs(2) on an open descriptor. Returns 0 or a negative errno.
pub fn fstatfs(fd: i32, out: *FsInfo) i32 {
    assert(fd >= 0);
    var s: KernelStatfs = undefined;
    const rc = linux.syscall2(.fstatfs, @as(usize, @bitCast(@as(isize, fd))), @intFromPtr(&s));
    if (linux.E.init(rc) != .SUCCESS) return errno_of(rc);
    to_info(&s, out);
    return 0;
}

/// One getdents64(2) batch into `buf`: returns the bytes filled (0 at the end of the
/// directory) or a negative errno. Records are `linux_dirent64`, parsed by `DirentIterator`
/// here and by src/fs/directory.ts in JS.
pub fn getdents(fd: i32, buf: []u8) i32 {
    assert(fd >= 0);
    // Below this a single long name (255 bytes + header) might not fit: EINVAL from the kernel.
    assert(buf.len >= 512);
    const len = @min(buf.len, std.math.maxInt(i32));
    const rc = linux.getdents64(fd, buf.ptr, len);
    if (linux.E.init(rc) != .SUCCESS) return errno_of(rc);
    assert(rc <= len);
    return @intCast(rc);
}

/// Offsets in a `linux_dirent64` record: u64 d_ino, i64 d_off, u16 d_reclen, u8 d_type, name.
pub const dirent_reclen_offset = 16;
pub const dirent_type_offset = 18;
pub const dirent_name_offset = 19;

pub const Dirent = struct {
    name: []const u8,
    /// DT_REG 8, DT_DIR 4, DT_LNK 10, DT_UNKNOWN 0 (some file systems never fill it).
    kind: u8,
};

/// Walks the records of one getdents batch.
pub const DirentIterator = struct {
    bytes: []const u8,
    pos: usize = 0,

    pub fn next(self: *DirentIterator) ?Dirent {
        if (self.pos >= self.bytes.len) return null;
        const rec = self.bytes[self.pos..];
        assert(rec.len > dirent_name_offset);
        const reclen = std.mem.readInt(u16, rec[dirent_reclen_offset..][0..2], .little);
        assert(reclen > dirent_name_offset and reclen <= rec.len);
        const name_area = rec[dirent_name_offset..reclen];
        const name_len = std.mem.indexOfScalar(u8, name_area, 0) orelse name_area.len;
        self.pos += reclen;
        return .{ .name = name_area[0..name_len], .kind = rec[dirent_type_offset] };
    }
};

/// Kernel `struct statx` offsets the JS side reads (std's Statx predates these fields).
pub const statx_offsets = struct {
    pub const mask = 0;
    pub const blksize = 4;
    pub const mode = 28;
    pub const ino = 32;
    pub const size = 40;
    pub const blocks = 48;
    pub const mtime = 112;
    pub const dev_major = 136;
    pub const dev_minor = 140;
    pub const dio_mem_align = 152;
    pub const dio_offset_align = 156;
    pub const dio_read_offset_align = 180;
    pub const size_bytes = 256;
};

test "statx offsets match the kernel layout" {
    // std's Statx covers the head of the struct; the DIO fields follow dev_minor and mnt_id.
    try std.testing.expectEqual(@as(usize, statx_offsets.size), @offsetOf(linux.Statx, "size"));
    try std.testing.expectEqual(@as(usize, statx_offsets.mtime), @offsetOf(linux.Statx, "mtime"));
    try std.testing.expectEqual(@as(usize, statx_offsets.dev_major), @offsetOf(linux.Statx, "dev_major"));
    try std.testing.expectEqual(@as(usize, statx_offsets.dev_minor + 4 + 8), statx_offsets.dio_mem_align);
    try std.testing.expectEqual(@as(usize, statx_offsets.size_bytes), @sizeOf(linux.Statx));
}

test "a file system that reports zero block and fragment sizes (a FUSE daemon can) is described, not asserted on" {
    var s = std.mem.zeroes(KernelStatfs);
    s.f_type = 0x65735546; // FUSE_SUPER_MAGIC
    s.f_blocks = 10;
    var info: FsInfo = undefined;
    to_info(&s, &info);
    try std.testing.expectEqual(@as(f64, 0), info.fragment_size);
    try std.testing.expectEqual(@as(f64, 0), info.block_size);
    try std.testing.expectEqual(@as(f64, 10), info.blocks);
    s.f_bsize = 4096;
    to_info(&s, &info);
    try std.testing.expectEqual(@as(f64, 4096), info.fragment_size);
}

test "statfs and fstatfs describe the file system of the working directory" {
    var a: FsInfo = undefined;
    try std.testing.expectEqual(@as(i32, 0), statfs(".", &a));
    try std.testing.expect(a.block_size > 0 and a.blocks > 0 and a.blocks_free <= a.blocks);
    const fd: i32 = @intCast(linux.open(".", .{ .DIRECTORY = true, .CLOEXEC = true }, 0));
    defer _ = linux.close(fd);
    var b: FsInfo = undefined;
    try std.testing.expectEqual(@as(i32, 0), fstatfs(fd, &b));
    try std.testing.expectEqual(a.type, b.type);
    try std.testing.expectEqual(-@as(i32, @intFromEnum(linux.E.NOENT)), statfs("/nonexistent/shoal", &a));
}

test "getdents lists a directory created here, including . and .." {
    var name_buf: [64]u8 = undefined;
    const dir = try std.fmt.bufPrintZ(&name_buf, "/tmp/shoal-file-zig-{d}", .{linux.getpid()});
    try std.testing.expectEqual(@as(usize, 0), linux.mkdir(dir, 0o700));
    defer _ = linux.rmdir(dir);
    var file_buf: [96]u8 = undefined;
    const file = try std.fmt.bufPrintZ(&file_buf, "{s}/entry", .{dir});
    const ffd: i32 = @intCast(linux.open(file, .{ .CREAT = true, .ACCMODE = .WRONLY, .CLOEXEC = true }, 0o600));
    _ = linux.close(ffd);
    defer _ = linux.unlink(file);

    const fd: i32 = @intCast(linux.open(dir, .{ .DIRECTORY = true, .CLOEXEC = true }, 0));
    defer _ = linux.close(fd);
    var buf: [4096]u8 align(8) = undefined;
    var seen_entry = false;
    var seen_dots: u32 = 0;
    var batches: u32 = 0;
    while (batches < 16) : (batches += 1) {
        const n = getdents(fd, &buf);
        try std.testing.expect(n >= 0);
        if (n == 0) break;
        var it = DirentIterator{ .bytes = buf[0..@intCast(n)] };
        while (it.next()) |d| {
            if (std.mem.eql(u8, d.name, "entry")) {
                seen_entry = true;
                try std.testing.expect(d.kind == linux.DT.REG or d.kind == linux.DT.UNKNOWN);
            }
            if (std.mem.eql(u8, d.name, ".") or std.mem.eql(u8, d.name, "..")) seen_dots += 1;
        }
    }
    try std.testing.expect(seen_entry);
    try std.testing.expectEqual(@as(u32, 2), seen_dots);
    // A descriptor that is not a directory fails with ENOTDIR, not a crash.
    const nfd: i32 = @intCast(linux.open(file, .{ .CLOEXEC = true }, 0));
    defer _ = linux.close(nfd);
    try std.testing.expectEqual(-@as(i32, @intFromEnum(linux.E.NOTDIR)), getdents(nfd, &buf));
}
