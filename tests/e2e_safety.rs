//! The safety invariants of design.md, each provoked on purpose against the simulator.

mod common;

use std::collections::BTreeMap;

use common::{TestSim, last_event, stderr};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, PostParams};

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

const APPROVE: &[&str] = &["--approve", "start", "--approve", "complete"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_is_refused_while_a_pod_still_runs_the_source_revision() {
    let sim = TestSim::start("healthy").await;
    let client = sim.kube().await;
    // A bare pod in a tagged namespace: injected by asm-1-27, and nothing recreates it.
    let pods = Api::<Pod>::namespaced(client.clone(), "payments");
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("debug-shell".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "shell".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    pods.create(&PostParams::default(), &pod).await.unwrap();

    let out = sim.upgrade(APPROVE).await;
    assert_eq!(code(&out), 4, "halted, resumable: {}", stderr(&out));
    let last = last_event(&out);
    assert_eq!(last["outcome"], "paused");
    let reason = last["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("payments/debug-shell"),
        "names the pod: {reason}"
    );
    // Both control planes are still there: nothing was stranded.
    assert_eq!(sim.revisions().await, vec!["asm-1-27", "asm-1-29"]);

    // The person moves the pod; the run resumes and completes.
    pods.delete("debug-shell", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let out = sim.resume(&["--approve", "complete"]).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_target_configmap_is_never_overwritten_without_force() {
    let sim = TestSim::start("healthy").await;
    let client = sim.kube().await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "aks-istio-system");
    let theirs = ConfigMap {
        metadata: ObjectMeta {
            name: Some("istio-shared-configmap-asm-1-29".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "mesh".to_string(),
            "accessLogFile: /dev/stderr\n".to_string(),
        )])),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &theirs).await.unwrap();

    let out = sim.upgrade(APPROVE).await;
    assert_eq!(code(&out), 3, "stderr: {}", stderr(&out));
    let reason = last_event(&out)["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("--force"), "tells how to proceed: {reason}");
    // Untouched, and not deleted by the rollback either: this run did not create it.
    let after = cms.get("istio-shared-configmap-asm-1-29").await.unwrap();
    assert_eq!(after.data, theirs.data);
    assert_eq!(sim.revisions().await, vec!["asm-1-27"]);
    // No ARM write happened at all.
    let requests = sim.sim_state().await;
    assert_eq!(
        requests["arm"]["revisions"],
        serde_json::json!(["asm-1-27"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_already_at_the_target_changes_nothing_and_succeeds() {
    let sim = TestSim::start("healthy").await;
    let out = sim.upgrade(&["--to", "asm-1-27"]).await;
    // --to the installed revision: preflight says there is nothing to do.
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(last_event(&out)["outcome"], "completed");
    assert_eq!(sim.revisions().await, vec!["asm-1-27"]);
    let reqs = sim.sim_state().await;
    assert_eq!(
        reqs["arm"]["operations"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0),
        0,
        "no ARM operation: {reqs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_is_refused_before_anything_changes() {
    let sim = TestSim::start("healthy").await;
    let out = sim.upgrade(&["--to", "asm-1-25"]).await;
    assert_ne!(code(&out), 0);
    let err = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert!(err.contains("not newer"), "{err}");
    assert_eq!(sim.revisions().await, vec!["asm-1-27"]);
}

/// Regression: the plan compared the shared ConfigMaps field by field while the copy step
/// compared them as `same_data` does (no data = an empty map), and the gate compared them
/// field by field again. A source with `data: {}` and a target with no data at all: the plan
/// said the copy would be refused, the step saw nothing to copy, and the gate failed the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_step_agree_on_a_configmap_without_data_and_one_with_an_empty_map() {
    let sim = TestSim::start("healthy").await;
    let client = sim.kube().await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "aks-istio-system");
    let mut source = cms.get("istio-shared-configmap-asm-1-27").await.unwrap();
    source.data = Some(BTreeMap::new());
    source.binary_data = None;
    cms.replace(
        "istio-shared-configmap-asm-1-27",
        &PostParams::default(),
        &source,
    )
    .await
    .unwrap();
    let target = ConfigMap {
        metadata: ObjectMeta {
            name: Some("istio-shared-configmap-asm-1-29".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    cms.create(&PostParams::default(), &target).await.unwrap();
    assert_eq!(
        cms.get("istio-shared-configmap-asm-1-27")
            .await
            .unwrap()
            .data,
        Some(BTreeMap::new()),
        "the simulator keeps an empty map as one"
    );

    let out = sim.run(&["plan", "--output", "json"]).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan["configmap"],
        "aks-istio-system/istio-shared-configmap-asm-1-29 already holds istio-shared-configmap-asm-1-27's data; nothing to copy"
    );
    assert_eq!(plan["warnings"], serde_json::json!([]));

    let out = sim.upgrade(APPROVE).await;
    assert_eq!(
        code(&out),
        0,
        "the step and its gate agree: {}",
        stderr(&out)
    );
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);
}
