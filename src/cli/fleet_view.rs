//! `fleet plan` (every cluster with its revisions, target, stage and the single-cluster
//! preflight's verdict; read-only) and `fleet status` (the fleet checkpoint, with the next
//! command for the fleet and each cluster).

use std::path::PathBuf;

use asm_canary_engine::{Access, CheckpointStore, RunState};
use clap::Args;
use futures::StreamExt;

use super::args::{ClusterArgs, OutputArg};
use super::connect::{Azure, Pace};
use super::error::CliError;
use super::fleet_run::{judged, owner_run, read_fleet, read_state, rings_of, stage_options};
use crate::contract::exit;
use crate::contract::fleet::{
    ClusterStatus, FLEET_PLAN_SCHEMA, FLEET_STATUS_SCHEMA, FleetPlanDoc, FleetRunState, FleetState,
    FleetStatusDoc, PlanCluster, PlanStage, StatusCluster, Verdict,
};
use crate::fleet::Ring;
use crate::fleet::verdict::FoundRun;
use crate::k8s::state::ConfigMapStore;

/// How many clusters `fleet plan` reads at once.
const PLAN_READS: usize = 8;

#[derive(Debug, Clone, Args)]
pub struct FleetPlanArgs {
    /// The fleet file (see docs/fleet.md).
    #[arg(long, value_name = "FILE")]
    pub fleet: PathBuf,
    /// `text` for people, `json` for pipelines (one document on stdout).
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
    #[command(flatten)]
    pub azure: ClusterArgs,
}

#[derive(Debug, Clone, Args)]
pub struct FleetStatusArgs {
    /// The fleet checkpoint `fleet run` wrote.
    #[arg(long, value_name = "FILE", default_value = "asm-canary-fleet.json")]
    pub state: PathBuf,
    /// `text` for people, `json` for pipelines (one document on stdout).
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

/// `fleet plan`: reads only (ARM's list and each cluster), changes nothing.
pub async fn plan(args: FleetPlanArgs) -> Result<u8, CliError> {
    let (file, _) = read_fleet(&args.fleet)?;
    super::fleet_run::check_stage_params(&file, &Default::default())?;
    let azure = super::connect::connect_azure(&args.azure, Pace::Real, None)?;
    let rings = rings_of(&file, &azure).await?;
    let mut stages = Vec::new();
    for ring in &rings.rings {
        stages.push(plan_stage(&azure, ring).await);
    }
    let doc = FleetPlanDoc {
        schema: FLEET_PLAN_SCHEMA,
        fleet_file: args.fleet.display().to_string(),
        stages,
        unassigned: rings.unassigned.iter().map(|m| m.id.to_string()).collect(),
    };
    match args.output {
        OutputArg::Json => super::print_document("fleet plan", &doc)?,
        OutputArg::Text => super::print_stdout(&render_plan(&doc)),
    }
    Ok(exit::OK)
}

async fn plan_stage(azure: &Azure, ring: &Ring) -> PlanStage {
    let clusters = futures::stream::iter(ring.clusters.iter())
        .map(|m| plan_cluster(azure, ring, m.id.clone()))
        .buffered(PLAN_READS)
        .collect()
        .await;
    PlanStage {
        name: ring.stage.name.clone(),
        max_concurrency: ring.concurrency,
        soak_seconds: ring.stage.soak.as_secs(),
        approval: ring.stage.approval,
        clusters,
    }
}

async fn plan_cluster(azure: &Azure, ring: &Ring, id: crate::azure::ClusterId) -> PlanCluster {
    let unreachable = |detail: String| PlanCluster {
        id: id.to_string(),
        location: None,
        provisioning_state: None,
        revisions: Vec::new(),
        target: None,
        verdict: Verdict::Unreachable,
        detail,
    };
    let env = match azure.cluster(id.clone()).await {
        Ok(env) => env,
        Err(e) => return unreachable(e.chain()),
    };
    let doc = match env.arm.get_cluster(&env.cluster).await {
        Ok(doc) => doc,
        Err(e) => return unreachable(e.to_string()),
    };
    let read = async {
        let (upgrade, _) = stage_options(&ring.stage.upgrade)?;
        let found = match ConfigMapStore::new(env.kube.clone(), &env.cluster.name)
            .load(Access::ReadOnly)
            .await
        {
            Ok(Some(cp)) => Some(FoundRun {
                finished: matches!(cp.state, RunState::Completed | RunState::RolledBack),
                run_id: cp.run_id,
            }),
            _ => owner_run(&env, "").await?,
        };
        let mut j = judged(&env, &upgrade, found.as_ref()).await?;
        // What `fleet run` refuses before a cluster's first change (a `canary_namespaces` it
        // would not migrate, a tag nothing uses, …) is its verdict here too: the plan said
        // "ready" for clusters the run then skipped as blocked.
        if j.verdict == Verdict::Ready
            && let Err(e) = super::validate::validate_new_run(&env, &upgrade, false).await
        {
            if e.exit_code() != exit::BAD_INPUT {
                return Err(e);
            }
            j.verdict = Verdict::Blocked;
            j.detail = e.chain();
        }
        Ok::<_, CliError>(j)
    };
    match read.await {
        Ok(j) => PlanCluster {
            id: id.to_string(),
            location: doc.location().map(str::to_string),
            provisioning_state: doc.provisioning_state().map(str::to_string),
            revisions: doc.revisions(),
            target: j.target,
            verdict: j.verdict,
            detail: j.detail,
        },
        Err(e) => unreachable(e.chain()),
    }
}

pub fn render_plan(doc: &FleetPlanDoc) -> String {
    let mut out = format!("fleet plan for {}\n", doc.fleet_file);
    for stage in &doc.stages {
        out += &format!(
            "\nstage {} — {} clusters, at most {} at once{}{}\n",
            stage.name,
            stage.clusters.len(),
            stage.max_concurrency,
            if stage.soak_seconds > 0 {
                format!(", soak {}s after", stage.soak_seconds)
            } else {
                String::new()
            },
            if stage.approval {
                ", approval after"
            } else {
                ""
            }
        );
        for c in &stage.clusters {
            out += &format!(
                "  {:<24} {:<14} [{}] {}\n",
                c.id.rsplit('/').next().unwrap_or(&c.id),
                verdict_word(c.verdict),
                c.revisions.join(", "),
                c.detail
            );
        }
    }
    if !doc.unassigned.is_empty() {
        out += &format!(
            "\nin no stage (left alone): {}\n",
            doc.unassigned.join(", ")
        );
    }
    out
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Ready => "ready",
        Verdict::AtTarget => "at target",
        Verdict::StaleCanary => "stale canary",
        Verdict::InProgress => "in progress",
        Verdict::Blocked => "blocked",
        Verdict::Unreachable => "unreachable",
    }
}

/// `fleet status`: reads the fleet checkpoint only.
pub fn status(args: FleetStatusArgs) -> Result<u8, CliError> {
    let Some(state) = read_state(&args.state)? else {
        return Err(CliError::bad(format!(
            "--state {}: no fleet checkpoint there; give the --state of a fleet run (default asm-canary-fleet.json)",
            args.state.display()
        )));
    };
    let doc = status_doc(&state, &args.state);
    match args.output {
        OutputArg::Json => super::print_document("fleet status", &doc)?,
        OutputArg::Text => super::print_stdout(&render_status(&doc)),
    }
    Ok(exit::OK)
}

pub fn status_doc(state: &FleetState, path: &std::path::Path) -> FleetStatusDoc {
    let again = format!(
        "asm-canary fleet run --fleet {} --state {}",
        state.fleet_file,
        path.display()
    );
    let next = match state.state {
        FleetRunState::Completed => None,
        FleetRunState::Paused | FleetRunState::Running => Some(match &state.awaiting_approval {
            Some(stage) => format!("{again} --approve stage:{stage}"),
            None => again.clone(),
        }),
        FleetRunState::Halted => Some(
            "look at the failed cluster's run (its line above), fix the cause, then start a new fleet run with another --state"
                .to_string(),
        ),
    };
    let clusters = state
        .clusters
        .iter()
        .map(|c| StatusCluster {
            record: c.clone(),
            next: cluster_next(c, &again),
        })
        .collect();
    FleetStatusDoc {
        schema: FLEET_STATUS_SCHEMA,
        fleet_run_id: state.fleet_run_id.clone(),
        fleet_file: state.fleet_file.clone(),
        state: state.state,
        reason: state.reason.clone(),
        started_at: state.started_at,
        updated_at: state.updated_at,
        stages: state.stages.clone(),
        clusters,
        next,
    }
}

fn cluster_next(c: &crate::contract::fleet::ClusterRecord, again: &str) -> Option<String> {
    let its = format!("--state-backend kubernetes --cluster-id {}", c.id);
    match c.status {
        ClusterStatus::Completed | ClusterStatus::UpToDate | ClusterStatus::Pending => None,
        ClusterStatus::Running | ClusterStatus::Paused => Some(again.to_string()),
        ClusterStatus::RolledBack => Some(format!(
            "asm-canary status {its} (why it failed); fix the cause, then asm-canary state archive {its} before it is upgraded again"
        )),
        ClusterStatus::Failed => Some(format!(
            "asm-canary status {its}; then asm-canary rollback {its}"
        )),
        ClusterStatus::Blocked => c.reason.clone(),
    }
}

pub fn render_status(doc: &FleetStatusDoc) -> String {
    let mut out = format!(
        "fleet run {} ({}): {:?}{}\n",
        doc.fleet_run_id,
        doc.fleet_file,
        doc.state,
        doc.reason
            .as_deref()
            .map(|r| format!(" — {r}"))
            .unwrap_or_default()
    );
    for stage in &doc.stages {
        out += &format!("\nstage {}\n", stage.name);
        for c in doc.clusters.iter().filter(|c| c.record.stage == stage.name) {
            let line = format!(
                "  {:<24} {:<12}{}",
                c.record.id.rsplit('/').next().unwrap_or(&c.record.id),
                crate::ui::fleet::status_word(c.record.status),
                c.record
                    .reason
                    .as_deref()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default()
            );
            out += line.trim_end();
            out.push('\n');
            if let Some(next) = c
                .next
                .as_ref()
                .filter(|n| Some(*n) != c.record.reason.as_ref())
            {
                out += &format!("  {:<24} next: {next}\n", "");
            }
        }
    }
    match &doc.next {
        Some(next) => out += &format!("\nnext: {next}\n"),
        None => out += "\nnothing to do: every stage ran\n",
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A fleet halted in stage early: canary done and approved, aks-early-2 rolled back,
    /// aks-early-4 blocked, prod pending.
    fn halted() -> FleetState {
        let id = |n: &str| {
            format!(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/{n}"
            )
        };
        serde_json::from_value(json!({
            "schema": "asm-canary.fleet-state/1", "fleet_run_id": "f-1", "fleet_file": "fleet.yaml",
            "fleet_digest": "d", "state": "halted",
            "reason": "stage early: cluster aks-early-2 failed its gates and was rolled back",
            "started_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:10:00Z",
            "stages": [
                {"name": "canary", "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:02:00Z",
                 "soak_until": "2026-01-01T00:03:00Z", "approved": {"by": "--approve stage:canary (ops)", "at": "2026-01-01T00:04:00Z"}},
                {"name": "early", "started_at": "2026-01-01T00:04:00Z"},
                {"name": "prod"}
            ],
            "clusters": [
                {"id": id("aks-canary-1"), "stage": "canary", "status": "completed", "run_id": "r-1", "exit_code": 0,
                 "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:02:00Z"},
                {"id": id("aks-early-2"), "stage": "early", "status": "rolled_back", "run_id": "r-2", "exit_code": 3,
                 "reason": "step \"start\" failed", "started_at": "2026-01-01T00:04:00Z", "finished_at": "2026-01-01T00:08:00Z"},
                {"id": id("aks-early-4"), "stage": "early", "status": "blocked",
                 "reason": "aks-early-4 is Failed, not Succeeded"},
                {"id": id("aks-prod-1"), "stage": "prod", "status": "pending"}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn fleet_status_document_of_a_halted_fleet() {
        let doc = status_doc(&halted(), std::path::Path::new("fleet-run.json"));
        insta::assert_json_snapshot!("fleet_status_halted", doc);
        insta::assert_snapshot!("fleet_status_halted_text", render_status(&doc));
    }

    #[test]
    fn a_paused_fleet_awaiting_an_approval_names_the_flag() {
        let mut state = halted();
        state.state = FleetRunState::Paused;
        state.reason = Some("stage canary is done; stage early waits for its approval".into());
        state.stages[0].approved = None;
        state.awaiting_approval = Some("canary".into());
        let doc = status_doc(&state, std::path::Path::new("fleet-run.json"));
        assert_eq!(
            doc.next.as_deref(),
            Some(
                "asm-canary fleet run --fleet fleet.yaml --state fleet-run.json --approve stage:canary"
            )
        );
    }

    /// `fleet status` read the awaited approval from the reason's words: a fleet paused for
    /// another cause, whose reason quoted `--approve`, was told to approve a stage.
    #[test]
    fn a_paused_fleet_not_awaiting_an_approval_is_not_told_to_approve() {
        let mut state = halted();
        state.state = FleetRunState::Paused;
        state.reason = Some("cluster aks-early-1 paused: its run awaits --approve complete".into());
        state.stages[0].approved = None;
        let doc = status_doc(&state, std::path::Path::new("fleet-run.json"));
        assert_eq!(
            doc.next.as_deref(),
            Some("asm-canary fleet run --fleet fleet.yaml --state fleet-run.json")
        );
    }

    #[test]
    fn fleet_report_has_a_table_per_stage_and_a_timeline() {
        insta::assert_snapshot!(
            "fleet_report_halted",
            crate::fleet::report::markdown(&halted())
        );
    }
}
