//! Recovery from the cluster alone (issue 12 #2): a canary that no run owns — started by a
//! plain ARM PUT (`az aks mesh upgrade start`), or by a run whose checkpoint was lost — is
//! *adopted* by a new run before any change: the run observes the canary (the tag webhooks
//! and namespace labels that name it, the pods it injected) and journals an `adopt-canary`
//! entry. From then on the canary is this run's, as if it had installed it: `start` accepts
//! it, and the rollback moves the tag, labels and workloads back onto the older revision and
//! removes it. A canary with no such entry (and no update of the revisions in the journal)
//! stays another's: the "not ours" rule of [`super::cluster`] still protects it.
//!
//! | class (plan) | cluster | what the run does |
//! |---|---|---|
//! | resume-canary | `[S, T]`, `--to T` | adopts `T`, then the canary steps from the tag move on |
//! | consolidate | `[S, C]`, `--to` neither | adopts `C`, rolls it back onto `S` (step `consolidate`), then a fresh canary |
//! | rollback (`rollback --from-cluster`) | `[S, T]` | adopts `T`, then the runbook's rollback sequence |

use std::sync::Arc;

use asm_canary_engine::{
    Action, ActionCtx, ActionOutcome, Checkpoint, EntryStatus, JournalEntry, Phase, RunState,
    Runbook, StepError, StepRecord, StepStatus,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::ListParams;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Env, arm_err, k8s_err, kube_err, outputs};
use crate::istio::tag::tag_revision;
use crate::istio::{
    INGRESS_NAMESPACE, ISTIO_NAMESPACE, REV_LABEL, Revision, TAG_LABEL, shared_configmap_name,
};
use crate::k8s::{Owner, PodInfo, WorkloadRef};

/// The journal entry that makes a canary this run's: written before any change.
pub const KIND_ADOPT: &str = "adopt-canary";
const KIND_CONSOLIDATE_WAVE: &str = "consolidate-wave";

/// A canary adopted from the cluster, as observed when it was adopted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adoption {
    /// The revision everything returns to on a rollback (the older of the two).
    pub older: String,
    /// The canary (the newer of the two).
    pub newer: String,
    /// The tags whose webhook pointed at the canary.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The namespaces labelled `istio.io/rev=<canary>`.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Application pods the canary had injected.
    #[serde(default)]
    pub pods: usize,
}

impl Adoption {
    /// What was found, in a sentence.
    pub fn describe(&self) -> String {
        format!(
            "adopted the canary {} next to {} (no run owns it): tag(s) on it: {}; namespaces labelled with it: {}; {} application pod(s) on it",
            self.newer,
            self.older,
            list_or_none(&self.tags),
            list_or_none(&self.namespaces),
            self.pods
        )
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// The older and the newer of two installed revisions (by asm-X-Y order).
pub fn older_newer(revisions: &[String]) -> Option<(String, String)> {
    let [a, b] = revisions else { return None };
    let (ra, rb) = (a.parse::<Revision>().ok()?, b.parse::<Revision>().ok()?);
    if ra < rb {
        Some((a.clone(), b.clone()))
    } else {
        Some((b.clone(), a.clone()))
    }
}

/// The adoption in this run's journal, if any.
pub fn adoption(journal: &[JournalEntry]) -> Option<Adoption> {
    journal
        .iter()
        .rev()
        .find(|e| e.kind == KIND_ADOPT)
        .and_then(|e| serde_json::from_value(e.details.clone()).ok())
}

/// This run adopted `revision` as its canary.
pub fn adopted(journal: &[JournalEntry], revision: &str) -> bool {
    adoption(journal).is_some_and(|a| a.newer == revision)
}

/// Reads what uses the canary `newer`: tag webhooks, namespace labels, pods.
pub async fn observe(env: &Env, older: &str, newer: &str) -> Result<Adoption, StepError> {
    let sel = format!("{REV_LABEL}={newer}");
    let (tags, nss, pods) = futures::try_join!(
        tags_pointing_at(env, newer),
        async {
            Api::<Namespace>::all(env.kube.clone())
                .list(&ListParams::default().labels(&sel))
                .await
                .map_err(|e| kube_err(format!("listing namespaces {sel}"), e))
        },
        app_pods_on(env, newer),
    )?;
    Ok(Adoption {
        older: older.to_string(),
        newer: newer.to_string(),
        tags,
        namespaces: nss
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect(),
        pods: pods.len(),
    })
}

/// Journals the adoption of `newer` (once: a resumed step finds its entry) before any change.
pub async fn adopt(
    env: &Env,
    ctx: &ActionCtx,
    older: &str,
    newer: &str,
) -> Result<Adoption, StepError> {
    if let Some(a) = adoption(&ctx.journal.all()).filter(|a| a.newer == newer) {
        return Ok(a);
    }
    let found = observe(env, older, newer).await?;
    let details = serde_json::to_value(&found)
        .map_err(|e| StepError::with_source("recording the adoption", e))?;
    let id = ctx.journal.intent(KIND_ADOPT, newer, details).await?;
    ctx.journal.done(id, None).await?;
    ctx.events.warn(found.describe());
    Ok(found)
}

async fn tags_pointing_at(env: &Env, revision: &str) -> Result<Vec<String>, StepError> {
    let list = Api::<MutatingWebhookConfiguration>::all(env.kube.clone())
        .list(&ListParams::default().labels(TAG_LABEL))
        .await
        .map_err(|e| kube_err("listing tag webhooks", e))?;
    let mut tags: Vec<String> = list
        .items
        .iter()
        .filter(|w| tag_revision(w).as_deref() == Some(revision))
        .filter_map(|w| w.metadata.labels.as_ref()?.get(TAG_LABEL).cloned())
        .collect();
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// Application pods (outside the add-on's namespaces) that `revision` injected.
async fn app_pods_on(env: &Env, revision: &str) -> Result<Vec<PodInfo>, StepError> {
    let pods = crate::k8s::pods::list_pods(&env.kube, None, None)
        .await
        .map_err(|e| k8s_err("listing pods", e))?;
    Ok(pods
        .into_iter()
        .filter(|p| !p.terminating)
        .filter(|p| p.revision.revision() == Some(revision))
        .filter(|p| p.namespace != ISTIO_NAMESPACE && p.namespace != INGRESS_NAMESPACE)
        .collect())
}

/// The workloads with pods on `revision` now, once each.
pub async fn workloads_on(env: &Env, revision: &str) -> Result<Vec<WorkloadRef>, StepError> {
    let mut out: Vec<WorkloadRef> = Vec::new();
    for p in app_pods_on(env, revision).await? {
        if let Owner::Workload(w) = p.owner
            && !out.contains(&w)
        {
            out.push(w);
        }
    }
    out.sort();
    Ok(out)
}

/// Points every tag webhook on `newer` back at `older` and relabels every namespace labelled
/// with `newer` to `label_to` (the older revision, or a tag on it), each journaled first;
/// what was moved.
pub async fn tags_back(
    env: &Env,
    ctx: &ActionCtx,
    older: &str,
    newer: &str,
    label_to: &str,
) -> Result<Vec<String>, StepError> {
    let mut moved = Vec::new();
    for tag in tags_pointing_at(env, newer).await? {
        let name = crate::istio::tag_webhook_name(&tag, ISTIO_NAMESPACE);
        let id = ctx
            .journal
            .intent("tag-restore", &name, json!({ "tag": tag, "to": older }))
            .await?;
        super::tag::apply_tag(env, &tag, older).await?;
        ctx.journal.done(id, None).await?;
        ctx.events.info(format!(
            "tag {tag} points at {older} again (it was on {newer})"
        ));
        moved.push(name);
    }
    let sel = format!("{REV_LABEL}={newer}");
    let nss = Api::<Namespace>::all(env.kube.clone())
        .list(&ListParams::default().labels(&sel))
        .await
        .map_err(|e| kube_err(format!("listing namespaces {sel}"), e))?;
    for ns in nss.items.into_iter().filter_map(|n| n.metadata.name) {
        let id = ctx
            .journal
            .intent("namespace-restore", &ns, json!({ "to": label_to }))
            .await?;
        super::tag::set_namespace_rev(env, &ns, label_to).await?;
        ctx.journal.done(id, None).await?;
        moved.push(format!("namespace/{ns}"));
    }
    Ok(moved)
}

/// `consolidate-canary`: a stale canary (adopted by preflight) rolled back onto the older
/// revision — tags and labels back, its workloads restarted onto the older revision, the
/// canary removed, its shared ConfigMap (when the older has one) and gateway Leases deleted —
/// so that a fresh canary can start from one revision.
pub struct ConsolidateCanary(pub Arc<Env>);

#[async_trait]
impl Action for ConsolidateCanary {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let env = &self.0;
        let older: String = ctx.input("source")?;
        let canary: String = ctx.input("canary")?;
        let parallelism: serde_json::Value = ctx.input_opt("parallelism")?.unwrap_or(json!(4));
        let doc = env
            .arm
            .wait_idle(&env.cluster)
            .await
            .map_err(|e| arm_err("waiting for the cluster to be idle", e))?;
        if !doc.revisions().contains(&canary) {
            return Ok(ActionOutcome::already_done(
                outputs([("revisions", json!(doc.revisions()))]),
                format!("{canary} is no longer installed"),
            ));
        }
        if !adopted(&ctx.journal.all(), &canary) {
            return Err(StepError::refused(format!(
                "{canary} was not adopted by this run (its journal has no adopt-canary entry): left as it is"
            )));
        }
        let label_to = label_back_to(env, ctx, &older, &canary).await?;
        let moved = tags_back(env, ctx, &older, &canary, &label_to).await?;
        let todo = workloads_on(env, &canary).await?;
        let restarted = super::restart::restart_onto(
            env,
            ctx,
            KIND_CONSOLIDATE_WAVE,
            &todo,
            &parallelism,
            &older,
        )
        .await?;
        let revisions = super::cluster::remove_revision(env, ctx, &older, &canary).await?;
        let removed = delete_canary_configmap(env, ctx, &older, &canary).await?;
        ctx.events.info(format!(
            "consolidated: {canary} removed, {} workload(s) restarted onto {older}",
            restarted.len()
        ));
        Ok(ActionOutcome::done(outputs([
            ("revisions", revisions),
            ("moved", json!(moved)),
            ("workloads", json!(restarted)),
            ("removed", json!(removed)),
        ])))
    }
}

/// What a namespace labelled with an adopted canary is labelled with once it is consolidated or
/// rolled back: in tag mode the run's tag, when it points at the older revision (then it moves
/// with the tag again, as tag mode asks, and a next run does not meet it labelled with the
/// source revision itself); else the older revision.
pub(super) async fn label_back_to(
    env: &Env,
    ctx: &ActionCtx,
    older: &str,
    canary: &str,
) -> Result<String, StepError> {
    let mode = super::tag::mode_of(ctx.input_opt("mode")?)?;
    let tag: Option<String> = ctx.input_opt("tag")?;
    if let (super::tag::Mode::Tag, Some(tag)) = (mode, tag) {
        // A tag on the canary is moved back onto the older first.
        let on = super::tag::current_tag_revision(env, &tag).await?;
        if on.as_deref() == Some(older) || on.as_deref() == Some(canary) {
            return Ok(tag);
        }
    }
    Ok(older.to_string())
}

/// Deletes the canary's shared ConfigMap when the older revision has one (then the canary's
/// is a copy of it, made for the canary); journaled. What was deleted.
pub async fn delete_canary_configmap(
    env: &Env,
    ctx: &ActionCtx,
    older: &str,
    canary: &str,
) -> Result<Vec<String>, StepError> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(env.kube.clone(), ISTIO_NAMESPACE);
    let older_cm = shared_configmap_name(older);
    let has = api
        .get_opt(&older_cm)
        .await
        .map_err(|e| kube_err(format!("reading ConfigMap {older_cm}"), e))?
        .is_some();
    if !has {
        return Ok(vec![]);
    }
    let cm = shared_configmap_name(canary);
    match super::configmap::delete_configmap(env, ctx, &cm).await? {
        ActionOutcome::Done { .. } => Ok(vec![format!("configmap/{cm}")]),
        _ => Ok(vec![]),
    }
}

/// The checkpoint of a `rollback --from-cluster`: a run that adopted `adoption`'s canary in
/// its preflight (source the older revision, target the canary) and is paused there, so the
/// runbook's rollback sequence undoes the canary. `params` are the runbook's bound params.
pub fn rollback_seed(
    runbook: &Runbook,
    params: Map<String, Value>,
    run_id: &str,
    target: &str,
    adoption: &Adoption,
    now: DateTime<Utc>,
) -> Result<Checkpoint, StepError> {
    let (older, newer) = (&adoption.older, &adoption.newer);
    let done = |id: &str, outputs: Value| StepRecord {
        status: StepStatus::Succeeded,
        attempts: 1,
        started_at: Some(now),
        finished_at: Some(now),
        action_done: true,
        outputs: outputs.as_object().cloned(),
        ..StepRecord::pending(id)
    };
    let seeded = |id: &str| match id {
        "preflight" => done(
            id,
            json!({ "source": older, "canary": newer, "revisions": [older, newer],
                    "class": "rollback", "upgrade_needed": true, "consolidate": false,
                    "reconcile": false }),
        ),
        "get-upgrades" => done(
            id,
            json!({ "target": newer, "offered": [], "reason": "the canary found in the cluster" }),
        ),
        _ => StepRecord::pending(id),
    };
    let details = serde_json::to_value(adoption)
        .map_err(|e| StepError::with_source("recording the adoption", e))?;
    Ok(Checkpoint {
        schema_version: asm_canary_engine::checkpoint::SCHEMA_VERSION.to_string(),
        kind: asm_canary_engine::checkpoint::CHECKPOINT_KIND.to_string(),
        run_id: run_id.to_string(),
        target: target.to_string(),
        runbook: asm_canary_engine::checkpoint::RunbookRef {
            name: runbook.name.clone(),
            sha256: runbook.sha256.clone(),
            origin: Some(runbook.origin.clone()),
        },
        params,
        state: RunState::Paused,
        reason: Some(format!(
            "rollback --from-cluster: the canary {newer} found next to {older}"
        )),
        failed_step: None,
        rollback_requested: false,
        created_at: now,
        updated_at: now,
        steps: runbook.steps.iter().map(|s| seeded(&s.id)).collect(),
        rollback: (runbook.rollback.iter())
            .map(|s| StepRecord::pending(&s.id))
            .collect(),
        journal: vec![JournalEntry {
            seq: 1,
            step: "preflight".into(),
            phase: Phase::Forward,
            attempt: 1,
            kind: KIND_ADOPT.into(),
            target: newer.clone(),
            details,
            status: EntryStatus::Done,
            result: None,
            recorded_at: now,
            done_at: Some(now),
        }],
        approvals: vec![],
        summary: Map::from_iter([
            ("source".to_string(), json!(older)),
            ("target".to_string(), json!(newer)),
        ]),
    })
}

/// What `rollback --from-cluster` finds.
#[derive(Debug)]
pub enum FromCluster {
    /// One revision: nothing to roll back.
    Nothing(Vec<String>),
    /// Not something a rollback can start from (busy, disabled, more than two): why.
    Refused(String),
    /// A canary to roll back.
    Canary(Adoption),
}

/// Reads the cluster for `rollback --from-cluster`.
pub async fn from_cluster(env: &Env) -> Result<FromCluster, StepError> {
    let doc = env
        .arm
        .get_cluster(&env.cluster)
        .await
        .map_err(|e| arm_err("reading the cluster", e))?;
    let revisions = doc.revisions();
    let state = doc.provisioning_state().unwrap_or("Unknown");
    if state != "Succeeded" {
        return Ok(FromCluster::Refused(format!(
            "{} is {state}, not Succeeded: wait for the running operation to end (or fix the failed one), then run rollback --from-cluster again",
            env.cluster.name
        )));
    }
    match older_newer(&revisions) {
        Some((older, newer)) => Ok(FromCluster::Canary(observe(env, &older, &newer).await?)),
        None if revisions.len() < 2 => Ok(FromCluster::Nothing(revisions)),
        None => Ok(FromCluster::Refused(format!(
            "{} runs [{}]: not one canary next to one revision; this needs a person",
            env.cluster.name,
            revisions.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revs(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_older_of_two_revisions_is_the_one_to_return_to_in_either_order() {
        let want = Some(("asm-1-27".to_string(), "asm-1-28".to_string()));
        assert_eq!(older_newer(&revs(&["asm-1-27", "asm-1-28"])), want);
        assert_eq!(older_newer(&revs(&["asm-1-28", "asm-1-27"])), want);
        assert_eq!(older_newer(&revs(&["asm-1-27"])), None);
        assert_eq!(older_newer(&revs(&["asm-1-27", "x"])), None);
    }
}
