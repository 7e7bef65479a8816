//! The workload controllers through kube-rs: rollout status fields through a restart
//! (kubectl's rules), maxSurge, paused Deployments, StatefulSets, DaemonSets.

mod common;

use std::collections::BTreeSet;

use common::{eventually, start};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use serde_json::json;

fn restart_patch(at: &str) -> Patch<serde_json::Value> {
    Patch::Strategic(
        json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": at}}}}}),
    )
}

fn kubectl_rollout_done(d: &Deployment) -> bool {
    let spec = d.spec.as_ref().unwrap();
    let st = d.status.clone().unwrap_or_default();
    let want = spec.replicas.unwrap_or(1);
    d.metadata.generation.unwrap_or(0) <= st.observed_generation.unwrap_or(0)
        && st.updated_replicas.unwrap_or(0) >= want
        && st.replicas.unwrap_or(0) <= st.updated_replicas.unwrap_or(0)
        && st.available_replicas.unwrap_or(0) >= st.updated_replicas.unwrap_or(0)
}

fn progressing_reason(d: &Deployment) -> String {
    d.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Progressing"))
        .and_then(|c| c.reason.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn rollout_status_fields_through_a_restart() {
    let (_sim, client) = start("healthy").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "frontend");
    let before = api.get("web").await.unwrap();
    assert!(kubectl_rollout_done(&before));
    assert_eq!(progressing_reason(&before), "NewReplicaSetAvailable");
    assert_eq!(
        before.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "1"
    );
    let g0 = before.metadata.generation.unwrap();
    let rv = before.metadata.resource_version.clone().unwrap();

    let mut watch = api
        .watch(
            &WatchParams::default()
                .fields("metadata.name=web")
                .timeout(20),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    let patched = api
        .patch(
            "web",
            &PatchParams::default().fields_manager_shim(),
            &restart_patch("2026-11-27T07:00:00+02:00"),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation.unwrap(), g0 + 1);

    let mut max_total = 0;
    let mut saw_in_progress = false;
    let mut reasons = BTreeSet::new();
    loop {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(10), watch.try_next())
            .await
            .expect("the rollout finishes")
            .unwrap();
        let Some(ev) = ev else {
            let d = api.get("web").await.unwrap();
            panic!(
                "stream ended; deployment now {}",
                serde_json::to_string_pretty(&d.status).unwrap()
            );
        };
        let d = match ev {
            WatchEvent::Modified(d) => d,
            WatchEvent::Bookmark(_) => continue,
            other => panic!("unexpected {other:?}"),
        };
        let st = d.status.clone().unwrap();
        max_total = max_total.max(st.replicas.unwrap_or(0));
        reasons.insert(progressing_reason(&d));
        if st.observed_generation == Some(g0 + 1) && !kubectl_rollout_done(&d) {
            saw_in_progress = true;
        }
        if st.observed_generation == Some(g0 + 1) && kubectl_rollout_done(&d) {
            assert_eq!(progressing_reason(&d), "NewReplicaSetAvailable");
            assert_eq!(
                d.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
                "2"
            );
            assert_eq!(st.replicas, Some(3));
            assert_eq!(st.ready_replicas, Some(3));
            break;
        }
    }
    assert!(saw_in_progress, "the rollout was observed in progress");
    assert!(
        max_total <= 4,
        "maxSurge 25% of 3 allows one extra pod, saw {max_total}"
    );
    assert!(
        reasons.contains("ReplicaSetUpdated") || reasons.contains("NewReplicaSetCreated"),
        "{reasons:?}"
    );

    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "frontend");
    let list = rss
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    assert_eq!(list.len(), 2);
    let new = list
        .iter()
        .find(|r| r.spec.as_ref().unwrap().replicas == Some(3))
        .unwrap();
    let old = list
        .iter()
        .find(|r| r.spec.as_ref().unwrap().replicas == Some(0))
        .unwrap();
    assert_eq!(
        new.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "2"
    );
    assert_eq!(
        old.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "1"
    );
    let hash = &new.metadata.labels.as_ref().unwrap()["pod-template-hash"];
    let pods: Api<Pod> = Api::namespaced(client.clone(), "frontend");
    // old pods may still be terminating (deletionTimestamp set) for their grace period
    let pods: Vec<Pod> = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(pods.len(), 3);
    assert!(
        pods.iter()
            .all(|p| &p.metadata.labels.as_ref().unwrap()["pod-template-hash"] == hash)
    );
    assert!(pods.iter().all(
        |p| p.metadata.annotations.as_ref().unwrap()["kubectl.kubernetes.io/restartedAt"]
            == "2026-11-27T07:00:00+02:00"
    ));
}

trait Shim {
    fn fields_manager_shim(self) -> Self;
}
impl Shim for PatchParams {
    fn fields_manager_shim(mut self) -> Self {
        self.field_manager = Some("kubectl-rollout".into());
        self
    }
}

#[tokio::test]
async fn a_paused_deployment_does_not_roll() {
    let (_sim, client) = start("healthy").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "payments");
    api.patch(
        "worker",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": true}})),
    )
    .await
    .unwrap();
    api.patch(
        "worker",
        &PatchParams::default(),
        &restart_patch("2026-11-27T07:01:00Z"),
    )
    .await
    .unwrap();
    let d = eventually(3, || async {
        let d = api.get("worker").await.unwrap();
        (progressing_reason(&d) == "DeploymentPaused").then_some(d)
    })
    .await;
    assert_eq!(
        d.status.as_ref().unwrap().observed_generation,
        d.metadata.generation
    );
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "payments");
    assert_eq!(
        rss.list(&ListParams::default().labels("app=worker"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    // resuming rolls it
    api.patch(
        "worker",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": false}})),
    )
    .await
    .unwrap();
    eventually(5, || async {
        let d = api.get("worker").await.unwrap();
        (kubectl_rollout_done(&d)
            && progressing_reason(&d) == "NewReplicaSetAvailable"
            && d.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"] == "2")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn statefulset_rolls_highest_ordinal_first_to_the_update_revision() {
    let (_sim, client) = start("healthy").await;
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), "orders");
    let s = api.get("db").await.unwrap();
    let st = s.status.clone().unwrap();
    assert_eq!(st.ready_replicas, Some(2));
    assert_eq!(st.current_revision, st.update_revision);
    let strategy = s.spec.as_ref().unwrap().update_strategy.clone().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(strategy.rolling_update.unwrap().partition, Some(0));
    let old_rev = st.update_revision.unwrap();
    let patched = api
        .patch(
            "db",
            &PatchParams::default(),
            &restart_patch("2026-11-27T07:02:00Z"),
        )
        .await
        .unwrap();
    let g = patched.metadata.generation.unwrap();
    let done = eventually(5, || async {
        let s = api.get("db").await.unwrap();
        let st = s.status.clone().unwrap();
        (st.observed_generation == Some(g)
            && st.updated_replicas == Some(2)
            && st.ready_replicas == Some(2)
            && st.update_revision.as_deref() != Some(old_rev.as_str())
            && st.current_revision == st.update_revision)
            .then_some(s)
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "orders");
    let rev = done.status.unwrap().update_revision.unwrap();
    for name in ["db-0", "db-1"] {
        let p = pods.get(name).await.unwrap();
        assert_eq!(p.metadata.labels.unwrap()["controller-revision-hash"], rev);
    }
}

#[tokio::test]
async fn daemonset_runs_one_pod_per_node_and_rolls() {
    let (_sim, client) = start("healthy").await;
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), "logging");
    let d = api.get("node-agent").await.unwrap();
    let st = d.status.clone().unwrap();
    assert_eq!(st.desired_number_scheduled, 3);
    assert_eq!(st.number_available, Some(3));
    let patched = api
        .patch(
            "node-agent",
            &PatchParams::default(),
            &restart_patch("2026-11-27T07:03:00Z"),
        )
        .await
        .unwrap();
    let g = patched.metadata.generation.unwrap();
    eventually(5, || async {
        let st = api.get("node-agent").await.unwrap().status.unwrap();
        (st.observed_generation == Some(g)
            && st.updated_number_scheduled == Some(3)
            && st.number_available == Some(3))
        .then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "logging");
    let nodes: BTreeSet<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.spec.as_ref().unwrap().node_name.clone().unwrap())
        .collect();
    assert_eq!(nodes.len(), 3);
}

#[tokio::test]
async fn scaling_a_deployment_through_the_scale_subresource() {
    let (_sim, client) = start("healthy").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "payments");
    let scale = api.get_scale("api").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    api.patch_scale(
        "api",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    eventually(3, || async {
        let st = api.get("api").await.unwrap().status.unwrap();
        (st.replicas == Some(1) && st.available_replicas == Some(1)).then_some(())
    })
    .await;
}
