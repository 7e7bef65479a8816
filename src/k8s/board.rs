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
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::K8sError;
use super::rollout::{
    RolloutError, RolloutProgress, Workload, WorkloadKind, WorkloadRef, wait_rollout,
};

/// Failures in a row of a kind's cluster-wide watch (each retried after kube's backoff)
/// after which it is given up. A 403 gives it up at once: retrying cannot change RBAC.
pub const WATCH_FAILURES_BEFORE_FALLBACK: u32 = 3;

/// Called once per kind whose cluster-wide watch was given up, with why.
pub type FallbackNotice = Box<dyn Fn(WorkloadKind, &str) + Send + Sync>;

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
    /// The kinds whose watch was given up: their waiters wait with `wait_rollout`.
    given_up: watch::Sender<Vec<WorkloadKind>>,
    last_error: Mutex<Option<String>>,
    notice: FallbackNotice,
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

    fn give_up(&self, kind: WorkloadKind, why: &str) {
        tracing::warn!(%kind, why, "giving up the cluster-wide rollout watch");
        (self.notice)(kind, why);
        self.given_up.send_modify(|kinds| kinds.push(kind));
    }
}

/// What a wait on the board came to: a verdict, or the kind's watch was given up.
enum OnBoard {
    Verdict(Result<RolloutProgress, RolloutError>),
    GivenUp,
}

/// The rollouts of a set of workloads, followed by one watch per kind until dropped.
pub struct RolloutBoard {
    client: Client,
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
        Self::follow_noting(client, workloads, Box::new(|_, _| {}))
    }

    /// [`follow`](Self::follow), calling `notice` when a kind's watch is given up and its
    /// waiters fall back to a watch each (to tell the user, who sees slower waits).
    pub fn follow_noting(
        client: &Client,
        workloads: impl IntoIterator<Item = WorkloadRef>,
        notice: FallbackNotice,
    ) -> Self {
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
            given_up: watch::channel(Vec::new()).0,
            last_error: Mutex::new(None),
            notice,
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
        Self {
            client: client.clone(),
            shared,
            tasks,
        }
    }

    /// Waits until kubectl would say the rollout of `w` is complete, as
    /// [`wait_rollout`](super::wait_rollout) does; `w` must be one the board follows. When
    /// the kind's watch is given up, waits with `wait_rollout` for the time left.
    pub async fn wait(
        &self,
        w: &WorkloadRef,
        min_generation: Option<i64>,
        timeout: Duration,
    ) -> Result<RolloutProgress, K8sError> {
        let started = Instant::now();
        let Some(tx) = self.shared.facts.get(w) else {
            return Err(K8sError::Rollout(RolloutError::NotFound {
                workload: format!("{w} (not followed by this wave's watch)"),
            }));
        };
        let mut last = String::from("no status observed yet");
        let on_board = self.on_board(w, tx, min_generation, &mut last);
        match tokio::time::timeout(timeout, on_board).await {
            Ok(OnBoard::Verdict(result)) => result.map_err(K8sError::Rollout),
            Ok(OnBoard::GivenUp) => {
                let left = timeout.saturating_sub(started.elapsed());
                match wait_rollout(&self.client, w, min_generation, left, &mut |_| {}).await {
                    // The whole wait, not its second half, is what the user was promised.
                    Err(K8sError::Rollout(RolloutError::TimedOut { workload, last, .. })) => {
                        Err(K8sError::Rollout(RolloutError::TimedOut {
                            workload,
                            waited: timeout,
                            last,
                        }))
                    }
                    other => other,
                }
            }
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

    /// Waits on what the watch posts for `w` until a verdict, or until its kind's watch is
    /// given up; `last` keeps the latest status message.
    async fn on_board(
        &self,
        w: &WorkloadRef,
        tx: &watch::Sender<Option<Fact>>,
        min_generation: Option<i64>,
        last: &mut String,
    ) -> OnBoard {
        let mut fact = tx.subscribe();
        let mut listed = self.shared.listed.subscribe();
        let mut given_up = self.shared.given_up.subscribe();
        loop {
            let seen = fact.borrow_and_update().clone();
            match seen {
                Some(Fact::Deleted) => {
                    return OnBoard::Verdict(Err(RolloutError::Deleted {
                        workload: w.to_string(),
                    }));
                }
                Some(Fact::Seen { generation, status }) => {
                    let old =
                        matches!((min_generation, generation), (Some(min), Some(g)) if g < min);
                    match status {
                        _ if old => {}
                        Err(e) => return OnBoard::Verdict(Err(e)),
                        Ok(p) if p.done => return OnBoard::Verdict(Ok(p)),
                        Ok(p) => *last = p.message,
                    }
                }
                None if listed.borrow_and_update().contains(&w.kind) => {
                    return OnBoard::Verdict(Err(RolloutError::NotFound {
                        workload: w.to_string(),
                    }));
                }
                None => {}
            }
            if given_up.borrow_and_update().contains(&w.kind) {
                return OnBoard::GivenUp;
            }
            tokio::select! {
                changed = fact.changed() => if changed.is_err() { futures::future::pending::<()>().await },
                _ = listed.changed() => {}
                _ = given_up.changed() => {}
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
    let mut failures = 0;
    while let Some(event) = stream.next().await {
        if event.is_ok() {
            failures = 0;
        }
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
                failures += 1;
                *shared.last_error.lock().expect("poisoned") = Some(err.to_string());
                if refused(&err) || failures >= WATCH_FAILURES_BEFORE_FALLBACK {
                    let why = format!(
                        "the cluster-wide watch of {kind}s failed ({err}); waiting for each {kind}'s rollout with its own watch instead"
                    );
                    shared.give_up(kind, &why);
                    return;
                }
                tracing::warn!(%kind, %err, "rollout watch error; retrying");
            }
        }
    }
}

/// A 403: the API server will not let this client list or watch the kind cluster-wide.
fn refused(err: &watcher::Error) -> bool {
    let status = match err {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s))
        | watcher::Error::WatchError(s) => s,
        _ => return false,
    };
    status.code == 403
}
