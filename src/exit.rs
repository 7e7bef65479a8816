//! Exit codes: the contract scripts and pipelines branch on (see README, "Exit codes").

/// The run finished as asked.
pub const OK: u8 = 0;
/// Internal error: a bug, or an environment the tool cannot work in.
pub const INTERNAL: u8 = 1;
/// Bad input: arguments, runbook, checkpoint, scenario file.
pub const BAD_INPUT: u8 = 2;
/// A gate failed and the rollback finished: the cluster is back on the source revision.
pub const ROLLED_BACK: u8 = 3;
/// Paused and resumable: awaiting an approval, interrupted, or a gate failed with `halt`.
pub const PAUSED: u8 = 4;
/// Another run holds the cluster's lock (or the checkpoint's).
pub const LOCKED: u8 = 5;
/// The rollback itself failed: a person must look.
pub const ROLLBACK_FAILED: u8 = 6;
