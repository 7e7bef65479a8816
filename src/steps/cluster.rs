//! The ARM side of the runbook: preflight (0), get-upgrades (1), start (3), complete (7a)
//! and remove-canary (7b), with their gates. Preflight and get-upgrades decide as the plan
//! does: by [`super::plan`]'s `observe` and `choose_upgrade`.
//!
//! Every PUT goes through [`ArmClient::begin_set_revisions`] (If-Match with the eTag just
//! read, re-validated on every retry) and is journaled before it is sent; a resumed step
//! reads the cluster first and polls the recorded operation instead of PUTting again.

use std::sync::Arc;

use asm_canary_engine::{
    Action, ActionCtx, ActionOutcome, EntryId, Gate, GateCtx, GateStatus, StepError,
};
use async_trait::async_trait;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

use super::adoption::older_newer;
use super::plan::{MeshState, PlanError, RunClass, choose_upgrade, observe, preflight_warnings};
use super::{Env, arm_err, k8s_err, kube_err, outputs};
use crate::azure::ClusterDoc;
use crate::istio::tag::tag_revision;
use crate::istio::{
    ISTIO_NAMESPACE, REV_LABEL, Revision, TAG_LABEL, orphaned_lease_names, shared_configmap_name,
};
use crate::k8s::delete_leases;

const KIND_PUT: &str = "arm-put-revisions";

pub struct Preflight(pub Arc<Env>);
pub struct ClusterReady(pub Arc<Env>);
pub struct GetUpgrades(pub Arc<Env>);
pub struct TargetAvailable(pub Arc<Env>);
pub struct StartCanary(pub Arc<Env>);
pub struct CompleteUpgrade(pub Arc<Env>);
pub struct RemoveCanary(pub Arc<Env>);
pub struct SingleRevision(pub Arc<Env>);

async fn get_cluster(env: &Env) -> Result<ClusterDoc, StepError> {
    env.arm
        .get_cluster(&env.cluster)
        .await
        .map_err(|e| arm_err("reading the cluster", e))
}

#[async_trait]
impl Action for Preflight {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let to: Option<String> = ctx.input_opt::<String>("to")?.filter(|s| !s.is_empty());
        if let Some(t) = &to {
            t.parse::<Revision>()
                .map_err(|e| StepError::msg(format!("--to {t:?}: {e}")))?;
        }
        let (doc, state) = observe(&self.0, to.as_deref())
            .await
            .map_err(|e| arm_err("reading the cluster", e))?;
        let revisions = doc.revisions();
        // `promote` (the approval after the canary wave) runs only in an upgrade that asks
        // for it: a step's `when` cannot reference a step that may be skipped.
        let promote: bool = ctx.input_opt("promote_approval")?.unwrap_or(false);
        let mut out = outputs([
            ("cluster", json!(self.0.cluster.to_string())),
            ("revisions", json!(revisions)),
            ("provisioning_state", json!(doc.provisioning_state())),
            ("kubernetes_version", json!(doc.kubernetes_version())),
            ("location", json!(doc.location())),
            ("ingress_gateways", json!(ingress_modes(&doc))),
            ("mesh_state", json!(state)),
            ("promote", json!(false)),
        ]);
        if let Some(done) = classify_run(&self.0, ctx, &state, to.as_deref(), &mut out).await? {
            return Ok(done);
        }
        let upgrade_needed = out.get("upgrade_needed") == Some(&json!(true));
        out.insert("promote".into(), json!(upgrade_needed && promote));
        for w in preflight_warnings(&self.0, &revisions).await? {
            ctx.events.warn(w);
        }
        ctx.events.info(format!(
            "{}: {} installed, Kubernetes {}",
            self.0.cluster.name,
            revisions.join(", "),
            doc.kubernetes_version().unwrap_or("?")
        ));
        Ok(ActionOutcome::done(out))
    }
}

/// Preflight's decision, by the plan's [`RunClass`]: the outputs the later steps run on
/// (`source`, `class`, `canary`, `upgrade_needed`, `consolidate`, `reconcile`). A canary no
/// run owns is adopted here, journaled before any change. `Some` when preflight ends here.
async fn classify_run(
    env: &Env,
    ctx: &ActionCtx,
    state: &MeshState,
    to: Option<&str>,
    out: &mut asm_canary_engine::Outputs,
) -> Result<Option<ActionOutcome>, StepError> {
    let class = state.class(to);
    let mut canary = None;
    let source = match (state, class) {
        (MeshState::MidUpgrade { revisions } | MeshState::StaleCanary { revisions }, _)
            if matches!(class, RunClass::ResumeCanary | RunClass::Consolidate) =>
        {
            let (older, newer) = older_newer(revisions)
                .ok_or_else(|| StepError::refused(state.explain(&env.cluster.name)))?;
            super::adoption::adopt(env, ctx, &older, &newer).await?;
            if let Some(does) = state.what_it_does(class, to) {
                ctx.events.info(does);
            }
            canary = Some(newer);
            older
        }
        (MeshState::Ready | MeshState::AlreadyAtTarget, _) => out_revisions(out)[0].clone(),
        // Waiting for an operation to end is the gate's job.
        (MeshState::NotReady { .. }, _) if out_revisions(out).len() == 1 => {
            out_revisions(out)[0].clone()
        }
        // Nothing this run can wait for or resume: refused, not halted.
        (other, _) => return Err(StepError::refused(other.explain(&env.cluster.name))),
    };
    let upgrade_needed = matches!(
        class,
        RunClass::Upgrade | RunClass::ResumeCanary | RunClass::Consolidate
    );
    out.insert("source".into(), json!(source));
    out.insert("class".into(), json!(class.as_str()));
    out.insert("canary".into(), json!(canary));
    out.insert("upgrade_needed".into(), json!(upgrade_needed));
    out.insert("consolidate".into(), json!(class == RunClass::Consolidate));
    out.insert("reconcile".into(), json!(class == RunClass::Reconcile));
    if class == RunClass::Reconcile {
        let why = state.explain(&env.cluster.name);
        ctx.events.info(why.clone());
        return Ok(Some(ActionOutcome::already_done(out.clone(), why)));
    }
    Ok(None)
}

fn out_revisions(out: &asm_canary_engine::Outputs) -> Vec<String> {
    out.get("revisions")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

fn ingress_modes(doc: &ClusterDoc) -> Vec<String> {
    doc.body
        .pointer("/properties/serviceMeshProfile/istio/components/ingressGateways")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter(|g| g["enabled"].as_bool() == Some(true))
        .filter_map(|g| g["mode"].as_str().map(str::to_string))
        .collect()
}

#[async_trait]
impl Gate for ClusterReady {
    async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        let source: Option<String> = ctx.input_opt("source")?;
        let doc = get_cluster(&self.0).await?;
        let state = doc.provisioning_state().unwrap_or("Unknown").to_string();
        let revisions = doc.revisions();
        if state == "Failed" {
            let why = doc
                .provisioning_error()
                .map(|(c, m)| format!(": {c}: {m}"))
                .unwrap_or_default();
            return Ok(GateStatus::failed(format!(
                "the cluster's last operation failed{why}; fix it before upgrading"
            )));
        }
        if state != "Succeeded" {
            return Ok(GateStatus::waiting(format!("cluster is {state}")));
        }
        let canary: Option<String> = ctx.input_opt("canary")?;
        match (source, revisions.as_slice()) {
            (Some(s), [one]) if *one == s => Ok(GateStatus::Passed {
                detail: Some(format!("Succeeded, mesh Istio, one revision ({s})")),
            }),
            // A canary this run adopted (or consolidated away since).
            (Some(s), revs)
                if canary.as_ref().is_some_and(|c| {
                    crate::azure::same_revisions(revs, &[s.clone(), c.clone()])
                }) =>
            {
                Ok(GateStatus::Passed {
                    detail: Some(format!("Succeeded, mesh Istio, {s} and the adopted canary")),
                })
            }
            (_, revs) => Ok(GateStatus::failed(format!(
                "expected exactly one revision, found [{}]",
                revs.join(", ")
            ))),
        }
    }
}

#[async_trait]
impl Action for GetUpgrades {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let source: String = ctx.input("source")?;
        let to: Option<String> = ctx.input_opt::<String>("to")?.filter(|s| !s.is_empty());
        let requested = to
            .as_deref()
            .map(str::parse::<Revision>)
            .transpose()
            .map_err(|e| StepError::msg(format!("--to: {e}")))?;
        let canary: Option<String> = ctx.input_opt("canary")?;
        let class: Option<String> = ctx.input_opt("class")?;
        if let Some(target) = canary.filter(|_| class.as_deref() == Some("resume-canary")) {
            // ARM lists no upgrades while two revisions are installed: the target is the
            // canary this run adopted (preflight checked it is the one asked for).
            let why = "installed already: the canary this run adopted";
            ctx.events.info(format!("target {target} ({why})"));
            return Ok(ActionOutcome::done(outputs([
                ("target", json!(target)),
                ("offered", json!([])),
                ("reason", json!(why)),
            ])));
        }
        let choice = choose_upgrade(&self.0, &source, requested)
            .await
            .map_err(|e| match e {
                PlanError::Arm(e) => arm_err("reading meshUpgradeProfiles/istio", *e),
                other => StepError::msg(other),
            })?;
        let why = choice.reason();
        let offered = choice.offered;
        let target = choice.target.map_err(StepError::msg)?;
        ctx.events.info(format!(
            "upgrades offered for {source}: {}; target {target} ({why})",
            if offered.is_empty() {
                "none".to_string()
            } else {
                offered.join(", ")
            }
        ));
        Ok(ActionOutcome::done(outputs([
            ("target", json!(target.to_string())),
            ("offered", json!(offered)),
            ("reason", json!(why)),
        ])))
    }
}

#[async_trait]
impl Gate for TargetAvailable {
    async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        let target: String = ctx.input("target")?;
        let offered: Vec<String> = ctx
            .outputs
            .get("offered")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| StepError::with_source("reading the offered upgrades", e))?
            .unwrap_or_default();
        let canary: Option<String> = ctx.input_opt("canary")?;
        if !offered.contains(&target) && canary.as_deref() != Some(target.as_str()) {
            return Ok(GateStatus::failed(format!(
                "{target} is not among the upgrades ARM offers ({})",
                offered.join(", ")
            )));
        }
        let doc = get_cluster(&self.0).await?;
        let k8s = doc.kubernetes_version().unwrap_or_default().to_string();
        let location = doc.location().unwrap_or_default().to_string();
        let profile = self
            .0
            .arm
            .mesh_revision_profile(&self.0.cluster.subscription, &location)
            .await
            .map_err(|e| arm_err("reading meshRevisionProfiles/istio", e))?;
        match profile.revision(&target) {
            Some(rev) if !k8s.is_empty() && !rev.supports_kubernetes(&k8s) => {
                Ok(GateStatus::failed(format!(
                    "{target} is not compatible with Kubernetes {k8s} (it supports {}); upgrade the cluster first",
                    rev.kubernetes_versions().join(", ")
                )))
            }
            _ => Ok(GateStatus::Passed {
                detail: Some(format!(
                    "{target} is offered and compatible with Kubernetes {k8s}"
                )),
            }),
        }
    }
}

/// PUTs `revisions` once across crashes: journaled before the PUT, the operation URL
/// recorded after it; a resumed step polls the recorded operation or re-reads the cluster.
async fn put_revisions(
    env: &Env,
    ctx: &ActionCtx,
    revisions: Vec<String>,
    allowed_before: Vec<Vec<String>>,
) -> Result<(serde_json::Value, bool), StepError> {
    let earlier = ctx
        .journal
        .step_entries()
        .into_iter()
        .rev()
        .find(|e| e.kind == KIND_PUT && e.details["revisions"] == json!(revisions));
    let doc = get_cluster(env).await?;
    let now = doc.revisions();
    let applied = crate::azure::same_revisions(&now, &revisions);
    let operation: Option<String> = match earlier {
        // The recorded operation may still run (poll it) or have applied the revisions. If
        // it ended without applying them (an LRO that failed), a retry must PUT again: polling
        // the failed operation would only fail again.
        Some(e) if e.is_done() && (applied || !doc.is_idle()) => e
            .result
            .as_ref()
            .and_then(|r| r["operation_url"].as_str().map(str::to_string)),
        Some(e) if applied => {
            // The PUT landed before the crash; we just lost its answer.
            ctx.journal
                .done(
                    EntryId(e.seq),
                    Some(json!({ "operation_url": null, "recovered": true })),
                )
                .await?;
            None
        }
        _ if applied && doc.is_idle() => {
            return Ok((json!({ "revisions": revisions }), false));
        }
        earlier => put_now(env, ctx, earlier, &revisions, now, allowed_before).await?,
    };
    if let Some(url) = &operation {
        env.arm
            .poll_operation(&env.cluster, url)
            .await
            .map_err(|e| arm_err("waiting for the cluster update", e))?;
    }
    let doc = env
        .arm
        .confirm_revisions(&env.cluster, &revisions)
        .await
        .map_err(|e| arm_err("confirming the cluster's revisions", e))?;
    Ok((
        json!({ "revisions": doc.revisions(), "operation_url": operation }),
        true,
    ))
}

/// The PUT itself: journaled first (or under the entry left in flight by a crash), then
/// sent with the eTag just read; returns the operation to poll.
async fn put_now(
    env: &Env,
    ctx: &ActionCtx,
    earlier: Option<asm_canary_engine::JournalEntry>,
    revisions: &[String],
    now: Vec<String>,
    allowed_before: Vec<Vec<String>>,
) -> Result<Option<String>, StepError> {
    if let Some(e) = earlier.as_ref().filter(|e| e.is_done()) {
        ctx.events.info(format!(
            "the earlier update of the revisions (journal #{}) ended without applying [{}]; updating again",
            e.seq,
            revisions.join(", ")
        ));
    }
    let id = match earlier.filter(|e| !e.is_done()) {
        Some(e) => EntryId(e.seq),
        None => {
            ctx.journal
                .intent(
                    KIND_PUT,
                    &env.cluster.to_string(),
                    json!({ "revisions": revisions, "from": now }),
                )
                .await?
        }
    };
    let want = revisions.to_vec();
    let expected = move |d: &ClusterDoc| {
        let r = d.revisions();
        if crate::azure::same_revisions(&r, &want)
            || allowed_before
                .iter()
                .any(|a| crate::azure::same_revisions(&r, a))
        {
            Ok(())
        } else {
            Err(format!(
                "revisions are [{}], which this step did not expect",
                r.join(", ")
            ))
        }
    };
    let accepted = env
        .arm
        .begin_set_revisions(&env.cluster, revisions, &expected)
        .await
        .map_err(|e| arm_err("updating the cluster's revisions", e))?;
    ctx.journal
        .done(
            id,
            Some(json!({ "operation_url": accepted.operation_url, "status": accepted.status })),
        )
        .await?;
    ctx.events.info(format!(
        "ARM accepted revisions [{}] (HTTP {})",
        revisions.join(", "),
        accepted.status
    ));
    Ok(accepted.operation_url)
}

#[async_trait]
impl Action for StartCanary {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let source: String = ctx.input("source")?;
        let target: String = ctx.input("target")?;
        refuse_a_canary_not_ours(&self.0, ctx, &source, &target).await?;
        let (result, acted) = put_revisions(
            &self.0,
            ctx,
            vec![source.clone(), target.clone()],
            vec![vec![source.clone()]],
        )
        .await?;
        let out = outputs([
            ("revisions", result["revisions"].clone()),
            ("operation_url", result["operation_url"].clone()),
        ]);
        if acted {
            Ok(ActionOutcome::done(out))
        } else {
            Ok(ActionOutcome::already_done(
                out,
                format!("{source} and {target} are already installed"),
            ))
        }
    }
}

/// This run installed `target` if its journal holds an update of the revisions that asked
/// for it (the intent is journaled before the PUT is sent).
fn installed_by_this_run(ctx: &ActionCtx, target: &str) -> bool {
    let journal = ctx.journal.all();
    super::adoption::adopted(&journal, target)
        || journal.iter().any(|e| {
            e.kind == KIND_PUT
                && e.details["revisions"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|v| v == target))
        })
}

/// `start` finds the target already installed: that is this run's work only if its journal
/// says so. Otherwise another run or a person started that canary, and adopting it would
/// move the tag and restart every workload onto a control plane this run does not own.
async fn refuse_a_canary_not_ours(
    env: &Env,
    ctx: &ActionCtx,
    source: &str,
    target: &str,
) -> Result<(), StepError> {
    if installed_by_this_run(ctx, target) {
        return Ok(());
    }
    let doc = get_cluster(env).await?;
    let now = doc.revisions();
    if !now.iter().any(|r| r == target) {
        return Ok(());
    }
    Err(StepError::refused(format!(
        "the cluster already runs [{}], but this run did not install {target} (its journal has no update of the revisions): another run or a person (az aks mesh upgrade start) started that canary; this run changed no revision. Finish or roll back that canary where it was started (or az aks mesh upgrade complete|rollback), check that {source} is the only revision, then resume this run",
        now.join(", ")
    )))
}

/// Everything that still uses `revision`: pods it injected, namespaces labelled with it, tag
/// webhooks pointing at it. Removing a revision while any remains strands workloads.
pub async fn users_of_revision(env: &Env, revision: &str) -> Result<Vec<String>, StepError> {
    let mut users = Vec::new();
    let sel = format!("{REV_LABEL}={revision}");
    let namespaces = Api::<Namespace>::all(env.kube.clone());
    let webhooks = Api::<MutatingWebhookConfiguration>::all(env.kube.clone());
    // pods, namespaces and tags, read at once
    let (pods, nss, tags) = futures::try_join!(
        async {
            crate::k8s::pods::list_pods(&env.kube, None, None)
                .await
                .map_err(|e| k8s_err("listing pods", e))
        },
        async {
            namespaces
                .list(&ListParams::default().labels(&sel))
                .await
                .map_err(|e| kube_err(format!("listing namespaces {sel}"), e))
        },
        async {
            webhooks
                .list(&ListParams::default().labels(TAG_LABEL))
                .await
                .map_err(|e| kube_err("listing tag webhooks", e))
        },
    )?;
    let mut stuck: Vec<String> = pods
        .iter()
        .filter(|p| !p.terminating)
        .filter(|p| p.revision.revision() == Some(revision))
        .filter(|p| p.namespace != ISTIO_NAMESPACE)
        .filter(|p| p.namespace != crate::istio::INGRESS_NAMESPACE)
        .map(|p| format!("pod {}/{}", p.namespace, p.name))
        .collect();
    stuck.sort();
    users.extend(stuck);
    users.extend(
        nss.items
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .map(|n| format!("namespace {n} (label {sel})")),
    );
    for wh in &tags.items {
        if tag_revision(wh).as_deref() == Some(revision) {
            users.push(format!(
                "tag webhook {}",
                wh.metadata.name.clone().unwrap_or_default()
            ));
        }
    }
    Ok(users)
}

fn refuse_if_used(revision: &str, users: &[String], action: &str) -> Result<(), StepError> {
    if users.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = users.iter().take(5).map(String::as_str).collect();
    Err(StepError::msg(format!(
        "refusing to {action}: {} thing(s) still use {revision}: {}{}; move them (restart, relabel, retag) and resume",
        users.len(),
        shown.join(", "),
        if users.len() > 5 { ", …" } else { "" }
    )))
}

async fn delete_orphans(
    env: &Env,
    ctx: &ActionCtx,
    revision: &str,
) -> Result<Vec<String>, StepError> {
    let mut removed = Vec::new();
    let cm = shared_configmap_name(revision);
    if let ActionOutcome::Done { .. } = super::configmap::delete_configmap(env, ctx, &cm).await? {
        removed.push(format!("configmap/{cm}"));
    }
    let names = orphaned_lease_names(revision).to_vec();
    let id = ctx
        .journal
        .intent(
            "lease-delete",
            &names.join(","),
            json!({ "revision": revision }),
        )
        .await?;
    let deleted = delete_leases(&env.kube, ISTIO_NAMESPACE, &names)
        .await
        .map_err(|e| k8s_err("deleting the orphaned gateway Leases", e))?;
    ctx.journal.done(id, Some(json!(deleted))).await?;
    removed.extend(
        deleted
            .into_iter()
            .filter(|d| d.deleted)
            .map(|d| format!("lease/{}", d.name)),
    );
    Ok(removed)
}

#[async_trait]
impl Action for CompleteUpgrade {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let source: String = ctx.input("source")?;
        let target: String = ctx.input("target")?;
        let doc = get_cluster(&self.0).await?;
        if doc.revisions().contains(&source) {
            let migrated: Vec<String> = ctx.input_opt("namespaces")?.unwrap_or_default();
            super::restart::restart_stragglers(&self.0, ctx, &migrated, &source, &target).await?;
            let users = users_of_revision(&self.0, &source).await?;
            refuse_if_used(&source, &users, &format!("complete (remove {source})"))?;
        }
        let (result, acted) = put_revisions(
            &self.0,
            ctx,
            vec![target.clone()],
            vec![vec![source.clone(), target.clone()]],
        )
        .await?;
        let removed = delete_orphans(&self.0, ctx, &source).await?;
        let check = super::finalcheck::run_after_complete(&self.0, ctx, &target).await?;
        let out = outputs([
            ("revisions", result["revisions"].clone()),
            ("removed", json!(removed)),
            ("final_check", json!(check)),
        ]);
        if acted {
            Ok(ActionOutcome::done(out))
        } else {
            Ok(ActionOutcome::already_done(
                out,
                format!("only {target} is installed"),
            ))
        }
    }

    /// Once complete's PUT may have landed, a rollback cannot work: the source revision is
    /// gone (or going), and moving the tag back to it would break injection. Allowed only
    /// when the cluster shows the PUT never landed (other revisions, and idle).
    async fn may_roll_back(&self, ctx: &ActionCtx) -> Result<(), StepError> {
        let Some(asked) = ctx
            .journal
            .step_entries()
            .into_iter()
            .rev()
            .find(|e| e.kind == KIND_PUT)
            .and_then(|e| {
                serde_json::from_value::<Vec<String>>(e.details["revisions"].clone()).ok()
            })
        else {
            return Ok(());
        };
        let doc = get_cluster(&self.0).await?;
        let now = doc.revisions();
        if doc.is_idle() && !crate::azure::same_revisions(&now, &asked) {
            return Ok(());
        }
        Err(StepError::msg(format!(
            "this run was completing — its complete step asked ARM for revisions [{}] and the cluster now has [{}]{}; the source revision is gone or going, so a rollback would leave workloads without a control plane",
            asked.join(", "),
            now.join(", "),
            if doc.is_idle() {
                ""
            } else {
                " (an update is still running)"
            },
        )))
    }
}

#[async_trait]
impl Action for RemoveCanary {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let source: String = ctx.input("source")?;
        let target: Option<String> = ctx.input_opt("target")?;
        // An operation of this run may still be running (a crash during start's LRO): let it
        // end before deciding, so a canary it is still installing is seen and removed.
        let doc = self
            .0
            .arm
            .wait_idle(&self.0.cluster)
            .await
            .map_err(|e| arm_err("waiting for the cluster to be idle", e))?;
        let Some(target) = target.filter(|t| doc.revisions().contains(t)) else {
            return Ok(ActionOutcome::skipped(
                "the canary revision is not installed",
            ));
        };
        if !installed_by_this_run(ctx, &target) {
            return Ok(ActionOutcome::skipped(format!(
                "{target} was not installed by this run (its journal has no update of the revisions): left as it is"
            )));
        }
        let revisions = remove_revision(&self.0, ctx, &source, &target).await?;
        Ok(ActionOutcome::done(outputs([("revisions", revisions)])))
    }
}

/// Removes the canary `target`, leaving `source` (refused while anything still uses it),
/// and its gateway leader Leases; the revisions after.
pub(super) async fn remove_revision(
    env: &Env,
    ctx: &ActionCtx,
    source: &str,
    target: &str,
) -> Result<serde_json::Value, StepError> {
    let users = users_of_revision(env, target).await?;
    refuse_if_used(target, &users, &format!("roll back (remove {target})"))?;
    let (result, _) = put_revisions(
        env,
        ctx,
        vec![source.to_string()],
        vec![vec![source.to_string(), target.to_string()]],
    )
    .await?;
    let names = orphaned_lease_names(target).to_vec();
    let _ = delete_leases(&env.kube, ISTIO_NAMESPACE, &names).await;
    Ok(result["revisions"].clone())
}

#[async_trait]
impl Gate for SingleRevision {
    async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        let revision: String = ctx.input("revision")?;
        let doc = get_cluster(&self.0).await?;
        let revs = doc.revisions();
        let state = doc.provisioning_state().unwrap_or("Unknown");
        if state == "Succeeded" && revs == [revision.clone()] {
            Ok(GateStatus::Passed {
                detail: Some(format!("one control plane: {revision}")),
            })
        } else {
            Ok(GateStatus::waiting(format!(
                "cluster is {state} with revisions [{}]",
                revs.join(", ")
            )))
        }
    }
}
