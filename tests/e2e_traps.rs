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

fn meshed(name: &str, label: &str) -> NamespaceShape {
    NamespaceShape {
        name: name.into(),
        labels: [("istio.io/rev".to_string(), label.to_string())].into(),
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

/// No ARM update and no Kubernetes write reached the simulator: nothing was changed. Allowed:
/// the token and kubeconfig requests (POSTs that read), and the plan's server-side dry run of
/// the shared ConfigMap's copy (a POST the log cannot tell from a create, so the ConfigMap's
/// absence is checked too).
async fn assert_nothing_written(sim: &TestSim, since: usize) {
    let writes: Vec<String> = sim
        .handle
        .shared
        .requests
        .snapshot()
        .into_iter()
        .skip(since)
        .filter(|r| r.api != "token")
        .filter(|r| !(r.method == "POST" && r.path.ends_with("/listClusterUserCredential")))
        .filter(|r| !(r.api == "kube" && r.method == "POST" && r.path.ends_with("/configmaps")))
        .map(|r| format!("{} {} {}", r.api, r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "nothing was changed: {writes:#?}");
    let cm = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
        sim.kube().await,
        "aks-istio-system",
    )
    .get_opt("istio-shared-configmap-asm-1-29")
    .await
    .unwrap();
    assert!(
        cm.is_none(),
        "the target's shared ConfigMap was not created"
    );
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

/// Regression: an `OnDelete` StatefulSet was warned about, then "restarted" (its pods never
/// moved), and the gate waited up to 20 minutes before rolling back; a paused Deployment and
/// a namespace labelled with the source revision passed start, then blocked complete. Each is
/// now refused before the first change: exit 2, the fix named, no write reached the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ondelete_paused_and_source_labelled_workloads_are_refused_before_start() {
    let mut on_delete = meshed("orders2", "prod");
    on_delete.statefulsets = vec![WorkloadShape {
        update_strategy: Some("OnDelete".into()),
        ..wl("ledger", 2)
    }];
    // paused once its pods run (a Deployment created paused has none to move)
    let mut paused = meshed("frozen", "prod");
    paused.deployments = vec![wl("api", 1)];
    let mut direct = meshed("direct", "asm-1-27");
    direct.deployments = vec![wl("app", 1)];
    let cases: [(NamespaceShape, &[&str]); 3] = [
        (
            on_delete,
            &[
                "StatefulSet orders2/ledger uses updateStrategy OnDelete",
                "--restart-ondelete",
            ],
        ),
        (
            paused,
            &[
                "Deployment frozen/api is paused",
                "kubectl rollout resume deployment/api -n frozen",
            ],
        ),
        (
            direct,
            &[
                "namespace direct is labelled istio.io/rev=asm-1-27",
                "kubectl label ns direct istio.io/rev=prod --overwrite",
            ],
        ),
    ];
    for (ns, expected) in cases {
        let name = ns.name.clone();
        let sim = TestSim::start_with(healthy_with(vec![ns])).await;
        if name == "frozen" {
            use kube::api::{Patch, PatchParams};
            let patch = serde_json::json!({"spec": {"paused": true}});
            Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(sim.kube().await, "frozen")
                .patch("api", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
        let writes_before = sim.handle.shared.requests.snapshot().len();
        // the plan names it
        let out = sim.run(&["plan"]).await;
        assert_eq!(code(&out), 0, "{name}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("Refused     {}", expected[0])),
            "{name}: {text}"
        );

        let out = sim.upgrade(APPROVE).await;
        assert_eq!(code(&out), 2, "{name}: {}", stderr(&out));
        let err = stderr(&out);
        for e in expected {
            assert!(err.contains(e), "{name}: {e:?} in {err}");
        }
        assert!(err.contains("nothing was changed"), "{name}: {err}");
        assert_nothing_written(&sim, writes_before).await;
        assert!(!sim.state_file().exists(), "{name}: no checkpoint written");
        assert_eq!(sim.revisions().await, vec!["asm-1-27"], "{name}");
    }
}

/// With `--restart-ondelete`, an `OnDelete` StatefulSet and DaemonSet are named in the plan and
/// their pods are deleted one at a time onto the target; the upgrade completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_ondelete_moves_ondelete_workloads_pod_by_pod_and_completes() {
    let mut ns = meshed("ledger", "prod");
    ns.statefulsets = vec![WorkloadShape {
        update_strategy: Some("OnDelete".into()),
        ..wl("db", 2)
    }];
    ns.daemonsets = vec![WorkloadShape {
        update_strategy: Some("OnDelete".into()),
        ..wl("agent", 0)
    }];
    let sim = TestSim::start_with(healthy_with(vec![ns])).await;
    let out = sim.run(&["plan", "--restart-ondelete"]).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Pod by pod  StatefulSet ledger/db (updateStrategy OnDelete)"),
        "{text}"
    );
    assert!(!text.contains("Refused"), "{text}");

    let mut args = APPROVE.to_vec();
    args.push("--restart-ondelete");
    let out = sim.upgrade(&args).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);
    let pods = revisions_in(&sim, "ledger").await;
    assert!(pods.len() >= 2, "{pods:?}");
    assert!(pods.iter().all(|(_, r)| r == "asm-1-29"), "{pods:?}");
}

/// Labels namespace `ns` `istio.io/rev=<value>` (overwriting), as `kubectl label --overwrite`.
async fn relabel(sim: &TestSim, ns: &str, value: &str) {
    use kube::api::{Patch, PatchParams};
    let patch = serde_json::json!({"metadata": {"labels": {"istio.io/rev": value}}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(sim.kube().await)
        .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Counts the orphan guard's rounds in a run's JSON Lines.
fn straggler_rounds(out: &std::process::Output) -> usize {
    String::from_utf8_lossy(&out.stdout)
        .matches("restarting them again (round")
        .count()
}

/// Regression: complete's orphan guard refused as soon as one pod still ran the source, even
/// a workload pod a restart would move. It now restarts such stragglers again, at most three
/// times, each round journaled, before it halts; once they can move, complete goes through and
/// its final check is in the events and the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_restarts_stragglers_at_most_three_times_then_completes_once_they_move() {
    use kube::api::DeleteParams;
    let sim = TestSim::start("healthy").await;
    let out = sim.upgrade(&["--approve", "start"]).await;
    assert_eq!(code(&out), 4, "paused before complete: {}", stderr(&out));

    // A straggler: one pod of payments/api recreated on the source.
    relabel(&sim, "payments", "asm-1-27").await;
    let pods = Api::<Pod>::namespaced(sim.kube().await, "payments");
    let api_pod = pods
        .list(&ListParams::default().labels("app=api"))
        .await
        .unwrap()
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    pods.delete(&api_pod, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    for _ in 0..100 {
        if revisions_in(&sim, "payments")
            .await
            .iter()
            .any(|(_, r)| r == "asm-1-27")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // While the namespace itself points at the source, restarts cannot move it: three
    // rounds, then the guard halts with both revisions still installed.
    let out = sim.resume(&["--approve", "complete"]).await;
    assert_eq!(code(&out), 4, "halted by the guard: {}", stderr(&out));
    assert_eq!(
        straggler_rounds(&out),
        3,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(sim.revisions().await, vec!["asm-1-27", "asm-1-29"]);
    let checkpoint = std::fs::read_to_string(sim.state_file()).unwrap();
    assert_eq!(checkpoint.matches("\"restart-stragglers\"").count(), 3);

    // The namespace follows the tag again: one round moves the stragglers, complete goes on.
    relabel(&sim, "payments", "prod").await;
    let out = sim.resume(&["--approve", "complete"]).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(straggler_rounds(&out), 1);
    assert_eq!(sim.revisions().await, vec!["asm-1-29"]);
    let payments = revisions_in(&sim, "payments").await;
    assert!(
        payments.iter().all(|(_, r)| r == "asm-1-29"),
        "{payments:?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("final check passed: tag prod points at asm-1-29"),
        "{stdout}"
    );
    let report =
        std::fs::read_to_string(asm_canary::report::report_path(&sim.state_file())).unwrap();
    assert!(
        report.contains("## Final check\n\nPassed: the cluster is as the upgrade should leave it."),
        "{report}"
    );
}

/// Regression: the traps were read only for a fresh upgrade. A canary found in the cluster
/// (started by `az aks mesh upgrade start`, its run's checkpoint lost) that `upgrade --to` the
/// canary resumes, or a stale one it consolidates first, met an `OnDelete` StatefulSet only
/// after its first change. Both are now refused before it: exit 2, nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_are_refused_before_a_canary_found_in_the_cluster_is_resumed_or_consolidated() {
    for (to, class) in [("asm-1-28", "resume-canary"), ("asm-1-29", "consolidate")] {
        let mut on_delete = meshed("orders2", "prod");
        on_delete.statefulsets = vec![WorkloadShape {
            update_strategy: Some("OnDelete".into()),
            ..wl("ledger", 2)
        }];
        let sim = TestSim::start_with(healthy_with(vec![on_delete])).await;
        sim.arm_put_revisions(&["asm-1-27", "asm-1-28"]).await;
        let out = sim.run(&["plan", "--to", to, "--output", "json"]).await;
        assert_eq!(code(&out), 0, "{class}: {}", stderr(&out));
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(plan["class"], class, "{plan}");
        let refused = plan["refused"].to_string();
        assert!(
            refused.contains("StatefulSet orders2/ledger uses updateStrategy OnDelete"),
            "{class}: {plan}"
        );

        let writes_before = sim.handle.shared.requests.snapshot().len();
        let mut args = vec!["--to", to];
        args.extend_from_slice(APPROVE);
        args.extend_from_slice(&["--approve", "consolidate"]);
        let out = sim.upgrade(&args).await;
        assert_eq!(code(&out), 2, "{class}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("--restart-ondelete"), "{class}: {err}");
        assert!(err.contains("nothing was changed"), "{class}: {err}");
        assert_nothing_written(&sim, writes_before).await;
        assert!(!sim.state_file().exists(), "{class}: no checkpoint written");
        let mut revisions = sim.revisions().await;
        revisions.sort();
        assert_eq!(revisions, vec!["asm-1-27", "asm-1-28"], "{class}");
    }
}
