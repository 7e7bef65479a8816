//! The canary steps: the actions and gates that `runbooks/asm-canary-upgrade.yaml` names,
//! one module per step of design.md's table. They talk to ARM ([`crate::azure`]) and
//! Kubernetes ([`crate::k8s`]) and report through the engine's journal and events; they know
//! nothing of terminals. [`plan`] makes the decisions a run takes before its first change
//! (state, target, the ConfigMap copy), once, for the `plan` command, the pre-run refusals
//! and the steps alike.
//!
//! | runbook name | kind | module |
//! |---|---|---|
//! | preflight, cluster-ready | action, gate | [`cluster`] |
//! | reconcile-mesh | action | [`reconcile`] |
//! | consolidate-canary | action | [`recover`] |
//! | get-upgrades, target-available | action, gate | [`cluster`] |
//! | copy-shared-configmap, configmap-copied | action, gate | [`configmap`] |
//! | start-canary, control-planes-ready | action, gate | [`cluster`], [`controlplane`] |
//! | canary-wave, workloads-on-revision | action, gate | [`restart`] (relabel: [`tag`]; the gate after the wave: [`wave`]) |
//! | promote-canary | action (the `promote` approval) | [`restart`] |
//! | repoint-tag, tag-points-at | action, gate | [`tag`] |
//! | restart-workloads, workloads-on-revision | action, gate | [`restart`], growing waves and their gates: [`wave`] |
//! | verify-proxies, proxies-synced | action, gate | [`verify`] |
//! | analysis-scope, analysis | action, gate | [`analysis`] |
//! | complete-upgrade, single-revision | action, gate | [`cluster`] |
//! | restore-tag, restart-back, remove-canary, delete-target-configmap | rollback actions | [`tag`], [`restart`], [`cluster`], [`configmap`] |
//!
//! The day-2 runbooks reuse these (waves, their gates, verify, analysis) and add:
//!
//! | runbook name | kind | module |
//! |---|---|---|
//! | day2-preflight, find-patch-drift, restart-drifted, workloads-patched | actions, gate (patch restart) | [`patch`] |
//! | onboard-preflight, label-namespaces, onboard-restart, unlabel-namespaces | actions (onboarding) | [`onboard`] |
//! | workloads-without-sidecar | gate (onboarding's rollback) | [`restart`] |

pub mod adoption;
pub mod analysis;
pub mod cluster;
pub mod configmap;
pub mod controlplane;
pub mod day2;
pub mod finalcheck;
pub mod onboard;
pub mod patch;
pub mod plan;
pub mod reconcile;
pub mod recover;
pub mod restart;
pub mod tag;
pub mod traps;
pub mod verify;
pub mod wave;

use std::sync::Arc;

use asm_canary_engine::{Outputs, Registry, StepError};

use crate::azure::{ArmClient, ArmError, ClusterId};
use crate::k8s::K8sError;

/// What every step works against.
pub struct Env {
    pub arm: ArmClient,
    pub cluster: ClusterId,
    pub kube: kube::Client,
    /// The analysis gate's metrics (a Prometheus); `None`: the gate is off.
    pub metrics: Option<Arc<dyn crate::analysis::MetricSource>>,
}

/// The action names [`registry`] registers, sorted.
pub const ACTION_NAMES: &[&str] = &[
    "analysis-scope",
    "canary-wave",
    "complete-upgrade",
    "consolidate-canary",
    "copy-shared-configmap",
    "day2-preflight",
    "delete-target-configmap",
    "find-patch-drift",
    "get-upgrades",
    "label-namespaces",
    "onboard-preflight",
    "onboard-restart",
    "preflight",
    "promote-canary",
    "reconcile-mesh",
    "remove-canary",
    "repoint-tag",
    "restart-back",
    "restart-drifted",
    "restart-workloads",
    "restore-tag",
    "start-canary",
    "unlabel-namespaces",
    "verify-proxies",
];

/// The gate names [`registry`] registers, sorted.
pub const GATE_NAMES: &[&str] = &[
    "analysis",
    "cluster-ready",
    "configmap-copied",
    "control-planes-ready",
    "proxies-synced",
    "single-revision",
    "tag-points-at",
    "target-available",
    "workloads-on-revision",
    "workloads-patched",
    "workloads-without-sidecar",
];

/// The names of [`registry`] without clients behind them (stubs that fail if run): to load
/// and validate a runbook offline.
pub fn names_only() -> Registry {
    Registry::stubs(ACTION_NAMES.iter().copied(), GATE_NAMES.iter().copied())
}

/// The registry of every action and gate the built-in runbooks name.
pub fn registry(env: Arc<Env>) -> Registry {
    let r = clients_registry(env);
    debug_assert!(
        r.action_names().eq(ACTION_NAMES.iter().copied())
            && r.gate_names().eq(GATE_NAMES.iter().copied()),
        "ACTION_NAMES / GATE_NAMES must list what registry() registers"
    );
    r
}

fn clients_registry(env: Arc<Env>) -> Registry {
    let e = || env.clone();
    Registry::new()
        .action("preflight", cluster::Preflight(e()))
        .gate("cluster-ready", cluster::ClusterReady(e()))
        .action("reconcile-mesh", reconcile::ReconcileMesh(e()))
        .action("consolidate-canary", recover::ConsolidateCanary(e()))
        .action("get-upgrades", cluster::GetUpgrades(e()))
        .gate("target-available", cluster::TargetAvailable(e()))
        .action("copy-shared-configmap", configmap::CopySharedConfigMap(e()))
        .gate("configmap-copied", configmap::ConfigMapCopied(e()))
        .action("start-canary", cluster::StartCanary(e()))
        .gate(
            "control-planes-ready",
            controlplane::ControlPlanesReady(e()),
        )
        .action("canary-wave", restart::CanaryWave(e()))
        .action("promote-canary", restart::Promote)
        .action("repoint-tag", tag::RepointTag(e()))
        .gate("tag-points-at", tag::TagPointsAt(e()))
        .action("restart-workloads", restart::RestartWorkloads(e()))
        .gate("workloads-on-revision", restart::WorkloadsOnRevision(e()))
        .action("verify-proxies", verify::VerifyProxies(e()))
        .gate("proxies-synced", verify::ProxiesSynced(e()))
        .action("analysis-scope", analysis::AnalysisScope(e()))
        .gate("analysis", analysis::AnalysisGate(e()))
        .action("complete-upgrade", cluster::CompleteUpgrade(e()))
        .gate("single-revision", cluster::SingleRevision(e()))
        .action("restore-tag", tag::RestoreTag(e()))
        .action("restart-back", restart::RestartBack(e()))
        .action("remove-canary", cluster::RemoveCanary(e()))
        .action(
            "delete-target-configmap",
            configmap::DeleteTargetConfigMap(e()),
        )
        .action("day2-preflight", patch::Day2Preflight(e()))
        .action("find-patch-drift", patch::FindPatchDrift(e()))
        .action("restart-drifted", patch::RestartDrifted(e()))
        .gate("workloads-patched", patch::WorkloadsPatched(e()))
        .action("onboard-preflight", onboard::OnboardPreflight(e()))
        .action("label-namespaces", onboard::LabelNamespaces(e()))
        .action("onboard-restart", onboard::OnboardRestart(e()))
        .action("unlabel-namespaces", onboard::UnlabelNamespaces(e()))
        .gate(
            "workloads-without-sidecar",
            restart::WorkloadsWithoutSidecar(e()),
        )
}

/// The first `shown` items joined with commas, then "and N more <noun>" for the rest: a
/// message about two hundred namespaces stays one readable line.
pub fn first_few<T: std::fmt::Display>(
    items: impl IntoIterator<Item = T>,
    shown: usize,
    noun: &str,
) -> String {
    let mut out = Vec::new();
    let mut more = 0usize;
    for item in items {
        if out.len() < shown {
            out.push(item.to_string());
        } else {
            more += 1;
        }
    }
    let mut line = out.join(", ");
    if more > 0 {
        line.push_str(&format!(" and {more} more {noun}"));
    }
    line
}

/// Outputs from `(key, value)` pairs.
pub(crate) fn outputs<const N: usize>(pairs: [(&str, serde_json::Value); N]) -> Outputs {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

pub(crate) fn kube_err(what: impl std::fmt::Display, e: kube::Error) -> StepError {
    StepError::with_source(format!("{what}{}", crate::k8s::tls_hint(&e)), e)
}

pub(crate) fn k8s_err(what: impl std::fmt::Display, e: K8sError) -> StepError {
    StepError::with_source(what, e)
}

pub(crate) fn arm_err(what: impl std::fmt::Display, e: ArmError) -> StepError {
    StepError::with_source(what, e)
}

/// Wakes a gate when `api` changes: a watch kept in the gate's scratch space between checks,
/// so a `watch: true` gate re-checks on the change instead of at the next poll.
pub(crate) async fn wake_on_change<K>(ctx: &mut asm_canary_engine::GateCtx, api: kube::Api<K>)
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
{
    use futures::StreamExt;
    type Changes = futures::stream::BoxStream<'static, ()>;
    let changes: &mut Changes = ctx.scratch(|| {
        kube::runtime::watcher(api, kube::runtime::watcher::Config::default())
            .filter_map(|e| async move {
                match e {
                    Ok(kube::runtime::watcher::Event::Apply(_))
                    | Ok(kube::runtime::watcher::Event::Delete(_))
                    | Ok(kube::runtime::watcher::Event::InitDone) => Some(()),
                    _ => None,
                }
            })
            .boxed()
    });
    if changes.next().await.is_none() {
        // The watch ended: fall back to polling for this gate run.
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn first_few_names_the_rest_by_count() {
        assert_eq!(super::first_few(["a", "b"], 3, "namespaces"), "a, b");
        assert_eq!(
            super::first_few((0..10).map(|i| format!("ns-{i}")), 2, "namespaces"),
            "ns-0, ns-1 and 8 more namespaces"
        );
    }
}
