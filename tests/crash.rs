//! Crash injection: the real binary is killed with SIGKILL at every step boundary and at
//! seeded points inside every step (between an ARM PUT being accepted and its LRO finishing,
//! mid restart wave, …), then `resume` or `rollback` finishes the run. Every case asserts the
//! invariants from `/_sim/state`, `/_sim/requests` and the Kubernetes API (see [`Invariants`]).
//!
//! The kill moment is picked from the JSON event stream (`--output json`): the nth event that
//! matches, plus a seeded delay. The set is fixed (seed [`SEED`]) so CI is reproducible; the
//! `soak` test (ignored) draws random kill points for as long as `CRASH_SOAK_CASES` says.
//! After every kill, a second run with its own checkpoint (the dead run's Lease broken) must be
//! refused by the owner record and change nothing before the killed run is finished.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use common::{FAST, TestSim};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const SOURCE: &str = "asm-1-27";
const TARGET: &str = "asm-1-29";
const SEED: u64 = 0x5eed_c0de;

/// Where to kill: the `nth` (1-based) event `event` of `step` (with `kind`/`done` for
/// side effects), then `delay_ms` later.
#[derive(Clone, Copy, Debug)]
pub struct KillAt {
    pub step: &'static str,
    pub event: &'static str,
    pub kind: Option<&'static str>,
    pub done: Option<bool>,
    pub nth: usize,
    pub delay_ms: u64,
}

impl KillAt {
    const fn at(step: &'static str, event: &'static str) -> Self {
        KillAt {
            step,
            event,
            kind: None,
            done: None,
            nth: 1,
            delay_ms: 0,
        }
    }
    const fn effect(step: &'static str, kind: &'static str, done: bool) -> Self {
        KillAt {
            step,
            event: "side_effect",
            kind: Some(kind),
            done: Some(done),
            nth: 1,
            delay_ms: 0,
        }
    }
    const fn nth(mut self, n: usize) -> Self {
        self.nth = n;
        self
    }
    const fn after_ms(mut self, ms: u64) -> Self {
        self.delay_ms = ms;
        self
    }
    fn matches(&self, ev: &Value) -> bool {
        ev["event"] == self.event
            && ev["step"] == self.step
            && self.kind.is_none_or(|k| ev["kind"] == k)
            && self.done.is_none_or(|d| ev["done"] == d)
    }
    /// True for kill points at or after the complete PUT, where rollback must refuse or the
    /// forward run must finish.
    fn in_complete(&self) -> bool {
        self.step == "complete" && self.event != "step_started"
    }
}

/// splitmix64: a seeded sequence with no dependency.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// What happened to the killed run.
#[derive(Debug)]
pub struct Killed {
    /// False when the run finished before the kill point came (a harness bug for fixed
    /// points, tolerated by the soak).
    pub killed: bool,
    pub events_seen: usize,
    /// Requests the killed run made (sequence numbers up to and including this one).
    pub last_seq: u64,
}

fn upgrade_args(state: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "upgrade",
        "--unattended",
        "--output",
        "json",
        "--state",
        state,
        "--approve",
        "start",
        "--approve",
        "complete",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(FAST.iter().map(|s| s.to_string()));
    args
}

/// When to kill: at an event, or a fixed time after the start.
#[derive(Clone, Copy, Debug)]
pub enum Kill {
    At(KillAt),
    AfterMs(u64),
}

/// Starts `upgrade`, kills it with SIGKILL at `at`.
pub async fn run_and_kill(sim: &TestSim, at: KillAt) -> Killed {
    let state = sim.state_file();
    let args = upgrade_args(state.to_str().expect("utf-8 temp path"));
    spawn_and_kill(sim, &args, Kill::At(at)).await
}

/// Starts the binary with `args`, kills it with SIGKILL at `kill`.
pub async fn spawn_and_kill(sim: &TestSim, args: &[String], kill: Kill) -> Killed {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let stderr = std::fs::File::create(sim.dir.path().join("killed.stderr")).expect("stderr file");
    let mut child = sim
        .command(&argv)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("spawn asm-canary");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = 0usize;
    let mut hits = 0usize;
    let mut killed = false;
    let deadline = match kill {
        Kill::AfterMs(ms) => tokio::time::Instant::now() + Duration::from_millis(ms),
        Kill::At(_) => tokio::time::Instant::now() + Duration::from_secs(3600),
    };
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l,
            _ = tokio::time::sleep_until(deadline) => {
                child.start_kill().expect("SIGKILL");
                killed = true;
                break;
            }
        };
        let Ok(Some(line)) = line else { break };
        seen += 1;
        let (Kill::At(at), Ok(ev)) = (kill, serde_json::from_str::<Value>(&line)) else {
            continue;
        };
        if at.matches(&ev) {
            hits += 1;
            if hits == at.nth {
                if at.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(at.delay_ms)).await;
                }
                // SIGKILL: no handler, no flush, no cleanup.
                child.start_kill().expect("SIGKILL");
                killed = true;
                break;
            }
        }
    }
    let status = child.wait().await.expect("wait");
    if !killed {
        killed = status.code().is_none();
    }
    // Let requests that were already on the wire land in the log.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let last_seq = sim
        .handle
        .shared
        .requests
        .snapshot()
        .last()
        .map(|r| r.seq)
        .unwrap_or(0);
    Killed {
        killed,
        events_seen: seen,
        last_seq,
    }
}

fn rollback_args(state: &str) -> Vec<String> {
    [
        "rollback",
        "--state",
        state,
        "--unattended",
        "--output",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `resume` (to the end, approvals given) or `rollback`; returns (exit code, stderr).
pub async fn finish(sim: &TestSim, rollback: bool) -> (i32, String, Value) {
    finish_with(sim, rollback, false).await
}

/// As [`finish`]; with `kube`, the checkpoint is read from the cluster (no `--state`).
pub async fn finish_with(sim: &TestSim, rollback: bool, kube: bool) -> (i32, String, Value) {
    let state = sim.state_file();
    let verb = if rollback { "rollback" } else { "resume" };
    let mut args = vec![verb, "--unattended", "--output", "json"];
    if kube {
        args.extend(["--state-backend", "kubernetes"]);
    } else {
        args.extend(["--state", state.to_str().expect("utf-8")]);
    }
    if !rollback {
        args.extend(["--approve", "start", "--approve", "complete"]);
    }
    let out = sim.run(&args).await;
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), common::stderr(&out), last)
}

/// While a killed run owns the cluster, a second run (its own checkpoint file, the dead
/// run's Lease broken with `--break-lock --yes`, as an impatient operator would) must be
/// refused (exit 5) by the owner record and change nothing. The problems found, if any.
pub async fn rival_changes_nothing(sim: &TestSim) -> Vec<String> {
    let before = sim.handle.shared.requests.snapshot().len();
    let rival = sim.dir.path().join("rival.json");
    let mut args = upgrade_args(rival.to_str().expect("utf-8"));
    args.extend(["--break-lock".to_string(), "--yes".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sim.run(&args).await;
    let mut bad = Vec::new();
    let code = out.status.code().unwrap_or(-1);
    if code != 5 {
        bad.push(format!(
            "a rival run exited {code}, not 5 (owned): {}",
            common::stderr(&out)
        ));
    }
    let changes: Vec<String> = sim.handle.shared.requests.snapshot()[before..]
        .iter()
        .filter(|r| r.api != "token" && r.status < 400)
        .filter(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
        // The Lease it broke and gave back is the lock, not the cluster's upgrade; the
        // kubeconfig is read with a POST.
        .filter(|r| !r.path.contains("/leases") && !r.path.ends_with("listClusterUserCredential"))
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    if !changes.is_empty() {
        bad.push(format!("a rival run changed the cluster: {changes:?}"));
    }
    if rival.exists() {
        bad.push("a rival run left a checkpoint".into());
    }
    bad
}

/// The state every case is checked against.
pub struct Invariants {
    /// Revision the cluster must end on.
    pub expect: &'static str,
    pub source_cm: Option<std::collections::BTreeMap<String, String>>,
}

async fn shared_cm(sim: &TestSim, rev: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(sim.kube().await, "aks-istio-system")
        .get_opt(&format!("istio-shared-configmap-{rev}"))
        .await
        .expect("get configmap")
}

pub async fn source_cm_data(sim: &TestSim) -> Option<BTreeMap<String, String>> {
    shared_cm(sim, SOURCE).await.and_then(|c| c.data)
}

fn is_workload(path: &str) -> bool {
    ["/deployments/", "/statefulsets/", "/daemonsets/"]
        .iter()
        .any(|k| path.contains(k))
}

/// Checks every invariant; returns the violations (empty when all hold).
pub async fn check(sim: &TestSim, inv: &Invariants, killed: &Killed) -> Vec<String> {
    let mut bad = Vec::new();
    let state = sim.sim_state().await;
    let revisions: Vec<String> =
        serde_json::from_value(state["arm"]["revisions"].clone()).unwrap_or_default();
    if revisions != [inv.expect] {
        bad.push(format!(
            "revisions {revisions:?}, expected [{}]",
            inv.expect
        ));
    }
    let pods = sim.pods_by_revision().await;
    for (rev, n) in &pods {
        if rev != inv.expect && rev != "none" {
            bad.push(format!("{n} app pod(s) still on {rev}: {pods:?}"));
        }
    }
    if pods.get(inv.expect).copied().unwrap_or(0) == 0 {
        bad.push(format!("no app pod on {}: {pods:?}", inv.expect));
    }
    // Operations ARM accepted (each accepted PUT starts exactly one).
    let ops = state["arm"]["operations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let count = |kind: &str, revs: &[&str]| {
        ops.iter()
            .filter(|o| {
                o["kind"] == kind
                    && o["revisions"].as_array().is_some_and(|r| {
                        r.iter()
                            .map(|v| v.as_str())
                            .eq(revs.iter().map(|s| Some(*s)))
                    })
            })
            .count()
    };
    let starts = count("start", &[SOURCE, TARGET]);
    let completes = count("remove", &[TARGET]);
    let removes = count("remove", &[SOURCE]);
    let requests = sim.handle.shared.requests.snapshot();
    let puts_ok = requests
        .iter()
        .filter(|r| r.api == "arm" && r.method == "PUT" && r.status == 200)
        .count();
    if puts_ok != ops.len() {
        bad.push(format!(
            "{puts_ok} ARM PUTs accepted but {} operations",
            ops.len()
        ));
    }
    if inv.expect == TARGET {
        if starts != 1 || completes != 1 || removes != 0 {
            bad.push(format!(
                "ARM: {starts} start, {completes} complete, {removes} rollback PUT(s) accepted; expected 1, 1, 0"
            ));
        }
    } else if starts > 1 || completes != 0 || removes != starts {
        bad.push(format!(
            "ARM: {starts} start, {completes} complete, {removes} rollback PUT(s) accepted; expected ≤1, 0, same as start"
        ));
    }
    // Restarts per workload, per phase: the killed run + resume is one forward phase;
    // rollback's restart-back is another.
    let mut forward: BTreeMap<&str, usize> = BTreeMap::new();
    let mut back: BTreeMap<&str, usize> = BTreeMap::new();
    for r in requests.iter().filter(|r| {
        r.api == "kube" && r.method == "PATCH" && r.status == 200 && is_workload(&r.path)
    }) {
        let phase = if inv.expect == TARGET || r.seq <= killed.last_seq {
            &mut forward
        } else {
            &mut back
        };
        *phase.entry(r.path.as_str()).or_default() += 1;
    }
    for (phase, counts) in [("forward", &forward), ("rollback", &back)] {
        for (path, n) in counts {
            if *n > 1 {
                bad.push(format!("{path} restarted {n} times in the {phase} wave"));
            }
        }
    }
    if inv.expect == TARGET && forward.len() < 6 {
        bad.push(format!(
            "only {} workloads restarted: {forward:?}",
            forward.len()
        ));
    }
    // The tag.
    let hooks = state["kube"]["mutatingWebhooks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let tag = hooks.iter().find(|h| h["tag"] == "prod");
    if tag.map(|h| h["revision"].clone()) != Some(Value::from(inv.expect)) {
        bad.push(format!("tag prod is {:?}, expected {}", tag, inv.expect));
    }
    // Namespace labels: every namespace labelled as before the run, forward or back (the
    // canary namespaces take the tag label back after the tag moved).
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(sim.kube().await);
    for ns in ["frontend", "payments", "orders", "logging"] {
        let label = namespaces
            .get(ns)
            .await
            .ok()
            .and_then(|n| n.metadata.labels)
            .and_then(|l| l.get("istio.io/rev").cloned());
        if label.as_deref() != Some("prod") {
            bad.push(format!(
                "namespace {ns} labelled istio.io/rev={label:?}, expected prod"
            ));
        }
    }
    // Shared ConfigMaps: none lost, none left behind.
    let (keep, gone) = if inv.expect == TARGET {
        (TARGET, SOURCE)
    } else {
        (SOURCE, TARGET)
    };
    match shared_cm(sim, keep).await {
        None => bad.push(format!("istio-shared-configmap-{keep} lost")),
        Some(cm) if cm.data != inv.source_cm => bad.push(format!(
            "istio-shared-configmap-{keep} data {:?}, expected the source's {:?}",
            cm.data, inv.source_cm
        )),
        Some(_) => {}
    }
    if shared_cm(sim, gone).await.is_some() {
        bad.push(format!("istio-shared-configmap-{gone} left behind"));
    }
    bad
}

/// One case: kill at `at`, then resume or rollback, then check. Panics on any violation.
async fn case(at: KillAt, rollback: bool) {
    case_with(at, rollback, false).await
}

/// As [`case`]; with `kube`, the checkpoint lives in the cluster (`--state-backend kubernetes`).
async fn case_with(at: KillAt, rollback: bool, kube: bool) {
    let sim = TestSim::start("healthy").await;
    let source_cm = source_cm_data(&sim).await;
    assert!(
        source_cm.is_some(),
        "the healthy cluster has a shared ConfigMap"
    );
    let killed = if kube {
        let mut args = upgrade_args("unused");
        let i = args.iter().position(|a| a == "--state").expect("--state");
        args.splice(
            i..i + 2,
            ["--state-backend".to_string(), "kubernetes".to_string()],
        );
        spawn_and_kill(&sim, &args, Kill::At(at)).await
    } else {
        run_and_kill(&sim, at).await
    };
    assert!(
        killed.killed,
        "the run ended before kill point {at:?} ({} events)",
        killed.events_seen
    );
    let rival = rival_changes_nothing(&sim).await;
    assert!(rival.is_empty(), "kill at {at:?}: {rival:#?}");
    let (code, err, last) = finish_with(&sim, rollback, kube).await;
    let expect_code = 0;
    assert_eq!(
        code,
        expect_code,
        "{} after kill at {at:?}: last event {last}\nstderr:\n{err}",
        if rollback { "rollback" } else { "resume" }
    );
    let inv = Invariants {
        expect: if rollback { SOURCE } else { TARGET },
        source_cm,
    };
    let bad = check(&sim, &inv, &killed).await;
    assert!(
        bad.is_empty(),
        "kill at {at:?}, rollback={rollback}: {bad:#?}\nstderr:\n{err}"
    );
}

/// Fixed kill points: every step boundary, and seeded points inside every step.
pub fn kill_points(seed: u64) -> Vec<(&'static str, KillAt)> {
    let mut rng = Rng::new(seed);
    let mut v = vec![
        // Boundaries.
        ("before-preflight", KillAt::at("preflight", "step_started")),
        ("after-preflight", KillAt::at("preflight", "step_succeeded")),
        (
            "after-get-upgrades",
            KillAt::at("get-upgrades", "step_succeeded"),
        ),
        (
            "after-copy-configmap",
            KillAt::at("copy-configmap", "step_succeeded"),
        ),
        ("after-start", KillAt::at("start", "step_succeeded")),
        ("after-canary", KillAt::at("canary", "step_succeeded")),
        (
            "after-repoint-tag",
            KillAt::at("repoint-tag", "step_succeeded"),
        ),
        ("after-restart", KillAt::at("restart", "step_succeeded")),
        ("after-verify", KillAt::at("verify", "step_succeeded")),
        ("before-complete", KillAt::at("complete", "step_started")),
    ];
    // Inside each step.
    v.push((
        "copy-configmap-in-flight",
        KillAt::effect("copy-configmap", "configmap-create", false).after_ms(rng.range(0, 20)),
    ));
    v.push((
        "start-put-in-flight",
        KillAt::effect("start", "arm-put-revisions", false),
    ));
    v.push((
        "start-during-lro",
        KillAt::effect("start", "arm-put-revisions", false).after_ms(rng.range(150, 1000)),
    ));
    v.push((
        "start-gate",
        KillAt::at("start", "gate_started").after_ms(rng.range(0, 300)),
    ));
    v.push((
        "tag-move-in-flight",
        KillAt::effect("repoint-tag", "tag-move", false).after_ms(rng.range(0, 20)),
    ));
    v.push((
        "restart-mid-wave",
        // The wave is journaled once, before its first patch; kill while patches go out.
        KillAt::effect("restart", "restart-wave", false).after_ms(rng.range(0, 60)),
    ));
    v.push((
        "restart-rolling-out",
        KillAt::at("restart", "step_progress")
            .nth(rng.range(1, 3) as usize)
            .after_ms(rng.range(0, 200)),
    ));
    v.push((
        "verify-soak",
        KillAt::at("verify", "gate_started").after_ms(rng.range(100, 800)),
    ));
    v.push((
        "complete-put-in-flight",
        KillAt::effect("complete", "arm-put-revisions", false),
    ));
    v.push((
        "complete-during-lro",
        KillAt::effect("complete", "arm-put-revisions", false).after_ms(rng.range(150, 1000)),
    ));
    v.push((
        "complete-configmap-delete",
        KillAt::effect("complete", "configmap-delete", false),
    ));
    v.push((
        "complete-lease-delete",
        KillAt::effect("complete", "lease-delete", false),
    ));
    v.push((
        "canary-relabel-in-flight",
        // The canary's namespaces are relabelled to the target under one entry.
        KillAt::effect("canary", "namespaces-relabel", false).after_ms(rng.range(0, 20)),
    ));
    v.push((
        "canary-mid-wave",
        // The canary wave is journaled once, before its first patch.
        KillAt::effect("canary", "restart-wave", false).after_ms(rng.range(0, 60)),
    ));
    v
}

fn point(name: &str) -> KillAt {
    kill_points(SEED)
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no kill point {name}"))
        .1
}

macro_rules! crash_cases {
    ($($test:ident => $name:literal, $rollback:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            case(point($name), $rollback).await;
        }
    )*};
}

crash_cases! {
    resume_before_preflight => "before-preflight", false;
    resume_after_preflight => "after-preflight", false;
    resume_after_get_upgrades => "after-get-upgrades", false;
    resume_after_copy_configmap => "after-copy-configmap", false;
    resume_after_start => "after-start", false;
    resume_after_canary => "after-canary", false;
    resume_canary_relabel_in_flight => "canary-relabel-in-flight", false;
    resume_canary_mid_wave => "canary-mid-wave", false;
    resume_after_repoint_tag => "after-repoint-tag", false;
    resume_after_restart => "after-restart", false;
    resume_after_verify => "after-verify", false;
    resume_before_complete => "before-complete", false;
    resume_copy_configmap_in_flight => "copy-configmap-in-flight", false;
    resume_start_put_in_flight => "start-put-in-flight", false;
    resume_start_during_lro => "start-during-lro", false;
    resume_start_gate => "start-gate", false;
    resume_tag_move_in_flight => "tag-move-in-flight", false;
    resume_restart_mid_wave => "restart-mid-wave", false;
    resume_restart_rolling_out => "restart-rolling-out", false;
    resume_verify_soak => "verify-soak", false;
    resume_complete_put_in_flight => "complete-put-in-flight", false;
    resume_complete_during_lro => "complete-during-lro", false;
    resume_complete_configmap_delete => "complete-configmap-delete", false;
    resume_complete_lease_delete => "complete-lease-delete", false;

    rollback_before_preflight => "before-preflight", true;
    rollback_after_copy_configmap => "after-copy-configmap", true;
    rollback_after_start => "after-start", true;
    rollback_after_canary => "after-canary", true;
    rollback_canary_relabel_in_flight => "canary-relabel-in-flight", true;
    rollback_canary_mid_wave => "canary-mid-wave", true;
    rollback_after_repoint_tag => "after-repoint-tag", true;
    rollback_after_restart => "after-restart", true;
    rollback_after_verify => "after-verify", true;
    rollback_before_complete => "before-complete", true;
    rollback_copy_configmap_in_flight => "copy-configmap-in-flight", true;
    rollback_start_put_in_flight => "start-put-in-flight", true;
    rollback_start_during_lro => "start-during-lro", true;
    rollback_tag_move_in_flight => "tag-move-in-flight", true;
    rollback_restart_mid_wave => "restart-mid-wave", true;
    rollback_restart_rolling_out => "restart-rolling-out", true;
    rollback_verify_soak => "verify-soak", true;
}

/// Killed inside `complete`, then `rollback`: once the complete PUT may have landed, rollback
/// refuses (exit 2, checkpoint untouched, says to resume) and `resume` finishes; if the PUT
/// never landed, the rollback goes through. Either way every invariant holds.
async fn rollback_inside_complete(at: KillAt) -> &'static str {
    let sim = TestSim::start("healthy").await;
    let source_cm = source_cm_data(&sim).await;
    let killed = run_and_kill(&sim, at).await;
    assert!(killed.killed, "the run ended before {at:?}");
    let before = std::fs::read(sim.state_file()).expect("checkpoint");
    let (code, err, last) = finish(&sim, true).await;
    let (expect, outcome) = match code {
        2 => {
            assert!(
                err.contains("cannot roll back") && err.contains("asm-canary resume"),
                "{err}"
            );
            assert_eq!(std::fs::read(sim.state_file()).expect("checkpoint"), before);
            let (code, err, last) = finish(&sim, false).await;
            assert_eq!(code, 0, "resume after the refusal: {last}\n{err}");
            (TARGET, "refused, resumed")
        }
        0 => (SOURCE, "rolled back"),
        other => panic!("rollback inside complete exited {other}: {last}\n{err}"),
    };
    let inv = Invariants { expect, source_cm };
    let bad = check(&sim, &inv, &killed).await;
    assert!(bad.is_empty(), "kill at {at:?}: {bad:#?}");
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_refused_after_the_complete_put_then_resume_finishes() {
    let outcome = rollback_inside_complete(point("complete-during-lro")).await;
    assert_eq!(outcome, "refused, resumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_refused_after_the_source_configmap_delete_started() {
    let outcome = rollback_inside_complete(point("complete-configmap-delete")).await;
    assert_eq!(outcome, "refused, resumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_with_the_complete_put_in_flight_is_safe_either_way() {
    rollback_inside_complete(point("complete-put-in-flight")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_backend_resume_after_kill_mid_wave() {
    case_with(point("restart-mid-wave"), false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_backend_rollback_after_kill_during_start_lro() {
    case_with(point("start-during-lro"), true, true).await;
}

#[test]
fn every_step_has_a_boundary_and_an_inside_kill_point() {
    let points = kill_points(SEED);
    for step in [
        "preflight",
        "get-upgrades",
        "copy-configmap",
        "start",
        "canary",
        "repoint-tag",
        "restart",
        "verify",
        "complete",
    ] {
        assert!(
            points.iter().any(|(_, p)| p.step == step),
            "no kill point for {step}"
        );
    }
    assert!(points.iter().any(|(_, p)| p.in_complete()));
}

/// Kill the forward run at `first`, then kill `rollback` at `second`, then `rollback` again.
async fn interrupted_rollback(first: KillAt, second: KillAt) {
    let sim = TestSim::start("healthy").await;
    let source_cm = source_cm_data(&sim).await;
    let killed = run_and_kill(&sim, first).await;
    assert!(killed.killed, "the run ended before {first:?}");
    let state = sim.state_file();
    let again = spawn_and_kill(
        &sim,
        &rollback_args(state.to_str().expect("utf-8")),
        Kill::At(second),
    )
    .await;
    assert!(again.killed, "the rollback ended before {second:?}");
    let (code, err, last) = finish(&sim, true).await;
    assert_eq!(
        code, 0,
        "second rollback: last event {last}\nstderr:\n{err}"
    );
    let inv = Invariants {
        expect: SOURCE,
        source_cm,
    };
    let bad = check(&sim, &inv, &killed).await;
    assert!(
        bad.is_empty(),
        "rollback killed at {second:?}: {bad:#?}\nstderr:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_killed_after_tag_restore_resumes() {
    interrupted_rollback(
        point("after-restart"),
        KillAt::at("rollback-tag", "step_succeeded"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_killed_mid_restart_back_resumes() {
    interrupted_rollback(
        point("after-verify"),
        KillAt::at("rollback-restart", "step_progress").nth(2),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_killed_during_remove_lro_resumes() {
    let mut rng = Rng::new(SEED ^ 1);
    interrupted_rollback(
        point("after-restart"),
        KillAt::effect("rollback-remove-canary", "arm-put-revisions", false)
            .after_ms(rng.range(100, 900)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_killed_at_configmap_delete_resumes() {
    interrupted_rollback(
        point("after-start"),
        KillAt::effect("rollback-configmap", "configmap-delete", false),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_after_complete_refuses_and_says_why() {
    let sim = TestSim::start("healthy").await;
    let out = sim
        .upgrade(&["--approve", "start", "--approve", "complete"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let state = sim.state_file();
    let before = std::fs::read(&state).expect("checkpoint");
    let writes = sim.handle.shared.requests.snapshot().len();
    let (code, err, _) = finish(&sim, true).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("has completed"), "{err}");
    assert_eq!(
        std::fs::read(&state).expect("checkpoint"),
        before,
        "checkpoint untouched"
    );
    // Nothing changed on the cluster (the lock's own Lease writes aside).
    let after: Vec<_> = sim.handle.shared.requests.snapshot()[writes..]
        .iter()
        .filter(|r| {
            !r.path.contains("asm-canary-lock")
                && !r.path.ends_with("listClusterUserCredential")
                && r.api != "token"
        })
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(after.is_empty(), "{after:?}");
    assert_eq!(sim.revisions().await, vec![TARGET]);
}

/// The randomized soak: `CRASH_SOAK_CASES=200 cargo nextest run -p asm-canary --test crash
/// soak --run-ignored only --no-capture`. Prints kill points tried, resumes, rollbacks and
/// invariant violations (must be 0). `CRASH_SOAK_SEED` picks the seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: randomized crash soak"]
async fn soak() {
    let cases: usize = std::env::var("CRASH_SOAK_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("CRASH_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(SEED)
        });
    let mut rng = Rng::new(seed);
    let (mut tried, mut not_reached, mut resumes, mut rollbacks, mut refused) = (0, 0, 0, 0, 0);
    let mut rollback_kills = 0;
    let mut before_checkpoint = 0;
    let mut violations: Vec<String> = Vec::new();
    let started = std::time::Instant::now();
    for i in 0..cases {
        let sim = TestSim::start("healthy").await;
        let source_cm = source_cm_data(&sim).await;
        let state = sim.state_file();
        let args = upgrade_args(state.to_str().expect("utf-8"));
        // A full run takes ~4-5 s here: kill anywhere in it.
        let at = rng.range(50, 5500);
        let killed = spawn_and_kill(&sim, &args, Kill::AfterMs(at)).await;
        tried += 1;
        if !killed.killed {
            not_reached += 1;
            continue;
        }
        if !state.exists() {
            // Killed before the checkpoint was written: nothing may have changed.
            before_checkpoint += 1;
            let writes: Vec<String> = sim
                .handle
                .shared
                .requests
                .snapshot()
                .iter()
                .filter(|r| r.api != "token" && !r.path.ends_with("listClusterUserCredential"))
                .filter(|r| !r.path.contains("/leases"))
                .filter(|r| {
                    !(r.method == "POST" && r.path.ends_with("/aks-istio-system/configmaps"))
                })
                .map(|r| format!("{} {} {}", r.method, r.path, r.status))
                .collect();
            if !writes.is_empty() || sim.revisions().await != [SOURCE] {
                violations.push(format!(
                    "case {i} (kill at {at} ms, before the checkpoint): {writes:?}"
                ));
            }
            continue;
        }
        for b in rival_changes_nothing(&sim).await {
            violations.push(format!("case {i} (kill at {at} ms, a rival run): {b}"));
        }
        let mut rollback = rng.range(0, 1) == 1;
        if rollback && rng.range(0, 2) == 0 {
            // Interrupt the rollback too.
            let at2 = rng.range(50, 4000);
            let k2 = spawn_and_kill(
                &sim,
                &rollback_args(state.to_str().expect("utf-8")),
                Kill::AfterMs(at2),
            )
            .await;
            rollback_kills += usize::from(k2.killed);
        }
        let (mut code, mut err, _) = finish(&sim, rollback).await;
        if rollback && code == 2 && err.contains("has completed")
            || err.contains("cannot roll back")
        {
            // Killed after the complete PUT: rollback must refuse; the forward run finishes.
            refused += 1;
            rollback = false;
            (code, err, _) = finish(&sim, false).await;
        }
        if rollback {
            rollbacks += 1;
        } else {
            resumes += 1;
        }
        let inv = Invariants {
            expect: if rollback { SOURCE } else { TARGET },
            source_cm,
        };
        let mut bad = check(&sim, &inv, &killed).await;
        if code != 0 {
            bad.push(format!("exit {code}: {err}"));
        }
        for b in bad {
            violations.push(format!(
                "case {i} (kill at {at} ms, rollback={rollback}): {b}"
            ));
        }
    }
    println!(
        "crash soak: seed {seed}, {tried} kill points tried ({not_reached} after the run ended, \
         {before_checkpoint} before the checkpoint existed), \
         {resumes} resumes, {rollbacks} rollbacks ({rollback_kills} rollbacks killed and resumed, \
         {refused} rollbacks refused after complete), {} invariant violations, {:.1}s",
        violations.len(),
        started.elapsed().as_secs_f64()
    );
    for v in &violations {
        println!("  {v}");
    }
    assert!(violations.is_empty());
}
