//! C ABI exports of the net layer (imported by exports.zig).
