//! C ABI exports of the smp layer (imported by exports.zig).
