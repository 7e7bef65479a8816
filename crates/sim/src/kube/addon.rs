//! The AKS Istio add-on: per revision, istiod (Deployment, Service, HPA, pods), the injector
//! and validating webhooks, the per-revision ingress gateway Deployments behind the shared
//! Services and their leader-election Leases; sidecar injection at pod admission through the
//! MutatingWebhookConfigurations in the store (so revision, tag and legacy-label behaviour follow
//! from the webhooks' selectors, and a webhook whose istiod is gone fails pod creation); the
//! MeshConfig allowlist of `istio-shared-configmap-<rev>`; and istiod's `/debug/syncz`.
//!
//! Names, labels and selectors: reference/istio-kubernetes.md §1, §3 and §4.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::KubeState;
use super::gc;
use super::resources::{ResourceType, by_plural};
use super::selectors::LabelSelector;
use super::status::ApiError;
use super::store::{annotation, label, labels_of, name_of, ns_of};
use crate::Shared;

pub const ISTIO_NS: &str = "aks-istio-system";
pub const INGRESS_NS: &str = "aks-istio-ingress";
const PROXY_IMAGE: &str = "mcr.microsoft.com/oss/istio/proxyv2";
const PILOT_IMAGE: &str = "mcr.microsoft.com/oss/istio/pilot";
/// The caBundle istiod would patch in (any PEM-looking bytes do; nobody verifies them here).
const FAKE_CA: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBsimulatedistiodca\n-----END CERTIFICATE-----\n";

/// `asm-1-27` → `1.27.3` (the patch AKS ships).
pub fn istio_version(rev: &str) -> String {
    let minor = rev
        .strip_prefix("asm-1-")
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    let patch = match minor {
        0..=25 => 8,
        26 => 5,
        27 => 3,
        28 => 1,
        _ => 0,
    };
    format!("1.{minor}.{patch}")
}

pub fn proxy_image(rev: &str) -> String {
    format!("{PROXY_IMAGE}:{}-distroless", istio_version(rev))
}

fn aks_labels(rev: &str) -> Value {
    json!({
        "app.kubernetes.io/managed-by": "Helm",
        "helm.toolkit.fluxcd.io/name": "azure-service-mesh-istio-discovery-helmrelease",
        "helm.toolkit.fluxcd.io/namespace": format!("{ISTIO_NS}"),
        "release": "azure-service-mesh-istio-discovery",
        "istio.io/rev": rev,
        "kubernetes.azure.com/managedby": "aks",
    })
}

fn merge_labels(base: Value, extra: Value) -> Value {
    let mut b = base;
    if let (Some(bm), Some(em)) = (b.as_object_mut(), extra.as_object()) {
        for (k, v) in em {
            bm.insert(k.clone(), v.clone());
        }
    }
    b
}

fn create_if_missing(kube: &KubeState, plural: &str, obj: Value) {
    let rt = by_plural(plural);
    let ns = if rt.namespaced {
        ns_of(&obj).to_string()
    } else {
        String::new()
    };
    if kube.store.get(rt, &ns, name_of(&obj)).is_some() {
        return;
    }
    let _ = super::api::create_object(kube, rt, obj, "aks-addon", false);
}

fn injector_webhook(name: &str, rev: &str, service: &str, ns_sel: Value, obj_sel: Value) -> Value {
    json!({
        "name": name,
        "admissionReviewVersions": ["v1"],
        "clientConfig": {
            "service": {"name": service, "namespace": ISTIO_NS, "path": "/inject", "port": 443},
            "caBundle": base64::engine::general_purpose::STANDARD.encode(FAKE_CA),
        },
        "failurePolicy": "Fail",
        "matchPolicy": "Equivalent",
        "namespaceSelector": ns_sel,
        "objectSelector": obj_sel,
        "reinvocationPolicy": "Never",
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "*"}],
        "sideEffects": "None",
        "timeoutSeconds": 10,
        "_rev": rev,
    })
}

/// The two webhooks istio renders for a revision (or a tag) value `value` served by `service`.
fn rev_webhooks(value: &str, service: &str) -> Value {
    let mut a = injector_webhook(
        "rev.namespace.sidecar-injector.istio.io",
        value,
        service,
        json!({"matchExpressions": [
            {"key": "istio.io/rev", "operator": "In", "values": [value]},
            {"key": "istio-injection", "operator": "DoesNotExist"}]}),
        json!({"matchExpressions": [
            {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}]}),
    );
    let mut b = injector_webhook(
        "rev.object.sidecar-injector.istio.io",
        value,
        service,
        json!({"matchExpressions": [
            {"key": "istio.io/rev", "operator": "DoesNotExist"},
            {"key": "istio-injection", "operator": "DoesNotExist"}]}),
        json!({"matchExpressions": [
            {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]},
            {"key": "istio.io/rev", "operator": "In", "values": [value]}]}),
    );
    for w in [&mut a, &mut b] {
        w.as_object_mut().map(|m| m.remove("_rev"));
    }
    json!([a, b])
}

/// The MutatingWebhookConfiguration `istioctl tag set <tag> --revision <rev>` writes on AKS.
pub fn tag_webhook(tag: &str, rev: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": format!("istio-revision-tag-{tag}-{ISTIO_NS}"),
            "labels": merge_labels(aks_labels(rev), json!({
                "istio.io/tag": tag,
                "istio.io/rev": rev,
                "app.kubernetes.io/name": "istiod",
                "admissions.enforcer/disabled": "true",
            })),
        },
        "webhooks": rev_webhooks(tag, &format!("istiod-{rev}")),
    })
}

fn gateway_modes(gateways: &[String]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for g in gateways {
        match g.to_ascii_lowercase().as_str() {
            "external" => out.push("external"),
            "internal" => out.push("internal"),
            _ => {}
        }
    }
    out
}

/// Creates the cluster's fixed objects and the installed revisions' control planes.
pub fn seed(kube: &KubeState, revisions: &[String], gateways: &[String]) {
    for ns in [
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        ISTIO_NS,
        INGRESS_NS,
    ] {
        create_if_missing(
            kube,
            "namespaces",
            json!({"metadata": {"name": ns, "labels": if ns.starts_with("aks-istio") {
                json!({"kubernetes.azure.com/managedby": "aks"})
            } else { json!({}) }}}),
        );
    }
    for i in 0..kube.scenario.nodes.max(1) {
        let name = format!("aks-nodepool1-12345678-vmss{i:06}");
        create_if_missing(
            kube,
            "nodes",
            json!({
                "metadata": {"name": name, "labels": {
                    "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                    "agentpool": "nodepool1", "kubernetes.azure.com/role": "agent"}},
                "spec": {"providerID": format!("azure:///subscriptions/sim/vmss/{i}")},
            }),
        );
        let _ = kube.store.update_with(by_plural("nodes"), "", &name, |cur| {
            let mut n = cur.clone();
            n["status"] = json!({
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
                "nodeInfo": {"kubeletVersion": "v1.33.5", "osImage": "Ubuntu 22.04.5 LTS", "architecture": "amd64"},
            });
            Ok(Some(n))
        });
    }
    ensure_gateway_services(kube, gateways);
    for rev in revisions {
        ensure_revision(kube, rev, gateways);
        if let Some(mesh) = &kube.scenario.shared_mesh_config {
            create_if_missing(
                kube,
                "configmaps",
                json!({"metadata": {"name": format!("istio-shared-configmap-{rev}"), "namespace": ISTIO_NS},
                       "data": {"mesh": mesh}}),
            );
        }
    }
    for tag in &kube.scenario.tags {
        create_if_missing(
            kube,
            "mutatingwebhookconfigurations",
            tag_webhook(&tag.name, &tag.revision),
        );
    }
}

fn ensure_gateway_services(kube: &KubeState, gateways: &[String]) {
    for (i, mode) in gateway_modes(gateways).into_iter().enumerate() {
        let app = format!("aks-istio-ingressgateway-{mode}");
        let mut annotations = json!({});
        if mode == "internal" {
            annotations =
                json!({"service.beta.kubernetes.io/azure-load-balancer-internal": "true"});
        }
        create_if_missing(
            kube,
            "services",
            json!({
                "metadata": {"name": app, "namespace": INGRESS_NS, "annotations": annotations,
                             "labels": {"app": app, "istio": app, "kubernetes.azure.com/managedby": "aks"}},
                "spec": {"type": "LoadBalancer", "selector": {"app": app, "istio": app},
                         "ports": [{"name": "status-port", "port": 15021, "protocol": "TCP", "targetPort": 15021},
                                   {"name": "http2", "port": 80, "protocol": "TCP", "targetPort": 8080},
                                   {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}]},
            }),
        );
        let ip = if mode == "internal" {
            format!("10.224.0.{}", 10 + i)
        } else {
            format!("20.0.0.{}", 10 + i)
        };
        let _ = kube
            .store
            .update_with(by_plural("services"), INGRESS_NS, &app, |cur| {
                let mut n = cur.clone();
                n["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
                Ok(Some(n))
            });
    }
}

fn istiod_deployment(kube: &KubeState, rev: &str) -> Value {
    let native = kube
        .scenario
        .native_sidecar_revisions
        .iter()
        .any(|r| r == rev);
    let version = istio_version(rev);
    json!({
        "metadata": {"name": format!("istiod-{rev}"), "namespace": ISTIO_NS,
                     "labels": merge_labels(aks_labels(rev), json!({"app": "istiod", "istio": "pilot"}))},
        "spec": {
            "replicas": kube.scenario.istiod_replicas.max(1),
            "selector": {"matchLabels": {"app": "istiod", "istio.io/rev": rev}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {
                    "labels": {"app": "istiod", "istio": "istiod", "istio.io/rev": rev,
                               "kubernetes.azure.com/managedby": "aks", "sidecar.istio.io/inject": "false"},
                    "annotations": {"prometheus.io/port": "15014", "prometheus.io/scrape": "true",
                                    "sidecar.istio.io/inject": "false"},
                },
                "spec": {
                    "serviceAccountName": format!("istiod-{rev}"),
                    "containers": [{
                        "name": "discovery",
                        "image": format!("{PILOT_IMAGE}:{version}-distroless"),
                        "args": ["discovery", "--monitoringAddr=:15014", "--log_output_level=default:info", "--domain", "cluster.local", "--keepaliveMaxServerConnectionAge", "30m"],
                        "ports": [{"containerPort": 8080, "protocol": "TCP"},
                                  {"containerPort": 15010, "protocol": "TCP"},
                                  {"containerPort": 15012, "protocol": "TCP"},
                                  {"containerPort": 15014, "protocol": "TCP"},
                                  {"containerPort": 15017, "protocol": "TCP"}],
                        "env": [{"name": "REVISION", "value": rev},
                                {"name": "PILOT_ENABLE_STATUS", "value": "false"},
                                {"name": "ENABLE_NATIVE_SIDECARS", "value": if native { "true" } else { "false" }},
                                {"name": "ENABLE_DEBUG_ON_HTTP", "value": "true"},
                                {"name": "ISTIOD_CUSTOM_HOST", "value": format!("istiod-{rev}.{ISTIO_NS}.svc")}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 3},
                    }],
                },
            },
        },
    })
}

fn gateway_deployment(rev: &str, mode: &str) -> Value {
    let app = format!("aks-istio-ingressgateway-{mode}");
    json!({
        "metadata": {"name": format!("{app}-{rev}"), "namespace": INGRESS_NS,
                     "labels": merge_labels(aks_labels(rev), json!({"app": app, "istio": app}))},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": app, "istio": app, "istio.io/rev": rev}},
            "template": {
                "metadata": {
                    "labels": {"app": app, "istio": app, "istio.io/rev": rev,
                               "sidecar.istio.io/inject": "false", "kubernetes.azure.com/managedby": "aks"},
                    "annotations": {"prometheus.io/port": "15020", "prometheus.io/scrape": "true"},
                },
                "spec": {
                    "serviceAccountName": app,
                    "containers": [{
                        "name": "istio-proxy",
                        "image": proxy_image(rev),
                        "args": ["proxy", "router", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
                        "ports": [{"containerPort": 15021, "protocol": "TCP"},
                                  {"containerPort": 8080, "protocol": "TCP"},
                                  {"containerPort": 8443, "protocol": "TCP"}],
                        "env": [{"name": "PROXY_CONFIG", "value": format!("{{\"discoveryAddress\":\"istiod-{rev}.{ISTIO_NS}.svc:15012\"}}")}],
                    }],
                },
            },
        },
    })
}

fn hpa(name: &str, ns: &str, target: &str, min: u32, max: u32, rev: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "labels": aks_labels(rev)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": min, "maxReplicas": max,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}],
        },
    })
}

/// Creates what a revision brings (idempotent).
pub fn ensure_revision(kube: &KubeState, rev: &str, gateways: &[String]) {
    let version = istio_version(rev);
    create_if_missing(
        kube,
        "configmaps",
        json!({"metadata": {"name": format!("istio-{rev}"), "namespace": ISTIO_NS, "labels": aks_labels(rev)},
               "data": {"mesh": "defaultConfig:\n  discoveryAddress: istiod-REV.aks-istio-system.svc:15012\nenablePrometheusMerge: true\nrootNamespace: aks-istio-system\ntrustDomain: cluster.local\n".replace("REV", rev),
                        "meshNetworks": "networks: {}"}}),
    );
    create_if_missing(
        kube,
        "configmaps",
        json!({"metadata": {"name": format!("istio-sidecar-injector-{rev}"), "namespace": ISTIO_NS, "labels": aks_labels(rev)},
               "data": {"values": format!("{{\"global\":{{\"hub\":\"mcr.microsoft.com/oss/istio\",\"tag\":\"{version}-distroless\",\"proxy\":{{\"image\":\"proxyv2\"}}}},\"revision\":\"{rev}\"}}"),
                        "config": "policy: enabled\nalwaysInjectSelector: []\nneverInjectSelector: []\n"}}),
    );
    create_if_missing(
        kube,
        "serviceaccounts",
        json!({"metadata": {"name": format!("istiod-{rev}"), "namespace": ISTIO_NS, "labels": aks_labels(rev)}}),
    );
    create_if_missing(
        kube,
        "services",
        json!({
            "metadata": {"name": format!("istiod-{rev}"), "namespace": ISTIO_NS,
                         "labels": merge_labels(aks_labels(rev), json!({"app": "istiod", "istio": "pilot"}))},
            "spec": {"selector": {"app": "istiod", "istio.io/rev": rev},
                     "ports": [{"name": "grpc-xds", "port": 15010, "protocol": "TCP", "targetPort": 15010},
                               {"name": "https-dns", "port": 15012, "protocol": "TCP", "targetPort": 15012},
                               {"name": "https-webhook", "port": 443, "protocol": "TCP", "targetPort": 15017},
                               {"name": "http-monitoring", "port": 15014, "protocol": "TCP", "targetPort": 15014}]},
        }),
    );
    create_if_missing(kube, "deployments", istiod_deployment(kube, rev));
    create_if_missing(
        kube,
        "horizontalpodautoscalers",
        hpa(
            &format!("istiod-{rev}"),
            ISTIO_NS,
            &format!("istiod-{rev}"),
            2,
            5,
            rev,
        ),
    );
    create_if_missing(
        kube,
        "mutatingwebhookconfigurations",
        json!({
            "metadata": {"name": format!("istio-sidecar-injector-{rev}-{ISTIO_NS}"),
                         "labels": merge_labels(aks_labels(rev), json!({
                             "app": "sidecar-injector", "admissions.enforcer/disabled": "true",
                             "app.kubernetes.io/name": "istiod"}))},
            "webhooks": rev_webhooks(rev, &format!("istiod-{rev}")),
        }),
    );
    create_if_missing(
        kube,
        "validatingwebhookconfigurations",
        json!({
            "metadata": {"name": format!("istio-validator-{rev}-{ISTIO_NS}"),
                         "labels": merge_labels(aks_labels(rev), json!({"app": "istiod", "istio": "istiod", "istio.io/rev": rev}))},
            "webhooks": [{
                "name": "rev.validation.istio.io",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {"service": {"name": format!("istiod-{rev}"), "namespace": ISTIO_NS, "path": "/validate", "port": 443},
                                 "caBundle": base64::engine::general_purpose::STANDARD.encode(FAKE_CA)},
                "failurePolicy": "Fail",
                "objectSelector": {"matchExpressions": [{"key": "istio.io/rev", "operator": "In", "values": [rev]}]},
                "rules": [{"apiGroups": ["security.istio.io", "networking.istio.io", "telemetry.istio.io", "extensions.istio.io"],
                           "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["*"], "scope": "*"}],
                "sideEffects": "None",
                "timeoutSeconds": 10,
            }],
        }),
    );
    for mode in gateway_modes(gateways) {
        let dep = gateway_deployment(rev, mode);
        let name = name_of(&dep).to_string();
        create_if_missing(kube, "deployments", dep);
        create_if_missing(
            kube,
            "horizontalpodautoscalers",
            hpa(&name, INGRESS_NS, &name, 2, 5, rev),
        );
    }
    if !gateway_modes(gateways).is_empty() {
        for lease in [
            format!("istio-gateway-deployment-{rev}"),
            format!("istio-gateway-status-leader-{rev}"),
        ] {
            create_if_missing(
                kube,
                "leases",
                json!({"metadata": {"name": lease, "namespace": ISTIO_NS},
                       "spec": {"holderIdentity": format!("istiod-{rev}-0"), "leaseDurationSeconds": 30,
                                "acquireTime": super::store::now_micro(), "renewTime": super::store::now_micro(),
                                "leaseTransitions": 0}}),
            );
        }
    }
}

/// Removes what a revision brought, except the gateway Leases (AKS leaves them behind) and
/// the user's shared ConfigMap.
pub fn remove_revision(kube: &KubeState, rev: &str) {
    let store = &kube.store;
    let del = |plural: &str, ns: &str, name: &str| {
        let _ = gc::delete_cascade(store, by_plural(plural), ns, name);
    };
    del(
        "mutatingwebhookconfigurations",
        "",
        &format!("istio-sidecar-injector-{rev}-{ISTIO_NS}"),
    );
    del(
        "validatingwebhookconfigurations",
        "",
        &format!("istio-validator-{rev}-{ISTIO_NS}"),
    );
    del("deployments", ISTIO_NS, &format!("istiod-{rev}"));
    del(
        "horizontalpodautoscalers",
        ISTIO_NS,
        &format!("istiod-{rev}"),
    );
    del("services", ISTIO_NS, &format!("istiod-{rev}"));
    del("serviceaccounts", ISTIO_NS, &format!("istiod-{rev}"));
    del("configmaps", ISTIO_NS, &format!("istio-{rev}"));
    del(
        "configmaps",
        ISTIO_NS,
        &format!("istio-sidecar-injector-{rev}"),
    );
    for mode in ["external", "internal"] {
        let name = format!("aks-istio-ingressgateway-{mode}-{rev}");
        del("deployments", INGRESS_NS, &name);
        del("horizontalpodautoscalers", INGRESS_NS, &name);
    }
}

/// Follows the mesh spec ARM publishes.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut mesh = shared.mesh.subscribe();
    let mut applied: Vec<String> = shared.kube.initial_revisions.clone();
    loop {
        let spec = mesh.borrow_and_update().clone();
        let kube = &shared.kube;
        ensure_gateway_services(kube, &spec.ingress_gateways);
        for rev in &spec.revisions {
            ensure_revision(kube, rev, &spec.ingress_gateways);
        }
        for rev in applied.iter().filter(|r| !spec.revisions.contains(r)) {
            remove_revision(kube, rev);
        }
        applied = spec.revisions.clone();
        tokio::select! {
            changed = mesh.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Injection

fn rule_matches_pod_create(webhook: &Value) -> bool {
    webhook["rules"].as_array().is_some_and(|rules| {
        rules.iter().any(|r| {
            let has = |field: &str, want: &str| {
                r[field]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == want || x == "*"))
            };
            has("operations", "CREATE") && has("resources", "pods") && has("apiGroups", "")
        })
    })
}

/// The revision an istiod Service selects, and whether it has a ready endpoint.
fn service_backend(kube: &KubeState, ns: &str, name: &str) -> Result<String, String> {
    let svc = kube
        .store
        .get(by_plural("services"), ns, name)
        .ok_or_else(|| format!("service \"{name}\" not found"))?;
    let selector = svc["spec"]["selector"].clone();
    let rev = selector["istio.io/rev"].as_str().unwrap_or("").to_string();
    let sel = LabelSelector::from_json(Some(&json!({"matchLabels": selector})));
    let (pods, _) = kube.store.list(by_plural("pods"), Some(ns));
    if !pods
        .iter()
        .any(|p| sel.matches(labels_of(p)) && pod_ready(p))
    {
        return Err(format!("no endpoints available for service \"{name}\""));
    }
    Ok(rev)
}

pub fn pod_ready(p: &Value) -> bool {
    p["metadata"].get("deletionTimestamp").is_none()
        && p["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Runs the mutating webhooks on a pod being created.
pub fn inject(kube: &KubeState, pod: &mut Value) -> Result<(), ApiError> {
    let ns = ns_of(pod).to_string();
    let namespaces = kube.store.list_cached(by_plural("namespaces"));
    let ns_labels = namespaces
        .iter()
        .find(|n| name_of(n) == ns)
        .and_then(|n| labels_of(n).cloned());
    let mwcs = kube
        .store
        .list_cached(by_plural("mutatingwebhookconfigurations"));
    for mwc in mwcs.iter() {
        let Some(hooks) = mwc["webhooks"].as_array() else {
            continue;
        };
        for wh in hooks {
            if !rule_matches_pod_create(wh) {
                continue;
            }
            let ns_sel = LabelSelector::from_json(wh.get("namespaceSelector"));
            let obj_sel = LabelSelector::from_json(wh.get("objectSelector"));
            if !ns_sel.matches(ns_labels.as_ref()) || !obj_sel.matches(labels_of(pod)) {
                continue;
            }
            let wh_name = wh["name"].as_str().unwrap_or("");
            let svc_name = wh["clientConfig"]["service"]["name"].as_str().unwrap_or("");
            let svc_ns = wh["clientConfig"]["service"]["namespace"]
                .as_str()
                .unwrap_or("");
            let path = wh["clientConfig"]["service"]["path"]
                .as_str()
                .unwrap_or("/inject");
            let fail = wh["failurePolicy"].as_str().unwrap_or("Fail") == "Fail";
            match service_backend(kube, svc_ns, svc_name) {
                Ok(rev) => {
                    if annotation(pod, "sidecar.istio.io/status").is_none() {
                        apply_injection(kube, pod, &rev);
                    }
                }
                Err(why) if fail => {
                    return Err(ApiError::internal(format!(
                        "failed calling webhook \"{wh_name}\": failed to call webhook: Post \"https://{svc_name}.{svc_ns}.svc:443{path}?timeout=10s\": {why}"
                    )));
                }
                Err(_) => {}
            }
        }
    }
    Ok(())
}

fn apply_injection(kube: &KubeState, pod: &mut Value, rev: &str) {
    let native = kube
        .scenario
        .native_sidecar_revisions
        .iter()
        .any(|r| r == rev);
    let image = proxy_image(rev);
    let app_container = pod["spec"]["containers"][0]["name"]
        .as_str()
        .unwrap_or("app")
        .to_string();
    let canonical_name = label(pod, "service.istio.io/canonical-name")
        .or_else(|| label(pod, "app.kubernetes.io/name"))
        .or_else(|| label(pod, "app"))
        .unwrap_or_else(|| name_of(pod))
        .to_string();
    let canonical_rev = label(pod, "service.istio.io/canonical-revision")
        .or_else(|| label(pod, "app.kubernetes.io/version"))
        .or_else(|| label(pod, "version"))
        .unwrap_or("latest")
        .to_string();
    let volumes = [
        "workload-socket",
        "credential-socket",
        "workload-certs",
        "istio-envoy",
        "istio-data",
        "istio-podinfo",
        "istio-token",
        "istiod-ca-cert",
    ];
    let status = json!({
        "initContainers": if native { json!(["istio-init", "istio-proxy"]) } else { json!(["istio-init"]) },
        "containers": if native { Value::Null } else { json!(["istio-proxy"]) },
        "volumes": volumes,
        "imagePullSecrets": Value::Null,
        "revision": rev,
    });
    {
        let meta = super::store::metadata_mut(pod);
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert("security.istio.io/tlsMode".into(), json!("istio"));
            l.insert(
                "service.istio.io/canonical-name".into(),
                json!(canonical_name),
            );
            l.insert(
                "service.istio.io/canonical-revision".into(),
                json!(canonical_rev),
            );
        }
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = ann.as_object_mut() {
            a.insert("istio.io/rev".into(), json!(rev));
            a.insert("sidecar.istio.io/status".into(), json!(status.to_string()));
            a.insert(
                "kubectl.kubernetes.io/default-container".into(),
                json!(app_container),
            );
            a.insert(
                "kubectl.kubernetes.io/default-logs-container".into(),
                json!(app_container),
            );
            a.insert("prometheus.io/port".into(), json!("15020"));
            a.insert("prometheus.io/path".into(), json!("/stats/prometheus"));
            a.insert("prometheus.io/scrape".into(), json!("true"));
        }
    }
    let mut proxy = json!({
        "name": "istio-proxy",
        "image": image,
        "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local", "--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error", "--log_output_level=default:info"],
        "env": [
            {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
            {"name": "CA_ADDR", "value": format!("istiod-{rev}.{ISTIO_NS}.svc:15012")},
            {"name": "PROXY_CONFIG", "value": format!("{{\"discoveryAddress\":\"istiod-{rev}.{ISTIO_NS}.svc:15012\"}}")},
            {"name": "ISTIO_META_CLUSTER_ID", "value": "Kubernetes"},
        ],
        "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}, "periodSeconds": 15},
        "securityContext": {"runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": true},
        "imagePullPolicy": "IfNotPresent",
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
    });
    let init = json!({
        "name": "istio-init",
        "image": image,
        "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"],
        "imagePullPolicy": "IfNotPresent",
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "resources": {},
    });
    let spec = &mut pod["spec"];
    let mut inits = spec["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    inits.insert(0, init);
    if native {
        proxy["restartPolicy"] = json!("Always");
        inits.insert(1, proxy);
    } else if let Some(cs) = spec["containers"].as_array_mut() {
        cs.push(proxy);
    }
    spec["initContainers"] = Value::Array(inits);
    let mut vols = spec["volumes"].as_array().cloned().unwrap_or_default();
    for v in volumes {
        vols.push(json!({"name": v, "emptyDir": {}}));
    }
    spec["volumes"] = Value::Array(vols);
}

/// The revision that injected a pod (`sidecar.istio.io/status`), or for a gateway pod its label.
pub fn pod_revision(pod: &Value) -> Option<String> {
    if let Some(s) = annotation(pod, "sidecar.istio.io/status")
        && let Ok(v) = serde_json::from_str::<Value>(s)
        && let Some(r) = v["revision"].as_str()
    {
        return Some(r.to_string());
    }
    if ns_of(pod) == INGRESS_NS {
        return label(pod, "istio.io/rev").map(str::to_string);
    }
    None
}

// ---------------------------------------------------------------------------------------
// MeshConfig allowlist

const MESH_ALLOWED: &[&str] = &[
    "defaultConfig",
    "outboundTrafficPolicy",
    "accessLogFile",
    "accessLogFormat",
    "accessLogEncoding",
    "enableEnvoyAccessLogService",
    "disableEnvoyListenerLog",
    "discoverySelectors",
    "proxyListenPort",
    "proxyInboundListenPort",
    "proxyHttpPort",
    "connectTimeout",
    "tcpKeepalive",
    "extensionProviders",
    "defaultProviders",
    "enableTracing",
    "trustDomain",
    "trustDomainAliases",
    "caCertificates",
    "defaultServiceExportTo",
    "defaultVirtualServiceExportTo",
    "defaultDestinationRuleExportTo",
    "localityLbSetting",
    "dnsRefreshRate",
    "h2UpgradePolicy",
    "enablePrometheusMerge",
    "pathNormalization",
    "defaultHttpRetryPolicy",
    "serviceSettings",
    "meshMTLS",
    "tlsDefaults",
    "ingressService",
    "ingressSelector",
];
const PROXY_ALLOWED: &[&str] = &[
    "drainDuration",
    "concurrency",
    "terminationDrainDuration",
    "holdApplicationUntilProxyStarts",
    "tracingServiceName",
    "statsUdpAddress",
    "proxyAdminPort",
    "tracing",
    "envoyAccessLogService",
    "envoyMetricsService",
    "proxyMetadata",
    "statusPort",
    "extraStatTags",
    "gatewayTopology",
    "proxyStatsMatcher",
    "meshId",
    "caCertificatesPem",
    "privateKeyProvider",
    "proxyHeaders",
];

pub fn validate_shared_configmap(rt: &ResourceType, cm: &Value) -> Result<(), ApiError> {
    if ns_of(cm) != ISTIO_NS || !name_of(cm).starts_with("istio-shared-configmap-") {
        return Ok(());
    }
    let deny = |why: String| ApiError {
        code: 400,
        reason: "BadRequest",
        message: format!(
            "admission webhook \"validation.meshconfig.aks.azure.com\" denied the request: {} {}/{}: {why}",
            rt.kind,
            ISTIO_NS,
            name_of(cm)
        ),
        details: Value::Null,
    };
    let Some(mesh) = cm["data"]["mesh"].as_str() else {
        return Ok(());
    };
    if mesh.contains('\t') {
        return Err(deny(
            "data.mesh contains a tab character; MeshConfig must be indented with spaces".into(),
        ));
    }
    let parsed: Value = serde_saphyr::from_str(mesh)
        .map_err(|e| deny(format!("data.mesh is not valid YAML: {e}")))?;
    let Some(map) = parsed.as_object() else {
        if parsed.is_null() {
            return Ok(());
        }
        return Err(deny("data.mesh must be a MeshConfig mapping".into()));
    };
    for (k, v) in map {
        if !MESH_ALLOWED.contains(&k.as_str()) {
            return Err(deny(format!(
                "MeshConfig field \"{k}\" is not allowed by the Istio add-on"
            )));
        }
        if k == "defaultConfig"
            && let Some(pc) = v.as_object()
        {
            for pk in pc.keys() {
                if !PROXY_ALLOWED.contains(&pk.as_str()) {
                    return Err(deny(format!(
                        "ProxyConfig field \"defaultConfig.{pk}\" is not allowed by the Istio add-on"
                    )));
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Proxies and istiod's debug endpoint

fn stable_hash(parts: &[&str]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

fn nonce(parts: &[&str]) -> String {
    let a = stable_hash(parts);
    let b = stable_hash(&[parts.join("/").as_str(), "nonce"]);
    uuid::Uuid::from_u64_pair(a, b).to_string()
}

/// The ready istiod pods of a revision, sorted by name.
fn ready_istiods(kube: &KubeState, rev: &str) -> Vec<String> {
    let (pods, _) = kube.store.list(by_plural("pods"), Some(ISTIO_NS));
    let mut out: Vec<String> = pods
        .iter()
        .filter(|p| {
            label(p, "app") == Some("istiod")
                && label(p, "istio.io/rev") == Some(rev)
                && pod_ready(p)
        })
        .map(|p| name_of(p).to_string())
        .collect();
    out.sort();
    out
}

const TYPES: &[(&str, &str)] = &[
    (
        "cluster",
        "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    ),
    (
        "listener",
        "type.googleapis.com/envoy.config.listener.v3.Listener",
    ),
    (
        "route",
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    ),
    (
        "endpoint",
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    ),
    (
        "extensionconfig",
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
    ),
];

/// istiod's `/debug/syncz` for one istiod pod: the proxies connected to it.
pub fn syncz(kube: &KubeState, istiod_pod: &Value, namespace: Option<&str>) -> Value {
    let Some(rev) = label(istiod_pod, "istio.io/rev").map(str::to_string) else {
        return json!([]);
    };
    let me = name_of(istiod_pod).to_string();
    let istiods = ready_istiods(kube, &rev);
    if !istiods.contains(&me) {
        return json!([]);
    }
    let stale = kube.scenario.stale_revisions.contains(&rev);
    let ack_after = kube.clock.real(std::time::Duration::from_secs_f64(
        kube.scenario.proxy_ack_seconds.max(0.0),
    ));
    let proxies = kube
        .proxies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let now = Instant::now();
    // Judged on what the store indexes of each pod: ten thousand proxies are not parsed.
    let (pods, _) = kube.store.list_raw(by_plural("pods"), namespace);
    let mut out = Vec::new();
    for p in pods.iter() {
        let Some(facts) = p.pod.as_ref() else {
            continue;
        };
        if !facts.ready || facts.revision.as_deref() != Some(rev.as_str()) {
            continue;
        }
        let uid = p.uid.as_str();
        let idx = (stable_hash(&[uid]) % istiods.len() as u64) as usize;
        if istiods[idx] != me {
            continue;
        }
        let connected = proxies.get(uid).copied();
        let acked_yet = !stale && connected.is_none_or(|c| now.duration_since(c) >= ack_after);
        let gateway = p.namespace == INGRESS_NS;
        let version = facts
            .proxy_image
            .as_deref()
            .and_then(|i| i.rsplit(':').next())
            .map(|t| t.trim_end_matches("-distroless").to_string())
            .unwrap_or_else(|| istio_version(&rev));
        let mut entry = serde_json::Map::new();
        entry.insert("cluster_id".into(), json!("Kubernetes"));
        entry.insert("proxy".into(), json!(format!("{}.{}", p.name, p.namespace)));
        entry.insert(
            "proxy_type".into(),
            json!(if gateway { "router" } else { "sidecar" }),
        );
        entry.insert("proxy_version".into(), json!(version));
        entry.insert("istio_version".into(), json!(version));
        let mut resources = serde_json::Map::new();
        let sent_time = facts.start_time.clone();
        for (short, type_url) in TYPES {
            if *short == "extensionconfig" {
                continue;
            }
            let sent = nonce(&[uid, short, &me]);
            let acked = if acked_yet {
                sent.clone()
            } else {
                String::new()
            };
            entry.insert(format!("{short}_sent"), json!(sent));
            if !acked.is_empty() {
                entry.insert(format!("{short}_acked"), json!(acked));
            }
            let mut r = json!({"sent": sent, "sentTime": sent_time});
            if !acked.is_empty() {
                r["acked"] = json!(acked);
            }
            resources.insert(type_url.to_string(), r);
        }
        entry.insert("resources".into(), Value::Object(resources));
        out.push(Value::Object(entry));
    }
    Value::Array(out)
}

/// What istiod's monitoring port (15014) answers for `path`: (status, content type, body).
pub fn istiod_http(
    kube: &KubeState,
    istiod_pod: &Value,
    path_and_query: &str,
) -> (u16, &'static str, Vec<u8>) {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let namespace = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "namespace")
        .map(|(_, v)| v.into_owned());
    match path {
        "/debug/syncz" => {
            let body = syncz(kube, istiod_pod, namespace.as_deref());
            (200, "application/json", serde_json::to_vec_pretty(&body).unwrap_or_default())
        }
        "/version" | "/debug/version" => {
            let rev = label(istiod_pod, "istio.io/rev").unwrap_or("");
            let v = istio_version(rev);
            (200, "application/json", json!({"version": v, "revision": rev}).to_string().into_bytes())
        }
        "/metrics" => (
            200,
            "text/plain; version=0.0.4",
            b"# HELP pilot_xds Number of endpoints connected to this pilot using XDS.\n# TYPE pilot_xds gauge\n".to_vec(),
        ),
        "/ready" => (200, "text/plain", Vec::new()),
        p if p.starts_with("/debug") => (
            404,
            "text/plain; charset=utf-8",
            b"404 page not found\n".to_vec(),
        ),
        _ => (404, "text/plain; charset=utf-8", b"404 page not found\n".to_vec()),
    }
}
