//! C ABI exports of the fs layer (imported by exports.zig).
