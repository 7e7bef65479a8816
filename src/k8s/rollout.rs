//! `kubectl rollout restart` and `kubectl rollout status`, reimplemented.
//!
//! Restart is kubectl's: a strategic merge patch setting
//! `spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]` to the local time
//! in RFC 3339 with seconds (kube-rs's `Api::restart` writes another annotation with a merge
//! patch, and is not used). Paused Deployments are refused like kubectl refuses them.
//!
//! Status follows kubectl's `pkg/polymorphichelpers/rollout_status.go` rule for rule, with its
//! messages (without the trailing newline). The wait watches the one object
//! (`metadata.name=<name>`) and re-evaluates on every event, bounded by a timeout.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{K8sError, target};

/// The annotation kubectl's restart writes on the pod template.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";
/// Field manager recorded for the restart patch.
pub const FIELD_MANAGER: &str = "asm-canary";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        })
    }
}

/// A restartable workload.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl WorkloadRef {
    pub fn new(kind: WorkloadKind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// kubectl's verdict on a rollout that has not failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RolloutProgress {
    pub done: bool,
    pub message: String,
}

impl RolloutProgress {
    fn waiting(message: String) -> Self {
        Self {
            done: false,
            message,
        }
    }
    fn done(message: String) -> Self {
        Self {
            done: true,
            message,
        }
    }
}

/// A rollout that kubectl would report as an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error("deployment {name:?} exceeded its progress deadline")]
    ProgressDeadlineExceeded { name: String },
    #[error(
        "{kind} {namespace}/{name}: rollout status is only available for RollingUpdate strategy type"
    )]
    NotRollingUpdate {
        kind: WorkloadKind,
        namespace: String,
        name: String,
    },
    #[error("{workload} was deleted while waiting for its rollout")]
    Deleted { workload: String },
    #[error("{workload} does not exist")]
    NotFound { workload: String },
    #[error("{workload}: rollout not finished after {waited:?}; last status: {last}")]
    TimedOut {
        workload: String,
        waited: Duration,
        last: String,
    },
}

fn name_of<K: Resource>(obj: &K) -> String {
    obj.meta().name.clone().unwrap_or_default()
}

fn ns_of<K: Resource>(obj: &K) -> String {
    obj.meta().namespace.clone().unwrap_or_default()
}

/// kubectl's Deployment rule.
pub fn deployment_status(d: &Deployment) -> Result<RolloutProgress, RolloutError> {
    let name = name_of(d);
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0);
    if generation <= observed {
        let deadline = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Progressing")
            .is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
        if deadline {
            return Err(RolloutError::ProgressDeadlineExceeded { name });
        }
        let updated = status.updated_replicas.unwrap_or(0);
        let replicas = status.replicas.unwrap_or(0);
        let available = status.available_replicas.unwrap_or(0);
        if let Some(want) = d.spec.as_ref().and_then(|s| s.replicas)
            && updated < want
        {
            return Ok(RolloutProgress::waiting(format!(
                "Waiting for deployment {name:?} rollout to finish: {updated} out of {want} new replicas have been updated..."
            )));
        }
        if replicas > updated {
            return Ok(RolloutProgress::waiting(format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                replicas - updated
            )));
        }
        if available < updated {
            return Ok(RolloutProgress::waiting(format!(
                "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
            )));
        }
        return Ok(RolloutProgress::done(format!(
            "deployment {name:?} successfully rolled out"
        )));
    }
    Ok(RolloutProgress::waiting(
        "Waiting for deployment spec update to be observed...".to_string(),
    ))
}

/// kubectl's DaemonSet rule.
pub fn daemonset_status(ds: &DaemonSet) -> Result<RolloutProgress, RolloutError> {
    let name = name_of(ds);
    let strategy = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        // The API server defaults an empty strategy to RollingUpdate.
        .unwrap_or("RollingUpdate");
    if strategy != "RollingUpdate" {
        return Err(RolloutError::NotRollingUpdate {
            kind: WorkloadKind::DaemonSet,
            namespace: ns_of(ds),
            name,
        });
    }
    let status = ds.status.clone().unwrap_or_default();
    if ds.metadata.generation.unwrap_or(0) <= status.observed_generation.unwrap_or(0) {
        let desired = status.desired_number_scheduled;
        let updated = status.updated_number_scheduled.unwrap_or(0);
        let available = status.number_available.unwrap_or(0);
        if updated < desired {
            return Ok(RolloutProgress::waiting(format!(
                "Waiting for daemon set {name:?} rollout to finish: {updated} out of {desired} new pods have been updated..."
            )));
        }
        if available < desired {
            return Ok(RolloutProgress::waiting(format!(
                "Waiting for daemon set {name:?} rollout to finish: {available} of {desired} updated pods are available..."
            )));
        }
        return Ok(RolloutProgress::done(format!(
            "daemon set {name:?} successfully rolled out"
        )));
    }
    Ok(RolloutProgress::waiting(
        "Waiting for daemon set spec update to be observed...".to_string(),
    ))
}

/// kubectl's StatefulSet rule (note: with `rollingUpdate` set, the usual defaulted case,
/// revisions are not compared; only `updatedReplicas >= replicas - partition`).
pub fn statefulset_status(sts: &StatefulSet) -> Result<RolloutProgress, RolloutError> {
    let spec = sts.spec.clone().unwrap_or_default();
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref().unwrap_or("RollingUpdate") != "RollingUpdate" {
        return Err(RolloutError::NotRollingUpdate {
            kind: WorkloadKind::StatefulSet,
            namespace: ns_of(sts),
            name: name_of(sts),
        });
    }
    let status = sts.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0);
    if observed == 0 || sts.metadata.generation.unwrap_or(0) > observed {
        return Ok(RolloutProgress::waiting(
            "Waiting for statefulset spec update to be observed...".to_string(),
        ));
    }
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    if let Some(want) = spec.replicas
        && ready < want
    {
        return Ok(RolloutProgress::waiting(format!(
            "Waiting for {} pods to be ready...",
            want - ready
        )));
    }
    if let Some(rolling) = strategy.rolling_update {
        if let (Some(want), Some(partition)) = (spec.replicas, rolling.partition)
            && updated < want - partition
        {
            return Ok(RolloutProgress::waiting(format!(
                "Waiting for partitioned roll out to finish: {updated} out of {} new pods have been updated...",
                want - partition
            )));
        }
        return Ok(RolloutProgress::done(format!(
            "partitioned roll out complete: {updated} new pods have been updated..."
        )));
    }
    let update_rev = status.update_revision.unwrap_or_default();
    let current_rev = status.current_revision.unwrap_or_default();
    if update_rev != current_rev {
        return Ok(RolloutProgress::waiting(format!(
            "waiting for statefulset rolling update to complete {updated} pods at revision {update_rev}..."
        )));
    }
    Ok(RolloutProgress::done(format!(
        "statefulset rolling update complete {} pods at revision {current_rev}...",
        status.current_replicas.unwrap_or(0)
    )))
}

/// A fetched workload of any of the three kinds.
#[derive(Clone, Debug)]
pub enum Workload {
    Deployment(Box<Deployment>),
    StatefulSet(Box<StatefulSet>),
    DaemonSet(Box<DaemonSet>),
}

impl Workload {
    pub fn kind(&self) -> WorkloadKind {
        match self {
            Workload::Deployment(_) => WorkloadKind::Deployment,
            Workload::StatefulSet(_) => WorkloadKind::StatefulSet,
            Workload::DaemonSet(_) => WorkloadKind::DaemonSet,
        }
    }

    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Workload::Deployment(d) => &d.metadata,
            Workload::StatefulSet(s) => &s.metadata,
            Workload::DaemonSet(d) => &d.metadata,
        }
    }

    fn template_annotations(&self) -> Option<&std::collections::BTreeMap<String, String>> {
        let template = match self {
            Workload::Deployment(d) => d.spec.as_ref().map(|s| &s.template),
            Workload::StatefulSet(s) => s.spec.as_ref().map(|s| &s.template),
            Workload::DaemonSet(d) => d.spec.as_ref().map(|s| &s.template),
        }?;
        template.metadata.as_ref()?.annotations.as_ref()
    }

    pub fn uid(&self) -> Option<&str> {
        self.meta().uid.as_deref()
    }

    /// Its kind, namespace and name.
    pub fn reference(&self) -> WorkloadRef {
        let meta = self.meta();
        WorkloadRef::new(
            self.kind(),
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }

    pub fn generation(&self) -> Option<i64> {
        self.meta().generation
    }

    /// The pod template's `kubectl.kubernetes.io/restartedAt`, if any.
    pub fn restarted_at(&self) -> Option<&str> {
        self.template_annotations()?
            .get(RESTARTED_AT_ANNOTATION)
            .map(String::as_str)
    }

    /// A paused Deployment (kubectl refuses to restart it).
    pub fn is_paused(&self) -> bool {
        matches!(self, Workload::Deployment(d) if d.spec.as_ref().and_then(|s| s.paused) == Some(true))
    }

    /// `OnDelete` StatefulSets and DaemonSets accept the restart patch but replace no pods.
    pub fn replaces_pods_on_restart(&self) -> bool {
        let strategy = match self {
            Workload::Deployment(_) => return true,
            Workload::StatefulSet(s) => s
                .spec
                .as_ref()
                .and_then(|s| s.update_strategy.as_ref())
                .and_then(|u| u.type_.clone()),
            Workload::DaemonSet(d) => d
                .spec
                .as_ref()
                .and_then(|s| s.update_strategy.as_ref())
                .and_then(|u| u.type_.clone()),
        };
        strategy.as_deref() != Some("OnDelete")
    }

    /// kubectl's rollout-status rule for this kind.
    pub fn rollout_status(&self) -> Result<RolloutProgress, RolloutError> {
        match self {
            Workload::Deployment(d) => deployment_status(d),
            Workload::StatefulSet(s) => statefulset_status(s),
            Workload::DaemonSet(d) => daemonset_status(d),
        }
    }
}

/// kubectl's rollout-status rule for a fetched workload.
pub fn rollout_status(workload: &Workload) -> Result<RolloutProgress, RolloutError> {
    workload.rollout_status()
}

/// `time.Now().Format(time.RFC3339)` as Go writes it: seconds, `Z` for UTC, else `±hh:mm`.
pub fn restart_timestamp(now: DateTime<FixedOffset>) -> String {
    if now.offset().local_minus_utc() == 0 {
        now.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        now.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The strategic merge patch `kubectl rollout restart` sends.
pub fn restart_patch(restarted_at: &str) -> serde_json::Value {
    serde_json::json!({
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: restarted_at}}}}
    })
}

/// What a restart did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestartOutcome {
    pub workload: WorkloadRef,
    pub uid: Option<String>,
    /// `metadata.generation` returned by the patch; the rollout is observed once
    /// `status.observedGeneration` reaches it.
    pub generation: Option<i64>,
    pub restarted_at: String,
    /// False for `OnDelete` StatefulSets/DaemonSets: the patch lands, no pod is replaced.
    pub replaces_pods: bool,
}

async fn get_typed<K>(client: &Client, w: &WorkloadRef) -> Result<K, K8sError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), &w.namespace)
        .get(&w.name)
        .await
        .map_err(|source| K8sError::Api {
            action: "read",
            kind: kind_str(w.kind),
            target: target(&w.namespace, &w.name),
            source,
        })
}

fn kind_str(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
        WorkloadKind::DaemonSet => "DaemonSet",
    }
}

/// Reads a workload.
pub async fn get_workload(client: &Client, w: &WorkloadRef) -> Result<Workload, K8sError> {
    Ok(match w.kind {
        WorkloadKind::Deployment => Workload::Deployment(Box::new(get_typed(client, w).await?)),
        WorkloadKind::StatefulSet => Workload::StatefulSet(Box::new(get_typed(client, w).await?)),
        WorkloadKind::DaemonSet => Workload::DaemonSet(Box::new(get_typed(client, w).await?)),
    })
}

async fn list_typed<K>(
    client: &Client,
    kind: WorkloadKind,
    namespace: Option<&str>,
    wrap: fn(K) -> Workload,
    wanted: &(dyn Fn(&WorkloadRef) -> bool + Sync),
) -> Result<Vec<Workload>, K8sError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + fmt::Debug,
{
    let api = match namespace {
        Some(ns) => Api::<K>::namespaced(client.clone(), ns),
        None => Api::<K>::all(client.clone()),
    };
    let what = namespace.unwrap_or("*");
    super::list_paged_map(&api, Default::default(), kind_str(kind), what, |k| {
        let w = wrap(k);
        wanted(&w.reference()).then_some(w)
    })
    .await
}

/// Every workload of a kind in the cluster, read in pages: cheaper than one read each when a
/// step looks at many.
pub async fn list_workloads(
    client: &Client,
    kind: WorkloadKind,
) -> Result<Vec<Workload>, K8sError> {
    list_workloads_where(client, kind, None, &|_| true).await
}

/// [`list_workloads`] (of `namespace` only, when given), keeping only those `wanted` accepts
/// as each page arrives.
pub async fn list_workloads_where(
    client: &Client,
    kind: WorkloadKind,
    namespace: Option<&str>,
    wanted: &(dyn Fn(&WorkloadRef) -> bool + Sync),
) -> Result<Vec<Workload>, K8sError> {
    match kind {
        WorkloadKind::Deployment => {
            list_typed(
                client,
                kind,
                namespace,
                |d| Workload::Deployment(Box::new(d)),
                wanted,
            )
            .await
        }
        WorkloadKind::StatefulSet => {
            list_typed(
                client,
                kind,
                namespace,
                |s| Workload::StatefulSet(Box::new(s)),
                wanted,
            )
            .await
        }
        WorkloadKind::DaemonSet => {
            list_typed(
                client,
                kind,
                namespace,
                |d| Workload::DaemonSet(Box::new(d)),
                wanted,
            )
            .await
        }
    }
}

/// The workloads of `todo` as they are now, read the cheapest way: one read each for a few;
/// for many, one list per kind of their namespaces ([`super::fanout::NAMESPACE_FANOUT`] at
/// once), or of the whole cluster when they span most of its namespaces. A workload that no
/// longer exists is absent from the answer.
pub async fn read_workloads(
    client: &Client,
    todo: &[WorkloadRef],
) -> Result<HashMap<WorkloadRef, Workload>, K8sError> {
    use super::fanout::{NAMESPACE_FANOUT, most_of_the_cluster};
    use futures::{StreamExt, TryStreamExt, stream};
    if todo.len() <= NAMESPACE_FANOUT {
        let reads: Vec<_> = todo
            .iter()
            .map(|w| async move {
                match get_workload(client, w).await {
                    Ok(current) => Ok(Some((w.clone(), current))),
                    Err(K8sError::Api {
                        source: kube::Error::Api(s),
                        ..
                    }) if s.code == 404 => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .collect();
        let read: Vec<Option<(WorkloadRef, Workload)>> = stream::iter(reads)
            .buffered(NAMESPACE_FANOUT)
            .try_collect()
            .await?;
        return Ok(read.into_iter().flatten().collect());
    }
    let namespaces: BTreeSet<&str> = todo.iter().map(|w| w.namespace.as_str()).collect();
    let whole =
        namespaces.len() > NAMESPACE_FANOUT && most_of_the_cluster(client, namespaces.len()).await;
    let lists: BTreeSet<(WorkloadKind, Option<&str>)> = todo
        .iter()
        .map(|w| (w.kind, (!whole).then_some(w.namespace.as_str())))
        .collect();
    let wanted: HashSet<&WorkloadRef> = todo.iter().collect();
    let wanted = &|w: &WorkloadRef| wanted.contains(w);
    let reads: Vec<_> = lists
        .into_iter()
        .map(|(kind, ns)| list_workloads_where(client, kind, ns, wanted))
        .collect();
    let listed: Vec<Vec<Workload>> = stream::iter(reads)
        .buffered(NAMESPACE_FANOUT)
        .try_collect()
        .await?;
    Ok(listed
        .into_iter()
        .flatten()
        .map(|w| (w.reference(), w))
        .collect())
}

async fn patch_typed<K>(
    client: &Client,
    w: &WorkloadRef,
    patch: &serde_json::Value,
) -> Result<K, K8sError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + fmt::Debug,
{
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    Api::<K>::namespaced(client.clone(), &w.namespace)
        .patch(&w.name, &params, &Patch::Strategic(patch))
        .await
        .map_err(|source| K8sError::Api {
            action: "restart",
            kind: kind_str(w.kind),
            target: target(&w.namespace, &w.name),
            source,
        })
}

/// The `restartedAt` stamp a restart of `current` at `now` writes (kubectl's format), or
/// `None` for a paused Deployment, which a restart cannot move (kubectl refuses it too).
/// When `current` already carries this second's stamp the patch would change nothing, so
/// the next second's is used (where kubectl refuses and asks to wait).
pub fn restart_stamp(current: &Workload, now: DateTime<FixedOffset>) -> Option<String> {
    if current.is_paused() {
        return None;
    }
    let stamp = restart_timestamp(now);
    Some(if current.restarted_at() == Some(stamp.as_str()) {
        restart_timestamp(now + chrono::Duration::seconds(1))
    } else {
        stamp
    })
}

/// The restart patch, with the timestamp the caller chose by [`restart_stamp`] (and
/// journaled) after reading the workload.
pub async fn patch_restart(
    client: &Client,
    w: &WorkloadRef,
    stamp: &str,
) -> Result<RestartOutcome, K8sError> {
    let patch = restart_patch(stamp);
    let patched = match w.kind {
        WorkloadKind::Deployment => {
            Workload::Deployment(Box::new(patch_typed(client, w, &patch).await?))
        }
        WorkloadKind::StatefulSet => {
            Workload::StatefulSet(Box::new(patch_typed(client, w, &patch).await?))
        }
        WorkloadKind::DaemonSet => {
            Workload::DaemonSet(Box::new(patch_typed(client, w, &patch).await?))
        }
    };
    tracing::info!(workload = %w, restarted_at = %stamp, "restarted");
    Ok(RestartOutcome {
        workload: w.clone(),
        uid: patched.uid().map(str::to_string),
        generation: patched.generation(),
        restarted_at: stamp.to_string(),
        replaces_pods: patched.replaces_pods_on_restart(),
    })
}

async fn wait_typed<K>(
    client: &Client,
    w: &WorkloadRef,
    min_generation: Option<i64>,
    timeout: Duration,
    wrap: fn(K) -> Workload,
    on_progress: &mut (dyn FnMut(&RolloutProgress) + Send),
) -> Result<RolloutProgress, K8sError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + fmt::Debug
        + Send
        + 'static,
{
    let api = Api::<K>::namespaced(client.clone(), &w.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", w.name));
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut last = String::from("no status observed yet");
    let mut last_watch_error: Option<String> = None;
    let workload_name = w.to_string();
    let fut = async {
        let mut listed = false;
        while let Some(event) = stream.next().await {
            let obj = match event {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => o,
                Ok(watcher::Event::Delete(_)) => {
                    return Err(K8sError::Rollout(RolloutError::Deleted {
                        workload: workload_name.clone(),
                    }));
                }
                Ok(watcher::Event::InitDone) if !listed => {
                    return Err(K8sError::Rollout(RolloutError::NotFound {
                        workload: workload_name.clone(),
                    }));
                }
                Ok(_) => continue,
                Err(err) => {
                    tracing::warn!(workload = %workload_name, %err, "watch error; retrying");
                    last_watch_error = Some(err.to_string());
                    continue;
                }
            };
            listed = true;
            let workload = wrap(obj);
            if let (Some(min), Some(g)) = (min_generation, workload.generation())
                && g < min
            {
                continue;
            }
            let progress = workload.rollout_status()?;
            if progress.message != last {
                on_progress(&progress);
                last = progress.message.clone();
            }
            if progress.done {
                return Ok(progress);
            }
        }
        Err(K8sError::Rollout(RolloutError::Deleted {
            workload: workload_name.clone(),
        }))
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        Err(_) => Err(K8sError::Rollout(RolloutError::TimedOut {
            workload: w.to_string(),
            waited: timeout,
            last: match last_watch_error {
                Some(err) => format!("{last} (last watch error: {err})"),
                None => last,
            },
        })),
    }
}

/// Waits, by watch, until kubectl would say the rollout is complete. `min_generation` (the
/// generation a restart returned) ignores older copies of the object; `on_progress` sees
/// every new status message.
pub async fn wait_rollout(
    client: &Client,
    w: &WorkloadRef,
    min_generation: Option<i64>,
    timeout: Duration,
    on_progress: &mut (dyn FnMut(&RolloutProgress) + Send),
) -> Result<RolloutProgress, K8sError> {
    match w.kind {
        WorkloadKind::Deployment => {
            wait_typed::<Deployment>(
                client,
                w,
                min_generation,
                timeout,
                |d| Workload::Deployment(Box::new(d)),
                on_progress,
            )
            .await
        }
        WorkloadKind::StatefulSet => {
            wait_typed::<StatefulSet>(
                client,
                w,
                min_generation,
                timeout,
                |s| Workload::StatefulSet(Box::new(s)),
                on_progress,
            )
            .await
        }
        WorkloadKind::DaemonSet => {
            wait_typed::<DaemonSet>(
                client,
                w,
                min_generation,
                timeout,
                |d| Workload::DaemonSet(Box::new(d)),
                on_progress,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DaemonSetSpec, DaemonSetStatus, DaemonSetUpdateStrategy, DeploymentCondition,
        DeploymentSpec, DeploymentStatus, RollingUpdateStatefulSetStrategy, StatefulSetSpec,
        StatefulSetStatus, StatefulSetUpdateStrategy,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn meta(name: &str, generation: i64) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            generation: Some(generation),
            ..Default::default()
        }
    }

    /// (generation, observed, spec replicas, replicas, updated, available)
    fn mk_deploy(
        g: i64,
        og: i64,
        want: i32,
        total: i32,
        updated: i32,
        available: i32,
    ) -> Deployment {
        Deployment {
            metadata: meta("web", g),
            spec: Some(DeploymentSpec {
                replicas: Some(want),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(og),
                replicas: Some(total),
                updated_replicas: Some(updated),
                available_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    fn msg(r: Result<RolloutProgress, RolloutError>) -> (bool, String) {
        let p = r.expect("no rollout error");
        (p.done, p.message)
    }

    #[test]
    fn deployment_rules_and_messages() {
        assert_eq!(
            msg(deployment_status(&mk_deploy(3, 2, 3, 3, 3, 3))),
            (
                false,
                "Waiting for deployment spec update to be observed...".into()
            )
        );
        assert_eq!(
            msg(deployment_status(&mk_deploy(3, 3, 3, 4, 1, 3))),
            (
                false,
                "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated...".into()
            )
        );
        assert_eq!(
            msg(deployment_status(&mk_deploy(3, 3, 3, 5, 3, 3))),
            (
                false,
                "Waiting for deployment \"web\" rollout to finish: 2 old replicas are pending termination...".into()
            )
        );
        assert_eq!(
            msg(deployment_status(&mk_deploy(3, 3, 3, 3, 3, 1))),
            (
                false,
                "Waiting for deployment \"web\" rollout to finish: 1 of 3 updated replicas are available...".into()
            )
        );
        assert_eq!(
            msg(deployment_status(&mk_deploy(3, 4, 3, 3, 3, 3))),
            (true, "deployment \"web\" successfully rolled out".into())
        );
    }

    #[test]
    fn deployment_progress_deadline_is_an_error() {
        let mut d = mk_deploy(2, 2, 3, 3, 1, 1);
        d.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: Some("ProgressDeadlineExceeded".into()),
            ..Default::default()
        }]);
        let err = deployment_status(&d).unwrap_err();
        assert_eq!(
            err.to_string(),
            "deployment \"web\" exceeded its progress deadline"
        );
        // Not yet observed: the deadline of the previous generation does not count.
        d.metadata.generation = Some(3);
        assert!(!deployment_status(&d).unwrap().done);
    }

    fn mk_ds(
        strategy: &str,
        g: i64,
        og: i64,
        desired: i32,
        updated: i32,
        available: i32,
    ) -> DaemonSet {
        DaemonSet {
            metadata: meta("agent", g),
            spec: Some(DaemonSetSpec {
                update_strategy: Some(DaemonSetUpdateStrategy {
                    type_: Some(strategy.into()),
                    rolling_update: None,
                }),
                ..Default::default()
            }),
            status: Some(DaemonSetStatus {
                observed_generation: Some(og),
                desired_number_scheduled: desired,
                updated_number_scheduled: Some(updated),
                number_available: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn daemonset_rules_and_messages() {
        assert_eq!(
            msg(daemonset_status(&mk_ds("RollingUpdate", 2, 1, 3, 3, 3))),
            (
                false,
                "Waiting for daemon set spec update to be observed...".into()
            )
        );
        assert_eq!(
            msg(daemonset_status(&mk_ds("RollingUpdate", 2, 2, 3, 1, 3))),
            (
                false,
                "Waiting for daemon set \"agent\" rollout to finish: 1 out of 3 new pods have been updated...".into()
            )
        );
        assert_eq!(
            msg(daemonset_status(&mk_ds("RollingUpdate", 2, 2, 3, 3, 2))),
            (
                false,
                "Waiting for daemon set \"agent\" rollout to finish: 2 of 3 updated pods are available...".into()
            )
        );
        assert_eq!(
            msg(daemonset_status(&mk_ds("RollingUpdate", 2, 2, 3, 3, 3))),
            (true, "daemon set \"agent\" successfully rolled out".into())
        );
        let err = daemonset_status(&mk_ds("OnDelete", 2, 2, 3, 3, 3)).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("rollout status is only available for RollingUpdate strategy type"),
            "{err}"
        );
    }

    fn mk_sts(
        partition: Option<Option<i32>>,
        g: i64,
        og: i64,
        want: i32,
        ready: i32,
        updated: i32,
        revs: (&str, &str),
    ) -> StatefulSet {
        StatefulSet {
            metadata: meta("db", g),
            spec: Some(StatefulSetSpec {
                replicas: Some(want),
                update_strategy: Some(StatefulSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: partition.map(|p| RollingUpdateStatefulSetStrategy {
                        partition: p,
                        max_unavailable: None,
                    }),
                }),
                ..Default::default()
            }),
            status: Some(StatefulSetStatus {
                observed_generation: Some(og),
                replicas: want,
                ready_replicas: Some(ready),
                updated_replicas: Some(updated),
                current_replicas: Some(want),
                current_revision: Some(revs.0.into()),
                update_revision: Some(revs.1.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn statefulset_rules_and_messages() {
        let r = ("db-1", "db-2");
        assert_eq!(
            msg(statefulset_status(&mk_sts(Some(Some(0)), 2, 0, 3, 3, 3, r))),
            (
                false,
                "Waiting for statefulset spec update to be observed...".into()
            )
        );
        assert_eq!(
            msg(statefulset_status(&mk_sts(Some(Some(0)), 2, 2, 3, 1, 3, r))),
            (false, "Waiting for 2 pods to be ready...".into())
        );
        assert_eq!(
            msg(statefulset_status(&mk_sts(Some(Some(0)), 2, 2, 3, 3, 1, r))),
            (
                false,
                "Waiting for partitioned roll out to finish: 1 out of 3 new pods have been updated...".into()
            )
        );
        // The defaulted case completes on counts, even though the revisions still differ.
        assert_eq!(
            msg(statefulset_status(&mk_sts(Some(Some(0)), 2, 2, 3, 3, 3, r))),
            (
                true,
                "partitioned roll out complete: 3 new pods have been updated...".into()
            )
        );
        // rollingUpdate without a partition: done once ready.
        assert!(
            statefulset_status(&mk_sts(Some(None), 2, 2, 3, 3, 0, r))
                .unwrap()
                .done
        );
        // No rollingUpdate at all: revisions are compared.
        assert_eq!(
            msg(statefulset_status(&mk_sts(None, 2, 2, 3, 3, 2, r))),
            (
                false,
                "waiting for statefulset rolling update to complete 2 pods at revision db-2..."
                    .into()
            )
        );
        assert_eq!(
            msg(statefulset_status(&mk_sts(
                None,
                2,
                2,
                3,
                3,
                3,
                ("db-2", "db-2")
            ))),
            (
                true,
                "statefulset rolling update complete 3 pods at revision db-2...".into()
            )
        );
        let mut on_delete = mk_sts(None, 2, 2, 3, 3, 3, r);
        on_delete
            .spec
            .as_mut()
            .unwrap()
            .update_strategy
            .as_mut()
            .unwrap()
            .type_ = Some("OnDelete".into());
        assert!(matches!(
            statefulset_status(&on_delete),
            Err(RolloutError::NotRollingUpdate {
                kind: WorkloadKind::StatefulSet,
                ..
            })
        ));
        assert!(!Workload::StatefulSet(Box::new(on_delete)).replaces_pods_on_restart());
    }

    #[test]
    fn restart_patch_is_kubectls() {
        let patch = restart_patch("2026-07-30T12:00:00+02:00");
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-07-30T12:00:00+02:00"}}}}}"#
        );
    }

    #[test]
    fn restart_timestamp_formats_like_go() {
        let t = DateTime::parse_from_rfc3339("2026-07-30T12:00:00.734+02:00").unwrap();
        assert_eq!(restart_timestamp(t), "2026-07-30T12:00:00+02:00");
        let t = DateTime::parse_from_rfc3339("2026-07-30T10:00:00.1Z").unwrap();
        assert_eq!(restart_timestamp(t), "2026-07-30T10:00:00Z");
    }

    #[test]
    fn restart_stamp_refuses_paused_and_never_repeats_a_second() {
        let now = DateTime::parse_from_rfc3339("2026-07-30T10:00:00.5Z").unwrap();
        let mut d = mk_deploy(1, 1, 1, 1, 1, 1);
        let fresh = Workload::Deployment(Box::new(d.clone()));
        assert_eq!(
            restart_stamp(&fresh, now).as_deref(),
            Some("2026-07-30T10:00:00Z")
        );
        d.spec.as_mut().unwrap().template.metadata = Some(ObjectMeta {
            annotations: Some(
                [(
                    RESTARTED_AT_ANNOTATION.to_string(),
                    "2026-07-30T10:00:00Z".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        });
        let same_second = Workload::Deployment(Box::new(d.clone()));
        assert_eq!(
            restart_stamp(&same_second, now).as_deref(),
            Some("2026-07-30T10:00:01Z")
        );
        d.spec.as_mut().unwrap().paused = Some(true);
        assert_eq!(restart_stamp(&Workload::Deployment(Box::new(d)), now), None);
    }

    #[test]
    fn workload_accessors() {
        let mut d = mk_deploy(1, 1, 1, 1, 1, 1);
        let spec = d.spec.as_mut().unwrap();
        spec.paused = Some(true);
        spec.template.metadata = Some(ObjectMeta {
            annotations: Some(
                [(
                    RESTARTED_AT_ANNOTATION.to_string(),
                    "2026-01-01T00:00:00Z".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        });
        let w = Workload::Deployment(Box::new(d));
        assert!(w.is_paused());
        assert_eq!(w.restarted_at(), Some("2026-01-01T00:00:00Z"));
        assert!(w.replaces_pods_on_restart());
        assert_eq!(w.kind(), WorkloadKind::Deployment);
    }
}
