//! The objects the add-on writes, as AKS renders them: per revision istiod's ConfigMaps,
//! ServiceAccount, Service, Deployment and HPA, the injector and validating webhook
//! configurations, the ingress gateways' Deployments, HPAs and Leases; the shared gateway
//! Services; the tags' webhook configurations; the cluster's fixed namespaces and nodes.
//! Pure: nothing here reads or writes the cluster.
//!
//! Names, labels and selectors: reference/istio-kubernetes.md §1, §3 and §4.

use base64::Engine;
use serde_json::{Value, json};

use crate::kube::istio::{INGRESS_NS, ISTIO_NS};
use crate::kube::object::{name_of, now_micro};
use crate::kube::scenario::KubeScenario;

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

/// The proxy image of Istio `version` (`1.27.3`), as AKS ships it.
pub fn proxy_image_of(version: &str) -> String {
    format!("{PROXY_IMAGE}:{version}-distroless")
}

/// istiod's image of Istio `version`.
pub fn pilot_image_of(version: &str) -> String {
    format!("{PILOT_IMAGE}:{version}-distroless")
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

pub(super) fn gateway_modes(gateways: &[String]) -> Vec<&'static str> {
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

fn istiod_deployment(scenario: &KubeScenario, rev: &str, version: &str) -> Value {
    let native = scenario.native_sidecar_revisions.iter().any(|r| r == rev);
    json!({
        "metadata": {"name": format!("istiod-{rev}"), "namespace": ISTIO_NS,
                     "labels": merge_labels(aks_labels(rev), json!({"app": "istiod", "istio": "pilot"}))},
        "spec": {
            "replicas": scenario.istiod_replicas.max(1),
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
                        "image": pilot_image_of(version),
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

fn gateway_deployment(rev: &str, version: &str, mode: &str) -> Value {
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
                        "image": proxy_image_of(version),
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

/// The namespaces every AKS cluster has, the add-on's two among them.
pub(super) fn namespaces() -> Vec<Value> {
    [
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        ISTIO_NS,
        INGRESS_NS,
    ]
    .into_iter()
    .map(|ns| {
        json!({"metadata": {"name": ns, "labels": if ns.starts_with("aks-istio") {
            json!({"kubernetes.azure.com/managedby": "aks"})
        } else { json!({}) }}})
    })
    .collect()
}

/// The `i`th node of the node pool, and the status its kubelet posts.
pub(super) fn node(i: u32) -> (Value, Value) {
    let name = format!("aks-nodepool1-12345678-vmss{i:06}");
    let node = json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "agentpool": "nodepool1", "kubernetes.azure.com/role": "agent"}},
        "spec": {"providerID": format!("azure:///subscriptions/sim/vmss/{i}")},
    });
    let status = json!({
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
        "nodeInfo": {"kubeletVersion": "v1.33.5", "osImage": "Ubuntu 22.04.5 LTS", "architecture": "amd64"},
    });
    (node, status)
}

/// The shared LoadBalancer Service of the `i`th enabled gateway mode, and its status.
pub(super) fn gateway_service(i: usize, mode: &str) -> (Value, Value) {
    let app = format!("aks-istio-ingressgateway-{mode}");
    let mut annotations = json!({});
    if mode == "internal" {
        annotations = json!({"service.beta.kubernetes.io/azure-load-balancer-internal": "true"});
    }
    let service = json!({
        "metadata": {"name": app, "namespace": INGRESS_NS, "annotations": annotations,
                     "labels": {"app": app, "istio": app, "kubernetes.azure.com/managedby": "aks"}},
        "spec": {"type": "LoadBalancer", "selector": {"app": app, "istio": app},
                 "ports": [{"name": "status-port", "port": 15021, "protocol": "TCP", "targetPort": 15021},
                           {"name": "http2", "port": 80, "protocol": "TCP", "targetPort": 8080},
                           {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}]},
    });
    let ip = if mode == "internal" {
        format!("10.224.0.{}", 10 + i)
    } else {
        format!("20.0.0.{}", 10 + i)
    };
    (service, json!({"loadBalancer": {"ingress": [{"ip": ip}]}}))
}

/// The user's shared MeshConfig for a revision, as a scenario installs it.
pub(super) fn shared_configmap(rev: &str, mesh: &str) -> Value {
    json!({"metadata": {"name": format!("istio-shared-configmap-{rev}"), "namespace": ISTIO_NS},
           "data": {"mesh": mesh}})
}

/// What a revision brings, by resource (plural), in the order the add-on creates it.
/// `version` is the Istio patch the revision runs now.
pub(super) fn revision(
    scenario: &KubeScenario,
    rev: &str,
    version: &str,
    gateways: &[String],
) -> Vec<(&'static str, Value)> {
    let istiod = format!("istiod-{rev}");
    let mut out = vec![
        ("configmaps", mesh_configmap(rev)),
        ("configmaps", injector_configmap(rev, version)),
        (
            "serviceaccounts",
            json!({"metadata": {"name": istiod, "namespace": ISTIO_NS, "labels": aks_labels(rev)}}),
        ),
        ("services", istiod_service(rev)),
        ("deployments", istiod_deployment(scenario, rev, version)),
        (
            "horizontalpodautoscalers",
            hpa(&istiod, ISTIO_NS, &istiod, 2, 5, rev),
        ),
        ("mutatingwebhookconfigurations", injector_webhooks(rev)),
        ("validatingwebhookconfigurations", validator_webhooks(rev)),
    ];
    let modes = gateway_modes(gateways);
    for mode in &modes {
        let dep = gateway_deployment(rev, version, mode);
        let name = name_of(&dep).to_string();
        out.push(("deployments", dep));
        out.push((
            "horizontalpodautoscalers",
            hpa(&name, INGRESS_NS, &name, 2, 5, rev),
        ));
    }
    if !modes.is_empty() {
        for lease in [
            format!("istio-gateway-deployment-{rev}"),
            format!("istio-gateway-status-leader-{rev}"),
        ] {
            out.push((
                "leases",
                json!({"metadata": {"name": lease, "namespace": ISTIO_NS},
                       "spec": {"holderIdentity": format!("istiod-{rev}-0"), "leaseDurationSeconds": 30,
                                "acquireTime": now_micro(), "renewTime": now_micro(),
                                "leaseTransitions": 0}}),
            ));
        }
    }
    out
}

/// What [`revision`] brings and the add-on deletes with it, by resource (plural), namespace
/// and name: all but the gateway Leases (AKS leaves them behind).
pub(super) fn revision_removals(rev: &str) -> Vec<(&'static str, &'static str, String)> {
    let istiod = format!("istiod-{rev}");
    let mut out = vec![
        (
            "mutatingwebhookconfigurations",
            "",
            format!("istio-sidecar-injector-{rev}-{ISTIO_NS}"),
        ),
        (
            "validatingwebhookconfigurations",
            "",
            format!("istio-validator-{rev}-{ISTIO_NS}"),
        ),
        ("deployments", ISTIO_NS, istiod.clone()),
        ("horizontalpodautoscalers", ISTIO_NS, istiod.clone()),
        ("services", ISTIO_NS, istiod.clone()),
        ("serviceaccounts", ISTIO_NS, istiod),
        ("configmaps", ISTIO_NS, format!("istio-{rev}")),
        (
            "configmaps",
            ISTIO_NS,
            format!("istio-sidecar-injector-{rev}"),
        ),
    ];
    for mode in ["external", "internal"] {
        let name = format!("aks-istio-ingressgateway-{mode}-{rev}");
        out.push(("deployments", INGRESS_NS, name.clone()));
        out.push(("horizontalpodautoscalers", INGRESS_NS, name));
    }
    out
}

fn mesh_configmap(rev: &str) -> Value {
    json!({"metadata": {"name": format!("istio-{rev}"), "namespace": ISTIO_NS, "labels": aks_labels(rev)},
           "data": {"mesh": "defaultConfig:\n  discoveryAddress: istiod-REV.aks-istio-system.svc:15012\nenablePrometheusMerge: true\nrootNamespace: aks-istio-system\ntrustDomain: cluster.local\n".replace("REV", rev),
                    "meshNetworks": "networks: {}"}})
}

/// The injector ConfigMap's `values`: the hub, tag and proxy image it injects.
pub(super) fn injector_values(rev: &str, version: &str) -> String {
    format!(
        "{{\"global\":{{\"hub\":\"mcr.microsoft.com/oss/istio\",\"tag\":\"{version}-distroless\",\"proxy\":{{\"image\":\"proxyv2\"}}}},\"revision\":\"{rev}\"}}"
    )
}

fn injector_configmap(rev: &str, version: &str) -> Value {
    json!({"metadata": {"name": format!("istio-sidecar-injector-{rev}"), "namespace": ISTIO_NS, "labels": aks_labels(rev)},
           "data": {"values": injector_values(rev, version),
                    "config": "policy: enabled\nalwaysInjectSelector: []\nneverInjectSelector: []\n"}})
}

fn istiod_service(rev: &str) -> Value {
    json!({
        "metadata": {"name": format!("istiod-{rev}"), "namespace": ISTIO_NS,
                     "labels": merge_labels(aks_labels(rev), json!({"app": "istiod", "istio": "pilot"}))},
        "spec": {"selector": {"app": "istiod", "istio.io/rev": rev},
                 "ports": [{"name": "grpc-xds", "port": 15010, "protocol": "TCP", "targetPort": 15010},
                           {"name": "https-dns", "port": 15012, "protocol": "TCP", "targetPort": 15012},
                           {"name": "https-webhook", "port": 443, "protocol": "TCP", "targetPort": 15017},
                           {"name": "http-monitoring", "port": 15014, "protocol": "TCP", "targetPort": 15014}]},
    })
}

fn injector_webhooks(rev: &str) -> Value {
    json!({
        "metadata": {"name": format!("istio-sidecar-injector-{rev}-{ISTIO_NS}"),
                     "labels": merge_labels(aks_labels(rev), json!({
                         "app": "sidecar-injector", "admissions.enforcer/disabled": "true",
                         "app.kubernetes.io/name": "istiod"}))},
        "webhooks": rev_webhooks(rev, &format!("istiod-{rev}")),
    })
}

fn validator_webhooks(rev: &str) -> Value {
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
    })
}
