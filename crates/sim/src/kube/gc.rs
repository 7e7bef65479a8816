//! Garbage collection by ownerReferences: deleting an owner deletes its dependents
//! (Background and Foreground both delete them right after the owner here), or strips the
//! ownerReference from them (Orphan).

use serde_json::Value;

use super::object::{name_of, ns_of, uid_of};
use super::resources::{RESOURCES, ResourceType};
use super::status::ApiError;
use super::store::{Obj, Store};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Background" => Some(Self::Background),
            "Foreground" => Some(Self::Foreground),
            "Orphan" => Some(Self::Orphan),
            _ => None,
        }
    }
}

fn owned_by(obj: &Value, uid: &str) -> bool {
    obj.get("metadata")
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(uid)))
}

/// Dependents of the object with `uid` in `namespace` (and cluster-scoped ones).
pub fn dependents(store: &Store, namespace: &str, uid: &str) -> Vec<(&'static ResourceType, Obj)> {
    let mut out = Vec::new();
    for rt in RESOURCES {
        let ns = match (rt.namespaced, namespace.is_empty()) {
            (true, true) => continue,
            (true, false) => Some(namespace),
            (false, _) => None,
        };
        for o in store.list_owned(rt, ns, uid) {
            if owned_by(&o, uid) {
                out.push((rt, o));
            }
        }
    }
    out
}

/// Handles the dependents of a deleted owner.
pub fn collect(store: &Store, deleted: &Value, policy: Propagation) {
    let uid = uid_of(deleted).to_string();
    let ns = ns_of(deleted).to_string();
    for (rt, dep) in dependents(store, &ns, &uid) {
        match policy {
            Propagation::Orphan => {
                let _ = store.update_with(rt, ns_of(&dep), name_of(&dep), |cur| {
                    let mut new = cur.clone();
                    if let Some(refs) = new["metadata"]
                        .get_mut("ownerReferences")
                        .and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| r["uid"].as_str() != Some(&uid));
                        if refs.is_empty() {
                            new["metadata"]
                                .as_object_mut()
                                .map(|m| m.remove("ownerReferences"));
                        }
                    }
                    Ok::<_, ApiError>(Some(new))
                });
            }
            _ => {
                // a dependent with other live owners stays (it only loses this reference)
                let others = dep["metadata"]["ownerReferences"]
                    .as_array()
                    .map(|r| r.iter().filter(|r| r["uid"].as_str() != Some(&uid)).count())
                    .unwrap_or(0);
                if others > 0 {
                    continue;
                }
                if let Ok((gone, true)) = store.delete(rt, ns_of(&dep), name_of(&dep), None, None) {
                    collect(store, &gone, Propagation::Background);
                }
            }
        }
    }
}

/// Deletes an object and collects its dependents.
pub fn delete_cascade(
    store: &Store,
    rt: &'static ResourceType,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    let (obj, gone) = store.delete(rt, ns, name, None, None)?;
    if gone {
        collect(store, &obj, Propagation::Background);
    }
    Ok(())
}
