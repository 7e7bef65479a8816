//! Istio on AKS, as data: revision names and their order, which revision injected a pod,
//! istiod's `/debug/syncz` turned into a proxy-status table, and the revision-tag webhook
//! exactly as `istioctl tag set` writes it. Pure functions only; nothing here talks to a
//! cluster (the `k8s` module does, and the steps combine the two).
//!
//! ```text
//!   revision   "asm-1-27" <-> Revision { major: 1, minor: 27 }; newest offered target
//!   pod        Pod -> PodRevision (sidecar.istio.io/status, istio.io/rev annotation,
//!              istio-proxy in containers or, for native sidecars, initContainers)
//!   syncz      istiod /debug/syncz JSON -> Vec<ProxyStatus> (CDS/LDS/EDS/RDS/ECDS)
//!   tag        canonical revision webhook + tag -> MutatingWebhookConfiguration
//! ```

pub mod meshconfig;
pub mod pod;
pub mod revision;
pub mod syncz;
pub mod tag;

pub use pod::{PodRevision, RevisionSource, SidecarPlacement, SidecarStatus, pod_revision};
pub use revision::{Revision, RevisionError, TargetError, choose_target};
pub use syncz::{ProxyStatus, SynczError, XdsStatus, parse_syncz};
pub use tag::{TagError, render_tag_webhook, tag_revision, tag_webhook_name};

/// Namespace of the add-on's control plane (istiod, webhooks' services, shared ConfigMaps).
pub const ISTIO_NAMESPACE: &str = "aks-istio-system";
/// Namespace of the add-on's ingress gateways.
pub const INGRESS_NAMESPACE: &str = "aks-istio-ingress";
/// Default namespace of the add-on's egress gateways.
pub const EGRESS_NAMESPACE: &str = "aks-istio-egress";

/// Label naming the revision (or tag) a namespace, webhook or istiod belongs to.
pub const REV_LABEL: &str = "istio.io/rev";
/// Label naming a revision tag on tag webhooks and tag Services.
pub const TAG_LABEL: &str = "istio.io/tag";
/// Legacy injection label; not supported by the add-on (it makes injection skip the namespace).
pub const INJECTION_LABEL: &str = "istio-injection";
/// Pod annotation (JSON) the injector writes; its `revision` names the injecting istiod.
pub const SIDECAR_STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// Pod annotation the injector writes since Istio 1.18 with the injecting revision.
pub const REV_ANNOTATION: &str = "istio.io/rev";
/// Pod label/annotation that opts a pod out of injection when `"false"`.
pub const INJECT_LABEL: &str = "sidecar.istio.io/inject";
/// Name of the sidecar container (a regular container, or an init container with native sidecars).
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// istiod's monitoring/debug HTTP port (serves `/debug/syncz` to loopback clients).
pub const ISTIOD_MONITORING_PORT: u16 = 15014;
/// Label selector of istiod pods, to which `,istio.io/rev=<rev>` is appended.
pub const ISTIOD_APP_SELECTOR: &str = "app=istiod";

/// `istio-shared-configmap-<rev>`: the user-owned MeshConfig overlay of one revision.
pub fn shared_configmap_name(revision: &str) -> String {
    format!("istio-shared-configmap-{revision}")
}

/// `istiod-<rev>`: the istiod Deployment, Service and HPA of one revision.
pub fn istiod_name(revision: &str) -> String {
    format!("istiod-{revision}")
}

/// `istio-sidecar-injector-<rev>-aks-istio-system`: the revision's own injector webhook.
pub fn revision_webhook_name(revision: &str) -> String {
    format!("istio-sidecar-injector-{revision}-{ISTIO_NAMESPACE}")
}

/// The per-revision ingress gateway Deployment for a mode (`external` or `internal`).
pub fn ingress_gateway_name(mode: &str, revision: &str) -> String {
    format!(
        "aks-istio-ingressgateway-{}-{revision}",
        mode.to_ascii_lowercase()
    )
}

/// The gateway leader-election Leases AKS leaves behind in `aks-istio-system` when a
/// revision is removed (seen in Azure/ARO-Tools `tools/istio-upgrade/pkg/istio/leases.go`).
pub fn orphaned_lease_names(revision: &str) -> [String; 2] {
    [
        format!("istio-gateway-deployment-{revision}"),
        format!("istio-gateway-status-leader-{revision}"),
    ]
}

/// Label selector of the istiod pods of one revision.
pub fn istiod_selector(revision: &str) -> String {
    format!("{ISTIOD_APP_SELECTOR},{REV_LABEL}={revision}")
}

/// Label selector of the canonical (non-tag) injector webhook of a revision, as istioctl uses.
pub fn canonical_webhook_selector(revision: &str) -> String {
    format!("{REV_LABEL}={revision},!{TAG_LABEL}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_aks_conventions() {
        assert_eq!(
            shared_configmap_name("asm-1-28"),
            "istio-shared-configmap-asm-1-28"
        );
        assert_eq!(istiod_name("asm-1-28"), "istiod-asm-1-28");
        assert_eq!(
            revision_webhook_name("asm-1-27"),
            "istio-sidecar-injector-asm-1-27-aks-istio-system"
        );
        assert_eq!(
            ingress_gateway_name("External", "asm-1-27"),
            "aks-istio-ingressgateway-external-asm-1-27"
        );
        assert_eq!(
            orphaned_lease_names("asm-1-27"),
            [
                "istio-gateway-deployment-asm-1-27".to_string(),
                "istio-gateway-status-leader-asm-1-27".to_string()
            ]
        );
        assert_eq!(
            istiod_selector("asm-1-28"),
            "app=istiod,istio.io/rev=asm-1-28"
        );
        assert_eq!(
            canonical_webhook_selector("asm-1-28"),
            "istio.io/rev=asm-1-28,!istio.io/tag"
        );
    }
}
