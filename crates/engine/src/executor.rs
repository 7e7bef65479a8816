//! The executor: runs a runbook's steps in order (approval → action → gate), checkpoints every
//! transition, pauses, resumes, and runs the rollback sequence.
//!
//! ```text
//!  for each forward step:  pending ─▶ [awaiting_approval] ─▶ acting ─▶ gating ─▶ succeeded
//!                                │                              │         │
//!                                └─ when: false / Skipped ─▶ skipped      └─▶ failed ─▶ FailureDecider
//!                                                                     halt: paused ◀─┤
//!                                                           retry: acting (attempt+1) ◀─┤
//!                                                                   rollback sequence ◀─┘
//! ```
//!
//! The [`FailureDecider`] is asked only for a failed forward step: not for an interruption
//! (the run pauses) and not inside the rollback sequence (a failed rollback step stops it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::approval::{ApprovalDecision, ApprovalRecord, ApprovalRequest, Approver, PreApproved};
use crate::checkpoint::{
    Access, CHECKPOINT_KIND, Checkpoint, CheckpointError, CheckpointStore, RunState,
    SCHEMA_VERSION, StepRecord, StepStatus,
};
use crate::duration::format_duration;
use crate::events::{Emitter, Event, EventSink, NullSink, Outcome, Phase, Progress};
use crate::exit;
use crate::failure::{FailureDecider, FailureDecision, FailureRequest, RunbookPolicy};
use crate::journal::{
    EntryId, Journal, JournalBackend, JournalEntry, mark_entry_done, push_intent,
};
use crate::runbook::{ApprovalMode, GateSpec, OnFailure, Runbook, RunbookError, StepSpec};
use crate::step::{ActionCtx, ActionOutcome, Gate, GateCtx, GateStatus, Registry, StepError};
use crate::template::{self, Scope};

/// A fresh run.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// The run's target identity (for asm-canary the cluster's ARM id).
    pub target: String,
    /// Param values; strings are converted to the declared types, defaults fill the rest.
    pub params: Map<String, Value>,
    /// A run id; a UUID v4 when `None`.
    pub run_id: Option<String>,
}

/// How to pick up an existing checkpoint (`resume`, `rollback`).
#[derive(Debug, Clone, Default)]
pub struct ResumeOptions {
    /// Refuse a checkpoint of another target (when the caller knows the target).
    pub expect_target: Option<String>,
    /// Continue even though the runbook changed since the checkpoint was written.
    pub force: bool,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    pub run_id: String,
    pub outcome: Outcome,
    /// The sentence that explains a pause, a rollback or a failure.
    pub reason: Option<String>,
    /// The runbook's summary values (e.g. `source`, `target`).
    pub summary: Map<String, Value>,
    pub state: RunState,
    /// The forward step whose failure started the rollback (or paused the run).
    pub failed_step: Option<String>,
    /// True when the rollback was asked for (then `rolled_back` exits 0).
    pub rollback_requested: bool,
}

impl RunReport {
    /// The process exit code (design.md): completed 0, rolled back 3 (0 when the rollback was
    /// what was asked), paused 4, failed (rollback failed) 6.
    pub fn exit_code(&self) -> u8 {
        outcome_exit_code(self.outcome, self.rollback_requested)
    }
}

fn outcome_exit_code(outcome: Outcome, rollback_requested: bool) -> u8 {
    match outcome {
        Outcome::Completed => exit::OK,
        Outcome::RolledBack if rollback_requested => exit::OK,
        Outcome::RolledBack => exit::ROLLED_BACK,
        Outcome::Paused => exit::PAUSED,
        Outcome::Failed => exit::ROLLBACK_FAILED,
        Outcome::Refused => exit::BAD_INPUT,
    }
}

impl Outcome {
    /// The exit code of a run that ended this way (a requested rollback exits 0: see
    /// [`RunReport::exit_code`]).
    pub fn exit_code(self) -> u8 {
        outcome_exit_code(self, false)
    }
}

/// Errors that stop the executor before or outside the normal outcomes.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Runbook(#[from] RunbookError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("bad params for runbook {runbook}: {detail}")]
    Params { runbook: String, detail: String },
    #[error(
        "run {run_id} has completed; there is nothing to resume or roll back with this checkpoint ({path})"
    )]
    AlreadyCompleted { run_id: String, path: String },
    /// A forward step's [`crate::Action::may_roll_back`] refused: nothing was written.
    #[error("cannot roll back: {source}")]
    RollbackRefused {
        run_id: String,
        /// The step that refused.
        step: String,
        #[source]
        source: StepError,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// The process exit code: 2 bad input (including a refused rollback), 5 locked, 1 internal.
    pub fn exit_code(&self) -> u8 {
        match self {
            EngineError::Runbook(_) | EngineError::Params { .. } => exit::BAD_INPUT,
            EngineError::AlreadyCompleted { .. } => exit::BAD_INPUT,
            EngineError::RollbackRefused { .. } => exit::BAD_INPUT,
            EngineError::Checkpoint(e) => e.exit_code(),
            EngineError::Internal(_) => exit::INTERNAL,
        }
    }
}

type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Runs a runbook. Build it once per command; `run`, `resume` and `rollback` each take the
/// store's lock for their whole duration.
pub struct Executor {
    runbook: Arc<Runbook>,
    registry: Arc<Registry>,
    store: Arc<dyn CheckpointStore>,
    events: Arc<dyn EventSink>,
    approver: Arc<dyn Approver>,
    decider: Arc<dyn FailureDecider>,
    cancel: CancellationToken,
    clock: Clock,
}

impl Executor {
    /// An executor with no event sink, no approvals (approval steps pause), failures handled
    /// as the runbook's `on_failure` says ([`RunbookPolicy`]) and its own cancellation token.
    /// Use the `with_*` methods to change those.
    pub fn new(
        runbook: Runbook,
        registry: Registry,
        store: impl CheckpointStore + 'static,
    ) -> Self {
        Executor {
            runbook: Arc::new(runbook),
            registry: Arc::new(registry),
            store: Arc::new(store),
            events: Arc::new(NullSink),
            approver: Arc::new(PreApproved::none()),
            decider: Arc::new(RunbookPolicy),
            cancel: CancellationToken::new(),
            clock: Arc::new(Utc::now),
        }
    }

    /// Where events go (renderers).
    pub fn with_events(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.events = sink;
        self
    }

    /// Who approves `approval: required` steps.
    pub fn with_approver(mut self, approver: Arc<dyn Approver>) -> Self {
        self.approver = approver;
        self
    }

    /// Who decides what happens when a forward step fails: roll back, retry or halt
    /// (default: [`RunbookPolicy`], the runbook's `on_failure`).
    pub fn with_failure_decider(mut self, decider: Arc<dyn FailureDecider>) -> Self {
        self.decider = decider;
        self
    }

    /// The token the CLI cancels on the first Ctrl-C/SIGTERM.
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// The wall clock for timestamps (events, checkpoint); tests fix it for snapshots.
    pub fn with_clock(mut self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The checkpoint as its store holds it now (read-only).
    pub async fn checkpoint(&self) -> Result<Checkpoint, EngineError> {
        read_checkpoint(self.store.as_ref()).await
    }

    pub fn runbook(&self) -> &Runbook {
        &self.runbook
    }

    /// What [`Self::run`] would refuse, checked without taking the store's lock or writing
    /// anything: a checkpoint already in the store (even a corrupt one), bad params. A driver
    /// calls it before it takes any other lock or creates any file. The bound params.
    pub async fn check_run(&self, req: &RunRequest) -> Result<Map<String, Value>, EngineError> {
        if let Some(cp) = self.store.load(Access::ReadOnly).await? {
            return Err(CheckpointError::AlreadyExists {
                path: self.store.location(),
                run_id: cp.run_id,
            }
            .into());
        }
        self.runbook
            .bind_params(&req.params)
            .map_err(|detail| EngineError::Params {
                runbook: self.runbook.name.clone(),
                detail,
            })
    }

    /// What [`Self::resume`] (or, with `rollback`, [`Self::rollback`]) would refuse, checked
    /// without taking the store's lock or writing anything: no checkpoint, a corrupt or newer
    /// one, another target's, a changed runbook (without `force`), a completed run to roll
    /// back. The checkpoint as it would be continued.
    pub async fn check_resume(
        &self,
        opts: &ResumeOptions,
        rollback: bool,
    ) -> Result<Checkpoint, EngineError> {
        let (cp, _) = self.load_checked(opts).await?;
        if rollback && cp.state == RunState::Completed {
            return Err(EngineError::AlreadyCompleted {
                run_id: cp.run_id,
                path: self.store.location(),
            });
        }
        Ok(cp)
    }

    /// Starts a new run. Refuses if the store already holds a checkpoint (never overwrites).
    pub async fn run(&self, req: RunRequest) -> Result<RunReport, EngineError> {
        let lock = self.store.lock().await?;
        let params = self.check_run(&req).await?;
        let now = (self.clock)();
        let run_id = req
            .run_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let cp = Checkpoint {
            schema_version: SCHEMA_VERSION.to_string(),
            kind: CHECKPOINT_KIND.to_string(),
            run_id,
            target: req.target,
            runbook: self.runbook.reference(),
            params,
            state: RunState::Running,
            reason: None,
            failed_step: None,
            rollback_requested: false,
            created_at: now,
            updated_at: now,
            steps: self
                .runbook
                .steps
                .iter()
                .map(|s| StepRecord::pending(&s.id))
                .collect(),
            rollback: self
                .runbook
                .rollback
                .iter()
                .map(|s| StepRecord::pending(&s.id))
                .collect(),
            journal: Vec::new(),
            approvals: Vec::new(),
            summary: Map::new(),
        };
        let run = self.start(cp, lock, false).await?;
        run.guard(run.forward().await).await
    }

    /// Continues a run from its checkpoint: the forward steps where they stopped, or an
    /// interrupted rollback. A completed or rolled-back run just reports its outcome again.
    pub async fn resume(&self, opts: ResumeOptions) -> Result<RunReport, EngineError> {
        let lock = self.store.lock().await?;
        let (cp, repaired) = self.load_checked(&opts).await?;
        let run = self.start(cp, lock, true).await?;
        repaired.into_iter().for_each(|w| run.emitter.warn(w));
        let state = run.snapshot().state;
        let result = match state {
            RunState::Completed => Ok(run.finish(Outcome::Completed).await?),
            RunState::RolledBack => Ok(run.finish(Outcome::RolledBack).await?),
            RunState::RollingBack | RunState::Failed => run.rollback_sequence().await,
            // The process died (or was interrupted) between recording a failed step and
            // recording what was decided about it: ask now rather than retrying the step.
            RunState::Running | RunState::Paused => match run.undecided_failure() {
                Some((spec, error)) => match run.after_failure(&spec, error, false).await {
                    Ok(Some(report)) => Ok(report),
                    Ok(None) => run.forward().await,
                    Err(e) => Err(e),
                },
                None => run.forward().await,
            },
        };
        run.guard(result).await
    }

    /// Rolls the run back from wherever it stands (resumable itself); a requested rollback
    /// that finishes exits 0. Refuses a completed run, and a run whose forward steps say it
    /// can no longer be rolled back ([`crate::Action::may_roll_back`]); both refusals leave
    /// the checkpoint untouched.
    pub async fn rollback(&self, opts: ResumeOptions) -> Result<RunReport, EngineError> {
        let lock = self.store.lock().await?;
        let (cp, repaired) = self.load_checked(&opts).await?;
        if cp.state == RunState::Completed {
            return Err(EngineError::AlreadyCompleted {
                run_id: cp.run_id,
                path: self.store.location(),
            });
        }
        if cp.state != RunState::RolledBack {
            may_roll_back(&self.runbook, &self.registry, &cp, &self.cancel).await?;
        }
        let run = self.start(cp, lock, true).await?;
        repaired.into_iter().for_each(|w| run.emitter.warn(w));
        if run.snapshot().state == RunState::RolledBack {
            return run.guard(run.finish(Outcome::RolledBack).await).await;
        }
        let r = run
            .update(|cp| {
                cp.rollback_requested = true;
                if cp.state != RunState::RollingBack && cp.state != RunState::Failed {
                    cp.reason = Some("rollback requested".into());
                }
                cp.state = RunState::RollingBack;
            })
            .await;
        if let Err(e) = r {
            return run.guard(Err(e)).await;
        }
        run.guard(run.rollback_sequence().await).await
    }

    /// The checkpoint, checked against the target and the runbook, and the warnings about
    /// params replaced by their defaults ([`Self::fill_params`]).
    async fn load_checked(
        &self,
        opts: &ResumeOptions,
    ) -> Result<(Checkpoint, Vec<String>), EngineError> {
        let path = self.store.location();
        let mut cp = self
            .store
            .load(Access::ReadWrite)
            .await?
            .ok_or_else(|| CheckpointError::Missing { path: path.clone() })?;
        if let Some(expected) = &opts.expect_target
            && expected != &cp.target
        {
            return Err(CheckpointError::ForeignTarget {
                path,
                found: cp.target,
                expected: expected.clone(),
            }
            .into());
        }
        let same = cp.runbook.name == self.runbook.name && cp.runbook.sha256 == self.runbook.sha256;
        if !same {
            if !opts.force {
                return Err(CheckpointError::RunbookChanged {
                    path,
                    found_name: cp.runbook.name,
                    found_sha: cp.runbook.sha256,
                    name: self.runbook.name.clone(),
                    sha: self.runbook.sha256.clone(),
                }
                .into());
            }
            // --force: adopt the new runbook, keeping the records of steps that still exist.
            cp.runbook = self.runbook.reference();
            let take = |old: &[StepRecord], specs: &[StepSpec]| -> Vec<StepRecord> {
                specs
                    .iter()
                    .map(|s| {
                        old.iter()
                            .find(|r| r.id == s.id)
                            .cloned()
                            .unwrap_or_else(|| StepRecord::pending(&s.id))
                    })
                    .collect()
            };
            cp.steps = take(&cp.steps, &self.runbook.steps);
            cp.rollback = take(&cp.rollback, &self.runbook.rollback);
        } else if cp.runbook.text.is_none() {
            // Written before checkpoints kept the runbook (schema 1.0): keep it from now on.
            cp.runbook = self.runbook.reference();
        }
        // A newer minor without unknown fields was accepted: it is rewritten in this format.
        cp.schema_version = SCHEMA_VERSION.to_string();
        let repaired = self.fill_params(&mut cp);
        Ok((cp, repaired))
    }

    /// Params the runbook declares now but the checkpoint lacks get their defaults; so does a
    /// stored value the runbook refuses now (out of range, wrong type: an edited or older
    /// checkpoint), so that a param can never make a rollback impossible. A warning per
    /// replaced value is returned.
    fn fill_params(&self, cp: &mut Checkpoint) -> Vec<String> {
        let mut repaired = Vec::new();
        for p in &self.runbook.params {
            let default = p.default.clone().unwrap_or(Value::Null);
            match cp.params.get(&p.name) {
                None => {
                    cp.params.insert(p.name.clone(), default);
                }
                Some(v) => {
                    let checked = p.check(v).unwrap_or_else(|e| {
                        repaired.push(format!(
                            "the checkpoint's param {:?} is unusable ({e}); using the runbook's default {default}",
                            p.name
                        ));
                        default
                    });
                    cp.params.insert(p.name.clone(), checked);
                }
            }
        }
        repaired
    }

    async fn start(
        &self,
        cp: Checkpoint,
        lock: Box<dyn crate::checkpoint::StoreLock>,
        resumed: bool,
    ) -> Result<Arc<Run>, EngineError> {
        let emitter = Emitter::new(cp.run_id.clone(), self.events.clone(), self.clock.clone());
        let run = Arc::new(Run {
            runbook: self.runbook.clone(),
            registry: self.registry.clone(),
            store: self.store.clone(),
            approver: self.approver.clone(),
            decider: self.decider.clone(),
            cancel: self.cancel.clone(),
            clock: self.clock.clone(),
            emitter,
            cp: Mutex::new(cp),
            write_gate: tokio::sync::Mutex::new(()),
            version: AtomicU64::new(0),
            written: AtomicU64::new(0),
            _lock: lock,
        });
        // Record that a process owns the run now (also proves the file is writable).
        run.update(|cp| {
            if cp.state == RunState::Paused {
                cp.state = RunState::Running;
            }
        })
        .await?;
        let cp = run.snapshot();
        run.emitter.emit(Event::RunStarted {
            runbook: cp.runbook.name.clone(),
            runbook_sha256: cp.runbook.sha256.clone(),
            target: cp.target.clone(),
            resumed,
            params: cp.params.clone(),
            steps: cp.steps.iter().map(|s| s.id.clone()).collect(),
        });
        Ok(run)
    }
}

/// One run in progress: the checkpoint in memory, the store, the lock.
struct Run {
    runbook: Arc<Runbook>,
    registry: Arc<Registry>,
    store: Arc<dyn CheckpointStore>,
    approver: Arc<dyn Approver>,
    decider: Arc<dyn FailureDecider>,
    cancel: CancellationToken,
    clock: Clock,
    emitter: Emitter,
    cp: Mutex<Checkpoint>,
    /// Serializes checkpoint writes so the file always reflects the latest change.
    write_gate: tokio::sync::Mutex<()>,
    /// Bumped (under `cp`'s lock) by every change.
    version: AtomicU64,
    /// The highest version durably written.
    written: AtomicU64,
    _lock: Box<dyn crate::checkpoint::StoreLock>,
}

/// What a gate ended with.
enum GateEnd {
    Passed,
    Failed {
        reason: String,
    },
    /// The gate could not tell: the run pauses, and a resume runs the gate again.
    Inconclusive {
        reason: String,
    },
    Cancelled,
}

/// What one step ended with.
enum StepEnd {
    Finished,
    Failed(String),
    Interrupted,
    /// A pause that is not a failure (approval).
    Paused(String),
    /// The action refused ([`StepError::Refused`]): no rollback, the run pauses.
    Refused(String),
}

impl Run {
    fn snapshot(&self) -> Checkpoint {
        match self.cp.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// A forward step recorded `failed` with no decision recorded about it (a halt records
    /// `failed_step`, a rollback changes the state, a retry starts the step again): the
    /// process died, or was interrupted, while the decider was being asked. Its spec and error.
    fn undecided_failure(&self) -> Option<(StepSpec, String)> {
        let cp = self.snapshot();
        let rec = cp.steps.iter().find(|r| {
            r.status == StepStatus::Failed && cp.failed_step.as_deref() != Some(r.id.as_str())
        })?;
        let spec = self.runbook.step(&rec.id)?.clone();
        Some((spec, rec.error.clone().unwrap_or_default()))
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Applies `f` to the checkpoint and writes it (atomic, durable) before returning.
    /// Applies `f` to the checkpoint and returns once a checkpoint containing the change is
    /// durably written. Concurrent updates (an action journaling from parallel tasks) are
    /// group-committed: one write covers every change made before it started.
    async fn update<R>(&self, f: impl FnOnce(&mut Checkpoint) -> R) -> Result<R, EngineError> {
        let poisoned = || EngineError::Internal("checkpoint mutex poisoned".into());
        let (r, mine) = {
            let mut g = self.cp.lock().map_err(|_| poisoned())?;
            let r = f(&mut g);
            g.updated_at = (self.clock)();
            (r, self.version.fetch_add(1, Ordering::SeqCst) + 1)
        };
        let _w = self.write_gate.lock().await;
        if self.written.load(Ordering::SeqCst) >= mine {
            return Ok(r);
        }
        let (bytes, version) = {
            let g = self.cp.lock().map_err(|_| poisoned())?;
            (g.to_json(), self.version.load(Ordering::SeqCst))
        };
        self.store.write(&bytes).await?;
        self.written.store(version, Ordering::SeqCst);
        Ok(r)
    }

    async fn update_step(
        &self,
        phase: Phase,
        id: &str,
        f: impl FnOnce(&mut StepRecord),
    ) -> Result<(), EngineError> {
        self.update(|cp| {
            let list = match phase {
                Phase::Forward => &mut cp.steps,
                Phase::Rollback => &mut cp.rollback,
            };
            if let Some(r) = list.iter_mut().find(|r| r.id == id) {
                f(r);
            }
        })
        .await
    }

    fn record(&self, phase: Phase, id: &str) -> StepRecord {
        let cp = self.snapshot();
        let list = match phase {
            Phase::Forward => &cp.steps,
            Phase::Rollback => &cp.rollback,
        };
        list.iter()
            .find(|r| r.id == id)
            .cloned()
            .unwrap_or_else(|| StepRecord::pending(id))
    }

    /// On an engine error after the run started, still end the event stream with run_finished.
    async fn guard(&self, r: Result<RunReport, EngineError>) -> Result<RunReport, EngineError> {
        if let Err(e) = &r {
            let cp = self.snapshot();
            self.emitter.emit(Event::RunFinished {
                outcome: Outcome::Failed,
                reason: Some(e.to_string()),
                exit_code: e.exit_code(),
                summary: cp.summary,
            });
        }
        r
    }

    fn scope_values(&self) -> (String, String, Map<String, Value>, Map<String, Value>) {
        let cp = self.snapshot();
        (
            cp.run_id.clone(),
            cp.target.clone(),
            cp.params.clone(),
            cp.outputs_by_step(),
        )
    }

    fn resolve(&self, v: &Value, lenient: bool) -> Result<Value, String> {
        let (run_id, target, params, outputs) = self.scope_values();
        template::resolve(
            v,
            &Scope {
                run_id: &run_id,
                target: &target,
                params: &params,
                outputs: &outputs,
                lenient,
            },
        )
    }

    fn resolve_map(
        &self,
        m: &Map<String, Value>,
        lenient: bool,
    ) -> Result<Map<String, Value>, String> {
        match self.resolve(&Value::Object(m.clone()), lenient)? {
            Value::Object(o) => Ok(o),
            _ => Ok(Map::new()),
        }
    }

    async fn finish(&self, outcome: Outcome) -> Result<RunReport, EngineError> {
        let summary: Map<String, Value> = self
            .runbook
            .summary
            .iter()
            .map(|(k, v)| (k.clone(), self.resolve(v, true).unwrap_or(Value::Null)))
            .collect();
        let cp = self
            .update(|cp| {
                cp.summary = summary;
                cp.clone()
            })
            .await?;
        let report = RunReport {
            run_id: cp.run_id.clone(),
            outcome,
            reason: cp.reason.clone(),
            summary: cp.summary.clone(),
            state: cp.state,
            failed_step: cp.failed_step.clone(),
            rollback_requested: cp.rollback_requested,
        };
        self.emitter.emit(Event::RunFinished {
            outcome,
            reason: report.reason.clone(),
            exit_code: report.exit_code(),
            summary: report.summary.clone(),
        });
        Ok(report)
    }

    async fn pause(&self, reason: String) -> Result<RunReport, EngineError> {
        self.update(|cp| {
            cp.state = RunState::Paused;
            cp.reason = Some(reason);
        })
        .await?;
        self.finish(Outcome::Paused).await
    }

    async fn forward(self: &Arc<Self>) -> Result<RunReport, EngineError> {
        let specs = self.runbook.steps.clone();
        for spec in &specs {
            if self.record(Phase::Forward, &spec.id).is_finished() {
                continue;
            }
            // Once per attempt: a retried step comes round again.
            loop {
                if self.cancel.is_cancelled() {
                    return self
                        .pause(format!(
                            "interrupted before step {:?}; resume to continue",
                            spec.id
                        ))
                        .await;
                }
                match self.step(spec, Phase::Forward).await? {
                    StepEnd::Finished => break,
                    StepEnd::Interrupted => {
                        return self
                            .pause(format!(
                                "interrupted during step {:?}; resume to continue",
                                spec.id
                            ))
                            .await;
                    }
                    StepEnd::Paused(reason) => return self.pause(reason).await,
                    StepEnd::Refused(error) => return self.refused(spec, error).await,
                    StepEnd::Failed(error) => {
                        if let Some(report) = self.after_failure(spec, error, true).await? {
                            return Ok(report);
                        }
                    }
                }
            }
        }
        self.update(|cp| {
            cp.state = RunState::Completed;
            cp.reason = None;
        })
        .await?;
        self.finish(Outcome::Completed).await
    }

    /// A forward step refused: announced as a halt, recorded as the failed step, the run
    /// paused and ended as [`Outcome::Refused`] — no rollback, whatever `on_failure` says.
    async fn refused(&self, spec: &StepSpec, error: String) -> Result<RunReport, EngineError> {
        self.emitter.emit(Event::StepFailed {
            step: spec.id.clone(),
            phase: Phase::Forward,
            error: error.clone(),
            on_failure: Some("halt".into()),
        });
        let id = spec.id.clone();
        let reason = format!(
            "step {id:?} refused: {error}; nothing was changed by it — resume once the cause is fixed"
        );
        self.update(|cp| {
            cp.state = RunState::Paused;
            cp.failed_step = Some(id);
            cp.reason = Some(reason);
        })
        .await?;
        self.finish(Outcome::Refused).await
    }

    /// Asks the decider about the failed forward step `spec` and carries out the answer:
    /// `None` for a retry (the caller runs the step again), the run's report for a halt or a
    /// rollback. `announce`: emit `step_failed` (false when a resumed run asks again about a
    /// failure announced by the process that recorded it).
    async fn after_failure(
        self: &Arc<Self>,
        spec: &StepSpec,
        error: String,
        announce: bool,
    ) -> Result<Option<RunReport>, EngineError> {
        let decided = self.decide(spec, &error).await;
        if announce {
            self.emitter.emit(Event::StepFailed {
                step: spec.id.clone(),
                phase: Phase::Forward,
                error: error.clone(),
                on_failure: decided.as_ref().map(|(d, _)| d.as_str().into()),
            });
        }
        let id = &spec.id;
        let why = match decided {
            None => {
                let reason = format!(
                    "step {id:?} failed: {error}; interrupted before deciding what to do — resume to decide, or roll back"
                );
                return self.pause(reason).await.map(Some);
            }
            Some((FailureDecision::Retry, _)) => return Ok(None),
            Some((FailureDecision::Rollback, _)) => {
                self.update(|cp| {
                    cp.state = RunState::RollingBack;
                    cp.failed_step = Some(id.clone());
                    cp.reason = Some(format!("step {id:?} failed: {error}"));
                })
                .await?;
                return self.rollback_sequence().await.map(Some);
            }
            Some((FailureDecision::Halt, Some(refused))) => {
                format!("halted because {refused} — fix the cause and resume")
            }
            Some((FailureDecision::Halt, None)) => match spec.on_failure {
                OnFailure::Halt => {
                    "halted (on_failure: halt) — fix the cause and resume, or roll back".into()
                }
                OnFailure::Rollback => "halted — fix the cause and resume, or roll back".into(),
            },
        };
        self.update(|cp| cp.failed_step = Some(id.clone())).await?;
        let reason = format!("step {id:?} failed: {error}; {why}");
        self.pause(reason).await.map(Some)
    }

    /// The decision about a failed forward step; `None` when the run was interrupted before
    /// the decider answered. A rollback the forward steps refuse ([`may_roll_back`]) would do
    /// harm: it becomes a halt, with the refusal.
    async fn decide(
        &self,
        spec: &StepSpec,
        error: &str,
    ) -> Option<(FailureDecision, Option<EngineError>)> {
        let cp = self.snapshot();
        let request = FailureRequest {
            run_id: cp.run_id.clone(),
            target: cp.target.clone(),
            step: spec.id.clone(),
            error: error.to_string(),
            attempt: self.record(Phase::Forward, &spec.id).attempts,
            policy: spec.on_failure,
        };
        let decision = tokio::select! {
            biased;
            d = self.decider.decide(&request) => d,
            _ = self.cancel.cancelled() => return None,
        };
        if decision != FailureDecision::Rollback {
            return Some((decision, None));
        }
        let cp = self.snapshot();
        Some(
            match may_roll_back(&self.runbook, &self.registry, &cp, &self.cancel).await {
                Ok(()) => (FailureDecision::Rollback, None),
                Err(refused) => (FailureDecision::Halt, Some(refused)),
            },
        )
    }

    async fn rollback_sequence(self: &Arc<Self>) -> Result<RunReport, EngineError> {
        let cp = self.snapshot();
        self.emitter.emit(Event::RollbackStarted {
            reason: cp.reason.clone().unwrap_or_else(|| "rollback".into()),
            failed_step: cp.failed_step.clone(),
        });
        if cp.state == RunState::Failed {
            self.update(|cp| cp.state = RunState::RollingBack).await?;
        }
        let nothing_done =
            cp.journal.is_empty() && cp.rollback.iter().all(|r| r.status == StepStatus::Pending);
        let specs = self.runbook.rollback.clone();
        for spec in &specs {
            if self.record(Phase::Rollback, &spec.id).is_finished() {
                continue;
            }
            if nothing_done {
                let reason = "nothing to undo: the journal records no side effect".to_string();
                let now = self.now();
                self.update_step(Phase::Rollback, &spec.id, |r| {
                    r.status = StepStatus::Skipped;
                    r.skip_reason = Some(reason.clone());
                    r.finished_at = Some(now);
                })
                .await?;
                self.emitter.emit(Event::StepSkipped {
                    step: spec.id.clone(),
                    phase: Phase::Rollback,
                    reason,
                });
                continue;
            }
            if self.cancel.is_cancelled() {
                return self.rollback_paused(&spec.id).await;
            }
            match self.step(spec, Phase::Rollback).await? {
                StepEnd::Finished => {}
                StepEnd::Interrupted | StepEnd::Paused(_) => {
                    return self.rollback_paused(&spec.id).await;
                }
                StepEnd::Failed(error) | StepEnd::Refused(error) => {
                    self.emitter.emit(Event::StepFailed {
                        step: spec.id.clone(),
                        phase: Phase::Rollback,
                        error: error.clone(),
                        on_failure: None,
                    });
                    let reason = format!(
                        "rollback step {:?} failed: {error}; a person must look — after fixing the cause, `rollback` continues from this step",
                        spec.id
                    );
                    self.update(|cp| {
                        cp.state = RunState::Failed;
                        cp.reason = Some(reason.clone());
                    })
                    .await?;
                    self.emitter.emit(Event::RollbackFinished {
                        ok: false,
                        error: Some(error),
                    });
                    return self.finish(Outcome::Failed).await;
                }
            }
        }
        self.update(|cp| {
            cp.state = RunState::RolledBack;
            cp.reason = Some(rollback_cause(cp));
        })
        .await?;
        self.emitter.emit(Event::RollbackFinished {
            ok: true,
            error: None,
        });
        self.finish(Outcome::RolledBack).await
    }

    /// Interrupted during the rollback: the state stays `rolling_back` so a resume continues it.
    async fn rollback_paused(&self, step: &str) -> Result<RunReport, EngineError> {
        self.update(|cp| {
            cp.reason = Some(format!(
                "rollback interrupted at step {step:?}; resume or rollback continues it"
            ));
        })
        .await?;
        self.finish(Outcome::Paused).await
    }

    /// Runs one step through approval, action and gate. Returns how it ended; engine errors
    /// (checkpoint writes) propagate.
    async fn step(self: &Arc<Self>, spec: &StepSpec, phase: Phase) -> Result<StepEnd, EngineError> {
        let id = spec.id.clone();
        if let Some(end) = self.when(spec, phase).await? {
            return Ok(end);
        }
        if let Some(end) = self.approve_early(spec, phase).await? {
            return Ok(end);
        }
        if let Some(end) = self.approve(spec, phase).await? {
            return Ok(end);
        }
        // A step that failed re-runs its action (which observes first); a step interrupted
        // while gating only re-runs its gate.
        let rec = self.record(phase, &id);
        if !rec.action_done || rec.status == StepStatus::Failed {
            if let Some(end) = self.act(spec, phase, &rec).await? {
                return Ok(end);
            }
        } else {
            self.emitter.emit(Event::StepStarted {
                step: id.clone(),
                phase,
                attempt: rec.attempts.max(1),
                description: spec.description.clone(),
            });
        }
        if self.record(phase, &id).status == StepStatus::Skipped {
            return Ok(StepEnd::Finished);
        }
        if let Some(gate) = &spec.gate
            && let Some(end) = self.await_gate(spec, gate, phase).await?
        {
            return Ok(end);
        }
        let now = self.now();
        self.update_step(phase, &id, |r| {
            r.status = StepStatus::Succeeded;
            r.error = None;
            r.finished_at = Some(now);
        })
        .await?;
        let already_done = self.record(phase, &id).already_done;
        self.emitter.emit(Event::StepSucceeded {
            step: id,
            phase,
            already_done,
        });
        Ok(StepEnd::Finished)
    }

    /// `when`: evaluated once, before the step first starts. `Some` when the step ends here
    /// (skipped, or the condition could not be evaluated).
    async fn when(&self, spec: &StepSpec, phase: Phase) -> Result<Option<StepEnd>, EngineError> {
        let Some(when) = &spec.when else {
            return Ok(None);
        };
        if self.record(phase, &spec.id).status != StepStatus::Pending {
            return Ok(None);
        }
        match self.resolve(when, phase == Phase::Rollback) {
            Ok(v) if !template::truthy(&v) => {
                // A single reference is named without `${…}`: the reason is human text (it
                // reaches the terminal, where braces would look like leaked JSON).
                let text = value_text(when);
                let shown = text
                    .strip_prefix("${")
                    .and_then(|r| r.strip_suffix('}'))
                    .filter(|r| !r.contains(['$', '{', '}']))
                    .unwrap_or(&text);
                let reason = format!("when {shown} is false");
                self.skip(phase, &spec.id, reason).await.map(Some)
            }
            Ok(_) => Ok(None),
            Err(e) => Ok(Some(StepEnd::Failed(format!("when: {e}")))),
        }
    }

    /// The approvals of later steps that ask to be given before `spec` runs
    /// (`approve_before`), for those whose `when` holds. An approved step goes back to
    /// pending until its turn; `Some` when the run cannot go on.
    async fn approve_early(
        &self,
        spec: &StepSpec,
        phase: Phase,
    ) -> Result<Option<StepEnd>, EngineError> {
        if phase != Phase::Forward || self.record(phase, &spec.id).is_finished() {
            return Ok(None);
        }
        let later: Vec<StepSpec> = (self.runbook.steps.iter())
            .filter(|s| s.approve_before.as_deref() == Some(spec.id.as_str()))
            .filter(|s| match &s.when {
                None => true,
                Some(w) => self.resolve(w, false).is_ok_and(|v| template::truthy(&v)),
            })
            .cloned()
            .collect();
        for s in &later {
            if let Some(end) = self.approve(s, phase).await? {
                return Ok(Some(end));
            }
            self.update_step(phase, &s.id, |r| {
                if r.status == StepStatus::AwaitingApproval {
                    r.status = StepStatus::Pending;
                }
            })
            .await?;
        }
        Ok(None)
    }

    /// Approval, for a step with `approval: required` not yet approved in this run. `Some`
    /// when the step cannot go on (denied, deferred, interrupted).
    async fn approve(&self, spec: &StepSpec, phase: Phase) -> Result<Option<StepEnd>, EngineError> {
        let id = spec.id.clone();
        if spec.approval != ApprovalMode::Required
            || self.snapshot().approvals.iter().any(|a| a.step == id)
        {
            return Ok(None);
        }
        let prompt = spec.approval_prompt.as_ref().map(|p| {
            self.resolve(&Value::String(p.clone()), true)
                .map(|v| value_text(&v))
                .unwrap_or_else(|_| p.clone())
        });
        self.update_step(phase, &id, |r| r.status = StepStatus::AwaitingApproval)
            .await?;
        self.emitter.emit(Event::ApprovalNeeded {
            step: id.clone(),
            prompt: prompt.clone(),
        });
        let cp = self.snapshot();
        let req = ApprovalRequest {
            run_id: cp.run_id.clone(),
            target: cp.target.clone(),
            step: id.clone(),
            description: spec.description.clone(),
            prompt,
        };
        let decision = tokio::select! {
            biased;
            d = self.approver.decide(&req) => d,
            _ = self.cancel.cancelled() => return Ok(Some(StepEnd::Interrupted)),
        };
        match decision {
            ApprovalDecision::Approved { by } => {
                let at = self.now();
                self.update(|cp| {
                    cp.approvals.push(ApprovalRecord {
                        step: id.clone(),
                        by: by.clone(),
                        at,
                    })
                })
                .await?;
                self.emitter.emit(Event::ApprovalGiven { step: id, by });
                Ok(None)
            }
            ApprovalDecision::Denied { reason } => {
                self.emitter.emit(Event::ApprovalDenied {
                    step: id.clone(),
                    reason: reason.clone(),
                });
                Ok(Some(StepEnd::Paused(format!(
                    "approval for step {id:?} was denied ({reason}); resume to be asked again, or roll back"
                ))))
            }
            ApprovalDecision::Defer => Ok(Some(StepEnd::Paused(format!(
                "step {id:?} awaits approval; resume with --approve {id} to continue"
            )))),
        }
    }

    /// The gate part: `None` when the gate passed.
    async fn await_gate(
        &self,
        spec: &StepSpec,
        gate: &GateSpec,
        phase: Phase,
    ) -> Result<Option<StepEnd>, EngineError> {
        let id = &spec.id;
        self.update_step(phase, id, |r| r.status = StepStatus::Gating)
            .await?;
        match self.gate(spec, gate, phase).await {
            GateEnd::Passed => Ok(None),
            GateEnd::Cancelled => {
                self.update_step(phase, id, |r| r.status = StepStatus::Interrupted)
                    .await?;
                self.emitter.emit(Event::StepInterrupted {
                    step: id.clone(),
                    phase,
                });
                Ok(Some(StepEnd::Interrupted))
            }
            GateEnd::Failed { reason } => {
                let error = format!("gate {:?} failed: {reason}", gate.check);
                self.fail_action(phase, id, error).await
            }
            // The step stays `gating`: a resume runs only its gate again.
            GateEnd::Inconclusive { reason } => Ok(Some(StepEnd::Paused(format!(
                "gate {:?} of step {id:?} was inconclusive: {reason}; resume to judge again, or roll back",
                gate.check
            )))),
        }
    }

    async fn skip(&self, phase: Phase, id: &str, reason: String) -> Result<StepEnd, EngineError> {
        let now = self.now();
        let r2 = reason.clone();
        self.update_step(phase, id, |r| {
            r.status = StepStatus::Skipped;
            r.skip_reason = Some(r2);
            r.finished_at = Some(now);
        })
        .await?;
        self.emitter.emit(Event::StepSkipped {
            step: id.to_string(),
            phase,
            reason,
        });
        Ok(StepEnd::Finished)
    }

    /// The action part. `Ok(None)`: go on to the gate (or the step was skipped).
    async fn act(
        self: &Arc<Self>,
        spec: &StepSpec,
        phase: Phase,
        rec: &StepRecord,
    ) -> Result<Option<StepEnd>, EngineError> {
        let id = spec.id.clone();
        let resumed = rec.attempts > 0;
        let attempt = rec.attempts + 1;
        let now = self.now();
        self.update_step(phase, &id, |r| {
            r.attempts = attempt;
            r.status = StepStatus::Acting;
            r.error = None;
            if r.started_at.is_none() {
                r.started_at = Some(now);
            }
        })
        .await?;
        self.emitter.emit(Event::StepStarted {
            step: id.clone(),
            phase,
            attempt,
            description: spec.description.clone(),
        });
        let Some(action) = self.registry.get_action(&spec.action) else {
            return Err(EngineError::Internal(format!(
                "action {:?} of step {id:?} is not registered (the runbook was validated against another registry)",
                spec.action
            )));
        };
        let inputs = match self.resolve_map(&spec.inputs, phase == Phase::Rollback) {
            Ok(i) => i,
            Err(e) => return self.fail_action(phase, &id, format!("inputs: {e}")).await,
        };
        let cp = self.snapshot();
        let ctx = ActionCtx {
            run_id: cp.run_id.clone(),
            target: cp.target.clone(),
            step: id.clone(),
            phase,
            attempt,
            resumed,
            inputs,
            params: cp.params.clone(),
            step_outputs: cp.outputs_by_step(),
            journal: Journal::new(self.clone() as Arc<dyn JournalBackend>, &id, phase, attempt),
            events: self.emitter.for_step(&id),
            cancel: self.cancel.child_token(),
        };
        let result = tokio::select! {
                biased;
            r = action.run(&ctx) => r,
            _ = self.cancel.cancelled() => Err(StepError::Cancelled),
        };
        match result {
            Err(StepError::Cancelled) => {
                self.update_step(phase, &id, |r| r.status = StepStatus::Interrupted)
                    .await?;
                self.emitter.emit(Event::StepInterrupted {
                    step: id.clone(),
                    phase,
                });
                Ok(Some(StepEnd::Interrupted))
            }
            Err(StepError::Checkpoint(e)) => Err(EngineError::Internal(format!(
                "step {id:?}: could not write the checkpoint: {e}"
            ))),
            Err(StepError::Refused(e)) => {
                self.fail_action(phase, &id, e.clone()).await?;
                Ok(Some(StepEnd::Refused(e)))
            }
            Err(StepError::Inconclusive(reason)) => {
                self.update_step(phase, &id, |r| r.status = StepStatus::Interrupted)
                    .await?;
                Ok(Some(StepEnd::Paused(format!(
                    "step {id:?} was inconclusive: {reason}; resume to judge again, or roll back"
                ))))
            }
            Err(e) => self.fail_action(phase, &id, e.to_string()).await,
            Ok(ActionOutcome::Skipped { reason }) => {
                self.skip(phase, &id, reason).await?;
                Ok(None)
            }
            Ok(ActionOutcome::Done { outputs }) => {
                self.action_finished(phase, &id, outputs, false, None)
                    .await?;
                Ok(None)
            }
            Ok(ActionOutcome::AlreadyDone { outputs, detail }) => {
                self.action_finished(phase, &id, outputs, true, Some(detail))
                    .await?;
                Ok(None)
            }
        }
    }

    async fn action_finished(
        &self,
        phase: Phase,
        id: &str,
        outputs: Map<String, Value>,
        already_done: bool,
        detail: Option<String>,
    ) -> Result<(), EngineError> {
        let phase_list = phase;
        let summary_specs = self.runbook.summary.clone();
        self.update(|cp| {
            let list = match phase_list {
                Phase::Forward => &mut cp.steps,
                Phase::Rollback => &mut cp.rollback,
            };
            if let Some(r) = list.iter_mut().find(|r| r.id == id) {
                r.action_done = true;
                r.already_done = already_done;
                r.outputs = Some(outputs);
            }
            // Keep the summary (e.g. source and target revision) current for `status`.
            let outputs = cp.outputs_by_step();
            let scope = Scope::lenient_over(cp, &outputs);
            let summary: Map<String, Value> = summary_specs
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        template::resolve(v, &scope).unwrap_or(Value::Null),
                    )
                })
                .collect();
            cp.summary = summary;
        })
        .await?;
        self.emitter.emit(Event::ActionFinished {
            step: id.to_string(),
            phase,
            already_done,
            detail,
        });
        Ok(())
    }

    /// Records the step as failed with `error` (its action's or its gate's).
    async fn fail_action(
        &self,
        phase: Phase,
        id: &str,
        error: String,
    ) -> Result<Option<StepEnd>, EngineError> {
        let now = self.now();
        let e2 = error.clone();
        self.update_step(phase, id, |r| {
            r.status = StepStatus::Failed;
            r.error = Some(e2);
            r.finished_at = Some(now);
        })
        .await?;
        Ok(Some(StepEnd::Failed(error)))
    }

    /// Waits for the step's gate: checks until it passes (for `stable_for` continuously), fails
    /// or times out, or the run is cancelled.
    async fn gate(&self, spec: &StepSpec, gs: &GateSpec, phase: Phase) -> GateEnd {
        match self.gate_wait(spec, gs, phase) {
            Ok(wait) => wait.run().await,
            Err(reason) => GateEnd::Failed { reason },
        }
    }

    /// Sets up one wait on a gate (implementation, inputs, durations) and announces it.
    fn gate_wait(
        &self,
        spec: &StepSpec,
        gs: &GateSpec,
        phase: Phase,
    ) -> Result<GateWait<'_>, String> {
        let id = spec.id.clone();
        let gate = self
            .registry
            .get_gate(&gs.check)
            .ok_or_else(|| format!("gate {:?} is not registered", gs.check))?;
        let inputs = self
            .resolve_map(&gs.inputs, phase == Phase::Rollback)
            .map_err(|e| format!("inputs: {e}"))?;
        let cp = self.snapshot();
        let timeout = gs.timeout.resolve(&cp.params)?;
        let poll_interval = gs.poll_interval.resolve(&cp.params)?;
        let stable_for = gs.stable_for.resolve(&cp.params)?;
        let outputs = self.record(phase, &id).outputs.unwrap_or_default();
        let ctx = GateCtx::new(
            cp.run_id.clone(),
            cp.target.clone(),
            id.clone(),
            gs.check.clone(),
            inputs,
            cp.params.clone(),
            outputs,
            self.emitter.for_step(&id),
            self.cancel.child_token(),
            timeout,
        );
        self.emitter.emit(Event::GateStarted {
            step: id.clone(),
            check: gs.check.clone(),
            timeout_ms: timeout.as_millis() as u64,
            stable_for_ms: stable_for.as_millis() as u64,
        });
        let start = Instant::now();
        Ok(GateWait {
            run: self,
            gate,
            ctx,
            step: id,
            check: gs.check.clone(),
            watch: gs.watch,
            timeout,
            poll_interval,
            start,
            deadline: later(start, timeout),
            stable: StableFor::new(stable_for),
            last_detail: String::from("no check completed"),
            last_emitted: None,
        })
    }
}

/// `t + d`, or a point thirty years on when that would overflow the clock: a wait that long
/// never ends by itself, and must not panic either.
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .unwrap_or_else(|| t + Duration::from_secs(30 * 365 * 24 * 3600))
}

/// `stable_for` bookkeeping: a gate passes once its checks have passed without a break for
/// `need` (a waiting check, or one that could not be evaluated, breaks the streak).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StableFor {
    /// When the current streak of passing checks began.
    since: Option<Instant>,
    need: Duration,
}

impl StableFor {
    fn new(need: Duration) -> Self {
        StableFor { since: None, need }
    }

    /// Records a check made at `now`; true once the checks have passed continuously for
    /// `need` (at once when `need` is zero).
    fn observe(&mut self, passed: bool, now: Instant) -> bool {
        if !passed {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert(now);
        now - since >= self.need
    }

    /// How long the current streak has lasted at `now` (zero when not passing).
    fn held(&self, now: Instant) -> Duration {
        self.since.map(|since| now - since).unwrap_or_default()
    }

    /// When the current streak will have lasted `need`: check again then.
    fn due(&self) -> Option<Instant> {
        self.since.map(|since| later(since, self.need))
    }
}

/// One wait on a step's gate: the check, its clock, the `stable_for` streak and what was last
/// reported (progress is emitted only when it changes).
struct GateWait<'r> {
    run: &'r Run,
    gate: Arc<dyn Gate>,
    ctx: GateCtx,
    step: String,
    check: String,
    watch: bool,
    timeout: Duration,
    poll_interval: Duration,
    start: Instant,
    deadline: Instant,
    stable: StableFor,
    /// What the timeout's message says the gate was waiting for.
    last_detail: String,
    last_emitted: Option<(String, Option<Progress>)>,
}

impl GateWait<'_> {
    async fn run(mut self) -> GateEnd {
        loop {
            if let Some(end) = self.check().await {
                return end;
            }
            if Instant::now() >= self.deadline {
                return self.timed_out();
            }
            if let Some(end) = self.sleep().await {
                return end;
            }
        }
    }

    /// One check (cut short by the deadline). `Some` when the wait is over.
    async fn check(&mut self) -> Option<GateEnd> {
        self.ctx.elapsed = Instant::now() - self.start;
        self.ctx.check_count += 1;
        let status = tokio::select! {
            biased;
            s = self.gate.check(&mut self.ctx) => s,
            _ = self.run.cancel.cancelled() => return Some(GateEnd::Cancelled),
            _ = tokio::time::sleep_until(self.deadline) => return None,
        };
        let now = Instant::now();
        match status {
            Ok(GateStatus::Passed { detail }) => {
                if self.stable.observe(true, now) {
                    self.run.emitter.emit(Event::GatePassed {
                        step: self.step.clone(),
                        check: self.check.clone(),
                        detail,
                    });
                    return Some(GateEnd::Passed);
                }
                let need = format_duration(self.stable.need);
                self.last_detail = format!(
                    "passing, stable for {} of {need}",
                    format_duration(self.stable.held(now))
                );
                self.progress(format!("passing; must stay so for {need}"), None);
            }
            Ok(GateStatus::Waiting { detail, progress }) => {
                self.stable.observe(false, now);
                self.last_detail = detail.clone();
                self.progress(detail, progress);
            }
            Ok(GateStatus::Failed { reason }) => return Some(self.failed(reason, false)),
            Ok(GateStatus::Inconclusive { reason }) => {
                self.run.emitter.emit(Event::GateInconclusive {
                    step: self.step.clone(),
                    check: self.check.clone(),
                    reason: reason.clone(),
                });
                return Some(GateEnd::Inconclusive { reason });
            }
            Err(StepError::Cancelled) => return Some(GateEnd::Cancelled),
            Err(e) => {
                self.stable.observe(false, now);
                self.last_detail = format!("check error: {e}");
                self.ctx.events.warn(format!(
                    "gate {:?} could not check: {e}; retrying",
                    self.check
                ));
            }
        }
        None
    }

    /// Waits for the next check: the poll interval, the deadline, the end of a `stable_for`
    /// streak or (`watch: true`) a change the gate saw, whichever comes first.
    async fn sleep(&mut self) -> Option<GateEnd> {
        let mut wake = later(Instant::now(), self.poll_interval).min(self.deadline);
        if let Some(due) = self.stable.due() {
            wake = wake.min(due);
        }
        if self.watch {
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.gate.wait_for_change(&mut self.ctx) => {}
                _ = self.run.cancel.cancelled() => return Some(GateEnd::Cancelled),
            }
        } else {
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.run.cancel.cancelled() => return Some(GateEnd::Cancelled),
            }
        }
        None
    }

    fn timed_out(&self) -> GateEnd {
        let reason = format!(
            "timed out after {}: {}",
            format_duration(self.timeout),
            self.last_detail
        );
        self.failed(reason, true)
    }

    fn failed(&self, reason: String, timed_out: bool) -> GateEnd {
        self.run.emitter.emit(Event::GateFailed {
            step: self.step.clone(),
            check: self.check.clone(),
            reason: reason.clone(),
            timed_out,
        });
        GateEnd::Failed { reason }
    }

    /// Emits `gate_progress` when the detail or the progress changed.
    fn progress(&mut self, detail: String, progress: Option<Progress>) {
        let key = (detail.clone(), progress);
        if self.last_emitted.as_ref() != Some(&key) {
            self.run.emitter.emit(Event::GateProgress {
                step: self.step.clone(),
                check: self.check.clone(),
                detail,
                progress,
            });
            self.last_emitted = Some(key);
        }
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[async_trait]
impl JournalBackend for Run {
    async fn record(
        &self,
        step: &str,
        phase: Phase,
        attempt: u32,
        kind: &str,
        target: &str,
        details: Value,
    ) -> Result<EntryId, StepError> {
        let now = self.now();
        let id = self
            .update(|cp| {
                push_intent(
                    &mut cp.journal,
                    step,
                    phase,
                    attempt,
                    kind,
                    target,
                    details,
                    now,
                )
            })
            .await
            .map_err(|e| StepError::Checkpoint(e.to_string()))?;
        self.emitter.emit(Event::SideEffect {
            step: step.to_string(),
            kind: kind.to_string(),
            target: target.to_string(),
            done: false,
        });
        Ok(id)
    }

    async fn mark_done(&self, id: EntryId, result: Option<Value>) -> Result<(), StepError> {
        let now = self.now();
        let entry = self
            .update(|cp| {
                mark_entry_done(&mut cp.journal, id, result, now)?;
                Ok::<_, StepError>(cp.journal.iter().find(|e| e.seq == id.0).cloned())
            })
            .await
            .map_err(|e| StepError::Checkpoint(e.to_string()))??;
        if let Some(e) = entry {
            self.emitter.emit(Event::SideEffect {
                step: e.step,
                kind: e.kind,
                target: e.target,
                done: true,
            });
        }
        Ok(())
    }

    fn entries(&self) -> Vec<JournalEntry> {
        self.snapshot().journal
    }
}

/// Reports what a checkpoint says without taking the lock (for `status`).
pub async fn read_checkpoint(store: &dyn CheckpointStore) -> Result<Checkpoint, EngineError> {
    store.load(Access::ReadOnly).await?.ok_or_else(|| {
        CheckpointError::Missing {
            path: store.location(),
        }
        .into()
    })
}

/// Why a finished rollback was made: the forward step that failed (its error), or the
/// request; never what interrupted or failed the rollback on the way ("rollback interrupted at
/// step …", "rollback step … failed: … a person must look"), which a finished rollback is past.
fn rollback_cause(cp: &Checkpoint) -> String {
    let transient = cp.reason.as_deref().is_none_or(|r| {
        r.starts_with("rollback interrupted at step") || r.starts_with("rollback step ")
    });
    if !transient {
        return cp.reason.clone().unwrap_or_default();
    }
    let failed = cp.failed_step.as_deref().and_then(|id| {
        let rec = cp.steps.iter().find(|r| r.id == id)?;
        Some(match &rec.error {
            Some(error) => format!("step {id:?} failed: {error}"),
            None => format!("step {id:?} failed"),
        })
    });
    failed.unwrap_or_else(|| "rollback requested".into())
}

/// Asks every forward step that has started whether the run may still be rolled back
/// ([`crate::Action::may_roll_back`]), in runbook order, before anything is written. The
/// actions see the checkpoint's journal read-only; their events go nowhere.
async fn may_roll_back(
    runbook: &Runbook,
    registry: &Registry,
    cp: &Checkpoint,
    cancel: &CancellationToken,
) -> Result<(), EngineError> {
    let outputs = cp.outputs_by_step();
    let scope = Scope::lenient_over(cp, &outputs);
    let events = Emitter::new(cp.run_id.clone(), Arc::new(NullSink), Arc::new(Utc::now));
    for spec in &runbook.steps {
        let Some(rec) = cp.step(&spec.id) else {
            continue;
        };
        let Some(action) = registry.get_action(&spec.action) else {
            continue;
        };
        if rec.status == StepStatus::Pending {
            continue;
        }
        let inputs = match template::resolve(&Value::Object(spec.inputs.clone()), &scope) {
            Ok(Value::Object(o)) => o,
            _ => Map::new(),
        };
        let ctx = ActionCtx {
            run_id: cp.run_id.clone(),
            target: cp.target.clone(),
            step: spec.id.clone(),
            phase: Phase::Forward,
            attempt: rec.attempts,
            resumed: true,
            inputs,
            params: cp.params.clone(),
            step_outputs: outputs.clone(),
            journal: Journal::read_only(&spec.id, Phase::Forward, cp.journal.clone()),
            events: events.for_step(&spec.id),
            cancel: cancel.child_token(),
        };
        if let Err(source) = action.may_roll_back(&ctx).await {
            return Err(EngineError::RollbackRefused {
                run_id: cp.run_id.clone(),
                step: spec.id.clone(),
                source,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn stable_for_zero_passes_on_the_first_pass() {
        let t0 = Instant::now();
        let mut s = StableFor::new(Duration::ZERO);
        assert!(!s.observe(false, t0));
        assert!(s.observe(true, t0 + secs(5)));
    }

    #[test]
    fn stable_for_needs_an_unbroken_streak() {
        let t0 = Instant::now();
        let mut s = StableFor::new(secs(12));
        assert_eq!((s.held(t0), s.due()), (Duration::ZERO, None));
        assert!(!s.observe(true, t0));
        assert_eq!(s.due(), Some(t0 + secs(12)));
        assert_eq!(s.held(t0 + secs(5)), secs(5));
        // A waiting check breaks the streak: it starts again at the next pass.
        assert!(!s.observe(false, t0 + secs(5)));
        assert_eq!((s.held(t0 + secs(5)), s.due()), (Duration::ZERO, None));
        assert!(!s.observe(true, t0 + secs(10)));
        assert!(!s.observe(true, t0 + secs(20)));
        assert_eq!(s.held(t0 + secs(20)), secs(10));
        assert_eq!(s.due(), Some(t0 + secs(22)));
        assert!(s.observe(true, t0 + secs(22)));
    }

    #[test]
    fn stable_for_counts_from_the_first_pass_of_the_streak() {
        let t0 = Instant::now();
        let mut s = StableFor::new(secs(30));
        assert!(!s.observe(true, t0));
        assert!(!s.observe(true, t0 + secs(29)));
        assert!(s.observe(true, t0 + secs(31)), "late checks still pass");
        assert!(s.observe(true, t0 + secs(40)));
    }
}
