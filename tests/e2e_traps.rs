//! Preflight's traps (issue 12, item 3), through the real binary against the simulator: what a
//! run would otherwise meet only after its first change is decided before it.

mod common;

use asm_canary_sim::Scenario;
use asm_canary_sim::kube::{NamespaceShape, WorkloadShape};
use common::{TestSim, last_event, stderr};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

const APPROVE: &[&str] = &["--approve", "start", "--approve", "complete"];

fn wl(name: &str, replicas: u32) -> WorkloadShape {
    WorkloadShape {
        name: name.into(),
        replicas,
        ..Default::default()
    }
}

fn healthy_with(extra: Vec<NamespaceShape>) -> Scenario {
    let mut scenario = Scenario::builtin("healthy").unwrap();
    scenario.kube.namespaces.extend(extra);
    scenario
}

/// The revision that injected each pod of `namespace` (`none`: no sidecar), by pod name.
async fn revisions_in(sim: &TestSim, namespace: &str) -> Vec<(String, String)> {
    let pods = Api::<Pod>::namespaced(sim.kube().await, namespace)
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut out: Vec<(String, String)> = pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                asm_canary::istio::pod_revision(p)
                    .revision()
                    .unwrap_or("none")
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Regression: a namespace labelled `istio.io/rev=prod` after its pods started (no sidecars)
/// was shown as "late (0)" and left without sidecars while the upgrade reported success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_labelled_after_its_pods_started_ends_injected_on_the_target() {
    let mut late = NamespaceShape {
        name: "late".into(),
        late_labels: [("istio.io/rev".to_string(), "prod".to_string())].into(),
        ..Default::default()
    };
    late.deployments = vec![wl("app", 2)];
    let sim = TestSim::start_with(healthy_with(vec![late])).await;
    let before = revisions_in(&sim, "late").await;
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(before.iter().all(|(_, r)| r == "none"), "{before:?}");

    let out = sim.run(&["plan"]).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("late (1, 1 without a sidecar)"), "{text}");
    assert!(text.contains("Deployment late/app"), "{text}");

    let out = sim.upgrade(APPROVE).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(last_event(&out)["outcome"], "completed");
    let after = revisions_in(&sim, "late").await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.iter().all(|(_, r)| r == "asm-1-29"), "{after:?}");
}
