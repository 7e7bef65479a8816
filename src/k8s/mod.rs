//! Kubernetes operations the canary steps need, each observing before it acts, built on
//! kube-rs. Pure rules (kubectl's rollout status, the restart patch, the ConfigMap copy
//! decision, which workload owns a pod) are separate functions so they can be tested
//! without a cluster; the async functions wrap them around API calls and watches.
//!
//! ```text
//!   client      kubeconfig bytes / --kubeconfig / env  (+ extra CA)  -> kube::Client
//!   rollout     restart patch (kubectl's), rollout-status rules, wait by watch
//!   configmap   copy istio-shared-configmap-<src> -> -<dst>: plan_copy decides, read/write_copy
//!   pods        namespaces by label, pods with their injecting revision and owner
//!   portforward HTTP/1.1 GET through a pod port-forward (istiod /debug/syncz on 15014)
//!   mesh        proxy status of a revision: every running istiod's syncz, as rows
//!   lease       delete the gateway leader-election Leases AKS leaves behind
//!   limit       response bodies capped: a whole answer, or each event of a watch
//! ```

/// A Kubernetes namespace name (an RFC 1123 label: lowercase letters, digits and `-`, starting
/// and ending with a letter or digit, at most 63 characters). Anything else is refused before
/// it goes into a request's path.
pub fn is_namespace_name(ns: &str) -> bool {
    let b = ns.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

pub mod board;
pub mod client;
pub mod configmap;
pub mod fanout;
pub mod lease;
pub mod limit;
pub mod lock;
pub mod mesh;
pub mod owner;
pub mod patch;
pub mod podbypod;
pub mod pods;
pub mod portforward;
pub mod rollout;
pub mod state;

pub use board::RolloutBoard;
pub use client::{client_from_kubeconfig, client_from_kubeconfig_bytes};
pub use configmap::{CopyOutcome, CopyPlan, plan_copy, read_copy, write_copy};
pub use lease::{LeaseDeletion, delete_leases};
pub use mesh::{istiod_pods, proxy_status};
pub use patch::{DriftedWorkload, PatchDrift, find_patch_drift};
pub use pods::{Owner, PodInfo, is_application_namespace, namespaces_by_label, owner_of};
pub use portforward::{
    HttpResponse, Parsed, http_get_parsed_via_portforward, http_get_via_portforward,
};
pub use rollout::{
    RestartOutcome, RolloutError, RolloutProgress, WorkloadKind, WorkloadRef, daemonset_status,
    deployment_status, restart_patch, restart_stamp, restart_timestamp, rollout_status,
    statefulset_status, wait_rollout,
};

/// What went wrong talking to Kubernetes, with the object it concerned.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("cannot {action} {kind} {target}: {source}{}", tls_hint(.source))]
    Api {
        action: &'static str,
        kind: &'static str,
        /// `namespace/name`, or just `name` for cluster-scoped objects.
        target: String,
        #[source]
        source: kube::Error,
    },
    #[error("kubeconfig: {message}")]
    Kubeconfig { message: String },
    #[error("extra CA file: {message}")]
    ExtraCa { message: String },
    #[error("cannot build the Kubernetes client: {source}{}", tls_hint(.source))]
    Client {
        #[source]
        source: kube::Error,
    },
    #[error("{kind} {target}: {message}")]
    Refused {
        kind: &'static str,
        target: String,
        message: String,
    },
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    #[error("port-forward to pod {target} port {port}: {message}")]
    PortForward {
        target: String,
        port: u16,
        message: String,
    },
}

/// The fixes for a certificate the Kubernetes API server presented.
pub const KUBE_TLS_FIXES: crate::tls::Fixes = crate::tls::Fixes {
    ca: "the kubeconfig's certificate-authority-data does not hold it: fix the kubeconfig, or pass the CA with --ca-file FILE (or ASM_CANARY_CA_FILE)",
    name: "check the server address in the kubeconfig",
};

/// `; <why the TLS handshake failed and what to do>` when `e` is a refused certificate
/// (kube only says "client error (Connect)"), else nothing.
pub(crate) fn tls_hint(e: &kube::Error) -> String {
    crate::tls::problem(e, &KUBE_TLS_FIXES)
        .map(|p| format!("; {p}"))
        .unwrap_or_default()
}

/// Objects per list page: large clusters are read in pages, as kubectl reads them.
pub const LIST_PAGE: u32 = 500;

/// Every object `params` selects, read in pages of [`LIST_PAGE`]; errors name `kind` and
/// `target`.
pub(crate) async fn list_paged<K>(
    api: &kube::Api<K>,
    params: kube::api::ListParams,
    kind: &'static str,
    target: &str,
) -> Result<Vec<K>, K8sError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    list_paged_map(api, params, kind, target, Some).await
}

/// [`list_paged`], each object turned into what the caller keeps (or dropped, `None`) as its
/// page arrives: a list of ten thousand objects never sits in memory whole, only one page
/// and the kept parts.
pub(crate) async fn list_paged_map<K, T>(
    api: &kube::Api<K>,
    mut params: kube::api::ListParams,
    kind: &'static str,
    target: &str,
    mut keep: impl FnMut(K) -> Option<T>,
) -> Result<Vec<T>, K8sError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    params = params.limit(LIST_PAGE);
    let mut out = Vec::new();
    loop {
        let page = api.list(&params).await.map_err(|source| K8sError::Api {
            action: "list",
            kind,
            target: target.to_string(),
            source,
        })?;
        out.extend(page.items.into_iter().filter_map(&mut keep));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

pub(crate) fn target(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}
