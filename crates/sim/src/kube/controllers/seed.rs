//! The scenario's application namespaces and workloads, created as `kubectl` would; the
//! controllers then create their pods.

use serde_json::{Value, json};

use super::rt;
use crate::kube::scenario::{KubeScenario, NamespaceShape, WorkloadShape};
use crate::kube::state::KubeState;

/// Creates the scenario's namespaces and workloads (the controllers then create their pods).
pub fn seed_workloads(kube: &KubeState) {
    let kubectl_create = kube.client("kubectl-create");
    let kubectl_apply = kube.client("kubectl-client-side-apply");
    for ns in namespaces(&kube.scenario) {
        let _ = kubectl_create.create(
            rt("namespaces"),
            json!({"metadata": {"name": ns.name, "labels": ns.labels}}),
        );
        for d in &ns.deployments {
            let _ = kubectl_apply.create(rt("deployments"), deployment(&ns.name, d));
        }
        for s in &ns.statefulsets {
            let _ = kubectl_apply.create(rt("statefulsets"), statefulset(&ns.name, s));
        }
        for s in &ns.daemonsets {
            let _ = kubectl_apply.create(rt("daemonsets"), daemonset(&ns.name, s));
        }
    }
}

/// Puts each namespace's `late_labels` on it, once the starting cluster has settled: its pods
/// were admitted without them (no sidecar when the label is `istio.io/rev`).
pub fn label_late(kube: &KubeState) {
    let kubectl_label = kube.client("kubectl-label");
    for ns in kube.scenario.namespaces.iter() {
        if ns.late_labels.is_empty() {
            continue;
        }
        let _ = kubectl_label.update(rt("namespaces"), "", &ns.name, |current| {
            let mut next = current.clone();
            for (k, v) in &ns.late_labels {
                next["metadata"]["labels"][k] = json!(v);
            }
            Ok(Some(next))
        });
    }
}

/// Stores the scenario's `objects` as given, without admission (see
/// [`KubeScenario::objects`]); the scenario's validation has checked their types.
pub fn seed_objects(kube: &KubeState) {
    for obj in &kube.scenario.objects {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        if let Some(rt) = crate::kube::resources::by_kind(api_version, kind) {
            let _ = kube.store.create(rt, obj.clone());
        }
    }
}

/// The scenario's namespaces, then the generated ones (`app-000`, … with `svc-00`, …).
fn namespaces(scenario: &KubeScenario) -> Vec<NamespaceShape> {
    let mut namespaces = scenario.namespaces.clone();
    if let Some(g) = &scenario.generated {
        for i in 0..g.namespaces {
            let mut ns = NamespaceShape {
                name: format!("app-{i:03}"),
                ..Default::default()
            };
            if !g.revision_label.is_empty() {
                ns.labels
                    .insert("istio.io/rev".into(), g.revision_label.clone());
            }
            for j in 0..g.deployments_per_namespace {
                ns.deployments.push(WorkloadShape {
                    name: format!("svc-{j:02}"),
                    replicas: g.replicas,
                    ..Default::default()
                });
            }
            namespaces.push(ns);
        }
    }
    namespaces
}

fn container(name: &str, image: &str) -> Value {
    json!({"name": name, "image": image,
           "ports": [{"containerPort": 8080, "protocol": "TCP"}],
           "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5}})
}

fn template(app: &str, image: &str) -> Value {
    json!({"metadata": {"labels": {"app": app, "version": "v1"}},
           "spec": {"containers": [container(app, image)]}})
}

fn workload(ns: &str, name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": ns, "labels": {"app": name}}, "spec": spec})
}

fn deployment(ns: &str, d: &WorkloadShape) -> Value {
    let mut spec = json!({
        "replicas": d.replicas,
        "selector": {"matchLabels": {"app": d.name}},
        "template": template(&d.name, &d.image),
    });
    if let Some(p) = d.progress_deadline_seconds {
        spec["progressDeadlineSeconds"] = json!(p);
    }
    if d.paused {
        spec["paused"] = json!(true);
    }
    workload(ns, &d.name, spec)
}

fn statefulset(ns: &str, s: &WorkloadShape) -> Value {
    let mut spec = json!({
        "replicas": s.replicas,
        "serviceName": s.name,
        "selector": {"matchLabels": {"app": s.name}},
        "template": template(&s.name, &s.image),
    });
    if let Some(u) = &s.update_strategy {
        spec["updateStrategy"] = json!({"type": u});
    }
    workload(ns, &s.name, spec)
}

fn daemonset(ns: &str, s: &WorkloadShape) -> Value {
    let mut spec = json!({
        "selector": {"matchLabels": {"app": s.name}},
        "template": template(&s.name, &s.image),
    });
    if let Some(u) = &s.update_strategy {
        spec["updateStrategy"] = json!({"type": u});
    }
    workload(ns, &s.name, spec)
}
