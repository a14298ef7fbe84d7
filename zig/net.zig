//! Kernel-socket helpers for the posix network stack: the few socket calls that have no
//! io_uring operation on Linux 6.1 (socket set-up, options, addresses) and provided-buffer
//! rings (IORING_REGISTER_PBUF_RING) that multishot receives draw from.
//!
//! Everything here is a short synchronous syscall made once per socket, never per message;
//! data moves through io_uring operations that JS queues on the reactor. Addresses are
//! `struct sockaddr` bytes that JS encodes into native memory. Errors are negative errno.
const std = @import("std");
const linux = std.os.linux;
const assert = std.debug.assert;

fn errno_of(rc: usize) i32 {
    return switch (linux.E.init(rc)) {
        .SUCCESS => 0,
        else => |e| -@as(i32, @intCast(@intFromEnum(e))),
    };
}

fn result_fd(rc: usize) i32 {
    const e = errno_of(rc);
    if (e != 0) return e;
    return @intCast(rc);
}

pub const ipv6_v6only: u32 = 26;

/// Bits of `open_socket`'s `flags`.
pub const OpenFlags = struct {
    pub const reuse_port: u32 = 1 << 0;
    pub const reuse_addr: u32 = 1 << 1;
    /// IPv6 sockets accept only IPv6 (no IPv4-mapped peers).
    pub const v6_only: u32 = 1 << 2;
    /// TCP_NODELAY on the socket; Linux copies it to every socket a listener accepts.
    pub const no_delay: u32 = 1 << 3;
    pub const all: u32 = (1 << 4) - 1;
};

/// Creates a close-on-exec socket. Returns the fd or a negative errno.
pub fn socket(domain: u32, sock_type: u32, protocol: u32) i32 {
    return result_fd(linux.socket(domain, sock_type | linux.SOCK.CLOEXEC, protocol));
}

pub fn set_int(fd: i32, level: i32, name: u32, value: i32) i32 {
    return errno_of(linux.setsockopt(fd, level, name, std.mem.asBytes(&value), @sizeOf(i32)));
}

/// Reads an int-valued socket option: the value (>= 0) or a negative errno.
pub fn get_int(fd: i32, level: i32, name: u32) i32 {
    var value: i32 = 0;
    var len: linux.socklen_t = @sizeOf(i32);
    const e = errno_of(linux.getsockopt(fd, level, name, std.mem.asBytes(&value), &len));
    if (e != 0) return e;
    return value;
}

/// Creates a socket, applies `flags` (OpenFlags), binds it to `addr` and, when `backlog` >= 0,
/// listens. The one call a listener or a UDP channel needs. Returns the fd or a negative
/// errno; on failure nothing stays open.
///
/// With `reuse_port` the port is shared by this process's shards only: the first socket on a
/// port is preceded by a trial bind without SO_REUSEPORT, so a port another process holds
/// (with SO_REUSEPORT too: a second server started by mistake) fails with EADDRINUSE instead
/// of silently taking a share of its connections. See `SharedPorts`.
pub fn open_socket(domain: u32, sock_type: u32, addr: *const anyopaque, addr_len: u32, flags: u32, backlog: i32) i32 {
    assert(flags & ~OpenFlags.all == 0);
    const inet = domain == linux.AF.INET or domain == linux.AF.INET6;
    if (flags & OpenFlags.reuse_port == 0 or !inet) return open_plain(domain, sock_type, addr, addr_len, flags, backlog);
    SharedPorts.mutex.lock();
    defer SharedPorts.mutex.unlock();
    const port = sockaddr_port(addr);
    if (port != 0) {
        // EADDRINUSE from the trial is this process's own doing only where one of its sockets
        // on the port overlaps the address (the same one, or a wildcard covering it); else
        // another process holds it. (Skipping the trial whenever the process held the port at
        // any address shared a foreign socket on another address: 127.0.0.1 held here, [::1]
        // by another server, [::1] asked for.)
        const e = trial_bind(domain, sock_type, addr, addr_len, flags);
        if (e < 0) {
            const in_use = -@as(i32, @intFromEnum(linux.E.ADDRINUSE));
            const ip = Ip.of(addr, flags & OpenFlags.v6_only != 0);
            if (e != in_use or !SharedPorts.overlaps(sock_type, port, ip)) return e;
            // One of ours overlaps, so the trial could not tell whether another process's holds
            // this very address too (127.0.0.1 held here, 0.0.0.0 asked for where another
            // server holds it): the kernel's socket table says who holds it.
            if (SharedPorts.foreign_holds(sock_type, port, ip)) return in_use;
        }
    }
    const fd = open_plain(domain, sock_type, addr, addr_len, flags, backlog);
    if (fd < 0) return fd;
    const bound = bound_port(fd);
    if (bound < 0) {
        _ = linux.close(fd);
        return bound;
    }
    SharedPorts.add(fd, sock_type, @intCast(bound)) catch {
        _ = linux.close(fd);
        return -@as(i32, @intFromEnum(linux.E.NOMEM));
    };
    return fd;
}

/// The sockets this process shares a port among with SO_REUSEPORT. Every shard is a thread of
/// one process and loads this library once, so the table is process-wide (behind a mutex; it
/// is touched only when a socket opens). Rows are not removed on close: a row whose fd no
/// longer is a SO_REUSEPORT socket of that type on that port is dropped when next looked at.
const SharedPorts = struct {
    const Row = struct { fd: i32, sock_type: u32, port: u16 };
    var mutex: std.Thread.Mutex = .{};
    var rows: std.ArrayListUnmanaged(Row) = .empty;

    /// True if a live socket of this process shares `port` (any address, same type).
    fn holds(sock_type: u32, port: u16) bool {
        var i: usize = 0;
        var found = false;
        while (i < rows.items.len) {
            const r = rows.items[i];
            if (!still_shared(r)) {
                _ = rows.swapRemove(i);
                continue;
            }
            if (r.sock_type == sock_type and r.port == port) found = true;
            i += 1;
        }
        return found;
    }

    /// True if a live socket of this process on `port` (same type) could be why a bind to
    /// `ip` fails: its address and `ip` overlap.
    fn overlaps(sock_type: u32, port: u16, ip: Ip) bool {
        if (!holds(sock_type, port)) return false;
        for (rows.items) |r| {
            if (r.sock_type != sock_type or r.port != port) continue;
            var storage: linux.sockaddr.storage = undefined;
            var len: linux.socklen_t = @sizeOf(linux.sockaddr.storage);
            // Unknown: assume it may be the cause (the old, permissive answer).
            if (errno_of(linux.getsockname(r.fd, @ptrCast(&storage), &len)) != 0) return true;
            const v6only = get_int(r.fd, linux.IPPROTO.IPV6, ipv6_v6only) == 1;
            if (Ip.of(&storage, v6only).overlaps(ip)) return true;
        }
        return false;
    }

    /// True if a socket of `sock_type` bound to `port` at `ip` itself is not one of this
    /// process's rows: another process's (same user, SO_REUSEPORT), whose group of sockets a
    /// bind to the same address would join, sharing its connections. (One at another,
    /// overlapping address forms its own group: a wildcard held elsewhere takes nothing meant
    /// for our specific address, nor the other way round.) Asked of the kernel's socket table
    /// (NETLINK_SOCK_DIAG): TCP listeners, UDP sockets in any state. Where that table cannot be
    /// read, false (the permissive answer).
    fn foreign_holds(sock_type: u32, port: u16, ip: Ip) bool {
        var ours: std.ArrayListUnmanaged(u64) = .empty;
        defer ours.deinit(std.heap.page_allocator);
        for (rows.items) |r| {
            if (r.sock_type != sock_type or r.port != port) continue;
            const ino = socket_inode(r.fd) orelse continue;
            ours.append(std.heap.page_allocator, ino) catch return false;
        }
        const protocol: u8 = if (sock_type == linux.SOCK.STREAM) linux.IPPROTO.TCP else linux.IPPROTO.UDP;
        for ([_]u8{ linux.AF.INET, linux.AF.INET6 }) |family| {
            if (SockDiag.foreign(family, protocol, port, ours.items, ip)) return true;
        }
        return false;
    }

    fn add(fd: i32, sock_type: u32, port: u16) !void {
        for (rows.items) |*r| {
            if (r.fd == fd) {
                r.* = .{ .fd = fd, .sock_type = sock_type, .port = port };
                return;
            }
        }
        try rows.append(std.heap.page_allocator, .{ .fd = fd, .sock_type = sock_type, .port = port });
    }

    fn still_shared(r: Row) bool {
        if (get_int(r.fd, linux.SOL.SOCKET, linux.SO.TYPE) != @as(i32, @intCast(r.sock_type))) return false;
        if (get_int(r.fd, linux.SOL.SOCKET, linux.SO.REUSEPORT) != 1) return false;
        return bound_port(r.fd) == r.port;
    }
};

/// An inet address as far as bind conflicts go: IPv4 ones (and IPv6's v4-mapped ones) as
/// v4-mapped bytes; `dual` for an IPv6 wildcard that takes IPv4 too.
const Ip = struct {
    v4: bool,
    bytes: [16]u8,
    dual: bool,

    const v4_mapped_prefix = [12]u8{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

    fn of(addr: *const anyopaque, v6only: bool) Ip {
        const raw: *const [28]u8 = @ptrCast(addr);
        var ip: Ip = .{ .v4 = false, .bytes = @splat(0), .dual = false };
        if (std.mem.readInt(u16, raw[0..2], .little) == linux.AF.INET) {
            ip.v4 = true;
            ip.bytes[10] = 0xff;
            ip.bytes[11] = 0xff;
            @memcpy(ip.bytes[12..16], raw[4..8]);
            return ip;
        }
        @memcpy(&ip.bytes, raw[8..24]);
        ip.v4 = std.mem.eql(u8, ip.bytes[0..12], &v4_mapped_prefix);
        ip.dual = !v6only and std.mem.allEqual(u8, &ip.bytes, 0);
        return ip;
    }

    fn any(self: Ip) bool {
        return if (self.v4) std.mem.allEqual(u8, self.bytes[12..16], 0) else std.mem.allEqual(u8, &self.bytes, 0);
    }

    fn overlaps(a: Ip, b: Ip) bool {
        if (a.v4 == b.v4) return a.any() or b.any() or std.mem.eql(u8, &a.bytes, &b.bytes);
        // One IPv4, one IPv6: only a dual-stack IPv6 wildcard takes IPv4 addresses too.
        return a.dual or b.dual;
    }
};

/// The inode of socket `fd` (what the kernel's socket table names it by), or null.
fn socket_inode(fd: i32) ?u64 {
    var st: linux.Stat = undefined;
    if (errno_of(linux.fstat(fd, &st)) != 0) return null;
    return st.ino;
}

/// The kernel's table of inet sockets, read over NETLINK_SOCK_DIAG (inet_diag_req_v2 dumps).
const SockDiag = struct {
    const NETLINK_SOCK_DIAG = 4;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const TCP_LISTEN = 10;

    /// struct nlmsghdr followed by struct inet_diag_req_v2 (the sockid zeroed: every socket).
    const Request = extern struct {
        len: u32,
        type: u16,
        flags: u16,
        seq: u32,
        pid: u32,
        family: u8,
        protocol: u8,
        ext: u8,
        pad: u8,
        states: u32,
        id: [48]u8,
    };

    /// True if a socket of `family`/`protocol` (TCP: listening) is bound to `port` at `want` and
    /// its inode is not in `ours`. False too where the table cannot be read.
    fn foreign(family: u8, protocol: u8, port: u16, ours: []const u64, want: Ip) bool {
        const fd = socket(linux.AF.NETLINK, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, NETLINK_SOCK_DIAG);
        if (fd < 0) return false;
        defer _ = linux.close(fd);
        var req = std.mem.zeroes(Request);
        req.len = @sizeOf(Request);
        req.type = SOCK_DIAG_BY_FAMILY;
        req.flags = NLM_F_REQUEST | NLM_F_DUMP;
        req.family = family;
        req.protocol = protocol;
        req.states = if (protocol == linux.IPPROTO.TCP) 1 << TCP_LISTEN else 0xffff_ffff;
        if (linux.E.init(linux.sendto(fd, std.mem.asBytes(&req), @sizeOf(Request), 0, null, 0)) != .SUCCESS) return false;
        var buf: [16384]u8 align(8) = undefined;
        var found = false;
        while (true) {
            const rc = linux.recvfrom(fd, &buf, buf.len, 0, null, null);
            switch (linux.E.init(rc)) {
                .SUCCESS => {},
                .INTR => continue,
                else => return found,
            }
            if (rc == 0) return found;
            var at: usize = 0;
            while (at + 16 <= rc) {
                const len = std.mem.readInt(u32, buf[at..][0..4], .little);
                const kind = std.mem.readInt(u16, buf[at + 4 ..][0..2], .little);
                if (len < 16 or at + len > rc) return found;
                if (kind == NLMSG_DONE or kind == NLMSG_ERROR) return found;
                if (kind == SOCK_DIAG_BY_FAMILY) {
                    if (held(buf[at + 16 .. at + len], port)) |h| {
                        if (h.ip.v4 == want.v4 and std.mem.eql(u8, &h.ip.bytes, &want.bytes) and std.mem.indexOfScalar(u64, ours, h.inode) == null) found = true;
                    }
                }
                at += std.mem.alignForward(usize, len, 4);
            }
        }
    }

    /// The address and inode of one struct inet_diag_msg (72 bytes) if its socket is bound to
    /// `port`.
    fn held(m: []const u8, port: u16) ?struct { ip: Ip, inode: u64 } {
        if (m.len < 72) return null;
        const family = m[0];
        // idiag_sport, big endian, at the start of the sockid (offset 4).
        if (std.mem.readInt(u16, m[4..6], .big) != port) return null;
        var ip: Ip = .{ .v4 = false, .bytes = @splat(0), .dual = false };
        if (family == linux.AF.INET) {
            ip.v4 = true;
            ip.bytes[10] = 0xff;
            ip.bytes[11] = 0xff;
            @memcpy(ip.bytes[12..16], m[8..12]);
        } else {
            @memcpy(&ip.bytes, m[8..24]);
            ip.v4 = std.mem.eql(u8, ip.bytes[0..12], &Ip.v4_mapped_prefix);
        }
        return .{ .ip = ip, .inode = std.mem.readInt(u32, m[68..72], .little) };
    }
};

/// The port of an AF_INET or AF_INET6 sockaddr (same offset in both).
fn sockaddr_port(addr: *const anyopaque) u16 {
    const bytes: *const [4]u8 = @ptrCast(addr);
    return std.mem.readInt(u16, bytes[2..4], .big);
}

/// The local port of an inet socket, or a negative errno.
fn bound_port(fd: i32) i32 {
    var storage: linux.sockaddr.storage = undefined;
    var len: linux.socklen_t = @sizeOf(linux.sockaddr.storage);
    const e = errno_of(linux.getsockname(fd, @ptrCast(&storage), &len));
    if (e != 0) return e;
    const family = @as(*const u16, @ptrCast(&storage)).*;
    if (family != linux.AF.INET and family != linux.AF.INET6) return -@as(i32, @intFromEnum(linux.E.AFNOSUPPORT));
    return sockaddr_port(&storage);
}

/// Binds a throwaway socket to `addr` without SO_REUSEPORT (TCP: with SO_REUSEADDR, so that
/// connections in TIME_WAIT do not count): fails with EADDRINUSE where any socket, of any
/// process, holds the address. Returns 0 or a negative errno.
fn trial_bind(domain: u32, sock_type: u32, addr: *const anyopaque, addr_len: u32, flags: u32) i32 {
    const trial_flags = flags & (OpenFlags.v6_only | if (sock_type == linux.SOCK.STREAM) OpenFlags.reuse_addr else 0);
    const fd = open_plain(domain, sock_type, addr, addr_len, trial_flags, -1);
    if (fd < 0) return fd;
    _ = linux.close(fd);
    return 0;
}

fn open_plain(domain: u32, sock_type: u32, addr: *const anyopaque, addr_len: u32, flags: u32, backlog: i32) i32 {
    const fd = socket(domain, sock_type, 0);
    if (fd < 0) return fd;
    const rc = configure_and_bind(fd, domain, sock_type, addr, addr_len, flags, backlog);
    if (rc < 0) {
        _ = linux.close(fd);
        return rc;
    }
    return fd;
}

fn configure_and_bind(fd: i32, domain: u32, sock_type: u32, addr: *const anyopaque, addr_len: u32, flags: u32, backlog: i32) i32 {
    const steps = [_]struct { bit: u32, level: i32, name: u32, inet_only: bool }{
        .{ .bit = OpenFlags.reuse_addr, .level = linux.SOL.SOCKET, .name = linux.SO.REUSEADDR, .inet_only = false },
        .{ .bit = OpenFlags.reuse_port, .level = linux.SOL.SOCKET, .name = linux.SO.REUSEPORT, .inet_only = true },
        .{ .bit = OpenFlags.no_delay, .level = linux.IPPROTO.TCP, .name = linux.TCP.NODELAY, .inet_only = true },
    };
    const inet = domain == linux.AF.INET or domain == linux.AF.INET6;
    for (steps) |s| {
        if (flags & s.bit == 0) continue;
        if (s.inet_only and !inet) continue;
        if (s.level == linux.IPPROTO.TCP and sock_type != linux.SOCK.STREAM) continue;
        const e = set_int(fd, s.level, s.name, 1);
        if (e < 0) return e;
    }
    // IPv6: dual-stack or not is always said, never left to net.ipv6.bindv6only (where it is
    // 1, an unset option made every "dual-stack" socket IPv6-only).
    if (domain == linux.AF.INET6) {
        const e = set_int(fd, linux.IPPROTO.IPV6, ipv6_v6only, if (flags & OpenFlags.v6_only != 0) 1 else 0);
        if (e < 0) return e;
    }
    const e = errno_of(linux.bind(fd, @ptrCast(@alignCast(addr)), addr_len));
    if (e < 0 or backlog < 0) return e;
    return errno_of(linux.listen(fd, @intCast(backlog)));
}

/// Binds `fd` to the sockaddr at `addr` (connect's optional local address).
pub fn bind(fd: i32, addr: *const anyopaque, addr_len: u32) i32 {
    return errno_of(linux.bind(fd, @ptrCast(@alignCast(addr)), addr_len));
}

/// Writes the socket's local address into `out` (at most `cap` bytes). Returns its length.
pub fn local_address(fd: i32, out: [*]u8, cap: u32) i32 {
    var len: linux.socklen_t = cap;
    const e = errno_of(linux.getsockname(fd, @ptrCast(@alignCast(out)), &len));
    if (e != 0) return e;
    return @intCast(len);
}

/// Writes the connected peer's address into `out` (at most `cap` bytes). Returns its length.
pub fn peer_address(fd: i32, out: [*]u8, cap: u32) i32 {
    var len: linux.socklen_t = cap;
    const e = errno_of(linux.getpeername(fd, @ptrCast(@alignCast(out)), &len));
    if (e != 0) return e;
    return @intCast(len);
}

pub fn shutdown(fd: i32, how: i32) i32 {
    return errno_of(linux.shutdown(fd, how));
}

pub fn close(fd: i32) i32 {
    return errno_of(linux.close(fd));
}

/// Takes up to `out.len` connections whose handshake the kernel has completed (the listening
/// socket's accept queue) without waiting: the listener is made non-blocking first (it is
/// being closed; io_uring accepts on it are over). Accepted sockets are close-on-exec and
/// blocking, as the ring's accepts make them. Returns how many fds were written to `out`
/// (fewer than `out.len`: the queue is empty), or a negative errno when the first accept failed
/// for another reason than an empty queue. A peer that gave up (ECONNABORTED) is skipped;
/// running out of descriptors (EMFILE, ENFILE) or memory ends the call with what it has.
pub fn accept_pending(fd: i32, out: []i32) i32 {
    const flags = linux.fcntl(fd, linux.F.GETFL, 0);
    if (errno_of(flags) != 0) return errno_of(flags);
    const nonblock: usize = @as(u32, @bitCast(linux.O{ .NONBLOCK = true }));
    if (flags & nonblock == 0) {
        const e = errno_of(linux.fcntl(fd, linux.F.SETFL, flags | nonblock));
        if (e != 0) return e;
    }
    var n: usize = 0;
    while (n < out.len) {
        const rc = linux.accept4(fd, null, null, linux.SOCK.CLOEXEC);
        switch (linux.E.init(rc)) {
            .SUCCESS => {
                out[n] = @intCast(rc);
                n += 1;
            },
            .CONNABORTED, .INTR => continue,
            .AGAIN => break,
            else => |e| {
                if (n > 0) break;
                return -@as(i32, @intCast(@intFromEnum(e)));
            },
        }
    }
    return @intCast(n);
}

/// One step of a lingering close: discards whatever input is queued, without copying it
/// (MSG_TRUNC), then returns how many bytes the send queue still holds (unsent or not yet
/// acknowledged: SIOCOUTQ, capped to i32), or -1 once the peer has ended its side or the
/// socket failed (nothing more can arrive or be delivered). An end of stream that only says
/// this side shut its input (shutdown(SHUT_RD): recv() then returns 0 once the queue is empty,
/// though the peer may still send) is not the peer's: the TCP state tells them apart.
pub fn linger_step(fd: i32) i32 {
    const MSG_TRUNC: u32 = 0x20;
    const MSG_DONTWAIT: u32 = 0x40;
    const SIOCOUTQ: u32 = 0x5411;
    // Each call discards everything queued; a peer flooding faster than that cannot keep it here.
    // No buffer: with MSG_TRUNC TCP copies nothing, and the kernel checks only that the range
    // lies in user space; from address 0 a 1 GiB range always does (from a stack buffer near
    // the top of the address space it did not: EFAULT, taken as "the peer is done", and the
    // close never lingered).
    var rounds: u32 = 0;
    while (rounds < 64) : (rounds += 1) {
        const rc = linux.syscall6(.recvfrom, @as(usize, @bitCast(@as(isize, fd))), 0, 1 << 30, MSG_TRUNC | MSG_DONTWAIT, 0, 0);
        switch (linux.E.init(rc)) {
            .SUCCESS => if (rc == 0) {
                if (!peer_still_sending(fd)) return -1;
                break;
            },
            .AGAIN => break,
            .INTR => continue,
            else => return -1,
        }
    }
    var queued: i32 = 0;
    if (linux.E.init(linux.ioctl(fd, SIOCOUTQ, @intFromPtr(&queued))) != .SUCCESS) return -1;
    return @max(queued, 0);
}

/// True while the peer has not ended its side of TCP socket `fd` (ESTABLISHED, or FIN_WAIT1/2
/// after this side's FIN): what recv() reports as end of stream is then this side's SHUT_RD.
fn peer_still_sending(fd: i32) bool {
    const TCP_INFO: u32 = 11;
    // struct tcp_info starts with tcpi_state; the kernel copies as much as asked for.
    var info: [8]u8 = undefined;
    var len: linux.socklen_t = info.len;
    if (linux.E.init(linux.getsockopt(fd, linux.IPPROTO.TCP, TCP_INFO, &info, &len)) != .SUCCESS or len < 1) return false;
    const TCP_ESTABLISHED = 1;
    const TCP_FIN_WAIT1 = 4;
    const TCP_FIN_WAIT2 = 5;
    return info[0] == TCP_ESTABLISHED or info[0] == TCP_FIN_WAIT1 or info[0] == TCP_FIN_WAIT2;
}

/// SO_LINGER {on, seconds}; {1, 0} makes close() send RST instead of FIN.
pub fn set_linger(fd: i32, on: bool, seconds: i32) i32 {
    const Linger = extern struct { onoff: i32, linger: i32 };
    const value: Linger = .{ .onoff = @intFromBool(on), .linger = seconds };
    return errno_of(linux.setsockopt(fd, linux.SOL.SOCKET, linux.SO.LINGER, std.mem.asBytes(&value), @sizeOf(Linger)));
}

// ---------------------------------------------------------------------------------------------
// Provided-buffer rings

/// A provided-buffer ring and the buffers it hands to the kernel, as JS reads it (48 bytes).
/// JS recycles a buffer by writing its ring entry and publishing `tail` (a u16 at byte 14 of
/// the ring) with a release store: a few stores, no system call. All buffers start in the ring.
pub const BufRing = extern struct {
    /// The io_uring_buf entries (entries x 16 bytes, page aligned, shared with the kernel).
    ring_addr: u64,
    /// Buffer `bid` lives at bufs_addr + bid * buf_size.
    bufs_addr: u64,
    entries: u32,
    buf_size: u32,
    bgid: u32,
    ring_fd: i32,
    ring_bytes: u64,
    bufs_bytes: u64,

    comptime {
        assert(@sizeOf(BufRing) == 48);
    }

    fn entry(self: *BufRing, index: u32) *linux.io_uring_buf {
        const bufs: [*]linux.io_uring_buf = @ptrFromInt(self.ring_addr);
        return &bufs[index & (self.entries - 1)];
    }

    fn ring(self: *BufRing) *linux.io_uring_buf_ring {
        return @ptrFromInt(self.ring_addr);
    }

    /// Hands buffer `bid` back to the kernel (visible once `publish` runs).
    pub fn add(self: *BufRing, bid: u16, offset: u16) void {
        assert(bid < self.entries);
        const e = self.entry(self.ring().tail +% offset);
        e.addr = self.bufs_addr + @as(u64, bid) * self.buf_size;
        e.len = self.buf_size;
        e.bid = bid;
    }

    pub fn publish(self: *BufRing, count: u16) void {
        const r = self.ring();
        @atomicStore(u16, &r.tail, r.tail +% count, .release);
    }

    /// Recycles `bids` in one batch: the native counterpart of JS's in-place recycling.
    pub fn recycle(self: *BufRing, bids: []const u16) void {
        assert(bids.len <= self.entries);
        for (bids, 0..) |bid, i| self.add(bid, @intCast(i));
        self.publish(@intCast(bids.len));
    }

    pub fn buffer(self: *BufRing, bid: u16) []u8 {
        assert(bid < self.entries);
        const p: [*]u8 = @ptrFromInt(self.bufs_addr + @as(u64, bid) * self.buf_size);
        return p[0..self.buf_size];
    }
};

pub const BufRingError = error{ InvalidArgument, OutOfMemory, Register };

fn map_bytes(len: usize) ?u64 {
    const rc = linux.mmap(null, len, linux.PROT.READ | linux.PROT.WRITE, .{ .TYPE = .PRIVATE, .ANONYMOUS = true, .NORESERVE = true }, -1, 0);
    if (errno_of(rc) != 0) return null;
    return rc;
}

/// Maps room for `entries` buffers of `buf_size` bytes (address space only: pages are touched
/// as the kernel fills them) and a ring for them, registers the ring with io_uring `ring_fd` as
/// buffer group `bgid`, and puts the first `initial` buffers in it; JS adds the others when the
/// pool must grow, the same way it recycles. `register_errno` receives the kernel's errno when
/// registration fails.
pub fn buf_ring_create(ring_fd: i32, bgid: u16, entries: u32, buf_size: u32, initial: u32, register_errno: *i32) BufRingError!*BufRing {
    register_errno.* = 0;
    if (entries == 0 or entries > 32768 or !std.math.isPowerOfTwo(entries)) return error.InvalidArgument;
    if (initial == 0 or initial > entries) return error.InvalidArgument;
    if (buf_size == 0 or buf_size > 1 << 24 or buf_size % 64 != 0) return error.InvalidArgument;
    const page = std.heap.page_allocator;
    const self = page.create(BufRing) catch return error.OutOfMemory;
    errdefer page.destroy(self);
    const ring_bytes = std.mem.alignForward(usize, entries * @sizeOf(linux.io_uring_buf), 4096);
    const bufs_bytes = std.mem.alignForward(usize, @as(usize, entries) * buf_size, 4096);
    const ring_addr = map_bytes(ring_bytes) orelse return error.OutOfMemory;
    errdefer _ = linux.munmap(@ptrFromInt(ring_addr), ring_bytes);
    const bufs_addr = map_bytes(bufs_bytes) orelse return error.OutOfMemory;
    errdefer _ = linux.munmap(@ptrFromInt(bufs_addr), bufs_bytes);
    self.* = .{
        .ring_addr = ring_addr,
        .bufs_addr = bufs_addr,
        .entries = entries,
        .buf_size = buf_size,
        .bgid = bgid,
        .ring_fd = ring_fd,
        .ring_bytes = ring_bytes,
        .bufs_bytes = bufs_bytes,
    };
    var reg = std.mem.zeroInit(linux.io_uring_buf_reg, .{
        .ring_addr = ring_addr,
        .ring_entries = entries,
        .bgid = bgid,
        .flags = .{ .inc = false },
    });
    const rc = linux.io_uring_register(ring_fd, .REGISTER_PBUF_RING, @ptrCast(&reg), 1);
    if (errno_of(rc) != 0) {
        register_errno.* = errno_of(rc);
        return error.Register;
    }
    self.ring().tail = 0;
    var bid: u32 = 0;
    while (bid < initial) : (bid += 1) self.add(@intCast(bid), @intCast(bid));
    self.publish(@intCast(initial & 0xffff));
    return self;
}

/// Unregisters the ring (the kernel stops selecting from it) and unmaps its memory. Only when
/// no operation that selects from its group is in flight.
pub fn buf_ring_destroy(self: *BufRing) i32 {
    var reg = std.mem.zeroInit(linux.io_uring_buf_reg, .{ .bgid = @as(u16, @intCast(self.bgid)) });
    const e = errno_of(linux.io_uring_register(self.ring_fd, .UNREGISTER_PBUF_RING, @ptrCast(&reg), 1));
    _ = linux.munmap(@ptrFromInt(self.bufs_addr), self.bufs_bytes);
    _ = linux.munmap(@ptrFromInt(self.ring_addr), self.ring_bytes);
    std.heap.page_allocator.destroy(self);
    return e;
}

// ---------------------------------------------------------------------------------------------
// Tests

const testing = std.testing;
const IoUring = linux.IoUring;

fn loopback(port: u16) linux.sockaddr.in {
    return .{ .port = std.mem.nativeToBig(u16, port), .addr = std.mem.nativeToBig(u32, 0x7f00_0001) };
}

fn port_of(fd: i32) !u16 {
    var sa: linux.sockaddr.in = undefined;
    const len = local_address(fd, @ptrCast(&sa), @sizeOf(linux.sockaddr.in));
    try testing.expectEqual(@as(i32, @sizeOf(linux.sockaddr.in)), len);
    return std.mem.bigToNative(u16, sa.port);
}

test "open_socket listens with SO_REUSEPORT; two listeners share a port; NODELAY is inherited" {
    var sa = loopback(0);
    const flags = OpenFlags.reuse_port | OpenFlags.reuse_addr | OpenFlags.no_delay;
    const a = open_socket(linux.AF.INET, linux.SOCK.STREAM, &sa, @sizeOf(@TypeOf(sa)), flags, 128);
    try testing.expect(a >= 0);
    defer _ = close(a);
    const port = try port_of(a);
    try testing.expect(port != 0);
    try testing.expectEqual(@as(i32, 1), get_int(a, linux.SOL.SOCKET, linux.SO.REUSEPORT));

    sa = loopback(port);
    const b = open_socket(linux.AF.INET, linux.SOCK.STREAM, &sa, @sizeOf(@TypeOf(sa)), flags, 128);
    try testing.expect(b >= 0);
    defer _ = close(b);
    try testing.expectEqual(port, try port_of(b));

    // Without SO_REUSEPORT the same port is taken.
    const c = open_socket(linux.AF.INET, linux.SOCK.STREAM, &sa, @sizeOf(@TypeOf(sa)), 0, 128);
    try testing.expectEqual(-@as(i32, @intFromEnum(linux.E.ADDRINUSE)), c);

    // A client connects; whichever listener got it, the accepted socket has TCP_NODELAY.
    const client = socket(linux.AF.INET, linux.SOCK.STREAM, 0);
    try testing.expect(client >= 0);
    defer _ = close(client);
    try testing.expectEqual(@as(i32, 0), errno_of(linux.connect(client, &sa, @sizeOf(@TypeOf(sa)))));
    var fds = [_]linux.pollfd{ .{ .fd = a, .events = linux.POLL.IN, .revents = 0 }, .{ .fd = b, .events = linux.POLL.IN, .revents = 0 } };
    try testing.expectEqual(@as(usize, 1), linux.poll(&fds, 2, 1000));
    const ready = if (fds[0].revents != 0) a else b;
    const accepted = result_fd(linux.accept4(ready, null, null, linux.SOCK.CLOEXEC));
    try testing.expect(accepted >= 0);
    defer _ = close(accepted);
    try testing.expectEqual(@as(i32, 1), get_int(accepted, linux.IPPROTO.TCP, linux.TCP.NODELAY));

    // The peer address is the client's local address.
    var peer: linux.sockaddr.in = undefined;
    try testing.expectEqual(@as(i32, @sizeOf(linux.sockaddr.in)), peer_address(accepted, @ptrCast(&peer), @sizeOf(linux.sockaddr.in)));
    try testing.expectEqual(try port_of(client), std.mem.bigToNative(u16, peer.port));
}

/// "Another process": a SO_REUSEPORT listener on `ip` (host order), port picked by the kernel,
/// that this library did not open (not in its table).
fn foreign_listener(ip: u32) !i32 {
    const fd = socket(linux.AF.INET, linux.SOCK.STREAM, 0);
    try testing.expect(fd >= 0);
    errdefer _ = close(fd);
    try testing.expectEqual(@as(i32, 0), set_int(fd, linux.SOL.SOCKET, linux.SO.REUSEPORT, 1));
    var sa = loopback(0);
    sa.addr = std.mem.nativeToBig(u32, ip);
    try testing.expectEqual(@as(i32, 0), bind(fd, &sa, @sizeOf(@TypeOf(sa))));
    try testing.expectEqual(@as(usize, 0), linux.listen(fd, 16));
    return fd;
}

test "open_socket: a port another owner shares with SO_REUSEPORT is refused; this process's own sockets share it" {
    const foreign = try foreign_listener(0x7f00_0001);
    errdefer _ = close(foreign); // closed in the test (its fd number is then reused)
    const port = try port_of(foreign);
    var sa = loopback(port);
    const flags = OpenFlags.reuse_port | OpenFlags.reuse_addr;
    const refused = open_socket(linux.AF.INET, linux.SOCK.STREAM, &sa, @sizeOf(@TypeOf(sa)), flags, 16);
    try testing.expectEqual(-@as(i32, @intFromEnum(linux.E.ADDRINUSE)), refused);
    // UDP the same way (the trial has neither SO_REUSEADDR nor SO_REUSEPORT).
    const foreign_udp = socket(linux.AF.INET, linux.SOCK.DGRAM, 0);
    try testing.expect(foreign_udp >= 0);
    defer _ = close(foreign_udp);
    try testing.expectEqual(@as(i32, 0), set_int(foreign_udp, linux.SOL.SOCKET, linux.SO.REUSEPORT, 1));
    try testing.expectEqual(@as(i32, 0), bind(foreign_udp, &sa, @sizeOf(@TypeOf(sa))));
    try testing.expectEqual(-@as(i32, @intFromEnum(linux.E.ADDRINUSE)), open_socket(linux.AF.INET, linux.SOCK.DGRAM, &sa, @sizeOf(@TypeOf(sa)), OpenFlags.reuse_port, -1));

    // Once the foreign listener is gone, the first socket takes the port and later ones share it.
    _ = close(foreign);
    const a = open_socket(linux.AF.INET, linux.SOCK.STREAM, &sa, @sizeOf(@TypeOf(sa)), flags, 16);
    try testing.expect(a >= 0);
    defer _ = close(a);
    const b = open_socket(linux.AF.INET, linux.SOCK.STREAM, &sa, @sizeOf(@TypeOf(sa)), flags, 16);
    try testing.expect(b >= 0);
    defer _ = close(b);
    // A port picked by the kernel (port 0) is recorded under the port it got.
    var any = loopback(0);
    const c = open_socket(linux.AF.INET, linux.SOCK.STREAM, &any, @sizeOf(@TypeOf(any)), flags, 16);
    try testing.expect(c >= 0);
    defer _ = close(c);
    const c_port = try port_of(c);
    any = loopback(c_port);
    const d = open_socket(linux.AF.INET, linux.SOCK.STREAM, &any, @sizeOf(@TypeOf(any)), flags, 16);
    try testing.expect(d >= 0);
    _ = close(d);
    // A closed row is dropped: its fd number, reused by an unrelated socket, does not share.
    _ = close(c);
    const reused = socket(linux.AF.INET, linux.SOCK.STREAM, 0);
    try testing.expect(reused >= 0);
    defer _ = close(reused);
    try testing.expect(SharedPorts.holds(linux.SOCK.STREAM, port));
    try testing.expect(!SharedPorts.holds(linux.SOCK.STREAM, c_port));
}

test "open_socket: holding a port at one address does not share another process's socket at another address" {
    const foreign = try foreign_listener(0x7f00_0002);
    errdefer _ = close(foreign); // closed in the test (its fd number is then reused)
    const port = try port_of(foreign);
    var other = loopback(port);
    other.addr = std.mem.nativeToBig(u32, 0x7f00_0002);
    const flags = OpenFlags.reuse_port | OpenFlags.reuse_addr;
    // This process takes 127.0.0.1:P, and shares it with itself.
    var mine = loopback(port);
    const a = open_socket(linux.AF.INET, linux.SOCK.STREAM, &mine, @sizeOf(@TypeOf(mine)), flags, 16);
    try testing.expect(a >= 0);
    defer _ = close(a);
    const b = open_socket(linux.AF.INET, linux.SOCK.STREAM, &mine, @sizeOf(@TypeOf(mine)), flags, 16);
    try testing.expect(b >= 0);
    defer _ = close(b);
    // 127.0.0.2:P is the other process's: refused (it was shared, as the port was held here).
    try testing.expectEqual(-@as(i32, @intFromEnum(linux.E.ADDRINUSE)), open_socket(linux.AF.INET, linux.SOCK.STREAM, &other, @sizeOf(@TypeOf(other)), flags, 16));
    // Once it is gone, this process may take it.
    _ = close(foreign);
    const c = open_socket(linux.AF.INET, linux.SOCK.STREAM, &other, @sizeOf(@TypeOf(other)), flags, 16);
    try testing.expect(c >= 0);
    _ = close(c);
}

test "open_socket: another process's socket at the very address asked for is refused where one of ours only overlaps it" {
    const flags = OpenFlags.reuse_port | OpenFlags.reuse_addr;
    for ([_]u32{ linux.SOCK.STREAM, linux.SOCK.DGRAM }) |sock_type| {
        const backlog: i32 = if (sock_type == linux.SOCK.STREAM) 16 else -1;
        // Ours: 127.0.0.1:P (the port picked by the kernel).
        var mine = loopback(0);
        const a = open_socket(linux.AF.INET, sock_type, &mine, @sizeOf(@TypeOf(mine)), flags, backlog);
        try testing.expect(a >= 0);
        defer _ = close(a);
        const port = try port_of(a);
        mine = loopback(port);
        // Another process then joins the port at 0.0.0.0 (SO_REUSEPORT, the same user: the
        // kernel lets it, our socket being SO_REUSEPORT too).
        const foreign = socket(linux.AF.INET, sock_type, 0);
        try testing.expect(foreign >= 0);
        errdefer _ = close(foreign); // closed in the test (its fd number is then reused)
        try testing.expectEqual(@as(i32, 0), set_int(foreign, linux.SOL.SOCKET, linux.SO.REUSEPORT, 1));
        var any = loopback(port);
        any.addr = 0;
        try testing.expectEqual(@as(i32, 0), bind(foreign, &any, @sizeOf(@TypeOf(any))));
        if (sock_type == linux.SOCK.STREAM) try testing.expectEqual(@as(usize, 0), linux.listen(foreign, 16));
        // 0.0.0.0:P asked for: the trial fails on both sockets and ours overlaps the wildcard,
        // but the wildcard itself is the other's: joining it would share its connections.
        try testing.expectEqual(-@as(i32, @intFromEnum(linux.E.ADDRINUSE)), open_socket(linux.AF.INET, sock_type, &any, @sizeOf(@TypeOf(any)), flags, backlog));
        // 127.0.0.1:P is still ours to share (the other's wildcard is a group of its own).
        const b = open_socket(linux.AF.INET, sock_type, &mine, @sizeOf(@TypeOf(mine)), flags, backlog);
        try testing.expect(b >= 0);
        _ = close(b);
        // Once the other is gone, 0.0.0.0:P may be taken.
        _ = close(foreign);
        const c = open_socket(linux.AF.INET, sock_type, &any, @sizeOf(@TypeOf(any)), flags, backlog);
        try testing.expect(c >= 0);
        _ = close(c);
    }
}

test "SockDiag.foreign reads the whole socket table: a dump over many recv() calls, IPv6 and v4-mapped rows, our own inodes left out" {
    // Enough UDP sockets that the dump spans several 16 KiB reads (each row is 88 bytes).
    const n = 600;
    var fds: [n]i32 = undefined;
    var ports: [n]u16 = undefined;
    var opened: usize = 0;
    defer for (fds[0..opened]) |fd| {
        _ = close(fd);
    };
    while (opened < n) : (opened += 1) {
        const fd = socket(linux.AF.INET, linux.SOCK.DGRAM, 0);
        try testing.expect(fd >= 0);
        var sa = loopback(0);
        if (bind(fd, &sa, @sizeOf(@TypeOf(sa))) != 0) {
            _ = close(fd);
            return error.TestUnexpectedResult;
        }
        fds[opened] = fd;
        ports[opened] = try port_of(fd);
    }
    var sa = loopback(0);
    const want = Ip.of(&sa, false);
    for (fds, ports) |fd, port| {
        var w = want;
        // Found by port and address (0 inodes of ours), and not once its inode is ours.
        try testing.expect(SockDiag.foreign(linux.AF.INET, linux.IPPROTO.UDP, port, &.{}, w));
        const ino = socket_inode(fd).?;
        try testing.expect(!SockDiag.foreign(linux.AF.INET, linux.IPPROTO.UDP, port, &.{ino}, w));
        // Another address on that port is not this socket.
        w.bytes[15] = 2;
        try testing.expect(!SockDiag.foreign(linux.AF.INET, linux.IPPROTO.UDP, port, &.{}, w));
    }
    // An IPv6 socket bound to the v4-mapped loopback is found as 127.0.0.1; [::1] as itself.
    for ([_]u8{ 0xff, 0 }) |mapped| {
        const fd = socket(linux.AF.INET6, linux.SOCK.STREAM, 0);
        try testing.expect(fd >= 0);
        defer _ = close(fd);
        var a6 = std.mem.zeroInit(linux.sockaddr.in6, .{ .family = linux.AF.INET6 });
        if (mapped != 0) {
            a6.addr = .{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1 };
        } else {
            a6.addr[15] = 1;
        }
        try testing.expectEqual(@as(i32, 0), bind(fd, &a6, @sizeOf(@TypeOf(a6))));
        try testing.expectEqual(@as(usize, 0), linux.listen(fd, 4));
        var got: linux.sockaddr.in6 = undefined;
        try testing.expect(local_address(fd, @ptrCast(&got), @sizeOf(linux.sockaddr.in6)) > 0);
        const port = std.mem.bigToNative(u16, got.port);
        a6.port = got.port;
        const asked = if (mapped != 0) Ip.of(&loopback(port), false) else Ip.of(&a6, false);
        try testing.expect(SockDiag.foreign(linux.AF.INET6, linux.IPPROTO.TCP, port, &.{}, asked));
        try testing.expect(!SockDiag.foreign(linux.AF.INET, linux.IPPROTO.TCP, port, &.{}, asked));
        try testing.expect(!SockDiag.foreign(linux.AF.INET6, linux.IPPROTO.TCP, port, &.{socket_inode(fd).?}, asked));
    }
}

test "Ip.overlaps: what a bind conflict means for IPv4, IPv6, wildcards and dual-stack" {
    var v4: linux.sockaddr.in = loopback(1);
    const l4 = Ip.of(&v4, false);
    v4.addr = 0;
    const any4 = Ip.of(&v4, false);
    var v6 = std.mem.zeroInit(linux.sockaddr.in6, .{ .family = linux.AF.INET6, .port = 1 });
    const any6_dual = Ip.of(&v6, false);
    const any6_only = Ip.of(&v6, true);
    v6.addr[15] = 1;
    const l6 = Ip.of(&v6, false);
    v6.addr = .{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1 };
    const mapped = Ip.of(&v6, false);
    try testing.expect(l4.overlaps(any4) and any4.overlaps(l4) and l4.overlaps(l4));
    try testing.expect(l4.overlaps(any6_dual) and !l4.overlaps(any6_only) and !l4.overlaps(l6));
    try testing.expect(l6.overlaps(any6_only) and l6.overlaps(any6_dual) and !l6.overlaps(any4));
    try testing.expect(mapped.overlaps(l4) and mapped.overlaps(any4) and !mapped.overlaps(l6));
}

test "open_socket reports bind errors and closes the socket" {
    var sa = loopback(0);
    sa.addr = std.mem.nativeToBig(u32, 0x0102_0304); // not a local address
    const rc = open_socket(linux.AF.INET, linux.SOCK.STREAM, &sa, @sizeOf(@TypeOf(sa)), 0, 16);
    try testing.expectEqual(-@as(i32, @intFromEnum(linux.E.ADDRNOTAVAIL)), rc);
}

test "accept_pending takes the accept queue without waiting, in batches, then reports it empty" {
    var sa = loopback(0);
    const l = open_socket(linux.AF.INET, linux.SOCK.STREAM, &sa, @sizeOf(@TypeOf(sa)), 0, 16);
    try testing.expect(l >= 0);
    defer _ = close(l);
    sa = loopback(try port_of(l));
    var clients: [3]i32 = undefined;
    for (&clients) |*c| {
        c.* = socket(linux.AF.INET, linux.SOCK.STREAM, 0);
        try testing.expect(c.* >= 0);
        // Loopback: connect returns once the handshake is done and the peer sits in the queue.
        try testing.expectEqual(@as(i32, 0), errno_of(linux.connect(c.*, &sa, @sizeOf(@TypeOf(sa)))));
    }
    defer for (clients) |c| {
        _ = close(c);
    };
    var out: [2]i32 = undefined;
    try testing.expectEqual(@as(i32, 2), accept_pending(l, &out));
    _ = close(out[0]);
    _ = close(out[1]);
    try testing.expectEqual(@as(i32, 1), accept_pending(l, &out));
    // Blocking and close-on-exec, as the ring's accepts make them.
    const fl = linux.fcntl(out[0], linux.F.GETFL, 0);
    try testing.expectEqual(@as(usize, 0), fl & @as(u32, @bitCast(linux.O{ .NONBLOCK = true })));
    try testing.expectEqual(@as(usize, linux.FD_CLOEXEC), linux.fcntl(out[0], linux.F.GETFD, 0));
    _ = close(out[0]);
    // Empty: no wait, no error.
    try testing.expectEqual(@as(i32, 0), accept_pending(l, &out));
    // Not a listening socket: the accept's own error.
    try testing.expectEqual(-@as(i32, @intFromEnum(linux.E.INVAL)), accept_pending(clients[0], &out));
    try testing.expectEqual(-@as(i32, @intFromEnum(linux.E.BADF)), accept_pending(9999, &out));
}

test "socket options: keepalive, linger, shutdown" {
    const fd = socket(linux.AF.INET, linux.SOCK.STREAM, 0);
    try testing.expect(fd >= 0);
    defer _ = close(fd);
    try testing.expectEqual(@as(i32, 0), set_int(fd, linux.SOL.SOCKET, linux.SO.KEEPALIVE, 1));
    try testing.expectEqual(@as(i32, 0), set_int(fd, linux.IPPROTO.TCP, linux.TCP.KEEPIDLE, 30));
    try testing.expectEqual(@as(i32, 1), get_int(fd, linux.SOL.SOCKET, linux.SO.KEEPALIVE));
    try testing.expectEqual(@as(i32, 30), get_int(fd, linux.IPPROTO.TCP, linux.TCP.KEEPIDLE));
    try testing.expectEqual(@as(i32, 0), set_linger(fd, true, 0));
    try testing.expectEqual(-@as(i32, @intFromEnum(linux.E.NOTCONN)), shutdown(fd, linux.SHUT.WR));
    try testing.expect(get_int(-1, linux.SOL.SOCKET, linux.SO.KEEPALIVE) < 0);
}

fn wait_cqe(ring: *IoUring) !linux.io_uring_cqe {
    return ring.copy_cqe();
}

test "multishot recv draws from a provided-buffer ring, ends with ENOBUFS, resumes after recycling" {
    var ring = try IoUring.init(8, 0);
    defer ring.deinit();
    var err: i32 = 0;
    const br = try buf_ring_create(ring.fd, 3, 4, 64, 4, &err);
    defer _ = buf_ring_destroy(br);
    try testing.expectEqual(@as(u16, 4), @as(*linux.io_uring_buf_ring, @ptrFromInt(br.ring_addr)).tail);

    var pair: [2]i32 = undefined;
    try testing.expectEqual(@as(i32, 0), errno_of(linux.socketpair(linux.AF.UNIX, linux.SOCK.SEQPACKET | linux.SOCK.CLOEXEC, 0, &pair)));
    defer _ = close(pair[0]);
    defer _ = close(pair[1]);

    const arm = struct {
        fn arm(r: *IoUring, fd: i32) !void {
            const sqe = try r.get_sqe();
            sqe.prep_rw(.RECV, fd, 0, 0, 0);
            sqe.flags |= linux.IOSQE_BUFFER_SELECT;
            sqe.buf_index = 3;
            sqe.ioprio |= linux.IORING_RECV_MULTISHOT;
            sqe.user_data = 42;
            _ = try r.submit();
        }
    }.arm;
    try arm(&ring, pair[1]);

    // Five messages, four buffers: four CQEs with data (F_MORE), then a final ENOBUFS.
    var seen: [4]u16 = undefined;
    for (0..5) |i| {
        const msg = [_]u8{ 'm', @intCast('0' + i) };
        try testing.expectEqual(@as(usize, 2), linux.write(pair[0], &msg, 2));
    }
    for (0..4) |i| {
        const cqe = try wait_cqe(&ring);
        try testing.expectEqual(@as(i32, 2), cqe.res);
        try testing.expect(cqe.flags & linux.IORING_CQE_F_BUFFER != 0);
        try testing.expect(cqe.flags & linux.IORING_CQE_F_MORE != 0);
        const bid: u16 = @intCast(cqe.flags >> linux.IORING_CQE_BUFFER_SHIFT);
        try testing.expectEqual(@as(u8, @intCast('0' + i)), br.buffer(bid)[1]);
        seen[i] = bid;
    }
    const last = try wait_cqe(&ring);
    try testing.expectEqual(-@as(i32, @intFromEnum(linux.E.NOBUFS)), last.res);
    try testing.expect(last.flags & linux.IORING_CQE_F_MORE == 0);

    // Recycle two buffers in one batch and re-arm: the fifth message arrives.
    br.recycle(seen[0..2]);
    try arm(&ring, pair[1]);
    const cqe = try wait_cqe(&ring);
    try testing.expectEqual(@as(i32, 2), cqe.res);
    const bid: u16 = @intCast(cqe.flags >> linux.IORING_CQE_BUFFER_SHIFT);
    try testing.expect(bid == seen[0] or bid == seen[1]);
    try testing.expectEqual(@as(u8, '4'), br.buffer(bid)[1]);
}

test "a multishot recv with a total length limit ends once the limit is reached (newer kernels)" {
    var ring = try IoUring.init(8, 0);
    defer ring.deinit();
    var err: i32 = 0;
    const br = try buf_ring_create(ring.fd, 5, 64, 64, 64, &err);
    defer _ = buf_ring_destroy(br);
    var pair: [2]i32 = undefined;
    try testing.expectEqual(@as(i32, 0), errno_of(linux.socketpair(linux.AF.UNIX, linux.SOCK.STREAM | linux.SOCK.CLOEXEC, 0, &pair)));
    defer _ = close(pair[0]);
    defer _ = close(pair[1]);
    var data: [1000]u8 = undefined;
    @memset(&data, 'a');
    try testing.expectEqual(@as(usize, 1000), linux.write(pair[0], &data, data.len));
    const sqe = try ring.get_sqe();
    sqe.prep_rw(.RECV, pair[1], 0, 0, 0);
    sqe.flags |= linux.IOSQE_BUFFER_SELECT;
    sqe.buf_index = 5;
    sqe.ioprio |= linux.IORING_RECV_MULTISHOT;
    sqe.splice_fd_in = 200; // sqe->optlen: stop after 200 bytes
    sqe.user_data = 1;
    _ = try ring.submit();
    var total: i32 = 0;
    while (true) {
        const cqe = try ring.copy_cqe();
        if (cqe.res == -@as(i32, @intFromEnum(linux.E.INVAL))) return error.SkipZigTest; // kernel without the limit
        try testing.expect(cqe.res > 0);
        total += cqe.res;
        if (cqe.flags & linux.IORING_CQE_F_MORE == 0) break;
    }
    // It stops at the first buffer that reaches the limit: at most one buffer past it.
    try testing.expect(total >= 200 and total < 200 + 64);
}

test "buf_ring_create validates its arguments and reports a duplicate group" {
    var ring = try IoUring.init(4, 0);
    defer ring.deinit();
    var err: i32 = 0;
    try testing.expectError(error.InvalidArgument, buf_ring_create(ring.fd, 0, 3, 64, 3, &err));
    try testing.expectError(error.InvalidArgument, buf_ring_create(ring.fd, 0, 4, 60, 4, &err));
    try testing.expectError(error.InvalidArgument, buf_ring_create(ring.fd, 0, 4, 64, 5, &err));
    const a = try buf_ring_create(ring.fd, 1, 4, 64, 2, &err);
    defer _ = buf_ring_destroy(a);
    try testing.expectEqual(@as(u16, 2), @as(*linux.io_uring_buf_ring, @ptrFromInt(a.ring_addr)).tail);
    try testing.expectError(error.Register, buf_ring_create(ring.fd, 1, 4, 64, 4, &err));
    try testing.expectEqual(-@as(i32, @intFromEnum(linux.E.EXIST)), err);
}
