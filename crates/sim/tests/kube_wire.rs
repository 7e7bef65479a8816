//! What kubectl puts on the wire, without kubectl: built-in objects sent in protobuf
//! (`application/vnd.kubernetes.protobuf`, the `k8s\0` magic and a `runtime.Unknown`), answers
//! in protobuf when asked first, and the `meta.k8s.io/v1` Tables `kubectl get` prints.

mod common;

use common::start;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;
use serde_json::Value;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(u.encode_to_vec());
    out
}

fn named(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: Some(name.into()),
        creation_timestamp: Some(meta::Time::default()),
        ..Default::default()
    })
}

/// Sends `body` to `path` and answers (status, content type, body).
async fn send(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    accept: &str,
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .header("accept", accept)
        .body(kube::client::Body::from(body))
        .unwrap();
    let resp = client.send(req).await.expect("the request is answered");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = resp.into_body().collect_bytes().await.unwrap().to_vec();
    (status, ct, bytes)
}

#[tokio::test]
async fn protobuf_bodies_create_namespaces_configmaps_and_deployments() {
    let (_sim, client) = start("healthy").await;
    let ns = core::Namespace {
        metadata: named("rehearsal"),
        spec: Some(core::NamespaceSpec::default()),
        status: Some(core::NamespaceStatus::default()),
    };
    let (code, _, body) = send(
        &client,
        "POST",
        "/api/v1/namespaces",
        PROTOBUF,
        "application/json",
        envelope("v1", "Namespace", ns.encode_to_vec()),
    )
    .await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let created: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(created["metadata"]["name"], "rehearsal");
    assert_eq!(created["status"]["phase"], "Active");

    // a ConfigMap, answered in protobuf as asked
    let cm = core::ConfigMap {
        metadata: named("shared"),
        data: [("mesh".to_string(), "accessLogFile: /dev/stdout".to_string())].into(),
        ..Default::default()
    };
    let (code, ct, body) = send(
        &client,
        "POST",
        "/api/v1/namespaces/rehearsal/configmaps",
        PROTOBUF,
        &format!("{PROTOBUF}, application/json"),
        envelope("v1", "ConfigMap", cm.encode_to_vec()),
    )
    .await;
    assert_eq!((code, ct.as_str()), (201, PROTOBUF));
    let back = Unknown::decode(body.strip_prefix(b"k8s\0").expect("the magic")).unwrap();
    assert_eq!(back.type_meta.unwrap().kind.as_deref(), Some("ConfigMap"));
    let back = core::ConfigMap::decode(back.raw.unwrap().as_slice()).unwrap();
    let meta = back.metadata.unwrap();
    assert_eq!(
        (meta.namespace.as_deref(), back.data["mesh"].as_str()),
        (Some("rehearsal"), "accessLogFile: /dev/stdout")
    );
    assert!(meta.uid.is_some_and(|u| !u.is_empty()));

    // a Deployment as `kubectl create deployment web --image=nginx` sends it
    let labels: std::collections::BTreeMap<String, String> =
        [("app".to_string(), "web".to_string())].into();
    let d = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            labels: labels.clone(),
            ..named("web").unwrap()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            selector: Some(meta::LabelSelector {
                match_labels: labels.clone(),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels,
                    creation_timestamp: Some(meta::Time::default()),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: Some("nginx".into()),
                        image: Some("nginx".into()),
                        resources: Some(core::ResourceRequirements::default()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy::default()),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus::default()),
    };
    let (code, _, body) = send(
        &client,
        "POST",
        "/apis/apps/v1/namespaces/rehearsal/deployments",
        PROTOBUF,
        "application/json",
        envelope("apps/v1", "Deployment", d.encode_to_vec()),
    )
    .await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let created: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(created["spec"]["replicas"], 2);
    assert_eq!(
        created["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx"
    );
    // Go's omitempty: no `paused: false`, no `minReadySeconds: 0`
    assert!(created["spec"].get("paused").is_none(), "{created}");
}

#[tokio::test]
async fn a_protobuf_field_the_simulator_does_not_read_is_refused_with_415() {
    let (_sim, client) = start("healthy").await;
    let p = core::Pod {
        metadata: named("p"),
        spec: Some(core::PodSpec {
            affinity: Some(core::Affinity::default()),
            containers: vec![core::Container {
                name: Some("c".into()),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let (code, _, body) = send(
        &client,
        "POST",
        "/api/v1/namespaces/default/pods",
        PROTOBUF,
        "application/json",
        envelope("v1", "Pod", p.encode_to_vec()),
    )
    .await;
    assert_eq!(code, 415, "{}", String::from_utf8_lossy(&body));
    let (code, _, _) = send(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        PROTOBUF,
        "application/json",
        b"not protobuf".to_vec(),
    )
    .await;
    assert_eq!(code, 400);
}

fn column_names(table: &Value) -> Vec<String> {
    table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn kubectl_get_is_answered_with_tables_and_injected_pods_are_2_of_2_ready() {
    let (_sim, client) = start("healthy").await;
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            let (code, ct, body) = send(&client, "GET", path, "", TABLE, vec![]).await;
            assert_eq!((code, ct.as_str()), (200, "application/json"));
            serde_json::from_slice::<Value>(&body).unwrap()
        }
    };
    let pods = get("/api/v1/namespaces/payments/pods?limit=500").await;
    assert_eq!(
        (pods["kind"].as_str(), pods["apiVersion"].as_str()),
        (Some("Table"), Some("meta.k8s.io/v1"))
    );
    assert_eq!(
        column_names(&pods),
        [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates"
        ]
    );
    let rows = pods["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    for r in rows {
        assert_eq!(r["cells"][1], "2/2", "{r}");
        assert_eq!(r["cells"][2], "Running", "{r}");
        assert_eq!(r["object"]["kind"], "PartialObjectMetadata");
        assert!(r["object"]["metadata"]["labels"]["app"].is_string());
    }
    let priorities: Vec<i64> = pods["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["priority"].as_i64().unwrap())
        .collect();
    assert_eq!(priorities, [0, 0, 0, 0, 0, 1, 1, 1, 1]);

    let deploys = get("/apis/apps/v1/namespaces/payments/deployments").await;
    assert_eq!(
        column_names(&deploys)[..5],
        ["Name", "Ready", "Up-to-date", "Available", "Age"]
    );
    let ns = get("/api/v1/namespaces/payments").await;
    assert_eq!(column_names(&ns), ["Name", "Status", "Age"]);
    assert_eq!(ns["rows"][0]["cells"][1], "Active");
    let cms = get("/api/v1/namespaces/aks-istio-system/configmaps").await;
    assert_eq!(column_names(&cms), ["Name", "Data", "Age"]);
    let svcs = get("/api/v1/namespaces/aks-istio-system/services").await;
    assert_eq!(
        column_names(&svcs),
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
            "Selector"
        ]
    );
    let leases = get("/apis/coordination.k8s.io/v1/namespaces/aks-istio-system/leases").await;
    assert_eq!(column_names(&leases), ["Name", "Holder", "Age"]);
    // a plain JSON Accept still gets the list
    let (_, _, body) = send(
        &client,
        "GET",
        "/api/v1/namespaces/payments/pods",
        "",
        "application/json",
        vec![],
    )
    .await;
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["kind"], "PodList");
}
