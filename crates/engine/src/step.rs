//! The step API: what an action or a gate implements, what it is given, what it returns,
//! and the [`Registry`] that maps runbook names to implementations.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::events::{Emitter, Phase, Progress};
use crate::journal::Journal;
pub use crate::step_error::StepError;

/// The outputs of a step: a JSON object whose keys later steps reference as
/// `${steps.<id>.outputs.<key>}`.
pub type Outputs = Map<String, Value>;

/// An action: one side-effecting step of a runbook, registered by name.
///
/// Contract:
/// - **Observe first, then act.** Read the world; if it is already as the step wants, return
///   [`ActionOutcome::AlreadyDone`] without acting.
/// - Before every side effect, call [`Journal::intent`] (it returns only after the intent is
///   checkpointed with fsync); after it, [`Journal::done`]. A step resumed after a crash sees its
///   earlier entries in [`Journal::step_entries`] (done, or still in flight) and must re-observe
///   to finish only what is not done.
/// - Check `ctx.cancel` at convenient points if the action is long; the executor also drops
///   the action's future when the run is cancelled (the journal makes that safe).
#[async_trait]
pub trait Action: Send + Sync + 'static {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError>;

    /// May the run still be rolled back, given what this step did? Asked before a rollback
    /// starts (`Executor::rollback`, or a failure decided `Rollback`), for every forward step
    /// that has started, before anything is written. An `Err` refuses the rollback: the
    /// explicit `rollback` fails with [`crate::EngineError::RollbackRefused`] (exit 2) and
    /// leaves the checkpoint untouched; a failure decided `Rollback` halts instead.
    ///
    /// Use it for a point of no return, e.g. a step whose side effect removes what the
    /// rollback would go back to. `ctx.journal` holds the run's journal, read-only (writing
    /// fails); `ctx.resumed` is true, `ctx.attempt` the step's recorded attempts, `ctx.inputs`
    /// are resolved leniently (a missing output is `null`), and events go nowhere. The default
    /// allows the rollback.
    async fn may_roll_back(&self, ctx: &ActionCtx) -> Result<(), StepError> {
        let _ = ctx;
        Ok(())
    }
}

/// Outputs from a JSON value: an object as is, anything else under the key `value`.
pub fn json_outputs(value: Value) -> Outputs {
    match value {
        Value::Object(m) => m,
        other => {
            let mut m = Outputs::new();
            m.insert("value".into(), other);
            m
        }
    }
}

/// What an action reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionOutcome {
    /// The action acted and finished.
    Done { outputs: Outputs },
    /// Observation showed nothing to do; the engine records `already_done`.
    AlreadyDone { outputs: Outputs, detail: String },
    /// The step does not apply (e.g. no shared ConfigMap to copy); its gate is not run.
    Skipped { reason: String },
}

impl ActionOutcome {
    pub fn done(outputs: Outputs) -> Self {
        ActionOutcome::Done { outputs }
    }
    /// `Done` with the outputs given as a JSON object (`json!({"target": "asm-1-28"})`); a
    /// non-object value is stored under the key `value`.
    pub fn done_json(value: Value) -> Self {
        ActionOutcome::Done {
            outputs: json_outputs(value),
        }
    }
    pub fn already_done(outputs: Outputs, detail: impl Into<String>) -> Self {
        ActionOutcome::AlreadyDone {
            outputs,
            detail: detail.into(),
        }
    }
    pub fn skipped(reason: impl Into<String>) -> Self {
        ActionOutcome::Skipped {
            reason: reason.into(),
        }
    }
}

/// A gate: a check that must pass before the run moves past a step, registered by name.
///
/// The executor calls [`Gate::check`] until it returns `Passed` continuously for the step's
/// `stable_for`, `Failed`, or the gate's `timeout` elapses (a failure). Between checks it waits
/// `poll_interval`, or less if the runbook says `watch: true` and [`Gate::wait_for_change`]
/// returns first. An `Err` from `check` means "could not evaluate" (e.g. a network error): it is
/// reported as a warning and the check is retried until the timeout.
#[async_trait]
pub trait Gate: Send + Sync + 'static {
    async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError>;

    /// Returns when something the gate looks at may have changed (a watch event), so the
    /// executor checks again before `poll_interval` is up. Keep watch state in
    /// [`GateCtx::scratch`]. The default never returns: polling only.
    async fn wait_for_change(&self, ctx: &mut GateCtx) {
        let _ = ctx;
        std::future::pending::<()>().await
    }
}

/// What a gate check reports.
#[derive(Debug, Clone, PartialEq)]
pub enum GateStatus {
    Passed {
        detail: Option<String>,
    },
    Waiting {
        detail: String,
        progress: Option<Progress>,
    },
    Failed {
        reason: String,
    },
    /// The gate cannot tell (e.g. a metric with no data): neither a pass nor a failure. The
    /// run pauses (exit 4) with `reason`; `resume` runs the gate again, `rollback` undoes.
    Inconclusive {
        reason: String,
    },
}

impl GateStatus {
    pub fn passed() -> Self {
        GateStatus::Passed { detail: None }
    }
    pub fn waiting(detail: impl Into<String>) -> Self {
        GateStatus::Waiting {
            detail: detail.into(),
            progress: None,
        }
    }
    pub fn waiting_progress(detail: impl Into<String>, done: u64, total: Option<u64>) -> Self {
        GateStatus::Waiting {
            detail: detail.into(),
            progress: Some(Progress { done, total }),
        }
    }
    pub fn failed(reason: impl Into<String>) -> Self {
        GateStatus::Failed {
            reason: reason.into(),
        }
    }
    pub fn inconclusive(reason: impl Into<String>) -> Self {
        GateStatus::Inconclusive {
            reason: reason.into(),
        }
    }
}

/// Everything an action gets. Inputs and params are already resolved (references replaced).
pub struct ActionCtx {
    pub run_id: String,
    /// The run's target identity (opaque to the engine; the cluster's ARM id for asm-canary).
    pub target: String,
    pub step: String,
    pub phase: Phase,
    /// 1 on the first attempt; grows when a step is resumed or retried.
    pub attempt: u32,
    /// True when this step had started before (interrupted, crashed, halted or retried): look at
    /// `journal.step_entries()` and re-observe.
    pub resumed: bool,
    /// The step's `inputs`, references resolved.
    pub inputs: Map<String, Value>,
    /// All params of the run (defaults applied).
    pub params: Map<String, Value>,
    /// Outputs of every step recorded so far, by step id (rollback actions read these).
    pub step_outputs: Map<String, Value>,
    pub journal: Journal,
    pub events: Emitter,
    pub cancel: CancellationToken,
}

impl ActionCtx {
    /// A context outside the executor, for unit tests of actions: run `r`, target `t`, an
    /// in-memory journal pre-filled with `journal` (to test resume), events to `events`.
    pub fn standalone(
        step: &str,
        inputs: Map<String, Value>,
        journal: Vec<crate::journal::JournalEntry>,
        events: Emitter,
    ) -> Self {
        let resumed = !journal.is_empty();
        ActionCtx {
            run_id: "r".into(),
            target: "t".into(),
            step: step.into(),
            phase: Phase::Forward,
            attempt: if resumed { 2 } else { 1 },
            resumed,
            inputs,
            params: Map::new(),
            step_outputs: Map::new(),
            journal: Journal::in_memory(step, Phase::Forward, journal),
            events,
            cancel: CancellationToken::new(),
        }
    }

    /// The input `key`, deserialized. Errors name the step and the key.
    pub fn input<T: DeserializeOwned>(&self, key: &str) -> Result<T, StepError> {
        input_of(&self.step, &self.inputs, key)
    }
    /// The input `key` if present and not null.
    pub fn input_opt<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StepError> {
        input_opt_of(&self.step, &self.inputs, key)
    }
}

/// Everything a gate gets.
pub struct GateCtx {
    pub run_id: String,
    pub target: String,
    pub step: String,
    /// The gate's registered name (`check:` in the runbook).
    pub check: String,
    /// The gate's `inputs`, references resolved (they may use the step's own outputs).
    pub inputs: Map<String, Value>,
    pub params: Map<String, Value>,
    /// The outputs of the step this gate guards.
    pub outputs: Outputs,
    pub events: Emitter,
    pub cancel: CancellationToken,
    /// How long this gate has been waiting (resets on resume).
    pub elapsed: Duration,
    /// The gate's timeout.
    pub timeout: Duration,
    /// 1 for the first check.
    pub check_count: u32,
    scratch: Option<Box<dyn Any + Send>>,
}

impl GateCtx {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        run_id: String,
        target: String,
        step: String,
        check: String,
        inputs: Map<String, Value>,
        params: Map<String, Value>,
        outputs: Outputs,
        events: Emitter,
        cancel: CancellationToken,
        timeout: Duration,
    ) -> Self {
        GateCtx {
            run_id,
            target,
            step,
            check,
            inputs,
            params,
            outputs,
            events,
            cancel,
            elapsed: Duration::ZERO,
            timeout,
            check_count: 0,
            scratch: None,
        }
    }

    /// A context outside the executor, for unit tests of gates: run `r`, target `t`, no params,
    /// a 10m timeout, events to `events`.
    pub fn standalone(
        step: &str,
        check: &str,
        inputs: Map<String, Value>,
        outputs: Outputs,
        events: Emitter,
    ) -> Self {
        GateCtx::new(
            "r".into(),
            "t".into(),
            step.into(),
            check.into(),
            inputs,
            Map::new(),
            outputs,
            events,
            CancellationToken::new(),
            Duration::from_secs(600),
        )
    }

    /// The input `key`, deserialized. Errors name the step and the key.
    pub fn input<T: DeserializeOwned>(&self, key: &str) -> Result<T, StepError> {
        input_of(&self.step, &self.inputs, key)
    }
    /// The input `key` if present and not null.
    pub fn input_opt<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StepError> {
        input_opt_of(&self.step, &self.inputs, key)
    }

    /// State the gate keeps between checks of this one gate run (e.g. a watch stream).
    /// Created by `init` on first use; replaced if a different type was stored.
    pub fn scratch<T: Send + 'static>(&mut self, init: impl FnOnce() -> T) -> &mut T {
        let fresh = !matches!(&self.scratch, Some(b) if b.is::<T>());
        if fresh {
            self.scratch = Some(Box::new(init()));
        }
        match self.scratch.as_mut().and_then(|b| b.downcast_mut::<T>()) {
            Some(t) => t,
            None => unreachable!("scratch was just set to a T"),
        }
    }
}

fn input_opt_of<T: DeserializeOwned>(
    step: &str,
    inputs: &Map<String, Value>,
    key: &str,
) -> Result<Option<T>, StepError> {
    match inputs.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
            StepError::msg(format!(
                "step {step:?}: input {key:?} has the wrong type ({e}); fix the runbook's inputs"
            ))
        }),
    }
}

fn input_of<T: DeserializeOwned>(
    step: &str,
    inputs: &Map<String, Value>,
    key: &str,
) -> Result<T, StepError> {
    input_opt_of(step, inputs, key)?.ok_or_else(|| {
        StepError::msg(format!(
            "step {step:?}: input {key:?} is missing or null; add it to the step's inputs"
        ))
    })
}

/// Maps the names a runbook uses to action and gate implementations.
#[derive(Default, Clone)]
pub struct Registry {
    actions: BTreeMap<String, Arc<dyn Action>>,
    gates: BTreeMap<String, Arc<dyn Gate>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("actions", &self.actions.keys().collect::<Vec<_>>())
            .field("gates", &self.gates.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the action `name`.
    pub fn action(mut self, name: impl Into<String>, action: impl Action) -> Self {
        self.register_action(name, action);
        self
    }

    /// Registers (or replaces) the gate `name`.
    pub fn gate(mut self, name: impl Into<String>, gate: impl Gate) -> Self {
        self.register_gate(name, gate);
        self
    }

    pub fn register_action(&mut self, name: impl Into<String>, action: impl Action) {
        self.actions.insert(name.into(), Arc::new(action));
    }

    pub fn register_gate(&mut self, name: impl Into<String>, gate: impl Gate) {
        self.gates.insert(name.into(), Arc::new(gate));
    }

    pub fn get_action(&self, name: &str) -> Option<Arc<dyn Action>> {
        self.actions.get(name).cloned()
    }

    pub fn get_gate(&self, name: &str) -> Option<Arc<dyn Gate>> {
        self.gates.get(name).cloned()
    }

    pub fn action_names(&self) -> impl Iterator<Item = &str> {
        self.actions.keys().map(String::as_str)
    }

    pub fn gate_names(&self) -> impl Iterator<Item = &str> {
        self.gates.keys().map(String::as_str)
    }

    /// A registry whose every action and gate fails with "not implemented": lets a runbook
    /// be loaded and validated (e.g. `plan`, tests) before the real steps exist.
    pub fn stubs<'a>(
        actions: impl IntoIterator<Item = &'a str>,
        gates: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut r = Registry::new();
        for a in actions {
            r.register_action(a, NotImplemented(a.to_string()));
        }
        for g in gates {
            r.register_gate(g, NotImplemented(g.to_string()));
        }
        r
    }
}

/// A placeholder step that fails with "not implemented".
#[derive(Debug, Clone)]
pub struct NotImplemented(pub String);

#[async_trait]
impl Action for NotImplemented {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        Err(StepError::msg(format!(
            "step {:?}: action {:?} is not implemented yet",
            ctx.step, self.0
        )))
    }
}

#[async_trait]
impl Gate for NotImplemented {
    async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        Ok(GateStatus::failed(format!(
            "step {:?}: gate {:?} is not implemented yet",
            ctx.step, self.0
        )))
    }
}
