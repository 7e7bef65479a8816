//! One run per cluster (the `asm-canary-lock` Lease) and the checkpoint kept in the cluster
//! (`--state-backend kubernetes`), with the real binary against the simulator.

mod common;

use std::process::Stdio;

use common::{TestSim, last_event, stderr};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const NS: &str = "aks-istio-system";

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// A Lease as another machine's run would have left it, renewed `age` ago.
async fn plant_lease(sim: &TestSim, age: SignedDuration) -> Lease {
    let renewed = Timestamp::now() - age;
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("asm-canary-lock".into()),
            namespace: Some(NS.into()),
            annotations: Some(
                [
                    (
                        "asm-canary.io/run-id".to_string(),
                        "run-elsewhere".to_string(),
                    ),
                    ("asm-canary.io/host".to_string(), "agent-7".to_string()),
                    ("asm-canary.io/pid".to_string(), "4242".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("agent-7/4242".into()),
            lease_duration_seconds: Some(60),
            acquire_time: Some(MicroTime(renewed)),
            renew_time: Some(MicroTime(renewed)),
            ..Default::default()
        }),
    };
    Api::<Lease>::namespaced(sim.kube().await, NS)
        .create(&PostParams::default(), &lease)
        .await
        .expect("plant lease")
}

async fn lock_lease(sim: &TestSim) -> Option<Lease> {
    Api::<Lease>::namespaced(sim.kube().await, NS)
        .get_opt("asm-canary-lock")
        .await
        .expect("get lease")
}

/// Mutating requests other than the token, credentials, the lock's own Lease and the
/// read-only dry-run create of the target's shared ConfigMap (the simulator logs a dry run
/// like any POST; the tests check that no such ConfigMap exists).
fn cluster_writes(sim: &TestSim) -> Vec<String> {
    sim.handle
        .shared
        .requests
        .snapshot()
        .iter()
        .filter(|r| {
            r.api != "token"
                && !r.path.ends_with("listClusterUserCredential")
                && !r.path.contains("/leases")
        })
        .filter(|r| !(r.method == "POST" && r.path.ends_with("/aks-istio-system/configmaps")))
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_lock_stops_a_second_run_with_exit_5_naming_the_holder() {
    let sim = TestSim::start("healthy").await;
    plant_lease(&sim, SignedDuration::from_secs(5)).await;
    let out = sim.upgrade(&["--approve", "start"]).await;
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("run-elsewhere") && err.contains("agent-7") && err.contains("4242"),
        "{err}"
    );
    assert!(err.contains("--break-lock"), "{err}");
    assert!(
        cluster_writes(&sim).is_empty(),
        "{:?}",
        cluster_writes(&sim)
    );
    assert!(!sim.state_file().exists(), "no checkpoint written");
    let held = lock_lease(&sim).await.expect("still there");
    assert_eq!(
        held.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("agent-7/4242"),
        "the holder's lease is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_while_the_first_lives_exits_5() {
    let sim = TestSim::start("healthy").await;
    let state = sim.state_file();
    let mut args = vec![
        "upgrade",
        "--unattended",
        "--output",
        "json",
        "--state",
        state.to_str().unwrap(),
        "--approve",
        "start",
        "--approve",
        "complete",
        "--lock-duration",
        "2",
    ];
    args.extend_from_slice(common::FAST);
    let mut first = sim.command(&args).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let mut run_id = String::new();
    while let Ok(Some(l)) = lines.next_line().await {
        let ev: Value = serde_json::from_str(&l).unwrap();
        run_id = ev["run_id"].as_str().unwrap_or_default().to_string();
        if ev["event"] == "step_started" && ev["step"] == "restart" {
            break;
        }
    }
    // From another checkpoint path (another agent would have another file).
    let other = sim.dir.path().join("other.json");
    let second = sim
        .run(&[
            "upgrade",
            "--unattended",
            "--state",
            other.to_str().unwrap(),
            "--approve",
            "start",
        ])
        .await;
    assert_eq!(code(&second), 5, "{}", stderr(&second));
    assert!(stderr(&second).contains(&run_id), "{}", stderr(&second));
    assert!(!other.exists());
    while let Ok(Some(_)) = lines.next_line().await {}
    let status = first.wait().await.unwrap();
    assert_eq!(status.code(), Some(0));
    // Renewed while it lived (every 2/3 s), released at the end.
    let renewals = sim
        .handle
        .shared
        .requests
        .snapshot()
        .iter()
        .filter(|r| {
            r.method == "PUT" && r.path.ends_with("/leases/asm-canary-lock") && r.status == 200
        })
        .count();
    assert!(renewals >= 1, "the lease was never renewed");
    assert!(lock_lease(&sim).await.is_none(), "released at the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lock_is_taken_over_with_a_warning() {
    let sim = TestSim::start("healthy").await;
    plant_lease(&sim, SignedDuration::from_secs(600)).await;
    let out = sim
        .upgrade(&["--approve", "start", "--approve", "complete"])
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("took over the expired cluster lock") && err.contains("run-elsewhere"),
        "{err}"
    );
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);
    assert!(lock_lease(&sim).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_lock_needs_confirmation_then_takes_a_live_lock() {
    let sim = TestSim::start("healthy").await;
    plant_lease(&sim, SignedDuration::from_secs(1)).await;
    let out = sim.upgrade(&["--approve", "start", "--break-lock"]).await;
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert!(cluster_writes(&sim).is_empty());
    assert!(!sim.state_file().exists());

    let out = sim
        .upgrade(&["--approve", "start", "--break-lock", "--yes"])
        .await;
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("broke the live cluster lock"),
        "{}",
        stderr(&out)
    );
    assert_eq!(sim.revisions().await, vec!["asm-1-27", "asm-1-29"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_loses_its_lock_pauses() {
    let sim = TestSim::start("slow-rollout").await;
    let state = sim.state_file();
    let mut args = vec![
        "upgrade",
        "--unattended",
        "--output",
        "json",
        "--state",
        state.to_str().unwrap(),
        "--approve",
        "start",
        "--approve",
        "complete",
        "--lock-duration",
        "1",
    ];
    args.extend_from_slice(common::FAST);
    let mut child = sim.command(&args).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        let ev: Value = serde_json::from_str(&l).unwrap();
        if ev["event"] == "step_started" && ev["step"] == "restart" {
            break;
        }
    }
    // Someone breaks the lock from elsewhere.
    let api = Api::<Lease>::namespaced(sim.kube().await, NS);
    let mut lease = api.get("asm-canary-lock").await.unwrap();
    lease.spec.as_mut().unwrap().holder_identity = Some("agent-9/1".into());
    lease
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("asm-canary.io/run-id".into(), "thief".into());
    api.replace("asm-canary-lock", &PostParams::default(), &lease)
        .await
        .unwrap();
    let mut last = Value::Null;
    while let Ok(Some(l)) = lines.next_line().await {
        last = serde_json::from_str(&l).unwrap();
    }
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(4), "last event {last}");
    assert_eq!(last["outcome"], "paused");
    // The thief's lease is left alone.
    let now = lock_lease(&sim).await.unwrap();
    assert_eq!(
        now.spec.unwrap().holder_identity.as_deref(),
        Some("agent-9/1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_backend_resumes_on_a_fresh_agent_without_a_file() {
    let sim = TestSim::start("healthy").await;
    let agent1 = tempfile::tempdir().unwrap();
    let mut args = vec![
        "upgrade",
        "--unattended",
        "--output",
        "json",
        "--state-backend",
        "kubernetes",
        "--approve",
        "start",
    ];
    args.extend_from_slice(common::FAST);
    let out = sim
        .command(&args)
        .current_dir(agent1.path())
        .output()
        .await
        .unwrap();
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("continue with: asm-canary resume --state-backend kubernetes"),
        "the pause names the checkpoint as resume takes it: {}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_dir(agent1.path()).unwrap().count(),
        0,
        "no file written on the agent"
    );
    let cm = Api::<ConfigMap>::namespaced(sim.kube().await, NS)
        .get("asm-canary-run-aks-sim")
        .await
        .expect("checkpoint ConfigMap");
    let doc: Value =
        serde_json::from_str(&cm.data.unwrap()["checkpoint.json"]).expect("checkpoint JSON");
    assert_eq!(doc["state"], "paused");
    let run_id = doc["run_id"].as_str().unwrap().to_string();

    // A fresh agent: another directory, no --state.
    let agent2 = tempfile::tempdir().unwrap();
    // `status` reads the checkpoint from the cluster and names the next command the same way.
    let out = sim
        .command(&[
            "status",
            "--state-backend",
            "kubernetes",
            "--output",
            "json",
        ])
        .current_dir(agent2.path())
        .output()
        .await
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["run_id"], run_id.as_str());
    assert_eq!(status["state"], "paused");
    assert_eq!(status["awaiting_approval"], "complete");
    assert_eq!(
        status["next"]["command"],
        "asm-canary resume --state-backend kubernetes --approve complete"
    );
    assert!(
        status["cluster_now"]["revisions"]
            .as_array()
            .is_some_and(|r| r.len() == 2),
        "{status}"
    );
    assert_eq!(std::fs::read_dir(agent2.path()).unwrap().count(), 0);
    let out = sim
        .command(&[
            "resume",
            "--state-backend",
            "kubernetes",
            "--unattended",
            "--output",
            "json",
            "--approve",
            "complete",
        ])
        .current_dir(agent2.path())
        .output()
        .await
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let last = last_event(&out);
    assert_eq!(last["outcome"], "completed");
    assert_eq!(last["run_id"], run_id.as_str());
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);
    let cm = Api::<ConfigMap>::namespaced(sim.kube().await, NS)
        .get("asm-canary-run-aks-sim")
        .await
        .unwrap();
    let doc: Value = serde_json::from_str(&cm.data.unwrap()["checkpoint.json"]).unwrap();
    assert_eq!(doc["state"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_backend_write_is_guarded_by_resource_version() {
    use asm_canary::k8s::state::ConfigMapStore;
    use asm_canary_engine::CheckpointStore;
    let sim = TestSim::start("healthy").await;
    let a = ConfigMapStore::new(sim.kube().await, "aks-sim");
    let b = ConfigMapStore::new(sim.kube().await, "aks-sim");
    assert_eq!(a.read().await.unwrap(), None);
    a.write(b"{\"one\":1}").await.unwrap();
    assert_eq!(
        b.read().await.unwrap().as_deref(),
        Some(&b"{\"one\":1}"[..])
    );
    a.write(b"{\"two\":2}").await.unwrap();
    // b read before a's second write: its write must fail, not overwrite.
    let err = b.write(b"{\"three\":3}").await.unwrap_err();
    assert!(err.to_string().contains("resourceVersion"), "{err}");
    assert_eq!(
        a.read().await.unwrap().as_deref(),
        Some(&b"{\"two\":2}"[..])
    );
}

/// Regression: the in-cluster checkpoint was one text key of a ConfigMap, and a run over about
/// 2,000 workloads journals more than the 1 MiB a ConfigMap holds (`large`: 1.1 MB): the API
/// server refused the write (422 Too long) and the run stopped there. Past 1 MiB the checkpoint
/// is now kept gzipped in `binaryData`; `resume` and `state show` read it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_cluster_checkpoint_over_one_mebibyte_is_kept_gzipped() {
    use asm_canary::k8s::state::{CONFIGMAP_MAX_BYTES, ConfigMapStore, STATE_KEY, STATE_KEY_GZ};
    use asm_canary_engine::CheckpointStore;
    let sim = TestSim::start("healthy").await;
    let k8s = ["--state-backend", "kubernetes"];
    let mut args = vec![
        "upgrade",
        "--unattended",
        "--output",
        "json",
        "--approve",
        "start",
    ];
    args.extend_from_slice(&k8s);
    args.extend_from_slice(common::FAST);
    let out = sim.run(&args).await;
    assert_eq!(code(&out), 4, "{}", stderr(&out));

    // The paused run's checkpoint, grown as a journal of thousands of workloads grows it.
    let store = ConfigMapStore::new(sim.kube().await, "aks-sim");
    let mut cp: Value = serde_json::from_slice(&store.read().await.unwrap().unwrap()).unwrap();
    let records: Vec<Value> = (0..12_000)
        .map(|i| serde_json::json!({"kind": "Deployment", "namespace": format!("app-{:03}", i / 10),
            "name": format!("svc-{:02}", i % 10), "uid": format!("{i:08}-62c8-49a0-96da-6fb6c8d3d331"),
            "restarted_at": "2026-12-01T14:00:36Z"}))
        .collect();
    cp["steps"][0]["outputs"]["history"] = records.into();
    let big = serde_json::to_vec_pretty(&cp).unwrap();
    assert!(big.len() > CONFIGMAP_MAX_BYTES, "{} bytes", big.len());
    store.write(&big).await.expect("written, gzipped");
    let cm = Api::<ConfigMap>::namespaced(sim.kube().await, NS)
        .get("asm-canary-run-aks-sim")
        .await
        .unwrap();
    assert!(
        cm.data.is_none_or(|d| !d.contains_key(STATE_KEY)),
        "not as text"
    );
    assert!(
        cm.binary_data.is_some_and(|d| d.contains_key(STATE_KEY_GZ)),
        "gzipped"
    );

    let out = sim.run(&[&["state", "show"][..], &k8s].concat()).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(out.stdout, big, "shown whole");
    assert!(stderr(&out).contains("is Paused"), "{}", stderr(&out));

    let mut args = vec!["resume", "--unattended", "--output", "json"];
    args.extend_from_slice(&["--approve", "complete"]);
    args.extend_from_slice(&k8s);
    let out = sim.run(&args).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(last_event(&out)["outcome"], "completed");
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);
    let done: Value = serde_json::from_slice(&store.read().await.unwrap().unwrap()).unwrap();
    assert_eq!(done["state"], "completed");
    assert_eq!(
        done["steps"][0]["outputs"]["history"]
            .as_array()
            .map(Vec::len),
        Some(12_000)
    );
}

#[tokio::test]
async fn status_with_the_kubernetes_backend_and_no_run_says_so() {
    let sim = TestSim::start("healthy").await;
    let out = sim.run(&["status", "--state-backend", "kubernetes"]).await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("asm-canary-run-aks-sim"), "{err}");
    // and --offline cannot read a checkpoint that lives in the cluster
    let out = sim
        .run(&["status", "--state-backend", "kubernetes", "--offline"])
        .await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--offline"), "{}", stderr(&out));
    // nor can `status` guess a file
    let out = sim.run(&["status"]).await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--state FILE is required"),
        "{}",
        stderr(&out)
    );
}

/// `--state-backend kubernetes --state FILE` wrote the event log beside FILE but never the
/// report: the report was read back from FILE, which holds no checkpoint with this backend.
#[tokio::test]
async fn kubernetes_backend_with_a_state_file_writes_the_report_beside_it() {
    let sim = TestSim::start("healthy").await;
    let agent = tempfile::tempdir().unwrap();
    let state = agent.path().join("run.json");
    let mut args = vec![
        "upgrade",
        "--unattended",
        "--state-backend",
        "kubernetes",
        "--state",
        state.to_str().unwrap(),
        "--approve",
        "start",
    ];
    args.extend_from_slice(common::FAST);
    let out = sim.command(&args).output().await.unwrap();
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        !state.exists(),
        "the checkpoint lives in the cluster, not in {state:?}"
    );
    let events = agent.path().join("run.json.events.jsonl");
    assert!(events.exists(), "the event log is beside --state");
    let report = agent.path().join("run.json.report.md");
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report at {report:?}: {e}\n{}", stderr(&out)));
    assert!(text.contains("asm-1-29"), "the report is the run's: {text}");
    assert!(
        stderr(&out).contains(&format!("report: {}", report.display())),
        "{}",
        stderr(&out)
    );
}

/// The files beside `state` (its name's siblings `.lock`, `.events.jsonl`, `.report.md`).
fn beside(state: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("run.json"))
        .collect();
    names.sort();
    names
}

/// A corrupt or newer checkpoint took the cluster Lease before it was validated: exit 5
/// instead of 2 while another run was live (and a Lease blip otherwise), and the refused run
/// left `.lock` and `.events.jsonl` beside it. It is refused first now, creating nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_newer_checkpoint_is_refused_with_exit_2_before_the_lease() {
    let sim = TestSim::start("healthy").await;
    plant_lease(&sim, SignedDuration::from_secs(5)).await;
    let state = sim.state_file();
    let s = state.to_str().unwrap();
    let target = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-sim/providers/Microsoft.ContainerService/managedClusters/aks-sim";
    let newer = serde_json::json!({
        "schema_version": "1.9", "kind": "asm-canary/checkpoint", "run_id": "r-1",
        "target": target, "runbook": {"name": "asm-canary-upgrade", "sha256": "abc"},
        "params": {}, "state": "paused", "from_the_future": true,
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "steps": [], "rollback": [], "journal": [], "summary": {}
    });
    let mut changed_runbook = newer.clone();
    changed_runbook["schema_version"] = "1.0".into();
    changed_runbook
        .as_object_mut()
        .unwrap()
        .remove("from_the_future");
    let cases: [(&str, Vec<u8>, &[&str]); 4] = [
        (
            "corrupt",
            b"{\"schema_version\": \"1.0\", \"kind\"".to_vec(),
            &["resume", "rollback", "upgrade"],
        ),
        (
            "newer",
            newer.to_string().into_bytes(),
            &["resume", "rollback"],
        ),
        (
            "changed runbook",
            changed_runbook.to_string().into_bytes(),
            &["resume", "rollback"],
        ),
        (
            "existing",
            changed_runbook.to_string().into_bytes(),
            &["upgrade"],
        ),
    ];
    for (what, bytes, commands) in cases {
        for command in commands {
            std::fs::write(&state, &bytes).unwrap();
            let out = sim
                .run(&[command, "--unattended", "--approve", "start", "--state", s])
                .await;
            assert_eq!(code(&out), 2, "{what} {command}: {}", stderr(&out));
            assert_eq!(
                beside(&state),
                vec!["run.json"],
                "{what} {command}: files created"
            );
            assert_eq!(
                std::fs::read(&state).unwrap(),
                bytes,
                "{what} {command}: untouched"
            );
        }
    }
    assert!(
        cluster_writes(&sim).is_empty(),
        "{:?}",
        cluster_writes(&sim)
    );
    let held = lock_lease(&sim).await.expect("still there");
    assert_eq!(
        held.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("agent-7/4242"),
        "the holder's lease is untouched"
    );
}

/// `--state` naming a directory, or a file in a folder that cannot be written, exited 1 with
/// no advice after taking the Lease. It is bad input (exit 2) saying what to give instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_state_path_is_refused_with_exit_2_and_advice_before_the_lease() {
    let sim = TestSim::start("healthy").await;
    plant_lease(&sim, SignedDuration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let missing = format!("{d}/no/such/folder/run.json");
    for (state, says) in [
        (d.as_str(), "is a directory"),
        (missing.as_str(), "does not exist"),
        // Not even root may create files in /proc.
        ("/proc/run.json", "cannot create files in /proc"),
    ] {
        for command in ["upgrade", "resume"] {
            let out = sim
                .run(&[
                    command,
                    "--unattended",
                    "--approve",
                    "start",
                    "--state",
                    state,
                ])
                .await;
            assert_eq!(code(&out), 2, "{command} --state {state}: {}", stderr(&out));
            assert!(
                stderr(&out).contains(says),
                "{command} --state {state}: {}",
                stderr(&out)
            );
        }
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing created"
    );
    assert!(
        cluster_writes(&sim).is_empty(),
        "{:?}",
        cluster_writes(&sim)
    );
}

/// A corrupt checkpoint ConfigMap got the advice "start a new run with another --state file"
/// and could not be cleared without kubectl: `state show` prints it as stored, and `state
/// archive` (confirmed) copies it aside and deletes it, so that a new run can start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_checkpoint_configmap_is_shown_and_archived_by_the_state_command() {
    let sim = TestSim::start("healthy").await;
    let api = Api::<ConfigMap>::namespaced(sim.kube().await, NS);
    let corrupt = ConfigMap {
        metadata: ObjectMeta {
            name: Some("asm-canary-run-aks-sim".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some([("checkpoint.json".to_string(), "{not json".to_string())].into()),
        ..Default::default()
    };
    api.create(&PostParams::default(), &corrupt).await.unwrap();
    let k8s = ["--state-backend", "kubernetes"];
    let out = sim
        .run(&[&["resume", "--unattended"][..], &k8s].concat())
        .await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("is corrupt"), "{err}");
    assert!(
        err.contains("asm-canary state archive --state-backend kubernetes")
            && !err.contains("another --state file"),
        "{err}"
    );

    let out = sim.run(&[&["state", "show"][..], &k8s].concat()).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{not json");
    assert!(stderr(&out).contains("unusable"), "{}", stderr(&out));

    // Unattended without --yes: refused, nothing changed.
    let out = sim.run(&[&["state", "archive"][..], &k8s].concat()).await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert!(
        api.get_opt("asm-canary-run-aks-sim")
            .await
            .unwrap()
            .is_some()
    );

    let out = sim
        .run(&[&["state", "archive", "--yes"][..], &k8s].concat())
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        api.get_opt("asm-canary-run-aks-sim")
            .await
            .unwrap()
            .is_none()
    );
    let archived: Vec<ConfigMap> = api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| {
            c.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("asm-canary-run-aks-sim-archived-"))
        })
        .collect();
    assert_eq!(archived.len(), 1, "one archived copy");
    assert_eq!(
        archived[0].data, corrupt.data,
        "the copy holds what was stored"
    );
    assert!(
        stderr(&out).contains(archived[0].metadata.name.as_deref().unwrap()),
        "{}",
        stderr(&out)
    );
    assert!(lock_lease(&sim).await.is_none(), "the lock was released");
    let out = sim.run(&[&["state", "show"][..], &k8s].concat()).await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("no checkpoint"), "{}", stderr(&out));
}
