//! Approvals: a step with `approval: required` asks an [`Approver`] before its action runs.
//!
//! Guided mode: the terminal UI implements `Approver` and prompts. Unattended: [`PreApproved`]
//! approves only the steps named with `--approve <step>` and answers `Defer` for the others,
//! which pauses the run (exit 4); `resume --approve <step>` continues it.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the executor asks.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRequest {
    pub run_id: String,
    pub target: String,
    pub step: String,
    /// The step's `description` from the runbook.
    pub description: Option<String>,
    /// The step's `approval_prompt` from the runbook, references resolved.
    pub prompt: Option<String>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalDecision {
    /// Go ahead. `by` is recorded in the checkpoint (e.g. `--approve`, `terminal:alice`).
    Approved { by: String },
    /// Do not run the step: the run pauses (resumable, or roll it back).
    Denied { reason: String },
    /// No one can answer now: the run pauses awaiting approval (unattended mode).
    Defer,
}

/// Decides whether a step that needs approval may run.
#[async_trait]
pub trait Approver: Send + Sync {
    async fn decide(&self, request: &ApprovalRequest) -> ApprovalDecision;
}

/// Unattended approvals: the steps given with `--approve` are approved, others deferred.
#[derive(Debug, Clone, Default)]
pub struct PreApproved {
    steps: BTreeSet<String>,
}

impl PreApproved {
    pub fn new<I, S>(steps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        PreApproved {
            steps: steps.into_iter().map(Into::into).collect(),
        }
    }
    /// Approves nothing: every approval pauses the run.
    pub fn none() -> Self {
        Self::default()
    }
    pub fn steps(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(String::as_str)
    }
}

#[async_trait]
impl Approver for PreApproved {
    async fn decide(&self, request: &ApprovalRequest) -> ApprovalDecision {
        if self.steps.contains(&request.step) {
            ApprovalDecision::Approved {
                by: "--approve".into(),
            }
        } else {
            ApprovalDecision::Defer
        }
    }
}

/// Approves everything (tests, `demo` when asked to).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApproveAll;

#[async_trait]
impl Approver for ApproveAll {
    async fn decide(&self, _request: &ApprovalRequest) -> ApprovalDecision {
        ApprovalDecision::Approved {
            by: "approve-all".into(),
        }
    }
}

/// An approval as recorded in the checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApprovalRecord {
    pub step: String,
    pub by: String,
    pub at: DateTime<Utc>,
}
