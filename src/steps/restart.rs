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
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::tag::{Mode, mode_of};
use super::wave::CanaryChoice;
use super::{Env, k8s_err, outputs};
use crate::istio::REV_LABEL;
use crate::k8s::podbypod::replace_pods_one_by_one;
use crate::k8s::rollout::{
    RolloutProgress, Workload, get_workload, list_workloads, patch_restart, restart_stamp,
    wait_rollout,
};
use crate::k8s::{
    K8sError, Owner, PodInfo, RolloutBoard, WorkloadKind, WorkloadRef, namespaces_by_label,
};

/// One journal entry per wave: every workload and the timestamp it gets, before any patch.
const KIND_WAVE: &str = "restart-wave";
const KIND_BACK_WAVE: &str = "restart-back-wave";
/// A re-restart of stragglers by complete's orphan guard: rolled back like a wave.
const KIND_STRAGGLERS: &str = "restart-stragglers";
/// How many times the orphan guard restarts stragglers again before it halts (as Azure/ARO-Tools
/// `istio-upgrade` does).
pub const STRAGGLER_ROUNDS: usize = 3;
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
    /// `OnDelete`: its pods are deleted one at a time (`--restart-ondelete`), since a rollout
    /// restart does not replace them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pod_by_pod: bool,
}

impl Restarted {
    fn workload(&self) -> WorkloadRef {
        WorkloadRef::new(self.kind, &self.namespace, &self.name)
    }
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
    /// Those of `workloads` with pods that have no sidecar at all (their namespace was
    /// labelled after they started): the restart injects them, as the label asks.
    pub uninjected: BTreeSet<WorkloadRef>,
    /// Pods a restart cannot move (bare pods, Job pods, orphan ReplicaSets): warnings.
    pub unmovable: Vec<String>,
}

/// Pods injected by anything but `target` in `namespace`, grouped by their workload.
pub async fn plan_namespace(
    env: &Env,
    namespace: &str,
    target: &str,
) -> Result<MovePlan, StepError> {
    let pods: Vec<PodInfo> = crate::k8s::pods::list_pods(&env.kube, Some(namespace), None)
        .await
        .map_err(|e| k8s_err(format!("listing pods in {namespace}"), e))?;
    Ok(plan_pods(namespace, &pods, target))
}

/// [`plan_namespace`] for many namespaces, read concurrently.
pub async fn plan_namespaces(
    env: &Env,
    namespaces: &[String],
    target: &str,
) -> Result<MovePlan, StepError> {
    let mut plan = MovePlan::default();
    for (ns, pods) in pods_of_namespaces(env, namespaces.to_vec()).await? {
        let p = plan_pods(&ns, &pods, target);
        plan.workloads.extend(p.workloads);
        plan.uninjected.extend(p.uninjected);
        plan.unmovable.extend(p.unmovable);
    }
    Ok(plan)
}

/// The pods of a meshed namespace that are not on `target`: injected by another revision, or
/// not injected at all although their namespace's label asks for it (a namespace labelled
/// after its pods started; pods that opt out of injection are left alone).
fn plan_pods(namespace: &str, pods: &[PodInfo], target: &str) -> MovePlan {
    let mut plan = MovePlan::default();
    for pod in pods
        .iter()
        .filter(|p| !p.terminating && (p.revision.is_injected() || !p.opted_out))
    {
        if pod.revision.revision() == Some(target) {
            continue;
        }
        match &pod.owner {
            Owner::Workload(w) => {
                plan.workloads.insert(w.clone());
                if !pod.revision.is_injected() {
                    plan.uninjected.insert(w.clone());
                }
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
    plan
}

/// What a restart of `namespaces` would not move, by namespace: bare and Job pods, paused
/// Deployments, `OnDelete` StatefulSets and DaemonSets. Preflight warns about these. The pods
/// are read as [`pods_of_namespaces`] reads them; the workloads as one paged list per kind.
pub async fn restart_blockers(
    env: &Env,
    namespaces: &[String],
) -> Result<std::collections::BTreeMap<String, Vec<String>>, StepError> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = namespaces
        .iter()
        .map(|ns| (ns.clone(), Vec::new()))
        .collect();
    if namespaces.is_empty() {
        return Ok(out);
    }
    // Pods whatever their revision (or none): anything not owned by a workload stays put.
    for (ns, pods) in pods_of_namespaces(env, namespaces.to_vec()).await? {
        let unmovable = plan_pods(&ns, &pods, "").unmovable;
        if let Some(list) = out.get_mut(&ns) {
            list.extend(unmovable.into_iter().map(|u| format!("will not move {u}")));
        }
    }
    for kind in [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
    ] {
        let listed = list_workloads(&env.kube, kind)
            .await
            .map_err(|e| k8s_err(format!("listing {kind}s"), e))?;
        for w in listed {
            let r = w.reference();
            let Some(list) = out.get_mut(&r.namespace) else {
                continue;
            };
            if w.is_paused() {
                list.push(format!(
                    "Deployment {}/{} is paused: a restart cannot move it (kubectl rollout resume it first)",
                    r.namespace, r.name
                ));
            } else if !w.replaces_pods_on_restart() {
                list.push(format!(
                    "{kind} {}/{} uses updateStrategy OnDelete: its pods move only when deleted",
                    r.namespace, r.name
                ));
            }
        }
    }
    Ok(out)
}

/// The pods of each namespace, as [`crate::k8s::pods::pods_of_namespaces`] reads them.
async fn pods_of_namespaces(
    env: &Env,
    namespaces: Vec<String>,
) -> Result<Vec<(String, Vec<PodInfo>)>, StepError> {
    crate::k8s::pods::pods_of_namespaces(&env.kube, namespaces)
        .await
        .map_err(|e| k8s_err("listing pods", e))
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

/// Each namespace with what a restart would move there, read as [`pods_of_namespaces`] reads
/// them (one list for many namespaces), in the namespaces' order.
pub async fn plan_each(
    env: &Env,
    namespaces: &[String],
    target: &str,
) -> Result<Vec<(String, MovePlan)>, StepError> {
    Ok(pods_of_namespaces(env, namespaces.to_vec())
        .await?
        .into_iter()
        .map(|(ns, pods)| {
            let p = plan_pods(&ns, &pods, target);
            (ns, p)
        })
        .collect())
}

/// The label the namespaces to migrate carry before the run: the tag, or (label mode) the
/// source revision itself.
pub fn label_before(mode: Mode, tag: &str, source: &str) -> String {
    match mode {
        Mode::Tag => tag.to_string(),
        Mode::Label => source.to_string(),
    }
}

/// The namespaces labelled [`super::wave::CANARY_LABEL`]`=true`: the team's own canaries.
pub async fn marked_canaries(env: &Env) -> Result<Vec<String>, StepError> {
    let selector = format!("{}=true", super::wave::CANARY_LABEL);
    let list = namespaces_by_label(&env.kube, &selector)
        .await
        .map_err(|e| k8s_err("listing the namespaces marked as canaries", e))?;
    Ok(list.into_iter().filter_map(|n| n.metadata.name).collect())
}

/// The canary (given, labelled, or the default) among the namespaces labelled `label`, with
/// each namespace's workload count (sorted by name): what the canary step and the plan decide.
pub async fn decide_canary(
    env: &Env,
    label: &str,
    target: &str,
    requested: &[String],
) -> Result<(Vec<String>, CanaryChoice, Vec<(String, usize)>), StepError> {
    let mut nss = mesh_namespaces(env, Mode::Tag, label, target).await?;
    nss.sort();
    let counts: Vec<(String, usize)> = plan_each(env, &nss, target)
        .await?
        .into_iter()
        .map(|(ns, p)| (ns, p.workloads.len()))
        .collect();
    let marked = marked_canaries(env).await?;
    let (canary, choice) = super::wave::choose_canary(requested, &marked, &counts);
    Ok((canary, choice, counts))
}

/// What is wrong with requested canary namespaces that the run would not migrate (a typo, or
/// a namespace on another revision: not labelled `istio.io/rev=<label>`), if anything. A new
/// run refuses them; the plan warns.
pub async fn unknown_canaries(
    env: &Env,
    label: &str,
    requested: &[String],
) -> Result<Option<String>, StepError> {
    if requested.is_empty() {
        return Ok(None);
    }
    let nss = mesh_namespaces(env, Mode::Tag, label, "").await?;
    Ok(unknown_canaries_among(&nss, label, requested))
}

/// [`unknown_canaries`], given the namespaces the run migrates (`nss`).
pub fn unknown_canaries_among(nss: &[String], label: &str, requested: &[String]) -> Option<String> {
    let unknown: Vec<&str> = requested
        .iter()
        .filter(|r| !nss.contains(r))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        return None;
    }
    let mut nss = nss.to_vec();
    nss.sort();
    let these = match nss.is_empty() {
        true => "none".to_string(),
        false => super::first_few(&nss, 8, "namespaces"),
    };
    Some(format!(
        "--canary-namespaces {}: not a namespace this run migrates (it migrates the namespaces labelled {REV_LABEL}={label}: {these})",
        unknown.join(","),
    ))
}

/// What every wave step reads first: the revisions, the injection mode, and the label the
/// namespaces to migrate carry before the run.
struct WaveInputs {
    target: String,
    source: String,
    mode: Mode,
    label: String,
}

impl WaveInputs {
    fn read(ctx: &ActionCtx) -> Result<Self, StepError> {
        let source: String = ctx.input("source")?;
        let mode = mode_of(ctx.input_opt("mode")?)?;
        let tag: String = ctx.input_opt("tag")?.unwrap_or_default();
        Ok(Self {
            target: ctx.input("target")?,
            label: label_before(mode, &tag, &source),
            source,
            mode,
        })
    }
}

/// The canary wave (step `canary`): its namespaces are relabelled `istio.io/rev=<target>`
/// directly (the tag still names the source, so nothing else gets the new proxy), their
/// workloads restarted, then the wave's gate. One journal entry for the relabel (which also
/// fixes the canary set for a resumed step), one for the restart.
pub struct CanaryWave(pub Arc<Env>);

#[async_trait]
impl Action for CanaryWave {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let env = &self.0;
        let WaveInputs { target, label, .. } = WaveInputs::read(ctx)?;
        let requested: Vec<String> = ctx.input_opt("canary_namespaces")?.unwrap_or_default();
        let journaled = ctx
            .journal
            .step_entries()
            .into_iter()
            .find(|e| e.kind == super::tag::KIND_RELABEL_SET && e.target == "canary");
        let canary: Vec<String> = match &journaled {
            Some(e) => serde_json::from_value(e.details["namespaces"].clone())
                .map_err(|e| StepError::with_source("reading the canary from the journal", e))?,
            None => {
                let (canary, choice, counts) =
                    decide_canary(env, &label, &target, &requested).await?;
                for ns in requested
                    .iter()
                    .filter(|r| !counts.iter().any(|(n, _)| n == *r))
                {
                    ctx.events.warn(format!(
                        "canary namespace {ns} is not among the namespaces being migrated (labelled {REV_LABEL}={label}); ignored"
                    ));
                }
                if let (Some(why), false) = (choice.why(), canary.is_empty()) {
                    ctx.events
                        .info(format!("canary: {} ({why})", canary.join(", ")));
                }
                canary
            }
        };
        let out = |records: &[Restarted]| {
            outputs([("namespaces", json!(canary)), ("workloads", json!(records))])
        };
        if canary.is_empty() {
            return Ok(ActionOutcome::already_done(
                out(&[]),
                format!("no namespace labelled {REV_LABEL}={label} has a workload to move"),
            ));
        }
        super::tag::relabel_set(
            env,
            ctx,
            "canary",
            &canary,
            &label,
            &target,
            Default::default(),
        )
        .await?;
        let spec = WaveSpec::of(ctx, &target)?;
        let (records, acted) = restart_wave(
            env,
            ctx,
            &spec,
            1,
            "canary",
            WaveSet::off_target(&canary),
            None,
        )
        .await?;
        if !acted {
            return Ok(ActionOutcome::already_done(
                out(&records),
                format!("every injected pod of the canary already runs {target}"),
            ));
        }
        Ok(ActionOutcome::done(out(&records)))
    }
}

/// Step `promote`: the canary has passed; with `promote_approval`, the approval before the
/// tag moves is asked at this step (`--approve promote`). Changes nothing itself.
pub struct Promote;

#[async_trait]
impl Action for Promote {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let canary: Vec<String> = ctx.input_opt("canary")?.unwrap_or_default();
        ctx.events.info(format!(
            "the canary ({}) passed its gate: promoting",
            super::first_few(&canary, 8, "namespaces")
        ));
        Ok(ActionOutcome::done(outputs([("canary", json!(canary))])))
    }
}

/// How a wave restarts: the same for the canary and every later wave.
pub(super) struct WaveSpec {
    target: String,
    parallelism: serde_json::Value,
    pod_by_pod: bool,
    timeout: Duration,
}

impl WaveSpec {
    pub(super) fn of(ctx: &ActionCtx, target: &str) -> Result<WaveSpec, StepError> {
        Ok(WaveSpec {
            target: target.to_string(),
            parallelism: ctx
                .input_opt::<serde_json::Value>("parallelism")?
                .unwrap_or(json!(4)),
            pod_by_pod: ctx.input_opt("restart_ondelete")?.unwrap_or(false),
            timeout: rollout_timeout(ctx),
        })
    }
}

/// What a wave restarts: the workloads of `namespaces` not yet on the target, or (`only`)
/// exactly those of these workloads that live in `namespaces` (a patch restart's drifted ones).
#[derive(Clone, Copy)]
pub(super) struct WaveSet<'a> {
    pub namespaces: &'a [String],
    pub only: Option<&'a [WorkloadRef]>,
}

impl<'a> WaveSet<'a> {
    pub(super) fn off_target(namespaces: &'a [String]) -> Self {
        Self {
            namespaces,
            only: None,
        }
    }
}

/// Restarts the workloads of a wave's set not yet on the target as wave `wave` (journaled
/// once, before its first patch; `plan` rides along in that entry), waits for every rollout,
/// then the gate after the wave ([`super::wave::gate_wave`]). A resumed step restarts only
/// what the wave's entry lists, and skips the gate of a wave a later wave followed (it passed).
pub(super) async fn restart_wave(
    env: &Env,
    ctx: &ActionCtx,
    spec: &WaveSpec,
    wave: usize,
    label: &str,
    set: WaveSet<'_>,
    plan: Option<&serde_json::Value>,
) -> Result<(Vec<Restarted>, bool), StepError> {
    let namespaces = set.namespaces;
    let entries = ctx.journal.step_entries();
    let later_started = entries.iter().any(|e| {
        e.details["wave"]
            .as_u64()
            .is_some_and(|w| w as usize > wave)
    });
    let earlier = entries
        .into_iter()
        .rev()
        .find(|e| e.kind == KIND_WAVE && e.target == wave_target(wave));
    let (entry, records) = match earlier {
        Some(e) => {
            let records = wave_records(&e.details)?;
            (Some(e), records)
        }
        None => {
            let todo: Vec<WorkloadRef> = match set.only {
                Some(only) => only
                    .iter()
                    .filter(|w| namespaces.contains(&w.namespace))
                    .cloned()
                    .collect(),
                None => {
                    let plan = plan_namespaces(env, namespaces, &spec.target).await?;
                    for u in &plan.unmovable {
                        ctx.events.warn(format!("will not move {u}"));
                    }
                    if !plan.uninjected.is_empty() {
                        ctx.events.info(uninjected_line(&plan.uninjected));
                    }
                    plan.workloads.into_iter().collect()
                }
            };
            (None, prepare(env, ctx, &todo, wave, spec.pod_by_pod).await?)
        }
    };
    let parallelism = super::wave::parallelism_for(&spec.parallelism, records.len());
    ctx.events.info(format!(
        "{label}: {} workload(s) in {}, {parallelism} at once",
        records.len(),
        super::first_few(namespaces, 8, "namespaces")
    ));
    if records.is_empty() {
        return Ok((records, false));
    }
    run_wave(
        env,
        ctx,
        entry,
        WaveRun {
            kind: KIND_WAVE,
            parallelism,
            timeout: spec.timeout,
            label,
            revision: &spec.target,
            plan,
        },
        &records,
    )
    .await?;
    if !later_started {
        let scope = super::wave::WaveScope {
            label: label.to_string(),
            revision: spec.target.clone(),
            namespaces: namespaces.to_vec(),
            workloads: records.iter().map(Restarted::workload).collect(),
            restarted_at: records.iter().filter_map(|r| r.restarted_at.clone()).min(),
        };
        super::wave::gate_wave(env, ctx, &scope).await?;
    }
    Ok((records, true))
}

/// The waves after the canary, as journaled by the step's first entry, else decided now:
/// the namespaces still labelled as before the run (the canary's are not), in name order,
/// grown from the canary's size.
async fn later_waves(
    env: &Env,
    ctx: &ActionCtx,
    label: &str,
    target: &str,
    canary: &[String],
    canary_size: usize,
) -> Result<(Vec<Vec<String>>, bool), StepError> {
    if let Some(waves) = journaled_waves(ctx)? {
        return Ok((waves, true));
    }
    let growth = super::wave::Growth::of_input(ctx.input_opt("waves")?)?;
    let mut nss = mesh_namespaces(env, Mode::Tag, label, target).await?;
    nss.retain(|n| !canary.contains(n));
    nss.sort();
    let counts: Vec<(String, usize)> = plan_each(env, &nss, target)
        .await?
        .into_iter()
        .map(|(ns, p)| (ns, p.workloads.len()))
        .collect();
    Ok((
        super::wave::grow_waves(&counts, canary_size, &growth),
        false,
    ))
}

/// The wave plan this step journaled with its first wave, if any.
pub(super) fn journaled_waves(ctx: &ActionCtx) -> Result<Option<Vec<Vec<String>>>, StepError> {
    match ctx
        .journal
        .step_entries()
        .iter()
        .find_map(|e| e.details.get("plan").cloned())
    {
        Some(plan) => serde_json::from_value(plan)
            .map(Some)
            .map_err(|e| StepError::with_source("reading the wave plan from the journal", e)),
        None => Ok(None),
    }
}

/// The outcome of a step that restarted `records` in waves over `namespaces`: its outputs
/// (`workloads`, `namespaces`), done, or already done (`nothing`: why) when nothing moved.
pub(super) fn waves_outcome(
    records: &[Restarted],
    namespaces: &[String],
    acted: bool,
    nothing: String,
) -> ActionOutcome {
    let out = outputs([
        ("workloads", json!(records)),
        ("namespaces", json!(namespaces)),
    ]);
    if acted {
        ActionOutcome::done(out)
    } else {
        ActionOutcome::already_done(out, nothing)
    }
}

/// Restarts `waves` in order onto the spec's target (wave 1 first and smallest), each gated
/// by [`restart_wave`]; the plan rides along in the first journaled entry so that a resumed
/// step restarts the same waves. `only`: exactly these workloads. What was restarted, and
/// whether anything was.
pub(super) async fn restart_in_waves(
    env: &Env,
    ctx: &ActionCtx,
    spec: &WaveSpec,
    waves: &[Vec<String>],
    only: Option<&[WorkloadRef]>,
) -> Result<(Vec<Restarted>, bool), StepError> {
    let plan_json = json!(waves);
    let mut plan_saved = journaled_waves(ctx)?.is_some();
    let mut all = Vec::new();
    let mut acted = false;
    for (i, nss) in waves.iter().enumerate() {
        let label = format!("wave {}/{}", i + 1, waves.len());
        let plan = (!plan_saved).then_some(&plan_json);
        let set = WaveSet {
            namespaces: nss,
            only,
        };
        let (records, moved) = restart_wave(env, ctx, spec, i + 1, &label, set, plan).await?;
        plan_saved |= moved;
        acted |= moved;
        all.extend(records);
    }
    all.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok((all, acted))
}

#[async_trait]
impl Action for RestartWorkloads {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let env = &self.0;
        let WaveInputs {
            target,
            source,
            mode,
            label,
        } = WaveInputs::read(ctx)?;
        let canary: Vec<String> = ctx.input_opt("canary")?.unwrap_or_default();
        let canary_records: Vec<Restarted> = ctx.input_opt("canary_workloads")?.unwrap_or_default();
        let (waves, journaled) = later_waves(
            env,
            ctx,
            &label,
            &target,
            &canary,
            canary_records.len().max(1),
        )
        .await?;
        let spec = WaveSpec::of(ctx, &target)?;
        let plan_json = json!(waves);
        let mut plan_saved = journaled;
        let total = waves.len() + 1;
        let mut all: Vec<Restarted> = canary_records;
        let mut acted = false;
        for (i, nss) in waves.iter().enumerate() {
            let wave = i + 2;
            let label_text = format!("wave {wave}/{total}");
            let plan = (!plan_saved).then_some(&plan_json);
            if mode == Mode::Label && !nss.is_empty() {
                let mut extra = serde_json::Map::new();
                extra.insert("wave".into(), json!(wave));
                if let Some(p) = plan {
                    extra.insert("plan".into(), p.clone());
                }
                super::tag::relabel_set(env, ctx, &wave_target(wave), nss, &source, &target, extra)
                    .await?;
                plan_saved = true;
            }
            let plan = (!plan_saved).then_some(&plan_json);
            let (records, moved) = restart_wave(
                env,
                ctx,
                &spec,
                wave,
                &label_text,
                WaveSet::off_target(nss),
                plan,
            )
            .await?;
            plan_saved |= moved;
            acted |= moved;
            all.extend(records);
        }
        if mode == Mode::Tag && !canary.is_empty() {
            // The tag now names the target: the canary namespaces take the tag label back
            // (no restart: their pods already run the target).
            super::tag::relabel_set(
                env,
                ctx,
                "canary-back",
                &canary,
                &target,
                &label, // in tag mode, the tag
                Default::default(),
            )
            .await?;
        }
        all.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut namespaces: Vec<String> = canary.clone();
        namespaces.extend(waves.into_iter().flatten());
        namespaces.sort();
        namespaces.dedup();
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

/// Names the workloads restarted to get the sidecar their namespace's label asks for.
pub fn uninjected_line(workloads: &BTreeSet<WorkloadRef>) -> String {
    format!(
        "{} workload(s) have pods without a sidecar although their namespace is labelled for injection (labelled after they started): restarted so that they get one: {}",
        workloads.len(),
        super::first_few(workloads.iter().map(|w| w.to_string()), 8, "workloads")
    )
}

fn wave_target(wave: usize) -> String {
    format!("wave-{wave}")
}

fn wave_records(details: &serde_json::Value) -> Result<Vec<Restarted>, StepError> {
    serde_json::from_value(details["workloads"].clone())
        .map_err(|e| StepError::with_source("reading a restart wave from the journal", e))
}

/// Reads each workload (concurrently) and decides its restart: refuses paused Deployments,
/// and `OnDelete` workloads unless `pod_by_pod` (then their pods are deleted one at a time),
/// and picks the timestamp that will be journaled, then written.
async fn prepare(
    env: &Env,
    ctx: &ActionCtx,
    todo: &[WorkloadRef],
    wave: usize,
    pod_by_pod: bool,
) -> Result<Vec<Restarted>, StepError> {
    let mut current = crate::k8s::rollout::read_workloads(&env.kube, todo)
        .await
        .map_err(|e| k8s_err("reading the wave's workloads", e))?;
    let read: Vec<Option<(WorkloadRef, Workload)>> = todo
        .iter()
        .map(|w| match current.remove(w) {
            Some(c) => Some((w.clone(), c)),
            None => {
                ctx.events
                    .warn(format!("{w} no longer exists; not restarted"));
                None
            }
        })
        .collect();
    let now = now_local();
    let mut records = Vec::with_capacity(read.len());
    for (w, current) in read.into_iter().flatten() {
        let Some(stamp) = restart_stamp(&current, now) else {
            return Err(StepError::msg(format!(
                "{w} is paused: a restart cannot move it (run `kubectl rollout resume` on it, or move it yourself), then resume"
            )));
        };
        let on_delete = !current.replaces_pods_on_restart();
        if on_delete && !pod_by_pod {
            return Err(StepError::msg(format!(
                "{w} uses updateStrategy OnDelete: a rollout restart does not replace its pods, so they would never move; run with --restart-ondelete to delete them one at a time, or switch it to RollingUpdate"
            )));
        }
        if on_delete {
            ctx.events.info(format!(
                "{w} uses updateStrategy OnDelete: its pods are deleted one at a time, each replacement ready before the next"
            ));
        }
        records.push(Restarted {
            kind: w.kind,
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            uid: current.uid().map(str::to_string),
            restarted_at: Some(stamp),
            wave,
            pod_by_pod: on_delete,
        });
    }
    Ok(records)
}

/// How [`run_wave`] restarts: the journal kind, how many at once, the rollout timeout, the
/// progress label, the revision pods move to, and the wave plan to journal with the entry.
struct WaveRun<'a> {
    kind: &'a str,
    parallelism: usize,
    timeout: Duration,
    label: &'a str,
    revision: &'a str,
    plan: Option<&'a serde_json::Value>,
}

/// Restarts a wave: one journal entry for all of it (before any patch), then each workload
/// patched and waited for with bounded parallelism, then the entry marked done. On resume
/// with the entry in flight, a workload whose annotation already carries its journaled
/// timestamp is not patched again, only waited for.
async fn run_wave(
    env: &Env,
    ctx: &ActionCtx,
    entry: Option<asm_canary_engine::JournalEntry>,
    how: WaveRun<'_>,
    records: &[Restarted],
) -> Result<(), StepError> {
    let WaveRun {
        kind,
        parallelism,
        timeout,
        label,
        revision,
        plan,
    } = how;
    let wave = records.first().map(|r| r.wave).unwrap_or(1);
    let fresh = entry.is_none();
    let (id, done) = match entry {
        Some(e) => (EntryId(e.seq), e.is_done()),
        None => {
            let mut details = json!({ "wave": wave, "workloads": records });
            if let Some(plan) = plan {
                details["plan"] = plan.clone();
            }
            let id = ctx
                .journal
                .intent(kind, &wave_target(wave), details)
                .await?;
            (id, false)
        }
    };
    let total = records.len() as u64;
    let finished = std::sync::atomic::AtomicU64::new(0);
    let waits = Rollouts::for_wave(&env.kube, records, &ctx.events);
    let requests = tokio::sync::Semaphore::new(REQUESTS_IN_FLIGHT);
    let tasks: Vec<_> = records
        .iter()
        .map(|r| {
            let (finished, waits, requests) = (&finished, &waits, &requests);
            async move {
                let w = r.workload();
                let stamp = r.restarted_at.clone().unwrap_or_default();
                let permit = requests.acquire().await.expect("never closed");
                let Some((generation, replaces_pods)) =
                    patch_once(env, ctx, &w, &stamp, done, fresh).await?
                else {
                    return Ok(());
                };
                drop(permit);
                if replaces_pods {
                    waits
                        .wait(&w, generation, timeout)
                        .await
                        .map_err(|e| k8s_err(format!("waiting for the rollout of {w}"), e))?;
                } else if r.pod_by_pod {
                    replace_pods_one_by_one(&env.kube, &w, revision, timeout, &mut |pod| {
                        ctx.events
                            .info(format!("{label}: {w}: pod {pod} replaced on {revision}"))
                    })
                    .await
                    .map_err(|e| k8s_err(format!("restarting the pods of {w} one by one"), e))?;
                }
                let n = finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                ctx.events.progress(
                    format!("{label}: {n}/{total} workloads rolled out ({w} done)"),
                    n,
                    Some(total),
                );
                Ok::<_, StepError>(())
            }
        })
        .collect();
    stream::iter(tasks)
        .buffer_unordered(parallelism)
        .try_collect::<Vec<()>>()
        .await?;
    if !done {
        ctx.journal.done(id, None).await?;
    }
    Ok(())
}

/// Restart patches (and reads) of a wave in flight at once, whatever its parallelism: each
/// takes milliseconds, and a thousand at once would open a thousand connections.
const REQUESTS_IN_FLIGHT: usize = 32;

/// Patches `w` with its journaled `stamp` and returns the generation to wait for and whether
/// the restart replaces pods; `None` when it no longer exists. A wave just prepared was read
/// a moment ago (`fresh`): patch at once. A resumed one is read first, to tell a patch that
/// landed from one that did not (`landed`: the journal says the whole wave was patched).
async fn patch_once(
    env: &Env,
    ctx: &ActionCtx,
    w: &WorkloadRef,
    stamp: &str,
    landed: bool,
    fresh: bool,
) -> Result<Option<(Option<i64>, bool)>, StepError> {
    if fresh {
        let out = patch_restart(&env.kube, w, stamp)
            .await
            .map_err(|e| k8s_err(format!("restarting {w}"), e))?;
        return Ok(Some((out.generation, out.replaces_pods)));
    }
    let current = match get_workload(&env.kube, w).await {
        Ok(c) => c,
        Err(K8sError::Api {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 404 => {
            ctx.events.warn(format!("{w} no longer exists; skipped"));
            return Ok(None);
        }
        Err(e) => return Err(k8s_err(format!("reading {w}"), e)),
    };
    let generation = if landed || current.restarted_at() == Some(stamp) {
        current.generation()
    } else {
        patch_restart(&env.kube, w, stamp)
            .await
            .map_err(|e| k8s_err(format!("restarting {w}"), e))?
            .generation
    };
    Ok(Some((generation, current.replaces_pods_on_restart())))
}

/// Waves that wait for more workloads than this share one watch per kind
/// ([`RolloutBoard`]); smaller ones open a watch per workload.
pub const SHARED_WATCH_ABOVE: usize = 16;

/// How a wave waits for its rollouts: a watch each for a few workloads, one shared watch
/// per kind ([`RolloutBoard`]) for more (a thousand watch connections held at once cost
/// memory on both ends and a list and a watch request per workload). The board says in the
/// events when it falls back to a watch each (a cluster-wide watch refused or failing).
enum Rollouts<'a> {
    Each(&'a kube::Client),
    Board(RolloutBoard),
}

impl<'a> Rollouts<'a> {
    fn for_wave(
        client: &'a kube::Client,
        records: &[Restarted],
        events: &asm_canary_engine::Emitter,
    ) -> Self {
        let followed: Vec<WorkloadRef> = records
            .iter()
            .filter(|r| !r.pod_by_pod)
            .map(Restarted::workload)
            .collect();
        if followed.len() > SHARED_WATCH_ABOVE {
            let events = events.clone();
            let notice = Box::new(move |_: WorkloadKind, why: &str| events.warn(why));
            Rollouts::Board(RolloutBoard::follow_noting(client, followed, notice))
        } else {
            Rollouts::Each(client)
        }
    }

    async fn wait(
        &self,
        w: &WorkloadRef,
        generation: Option<i64>,
        timeout: Duration,
    ) -> Result<RolloutProgress, K8sError> {
        match self {
            Rollouts::Each(client) => {
                wait_rollout(client, w, generation, timeout, &mut |_| {}).await
            }
            Rollouts::Board(board) => board.wait(w, generation, timeout).await,
        }
    }
}

fn now_local() -> DateTime<FixedOffset> {
    chrono::Local::now().fixed_offset()
}

#[async_trait]
impl Action for RestartBack {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let env = &self.0;
        let parallelism: serde_json::Value = ctx.input_opt("parallelism")?.unwrap_or(json!(4));
        let source: String = ctx.input("source")?;
        // Exactly the workloads the forward restart journaled (done, or in flight: the patch
        // may have landed), once each.
        let mut moved: Vec<WorkloadRef> = Vec::new();
        for e in ctx
            .journal
            .all()
            .into_iter()
            .filter(|e| e.kind == KIND_WAVE || e.kind == KIND_STRAGGLERS)
        {
            for r in wave_records(&e.details)? {
                if !moved.contains(&r.workload()) {
                    moved.push(r.workload());
                }
            }
        }
        // A canary this run adopted is wholly its own: whatever runs on it goes back too.
        if let Some(a) = super::adoption::adoption(&ctx.journal.all()) {
            for w in super::adoption::workloads_on(env, &a.newer).await? {
                if !moved.contains(&w) {
                    moved.push(w);
                }
            }
        }
        if moved.is_empty() {
            return Ok(ActionOutcome::skipped("this run restarted no workload"));
        }
        let mut namespaces: Vec<String> = moved.iter().map(|m| m.namespace.clone()).collect();
        namespaces.sort();
        namespaces.dedup();
        let records = restart_onto(env, ctx, KIND_BACK_WAVE, &moved, &parallelism, &source).await?;
        Ok(ActionOutcome::done(outputs([
            ("workloads", json!(records)),
            ("namespaces", json!(namespaces)),
        ])))
    }
}

/// Restarts `todo` onto `revision` as one wave journaled under `kind` (what goes pod by pod
/// goes back the same way); a wave of this step left by a crash is finished instead. The
/// workloads restarted.
pub(super) async fn restart_onto(
    env: &Env,
    ctx: &ActionCtx,
    kind: &str,
    todo: &[WorkloadRef],
    parallelism: &serde_json::Value,
    revision: &str,
) -> Result<Vec<Restarted>, StepError> {
    let earlier = ctx
        .journal
        .step_entries()
        .into_iter()
        .rev()
        .find(|e| e.kind == kind);
    let records = match &earlier {
        Some(e) => wave_records(&e.details)?,
        // Workloads deleted since are nothing to move back: `prepare` skips them.
        None => prepare(env, ctx, todo, 1, true).await?,
    };
    if records.is_empty() {
        return Ok(records);
    }
    run_wave(
        env,
        ctx,
        earlier,
        WaveRun {
            kind,
            parallelism: super::wave::parallelism_for(parallelism, records.len()),
            timeout: rollout_timeout(ctx),
            label: "restart back",
            revision,
            plan: None,
        },
        &records,
    )
    .await?;
    Ok(records)
}

/// Complete's orphan guard, before it refuses: workloads in the migrated `namespaces` that
/// still have pods on `source` (a pod recreated from an old template, a late scale-up) are
/// restarted again, up to [`STRAGGLER_ROUNDS`] times, each round journaled before its patches
/// like a wave. A round left in flight by a crash is finished first. Paused and `OnDelete`
/// workloads are left to the guard, which names their pods.
pub async fn restart_stragglers(
    env: &Env,
    ctx: &ActionCtx,
    namespaces: &[String],
    source: &str,
    target: &str,
) -> Result<(), StepError> {
    let earlier: Vec<_> = ctx
        .journal
        .step_entries()
        .into_iter()
        .filter(|e| e.kind == KIND_STRAGGLERS)
        .collect();
    let mut wave = earlier.len();
    let timeout = rollout_timeout(ctx);
    let mut rounds = 0;
    if let Some(e) = earlier.into_iter().last().filter(|e| !e.is_done()) {
        let records = wave_records(&e.details)?;
        let label = format!("stragglers, round {}", e.details["wave"]);
        run_wave(
            env,
            ctx,
            Some(e),
            stragglers_run(timeout, &label, target),
            &records,
        )
        .await?;
        rounds += 1;
    }
    while rounds < STRAGGLER_ROUNDS {
        let todo = stragglers(env, namespaces, source).await?;
        if todo.is_empty() {
            return Ok(());
        }
        rounds += 1;
        wave += 1;
        ctx.events.info(format!(
            "orphan guard: {} workload(s) still have pods on {source}: restarting them again (round {rounds}/{STRAGGLER_ROUNDS}): {}",
            todo.len(),
            super::first_few(&todo, 8, "workloads")
        ));
        let records = prepare(env, ctx, &todo, wave, false).await?;
        let label = format!("stragglers, round {rounds}/{STRAGGLER_ROUNDS}");
        run_wave(
            env,
            ctx,
            None,
            stragglers_run(timeout, &label, target),
            &records,
        )
        .await?;
    }
    Ok(())
}

fn stragglers_run<'a>(timeout: Duration, label: &'a str, target: &'a str) -> WaveRun<'a> {
    WaveRun {
        kind: KIND_STRAGGLERS,
        parallelism: 4,
        timeout,
        label,
        revision: target,
        plan: None,
    }
}

/// Workloads in `namespaces` with pods injected by `source` that a rollout restart replaces.
async fn stragglers(
    env: &Env,
    namespaces: &[String],
    source: &str,
) -> Result<Vec<WorkloadRef>, StepError> {
    let mut found = BTreeSet::new();
    for (_, pods) in pods_of_namespaces(env, namespaces.to_vec()).await? {
        for pod in pods.iter().filter(|p| !p.terminating) {
            if let (Owner::Workload(w), Some(r)) = (&pod.owner, pod.revision.revision())
                && r == source
            {
                found.insert(w.clone());
            }
        }
    }
    let mut out = Vec::new();
    for w in found {
        match get_workload(&env.kube, &w).await {
            Ok(c) if !c.is_paused() && c.replaces_pods_on_restart() => out.push(w),
            Ok(_) => {}
            Err(K8sError::Api {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 404 => {}
            Err(e) => return Err(k8s_err(format!("reading {w}"), e)),
        }
    }
    Ok(out)
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
        workloads_status(
            &self.0,
            &workloads_of(&workloads),
            Want::Revision(&revision),
        )
        .await
    }
}

/// Gate `workloads-without-sidecar`: every pod of `workloads` ready and without a sidecar (an
/// onboarding rolled back).
pub struct WorkloadsWithoutSidecar(pub Arc<Env>);

#[async_trait]
impl Gate for WorkloadsWithoutSidecar {
    async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        let workloads: Vec<WorkloadKey> = ctx.input_opt("workloads")?.unwrap_or_default();
        workloads_status(&self.0, &workloads_of(&workloads), Want::NoSidecar).await
    }
}

fn workloads_of(keys: &[WorkloadKey]) -> BTreeSet<WorkloadRef> {
    keys.iter()
        .map(|w| WorkloadRef::new(w.kind, &w.namespace, &w.name))
        .collect()
}

/// What every pod of a set of workloads should show.
#[derive(Clone, Copy)]
pub enum Want<'a> {
    /// Injected by this revision.
    Revision(&'a str),
    /// No sidecar.
    NoSidecar,
}

impl Want<'_> {
    fn describe(&self) -> String {
        match self {
            Want::Revision(r) => format!("on {r}"),
            Want::NoSidecar => "without a sidecar".to_string(),
        }
    }
}

/// One check of `wanted`'s pods: passed when every one (not terminating) is ready and as
/// `want` says; else waiting, with the pods still behind named per namespace.
pub async fn workloads_status(
    env: &Env,
    wanted: &BTreeSet<WorkloadRef>,
    want: Want<'_>,
) -> Result<GateStatus, StepError> {
    if wanted.is_empty() {
        return Ok(GateStatus::Passed {
            detail: Some("no workload needed moving".into()),
        });
    }
    let namespaces: BTreeSet<&str> = wanted.iter().map(|w| w.namespace.as_str()).collect();
    let (mut good, mut total) = (0u64, 0u64);
    let mut behind: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (ns, pods) in
        pods_of_namespaces(env, namespaces.into_iter().map(str::to_string).collect()).await?
    {
        for pod in pods {
            let Owner::Workload(w) = &pod.owner else {
                continue;
            };
            if !wanted.contains(w) || pod.terminating {
                continue;
            }
            total += 1;
            let rev = pod.revision.revision();
            let why = match (want, rev) {
                (Want::Revision(want), Some(r)) if r == want => None,
                (Want::Revision(_), Some(r)) => Some(r.to_string()),
                (Want::Revision(_), None) => Some("not injected".to_string()),
                (Want::NoSidecar, None) if !pod.revision.is_injected() => None,
                (Want::NoSidecar, _) => Some("still has a sidecar".to_string()),
            };
            let why = why.or_else(|| (!pod.ready).then(|| "not ready".to_string()));
            match why {
                None => good += 1,
                Some(why) => behind
                    .entry(ns.clone())
                    .or_default()
                    .push(format!("{}/{} ({why})", ns, pod.name)),
            }
        }
    }
    let wanted_text = want.describe();
    if behind.is_empty() {
        return Ok(GateStatus::Passed {
            detail: Some(match want {
                Want::Revision(r) => format!("{good} pods ready and injected by {r}"),
                Want::NoSidecar => format!("{good} pods ready without a sidecar"),
            }),
        });
    }
    let summary = behind
        .iter()
        .map(|(ns, pods)| {
            format!(
                "{} pods in {ns} not yet {wanted_text} ({}{})",
                pods.len(),
                pods[0],
                if pods.len() > 1 { ", …" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Ok(GateStatus::waiting_progress(summary, good, Some(total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    /// A pod of Deployment `deploy` in `shop`, injected by `rev` (`None`: no sidecar).
    fn mk_pod(deploy: &str, rev: Option<&str>, labels: &[(&str, &str)]) -> PodInfo {
        let mut containers = vec![Container {
            name: "app".into(),
            image: Some("app:1".into()),
            ..Default::default()
        }];
        if let Some(rev) = rev {
            containers.push(Container {
                name: "istio-proxy".into(),
                image: Some(format!("mcr.microsoft.com/oss/istio/proxyv2:{rev}")),
                ..Default::default()
            });
        }
        let annotations = rev.map(|r| {
            [(
                "sidecar.istio.io/status".to_string(),
                format!(r#"{{"containers":["istio-proxy"],"revision":"{r}"}}"#),
            )]
            .into()
        });
        let mut all_labels: std::collections::BTreeMap<String, String> =
            [("pod-template-hash".to_string(), "abc12".to_string())].into();
        all_labels.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        PodInfo::from_pod(&Pod {
            metadata: ObjectMeta {
                name: Some(format!("{deploy}-abc12-x")),
                namespace: Some("shop".into()),
                labels: Some(all_labels),
                annotations,
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: format!("{deploy}-abc12"),
                    uid: "u".into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn deploy(name: &str) -> WorkloadRef {
        WorkloadRef::new(WorkloadKind::Deployment, "shop", name)
    }

    /// Regression: a namespace labelled after its pods started showed "late (0)" in the plan
    /// and its pods stayed without a sidecar while the upgrade reported success.
    #[test]
    fn pods_without_a_sidecar_in_a_meshed_namespace_are_restarted_to_get_one() {
        let pods = [
            mk_pod("moved", Some("asm-1-29"), &[]),
            mk_pod("old", Some("asm-1-27"), &[]),
            mk_pod("bare", None, &[]),
            mk_pod("optout", None, &[("sidecar.istio.io/inject", "false")]),
        ];
        let plan = plan_pods("shop", &pods, "asm-1-29");
        assert_eq!(
            plan.workloads,
            BTreeSet::from([deploy("old"), deploy("bare")])
        );
        assert_eq!(plan.uninjected, BTreeSet::from([deploy("bare")]));
        assert!(plan.unmovable.is_empty());
        assert!(
            uninjected_line(&plan.uninjected).contains("Deployment shop/bare"),
            "{}",
            uninjected_line(&plan.uninjected)
        );
    }
}
