//! One watch per workload kind for a whole wave, instead of one per workload.
//!
//! Waiting for a thousand rollouts with [`wait_rollout`](super::wait_rollout) holds a
//! thousand watch connections open at once (and a list and a watch request each). A
//! [`RolloutBoard`] follows every Deployment, StatefulSet or DaemonSet the wave restarts
//! with one cluster-wide watch per kind, keeps only kubectl's verdict on each of those
//! workloads, and wakes the one waiter a change concerns. The rules are the same as
//! `wait_rollout`'s: copies older than the generation a restart returned are ignored, a
//! workload the first list did not find does not exist, a deleted one fails its wait.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::K8sError;
use super::rollout::{RolloutError, RolloutProgress, Workload, WorkloadKind, WorkloadRef};

/// What the board last saw of one workload.
#[derive(Clone, Debug)]
enum Fact {
    Seen {
        generation: Option<i64>,
        status: Result<RolloutProgress, RolloutError>,
    },
    Deleted,
}

struct Shared {
    /// The wave's workloads only; events for any other workload are dropped.
    facts: HashMap<WorkloadRef, watch::Sender<Option<Fact>>>,
    /// The kinds whose first list has completed: a workload of such a kind never seen
    /// does not exist.
    listed: watch::Sender<Vec<WorkloadKind>>,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn saw(&self, workload: Workload) {
        if let Some(tx) = self.facts.get(&workload.reference()) {
            tx.send_replace(Some(Fact::Seen {
                generation: workload.generation(),
                status: workload.rollout_status(),
            }));
        }
    }

    fn gone(&self, workload: Workload) {
        if let Some(tx) = self.facts.get(&workload.reference()) {
            tx.send_replace(Some(Fact::Deleted));
        }
    }
}

/// The rollouts of a set of workloads, followed by one watch per kind until dropped.
pub struct RolloutBoard {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RolloutBoard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl RolloutBoard {
    /// Starts following `workloads`: one cluster-wide watch per kind among them.
    pub fn follow(client: &Client, workloads: impl IntoIterator<Item = WorkloadRef>) -> Self {
        let facts: HashMap<_, _> = workloads
            .into_iter()
            .map(|w| (w, watch::channel(None).0))
            .collect();
        let mut kinds: Vec<WorkloadKind> = facts.keys().map(|w| w.kind).collect();
        kinds.sort();
        kinds.dedup();
        let shared = Arc::new(Shared {
            facts,
            listed: watch::channel(Vec::new()).0,
            last_error: Mutex::new(None),
        });
        let tasks = kinds
            .into_iter()
            .map(|kind| {
                let (client, shared) = (client.clone(), shared.clone());
                tokio::spawn(async move {
                    match kind {
                        WorkloadKind::Deployment => {
                            follow_kind::<Deployment>(client, kind, shared, |d| {
                                Workload::Deployment(Box::new(d))
                            })
                            .await
                        }
                        WorkloadKind::StatefulSet => {
                            follow_kind::<StatefulSet>(client, kind, shared, |s| {
                                Workload::StatefulSet(Box::new(s))
                            })
                            .await
                        }
                        WorkloadKind::DaemonSet => {
                            follow_kind::<DaemonSet>(client, kind, shared, |d| {
                                Workload::DaemonSet(Box::new(d))
                            })
                            .await
                        }
                    }
                })
            })
            .collect();
        Self { shared, tasks }
    }

    /// Waits until kubectl would say the rollout of `w` is complete, as
    /// [`wait_rollout`](super::wait_rollout) does; `w` must be one the board follows.
    pub async fn wait(
        &self,
        w: &WorkloadRef,
        min_generation: Option<i64>,
        timeout: Duration,
    ) -> Result<RolloutProgress, K8sError> {
        let Some(tx) = self.shared.facts.get(w) else {
            return Err(K8sError::Rollout(RolloutError::NotFound {
                workload: format!("{w} (not followed by this wave's watch)"),
            }));
        };
        let mut fact = tx.subscribe();
        let mut listed = self.shared.listed.subscribe();
        let mut last = String::from("no status observed yet");
        let verdict = async {
            loop {
                let seen = fact.borrow_and_update().clone();
                match seen {
                    Some(Fact::Deleted) => {
                        return Err(RolloutError::Deleted {
                            workload: w.to_string(),
                        });
                    }
                    Some(Fact::Seen { generation, status }) => {
                        let old =
                            matches!((min_generation, generation), (Some(min), Some(g)) if g < min);
                        match status {
                            _ if old => {}
                            Err(e) => return Err(e),
                            Ok(p) if p.done => return Ok(p),
                            Ok(p) => last = p.message,
                        }
                    }
                    None if listed.borrow_and_update().contains(&w.kind) => {
                        return Err(RolloutError::NotFound {
                            workload: w.to_string(),
                        });
                    }
                    None => {}
                }
                tokio::select! {
                    changed = fact.changed() => if changed.is_err() { futures::future::pending::<()>().await },
                    _ = listed.changed() => {}
                }
            }
        };
        match tokio::time::timeout(timeout, verdict).await {
            Ok(result) => result.map_err(K8sError::Rollout),
            Err(_) => {
                let error = self.shared.last_error.lock().expect("poisoned").clone();
                Err(K8sError::Rollout(RolloutError::TimedOut {
                    workload: w.to_string(),
                    waited: timeout,
                    last: match error {
                        Some(err) => format!("{last} (last watch error: {err})"),
                        None => last,
                    },
                }))
            }
        }
    }
}

/// Follows every object of kind `K` in the cluster and posts the wave's ones on the board.
async fn follow_kind<K>(
    client: Client,
    kind: WorkloadKind,
    shared: Arc<Shared>,
    wrap: fn(K) -> Workload,
) where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + fmt::Debug
        + Send
        + 'static,
{
    let api = Api::<K>::all(client);
    let config = watcher::Config::default().page_size(super::LIST_PAGE);
    let mut stream = watcher(api, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => shared.saw(wrap(o)),
            Ok(watcher::Event::Delete(o)) => shared.gone(wrap(o)),
            Ok(watcher::Event::InitDone) => {
                shared.listed.send_if_modified(|kinds| {
                    let first = !kinds.contains(&kind);
                    if first {
                        kinds.push(kind);
                    }
                    first
                });
            }
            Ok(watcher::Event::Init) => {}
            Err(err) => {
                tracing::warn!(%kind, %err, "rollout watch error; retrying");
                *shared.last_error.lock().expect("poisoned") = Some(err.to_string());
            }
        }
    }
}
