//! The canary wave before the tag moves, the gate after every wave, and the `promote`
//! approval: the real binary against the simulator, asserting on the simulator's request log
//! (what was ever changed) and its final state.

mod common;

use std::collections::BTreeSet;

use common::{TestSim, events, last_event, stderr};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;

const SOURCE: &str = "asm-1-27";
const TARGET: &str = "asm-1-29";
const TAG_WEBHOOK: &str = "mutatingwebhookconfigurations/istio-revision-tag-prod";

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn is_workload(path: &str) -> bool {
    ["/deployments/", "/statefulsets/", "/daemonsets/"]
        .iter()
        .any(|k| path.contains(k))
}

/// The namespace of `/apis/apps/v1/namespaces/<ns>/deployments/<name>`.
fn namespace_of(path: &str) -> String {
    path.split("/namespaces/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_string()
}

/// Successful writes to `path`-matching objects, in order: (seq, method, path).
fn writes(sim: &TestSim, pred: impl Fn(&str) -> bool) -> Vec<(u64, String, String)> {
    sim.handle
        .shared
        .requests
        .snapshot()
        .iter()
        .filter(|r| r.api == "kube" && r.method != "GET" && r.status < 300 && pred(&r.path))
        .map(|r| (r.seq, r.method.clone(), r.path.clone()))
        .collect()
}

/// Namespaces whose workloads were restarted (patched) up to request `until`.
fn restarted_namespaces(sim: &TestSim, until: u64) -> BTreeSet<String> {
    writes(sim, is_workload)
        .into_iter()
        .filter(|(seq, method, _)| *seq <= until && method == "PATCH")
        .map(|(_, _, path)| namespace_of(&path))
        .collect()
}

async fn rev_label(sim: &TestSim, ns: &str) -> Option<String> {
    let nss = Api::<Namespace>::all(sim.kube().await);
    nss.get(ns)
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default()
        .get("istio.io/rev")
        .cloned()
}

async fn labels_are_as_before(sim: &TestSim) {
    for ns in ["frontend", "payments", "orders", "logging"] {
        assert_eq!(
            rev_label(sim, ns).await.as_deref(),
            Some("prod"),
            "namespace {ns} is labelled as before the run"
        );
    }
}

/// The seq of the first request of the rollback (its first tag or label restore, or
/// restart back): everything before it is the forward run.
fn rollback_started(out: &std::process::Output) -> bool {
    events(out)
        .iter()
        .any(|e| e["event"] == "step_started" && e["step"] == "rollback-tag")
}

/// A canary whose proxies never sync fails its gate: the run rolls back, the tag webhook was
/// never written (it pointed at the source the whole time), and only the canary namespace's
/// workloads were ever restarted onto the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tag_does_not_move_before_the_canary_wave_passes() {
    let sim = TestSim::start("stale-proxies").await;
    let before = sim.pods_by_revision().await;
    let out = sim
        .upgrade(&[
            "--approve",
            "start",
            "--approve",
            "complete",
            "--canary-namespaces",
            "payments",
            "--param",
            "verify_timeout=3s",
        ])
        .await;
    assert_eq!(code(&out), 3, "rolled back: {}", stderr(&out));
    assert!(rollback_started(&out));
    let failed: Vec<_> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "step_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["step"], "canary", "{failed:?}");
    // Not one write to the tag webhook, forward or back.
    assert_eq!(writes(&sim, |p| p.contains(TAG_WEBHOOK)), vec![]);
    assert!(
        !events(&out)
            .iter()
            .any(|e| e["step"] == "repoint-tag" && e["event"] == "step_started"),
        "repoint-tag never started"
    );
    // Only payments' workloads were restarted (forward onto the target, then back).
    assert_eq!(
        restarted_namespaces(&sim, u64::MAX),
        BTreeSet::from(["payments".to_string()])
    );
    // Rolled back exactly: labels, tag, pods, revisions.
    labels_are_as_before(&sim).await;
    assert_eq!(sim.revisions().await, vec![SOURCE]);
    assert_eq!(sim.pods_by_revision().await, before);
}

/// A scenario where `orders/web`'s pods on the new revision never turn ready: the second wave
/// (logging, orders) fails; the third (payments) never starts.
fn stuck_orders() -> asm_canary_sim::Scenario {
    let mut s = asm_canary_sim::Scenario::builtin("healthy").unwrap();
    s.kube.never_ready = vec!["orders/web".into()];
    s.kube.never_ready_revisions = vec!["asm-1-28".into(), TARGET.into()];
    s
}

/// A failure in a later wave rolls back exactly what moved: the tag back on the source, the
/// canary namespace's label back, the canary's and the failed wave's workloads restarted back,
/// and the wave that never started untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_in_a_later_wave_rolls_back_exactly_what_moved() {
    let sim = TestSim::start_with(stuck_orders()).await;
    let before = sim.pods_by_revision().await;
    let out = sim
        .upgrade(&[
            "--approve",
            "start",
            "--approve",
            "complete",
            "--canary-namespaces",
            "frontend",
            "--waves",
            "x2",
            "--param",
            "rollout_timeout=6s",
        ])
        .await;
    assert_eq!(code(&out), 3, "rolled back: {}", stderr(&out));
    let failed: Vec<_> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "step_failed")
        .collect();
    assert_eq!(failed[0]["step"], "restart", "{failed:?}");
    // The canary passed, the tag moved, then wave 2 (logging, orders) failed.
    let tag_writes = writes(&sim, |p| p.contains(TAG_WEBHOOK));
    assert_eq!(
        tag_writes.len(),
        2,
        "moved once, restored once: {tag_writes:?}"
    );
    let restarted = restarted_namespaces(&sim, u64::MAX);
    assert_eq!(
        restarted,
        BTreeSet::from(["frontend", "logging", "orders"].map(String::from)),
        "payments (wave 3) was never restarted"
    );
    // The canary was restarted before the tag moved.
    let first_tag_write = tag_writes[0].0;
    assert_eq!(
        restarted_namespaces(&sim, first_tag_write),
        BTreeSet::from(["frontend".to_string()])
    );
    labels_are_as_before(&sim).await;
    let state = sim.sim_state().await;
    let hooks = state["kube"]["mutatingWebhooks"]
        .as_array()
        .cloned()
        .unwrap();
    let tag = hooks.iter().find(|h| h["tag"] == "prod").unwrap();
    assert_eq!(tag["revision"], SOURCE);
    assert_eq!(sim.revisions().await, vec![SOURCE]);
    assert_eq!(sim.pods_by_revision().await, before);
}

/// `--promote-approval`: unattended without `--approve promote`, the run pauses after the
/// canary (exit 4) with the tag still on the source; `resume --approve promote` finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_approval_pauses_after_the_canary_until_approved() {
    let sim = TestSim::start("healthy").await;
    let out = sim
        .upgrade(&[
            "--approve",
            "start",
            "--approve",
            "complete",
            "--promote-approval",
        ])
        .await;
    assert_eq!(code(&out), 4, "paused: {}", stderr(&out));
    let last = last_event(&out);
    assert_eq!(last["outcome"], "paused");
    assert!(
        last["reason"]
            .as_str()
            .is_some_and(|r| r.contains("--approve promote")),
        "{last}"
    );
    assert_eq!(writes(&sim, |p| p.contains(TAG_WEBHOOK)), vec![]);
    // The default canary (frontend: the fewest workloads, first by name) runs the target.
    assert_eq!(
        restarted_namespaces(&sim, u64::MAX),
        BTreeSet::from(["frontend".to_string()])
    );
    assert_eq!(rev_label(&sim, "frontend").await.as_deref(), Some(TARGET));
    let out = sim
        .resume(&["--approve", "promote", "--approve", "complete"])
        .await;
    assert_eq!(code(&out), 0, "completed: {}", stderr(&out));
    assert_eq!(sim.revisions().await, vec![TARGET]);
    // The canary namespace has the tag label back.
    labels_are_as_before(&sim).await;
    let pods = sim.pods_by_revision().await;
    assert_eq!(pods.get(SOURCE), None, "{pods:?}");
}

/// Without `--promote-approval`, `promote` is skipped and asks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_promote_approval_the_run_goes_on_after_the_canary() {
    let sim = TestSim::start("healthy").await;
    let out = sim
        .upgrade(&["--approve", "start", "--approve", "complete"])
        .await;
    assert_eq!(code(&out), 0, "completed: {}", stderr(&out));
    let evs = events(&out);
    assert!(
        evs.iter()
            .any(|e| e["event"] == "step_skipped" && e["step"] == "promote"),
        "promote skipped"
    );
    // Every wave's gate ran: the canary's and the later waves'.
    let gates = evs
        .iter()
        .filter(|e| {
            e["event"] == "message" && e["text"].as_str().is_some_and(|m| m.contains(" passed: "))
        })
        .count();
    assert!(gates >= 2, "a gate after every wave: {gates}");
    labels_are_as_before(&sim).await;
}

/// Label mode relabels wave by wave: the canary namespace first (its workloads restarted and
/// gated), the others only with their own wave; a completed run leaves every namespace on the
/// target label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_mode_relabels_wave_by_wave() {
    let sim = TestSim::start("healthy").await;
    // Label mode moves namespaces labelled with the source revision itself; no tag is in use
    // (a tag left on the source would keep complete from removing it).
    let client = sim.kube().await;
    Api::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>::all(
        client.clone(),
    )
    .delete(
        "istio-revision-tag-prod-aks-istio-system",
        &Default::default(),
    )
    .await
    .unwrap();
    let nss = Api::<Namespace>::all(client);
    for ns in ["frontend", "payments", "orders", "logging"] {
        let patch = serde_json::json!({ "metadata": { "labels": { "istio.io/rev": SOURCE } } });
        nss.patch(
            ns,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    }
    let out = sim
        .upgrade(&[
            "--approve",
            "start",
            "--approve",
            "complete",
            "--mode",
            "label",
            "--canary-namespaces",
            "orders",
        ])
        .await;
    assert_eq!(code(&out), 0, "completed: {}", stderr(&out));
    let relabels: Vec<_> = events(&out)
        .into_iter()
        .filter(|e| {
            e["event"] == "side_effect" && e["kind"] == "namespaces-relabel" && e["done"] == false
        })
        .map(|e| {
            (
                e["step"].as_str().unwrap_or("").to_string(),
                e["target"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        relabels[0],
        ("canary".to_string(), "canary".to_string()),
        "{relabels:?}"
    );
    assert!(relabels.len() >= 2, "a relabel per wave: {relabels:?}");
    assert!(
        relabels[1..].iter().all(|(step, _)| step == "restart"),
        "{relabels:?}"
    );
    for ns in ["frontend", "payments", "orders", "logging"] {
        assert_eq!(rev_label(&sim, ns).await.as_deref(), Some(TARGET), "{ns}");
    }
    assert_eq!(sim.revisions().await, vec![TARGET]);
}

/// The plan shows the order (canary, tag, waves, label back) and every wave's blast radius.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_shows_the_canary_first_and_each_waves_blast_radius() {
    let sim = TestSim::start("healthy").await;
    let out = sim.run(&["plan", "--output", "json"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan["canary"]["namespaces"],
        serde_json::json!(["frontend"])
    );
    assert_eq!(plan["canary"]["chosen_by_default"], true);
    let waves = plan["waves"].as_array().unwrap();
    assert_eq!(waves[0]["canary"], true);
    assert!(waves[1..].iter().all(|w| w["canary"] == false));
    let last = waves.last().unwrap();
    assert_eq!(last["cumulative_percent"], 100.0);
    let sizes: Vec<u64> = waves
        .iter()
        .map(|w| w["workloads"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, vec![1, 3, 2], "x2 from a canary of 1: {plan}");
    let order: Vec<&str> = plan["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert!(order[0].starts_with("canary: frontend"), "{order:?}");
    assert!(
        order[1].starts_with("tag prod: asm-1-27 → asm-1-29"),
        "{order:?}"
    );
    assert!(
        order
            .last()
            .unwrap()
            .contains("take istio.io/rev=prod back"),
        "{order:?}"
    );
    let out = sim
        .run(&["plan", "--waves", "50%,100%", "--parallelism", "50%"])
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stderr(&out) + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Wave 1/3    canary: 1 workload(s)"), "{text}");
    assert!(text.contains("% of the mesh"), "{text}");
}

/// Regression: `--canary-namespaces` naming no namespace the run migrates (a typo) was only
/// warned about by the canary step — after `start` had installed the canary control plane —
/// which then chose another canary. A new run refuses it (exit 2) before anything is written:
/// no checkpoint, no ARM or Kubernetes write; so does `--param canary_namespaces=…`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_namespace_the_run_would_not_migrate_is_refused_before_any_change() {
    let sim = TestSim::start("healthy").await;
    let before = sim.pods_by_revision().await;
    let configmaps_before = configmaps(&sim).await;
    for flags in [
        ["--canary-namespaces", "payments,paymnets"],
        ["--param", "canary_namespaces=paymnets, payments"],
    ] {
        let mut args = vec!["--approve", "start", "--approve", "complete"];
        args.extend(flags);
        let out = sim.upgrade(&args).await;
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{err}");
        assert!(
            err.contains("--canary-namespaces paymnets: not a namespace this run migrates")
                && err.contains("istio.io/rev=prod: frontend, logging, orders, payments")
                && err.contains("nothing was changed"),
            "{err}"
        );
        assert!(!sim.state_file().exists(), "no checkpoint was written");
    }
    // Only reads, the sign-in, and the shared ConfigMap's copy as a server-side dry run.
    let writes: Vec<_> = sim
        .handle
        .shared
        .requests
        .snapshot()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {} {}", r.api, r.method, r.path))
        .filter(|w| {
            !w.ends_with("/oauth2/v2.0/token")
                && !w.ends_with("/listClusterUserCredential")
                && w != "kube POST /api/v1/namespaces/aks-istio-system/configmaps"
        })
        .collect();
    assert_eq!(writes, Vec::<String>::new(), "no write to the cluster");
    assert_eq!(configmaps(&sim).await, configmaps_before);
    // The plan says so, and changes nothing either.
    let plan = sim.run(&["plan", "--canary-namespaces", "paymnets"]).await;
    let text = format!("{}{}", String::from_utf8_lossy(&plan.stdout), stderr(&plan));
    assert!(
        text.contains("--canary-namespaces paymnets: not a namespace this run migrates")
            && text.contains("`upgrade` refuses it"),
        "{text}"
    );
    assert_eq!(sim.revisions().await, vec![SOURCE]);
    labels_are_as_before(&sim).await;
    assert_eq!(sim.pods_by_revision().await, before);
}

/// The ConfigMaps of aks-istio-system, by name.
async fn configmaps(sim: &TestSim) -> Vec<String> {
    let api = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
        sim.kube().await,
        "aks-istio-system",
    );
    let list = api.list(&Default::default()).await.unwrap();
    list.items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect()
}

/// Regression: `demo` skips the refusals a new `upgrade` makes (its scenarios show traps on
/// purpose), so `demo --canary-namespaces paymnets` still ran with another canary after
/// installing the new control plane; it refuses the unknown canary too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_refuses_a_canary_namespace_it_would_not_migrate() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
        .args(["demo", "--unattended", "--output", "json"])
        .args(["--canary-namespaces", "paymnets"])
        .env_remove("ASM_CANARY_LOG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("--canary-namespaces paymnets: not a namespace this run migrates"),
        "{err}"
    );
}
