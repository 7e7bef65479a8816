//! The ReplicaSet controller: as many live pods as `spec.replicas` (not-ready and newest go
//! first), a FailedCreate Event and ReplicaFailure condition when admission refuses a pod,
//! and the status counts. Pods are judged on what the store indexes of them: none is parsed.

use std::sync::Arc;

use serde_json::{Value, json};

use super::common::{Conditions, deleting, drop_zeros, i};
use super::{Ctl, rt};
use crate::kube::object::{name_of, ns_of, uid_of};
use crate::kube::selectors::LabelSelector;
use crate::kube::store::Stored;

/// What the ReplicaSet controller reads of a ReplicaSet.
struct ReplicaSetView {
    namespace: String,
    name: String,
    uid: String,
    /// `spec.replicas` (0 when absent).
    replicas: i64,
    selector: LabelSelector,
    generation: Value,
    status: Value,
}

impl ReplicaSetView {
    fn read(rs: &Value) -> Self {
        Self {
            namespace: ns_of(rs).to_string(),
            name: name_of(rs).to_string(),
            uid: uid_of(rs).to_string(),
            replicas: i(&rs["spec"]["replicas"]),
            selector: LabelSelector::from_json(rs["spec"].get("selector")),
            generation: rs["metadata"]["generation"].clone(),
            status: rs["status"].clone(),
        }
    }
}

fn is_ready(p: &Stored) -> bool {
    p.pod.as_ref().is_some_and(|f| f.ready)
}

impl Ctl<'_> {
    pub(super) fn replicaset(&mut self, ns: &str, name: &str) {
        let Some(obj) = self.client.get(rt("replicasets"), ns, name) else {
            return;
        };
        if deleting(&obj) {
            return;
        }
        let rs = ReplicaSetView::read(&obj);
        let live: Vec<Arc<Stored>> = self
            .replica_set_pods(&rs)
            .into_iter()
            .filter(|p| !p.deleting)
            .collect();
        let have = live.len() as i64;
        let mut failure = None;
        if have < rs.replicas {
            failure = self.create_pods(&obj, &rs, rs.replicas - have);
        } else if have > rs.replicas {
            self.delete_surplus(&rs, live, (have - rs.replicas) as usize);
        }
        self.replica_set_status(&rs, have, failure);
    }

    /// The pods the ReplicaSet controls, deleting ones included.
    fn replica_set_pods(&self, rs: &ReplicaSetView) -> Vec<Arc<Stored>> {
        self.client
            .list_owned_raw(rt("pods"), Some(&rs.namespace), &rs.uid)
            .into_iter()
            .filter(|p| {
                p.controller
                    .as_ref()
                    .is_some_and(|(k, n)| k == "ReplicaSet" && *n == rs.name)
            })
            .collect()
    }

    /// Creates `n` pods; the first refusal stops, and its message is returned.
    fn create_pods(&self, obj: &Value, rs: &ReplicaSetView, n: i64) -> Option<String> {
        for _ in 0..n {
            let pod =
                self.pod_from_template(obj, "ReplicaSet", &format!("{}-", rs.name), None, &[]);
            if let Err(e) = self.create_pod(pod) {
                self.warn(
                    obj,
                    "ReplicaSet",
                    "FailedCreate",
                    &format!("Error creating: {}", e.message),
                );
                return Some(e.message);
            }
        }
        None
    }

    /// Deletes `n` of the live pods: not ready first, then the newest.
    fn delete_surplus(&self, rs: &ReplicaSetView, mut live: Vec<Arc<Stored>>, n: usize) {
        live.sort_by(|a, b| {
            is_ready(a)
                .cmp(&is_ready(b))
                .then_with(|| b.creation_timestamp.cmp(&a.creation_timestamp))
                .then_with(|| b.name.cmp(&a.name))
        });
        for p in live.iter().take(n) {
            let _ = self.client.delete(rt("pods"), &rs.namespace, &p.name);
            self.forget_proxy(&p.uid);
        }
    }

    /// `had` live pods before this pass; `failure` is why a create was refused.
    fn replica_set_status(&self, rs: &ReplicaSetView, had: i64, failure: Option<String>) {
        let all = self.replica_set_pods(rs);
        let terminating = all.iter().filter(|p| p.deleting).count();
        let pods: Vec<Arc<Stored>> = all.into_iter().filter(|p| !p.deleting).collect();
        let ready = pods.iter().filter(|p| is_ready(p)).count() as i64;
        let labeled = pods
            .iter()
            .filter(|p| rs.selector.matches(Some(&p.labels)))
            .count() as i64;
        let mut conds = Conditions::of(&rs.status, false);
        match &failure {
            Some(msg) => conds.set("ReplicaFailure", "True", "FailedCreate", msg),
            None if had < rs.replicas || pods.len() as i64 == rs.replicas => {
                conds.remove("ReplicaFailure")
            }
            None => {}
        }
        let mut status = json!({
            "replicas": pods.len(),
            "fullyLabeledReplicas": labeled,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "terminatingReplicas": terminating,
            "observedGeneration": rs.generation.clone(),
        });
        if !conds.is_empty() {
            status["conditions"] = conds.into_value();
        }
        drop_zeros(
            &mut status,
            &["fullyLabeledReplicas", "readyReplicas", "availableReplicas"],
        );
        self.write_status("replicasets", &rs.namespace, &rs.name, status);
    }
}
