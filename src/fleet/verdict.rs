//! One cluster's verdict for the fleet: the single-cluster preflight's decisions
//! ([`crate::steps::plan::decide`]), the run that owns the cluster and the checkpoint it keeps,
//! read as ready, at target, stale canary, in progress or blocked. `fleet plan` shows it;
//! `fleet run` starts a cluster only when it is ready (or a stale canary the fleet's
//! `approve` list lets it consolidate).

use crate::contract::fleet::Verdict;
use crate::istio::TargetError;
use crate::steps::plan::{Decisions, MeshState, RunClass};

/// What the fleet knows of a cluster before it starts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub verdict: Verdict,
    /// The revision it would be upgraded to.
    pub target: Option<String>,
    /// What the verdict means, and what a person does about it.
    pub detail: String,
}

/// A run found in the cluster: its owner record's run, or its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRun {
    pub run_id: String,
    /// Its checkpoint says completed or rolled back.
    pub finished: bool,
}

/// The verdict for a new upgrade of the cluster `name`.
pub fn judge(decisions: &Decisions, name: &str, found: Option<&FoundRun>) -> Judged {
    let judged = |verdict, target, detail| Judged {
        verdict,
        target,
        detail,
    };
    match found {
        Some(run) if !run.finished => {
            return judged(
                Verdict::InProgress,
                None,
                format!(
                    "run {} is unfinished on {name}: continue it (asm-canary resume --state-backend kubernetes) or roll it back before the fleet upgrades it",
                    run.run_id
                ),
            );
        }
        // Upgraded before (by the fleet, or a pipeline with the in-cluster checkpoint): at
        // its target is the truth; the checkpoint matters only to its next upgrade.
        Some(run) => {
            let without = judge(decisions, name, None);
            if without.verdict == Verdict::AtTarget {
                return judged(
                    Verdict::AtTarget,
                    without.target,
                    format!(
                        "{}; the finished checkpoint of run {} stays in it until its next upgrade (asm-canary state archive --state-backend kubernetes sets it aside)",
                        without.detail, run.run_id
                    ),
                );
            }
            return judged(
                Verdict::Blocked,
                None,
                format!(
                    "the finished checkpoint of run {} is still in {name}: set it aside with asm-canary state archive --state-backend kubernetes, then run the fleet again",
                    run.run_id
                ),
            );
        }
        None => {}
    }
    match (&decisions.state, decisions.class()) {
        (MeshState::Ready, _) => ready(decisions, name),
        (MeshState::AlreadyAtTarget, _) => judged(
            Verdict::AtTarget,
            decisions.to.clone(),
            decisions.state.explain(name),
        ),
        (_, RunClass::ResumeCanary) => judged(
            Verdict::Ready,
            decisions.to.clone(),
            decisions.verdict(name),
        ),
        (_, RunClass::Consolidate) => judged(
            Verdict::StaleCanary,
            decisions.to.clone(),
            format!(
                "{}; the fleet does this only with `consolidate` in its upgrade approve list, else roll it back: asm-canary rollback --from-cluster",
                decisions.verdict(name)
            ),
        ),
        _ => judged(Verdict::Blocked, None, decisions.verdict(name)),
    }
}

fn ready(decisions: &Decisions, name: &str) -> Judged {
    let Some(upgrade) = &decisions.upgrade else {
        return Judged {
            verdict: Verdict::Blocked,
            target: None,
            detail: decisions.verdict(name),
        };
    };
    match &upgrade.choice.target {
        Ok(target) => Judged {
            verdict: Verdict::Ready,
            target: Some(target.to_string()),
            detail: format!(
                "{} → {target} ({})",
                upgrade.source,
                upgrade.choice.reason()
            ),
        },
        Err(e @ TargetError::NoUpgrades { .. }) => Judged {
            verdict: Verdict::AtTarget,
            target: Some(upgrade.source.clone()),
            detail: e.to_string(),
        },
        Err(e) => Judged {
            verdict: Verdict::Blocked,
            target: None,
            detail: e.to_string(),
        },
    }
}

/// Whether the fleet starts an upgrade of a cluster so judged, with `approve` the fleet's
/// per-cluster approvals.
pub fn startable(judged: &Judged, approve: &[String]) -> bool {
    match judged.verdict {
        Verdict::Ready => true,
        Verdict::StaleCanary => approve.iter().any(|s| s == "consolidate"),
        _ => false,
    }
}
