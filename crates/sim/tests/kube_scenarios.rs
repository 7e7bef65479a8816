//! Each built-in scenario's effect on the Kubernetes side.

mod common;

use asm_canary_sim::Scenario;
use common::{eventually, start, start_with};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn status_revision(p: &Pod) -> Option<String> {
    let s = p
        .metadata
        .annotations
        .as_ref()?
        .get("sidecar.istio.io/status")?;
    let v: Value = serde_json::from_str(s).ok()?;
    v["revision"].as_str().map(str::to_string)
}

fn restart() -> Patch<Value> {
    Patch::Strategic(
        json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-27T08:00:00Z"}}}}}),
    )
}

fn reason(d: &Deployment) -> String {
    d.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Progressing"))
        .and_then(|c| c.reason.clone())
        .unwrap_or_default()
}

async fn add_canary(sim: &asm_canary_sim::SimHandle, client: &kube::Client) {
    sim.shared
        .mesh
        .send_modify(|m| m.revisions = vec!["asm-1-27".into(), "asm-1-28".into()]);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "aks-istio-system");
    eventually(5, || async {
        deps.get_opt("istiod-asm-1-28").await.unwrap().map(|_| ())
    })
    .await;
}

async fn relabel(client: &kube::Client, ns: &str, rev: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.patch(
        ns,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"istio.io/rev": rev}}})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn stale_proxies_never_ack_on_the_new_revision() {
    let (sim, client) = start("stale-proxies").await;
    add_canary(&sim, &client).await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "aks-istio-system");
    eventually(5, || async {
        (deps
            .get("istiod-asm-1-28")
            .await
            .unwrap()
            .status?
            .available_replicas
            == Some(2))
        .then_some(())
    })
    .await;
    relabel(&client, "frontend", "asm-1-28").await;
    let web: Api<Deployment> = Api::namespaced(client.clone(), "frontend");
    web.patch("web", &PatchParams::default(), &restart())
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "frontend");
    eventually(5, || async {
        let l = pods.list(&ListParams::default()).await.unwrap().items;
        (l.len() == 3
            && l.iter()
                .all(|p| status_revision(p).as_deref() == Some("asm-1-28")))
        .then_some(())
    })
    .await;
    let all = eventually(5, || async {
        let all = addon_helpers_syncz(&client, "asm-1-28").await;
        (all.iter()
            .filter(|e| e["proxy"].as_str().unwrap().ends_with(".frontend"))
            .count()
            == 3)
            .then_some(all)
    })
    .await;
    for e in all
        .iter()
        .filter(|e| e["proxy"].as_str().unwrap().ends_with(".frontend"))
    {
        assert!(e["cluster_sent"].is_string());
        assert!(e.get("cluster_acked").is_none(), "never acknowledged: {e}");
    }
    // the old revision's proxies are still synced
    let old = addon_helpers_syncz(&client, "asm-1-27").await;
    assert!(old.iter().all(|e| e["cluster_sent"] == e["cluster_acked"]));
}

async fn addon_helpers_syncz(client: &kube::Client, rev: &str) -> Vec<Value> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "aks-istio-system");
    let mut out = Vec::new();
    for p in pods
        .list(&ListParams::default().labels(&format!("app=istiod,istio.io/rev={rev}")))
        .await
        .unwrap()
        .items
    {
        let (code, body) =
            common::istiod_get(client, p.metadata.name.as_deref().unwrap(), "/debug/syncz").await;
        if code == 200 {
            out.extend(serde_json::from_str::<Vec<Value>>(&body).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn crashloop_istiod_never_becomes_ready_and_its_webhook_fails() {
    let (sim, client) = start("crashloop-istiod").await;
    add_canary(&sim, &client).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "aks-istio-system");
    let p = eventually(5, || async {
        pods.list(&ListParams::default().labels("app=istiod,istio.io/rev=asm-1-28"))
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.state
                                .as_ref()
                                .and_then(|s| s.waiting.as_ref())
                                .and_then(|w| w.reason.as_deref())
                                == Some("CrashLoopBackOff")
                        })
                    })
            })
    })
    .await;
    let cs = &p.status.unwrap().container_statuses.unwrap()[0];
    assert!(!cs.ready);
    assert!(cs.restart_count > 0);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "aks-istio-system");
    let d = deps.get("istiod-asm-1-28").await.unwrap();
    assert_eq!(d.status.unwrap().available_replicas, None);
    // the old revision still serves
    let d = deps.get("istiod-asm-1-27").await.unwrap();
    assert_eq!(d.status.unwrap().available_replicas, Some(2));
    // a namespace moved to the broken revision cannot start pods
    relabel(&client, "frontend", "asm-1-28").await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "frontend");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "a", "image": "nginx:1.27"}]}})).unwrap();
    let kube::Error::Api(s) = api.create(&PostParams::default(), &pod).await.unwrap_err() else {
        panic!()
    };
    assert_eq!(s.code, 500);
    assert!(
        s.message
            .contains("no endpoints available for service \"istiod-asm-1-28\""),
        "{}",
        s.message
    );
}

#[tokio::test]
async fn slow_rollout_keeps_new_pods_unready_for_a_while_then_finishes() {
    let (_sim, client) = start("slow-rollout").await;
    let web: Api<Deployment> = Api::namespaced(client.clone(), "frontend");
    let patched = web
        .patch("web", &PatchParams::default(), &restart())
        .await
        .unwrap();
    let g = patched.metadata.generation.unwrap();
    // 30 simulated seconds per pod at time scale 0.01 is 300 ms: 100 ms in, nothing new is ready
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let d = web.get("web").await.unwrap();
    let st = d.status.unwrap();
    assert!(
        st.updated_replicas.unwrap_or(0) < 3
            || st.available_replicas.unwrap_or(0) < st.updated_replicas.unwrap_or(0)
            || st.replicas.unwrap_or(0) > st.updated_replicas.unwrap_or(0)
    );
    eventually(15, || async {
        let d = web.get("web").await.unwrap();
        let st = d.status.clone()?;
        (st.observed_generation == Some(g)
            && st.updated_replicas == Some(3)
            && st.available_replicas == Some(3)
            && st.replicas == Some(3))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn stuck_rollout_hits_its_progress_deadline() {
    // Stuck on any revision here (the built-in sticks only on the new ones, so that a
    // rollback to the old proxy recovers; that part is covered by the end-to-end tests).
    let mut scenario = Scenario::builtin("stuck-rollout").unwrap();
    scenario.kube.never_ready_revisions.clear();
    let (_sim, client) = start_with(scenario).await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "payments");
    let d = api.get("api").await.unwrap();
    assert_eq!(reason(&d), "NewReplicaSetAvailable", "it starts healthy");
    assert_eq!(d.spec.unwrap().progress_deadline_seconds, Some(60));
    api.patch("api", &PatchParams::default(), &restart())
        .await
        .unwrap();
    let d = eventually(10, || async {
        let d = api.get("api").await.unwrap();
        (reason(&d) == "ProgressDeadlineExceeded").then_some(d)
    })
    .await;
    let cond = d
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(cond.status, "False");
    assert!(
        cond.message
            .unwrap()
            .ends_with("has timed out progressing.")
    );
    // the old pods still serve
    assert_eq!(d.status.unwrap().available_replicas, Some(3));
}

#[tokio::test]
async fn legacy_labels_leave_pods_uninjected() {
    let (_sim, client) = start("legacy-labels").await;
    let nss: Api<Namespace> = Api::all(client.clone());
    assert_eq!(
        nss.get("legacy").await.unwrap().metadata.labels.unwrap()["istio-injection"],
        "enabled"
    );
    assert_eq!(
        nss.get("inventory").await.unwrap().metadata.labels.unwrap()["istio.io/rev"],
        "asm-1-25"
    );
    for ns in ["legacy", "inventory"] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let list = pods.list(&ListParams::default()).await.unwrap().items;
        assert_eq!(list.len(), 1);
        assert_eq!(
            status_revision(&list[0]),
            None,
            "{ns} pods run without a sidecar"
        );
        assert!(list[0].status.as_ref().unwrap().phase.as_deref() == Some("Running"));
    }
}

#[tokio::test]
async fn healthy_summary_reports_pods_by_revision() {
    let (sim, _client) = start("healthy").await;
    let s = asm_canary_sim::kube::state_summary(&sim.shared);
    assert!(s["pods"]["byRevision"]["asm-1-27"].as_u64().unwrap() > 10);
    assert_eq!(s["istiod"][0]["name"], "istiod-asm-1-27");
    assert!(
        s["leases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "istio-gateway-deployment-asm-1-27")
    );
    let log = sim.shared.requests.snapshot();
    assert!(log.is_empty(), "nothing was written through the API yet");
}

#[tokio::test]
async fn a_yaml_scenario_shapes_the_cluster_like_large_does_in_miniature() {
    let yaml = "name: mini\ntime_scale: 0.01\nkube:\n  namespaces: []\n  generated:\n    namespaces: 3\n    deployments_per_namespace: 2\n    replicas: 2\n    revision_label: prod\n  native_sidecar_revisions: []\n";
    let scenario = asm_canary_sim::Scenario::from_yaml("mini.yaml", yaml).unwrap();
    let (_sim, client) = common::start_with(scenario).await;
    let deps: Api<Deployment> = Api::all(client.clone());
    let apps: Vec<Deployment> = deps
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|d| d.metadata.namespace.as_deref().unwrap().starts_with("app-"))
        .collect();
    assert_eq!(apps.len(), 6);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "app-002");
    let list = pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(list.len(), 4);
    assert!(
        list.iter()
            .all(|p| status_revision(p).as_deref() == Some("asm-1-27"))
    );
    // unknown keys are refused with their place
    let err = asm_canary_sim::Scenario::from_yaml("bad.yaml", "kube:\n  bogus: 1\n").unwrap_err();
    assert!(err.to_string().contains("bad.yaml:2"), "{err}");
}

/// `istio_requests_total` of `workload` in `ns` with `code`, reporter destination, from a
/// metrics page.
fn requests(page: &str, ns: &str, workload: &str, code: u16) -> f64 {
    page.lines()
        .filter(|l| l.starts_with("istio_requests_total{reporter=\"destination\""))
        .filter(|l| {
            l.contains(&format!("destination_workload=\"{workload}\","))
                && l.contains(&format!("destination_workload_namespace=\"{ns}\","))
                && l.contains(&format!("response_code=\"{code}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(sim: &asm_canary_sim::SimHandle) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(&sim.info.metrics_url)
        .await
        .expect("the metrics page answers")
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn sidecars_export_istio_metrics_with_growing_counters() {
    let (sim, _client) = start("healthy").await;
    assert!(sim.info.metrics_url.starts_with("http://127.0.0.1:"));
    let first = scrape(&sim).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let page = scrape(&sim).await;
    assert!(page.contains("# TYPE istio_requests_total counter"));
    assert!(page.contains("# TYPE istio_request_duration_milliseconds histogram"));
    for label in [
        "reporter=\"destination\"",
        "source_workload=\"aks-istio-ingressgateway-external\"",
        "destination_workload=\"api\"",
        "destination_workload_namespace=\"payments\"",
        "response_code=\"200\"",
        "le=\"500\"",
        "le=\"+Inf\"",
    ] {
        assert!(page.contains(label), "{label} missing");
    }
    let before = requests(&first, "payments", "api", 200);
    let after = requests(&page, "payments", "api", 200);
    assert!(after > before && after > 0.0, "{before} → {after}");
    // Healthy: no 5xx at all.
    assert_eq!(requests(&page, "payments", "api", 503), 0.0);
}

#[tokio::test]
async fn bad_canary_pods_on_a_new_revision_answer_five_percent_503() {
    let (sim, client) = start("bad-canary").await;
    add_canary(&sim, &client).await;
    // Before the restart: pods on the installed revision answer no 503.
    let page = scrape(&sim).await;
    assert_eq!(requests(&page, "payments", "api", 503), 0.0);
    relabel(&client, "payments", "asm-1-28").await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "payments");
    deps.patch("api", &PatchParams::default(), &restart())
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "payments");
    eventually(20, || async {
        let list = pods.list(&ListParams::default()).await.unwrap();
        let on_new = list
            .items
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.metadata.name.as_deref().unwrap_or("").starts_with("api-")
                    && status_revision(p).as_deref() == Some("asm-1-28")
            })
            .count();
        (on_new == 3).then_some(())
    })
    .await;
    let a = scrape(&sim).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let b = scrape(&sim).await;
    let ok = requests(&b, "payments", "api", 200) - requests(&a, "payments", "api", 200);
    let bad = requests(&b, "payments", "api", 503) - requests(&a, "payments", "api", 503);
    let share = bad / (ok + bad);
    assert!((0.04..0.06).contains(&share), "503 share {share}");
    // worker is not faulty.
    assert_eq!(requests(&b, "payments", "worker", 503), 0.0);
}
