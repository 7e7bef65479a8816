//! What every workload controller reads and writes alike: owner references, the
//! pod-template hash, int-or-percent fields, status conditions, status writes and Events.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Ctl, rt};
use crate::kube::object::{meta_str, name_of, now_rfc3339, ns_of, uid_of};

/// The controller owner of an object: its kind and name.
pub(super) fn owner_ref(obj: &Value) -> Option<(&str, &str)> {
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

/// The ownerReference a controller puts on what it creates for `owner`.
pub(super) fn controller_ref(owner: &Value, kind: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": name_of(owner),
        "uid": uid_of(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// `obj`'s controller owner has `uid`.
pub(super) fn owned_by(obj: &Value, uid: &str) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["uid"] == uid && r["controller"] == true))
}

pub(super) fn deleting(obj: &Value) -> bool {
    obj["metadata"].get("deletionTimestamp").is_some()
}

pub(super) fn fnv32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in bytes {
        h ^= *b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    h
}

/// FNV-32a of the template, in the alphabet the controller uses for `pod-template-hash`.
pub(super) fn template_hash(template: &Value) -> String {
    let h = fnv32(template.to_string().as_bytes());
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|c| ALPHA[c as usize % ALPHA.len()] as char)
        .collect()
}

/// An int-or-percent field (`maxSurge: 25%`) of `total`, rounded up or down.
pub(super) fn int_or_percent(v: &Value, total: i64, round_up: bool) -> i64 {
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

/// An integer field, 0 when absent.
pub(super) fn i(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// A status's conditions, set as the controllers set them: `lastTransitionTime` only moves
/// when the status does, and (for Deployments) `lastUpdateTime` when anything does.
pub(super) struct Conditions {
    list: Vec<Value>,
    with_update_time: bool,
}

impl Conditions {
    /// The conditions of `status`.
    pub(super) fn of(status: &Value, with_update_time: bool) -> Self {
        Self {
            list: status["conditions"].as_array().cloned().unwrap_or_default(),
            with_update_time,
        }
    }

    pub(super) fn set(&mut self, ctype: &str, status: &str, reason: &str, message: &str) {
        let now = now_rfc3339();
        let pos = self.list.iter().position(|c| c["type"] == ctype);
        let mut c = json!({"type": ctype, "status": status, "reason": reason, "message": message});
        if let Some(p) = pos {
            let old = &self.list[p];
            c["lastTransitionTime"] = if old["status"] == status {
                old["lastTransitionTime"].clone()
            } else {
                json!(now)
            };
            if self.with_update_time {
                let same =
                    old["status"] == status && old["reason"] == reason && old["message"] == message;
                c["lastUpdateTime"] = if same {
                    old["lastUpdateTime"].clone()
                } else {
                    json!(now)
                };
            }
            self.list[p] = c;
        } else {
            c["lastTransitionTime"] = json!(now);
            if self.with_update_time {
                c["lastUpdateTime"] = json!(now);
            }
            self.list.push(c);
        }
    }

    /// The reason of the condition of type `ctype` ("" when it has none).
    pub(super) fn reason(&self, ctype: &str) -> &str {
        self.list
            .iter()
            .find(|c| c["type"] == ctype)
            .and_then(|c| c["reason"].as_str())
            .unwrap_or("")
    }

    /// Moves `lastUpdateTime` of the condition of type `ctype` to now.
    pub(super) fn touch(&mut self, ctype: &str) {
        if let Some(c) = self.list.iter_mut().find(|c| c["type"] == ctype) {
            c["lastUpdateTime"] = json!(now_rfc3339());
        }
    }

    pub(super) fn remove(&mut self, ctype: &str) {
        self.list.retain(|c| c["type"] != ctype);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The conditions in the order a Deployment shows them: Available, Progressing, the rest.
    pub(super) fn sort_for_deployment(&mut self) {
        self.list.sort_by_key(|c| match c["type"].as_str() {
            Some("Available") => 0,
            Some("Progressing") => 1,
            _ => 2,
        });
    }

    pub(super) fn into_value(self) -> Value {
        Value::Array(self.list)
    }
}

/// The condition of type `ctype` with status True in `status`, if any.
pub(super) fn true_condition(status: &Value, ctype: &str) -> Option<Value> {
    status["conditions"].as_array().and_then(|c| {
        c.iter()
            .find(|c| c["type"] == ctype && c["status"] == "True")
            .cloned()
    })
}

/// Removes the counts among `fields` that are zero, as the controllers omit them.
pub(super) fn drop_zeros(status: &mut Value, fields: &[&str]) {
    for k in fields {
        if status[*k] == 0 {
            status.as_object_mut().map(|m| m.remove(*k));
        }
    }
}

impl Ctl<'_> {
    /// Writes `status` if it differs.
    pub(super) fn write_status(&self, plural: &str, ns: &str, name: &str, status: Value) {
        let _ = self.client.update(rt(plural), ns, name, |cur| {
            if cur["status"] == status {
                return Ok(None);
            }
            let mut n = cur.clone();
            n["status"] = status;
            Ok(Some(n))
        });
    }

    /// The pods whose controller owner has `uid`.
    pub(super) fn pods_of(&self, ns: &str, uid: &str) -> Vec<Arc<Value>> {
        self.client
            .list_owned(rt("pods"), Some(ns), uid)
            .into_iter()
            .filter(|p| owned_by(p, uid))
            .collect()
    }

    /// Records a Warning Event (aggregated by involved object and reason, as the recorder does).
    pub(super) fn warn(&self, obj: &Value, kind: &str, reason: &str, message: &str) {
        let ns = ns_of(obj);
        let name = format!("{}.{:08x}", name_of(obj), fnv32(reason.as_bytes()));
        let now = now_rfc3339();
        let ev_rt = rt("events");
        if self.client.get(ev_rt, ns, &name).is_some() {
            let _ = self.client.update(ev_rt, ns, &name, |cur| {
                let mut n = cur.clone();
                n["count"] = json!(i(&cur["count"]) + 1);
                n["lastTimestamp"] = json!(now);
                n["message"] = json!(message);
                Ok(Some(n))
            });
            return;
        }
        let _ = self.client.create(
            ev_rt,
            json!({
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": {"kind": kind, "namespace": ns, "name": name_of(obj), "uid": uid_of(obj),
                                   "apiVersion": "apps/v1", "resourceVersion": meta_str(obj, "resourceVersion")},
                "reason": reason, "message": message, "type": "Warning", "count": 1,
                "firstTimestamp": now, "lastTimestamp": now,
                "source": {"component": if kind == "ReplicaSet" { "replicaset-controller" } else { "statefulset-controller" }},
                "reportingComponent": "", "reportingInstance": "",
            }),
        );
    }
}
