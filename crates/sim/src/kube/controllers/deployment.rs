//! The Deployment controller: one ReplicaSet per pod template (named by the template's hash),
//! the newest revision in its annotation; the ReplicaSets scaled by the strategy (RollingUpdate
//! within maxSurge and maxUnavailable, unhealthy old pods first; or Recreate); and the status
//! with its Available, Progressing (progress deadline) and ReplicaFailure conditions.
//!
//! The controller reads a [`DeploymentView`] of the Deployment and an [`OwnedReplicaSet`] of
//! each of its ReplicaSets; the arithmetic of a rolling update is pure and tested below.

use std::time::Duration;

use serde_json::{Value, json};

use super::common::{
    Conditions, controller_ref, deleting, drop_zeros, i, int_or_percent, owned_by, template_hash,
    true_condition,
};
use super::{Ctl, Key, rt};
use crate::kube::object::{annotation, label, name_of, ns_of, uid_of};

const REVISION: &str = "deployment.kubernetes.io/revision";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strategy {
    RollingUpdate,
    Recreate,
}

/// What the Deployment controller reads of a Deployment.
struct DeploymentView {
    namespace: String,
    name: String,
    uid: String,
    generation: Value,
    /// `spec.replicas` (1 when absent).
    replicas: i64,
    paused: bool,
    /// The `pod-template-hash` of its template.
    template_hash: String,
    strategy: Strategy,
    /// maxSurge and maxUnavailable as counts of `replicas` (never both 0).
    max_surge: i64,
    max_unavailable: i64,
    progress_deadline_seconds: Option<i64>,
    status: Value,
}

impl DeploymentView {
    fn read(d: &Value) -> Self {
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let strategy = &d["spec"]["strategy"];
        let max_surge = int_or_percent(&strategy["rollingUpdate"]["maxSurge"], replicas, true);
        let mut max_unavailable = int_or_percent(
            &strategy["rollingUpdate"]["maxUnavailable"],
            replicas,
            false,
        );
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        Self {
            namespace: ns_of(d).to_string(),
            name: name_of(d).to_string(),
            uid: uid_of(d).to_string(),
            generation: d["metadata"]["generation"].clone(),
            replicas,
            paused: d["spec"]["paused"] == true,
            template_hash: template_hash(&d["spec"]["template"]),
            strategy: match strategy["type"].as_str() {
                Some("Recreate") => Strategy::Recreate,
                _ => Strategy::RollingUpdate,
            },
            max_surge,
            max_unavailable,
            progress_deadline_seconds: d["spec"]["progressDeadlineSeconds"].as_i64(),
            status: d["status"].clone(),
        }
    }

    /// The annotations that record what a ReplicaSet was sized for.
    fn size_annotations(&self) -> Value {
        json!({"deployment.kubernetes.io/desired-replicas": self.replicas.to_string(),
               "deployment.kubernetes.io/max-replicas": (self.replicas + self.max_surge).to_string()})
    }
}

/// What the Deployment controller reads of one of its ReplicaSets.
#[derive(Clone, Debug, Default)]
struct OwnedReplicaSet {
    name: String,
    template_hash: Option<String>,
    /// Its revision annotation as written, and as a number (0 when absent or unreadable).
    revision_text: Option<String>,
    revision: i64,
    spec_replicas: i64,
    replicas: i64,
    ready: i64,
    available: i64,
    terminating: i64,
    /// Its ReplicaFailure condition, when True.
    failure: Option<Value>,
}

impl OwnedReplicaSet {
    fn read(rs: &Value) -> Self {
        let revision_text = annotation(rs, REVISION).map(str::to_string);
        Self {
            name: name_of(rs).to_string(),
            template_hash: label(rs, "pod-template-hash").map(str::to_string),
            revision: revision_text
                .as_deref()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            revision_text,
            spec_replicas: i(&rs["spec"]["replicas"]),
            replicas: i(&rs["status"]["replicas"]),
            ready: i(&rs["status"]["readyReplicas"]),
            available: i(&rs["status"]["availableReplicas"]),
            terminating: i(&rs["status"]["terminatingReplicas"]),
            failure: true_condition(&rs["status"], "ReplicaFailure"),
        }
    }
}

/// What a Deployment's progress is judged on: its pods, and which ReplicaSet is new.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Progress {
    total: i64,
    updated: i64,
    ready: i64,
    available: i64,
    new_rs: String,
}

impl Progress {
    /// `new_name` names the new ReplicaSet (`new_rs`, unless it has gone since).
    fn of(
        rss: &[OwnedReplicaSet],
        new_rs: Option<&OwnedReplicaSet>,
        new_name: Option<&str>,
    ) -> Self {
        Self {
            total: rss.iter().map(|r| r.replicas).sum(),
            updated: new_rs.map(|r| r.replicas).unwrap_or(0),
            ready: rss.iter().map(|r| r.ready).sum(),
            available: rss.iter().map(|r| r.available).sum(),
            new_rs: new_name.unwrap_or_default().to_string(),
        }
    }
}

impl Ctl<'_> {
    pub(super) fn deployment(&mut self, ns: &str, name: &str) {
        let Some(obj) = self.client.get(rt("deployments"), ns, name) else {
            self.unfinished
                .remove(&Key::Deploy(ns.to_string(), name.to_string()));
            return;
        };
        if deleting(&obj) {
            return;
        }
        let d = DeploymentView::read(&obj);
        let (rss, created_new) = self.sync_new_replica_set(&obj, &d);
        let new_rs = rss
            .iter()
            .find(|r| r.template_hash.as_deref() == Some(d.template_hash.as_str()));
        if !d.paused
            && let Some(new) = new_rs
        {
            let olds: Vec<OwnedReplicaSet> =
                rss.iter().filter(|r| r.name != new.name).cloned().collect();
            match d.strategy {
                Strategy::Recreate => self.recreate(&d, new, &olds),
                Strategy::RollingUpdate => self.roll(&d, new, &olds),
            }
        }
        let new_name = new_rs.map(|r| r.name.clone());
        self.deployment_status(&d, new_name.as_deref(), created_new);
    }

    /// The Deployment's live ReplicaSets (only these are parsed).
    fn replica_sets(&self, d: &DeploymentView) -> Vec<OwnedReplicaSet> {
        self.client
            .list_owned(rt("replicasets"), Some(&d.namespace), &d.uid)
            .into_iter()
            .filter(|r| owned_by(r, &d.uid) && !deleting(r))
            .map(|r| OwnedReplicaSet::read(&r))
            .collect()
    }

    /// Gives the current template its ReplicaSet, with the newest revision (unless paused).
    /// Returns the Deployment's ReplicaSets after that, and whether one was created.
    fn sync_new_replica_set(
        &self,
        obj: &Value,
        d: &DeploymentView,
    ) -> (Vec<OwnedReplicaSet>, bool) {
        let rss = self.replica_sets(d);
        if d.paused {
            return (rss, false);
        }
        let max_rev = rss.iter().map(|r| r.revision).max().unwrap_or(0);
        let current = rss
            .iter()
            .find(|r| r.template_hash.as_deref() == Some(d.template_hash.as_str()));
        match current {
            None => {
                let rs = new_replica_set(obj, d, &rss, max_rev);
                let created = self.client.create(rt("replicasets"), rs).is_ok();
                (self.replica_sets(d), created)
            }
            Some(n) if n.revision < max_rev => {
                // rolled back to an older template: it becomes the newest revision
                let ann = json!({"deployment.kubernetes.io/revision": (max_rev + 1).to_string()});
                self.scale_replica_set(&d.namespace, &n.name, n.spec_replicas, Some(&ann));
                (self.replica_sets(d), false)
            }
            Some(_) => (rss, false),
        }
    }

    /// Sets a ReplicaSet's replicas, and `annotations` on it.
    fn scale_replica_set(&self, ns: &str, name: &str, replicas: i64, annotations: Option<&Value>) {
        let _ = self.client.update(rt("replicasets"), ns, name, |cur| {
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

    /// Recreate: the old ReplicaSets go to zero; the new one grows once their pods are gone.
    fn recreate(&self, d: &DeploymentView, new: &OwnedReplicaSet, olds: &[OwnedReplicaSet]) {
        let old_active = olds.iter().any(|o| o.spec_replicas > 0 || o.replicas > 0);
        for o in olds.iter().filter(|o| o.spec_replicas > 0) {
            self.scale_replica_set(&d.namespace, &o.name, 0, None);
        }
        if !old_active && new.spec_replicas != d.replicas {
            let ann = d.size_annotations();
            self.scale_replica_set(&d.namespace, &new.name, d.replicas, Some(&ann));
        }
    }

    /// RollingUpdate: the new ReplicaSet grows within maxSurge, the old ones shrink within
    /// maxUnavailable.
    fn roll(&self, d: &DeploymentView, new: &OwnedReplicaSet, olds: &[OwnedReplicaSet]) {
        let ann = d.size_annotations();
        let old_spec_total: i64 = olds.iter().map(|o| o.spec_replicas).sum();
        if old_spec_total == 0 {
            if new.spec_replicas != d.replicas {
                self.scale_replica_set(&d.namespace, &new.name, d.replicas, Some(&ann));
            }
            return;
        }
        let new_target = surge_target(d, old_spec_total, new.spec_replicas);
        if new_target != new.spec_replicas {
            self.scale_replica_set(&d.namespace, &new.name, new_target, Some(&ann));
        }
        let budget = scale_down_budget(d, old_spec_total, new_target, new.available);
        let (cuts, budget) = cut_unhealthy(&by_revision(olds.to_vec()), budget);
        for (name, replicas) in cuts {
            self.scale_replica_set(&d.namespace, &name, replicas, None);
        }
        let olds_now: Vec<OwnedReplicaSet> = self
            .replica_sets(d)
            .into_iter()
            .filter(|r| r.name != new.name)
            .collect();
        for (name, replicas) in cut_oldest(&by_revision(olds_now), budget) {
            self.scale_replica_set(&d.namespace, &name, replicas, None);
        }
    }

    /// Writes the Deployment's status (and its revision annotation, the new ReplicaSet's).
    fn deployment_status(&mut self, d: &DeploymentView, new_name: Option<&str>, created_new: bool) {
        let rss = self.replica_sets(d);
        let new_rs = rss.iter().find(|r| Some(r.name.as_str()) == new_name);
        let progress = Progress::of(&rss, new_rs, new_name);
        let mut conds = Conditions::of(&d.status, true);
        if progress.available >= d.replicas - d.max_unavailable {
            conds.set(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            );
        } else {
            conds.set(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            );
        }
        let complete = progress.updated == d.replicas
            && progress.total == d.replicas
            && progress.available == d.replicas
            && new_rs.is_some_and(|r| r.available == d.replicas);
        let key = Key::Deploy(d.namespace.clone(), d.name.clone());
        if complete || d.paused {
            self.unfinished.remove(&key);
        } else {
            self.unfinished.insert(key);
        }
        let (progressed, stalled_for) = self.observe_progress(&d.uid, &progress);
        if let Some(deadline) = d.progress_deadline_seconds {
            let deadline = self
                .kube
                .clock
                .real(Duration::from_secs(deadline.max(0) as u64));
            let judged = Judged {
                complete,
                created_new,
                progressed,
                past_deadline: stalled_for > deadline,
            };
            set_progressing(&mut conds, d.paused, &progress.new_rs, judged);
        }
        match new_rs.and_then(|r| r.failure.as_ref()) {
            Some(f) => conds.set(
                "ReplicaFailure",
                "True",
                f["reason"].as_str().unwrap_or("FailedCreate"),
                f["message"].as_str().unwrap_or(""),
            ),
            None => conds.remove("ReplicaFailure"),
        }
        conds.sort_for_deployment();
        let mut status = json!({
            "observedGeneration": d.generation.clone(),
            "replicas": progress.total,
            "updatedReplicas": progress.updated,
            "readyReplicas": progress.ready,
            "availableReplicas": progress.available,
            "unavailableReplicas": (d.replicas - progress.available).max(0),
            "terminatingReplicas": rss.iter().map(|r| r.terminating).sum::<i64>(),
            "conditions": conds.into_value(),
        });
        drop_zeros(
            &mut status,
            &[
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
                "unavailableReplicas",
            ],
        );
        let revision = new_rs.and_then(|r| r.revision_text.clone());
        let _ = self
            .client
            .update(rt("deployments"), &d.namespace, &d.name, |cur| {
                let revision = revision
                    .as_ref()
                    .filter(|r| annotation(cur, REVISION) != Some(r.as_str()));
                if cur["status"] == status && revision.is_none() {
                    return Ok(None);
                }
                let mut n = cur.clone();
                n["status"] = status;
                if let Some(r) = revision {
                    n["metadata"]["annotations"][REVISION] = json!(r);
                }
                Ok(Some(n))
            });
    }

    /// Records the Deployment's progress; returns whether it moved since the last look, and
    /// for how long it has not (on the deadline clock).
    fn observe_progress(&mut self, uid: &str, progress: &Progress) -> (bool, Duration) {
        let now = self.clock.now();
        let progressed = match self.progress.get(uid) {
            Some((seen, _)) => seen != progress,
            None => true,
        };
        if progressed {
            self.progress
                .insert(uid.to_string(), (progress.clone(), now));
        }
        let since = self.progress.get(uid).map(|(_, at)| *at).unwrap_or(now);
        (progressed, now.duration_since(since))
    }
}

/// The ReplicaSet a Deployment creates for its current template (revision `max_rev + 1`).
fn new_replica_set(
    d_obj: &Value,
    d: &DeploymentView,
    rss: &[OwnedReplicaSet],
    max_rev: i64,
) -> Value {
    let hash = &d.template_hash;
    let mut tpl = d_obj["spec"]["template"].clone();
    tpl["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    let mut selector = d_obj["spec"]["selector"].clone();
    selector["matchLabels"]["pod-template-hash"] = json!(hash);
    let mut labels = tpl["metadata"]["labels"].clone();
    labels["pod-template-hash"] = json!(hash);
    // a first rollout starts at full size (a Recreate waits for the old pods to go)
    let no_old = rss.iter().all(|r| r.spec_replicas == 0 && r.replicas == 0);
    let start = if no_old && d.strategy != Strategy::Recreate {
        d.replicas
    } else {
        0
    };
    let mut annotations = serde_json::Map::new();
    if let Some(a) = d_obj["metadata"]["annotations"].as_object() {
        for (k, v) in a {
            if k != REVISION && k != "kubectl.kubernetes.io/last-applied-configuration" {
                annotations.insert(k.clone(), v.clone());
            }
        }
    }
    annotations.insert(REVISION.into(), json!((max_rev + 1).to_string()));
    if let Some(sizes) = d.size_annotations().as_object() {
        for (k, v) in sizes {
            annotations.insert(k.clone(), v.clone());
        }
    }
    json!({
        "metadata": {"name": format!("{}-{hash}", d.name), "namespace": d.namespace, "labels": labels,
                     "annotations": annotations,
                     "ownerReferences": [controller_ref(d_obj, "Deployment")]},
        "spec": {"replicas": start, "minReadySeconds": d_obj["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                 "selector": selector, "template": tpl},
    })
}

/// The outcome of the last look at a rollout, for its Progressing condition.
#[derive(Clone, Copy, Debug)]
struct Judged {
    complete: bool,
    created_new: bool,
    progressed: bool,
    /// No progress for longer than `progressDeadlineSeconds`.
    past_deadline: bool,
}

/// The Progressing condition of a Deployment with a progress deadline; `rs` names its new
/// ReplicaSet.
fn set_progressing(conds: &mut Conditions, paused: bool, rs: &str, j: Judged) {
    let cur_reason = conds.reason("Progressing").to_string();
    if paused {
        conds.set(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
        );
    } else if j.complete {
        conds.set(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{rs}\" has successfully progressed."),
        );
    } else if j.created_new {
        conds.set(
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            &format!("Created new replica set \"{rs}\""),
        );
    } else if j.progressed {
        conds.set(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{rs}\" is progressing."),
        );
        // lastUpdateTime refreshes on every progress
        conds.touch("Progressing");
    } else if cur_reason == "ProgressDeadlineExceeded" || j.past_deadline {
        conds.set(
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            &format!("ReplicaSet \"{rs}\" has timed out progressing."),
        );
    } else if cur_reason.is_empty() || cur_reason == "DeploymentPaused" {
        conds.set(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{rs}\" is progressing."),
        );
    }
}

// ---------------------------------------------------------------------------------------
// The arithmetic of a rolling update

/// The size the new ReplicaSet may grow to within maxSurge (never past `replicas`; back to
/// it when above).
fn surge_target(d: &DeploymentView, old_spec_total: i64, new_spec: i64) -> i64 {
    let total = old_spec_total + new_spec;
    let max_total = d.replicas + d.max_surge;
    if total < max_total {
        (new_spec + (max_total - total)).min(d.replicas)
    } else if new_spec > d.replicas {
        d.replicas
    } else {
        new_spec
    }
}

/// How many old pods may go now without the Deployment falling below its minimum
/// availability (`replicas - maxUnavailable`), counting the new pods not yet available.
fn scale_down_budget(
    d: &DeploymentView,
    old_spec_total: i64,
    new_target: i64,
    new_available: i64,
) -> i64 {
    let min_available = d.replicas - d.max_unavailable;
    let new_unavailable = (new_target - new_available).max(0);
    old_spec_total + new_target - min_available - new_unavailable
}

fn by_revision(mut rss: Vec<OwnedReplicaSet>) -> Vec<OwnedReplicaSet> {
    rss.sort_by_key(|r| r.revision);
    rss
}

/// The old ReplicaSets' unavailable pods go first, oldest revision first, within `budget`:
/// the new sizes, and the budget left.
fn cut_unhealthy(olds: &[OwnedReplicaSet], mut budget: i64) -> (Vec<(String, i64)>, i64) {
    let mut cuts = Vec::new();
    for o in olds {
        let unhealthy = (o.spec_replicas - o.available).max(0).min(o.spec_replicas);
        let cut = unhealthy.min(budget.max(0));
        if cut > 0 {
            cuts.push((o.name.clone(), o.spec_replicas - cut));
            budget -= cut;
        }
    }
    (cuts, budget)
}

/// Then any old pods, oldest revision first, within what is left of the budget.
fn cut_oldest(olds: &[OwnedReplicaSet], mut budget: i64) -> Vec<(String, i64)> {
    let mut cuts = Vec::new();
    for o in olds {
        if budget <= 0 {
            break;
        }
        let cut = o.spec_replicas.min(budget);
        if cut > 0 {
            cuts.push((o.name.clone(), o.spec_replicas - cut));
            budget -= cut;
        }
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i64, surge: &str, unavailable: &str) -> DeploymentView {
        DeploymentView::read(&json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "generation": 2},
            "spec": {"replicas": replicas,
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                     "template": {"metadata": {"labels": {"app": "web"}}}},
        }))
    }

    fn rs(name: &str, revision: i64, spec: i64, available: i64) -> OwnedReplicaSet {
        OwnedReplicaSet {
            name: name.into(),
            revision,
            spec_replicas: spec,
            replicas: spec,
            available,
            ..Default::default()
        }
    }

    #[test]
    fn a_deployment_is_read_with_the_api_servers_defaults() {
        let d = deployment(4, "25%", "25%");
        assert_eq!((d.replicas, d.max_surge, d.max_unavailable), (4, 1, 1));
        assert_eq!(d.strategy, Strategy::RollingUpdate);
        assert!(!d.paused);
        // maxSurge rounds up, maxUnavailable down; both zero would deadlock: one may go
        let d = deployment(3, "0%", "10%");
        assert_eq!((d.max_surge, d.max_unavailable), (0, 1));
        let d = DeploymentView::read(&json!({"spec": {"strategy": {"type": "Recreate"}}}));
        assert_eq!((d.replicas, d.strategy), (1, Strategy::Recreate));
    }

    #[test]
    fn the_new_replica_set_grows_within_max_surge() {
        let d = deployment(4, "25%", "25%");
        assert_eq!(surge_target(&d, 4, 0), 1, "one over the desired count");
        assert_eq!(
            surge_target(&d, 4, 1),
            1,
            "no more while the old ones are full"
        );
        assert_eq!(surge_target(&d, 2, 1), 3);
        assert_eq!(surge_target(&d, 0, 6), 4, "never past the desired count");
    }

    #[test]
    fn old_pods_go_within_max_unavailable_unhealthy_first_then_the_oldest() {
        let d = deployment(4, "25%", "25%");
        // 4 old + 1 new (not yet available): 5 - 3 needed - 1 unavailable = 1 may go
        assert_eq!(scale_down_budget(&d, 4, 1, 0), 1);
        assert_eq!(scale_down_budget(&d, 4, 1, 1), 2);
        let olds = by_revision(vec![rs("web-b", 2, 2, 1), rs("web-a", 1, 3, 3)]);
        assert_eq!(olds[0].name, "web-a", "the oldest revision first");
        let (cuts, left) = cut_unhealthy(&olds, 2);
        assert_eq!(
            cuts,
            [("web-b".to_string(), 1)],
            "web-a's pods are all available"
        );
        assert_eq!(left, 1);
        let cuts = cut_oldest(&olds, left);
        assert_eq!(cuts, [("web-a".to_string(), 2)]);
        assert!(cut_oldest(&olds, 0).is_empty());
        assert!(
            cut_unhealthy(&olds, -1).0.is_empty(),
            "a negative budget cuts nothing"
        );
    }

    #[test]
    fn progressing_follows_the_rollout_and_its_deadline() {
        let reason = |conds: &Conditions| conds.reason("Progressing").to_string();
        let judged = Judged {
            complete: false,
            created_new: true,
            progressed: true,
            past_deadline: false,
        };
        let mut conds = Conditions::of(&json!({}), true);
        set_progressing(&mut conds, false, "web-1", judged);
        assert_eq!(reason(&conds), "NewReplicaSetCreated");
        let stalled = Judged {
            created_new: false,
            progressed: false,
            past_deadline: true,
            ..judged
        };
        set_progressing(&mut conds, false, "web-1", stalled);
        assert_eq!(reason(&conds), "ProgressDeadlineExceeded");
        // once exceeded it stays so until the rollout moves again
        let quiet = Judged {
            past_deadline: false,
            ..stalled
        };
        set_progressing(&mut conds, false, "web-1", quiet);
        assert_eq!(reason(&conds), "ProgressDeadlineExceeded");
        set_progressing(
            &mut conds,
            false,
            "web-1",
            Judged {
                progressed: true,
                ..quiet
            },
        );
        assert_eq!(reason(&conds), "ReplicaSetUpdated");
        set_progressing(&mut conds, true, "web-1", quiet);
        assert_eq!(reason(&conds), "DeploymentPaused");
    }
}
