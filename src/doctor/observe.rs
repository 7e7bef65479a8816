//! The doctor's one read of the cluster: everything the checks look at, read once, with GETs
//! and LISTs only (and port-forwards: the ones `proxy-status` opens to read istiod's syncz,
//! and under `REGISTRY_ONLY` a bounded few to read the proxies' stats).

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams};

use crate::azure::ClusterDoc;
use crate::azure::profiles::MeshRevisionProfile;
use crate::istio::{INGRESS_NAMESPACE, ISTIO_NAMESPACE, ProxyStatus};
use crate::k8s::{K8sError, list_paged};
use crate::steps::Env;
use crate::steps::plan::UpgradeChoice;

/// One proxy's stats, read for the egress check.
#[derive(Debug, Clone)]
pub struct ProxyStats {
    pub namespace: String,
    pub pod: String,
    /// The workload the pod belongs to (its Deployment's name), or the pod's name.
    pub workload: String,
    /// The Prometheus text of `/stats/prometheus`, or why it could not be read.
    pub stats: Result<String, String>,
}

/// What the egress check reads: the installed revisions whose MeshConfig says `REGISTRY_ONLY`,
/// and one proxy's stats per workload running on them.
#[derive(Debug, Clone, Default)]
pub struct EgressFacts {
    pub registry_only: Vec<String>,
    pub proxies: Vec<ProxyStats>,
    /// Workloads on those revisions whose proxies were not read (over the doctor's limit).
    pub unread: usize,
}

/// The installed revisions whose shared MeshConfig sets `outboundTrafficPolicy.mode:
/// REGISTRY_ONLY`.
pub fn registry_only_revisions(o: &Observed) -> Vec<String> {
    o.installed
        .iter()
        .filter(|rev| {
            o.configmaps.iter().any(|cm| {
                cm.metadata.name.as_deref() == Some(&format!("istio-shared-configmap-{rev}"))
                    && cm
                        .data
                        .as_ref()
                        .and_then(|d| d.get("mesh"))
                        .and_then(|m| crate::istio::meshconfig::outbound_traffic_mode(m))
                        .as_deref()
                        == Some("REGISTRY_ONLY")
            })
        })
        .cloned()
        .collect()
}

/// An Istio custom resource the checks read, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IstioKind {
    PeerAuthentication,
    AuthorizationPolicy,
    Sidecar,
    DestinationRule,
    ServiceEntry,
}

impl IstioKind {
    pub const ALL: [IstioKind; 5] = [
        IstioKind::PeerAuthentication,
        IstioKind::AuthorizationPolicy,
        IstioKind::Sidecar,
        IstioKind::DestinationRule,
        IstioKind::ServiceEntry,
    ];

    /// (group, kind, plural) as Istio's CRDs register them (`v1`).
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            IstioKind::PeerAuthentication => (
                "security.istio.io",
                "PeerAuthentication",
                "peerauthentications",
            ),
            IstioKind::AuthorizationPolicy => (
                "security.istio.io",
                "AuthorizationPolicy",
                "authorizationpolicies",
            ),
            IstioKind::Sidecar => ("networking.istio.io", "Sidecar", "sidecars"),
            IstioKind::DestinationRule => {
                ("networking.istio.io", "DestinationRule", "destinationrules")
            }
            IstioKind::ServiceEntry => ("networking.istio.io", "ServiceEntry", "serviceentries"),
        }
    }

    pub fn kind(self) -> &'static str {
        self.names().1
    }

    /// The lower-case name `kubectl` takes (`peerauthentication`).
    pub fn kubectl_name(self) -> String {
        self.kind().to_ascii_lowercase()
    }

    fn api_resource(self) -> ApiResource {
        let (group, kind, plural) = self.names();
        ApiResource {
            group: group.to_string(),
            version: "v1".to_string(),
            api_version: format!("{group}/v1"),
            kind: kind.to_string(),
            plural: plural.to_string(),
        }
    }
}

/// An Istio object: its kind, namespace, name and spec.
#[derive(Debug, Clone)]
pub struct IstioObject {
    pub kind: IstioKind,
    pub namespace: String,
    pub name: String,
    pub spec: serde_json::Value,
}

/// The revision profile part of the support check.
#[derive(Debug, Clone, Default)]
pub struct SupportFacts {
    /// `meshRevisionProfiles/istio` of the cluster's location, or why it could not be read.
    pub profile: Option<Result<MeshRevisionProfile, String>>,
    /// What `plan` would pick for the one installed revision (`None` mid-upgrade).
    pub upgrade: Option<Result<UpgradeChoice, String>>,
}

/// Everything the checks read.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The revisions ARM says are installed.
    pub installed: Vec<String>,
    pub kubernetes_version: Option<String>,
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub webhooks: Vec<MutatingWebhookConfiguration>,
    /// Services of `aks-istio-system` and `aks-istio-ingress`.
    pub services: Vec<Service>,
    /// ConfigMaps of `aks-istio-system`.
    pub configmaps: Vec<ConfigMap>,
    /// Leases of `aks-istio-system`.
    pub leases: Vec<Lease>,
    pub istio: Vec<IstioObject>,
    /// Per installed revision, its proxies' sync status or why it could not be read.
    pub proxies: Vec<(String, Result<Vec<ProxyStatus>, String>)>,
    /// Per installed revision, the proxy image its injector injects now (patch drift).
    pub injected: std::collections::BTreeMap<String, String>,
    pub support: SupportFacts,
    /// Under `REGISTRY_ONLY`, the proxies' stats the egress check reads; `None` when no
    /// installed revision restricts egress (`ALLOW_ANY`).
    pub egress: Option<EgressFacts>,
}

fn all<K>(env: &Env) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    Api::all(env.kube.clone())
}

async fn in_ns<K>(env: &Env, ns: &str, kind: &'static str) -> Result<Vec<K>, K8sError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    <K as kube::Resource>::DynamicType: Default,
{
    list_paged(
        &Api::namespaced(env.kube.clone(), ns),
        ListParams::default(),
        kind,
        ns,
    )
    .await
}

/// Reads the cluster: ARM's view first, then the Kubernetes objects, then istiod's syncz.
pub async fn observe(env: &Env, doc: &ClusterDoc) -> Result<Observed, K8sError> {
    let mut o = Observed {
        installed: doc.revisions(),
        kubernetes_version: doc.kubernetes_version().map(str::to_string),
        ..Default::default()
    };
    o.namespaces = list_paged(
        &all::<Namespace>(env),
        ListParams::default(),
        "Namespace",
        "*",
    )
    .await?;
    o.pods = list_paged(
        &Api::<Pod>::all(env.kube.clone()),
        ListParams::default(),
        "Pod",
        "*",
    )
    .await?;
    o.webhooks = list_paged(
        &all::<MutatingWebhookConfiguration>(env),
        ListParams::default(),
        "MutatingWebhookConfiguration",
        "*",
    )
    .await?;
    for ns in [ISTIO_NAMESPACE, INGRESS_NAMESPACE] {
        o.services
            .extend(in_ns::<Service>(env, ns, "Service").await?);
    }
    o.configmaps = in_ns(env, ISTIO_NAMESPACE, "ConfigMap").await?;
    o.leases = in_ns(env, ISTIO_NAMESPACE, "Lease").await?;
    for kind in IstioKind::ALL {
        o.istio.extend(istio_objects(env, kind).await?);
    }
    for rev in &o.installed {
        // An unhealthy istiod may accept the port-forward and never answer: bounded.
        let rows = crate::k8s::mesh::proxy_status_within(
            &env.kube,
            rev,
            None,
            crate::k8s::mesh::SYNCZ_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string());
        o.proxies.push((rev.clone(), rows));
    }
    o.injected = crate::k8s::patch::injected_images(&env.kube, &o.installed).await?;
    o.egress = egress(env, &o).await;
    o.support = support(env, doc).await;
    Ok(o)
}

/// How long one proxy's stats may take to answer.
const STATS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Proxies whose stats are read at once.
const STATS_CONCURRENCY: usize = 8;
/// Workloads whose proxy stats one run reads at most (one pod each): with the two bounds
/// above, a 2,000-workload cluster costs at most 25 rounds of 5 s, not 2,000 port-forwards.
const STATS_MAX_WORKLOADS: usize = 200;
/// Envoy's Prometheus endpoint in every sidecar.
const PROXY_STATS_PORT: u16 = 15090;

/// Under `REGISTRY_ONLY`, one ready pod's proxy stats per application workload on those
/// revisions, read through port-forwards, a few at a time, each bounded in time.
async fn egress(env: &Env, o: &Observed) -> Option<EgressFacts> {
    use futures::StreamExt;
    let registry_only = registry_only_revisions(o);
    if registry_only.is_empty() {
        return None;
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut targets = Vec::new();
    for pod in o.pods.iter().filter(|p| super::is_ready(p)) {
        let info = crate::k8s::PodInfo::from_pod(pod);
        let on_locked = info
            .revision
            .revision()
            .is_some_and(|r| registry_only.iter().any(|l| l == r));
        if !on_locked || !crate::k8s::is_application_namespace(&info.namespace) {
            continue;
        }
        let workload = match &info.owner {
            crate::k8s::Owner::Workload(w) => w.name.clone(),
            _ => info.name.clone(),
        };
        if seen.insert((info.namespace.clone(), workload.clone())) {
            targets.push((info.namespace, info.name, workload));
        }
    }
    let unread = targets.len().saturating_sub(STATS_MAX_WORKLOADS);
    targets.truncate(STATS_MAX_WORKLOADS);
    let mut proxies: Vec<ProxyStats> = futures::stream::iter(targets)
        .map(|(namespace, pod, workload)| async move {
            let read = crate::k8s::http_get_via_portforward(
                &env.kube,
                &namespace,
                &pod,
                PROXY_STATS_PORT,
                "/stats/prometheus",
            );
            let stats = match tokio::time::timeout(STATS_TIMEOUT, read).await {
                Ok(Ok(r)) if r.status == 200 => Ok(String::from_utf8_lossy(&r.body).into_owned()),
                Ok(Ok(r)) => Err(format!("HTTP {} from /stats/prometheus", r.status)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {}s", STATS_TIMEOUT.as_secs())),
            };
            ProxyStats {
                namespace,
                pod,
                workload,
                stats,
            }
        })
        .buffer_unordered(STATS_CONCURRENCY)
        .collect()
        .await;
    proxies.sort_by(|a, b| (&a.namespace, &a.workload).cmp(&(&b.namespace, &b.workload)));
    Some(EgressFacts {
        registry_only,
        proxies,
        unread,
    })
}

/// Every object of an Istio kind; none when the cluster does not serve the kind (no CRD).
async fn istio_objects(env: &Env, kind: IstioKind) -> Result<Vec<IstioObject>, K8sError> {
    let api: Api<DynamicObject> = Api::all_with(env.kube.clone(), &kind.api_resource());
    let listed = match list_paged(&api, ListParams::default(), kind.kind(), "*").await {
        Ok(l) => l,
        Err(K8sError::Api {
            source: kube::Error::Api(e),
            ..
        }) if e.code == 404 => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(listed
        .into_iter()
        .map(|o| IstioObject {
            kind,
            namespace: o.metadata.namespace.clone().unwrap_or_default(),
            name: o.metadata.name.clone().unwrap_or_default(),
            spec: o.data.get("spec").cloned().unwrap_or_default(),
        })
        .collect())
}

/// The revision profile of the cluster's location, and the upgrade `plan` would pick.
async fn support(env: &Env, doc: &ClusterDoc) -> SupportFacts {
    let location = doc.location().unwrap_or_default().to_string();
    let profile = env
        .arm
        .mesh_revision_profile(&env.cluster.subscription, &location)
        .await
        .map_err(|e| e.to_string());
    let installed = doc.revisions();
    let upgrade = match installed.as_slice() {
        [only] => Some(
            crate::steps::plan::choose_upgrade(env, only, None)
                .await
                .map_err(|e| e.to_string()),
        ),
        _ => None,
    };
    SupportFacts {
        profile: Some(profile),
        upgrade,
    }
}
