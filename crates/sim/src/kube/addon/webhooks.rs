//! The add-on's admission webhooks, as admission calls them: istiod's sidecar injector
//! (reached through the MutatingWebhookConfigurations; the revision is the one the called
//! Service selects) and AKS's MeshConfig allowlist for `istio-shared-configmap-<rev>`.

use serde_json::{Value, json};

use super::versions::Patches;
use crate::kube::admission::WebhookServer;
use crate::kube::istio::ISTIO_NS;
use crate::kube::object::{annotation, label, metadata_mut, name_of, ns_of};
use crate::kube::resources::ResourceType;
use crate::kube::scenario::KubeScenario;
use crate::kube::status::ApiError;

/// The servers behind the add-on's webhooks.
pub struct Webhooks {
    /// Revisions whose proxy runs as a native sidecar (an init container that keeps running).
    native_sidecar_revisions: Vec<String>,
    /// The patch each revision's injector is at (AKS rolls them).
    patches: Patches,
}

impl Webhooks {
    pub fn new(scenario: &KubeScenario, patches: Patches) -> Self {
        Self {
            native_sidecar_revisions: scenario.native_sidecar_revisions.clone(),
            patches,
        }
    }
}

impl WebhookServer for Webhooks {
    /// istiod's `/inject`: a pod not injected yet gets the proxy of the revision the called
    /// Service selects.
    fn mutate_pod(&self, service: &Value, pod: &mut Value) {
        let rev = service["spec"]["selector"]["istio.io/rev"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if annotation(pod, "sidecar.istio.io/status").is_none() {
            let native = self.native_sidecar_revisions.contains(&rev);
            let image = self.patches.proxy_image(&rev);
            inject(pod, &rev, &image, native);
        }
    }

    fn validate(&self, rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
        if rt.kind == "ConfigMap" {
            validate_shared_configmap(rt, obj)?;
        }
        Ok(())
    }
}

/// The volumes the injector adds.
const VOLUMES: [&str; 8] = [
    "workload-socket",
    "credential-socket",
    "workload-certs",
    "istio-envoy",
    "istio-data",
    "istio-podinfo",
    "istio-token",
    "istiod-ca-cert",
];

fn inject(pod: &mut Value, rev: &str, image: &str, native: bool) {
    let status = json!({
        "initContainers": if native { json!(["istio-init", "istio-proxy"]) } else { json!(["istio-init"]) },
        "containers": if native { Value::Null } else { json!(["istio-proxy"]) },
        "volumes": VOLUMES,
        "imagePullSecrets": Value::Null,
        "revision": rev,
    });
    label_and_annotate(pod, rev, &status);
    let spec = &mut pod["spec"];
    let mut inits = spec["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    inits.insert(0, init_container(image));
    let mut proxy = proxy_container(rev, image);
    if native {
        proxy["restartPolicy"] = json!("Always");
        inits.insert(1, proxy);
    } else if let Some(cs) = spec["containers"].as_array_mut() {
        cs.push(proxy);
    }
    spec["initContainers"] = Value::Array(inits);
    let mut vols = spec["volumes"].as_array().cloned().unwrap_or_default();
    for v in VOLUMES {
        vols.push(json!({"name": v, "emptyDir": {}}));
    }
    spec["volumes"] = Value::Array(vols);
}

/// The labels and annotations of an injected pod; `status` is `sidecar.istio.io/status`.
fn label_and_annotate(pod: &mut Value, rev: &str, status: &Value) {
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
    let meta = metadata_mut(pod);
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

fn proxy_container(rev: &str, image: &str) -> Value {
    json!({
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
    })
}

fn init_container(image: &str) -> Value {
    json!({
        "name": "istio-init",
        "image": image,
        "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"],
        "imagePullPolicy": "IfNotPresent",
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "resources": {},
    })
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

fn validate_shared_configmap(rt: &ResourceType, cm: &Value) -> Result<(), ApiError> {
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
