use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::fleet::{FleetFile, Member, assign};

const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn member(name: &str, ring: &str) -> Member {
    Member {
        id: ClusterId::new(SUB, "rg", name).unwrap(),
        tags: BTreeMap::from([("ring".to_string(), ring.to_string())]),
    }
}

/// canary (1 cluster, approval after), early (3 clusters, 2 at once), prod (4 clusters, all at once).
fn rings() -> Rings {
    let text = format!(
        "apiVersion: asm-canary.fleet/1
clusters:
  - subscription: {SUB}
stages:
  - name: canary
    selector: {{tags: {{ring: canary}}}}
    after: {{approval: true}}
  - name: early
    selector: {{tags: {{ring: early}}}}
    max_concurrency: 2
  - name: prod
    selector: {{tags: {{ring: prod}}}}
    max_concurrency: 4
"
    );
    let fleet = FleetFile::parse(&text, "fleet.yaml").unwrap();
    let mut clusters = vec![member("c1", "canary")];
    clusters.extend((1..=3).map(|i| member(&format!("e{i}"), "early")));
    clusters.extend((1..=4).map(|i| member(&format!("p{i}"), "prod")));
    assign(&fleet, &clusters).unwrap()
}

/// Records each job, how many ran at once, and answers per cluster name.
#[derive(Default)]
struct Fake {
    answers: HashMap<String, ClusterStatus>,
    jobs: Mutex<Vec<ClusterJob>>,
    now: AtomicUsize,
    peak: AtomicUsize,
}

#[async_trait]
impl ClusterRunner for Fake {
    async fn run(&self, job: ClusterJob) -> ClusterResult {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        self.jobs.lock().unwrap().push(job.clone());
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        let status = *self
            .answers
            .get(&job.cluster.name)
            .unwrap_or(&ClusterStatus::Completed);
        ClusterResult {
            status,
            exit_code: match status {
                ClusterStatus::RolledBack => Some(exit::ROLLED_BACK),
                ClusterStatus::Paused => Some(exit::PAUSED),
                ClusterStatus::Blocked | ClusterStatus::UpToDate => None,
                _ => Some(exit::OK),
            },
            reason: None,
        }
    }
}

impl Fake {
    fn ran(&self) -> Vec<String> {
        let jobs = self.jobs.lock().unwrap();
        jobs.iter().map(|j| j.cluster.name.clone()).collect()
    }
}

#[derive(Default)]
struct Io {
    approve: Vec<String>,
    saved: Mutex<Vec<FleetState>>,
    events: Mutex<Vec<FleetEvent>>,
}

#[async_trait]
impl FleetIo for Io {
    fn save(&self, state: &FleetState) -> Result<(), String> {
        self.saved.lock().unwrap().push(state.clone());
        Ok(())
    }
    fn event(&self, _id: &str, event: FleetEvent) {
        self.events.lock().unwrap().push(event);
    }
    async fn approve(&self, stage: &str, _next: &str) -> Option<String> {
        self.approve
            .iter()
            .any(|s| s == stage)
            .then(|| "test".to_string())
    }
}

async fn go(rings: &Rings, state: &mut FleetState, fake: &Arc<Fake>, io: &Io) -> u8 {
    let runner: Arc<dyn ClusterRunner> = fake.clone();
    run_rings(rings, state, runner, io, &CancellationToken::new())
        .await
        .unwrap()
}

#[tokio::test]
async fn stages_run_in_order_within_their_concurrency_and_pause_for_the_approval() {
    let rings = rings();
    let mut state = new_state(&rings, "fleet.yaml", "d");
    let fake = Arc::new(Fake::default());
    let io = Io::default();
    assert_eq!(go(&rings, &mut state, &fake, &io).await, exit::PAUSED);
    assert_eq!(fake.ran(), ["c1"]);
    assert_eq!(state.state, FleetRunState::Paused);
    assert_eq!(state.awaiting_approval.as_deref(), Some("canary"));
    assert!(
        io.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, FleetEvent::ApprovalAwaited { stage, approve, .. } if stage == "canary" && approve == "--approve stage:canary"))
    );

    // Approved: the rest runs, canary is not run again; early 2 at once, prod 4 at once.
    let io = Io {
        approve: vec!["canary".into()],
        ..Io::default()
    };
    let fake = Arc::new(Fake::default());
    assert_eq!(go(&rings, &mut state, &fake, &io).await, exit::OK);
    let ran = fake.ran();
    assert_eq!(ran.len(), 7, "{ran:?}");
    let early_done = ran.iter().rposition(|n| n.starts_with('e')).unwrap();
    let prod_first = ran.iter().position(|n| n.starts_with('p')).unwrap();
    assert!(early_done < prod_first, "{ran:?}");
    assert!(fake.peak.load(Ordering::SeqCst) <= 4);
    assert_eq!(state.state, FleetRunState::Completed);
    assert_eq!(state.awaiting_approval, None);
    assert!(
        state
            .clusters
            .iter()
            .all(|c| c.status == ClusterStatus::Completed)
    );
}

#[tokio::test]
async fn a_stage_never_runs_more_clusters_at_once_than_its_max_concurrency() {
    let rings = rings();
    let mut state = new_state(&rings, "fleet.yaml", "d");
    // Only the early stage (max 2) runs this time.
    for c in &mut state.clusters {
        if c.stage != "early" {
            c.status = ClusterStatus::Completed;
        }
    }
    state.stages[0].approved = Some(Approval {
        by: "t".into(),
        at: Utc::now(),
    });
    let fake = Arc::new(Fake::default());
    assert_eq!(
        go(&rings, &mut state, &fake, &Io::default()).await,
        exit::OK
    );
    assert_eq!(fake.ran().len(), 3);
    assert_eq!(fake.peak.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_rolled_back_cluster_halts_its_stage_and_the_next_and_stays_halted() {
    let rings = rings();
    let mut state = new_state(&rings, "fleet.yaml", "d");
    state.stages[0].approved = Some(Approval {
        by: "t".into(),
        at: Utc::now(),
    });
    state.clusters[0].status = ClusterStatus::Completed;
    let fake = Arc::new(Fake {
        answers: HashMap::from([("e1".to_string(), ClusterStatus::RolledBack)]),
        ..Fake::default()
    });
    assert_eq!(
        go(&rings, &mut state, &fake, &Io::default()).await,
        exit::ROLLED_BACK
    );
    // e1 and e2 started together; e3 never started, nor any prod cluster.
    let mut ran = fake.ran();
    ran.sort();
    assert_eq!(ran, ["e1", "e2"]);
    assert_eq!(state.state, FleetRunState::Halted);
    assert_eq!(
        state
            .cluster(&member("e3", "").id.to_string())
            .unwrap()
            .status,
        ClusterStatus::Pending
    );
    assert!(
        state.reason.as_deref().unwrap().contains("e1"),
        "{:?}",
        state.reason
    );

    // Running it again changes nothing.
    let again = Arc::new(Fake::default());
    assert_eq!(
        go(&rings, &mut state, &again, &Io::default()).await,
        exit::ROLLED_BACK
    );
    assert!(again.ran().is_empty());
}

#[tokio::test]
async fn a_resumed_fleet_gives_a_started_cluster_its_saved_run_id_and_skips_finished_ones() {
    let rings = rings();
    let mut state = new_state(&rings, "fleet.yaml", "d");
    state.stages[0].approved = Some(Approval {
        by: "t".into(),
        at: Utc::now(),
    });
    state.clusters[0].status = ClusterStatus::Completed;
    // Killed mid-stage: e1 finished, e2 was running under run id r-e2.
    state.clusters[1].status = ClusterStatus::Completed;
    state.clusters[1].run_id = Some("r-e1".into());
    state.clusters[2].status = ClusterStatus::Running;
    state.clusters[2].run_id = Some("r-e2".into());
    let fake = Arc::new(Fake::default());
    let io = Io::default();
    assert_eq!(go(&rings, &mut state, &fake, &io).await, exit::OK);
    let jobs = fake.jobs.lock().unwrap().clone();
    assert!(
        !jobs
            .iter()
            .any(|j| j.cluster.name == "e1" || j.cluster.name == "c1")
    );
    let e2 = jobs.iter().find(|j| j.cluster.name == "e2").unwrap();
    assert_eq!(e2.run_id, "r-e2");
    assert!(e2.resumed);
    let e3 = jobs.iter().find(|j| j.cluster.name == "e3").unwrap();
    assert!(!e3.resumed);
    // Every job's run id was saved before it started.
    let saved = io.saved.lock().unwrap();
    for j in &jobs {
        let first_running = saved
            .iter()
            .find(|s| s.cluster(&j.cluster.to_string()).unwrap().status == ClusterStatus::Running)
            .unwrap();
        assert_eq!(
            first_running
                .cluster(&j.cluster.to_string())
                .unwrap()
                .run_id
                .as_deref(),
            Some(j.run_id.as_str())
        );
    }
}

#[tokio::test]
async fn blocked_and_up_to_date_clusters_do_not_halt_the_fleet() {
    let rings = rings();
    let mut state = new_state(&rings, "fleet.yaml", "d");
    let fake = Arc::new(Fake {
        answers: HashMap::from([
            ("c1".to_string(), ClusterStatus::UpToDate),
            ("e2".to_string(), ClusterStatus::Blocked),
        ]),
        ..Fake::default()
    });
    let io = Io {
        approve: vec!["canary".into()],
        ..Io::default()
    };
    assert_eq!(go(&rings, &mut state, &fake, &io).await, exit::OK);
    assert_eq!(fake.ran().len(), 8);
    let e2 = member("e2", "").id.to_string();
    assert_eq!(
        state.cluster(&e2).unwrap().run_id,
        None,
        "judged, never run"
    );

    // Run again: only the blocked cluster is judged again (it may have been fixed since).
    let again = Arc::new(Fake::default());
    assert_eq!(go(&rings, &mut state, &again, &io).await, exit::OK);
    assert_eq!(again.ran(), ["e2"]);
    assert_eq!(state.cluster(&e2).unwrap().status, ClusterStatus::Completed);
}

#[tokio::test]
async fn a_soak_is_saved_once_and_waited_only_for_what_is_left() {
    let text = format!(
        "apiVersion: asm-canary.fleet/1
clusters:
  - subscription: {SUB}
stages:
  - name: a
    selector: {{tags: {{ring: a}}}}
    after: {{soak: 1h}}
  - name: b
    selector: {{tags: {{ring: b}}}}
"
    );
    let fleet = FleetFile::parse(&text, "fleet.yaml").unwrap();
    let rings = assign(&fleet, &[member("a1", "a"), member("b1", "b")]).unwrap();
    let mut state = new_state(&rings, "fleet.yaml", "d");
    state.clusters[0].status = ClusterStatus::Completed;
    state.stages[0].finished_at = Some(Utc::now());
    // The soak began an hour ago (a fleet run killed during it): nothing left to wait.
    state.stages[0].soak_until = Some(Utc::now() - chrono::Duration::seconds(1));
    let fake = Arc::new(Fake::default());
    let io = Io::default();
    let run = go(&rings, &mut state, &fake, &io);
    let code = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the soak already ended: no wait");
    assert_eq!(code, exit::OK);
    assert_eq!(fake.ran(), ["b1"]);
}
