//! The StatefulSet controller: pods `<name>-<ordinal>`, created in order (OrderedReady waits
//! for each to be ready) with the revision of their ordinal (below the partition the current
//! one), removed highest ordinal first on scale-down, replaced one at a time highest ordinal
//! first by a RollingUpdate (never by OnDelete), and the status with its revisions.

use serde_json::{Value, json};

use super::common::{deleting, i, template_hash};
use super::{Ctl, rt};
use crate::kube::object::{label, name_of, ns_of, pod_ready, uid_of};

/// What the StatefulSet controller reads of a StatefulSet.
struct StatefulSetView {
    namespace: String,
    name: String,
    uid: String,
    /// `spec.replicas` (1 when absent).
    replicas: i64,
    /// The revision of the current template (`<name>-<template hash>`).
    update_revision: String,
    /// `status.currentRevision` ("" until one is recorded).
    current_revision: String,
    /// `updateStrategy: RollingUpdate` (the default), else OnDelete.
    rolling: bool,
    partition: i64,
    /// `podManagementPolicy: OrderedReady` (the default), else Parallel.
    ordered: bool,
    generation: Value,
}

impl StatefulSetView {
    fn read(sts: &Value) -> Self {
        let name = name_of(sts).to_string();
        let strategy = &sts["spec"]["updateStrategy"];
        Self {
            namespace: ns_of(sts).to_string(),
            uid: uid_of(sts).to_string(),
            replicas: sts["spec"]["replicas"].as_i64().unwrap_or(1),
            update_revision: format!("{name}-{}", template_hash(&sts["spec"]["template"])),
            current_revision: sts["status"]["currentRevision"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            rolling: strategy["type"].as_str().unwrap_or("RollingUpdate") == "RollingUpdate",
            partition: i(&strategy["rollingUpdate"]["partition"]),
            ordered: sts["spec"]["podManagementPolicy"]
                .as_str()
                .unwrap_or("OrderedReady")
                == "OrderedReady",
            generation: sts["metadata"]["generation"].clone(),
            name,
        }
    }
}

/// A StatefulSet pod's ordinal (`web-2` → 2; -1 when it has none).
fn ordinal(p: &Value) -> i64 {
    name_of(p)
        .rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1)
}

fn revision_of(p: &Value) -> Option<&str> {
    label(p, "controller-revision-hash")
}

impl Ctl<'_> {
    pub(super) fn statefulset(&mut self, ns: &str, name: &str) {
        let Some(obj) = self.client.get(rt("statefulsets"), ns, name) else {
            return;
        };
        if deleting(&obj) {
            return;
        }
        let sts = StatefulSetView::read(&obj);
        self.create_missing_ordinals(&obj, &sts);
        self.remove_highest_surplus(&sts);
        if sts.rolling {
            self.replace_one_outdated(&sts);
        }
        self.statefulset_status(&sts);
    }

    /// Creates the missing pods in ordinal order; OrderedReady stops at a pod not ready yet
    /// (and, but while the cluster settles, after each create).
    fn create_missing_ordinals(&self, obj: &Value, sts: &StatefulSetView) {
        let name = &sts.name;
        for ord in 0..sts.replicas {
            let pods = self.pods_of(&sts.namespace, &sts.uid);
            if pods.iter().any(|p| ordinal(p) == ord) {
                if sts.ordered && !pods.iter().any(|p| ordinal(p) == ord && pod_ready(p)) {
                    break;
                }
                continue;
            }
            // pods below the partition keep the current revision's template
            let rev = if sts.rolling && ord < sts.partition && !sts.current_revision.is_empty() {
                &sts.current_revision
            } else {
                &sts.update_revision
            };
            let pod_name = format!("{name}-{ord}");
            let pod = self.pod_from_template(
                obj,
                "StatefulSet",
                "",
                Some(pod_name.clone()),
                &[
                    ("controller-revision-hash", rev.as_str()),
                    ("statefulset.kubernetes.io/pod-name", &pod_name),
                    ("apps.kubernetes.io/pod-index", &ord.to_string()),
                ],
            );
            if let Err(e) = self.create_pod(pod) {
                self.warn(
                    obj,
                    "StatefulSet",
                    "FailedCreate",
                    &format!(
                        "create Pod {name}-{ord} in StatefulSet {name} failed error: {}",
                        e.message
                    ),
                );
                break;
            }
            if sts.ordered && !self.instant {
                break;
            }
        }
    }

    /// Scale-down: the highest ordinal past `replicas` goes.
    fn remove_highest_surplus(&self, sts: &StatefulSetView) {
        let pods = self.pods_of(&sts.namespace, &sts.uid);
        if let Some(p) = pods
            .iter()
            .filter(|p| ordinal(p) >= sts.replicas)
            .max_by_key(|p| ordinal(p))
        {
            let _ = self.client.delete(rt("pods"), &sts.namespace, name_of(p));
            self.forget_proxy(uid_of(p));
        }
    }

    /// RollingUpdate: once every pod is ready, the highest outdated ordinal at or above the
    /// partition goes (it comes back with the new template).
    fn replace_one_outdated(&self, sts: &StatefulSetView) {
        let pods = self.pods_of(&sts.namespace, &sts.uid);
        let all_ready = pods.len() as i64 >= sts.replicas && pods.iter().all(|p| pod_ready(p));
        if all_ready
            && let Some(p) = pods
                .iter()
                .filter(|p| {
                    ordinal(p) >= sts.partition
                        && revision_of(p) != Some(sts.update_revision.as_str())
                })
                .max_by_key(|p| ordinal(p))
        {
            let _ = self.client.delete(rt("pods"), &sts.namespace, name_of(p));
            self.forget_proxy(uid_of(p));
        }
    }

    fn statefulset_status(&self, sts: &StatefulSetView) {
        let pods = self.pods_of(&sts.namespace, &sts.uid);
        let ready = pods.iter().filter(|p| pod_ready(p)).count() as i64;
        let with_revision =
            |rev: &str| pods.iter().filter(|p| revision_of(p) == Some(rev)).count() as i64;
        let updated = with_revision(&sts.update_revision);
        let mut current_rev = sts.current_revision.clone();
        if current_rev.is_empty() || (updated == sts.replicas && ready == sts.replicas) {
            current_rev = sts.update_revision.clone();
        }
        let status = json!({
            "observedGeneration": sts.generation.clone(),
            "replicas": pods.len(),
            "readyReplicas": ready,
            "currentReplicas": with_revision(&current_rev),
            "updatedReplicas": updated,
            "availableReplicas": ready,
            "currentRevision": current_rev,
            "updateRevision": sts.update_revision,
            "collisionCount": 0,
        });
        self.write_status("statefulsets", &sts.namespace, &sts.name, status);
    }
}
