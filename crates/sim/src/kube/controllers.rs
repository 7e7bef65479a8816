//! The workload controllers, as kube-controller-manager and the kubelet would act:
//! Deployment → ReplicaSet (rolling update with maxSurge/maxUnavailable, Recreate, paused,
//! revision annotations, Progressing/Available conditions, ProgressDeadlineExceeded),
//! ReplicaSet → Pods (FailedCreate when admission refuses), StatefulSet (OrderedReady,
//! RollingUpdate with partition, OnDelete), DaemonSet (one pod per node, RollingUpdate), and
//! pod readiness after a time-scaled delay.
//!
//! One task runs them all: store events mark workloads dirty, a periodic resync catches
//! deadlines, and pod readiness timers fire from a list the task polls.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::KubeState;
use super::addon::{self, ISTIO_NS, pod_ready};
use super::api::{create_object, create_object_then};
use super::resources::{ResourceType, by_plural};
use super::selectors::LabelSelector;
use super::status::ApiError;
use super::store::{
    Stored, annotation, label, meta_str, name_of, now_rfc3339, ns_of, random_suffix, uid_of,
};
use crate::Shared;

const MANAGER: &str = "kube-controller-manager";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
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

// ---------------------------------------------------------------------------------------
// Seeding

fn container(name: &str, image: &str) -> Value {
    json!({"name": name, "image": image,
           "ports": [{"containerPort": 8080, "protocol": "TCP"}],
           "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5}})
}

fn template(app: &str, image: &str) -> Value {
    json!({"metadata": {"labels": {"app": app, "version": "v1"}},
           "spec": {"containers": [container(app, image)]}})
}

/// Creates the scenario's namespaces and workloads (the controllers then create their pods).
pub fn seed_workloads(kube: &KubeState) {
    let mut namespaces = kube.scenario.namespaces.clone();
    if let Some(g) = &kube.scenario.generated {
        for i in 0..g.namespaces {
            let mut ns = super::NamespaceShape {
                name: format!("app-{i:03}"),
                ..Default::default()
            };
            if !g.revision_label.is_empty() {
                ns.labels
                    .insert("istio.io/rev".into(), g.revision_label.clone());
            }
            for j in 0..g.deployments_per_namespace {
                ns.deployments.push(super::WorkloadShape {
                    name: format!("svc-{j:02}"),
                    replicas: g.replicas,
                    ..Default::default()
                });
            }
            namespaces.push(ns);
        }
    }
    for ns in &namespaces {
        let _ = create_object(
            kube,
            rt("namespaces"),
            json!({"metadata": {"name": ns.name, "labels": ns.labels}}),
            "kubectl-create",
            false,
        );
        for d in &ns.deployments {
            let mut spec = json!({
                "replicas": d.replicas,
                "selector": {"matchLabels": {"app": d.name}},
                "template": template(&d.name, &d.image),
            });
            if let Some(p) = d.progress_deadline_seconds {
                spec["progressDeadlineSeconds"] = json!(p);
            }
            if d.paused {
                spec["paused"] = json!(true);
            }
            let _ = create_object(
                kube,
                rt("deployments"),
                json!({"metadata": {"name": d.name, "namespace": ns.name, "labels": {"app": d.name}}, "spec": spec}),
                "kubectl-client-side-apply",
                false,
            );
        }
        for s in &ns.statefulsets {
            let mut spec = json!({
                "replicas": s.replicas,
                "serviceName": s.name,
                "selector": {"matchLabels": {"app": s.name}},
                "template": template(&s.name, &s.image),
            });
            if let Some(u) = &s.update_strategy {
                spec["updateStrategy"] = json!({"type": u});
            }
            let _ = create_object(
                kube,
                rt("statefulsets"),
                json!({"metadata": {"name": s.name, "namespace": ns.name, "labels": {"app": s.name}}, "spec": spec}),
                "kubectl-client-side-apply",
                false,
            );
        }
        for s in &ns.daemonsets {
            let mut spec = json!({
                "selector": {"matchLabels": {"app": s.name}},
                "template": template(&s.name, &s.image),
            });
            if let Some(u) = &s.update_strategy {
                spec["updateStrategy"] = json!({"type": u});
            }
            let _ = create_object(
                kube,
                rt("daemonsets"),
                json!({"metadata": {"name": s.name, "namespace": ns.name, "labels": {"app": s.name}}, "spec": spec}),
                "kubectl-client-side-apply",
                false,
            );
        }
    }
}

/// Runs the controllers with instant readiness until nothing changes: the starting cluster.
pub fn settle(kube: &KubeState) {
    let mut ctl = Ctl {
        kube,
        instant: true,
        progress: HashMap::new(),
        unfinished: BTreeSet::new(),
        clock: LagClock::new(PASS_BUDGET),
    };
    // istiod first, so that the application pods find their injector ready
    let mut dirty: BTreeSet<Key> = ctl.all_keys().into_iter().collect();
    for pass in 0..100 {
        let t = Instant::now();
        let before = kube.store.current_rv();
        // istiod's namespace first: the application pods need their injector ready
        let (first, rest): (Vec<Key>, Vec<Key>) = std::mem::take(&mut dirty)
            .into_iter()
            .partition(|k| key_ns(k) == ISTIO_NS);
        for key in first.into_iter().chain(rest) {
            ctl.reconcile(&key);
        }
        for ev in kube.store.events_since(before) {
            ctl.mark(&ev, &mut dirty);
        }
        tracing::debug!(pass, elapsed = ?t.elapsed(), writes = kube.store.current_rv() - before, "sim: settle pass");

        if dirty.is_empty() {
            break;
        }
    }
    kube.store.mark_settled();
}

// ---------------------------------------------------------------------------------------
// The loop

pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let kube = &shared.kube;
    let mut rx = kube.store.subscribe();
    let mut ctl = Ctl {
        kube,
        instant: false,
        progress: HashMap::new(),
        unfinished: BTreeSet::new(),
        clock: LagClock::new(PASS_BUDGET),
    };
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
        for gone in kube.store.reap_terminated() {
            ctl.forget_proxy(uid_of(&gone));
        }
        if last_full.elapsed() >= full_resync_every {
            last_full = Instant::now();
            dirty.extend(ctl.all_keys());
        } else if last_resync.elapsed() >= resync_every {
            last_resync = Instant::now();
            dirty.extend(ctl.unfinished.iter().cloned());
        }
        for key in std::mem::take(&mut dirty) {
            ctl.reconcile(&key);
        }
        ctl.clock.pass_took(pass.elapsed());
    }
}

/// A pass of the controllers longer than this is the simulator falling behind: the excess does
/// not count toward progress deadlines.
const PASS_BUDGET: Duration = Duration::from_millis(100);

/// What a Deployment's progress is judged on: replicas, updated, ready, available, new RS.
type Progress = (i64, i64, i64, i64, String);

struct Ctl<'a> {
    kube: &'a KubeState,
    /// Settling the starting cluster: pods are Ready at once.
    instant: bool,
    /// Per Deployment uid: the last observed progress (status tuple) and when it changed.
    progress: HashMap<String, (Progress, Instant)>,
    /// Deployments whose rollout is not complete: resynced often for their deadline.
    unfinished: BTreeSet<Key>,
    /// The clock progress deadlines are judged by.
    clock: LagClock,
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

fn owner_ref(obj: &Value) -> Option<(&str, &str)> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|refs| {
            refs.iter().find(|r| r["controller"] == true).map(|r| {
                (
                    r["kind"].as_str().unwrap_or(""),
                    r["name"].as_str().unwrap_or(""),
                )
            })
        })
}

fn controller_ref(owner: &Value, kind: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": name_of(owner),
        "uid": uid_of(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn owned_by(obj: &Value, uid: &str) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["uid"] == uid && r["controller"] == true))
}

fn deleting(obj: &Value) -> bool {
    obj["metadata"].get("deletionTimestamp").is_some()
}

fn fnv32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in bytes {
        h ^= *b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    h
}

/// FNV-32a of the template, in the alphabet the controller uses for `pod-template-hash`.
pub fn template_hash(template: &Value) -> String {
    let h = fnv32(template.to_string().as_bytes());
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|c| ALPHA[c as usize % ALPHA.len()] as char)
        .collect()
}

fn int_or_percent(v: &Value, total: i64, round_up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => {
            if let Some(p) = s.strip_suffix('%') {
                let p: f64 = p.parse().unwrap_or(0.0);
                let x = p * total as f64 / 100.0;
                if round_up {
                    x.ceil() as i64
                } else {
                    x.floor() as i64
                }
            } else {
                s.parse().unwrap_or(0)
            }
        }
        _ => 0,
    }
}

fn i(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// Sets a condition as the controllers do: lastTransitionTime only moves when the status does.
fn set_condition(
    conds: &mut Vec<Value>,
    ctype: &str,
    status: &str,
    reason: &str,
    message: &str,
    with_update_time: bool,
) {
    let now = now_rfc3339();
    let pos = conds.iter().position(|c| c["type"] == ctype);
    let mut c = json!({"type": ctype, "status": status, "reason": reason, "message": message});
    if let Some(p) = pos {
        let old = &conds[p];
        c["lastTransitionTime"] = if old["status"] == status {
            old["lastTransitionTime"].clone()
        } else {
            json!(now)
        };
        if with_update_time {
            let same =
                old["status"] == status && old["reason"] == reason && old["message"] == message;
            c["lastUpdateTime"] = if same {
                old["lastUpdateTime"].clone()
            } else {
                json!(now)
            };
        }
        conds[p] = c;
    } else {
        c["lastTransitionTime"] = json!(now);
        if with_update_time {
            c["lastUpdateTime"] = json!(now);
        }
        conds.push(c);
    }
}

impl<'a> Ctl<'a> {
    fn store(&self) -> &'a super::Store {
        &self.kube.store
    }

    fn all_keys(&self) -> Vec<Key> {
        let mut out = Vec::new();
        // istiod's namespace first: injection needs a ready istiod
        let mut push = |plural: &str, f: fn(String, String) -> Key| {
            let keys = self.store().keys(rt(plural));
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

    fn mark(&self, ev: &super::Event, dirty: &mut BTreeSet<Key>) {
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
                let (items, _) = self.store().list(rt("daemonsets"), None);
                for d in items {
                    dirty.insert(Key::Ds(ns_of(&d).to_string(), name_of(&d).to_string()));
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, key: &Key) {
        match key {
            Key::Deploy(ns, n) => self.deployment(ns, n),
            Key::Rs(ns, n) => self.replicaset(ns, n),
            Key::Sts(ns, n) => self.statefulset(ns, n),
            Key::Ds(ns, n) => self.daemonset(ns, n),
        }
    }

    /// Writes `status` if it differs.
    fn write_status(&self, plural: &str, ns: &str, name: &str, status: Value) {
        let _ = self.store().update_with(rt(plural), ns, name, |cur| {
            if cur["status"] == status {
                return Ok(None);
            }
            let mut n = cur.clone();
            n["status"] = status;
            Ok(Some(n))
        });
    }

    fn set_replicas(
        &self,
        plural: &str,
        ns: &str,
        name: &str,
        replicas: i64,
        annotations: Option<&Value>,
    ) {
        let _ = self.store().update_with(rt(plural), ns, name, |cur| {
            let mut n = cur.clone();
            n["spec"]["replicas"] = json!(replicas);
            if let Some(a) = annotations
                && let Some(m) = a.as_object()
            {
                for (k, v) in m {
                    n["metadata"]["annotations"][k] = v.clone();
                }
            }
            Ok(Some(n))
        });
    }

    fn pods_of(&self, ns: &str, uid: &str) -> Vec<Arc<Value>> {
        self.store()
            .list_owned(rt("pods"), Some(ns), uid)
            .into_iter()
            .filter(|p| owned_by(p, uid))
            .collect()
    }

    // ----- Deployment

    fn deployment(&mut self, ns: &str, name: &str) {
        let Some(d) = self.store().get(rt("deployments"), ns, name) else {
            self.unfinished
                .remove(&Key::Deploy(ns.to_string(), name.to_string()));
            return;
        };
        if deleting(&d) {
            return;
        }
        let uid = uid_of(&d).to_string();
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let paused = d["spec"]["paused"] == true;
        let hash = template_hash(&d["spec"]["template"]);
        let list_rs = |s: &Self| -> Vec<Arc<Value>> {
            // only this Deployment's ReplicaSets are parsed
            s.store()
                .list_owned(rt("replicasets"), Some(ns), &uid)
                .into_iter()
                .filter(|r| owned_by(r, &uid) && !deleting(r))
                .collect()
        };
        let mut rss = list_rs(self);
        let rev_of = |r: &Value| -> i64 {
            annotation(r, "deployment.kubernetes.io/revision")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        let max_rev = rss.iter().map(|r| rev_of(r)).max().unwrap_or(0);
        let mut created_new = false;
        let mut new_rs = rss
            .iter()
            .find(|r| label(r, "pod-template-hash") == Some(hash.as_str()))
            .cloned();
        let strategy = d["spec"]["strategy"]["type"]
            .as_str()
            .unwrap_or("RollingUpdate")
            .to_string();
        let surge = int_or_percent(
            &d["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
            replicas,
            true,
        );
        let mut unavailable = int_or_percent(
            &d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
            replicas,
            false,
        );
        if surge == 0 && unavailable == 0 {
            unavailable = 1;
        }
        if new_rs.is_none() && !paused {
            let rs_name = format!("{name}-{hash}");
            let mut tpl = d["spec"]["template"].clone();
            tpl["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut selector = d["spec"]["selector"].clone();
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let mut labels = tpl["metadata"]["labels"].clone();
            labels["pod-template-hash"] = json!(hash);
            let no_old = rss
                .iter()
                .all(|r| i(&r["spec"]["replicas"]) == 0 && i(&r["status"]["replicas"]) == 0);
            let start = if no_old && strategy != "Recreate" {
                replicas
            } else {
                0
            };
            let mut annotations = serde_json::Map::new();
            if let Some(a) = d["metadata"]["annotations"].as_object() {
                for (k, v) in a {
                    if k != "deployment.kubernetes.io/revision"
                        && k != "kubectl.kubernetes.io/last-applied-configuration"
                    {
                        annotations.insert(k.clone(), v.clone());
                    }
                }
            }
            annotations.insert(
                "deployment.kubernetes.io/revision".into(),
                json!((max_rev + 1).to_string()),
            );
            annotations.insert(
                "deployment.kubernetes.io/desired-replicas".into(),
                json!(replicas.to_string()),
            );
            annotations.insert(
                "deployment.kubernetes.io/max-replicas".into(),
                json!((replicas + surge).to_string()),
            );
            let rs = json!({
                "metadata": {"name": rs_name, "namespace": ns, "labels": labels, "annotations": annotations,
                             "ownerReferences": [controller_ref(&d, "Deployment")]},
                "spec": {"replicas": start, "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                         "selector": selector, "template": tpl},
            });
            if create_object(self.kube, rt("replicasets"), rs, MANAGER, false).is_ok() {
                created_new = true;
            }
            rss = list_rs(self);
            new_rs = rss
                .iter()
                .find(|r| label(r, "pod-template-hash") == Some(hash.as_str()))
                .cloned();
        } else if let Some(n) = &new_rs
            && rev_of(n) < max_rev
            && !paused
        {
            // rolled back to an older template: it becomes the newest revision
            let ann = json!({"deployment.kubernetes.io/revision": (max_rev + 1).to_string()});
            self.set_replicas(
                "replicasets",
                ns,
                name_of(n),
                i(&n["spec"]["replicas"]),
                Some(&ann),
            );
            rss = list_rs(self);
            new_rs = rss
                .iter()
                .find(|r| label(r, "pod-template-hash") == Some(hash.as_str()))
                .cloned();
        }
        let new_name = new_rs.as_ref().map(|r| name_of(r).to_string());
        let olds: Vec<Arc<Value>> = rss
            .iter()
            .filter(|r| Some(name_of(r).to_string()) != new_name)
            .cloned()
            .collect();
        if !paused && let Some(n) = &new_rs {
            let new_spec = i(&n["spec"]["replicas"]);
            let ann = json!({"deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                             "deployment.kubernetes.io/max-replicas": (replicas + surge).to_string()});
            if strategy == "Recreate" {
                let old_active = olds
                    .iter()
                    .any(|o| i(&o["spec"]["replicas"]) > 0 || i(&o["status"]["replicas"]) > 0);
                for o in &olds {
                    if i(&o["spec"]["replicas"]) > 0 {
                        self.set_replicas("replicasets", ns, name_of(o), 0, None);
                    }
                }
                if !old_active && new_spec != replicas {
                    self.set_replicas("replicasets", ns, name_of(n), replicas, Some(&ann));
                }
            } else {
                let old_spec_total: i64 = olds.iter().map(|o| i(&o["spec"]["replicas"])).sum();
                if old_spec_total == 0 {
                    if new_spec != replicas {
                        self.set_replicas("replicasets", ns, name_of(n), replicas, Some(&ann));
                    }
                } else {
                    // scale up the new ReplicaSet within maxSurge
                    let total = old_spec_total + new_spec;
                    let max_total = replicas + surge;
                    let mut new_target = new_spec;
                    if total < max_total {
                        new_target = (new_spec + (max_total - total)).min(replicas);
                    } else if new_spec > replicas {
                        new_target = replicas;
                    }
                    if new_target != new_spec {
                        self.set_replicas("replicasets", ns, name_of(n), new_target, Some(&ann));
                    }
                    // scale down old ReplicaSets within maxUnavailable
                    let min_available = replicas - unavailable;
                    let new_unavailable =
                        (new_target - i(&n["status"]["availableReplicas"])).max(0);
                    let all = old_spec_total + new_target;
                    let mut budget = all - min_available - new_unavailable;
                    let mut olds_sorted = olds.clone();
                    olds_sorted.sort_by_key(|o| rev_of(o));
                    // unhealthy old pods first, then healthy ones, oldest revision first
                    for o in &olds_sorted {
                        let spec = i(&o["spec"]["replicas"]);
                        let unhealthy = (spec - i(&o["status"]["availableReplicas"]))
                            .max(0)
                            .min(spec);
                        let cut = unhealthy.min(budget.max(0));
                        if cut > 0 {
                            self.set_replicas("replicasets", ns, name_of(o), spec - cut, None);
                            budget -= cut;
                        }
                    }
                    let olds_now: Vec<Arc<Value>> = list_rs(self)
                        .into_iter()
                        .filter(|r| Some(name_of(r).to_string()) != new_name)
                        .collect();
                    let mut olds_now = olds_now;
                    olds_now.sort_by_key(|o| rev_of(o));
                    for o in &olds_now {
                        if budget <= 0 {
                            break;
                        }
                        let spec = i(&o["spec"]["replicas"]);
                        let cut = spec.min(budget);
                        if cut > 0 {
                            self.set_replicas("replicasets", ns, name_of(o), spec - cut, None);
                            budget -= cut;
                        }
                    }
                }
            }
        }
        // status
        let rss = list_rs(self);
        let new_rs = rss
            .iter()
            .find(|r| Some(name_of(r).to_string()) == new_name)
            .cloned();
        let sum = |f: &str| -> i64 { rss.iter().map(|r| i(&r["status"][f])).sum() };
        let total = sum("replicas");
        let ready = sum("readyReplicas");
        let available = sum("availableReplicas");
        let updated = new_rs
            .as_ref()
            .map(|r| i(&r["status"]["replicas"]))
            .unwrap_or(0);
        let rs_label = new_name.clone().unwrap_or_default();
        let mut conds: Vec<Value> = d["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if available >= replicas - unavailable {
            set_condition(
                &mut conds,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                true,
            );
        } else {
            set_condition(
                &mut conds,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                true,
            );
        }
        let complete = updated == replicas
            && total == replicas
            && available == replicas
            && new_rs
                .as_ref()
                .is_some_and(|r| i(&r["status"]["availableReplicas"]) == replicas);
        let key = Key::Deploy(ns.to_string(), name.to_string());
        if complete || paused {
            self.unfinished.remove(&key);
        } else {
            self.unfinished.insert(key);
        }
        let tuple = (total, updated, ready, available, rs_label.clone());
        let now = self.clock.now();
        let progressed = match self.progress.get(&uid) {
            Some((t, _)) => *t != tuple,
            None => true,
        };
        if progressed {
            self.progress.insert(uid.clone(), (tuple, now));
        }
        let since = self.progress.get(&uid).map(|(_, at)| *at).unwrap_or(now);
        if let Some(deadline) = d["spec"]["progressDeadlineSeconds"].as_i64() {
            let cur_reason = conds
                .iter()
                .find(|c| c["type"] == "Progressing")
                .and_then(|c| c["reason"].as_str())
                .unwrap_or("")
                .to_string();
            if paused {
                set_condition(
                    &mut conds,
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused",
                    true,
                );
            } else if complete {
                set_condition(
                    &mut conds,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    &format!("ReplicaSet \"{rs_label}\" has successfully progressed."),
                    true,
                );
            } else if created_new {
                set_condition(
                    &mut conds,
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    &format!("Created new replica set \"{rs_label}\""),
                    true,
                );
            } else if progressed {
                // lastUpdateTime refreshes on every progress
                set_condition(
                    &mut conds,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    &format!("ReplicaSet \"{rs_label}\" is progressing."),
                    true,
                );
                if let Some(c) = conds.iter_mut().find(|c| c["type"] == "Progressing") {
                    c["lastUpdateTime"] = json!(now_rfc3339());
                }
            } else if cur_reason == "ProgressDeadlineExceeded"
                || now.duration_since(since)
                    > self
                        .kube
                        .clock
                        .real(Duration::from_secs(deadline.max(0) as u64))
            {
                set_condition(
                    &mut conds,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    &format!("ReplicaSet \"{rs_label}\" has timed out progressing."),
                    true,
                );
            } else if cur_reason.is_empty() || cur_reason == "DeploymentPaused" {
                set_condition(
                    &mut conds,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    &format!("ReplicaSet \"{rs_label}\" is progressing."),
                    true,
                );
            }
        }
        // ReplicaFailure copied from the new ReplicaSet
        let failure = new_rs.as_ref().and_then(|r| {
            r["status"]["conditions"].as_array().and_then(|c| {
                c.iter()
                    .find(|c| c["type"] == "ReplicaFailure" && c["status"] == "True")
                    .cloned()
            })
        });
        match failure {
            Some(f) => set_condition(
                &mut conds,
                "ReplicaFailure",
                "True",
                f["reason"].as_str().unwrap_or("FailedCreate"),
                f["message"].as_str().unwrap_or(""),
                true,
            ),
            None => conds.retain(|c| c["type"] != "ReplicaFailure"),
        }
        conds.sort_by_key(|c| match c["type"].as_str() {
            Some("Available") => 0,
            Some("Progressing") => 1,
            _ => 2,
        });
        let mut status = json!({
            "observedGeneration": d["metadata"]["generation"].clone(),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": (replicas - available).max(0),
            "terminatingReplicas": sum("terminatingReplicas"),
            "conditions": conds,
        });
        for k in [
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
        ] {
            if status[k] == 0 && k != "replicas" {
                status.as_object_mut().map(|m| m.remove(k));
            }
        }
        let revision = new_rs
            .as_ref()
            .and_then(|r| annotation(r, "deployment.kubernetes.io/revision").map(str::to_string));
        let _ = self
            .store()
            .update_with(rt("deployments"), ns, name, |cur| {
                let mut n = cur.clone();
                n["status"] = status;
                if let Some(r) = &revision
                    && annotation(cur, "deployment.kubernetes.io/revision") != Some(r.as_str())
                {
                    n["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!(r);
                }
                if n == *cur { Ok(None) } else { Ok(Some(n)) }
            });
    }

    // ----- ReplicaSet

    fn replicaset(&mut self, ns: &str, name: &str) {
        let Some(rs) = self.store().get(rt("replicasets"), ns, name) else {
            return;
        };
        if deleting(&rs) {
            return;
        }
        let want = i(&rs["spec"]["replicas"]);
        let uid = uid_of(&rs).to_string();
        // Pods are judged on what the store indexes of them: nothing is parsed here.
        let pods_raw = |s: &Self| -> Vec<Arc<Stored>> {
            s.store()
                .list_owned_raw(rt("pods"), Some(ns), &uid)
                .into_iter()
                .filter(|p| {
                    p.controller
                        .as_ref()
                        .is_some_and(|(k, n)| k == "ReplicaSet" && n == name)
                })
                .collect()
        };
        let ready_of = |p: &Stored| p.pod.as_ref().is_some_and(|f| f.ready);
        let pods: Vec<Arc<Stored>> = pods_raw(self).into_iter().filter(|p| !p.deleting).collect();
        let have = pods.len() as i64;
        let mut failure: Option<String> = None;
        let workload = owner_ref(&rs)
            .map(|(_, n)| n.to_string())
            .unwrap_or_else(|| name.to_string());
        if have < want {
            for _ in 0..(want - have) {
                let pod = self.pod_from_template(&rs, "ReplicaSet", &format!("{name}-"), None, &[]);
                if let Err(e) = self.create_pod(pod, ns, &workload) {
                    failure = Some(e.message.clone());
                    self.event(
                        &rs,
                        "ReplicaSet",
                        "Warning",
                        "FailedCreate",
                        &format!("Error creating: {}", e.message),
                    );
                    break;
                }
            }
        } else if have > want {
            let mut victims = pods.clone();
            // not ready first, then the newest
            victims.sort_by(|a, b| {
                ready_of(a)
                    .cmp(&ready_of(b))
                    .then_with(|| b.creation_timestamp.cmp(&a.creation_timestamp))
                    .then_with(|| b.name.cmp(&a.name))
            });
            for p in victims.iter().take((have - want) as usize) {
                let _ = self.store().delete(rt("pods"), ns, &p.name, None, None);
                self.forget_proxy(&p.uid);
            }
        }
        let all_pods = pods_raw(self);
        let terminating = all_pods.iter().filter(|p| p.deleting).count();
        let pods: Vec<Arc<Stored>> = all_pods.into_iter().filter(|p| !p.deleting).collect();
        let ready = pods.iter().filter(|p| ready_of(p)).count() as i64;
        let selector = LabelSelector::from_json(rs["spec"].get("selector"));
        let labeled = pods
            .iter()
            .filter(|p| selector.matches(Some(&p.labels)))
            .count() as i64;
        let mut conds: Vec<Value> = rs["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        match &failure {
            Some(msg) => set_condition(
                &mut conds,
                "ReplicaFailure",
                "True",
                "FailedCreate",
                msg,
                false,
            ),
            None if have < want || pods.len() as i64 == want => {
                conds.retain(|c| c["type"] != "ReplicaFailure")
            }
            None => {}
        }
        let mut status = json!({
            "replicas": pods.len(),
            "fullyLabeledReplicas": labeled,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "terminatingReplicas": terminating,
            "observedGeneration": rs["metadata"]["generation"].clone(),
        });
        if !conds.is_empty() {
            status["conditions"] = json!(conds);
        }
        for k in ["fullyLabeledReplicas", "readyReplicas", "availableReplicas"] {
            if status[k] == 0 {
                status.as_object_mut().map(|m| m.remove(k));
            }
        }
        self.write_status("replicasets", ns, name, status);
    }

    // ----- StatefulSet

    fn statefulset(&mut self, ns: &str, name: &str) {
        let Some(sts) = self.store().get(rt("statefulsets"), ns, name) else {
            return;
        };
        if deleting(&sts) {
            return;
        }
        let uid = uid_of(&sts).to_string();
        let replicas = sts["spec"]["replicas"].as_i64().unwrap_or(1);
        let update_rev = format!("{name}-{}", template_hash(&sts["spec"]["template"]));
        let strategy = sts["spec"]["updateStrategy"]["type"]
            .as_str()
            .unwrap_or("RollingUpdate")
            .to_string();
        let partition = i(&sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"]);
        let ordered = sts["spec"]["podManagementPolicy"]
            .as_str()
            .unwrap_or("OrderedReady")
            == "OrderedReady";
        let ordinal = |p: &Value| -> i64 {
            name_of(p)
                .rsplit('-')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(-1)
        };
        let workload = name.to_string();
        for ord in 0..replicas {
            let pods = self.pods_of(ns, &uid);
            if pods.iter().any(|p| ordinal(p) == ord) {
                if ordered && !pods.iter().any(|p| ordinal(p) == ord && pod_ready(p)) {
                    break;
                }
                continue;
            }
            // pods below the partition keep the current revision's template
            let current_rev = sts["status"]["currentRevision"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let rev = if strategy == "RollingUpdate" && ord < partition && !current_rev.is_empty() {
                current_rev
            } else {
                update_rev.clone()
            };
            let pod = self.pod_from_template(
                &sts,
                "StatefulSet",
                "",
                Some(format!("{name}-{ord}")),
                &[
                    ("controller-revision-hash", rev.as_str()),
                    (
                        "statefulset.kubernetes.io/pod-name",
                        &format!("{name}-{ord}"),
                    ),
                    ("apps.kubernetes.io/pod-index", &ord.to_string()),
                ],
            );
            match self.create_pod(pod, ns, &workload) {
                Ok(_) => {}
                Err(e) => {
                    self.event(
                        &sts,
                        "StatefulSet",
                        "Warning",
                        "FailedCreate",
                        &format!(
                            "create Pod {name}-{ord} in StatefulSet {name} failed error: {}",
                            e.message
                        ),
                    );
                    break;
                }
            }
            if ordered && !self.instant {
                break;
            }
        }
        // scale down, highest ordinal first
        let pods = self.pods_of(ns, &uid);
        if let Some(p) = pods
            .iter()
            .filter(|p| ordinal(p) >= replicas)
            .max_by_key(|p| ordinal(p))
        {
            let _ = self.store().delete(rt("pods"), ns, name_of(p), None, None);
            self.forget_proxy(uid_of(p));
        }
        // rolling update: one pod at a time, highest ordinal first, only when all are ready
        let pods = self.pods_of(ns, &uid);
        let all_ready = pods.len() as i64 >= replicas && pods.iter().all(|p| pod_ready(p));
        if strategy == "RollingUpdate"
            && all_ready
            && let Some(p) = pods
                .iter()
                .filter(|p| {
                    ordinal(p) >= partition
                        && label(p, "controller-revision-hash") != Some(update_rev.as_str())
                })
                .max_by_key(|p| ordinal(p))
        {
            let _ = self.store().delete(rt("pods"), ns, name_of(p), None, None);
            self.forget_proxy(uid_of(p));
        }
        let pods = self.pods_of(ns, &uid);
        let ready = pods.iter().filter(|p| pod_ready(p)).count() as i64;
        let updated = pods
            .iter()
            .filter(|p| label(p, "controller-revision-hash") == Some(update_rev.as_str()))
            .count() as i64;
        let mut current_rev = sts["status"]["currentRevision"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if current_rev.is_empty() || (updated == replicas && ready == replicas) {
            current_rev = update_rev.clone();
        }
        let current = pods
            .iter()
            .filter(|p| label(p, "controller-revision-hash") == Some(current_rev.as_str()))
            .count() as i64;
        let status = json!({
            "observedGeneration": sts["metadata"]["generation"].clone(),
            "replicas": pods.len(),
            "readyReplicas": ready,
            "currentReplicas": current,
            "updatedReplicas": updated,
            "availableReplicas": ready,
            "currentRevision": current_rev,
            "updateRevision": update_rev,
            "collisionCount": 0,
        });
        self.write_status("statefulsets", ns, name, status);
    }

    // ----- DaemonSet

    fn daemonset(&mut self, ns: &str, name: &str) {
        let Some(ds) = self.store().get(rt("daemonsets"), ns, name) else {
            return;
        };
        if deleting(&ds) {
            return;
        }
        let uid = uid_of(&ds).to_string();
        let hash = template_hash(&ds["spec"]["template"]);
        let (nodes, _) = self.store().list(rt("nodes"), None);
        let strategy = ds["spec"]["updateStrategy"]["type"]
            .as_str()
            .unwrap_or("RollingUpdate")
            .to_string();
        let max_unavailable = int_or_percent(
            &ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            nodes.len() as i64,
            false,
        )
        .max(1);
        for node in &nodes {
            let node_name = name_of(node);
            let pods = self.pods_of(ns, &uid);
            if pods.iter().any(|p| p["spec"]["nodeName"] == node_name) {
                continue;
            }
            let pod = self.pod_from_template(
                &ds,
                "DaemonSet",
                &format!("{name}-"),
                None,
                &[
                    ("controller-revision-hash", hash.as_str()),
                    (
                        "pod-template-generation",
                        &ds["metadata"]["generation"].to_string(),
                    ),
                ],
            );
            let mut pod = pod;
            pod["spec"]["nodeName"] = json!(node_name);
            if let Err(e) = self.create_pod(pod, ns, name) {
                self.event(
                    &ds,
                    "DaemonSet",
                    "Warning",
                    "FailedCreate",
                    &format!("Error creating: {}", e.message),
                );
                break;
            }
        }
        let pods = self.pods_of(ns, &uid);
        if strategy == "RollingUpdate" {
            let unavailable = pods.iter().filter(|p| !pod_ready(p)).count() as i64
                + (nodes.len() as i64 - pods.len() as i64).max(0);
            let budget = max_unavailable - unavailable;
            for p in pods
                .iter()
                .filter(|p| label(p, "controller-revision-hash") != Some(hash.as_str()))
                .take(budget.max(0) as usize)
            {
                let _ = self.store().delete(rt("pods"), ns, name_of(p), None, None);
                self.forget_proxy(uid_of(p));
            }
        }
        let pods = self.pods_of(ns, &uid);
        let ready = pods.iter().filter(|p| pod_ready(p)).count() as i64;
        let updated = pods
            .iter()
            .filter(|p| label(p, "controller-revision-hash") == Some(hash.as_str()))
            .count() as i64;
        let desired = nodes.len() as i64;
        let mut status = json!({
            "observedGeneration": ds["metadata"]["generation"].clone(),
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": pods.len(),
            "numberMisscheduled": 0,
            "numberReady": ready,
            "numberAvailable": ready,
            "updatedNumberScheduled": updated,
        });
        if desired - ready > 0 {
            status["numberUnavailable"] = json!(desired - ready);
        }
        self.write_status("daemonsets", ns, name, status);
    }

    // ----- Pods

    fn pod_from_template(
        &self,
        owner: &Value,
        kind: &str,
        generate: &str,
        name: Option<String>,
        extra_labels: &[(&str, &str)],
    ) -> Value {
        let tpl = &owner["spec"]["template"];
        let mut meta = tpl["metadata"].clone();
        if !meta.is_object() {
            meta = json!({});
        }
        for (k, v) in extra_labels {
            meta["labels"][*k] = json!(v);
        }
        match name {
            Some(n) => meta["name"] = json!(n),
            None => meta["generateName"] = json!(generate),
        }
        meta["namespace"] = json!(ns_of(owner));
        meta["ownerReferences"] = json!([controller_ref(owner, kind)]);
        let mut spec = tpl["spec"].clone();
        if spec["nodeName"].is_null() {
            let nodes = self.store().list_cached(rt("nodes"));
            if !nodes.is_empty() {
                let idx = random_suffix(1).bytes().next().unwrap_or(0) as usize % nodes.len();
                spec["nodeName"] = json!(name_of(&nodes[idx]));
            }
        }
        json!({"metadata": meta, "spec": spec})
    }

    fn create_pod(&self, pod: Value, ns: &str, _workload: &str) -> Result<(), ApiError> {
        if self.instant {
            // the starting cluster's pods are created running (one version, not two)
            let crashloop_revs = &self.kube.scenario.crashloop_revisions;
            create_object_then(self.kube, rt("pods"), pod, MANAGER, false, |p| {
                let istiod = ns_of(p) == ISTIO_NS && label(p, "app") == Some("istiod");
                let crashloop = istiod
                    && label(p, "istio.io/rev")
                        .is_some_and(|r| crashloop_revs.iter().any(|c| c == r));
                let ip = format!("10.244.{}.{}", random_index(250), random_index(250) + 2);
                p["status"] = pod_status(p, !crashloop, crashloop, &now_rfc3339(), &ip);
            })?;
            return Ok(());
        }
        let created = create_object(self.kube, rt("pods"), pod, MANAGER, false)?;
        let name = name_of(&created).to_string();
        let uid = uid_of(&created).to_string();
        {
            let delay = self.ready_delay(&created);
            let when = Instant::now() + self.kube.clock.real(delay);
            self.kube
                .ready_timers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((when, ns.to_string(), name, uid));
        }
        Ok(())
    }

    fn ready_delay(&self, pod: &Value) -> Duration {
        let s = &self.kube.scenario;
        let secs = if ns_of(pod) == ISTIO_NS && label(pod, "app") == Some("istiod") {
            s.istiod_ready_seconds
        } else {
            s.pod_ready_seconds
        };
        Duration::from_secs_f64(secs.max(0.0))
    }

    fn fire_timers(&self) {
        let now = Instant::now();
        let due: Vec<(Instant, String, String, String)> = {
            let mut timers = self
                .kube
                .ready_timers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let (due, keep): (Vec<_>, Vec<_>) = timers.drain(..).partition(|t| t.0 <= now);
            *timers = keep;
            due
        };
        for (_, ns, name, uid) in due {
            let Some(pod) = self.store().get(rt("pods"), &ns, &name) else {
                continue;
            };
            if uid_of(&pod) != uid {
                continue;
            }
            let workload = self.workload_of(&pod);
            self.make_ready_or_not(&ns, &name, &uid, &workload, false);
        }
    }

    fn workload_of(&self, pod: &Value) -> String {
        match owner_ref(pod) {
            Some(("ReplicaSet", rs)) => rs
                .rsplit_once('-')
                .map(|(d, _)| d.to_string())
                .unwrap_or_else(|| rs.to_string()),
            Some((_, n)) => n.to_string(),
            None => name_of(pod).to_string(),
        }
    }

    /// Moves a pod to Running: Ready, or (for faults) running but never ready.
    fn make_ready_or_not(&self, ns: &str, name: &str, uid: &str, workload: &str, settling: bool) {
        let Some(pod) = self.store().get(rt("pods"), ns, name) else {
            return;
        };
        let rev = label(&pod, "istio.io/rev").unwrap_or("").to_string();
        let istiod = ns == ISTIO_NS && label(&pod, "app") == Some("istiod");
        let crashloop = istiod && self.kube.scenario.crashloop_revisions.contains(&rev);
        // Stuck only where the scenario says: on the revisions it names (the new proxy is
        // the culprit, so a rollback to the old one recovers), or everywhere when it names none.
        let injected = pod
            .pointer("/metadata/annotations/istio.io~1rev")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let on = &self.kube.scenario.never_ready_revisions;
        let stuck = !settling
            && (on.is_empty() || on.iter().any(|r| r == injected))
            && self
                .kube
                .scenario
                .never_ready
                .iter()
                .any(|w| *w == format!("{ns}/{workload}"));
        let ready = !crashloop && !stuck;
        let now = now_rfc3339();
        let pod_ip = format!("10.244.{}.{}", random_index(250), random_index(250) + 2);
        let status = pod_status(&pod, ready, crashloop, &now, &pod_ip);
        let _ = self.store().update_with(rt("pods"), ns, name, |cur| {
            if uid_of(cur) != uid {
                return Ok(None);
            }
            let mut n = cur.clone();
            n["status"] = status;
            Ok(Some(n))
        });
        if ready && !settling && addon::pod_revision(&pod).is_some() {
            self.kube
                .proxies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(uid.to_string(), Instant::now());
        }
    }

    fn forget_proxy(&self, pod_uid: &str) {
        self.kube
            .proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pod_uid);
    }

    /// Records an Event (aggregated by involved object and reason, as the recorder does).
    fn event(&self, obj: &Value, kind: &str, etype: &str, reason: &str, message: &str) {
        let ns = ns_of(obj);
        let name = format!("{}.{:08x}", name_of(obj), fnv32(reason.as_bytes()));
        let now = now_rfc3339();
        let ev_rt = rt("events");
        if self.store().get(ev_rt, ns, &name).is_some() {
            let _ = self.store().update_with(ev_rt, ns, &name, |cur| {
                let mut n = cur.clone();
                n["count"] = json!(i(&cur["count"]) + 1);
                n["lastTimestamp"] = json!(now);
                n["message"] = json!(message);
                Ok(Some(n))
            });
            return;
        }
        let _ = self.store().create(
            ev_rt,
            json!({
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": {"kind": kind, "namespace": ns, "name": name_of(obj), "uid": uid_of(obj),
                                   "apiVersion": "apps/v1", "resourceVersion": meta_str(obj, "resourceVersion")},
                "reason": reason, "message": message, "type": etype, "count": 1,
                "firstTimestamp": now, "lastTimestamp": now,
                "source": {"component": if kind == "ReplicaSet" { "replicaset-controller" } else { "statefulset-controller" }},
                "reportingComponent": "", "reportingInstance": "",
            }),
        );
    }
}

fn random_index(n: usize) -> usize {
    use rand::Rng;
    rand::rng().random_range(0..n)
}

fn pod_status(pod: &Value, ready: bool, crashloop: bool, now: &str, ip: &str) -> Value {
    let r = if ready { "True" } else { "False" };
    let started = match meta_str(pod, "creationTimestamp") {
        "" => now.to_string(),
        t => t.to_string(),
    };
    let cstatus = |c: &Value, init: bool| -> Value {
        let cname = c["name"].as_str().unwrap_or("");
        let image = c["image"].as_str().unwrap_or("");
        let id = format!(
            "containerd://{}",
            &uuid::Uuid::new_v4().simple().to_string()[..32]
        );
        let base = json!({"name": cname, "image": image, "imageID": format!("{image}@sha256:{}", "0".repeat(64)),
                          "containerID": id});
        let mut s = base;
        if init && c["restartPolicy"] != "Always" {
            s["ready"] = json!(true);
            s["started"] = json!(false);
            s["restartCount"] = json!(0);
            s["state"] = json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": now}});
        } else if crashloop && cname == "discovery" {
            s["ready"] = json!(false);
            s["started"] = json!(false);
            s["restartCount"] = json!(4);
            s["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": now, "finishedAt": now}});
            s["state"] = json!({"waiting": {"reason": "CrashLoopBackOff",
                "message": format!("back-off 1m20s restarting failed container=discovery pod={}_{}({})", name_of(pod), ns_of(pod), uid_of(pod))}});
        } else {
            s["ready"] = json!(ready || (init && c["restartPolicy"] == "Always"));
            s["started"] = json!(true);
            s["restartCount"] = json!(0);
            s["state"] = json!({"running": {"startedAt": now}});
        }
        s
    };
    let containers: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .map(|a| a.iter().map(|c| cstatus(c, false)).collect())
        .unwrap_or_default();
    let inits: Vec<Value> = pod["spec"]["initContainers"]
        .as_array()
        .map(|a| a.iter().map(|c| cstatus(c, true)).collect())
        .unwrap_or_default();
    let host_ip = "10.224.0.4";
    let mut status = json!({
        "phase": "Running",
        "conditions": [
            {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": started},
            {"type": "Ready", "status": r, "lastProbeTime": null, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": r, "lastProbeTime": null, "lastTransitionTime": now},
            {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": started},
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": started,
        "containerStatuses": containers,
        "qosClass": "BestEffort",
    });
    if !ready {
        for c in status["conditions"].as_array_mut().into_iter().flatten() {
            if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                c["reason"] = json!("ContainersNotReady");
                c["message"] = json!(
                    "containers with unready status: [".to_string()
                        + pod["spec"]["containers"][0]["name"].as_str().unwrap_or("")
                        + "]"
                );
            }
        }
    }
    if !inits.is_empty() {
        status["initContainerStatuses"] = json!(inits);
    }
    status
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
