//! The Kubernetes API server over HTTPS with kube-rs: auth, discovery, every verb and its
//! error paths, selectors, paging, watch (resume, bookmarks, 410), patch types, GC.

mod common;

use common::{client_for, eventually, start};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"team": "a"}}, "data": {"k": "v"}}),
    )
    .unwrap()
}

#[tokio::test]
async fn a_wrong_token_gets_401_unauthorized() {
    let (sim, _) = start("healthy").await;
    let bad = client_for(&sim, "not-the-token").await;
    let err = Api::<Pod>::all(bad)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    let s = api_err(err);
    assert_eq!(s.code, 401);
    assert_eq!(s.reason, "Unauthorized");
}

#[tokio::test]
async fn discovery_lists_the_served_kinds_with_short_names() {
    let (_sim, client) = start("healthy").await;
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let mut kinds = Vec::new();
    for group in discovery.groups() {
        for (ar, _caps) in group.recommended_resources() {
            kinds.push(format!("{}/{}", ar.api_version, ar.kind));
        }
    }
    for want in [
        "v1/Pod",
        "v1/Namespace",
        "apps/v1/Deployment",
        "apps/v1/StatefulSet",
        "admissionregistration.k8s.io/v1/MutatingWebhookConfiguration",
        "coordination.k8s.io/v1/Lease",
        "autoscaling/v2/HorizontalPodAutoscaler",
    ] {
        assert!(
            kinds.iter().any(|k| k == want),
            "{want} missing from {kinds:?}"
        );
    }
    let raw: serde_json::Value = client
        .request(http::Request::get("/apis/apps/v1").body(vec![]).unwrap())
        .await
        .unwrap();
    let deploy = raw["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments")
        .unwrap();
    assert_eq!(deploy["shortNames"], json!(["deploy"]));
    assert_eq!(deploy["namespaced"], true);
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
    assert_eq!(v.minor, "33");
}

#[tokio::test]
async fn create_get_update_delete_with_the_real_errors() {
    let (_sim, client) = start("healthy").await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = api
        .create(&PostParams::default(), &cm("one"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.resource_version.is_some());
    assert!(meta.creation_timestamp.is_some());

    let s = api_err(
        api.create(&PostParams::default(), &cm("one"))
            .await
            .unwrap_err(),
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(s.message, "configmaps \"one\" already exists");

    let mut gen_cm = cm("");
    gen_cm.metadata.name = None;
    gen_cm.metadata.generate_name = Some("gen-".into());
    let g = api.create(&PostParams::default(), &gen_cm).await.unwrap();
    let gname = g.metadata.name.unwrap();
    assert!(gname.starts_with("gen-") && gname.len() == 9, "{gname}");

    // update with the current resourceVersion works, a stale one conflicts
    let mut cur = api.get("one").await.unwrap();
    let stale = cur.clone();
    cur.data.as_mut().unwrap().insert("k".into(), "v2".into());
    let updated = api
        .replace("one", &PostParams::default(), &cur)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        stale.metadata.resource_version
    );
    let s = api_err(
        api.replace("one", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains("the object has been modified"),
        "{}",
        s.message
    );

    let s = api_err(api.get("missing").await.unwrap_err());
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "configmaps \"missing\" not found");

    let deleted = api.delete("one", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_right(), "configmap deletion answers a Status");
    let s = api_err(
        api.delete("one", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 404);

    // creating in a namespace that does not exist
    let nowhere: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let s = api_err(
        nowhere
            .create(&PostParams::default(), &cm("x"))
            .await
            .unwrap_err(),
    );
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "namespaces \"nowhere\" not found");

    // an invalid name
    let s = api_err(
        api.create(&PostParams::default(), &cm("Bad_Name"))
            .await
            .unwrap_err(),
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
}

/// The API server refuses a ConfigMap whose data is over 1 MiB in all (`core.MaxSecretSize`),
/// on create and on every kind of update, with 422 `[]: Too long`; exactly 1 MiB is accepted.
/// A client that keeps state in a ConfigMap (asm-canary's in-cluster checkpoint) meets this
/// limit on a real cluster, so the simulator enforces it too.
#[tokio::test]
async fn a_configmap_over_one_mebibyte_is_refused_as_the_api_server_does() {
    let (_sim, client) = start("healthy").await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let sized = |name: &str, a: usize, b: usize| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name},
            "data": {"a": "x".repeat(a), "b": "y".repeat(b)}}))
        .unwrap()
    };
    let limit = 1024 * 1024;
    let too_long = |s: kube::core::Status| {
        assert_eq!(s.code, 422, "{s:?}");
        assert_eq!(s.reason, "Invalid", "{s:?}");
        assert!(
            s.message.contains(
                "ConfigMap \"big\" is invalid: []: Too long: may not be more than 1048576 bytes"
            ),
            "{}",
            s.message
        );
    };
    let e = api
        .create(&PostParams::default(), &sized("big", limit, 1))
        .await
        .unwrap_err();
    too_long(api_err(e));
    assert!(
        api.get_opt("big").await.unwrap().is_none(),
        "nothing stored"
    );

    let at_limit = api
        .create(&PostParams::default(), &sized("big", limit - 10, 10))
        .await
        .unwrap();
    let mut grown = at_limit.clone();
    grown.data.as_mut().unwrap().insert("c".into(), "z".into());
    too_long(api_err(
        api.replace("big", &PostParams::default(), &grown)
            .await
            .unwrap_err(),
    ));
    let patch = json!({"data": {"c": "z"}});
    too_long(api_err(
        api.patch("big", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_err(),
    ));
    let kept = api.get("big").await.unwrap();
    assert_eq!(
        kept.metadata.resource_version,
        at_limit.metadata.resource_version
    );
}

#[tokio::test]
async fn generation_moves_with_spec_and_annotations_not_labels_or_status() {
    let (_sim, client) = start("healthy").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "frontend");
    let d = api.get("web").await.unwrap();
    let g0 = d.metadata.generation.unwrap();
    let pp = PatchParams::default();
    let d = api
        .patch(
            "web",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(d.metadata.generation.unwrap(), g0);
    let d = api
        .patch(
            "web",
            &pp,
            &Patch::Merge(json!({"metadata": {"annotations": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(d.metadata.generation.unwrap(), g0 + 1);
    let d = api
        .patch(
            "web",
            &pp,
            &Patch::Merge(json!({"status": {"replicas": 99}})),
        )
        .await
        .unwrap();
    assert_eq!(
        d.metadata.generation.unwrap(),
        g0 + 1,
        "status through the main resource is ignored"
    );
    assert_ne!(d.status.unwrap().replicas, Some(99));
}

#[tokio::test]
async fn list_with_label_and_field_selectors_and_pages() {
    let (_sim, client) = start("healthy").await;
    let pods: Api<Pod> = Api::all(client.clone());
    let all = pods.list(&ListParams::default()).await.unwrap();
    assert!(
        all.metadata
            .resource_version
            .as_deref()
            .is_some_and(|r| !r.is_empty())
    );
    let total = all.items.len();
    assert!(total > 10);

    let sel = pods
        .list(&ListParams::default().labels("app in (api, worker)"))
        .await
        .unwrap();
    assert_eq!(sel.items.len(), 5, "payments/api (3) + payments/worker (2)");
    let not = pods
        .list(&ListParams::default().labels("app notin (api, worker),!nothing"))
        .await
        .unwrap();
    assert_eq!(not.items.len(), total - 5);
    let ne = pods
        .list(&ListParams::default().labels("app!=api"))
        .await
        .unwrap();
    assert_eq!(ne.items.len(), total - 3);
    let exists = pods
        .list(&ListParams::default().labels("security.istio.io/tlsMode"))
        .await
        .unwrap();
    assert!(exists.items.iter().all(|p| {
        p.metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key("sidecar.istio.io/status")
    }));

    let by_name = Api::<Deployment>::all(client.clone())
        .list(&ListParams::default().fields("metadata.name=web,metadata.namespace=orders"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);

    let bad = pods
        .list(&ListParams::default().labels("app in api"))
        .await
        .unwrap_err();
    assert_eq!(api_err(bad).code, 400);
    let bad = pods
        .list(&ListParams::default().fields("spec.bogus=1"))
        .await
        .unwrap_err();
    assert_eq!(api_err(bad).code, 400);

    // pages of 4 cover everything exactly once
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(4);
    loop {
        let page = pods.list(&lp).await.unwrap();
        assert!(page.items.len() <= 4);
        seen.extend(page.items.iter().map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.clone().unwrap(),
                p.metadata.name.clone().unwrap()
            )
        }));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = ListParams::default().limit(4).continue_token(&c),
            None => break,
        }
    }
    let mut dedup = seen.clone();
    dedup.dedup();
    assert_eq!(seen.len(), total);
    assert_eq!(dedup.len(), total);
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version_and_sends_bookmarks() {
    let (_sim, client) = start("healthy").await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &cm("w1")).await.unwrap();
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v2"}})),
    )
    .await
    .unwrap();
    api.delete("w1", &DeleteParams::default()).await.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(c) => kinds.push(("ADDED", c.metadata.name.unwrap())),
            WatchEvent::Modified(c) => kinds.push(("MODIFIED", c.metadata.name.unwrap())),
            WatchEvent::Deleted(c) => kinds.push(("DELETED", c.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(
        kinds,
        vec![
            ("ADDED", "w1".to_string()),
            ("MODIFIED", "w1".into()),
            ("DELETED", "w1".into())
        ]
    );
    // a bookmark arrives on an idle watch (kube-rs parses kind/apiVersion/resourceVersion)
    let bm = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            if let WatchEvent::Bookmark(b) = stream.try_next().await.unwrap().unwrap() {
                return b;
            }
        }
    })
    .await
    .unwrap();
    assert!(!bm.metadata.resource_version.is_empty());
}

#[tokio::test]
async fn an_expired_resource_version_is_an_error_event_with_410() {
    let (sim, client) = start("healthy").await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &cm("w2")).await.unwrap();
    sim.shared.kube.store.compact();
    let mut stream = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected ERROR 410, got {other:?}"),
    }
    assert!(
        stream.try_next().await.unwrap().is_none(),
        "the stream ends after the error"
    );
}

#[tokio::test]
async fn kube_runtime_watcher_sees_changes_with_filtered_semantics() {
    let (_sim, client) = start("healthy").await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cfg = kube::runtime::watcher::Config::default().labels("team=b");
    let mut events = kube::runtime::watcher(api.clone(), cfg).boxed();
    // the initial list completes
    loop {
        if let kube::runtime::watcher::Event::InitDone = events.try_next().await.unwrap().unwrap() {
            break;
        }
    }
    api.create(&PostParams::default(), &cm("sel"))
        .await
        .unwrap();
    api.patch(
        "sel",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "b"}}})),
    )
    .await
    .unwrap();
    match events.try_next().await.unwrap().unwrap() {
        kube::runtime::watcher::Event::Apply(c) => assert_eq!(c.metadata.name.unwrap(), "sel"),
        other => panic!("expected the object to start matching, got {other:?}"),
    }
    api.patch(
        "sel",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "c"}}})),
    )
    .await
    .unwrap();
    match events.try_next().await.unwrap().unwrap() {
        kube::runtime::watcher::Event::Delete(c) => assert_eq!(c.metadata.name.unwrap(), "sel"),
        other => panic!("expected the object to stop matching, got {other:?}"),
    }
}

#[tokio::test]
async fn merge_json_and_strategic_patches() {
    let (_sim, client) = start("healthy").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "payments");
    let pp = PatchParams::default();
    // strategic: containers merge by name
    let d = api
        .patch(
            "worker",
            &pp,
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "worker", "env": [{"name": "A", "value": "1"}]}]}}}})),
        )
        .await
        .unwrap();
    let c = &d
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers;
    assert_eq!(c.len(), 1);
    assert!(c[0].image.is_some(), "strategic merge kept the image");
    assert_eq!(c[0].env.as_ref().unwrap()[0].name, "A");
    // merge: lists are replaced
    let d = api
        .patch(
            "worker",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "backend"}}})),
        )
        .await
        .unwrap();
    assert_eq!(d.metadata.labels.unwrap()["tier"], "backend");
    // json patch, and a failing test op is 422
    let p: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]))
            .unwrap();
    let d = api
        .patch("worker", &pp, &Patch::Json::<()>(p))
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(3));
    let p: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/spec/replicas", "value": 9}]))
            .unwrap();
    let s = api_err(
        api.patch("worker", &pp, &Patch::Json::<()>(p))
            .await
            .unwrap_err(),
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    // a merge patch carrying a stale resourceVersion conflicts
    let s = api_err(
        api.patch(
            "worker",
            &pp,
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1", "labels": {"a": "b"}}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    // patching something absent is 404
    let s = api_err(
        api.patch("absent", &pp, &Patch::Merge(json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 404);
}

#[tokio::test]
async fn server_side_apply_creates_conflicts_and_forces() {
    let (_sim, client) = start("healthy").await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1", "b": "2"}});
    // no fieldManager: 422
    let s = api_err(
        api.patch("ssa", &PatchParams::default(), &Patch::Apply(&obj))
            .await
            .unwrap_err(),
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    // apply creates
    let c = api
        .patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(&obj))
        .await
        .unwrap();
    let mf = c.metadata.managed_fields.unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("alice"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    // another manager changing alice's field conflicts...
    let bob = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "9"}});
    let s = api_err(
        api.patch("ssa", &PatchParams::apply("bob"), &Patch::Apply(&bob))
            .await
            .unwrap_err(),
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains("conflict with \"alice\""),
        "{}",
        s.message
    );
    assert!(s.message.contains(".data.a"), "{}", s.message);
    // ...unless forced
    let c = api
        .patch(
            "ssa",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(&bob),
        )
        .await
        .unwrap();
    assert_eq!(c.data.as_ref().unwrap()["a"], "9");
    // alice stops applying b: b goes (she was its only owner); a now belongs to bob
    let alice2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"c": "3"}});
    let c = api
        .patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(&alice2))
        .await
        .unwrap();
    let data = c.data.unwrap();
    assert_eq!(data.get("b"), None);
    assert_eq!(data["a"], "9");
    assert_eq!(data["c"], "3");
    // an Update by another writer takes ownership, and alice then conflicts with it
    api.patch(
        "ssa",
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"data": {"c": "4"}})),
    )
    .await
    .unwrap();
    let s = api_err(
        api.patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(&alice2))
            .await
            .unwrap_err(),
    );
    assert!(
        s.message.contains("\"kubectl-edit\" using v1"),
        "{}",
        s.message
    );
}

#[tokio::test]
async fn deleting_a_deployment_collects_its_replicasets_and_pods() {
    let (_sim, client) = start("healthy").await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "payments");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "payments");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "payments");
    assert_eq!(
        pods.list(&ListParams::default().labels("app=worker"))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    deps.delete("worker", &DeleteParams::background())
        .await
        .unwrap();
    assert!(
        rss.list(&ListParams::default().labels("app=worker"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // pods terminate for their (scaled) grace period first, then go
    let terminating = pods
        .list(&ListParams::default().labels("app=worker"))
        .await
        .unwrap()
        .items;
    assert!(
        terminating
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some())
    );
    eventually(3, || async {
        pods.list(&ListParams::default().labels("app=worker"))
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    // orphaning keeps the dependents and strips the reference
    deps.delete("api", &DeleteParams::orphan()).await.unwrap();
    let left = rss
        .list(&ListParams::default().labels("app=api"))
        .await
        .unwrap()
        .items;
    assert_eq!(left.len(), 1);
    assert!(left[0].metadata.owner_references.is_none());
}

#[tokio::test]
async fn namespaces_get_the_metadata_name_label_and_delete_their_contents() {
    let (_sim, client) = start("healthy").await;
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "scratch"}})).unwrap();
    let created = ns_api.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(
        created.metadata.labels.unwrap()["kubernetes.io/metadata.name"],
        "scratch"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "scratch");
    cms.create(&PostParams::default(), &cm("inside"))
        .await
        .unwrap();
    ns_api
        .delete("scratch", &DeleteParams::default())
        .await
        .unwrap();
    eventually(2, || async {
        ns_api
            .get_opt("scratch")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn streaming_lists_end_their_initial_events_with_the_marker_bookmark() {
    let (_sim, client) = start("healthy").await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "payments");
    let cfg = kube::runtime::watcher::Config::default().streaming_lists();
    let mut events = kube::runtime::watcher(api, cfg).boxed();
    let mut initial = 0;
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), events.try_next())
            .await
            .expect("InitDone arrives")
            .unwrap()
            .unwrap()
        {
            kube::runtime::watcher::Event::InitApply(_) => initial += 1,
            kube::runtime::watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, 5);
}

#[tokio::test]
async fn wire_errors_for_content_types_force_and_unknown_paths() {
    let (sim, client) = start("healthy").await;
    let req = http::Request::patch("/api/v1/namespaces/default/configmaps/x")
        .header("content-type", "application/xml")
        .body(b"{}".to_vec())
        .unwrap();
    let err = client.request::<serde_json::Value>(req).await.unwrap_err();
    assert_eq!(api_err(err).code, 415);
    let req = http::Request::patch("/apis/apps/v1/namespaces/payments/deployments/api?force=true")
        .header("content-type", "application/merge-patch+json")
        .body(b"{}".to_vec())
        .unwrap();
    let s = api_err(client.request::<serde_json::Value>(req).await.unwrap_err());
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    let req = http::Request::get("/apis/apps/v1/namespaces/payments/widgets")
        .body(vec![])
        .unwrap();
    let s = api_err(client.request::<serde_json::Value>(req).await.unwrap_err());
    assert_eq!(
        (s.code, s.message.as_str()),
        (404, "the server could not find the requested resource")
    );
    // deleting a pod answers the pod; mutating requests are logged for /_sim/requests
    let pods: Api<Pod> = Api::namespaced(client.clone(), "payments");
    let name = pods.list(&ListParams::default()).await.unwrap().items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let gone = pods.delete(&name, &DeleteParams::default()).await.unwrap();
    assert!(gone.is_left());
    let log = sim.shared.requests.snapshot();
    let last = log.last().unwrap();
    assert_eq!(
        (last.api, last.method.as_str(), last.status),
        ("kube", "DELETE", 200)
    );
    assert_eq!(
        last.path,
        format!("/api/v1/namespaces/payments/pods/{name}")
    );
    assert!(log.iter().any(|r| r.method == "PATCH" && r.status == 415));
    // the ReplicaSet replaces the deleted pod
    eventually(3, || async {
        let l = pods
            .list(&ListParams::default().labels("app=api"))
            .await
            .unwrap()
            .items;
        (l.len() == 3
            && l.iter()
                .all(|p| p.metadata.name.as_deref() != Some(name.as_str())))
        .then_some(())
    })
    .await;
}

/// Istio's policy CRDs are served as the API server serves a CRD: in discovery (with their
/// short names and categories), and created, listed, read, patched and deleted like any type.
#[tokio::test]
async fn istio_policy_kinds_are_served_like_installed_crds() {
    use kube::api::{ApiResource, DynamicObject};
    let (_sim, client) = start("healthy").await;
    let raw: serde_json::Value = client
        .request(
            http::Request::get("/apis/security.istio.io/v1")
                .body(vec![])
                .unwrap(),
        )
        .await
        .unwrap();
    let pa = raw["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "peerauthentications")
        .unwrap();
    assert_eq!(pa["kind"], "PeerAuthentication");
    assert_eq!(pa["shortNames"], json!(["pa"]));
    assert_eq!(pa["categories"], json!(["istio-io", "security-istio-io"]));
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let kinds: Vec<String> = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .map(|(ar, _)| format!("{}/{}", ar.api_version, ar.kind))
        .collect();
    for want in [
        "security.istio.io/v1/PeerAuthentication",
        "security.istio.io/v1/AuthorizationPolicy",
        "networking.istio.io/v1/DestinationRule",
        "networking.istio.io/v1/ServiceEntry",
        "networking.istio.io/v1/Sidecar",
    ] {
        assert!(
            kinds.iter().any(|k| k == want),
            "{want} missing from {kinds:?}"
        );
    }

    let ar = ApiResource {
        group: "networking.istio.io".into(),
        version: "v1".into(),
        api_version: "networking.istio.io/v1".into(),
        kind: "DestinationRule".into(),
        plural: "destinationrules".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "frontend", &ar);
    let dr: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "api"},
        "spec": {"host": "api.payments.svc.cluster.local", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &dr).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let patched = api
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"trafficPolicy": {"tls": {"mode": "DISABLE"}}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.data["spec"]["trafficPolicy"]["tls"]["mode"],
        "DISABLE"
    );
    assert_eq!(patched.metadata.generation, Some(2));
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let listed = all.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(
        listed.items[0].metadata.namespace.as_deref(),
        Some("frontend")
    );
    api.delete("api", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("api").await.unwrap().is_none());
}
