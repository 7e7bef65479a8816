//! Typed events: what the executor tells the renderers (terminal, JSON Lines) and tests.
//!
//! Every event travels in an [`EventRecord`] envelope whose JSON form is one line of
//! `--output json`: `{"schema":"asm-canary.events/1.1","ts":"…","run_id":"…","event":"step_started",…}`.
//! The schema is documented in `docs/events.md`; bump [`EVENTS_SCHEMA`]'s minor for added
//! fields or events, its major for anything a consumer could trip on.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `schema` field of every JSON Lines object.
pub const EVENTS_SCHEMA: &str = "asm-canary.events/1.1";

/// The envelope of one event: one JSON Lines object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventRecord {
    pub schema: String,
    pub ts: DateTime<Utc>,
    pub run_id: String,
    #[serde(flatten)]
    pub event: Event,
}

/// Which sequence a step belongs to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The runbook's ordered steps.
    Forward,
    /// The runbook's rollback sequence.
    Rollback,
}

/// How a run ended. Also the `outcome` of `run_finished`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every step succeeded (or the explicit rollback asked for finished).
    Completed,
    /// A step failed, the rollback sequence ran to the end.
    RolledBack,
    /// Resumable: awaiting an approval, interrupted, or a failed step halted (`on_failure:
    /// halt`, or the failure decider chose it).
    Paused,
    /// The rollback itself failed: a person must look.
    Failed,
    /// A step refused to act on what it found and nothing was changed by it (no rollback
    /// either): bad input as far as the run is concerned. Resumable once a person has looked.
    Refused,
}

/// Severity of a free-text line from an action or gate.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Info,
    Warn,
}

/// Progress of a gate or an action: `done` of `total` (`total` unknown → spinner).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Progress {
    pub done: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub total: Option<u64>,
}

impl Progress {
    pub fn of(done: u64, total: u64) -> Self {
        Progress {
            done,
            total: Some(total),
        }
    }
    pub fn count(done: u64) -> Self {
        Progress { done, total: None }
    }
}

/// One measurement of a gate: what was asked, the answer, what it was held against and the
/// verdict (`pass`, `fail` or `inconclusive`). A value that is not a number (no data, NaN)
/// is `null`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeasurementRecord {
    /// The measurement's name (e.g. `request-success-rate`).
    pub name: String,
    /// What it measures (e.g. `payments/api`), when it is one of several series.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub series: Option<String>,
    /// The query asked (e.g. PromQL).
    pub query: String,
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub baseline: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max: Option<f64>,
    pub verdict: String,
    /// When the value was measured (the query's evaluation time).
    pub at: DateTime<Utc>,
}

/// Every event the engine emits. JSON: internally tagged by `"event"`, snake_case names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A run begins (fresh or resumed). `steps` lists the forward step ids in order.
    RunStarted {
        runbook: String,
        runbook_sha256: String,
        target: String,
        resumed: bool,
        params: Map<String, Value>,
        steps: Vec<String>,
    },
    /// A step begins; `attempt` counts from 1 and grows on each resume of the same step.
    StepStarted {
        step: String,
        phase: Phase,
        attempt: u32,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        description: Option<String>,
    },
    /// A step will not run: its `when` was false, its action said so, or there is nothing to undo.
    StepSkipped {
        step: String,
        phase: Phase,
        reason: String,
    },
    /// The action finished; `already_done` when it observed that nothing needed doing.
    ActionFinished {
        step: String,
        phase: Phase,
        already_done: bool,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        detail: Option<String>,
    },
    /// Progress of a long action (e.g. workloads restarted so far).
    StepProgress {
        step: String,
        detail: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        progress: Option<Progress>,
    },
    /// A side effect is about to be made (journaled and checkpointed first) or was made.
    SideEffect {
        step: String,
        kind: String,
        target: String,
        done: bool,
    },
    /// A gate starts waiting.
    GateStarted {
        step: String,
        check: String,
        timeout_ms: u64,
        stable_for_ms: u64,
    },
    /// A gate is not yet satisfied.
    GateProgress {
        step: String,
        check: String,
        detail: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        progress: Option<Progress>,
    },
    GatePassed {
        step: String,
        check: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        detail: Option<String>,
    },
    GateFailed {
        step: String,
        check: String,
        reason: String,
        timed_out: bool,
    },
    /// The gate could not tell (e.g. a metric with no data); the run pauses, resumable.
    GateInconclusive {
        step: String,
        check: String,
        reason: String,
    },
    /// One measurement a gate took (e.g. a metric query of an analysis gate).
    Measurement {
        step: String,
        check: String,
        #[serde(flatten)]
        measurement: MeasurementRecord,
    },
    StepSucceeded {
        step: String,
        phase: Phase,
        already_done: bool,
    },
    StepFailed {
        step: String,
        phase: Phase,
        error: String,
        /// For forward steps, what was decided (the runbook's `on_failure`, or the
        /// [`crate::FailureDecider`]'s answer): `rollback`, `retry` or `halt`. Absent in the
        /// rollback sequence, and when the run was interrupted before a decision.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        on_failure: Option<String>,
    },
    /// A cancellation (Ctrl-C) stopped the step; the run pauses, resumable.
    StepInterrupted {
        step: String,
        phase: Phase,
    },
    ApprovalNeeded {
        step: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        prompt: Option<String>,
    },
    ApprovalGiven {
        step: String,
        by: String,
    },
    ApprovalDenied {
        step: String,
        reason: String,
    },
    RollbackStarted {
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        failed_step: Option<String>,
    },
    RollbackFinished {
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        error: Option<String>,
    },
    /// A free-text line from an action, a gate or the engine.
    Message {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        step: Option<String>,
        level: Level,
        text: String,
    },
    /// Always the last event of a run. `summary` holds the runbook's declared summary values
    /// (for the canary runbook: `source` and `target` revisions), flattened into the object.
    RunFinished {
        outcome: Outcome,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        reason: Option<String>,
        exit_code: u8,
        #[serde(flatten)]
        summary: Map<String, Value>,
    },
}

/// Where events go. Implementations must be cheap and must not block for long: the executor
/// calls `emit` inline.
pub trait EventSink: Send + Sync {
    fn emit(&self, record: &EventRecord);
}

/// Drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _record: &EventRecord) {}
}

/// Keeps every event in memory (tests, `status`).
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    records: Arc<Mutex<Vec<EventRecord>>>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }
    /// A copy of the events so far.
    pub fn records(&self) -> Vec<EventRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
    /// Just the events, without envelopes.
    pub fn events(&self) -> Vec<Event> {
        self.records().into_iter().map(|r| r.event).collect()
    }
}

impl EventSink for MemorySink {
    fn emit(&self, record: &EventRecord) {
        if let Ok(mut r) = self.records.lock() {
            r.push(record.clone());
        }
    }
}

/// Sends every event to several sinks, in order.
#[derive(Default, Clone)]
pub struct FanOut(pub Vec<Arc<dyn EventSink>>);

impl EventSink for FanOut {
    fn emit(&self, record: &EventRecord) {
        for s in &self.0 {
            s.emit(record);
        }
    }
}

/// Forwards events into a tokio channel (a renderer task on the other end).
#[derive(Clone)]
pub struct ChannelSink(pub tokio::sync::mpsc::UnboundedSender<EventRecord>);

impl EventSink for ChannelSink {
    fn emit(&self, record: &EventRecord) {
        let _ = self.0.send(record.clone());
    }
}

/// The handle actions and gates use to talk to the renderers; it stamps the envelope.
#[derive(Clone)]
pub struct Emitter {
    run_id: String,
    step: Option<String>,
    sink: Arc<dyn EventSink>,
    clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("run_id", &self.run_id)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl Emitter {
    pub fn new(
        run_id: impl Into<String>,
        sink: Arc<dyn EventSink>,
        clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    ) -> Self {
        Emitter {
            run_id: run_id.into(),
            step: None,
            sink,
            clock,
        }
    }

    /// An emitter stamping the wall clock (tests of actions and gates: pass a [`MemorySink`]).
    pub fn to_sink(run_id: impl Into<String>, sink: Arc<dyn EventSink>) -> Self {
        Emitter::new(run_id, sink, Arc::new(Utc::now))
    }

    /// The same emitter, with `step` attached to `info`/`warn` lines.
    pub fn for_step(&self, step: &str) -> Self {
        Emitter {
            step: Some(step.to_string()),
            ..self.clone()
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Emits any event.
    pub fn emit(&self, event: Event) {
        let record = EventRecord {
            schema: EVENTS_SCHEMA.to_string(),
            ts: (self.clock)(),
            run_id: self.run_id.clone(),
            event,
        };
        self.sink.emit(&record);
    }

    /// An informational line from the current step.
    pub fn info(&self, text: impl Into<String>) {
        self.emit(Event::Message {
            step: self.step.clone(),
            level: Level::Info,
            text: text.into(),
        });
    }

    /// Progress of the current step's action: `done` of `total` (`None`: unknown total).
    pub fn progress(&self, detail: impl Into<String>, done: u64, total: Option<u64>) {
        self.emit(Event::StepProgress {
            step: self.step.clone().unwrap_or_default(),
            detail: detail.into(),
            progress: Some(Progress { done, total }),
        });
    }

    /// A warning line from the current step (e.g. a namespace still on a legacy label).
    pub fn warn(&self, text: impl Into<String>) {
        self.emit(Event::Message {
            step: self.step.clone(),
            level: Level::Warn,
            text: text.into(),
        });
    }
}
