//! The Kubernetes side of `/_sim/state`: what a test or a person wants to see at a glance.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::istio::{ISTIO_NS, pod_revision};
use super::object::{label, labels_of, name_of, ns_of, pod_ready};
use super::resources::by_plural;
use super::state::KubeState;

pub fn summary(kube: &KubeState) -> Value {
    let store = &kube.store;
    let (namespaces, rv) = store.list(by_plural("namespaces"), None);
    let namespaces: Vec<Value> = namespaces
        .iter()
        .map(|n| {
            let labels = labels_of(n).cloned().unwrap_or_default();
            json!({"name": name_of(n), "labels": labels})
        })
        .collect();
    let (pods, _) = store.list(by_plural("pods"), None);
    let mut by_revision: BTreeMap<String, u64> = BTreeMap::new();
    let mut ready = 0u64;
    for p in &pods {
        let rev = pod_revision(p).unwrap_or_else(|| "none".into());
        *by_revision.entry(rev).or_default() += 1;
        if pod_ready(p) {
            ready += 1;
        }
    }
    let workloads = |plural: &str| -> Vec<Value> {
        let (items, _) = store.list(by_plural(plural), None);
        items
            .iter()
            .map(|o| {
                json!({
                    "namespace": ns_of(o),
                    "name": name_of(o),
                    "generation": o["metadata"]["generation"],
                    "replicas": o["spec"]["replicas"],
                    "status": o["status"],
                })
            })
            .collect()
    };
    let istiods: Vec<Value> = {
        let (deps, _) = store.list(by_plural("deployments"), Some(ISTIO_NS));
        deps.iter()
            .filter(|d| label(d, "app") == Some("istiod"))
            .map(|d| {
                json!({
                    "name": name_of(d),
                    "revision": label(d, "istio.io/rev"),
                    "readyReplicas": d["status"]["readyReplicas"].as_i64().unwrap_or(0),
                    "replicas": d["spec"]["replicas"],
                })
            })
            .collect()
    };
    let (mwcs, _) = store.list(by_plural("mutatingwebhookconfigurations"), None);
    let webhooks: Vec<Value> = mwcs
        .iter()
        .map(|m| {
            json!({
                "name": name_of(m),
                "revision": label(m, "istio.io/rev"),
                "tag": label(m, "istio.io/tag"),
                "services": m["webhooks"].as_array().map(|w| w.iter().map(|w| w["clientConfig"]["service"]["name"].clone()).collect::<Vec<_>>()),
            })
        })
        .collect();
    let (leases, _) = store.list(by_plural("leases"), Some(ISTIO_NS));
    let (many_deployments, _) = store.list(by_plural("deployments"), None);
    let large = many_deployments.len() > 200;
    json!({
        "resourceVersion": rv.to_string(),
        "namespaces": namespaces,
        "pods": {"total": pods.len(), "ready": ready, "byRevision": by_revision},
        "istiod": istiods,
        "mutatingWebhooks": webhooks,
        "leases": leases.iter().map(|l| name_of(l).to_string()).collect::<Vec<_>>(),
        "deployments": if large { json!({"count": many_deployments.len()}) } else { json!(workloads("deployments")) },
        "statefulsets": workloads("statefulsets"),
        "daemonsets": workloads("daemonsets"),
    })
}
