//! The ARM client against a small scripted ARM on loopback (plain HTTP, which the client
//! allows for loopback only): eTag conflicts, throttling, busy clusters, LRO outcomes, and
//! that the PUT body is the GET body with only the revisions changed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asm_canary::azure::{
    ArmClient, ArmClientOptions, ArmError, ClusterDoc, ClusterId, PollOptions, RetryPolicy,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use serde_json::{Value, json};

#[derive(Debug)]
struct FakeCredential;

#[async_trait::async_trait]
impl TokenCredential for FakeCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        assert_eq!(scopes.len(), 1);
        Ok(AccessToken::new(
            format!("token-for-{}", scopes[0]),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

/// A canned answer: status, ARM error code, extra headers.
#[derive(Clone, Debug)]
struct Fault {
    status: u16,
    code: &'static str,
    headers: Vec<(&'static str, &'static str)>,
}

fn fault(status: u16, code: &'static str) -> Fault {
    Fault {
        status,
        code,
        headers: vec![],
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    path: String,
    if_match: Option<String>,
    auth: Option<String>,
}

#[derive(Default)]
struct Arm {
    body: Value,
    etag: u32,
    state: String,
    /// Answers to the next GETs of the cluster (then the real state).
    get_faults: VecDeque<Fault>,
    put_faults: VecDeque<Fault>,
    /// States the cluster reports on the next GETs (busy cluster), before `state`.
    busy_states: VecDeque<&'static str>,
    /// Before answering the next PUT, pretend someone else wrote (eTag moves).
    concurrent_write_before_put: u32,
    /// Poll answers: how many InProgress, then the terminal status.
    polls_in_progress: u32,
    terminal: &'static str,
    op_url_override: Option<String>,
    puts: Vec<Value>,
    seen: Vec<Seen>,
    base: String,
}

type Shared = Arc<Mutex<Arm>>;

fn error_response(f: &Fault) -> Response {
    let mut resp = (
        StatusCode::from_u16(f.status).unwrap(),
        axum::Json(json!({"error": {"code": f.code, "message": format!("scripted {}", f.code)}})),
    )
        .into_response();
    for (k, v) in &f.headers {
        resp.headers_mut().insert(*k, v.parse().unwrap());
    }
    resp
}

fn cluster_json(arm: &Arm) -> Value {
    let mut body = arm.body.clone();
    body["eTag"] = json!(format!("etag-{}", arm.etag));
    body["properties"]["provisioningState"] = json!(arm.state);
    body
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut arm = shared.lock().unwrap();
    let path = uri.path().to_string();
    arm.seen.push(Seen {
        method: method.to_string(),
        path: path.clone(),
        if_match: headers
            .get("if-match")
            .map(|v| v.to_str().unwrap().to_string()),
        auth: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string()),
    });
    if path.starts_with("/op/") {
        if arm.polls_in_progress > 0 {
            arm.polls_in_progress -= 1;
            let mut r = axum::Json(json!({"name": "op", "status": "InProgress"})).into_response();
            r.headers_mut().insert("retry-after", "0".parse().unwrap());
            return r;
        }
        let terminal = arm.terminal;
        arm.state = if terminal == "Succeeded" {
            "Succeeded".into()
        } else {
            "Failed".into()
        };
        let mut status =
            json!({"name": "op", "status": terminal, "startTime": "2026-11-27T07:00:00Z"});
        if terminal != "Succeeded" {
            status["error"] = json!({"code": "ResourceOperationFailure", "message": "The resource operation completed with terminal provisioning state 'Failed'."});
        }
        return axum::Json(status).into_response();
    }
    if path.ends_with("/meshUpgradeProfiles/istio") {
        if arm.body["properties"]["serviceMeshProfile"]["istio"]["revisions"]
            .as_array()
            .unwrap()
            .len()
            == 2
        {
            return error_response(&fault(409, "ServiceMeshUpgradeInProgress"));
        }
        return axum::Json(json!({"name": "istio", "properties": {"revision": "asm-1-27", "upgrades": ["asm-1-28", "asm-1-29"],
            "compatibleWith": [{"name": "kubernetes", "versions": ["1.32", "1.33"]}]}}))
        .into_response();
    }
    if path.ends_with("/listClusterUserCredential") {
        assert_eq!(method, Method::POST);
        use base64::Engine;
        let value =
            base64::engine::general_purpose::STANDARD.encode("apiVersion: v1\nkind: Config\n");
        return axum::Json(json!({"kubeconfigs": [{"name": "clusterUser", "value": value}]}))
            .into_response();
    }
    match method {
        Method::GET => {
            if let Some(f) = arm.get_faults.pop_front() {
                return error_response(&f);
            }
            if let Some(s) = arm.busy_states.pop_front() {
                let mut body = cluster_json(&arm);
                body["properties"]["provisioningState"] = json!(s);
                return axum::Json(body).into_response();
            }
            axum::Json(cluster_json(&arm)).into_response()
        }
        Method::PUT => {
            if arm.concurrent_write_before_put > 0 {
                arm.concurrent_write_before_put -= 1;
                arm.etag += 1;
            }
            let expected = format!("etag-{}", arm.etag);
            if headers.get("if-match").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
                return error_response(&fault(412, "PreconditionFailed"));
            }
            if let Some(f) = arm.put_faults.pop_front() {
                return error_response(&f);
            }
            let put: Value = serde_json::from_slice(&body).unwrap();
            arm.puts.push(put.clone());
            arm.body["properties"]["serviceMeshProfile"]["istio"]["revisions"] =
                put["properties"]["serviceMeshProfile"]["istio"]["revisions"].clone();
            arm.etag += 1;
            arm.state = "Updating".into();
            let op = arm.op_url_override.clone().unwrap_or_else(|| {
                format!("{}/op/1?api-version=2016-03-30&t=1&c=x&s=sig", arm.base)
            });
            let mut r = axum::Json(cluster_json(&arm)).into_response();
            r.headers_mut()
                .insert("azure-asyncoperation", op.parse().unwrap());
            r
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

fn initial_body() -> Value {
    json!({
        "id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-sim/providers/Microsoft.ContainerService/managedClusters/aks-sim",
        "name": "aks-sim",
        "location": "eastus2",
        "properties": {
            "provisioningState": "Succeeded",
            "currentKubernetesVersion": "1.33.2",
            "agentPoolProfiles": [{"name": "system", "count": 3, "unknownKnob": {"a": 1}}],
            "serviceMeshProfile": {"mode": "Istio", "istio": {"components": {}, "revisions": ["asm-1-27"]}},
            "futureField": [1, 2, 3]
        }
    })
}

struct Stub {
    shared: Shared,
    client: ArmClient,
    id: ClusterId,
    _server: tokio::task::JoinHandle<()>,
}

async fn start(configure: impl FnOnce(&mut Arm)) -> Stub {
    let shared: Shared = Arc::new(Mutex::new(Arm {
        body: initial_body(),
        etag: 1,
        state: "Succeeded".into(),
        terminal: "Succeeded",
        polls_in_progress: 2,
        ..Default::default()
    }));
    let app = Router::new()
        .route("/{*rest}", axum::routing::any(handle))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    {
        let mut arm = shared.lock().unwrap();
        arm.base = base.clone();
        configure(&mut arm);
    }
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let http = asm_canary::azure::build_http_client(None).unwrap();
    let client = ArmClient::new(
        ArmClientOptions {
            endpoint: base,
            retry: RetryPolicy {
                max_attempts: 4,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(20),
            },
            poll: PollOptions {
                default_interval: Duration::from_millis(1),
                min_interval: Duration::from_millis(1),
                max_interval: Duration::from_millis(20),
                timeout: Duration::from_secs(10),
            },
            ..Default::default()
        },
        Arc::new(FakeCredential),
        http,
    )
    .unwrap();
    Stub {
        shared,
        client,
        id: "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-sim/providers/Microsoft.ContainerService/managedClusters/aks-sim"
            .parse()
            .unwrap(),
        _server: server,
    }
}

fn revs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn one_revision(doc: &ClusterDoc) -> Result<(), String> {
    match doc.revisions().len() {
        1 => Ok(()),
        n => Err(format!("expected one revision, found {n}")),
    }
}

fn seen(stub: &Stub) -> Vec<(String, String)> {
    stub.shared
        .lock()
        .unwrap()
        .seen
        .iter()
        .map(|s| {
            let kind = if s.path.starts_with("/op/") {
                "op"
            } else {
                "cluster"
            };
            (s.method.clone(), kind.to_string())
        })
        .collect()
}

#[tokio::test]
async fn start_canary_puts_only_the_revisions_and_follows_the_lro() {
    let stub = start(|_| {}).await;
    let target = revs(&["asm-1-27", "asm-1-28"]);
    let doc = stub
        .client
        .set_revisions(&stub.id, &target, &one_revision)
        .await
        .unwrap();
    assert_eq!(doc.revisions(), target);
    assert_eq!(doc.provisioning_state(), Some("Succeeded"));

    let arm = stub.shared.lock().unwrap();
    assert_eq!(arm.puts.len(), 1);
    let mut expected = initial_body();
    expected["eTag"] = json!("etag-1");
    expected["properties"]["serviceMeshProfile"]["istio"]["revisions"] = json!(target);
    assert_eq!(
        arm.puts[0], expected,
        "PUT body = GET body with only the revisions changed"
    );
    let put = arm.seen.iter().find(|s| s.method == "PUT").unwrap();
    assert_eq!(put.if_match.as_deref(), Some("etag-1"));
    assert!(put.path.ends_with("/managedClusters/aks-sim"));
    assert!(
        put.auth
            .as_deref()
            .unwrap()
            .starts_with("Bearer token-for-http://127.0.0.1:"),
        "scope defaults to the endpoint origin + /.default: {:?}",
        put.auth
    );
    drop(arm);
    assert_eq!(
        seen(&stub),
        vec![
            ("GET".into(), "cluster".into()),
            ("PUT".into(), "cluster".into()),
            ("GET".into(), "op".into()),
            ("GET".into(), "op".into()),
            ("GET".into(), "op".into()),
            ("GET".into(), "cluster".into()),
        ]
    );
}

#[tokio::test]
async fn begin_then_poll_separately_as_a_resumed_run_would() {
    let stub = start(|_| {}).await;
    let target = revs(&["asm-1-27", "asm-1-28"]);
    let accepted = stub
        .client
        .begin_set_revisions(&stub.id, &target, &one_revision)
        .await
        .unwrap();
    let url = accepted.operation_url.clone().expect("an operation URL");
    assert!(
        url.contains("api-version=2016-03-30&t=1&c=x&s=sig"),
        "verbatim: {url}"
    );
    assert_eq!(accepted.status, 200);
    assert_eq!(accepted.if_match.as_deref(), Some("etag-1"));
    // The journal entry survives a round trip.
    let journal = serde_json::to_string(&accepted).unwrap();
    let back: asm_canary::azure::PutAccepted = serde_json::from_str(&journal).unwrap();
    assert_eq!(back, accepted);

    let status = stub.client.poll_operation(&stub.id, &url).await.unwrap();
    assert_eq!(status.status, "Succeeded");
    let doc = stub
        .client
        .confirm_revisions(&stub.id, &target)
        .await
        .unwrap();
    assert_eq!(doc.revisions(), target);

    // A second run finds the revisions applied and PUTs nothing.
    let again = stub
        .client
        .begin_set_revisions(&stub.id, &target, &|_| Ok(()))
        .await
        .unwrap();
    assert!(again.already_applied);
    assert_eq!(again.operation_url, None);
    assert_eq!(stub.shared.lock().unwrap().puts.len(), 1);
}

#[tokio::test]
async fn precondition_failed_rereads_and_revalidates() {
    let stub = start(|arm| arm.concurrent_write_before_put = 1).await;
    let checks = Arc::new(Mutex::new(0));
    let counter = checks.clone();
    let expected = move |doc: &ClusterDoc| {
        *counter.lock().unwrap() += 1;
        one_revision(doc)
    };
    let target = revs(&["asm-1-27", "asm-1-28"]);
    stub.client
        .set_revisions(&stub.id, &target, &expected)
        .await
        .unwrap();
    assert_eq!(*checks.lock().unwrap(), 2, "validated again after the 412");
    let arm = stub.shared.lock().unwrap();
    let ifs: Vec<_> = arm
        .seen
        .iter()
        .filter(|s| s.method == "PUT")
        .map(|s| s.if_match.clone().unwrap())
        .collect();
    assert_eq!(ifs, vec!["etag-1".to_string(), "etag-2".to_string()]);
}

#[tokio::test]
async fn etag_mismatch_409_is_treated_like_412() {
    let stub = start(|arm| arm.put_faults.push_back(fault(409, "EtagMismatch"))).await;
    let target = revs(&["asm-1-27", "asm-1-28"]);
    stub.client
        .set_revisions(&stub.id, &target, &one_revision)
        .await
        .unwrap();
    let puts = seen(&stub).iter().filter(|(m, _)| m == "PUT").count();
    assert_eq!(puts, 2);
}

#[tokio::test]
async fn revalidation_can_stop_the_put() {
    // Someone else started a canary between our GET and PUT: the re-read shows two
    // revisions, and the caller's check refuses.
    let stub = start(|arm| arm.concurrent_write_before_put = 1).await;
    let calls = Arc::new(Mutex::new(0));
    let c = calls.clone();
    let shared = stub.shared.clone();
    let expected = move |doc: &ClusterDoc| {
        let mut n = c.lock().unwrap();
        *n += 1;
        if *n == 1 {
            // After our first read, the other writer lands.
            shared.lock().unwrap().body["properties"]["serviceMeshProfile"]["istio"]["revisions"] =
                json!(["asm-1-27", "asm-1-29"]);
        }
        one_revision(doc)
    };
    let err = stub
        .client
        .set_revisions(&stub.id, &revs(&["asm-1-27", "asm-1-28"]), &expected)
        .await
        .unwrap_err();
    assert!(matches!(err, ArmError::Precondition { .. }), "{err}");
    assert!(
        err.to_string().contains("expected one revision, found 2"),
        "{err}"
    );
    assert!(stub.shared.lock().unwrap().puts.is_empty());
}

#[tokio::test]
async fn throttling_is_retried_after_retry_after() {
    let stub = start(|arm| {
        arm.get_faults.push_back(Fault {
            status: 429,
            code: "TooManyRequests",
            headers: vec![("retry-after", "0")],
        });
        arm.put_faults.push_back(Fault {
            status: 429,
            code: "TooManyRequests",
            headers: vec![("retry-after-ms", "5")],
        });
    })
    .await;
    let target = revs(&["asm-1-27", "asm-1-28"]);
    stub.client
        .set_revisions(&stub.id, &target, &one_revision)
        .await
        .unwrap();
    let s = seen(&stub);
    assert_eq!(
        s.iter()
            .filter(|(m, k)| m == "PUT" && k == "cluster")
            .count(),
        2
    );
    assert_eq!(s[0], ("GET".into(), "cluster".into()));
    assert_eq!(s[1], ("GET".into(), "cluster".into()));
}

#[tokio::test]
async fn busy_cluster_waits_for_the_running_operation() {
    let stub = start(|arm| {
        arm.put_faults.push_back(fault(409, "OperationNotAllowed"));
        arm.busy_states
            .extend(["Succeeded", "Updating", "Updating"]);
    })
    .await;
    let target = revs(&["asm-1-27", "asm-1-28"]);
    stub.client
        .set_revisions(&stub.id, &target, &one_revision)
        .await
        .unwrap();
    let s = seen(&stub);
    // GET, PUT(409), GET Updating, GET Updating, GET idle, GET (re-read), PUT, ...
    assert_eq!(
        &s[..7],
        &[
            ("GET".into(), "cluster".into()),
            ("PUT".into(), "cluster".into()),
            ("GET".into(), "cluster".into()),
            ("GET".into(), "cluster".into()),
            ("GET".into(), "cluster".into()),
            ("GET".into(), "cluster".into()),
            ("PUT".into(), "cluster".into()),
        ]
    );
}

#[tokio::test]
async fn persistent_server_errors_give_up_with_the_arm_code() {
    let stub = start(|arm| {
        for _ in 0..10 {
            arm.get_faults.push_back(fault(503, "ServiceUnavailable"));
        }
    })
    .await;
    let err = stub.client.get_cluster(&stub.id).await.unwrap_err();
    match &err {
        ArmError::RetriesExhausted {
            status,
            code,
            attempts,
            cluster,
            ..
        } => {
            assert_eq!(*status, 503);
            assert_eq!(code, "ServiceUnavailable");
            assert_eq!(*attempts, 4);
            assert!(cluster.ends_with("managedClusters/aks-sim"));
        }
        other => panic!("expected RetriesExhausted, got {other}"),
    }
    assert_eq!(stub.shared.lock().unwrap().seen.len(), 4);
}

#[tokio::test]
async fn failed_operation_is_a_typed_error_with_the_operation_url() {
    let stub = start(|arm| arm.terminal = "Failed").await;
    let err = stub
        .client
        .set_revisions(&stub.id, &revs(&["asm-1-27", "asm-1-28"]), &one_revision)
        .await
        .unwrap_err();
    match &err {
        ArmError::OperationFailed {
            status,
            code,
            operation_url,
            ..
        } => {
            assert_eq!(status, "Failed");
            assert_eq!(code, "ResourceOperationFailure");
            assert!(operation_url.contains("/op/1?api-version=2016-03-30"));
        }
        other => panic!("expected OperationFailed, got {other}"),
    }
}

#[tokio::test]
async fn bad_request_fails_at_once() {
    let stub = start(|arm| arm.put_faults.push_back(fault(400, "BadRequest"))).await;
    let err = stub
        .client
        .set_revisions(&stub.id, &revs(&["asm-1-27", "asm-1-17"]), &one_revision)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.code(), Some("BadRequest"));
    assert_eq!(seen(&stub).len(), 2);
}

#[tokio::test]
async fn operation_url_on_another_origin_gets_no_token() {
    let stub =
        start(|arm| arm.op_url_override = Some("https://evil.example/op/1?x=y".into())).await;
    let err = stub
        .client
        .set_revisions(&stub.id, &revs(&["asm-1-27", "asm-1-28"]), &one_revision)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("refusing to send a token"),
        "{err}"
    );
}

#[tokio::test]
async fn upgrade_profile_and_the_in_progress_conflict() {
    let stub = start(|_| {}).await;
    let profile = stub.client.mesh_upgrade_profile(&stub.id).await.unwrap();
    assert_eq!(profile.properties.upgrades, revs(&["asm-1-28", "asm-1-29"]));
    stub.shared.lock().unwrap().body["properties"]["serviceMeshProfile"]["istio"]["revisions"] =
        json!(["asm-1-27", "asm-1-28"]);
    let err = stub
        .client
        .mesh_upgrade_profile(&stub.id)
        .await
        .unwrap_err();
    assert!(matches!(err, ArmError::UpgradeInProgress { .. }), "{err}");
}

#[tokio::test]
async fn user_kubeconfig_is_decoded() {
    let stub = start(|_| {}).await;
    let bytes = stub
        .client
        .list_cluster_user_kubeconfig(&stub.id)
        .await
        .unwrap();
    assert_eq!(bytes, b"apiVersion: v1\nkind: Config\n");
}

#[tokio::test]
async fn plain_http_is_only_for_loopback() {
    let http = asm_canary::azure::build_http_client(None).unwrap();
    let err = ArmClient::new(
        ArmClientOptions {
            endpoint: "http://management.azure.com".into(),
            ..Default::default()
        },
        Arc::new(FakeCredential),
        http,
    )
    .unwrap_err();
    assert!(err.to_string().contains("https://"), "{err}");
}
