//! Each simulator scenario through the real binary: the upgrade completes where it should,
//! and where a gate fails the cluster ends back on the source with nothing on the target.

mod common;

use common::{TestSim, last_event, stderr};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

const APPROVE: &[&str] = &["--approve", "start", "--approve", "complete"];

/// The run rolled back (exit 3) for `why`, and the cluster is back on the source.
async fn assert_rolled_back(sim: &TestSim, out: &std::process::Output, why: &str) {
    assert_eq!(code(out), 3, "stderr: {}", stderr(out));
    let last = last_event(out);
    assert_eq!(last["outcome"], "rolled_back");
    let reason = last["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(why), "rolled back for {why:?}: {last}");
    assert_back_on_source(sim).await;
}

async fn assert_back_on_source(sim: &TestSim) {
    assert_eq!(
        sim.revisions().await,
        vec!["asm-1-27"],
        "one control plane, the source"
    );
    let pods = sim.pods_by_revision().await;
    assert!(pods.get("asm-1-27").copied().unwrap_or(0) > 0, "{pods:?}");
    assert_eq!(
        pods.get("asm-1-29"),
        None,
        "nothing left on the target: {pods:?}"
    );
    let client = sim.kube().await;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "aks-istio-system")
        .get_opt("istio-shared-configmap-asm-1-29")
        .await
        .unwrap();
    assert!(cm.is_none(), "the target's shared ConfigMap was deleted");
    let tag = Api::<MutatingWebhookConfiguration>::all(client)
        .get("istio-revision-tag-prod-aks-istio-system")
        .await
        .unwrap();
    assert_eq!(
        asm_canary::istio::tag_revision(&tag).as_deref(),
        Some("asm-1-27")
    );
}

async fn assert_completed_on_target(sim: &TestSim, out: &std::process::Output) {
    assert_eq!(code(out), 0, "stderr: {}", stderr(out));
    assert_eq!(last_event(out)["outcome"], "completed");
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);
    let pods = sim.pods_by_revision().await;
    assert_eq!(
        pods.keys().collect::<Vec<_>>(),
        vec!["asm-1-29"],
        "{pods:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_proxies_fail_the_canary_gate_and_roll_back_to_the_source() {
    let sim = TestSim::start("stale-proxies").await;
    let mut args = APPROVE.to_vec();
    args.extend(["--param", "verify_timeout=4s"]);
    let out = sim.upgrade(&args).await;
    assert_rolled_back(&sim, &out, "proxies-synced").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashlooping_istiod_fails_the_start_gate_and_rolls_back() {
    let sim = TestSim::start("crashloop-istiod").await;
    let mut args = APPROVE.to_vec();
    args.extend(["--param", "control_plane_timeout=6s"]);
    let out = sim.upgrade(&args).await;
    assert_eq!(code(&out), 3, "stderr: {}", stderr(&out));
    assert_eq!(last_event(&out)["outcome"], "rolled_back");
    assert_back_on_source(&sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_operation_rolls_back_with_nothing_on_the_target() {
    let sim = TestSim::start("lro-failure").await;
    let out = sim.upgrade(APPROVE).await;
    assert_eq!(code(&out), 3, "stderr: {}", stderr(&out));
    let last = last_event(&out);
    assert_eq!(last["outcome"], "rolled_back");
    assert_back_on_source(&sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_throttling_and_transient_conflicts_still_complete() {
    let sim = TestSim::start("arm-throttling").await;
    let out = sim.upgrade(APPROVE).await;
    assert_completed_on_target(&sim, &out).await;
    let state = sim.sim_state().await;
    let counters = &state["arm"]["counters"];
    assert!(
        counters["throttled"].as_u64().unwrap_or(0) > 0,
        "the scenario really throttled: {counters}"
    );
    assert!(
        counters["conflicts"].as_u64().unwrap_or(0) > 0,
        "and answered transient 409s: {counters}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_rollouts_still_complete() {
    let sim = TestSim::start("slow-rollout").await;
    let out = sim.upgrade(APPROVE).await;
    assert_completed_on_target(&sim, &out).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_sidecars_complete_and_are_seen_in_init_containers() {
    let sim = TestSim::start("native-sidecars").await;
    let out = sim.upgrade(APPROVE).await;
    assert_completed_on_target(&sim, &out).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_rollout_fails_the_restart_and_rolls_back() {
    let sim = TestSim::start("stuck-rollout").await;
    let out = sim.upgrade(APPROVE).await;
    assert_rolled_back(&sim, &out, "progress deadline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_labels_are_warned_about_in_preflight() {
    let sim = TestSim::start("legacy-labels").await;
    let out = sim.run(&["plan"]).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("namespace legacy is labelled istio-injection=enabled"),
        "{text}"
    );
    assert!(
        text.contains("namespace inventory is labelled istio.io/rev=asm-1-25"),
        "{text}"
    );
    // The run itself still completes: the warnings do not stop it.
    let out = sim.upgrade(APPROVE).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("istio-injection=enabled"));
}

/// Preflight names what a restart will not move — a paused Deployment, OnDelete StatefulSets
/// and DaemonSets — in meshed namespaces only, whether they are few or more than the fan-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_names_what_a_restart_will_not_move() {
    use asm_canary_sim::kube::{GeneratedShape, NamespaceShape, WorkloadShape};
    for generated in [0, 20] {
        let mut scenario = asm_canary_sim::Scenario::builtin("healthy").unwrap();
        let wl = |name: &str, paused: bool, strategy: Option<&str>| WorkloadShape {
            name: name.into(),
            replicas: 1,
            paused,
            update_strategy: strategy.map(str::to_string),
            ..Default::default()
        };
        let mut stuck = NamespaceShape {
            name: "stuck".into(),
            labels: [("istio.io/rev".to_string(), "prod".to_string())].into(),
            ..Default::default()
        };
        stuck.deployments = vec![wl("frozen", true, None)];
        stuck.statefulsets = vec![wl("ledger", false, Some("OnDelete"))];
        stuck.daemonsets = vec![wl("agent", false, Some("OnDelete"))];
        // the same shapes outside the mesh: nothing to say about them
        let mut outside = stuck.clone();
        outside.name = "outside".into();
        outside.labels.clear();
        scenario.kube.namespaces.extend([stuck, outside]);
        if generated > 0 {
            scenario.kube.generated = Some(GeneratedShape {
                namespaces: generated,
                deployments_per_namespace: 1,
                replicas: 1,
                revision_label: "prod".into(),
            });
        }
        let sim = TestSim::start_with(scenario).await;
        let out = sim.run(&["plan"]).await;
        assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        for expected in [
            "Deployment stuck/frozen is paused",
            "StatefulSet stuck/ledger uses updateStrategy OnDelete",
            "DaemonSet stuck/agent uses updateStrategy OnDelete",
        ] {
            assert!(
                text.contains(expected),
                "{generated}: {expected:?} in {text}"
            );
        }
        assert!(!text.contains("outside/"), "{generated}: {text}");
    }
}
