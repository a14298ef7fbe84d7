//! C ABI exports of the net layer (imported by exports.zig). They only check and forward to
//! net.zig; addresses (sockaddr bytes, output buffers) arrive as integers pointing into
//! native memory that JS owns.
const std = @import("std");
const linux = std.os.linux;
const net = @import("net.zig");
const reactor = @import("reactor.zig");

fn einval() i32 {
    return -@as(i32, @intFromEnum(linux.E.INVAL));
}

fn ebadf() i32 {
    return -@as(i32, @intFromEnum(linux.E.BADF));
}

/// A sockaddr must be non-null, 2-byte aligned and fit sockaddr_storage.
fn bad_addr(addr: usize, len: u32) bool {
    return addr == 0 or addr % 2 != 0 or len < 2 or len > 128;
}

/// socket + options (net.OpenFlags) + bind + (backlog >= 0) listen. fd or -errno.
export fn shoal_net_open_socket(domain: u32, sock_type: u32, addr: usize, addr_len: u32, flags: u32, backlog: i32) i32 {
    if (bad_addr(addr, addr_len) or flags & ~net.OpenFlags.all != 0) return einval();
    if (sock_type != linux.SOCK.STREAM and sock_type != linux.SOCK.DGRAM) return einval();
    return net.open_socket(domain, sock_type, @ptrFromInt(addr), addr_len, flags, @min(backlog, 65535));
}

/// A close-on-exec socket (connect's). fd or -errno.
export fn shoal_net_socket(domain: u32, sock_type: u32, protocol: u32) i32 {
    return net.socket(domain, sock_type, protocol);
}

export fn shoal_net_bind(fd: i32, addr: usize, addr_len: u32) i32 {
    if (fd < 0) return ebadf();
    if (bad_addr(addr, addr_len)) return einval();
    return net.bind(fd, @ptrFromInt(addr), addr_len);
}

export fn shoal_net_set_int(fd: i32, level: i32, name: u32, value: i32) i32 {
    if (fd < 0) return ebadf();
    return net.set_int(fd, level, name, value);
}

/// The option's value (>= 0) or -errno.
export fn shoal_net_get_int(fd: i32, level: i32, name: u32) i32 {
    if (fd < 0) return ebadf();
    return net.get_int(fd, level, name);
}

/// getsockname into `cap` bytes at `out`: the address length or -errno.
export fn shoal_net_local_address(fd: i32, out: usize, cap: u32) i32 {
    if (fd < 0) return ebadf();
    if (out == 0 or out % 8 != 0 or cap < 16) return einval();
    return net.local_address(fd, @ptrFromInt(out), cap);
}

/// getpeername into `cap` bytes at `out`: the address length or -errno.
export fn shoal_net_peer_address(fd: i32, out: usize, cap: u32) i32 {
    if (fd < 0) return ebadf();
    if (out == 0 or out % 8 != 0 or cap < 16) return einval();
    return net.peer_address(fd, @ptrFromInt(out), cap);
}

export fn shoal_net_shutdown(fd: i32, how: i32) i32 {
    if (fd < 0) return ebadf();
    if (how < 0 or how > 2) return einval();
    return net.shutdown(fd, how);
}

export fn shoal_net_close(fd: i32) i32 {
    if (fd < 0) return ebadf();
    return net.close(fd);
}

/// Accepts without waiting up to `max` queued connections of listening socket `fd` into the
/// i32 array at `out` (see net.accept_pending). Count or -errno.
export fn shoal_net_accept_pending(fd: i32, out: usize, max: u32) i32 {
    if (fd < 0) return ebadf();
    if (out == 0 or out % 4 != 0 or max == 0 or max > 4096) return einval();
    const fds: [*]i32 = @ptrFromInt(out);
    return net.accept_pending(fd, fds[0..max]);
}

/// See net.linger_step: bytes still in the send queue, or -1 once the peer is done (or -EBADF).
export fn shoal_net_linger_step(fd: i32) i32 {
    if (fd < 0) return ebadf();
    return net.linger_step(fd);
}

export fn shoal_net_set_linger(fd: i32, on: u32, seconds: i32) i32 {
    if (fd < 0) return ebadf();
    return net.set_linger(fd, on != 0, seconds);
}

/// Creates and registers a provided-buffer ring on the io_uring of the reactor `handle` names.
/// Returns the ring (see net.BufRing for the layout JS reads) or null with -errno in
/// `out_errno` (if given): -EBADF for a handle that names no live reactor (see Reactor.live).
/// `entries` is the pool's maximum (address space is reserved for all); `initial` are in the ring.
export fn shoal_net_buf_ring_create(handle: usize, bgid: u32, entries: u32, buf_size: u32, initial: u32, out_errno_or_null: ?*i32) ?*net.BufRing {
    var ignored: i32 = 0;
    const out_errno = out_errno_or_null orelse &ignored;
    out_errno.* = 0;
    const r = reactor.Reactor.live(handle) orelse {
        out_errno.* = ebadf();
        return null;
    };
    if (bgid > 0xffff) {
        out_errno.* = einval();
        return null;
    }
    return net.buf_ring_create(r.ring.fd, @intCast(bgid), entries, buf_size, initial, out_errno) catch |err| {
        out_errno.* = switch (err) {
            error.InvalidArgument => einval(),
            error.OutOfMemory => -@as(i32, @intFromEnum(linux.E.NOMEM)),
            error.Register => out_errno.*,
        };
        return null;
    };
}

/// Unregisters and unmaps a ring made by shoal_net_buf_ring_create. 0 or -errno.
export fn shoal_net_buf_ring_destroy(br: *net.BufRing) i32 {
    return net.buf_ring_destroy(br);
}

test "buf_ring_create refuses a handle that names no live reactor, with or without an error slot" {
    var err: i32 = 0;
    try std.testing.expect(shoal_net_buf_ring_create(0, 1, 8, 4096, 8, &err) == null);
    try std.testing.expectEqual(ebadf(), err);
    var not_a_reactor: [512]u8 align(128) = undefined;
    try std.testing.expect(shoal_net_buf_ring_create(@intFromPtr(&not_a_reactor), 1, 8, 4096, 8, null) == null);
}
