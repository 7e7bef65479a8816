//! The Istio add-on through kube-rs: the default cluster shape, revisions appearing and going
//! with the mesh spec ARM publishes, injection (tag, revision, ignored legacy label, failed
//! webhook), native sidecars, the MeshConfig allowlist, and `/debug/syncz` through a port-forward.

mod common;

use common::{eventually, istiod_get, start};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const ISTIO: &str = "aks-istio-system";

fn status_revision(p: &Pod) -> Option<String> {
    let s = p
        .metadata
        .annotations
        .as_ref()?
        .get("sidecar.istio.io/status")?;
    let v: Value = serde_json::from_str(s).ok()?;
    v["revision"].as_str().map(str::to_string)
}

fn bare_pod(name: &str, labels: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}
    }))
    .unwrap()
}

async fn make_ns(client: &kube::Client, name: &str, labels: Value) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
}

async fn istiod_pods(client: &kube::Client, rev: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ISTIO);
    pods.list(&ListParams::default().labels(&format!("app=istiod,istio.io/rev={rev}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect()
}

async fn syncz_all(client: &kube::Client, rev: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for pod in istiod_pods(client, rev).await {
        let (code, body) = istiod_get(client, &pod, "/debug/syncz").await;
        assert_eq!(code, 200);
        out.extend(serde_json::from_str::<Vec<Value>>(&body).unwrap());
    }
    out
}

#[tokio::test]
async fn the_default_cluster_matches_the_design() {
    let (_sim, client) = start("healthy").await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ISTIO);
    let istiod = deps.get("istiod-asm-1-27").await.unwrap();
    assert_eq!(istiod.status.unwrap().available_replicas, Some(2));
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let canonical = mwcs
        .list(&ListParams::default().labels("istio.io/rev=asm-1-27,!istio.io/tag"))
        .await
        .unwrap()
        .items;
    assert_eq!(canonical.len(), 1);
    assert_eq!(
        canonical[0].metadata.name.as_deref(),
        Some("istio-sidecar-injector-asm-1-27-aks-istio-system")
    );
    let tag = mwcs
        .get("istio-revision-tag-prod-aks-istio-system")
        .await
        .unwrap();
    let labels = tag.metadata.labels.clone().unwrap();
    assert_eq!(labels["istio.io/tag"], "prod");
    assert_eq!(labels["istio.io/rev"], "asm-1-27");
    let hooks = tag.webhooks.unwrap();
    assert_eq!(hooks.len(), 2);
    assert!(
        hooks
            .iter()
            .all(|h| h.failure_policy.as_deref() == Some("Fail"))
    );
    assert!(
        hooks
            .iter()
            .all(|h| h.client_config.service.as_ref().unwrap().name == "istiod-asm-1-27")
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ISTIO);
    let shared = cms.get("istio-shared-configmap-asm-1-27").await.unwrap();
    let mesh = &shared.data.unwrap()["mesh"];
    assert!(mesh.contains("accessLogFile") && mesh.contains("REGISTRY_ONLY"));
    let gws: Api<Deployment> = Api::namespaced(client.clone(), "aks-istio-ingress");
    gws.get("aks-istio-ingressgateway-external-asm-1-27")
        .await
        .unwrap();
    gws.get("aks-istio-ingressgateway-internal-asm-1-27")
        .await
        .unwrap();
    // every application pod runs, ready, injected by asm-1-27
    let pods: Api<Pod> = Api::all(client.clone());
    for ns in ["payments", "orders", "frontend", "logging"] {
        let nsapi: Api<Namespace> = Api::all(client.clone());
        assert_eq!(
            nsapi.get(ns).await.unwrap().metadata.labels.unwrap()["istio.io/rev"],
            "prod"
        );
        let list = Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        assert!(!list.is_empty());
        for p in list {
            assert_eq!(
                status_revision(&p).as_deref(),
                Some("asm-1-27"),
                "{:?}",
                p.metadata.name
            );
            let ann = p.metadata.annotations.as_ref().unwrap();
            assert_eq!(ann["istio.io/rev"], "asm-1-27");
            let c = &p.spec.as_ref().unwrap().containers;
            let proxy = c
                .iter()
                .find(|c| c.name == "istio-proxy")
                .expect("istio-proxy container");
            assert_eq!(
                proxy.image.as_deref(),
                Some("mcr.microsoft.com/oss/istio/proxyv2:1.27.3-distroless")
            );
            assert!(
                p.status
                    .as_ref()
                    .unwrap()
                    .conditions
                    .as_ref()
                    .unwrap()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            );
        }
    }
    let _ = pods;
}

#[tokio::test]
async fn injection_follows_tags_and_revisions_and_ignores_legacy_labels() {
    let (_sim, client) = start("healthy").await;
    make_ns(&client, "by-rev", json!({"istio.io/rev": "asm-1-27"})).await;
    make_ns(&client, "by-legacy", json!({"istio-injection": "enabled"})).await;
    make_ns(&client, "unlabelled", json!({})).await;
    let create = |ns: &str, name: &str, labels: Value| {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let pod = bare_pod(name, labels);
        async move { api.create(&PostParams::default(), &pod).await.unwrap() }
    };
    assert_eq!(
        status_revision(&create("by-rev", "a", json!({})).await).as_deref(),
        Some("asm-1-27")
    );
    assert_eq!(
        status_revision(&create("payments", "b", json!({})).await).as_deref(),
        Some("asm-1-27"),
        "via the prod tag"
    );
    assert_eq!(
        status_revision(&create("by-legacy", "c", json!({})).await),
        None,
        "istio-injection=enabled is ignored"
    );
    assert_eq!(
        status_revision(
            &create("payments", "d", json!({"sidecar.istio.io/inject": "false"})).await
        ),
        None
    );
    assert_eq!(
        status_revision(&create("unlabelled", "e", json!({})).await),
        None
    );
    assert_eq!(
        status_revision(&create("unlabelled", "f", json!({"istio.io/rev": "prod"})).await)
            .as_deref(),
        Some("asm-1-27"),
        "a pod label selects the tag's rev.object webhook"
    );
}

/// The Deployment carries a ReplicaFailure condition (its ReplicaSet was refused a pod).
fn replica_failure(d: &Deployment) -> bool {
    d.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "ReplicaFailure"))
}

/// A tag `canary` pointing at asm-1-28, which is not installed, and a namespace `canary-ns`
/// on it: its pods' injector has no istiod.
async fn tag_canary_on_a_missing_revision(client: &kube::Client) {
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mut tag = serde_json::to_value(
        mwcs.get("istio-revision-tag-prod-aks-istio-system")
            .await
            .unwrap(),
    )
    .unwrap();
    tag["metadata"] = json!({"name": "istio-revision-tag-canary-aks-istio-system", "labels": {"istio.io/tag": "canary", "istio.io/rev": "asm-1-28"}});
    for h in tag["webhooks"].as_array_mut().unwrap() {
        h["clientConfig"]["service"]["name"] = json!("istiod-asm-1-28");
        for sel in ["namespaceSelector", "objectSelector"] {
            for e in h[sel]["matchExpressions"].as_array_mut().unwrap() {
                if e["key"] == "istio.io/rev" && e["operator"] == "In" {
                    e["values"] = json!(["canary"]);
                }
            }
        }
    }
    mwcs.patch(
        "istio-revision-tag-canary-aks-istio-system",
        &PatchParams::apply("istio-ci").force(),
        &Patch::Apply(&tag),
    )
    .await
    .unwrap();
    make_ns(client, "canary-ns", json!({"istio.io/rev": "canary"})).await;
}

#[tokio::test]
async fn a_webhook_without_its_istiod_fails_pod_creation_and_the_replicaset_records_it() {
    let (_sim, client) = start("healthy").await;
    tag_canary_on_a_missing_revision(&client).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "canary-ns");
    let err = pods
        .create(&PostParams::default(), &bare_pod("x", json!({})))
        .await
        .unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("expected a Status")
    };
    assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"));
    assert!(
        s.message
            .contains("failed calling webhook \"rev.namespace.sidecar-injector.istio.io\""),
        "{}",
        s.message
    );
    assert!(
        s.message.contains("service \"istiod-asm-1-28\" not found"),
        "{}",
        s.message
    );

    let deps: Api<Deployment> = Api::namespaced(client.clone(), "canary-ns");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}}, "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}
    }))
    .unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "canary-ns");
    let rs = eventually(3, || async {
        rss.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            c.type_ == "ReplicaFailure"
                                && c.reason.as_deref() == Some("FailedCreate")
                        })
                    })
            })
    })
    .await;
    assert_eq!(rs.status.unwrap().replicas, 0);
    let events: Api<Event> = Api::namespaced(client.clone(), "canary-ns");
    let evs = events.list(&ListParams::default()).await.unwrap().items;
    assert!(evs.iter().any(|e| {
        e.reason.as_deref() == Some("FailedCreate")
            && e.message
                .as_deref()
                .unwrap_or("")
                .contains("failed calling webhook")
    }));
    let dep = eventually(3, || async {
        let d = deps.get("app").await.unwrap();
        replica_failure(&d).then_some(d)
    })
    .await;
    assert_eq!(dep.status.unwrap().available_replicas, None);
}

/// Regression: a ReplicaSet whose pods the injector refused was not synced again until an
/// unrelated event or the five-minute resync, so a restart made just before the new istiod
/// turned Ready stalled (kube-controller-manager requeues a failed sync with backoff).
#[tokio::test]
async fn a_replicaset_refused_by_a_webhook_retries_and_creates_its_pods_once_istiod_answers() {
    let (sim, client) = start("healthy").await;
    tag_canary_on_a_missing_revision(&client).await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "canary-ns");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}}, "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}
    }))
    .unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    eventually(3, || async {
        replica_failure(&deps.get("app").await.unwrap()).then_some(())
    })
    .await;
    // the revision the tag names is installed; nothing touches the ReplicaSet or its Deployment
    sim.shared
        .mesh
        .send_modify(|m| m.revisions = vec!["asm-1-27".into(), "asm-1-28".into()]);
    let d = eventually(10, || async {
        let d = deps.get("app").await.unwrap();
        (d.status.as_ref()?.available_replicas == Some(2)).then_some(d)
    })
    .await;
    assert!(
        !replica_failure(&d),
        "the ReplicaFailure condition is cleared"
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "canary-ns");
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        let status = p.metadata.annotations.unwrap_or_default();
        assert!(
            status["sidecar.istio.io/status"].contains("asm-1-28"),
            "injected by the new revision: {status:?}"
        );
    }
}

#[tokio::test]
async fn revisions_follow_the_mesh_spec_and_leave_their_gateway_leases_behind() {
    let (sim, client) = start("healthy").await;
    sim.shared
        .mesh
        .send_modify(|m| m.revisions = vec!["asm-1-27".into(), "asm-1-28".into()]);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ISTIO);
    eventually(5, || async {
        let d = deps.get_opt("istiod-asm-1-28").await.unwrap()?;
        (d.status?.available_replicas == Some(2)).then_some(())
    })
    .await;
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    mwcs.get("istio-sidecar-injector-asm-1-28-aks-istio-system")
        .await
        .unwrap();
    let gws: Api<Deployment> = Api::namespaced(client.clone(), "aks-istio-ingress");
    gws.get("aks-istio-ingressgateway-external-asm-1-28")
        .await
        .unwrap();

    // move the tag as istioctl does (server-side apply, force, manager istio-ci), restart, check
    let mut tag = serde_json::to_value(
        mwcs.get("istio-revision-tag-prod-aks-istio-system")
            .await
            .unwrap(),
    )
    .unwrap();
    tag["metadata"] = json!({"name": "istio-revision-tag-prod-aks-istio-system", "labels": {"istio.io/tag": "prod", "istio.io/rev": "asm-1-28"}});
    for h in tag["webhooks"].as_array_mut().unwrap() {
        h["clientConfig"]["service"]["name"] = json!("istiod-asm-1-28");
    }
    mwcs.patch(
        "istio-revision-tag-prod-aks-istio-system",
        &PatchParams::apply("istio-ci").force(),
        &Patch::Apply(&tag),
    )
    .await
    .unwrap();
    let web: Api<Deployment> = Api::namespaced(client.clone(), "frontend");
    web.patch(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-27T07:10:00Z"}}}}})),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "frontend");
    eventually(5, || async {
        let list = pods.list(&ListParams::default()).await.unwrap().items;
        (list.len() == 3
            && list
                .iter()
                .all(|p| status_revision(p).as_deref() == Some("asm-1-28")))
        .then_some(())
    })
    .await;
    // the new revision's pods are not native sidecars (asm-1-28 by upgrade), asm-1-29 would be
    let p = &pods.list(&ListParams::default()).await.unwrap().items[0];
    assert!(
        p.spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .any(|c| c.name == "istio-proxy")
    );

    // complete: the old revision goes, its gateway leases stay
    sim.shared
        .mesh
        .send_modify(|m| m.revisions = vec!["asm-1-28".into()]);
    eventually(5, || async {
        deps.get_opt("istiod-asm-1-27")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        mwcs.get_opt("istio-sidecar-injector-asm-1-27-aks-istio-system")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        gws.get_opt("aks-istio-ingressgateway-external-asm-1-27")
            .await
            .unwrap()
            .is_none()
    );
    // istiod pods are collected with their Deployment (after their grace period)
    let istiod_api = Api::<Pod>::namespaced(client.clone(), ISTIO);
    eventually(3, || async {
        istiod_api
            .list(&ListParams::default().labels("istio.io/rev=asm-1-27"))
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), ISTIO);
    leases
        .get("istio-gateway-deployment-asm-1-27")
        .await
        .unwrap();
    leases
        .get("istio-gateway-status-leader-asm-1-27")
        .await
        .unwrap();
    // pods in payments still run asm-1-27: a new one there is injected by the tag (now asm-1-28)
    let pay: Api<Pod> = Api::namespaced(client.clone(), "payments");
    let p = pay
        .create(&PostParams::default(), &bare_pod("late", json!({})))
        .await
        .unwrap();
    assert_eq!(status_revision(&p).as_deref(), Some("asm-1-28"));
}

#[tokio::test]
async fn native_sidecars_put_the_proxy_in_init_containers() {
    let (_sim, client) = start("native-sidecars").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "payments");
    let p = &pods.list(&ListParams::default()).await.unwrap().items[0];
    let spec = p.spec.as_ref().unwrap();
    assert!(!spec.containers.iter().any(|c| c.name == "istio-proxy"));
    let init = spec.init_containers.as_ref().unwrap();
    let proxy = init.iter().find(|c| c.name == "istio-proxy").unwrap();
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    let status: Value =
        serde_json::from_str(&p.metadata.annotations.as_ref().unwrap()["sidecar.istio.io/status"])
            .unwrap();
    assert_eq!(status["containers"], Value::Null);
    assert_eq!(
        status["initContainers"],
        json!(["istio-init", "istio-proxy"])
    );
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ISTIO);
    let d = deps.get("istiod-asm-1-27").await.unwrap();
    let env = d.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "ENABLE_NATIVE_SIDECARS" && e.value.as_deref() == Some("true"))
    );
}

#[tokio::test]
async fn the_shared_configmap_is_checked_against_the_allowlist() {
    let (_sim, client) = start("healthy").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ISTIO);
    let ok: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "istio-shared-configmap-asm-1-28"},
        "data": {"mesh": "accessLogFile: /dev/stdout\ndefaultConfig:\n  holdApplicationUntilProxyStarts: true\n"}})).unwrap();
    cms.create(&PostParams::default(), &ok).await.unwrap();
    let bad: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "istio-shared-configmap-asm-1-29"},
        "data": {"mesh": "configSources:\n- address: x\n"}}),
    )
    .unwrap();
    let kube::Error::Api(s) = cms.create(&PostParams::default(), &bad).await.unwrap_err() else {
        panic!()
    };
    assert_eq!(s.code, 400);
    assert!(s.message.contains("configSources"), "{}", s.message);
    let err = cms
        .patch(
            "istio-shared-configmap-asm-1-28",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"mesh": "defaultConfig:\n  image: x\n"}})),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 400));
}

#[tokio::test]
async fn syncz_through_a_port_forward_lists_every_proxy_synced() {
    let (sim, client) = start("healthy").await;
    let all = syncz_all(&client, "asm-1-27").await;
    let injected = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| status_revision(p).as_deref() == Some("asm-1-27"))
        .count();
    let sidecars: Vec<&Value> = all
        .iter()
        .filter(|e| e["proxy_type"] == "sidecar")
        .collect();
    assert_eq!(sidecars.len(), injected);
    assert!(
        all.iter().any(|e| e["proxy_type"] == "router"),
        "gateways connect too"
    );
    for e in &all {
        for t in ["cluster", "listener", "route", "endpoint"] {
            assert_eq!(e[format!("{t}_sent")], e[format!("{t}_acked")], "{e}");
            assert!(e[format!("{t}_sent")].as_str().unwrap().len() == 36);
        }
        assert_eq!(e["istio_version"], "1.27.3");
    }
    // every proxy is on exactly one istiod
    let mut names: Vec<&str> = all.iter().map(|e| e["proxy"].as_str().unwrap()).collect();
    names.sort();
    let n = names.len();
    names.dedup();
    assert_eq!(n, names.len());
    // other paths answer as istiod does; other ports are refused
    let pod = istiod_pods(&client, "asm-1-27").await.remove(0);
    let (code, _) = istiod_get(&client, &pod, "/debug/nonexistent").await;
    assert_eq!(code, 404);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ISTIO);
    let mut pf = pods.portforward(&pod, &[15010]).await.unwrap();
    let err = pf.take_error(15010).unwrap();
    let msg = futures::future::FutureExt::boxed(err).await;
    assert!(msg.unwrap_or_default().contains("connection refused"));
    drop(sim);
}
