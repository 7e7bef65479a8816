//! Faults the run must survive, and bad input it must refuse cleanly (exit 2, nothing
//! changed on the cluster, the checkpoint byte-for-byte untouched). The real binary against
//! the simulator; each test asserts the cluster's final state.

mod common;

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use asm_canary_sim::Scenario;
use asm_canary_sim::scenario::{FailStatus, LroFailure, OperationKind};
use common::{TestSim, last_event, stderr};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use serde_json::Value;

const SOURCE: &str = "asm-1-27";
const TARGET: &str = "asm-1-29";

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn scenario(f: impl FnOnce(&mut Scenario)) -> Scenario {
    let mut s = Scenario::builtin("healthy").expect("healthy");
    f(&mut s);
    s
}

async fn shared_cm(sim: &TestSim, rev: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(sim.kube().await, "aks-istio-system")
        .get_opt(&format!("istio-shared-configmap-{rev}"))
        .await
        .expect("get configmap")
}

/// The cluster is on `rev` alone: revisions, pods, tag, shared ConfigMaps.
async fn assert_on(sim: &TestSim, rev: &str, source_cm: &Option<ConfigMap>) {
    assert_eq!(sim.revisions().await, vec![rev.to_string()]);
    let pods = sim.pods_by_revision().await;
    assert!(pods.get(rev).copied().unwrap_or(0) > 0, "{pods:?}");
    assert!(
        pods.keys().all(|k| k == rev || k == "none"),
        "pods off {rev}: {pods:?}"
    );
    let state = sim.sim_state().await;
    let tag = state["kube"]["mutatingWebhooks"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["tag"] == "prod").cloned())
        .unwrap_or(Value::Null);
    assert_eq!(tag["revision"], rev, "tag: {tag}");
    let other = if rev == SOURCE { TARGET } else { SOURCE };
    let kept = shared_cm(sim, rev).await.expect("shared ConfigMap kept");
    assert_eq!(
        kept.data,
        source_cm.as_ref().and_then(|c| c.data.clone()),
        "the source's data"
    );
    assert!(
        shared_cm(sim, other).await.is_none(),
        "{other}'s ConfigMap left"
    );
}

/// ARM operations accepted, by kind: (start, complete, rollback-remove).
async fn arm_ops(sim: &TestSim) -> (usize, usize, usize) {
    let state = sim.sim_state().await;
    let ops = state["arm"]["operations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let n = |kind: &str, revs: Value| {
        ops.iter()
            .filter(|o| o["kind"] == kind && o["revisions"] == revs && o["status"] == "Succeeded")
            .count()
    };
    (
        n("start", serde_json::json!([SOURCE, TARGET])),
        n("remove", serde_json::json!([TARGET])),
        n("remove", serde_json::json!([SOURCE])),
    )
}

async fn full_upgrade(sim: &TestSim) -> Output {
    sim.upgrade(&["--approve", "start", "--approve", "complete"])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_429_409_and_500_storms_are_retried_and_each_put_lands_once() {
    let sim = TestSim::start_with(scenario(|s| {
        s.arm.throttle_every = 4;
        s.arm.retry_after_secs = 0;
        s.arm.conflict_every = 2;
        s.arm.server_error_every = 5;
    }))
    .await;
    let cm = shared_cm(&sim, SOURCE).await;
    let out = full_upgrade(&sim).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_on(&sim, TARGET, &cm).await;
    assert_eq!(arm_ops(&sim).await, (1, 1, 0));
    let c = &sim.sim_state().await["arm"]["counters"];
    assert!(c["throttled"].as_u64().unwrap_or(0) > 0, "{c}");
    assert!(c["conflicts"].as_u64().unwrap_or(0) > 0, "{c}");
    assert!(c["server_errors"].as_u64().unwrap_or(0) > 0, "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_lro_rolls_back_to_the_source() {
    let sim = TestSim::start("lro-failure").await;
    let cm = shared_cm(&sim, SOURCE).await;
    let out = full_upgrade(&sim).await;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert_eq!(last_event(&out)["outcome"], "rolled_back");
    assert!(
        stderr(&out).contains("ServiceMeshRevisionInstallFailed"),
        "{}",
        stderr(&out)
    );
    assert_on(&sim, SOURCE, &cm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_expiring_mid_run_is_renewed() {
    let sim = TestSim::start_with(scenario(|s| s.arm.token_lifetime_secs = 1)).await;
    let cm = shared_cm(&sim, SOURCE).await;
    let out = full_upgrade(&sim).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_on(&sim, TARGET, &cm).await;
    assert_eq!(arm_ops(&sim).await, (1, 1, 0));
    let c = &sim.sim_state().await["arm"]["counters"];
    assert!(c["tokens_issued"].as_u64().unwrap_or(0) > 1, "{c}");
}

/// Ends every Kubernetes watch every `every` while `fut` runs (with 410 when `gone`).
async fn with_watch_interrupts<T>(
    sim: &TestSim,
    gone: bool,
    every: Duration,
    fut: impl std::future::Future<Output = T>,
) -> (T, u32) {
    let shared = Arc::clone(&sim.handle.shared);
    let stop = tokio_util_token();
    let s2 = stop.clone();
    let task = tokio::spawn(async move {
        let mut n = 0u32;
        while !s2.is_cancelled() {
            tokio::time::sleep(every).await;
            shared.kube.store.interrupt_watches(gone);
            n += 1;
        }
        n
    });
    let out = fut.await;
    stop.cancel();
    (out, task.await.unwrap_or(0))
}

fn tokio_util_token() -> asm_canary_engine::CancellationToken {
    asm_canary_engine::CancellationToken::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_answered_410_gone_are_relisted() {
    let sim = TestSim::start("healthy").await;
    let cm = shared_cm(&sim, SOURCE).await;
    let (out, n) =
        with_watch_interrupts(&sim, true, Duration::from_millis(300), full_upgrade(&sim)).await;
    assert!(n > 3, "interrupted {n} times");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_on(&sim, TARGET, &cm).await;
    assert_eq!(arm_ops(&sim).await, (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watch_connections_are_rewatched() {
    let sim = TestSim::start("healthy").await;
    let cm = shared_cm(&sim, SOURCE).await;
    let (out, n) =
        with_watch_interrupts(&sim, false, Duration::from_millis(250), full_upgrade(&sim)).await;
    assert!(n > 3, "interrupted {n} times");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_on(&sim, TARGET, &cm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_identical_target_configmap_conflict_is_not_an_error() {
    let sim = TestSim::start("healthy").await;
    let cm = shared_cm(&sim, SOURCE).await.expect("source cm");
    let copy = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("istio-shared-configmap-{TARGET}")),
            namespace: Some("aks-istio-system".into()),
            ..Default::default()
        },
        data: cm.data.clone(),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(sim.kube().await, "aks-istio-system")
        .create(&PostParams::default(), &copy)
        .await
        .expect("pre-create");
    let out = full_upgrade(&sim).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_on(&sim, TARGET, &Some(cm)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_remove_lro_exits_6_and_retry_puts_again_instead_of_repolling_the_failed_operation()
{
    let sim = TestSim::start_with(scenario(|s| {
        s.arm.lro_failures = vec![LroFailure {
            on: OperationKind::Remove,
            times: 1,
            status: FailStatus::Failed,
            code: "ServiceMeshRevisionRemoveFailed".into(),
            message: "simulated: the old revision could not be removed".into(),
        }]
    }))
    .await;
    let cm = shared_cm(&sim, SOURCE).await;
    let out = sim.upgrade(&["--approve", "start"]).await;
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let state = sim.state_file();
    let st = state.to_str().unwrap();
    let out = sim
        .run(&[
            "rollback",
            "--state",
            st,
            "--unattended",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert_eq!(last_event(&out)["outcome"], "failed");
    let err = stderr(&out);
    assert!(err.contains("ServiceMeshRevisionRemoveFailed"), "{err}");
    assert!(
        err.contains("`rollback` continues from this step"),
        "says what to do: {err}"
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(doc["state"], "failed", "{doc}");
    // Both control planes still run: nothing is stranded.
    assert_eq!(sim.revisions().await, vec![SOURCE, TARGET]);
    let out = sim
        .run(&[
            "rollback",
            "--state",
            st,
            "--unattended",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_on(&sim, SOURCE, &cm).await;
}

// ---- bad input: exit 2, nothing changed, checkpoint untouched ----

/// Mutating requests that change the cluster (not tokens, credentials, the lock Lease, or
/// the dry-run create of the target ConfigMap: the simulator logs a dry run like any POST,
/// so callers also check that no target ConfigMap exists).
fn cluster_writes(sim: &TestSim, from: usize) -> Vec<String> {
    sim.handle.shared.requests.snapshot()[from..]
        .iter()
        .filter(|r| {
            r.api != "token"
                && !r.path.ends_with("listClusterUserCredential")
                && !r.path.contains("/leases/asm-canary-lock")
                && !r.path.ends_with("/leases")
        })
        .filter(|r| !(r.method == "POST" && r.path.ends_with("/aks-istio-system/configmaps")))
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect()
}

/// A paused run (after start): returns the checkpoint's path.
async fn paused_run(sim: &TestSim) -> std::path::PathBuf {
    let out = sim.upgrade(&["--approve", "start"]).await;
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    sim.state_file()
}

async fn refused_resume(sim: &TestSim, bytes: &[u8], extra: &[&str]) -> String {
    let state = sim.state_file();
    std::fs::write(&state, bytes).unwrap();
    let before = sim.handle.shared.requests.snapshot().len();
    let mut args = vec!["resume", "--state", state.to_str().unwrap(), "--unattended"];
    args.extend_from_slice(extra);
    let out = sim.run(&args).await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&state).unwrap(),
        bytes,
        "checkpoint untouched"
    );
    assert!(
        cluster_writes(sim, before).is_empty(),
        "{:?}",
        cluster_writes(sim, before)
    );
    assert_eq!(sim.revisions().await, vec![SOURCE, TARGET]);
    stderr(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_checkpoint_is_refused() {
    let sim = TestSim::start("healthy").await;
    let state = paused_run(&sim).await;
    let full = std::fs::read(&state).unwrap();
    let err = refused_resume(&sim, &full[..full.len() / 2], &[]).await;
    assert!(err.contains("untouched"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_checkpoint_is_refused() {
    let sim = TestSim::start("healthy").await;
    let state = paused_run(&sim).await;
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    doc["steps"][3]["status"] = Value::from("half-done");
    let err = refused_resume(&sim, &serde_json::to_vec_pretty(&doc).unwrap(), &[]).await;
    assert!(err.contains("checkpoint"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_another_cluster_is_refused() {
    let sim = TestSim::start("healthy").await;
    let state = paused_run(&sim).await;
    let text = std::fs::read_to_string(&state).unwrap();
    let other = text.replace("managedClusters/aks-sim", "managedClusters/aks-other");
    assert_ne!(text, other);
    let err = refused_resume(&sim, other.as_bytes(), &["--cluster", "aks-sim"]).await;
    assert!(err.contains("aks-other"), "{err}");
}

fn write_runbook(sim: &TestSim, edit: impl FnOnce(String) -> String) -> String {
    let text = edit(asm_canary::cli::request::EMBEDDED_RUNBOOK.to_string());
    let path = sim.dir.path().join("runbook.yaml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

async fn refused_upgrade(sim: &TestSim, extra: &[&str]) -> String {
    let out = sim.upgrade(extra).await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        cluster_writes(sim, 0).is_empty(),
        "{:?}",
        cluster_writes(sim, 0)
    );
    assert_eq!(sim.revisions().await, vec![SOURCE]);
    stderr(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runbook_with_an_unknown_action_is_refused() {
    let sim = TestSim::start("healthy").await;
    let rb = write_runbook(&sim, |t| {
        t.replacen("action: repoint-tag", "action: repoint-tags-everywhere", 1)
    });
    let err = refused_upgrade(&sim, &["--runbook", &rb, "--approve", "start"]).await;
    assert!(err.contains("repoint-tags-everywhere"), "{err}");
    assert!(!sim.state_file().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runbook_with_a_cycle_is_refused() {
    let sim = TestSim::start("healthy").await;
    // get-upgrades reads the output of start, which reads get-upgrades: a cycle.
    let rb = write_runbook(&sim, |t| {
        t.replacen(
            "    action: get-upgrades\n    inputs:\n      source: ${steps.preflight.outputs.source}",
            "    action: get-upgrades\n    inputs:\n      source: ${steps.start.outputs.source}",
            1,
        )
    });
    assert!(
        std::fs::read_to_string(&rb)
            .unwrap()
            .contains("steps.start.outputs.source")
    );
    let err = refused_upgrade(&sim, &["--runbook", &rb, "--approve", "start"]).await;
    assert!(err.contains("start"), "{err}");
    assert!(!sim.state_file().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_older_than_the_source_is_refused() {
    let sim = TestSim::start("healthy").await;
    let err = refused_upgrade(&sim, &["--to", "asm-1-26", "--approve", "start"]).await;
    assert!(err.contains("asm-1-26"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_not_offered_is_refused() {
    let sim = TestSim::start("healthy").await;
    let err = refused_upgrade(&sim, &["--to", "asm-1-31", "--approve", "start"]).await;
    assert!(err.contains("asm-1-31"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_configmap_with_a_blocked_field_is_refused() {
    let sim = TestSim::start_with(scenario(|s| s.kube.shared_mesh_config = None)).await;
    // Created before the add-on's MeshConfig validation existed: admission would reject it now.
    sim.handle
        .shared
        .kube
        .insert_unadmitted(
            "configmaps",
            serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("istio-shared-configmap-{SOURCE}"), "namespace": "aks-istio-system"},
                "data": {"mesh": "accessLogFile: /dev/stdout\nrootNamespace: istio-system\n"}
            }),
        )
        .expect("insert");
    let before = shared_cm(&sim, SOURCE).await.expect("source cm");
    let err = refused_upgrade(&sim, &["--approve", "start"]).await;
    assert!(err.contains("rootNamespace"), "{err}");
    assert_eq!(
        shared_cm(&sim, SOURCE).await.expect("kept").data,
        before.data
    );
}

/// The simulator restarts (listeners down ~300 ms, connections and watches cut, same state
/// and CA after) at several step boundaries while the run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_restarting_between_steps_loses_nothing() {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut sim = TestSim::start("healthy").await;
    let cm = shared_cm(&sim, SOURCE).await;
    let state = sim.state_file();
    let st = state.to_str().unwrap().to_string();
    let mut args = vec![
        "upgrade",
        "--unattended",
        "--output",
        "json",
        "--state",
        &st,
        "--approve",
        "start",
        "--approve",
        "complete",
    ];
    args.extend_from_slice(common::FAST);
    let mut child = sim.command(&args).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut restarts = 0;
    let mut last = Value::Null;
    while let Ok(Some(l)) = lines.next_line().await {
        let ev: Value = serde_json::from_str(&l).unwrap();
        if ev["event"] == "step_succeeded"
            && ["copy-configmap", "start", "repoint-tag", "restart"]
                .contains(&ev["step"].as_str().unwrap_or(""))
        {
            sim.handle
                .restart(Duration::from_millis(300))
                .await
                .expect("sim restarts");
            restarts += 1;
        }
        last = ev;
    }
    let status = child.wait().await.unwrap();
    assert_eq!(restarts, 4, "last event {last}");
    // The run either rode through the restarts or paused resumably; nothing else.
    match status.code() {
        Some(0) => {}
        Some(4) => {
            let out = sim
                .run(&[
                    "resume",
                    "--state",
                    &st,
                    "--unattended",
                    "--approve",
                    "complete",
                ])
                .await;
            assert_eq!(code(&out), 0, "{}", stderr(&out));
        }
        other => panic!("exit {other:?}, last event {last}"),
    }
    assert_on(&sim, TARGET, &cm).await;
    assert_eq!(arm_ops(&sim).await, (1, 1, 0));
}
