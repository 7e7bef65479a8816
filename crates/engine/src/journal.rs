//! The journal of side effects: an intent entry is checkpointed (fsync) *before* each side
//! effect, and marked done (checkpointed) after it. A resumed step reads its own entries to
//! tell "done", "not done" and "in flight"; the rollback sequence reads the whole journal.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::Phase;
use crate::step_error::StepError;

/// The state of one journal entry.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatus {
    /// Recorded before the side effect: it may or may not have happened (in flight).
    Intent,
    /// The side effect happened.
    Done,
}

/// One side effect, as recorded in the checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JournalEntry {
    /// Unique in the run, increasing.
    pub seq: u64,
    pub step: String,
    pub phase: Phase,
    pub attempt: u32,
    /// What kind of side effect (e.g. `arm-put-revisions`, `tag-move`, `restart-workload`).
    pub kind: String,
    /// What it is applied to (e.g. `apps/v1/Deployment/payments/api`).
    pub target: String,
    /// What a resumed run or the rollback needs to know (old value, operation URL, uid…).
    pub details: Value,
    pub status: EntryStatus,
    /// What the action recorded when the side effect was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    pub recorded_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<DateTime<Utc>>,
}

impl JournalEntry {
    pub fn is_done(&self) -> bool {
        self.status == EntryStatus::Done
    }
}

/// Identifies a journal entry returned by [`Journal::intent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntryId(pub u64);

/// Where a journal writes: the executor's checkpoint, or memory (tests of actions).
#[async_trait]
pub(crate) trait JournalBackend: Send + Sync {
    async fn record(
        &self,
        step: &str,
        phase: Phase,
        attempt: u32,
        kind: &str,
        target: &str,
        details: Value,
    ) -> Result<EntryId, StepError>;
    async fn mark_done(&self, id: EntryId, result: Option<Value>) -> Result<(), StepError>;
    fn entries(&self) -> Vec<JournalEntry>;
}

/// A step's handle on the journal.
#[derive(Clone)]
pub struct Journal {
    backend: Arc<dyn JournalBackend>,
    step: String,
    phase: Phase,
    attempt: u32,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("step", &self.step)
            .field("phase", &self.phase)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Journal {
    pub(crate) fn new(
        backend: Arc<dyn JournalBackend>,
        step: &str,
        phase: Phase,
        attempt: u32,
    ) -> Self {
        Journal {
            backend,
            step: step.to_string(),
            phase,
            attempt,
        }
    }

    /// An in-memory journal for unit tests of actions, optionally pre-filled (to test resume).
    pub fn in_memory(step: &str, phase: Phase, existing: Vec<JournalEntry>) -> Self {
        Journal::new(
            Arc::new(MemoryJournal(Mutex::new(existing))),
            step,
            phase,
            1,
        )
    }

    /// A journal that can be read but not written: what [`crate::Action::may_roll_back`] gets
    /// (it is asked before the run is taken up, so it must not make side effects).
    pub(crate) fn read_only(step: &str, phase: Phase, entries: Vec<JournalEntry>) -> Self {
        Journal::new(Arc::new(ReadOnlyJournal(entries)), step, phase, 1)
    }

    /// Records that the side effect `kind` on `target` is about to be made. Returns only when
    /// the entry is durably checkpointed; make the side effect after this, never before.
    pub async fn intent(
        &self,
        kind: &str,
        target: &str,
        details: Value,
    ) -> Result<EntryId, StepError> {
        self.backend
            .record(&self.step, self.phase, self.attempt, kind, target, details)
            .await
    }

    /// Records that the side effect of `id` was made (checkpointed before returning).
    pub async fn done(&self, id: EntryId, result: Option<Value>) -> Result<(), StepError> {
        self.backend.mark_done(id, result).await
    }

    /// Every entry of the run, in order (the rollback sequence reads this).
    pub fn all(&self) -> Vec<JournalEntry> {
        self.backend.entries()
    }

    /// This step's entries (all attempts, this phase), in order.
    pub fn step_entries(&self) -> Vec<JournalEntry> {
        self.all()
            .into_iter()
            .filter(|e| e.step == self.step && e.phase == self.phase)
            .collect()
    }

    /// This step's latest entry for `kind` on `target`, if any.
    pub fn find(&self, kind: &str, target: &str) -> Option<JournalEntry> {
        self.step_entries()
            .into_iter()
            .rev()
            .find(|e| e.kind == kind && e.target == target)
    }

    /// This step's entries still in flight (intent without done).
    pub fn in_flight(&self) -> Vec<JournalEntry> {
        self.step_entries()
            .into_iter()
            .filter(|e| !e.is_done())
            .collect()
    }
}

/// Appends an intent entry to `entries`; shared by the memory and checkpoint backends.
#[allow(clippy::too_many_arguments)]
pub(crate) fn push_intent(
    entries: &mut Vec<JournalEntry>,
    step: &str,
    phase: Phase,
    attempt: u32,
    kind: &str,
    target: &str,
    details: Value,
    now: DateTime<Utc>,
) -> EntryId {
    let seq = entries.last().map(|e| e.seq + 1).unwrap_or(1);
    entries.push(JournalEntry {
        seq,
        step: step.to_string(),
        phase,
        attempt,
        kind: kind.to_string(),
        target: target.to_string(),
        details,
        status: EntryStatus::Intent,
        result: None,
        recorded_at: now,
        done_at: None,
    });
    EntryId(seq)
}

pub(crate) fn mark_entry_done(
    entries: &mut [JournalEntry],
    id: EntryId,
    result: Option<Value>,
    now: DateTime<Utc>,
) -> Result<(), StepError> {
    let e = entries
        .iter_mut()
        .find(|e| e.seq == id.0)
        .ok_or_else(|| StepError::msg(format!("journal entry {} does not exist", id.0)))?;
    e.status = EntryStatus::Done;
    e.result = result;
    e.done_at = Some(now);
    Ok(())
}

struct MemoryJournal(Mutex<Vec<JournalEntry>>);

#[async_trait]
impl JournalBackend for MemoryJournal {
    async fn record(
        &self,
        step: &str,
        phase: Phase,
        attempt: u32,
        kind: &str,
        target: &str,
        details: Value,
    ) -> Result<EntryId, StepError> {
        let mut g = self
            .0
            .lock()
            .map_err(|_| StepError::Checkpoint("journal lock poisoned".into()))?;
        Ok(push_intent(
            &mut g,
            step,
            phase,
            attempt,
            kind,
            target,
            details,
            Utc::now(),
        ))
    }

    async fn mark_done(&self, id: EntryId, result: Option<Value>) -> Result<(), StepError> {
        let mut g = self
            .0
            .lock()
            .map_err(|_| StepError::Checkpoint("journal lock poisoned".into()))?;
        mark_entry_done(&mut g, id, result, Utc::now())
    }

    fn entries(&self) -> Vec<JournalEntry> {
        self.0.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// The journal as a checkpoint recorded it, for reading only.
struct ReadOnlyJournal(Vec<JournalEntry>);

impl ReadOnlyJournal {
    fn refuse() -> StepError {
        StepError::msg(
            "the journal is read-only here: may_roll_back must observe, not make side effects",
        )
    }
}

#[async_trait]
impl JournalBackend for ReadOnlyJournal {
    async fn record(
        &self,
        _step: &str,
        _phase: Phase,
        _attempt: u32,
        _kind: &str,
        _target: &str,
        _details: Value,
    ) -> Result<EntryId, StepError> {
        Err(Self::refuse())
    }

    async fn mark_done(&self, _id: EntryId, _result: Option<Value>) -> Result<(), StepError> {
        Err(Self::refuse())
    }

    fn entries(&self) -> Vec<JournalEntry> {
        self.0.clone()
    }
}
