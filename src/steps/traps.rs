//! Preflight's traps: what a cluster holds that a run would otherwise meet only after its
//! first change, decided before it (issue 12, item 3).
//!
//! ```text
//!  namespaces to migrate ─▶ their pods not on the target ─▶ their workloads
//!        │                                                    ├─ paused Deployment      ─▶ refused
//!        │                                                    └─ OnDelete StatefulSet / ─▶ refused, or pod by pod
//!        │                                                       DaemonSet                 with --restart-ondelete
//!  tag mode: namespaces labelled istio.io/rev=<source> ─────────────────────────────────▶ refused
//! ```
//!
//! Each would pass `start`, `restart` and `verify`, then block `complete` (their pods stay on
//! the source) or hold a gate until it times out and rolls back. Refused here, they cost
//! nothing: the run stops with exit 2 before it writes anything.

use std::collections::BTreeSet;

use super::plan::Refusal;
use super::restart::{mesh_namespaces, plan_namespaces};
use super::tag::Mode;
use super::{Env, k8s_err};
use crate::istio::REV_LABEL;
use crate::k8s::rollout::list_workloads;
use crate::k8s::{WorkloadKind, WorkloadRef, namespaces_by_label};
use asm_canary_engine::StepError;

/// What the run asks for, as far as the traps go.
#[derive(Debug, Clone)]
pub struct TrapRequest<'a> {
    pub mode: Mode,
    pub tag: &'a str,
    pub source: &'a str,
    pub target: &'a str,
    /// `--restart-ondelete`: restart the pods of `OnDelete` workloads one by one.
    pub restart_ondelete: bool,
}

/// The traps found in the namespaces a run would migrate.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Traps {
    /// Tag mode: namespaces labelled `istio.io/rev=<source>` (not the tag).
    pub source_labelled: Vec<String>,
    /// `OnDelete` StatefulSets and DaemonSets with pods to move.
    pub on_delete: Vec<WorkloadRef>,
    /// Paused Deployments with pods to move.
    pub paused: Vec<WorkloadRef>,
}

/// Reads the namespaces the run would migrate, their pods not on the target, and the
/// workloads that own them.
pub async fn find_traps(env: &Env, req: &TrapRequest<'_>) -> Result<Traps, StepError> {
    let mut traps = Traps::default();
    if req.mode == Mode::Tag && req.tag != req.source {
        let sel = format!("{REV_LABEL}={}", req.source);
        traps.source_labelled = namespaces_by_label(&env.kube, &sel)
            .await
            .map_err(|e| k8s_err(format!("listing namespaces {sel}"), e))?
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
    }
    // Before the run, the namespaces to migrate carry the tag (label mode: the source).
    let label_for = match req.mode {
        Mode::Tag => req.tag,
        Mode::Label => req.source,
    };
    let namespaces = mesh_namespaces(env, Mode::Tag, label_for, req.target).await?;
    let to_move = plan_namespaces(env, &namespaces, req.target)
        .await?
        .workloads;
    let kinds: BTreeSet<WorkloadKind> = to_move.iter().map(|w| w.kind).collect();
    for kind in kinds {
        let listed = list_workloads(&env.kube, kind)
            .await
            .map_err(|e| k8s_err(format!("listing {kind}s"), e))?;
        for w in listed
            .into_iter()
            .filter(|w| to_move.contains(&w.reference()))
        {
            if w.is_paused() {
                traps.paused.push(w.reference());
            } else if !w.replaces_pods_on_restart() {
                traps.on_delete.push(w.reference());
            }
        }
    }
    traps.paused.sort();
    traps.on_delete.sort();
    Ok(traps)
}

impl Traps {
    /// What a new run is refused for: every trap but the `OnDelete` workloads that
    /// `--restart-ondelete` restarts pod by pod.
    pub fn refusals(&self, req: &TrapRequest<'_>) -> Vec<Refusal> {
        let mut out = Vec::new();
        if !self.source_labelled.is_empty() {
            out.push(Refusal::SourceLabelled {
                namespaces: self.source_labelled.clone(),
                installed: req.source.to_string(),
                tag: req.tag.to_string(),
            });
        }
        if !self.on_delete.is_empty() && !req.restart_ondelete {
            out.push(Refusal::OnDelete {
                workloads: self.on_delete.iter().map(|w| w.to_string()).collect(),
                installed: req.source.to_string(),
            });
        }
        if !self.paused.is_empty() {
            out.push(Refusal::Paused {
                workloads: self.paused.clone(),
                installed: req.source.to_string(),
            });
        }
        out
    }

    /// The plan's lines for the workloads restarted pod by pod (`--restart-ondelete`).
    pub fn pod_by_pod(&self, req: &TrapRequest<'_>) -> Vec<String> {
        if !req.restart_ondelete {
            return Vec::new();
        }
        self.on_delete
            .iter()
            .map(|w| {
                format!(
                    "{w} (updateStrategy OnDelete): its pods are deleted one at a time, each replacement ready on {} before the next",
                    req.target
                )
            })
            .collect()
    }
}

/// The refusals of a new run, read from the cluster.
pub async fn refusals(env: &Env, req: &TrapRequest<'_>) -> Result<Vec<Refusal>, StepError> {
    Ok(find_traps(env, req).await?.refusals(req))
}

impl super::plan::Plan {
    /// Names the traps in the plan: what a new run would be refused for, and what it restarts
    /// pod by pod.
    pub(super) async fn add_traps(
        &mut self,
        env: &Env,
        req: &super::plan::PlanRequest,
        source: &str,
        target: &str,
    ) -> Result<(), StepError> {
        let trap_req = TrapRequest {
            mode: req.mode,
            tag: &req.tag,
            source,
            target,
            restart_ondelete: req.restart_ondelete,
        };
        let traps = find_traps(env, &trap_req).await?;
        self.pod_by_pod = traps.pod_by_pod(&trap_req);
        let refusals = traps.refusals(&trap_req);
        self.refused = refusals.iter().map(|r| r.to_string()).collect();
        self.refusals.extend(refusals);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(restart_ondelete: bool) -> TrapRequest<'static> {
        TrapRequest {
            mode: Mode::Tag,
            tag: "prod",
            source: "asm-1-27",
            target: "asm-1-29",
            restart_ondelete,
        }
    }

    fn mk_traps() -> Traps {
        Traps {
            source_labelled: vec!["direct".into()],
            on_delete: vec![WorkloadRef::new(
                WorkloadKind::StatefulSet,
                "orders",
                "ledger",
            )],
            paused: vec![WorkloadRef::new(WorkloadKind::Deployment, "shop", "frozen")],
        }
    }

    /// Regression: namespaces labelled with the source, OnDelete workloads and paused
    /// Deployments passed start, restart and verify, then blocked complete (or held a gate
    /// for 20 minutes and rolled back). Each is now a refusal with the fix in its sentence.
    #[test]
    fn traps_that_would_block_complete_are_refused_with_their_fix() {
        let refusals = mk_traps().refusals(&req(false));
        let text: Vec<String> = refusals.iter().map(|r| r.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert_eq!(
            text[0],
            "namespace direct is labelled istio.io/rev=asm-1-27, the source revision itself rather than the tag prod: moving the tag does not move them, and their pods would block complete; relabel them to the tag (kubectl label ns direct istio.io/rev=prod --overwrite), or upgrade with --mode label"
        );
        assert!(
            text[1].starts_with("StatefulSet orders/ledger uses updateStrategy OnDelete")
                && text[1].contains("--restart-ondelete"),
            "{}",
            text[1]
        );
        assert!(
            text[2].starts_with("Deployment shop/frozen is paused")
                && text[2].contains("kubectl rollout resume deployment/frozen -n shop"),
            "{}",
            text[2]
        );
    }

    #[test]
    fn restart_ondelete_turns_the_ondelete_refusal_into_a_pod_by_pod_restart() {
        let traps = mk_traps();
        let refusals = traps.refusals(&req(true));
        assert!(
            !refusals
                .iter()
                .any(|r| matches!(r, Refusal::OnDelete { .. })),
            "{refusals:?}"
        );
        // paused Deployments stay refused: nothing to opt into
        assert!(refusals.iter().any(|r| matches!(r, Refusal::Paused { .. })));
        assert!(traps.pod_by_pod(&req(false)).is_empty());
        let lines = traps.pod_by_pod(&req(true));
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("StatefulSet orders/ledger (updateStrategy OnDelete)"));
    }

    #[test]
    fn no_traps_no_refusals() {
        assert!(Traps::default().refusals(&req(false)).is_empty());
    }
}
