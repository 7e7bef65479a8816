//! The status document (`status --output json`, schema [`STATUS_SCHEMA`]): where a run stands,
//! what the cluster says now, and the next command to run. Built by `cli::status` from the
//! checkpoint; rendered as JSON as it is, or as text by `cli::status::render_text`.

use std::path::PathBuf;

use asm_canary_engine::{Checkpoint, RunState, StepRecord, StepStatus};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The status document's schema name.
pub const STATUS_SCHEMA: &str = "asm-canary.status/1.0";

/// `status --output json`: one document.
#[derive(Debug, Clone, Serialize)]
pub struct StatusDoc {
    pub schema: &'static str,
    pub run_id: String,
    /// The cluster's ARM id.
    pub target: String,
    pub state: RunState,
    pub reason: Option<String>,
    pub failed_step: Option<String>,
    /// The step whose approval the run waits for, when it does.
    pub awaiting_approval: Option<String>,
    pub summary: serde_json::Map<String, serde_json::Value>,
    pub steps: Vec<StepLine>,
    pub rollback: Vec<RollbackLine>,
    /// What the cluster says now: `null` with `--offline`.
    pub cluster_now: Option<ClusterNow>,
    pub next: Next,
    /// The run's Markdown report, when the checkpoint is a file.
    pub report: Option<PathBuf>,
}

/// A forward step of the run.
#[derive(Debug, Clone, Serialize)]
pub struct StepLine {
    pub id: String,
    pub status: StepStatus,
    pub attempts: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// A step of the rollback sequence.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackLine {
    pub id: String,
    pub status: StepStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// The cluster as ARM shows it now, or why it could not be read.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ClusterNow {
    Read {
        revisions: Vec<String>,
        provisioning_state: Option<String>,
        /// Which run owns the cluster's upgrade (its owner record) now.
        owner: OwnerNow,
    },
    Unreadable {
        error: String,
    },
}

/// The cluster's owner record (`aks-istio-system/asm-canary-owner`), as `status` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OwnerNow {
    /// No run owns the cluster's upgrade.
    None,
    /// This run or another owns it.
    Run {
        run_id: String,
        host: String,
        phase: String,
        since: String,
        /// How commands name that run's checkpoint.
        checkpoint: String,
    },
    Unreadable {
        error: String,
    },
}

/// The next thing to do: a command to run (when there is one) and a sentence.
#[derive(Debug, Clone, Serialize)]
pub struct Next {
    pub command: Option<String>,
    pub explanation: String,
}

impl StatusDoc {
    /// The document for `cp`. `flags` is how commands name the checkpoint (`--state FILE` or
    /// `--state-backend kubernetes`, `in_cluster`).
    pub fn new(
        cp: &Checkpoint,
        flags: &str,
        in_cluster: bool,
        cluster_now: Option<ClusterNow>,
        report: Option<PathBuf>,
    ) -> StatusDoc {
        StatusDoc {
            schema: STATUS_SCHEMA,
            run_id: cp.run_id.clone(),
            target: cp.target.clone(),
            state: cp.state,
            reason: cp.reason.clone(),
            failed_step: cp.failed_step.clone(),
            awaiting_approval: awaiting_approval(cp),
            summary: cp.summary.clone(),
            steps: cp.steps.iter().map(StepLine::of).collect(),
            rollback: cp.rollback.iter().map(RollbackLine::of).collect(),
            cluster_now,
            next: next_command(cp, flags, in_cluster),
            report,
        }
    }
}

impl StepLine {
    fn of(s: &StepRecord) -> StepLine {
        StepLine {
            id: s.id.clone(),
            status: s.status,
            attempts: s.attempts,
            started_at: s.started_at,
            finished_at: s.finished_at,
            error: s.error.clone(),
        }
    }
}

impl RollbackLine {
    fn of(s: &StepRecord) -> RollbackLine {
        RollbackLine {
            id: s.id.clone(),
            status: s.status,
            started_at: s.started_at,
            finished_at: s.finished_at,
            error: s.error.clone(),
        }
    }
}

fn awaiting_approval(cp: &Checkpoint) -> Option<String> {
    cp.steps
        .iter()
        .find(|s| s.status == StepStatus::AwaitingApproval)
        .map(|s| s.id.clone())
}

/// `state` is how the commands name the checkpoint: `--state FILE` or
/// `--state-backend kubernetes` (`in_cluster`).
pub fn next_command(cp: &Checkpoint, state: &str, in_cluster: bool) -> Next {
    let cmd = |c: String, e: &str| Next {
        command: Some(c),
        explanation: e.to_string(),
    };
    match cp.state {
        RunState::Completed => Next {
            command: None,
            explanation: "nothing: the run completed".into(),
        },
        RunState::RolledBack => cmd(
            if in_cluster {
                "asm-canary upgrade --state-backend kubernetes".into()
            } else {
                "asm-canary upgrade --state NEW-FILE".into()
            },
            "the run was rolled back to the source revision; fix the cause (see the reason), check with asm-canary plan, then start a new upgrade (with a new checkpoint file, when the checkpoint is a file)",
        ),
        RunState::Paused => paused_next(cp, state),
        RunState::Running | RunState::RollingBack => cmd(
            format!("asm-canary resume {state}"),
            "the checkpoint says a run is in progress; if no process is running it (it died), resume continues it without repeating a side effect",
        ),
        RunState::Failed => cmd(
            format!("asm-canary rollback {state}"),
            "the rollback itself failed: a person must look at the reason first, then retry the rollback",
        ),
    }
}

fn paused_next(cp: &Checkpoint, state: &str) -> Next {
    let cmd = |c: String, e: String| Next {
        command: Some(c),
        explanation: e,
    };
    if let Some(step) = awaiting_approval(cp) {
        return cmd(
            format!("asm-canary resume {state} --approve {step}"),
            format!(
                "the run waits for approval of step {step:?}; or roll it back with asm-canary rollback {state}"
            ),
        );
    }
    let failed = cp.failed_step.as_ref().filter(|id| {
        cp.steps
            .iter()
            .any(|s| &s.id == *id && s.status == StepStatus::Failed)
    });
    match failed {
        Some(step) => cmd(
            format!("asm-canary rollback {state}"),
            format!(
                "step {step:?} failed and the run halted; roll back, or fix the cause and retry the step with asm-canary resume {state}"
            ),
        ),
        None => cmd(
            format!("asm-canary resume {state}"),
            format!(
                "the run is paused; resume continues where it stopped, or roll back with asm-canary rollback {state}"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn checkpoint(state: &str, steps: serde_json::Value) -> Checkpoint {
        serde_json::from_value(json!({
            "schema_version": "1.0", "kind": "asm-canary/checkpoint", "run_id": "r-1",
            "target": "/subscriptions/s/resourceGroups/rg-sim/providers/Microsoft.ContainerService/managedClusters/aks-sim",
            "runbook": {"name": "asm-canary-upgrade", "sha256": "abc"},
            "params": {}, "state": state,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "steps": steps, "rollback": [], "journal": [], "summary": {}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn next_commands_name_the_checkpoint_as_its_backend_holds_it() {
        let paused = checkpoint(
            "paused",
            json!([{"id": "complete", "status": "awaiting_approval"}]),
        );
        let n = next_command(&paused, "--state run.json", false);
        assert_eq!(
            n.command.as_deref(),
            Some("asm-canary resume --state run.json --approve complete")
        );
        let n = next_command(&paused, "--state-backend kubernetes", true);
        assert_eq!(
            n.command.as_deref(),
            Some("asm-canary resume --state-backend kubernetes --approve complete")
        );
        assert!(
            n.explanation
                .contains("asm-canary rollback --state-backend kubernetes")
        );
        let rolled_back = checkpoint("rolled_back", json!([]));
        assert_eq!(
            next_command(&rolled_back, "--state run.json", false)
                .command
                .as_deref(),
            Some("asm-canary upgrade --state NEW-FILE")
        );
        assert_eq!(
            next_command(&rolled_back, "--state-backend kubernetes", true)
                .command
                .as_deref(),
            Some("asm-canary upgrade --state-backend kubernetes")
        );
        let completed = checkpoint("completed", json!([]));
        assert_eq!(
            next_command(&completed, "--state run.json", false).command,
            None
        );
    }

    #[test]
    fn a_halted_failure_suggests_rollback_and_a_plain_pause_resume() {
        let failed = checkpoint(
            "paused",
            json!([{"id": "verify", "status": "failed", "error": "timed out"}]),
        );
        let mut failed = failed;
        failed.failed_step = Some("verify".into());
        let n = next_command(&failed, "--state run.json", false);
        assert_eq!(
            n.command.as_deref(),
            Some("asm-canary rollback --state run.json")
        );
        let paused = checkpoint("paused", json!([{"id": "verify", "status": "pending"}]));
        assert_eq!(
            next_command(&paused, "--state run.json", false)
                .command
                .as_deref(),
            Some("asm-canary resume --state run.json")
        );
    }

    #[test]
    fn the_status_document_keeps_its_shape() {
        let mut cp = checkpoint(
            "paused",
            json!([
                {"id": "preflight", "status": "succeeded", "attempts": 1,
                 "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:02Z"},
                {"id": "complete", "status": "awaiting_approval"}
            ]),
        );
        cp.summary.insert("source".into(), json!("asm-1-27"));
        cp.summary.insert("target".into(), json!("asm-1-29"));
        let now = ClusterNow::Read {
            revisions: vec!["asm-1-27".into(), "asm-1-29".into()],
            provisioning_state: Some("Succeeded".into()),
            owner: OwnerNow::Run {
                run_id: "run-1".into(),
                host: "agent-7".into(),
                phase: "paused".into(),
                since: "2026-01-01T00:00:00Z".into(),
                checkpoint: "--state /work/run.json".into(),
            },
        };
        let doc = StatusDoc::new(
            &cp,
            "--state run.json",
            false,
            Some(now),
            Some("run.json.report.md".into()),
        );
        insta::assert_json_snapshot!("status_document_paused", doc);
        let unreadable = StatusDoc::new(
            &cp,
            "--state run.json",
            false,
            Some(ClusterNow::Unreadable {
                error: "connection refused".into(),
            }),
            None,
        );
        let v = serde_json::to_value(&unreadable).unwrap_or_default();
        assert_eq!(v["cluster_now"], json!({"error": "connection refused"}));
        let offline = StatusDoc::new(&cp, "--state run.json", false, None, None);
        let v = serde_json::to_value(&offline).unwrap_or_default();
        assert_eq!(v["cluster_now"], serde_json::Value::Null);
    }
}
