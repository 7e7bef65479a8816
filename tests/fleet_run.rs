//! `fleet run`, `fleet status` and `fleet plan` against the simulated fleet, through the real
//! binary: stage order and concurrency seen in the fleet's request log, the failing cluster
//! rolled back and the rest halted, approvals that pause and resume, and a fleet run killed
//! mid-stage that resumes without repeating any cluster's side effects.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use asm_canary_sim::{
    FleetHandle, FleetMember, FleetOptions, FleetRequest, FleetScenario, Scenario,
};
use serde_json::Value;

/// Runbook params for the simulator's scaled clock, as a fleet file's `params:`.
const FAST_PARAMS: &str = "{soak: 1s, wave_soak: 500ms, poll_interval: 200ms, control_plane_timeout: 30s, rollout_timeout: 60s, verify_timeout: 20s}";

struct Fleet {
    handle: FleetHandle,
    dir: tempfile::TempDir,
    ca_file: PathBuf,
}

impl Fleet {
    async fn start(mut scenario: FleetScenario) -> Self {
        for m in &mut scenario.members {
            m.scenario.time_scale = 0.002;
        }
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        let mut opts = FleetOptions::new(scenario);
        opts.ca_file = Some(ca_file.clone());
        let handle = asm_canary_sim::start_fleet(opts)
            .await
            .expect("fleet starts");
        Fleet {
            handle,
            dir,
            ca_file,
        }
    }

    /// Writes the fleet file: every subscription of the fleet, then `stages`.
    fn fleet_file(&self, stages: &str) -> PathBuf {
        let sources: String = (self.handle.info.subscriptions.iter())
            .map(|s| format!("  - subscription: {s}\n"))
            .collect();
        let text = format!(
            "apiVersion: asm-canary.fleet/1\nclusters:\n{sources}stages:\n{stages}upgrade:\n  params: {FAST_PARAMS}\n"
        );
        let path = self.dir.path().join("fleet.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("fleet-run.json")
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        common::binary_for(args, self.handle.info.env_lines(), &self.ca_file)
    }

    async fn fleet_run(&self, fleet: &Path, extra: &[&str]) -> Output {
        let state = self.state();
        let mut args = vec![
            "fleet",
            "run",
            "--fleet",
            fleet.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--unattended",
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        self.command(&args).output().await.unwrap()
    }

    /// `fleet run` of `fleet` in the background, JSON Lines, unattended; its stderr goes to
    /// `run.err` in the test's folder (a pipe nobody reads would stall it).
    fn spawn_run(&self, fleet: &Path) -> tokio::process::Child {
        let err = std::fs::File::create(self.dir.path().join("run.err")).unwrap();
        let state = self.state();
        self.command(&[
            "fleet",
            "run",
            "--fleet",
            fleet.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--unattended",
            "--output",
            "json",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap()
    }

    /// Waits until `cluster` has sent its first ARM PUT (its canary start): it has begun
    /// changing its cluster.
    async fn until_started(&self, cluster: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let started = |rs: &Vec<FleetRequest>| {
            rs.iter()
                .any(|r| r.record.api == "arm" && r.record.method == "PUT")
        };
        while !self.requests_by_cluster().get(cluster).is_some_and(started) {
            assert!(
                std::time::Instant::now() < deadline,
                "{cluster} never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `fleet plan` of `fleet` as text (exit 0).
    async fn plan_text(&self, fleet: &Path) -> String {
        let out = self
            .command(&["fleet", "plan", "--fleet", fleet.to_str().unwrap()])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn status(&self) -> Value {
        let state = self.state();
        let out = self
            .command(&[
                "fleet",
                "status",
                "--state",
                state.to_str().unwrap(),
                "--output",
                "json",
            ])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The fleet's mutating requests by cluster name (without listClusterUserCredential, a
    /// POST that reads).
    fn requests_by_cluster(&self) -> BTreeMap<String, Vec<FleetRequest>> {
        let mut out: BTreeMap<String, Vec<FleetRequest>> = BTreeMap::new();
        let changes = self.handle.requests().into_iter();
        for r in changes.filter(|r| !r.record.path.contains("listClusterUserCredential")) {
            if let Some(c) = &r.cluster {
                let name = c.rsplit('/').next().unwrap().to_string();
                out.entry(name).or_default().push(r);
            }
        }
        out
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn status_of<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"].as_str().unwrap().ends_with(&format!("/{name}")))
        .unwrap_or_else(|| panic!("{name} in {status}"))
}

/// The (first, last) fleet-wide order of each cluster's mutating requests.
fn spans(by: &BTreeMap<String, Vec<FleetRequest>>) -> BTreeMap<String, (u64, u64)> {
    by.iter()
        .map(|(n, rs)| {
            let first = rs.iter().map(|r| r.order).min().unwrap();
            let last = rs.iter().map(|r| r.order).max().unwrap();
            (n.clone(), (first, last))
        })
        .collect()
}

/// Most clusters whose request spans overlap at one point.
fn most_at_once(spans: &[(u64, u64)]) -> usize {
    spans
        .iter()
        .map(|(s, _)| spans.iter().filter(|(a, b)| a <= s && s <= b).count())
        .max()
        .unwrap_or(0)
}

const THREE_RINGS: &str = "  - name: canary
    selector: {tags: {asm-canary/ring: canary}}
    after: {approval: true}
  - name: early
    selector: {tags: {asm-canary/ring: early}}
    max_concurrency: 2
    upgrade:
      params: {control_plane_timeout: 6s}
  - name: prod
    selector: {tags: {asm-canary/ring: prod}}
    max_concurrency: 3
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failing_cluster_is_rolled_back_and_halts_its_ring_and_the_next() {
    let fleet = Fleet::start(FleetScenario::builtin("fleet").unwrap()).await;
    let file = fleet.fleet_file(THREE_RINGS);
    let out = fleet.fleet_run(&file, &["--approve", "stage:canary"]).await;
    let tail: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .rev()
        .take(30)
        .collect();
    assert_eq!(out.status.code(), Some(3), "{}\n{tail:#?}", stderr(&out));
    let evs = events(&out);
    // Every cluster event names its cluster; the fleet's last event says halted.
    assert!(
        evs.iter().any(|e| e["event"] == "step_failed"
            && e["cluster"]
                .as_str()
                .unwrap_or("")
                .ends_with("/aks-early-2")),
        "{evs:?}"
    );
    let last = evs.last().unwrap();
    assert_eq!(last["event"], "fleet_finished");
    assert_eq!(last["state"], "halted");
    assert!(
        last["reason"].as_str().unwrap().contains("aks-early-2"),
        "{last}"
    );

    let by = fleet.requests_by_cluster();
    let span = spans(&by);
    // The canary ring before the early ring; nothing in prod; aks-early-4 (not ready) and
    // aks-canary-3 (at the newest) changed nothing.
    let canary_last = ["aks-canary-1", "aks-canary-2"]
        .iter()
        .map(|n| span[*n].1)
        .max()
        .unwrap();
    let early_first = ["aks-early-1", "aks-early-2"]
        .iter()
        .map(|n| span[*n].0)
        .min()
        .unwrap();
    assert!(canary_last < early_first, "{span:?}");
    assert!(!span.keys().any(|n| n.starts_with("aks-prod")), "{span:?}");
    assert!(!span.contains_key("aks-canary-3"), "{span:?}");
    assert!(!span.contains_key("aks-early-4"), "{span:?}");
    let early: Vec<(u64, u64)> = span
        .iter()
        .filter(|(n, _)| n.starts_with("aks-early"))
        .map(|(_, s)| *s)
        .collect();
    assert!(most_at_once(&early) <= 2, "{span:?}");

    let status = fleet.status().await;
    assert_eq!(status["state"], "halted");
    assert_eq!(status_of(&status, "aks-early-2")["status"], "rolled_back");
    assert!(
        status_of(&status, "aks-early-2")["next"]
            .as_str()
            .unwrap()
            .contains("asm-canary status --state-backend kubernetes")
    );
    assert_eq!(status_of(&status, "aks-canary-1")["status"], "completed");
    assert_eq!(status_of(&status, "aks-canary-3")["status"], "up_to_date");
    assert_eq!(status_of(&status, "aks-prod-1")["status"], "pending");

    // Running the halted fleet again changes nothing.
    let before = fleet.requests_by_cluster();
    let again = fleet.fleet_run(&file, &[]).await;
    assert_eq!(again.status.code(), Some(3), "{}", stderr(&again));
    assert_eq!(spans(&fleet.requests_by_cluster()), spans(&before));
}

/// Four healthy clusters: two in ring a, two in ring b.
fn two_rings() -> FleetScenario {
    let healthy = Scenario::builtin("healthy").unwrap();
    let sub = "5ca1ab1e-0000-4000-8000-0000000000aa";
    let members = ["a", "a", "b", "b"]
        .iter()
        .enumerate()
        .map(|(i, ring)| {
            FleetMember::new(sub, "rg", &format!("aks-{ring}-{i}"), healthy.clone()).in_ring(ring)
        })
        .collect();
    FleetScenario {
        members,
        ..FleetScenario::default()
    }
}

const TWO_RINGS: &str = "  - name: a
    selector: {tags: {asm-canary/ring: a}}
    max_concurrency: 2
    after: {approval: true}
  - name: b
    selector: {tags: {asm-canary/ring: b}}
    max_concurrency: 2
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_between_stages_pauses_the_fleet_until_approve_stage_is_given() {
    let fleet = Fleet::start(two_rings()).await;
    let file = fleet.fleet_file(TWO_RINGS);
    let out = fleet.fleet_run(&file, &[]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let evs = events(&out);
    assert!(
        evs.iter()
            .any(|e| e["event"] == "approval_awaited" && e["approve"] == "--approve stage:a"),
        "{evs:?}"
    );
    let by = fleet.requests_by_cluster();
    assert!(
        by.contains_key("aks-a-0") && by.contains_key("aks-a-1"),
        "{:?}",
        by.keys()
    );
    assert!(
        !by.keys().any(|n| n.starts_with("aks-b")),
        "{:?}",
        by.keys()
    );
    let status = fleet.status().await;
    assert_eq!(status["state"], "paused");
    assert!(
        status["next"]
            .as_str()
            .unwrap()
            .ends_with("--approve stage:a"),
        "{status}"
    );

    let a_before: usize = by
        .iter()
        .filter(|(n, _)| n.starts_with("aks-a"))
        .map(|(_, r)| r.len())
        .sum();
    let out = fleet.fleet_run(&file, &["--approve", "stage:a"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let by = fleet.requests_by_cluster();
    let a_after: usize = by
        .iter()
        .filter(|(n, _)| n.starts_with("aks-a"))
        .map(|(_, r)| r.len())
        .sum();
    assert_eq!(a_before, a_after, "ring a was not touched again");
    assert!(by.contains_key("aks-b-2") && by.contains_key("aks-b-3"));
    let status = fleet.status().await;
    assert_eq!(status["state"], "completed");
    assert!(status["next"].is_null());
    // The clusters it upgraded keep their finished checkpoints: the next plan called them
    // blocked ("set it aside with state archive"), though they are at their target.
    let text = fleet.plan_text(&file).await;
    for name in ["aks-a-0", "aks-b-2"] {
        let line = text.lines().find(|l| l.contains(name)).unwrap_or_default();
        assert!(line.contains("at target"), "{name}: {text}");
    }
}

/// ARM PUTs of each cluster (start and complete: two per upgrade) and restart PATCHes per
/// Deployment.
fn side_effects(by: &BTreeMap<String, Vec<FleetRequest>>) -> BTreeMap<String, (usize, usize)> {
    by.iter()
        .map(|(n, rs)| {
            let puts = rs
                .iter()
                .filter(|r| r.record.api == "arm" && r.record.method == "PUT")
                .count();
            let mut patches: BTreeMap<&str, usize> = BTreeMap::new();
            for r in rs
                .iter()
                .filter(|r| r.record.method == "PATCH" && r.record.path.contains("/deployments/"))
            {
                *patches.entry(r.record.path.as_str()).or_default() += 1;
            }
            (
                n.clone(),
                (puts, patches.values().copied().max().unwrap_or(0)),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_run_killed_mid_stage_resumes_without_repeating_side_effects() {
    let fleet = Fleet::start(two_rings()).await;
    let file = fleet.fleet_file(&TWO_RINGS.replace("    after: {approval: true}\n", ""));
    let state = fleet.state();
    let mut child = fleet.spawn_run(&file);
    // Kill it once a ring-b cluster has begun changing its cluster.
    fleet.until_started("aks-b-2").await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["state"], "running", "killed while running: {saved}");

    let out = fleet.fleet_run(&file, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let evs = events(&out);
    assert!(
        evs.iter()
            .any(|e| e["event"] == "cluster_started" && e["resumed"] == true),
        "{evs:?}"
    );
    for (name, (puts, patches)) in side_effects(&fleet.requests_by_cluster()) {
        assert_eq!(puts, 2, "{name}: one start and one complete");
        assert_eq!(patches, 1, "{name}: each Deployment restarted once");
    }
    let status = fleet.status().await;
    assert_eq!(status["state"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_plan_shows_each_cluster_with_its_verdict_and_changes_nothing() {
    let fleet = Fleet::start(FleetScenario::builtin("fleet").unwrap()).await;
    let file = fleet.fleet_file(THREE_RINGS);
    let out = fleet
        .command(&[
            "fleet",
            "plan",
            "--fleet",
            file.to_str().unwrap(),
            "--output",
            "json",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut verdicts = BTreeMap::new();
    for stage in doc["stages"].as_array().unwrap() {
        for c in stage["clusters"].as_array().unwrap() {
            let name = c["id"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string();
            verdicts.insert(
                name,
                (
                    stage["name"].as_str().unwrap().to_string(),
                    c["verdict"].as_str().unwrap().to_string(),
                ),
            );
        }
    }
    assert_eq!(verdicts.len(), 12, "{doc}");
    assert_eq!(verdicts["aks-canary-1"], ("canary".into(), "ready".into()));
    assert_eq!(verdicts["aks-canary-3"].1, "at-target");
    assert_eq!(verdicts["aks-early-4"].1, "blocked");
    assert_eq!(verdicts["aks-prod-4"].1, "stale-canary");
    // A canary namespace no cluster of the stage has: the plan said "ready" and the run then
    // skipped each cluster as blocked. The plan says blocked, with the run's reason.
    let typo = THREE_RINGS.replace(
        "    after: {approval: true}\n",
        "    after: {approval: true}\n    upgrade:\n      canary_namespaces: [nosuchns]\n",
    );
    let file = fleet.fleet_file(&typo);
    let text = fleet.plan_text(&file).await;
    let line = text
        .lines()
        .find(|l| l.contains("aks-canary-1"))
        .unwrap_or_default();
    assert!(
        line.contains("blocked") && line.contains("nosuchns"),
        "{text}"
    );
    // The refusals include the server-side dry run of the shared ConfigMap's copy, a POST
    // the simulator's log cannot tell from a create (as tests/e2e_traps.rs allows it).
    assert!(
        fleet.handle.requests().iter().all(|r| r.cluster.is_none()
            || r.record.method == "POST" && r.record.path.contains("listClusterUserCredential")
            || r.record.api == "kube"
                && r.record.method == "POST"
                && r.record.path.ends_with("/configmaps")),
        "fleet plan changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_fleet_runs_three_rings_halts_at_the_failing_cluster_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("fleet.json");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
        .args([
            "demo",
            "--scenario",
            "fleet",
            "--unattended",
            "--output",
            "json",
            "--state",
        ])
        .arg(&state)
        .env_remove("ASM_CANARY_LOG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let evs = events(&out);
    let last = evs.last().unwrap();
    assert_eq!(last["event"], "fleet_finished", "{last}");
    assert!(
        last["reason"].as_str().unwrap().contains("aks-early-2"),
        "{last}"
    );
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let status = |name: &str| {
        saved["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"].as_str().unwrap().ends_with(name))
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("/aks-early-2"), "rolled_back");
    assert_eq!(status("/aks-canary-1"), "completed");
    assert_eq!(status("/aks-prod-1"), "pending");
    assert!(dir.path().join("fleet.json.report.md").exists());
}

/// `fleet run` with `args` in an empty folder and no Azure settings at all: refused (exit 2)
/// before ARM is asked anything, with `want` in the message, and no fleet checkpoint written.
async fn refused(fleet_text: &str, state_text: Option<&str>, args: &[&str], want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.yaml");
    std::fs::write(&file, fleet_text).unwrap();
    let state = dir.path().join("fleet-run.json");
    if let Some(text) = state_text {
        std::fs::write(&state, text).unwrap();
    }
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
        .args(["fleet", "run", "--unattended", "--fleet"])
        .arg(&file)
        .arg("--state")
        .arg(&state)
        .args(args)
        .env("ASM_CANARY_ARM_ENDPOINT", "https://127.0.0.1:9")
        .env_remove("ASM_CANARY_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(want), "{want:?} in {err}");
    match state_text {
        Some(text) => assert_eq!(
            std::fs::read_to_string(&state).unwrap(),
            text,
            "left untouched"
        ),
        None => assert!(!state.exists(), "no fleet checkpoint written"),
    }
}

const ONE_STAGE: &str = "apiVersion: asm-canary.fleet/1
clusters:
  - id: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks-1
stages:
  - name: prod
    selector: {names: [aks-1]}
";

#[tokio::test]
async fn fleet_run_refuses_an_approval_that_is_not_a_stage() {
    refused(
        ONE_STAGE,
        None,
        &["--approve", "start"],
        "--approve stage:NAME",
    )
    .await;
    refused(
        ONE_STAGE,
        None,
        &["--approve", "stage:canary"],
        "has no stage \"canary\"",
    )
    .await;
    // The last stage: no stage follows it to let start; it was accepted without a word.
    refused(
        ONE_STAGE,
        None,
        &["--approve", "stage:prod"],
        "prod is the last stage",
    )
    .await;
}

#[tokio::test]
async fn fleet_run_refuses_a_corrupt_fleet_checkpoint_and_leaves_it_untouched() {
    refused(
        ONE_STAGE,
        Some("{\"schema\": \"asm-canary.fleet-state/1\", \"trunc"),
        &[],
        "not a fleet checkpoint",
    )
    .await;
}

#[tokio::test]
async fn fleet_run_refuses_to_continue_with_a_changed_fleet_file() {
    let state = r#"{"schema":"asm-canary.fleet-state/1","fleet_run_id":"f","fleet_file":"fleet.yaml","fleet_digest":"0000","state":"paused","started_at":"2026-11-30T00:00:00Z","updated_at":"2026-11-30T00:00:00Z","stages":[],"clusters":[]}"#;
    refused(
        ONE_STAGE,
        Some(state),
        &[],
        "another version of the fleet file",
    )
    .await;
}

#[tokio::test]
async fn fleet_run_refuses_a_bad_fleet_file_at_its_line_and_a_kubeconfig() {
    refused(
        "apiVersion: asm-canary.fleet/1\nclusters: []\nstages: []\n",
        None,
        &[],
        "fleet.yaml:",
    )
    .await;
    refused(
        ONE_STAGE,
        None,
        &["--kubeconfig", "/dev/null"],
        "--kubeconfig",
    )
    .await;
    let bad_param = format!("{ONE_STAGE}upgrade:\n  params: {{soak: [1]}}\n");
    refused(&bad_param, None, &[], "fleet.yaml:").await;
}

#[tokio::test]
async fn fleet_status_without_a_fleet_checkpoint_says_which_file_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
        .args(["fleet", "status", "--state"])
        .arg(dir.path().join("none.json"))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no fleet checkpoint there"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_run_stopped_by_sigterm_pauses_its_clusters_and_resumes_them() {
    let fleet = Fleet::start(two_rings()).await;
    let file = fleet.fleet_file(&TWO_RINGS.replace("    after: {approval: true}\n", ""));
    let child = fleet.spawn_run(&file);
    let pid = child.id().unwrap();
    fleet.until_started("aks-a-0").await;
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let code = child.wait_with_output().await.unwrap().status.code();
    let err = std::fs::read_to_string(fleet.dir.path().join("run.err")).unwrap();
    assert_eq!(code, Some(4), "{err}");
    let status = fleet.status().await;
    assert_eq!(status["state"], "paused", "{status}");
    assert_eq!(
        status_of(&status, "aks-a-0")["status"],
        "paused",
        "{status}"
    );
    assert!(
        status["next"].as_str().unwrap().contains("fleet run"),
        "{status}"
    );

    let out = fleet.fleet_run(&file, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (name, (puts, patches)) in side_effects(&fleet.requests_by_cluster()) {
        assert_eq!(puts, 2, "{name}: one start and one complete");
        assert_eq!(patches, 1, "{name}: each Deployment restarted once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_cannot_be_reached_pauses_the_fleet_instead_of_halting_it() {
    let fleet = Fleet::start(two_rings()).await;
    let missing = "/subscriptions/5ca1ab1e-0000-4000-8000-0000000000aa/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks-gone";
    let dir = fleet.dir.path();
    let file = dir.join("fleet.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: asm-canary.fleet/1\nclusters:\n  - id: {missing}\nstages:\n  - name: one\n    selector: {{names: [aks-gone]}}\nupgrade:\n  params: {FAST_PARAMS}\n"
        ),
    )
    .unwrap();
    let out = fleet.fleet_run(&file, &[]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let status = fleet.status().await;
    assert_eq!(status["state"], "paused", "{status}");
    let gone = status_of(&status, "aks-gone");
    assert_eq!(gone["status"], "paused", "{status}");
    assert!(
        gone["reason"].as_str().unwrap().contains("aks-gone"),
        "{gone}"
    );
    assert!(
        status["next"].as_str().unwrap().contains("fleet run"),
        "{status}"
    );
}
