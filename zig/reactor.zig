//! One io_uring per shard. JS writes operation descriptors (`Op`) into a native array,
//! calls `turn` once per loop iteration, and reads the copied-out completions (`Completion`)
//! from another native array. Native code never calls into JS.
const std = @import("std");
const builtin = @import("builtin");
const linux = std.os.linux;
const IoUring = linux.IoUring;
const assert = std.debug.assert;

/// An operation descriptor, written by JS through long-lived typed-array views.
/// It mirrors an SQE closely so that new io_uring operations need no native changes:
/// `opcode` is the kernel's IORING_OP number and the generic fields map one to one.
/// 64-bit fields are f64 so JS can store pointers and offsets without BigInt (exact below 2^53);
/// a negative `off` means "-1" (the file position) for read/write.
pub const Op = extern struct {
    opcode: u8,
    sqe_flags: u8,
    ioprio: u16,
    fd: i32,
    slot: u32,
    len: u32,
    op_flags: u32,
    buf: u16,
    personality: u16,
    file_index: u32,
    _reserved: u32,
    addr: f64,
    off: f64,
    /// TIMEOUT: seconds; other ops: SQE addr3.
    aux: f64,
    /// TIMEOUT: nanoseconds.
    aux2: f64,

    comptime {
        assert(@sizeOf(Op) == 64);
    }
};

/// A completion as JS reads it: slot (low 32 bits of user_data), result, CQE flags.
pub const Completion = extern struct {
    slot: u32,
    res: i32,
    flags: u32,
    _reserved: u32,

    comptime {
        assert(@sizeOf(Completion) == 16);
    }
};

/// Reactor counters, read by JS as a Float64Array-free BigUint64 view (rarely) or via `counters`.
pub const Counters = extern struct {
    turns: u64 = 0,
    enters: u64 = 0,
    sleeps: u64 = 0,
    submitted: u64 = 0,
    completed: u64 = 0,
    timeouts_armed: u64 = 0,
    wakes: u64 = 0,
    busy_retries: u64 = 0,
    /// Wakes of other reactors sent as ring messages (msg_wake).
    ring_wakes_sent: u64 = 0,
};

/// Facts about this reactor that JS reads once, and `ops_left`, which it reads after a turn.
pub const Info = extern struct {
    sq_capacity: u32,
    cq_capacity: u32,
    setup_flags: u32,
    features: u32,
    eventfd: i32,
    ring_fd: i32,
    /// Descriptors of the last `turn` that the kernel would not take (its SQ stayed full:
    /// the completion queue is backed up). They were moved to the front of `ops`, in order,
    /// for the caller to submit with the next turn.
    ops_left: u32,
};

/// user_data values at or above this are the reactor's own; JS slots are u32.
const internal_user_data: u64 = 1 << 32;
const wake_user_data: u64 = internal_user_data | 1;
/// The sleep timer (a TIMEOUT operation that ends waits) and the updates that move it.
const sleep_timer_user_data: u64 = internal_user_data | 2;
const sleep_update_user_data: u64 = internal_user_data | 3;
/// A wake sent by another reactor's MSG_RING (no eventfd involved).
const ring_wake_user_data: u64 = internal_user_data | 4;
/// The nops of bench_nops (never delivered).
const bench_user_data: u64 = internal_user_data | 5;
/// Our own MSG_RING wakes report only failures; their user_data carries the target's eventfd
/// (below 2^24) so that a failed one falls back to writing it.
const msg_wake_tag: u64 = internal_user_data | (1 << 24);
/// A sleep timer due at most this much after the wanted deadline is kept as it is.
const sleep_slack_us: f64 = 20;

pub const CreateError = error{
    IoUringUnsupported,
    IoUringPermission,
    IoUringMemory,
    IoUringFdLimit,
    IoUringInvalid,
    IoUringNoExtArg,
    EventFd,
    OutOfMemory,
};

/// Setup flag sets tried in order: the fastest first, then what older kernels accept.
const setup_attempts = [_]u32{
    linux.IORING_SETUP_SINGLE_ISSUER | linux.IORING_SETUP_DEFER_TASKRUN |
        linux.IORING_SETUP_TASKRUN_FLAG | linux.IORING_SETUP_SUBMIT_ALL,
    linux.IORING_SETUP_COOP_TASKRUN | linux.IORING_SETUP_TASKRUN_FLAG | linux.IORING_SETUP_SUBMIT_ALL,
    linux.IORING_SETUP_SUBMIT_ALL,
    0,
};

/// Every reactor lives in this table, not on the heap, so that `Reactor.live` can tell a handle
/// from JS that names one from a null, stray or destroyed one (a destroyed reactor's page was
/// unmapped: any use was a SIGSEGV) without a lookup. Far more than shards on any machine.
const table_capacity = 1024;
const slot_free: u8 = 0;
const slot_live: u8 = 1;
var table: [table_capacity]Reactor = undefined;

comptime {
    assert(@sizeOf(Reactor) % 128 == 0); // no cache line shared between two shards' reactors
}
var table_state: [table_capacity]std.atomic.Value(u8) = @splat(.init(slot_free));
/// Where the next claim starts looking: slots are reused round-robin, the longest possible
/// after their reactor was destroyed. Reactors are created on many threads (one per shard).
var table_cursor: std.atomic.Value(u32) = .init(0);

fn table_claim() ?*Reactor {
    const start = table_cursor.load(.monotonic);
    for (0..table_capacity) |i| {
        const index = (start +% @as(u32, @intCast(i))) % table_capacity;
        if (table_state[index].cmpxchgStrong(slot_free, slot_live, .acquire, .monotonic) == null) {
            table_cursor.store(@intCast((index + 1) % table_capacity), .monotonic);
            return &table[index];
        }
    }
    return null;
}

fn table_index(self: *const Reactor) usize {
    return (@intFromPtr(self) - @intFromPtr(&table)) / @sizeOf(Reactor);
}

fn table_release(self: *Reactor) void {
    const index = table_index(self);
    assert(table_state[index].load(.monotonic) == slot_live);
    table_state[index].store(slot_free, .release);
}

/// The eventfd of each live reactor by table slot (-1: none), side by side so that `owns_eventfd`
/// reads 4 KiB rather than a cache line of every reactor. Written by the slot's owner only.
var table_eventfds: [table_capacity]std.atomic.Value(i32) = @splat(.init(-1));
/// One past the highest slot whose eventfd was ever set: `owns_eventfd` scans only that far (the
/// slots of this process's shards, not the whole table, on a wake's path).
var table_eventfds_high: std.atomic.Value(u32) = .init(0);

pub const Reactor = struct {
    /// Aligned (so the whole struct is, and sized to match) to a pair of cache lines: reactors
    /// sit side by side in `table`, each written by its own shard's thread on every turn.
    ring: IoUring align(128),
    ops: []Op,
    cqes: []linux.io_uring_cqe,
    out: []Completion,
    /// The timespec of each SQ entry's TIMEOUT/LINK_TIMEOUT (indexed like the SQE array). The
    /// kernel reads it when it takes the SQE, which an enter that took nothing (EBUSY) puts
    /// off to a later turn, after JS may have reused the descriptor: the SQE's own slot of
    /// this array stays untouched until the kernel has taken that SQE.
    timespecs: []linux.kernel_timespec,
    counters: Counters,
    info: Info,
    eventfd: i32,
    wake_buffer: u64,
    wake_armed: bool,
    /// Waits end at a TIMEOUT operation that stays armed across turns, not at a timeout of
    /// their own: arming and cancelling a kernel timer on every sleep reprograms the CPU's
    /// timer twice per wait (a VM exit each on a virtual machine, ~0.4 µs per message in the
    /// one-connection echo). The timer is re-armed only once it fired, and moved only when a
    /// wait must end earlier than it.
    sleep_timer_armed: bool,
    /// When the armed sleep timer fires, in the caller's clock (µs; the `now_us` of `turn`).
    sleep_deadline_us: f64,
    sleep_ts: linux.kernel_timespec,
    /// The SQ tail just past the sleep timer's last SQE (see sleep_sqe_taken).
    sleep_sqe_end: u32,
    /// Cleared if the kernel refuses to move a timer: waits then carry their own timeout.
    sleep_timer_usable: bool,
    /// Tests only: this many enters act as if the kernel answered EBUSY (took nothing).
    test_busy_enters: u32 = 0,
    /// Tests only: the next enter fails with this errno (0: none), taking nothing.
    test_fail_errno: u16 = 0,
    /// Tests only: enters take at most this many SQEs (0: no limit), as a kernel short of
    /// requests does; like the kernel's short submit, such an enter does not wait.
    test_submit_limit: u32 = 0,
    /// Completions copied out of the kernel ring but not yet handed to JS (out was full).
    backlog_start: u32,
    backlog_count: u32,

    pub fn create(sq_entries: u16, cq_capacity: u32) CreateError!*Reactor {
        assert(std.math.isPowerOfTwo(sq_entries));
        assert(cq_capacity >= sq_entries);
        const allocator = std.heap.page_allocator;
        const self = table_claim() orelse return error.OutOfMemory;
        errdefer table_release(self);

        var last_error: CreateError = error.IoUringInvalid;
        var ring: ?IoUring = null;
        for (setup_attempts) |flags| {
            var params = std.mem.zeroInit(linux.io_uring_params, .{
                .flags = flags | linux.IORING_SETUP_CQSIZE,
                .cq_entries = cq_capacity,
            });
            if (IoUring.init_params(sq_entries, &params)) |r| {
                ring = r;
                break;
            } else |err| {
                last_error = switch (err) {
                    error.ArgumentsInvalid => error.IoUringInvalid,
                    error.PermissionDenied => return error.IoUringPermission,
                    error.SystemOutdated => return error.IoUringUnsupported,
                    error.SystemResources => return error.IoUringMemory,
                    error.ProcessFdQuotaExceeded, error.SystemFdQuotaExceeded => return error.IoUringFdLimit,
                    else => error.IoUringInvalid,
                };
            }
        }
        self.ring = ring orelse return last_error;
        errdefer self.ring.deinit();
        if (self.ring.features & linux.IORING_FEAT_EXT_ARG == 0) return error.IoUringNoExtArg;

        self.ops = try allocator.alloc(Op, self.ring.sq.sqes.len);
        errdefer allocator.free(self.ops);
        self.cqes = try allocator.alloc(linux.io_uring_cqe, self.ring.cq.cqes.len);
        errdefer allocator.free(self.cqes);
        self.out = try allocator.alloc(Completion, self.ring.cq.cqes.len);
        errdefer allocator.free(self.out);
        self.timespecs = try allocator.alloc(linux.kernel_timespec, self.ring.sq.sqes.len);
        errdefer allocator.free(self.timespecs);
        @memset(std.mem.sliceAsBytes(self.ops), 0);
        @memset(std.mem.sliceAsBytes(self.out), 0);

        const efd = linux.eventfd(0, linux.EFD.CLOEXEC | linux.EFD.NONBLOCK);
        if (linux.E.init(efd) != .SUCCESS) return error.EventFd;
        self.eventfd = @intCast(efd);
        table_eventfds[table_index(self)].store(self.eventfd, .release);
        _ = table_eventfds_high.fetchMax(@intCast(table_index(self) + 1), .release);
        self.counters = .{};
        self.wake_buffer = 0;
        self.wake_armed = false;
        self.sleep_timer_armed = false;
        self.sleep_deadline_us = 0;
        self.sleep_ts = .{ .sec = 0, .nsec = 0 };
        self.sleep_sqe_end = 0;
        self.sleep_timer_usable = true;
        self.test_busy_enters = 0;
        self.test_fail_errno = 0;
        self.test_submit_limit = 0;
        self.backlog_start = 0;
        self.backlog_count = 0;
        self.info = .{
            .sq_capacity = @intCast(self.ops.len),
            .cq_capacity = @intCast(self.out.len),
            .setup_flags = self.ring.flags,
            .features = self.ring.features,
            .eventfd = self.eventfd,
            .ring_fd = self.ring.fd,
            .ops_left = 0,
        };
        return self;
    }

    pub fn destroy(self: *Reactor) void {
        const allocator = std.heap.page_allocator;
        self.ring.deinit();
        // Forgotten before it is closed: from then on its number may name another file.
        table_eventfds[table_index(self)].store(-1, .release);
        _ = linux.close(self.eventfd);
        allocator.free(self.ops);
        allocator.free(self.cqes);
        allocator.free(self.out);
        allocator.free(self.timespecs);
        table_release(self);
    }

    /// The live reactor a handle from JS names, or null for a handle that names none: null,
    /// misaligned, outside the table, or a reactor already destroyed (its slot is not handed out
    /// again until every other slot was, so a stale handle reads as dead, not as a new reactor).
    /// O(1): a range check and one load, cheap enough for every turn.
    pub fn live(address: usize) ?*Reactor {
        const base = @intFromPtr(&table);
        if (address < base or address - base >= @sizeOf(@TypeOf(table))) return null;
        if ((address - base) % @sizeOf(Reactor) != 0) return null;
        const index = (address - base) / @sizeOf(Reactor);
        if (table_state[index].load(.acquire) != slot_live) return null;
        return &table[index];
    }

    /// A descriptor's number field as the SQE's u64. JS passes any double: out of range (beyond
    /// ±2^63 / 2^64, ±Infinity) or NaN would be undefined behaviour for @intFromFloat, so those
    /// become all ones, which the kernel refuses (EINVAL/EFAULT) instead of getting garbage.
    fn f64_to_u64(value: f64) u64 {
        if (value >= 0) {
            if (value < 0x1p64) return @intFromFloat(value);
        } else if (value >= -0x1p63) {
            return @bitCast(@as(i64, @intFromFloat(value)));
        }
        return std.math.maxInt(u64);
    }

    /// A timespec field from JS: NaN, negative or past i64 clamps (the kernel rejects a
    /// negative one with EINVAL).
    fn f64_to_i64_clamped(value: f64) i64 {
        if (!(value >= -0x1p63)) return -1;
        if (value >= 0x1p63) return std.math.maxInt(i64);
        return @intFromFloat(value);
    }

    fn prep(self: *Reactor, op: *const Op, sqe: *linux.io_uring_sqe) void {
        sqe.* = .{
            .opcode = @enumFromInt(op.opcode),
            .flags = op.sqe_flags,
            .ioprio = op.ioprio,
            .fd = op.fd,
            .off = f64_to_u64(op.off),
            .addr = f64_to_u64(op.addr),
            .len = op.len,
            .rw_flags = op.op_flags,
            .user_data = op.slot,
            .buf_index = op.buf,
            .personality = op.personality,
            .splice_fd_in = @bitCast(op.file_index),
            .addr3 = f64_to_u64(op.aux),
            .resv = 0,
        };
        const opcode: linux.IORING_OP = @enumFromInt(op.opcode);
        if (opcode == .TIMEOUT or opcode == .LINK_TIMEOUT) {
            // The kernel copies the timespec when it takes the SQE: kept with the SQE's slot.
            const index = (@intFromPtr(sqe) - @intFromPtr(self.ring.sq.sqes.ptr)) / @sizeOf(linux.io_uring_sqe);
            const ts = &self.timespecs[index];
            const sec: i64 = f64_to_i64_clamped(op.aux);
            const nsec: i64 = f64_to_i64_clamped(op.aux2);
            ts.* = .{ .sec = sec, .nsec = nsec };
            sqe.addr = @intFromPtr(ts);
            sqe.addr3 = 0;
            sqe.len = 1;
            sqe.off = op.len; // completion count: JS passes it in len
            if (op.len == 0) sqe.off = 0;
        }
    }

    fn arm_wake(self: *Reactor) bool {
        const sqe = self.ring.get_sqe() catch return false;
        sqe.prep_read(self.eventfd, std.mem.asBytes(&self.wake_buffer), 0);
        sqe.user_data = wake_user_data;
        self.wake_armed = true;
        return true;
    }

    fn set_sleep_ts(self: *Reactor, wait_us: u32) void {
        self.sleep_ts = .{ .sec = @intCast(wait_us / 1_000_000), .nsec = @intCast((wait_us % 1_000_000) * 1000) };
    }

    /// True once the kernel took the sleep timer's last SQE (its TIMEOUT, or an update), and
    /// with it `sleep_ts`. Only this reactor's enters move the SQ head: exact between turns.
    fn sleep_sqe_taken(self: *Reactor) bool {
        const head = @atomicLoad(u32, self.ring.sq.head, .acquire);
        return @as(i32, @bitCast(head -% self.sleep_sqe_end)) >= 0;
    }

    /// Makes sure the sleep timer fires by `now_us + wait_us` (plus the slack). Returns false
    /// if it cannot (no free SQE, or the kernel refused an update): the wait then carries its
    /// own timeout.
    fn arm_sleep_timer(self: *Reactor, wait_us: u32, now_us: f64) bool {
        if (!self.sleep_timer_usable) return false;
        const want = now_us + @as(f64, @floatFromInt(wait_us));
        if (self.sleep_timer_armed and !self.sleep_sqe_taken()) {
            // Its SQE still waits in the SQ (an enter took nothing, or too little), and the
            // kernel counts its time from when it takes it: set for this wait instead. Left as
            // it was, it fired as much later than `sleep_deadline_us` as it had waited there,
            // and every wait that kept it ran past its end.
            self.set_sleep_ts(wait_us);
            self.sleep_deadline_us = want;
            return true;
        }
        if (self.sleep_timer_armed and self.sleep_deadline_us <= want + sleep_slack_us) return true;
        const sqe = self.ring.get_sqe() catch return false;
        self.sleep_sqe_end = self.ring.sq.sqe_tail;
        // The kernel copies the timespec while it prepares the SQE, inside this turn's enter.
        self.set_sleep_ts(wait_us);
        if (self.sleep_timer_armed) {
            // Due too late for this wait (a nearer timer): move it (5.11+, relative to now).
            sqe.prep_timeout_remove(sleep_timer_user_data, linux.IORING_TIMEOUT_UPDATE);
            sqe.off = @intFromPtr(&self.sleep_ts);
            sqe.user_data = sleep_update_user_data;
            // A completion of its own would end the very wait it is for (5.17+).
            sqe.flags |= linux.IOSQE_CQE_SKIP_SUCCESS;
        } else {
            sqe.prep_timeout(&self.sleep_ts, 0, 0);
            sqe.user_data = sleep_timer_user_data;
            self.sleep_timer_armed = true;
        }
        self.sleep_deadline_us = want;
        self.counters.timeouts_armed += 1;
        return true;
    }

    /// Enters the kernel: submits what is queued, runs deferred task work and, when
    /// `wait_us` > 0, waits for one completion for at most `wait_us` (the sleep timer, or a
    /// timeout of the wait's own).
    fn enter(self: *Reactor, wait_us: u32, now_us: f64) i32 {
        const timer = wait_us > 0 and self.arm_sleep_timer(wait_us, now_us);
        const to_submit = self.ring.flush_sq();
        var flags: u32 = linux.IORING_ENTER_GETEVENTS;
        var min_complete: u32 = 0;
        var ts: linux.kernel_timespec = undefined;
        var arg: linux.io_uring_getevents_arg = .{ .sigmask = 0, .sigmask_sz = 0, .pad = 0, .ts = 0 };
        const own_timeout = wait_us > 0 and !timer;
        if (wait_us > 0) {
            min_complete = 1;
            self.counters.sleeps += 1;
        }
        if (own_timeout) {
            ts = .{ .sec = @intCast(wait_us / 1_000_000), .nsec = @intCast((wait_us % 1_000_000) * 1000) };
            arg.ts = @intFromPtr(&ts);
            flags |= linux.IORING_ENTER_EXT_ARG;
            self.counters.timeouts_armed += 1;
        }
        if (builtin.is_test and self.test_busy_enters > 0) {
            self.test_busy_enters -= 1;
            self.counters.busy_retries += 1;
            return 0;
        }
        if (builtin.is_test and self.test_fail_errno != 0) {
            const e = self.test_fail_errno;
            self.test_fail_errno = 0;
            return -@as(i32, e);
        }
        const submit = self.test_short_submit(to_submit);
        if (submit < to_submit) min_complete = 0;
        self.counters.enters += 1;
        const res = linux.syscall6(
            .io_uring_enter,
            @as(usize, @bitCast(@as(isize, self.ring.fd))),
            submit,
            min_complete,
            flags,
            if (own_timeout) @intFromPtr(&arg) else 0,
            if (own_timeout) @sizeOf(linux.io_uring_getevents_arg) else 0,
        );
        switch (linux.E.init(res)) {
            .SUCCESS => {
                self.counters.submitted += res;
                return 0;
            },
            // A timeout or a signal ends the wait; neither is an error for the loop.
            .TIME, .INTR => return 0,
            // The completion queue is overcommitted: reap first, the SQEs stay queued. BADR: the
            // kernel had to drop completions (overflow memory ran out); the loop goes on with
            // the ones it has rather than failing every later turn.
            .BUSY, .AGAIN, .BADR => {
                self.counters.busy_retries += 1;
                return 0;
            },
            else => |e| return -@as(i32, @intCast(@intFromEnum(e))),
        }
    }

    /// How many of `to_submit` SQEs an enter offers the kernel: all, except under test_submit_limit.
    fn test_short_submit(self: *const Reactor, to_submit: u32) u32 {
        if (builtin.is_test and self.test_submit_limit > 0) return @min(to_submit, self.test_submit_limit);
        return to_submit;
    }

    fn needs_enter(self: *Reactor) bool {
        if (self.ring.sq_ready() > 0) return true;
        const sq_flags = @atomicLoad(u32, self.ring.sq.flags, .acquire);
        if (sq_flags & (linux.IORING_SQ_TASKRUN | linux.IORING_SQ_CQ_OVERFLOW) != 0) return true;
        // Without TASKRUN_FLAG the kernel cannot tell us about pending task work.
        return self.ring.flags & linux.IORING_SETUP_TASKRUN_FLAG == 0;
    }

    /// One loop turn: submit `submit_count` descriptors, optionally wait up to `wait_us`
    /// for a completion, then copy out completions. Returns the number of completions in
    /// `out`, or a negative errno (io_uring_enter failed: no descriptor is lost, those not
    /// yet in the SQ ring are at the front of `ops`, counted in `info.ops_left`, and those in
    /// it go with the next enter; a turn that already holds completions hands them out and
    /// leaves the failure to the next enter). Call again with (0, 0) while it returns `out.len`.
    /// `now_us` is the caller's clock (any monotonic base, in µs) when it chose `wait_us`.
    /// Descriptors the kernel would not take (its SQ full while completions are backed up)
    /// are moved to the front of `ops` and counted in `info.ops_left`; the turn then reaps
    /// without waiting, which is what lets the kernel take them next turn.
    pub fn turn(self: *Reactor, submit_count: u32, wait_us: u32, now_us: f64) i32 {
        assert(submit_count <= self.ops.len);
        self.counters.turns += 1;
        self.info.ops_left = 0;
        if (!self.wake_armed) _ = self.arm_wake();
        const prc = self.prep_ops(submit_count);
        if (prc < 0) return prc;
        self.keep_left(@intCast(prc), submit_count);

        var count = self.drain_backlog();
        if (count < self.out.len) {
            const ready = self.ring.cq_ready();
            // A sleep must be ended by a wake: its eventfd read is re-armed when its completion
            // is delivered, which fails while the SQ is full (the kernel took nothing, or the
            // backlog was drained after prep_ops filled it). Try again; with no room, no sleep.
            if (!self.wake_armed) _ = self.arm_wake();
            const wait = if (ready == 0 and count == 0 and self.info.ops_left == 0 and self.wake_armed) wait_us else 0;
            if (wait > 0 or self.needs_enter()) {
                const rc = self.enter(wait, now_us);
                // Completions already taken from the backlog are handed out, not dropped with
                // the error (nothing else holds them); a lasting failure shows at the next enter.
                if (rc < 0 and count == 0) return rc;
            }
            count += self.reap(count);
        }
        return @intCast(count);
    }

    /// Descriptors `ops[taken..count]` were not copied into SQEs: moved to the front of `ops`
    /// for the next turn and counted in `info.ops_left`.
    fn keep_left(self: *Reactor, taken: u32, count: u32) void {
        if (taken >= count) return;
        const left = count - taken;
        std.mem.copyForwards(Op, self.ops[0..left], self.ops[taken..count]);
        self.info.ops_left = left;
    }

    /// Copies descriptors `ops[0..count]` into SQEs (entering the kernel if the SQ fills).
    /// Returns how many were copied (all, unless the kernel would not take any more: then
    /// the rest are left for the caller), or a negative errno from entering (the descriptors
    /// not copied are then already kept: see keep_left).
    fn prep_ops(self: *Reactor, count: u32) i32 {
        for (self.ops[0..count], 0..) |*op, i| {
            const sqe = self.ring.get_sqe() catch blk: {
                const rc = self.enter(0, 0);
                if (rc < 0) {
                    self.keep_left(@intCast(i), count);
                    return rc;
                }
                break :blk self.ring.get_sqe() catch return @intCast(i);
            };
            self.prep(op, sqe);
            const opcode: linux.IORING_OP = @enumFromInt(op.opcode);
            if (opcode == .TIMEOUT) self.counters.timeouts_armed += 1;
        }
        return @intCast(count);
    }

    /// Submits descriptors `ops[0..count]` now, mid-turn, without reaping or running task
    /// work: for operations whose latency matters more than one more batched syscall (a
    /// device starts on a request only once it is submitted). Completions still arrive
    /// through `turn`. Returns how many descriptors were taken (the first ones; the caller
    /// keeps the rest queued when the kernel is backed up), or a negative errno (then, as for
    /// `turn`, the descriptors not in the SQ ring are at the front of `ops`, `info.ops_left`).
    pub fn submit_now(self: *Reactor, count: u32) i32 {
        assert(count <= self.ops.len);
        self.info.ops_left = 0;
        const taken = self.prep_ops(count);
        if (taken < 0) return taken;
        const to_submit = self.ring.flush_sq();
        if (to_submit == 0) return taken;
        if (builtin.is_test and self.test_fail_errno != 0) {
            const e = self.test_fail_errno;
            self.test_fail_errno = 0;
            self.keep_left(@intCast(taken), count);
            return -@as(i32, e);
        }
        self.counters.enters += 1;
        const res = linux.syscall6(.io_uring_enter, @as(usize, @bitCast(@as(isize, self.ring.fd))), self.test_short_submit(to_submit), 0, 0, 0, 0);
        switch (linux.E.init(res)) {
            .SUCCESS => {
                self.counters.submitted += res;
                return taken;
            },
            // Whatever was not taken stays in the SQ ring for the turn's own enter.
            .BUSY, .AGAIN, .INTR => {
                self.counters.busy_retries += 1;
                return taken;
            },
            else => |e| {
                // The descriptors prep_ops could not copy (the SQ full, the kernel backed up)
                // are kept as on any failure: the caller takes a negative result as "all
                // that is not in the SQ ring is at the front of ops".
                self.keep_left(@intCast(taken), count);
                return -@as(i32, @intCast(@intFromEnum(e)));
            },
        }
    }

    fn drain_backlog(self: *Reactor) u32 {
        if (self.backlog_count == 0) return 0;
        var count: u32 = 0;
        while (self.backlog_count > 0 and count < self.out.len) {
            const cqe = self.cqes[self.backlog_start];
            self.backlog_start += 1;
            self.backlog_count -= 1;
            count += self.deliver(cqe, count);
        }
        return count;
    }

    fn deliver(self: *Reactor, cqe: linux.io_uring_cqe, index: u32) u32 {
        if (cqe.user_data >= internal_user_data) {
            if (cqe.user_data == wake_user_data) {
                self.counters.wakes += 1;
                self.wake_armed = false;
                _ = self.arm_wake();
            } else if (cqe.user_data == ring_wake_user_data) {
                self.counters.wakes += 1;
            } else if (cqe.user_data & msg_wake_tag == msg_wake_tag and cqe.res < 0) {
                // The ring message could not be posted (the target's CQ is full, or memory or
                // the ring's lock was short): wake the target through its eventfd instead, so
                // no wake is lost. Not when the ring fd is no ring (EBADF, EBADFD): the target
                // is gone and its eventfd number may now name an unrelated file.
                if (msg_wake_retryable(cqe.res)) _ = wake(@intCast(cqe.user_data & ((1 << 24) - 1)));
            } else if (cqe.user_data == sleep_timer_user_data) {
                self.sleep_timer_armed = false;
            } else if (cqe.user_data == sleep_update_user_data) {
                // ENOENT: the timer fired before the update; EALREADY: it was firing at that moment
                // (its expiry running on another CPU). Its completion is on its way in both cases:
                // a race, not a kernel that cannot move timers (that would end the shared timer
                // for the reactor's lifetime, every later wait paying a timeout of its own).
                const raced = cqe.res == -@as(i32, @intFromEnum(linux.E.NOENT)) or cqe.res == -@as(i32, @intFromEnum(linux.E.ALREADY));
                if (cqe.res < 0 and !raced) self.sleep_timer_usable = false;
            }
            return 0;
        }
        self.out[index] = .{ .slot = @truncate(cqe.user_data), .res = cqe.res, .flags = cqe.flags, ._reserved = 0 };
        self.counters.completed += 1;
        return 1;
    }

    fn reap(self: *Reactor, start: u32) u32 {
        assert(self.backlog_count == 0);
        const n = self.ring.copy_cqes(self.cqes, 0) catch 0;
        var count: u32 = 0;
        var i: u32 = 0;
        while (i < n) : (i += 1) {
            if (start + count == self.out.len) {
                self.backlog_start = i;
                self.backlog_count = n - i;
                break;
            }
            count += self.deliver(self.cqes[i], start + count);
        }
        return count;
    }

    fn msg_wake_retryable(res: i32) bool {
        const e = -res;
        return e == @intFromEnum(linux.E.OVERFLOW) or e == @intFromEnum(linux.E.AGAIN) or
            e == @intFromEnum(linux.E.NOMEM) or e == @intFromEnum(linux.E.BUSY);
    }

    /// Queues a wake of another reactor (its ring fd `target_ring`) as a MSG_RING operation on
    /// this ring: it leaves with this reactor's next enter, which every loop iteration makes
    /// anyway, so the wake costs no syscall of its own (an eventfd write is one, and the
    /// target then re-arms its eventfd read). A failure falls back to `target_eventfd`.
    /// Returns 0, or -EBUSY when the SQ is full (the caller writes the eventfd itself).
    pub fn msg_wake(self: *Reactor, target_ring: i32, target_eventfd: i32) i32 {
        assert(target_eventfd >= 0 and target_eventfd < (1 << 24));
        const sqe = self.ring.get_sqe() catch return -@as(i32, @intFromEnum(linux.E.BUSY));
        sqe.* = std.mem.zeroes(linux.io_uring_sqe);
        sqe.opcode = .MSG_RING;
        sqe.fd = target_ring;
        sqe.addr = @intFromEnum(linux.IORING_MSG_RING_COMMAND.DATA);
        sqe.off = ring_wake_user_data; // the user_data of the target's completion
        sqe.flags = linux.IOSQE_CQE_SKIP_SUCCESS;
        sqe.user_data = msg_wake_tag | @as(u64, @intCast(target_eventfd));
        self.counters.ring_wakes_sent += 1;
        return 0;
    }

    /// True if `fd` is the eventfd of a live reactor of this process (any thread's). A wake
    /// from JS names its target by this number: anything else (a socket, a pipe, a file, stdout)
    /// would get the 8-byte counter written into it. A scan of the slots used so far (at most
    /// 4 KiB), no system call.
    pub fn owns_eventfd(fd: i32) bool {
        if (fd < 0) return false;
        const used = table_eventfds_high.load(.acquire);
        for (table_eventfds[0..used]) |*e| {
            if (e.load(.acquire) == fd) return true;
        }
        return false;
    }

    /// Wakes this reactor if it sleeps in `turn`; safe from any thread.
    pub fn wake(eventfd: i32) i32 {
        var one: u64 = 1;
        const rc = linux.write(eventfd, std.mem.asBytes(&one), 8);
        return switch (linux.E.init(rc)) {
            .SUCCESS, .AGAIN => 0,
            else => |e| -@as(i32, @intCast(@intFromEnum(e))),
        };
    }
};

/// The pure-native baseline for the nop benchmark: `total` nops in batches of `batch`.
/// Completions of other operations that arrive meanwhile (the wake read, the sleep timer, I/O
/// in flight) go to the backlog, which the next `turn` delivers; the reactor must have none
/// queued when it starts (-EBUSY otherwise).
pub fn bench_nops(self: *Reactor, total: u32, batch: u32) i32 {
    assert(batch > 0 and batch <= self.ops.len);
    if (self.backlog_count != 0 or self.ring.sq_ready() != 0) return -@as(i32, @intFromEnum(linux.E.BUSY));
    self.backlog_start = 0;
    var buf: [256]linux.io_uring_cqe = undefined;
    var done: u32 = 0;
    while (done < total) {
        const n = @min(batch, total - done);
        var i: u32 = 0;
        while (i < n) : (i += 1) {
            const sqe = self.ring.get_sqe() catch return -@as(i32, @intFromEnum(linux.E.BUSY));
            sqe.prep_nop();
            sqe.user_data = bench_user_data;
        }
        _ = self.ring.submit_and_wait(n) catch |err| return switch (err) {
            else => -@as(i32, @intFromEnum(linux.E.IO)),
        };
        var got: u32 = 0;
        while (got < n) {
            // Never take more than the backlog can keep: a completion taken off the CQ and
            // not kept would be lost (its operation would never settle).
            const room = self.cqes.len - self.backlog_count;
            if (room == 0) return -@as(i32, @intFromEnum(linux.E.OVERFLOW));
            const k = self.ring.copy_cqes(buf[0..@min(buf.len, room)], 1) catch return -@as(i32, @intFromEnum(linux.E.IO));
            for (buf[0..k]) |cqe| {
                if (cqe.user_data == bench_user_data) {
                    got += 1;
                } else {
                    // Not ours: kept for the loop's next turn, in order.
                    self.cqes[self.backlog_start + self.backlog_count] = cqe;
                    self.backlog_count += 1;
                }
            }
        }
        done += n;
    }
    return 0;
}

/// A monotonic clock in µs, as `turn`'s callers pass it.
fn test_now_us() f64 {
    var ts: linux.timespec = undefined;
    _ = linux.clock_gettime(.MONOTONIC, &ts);
    return @as(f64, @floatFromInt(ts.sec)) * 1e6 + @as(f64, @floatFromInt(ts.nsec)) / 1e3;
}

test "nop round trip through descriptors" {
    const r = try Reactor.create(64, 256);
    defer r.destroy();
    for (0..10) |i| {
        r.ops[i] = std.mem.zeroes(Op);
        r.ops[i].opcode = @intFromEnum(linux.IORING_OP.NOP);
        r.ops[i].slot = @intCast(i + 100);
    }
    var seen: u32 = 0;
    var submit: u32 = 10;
    while (seen < 10) {
        const n = r.turn(submit, 100_000, test_now_us());
        submit = 0;
        try std.testing.expect(n >= 0);
        for (r.out[0..@intCast(n)]) |c| {
            try std.testing.expect(c.slot >= 100 and c.slot < 110);
            try std.testing.expectEqual(@as(i32, 0), c.res);
        }
        seen += @intCast(n);
    }
    try std.testing.expectEqual(@as(u64, 10), r.counters.completed);
}

test "timeout descriptor fires with ETIME after its delay" {
    const r = try Reactor.create(8, 16);
    defer r.destroy();
    r.ops[0] = std.mem.zeroes(Op);
    r.ops[0].opcode = @intFromEnum(linux.IORING_OP.TIMEOUT);
    r.ops[0].slot = 7;
    r.ops[0].aux = 0;
    r.ops[0].aux2 = 2_000_000; // 2 ms
    var n = r.turn(1, 0, test_now_us());
    try std.testing.expectEqual(@as(i32, 0), n);
    n = r.turn(0, 1_000_000, test_now_us());
    try std.testing.expectEqual(@as(i32, 1), n);
    try std.testing.expectEqual(@as(u32, 7), r.out[0].slot);
    try std.testing.expectEqual(-@as(i32, @intFromEnum(linux.E.TIME)), r.out[0].res);
}

test "eventfd wakes a sleeping reactor and is re-armed" {
    const r = try Reactor.create(8, 16);
    defer r.destroy();
    _ = r.turn(0, 0, test_now_us());
    try std.testing.expectEqual(@as(i32, 0), Reactor.wake(r.eventfd));
    const n = r.turn(0, 5_000_000, test_now_us());
    try std.testing.expectEqual(@as(i32, 0), n); // internal completion is not handed out
    try std.testing.expectEqual(@as(u64, 1), r.counters.wakes);
    try std.testing.expect(r.wake_armed);
}

test "more completions than the out array holds are kept for the next turn" {
    const r = try Reactor.create(64, 64);
    defer r.destroy();
    // Shrink the visible out array to force a backlog.
    const full = r.out;
    r.out = full[0..4];
    defer r.out = full;
    for (0..10) |i| {
        r.ops[i] = std.mem.zeroes(Op);
        r.ops[i].opcode = @intFromEnum(linux.IORING_OP.NOP);
        r.ops[i].slot = @intCast(i);
    }
    var total: u32 = 0;
    var submit: u32 = 10;
    var turns: u32 = 0;
    while (total < 10 and turns < 100) : (turns += 1) {
        const n = r.turn(submit, 10_000, test_now_us());
        submit = 0;
        try std.testing.expect(n >= 0 and n <= 4);
        total += @intCast(n);
    }
    try std.testing.expectEqual(@as(u32, 10), total);
}

// ---- behaviour pinned by the core test suite (test/core/*.test.ts has the JS side) ----------

fn test_op(opcode: linux.IORING_OP, slot: u32) Op {
    var op = std.mem.zeroes(Op);
    op.opcode = @intFromEnum(opcode);
    op.slot = slot;
    return op;
}

fn test_pipe() ![2]i32 {
    var fds: [2]i32 = undefined;
    if (linux.E.init(linux.pipe2(&fds, .{ .CLOEXEC = true })) != .SUCCESS) return error.Pipe;
    return fds;
}

/// Turns until `want` completions were handed out (or 1000 turns); returns them in order.
/// Queues `count` NOP SQEs behind the reactor's back (user_data 100, 101, ...), not submitted:
/// they take SQ room the reactor's own descriptors then lack.
fn test_queue_foreign_nops(r: *Reactor, count: usize) !void {
    for (0..count) |i| {
        const sqe = try r.ring.get_sqe();
        sqe.prep_nop();
        sqe.user_data = 100 + i;
    }
}

fn test_collect(r: *Reactor, submit: u32, want: usize, into: []Completion) !usize {
    var got: usize = 0;
    var pending = submit;
    var turns: u32 = 0;
    while (got < want and turns < 1000) : (turns += 1) {
        const n = r.turn(pending, 10_000, test_now_us());
        pending = 0;
        try std.testing.expect(n >= 0);
        for (r.out[0..@intCast(n)]) |c| {
            if (got < into.len) into[got] = c;
            got += 1;
        }
    }
    return got;
}

test "a full descriptor array is submitted although the wake read holds an SQ entry" {
    const r = try Reactor.create(8, 64);
    defer r.destroy();
    _ = r.turn(0, 0, test_now_us()); // arms the wake read: one SQ entry is now taken by the reactor itself
    for (0..8) |i| r.ops[i] = test_op(.NOP, @intCast(i));
    var seen: [8]Completion = undefined;
    try std.testing.expectEqual(@as(usize, 8), try test_collect(r, 8, 8, &seen));
    var mask: u32 = 0;
    for (seen) |c| {
        try std.testing.expectEqual(@as(i32, 0), c.res);
        mask |= @as(u32, 1) << @intCast(c.slot);
    }
    try std.testing.expectEqual(@as(u32, 0xff), mask);
}

test "descriptors the kernel will not take (its SQ full, enter busy) stay in ops for the next turn, none lost" {
    const r = try Reactor.create(8, 64);
    defer r.destroy();
    _ = r.turn(0, 0, test_now_us()); // arms (and submits) the wake read
    // Five SQEs queued behind the reactor's back and not submitted: the SQ has room for 3.
    try test_queue_foreign_nops(r, 5);
    for (0..8) |i| r.ops[i] = test_op(.NOP, @intCast(i));
    r.test_busy_enters = 2; // the enter in prep_ops and the turn's own take nothing
    const n = r.turn(8, 10_000_000, test_now_us());
    try std.testing.expectEqual(@as(i32, 0), n);
    try std.testing.expectEqual(@as(u32, 5), r.info.ops_left);
    for (0..5) |i| try std.testing.expectEqual(@as(u32, @intCast(3 + i)), r.ops[i].slot);
    var seen: [13]Completion = undefined;
    try std.testing.expectEqual(@as(usize, 13), try test_collect(r, 5, 13, &seen));
    try std.testing.expectEqual(@as(u32, 0), r.info.ops_left);
    var mask: u32 = 0;
    for (seen) |c| mask |= @as(u32, 1) << @intCast(if (c.slot >= 100) c.slot - 100 + 8 else c.slot);
    try std.testing.expectEqual(@as(u32, 0x1fff), mask);
}

test "an enter that fails hard loses no descriptor: those not in the SQ ring stay in ops, the rest go with the next enter" {
    const r = try Reactor.create(8, 64);
    defer r.destroy();
    _ = r.turn(0, 0, test_now_us()); // arms (and submits) the wake read
    // Five SQEs queued and not submitted: the SQ has room for 3 of the 8 descriptors, then
    // prep_ops enters to make room, and that enter fails.
    try test_queue_foreign_nops(r, 5);
    for (0..8) |i| r.ops[i] = test_op(.NOP, @intCast(i));
    r.test_fail_errno = @intFromEnum(linux.E.NOMEM);
    try std.testing.expectEqual(-@as(i32, @intFromEnum(linux.E.NOMEM)), r.turn(8, 0, test_now_us()));
    try std.testing.expectEqual(@as(u32, 5), r.info.ops_left);
    for (0..5) |i| try std.testing.expectEqual(@as(u32, @intCast(3 + i)), r.ops[i].slot);
    // The next turns submit the 8 in the SQ ring and the 5 kept: all 13 complete, once each.
    var seen: [13]Completion = undefined;
    try std.testing.expectEqual(@as(usize, 13), try test_collect(r, 5, 13, &seen));
    var mask: u32 = 0;
    for (seen) |c| {
        try std.testing.expectEqual(@as(i32, 0), c.res);
        mask |= @as(u32, 1) << @intCast(if (c.slot >= 100) c.slot - 100 + 8 else c.slot);
    }
    try std.testing.expectEqual(@as(u32, 0x1fff), mask);

    // The turn's own enter failing (everything already in the SQ ring): nothing kept, nothing lost.
    for (0..3) |i| r.ops[i] = test_op(.NOP, @intCast(20 + i));
    r.test_fail_errno = @intFromEnum(linux.E.FAULT);
    try std.testing.expectEqual(-@as(i32, @intFromEnum(linux.E.FAULT)), r.turn(3, 0, test_now_us()));
    try std.testing.expectEqual(@as(u32, 0), r.info.ops_left);
    var again: [3]Completion = undefined;
    try std.testing.expectEqual(@as(usize, 3), try test_collect(r, 0, 3, &again));
    for (again) |c| try std.testing.expect(c.slot >= 20 and c.slot < 23);
}

test "submit_now: its own enter failing hard after the SQ filled keeps the descriptors it could not copy" {
    const r = try Reactor.create(8, 64);
    defer r.destroy();
    _ = r.turn(0, 0, test_now_us()); // arms (and submits) the wake read
    // Five SQEs queued and not submitted: the SQ has room for 3 of the 8 descriptors; the enter
    // prep_ops makes to free room takes nothing (busy), so 3 are taken; then submit_now's own
    // enter fails.
    try test_queue_foreign_nops(r, 5);
    for (0..8) |i| r.ops[i] = test_op(.NOP, @intCast(i));
    r.test_busy_enters = 1;
    r.test_fail_errno = @intFromEnum(linux.E.NOMEM);
    try std.testing.expectEqual(-@as(i32, @intFromEnum(linux.E.NOMEM)), r.submit_now(8));
    try std.testing.expectEqual(@as(u32, 5), r.info.ops_left);
    for (0..5) |i| try std.testing.expectEqual(@as(u32, @intCast(3 + i)), r.ops[i].slot);
    var seen: [13]Completion = undefined;
    try std.testing.expectEqual(@as(usize, 13), try test_collect(r, 5, 13, &seen));
    var mask: u32 = 0;
    for (seen) |c| mask |= @as(u32, 1) << @intCast(if (c.slot >= 100) c.slot - 100 + 8 else c.slot);
    try std.testing.expectEqual(@as(u32, 0x1fff), mask);
}

test "a TIMEOUT whose SQE the kernel takes a turn late (enter busy) keeps its own timespec after JS reuses the descriptor" {
    const r = try Reactor.create(8, 64);
    defer r.destroy();
    _ = r.turn(0, 0, test_now_us()); // arms (and submits) the wake read
    r.ops[0] = test_op(.TIMEOUT, 7);
    r.ops[0].aux = 0;
    r.ops[0].aux2 = 20_000_000; // 20 ms
    r.test_busy_enters = 1; // the turn's enter takes nothing: the SQE stays in the SQ ring
    try std.testing.expectEqual(@as(i32, 0), r.turn(1, 1_000, test_now_us()));
    try std.testing.expectEqual(@as(u32, 0), r.info.ops_left); // in the SQ ring, not left in ops
    // JS writes its next descriptor over ops[0]: an hour-long timeout it has not submitted.
    r.ops[0] = test_op(.TIMEOUT, 8);
    r.ops[0].aux = 3600;
    r.ops[0].aux2 = 0;
    var seen: [1]Completion = undefined;
    // Within ~1 s of turns (100 x 10 ms waits): the 20 ms timeout fires.
    var got: usize = 0;
    var turns: u32 = 0;
    while (got == 0 and turns < 100) : (turns += 1) {
        const n = r.turn(0, 10_000, test_now_us());
        try std.testing.expect(n >= 0);
        if (n > 0) {
            seen[0] = r.out[0];
            got = 1;
        }
    }
    try std.testing.expectEqual(@as(usize, 1), got);
    try std.testing.expectEqual(@as(u32, 7), seen[0].slot);
    try std.testing.expectEqual(-@as(i32, @intFromEnum(linux.E.TIME)), seen[0].res);
}

test "completions beyond the kernel CQ (overflow) are all delivered" {
    const r = try Reactor.create(8, 8);
    defer r.destroy();
    // 32 nops submitted behind the reactor's back, never reaped: 24 overflow the 8-entry CQ.
    var slot: u64 = 0;
    for (0..4) |_| {
        for (0..8) |_| {
            const sqe = try r.ring.get_sqe();
            sqe.prep_nop();
            sqe.user_data = slot;
            slot += 1;
        }
        _ = try r.ring.submit();
    }
    var seen: [32]Completion = undefined;
    try std.testing.expectEqual(@as(usize, 32), try test_collect(r, 0, 32, &seen));
    var mask: u64 = 0;
    for (seen) |c| mask |= @as(u64, 1) << @intCast(c.slot);
    try std.testing.expectEqual(~@as(u64, 0) >> 32, mask);
}

test "read and write with a negative offset use the file position (pipes)" {
    const r = try Reactor.create(8, 16);
    defer r.destroy();
    const fds = try test_pipe();
    defer _ = linux.close(fds[0]);
    defer _ = linux.close(fds[1]);
    var out_bytes = [_]u8{ 1, 2, 3 };
    var in_bytes = [_]u8{ 0, 0, 0, 0 };
    r.ops[0] = test_op(.WRITE, 1);
    r.ops[0].fd = fds[1];
    r.ops[0].addr = @floatFromInt(@intFromPtr(&out_bytes));
    r.ops[0].len = 3;
    r.ops[0].off = -1;
    var seen: [1]Completion = undefined;
    _ = try test_collect(r, 1, 1, &seen);
    try std.testing.expectEqual(@as(i32, 3), seen[0].res);
    r.ops[0] = test_op(.READ, 2);
    r.ops[0].fd = fds[0];
    r.ops[0].addr = @floatFromInt(@intFromPtr(&in_bytes));
    r.ops[0].len = 4;
    r.ops[0].off = -1;
    _ = try test_collect(r, 1, 1, &seen);
    try std.testing.expectEqual(@as(i32, 3), seen[0].res);
    try std.testing.expectEqualSlices(u8, &.{ 1, 2, 3, 0 }, &in_bytes);
}

test "a kernel error comes back as a negative errno in res" {
    const r = try Reactor.create(8, 16);
    defer r.destroy();
    const fds = try test_pipe();
    defer _ = linux.close(fds[0]);
    defer _ = linux.close(fds[1]);
    var buf: [4]u8 = undefined;
    r.ops[0] = test_op(.READ, 5);
    r.ops[0].fd = fds[1]; // the write end: not open for reading
    r.ops[0].addr = @floatFromInt(@intFromPtr(&buf));
    r.ops[0].len = buf.len;
    r.ops[0].off = -1;
    var seen: [1]Completion = undefined;
    _ = try test_collect(r, 1, 1, &seen);
    try std.testing.expectEqual(@as(u32, 5), seen[0].slot);
    try std.testing.expectEqual(-@as(i32, @intFromEnum(linux.E.BADF)), seen[0].res);
}

test "ASYNC_CANCEL of a read parked on an empty pipe: the read ends ECANCELED, the cancel 0" {
    const r = try Reactor.create(8, 16);
    defer r.destroy();
    const fds = try test_pipe();
    defer _ = linux.close(fds[0]);
    defer _ = linux.close(fds[1]);
    var buf: [4]u8 = undefined;
    r.ops[0] = test_op(.READ, 1);
    r.ops[0].fd = fds[0];
    r.ops[0].addr = @floatFromInt(@intFromPtr(&buf));
    r.ops[0].len = buf.len;
    r.ops[0].off = -1;
    try std.testing.expectEqual(@as(i32, 0), r.turn(1, 1000, test_now_us())); // parked: nothing completes
    r.ops[0] = test_op(.ASYNC_CANCEL, 2);
    r.ops[0].addr = 1; // the user_data (slot) to cancel
    var seen: [2]Completion = undefined;
    try std.testing.expectEqual(@as(usize, 2), try test_collect(r, 1, 2, &seen));
    for (seen) |c| switch (c.slot) {
        1 => try std.testing.expectEqual(-@as(i32, @intFromEnum(linux.E.CANCELED)), c.res),
        2 => try std.testing.expectEqual(@as(i32, 0), c.res),
        else => return error.UnexpectedSlot,
    };
}

test "a TIMEOUT with a completion count ends with 0 once that many others completed" {
    const r = try Reactor.create(8, 16);
    defer r.destroy();
    r.ops[0] = test_op(.TIMEOUT, 9);
    r.ops[0].aux = 60; // 60 s: only the count can end it within the test
    r.ops[0].len = 1;
    r.ops[1] = test_op(.NOP, 3);
    var seen: [2]Completion = undefined;
    try std.testing.expectEqual(@as(usize, 2), try test_collect(r, 2, 2, &seen));
    for (seen) |c| try std.testing.expectEqual(@as(i32, 0), c.res);
}

test "a wait with nothing in flight ends at its timeout and is not an error" {
    const r = try Reactor.create(8, 16);
    defer r.destroy();
    try std.testing.expectEqual(@as(i32, 0), r.turn(0, 2_000, test_now_us()));
    try std.testing.expectEqual(@as(u64, 1), r.counters.sleeps);
    try std.testing.expectEqual(@as(u64, 1), r.counters.timeouts_armed);
}

test "one sleep timer serves many waits: it is armed once, not per wait" {
    const r = try Reactor.create(8, 16);
    defer r.destroy();
    for (0..20) |_| {
        try std.testing.expectEqual(@as(i32, 0), Reactor.wake(r.eventfd));
        try std.testing.expectEqual(@as(i32, 0), r.turn(0, 500_000, test_now_us()));
    }
    try std.testing.expectEqual(@as(u64, 20), r.counters.sleeps);
    try std.testing.expectEqual(@as(u64, 20), r.counters.wakes);
    try std.testing.expectEqual(@as(u64, 1), r.counters.timeouts_armed);
    try std.testing.expect(r.sleep_timer_armed);
}

test "a wait shorter than the armed sleep timer moves it, and it still ends on time" {
    const r = try Reactor.create(8, 16);
    defer r.destroy();
    try std.testing.expectEqual(@as(i32, 0), Reactor.wake(r.eventfd));
    _ = r.turn(0, 10_000_000, test_now_us()); // arms a 10 s timer; the wake ends the wait
    const t0 = test_now_us();
    _ = r.turn(0, 3_000, t0); // must end after ~3 ms, not 10 s
    const waited = test_now_us() - t0;
    try std.testing.expect(waited >= 2_500 and waited < 1_000_000);
    try std.testing.expectEqual(@as(u64, 2), r.counters.timeouts_armed);
    try std.testing.expect(r.sleep_timer_usable);
    // The timer fired: the next wait arms a new one, which ends it on time too.
    while (r.sleep_timer_armed) _ = r.turn(0, 0, test_now_us());
    const t1 = test_now_us();
    _ = r.turn(0, 2_000, t1);
    const waited2 = test_now_us() - t1;
    try std.testing.expect(waited2 >= 1_500 and waited2 < 1_000_000);
    try std.testing.expectEqual(@as(u64, 3), r.counters.timeouts_armed);
}

test "a timer already due sooner than the wait is kept and ends the wait early" {
    const r = try Reactor.create(8, 16);
    defer r.destroy();
    try std.testing.expectEqual(@as(i32, 0), Reactor.wake(r.eventfd));
    _ = r.turn(0, 5_000, test_now_us()); // arms ~5 ms; the wake ends the wait at once
    const t0 = test_now_us();
    // A 2 s wait ends when the 5 ms timer fires. (A turn may also end early without a
    // completion, as on a signal (EINTR): such a turn waits again, as the loop does. One CI run
    // saw the first turn end before the timer's completion.)
    var turns: u32 = 0;
    while (r.sleep_timer_armed and turns < 10) : (turns += 1) _ = r.turn(0, 2_000_000, test_now_us());
    const waited = test_now_us() - t0;
    try std.testing.expect(waited < 1_000_000);
    try std.testing.expectEqual(@as(u64, 1), r.counters.timeouts_armed);
    try std.testing.expect(!r.sleep_timer_armed);
}

test "a sleep timer update that finds the timer already firing (EALREADY, ENOENT) keeps the shared timer in use" {
    const r = try Reactor.create(8, 16);
    defer r.destroy();
    // TIMEOUT_UPDATE answers ENOENT when the timer fired and EALREADY when its expiry is running
    // on another CPU at that moment: either way the timer's own completion is on its way.
    const raced = [_]linux.E{ .NOENT, .ALREADY };
    for (raced) |e| {
        const cqe = std.mem.zeroInit(linux.io_uring_cqe, .{ .user_data = sleep_update_user_data, .res = -@as(i32, @intFromEnum(e)) });
        try std.testing.expectEqual(@as(u32, 0), r.deliver(cqe, 0));
        try std.testing.expect(r.sleep_timer_usable);
    }
    // A real refusal (a kernel without updates) does fall back to a timeout per wait.
    const refused = std.mem.zeroInit(linux.io_uring_cqe, .{ .user_data = sleep_update_user_data, .res = -@as(i32, @intFromEnum(linux.E.INVAL)) });
    _ = r.deliver(refused, 0);
    try std.testing.expect(!r.sleep_timer_usable);
}

test "a ring message from another reactor wakes a sleeping one, with no eventfd write" {
    const a = try Reactor.create(8, 16);
    defer a.destroy();
    const b = try Reactor.create(8, 16);
    defer b.destroy();
    _ = b.turn(0, 0, test_now_us()); // arms b's eventfd read
    try std.testing.expectEqual(@as(i32, 0), a.msg_wake(b.ring.fd, b.eventfd));
    _ = a.turn(0, 0, test_now_us()); // the message leaves with a's enter
    const t0 = test_now_us();
    try std.testing.expectEqual(@as(i32, 0), b.turn(0, 5_000_000, t0));
    try std.testing.expect(test_now_us() - t0 < 1_000_000);
    try std.testing.expectEqual(@as(u64, 1), b.counters.wakes);
    try std.testing.expect(b.wake_armed); // the eventfd read was not used
    try std.testing.expectEqual(@as(u64, 1), a.counters.ring_wakes_sent);
    try std.testing.expectEqual(@as(u64, 0), a.counters.completed); // success posts nothing to a
}

test "a ring message to a descriptor that is no ring writes no eventfd (the target is gone; its numbers may be reused)" {
    const a = try Reactor.create(8, 16);
    defer a.destroy();
    const b = try Reactor.create(8, 16);
    defer b.destroy();
    const fds = try test_pipe();
    defer _ = linux.close(fds[0]);
    defer _ = linux.close(fds[1]);
    _ = b.turn(0, 0, test_now_us());
    // Not a ring: MSG_RING fails with EBADFD, and nothing is written to b's eventfd number.
    try std.testing.expectEqual(@as(i32, 0), a.msg_wake(fds[0], b.eventfd));
    _ = a.turn(0, 0, test_now_us());
    const t0 = test_now_us();
    try std.testing.expectEqual(@as(i32, 0), b.turn(0, 50_000, t0));
    try std.testing.expect(test_now_us() - t0 >= 40_000); // slept its whole wait: no wake came
    try std.testing.expectEqual(@as(u64, 0), b.counters.wakes);
}

test "only a ring that could not post (CQ full, no memory, busy) falls back to the eventfd" {
    try std.testing.expect(Reactor.msg_wake_retryable(-@as(i32, @intFromEnum(linux.E.OVERFLOW))));
    try std.testing.expect(Reactor.msg_wake_retryable(-@as(i32, @intFromEnum(linux.E.AGAIN))));
    try std.testing.expect(!Reactor.msg_wake_retryable(-@as(i32, @intFromEnum(linux.E.BADF))));
    try std.testing.expect(!Reactor.msg_wake_retryable(-@as(i32, @intFromEnum(linux.E.BADFD))));
}

test "descriptor numbers out of range or NaN reach the kernel as an invalid value, not undefined behaviour" {
    const r = try Reactor.create(8, 16);
    defer r.destroy();
    const bad = [_]f64{ 1e300, -1e300, std.math.inf(f64), -std.math.inf(f64), std.math.nan(f64), 0x1p64 };
    for (bad, 0..) |v, i| {
        r.ops[i] = std.mem.zeroes(Op);
        // A read into address `v` of fd -1: refused by the kernel whatever the address.
        r.ops[i].opcode = @intFromEnum(linux.IORING_OP.READ);
        r.ops[i].fd = -1;
        r.ops[i].addr = v;
        r.ops[i].off = v;
        r.ops[i].len = 1;
        r.ops[i].slot = @intCast(i + 1);
    }
    var seen: usize = 0;
    var submit: u32 = bad.len;
    while (seen < bad.len) {
        const n = r.turn(submit, 100_000, test_now_us());
        submit = 0;
        try std.testing.expect(n >= 0);
        for (r.out[0..@intCast(n)]) |c| try std.testing.expect(c.res < 0);
        seen += @intCast(n);
    }
    // A TIMEOUT with absurd seconds: clamped, refused or harmless, never a panic.
    r.ops[0] = std.mem.zeroes(Op);
    r.ops[0].opcode = @intFromEnum(linux.IORING_OP.TIMEOUT);
    r.ops[0].slot = 50;
    r.ops[0].aux = std.math.nan(f64);
    r.ops[0].aux2 = 1e300;
    const n = r.turn(1, 100_000, test_now_us());
    try std.testing.expect(n >= 0);
    try std.testing.expectEqual(@as(u64, std.math.maxInt(u64)), Reactor.f64_to_u64(-1e300));
    try std.testing.expectEqual(@as(u64, 5), Reactor.f64_to_u64(5));
    try std.testing.expectEqual(@as(u64, @bitCast(@as(i64, -1))), Reactor.f64_to_u64(-1));
}

test "bench_nops keeps other completions (a wake) for the loop instead of counting them" {
    const r = try Reactor.create(64, 256);
    defer r.destroy();
    _ = r.turn(0, 0, test_now_us()); // arms the wake read
    try std.testing.expectEqual(@as(i32, 0), Reactor.wake(r.eventfd));
    try std.testing.expectEqual(@as(i32, 0), bench_nops(r, 1000, 32));
    // The wake's completion was kept: the next turn handles it and re-arms the read.
    _ = r.turn(0, 0, test_now_us());
    try std.testing.expectEqual(@as(u64, 1), r.counters.wakes);
    try std.testing.expect(r.wake_armed);
    try std.testing.expectEqual(@as(i32, 0), Reactor.wake(r.eventfd));
    _ = r.turn(0, 1_000_000, test_now_us());
    try std.testing.expectEqual(@as(u64, 2), r.counters.wakes);
}

// ---- ring pressure (review 23): the backlog, a full SQ, the wake read ------------------------

/// Leaves `foreign` of the reactor's completions (user_data 100, 101, ...) in its backlog, as
/// bench_nops does with completions it is not after: nops submitted behind the reactor's back,
/// then a native nop run that copies their completions out of the kernel ring.
fn test_backlog_of(r: *Reactor, foreign: usize) !void {
    try test_queue_foreign_nops(r, foreign);
    _ = try r.ring.submit();
    try std.testing.expectEqual(@as(i32, 0), bench_nops(r, 8, 4));
    try std.testing.expectEqual(@as(u32, @intCast(foreign)), r.backlog_count);
}

test "completions taken from the backlog are handed out even when the turn's enter then fails" {
    const r = try Reactor.create(8, 64);
    defer r.destroy();
    _ = r.turn(0, 0, test_now_us()); // arms (and submits) the wake read
    try test_backlog_of(r, 3);
    // The turn drains the backlog, then its enter (needed: a descriptor to submit) fails hard.
    r.ops[0] = test_op(.NOP, 7);
    r.test_fail_errno = @intFromEnum(linux.E.NOMEM);
    const n = r.turn(1, 0, test_now_us());
    var seen: [4]Completion = undefined;
    var got: usize = 0;
    if (n > 0) {
        for (r.out[0..@intCast(n)]) |c| {
            seen[got] = c;
            got += 1;
        }
    }
    // Whatever that turn answered, the three backlog completions and the nop's all arrive, once.
    got += try test_collect(r, 0, 4 - got, seen[got..]);
    try std.testing.expectEqual(@as(usize, 4), got);
    var mask: u32 = 0;
    for (seen) |c| mask |= @as(u32, 1) << @intCast(if (c.slot >= 100) c.slot - 100 else c.slot);
    try std.testing.expectEqual(@as(u32, 0b1000_0111), mask);
    try std.testing.expectEqual(@as(u32, 0), r.backlog_count);
}

test "a turn does not sleep deaf to wakes: the wake read is re-armed before a wait, or the wait is skipped" {
    const r = try Reactor.create(8, 64);
    defer r.destroy();
    var fds = try test_pipe();
    defer _ = linux.close(fds[0]);
    defer if (fds[1] >= 0) {
        _ = linux.close(fds[1]);
    };
    _ = r.turn(0, 0, test_now_us()); // arms (and submits) the wake read
    // A wake completes the read; a turn whose enter takes nothing (busy: the SQ is full of
    // polls the kernel has not taken) delivers it and cannot re-arm the read.
    try std.testing.expectEqual(@as(i32, 0), Reactor.wake(r.eventfd));
    for (0..8) |i| {
        const sqe = try r.ring.get_sqe();
        sqe.prep_poll_add(fds[0], linux.POLL.IN);
        sqe.user_data = 100 + i;
    }
    _ = try r.ring.enter(0, 0, linux.IORING_ENTER_GETEVENTS); // posts the wake read's completion
    r.test_busy_enters = 1;
    try std.testing.expectEqual(@as(i32, 0), r.turn(0, 0, test_now_us()));
    try std.testing.expectEqual(@as(u64, 1), r.counters.wakes);
    try std.testing.expect(!r.wake_armed);
    // Another shard wakes this one before it sleeps: the wake must end the next sleep (5 s) at
    // once, not when the sleep times out.
    try std.testing.expectEqual(@as(i32, 0), Reactor.wake(r.eventfd));
    const t0 = test_now_us();
    var turns: u32 = 0;
    while (r.counters.wakes < 2 and turns < 3) : (turns += 1) {
        try std.testing.expectEqual(@as(i32, 0), r.turn(0, 5_000_000, test_now_us()));
    }
    try std.testing.expectEqual(@as(u64, 2), r.counters.wakes);
    try std.testing.expect(test_now_us() - t0 < 2_500_000);
    // The polls still end (the pipe's write end closes: POLLHUP), each once.
    _ = linux.close(fds[1]);
    fds[1] = -1;
    var seen: [8]Completion = undefined;
    try std.testing.expectEqual(@as(usize, 8), try test_collect(r, 0, 8, &seen));
}

test "a sleep timer the kernel takes late (enter busy) still ends the waits that keep it on time" {
    const r = try Reactor.create(8, 16);
    defer r.destroy();
    _ = r.turn(0, 0, test_now_us()); // arms (and submits) the wake read
    // A 2 s wait arms the sleep timer, but the enter takes nothing: the TIMEOUT stays in the SQ.
    r.test_busy_enters = 1;
    try std.testing.expectEqual(@as(i32, 0), r.turn(0, 2_000_000, test_now_us()));
    try std.testing.expect(r.sleep_timer_armed);
    // 1.5 s pass before the kernel takes SQEs again (it was backed up).
    const pause = linux.timespec{ .sec = 1, .nsec = 500_000_000 };
    _ = linux.nanosleep(&pause, null);
    // A 0.6 s wait now: the armed timer's deadline (2 s after the first wait, 0.5 s from now)
    // comes first, so no new timer is armed, and the wait must end by 0.6 s from now; the kernel
    // counts the 2 s from when it takes the SQE, with this turn's enter: 2 s from now.
    const t0 = test_now_us();
    try std.testing.expectEqual(@as(i32, 0), r.turn(0, 600_000, t0));
    try std.testing.expect(test_now_us() - t0 < 1_200_000);
}

test "an enter the kernel takes only part of (a short submit): the rest go with later enters, each descriptor completes once" {
    const r = try Reactor.create(8, 64);
    defer r.destroy();
    _ = r.turn(0, 0, test_now_us()); // arms (and submits) the wake read
    for (0..8) |i| r.ops[i] = test_op(.NOP, @intCast(i));
    r.test_submit_limit = 3; // every enter: the kernel takes 3 SQEs at most
    // A turn asked to sleep 5 s: a short submit does not wait (the kernel's own does not either).
    const t0 = test_now_us();
    const n = r.turn(8, 5_000_000, t0);
    try std.testing.expect(n >= 0 and n <= 3);
    try std.testing.expect(test_now_us() - t0 < 2_500_000);
    try std.testing.expectEqual(@as(u32, 0), r.info.ops_left); // all 8 are in the SQ ring
    var seen: [8]Completion = undefined;
    for (r.out[0..@intCast(n)], 0..) |c, i| seen[i] = c;
    const rest = try test_collect(r, 0, 8 - @as(usize, @intCast(n)), seen[@intCast(n)..]);
    try std.testing.expectEqual(@as(usize, 8), @as(usize, @intCast(n)) + rest);
    var mask: u32 = 0;
    for (seen) |c| {
        try std.testing.expectEqual(@as(u32, 0), mask & (@as(u32, 1) << @intCast(c.slot)));
        mask |= @as(u32, 1) << @intCast(c.slot);
    }
    try std.testing.expectEqual(@as(u32, 0xff), mask);
    try std.testing.expectEqual(@as(u32, 0), r.ring.sq_ready());
    // The wake read is still served: a wake ends a long sleep, short submits or not.
    try std.testing.expectEqual(@as(i32, 0), Reactor.wake(r.eventfd));
    const wakes = r.counters.wakes;
    var turns: u32 = 0;
    const t1 = test_now_us();
    while (r.counters.wakes == wakes and turns < 10) : (turns += 1) _ = r.turn(0, 5_000_000, test_now_us());
    try std.testing.expectEqual(wakes + 1, r.counters.wakes);
    try std.testing.expect(test_now_us() - t1 < 2_500_000);
}

/// Counts SIGALRMs (the handler of the EINTR test).
var test_alarms: u32 = 0;
fn test_on_alarm(_: i32) callconv(.c) void {
    test_alarms += 1;
}

test "a signal during a sleep (io_uring_enter EINTR) ends the turn early without an error, and loses nothing" {
    const r = try Reactor.create(8, 16);
    defer r.destroy();
    const act = linux.Sigaction{ .handler = .{ .handler = test_on_alarm }, .mask = linux.sigemptyset(), .flags = 0 };
    var old: linux.Sigaction = undefined;
    _ = linux.sigaction(linux.SIG.ALRM, &act, &old);
    defer _ = linux.sigaction(linux.SIG.ALRM, &old, null);
    r.ops[0] = test_op(.TIMEOUT, 1);
    r.ops[0].aux = 1; // 1 s
    try std.testing.expectEqual(@as(i32, 0), r.turn(1, 0, test_now_us()));
    // SIGALRM in 100 ms (setitimer's timeval: the second field is µs), no SA_RESTART.
    const it = linux.itimerspec{ .it_interval = .{ .sec = 0, .nsec = 0 }, .it_value = .{ .sec = 0, .nsec = 100_000 } };
    _ = linux.setitimer(@intFromEnum(linux.ITIMER.REAL), &it, null);
    const off = std.mem.zeroes(linux.itimerspec);
    defer _ = linux.setitimer(@intFromEnum(linux.ITIMER.REAL), &off, null); // before the handler goes
    const alarms = test_alarms;
    // The sleep ends at the signal: no completion yet (the timeout's is 0.9 s away), no error.
    try std.testing.expectEqual(@as(i32, 0), r.turn(0, 5_000_000, test_now_us()));
    try std.testing.expectEqual(alarms + 1, test_alarms);
    var seen: [1]Completion = undefined;
    try std.testing.expectEqual(@as(usize, 1), try test_collect(r, 0, 1, &seen));
    try std.testing.expectEqual(@as(u32, 1), seen[0].slot);
    try std.testing.expectEqual(-@as(i32, @intFromEnum(linux.E.TIME)), seen[0].res);
}
