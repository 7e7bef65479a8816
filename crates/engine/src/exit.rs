//! Exit codes, the same numbers as the binary's `exit` module and design.md.

/// The run finished as asked.
pub const OK: u8 = 0;
/// Internal error (including a checkpoint that cannot be written).
pub const INTERNAL: u8 = 1;
/// Bad input: runbook, params, checkpoint (corrupt, foreign, newer, changed runbook).
pub const BAD_INPUT: u8 = 2;
/// A step failed and the rollback sequence finished.
pub const ROLLED_BACK: u8 = 3;
/// Paused and resumable: awaiting approval, interrupted, or a step failed with `halt`.
pub const PAUSED: u8 = 4;
/// Another run holds the checkpoint's lock.
pub const LOCKED: u8 = 5;
/// The rollback itself failed: a person must look.
pub const ROLLBACK_FAILED: u8 = 6;
