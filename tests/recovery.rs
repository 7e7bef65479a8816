//! Recovery from the cluster alone (issue 12 #2): with no checkpoint, a canary started by a
//! plain ARM PUT (`az aks mesh upgrade start`) is adopted and completed by `upgrade --to` it,
//! consolidated and then upgraded by `upgrade --to` a newer one, and rolled back by
//! `rollback --from-cluster`.

mod common;

use common::{TestSim, events, stderr};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn said(out: &std::process::Output, what: &str) -> bool {
    events(out)
        .iter()
        .any(|e| e["event"] == "message" && e["text"].as_str().is_some_and(|t| t.contains(what)))
}

async fn plan_json(sim: &TestSim, to: &str) -> serde_json::Value {
    let out = sim.run(&["plan", "--to", to, "--output", "json"]).await;
    assert_eq!(code(&out), 0, "plan: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("the plan document")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_started_by_a_plain_arm_put_is_completed_by_upgrade_to_that_target() {
    let sim = TestSim::start("healthy").await;
    sim.arm_put_revisions(&["asm-1-27", "asm-1-28"]).await;

    let plan = plan_json(&sim, "asm-1-28").await;
    assert_eq!(plan["class"], "resume-canary", "{plan}");
    assert!(
        plan["verdict"].as_str().unwrap().contains("adopts it"),
        "{plan}"
    );

    let out = sim
        .upgrade(&[
            "--to",
            "asm-1-28",
            "--approve",
            "start",
            "--approve",
            "complete",
        ])
        .await;
    assert_eq!(code(&out), 0, "completed: {}", stderr(&out));
    assert!(
        said(&out, "adopted the canary asm-1-28"),
        "{}",
        stderr(&out)
    );
    assert_eq!(sim.revisions().await, vec!["asm-1-28"]);
    let pods = sim.pods_by_revision().await;
    assert_eq!(
        pods.keys().collect::<Vec<_>>(),
        vec!["asm-1-28"],
        "{pods:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_canary_is_consolidated_then_upgraded_by_upgrade_to_a_newer_one() {
    let sim = TestSim::start("healthy").await;
    half_restarted(&sim).await;

    let plan = plan_json(&sim, "asm-1-29").await;
    assert_eq!(plan["class"], "consolidate", "{plan}");

    // The consolidation has its own approval: without it, nothing changes (exit 4).
    let out = sim
        .upgrade(&["--to", "asm-1-29", "--approve", "start"])
        .await;
    assert_eq!(code(&out), 4, "paused at consolidate: {}", stderr(&out));
    assert_eq!(sim.revisions().await, vec!["asm-1-27", "asm-1-28"]);

    let out = sim
        .resume(&[
            "--approve",
            "consolidate",
            "--approve",
            "start",
            "--approve",
            "complete",
        ])
        .await;
    assert_eq!(code(&out), 0, "completed: {}", stderr(&out));
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);
    let pods = sim.pods_by_revision().await;
    assert_eq!(
        pods.keys().collect::<Vec<_>>(),
        vec!["asm-1-29"],
        "{pods:?}"
    );
}

/// `rollback --from-cluster --unattended --output json` with fast gates, and `extra`.
fn from_cluster<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "rollback",
        "--from-cluster",
        "--unattended",
        "--output",
        "json",
    ];
    args.extend_from_slice(common::FAST);
    args.extend_from_slice(extra);
    args
}

/// `payments` labelled with the canary directly and its pods recreated on it: half the
/// workloads on each revision, no checkpoint anywhere.
async fn half_restarted(sim: &TestSim) {
    sim.arm_put_revisions(&["asm-1-27", "asm-1-28"]).await;
    let kube = sim.kube().await;
    let patch = json!({ "metadata": { "labels": { "istio.io/rev": "asm-1-28" } } });
    Api::<Namespace>::all(kube.clone())
        .patch("payments", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("label payments");
    let pods = Api::<Pod>::namespaced(kube, "payments");
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("recreate payments' pods");
    for _ in 0..200 {
        let by = sim.pods_by_revision().await;
        if by.get("asm-1-28").copied().unwrap_or(0) > 0 && by.contains_key("asm-1-27") {
            let live = pods.list(&ListParams::default()).await.unwrap();
            if live.items.iter().all(|p| {
                asm_canary::istio::pod_revision(p).revision() == Some("asm-1-28")
                    && p.metadata.deletion_timestamp.is_none()
            }) {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("payments never came up on asm-1-28");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_from_cluster_returns_a_half_restarted_cluster_to_one_revision() {
    let sim = TestSim::start("healthy").await;
    half_restarted(&sim).await;

    let state = sim.state_file();
    let out = sim
        .run(&from_cluster(&["--state", state.to_str().unwrap()]))
        .await;
    assert_eq!(code(&out), 0, "rolled back: {}", stderr(&out));
    assert_eq!(sim.revisions().await, vec!["asm-1-27"]);
    let pods = sim.pods_by_revision().await;
    assert_eq!(
        pods.keys().collect::<Vec<_>>(),
        vec!["asm-1-27"],
        "{pods:?}"
    );
    let ns = Api::<Namespace>::all(sim.kube().await)
        .get("payments")
        .await
        .unwrap();
    assert_eq!(
        ns.metadata.labels.unwrap()["istio.io/rev"],
        "prod",
        "the label is back on the tag, which points at the older revision again"
    );

    // Nothing left to roll back: exit 0, and a checkpoint that exists is never replaced.
    let out = sim
        .run(&[
            "rollback",
            "--from-cluster",
            "--state",
            state.to_str().unwrap(),
            "--unattended",
        ])
        .await;
    assert_eq!(code(&out), 2, "an existing checkpoint: {}", stderr(&out));
    let other = sim.dir.path().join("again.json");
    let out = sim
        .run(&[
            "rollback",
            "--from-cluster",
            "--state",
            other.to_str().unwrap(),
            "--unattended",
        ])
        .await;
    assert_eq!(code(&out), 0, "nothing to roll back: {}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to roll back"),
        "{}",
        stderr(&out)
    );
    assert!(!other.exists(), "no checkpoint when there is nothing to do");
}

/// `rollback --from-cluster` on an agent with no files: its checkpoint lives in the cluster
/// (`--state-backend kubernetes`), so any agent can follow it, and the ownership record is
/// closed when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_from_cluster_keeps_its_checkpoint_in_the_cluster_with_the_kubernetes_backend() {
    let sim = TestSim::start("healthy").await;
    half_restarted(&sim).await;
    let agent = tempfile::tempdir().unwrap();
    let out = sim
        .command(&from_cluster(&["--state-backend", "kubernetes"]))
        .current_dir(agent.path())
        .output()
        .await
        .unwrap();
    assert_eq!(code(&out), 0, "rolled back: {}", stderr(&out));
    assert_eq!(sim.revisions().await, vec!["asm-1-27"]);
    assert_eq!(
        std::fs::read_dir(agent.path()).unwrap().count(),
        0,
        "no file written on the agent"
    );
    let cm = Api::<ConfigMap>::namespaced(sim.kube().await, "aks-istio-system")
        .get("asm-canary-run-aks-sim")
        .await
        .expect("the checkpoint ConfigMap");
    let doc: serde_json::Value =
        serde_json::from_str(&cm.data.unwrap()["checkpoint.json"]).expect("checkpoint JSON");
    assert_eq!(doc["state"], "rolled_back", "{doc}");

    // Another agent reads the same run from the cluster.
    let out = sim
        .run(&[
            "status",
            "--state-backend",
            "kubernetes",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(code(&out), 0, "status: {}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["run_id"], doc["run_id"], "{status}");

    // The run is closed: a new upgrade is not refused as owned (exit 5).
    let out = sim
        .upgrade(&["--approve", "start", "--approve", "complete"])
        .await;
    assert_eq!(code(&out), 0, "a new run after it: {}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_from_cluster_is_refused_while_a_run_owns_the_cluster() {
    let sim = TestSim::start("healthy").await;
    let out = sim.upgrade(&["--approve", "start"]).await;
    assert_eq!(code(&out), 4, "paused before complete: {}", stderr(&out));
    let other = sim.dir.path().join("other.json");
    let out = sim
        .run(&[
            "rollback",
            "--from-cluster",
            "--state",
            other.to_str().unwrap(),
            "--unattended",
        ])
        .await;
    assert_eq!(code(&out), 5, "owned: {}", stderr(&out));
    assert!(!other.exists(), "no checkpoint for a refused run");
    assert_eq!(sim.revisions().await, vec!["asm-1-27", "asm-1-29"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_repairs_a_missing_configmap_a_tag_on_a_removed_revision_and_orphan_leases() {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::ConfigMap;
    let sim = TestSim::start("healthy").await;
    // An upgrade by hand that stopped short: asm-1-28 installed and asm-1-27 removed, but the
    // tag never moved, the shared ConfigMap never copied, the old Leases left.
    sim.arm_put_revisions(&["asm-1-27", "asm-1-28"]).await;
    sim.arm_put_revisions(&["asm-1-28"]).await;
    let kube = sim.kube().await;
    let cms = Api::<ConfigMap>::namespaced(kube.clone(), "aks-istio-system");
    let leases = Api::<Lease>::namespaced(kube.clone(), "aks-istio-system");
    let tag = || async {
        let wh = Api::<MutatingWebhookConfiguration>::all(kube.clone())
            .get("istio-revision-tag-prod-aks-istio-system")
            .await
            .expect("the prod tag webhook");
        asm_canary::istio::tag_revision(&wh)
    };
    assert!(
        cms.get_opt("istio-shared-configmap-asm-1-28")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(tag().await.as_deref(), Some("asm-1-27"), "the tag is stale");
    let old_lease = "istio-gateway-status-leader-asm-1-27";
    if leases.get_opt(old_lease).await.unwrap().is_none() {
        let lease: Lease = serde_json::from_value(json!({
            "metadata": { "name": old_lease, "namespace": "aks-istio-system" },
            "spec": { "holderIdentity": "istiod-asm-1-27-0" }
        }))
        .unwrap();
        leases
            .create(&Default::default(), &lease)
            .await
            .expect("an orphaned Lease");
    }

    let plan = plan_json(&sim, "asm-1-28").await;
    assert_eq!(plan["class"], "reconcile", "{plan}");

    let out = sim.upgrade(&["--to", "asm-1-28"]).await;
    assert_eq!(code(&out), 0, "reconciled: {}", stderr(&out));
    assert!(said(&out, "repaired:"), "{}", stderr(&out));
    let copied = cms
        .get_opt("istio-shared-configmap-asm-1-28")
        .await
        .unwrap()
        .expect("the shared ConfigMap recreated");
    let old = cms
        .get("istio-shared-configmap-asm-1-27")
        .await
        .expect("the old one stays");
    assert_eq!(copied.data, old.data);
    assert_eq!(
        tag().await.as_deref(),
        Some("asm-1-28"),
        "the tag is repaired"
    );
    assert!(leases.get_opt(old_lease).await.unwrap().is_none());
    assert_eq!(sim.revisions().await, vec!["asm-1-28"]);
}

/// A cluster busy with an operation (`Updating`) when the run started: preflight's gate waited
/// for the operation to end, then every later step was skipped (`upgrade_needed` was decided
/// before the wait) and the run exited 0 having upgraded nothing. It upgrades now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_waits_for_a_busy_cluster_then_upgrades_it() {
    let sim = TestSim::start("healthy").await;
    sim.arm_begin_revisions(&["asm-1-27"]).await;
    let out = sim
        .upgrade(&["--approve", "start", "--approve", "complete"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        sim.revisions().await,
        vec!["asm-1-29"],
        "upgraded, not only waited: {}",
        stderr(&out)
    );
}
