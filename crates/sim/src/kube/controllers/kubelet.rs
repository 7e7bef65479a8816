//! The kubelet's part: pods made from a workload's template, created through admission
//! (so they are injected), turned Running after a time-scaled delay (Ready, or never for the
//! scenario's faults: crash-looping istiod, stuck workloads), and the proxies that connect
//! to istiod when they do.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::common::{controller_ref, owner_ref};
use super::{Ctl, rt};
use crate::kube::istio::{is_istiod, pod_revision};
use crate::kube::object::{label, meta_str, name_of, now_rfc3339, ns_of, random_suffix, uid_of};
use crate::kube::scenario::SidecarRestart;
use crate::kube::status::ApiError;

impl Ctl<'_> {
    /// A pod of `owner`'s template: named `name`, or generated from `generate`; on a random
    /// node unless the template names one.
    pub(super) fn pod_from_template(
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
            let nodes = self.client.list_cached(rt("nodes"));
            if !nodes.is_empty() {
                let idx = random_suffix(1).bytes().next().unwrap_or(0) as usize % nodes.len();
                spec["nodeName"] = json!(name_of(&nodes[idx]));
            }
        }
        json!({"metadata": meta, "spec": spec})
    }

    /// Creates a pod; it turns Ready after the scenario's delay (at once, running, while the
    /// starting cluster settles).
    pub(super) fn create_pod(&self, pod: Value) -> Result<(), ApiError> {
        let created = self.create_pod_now(pod);
        if created.is_err() {
            self.refused.set(true);
        }
        created
    }

    /// [`Ctl::create_pod`], without noting a refusal.
    fn create_pod_now(&self, pod: Value) -> Result<(), ApiError> {
        if self.instant {
            // the starting cluster's pods are created running (one version, not two)
            let crashloop_revs = &self.kube.scenario.crashloop_revisions;
            self.client.create_then(rt("pods"), pod, |p| {
                let crashloop = is_istiod(p)
                    && label(p, "istio.io/rev")
                        .is_some_and(|r| crashloop_revs.iter().any(|c| c == r));
                let faults = self.faults_of(p);
                let ready = !crashloop && !faults.unready;
                let ip = format!("10.244.{}.{}", random_index(250), random_index(250) + 2);
                p["status"] = pod_status(p, ready, crashloop, &now_rfc3339(), &ip, faults.restart);
            })?;
            return Ok(());
        }
        let created = self.client.create(rt("pods"), pod)?;
        let ns = ns_of(&created).to_string();
        let name = name_of(&created).to_string();
        let uid = uid_of(&created).to_string();
        {
            let delay = self.ready_delay(&created);
            let when = Instant::now() + self.kube.clock.real(delay);
            self.kube
                .ready_timers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(when, (ns, name, uid));
        }
        Ok(())
    }

    fn ready_delay(&self, pod: &Value) -> Duration {
        let s = &self.kube.scenario;
        let secs = if is_istiod(pod) {
            s.istiod_ready_seconds
        } else {
            s.pod_ready_seconds
        };
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// Turns Running the pods whose readiness delay is over.
    pub(super) fn fire_timers(&self) {
        let now = Instant::now();
        let due = self
            .kube
            .ready_timers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_due(now);
        for (ns, name, uid) in due {
            let Some(pod) = self.client.get(rt("pods"), &ns, &name) else {
                continue;
            };
            if uid_of(&pod) != uid {
                continue;
            }
            self.make_ready_or_not(&pod, &uid);
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

    /// Moves `pod` (as just read, its uid `uid`) to Running: Ready, or (for faults) running
    /// but never ready.
    fn make_ready_or_not(&self, pod: &Value, uid: &str) {
        let (ns, name) = (ns_of(pod), name_of(pod));
        let workload = self.workload_of(pod);
        let rev = label(pod, "istio.io/rev").unwrap_or("").to_string();
        let crashloop = is_istiod(pod) && self.kube.scenario.crashloop_revisions.contains(&rev);
        // Stuck only where the scenario says: on the revisions it names (the new proxy is
        // the culprit, so a rollback to the old one recovers), or everywhere when it names none.
        let injected = pod
            .pointer("/metadata/annotations/istio.io~1rev")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let on = &self.kube.scenario.never_ready_revisions;
        let stuck = (on.is_empty() || on.iter().any(|r| r == injected))
            && self
                .kube
                .scenario
                .never_ready
                .iter()
                .any(|w| *w == format!("{ns}/{workload}"));
        let faults = self.faults_of(pod);
        let ready = !crashloop && !stuck && !faults.unready;
        let now = now_rfc3339();
        let pod_ip = format!("10.244.{}.{}", random_index(250), random_index(250) + 2);
        let status = pod_status(pod, ready, crashloop, &now, &pod_ip, faults.restart);
        let _ = self.client.update(rt("pods"), ns, name, |cur| {
            if uid_of(cur) != uid {
                return Ok(None);
            }
            let mut n = cur.clone();
            n["status"] = status;
            Ok(Some(n))
        });
        if ready && pod_revision(pod).is_some() {
            self.kube
                .proxies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(uid.to_string(), Instant::now());
        }
    }

    /// The scenario's faults for the workload of `pod` (`unready_workloads`, `sidecar_restarts`).
    fn faults_of(&self, pod: &Value) -> PodFaults<'_> {
        let workload = format!("{}/{}", ns_of(pod), self.workload_of(pod));
        let s = &self.kube.scenario;
        PodFaults {
            unready: s.unready_workloads.contains(&workload),
            restart: s.sidecar_restarts.iter().find(|r| r.workload == workload),
        }
    }

    /// The pod is gone: its proxy no longer counts as connected to istiod.
    pub(super) fn forget_proxy(&self, pod_uid: &str) {
        self.kube
            .proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pod_uid);
    }
}

/// What the scenario does to one workload's pods.
struct PodFaults<'a> {
    unready: bool,
    restart: Option<&'a SidecarRestart>,
}

fn random_index(n: usize) -> usize {
    use rand::Rng;
    rand::rng().random_range(0..n)
}

fn pod_status(
    pod: &Value,
    ready: bool,
    crashloop: bool,
    now: &str,
    ip: &str,
    restart: Option<&SidecarRestart>,
) -> Value {
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
        if let Some(r) = restart.filter(|_| cname == "istio-proxy") {
            // 137: killed by SIGKILL, as the kernel's OOM killer does
            let exit_code = if r.reason == "OOMKilled" { 137 } else { 1 };
            s["restartCount"] = json!(r.restarts);
            s["lastState"] = json!({"terminated": {"exitCode": exit_code, "reason": r.reason,
                "startedAt": started, "finishedAt": now}});
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
