//! The restart of a workload whose controller does not replace its pods on a template change
//! (`updateStrategy: OnDelete`): its pods are deleted one at a time, each replacement waited
//! for (ready, and injected by the wanted revision) before the next pod goes.
//!
//! Idempotent: a pod already on the revision is left alone, so a resumed restart deletes only
//! what is still to move.

use std::time::Duration;

use kube::Client;
use kube::api::{Api, DeleteParams};

use super::pods::{Owner, PodInfo, list_pods};
use super::{K8sError, WorkloadRef, target};
use k8s_openapi::api::core::v1::Pod;

/// How often the wait for a replacement looks again.
const POLL: Duration = Duration::from_millis(250);

/// The pods of `w`, not being deleted.
async fn pods_of(client: &Client, w: &WorkloadRef) -> Result<Vec<PodInfo>, K8sError> {
    Ok(list_pods(client, Some(&w.namespace), None)
        .await?
        .into_iter()
        .filter(|p| !p.terminating && p.owner == Owner::Workload(w.clone()))
        .collect())
}

/// The next pod to delete: one not on `revision` (the pods are named in order, as a
/// StatefulSet's are: the highest ordinal first, as its own rolling update goes).
pub fn next_to_move<'a>(pods: &'a [PodInfo], revision: &str) -> Option<&'a PodInfo> {
    pods.iter()
        .filter(|p| p.revision.revision() != Some(revision))
        .max_by(|a, b| a.name.cmp(&b.name))
}

/// Whether the workload has settled after `gone` was deleted: that pod is gone, no pod is
/// unready, and at least `on_before + 1` pods are ready on `revision`.
pub fn replaced(pods: &[PodInfo], gone_uid: &str, revision: &str, on_before: usize) -> bool {
    let on = pods
        .iter()
        .filter(|p| p.ready && p.revision.revision() == Some(revision))
        .count();
    !pods.iter().any(|p| p.uid.as_deref() == Some(gone_uid))
        && pods.iter().all(|p| p.ready)
        && on > on_before
}

/// Deletes the pods of `w` not on `revision` one at a time, each replacement ready on
/// `revision` before the next; returns how many were deleted. `on_moved` hears each one.
pub async fn replace_pods_one_by_one(
    client: &Client,
    w: &WorkloadRef,
    revision: &str,
    timeout: Duration,
    on_moved: &mut (dyn FnMut(&str) + Send),
) -> Result<usize, K8sError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &w.namespace);
    let mut moved = 0;
    loop {
        let pods = pods_of(client, w).await?;
        let Some(pod) = next_to_move(&pods, revision) else {
            return Ok(moved);
        };
        let on_before = pods
            .iter()
            .filter(|p| p.ready && p.revision.revision() == Some(revision))
            .count();
        let (name, uid) = (pod.name.clone(), pod.uid.clone().unwrap_or_default());
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(K8sError::Api {
                    action: "delete",
                    kind: "Pod",
                    target: target(&w.namespace, &name),
                    source,
                });
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now = pods_of(client, w).await?;
            if replaced(&now, &uid, revision, on_before) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(K8sError::Refused {
                    kind: "Pod",
                    target: target(&w.namespace, &name),
                    message: format!(
                        "deleted to move {w} to {revision}, but no replacement was ready and injected by {revision} within {}",
                        asm_canary_engine::duration::format_duration(timeout)
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
        moved += 1;
        on_moved(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::istio::PodRevision;
    use crate::k8s::WorkloadKind;

    fn mk_pod(name: &str, uid: &str, rev: Option<&str>, ready: bool) -> PodInfo {
        PodInfo {
            namespace: "orders".into(),
            name: name.into(),
            uid: Some(uid.into()),
            phase: Some("Running".into()),
            ready,
            terminating: false,
            revision: match rev {
                Some(r) => PodRevision::Injected {
                    revision: r.into(),
                    source: crate::istio::RevisionSource::StatusAnnotation,
                    placement: None,
                    proxy_image: None,
                },
                None => PodRevision::NotInjected,
            },
            owner: Owner::Workload(WorkloadRef::new(
                WorkloadKind::StatefulSet,
                "orders",
                "ledger",
            )),
            opted_out: false,
        }
    }

    #[test]
    fn the_highest_ordinal_not_on_the_revision_goes_first() {
        let pods = [
            mk_pod("ledger-0", "a", Some("asm-1-27"), true),
            mk_pod("ledger-1", "b", None, true),
            mk_pod("ledger-2", "c", Some("asm-1-29"), true),
        ];
        assert_eq!(
            next_to_move(&pods, "asm-1-29").map(|p| p.name.as_str()),
            Some("ledger-1")
        );
        assert!(next_to_move(&pods[2..], "asm-1-29").is_none());
    }

    #[test]
    fn a_replacement_counts_once_ready_on_the_revision_and_the_old_pod_gone() {
        let old = mk_pod("ledger-1", "b", Some("asm-1-27"), true);
        let new_unready = mk_pod("ledger-1", "b2", Some("asm-1-29"), false);
        let new_ready = mk_pod("ledger-1", "b2", Some("asm-1-29"), true);
        let wrong = mk_pod("ledger-1", "b3", Some("asm-1-27"), true);
        let other = mk_pod("ledger-0", "a", Some("asm-1-27"), true);
        assert!(!replaced(&[other.clone(), old], "b", "asm-1-29", 0));
        assert!(!replaced(&[other.clone(), new_unready], "b", "asm-1-29", 0));
        assert!(!replaced(&[other.clone(), wrong], "b", "asm-1-29", 0));
        assert!(replaced(&[other, new_ready], "b", "asm-1-29", 0));
    }
}
