//! `asm-canary doctor`: the add-on's traps, checked against the cluster as it is. Changes
//! nothing: GETs and LISTs only (and the port-forwards that read istiod's syncz and, under
//! REGISTRY_ONLY, the proxies' stats), no lock, no owner record. Knows nothing of terminals:
//! it returns the doctor document ([`crate::contract::doctor::DoctorDoc`]), which
//! `cli::doctor` renders.
//!
//! ```text
//!  ARM (cluster, revision profile, upgrade profile) ─┐
//!  Kubernetes (namespaces, pods, webhooks, services, ├─▶ observe::Observed ─▶ CHECKS (pure fns)
//!    configmaps, leases, Istio CRs), istiod syncz, ──┘        ─▶ Vec<CheckResult> ─▶ DoctorDoc
//!    proxy stats (REGISTRY_ONLY only)
//! ```
//!
//! Each check is one small pure function of [`Observed`] returning its findings; a check
//! finding nothing wrong reads as one ✓ line. Add a check by adding a function and a line to
//! [`CHECKS`].

mod control;
mod egress;
mod injection;
pub mod observe;
mod policy;
mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod};

pub use observe::{EgressFacts, ProxyStats};
pub use observe::{IstioKind, IstioObject, Observed, SupportFacts, observe};

use crate::contract::doctor::{CheckResult, DoctorDoc, Finding};
use crate::k8s::WorkloadRef;
use crate::steps::Env;

/// A check: stable id, title, the function, and what it says when all is well.
pub struct Check {
    pub id: &'static str,
    pub title: &'static str,
    pub run: fn(&Observed) -> Vec<Finding>,
    pub all_clear: &'static str,
}

/// Every check, in the order the table shows them.
pub const CHECKS: &[Check] = &[
    Check {
        id: "sidecars",
        title: "Meshed namespaces: every pod has its sidecar",
        run: injection::sidecars,
        all_clear: "every running pod of a meshed namespace has its sidecar",
    },
    Check {
        id: "namespace-labels",
        title: "Namespace labels the add-on honours",
        run: injection::labels,
        all_clear: "no istio-injection=enabled label; every istio.io/rev label names an installed revision or a tag",
    },
    Check {
        id: "tags",
        title: "Revision tags point at installed revisions",
        run: injection::tag_targets,
        all_clear: "every revision tag points at an installed revision",
    },
    Check {
        id: "webhook-endpoints",
        title: "Injector webhooks have a ready istiod",
        run: injection::webhook_endpoints,
        all_clear: "every injector webhook's istiod has ready endpoints",
    },
    Check {
        id: "shared-configmap",
        title: "Shared MeshConfig (istio-shared-configmap-<rev>)",
        run: control::shared_configmap,
        all_clear: "named for the installed revision(s), with only fields the add-on accepts (or none at all)",
    },
    Check {
        id: "proxy-sync",
        title: "Proxies SYNCED with their istiod",
        run: control::proxy_sync,
        all_clear: "every proxy is SYNCED (CDS, LDS, EDS, RDS)",
    },
    Check {
        id: "patch-drift",
        title: "Proxies on their revision's current patch",
        run: control::patch_drift,
        all_clear: "every sidecar runs the proxy image its revision's injector injects now",
    },
    Check {
        id: "policy-namespace",
        title: "Mesh policy in the add-on's root namespace (aks-istio-system)",
        run: policy::root_namespace,
        all_clear: "no PeerAuthentication, AuthorizationPolicy or Sidecar in istio-system",
    },
    Check {
        id: "mtls",
        title: "DestinationRules agree with STRICT mTLS",
        run: policy::mtls_conflicts,
        all_clear: "no DestinationRule disables TLS toward a STRICT namespace",
    },
    Check {
        id: "egress",
        title: "REGISTRY_ONLY egress: a ServiceEntry for every host called",
        run: egress::registry_only,
        all_clear: "outboundTrafficPolicy is ALLOW_ANY (Istio's default): external hosts pass through, nothing is dropped",
    },
    Check {
        id: "ingress-gateways",
        title: "Ingress gateways: external address and ready pods",
        run: policy::ingress_gateways,
        all_clear: "every ingress gateway Service has an address and ready pods",
    },
    Check {
        id: "sidecar-restarts",
        title: "Sidecars not OOMKilled or restarting",
        run: control::sidecar_restarts,
        all_clear: "no sidecar has restarted",
    },
    Check {
        id: "orphaned-leases",
        title: "No orphaned gateway Leases",
        run: control::orphaned_leases,
        all_clear: "no gateway Lease of a removed revision",
    },
    Check {
        id: "support",
        title: "Revision support window and next upgrade",
        run: support::support_window,
        all_clear: "no revision profile to compare with",
    },
];

/// Runs every check on what was observed.
pub fn run_checks(o: &Observed) -> Vec<CheckResult> {
    CHECKS
        .iter()
        .map(|c| CheckResult::new(c.id, c.title, (c.run)(o), c.all_clear))
        .collect()
}

/// Reads the cluster once and checks it: the doctor document.
pub async fn diagnose(env: &Env) -> Result<DoctorDoc, DoctorError> {
    let doc = env
        .arm
        .get_cluster(&env.cluster)
        .await
        .map_err(DoctorError::Arm)?;
    let observed = observe(env, &doc).await.map_err(DoctorError::Kube)?;
    Ok(DoctorDoc::new(
        env.cluster.to_string(),
        observed.installed.clone(),
        run_checks(&observed),
    ))
}

/// Why the doctor could not look at all (a check that cannot read its part says so itself).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("cannot read the cluster from ARM: {0}")]
    Arm(#[source] crate::azure::ArmError),
    #[error("cannot read the cluster's Kubernetes objects: {0}")]
    Kube(#[source] crate::k8s::K8sError),
}

// ----- small helpers shared by the checks

pub(crate) fn ns_labels(ns: &Namespace) -> BTreeMap<String, String> {
    ns.metadata.labels.clone().unwrap_or_default()
}

pub(crate) fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// Running and not being deleted.
pub(crate) fn is_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// The pod's Ready condition is True.
pub(crate) fn is_ready(pod: &Pod) -> bool {
    is_running(pod) && crate::k8s::mesh::pod_ready(pod)
}

/// `kubectl rollout restart deployment/api -n payments`.
pub(crate) fn kubectl_restart(w: &WorkloadRef) -> String {
    format!(
        "kubectl rollout restart {}/{} -n {}",
        w.kind.to_string().to_ascii_lowercase(),
        w.name,
        w.namespace
    )
}
