//! The ARM and Kubernetes clients against hostile or misconfigured endpoints on loopback: a
//! body that never ends, an error that would print a signed URL, a certificate from an
//! unknown CA.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use asm_canary::azure::{ArmClient, ArmClientOptions, ArmError, ClusterId, RetryPolicy};
use axum::Router;
use axum::body::Body;
use axum::response::Response;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use common::{TestSim, stderr};

#[derive(Debug)]
struct FakeCredential;

#[async_trait::async_trait]
impl TokenCredential for FakeCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            "token",
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

fn cluster_id() -> ClusterId {
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks"
        .parse()
        .unwrap()
}

fn client(endpoint: String, http: reqwest::Client) -> ArmClient {
    ArmClient::new(
        ArmClientOptions {
            endpoint,
            retry: RetryPolicy {
                max_attempts: 2,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
            },
            ..Default::default()
        },
        Arc::new(FakeCredential),
        http,
    )
    .unwrap()
}

/// An endless body of zeros, in 64 KiB chunks, with the given status.
fn endless(status: u16) -> Response {
    let chunk = bytes::Bytes::from(vec![b'0'; 64 << 10]);
    let stream = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// A Kubernetes client of `server` with a bearer token and no CA data (the platform roots).
async fn kube_client(server: &str) -> kube::Client {
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: t}}\n"
    );
    asm_canary::k8s::client_from_kubeconfig_bytes(kubeconfig.as_bytes(), None)
        .await
        .unwrap()
}

/// A loopback server streaming a large body to the ARM client drove the process to 2.2 GB:
/// bodies were read whole, without a limit. They are read with a running limit now (32 MiB
/// for an answer, 1 MiB for an error), and a larger one is a clean error naming the limit.
#[tokio::test]
async fn an_endless_arm_body_is_refused_at_the_limit() {
    let app = Router::new()
        .route(
            "/subscriptions/{*rest}",
            axum::routing::get(|| async { endless(200) }),
        )
        .route(
            "/fail/{*rest}",
            axum::routing::get(|| async { endless(500) }),
        );
    let base = serve(app).await;
    let arm = client(
        base.clone(),
        asm_canary::azure::build_http_client(None).unwrap(),
    );
    let err = tokio::time::timeout(Duration::from_secs(60), arm.get_cluster(&cluster_id()))
        .await
        .expect("the read stops at the limit")
        .unwrap_err();
    assert!(matches!(err, ArmError::BodyTooLarge { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("larger than 32 MiB"), "{text}");
    assert!(text.contains("managed cluster"), "{text}");
    // An error answer: refused at the smaller limit.
    let op = format!("{base}/fail/op?api-version=1");
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        arm.poll_operation(&cluster_id(), &op),
    )
    .await
    .expect("the read stops at the limit")
    .unwrap_err();
    assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
}

/// reqwest's error text is "error sending request for url (<the full URL>)": an operation URL's
/// signed query (`sig=…`) was printed although the message named the URL redacted.
#[tokio::test]
async fn a_transport_error_never_prints_the_signed_query() {
    // Accepts connections and closes them without an answer.
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let arm = client(
        base.clone(),
        asm_canary::azure::build_http_client(None).unwrap(),
    );
    let op = format!("{base}/op/1?api-version=2016-03-30&t=1&c=x&sig=SECRETSIGNATURE");
    let err = arm.poll_operation(&cluster_id(), &op).await.unwrap_err();
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        text.push_str(&format!(" / {c} / {c:?}"));
        cause = c.source();
    }
    text.push_str(&format!(" / {err:?}"));
    assert!(matches!(err, ArmError::Transport { .. }), "{text}");
    assert!(!text.contains("SECRETSIGNATURE"), "{text}");
    assert!(
        text.contains("/op/1?"),
        "the URL is named, redacted: {text}"
    );
}

/// A certificate from an unknown CA ended as "error sending request" (ARM) or
/// "ClientSecretCredential authentication failed" with a hint to try another --auth. The
/// message now names the certificate problem and --ca-file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ca_is_named_with_the_ca_file_fix() {
    let sim = TestSim::start("healthy").await;
    // The ARM client with the platform roots only.
    let arm = client(
        sim.handle.info.arm_endpoint.clone(),
        asm_canary::azure::build_http_client(None).unwrap(),
    );
    let id: ClusterId = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerService/managedClusters/{}",
        sim.handle.info.subscription, sim.handle.info.resource_group, sim.handle.info.cluster
    )
    .parse()
    .unwrap();
    let err = arm.get_cluster(&id).await.unwrap_err();
    assert!(matches!(err, ArmError::Tls { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("CA this machine does not trust") && text.contains("--ca-file"),
        "{text}"
    );
    // The binary without the CA file: the token request fails first.
    let out = sim
        .command(&["plan"])
        .env_remove("ASM_CANARY_CA_FILE")
        .output()
        .await
        .unwrap();
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("CA this machine does not trust") && err.contains("--ca-file"),
        "{err}"
    );
    assert!(!err.contains("choose another with --auth"), "{err}");
}

/// Kubernetes answers were read whole too: a server streaming without end filled memory.
/// Every answer but a watch's is capped, and the error names the limit.
#[tokio::test]
async fn an_endless_kubernetes_body_is_refused_at_the_limit() {
    let app = Router::new().route(
        "/api/v1/namespaces/{ns}/configmaps/{name}",
        axum::routing::get(|| async { endless(200) }),
    );
    let base = serve(app).await;
    let kube = kube_client(&base).await;
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(kube, "shop");
    let err = tokio::time::timeout(Duration::from_secs(60), api.get("settings"))
        .await
        .expect("the read stops at the limit")
        .unwrap_err();
    let text = asm_canary::cli::error::chain(&err);
    assert!(text.contains("larger than 128 MiB"), "{text}");
}

/// A Kubernetes API server whose certificate the kubeconfig does not vouch for ended as
/// "client error (Connect)", with no word of TLS. The message now names the certificate
/// problem and where the CA comes from (the kubeconfig, or --ca-file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_server_with_an_unknown_ca_is_named_with_the_fix() {
    let sim = TestSim::start("healthy").await;
    let kube = kube_client(&sim.handle.info.kube_server).await;
    let err = asm_canary::k8s::namespaces_by_label(&kube, "istio.io/rev")
        .await
        .unwrap_err();
    let text = asm_canary::cli::error::chain(&err);
    assert!(
        text.contains("CA this machine does not trust")
            && text.contains("certificate-authority-data")
            && text.contains("--ca-file"),
        "{text}"
    );
}

/// The token requests went through azure_identity, which reads an answer whole: a token
/// endpoint streaming without end filled memory. Its transport caps the body at 1 MiB now.
#[tokio::test]
async fn an_endless_token_endpoint_body_is_refused_at_the_limit() {
    use asm_canary::azure::http::{LimitedTransport, TOKEN_BODY_LIMIT};
    use azure_core::http::{HttpClient, Method, Request, Url};
    let app = Router::new().route(
        "/{tenant}/oauth2/v2.0/token",
        axum::routing::post(|| async { endless(200) }),
    );
    let base = serve(app).await;
    let transport = LimitedTransport {
        http: asm_canary::azure::build_http_client(None).unwrap(),
        limit: TOKEN_BODY_LIMIT,
    };
    let url = Url::parse(&format!("{base}/tenant/oauth2/v2.0/token")).unwrap();
    let response = transport
        .execute_request(&Request::new(url, Method::Post))
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(60), response.into_body().collect())
        .await
        .expect("the read stops at the limit")
        .unwrap_err();
    assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
}

/// A watch is not capped as a whole (it lasts as long as the watch), so an endless line — an
/// "event" that never ends — filled memory. Each event is capped at 16 MiB now.
#[tokio::test]
async fn an_endless_watch_event_is_refused_at_the_limit() {
    use futures::StreamExt;
    let app = Router::new().route(
        "/api/v1/namespaces/{ns}/configmaps",
        axum::routing::get(|| async { endless(200) }),
    );
    let base = serve(app).await;
    let kube = kube_client(&base).await;
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(kube, "shop");
    let stream = api
        .watch(&kube::api::WatchParams::default(), "0")
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(60), Box::pin(stream).next())
        .await
        .expect("the read stops at the limit")
        .expect("an item");
    let err = first.unwrap_err();
    let text = asm_canary::cli::error::chain(&err);
    assert!(text.contains("watch event larger than 16 MiB"), "{text}");
}
