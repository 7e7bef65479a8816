//! The fleet's documents: the fleet checkpoint (`fleet run --state FILE`, schema
//! [`FLEET_STATE_SCHEMA`]), the events of `fleet run --output json` (schema
//! [`FLEET_EVENTS_SCHEMA`]; each cluster's own events carry a `cluster` field beside them),
//! `fleet plan --output json` ([`FleetPlanDoc`]) and `fleet status --output json`
//! ([`FleetStatusDoc`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The fleet checkpoint's schema name.
pub const FLEET_STATE_SCHEMA: &str = "asm-canary.fleet-state/1";
/// The `schema` of the fleet's own JSON Lines events.
pub const FLEET_EVENTS_SCHEMA: &str = "asm-canary.fleet-events/1";
/// `fleet plan --output json`.
pub const FLEET_PLAN_SCHEMA: &str = "asm-canary.fleet-plan/1";
/// `fleet status --output json`.
pub const FLEET_STATUS_SCHEMA: &str = "asm-canary.fleet-status/1";

/// Where one cluster of a fleet run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterStatus {
    /// Not started yet.
    Pending,
    /// Started (its run id recorded before its first change); a fleet run killed here resumes it.
    Running,
    /// Upgraded.
    Completed,
    /// Nothing to do: already at the target (no upgrade offered).
    UpToDate,
    /// Not upgraded, and not a failure: not ready, a stale canary, another run's checkpoint —
    /// the reason says what a person does; running the fleet again judges it again.
    Blocked,
    /// Its gates failed and it was rolled back: halts the fleet.
    RolledBack,
    /// Paused (awaiting a step's approval, interrupted): resumable; halts the fleet.
    Paused,
    /// The rollback failed, or the run could not be carried out: a person must look.
    Failed,
}

impl ClusterStatus {
    /// Whether the fleet carries on past this cluster.
    pub fn lets_fleet_go_on(self) -> bool {
        matches!(
            self,
            ClusterStatus::Completed | ClusterStatus::UpToDate | ClusterStatus::Blocked
        )
    }

    /// Whether a fleet run that is run again leaves this cluster alone. A blocked cluster is
    /// judged again (read-only), so one fixed since is upgraded then.
    pub fn settled(self) -> bool {
        matches!(
            self,
            ClusterStatus::Completed | ClusterStatus::UpToDate | ClusterStatus::RolledBack
        )
    }
}

/// One cluster of the fleet checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The cluster's ARM id.
    pub id: String,
    pub stage: String,
    pub status: ClusterStatus,
    /// The run id of its upgrade (its checkpoint in the cluster's ConfigMap has this id).
    #[serde(default)]
    pub run_id: Option<String>,
    /// The upgrade's exit code, once it ended.
    #[serde(default)]
    pub exit_code: Option<u8>,
    /// Why it ended so (or is blocked).
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
}

/// One stage of the fleet checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// When its last cluster ended.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// The end of its soak (set when the stage finished well).
    #[serde(default)]
    pub soak_until: Option<DateTime<Utc>>,
    /// Who approved the next stage, and when (`--approve stage:NAME` or a person at the prompt).
    #[serde(default)]
    pub approved: Option<Approval>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub by: String,
    pub at: DateTime<Utc>,
}

/// How a fleet run stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetRunState {
    Running,
    /// Every stage ran: each cluster completed, up to date or blocked.
    Completed,
    /// A cluster failed its gates (rolled back) or failed: the following work was not started.
    Halted,
    /// Waiting for an approval between stages, or a cluster paused: `fleet run` again continues.
    Paused,
}

/// The fleet checkpoint: what `fleet run` did, so that `fleet run` again resumes and
/// `fleet status` shows the fleet. Each cluster's own checkpoint lives in that cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetState {
    pub schema: String,
    pub fleet_run_id: String,
    /// The fleet file, as given, and the SHA-256 of its bytes: a changed file is refused.
    pub fleet_file: String,
    pub fleet_digest: String,
    pub state: FleetRunState,
    #[serde(default)]
    pub reason: Option<String>,
    /// The stage whose approval the fleet waits for (`--approve stage:NAME`), while it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_approval: Option<String>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub stages: Vec<StageRecord>,
    pub clusters: Vec<ClusterRecord>,
}

impl FleetState {
    pub fn cluster(&self, id: &str) -> Option<&ClusterRecord> {
        self.clusters.iter().find(|c| c.id.eq_ignore_ascii_case(id))
    }

    pub fn cluster_mut(&mut self, id: &str) -> Option<&mut ClusterRecord> {
        self.clusters
            .iter_mut()
            .find(|c| c.id.eq_ignore_ascii_case(id))
    }

    pub fn stage_mut(&mut self, name: &str) -> Option<&mut StageRecord> {
        self.stages.iter_mut().find(|s| s.name == name)
    }

    /// How many clusters stand at each status.
    pub fn counts(&self) -> BTreeMap<ClusterStatus, usize> {
        let mut out = BTreeMap::new();
        for c in &self.clusters {
            *out.entry(c.status).or_default() += 1;
        }
        out
    }
}

/// The fleet's own events (JSON Lines, schema [`FLEET_EVENTS_SCHEMA`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FleetEvent {
    FleetStarted {
        fleet_run_id: String,
        resumed: bool,
        stages: Vec<String>,
        clusters: usize,
    },
    StageStarted {
        stage: String,
        clusters: usize,
        max_concurrency: usize,
    },
    ClusterStarted {
        stage: String,
        cluster: String,
        run_id: String,
        resumed: bool,
    },
    ClusterFinished {
        stage: String,
        cluster: String,
        status: ClusterStatus,
        exit_code: Option<u8>,
        reason: Option<String>,
    },
    StageFinished {
        stage: String,
        ok: bool,
    },
    SoakStarted {
        stage: String,
        until: DateTime<Utc>,
    },
    ApprovalAwaited {
        stage: String,
        next_stage: String,
        /// The flag that gives it: `--approve stage:NAME`.
        approve: String,
    },
    Approved {
        stage: String,
        by: String,
    },
    FleetFinished {
        state: FleetRunState,
        exit_code: u8,
        reason: Option<String>,
    },
}

/// The envelope of one fleet event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetEventRecord {
    pub schema: String,
    pub ts: DateTime<Utc>,
    pub fleet_run_id: String,
    #[serde(flatten)]
    pub event: FleetEvent,
}

/// `fleet plan --output json`.
#[derive(Debug, Clone, Serialize)]
pub struct FleetPlanDoc {
    pub schema: &'static str,
    pub fleet_file: String,
    pub stages: Vec<PlanStage>,
    /// Clusters of the fleet's sources no stage selects: never upgraded.
    pub unassigned: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanStage {
    pub name: String,
    pub max_concurrency: usize,
    pub soak_seconds: u64,
    pub approval: bool,
    pub clusters: Vec<PlanCluster>,
}

/// One cluster as the plan sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PlanCluster {
    pub id: String,
    pub location: Option<String>,
    pub provisioning_state: Option<String>,
    pub revisions: Vec<String>,
    /// The revision it would be upgraded to.
    pub target: Option<String>,
    pub verdict: Verdict,
    /// What the verdict means, for a person.
    pub detail: String,
}

/// The single-cluster preflight's verdict, as the fleet uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A canary upgrade would start.
    Ready,
    /// Already on the newest revision offered (or the pinned one).
    AtTarget,
    /// Two revisions that no run owns.
    StaleCanary,
    /// An unfinished run owns the cluster.
    InProgress,
    /// Not upgradable now: why is in `detail`.
    Blocked,
    /// The cluster could not be read.
    Unreachable,
}

/// `fleet status --output json`: the fleet checkpoint, with the next command for the fleet
/// and for each cluster.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatusDoc {
    pub schema: &'static str,
    pub fleet_run_id: String,
    pub fleet_file: String,
    pub state: FleetRunState,
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub stages: Vec<StageRecord>,
    pub clusters: Vec<StatusCluster>,
    /// The next command for the fleet; `null` when it is done.
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusCluster {
    #[serde(flatten)]
    pub record: ClusterRecord,
    /// The next command for this cluster, when a person has one to run.
    pub next: Option<String>,
}
