//! Step 5 (restart-workloads, gate workloads-on-revision) and its undo (restart-back).
//!
//! Relabelling or moving a tag changes nothing until pods are recreated: the injector runs
//! at pod admission. The restart is kubectl's (`kubectl.kubernetes.io/restartedAt` by
//! strategic merge patch) and the wait is kubectl's rollout-status rules, by watch.
//!
//! Crash safety: each restart is journaled (with the timestamp it will write) before the
//! patch. A resumed step never patches a workload twice: a done entry means "only wait", an
//! in-flight entry is settled by reading the annotation back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use asm_canary_engine::duration::parse_duration;
use asm_canary_engine::{
    Action, ActionCtx, ActionOutcome, EntryId, Gate, GateCtx, GateStatus, StepError,
};
use async_trait::async_trait;
use chrono::{DateTime, FixedOffset};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::tag::{Mode, mode_of};
use super::{Env, k8s_err, kube_err, outputs};
use crate::istio::REV_LABEL;
use crate::k8s::rollout::{get_workload, restart_timestamp, restart_workload, wait_rollout};
use crate::k8s::{K8sError, Owner, PodInfo, WorkloadKind, WorkloadRef, namespaces_by_label};

const KIND_RESTART: &str = "restart-workload";
const KIND_RESTART_BACK: &str = "restart-back-workload";
const DEFAULT_ROLLOUT_TIMEOUT: Duration = Duration::from_secs(20 * 60);

pub struct RestartWorkloads(pub Arc<Env>);
pub struct RestartBack(pub Arc<Env>);
pub struct WorkloadsOnRevision(pub Arc<Env>);

/// A workload this run restarted, as the step outputs and the journal record it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Restarted {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub restarted_at: Option<String>,
    #[serde(default)]
    pub wave: usize,
}

impl Restarted {
    fn workload(&self) -> WorkloadRef {
        WorkloadRef::new(self.kind, &self.namespace, &self.name)
    }
}

fn journal_target(w: &WorkloadRef) -> String {
    format!("{}/{}/{}", w.kind, w.namespace, w.name)
}

fn rollout_timeout(ctx: &ActionCtx) -> Duration {
    ctx.params
        .get("rollout_timeout")
        .and_then(|v| v.as_str())
        .and_then(|s| parse_duration(s).ok())
        .unwrap_or(DEFAULT_ROLLOUT_TIMEOUT)
}

/// What the namespaces hold that a restart would move to `target`, and what it would not.
#[derive(Debug, Default)]
pub struct MovePlan {
    pub workloads: BTreeSet<WorkloadRef>,
    /// Pods a restart cannot move (bare pods, Job pods, orphan ReplicaSets): warnings.
    pub unmovable: Vec<String>,
}

/// Pods injected by anything but `target` in `namespace`, grouped by their workload.
pub async fn plan_namespace(
    env: &Env,
    namespace: &str,
    target: &str,
) -> Result<MovePlan, StepError> {
    let pods = list_pods(env, namespace).await?;
    let mut plan = MovePlan::default();
    for pod in pods
        .iter()
        .filter(|p| !p.terminating && p.revision.is_injected())
    {
        if pod.revision.revision() == Some(target) {
            continue;
        }
        match &pod.owner {
            Owner::Workload(w) => {
                plan.workloads.insert(w.clone());
            }
            Owner::Job(job) => plan.unmovable.push(format!(
                "{namespace}/{} (Job {job}: a restart does not move it; it moves when the Job runs again)",
                pod.name
            )),
            Owner::None => plan.unmovable.push(format!(
                "{namespace}/{} (bare pod: nothing recreates it; delete and recreate it yourself)",
                pod.name
            )),
            Owner::ReplicaSet(rs) => plan.unmovable.push(format!(
                "{namespace}/{} (ReplicaSet {rs} without a Deployment)",
                pod.name
            )),
            Owner::Other { kind, name } => plan.unmovable.push(format!(
                "{namespace}/{} ({kind} {name}: not restartable by this tool)",
                pod.name
            )),
        }
    }
    Ok(plan)
}

/// What a restart of `namespace` would not move: bare and Job pods, paused Deployments,
/// `OnDelete` StatefulSets and DaemonSets. Preflight warns about these.
pub async fn restart_blockers(env: &Env, namespace: &str) -> Result<Vec<String>, StepError> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    let mut out = Vec::new();
    // Injected pods whatever their revision: anything not owned by a workload stays put.
    for u in plan_namespace(env, namespace, "").await?.unmovable {
        out.push(format!("will not move {u}"));
    }
    let lp = ListParams::default();
    let deploys = Api::<Deployment>::namespaced(env.kube.clone(), namespace)
        .list(&lp)
        .await
        .map_err(|e| kube_err(format!("listing Deployments in {namespace}"), e))?;
    for d in &deploys.items {
        if d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
            out.push(format!(
                "Deployment {namespace}/{} is paused: a restart cannot move it (kubectl rollout resume it first)",
                d.metadata.name.clone().unwrap_or_default()
            ));
        }
    }
    let on_delete = |kind: &str, name: Option<String>| {
        format!(
            "{kind} {namespace}/{} uses updateStrategy OnDelete: its pods move only when deleted",
            name.unwrap_or_default()
        )
    };
    let sts = Api::<StatefulSet>::namespaced(env.kube.clone(), namespace)
        .list(&lp)
        .await
        .map_err(|e| kube_err(format!("listing StatefulSets in {namespace}"), e))?;
    for s in sts.items {
        let t = s
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.type_.clone());
        if t.as_deref() == Some("OnDelete") {
            out.push(on_delete("StatefulSet", s.metadata.name));
        }
    }
    let dss = Api::<DaemonSet>::namespaced(env.kube.clone(), namespace)
        .list(&lp)
        .await
        .map_err(|e| kube_err(format!("listing DaemonSets in {namespace}"), e))?;
    for d in dss.items {
        let t = d
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.type_.clone());
        if t.as_deref() == Some("OnDelete") {
            out.push(on_delete("DaemonSet", d.metadata.name));
        }
    }
    Ok(out)
}

async fn list_pods(env: &Env, namespace: &str) -> Result<Vec<PodInfo>, StepError> {
    let pods = Api::<Pod>::namespaced(env.kube.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| kube_err(format!("listing pods in {namespace}"), e))?;
    Ok(pods.items.iter().map(PodInfo::from_pod).collect())
}

/// The namespaces whose workloads this run migrates.
pub async fn mesh_namespaces(
    env: &Env,
    mode: Mode,
    tag: &str,
    target: &str,
) -> Result<Vec<String>, StepError> {
    let selector = match mode {
        Mode::Tag => format!("{REV_LABEL}={tag}"),
        Mode::Label => format!("{REV_LABEL}={target}"),
    };
    let list = namespaces_by_label(&env.kube, &selector)
        .await
        .map_err(|e| k8s_err("listing the namespaces to migrate", e))?;
    Ok(list.into_iter().filter_map(|n| n.metadata.name).collect())
}

/// Splits namespaces into waves: the canary namespaces first, then the rest.
pub fn waves(namespaces: &[String], canary: &[String]) -> Vec<Vec<String>> {
    let (first, rest): (Vec<String>, Vec<String>) =
        namespaces.iter().cloned().partition(|n| canary.contains(n));
    [first, rest]
        .into_iter()
        .filter(|w| !w.is_empty())
        .collect()
}

#[async_trait]
impl Action for RestartWorkloads {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let env = &self.0;
        let target: String = ctx.input("target")?;
        let mode = mode_of(ctx.input_opt("mode")?)?;
        let tag: String = ctx.input_opt("tag")?.unwrap_or_default();
        let canary: Vec<String> = ctx.input_opt("canary_namespaces")?.unwrap_or_default();
        let parallelism: usize = ctx.input_opt::<usize>("parallelism")?.unwrap_or(4).max(1);
        let namespaces = mesh_namespaces(env, mode, &tag, &target).await?;
        for ns in &canary {
            if !namespaces.contains(ns) {
                ctx.events.warn(format!(
                    "canary namespace {ns} is not among the namespaces being migrated; ignored"
                ));
            }
        }
        let waves = waves(&namespaces, &canary);
        // Workloads this step already restarted (a resumed run): never patch them again.
        let earlier: BTreeMap<String, asm_canary_engine::JournalEntry> = ctx
            .journal
            .step_entries()
            .into_iter()
            .filter(|e| e.kind == KIND_RESTART)
            .map(|e| (e.target.clone(), e))
            .collect();
        let timeout = rollout_timeout(ctx);
        let mut all: Vec<Restarted> = earlier
            .values()
            .filter_map(|e| serde_json::from_value(e.details.clone()).ok())
            .collect();
        let mut acted = false;
        let n_waves = waves.len();
        for (i, wave) in waves.iter().enumerate() {
            let mut plan = MovePlan::default();
            for ns in wave {
                let p = plan_namespace(env, ns, &target).await?;
                plan.workloads.extend(p.workloads);
                plan.unmovable.extend(p.unmovable);
            }
            for u in &plan.unmovable {
                ctx.events.warn(format!("will not move {u}"));
            }
            // Earlier-restarted workloads of this wave still rolling: wait for them too.
            let mut todo: Vec<WorkloadRef> = plan.workloads.into_iter().collect();
            for r in &all {
                if r.wave == i + 1 && !todo.contains(&r.workload()) {
                    todo.push(r.workload());
                }
            }
            let total = todo.len() as u64;
            ctx.events.info(format!(
                "wave {}/{}: {} workload(s) in {}",
                i + 1,
                n_waves,
                total,
                wave.join(", ")
            ));
            let done_count = std::sync::atomic::AtomicU64::new(0);
            let results: Vec<Restarted> = stream::iter(todo.into_iter().map(|w| {
                let earlier = earlier.get(&journal_target(&w)).cloned();
                let done_count = &done_count;
                async move {
                    let r =
                        restart_one(env, ctx, &w, earlier, KIND_RESTART, i + 1, timeout).await?;
                    let n = done_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    ctx.events.progress(
                        format!(
                            "wave {}/{}: {n}/{total} workloads rolled out ({w} done)",
                            i + 1,
                            n_waves
                        ),
                        n,
                        Some(total),
                    );
                    Ok::<_, StepError>(r)
                }
            }))
            .buffer_unordered(parallelism)
            .try_collect()
            .await?;
            acted |= !results.is_empty();
            for r in results {
                if !all.iter().any(|a| a.workload() == r.workload()) {
                    all.push(r);
                }
            }
        }
        all.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let out = outputs([("workloads", json!(all)), ("namespaces", json!(namespaces))]);
        if !acted {
            return Ok(ActionOutcome::already_done(
                out,
                format!("every injected pod in the migrated namespaces already runs {target}"),
            ));
        }
        Ok(ActionOutcome::done(out))
    }
}

/// Restarts `w` once (journaled), then waits for its rollout.
async fn restart_one(
    env: &Env,
    ctx: &ActionCtx,
    w: &WorkloadRef,
    earlier: Option<asm_canary_engine::JournalEntry>,
    kind: &str,
    wave: usize,
    timeout: Duration,
) -> Result<Restarted, StepError> {
    let target = journal_target(w);
    let current = get_workload(&env.kube, w)
        .await
        .map_err(|e| k8s_err(format!("reading {w}"), e))?;
    if current.is_paused() {
        return Err(StepError::msg(format!(
            "{w} is paused: a restart cannot move it (run `kubectl rollout resume` on it, or move it yourself), then resume"
        )));
    }
    if !current.replaces_pods_on_restart() {
        ctx.events.warn(format!(
            "{w} uses updateStrategy OnDelete: the restart is recorded but its pods move only when deleted"
        ));
    }
    let mut record = Restarted {
        kind: w.kind,
        namespace: w.namespace.clone(),
        name: w.name.clone(),
        uid: current.uid().map(str::to_string),
        restarted_at: None,
        wave,
    };
    let min_generation = match earlier {
        Some(e) if e.is_done() => {
            record.restarted_at = e.details["restarted_at"].as_str().map(str::to_string);
            e.result.as_ref().and_then(|r| r["generation"].as_i64())
        }
        Some(e) => {
            // In flight: did the patch land before the crash?
            let stamp = e.details["restarted_at"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if current.restarted_at() == Some(stamp.as_str()) {
                ctx.journal
                    .done(
                        EntryId(e.seq),
                        Some(json!({ "generation": current.generation() })),
                    )
                    .await?;
                record.restarted_at = Some(stamp);
                current.generation()
            } else {
                let (stamp, generation) = patch(env, w).await?;
                ctx.journal
                    .done(
                        EntryId(e.seq),
                        Some(json!({ "generation": generation, "restamped": stamp })),
                    )
                    .await?;
                record.restarted_at = Some(stamp);
                generation
            }
        }
        None => {
            let now = now_local();
            let stamp = restart_timestamp(now);
            record.restarted_at = Some(stamp.clone());
            let details = serde_json::to_value(&record)
                .map_err(|e| StepError::with_source("journaling a restart", e))?;
            let id = ctx.journal.intent(kind, &target, details).await?;
            let (_, generation) = patch_at(env, w, now).await?;
            ctx.journal
                .done(id, Some(json!({ "generation": generation })))
                .await?;
            generation
        }
    };
    let mut last = String::new();
    let mut on_progress = |p: &crate::k8s::RolloutProgress| {
        if p.message != last {
            last = p.message.clone();
            tracing::debug!(workload = %target, "{}", p.message);
        }
    };
    if current.replaces_pods_on_restart() {
        wait_rollout(&env.kube, w, min_generation, timeout, &mut on_progress)
            .await
            .map_err(|e| k8s_err(format!("waiting for the rollout of {w}"), e))?;
    }
    Ok(record)
}

fn now_local() -> DateTime<FixedOffset> {
    chrono::Local::now().fixed_offset()
}

async fn patch(env: &Env, w: &WorkloadRef) -> Result<(String, Option<i64>), StepError> {
    let now = now_local();
    let (stamp, generation) = patch_at(env, w, now).await?;
    Ok((stamp, generation))
}

/// kubectl refuses two restarts in the same second; wait that second out instead of failing.
async fn patch_at(
    env: &Env,
    w: &WorkloadRef,
    mut now: DateTime<FixedOffset>,
) -> Result<(String, Option<i64>), StepError> {
    for _ in 0..3 {
        match restart_workload(&env.kube, w, now).await {
            Ok(out) => return Ok((out.restarted_at, out.generation)),
            Err(K8sError::Refused { message, .. }) if message.contains("past second") => {
                tokio::time::sleep(Duration::from_millis(1100)).await;
                now = now_local();
            }
            Err(e) => return Err(k8s_err(format!("restarting {w}"), e)),
        }
    }
    Err(StepError::msg(format!(
        "restarting {w}: refused three times as 'already triggered'"
    )))
}

#[async_trait]
impl Action for RestartBack {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let env = &self.0;
        let parallelism: usize = ctx.input_opt::<usize>("parallelism")?.unwrap_or(4).max(1);
        let timeout = rollout_timeout(ctx);
        // Exactly the workloads the forward restart touched (done, or in flight: the patch
        // may have landed), once each.
        let mut moved: Vec<Restarted> = Vec::new();
        for e in ctx
            .journal
            .all()
            .into_iter()
            .filter(|e| e.kind == KIND_RESTART)
        {
            if let Ok(r) = serde_json::from_value::<Restarted>(e.details.clone())
                && !moved.iter().any(|m| m.workload() == r.workload())
            {
                moved.push(r);
            }
        }
        if moved.is_empty() {
            return Ok(ActionOutcome::skipped("this run restarted no workload"));
        }
        let earlier: BTreeMap<String, asm_canary_engine::JournalEntry> = ctx
            .journal
            .step_entries()
            .into_iter()
            .filter(|e| e.kind == KIND_RESTART_BACK)
            .map(|e| (e.target.clone(), e))
            .collect();
        let mut namespaces: Vec<String> = moved.iter().map(|m| m.namespace.clone()).collect();
        namespaces.sort();
        namespaces.dedup();
        let tasks: Vec<(WorkloadRef, Option<asm_canary_engine::JournalEntry>)> = moved
            .iter()
            .map(|m| {
                let w = m.workload();
                let e = earlier.get(&journal_target(&w)).cloned();
                (w, e)
            })
            .collect();
        let results: Vec<Restarted> = stream::iter(tasks.into_iter().map(|(w, earlier)| {
            async move {
                // A workload deleted since is nothing to move back.
                match get_workload(&env.kube, &w).await {
                    Err(K8sError::Api {
                        source: kube::Error::Api(s),
                        ..
                    }) if s.code == 404 => {
                        ctx.events
                            .warn(format!("{w} no longer exists; not restarted back"));
                        return Ok(None);
                    }
                    _ => {}
                }
                restart_one(env, ctx, &w, earlier, KIND_RESTART_BACK, 1, timeout)
                    .await
                    .map(Some)
            }
        }))
        .buffer_unordered(parallelism)
        .try_collect::<Vec<Option<Restarted>>>()
        .await?
        .into_iter()
        .flatten()
        .collect();
        Ok(ActionOutcome::done(outputs([
            ("workloads", json!(results)),
            ("namespaces", json!(namespaces)),
        ])))
    }
}

#[derive(Deserialize)]
struct WorkloadKey {
    kind: WorkloadKind,
    namespace: String,
    name: String,
}

#[async_trait]
impl Gate for WorkloadsOnRevision {
    async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        let revision: String = ctx.input("revision")?;
        let workloads: Vec<WorkloadKey> = ctx.input_opt("workloads")?.unwrap_or_default();
        if workloads.is_empty() {
            return Ok(GateStatus::Passed {
                detail: Some("no workload needed moving".into()),
            });
        }
        let wanted: BTreeSet<WorkloadRef> = workloads
            .iter()
            .map(|w| WorkloadRef::new(w.kind, &w.namespace, &w.name))
            .collect();
        let namespaces: BTreeSet<&str> = wanted.iter().map(|w| w.namespace.as_str()).collect();
        let (mut good, mut total) = (0u64, 0u64);
        let mut behind: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for ns in namespaces {
            for pod in list_pods(&self.0, ns).await? {
                let Owner::Workload(w) = &pod.owner else {
                    continue;
                };
                if !wanted.contains(w) || pod.terminating {
                    continue;
                }
                total += 1;
                let on = pod.revision.revision() == Some(revision.as_str());
                if on && pod.ready {
                    good += 1;
                } else {
                    let why = match pod.revision.revision() {
                        Some(r) if r != revision => r.to_string(),
                        Some(_) => "not ready".to_string(),
                        None => "not injected".to_string(),
                    };
                    behind
                        .entry(ns.to_string())
                        .or_default()
                        .push(format!("{}/{} ({why})", ns, pod.name));
                }
            }
        }
        if behind.is_empty() {
            return Ok(GateStatus::Passed {
                detail: Some(format!("{good} pods ready and injected by {revision}")),
            });
        }
        let summary = behind
            .iter()
            .map(|(ns, pods)| {
                format!(
                    "{} pods in {ns} not yet on {revision} ({}{})",
                    pods.len(),
                    pods[0],
                    if pods.len() > 1 { ", …" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        Ok(GateStatus::waiting_progress(summary, good, Some(total)))
    }
}
