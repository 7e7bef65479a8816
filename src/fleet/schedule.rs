//! Running the rings: the stages in order; up to a stage's `max_concurrency` clusters at once;
//! a cluster that fails (rolled back, paused, failed) lets the running ones finish and starts
//! nothing more; a soak, then an approval, between stages. Every change of a cluster's or a
//! stage's standing is saved in the fleet checkpoint before the next one, and a cluster's run id
//! is saved before its upgrade starts, so a fleet run killed at any point resumes each cluster
//! from its own checkpoint and repeats nothing.
//!
//! It knows nothing of Azure or terminals: a [`ClusterRunner`] upgrades one cluster, a
//! [`FleetIo`] saves the checkpoint, tells what happens and answers approvals.

use std::sync::Arc;
use std::time::Duration;

use asm_canary_engine::CancellationToken;
use async_trait::async_trait;
use chrono::Utc;
use tokio::task::JoinSet;

use super::assign::{Ring, Rings};
use crate::azure::ClusterId;
use crate::contract::exit;
use crate::contract::fleet::{
    Approval, ClusterRecord, ClusterStatus, FLEET_STATE_SCHEMA, FleetEvent, FleetRunState,
    FleetState, StageRecord,
};

/// One cluster's upgrade, as the scheduler asks for it.
#[derive(Debug, Clone)]
pub struct ClusterJob {
    pub stage: super::Stage,
    pub cluster: ClusterId,
    /// The run id its upgrade has (a new one was saved before the job started).
    pub run_id: String,
    /// The fleet started this cluster before: its checkpoint may be in the cluster.
    pub resumed: bool,
}

/// How one cluster's upgrade ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterResult {
    pub status: ClusterStatus,
    pub exit_code: Option<u8>,
    pub reason: Option<String>,
}

/// Upgrades (or resumes) one cluster.
#[async_trait]
pub trait ClusterRunner: Send + Sync + 'static {
    async fn run(&self, job: ClusterJob) -> ClusterResult;
}

/// What the scheduler needs of the outside: the checkpoint saved, events told, approvals asked.
#[async_trait]
pub trait FleetIo: Send + Sync {
    /// Saves the fleet checkpoint (atomically). An error stops the fleet run.
    fn save(&self, state: &FleetState) -> Result<(), String>;
    fn event(&self, fleet_run_id: &str, event: FleetEvent);
    /// Whether the next stage may start after `stage`: `Some(who)` approved, `None` not (yet).
    async fn approve(&self, stage: &str, next: &str) -> Option<String>;
}

/// Why a fleet run stopped before its clusters decided it.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot save the fleet checkpoint: {0}; the fleet run stopped (each cluster's own checkpoint is in that cluster)"
)]
pub struct SaveError(pub String);

/// A new fleet checkpoint for `rings`, every cluster pending.
pub fn new_state(rings: &Rings, fleet_file: &str, digest: &str) -> FleetState {
    let now = Utc::now();
    let mut state = FleetState {
        schema: FLEET_STATE_SCHEMA.to_string(),
        fleet_run_id: uuid::Uuid::new_v4().to_string(),
        fleet_file: fleet_file.to_string(),
        fleet_digest: digest.to_string(),
        state: FleetRunState::Running,
        reason: None,
        awaiting_approval: None,
        started_at: now,
        updated_at: now,
        stages: Vec::new(),
        clusters: Vec::new(),
    };
    merge(&mut state, rings);
    state
}

/// Adds the stages and clusters of `rings` the checkpoint does not know yet (a cluster ARM
/// lists since the fleet run began), pending.
pub fn merge(state: &mut FleetState, rings: &Rings) {
    for ring in &rings.rings {
        if !state.stages.iter().any(|s| s.name == ring.stage.name) {
            state.stages.push(StageRecord {
                name: ring.stage.name.clone(),
                started_at: None,
                finished_at: None,
                soak_until: None,
                approved: None,
            });
        }
        for m in &ring.clusters {
            let id = m.id.to_string();
            if state.cluster(&id).is_none() {
                state.clusters.push(ClusterRecord {
                    id,
                    stage: ring.stage.name.clone(),
                    status: ClusterStatus::Pending,
                    run_id: None,
                    exit_code: None,
                    reason: None,
                    started_at: None,
                    finished_at: None,
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;

/// Runs the rings from where `state` stands; the fleet's exit code.
pub async fn run_rings(
    rings: &Rings,
    state: &mut FleetState,
    runner: Arc<dyn ClusterRunner>,
    io: &dyn FleetIo,
    cancel: &CancellationToken,
) -> Result<u8, SaveError> {
    let id = state.fleet_run_id.clone();
    if state.state == FleetRunState::Halted {
        // A halted fleet stays halted: running it again changes nothing.
        let code = halted_code(state);
        io.event(
            &id,
            FleetEvent::FleetFinished {
                state: FleetRunState::Halted,
                exit_code: code,
                reason: state.reason.clone(),
            },
        );
        return Ok(code);
    }
    state.state = FleetRunState::Running;
    for (i, ring) in rings.rings.iter().enumerate() {
        if let Some(code) = run_stage(ring, state, runner.clone(), io, cancel).await? {
            return Ok(code);
        }
        let Some(next) = rings.rings.get(i + 1) else {
            break;
        };
        if let Some(code) = between_stages(ring, &next.stage.name, state, io, cancel).await? {
            return Ok(code);
        }
    }
    state.state = FleetRunState::Completed;
    state.reason = None;
    save(state, io)?;
    io.event(
        &id,
        FleetEvent::FleetFinished {
            state: FleetRunState::Completed,
            exit_code: exit::OK,
            reason: None,
        },
    );
    Ok(exit::OK)
}

/// Runs one stage's unsettled clusters; `Some(exit code)` when the fleet stops here.
async fn run_stage(
    ring: &Ring,
    state: &mut FleetState,
    runner: Arc<dyn ClusterRunner>,
    io: &dyn FleetIo,
    cancel: &CancellationToken,
) -> Result<Option<u8>, SaveError> {
    let name = ring.stage.name.clone();
    let fleet_id = state.fleet_run_id.clone();
    let todo: Vec<&super::Member> = ring
        .clusters
        .iter()
        .filter(|m| {
            state
                .cluster(&m.id.to_string())
                .is_none_or(|c| !c.status.settled())
        })
        .collect();
    if !todo.is_empty() {
        let rec = stage(state, &name);
        rec.started_at.get_or_insert_with(Utc::now);
        rec.finished_at = None;
        io.event(
            &fleet_id,
            FleetEvent::StageStarted {
                stage: name.clone(),
                clusters: todo.len(),
                max_concurrency: ring.concurrency,
            },
        );
    }
    let mut running = JoinSet::new();
    let mut pending = todo.into_iter();
    let mut stopped = false;
    loop {
        while !stopped && !cancel.is_cancelled() && running.len() < ring.concurrency.max(1) {
            let Some(member) = pending.next() else { break };
            let job = start_cluster(ring, &member.id, state, io)?;
            let runner = runner.clone();
            running.spawn(async move {
                let cluster = job.cluster.to_string();
                (cluster, runner.run(job).await)
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (cluster, result) = joined.unwrap_or_else(|e| {
            // A runner that panicked: the cluster's checkpoint says where it stands.
            (
                String::new(),
                ClusterResult {
                    status: ClusterStatus::Failed,
                    exit_code: Some(exit::INTERNAL),
                    reason: Some(format!("the cluster's upgrade task ended abnormally: {e}")),
                },
            )
        });
        stopped |= !result.status.lets_fleet_go_on();
        finish_cluster(&name, &cluster, result, state, io)?;
    }
    stage_outcome(ring, state, io, cancel)
}

fn stage<'a>(state: &'a mut FleetState, name: &str) -> &'a mut StageRecord {
    let i = state
        .stages
        .iter()
        .position(|s| s.name == name)
        .expect("merge added every stage");
    &mut state.stages[i]
}

fn cluster<'a>(state: &'a mut FleetState, id: &str) -> Option<&'a mut ClusterRecord> {
    state.cluster_mut(id)
}

/// Records the cluster as running under its run id (saved before it starts).
fn start_cluster(
    ring: &Ring,
    id: &ClusterId,
    state: &mut FleetState,
    io: &dyn FleetIo,
) -> Result<ClusterJob, SaveError> {
    let fleet_id = state.fleet_run_id.clone();
    let rec = cluster(state, &id.to_string()).expect("merge added every cluster");
    let resumed = rec.run_id.is_some();
    let run_id = rec
        .run_id
        .get_or_insert_with(|| uuid::Uuid::new_v4().to_string())
        .clone();
    rec.status = ClusterStatus::Running;
    rec.started_at.get_or_insert_with(Utc::now);
    rec.finished_at = None;
    save(state, io)?;
    io.event(
        &fleet_id,
        FleetEvent::ClusterStarted {
            stage: ring.stage.name.clone(),
            cluster: id.to_string(),
            run_id: run_id.clone(),
            resumed,
        },
    );
    Ok(ClusterJob {
        stage: ring.stage.clone(),
        cluster: id.clone(),
        run_id,
        resumed,
    })
}

fn finish_cluster(
    stage: &str,
    id: &str,
    result: ClusterResult,
    state: &mut FleetState,
    io: &dyn FleetIo,
) -> Result<(), SaveError> {
    let fleet_id = state.fleet_run_id.clone();
    if let Some(rec) = cluster(state, id) {
        if result.exit_code.is_none() {
            // Judged and left alone: no run of it exists.
            rec.run_id = None;
        }
        rec.status = result.status;
        rec.exit_code = result.exit_code;
        rec.reason = result.reason.clone();
        rec.finished_at = Some(Utc::now());
    }
    save(state, io)?;
    io.event(
        &fleet_id,
        FleetEvent::ClusterFinished {
            stage: stage.to_string(),
            cluster: id.to_string(),
            status: result.status,
            exit_code: result.exit_code,
            reason: result.reason,
        },
    );
    Ok(())
}

/// After a stage's clusters: `None` when every one let the fleet go on, else the fleet stops
/// (halted or paused) with its exit code.
fn stage_outcome(
    ring: &Ring,
    state: &mut FleetState,
    io: &dyn FleetIo,
    cancel: &CancellationToken,
) -> Result<Option<u8>, SaveError> {
    let name = &ring.stage.name;
    let fleet_id = state.fleet_run_id.clone();
    let records: Vec<&ClusterRecord> = state.clusters.iter().filter(|c| &c.stage == name).collect();
    let worst = records
        .iter()
        .filter(|c| !c.status.lets_fleet_go_on())
        .map(|c| (severity(c), *c))
        .max_by_key(|(s, _)| *s);
    let Some((_, worst)) = worst else {
        let rec = stage(state, name);
        if rec.finished_at.is_none() {
            rec.finished_at = Some(Utc::now());
            save(state, io)?;
            io.event(
                &fleet_id,
                FleetEvent::StageFinished {
                    stage: name.clone(),
                    ok: true,
                },
            );
        }
        return Ok(None);
    };
    let (fleet_state, code) = match worst.status {
        ClusterStatus::Pending | ClusterStatus::Running | ClusterStatus::Paused => {
            (FleetRunState::Paused, exit::PAUSED)
        }
        ClusterStatus::RolledBack => (FleetRunState::Halted, exit::ROLLED_BACK),
        _ => (
            FleetRunState::Halted,
            worst
                .exit_code
                .filter(|c| *c != exit::OK)
                .unwrap_or(exit::INTERNAL),
        ),
    };
    let reason = match worst.status {
        ClusterStatus::Pending | ClusterStatus::Running if cancel.is_cancelled() => {
            format!("interrupted in stage {name}: run fleet run again to continue")
        }
        _ => format!(
            "stage {name}: cluster {} {}{}; the following work was not started",
            worst.id,
            status_words(worst.status),
            worst
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
    };
    io.event(
        &fleet_id,
        FleetEvent::StageFinished {
            stage: name.clone(),
            ok: false,
        },
    );
    stop(state, io, fleet_state, code, reason).map(Some)
}

/// The exit code of a halted fleet: its worst cluster's.
pub fn halted_code(state: &FleetState) -> u8 {
    let worst = state
        .clusters
        .iter()
        .filter(|c| !c.status.lets_fleet_go_on())
        .max_by_key(|c| severity(c));
    match worst {
        Some(c) if c.status == ClusterStatus::RolledBack => exit::ROLLED_BACK,
        Some(c) if c.status == ClusterStatus::Failed => c
            .exit_code
            .filter(|x| *x != exit::OK)
            .unwrap_or(exit::INTERNAL),
        _ => exit::PAUSED,
    }
}

/// Which failing cluster names the fleet's outcome: a failed rollback first, then a rollback,
/// then a pause.
fn severity(c: &ClusterRecord) -> u8 {
    match c.status {
        ClusterStatus::Failed => 4,
        ClusterStatus::RolledBack => 3,
        ClusterStatus::Paused => 2,
        _ => 1,
    }
}

pub fn status_words(s: ClusterStatus) -> &'static str {
    match s {
        ClusterStatus::Pending => "has not started",
        ClusterStatus::Running => "was interrupted",
        ClusterStatus::Completed => "completed",
        ClusterStatus::UpToDate => "is up to date",
        ClusterStatus::Blocked => "is blocked",
        ClusterStatus::RolledBack => "failed its gates and was rolled back",
        ClusterStatus::Paused => "paused",
        ClusterStatus::Failed => "failed",
    }
}

fn stop(
    state: &mut FleetState,
    io: &dyn FleetIo,
    fleet_state: FleetRunState,
    code: u8,
    reason: String,
) -> Result<u8, SaveError> {
    state.state = fleet_state;
    state.reason = Some(reason.clone());
    save(state, io)?;
    let id = state.fleet_run_id.clone();
    io.event(
        &id,
        FleetEvent::FleetFinished {
            state: fleet_state,
            exit_code: code,
            reason: Some(reason),
        },
    );
    Ok(code)
}

/// The soak after a stage (its end saved, so a resumed fleet waits only the rest), then its
/// approval. `Some(exit code)` when the fleet pauses here.
async fn between_stages(
    ring: &Ring,
    next: &str,
    state: &mut FleetState,
    io: &dyn FleetIo,
    cancel: &CancellationToken,
) -> Result<Option<u8>, SaveError> {
    let name = ring.stage.name.clone();
    let fleet_id = state.fleet_run_id.clone();
    if !ring.stage.soak.is_zero() && stage(state, &name).approved.is_none() {
        let soak = chrono::Duration::from_std(ring.stage.soak).unwrap_or(chrono::Duration::MAX);
        let rec = stage(state, &name);
        let fresh = rec.soak_until.is_none();
        let until = *rec
            .soak_until
            .get_or_insert_with(|| Utc::now().checked_add_signed(soak).unwrap_or(Utc::now()));
        if fresh {
            save(state, io)?;
        }
        let left = (until - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        if !left.is_zero() {
            io.event(
                &fleet_id,
                FleetEvent::SoakStarted {
                    stage: name.clone(),
                    until,
                },
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(left) => {}
            _ = cancel.cancelled() => {
                let why = format!("interrupted during the soak after stage {name}: run fleet run again to wait the rest");
                return stop(state, io, FleetRunState::Paused, exit::PAUSED, why).map(Some);
            }
        }
    }
    if !ring.stage.approval || stage(state, &name).approved.is_some() {
        return Ok(None);
    }
    match io.approve(&name, next).await {
        Some(by) => {
            stage(state, &name).approved = Some(Approval {
                by: by.clone(),
                at: Utc::now(),
            });
            state.awaiting_approval = None;
            save(state, io)?;
            io.event(&fleet_id, FleetEvent::Approved { stage: name, by });
            Ok(None)
        }
        None => {
            let approve = format!("--approve stage:{name}");
            io.event(
                &fleet_id,
                FleetEvent::ApprovalAwaited {
                    stage: name.clone(),
                    next_stage: next.to_string(),
                    approve: approve.clone(),
                },
            );
            let why = format!(
                "stage {name} is done; stage {next} waits for its approval: run fleet run again with {approve}"
            );
            state.awaiting_approval = Some(name);
            stop(state, io, FleetRunState::Paused, exit::PAUSED, why).map(Some)
        }
    }
}

fn save(state: &mut FleetState, io: &dyn FleetIo) -> Result<(), SaveError> {
    state.updated_at = Utc::now();
    io.save(state).map_err(SaveError)
}
