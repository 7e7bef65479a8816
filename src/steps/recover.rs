//! Rolling an adopted canary back from the cluster alone ([`super::adoption`] says how a run
//! adopts one): `consolidate-canary` (a stale canary rolled back onto the older revision so a
//! fresh canary can start) and `rollback --from-cluster` (a run seeded as if it had installed
//! the canary, paused, so the runbook's rollback sequence undoes it).

use std::sync::Arc;

use asm_canary_engine::{
    Action, ActionCtx, ActionOutcome, Checkpoint, EntryStatus, JournalEntry, Phase, RunState,
    Runbook, StepError, StepRecord, StepStatus,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::adoption::{Adoption, KIND_ADOPT, adopted, observe, older_newer, workloads_on};
use super::configmap::delete_canary_configmap;
use super::tag::{label_back_to, tags_back};
use super::{Env, arm_err, outputs};

const KIND_CONSOLIDATE_WAVE: &str = "consolidate-wave";

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
        runbook: runbook.reference(),
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
