//! The patch restart (`runbooks/asm-canary-patch-restart.yaml`): AKS rolled a newer Istio
//! patch into the installed revision; the sidecars keep their older proxy until their pods
//! are recreated. Find them ([`crate::k8s::patch`]), restart them in waves with the upgrade's
//! gates ([`super::restart::restart_in_waves`], [`super::wave::gate_wave`]), then verify.
//!
//! | runbook name | kind |
//! |---|---|
//! | day2-preflight | action: the cluster idle, the mesh on, one revision installed |
//! | find-patch-drift | action: the drifted workloads, by namespace |
//! | restart-drifted, workloads-patched | action, gate |
//!
//! Nothing to roll back: a restart cannot bring an older patch back (the injector injects
//! only the new one), so a failed gate halts the run (exit 4, resumable).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use asm_canary_engine::{Action, ActionCtx, ActionOutcome, Gate, GateCtx, GateStatus, StepError};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::restart::{Restarted, Want, WaveSpec, restart_in_waves, workloads_status};
use super::{Env, arm_err, k8s_err, outputs};
use crate::k8s::patch::{DriftedWorkload, PatchDrift, drift_against, find_patch_drift};
use crate::k8s::{WorkloadKind, WorkloadRef};

pub struct Day2Preflight(pub Arc<Env>);
pub struct FindPatchDrift(pub Arc<Env>);
pub struct RestartDrifted(pub Arc<Env>);
pub struct WorkloadsPatched(pub Arc<Env>);

/// The cluster a day-2 runbook may work on: ARM says it is idle (`Succeeded`), the Istio
/// add-on is on, and exactly one revision is installed (during a canary upgrade, the upgrade
/// restarts every workload anyway). That revision.
pub async fn single_revision(env: &Env) -> Result<String, StepError> {
    let doc = env
        .arm
        .get_cluster(&env.cluster)
        .await
        .map_err(|e| arm_err("reading the cluster", e))?;
    if !doc.is_idle() {
        return Err(StepError::msg(format!(
            "cluster {} is {}: wait for its operation to finish, then run again",
            env.cluster.name,
            doc.provisioning_state().unwrap_or("in an unknown state")
        )));
    }
    if doc.mesh_mode() != Some("Istio") {
        return Err(StepError::msg(format!(
            "cluster {} does not run the Istio add-on (serviceMeshProfile.mode is {}); nothing to do",
            env.cluster.name,
            doc.mesh_mode().unwrap_or("unset")
        )));
    }
    match doc.revisions().as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(StepError::msg(format!(
            "cluster {} has no Istio revision installed",
            env.cluster.name
        ))),
        many => Err(StepError::msg(format!(
            "cluster {} runs {} revisions ({}): a canary upgrade is in progress; finish it or roll it back first (it restarts every workload anyway)",
            env.cluster.name,
            many.len(),
            many.join(", ")
        ))),
    }
}

#[async_trait]
impl Action for Day2Preflight {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let revision = single_revision(&self.0).await?;
        ctx.events
            .info(format!("{} runs {revision}", self.0.cluster.name));
        Ok(ActionOutcome::done(outputs([(
            "revision",
            json!(revision),
        )])))
    }
}

/// A drifted workload as the step outputs it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Drifted {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    pub running: String,
    pub injected: String,
}

impl Drifted {
    pub fn of(d: &DriftedWorkload) -> Self {
        Drifted {
            kind: d.workload.kind,
            namespace: d.workload.namespace.clone(),
            name: d.workload.name.clone(),
            running: d.running.clone(),
            injected: d.injected.clone(),
        }
    }

    pub fn workload(&self) -> WorkloadRef {
        WorkloadRef::new(self.kind, &self.namespace, &self.name)
    }
}

/// Each namespace of `drift` with its count of drifted workloads, sorted by name.
pub fn counts_by_namespace(drift: &[Drifted]) -> Vec<(String, usize)> {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for d in drift {
        *by.entry(d.namespace.clone()).or_default() += 1;
    }
    by.into_iter().collect()
}

/// One line about the drift found.
pub fn drift_line(drift: &PatchDrift, revision: &str) -> String {
    let injected = drift.injected.get(revision).map_or("?", String::as_str);
    if drift.workloads.is_empty() {
        return format!("no sidecar runs an older proxy than {revision} injects ({injected})");
    }
    format!(
        "{} workload(s) run an older proxy than {revision} injects now ({injected}): {}",
        drift.workloads.len(),
        super::first_few(
            drift
                .workloads
                .iter()
                .map(|d| format!("{} ({})", d.workload, short_tag(&d.running))),
            8,
            "workloads"
        )
    )
}

fn short_tag(image: &str) -> &str {
    image.rsplit_once(':').map_or(image, |(_, t)| t)
}

#[async_trait]
impl Action for FindPatchDrift {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let revision: String = ctx.input("revision")?;
        let only: Vec<String> = ctx.input_opt("namespaces")?.unwrap_or_default();
        let scope = (!only.is_empty()).then_some(only.as_slice());
        let drift = find_patch_drift(&self.0.kube, std::slice::from_ref(&revision), scope)
            .await
            .map_err(|e| k8s_err("finding sidecars behind their injector", e))?;
        for u in &drift.unmovable {
            ctx.events.warn(format!("will not restart {u}"));
        }
        ctx.events.info(drift_line(&drift, &revision));
        let workloads: Vec<Drifted> = drift.workloads.iter().map(Drifted::of).collect();
        let namespaces: BTreeSet<String> = workloads.iter().map(|w| w.namespace.clone()).collect();
        Ok(ActionOutcome::done(outputs([
            ("drifted", json!(!workloads.is_empty())),
            ("injected", json!(drift.injected.get(&revision))),
            ("workloads", json!(workloads)),
            ("namespaces", json!(namespaces)),
        ])))
    }
}

#[async_trait]
impl Action for RestartDrifted {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let env = &self.0;
        let revision: String = ctx.input("revision")?;
        let drifted: Vec<Drifted> = ctx.input_opt("workloads")?.unwrap_or_default();
        let waves = match super::restart::journaled_waves(ctx)? {
            Some(w) => w,
            None => {
                let growth = super::wave::Growth::of_input(ctx.input_opt("waves")?)?;
                super::wave::first_then_growing(&counts_by_namespace(&drifted), &growth)
            }
        };
        let only: Vec<WorkloadRef> = drifted.iter().map(Drifted::workload).collect();
        let spec = WaveSpec::of(ctx, &revision)?;
        let (records, acted) = restart_in_waves(env, ctx, &spec, &waves, Some(&only)).await?;
        let namespaces: Vec<String> = waves.into_iter().flatten().collect();
        Ok(super::restart::waves_outcome(
            &records,
            &namespaces,
            acted,
            "no drifted workload was left to restart".into(),
        ))
    }
}

/// Gate `workloads-patched`: every pod of the restarted workloads ready, injected by the
/// revision, and none of them behind the image this run set out to reach (`injected`, what
/// find-drift read). A newer patch AKS rolled meanwhile is said, not waited for: the pods
/// cannot get it without another restart (run patch-restart again).
#[async_trait]
impl Gate for WorkloadsPatched {
    async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        let revision: String = ctx.input("revision")?;
        let injected: Option<String> = ctx.input_opt("injected")?;
        let restarted: Vec<Restarted> = ctx.input_opt("workloads")?.unwrap_or_default();
        let wanted: BTreeSet<WorkloadRef> = restarted
            .iter()
            .map(|r| WorkloadRef::new(r.kind, &r.namespace, &r.name))
            .collect();
        let status = workloads_status(&self.0, &wanted, Want::Revision(&revision)).await?;
        let (Some(injected), GateStatus::Passed { .. }) = (injected, &status) else {
            return Ok(status);
        };
        let namespaces: Vec<String> = wanted
            .iter()
            .map(|w| w.namespace.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let target = BTreeMap::from([(revision.clone(), injected.clone())]);
        let drift = drift_against(&self.0.kube, &target, Some(&namespaces))
            .await
            .map_err(|e| k8s_err("reading the proxy images", e))?;
        let behind: Vec<&DriftedWorkload> = drift
            .workloads
            .iter()
            .filter(|d| wanted.contains(&d.workload))
            .collect();
        if !behind.is_empty() {
            return Ok(GateStatus::waiting(format!(
                "{} workload(s) still run an older proxy than {injected}: {}",
                behind.len(),
                super::first_few(
                    behind
                        .iter()
                        .map(|d| format!("{} ({})", d.workload, d.running)),
                    4,
                    "workloads"
                )
            )));
        }
        let now = crate::k8s::patch::injected_images(&self.0.kube, std::slice::from_ref(&revision))
            .await
            .map_err(|e| k8s_err("reading the injector", e))?;
        let newer = now
            .get(&revision)
            .filter(|n| crate::k8s::patch::is_older(&injected, n));
        let mut detail = format!(
            "{} workload(s) ready on {revision} with {injected}",
            wanted.len()
        );
        if let Some(n) = newer {
            detail.push_str(&format!(
                "; AKS rolled {n} meanwhile: run asm-canary patch-restart again to reach it"
            ));
        }
        Ok(GateStatus::Passed {
            detail: Some(detail),
        })
    }
}
