//! Exit codes: the contract scripts and pipelines branch on. This is the one definition; the
//! binary re-exports it, and the README's "Exit codes" table and `docs/events.md` say the same.
//!
//! | code | meaning | what a pipeline does |
//! |---|---|---|
//! | 0 | the run finished as asked (completed, or a requested rollback finished) | continue |
//! | 1 | internal error, or Azure/the cluster could not be reached before the run started | retry or look |
//! | 2 | bad input: arguments, runbook, checkpoint (corrupt, foreign, newer), scenario file; a refused rollback | fix the invocation |
//! | 3 | a step failed and the rollback finished: the cluster is back on the source revision | report; fix the cause |
//! | 4 | paused and resumable: awaiting an approval, interrupted (Ctrl-C/SIGTERM), or halted | `resume --approve STEP` later, or `rollback` |
//! | 5 | another run holds the cluster's (or the checkpoint's) lock | wait; do not start a second run |
//! | 6 | the rollback itself failed and needs a person | `status`, fix, then `rollback` again |
//!
//! A second Ctrl-C aborts the process at once with [`crate::signals::ABORTED`] (130); the
//! checkpoint is as the last write left it, and `resume` continues from there.
//!
//! How a run's outcome maps to a code: [`crate::RunReport::exit_code`]; errors that stop a
//! command before or outside a run: [`crate::EngineError::exit_code`].

/// The run finished as asked: every step completed (or was skipped), or a rollback that was
/// asked for (`rollback`) finished.
///
/// Pipeline: continue.
pub const OK: u8 = 0;

/// Internal error: a bug, an environment the tool cannot work in, a checkpoint that cannot be
/// written; for the binary also Azure or the cluster unreachable before the run started.
/// Nothing was decided about the cluster; the checkpoint (if any) is as the last write left it.
///
/// Pipeline: retry the job, or look at the message if it repeats.
pub const INTERNAL: u8 = 1;

/// Bad input: arguments, a runbook, params, a scenario file, or a checkpoint (corrupt,
/// truncated, not a checkpoint, of a newer schema, of another target, of a changed runbook
/// without `--force`, already completed); also a rollback refused because a step has passed
/// its point of no return ([`crate::Action::may_roll_back`]). Nothing was changed.
///
/// Pipeline: fix the invocation (the message says what and how); do not retry as is.
pub const BAD_INPUT: u8 = 2;

/// A step failed and the rollback sequence finished: the target is back where it started (for
/// asm-canary, the cluster is on the source revision and nothing runs on the target).
///
/// Pipeline: report the failure (the message and `run_finished` name the step and why); fix the
/// cause before trying again.
pub const ROLLED_BACK: u8 = 3;

/// Paused and resumable: awaiting an approval, interrupted (first Ctrl-C/SIGTERM, or a lost
/// lock), or a failed step halted (`on_failure: halt`, or a person chose halt).
///
/// Pipeline: a later job runs `resume` (with `--approve STEP` for the approval awaited), or
/// `rollback`.
pub const PAUSED: u8 = 4;

/// Another run holds the cluster's lock (or the checkpoint's lock file): nothing was done.
///
/// Pipeline: wait and try later; never start a second run on the same cluster.
pub const LOCKED: u8 = 5;

/// The rollback itself failed: the target may be between states, and a person must look.
///
/// Pipeline: stop and alert; after fixing the cause, `status` shows where it stands and
/// `rollback` continues from the failed rollback step.
pub const ROLLBACK_FAILED: u8 = 6;
