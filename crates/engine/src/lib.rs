//! The runbook engine: runbook files, the gated step executor, checkpoints and events.
//! It knows nothing of Azure, Istio or terminals.
//!
//! ```text
//!  runbook.yaml ──Runbook::load(path, &registry)──▶ Runbook ─┐
//!  Registry (actions + gates by name) ───────────────────────┼─▶ Executor ──events──▶ EventSink (renderers)
//!  CheckpointStore (FileStore: JSON + .lock) ◀── every transition, every journal entry ──┘     ▲
//!  Approver (PreApproved / terminal prompt) ──────────────────────────────────────────────────┤
//!  FailureDecider (RunbookPolicy / terminal question: roll back, retry or halt) ──────────────┘
//! ```
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use asm_canary_engine::*;
//! use serde_json::json;
//!
//! struct Bump;
//! #[async_trait::async_trait]
//! impl Action for Bump {
//!     async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
//!         // Observe first: a resumed step may find its side effect already made.
//!         if let Some(done) = ctx.journal.find("bump", "counter").filter(|e| e.is_done()) {
//!             return Ok(ActionOutcome::already_done(Outputs::new(), format!("entry {}", done.seq)));
//!         }
//!         let by: i64 = ctx.input("by")?;
//!         let id = ctx.journal.intent("bump", "counter", json!({ "by": by })).await?;
//!         // ... make the side effect here ...
//!         ctx.journal.done(id, None).await?;
//!         let mut out = Outputs::new();
//!         out.insert("value".into(), json!(by));
//!         Ok(ActionOutcome::done(out))
//!     }
//! }
//!
//! struct AtLeast;
//! #[async_trait::async_trait]
//! impl Gate for AtLeast {
//!     async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
//!         let v: i64 = ctx.input("value")?;
//!         Ok(if v >= 2 { GateStatus::passed() } else { GateStatus::failed(format!("{v} < 2")) })
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let registry = Registry::new().action("bump", Bump).gate("at-least", AtLeast);
//! let runbook = Runbook::parse(r#"
//! apiVersion: asm-canary.runbook/v1
//! name: example
//! params:
//!   by: { type: integer, default: 2 }
//! summary:
//!   value: ${steps.bump.outputs.value}
//! steps:
//!   - id: bump
//!     action: bump
//!     inputs: { by: "${params.by}" }
//!     gate: { check: at-least, inputs: { value: "${steps.bump.outputs.value}" }, timeout: 1m }
//! "#, "example.yaml", &registry).unwrap();
//!
//! let dir = tempfile::tempdir().unwrap();
//! let events = Arc::new(MemorySink::new());
//! let executor = Executor::new(runbook, registry, FileStore::new(dir.path().join("run.json")))
//!     .with_events(events.clone())
//!     .with_approver(Arc::new(PreApproved::new(["complete"])));
//! let report = executor
//!     .run(RunRequest { target: "cluster-1".into(), ..Default::default() })
//!     .await
//!     .unwrap();
//! assert_eq!(report.outcome, Outcome::Completed);
//! assert_eq!(report.exit_code(), 0);
//! assert_eq!(report.summary["value"], json!(2));
//! // resume, rollback: executor.resume(ResumeOptions::default()).await, executor.rollback(...)
//! # });
//! ```
//!
//! The CLI wires Ctrl-C with [`signals::cancel_on_signals`]`(executor.cancellation())`, maps
//! [`RunReport::exit_code`] / [`EngineError::exit_code`] to the process exit code, and renders
//! events with the root crate's `ui` module. Formats: `docs/runbooks.md`, `docs/events.md`.

#![forbid(unsafe_code)]

pub mod approval;
pub mod checkpoint;
pub mod duration;
pub mod events;
pub mod executor;
pub mod exit;
pub mod failure;
pub mod journal;
pub mod runbook;
pub mod signals;
pub mod step;
pub mod step_error;
pub mod template;

pub use approval::{
    ApprovalDecision, ApprovalRecord, ApprovalRequest, ApproveAll, Approver, PreApproved,
};
pub use checkpoint::{
    Access, Checkpoint, CheckpointError, CheckpointStore, FileStore, RunState, StepRecord,
    StepStatus, sha256_hex,
};
pub use events::{
    ChannelSink, EVENTS_SCHEMA, Emitter, Event, EventRecord, EventSink, FanOut, Level,
    MeasurementRecord, MemorySink, NullSink, Outcome, Phase, Progress,
};
pub use executor::{EngineError, Executor, ResumeOptions, RunReport, RunRequest, read_checkpoint};
pub use failure::{FailureDecider, FailureDecision, FailureRequest, RunbookPolicy};
pub use journal::{EntryId, EntryStatus, Journal, JournalEntry};
pub use runbook::{
    ApprovalMode, DEFAULT_INTEGER_RANGE, DurationSpec, GateSpec, OnFailure, ParamSpec, ParamType,
    Pos, Problem, Runbook, RunbookError, StepSpec,
};
pub use step::{
    Action, ActionCtx, ActionOutcome, Gate, GateCtx, GateStatus, NotImplemented, Outputs, Registry,
    StepError,
};
pub use tokio_util::sync::CancellationToken;
