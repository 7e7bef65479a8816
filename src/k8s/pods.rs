//! Namespaces by label, and the pods of a namespace with their injecting revision and the
//! workload that owns them (which a restart can move) or the lack of one (which it cannot).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Client;
use kube::api::{Api, ListParams};
use serde::{Deserialize, Serialize};

pub use super::fanout::NAMESPACE_FANOUT;
use super::fanout::most_of_the_cluster;
use super::rollout::{WorkloadKind, WorkloadRef};
use super::{K8sError, target};
use crate::istio::{PodRevision, pod_revision};

/// A namespace of the cluster's own applications: not the add-on's (`aks-istio-*`) nor
/// Kubernetes' (`kube-*`), which patch restarts, onboarding and the doctor's workload checks
/// never look at.
pub fn is_application_namespace(namespace: &str) -> bool {
    !namespace.starts_with("aks-istio-") && !namespace.starts_with("kube-")
}

/// Who controls a pod, resolved to the object a restart would act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name")]
pub enum Owner {
    /// Restartable: Deployment (via its ReplicaSet), StatefulSet or DaemonSet.
    Workload(WorkloadRef),
    /// A ReplicaSet not owned by a Deployment (the pod-template-hash did not match).
    ReplicaSet(String),
    /// A Job's pod: a restart does not move it.
    Job(String),
    /// Any other controller kind.
    Other { kind: String, name: String },
    /// A bare pod: nothing recreates it.
    None,
}

/// Resolves the controller of a pod. A ReplicaSet `<deploy>-<hash>` whose hash is the pod's
/// `pod-template-hash` label is taken as owned by Deployment `<deploy>` (the Deployment
/// controller names ReplicaSets that way), saving a read per pod.
pub fn owner_of(pod: &Pod) -> Owner {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let Some(controller) = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    else {
        return Owner::None;
    };
    let name = controller.name.clone();
    match controller.kind.as_str() {
        "ReplicaSet" => {
            let hash = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash"));
            match hash.and_then(|h| name.strip_suffix(&format!("-{h}"))) {
                Some(deploy) if !deploy.is_empty() => Owner::Workload(WorkloadRef::new(
                    WorkloadKind::Deployment,
                    namespace,
                    deploy,
                )),
                _ => Owner::ReplicaSet(name),
            }
        }
        "StatefulSet" => {
            Owner::Workload(WorkloadRef::new(WorkloadKind::StatefulSet, namespace, name))
        }
        "DaemonSet" => Owner::Workload(WorkloadRef::new(WorkloadKind::DaemonSet, namespace, name)),
        "Job" => Owner::Job(name),
        other => Owner::Other {
            kind: other.to_string(),
            name,
        },
    }
}

/// A pod as the canary steps see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub phase: Option<String>,
    /// `Ready` condition is True.
    pub ready: bool,
    /// Being deleted (`deletionTimestamp` set).
    pub terminating: bool,
    pub revision: PodRevision,
    pub owner: Owner,
    /// The pod asks for no sidecar (`sidecar.istio.io/inject: "false"` as a label or an
    /// annotation) or runs on the host network, which the injector skips: a pod without a
    /// sidecar in a meshed namespace is then expected, not a pod to restart.
    pub opted_out: bool,
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> Self {
        let status = pod.status.as_ref();
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone(),
            phase: status.and_then(|s| s.phase.clone()),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            revision: pod_revision(pod),
            owner: owner_of(pod),
            opted_out: opted_out(pod),
        }
    }
}

/// Whether the injector leaves `pod` alone whatever its namespace's label says.
fn opted_out(pod: &Pod) -> bool {
    let says_false = |m: Option<&BTreeMap<String, String>>| {
        m.and_then(|m| m.get(crate::istio::INJECT_LABEL))
            .is_some_and(|v| v.eq_ignore_ascii_case("false"))
    };
    says_false(pod.metadata.labels.as_ref())
        || says_false(pod.metadata.annotations.as_ref())
        || pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
}

pub use super::LIST_PAGE;

/// A Pod with only the fields the canary steps read (names, uid, labels, annotations, owners,
/// deletion, the containers' and init containers' names and images, phase and conditions).
/// Listing ten thousand pods this way skips the bulk of their JSON (env, volumes, probes,
/// managedFields) instead of building it; [`PodView::into_pod`] gives the Pod the rest of
/// the code reads.
#[derive(Clone, Debug, Deserialize)]
pub struct PodView {
    #[serde(deserialize_with = "meta_view")]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<SpecView>,
    #[serde(default)]
    status: Option<StatusView>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaView {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    deletion_timestamp: Option<Time>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<OwnerReference>>,
}

fn meta_view<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = MetaView::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        deletion_timestamp: m.deletion_timestamp,
        labels: m.labels,
        annotations: m.annotations,
        owner_references: m.owner_references,
        ..Default::default()
    })
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecView {
    #[serde(default)]
    containers: Vec<ContainerView>,
    init_containers: Option<Vec<ContainerView>>,
    host_network: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerView {
    name: String,
    image: Option<String>,
    restart_policy: Option<String>,
}

impl From<ContainerView> for Container {
    fn from(c: ContainerView) -> Self {
        Container {
            name: c.name,
            image: c.image,
            restart_policy: c.restart_policy,
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
struct StatusView {
    phase: Option<String>,
    conditions: Option<Vec<ConditionView>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct ConditionView {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

impl k8s_openapi::Resource for PodView {
    const API_VERSION: &'static str = <Pod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Pod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Pod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Pod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for PodView {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl PodView {
    /// The Pod, with only the fields read here set.
    pub fn into_pod(self) -> Pod {
        Pod {
            metadata: self.metadata,
            spec: self.spec.map(|s| PodSpec {
                containers: s.containers.into_iter().map(Container::from).collect(),
                init_containers: s
                    .init_containers
                    .map(|v| v.into_iter().map(Container::from).collect()),
                host_network: s.host_network,
                ..Default::default()
            }),
            status: self.status.map(|s| PodStatus {
                phase: s.phase,
                conditions: s.conditions.map(|v| {
                    v.into_iter()
                        .map(|c| PodCondition {
                            type_: c.type_,
                            status: c.status,
                            ..Default::default()
                        })
                        .collect()
                }),
                ..Default::default()
            }),
        }
    }
}

/// Pods of one namespace (`None`: every namespace), read in pages of [`LIST_PAGE`] as
/// [`PodView`]s, each page turned into [`PodInfo`]s as it arrives (ten thousand pods never
/// sit in memory as Pods).
pub async fn list_pods(
    client: &Client,
    namespace: Option<&str>,
    label_selector: Option<&str>,
) -> Result<Vec<PodInfo>, K8sError> {
    let api: Api<PodView> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut params = ListParams::default();
    if let Some(sel) = label_selector {
        params = params.labels(sel);
    }
    let what = target(namespace.unwrap_or("*"), label_selector.unwrap_or("*"));
    super::list_paged_map(&api, params, "Pod", &what, |v| {
        Some(PodInfo::from_pod(&v.into_pod()))
    })
    .await
}

/// The pods of each namespace; results in the namespaces' order. Namespaces are read one list
/// each, [`NAMESPACE_FANOUT`] at once, unless they are more than that and at least half of the
/// cluster's: then as one paged list of every pod (fewer requests, about the same bytes). A
/// wave's gate reads its own namespaces, not the whole cluster's pods on every poll.
pub async fn pods_of_namespaces(
    client: &Client,
    namespaces: Vec<String>,
) -> Result<Vec<(String, Vec<PodInfo>)>, K8sError> {
    use futures::{StreamExt, TryStreamExt, stream};
    if namespaces.len() > NAMESPACE_FANOUT && most_of_the_cluster(client, namespaces.len()).await {
        let all = list_pods(client, None, None).await?;
        let mut by_ns: std::collections::HashMap<String, Vec<PodInfo>> = namespaces
            .iter()
            .map(|ns| (ns.clone(), Vec::new()))
            .collect();
        for p in all {
            if let Some(list) = by_ns.get_mut(&p.namespace) {
                list.push(p);
            }
        }
        return Ok(namespaces
            .into_iter()
            .map(|ns| {
                let pods = by_ns.remove(&ns).unwrap_or_default();
                (ns, pods)
            })
            .collect());
    }
    let reads: Vec<_> = namespaces
        .into_iter()
        .map(|ns| async move {
            let pods = list_pods(client, Some(&ns), None).await?;
            Ok::<_, K8sError>((ns, pods))
        })
        .collect();
    stream::iter(reads)
        .buffered(NAMESPACE_FANOUT)
        .try_collect()
        .await
}

/// Whether the namespace `name` exists.
pub async fn namespace_exists(client: &Client, name: &str) -> Result<bool, K8sError> {
    Api::<Namespace>::all(client.clone())
        .get_opt(name)
        .await
        .map(|n| n.is_some())
        .map_err(|source| K8sError::Api {
            action: "get",
            kind: "Namespace",
            target: name.to_string(),
            source,
        })
}

/// Namespaces matching a label selector (e.g. `istio.io/rev=prod`), sorted by name.
pub async fn namespaces_by_label(
    client: &Client,
    label_selector: &str,
) -> Result<Vec<Namespace>, K8sError> {
    let list = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(label_selector))
        .await
        .map_err(|source| K8sError::Api {
            action: "list",
            kind: "Namespace",
            target: label_selector.to_string(),
            source,
        })?;
    let mut items = list.items;
    items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn mk_owned(kind: &str, name: &str, hash: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("shop".into()),
                labels: hash.map(|h| [("pod-template-hash".to_string(), h.to_string())].into()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: kind.into(),
                    name: name.into(),
                    uid: "u".into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn replicaset_resolves_to_its_deployment() {
        assert_eq!(
            owner_of(&mk_owned(
                "ReplicaSet",
                "web-api-7c5ddbdf54",
                Some("7c5ddbdf54")
            )),
            Owner::Workload(WorkloadRef::new(
                WorkloadKind::Deployment,
                "shop",
                "web-api"
            ))
        );
        assert_eq!(
            owner_of(&mk_owned("ReplicaSet", "standalone", None)),
            Owner::ReplicaSet("standalone".into())
        );
    }

    #[test]
    fn other_owners() {
        assert_eq!(
            owner_of(&mk_owned("StatefulSet", "db", None)),
            Owner::Workload(WorkloadRef::new(WorkloadKind::StatefulSet, "shop", "db"))
        );
        assert_eq!(
            owner_of(&mk_owned("DaemonSet", "agent", None)),
            Owner::Workload(WorkloadRef::new(WorkloadKind::DaemonSet, "shop", "agent"))
        );
        assert_eq!(
            owner_of(&mk_owned("Job", "migrate-1", None)),
            Owner::Job("migrate-1".into())
        );
        assert_eq!(
            owner_of(&mk_owned("Rollout", "r", None)),
            Owner::Other {
                kind: "Rollout".into(),
                name: "r".into()
            }
        );
        let mut bare = mk_owned("ReplicaSet", "x", None);
        bare.metadata.owner_references = None;
        assert_eq!(owner_of(&bare), Owner::None);
    }

    #[test]
    fn pod_info_reads_readiness_and_revision() {
        use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
        let mut pod = mk_owned("StatefulSet", "db", None);
        pod.metadata.annotations = Some(
            [(
                "sidecar.istio.io/status".to_string(),
                r#"{"revision":"asm-1-28"}"#.to_string(),
            )]
            .into(),
        );
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let info = PodInfo::from_pod(&pod);
        assert!(info.ready);
        assert!(!info.terminating);
        assert_eq!(info.revision.revision(), Some("asm-1-28"));
        assert_eq!(info.phase.as_deref(), Some("Running"));
    }
}
