//! Failure decisions: when a forward step fails (its action errs or its gate fails), the
//! executor asks a [`FailureDecider`] what to do — roll back, retry the step, or halt.
//!
//! Unattended: [`RunbookPolicy`] answers what the step's `on_failure` says. Guided: the
//! terminal UI implements `FailureDecider` and asks the person. The decider is not asked when
//! a step is interrupted (Ctrl-C pauses the run) nor for a step of the rollback sequence (a
//! failed rollback step stops the rollback, exit 6).
//!
//! ```text
//!  step failed ──▶ decider ──Rollback──▶ rollback sequence (exit 3)
//!                          ├─Retry────▶ the same step again, attempt + 1 (asked again if it fails)
//!                          └─Halt─────▶ paused, resumable (exit 4); `resume` retries the step
//! ```

use async_trait::async_trait;

use crate::runbook::OnFailure;

/// What the executor asks after a forward step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRequest {
    pub run_id: String,
    pub target: String,
    /// The step that failed.
    pub step: String,
    /// Why it failed (the action's error, or `gate "<check>" failed: <reason>`).
    pub error: String,
    /// The attempt that failed (1 the first time; a retry or a resume adds one).
    pub attempt: u32,
    /// What the runbook says (`on_failure`): the answer of an unattended run.
    pub policy: OnFailure,
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureDecision {
    /// Run the rollback sequence now: the failure's rollback (exit 3 when it finishes).
    Rollback,
    /// Run the failed step again in this run: its action observes first, then its gate waits
    /// anew. If it fails again, the decider is asked again.
    Retry,
    /// Stop here, paused and resumable (exit 4); `resume` retries the step, `rollback` undoes.
    Halt,
}

impl FailureDecision {
    /// The value of `step_failed.on_failure` in the event stream.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureDecision::Rollback => "rollback",
            FailureDecision::Retry => "retry",
            FailureDecision::Halt => "halt",
        }
    }
}

impl From<OnFailure> for FailureDecision {
    fn from(policy: OnFailure) -> Self {
        match policy {
            OnFailure::Rollback => FailureDecision::Rollback,
            OnFailure::Halt => FailureDecision::Halt,
        }
    }
}

/// Decides what happens after a forward step failed.
#[async_trait]
pub trait FailureDecider: Send + Sync {
    async fn decide(&self, request: &FailureRequest) -> FailureDecision;
}

/// The unattended decider (the executor's default): the runbook's `on_failure`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunbookPolicy;

#[async_trait]
impl FailureDecider for RunbookPolicy {
    async fn decide(&self, request: &FailureRequest) -> FailureDecision {
        request.policy.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_request(policy: OnFailure) -> FailureRequest {
        FailureRequest {
            run_id: "r".into(),
            target: "t".into(),
            step: "verify".into(),
            error: "gate \"synced\" failed: 2 proxies stale".into(),
            attempt: 1,
            policy,
        }
    }

    #[tokio::test]
    async fn runbook_policy_answers_the_runbooks_on_failure() {
        for (policy, want) in [
            (OnFailure::Rollback, FailureDecision::Rollback),
            (OnFailure::Halt, FailureDecision::Halt),
        ] {
            assert_eq!(RunbookPolicy.decide(&mk_request(policy)).await, want);
        }
    }

    #[test]
    fn decisions_are_named_as_in_the_event_stream() {
        let names: Vec<_> = [
            FailureDecision::Rollback,
            FailureDecision::Retry,
            FailureDecision::Halt,
        ]
        .map(FailureDecision::as_str)
        .to_vec();
        assert_eq!(names, ["rollback", "retry", "halt"]);
        // The policy's names and the decision's agree, so unattended streams are unchanged.
        for p in [OnFailure::Rollback, OnFailure::Halt] {
            assert_eq!(FailureDecision::from(p).as_str(), p.as_str());
        }
    }
}
