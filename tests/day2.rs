//! The day-2 runbooks on the simulated cluster, through the real binary: `patch-restart`
//! after AKS rolled a patch (scenario `patch-rolled`, or `POST /_sim/patch` mid-run) and
//! `onboard -n NS…` (label, restart in waves, every pod 2/2; rolled back on a failed gate).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::Duration;

use asm_canary::k8s::patch::find_patch_drift;
use asm_canary::k8s::rollout::{list_workloads, patch_restart};
use asm_canary::k8s::{WorkloadKind, WorkloadRef};
use common::{TestSim, events, last_event, stderr};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;

const REV: &str = "asm-1-27";

/// `<command> --unattended --output json --state <test's state>` with fast gates.
async fn day2(sim: &TestSim, args: &[&str]) -> Output {
    let state = sim.state_file();
    let mut argv: Vec<&str> = args.to_vec();
    argv.extend([
        "--unattended",
        "--output",
        "json",
        "--state",
        state.to_str().unwrap(),
    ]);
    argv.extend(common::fast_day2());
    sim.run(&argv).await
}

/// Every application workload's `restartedAt`.
async fn restart_stamps(kube: &kube::Client) -> BTreeMap<WorkloadRef, Option<String>> {
    let mut out = BTreeMap::new();
    for kind in [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
    ] {
        for w in list_workloads(kube, kind).await.unwrap() {
            let r = w.reference();
            if r.namespace.starts_with("aks-istio-") || r.namespace.starts_with("kube-") {
                continue;
            }
            out.insert(r, w.restarted_at().map(str::to_string));
        }
    }
    out
}

async fn drifted(kube: &kube::Client) -> BTreeSet<WorkloadRef> {
    find_patch_drift(kube, &[REV.to_string()], None)
        .await
        .unwrap()
        .workloads
        .into_iter()
        .map(|d| d.workload)
        .collect()
}

fn outcome(out: &Output) -> Value {
    last_event(out)["outcome"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_restart_restarts_exactly_the_drifted_workloads() {
    let sim = TestSim::start("patch-rolled").await;
    let kube = sim.kube().await;
    assert_eq!(
        drifted(&kube).await.len(),
        6,
        "patch-rolled: every sidecar runs 1.27.3"
    );
    // frontend/web is renewed by hand first: on 1.27.4 already, not to be restarted again.
    let renewed = WorkloadRef::new(WorkloadKind::Deployment, "frontend", "web");
    patch_restart(&kube, &renewed, "2026-11-30T10:00:00Z")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while drifted(&kube).await.contains(&renewed) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "frontend/web renewed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let to_restart = drifted(&kube).await;
    assert_eq!(to_restart.len(), 5);
    let before = restart_stamps(&kube).await;

    let out = day2(&sim, &["patch-restart"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(outcome(&out), "completed", "{}", stderr(&out));

    let after = restart_stamps(&kube).await;
    let restarted: BTreeSet<WorkloadRef> = after
        .iter()
        .filter(|(w, stamp)| before.get(*w) != Some(*stamp))
        .map(|(w, _)| w.clone())
        .collect();
    assert_eq!(restarted, to_restart, "exactly the drifted workloads");
    assert!(
        drifted(&kube).await.is_empty(),
        "no sidecar left behind its injector"
    );
    assert!(
        events(&out)
            .iter()
            .any(|e| e["event"] == "gate_passed" || e["event"] == "step_finished"),
        "events on stdout"
    );
    // nothing to do the second time: said, no run started
    std::fs::remove_file(sim.state_file()).unwrap();
    let again = day2(&sim, &["patch-restart"]).await;
    assert!(!sim.state_file().exists(), "{}", stderr(&again));
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(
        restart_stamps(&kube).await,
        after,
        "nothing restarted twice"
    );
}

/// The plans people read, as snapshots: a change in what they say is a reviewed change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day2_plans_as_people_read_them() {
    let sim = TestSim::start("patch-rolled").await;
    let out = sim.run(&["patch-restart", "--plan"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    insta::assert_snapshot!(
        "patch_restart_plan_text",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = sim
        .run(&[
            "onboard",
            "-n",
            "payments,orders",
            "--plan",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    insta::assert_json_snapshot!("onboard_plan_json_all_meshed", doc);
}

/// The `_sim` control rolls a patch: a healthy cluster has no drift, then every sidecar does;
/// `--plan` names them and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_rolled_mid_run_is_found_by_the_plan() {
    let sim = TestSim::start("healthy").await;
    let kube = sim.kube().await;
    let plan = sim
        .run(&["patch-restart", "--plan", "--output", "json"])
        .await;
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let doc: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(doc["schema"], "asm-canary.day2-plan/1.0");
    assert!(doc.get("drifted").is_none(), "{doc}");

    let rolled = sim.roll_patch(REV).await;
    assert_eq!(rolled["version"], "1.27.4");
    let before = restart_stamps(&kube).await;
    let plan = sim
        .run(&["patch-restart", "--plan", "--output", "json"])
        .await;
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let doc: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(doc["drifted"].as_array().unwrap().len(), 6, "{doc}");
    assert_eq!(
        doc["drifted"][0]["injected"],
        "mcr.microsoft.com/oss/istio/proxyv2:1.27.4-distroless"
    );
    assert_eq!(doc["waves"][0]["namespaces"][0], "frontend", "{doc}");
    assert_eq!(
        restart_stamps(&kube).await,
        before,
        "--plan changes nothing"
    );
}

/// Killed in the middle of its waves, the run is resumed from its checkpoint: every drifted
/// workload restarted, none of them twice, none drifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_restart_resumes_after_it_was_killed_mid_wave() {
    use tokio::io::AsyncBufReadExt;
    let sim = TestSim::start("patch-rolled").await;
    let kube = sim.kube().await;
    let to_restart = drifted(&kube).await;
    let state = sim.state_file();
    let mut argv = vec![
        "patch-restart",
        "--unattended",
        "--output",
        "json",
        "--lock-duration",
        "2",
        "--state",
        state.to_str().unwrap(),
    ];
    argv.extend(common::fast_day2());
    let mut child = sim
        .command(&argv)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // killed once wave 2 is journaled (wave 1 is done)
    while let Ok(Some(line)) = lines.next_line().await {
        let ev: Value = serde_json::from_str(&line).unwrap();
        if ev["event"] == "side_effect" && ev["target"] == "wave-2" {
            child.start_kill().unwrap();
            break;
        }
    }
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), None, "killed mid-run, not finished");
    let cp: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_ne!(cp["state"], "completed");
    let stamps_at_kill = restart_stamps(&kube).await;
    // `rollback` of it said "rolled back" (exit 0), undid nothing and ended the run: a patch
    // restart has no rollback steps. Refused, the checkpoint as it was.
    let kept = std::fs::read(&state).unwrap();
    let out = sim
        .run(&[
            "rollback",
            "--state",
            state.to_str().unwrap(),
            "--unattended",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has nothing to roll back"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&state).unwrap(), kept, "checkpoint untouched");
    tokio::time::sleep(Duration::from_secs(3)).await; // the dead run's lock expires

    let out = sim.resume(&[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(outcome(&out), "completed", "{}", stderr(&out));
    assert!(drifted(&kube).await.is_empty());
    let cp: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(cp["runbook"]["name"], "asm-canary-patch-restart");
    let mut journaled: Vec<String> = Vec::new();
    for e in cp["journal"].as_array().unwrap() {
        if e["kind"] == "restart-wave" {
            for w in e["details"]["workloads"].as_array().unwrap() {
                journaled.push(format!("{}/{}", w["namespace"], w["name"]));
            }
        }
    }
    assert_eq!(
        journaled.len(),
        to_restart.len(),
        "each drifted workload journaled once: {journaled:?}"
    );
    // wave 1 was done before the kill: the resume did not restart it again
    let after = restart_stamps(&kube).await;
    let first = WorkloadRef::new(WorkloadKind::Deployment, "frontend", "web");
    assert_eq!(after.get(&first), stamps_at_kill.get(&first));
}

// ---- onboarding ----

/// A healthy cluster with namespace `shop` (two Deployments, not in the mesh): `never_ready`
/// makes `shop/web`'s injected pods never ready (a gate that fails).
async fn sim_with_shop(stuck: bool) -> TestSim {
    use asm_canary_sim::Scenario;
    use asm_canary_sim::kube::{NamespaceShape, WorkloadShape};
    let mut scenario = Scenario::builtin("healthy").unwrap();
    scenario.kube.namespaces.push(NamespaceShape {
        name: "shop".into(),
        deployments: vec![
            WorkloadShape {
                name: "web".into(),
                replicas: 2,
                ..Default::default()
            },
            WorkloadShape {
                name: "cart".into(),
                replicas: 1,
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    if stuck {
        scenario.kube.never_ready = vec!["shop/web".into()];
        scenario.kube.never_ready_revisions = vec![REV.into()];
    }
    TestSim::start_with(scenario).await
}

/// Each pod of `ns`: (ready containers, containers), e.g. (2, 2) with a sidecar.
async fn pod_shapes(kube: &kube::Client, ns: &str) -> Vec<(usize, usize)> {
    let pods = Api::<Pod>::namespaced(kube.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    pods.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let total = p.spec.as_ref().map_or(0, |s| s.containers.len());
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map_or(0, |cs| cs.iter().filter(|c| c.ready).count());
            (ready, total)
        })
        .collect()
}

async fn rev_label(kube: &kube::Client, ns: &str) -> Option<String> {
    Api::<Namespace>::all(kube.clone())
        .get(ns)
        .await
        .unwrap()
        .metadata
        .labels
        .and_then(|l| l.get("istio.io/rev").cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboard_labels_and_restarts_every_pod_to_two_of_two() {
    let sim = sim_with_shop(false).await;
    let kube = sim.kube().await;
    assert!(pod_shapes(&kube, "shop").await.iter().all(|s| *s == (1, 1)));
    let plan = sim.run(&["onboard", "-n", "shop", "--plan"]).await;
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    insta::assert_snapshot!("onboard_plan_text", String::from_utf8_lossy(&plan.stdout));
    assert_eq!(
        rev_label(&kube, "shop").await,
        None,
        "--plan changes nothing"
    );
    let out = day2(&sim, &["onboard", "-n", "shop"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(outcome(&out), "completed", "{}", stderr(&out));
    assert_eq!(rev_label(&kube, "shop").await.as_deref(), Some("prod"));
    let shapes = pod_shapes(&kube, "shop").await;
    assert_eq!(shapes.len(), 3, "{shapes:?}");
    assert!(shapes.iter().all(|s| *s == (2, 2)), "{shapes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboard_rolls_back_when_a_gate_fails() {
    let sim = sim_with_shop(true).await;
    let kube = sim.kube().await;
    let out = day2(
        &sim,
        &["onboard", "-n", "shop", "--param", "rollout_timeout=8s"],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(outcome(&out), "rolled_back", "{}", stderr(&out));
    assert_eq!(rev_label(&kube, "shop").await, None, "label removed");
    let shapes = pod_shapes(&kube, "shop").await;
    assert_eq!(shapes.len(), 3, "{shapes:?}");
    assert!(shapes.iter().all(|s| *s == (1, 1)), "{shapes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboard_refuses_bad_namespaces_and_leaves_meshed_ones_alone() {
    let sim = sim_with_shop(false).await;
    let kube = sim.kube().await;
    for (ns, says) in [
        ("nope", "does not exist"),
        ("kube-system", "never onboarded"),
        ("aks-istio-system", "never onboarded"),
    ] {
        let out = day2(&sim, &["onboard", "-n", ns]).await;
        assert_eq!(out.status.code(), Some(2), "{ns}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{ns}: {}", stderr(&out));
        assert!(!sim.state_file().exists(), "{ns}: no checkpoint written");
    }
    let out = day2(&sim, &["onboard", "-n", "shop", "--revision", "asm-1-25"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not installed"), "{}", stderr(&out));

    // already in the mesh: said, nothing changed
    let before = restart_stamps(&kube).await;
    let out = day2(&sim, &["onboard", "-n", "payments"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already in the mesh"),
        "{}",
        stderr(&out)
    );
    assert_eq!(restart_stamps(&kube).await, before);
    assert_eq!(rev_label(&kube, "shop").await, None);
}

/// A scenario's extra namespace `name` with `labels` and one Deployment.
fn labelled_namespace(name: &str, labels: &[(&str, &str)]) -> asm_canary_sim::kube::NamespaceShape {
    use asm_canary_sim::kube::{NamespaceShape, WorkloadShape};
    NamespaceShape {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        deployments: vec![WorkloadShape {
            name: "app".into(),
            replicas: 1,
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn all_labels(kube: &kube::Client) -> BTreeMap<String, BTreeMap<String, String>> {
    Api::<Namespace>::all(kube.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| {
            (
                n.metadata.name.unwrap_or_default(),
                n.metadata.labels.unwrap_or_default(),
            )
        })
        .collect()
}

/// Onboard used to call a namespace "already in the mesh, left alone" (exit 0) when its labels
/// inject nothing: `istio-injection=enabled` (the add-on ignores it), `istio-injection=disabled`
/// (an opt-out) or `istio.io/rev` naming no installed revision or tag. Each is refused with the
/// fix, nothing changed; so is a name that is no namespace name (it went into the URL as is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboard_refuses_namespaces_whose_labels_inject_nothing_instead_of_calling_them_meshed() {
    let mut scenario = asm_canary_sim::Scenario::builtin("healthy").unwrap();
    scenario.kube.namespaces.extend([
        labelled_namespace("shop3", &[("istio-injection", "enabled")]),
        labelled_namespace("shop4", &[("istio.io/rev", "asm-1-25")]),
        labelled_namespace("shop5", &[("istio-injection", "disabled")]),
    ]);
    let sim = TestSim::start_with(scenario).await;
    let kube = sim.kube().await;
    let labels = all_labels(&kube).await;
    let stamps = restart_stamps(&kube).await;
    for (ns, says) in [
        ("shop3", "istio-injection=enabled: the AKS add-on ignores"),
        (
            "shop4",
            "istio.io/rev=asm-1-25, which names no installed revision",
        ),
        ("shop5", "istio-injection=disabled: it was opted out"),
        ("Shop", "is not a namespace name"),
        ("shop?a=b", "is not a namespace name"),
        ("", "is not a namespace name"),
    ] {
        let out = day2(&sim, &["onboard", "-n", ns]).await;
        assert_eq!(out.status.code(), Some(2), "{ns}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{ns}: {}", stderr(&out));
        assert!(!sim.state_file().exists(), "{ns}: no checkpoint written");
    }
    let out = day2(&sim, &["onboard", "-n", "shop3", "--plan"]).await;
    assert!(
        stderr(&out).contains("kubectl label ns shop3 istio-injection-"),
        "the fix: {}",
        stderr(&out)
    );
    assert_eq!(all_labels(&kube).await, labels, "no label changed");
    assert_eq!(restart_stamps(&kube).await, stamps, "nothing restarted");
}

/// `patch-restart -n` with a typo, a namespace not in the mesh or the system's used to plan
/// "no sidecar runs an older proxy" and exit 0 with every other namespace drifted; `-n
/// payments,nope` dropped `nope` silently. Each is refused (exit 2), nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_restart_refuses_a_namespace_it_would_find_nothing_in() {
    let mut scenario = asm_canary_sim::Scenario::builtin("patch-rolled").unwrap();
    scenario
        .kube
        .namespaces
        .push(labelled_namespace("plain", &[]));
    let sim = TestSim::start_with(scenario).await;
    let kube = sim.kube().await;
    let stamps = restart_stamps(&kube).await;
    assert_eq!(drifted(&kube).await.len(), 6, "patch-rolled: six behind");
    for (ns, says) in [
        ("nope", "namespace nope does not exist"),
        ("payments,nope", "namespace nope does not exist"),
        ("plain", "namespace plain is not in the mesh"),
        ("kube-system", "belongs to the cluster or the mesh add-on"),
        ("Payments", "is not a namespace name"),
    ] {
        for plan in [true, false] {
            let mut args = vec!["patch-restart", "-n", ns];
            if plan {
                args.push("--plan");
            }
            let out = day2(&sim, &args).await;
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
            assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
            assert!(!sim.state_file().exists(), "{args:?}: no checkpoint");
        }
    }
    assert_eq!(restart_stamps(&kube).await, stamps, "nothing restarted");
    let out = day2(&sim, &["patch-restart", "-n", "payments", "--plan"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Onboarding while the injecting istiod had no ready pod planned as usual, labelled, restarted
/// and failed its gates (the injector refused every pod) before rolling back. It is refused
/// up front (exit 2), nothing labelled or restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboard_refuses_while_the_injecting_istiod_has_no_ready_pod() {
    use k8s_openapi::api::apps::v1::Deployment;
    let sim = sim_with_shop(false).await;
    let kube = sim.kube().await;
    let deployments = Api::<Deployment>::namespaced(kube.clone(), "aks-istio-system");
    let scale = serde_json::json!({ "spec": { "replicas": 0 } });
    deployments
        .patch(
            &format!("istiod-{REV}"),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&scale),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !asm_canary::k8s::mesh::istiod_pods(&kube, REV)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(tokio::time::Instant::now() < deadline, "istiod scaled to 0");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stamps = restart_stamps(&kube).await;
    for plan in [true, false] {
        let mut args = vec!["onboard", "-n", "shop"];
        if plan {
            args.push("--plan");
        }
        let out = day2(&sim, &args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("istiod of asm-1-27 has no ready pod"),
            "{}",
            stderr(&out)
        );
        assert!(!sim.state_file().exists(), "no checkpoint");
    }
    assert_eq!(rev_label(&kube, "shop").await, None, "shop not labelled");
    assert_eq!(restart_stamps(&kube).await, stamps, "nothing restarted");
}
