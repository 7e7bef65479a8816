//! The workload controllers, as kube-controller-manager and the kubelet would act:
//! Deployment → ReplicaSet (rolling update with maxSurge/maxUnavailable, Recreate, paused,
//! revision annotations, Progressing/Available conditions, ProgressDeadlineExceeded),
//! ReplicaSet → Pods (FailedCreate when admission refuses), StatefulSet (OrderedReady,
//! RollingUpdate with partition, OnDelete), DaemonSet (one pod per node, RollingUpdate), and
//! pod readiness after a time-scaled delay.
//!
//! One task runs them all: store events mark workloads dirty, a periodic resync catches
//! deadlines, and pod readiness timers fire from a list the task polls. Each controller reads
//! its objects through a typed view (`DeploymentView`, …) and talks to the cluster through one
//! [`Client`].

mod backoff;
mod common;
mod daemonset;
mod deployment;
mod kubelet;
mod replicaset;
mod seed;
mod statefulset;

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};

pub use seed::{label_late, seed_objects, seed_workloads};

use super::client::{CONTROLLER_MANAGER, Client};
use super::istio::ISTIO_NS;
use super::object::{name_of, ns_of, uid_of};
use super::resources::{ResourceType, by_plural};
use super::state::KubeState;
use super::store::Event;
use crate::Shared;
use deployment::Progress;

/// The controllers' field manager.
const MANAGER: &str = CONTROLLER_MANAGER;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    Deploy(String, String),
    Rs(String, String),
    Sts(String, String),
    Ds(String, String),
}

fn key_ns(k: &Key) -> &str {
    match k {
        Key::Deploy(ns, _) | Key::Rs(ns, _) | Key::Sts(ns, _) | Key::Ds(ns, _) => ns,
    }
}

fn rt(plural: &str) -> &'static ResourceType {
    by_plural(plural)
}

/// Runs the controllers with instant readiness until nothing changes: the starting cluster.
pub fn settle(kube: &KubeState) {
    let mut ctl = Ctl::new(kube, true);
    let mut dirty: BTreeSet<Key> = ctl.all_keys().into_iter().collect();
    for pass in 0..100 {
        let t = Instant::now();
        let before = ctl.client.current_rv();
        // istiod's namespace first: the application pods need their injector ready
        let (first, rest): (Vec<Key>, Vec<Key>) = std::mem::take(&mut dirty)
            .into_iter()
            .partition(|k| key_ns(k) == ISTIO_NS);
        for key in first.into_iter().chain(rest) {
            ctl.reconcile(&key);
        }
        for ev in ctl.client.events_since(before) {
            ctl.mark(&ev, &mut dirty);
        }
        tracing::debug!(pass, elapsed = ?t.elapsed(), writes = ctl.client.current_rv() - before, "sim: settle pass");

        if dirty.is_empty() {
            break;
        }
    }
    ctl.client.mark_settled();
}

// ---------------------------------------------------------------------------------------
// The loop

pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let kube = &shared.kube;
    let mut ctl = Ctl::new(kube, false);
    let mut rx = ctl.client.subscribe();
    let mut dirty: BTreeSet<Key> = ctl.all_keys().into_iter().collect();
    let tick_every = Duration::from_millis(10);
    // unfinished rollouts are looked at often (progress deadlines), everything else rarely
    let resync_every = kube
        .clock
        .real(Duration::from_secs(5))
        .max(Duration::from_millis(100));
    let full_resync_every = Duration::from_secs(300);
    let mut last_resync = Instant::now();
    let mut last_full = Instant::now();
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => ctl.mark(&ev, &mut dirty),
                Err(broadcast::error::RecvError::Lagged(_)) => dirty.extend(ctl.all_keys()),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tokio::time::sleep(tick_every) => {},
            _ = shutdown.changed() => return,
        }
        loop {
            match rx.try_recv() {
                Ok(ev) => ctl.mark(&ev, &mut dirty),
                Err(broadcast::error::TryRecvError::Lagged(_)) => dirty.extend(ctl.all_keys()),
                Err(_) => break,
            }
        }
        let pass = Instant::now();
        ctl.fire_timers();
        for gone in ctl.client.reap_terminated() {
            ctl.forget_proxy(uid_of(&gone));
        }
        if last_full.elapsed() >= full_resync_every {
            last_full = Instant::now();
            dirty.extend(ctl.all_keys());
        } else if last_resync.elapsed() >= resync_every {
            last_resync = Instant::now();
            dirty.extend(ctl.unfinished.iter().cloned());
        }
        dirty.extend(ctl.backoff.due(Instant::now()));
        for key in std::mem::take(&mut dirty) {
            ctl.reconcile(&key);
        }
        ctl.clock.pass_took(pass.elapsed());
    }
}

/// A pass of the controllers longer than this is the simulator falling behind: the excess does
/// not count toward progress deadlines.
const PASS_BUDGET: Duration = Duration::from_millis(100);

struct Ctl<'a> {
    kube: &'a KubeState,
    client: Client<'a>,
    /// Settling the starting cluster: pods are Ready at once.
    instant: bool,
    /// Per Deployment uid: the last observed progress and when it changed.
    progress: HashMap<String, (Progress, Instant)>,
    /// Deployments whose rollout is not complete: resynced often for their deadline.
    unfinished: BTreeSet<Key>,
    /// The clock progress deadlines are judged by.
    clock: LagClock,
    /// Set when admission refuses a pod the controller creates, during one reconcile.
    refused: Cell<bool>,
    /// Workloads whose last sync was refused a pod, and when to look at them again.
    backoff: backoff::Backoff,
}

/// The clock progress deadlines are judged by: real time less the time the controllers spent
/// in passes longer than `budget`. A real controller-manager keeps up with its cluster; when
/// the simulator cannot (thousands of rollouts on two cores), the cluster's time stands still
/// for the deadlines instead of every rollout timing out for want of CPU.
struct LagClock {
    budget: Duration,
    lag: Duration,
}

impl LagClock {
    fn new(budget: Duration) -> Self {
        LagClock {
            budget,
            lag: Duration::ZERO,
        }
    }

    /// A pass of the controllers took `took`.
    fn pass_took(&mut self, took: Duration) {
        if took > self.budget {
            self.lag += took - self.budget;
        }
    }

    fn now(&self) -> Instant {
        let now = Instant::now();
        now.checked_sub(self.lag).unwrap_or(now)
    }
}

impl<'a> Ctl<'a> {
    fn new(kube: &'a KubeState, instant: bool) -> Self {
        Ctl {
            kube,
            client: kube.client(MANAGER),
            instant,
            progress: HashMap::new(),
            unfinished: BTreeSet::new(),
            clock: LagClock::new(PASS_BUDGET),
            refused: Cell::new(false),
            backoff: backoff::Backoff::default(),
        }
    }

    fn all_keys(&self) -> Vec<Key> {
        let mut out = Vec::new();
        // istiod's namespace first: injection needs a ready istiod
        let mut push = |plural: &str, f: fn(String, String) -> Key| {
            let keys = self.client.keys(rt(plural));
            let (first, rest): (Vec<_>, Vec<_>) =
                keys.into_iter().partition(|(ns, _)| ns == ISTIO_NS);
            for (ns, name) in first.into_iter().chain(rest) {
                out.push(f(ns, name));
            }
        };
        push("deployments", Key::Deploy);
        push("replicasets", Key::Rs);
        push("statefulsets", Key::Sts);
        push("daemonsets", Key::Ds);
        out
    }

    /// Marks dirty the workloads an event concerns: its own, and its controller owner's.
    fn mark(&self, ev: &Event, dirty: &mut BTreeSet<Key>) {
        let ns = ev.namespace.clone();
        match ev.resource {
            "deployments" => {
                dirty.insert(Key::Deploy(ns, ev.name.clone()));
            }
            "replicasets" => {
                dirty.insert(Key::Rs(ns.clone(), ev.name.clone()));
                if let Some((k, d)) = &ev.object.controller
                    && k == "Deployment"
                {
                    dirty.insert(Key::Deploy(ns, d.clone()));
                }
            }
            "statefulsets" => {
                dirty.insert(Key::Sts(ns, ev.name.clone()));
            }
            "daemonsets" => {
                dirty.insert(Key::Ds(ns, ev.name.clone()));
            }
            "pods" => match ev
                .object
                .controller
                .as_ref()
                .map(|(k, n)| (k.as_str(), n.as_str()))
            {
                Some(("ReplicaSet", n)) => {
                    dirty.insert(Key::Rs(ns, n.to_string()));
                }
                Some(("StatefulSet", n)) => {
                    dirty.insert(Key::Sts(ns, n.to_string()));
                }
                Some(("DaemonSet", n)) => {
                    dirty.insert(Key::Ds(ns, n.to_string()));
                }
                _ => {}
            },
            "nodes" => {
                let (items, _) = self.client.list(rt("daemonsets"), None);
                for d in items {
                    dirty.insert(Key::Ds(ns_of(&d).to_string(), name_of(&d).to_string()));
                }
            }
            _ => {}
        }
    }

    /// Syncs one workload; one that was refused a pod is requeued with backoff.
    fn reconcile(&mut self, key: &Key) {
        self.refused.set(false);
        match key {
            Key::Deploy(ns, n) => self.deployment(ns, n),
            Key::Rs(ns, n) => self.replicaset(ns, n),
            Key::Sts(ns, n) => self.statefulset(ns, n),
            Key::Ds(ns, n) => self.daemonset(ns, n),
        }
        if self.refused.take() {
            self.backoff.failed(key, Instant::now(), &self.kube.clock);
        } else {
            self.backoff.succeeded(key);
        }
    }
}

#[cfg(test)]
mod lag_tests {
    use super::*;

    #[test]
    fn only_the_excess_of_a_long_pass_stops_the_deadline_clock() {
        let mut c = LagClock::new(Duration::from_millis(100));
        c.pass_took(Duration::from_millis(40));
        assert_eq!(c.lag, Duration::ZERO);
        c.pass_took(Duration::from_millis(1_100));
        c.pass_took(Duration::from_millis(600));
        assert_eq!(c.lag, Duration::from_millis(1_500));
        let then = c.now();
        let behind = Instant::now().duration_since(then);
        assert!(
            behind >= Duration::from_millis(1_500) && behind < Duration::from_millis(2_500),
            "{behind:?}"
        );
    }
}
