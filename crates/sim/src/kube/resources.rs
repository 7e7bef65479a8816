//! The resource types the API server knows: what discovery lists and what the store keys on.

/// One served resource type.
#[derive(Debug)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served besides the object itself (`status`, `scale`, `portforward`).
    pub subresources: &'static [&'static str],
    /// Whether `metadata.generation` is kept (bumped on spec changes).
    pub generation: bool,
    /// Whether a `status` subresource separates status writes from spec writes.
    pub has_status: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods`, `deployments.apps`: the form API errors use.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Deployment.apps`: the form Invalid errors use.
    pub fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

const ALL: &[&str] = &["all"];
const ISTIO_SECURITY: &[&str] = &["istio-io", "security-istio-io"];
const ISTIO_NETWORKING: &[&str] = &["istio-io", "networking-istio-io"];
macro_rules! rt {
    ($group:expr, $version:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr, $short:expr, $cat:expr, $sub:expr, $gen:expr, $status:expr) => {
        ResourceType {
            group: $group,
            version: $version,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
            generation: $gen,
            has_status: $status,
        }
    };
}

/// Every served type. Order is discovery order within a group version.
pub static RESOURCES: &[ResourceType] = &[
    rt!(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        &[],
        &[],
        false,
        false
    ),
    rt!(
        "",
        "v1",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        &[],
        &[],
        false,
        false
    ),
    rt!(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        &[],
        &["status"],
        false,
        true
    ),
    rt!(
        "",
        "v1",
        "nodes",
        "node",
        "Node",
        false,
        &["no"],
        &[],
        &["status"],
        false,
        true
    ),
    rt!(
        "",
        "v1",
        "pods",
        "pod",
        "Pod",
        true,
        &["po"],
        ALL,
        &["status", "portforward", "log"],
        true,
        true
    ),
    rt!(
        "",
        "v1",
        "secrets",
        "secret",
        "Secret",
        true,
        &[],
        &[],
        &[],
        false,
        false
    ),
    rt!(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        &[],
        &[],
        false,
        false
    ),
    rt!(
        "",
        "v1",
        "services",
        "service",
        "Service",
        true,
        &["svc"],
        ALL,
        &["status"],
        false,
        true
    ),
    rt!(
        "apps",
        "v1",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        &["ds"],
        ALL,
        &["status"],
        true,
        true
    ),
    rt!(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
        ALL,
        &["scale", "status"],
        true,
        true
    ),
    rt!(
        "apps",
        "v1",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
        &["rs"],
        ALL,
        &["scale", "status"],
        true,
        true
    ),
    rt!(
        "apps",
        "v1",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        true,
        &["sts"],
        ALL,
        &["scale", "status"],
        true,
        true
    ),
    rt!(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        "HorizontalPodAutoscaler",
        true,
        &["hpa"],
        ALL,
        &["status"],
        false,
        true
    ),
    rt!(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration",
        "MutatingWebhookConfiguration",
        false,
        &[],
        &[],
        &[],
        true,
        false
    ),
    rt!(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "validatingwebhookconfiguration",
        "ValidatingWebhookConfiguration",
        false,
        &[],
        &[],
        &[],
        true,
        false
    ),
    rt!(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
        &[],
        &[],
        &[],
        false,
        false
    ),
    // Istio's CRDs as `istioctl install` registers them (status subresource, generation kept).
    rt!(
        "security.istio.io",
        "v1",
        "authorizationpolicies",
        "authorizationpolicy",
        "AuthorizationPolicy",
        true,
        &["ap"],
        ISTIO_SECURITY,
        &["status"],
        true,
        true
    ),
    rt!(
        "security.istio.io",
        "v1",
        "peerauthentications",
        "peerauthentication",
        "PeerAuthentication",
        true,
        &["pa"],
        ISTIO_SECURITY,
        &["status"],
        true,
        true
    ),
    rt!(
        "networking.istio.io",
        "v1",
        "destinationrules",
        "destinationrule",
        "DestinationRule",
        true,
        &["dr"],
        ISTIO_NETWORKING,
        &["status"],
        true,
        true
    ),
    rt!(
        "networking.istio.io",
        "v1",
        "serviceentries",
        "serviceentry",
        "ServiceEntry",
        true,
        &["se"],
        ISTIO_NETWORKING,
        &["status"],
        true,
        true
    ),
    rt!(
        "networking.istio.io",
        "v1",
        "sidecars",
        "sidecar",
        "Sidecar",
        true,
        &[],
        ISTIO_NETWORKING,
        &["status"],
        true,
        true
    ),
];

/// Group versions in discovery order, with their group's preferred version first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The type of an object by its `apiVersion` and `kind` (a scenario's `objects`).
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

pub fn by_plural(plural: &str) -> &'static ResourceType {
    RESOURCES
        .iter()
        .find(|r| r.plural == plural)
        .unwrap_or_else(|| panic!("unknown built-in resource {plural}"))
}
