//! The DaemonSet controller: one pod per node, outdated pods replaced by a RollingUpdate
//! within maxUnavailable (never by OnDelete), and the status counts.

use serde_json::{Value, json};

use super::common::{deleting, int_or_percent, template_hash};
use super::{Ctl, rt};
use crate::kube::object::{label, name_of, ns_of, pod_ready, uid_of};

/// What the DaemonSet controller reads of a DaemonSet.
struct DaemonSetView {
    namespace: String,
    name: String,
    uid: String,
    /// The `controller-revision-hash` of its template.
    template_hash: String,
    /// `updateStrategy: RollingUpdate` (the default), else OnDelete.
    rolling: bool,
    /// `maxUnavailable` of `nodes` nodes (at least 1).
    max_unavailable: i64,
    generation: Value,
}

impl DaemonSetView {
    fn read(ds: &Value, nodes: usize) -> Self {
        let strategy = &ds["spec"]["updateStrategy"];
        Self {
            namespace: ns_of(ds).to_string(),
            name: name_of(ds).to_string(),
            uid: uid_of(ds).to_string(),
            template_hash: template_hash(&ds["spec"]["template"]),
            rolling: strategy["type"].as_str().unwrap_or("RollingUpdate") == "RollingUpdate",
            max_unavailable: int_or_percent(
                &strategy["rollingUpdate"]["maxUnavailable"],
                nodes as i64,
                false,
            )
            .max(1),
            generation: ds["metadata"]["generation"].clone(),
        }
    }

    fn updated(&self, pod: &Value) -> bool {
        label(pod, "controller-revision-hash") == Some(self.template_hash.as_str())
    }
}

impl Ctl<'_> {
    pub(super) fn daemonset(&mut self, ns: &str, name: &str) {
        let Some(obj) = self.client.get(rt("daemonsets"), ns, name) else {
            return;
        };
        if deleting(&obj) {
            return;
        }
        let (nodes, _) = self.client.list(rt("nodes"), None);
        let ds = DaemonSetView::read(&obj, nodes.len());
        for node in &nodes {
            let node_name = name_of(node);
            let pods = self.pods_of(&ds.namespace, &ds.uid);
            if pods.iter().any(|p| p["spec"]["nodeName"] == node_name) {
                continue;
            }
            if let Err(e) = self.create_pod(self.daemon_pod(&obj, &ds, node_name)) {
                self.warn(
                    &obj,
                    "DaemonSet",
                    "FailedCreate",
                    &format!("Error creating: {}", e.message),
                );
                break;
            }
        }
        if ds.rolling {
            self.replace_outdated(&ds, nodes.len() as i64);
        }
        self.daemonset_status(&ds, nodes.len() as i64);
    }

    fn daemon_pod(&self, obj: &Value, ds: &DaemonSetView, node: &str) -> Value {
        let mut pod = self.pod_from_template(
            obj,
            "DaemonSet",
            &format!("{}-", ds.name),
            None,
            &[
                ("controller-revision-hash", ds.template_hash.as_str()),
                ("pod-template-generation", &ds.generation.to_string()),
            ],
        );
        pod["spec"]["nodeName"] = json!(node);
        pod
    }

    /// RollingUpdate: outdated pods go while fewer than maxUnavailable are unavailable.
    fn replace_outdated(&self, ds: &DaemonSetView, nodes: i64) {
        let pods = self.pods_of(&ds.namespace, &ds.uid);
        let unavailable = pods.iter().filter(|p| !pod_ready(p)).count() as i64
            + (nodes - pods.len() as i64).max(0);
        let budget = ds.max_unavailable - unavailable;
        for p in pods
            .iter()
            .filter(|p| !ds.updated(p))
            .take(budget.max(0) as usize)
        {
            let _ = self.client.delete(rt("pods"), &ds.namespace, name_of(p));
            self.forget_proxy(uid_of(p));
        }
    }

    fn daemonset_status(&self, ds: &DaemonSetView, desired: i64) {
        let pods = self.pods_of(&ds.namespace, &ds.uid);
        let ready = pods.iter().filter(|p| pod_ready(p)).count() as i64;
        let updated = pods.iter().filter(|p| ds.updated(p)).count() as i64;
        let mut status = json!({
            "observedGeneration": ds.generation.clone(),
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
        self.write_status("daemonsets", &ds.namespace, &ds.name, status);
    }
}
