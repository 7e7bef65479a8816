//! The ARM and Kubernetes clients against hostile endpoints on loopback: a body that never ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use asm_canary::azure::{ArmClient, ArmClientOptions, ArmError, ClusterId, RetryPolicy};
use axum::Router;
use axum::body::Body;
use axum::response::Response;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};

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

/// Kubernetes answers were read whole too: a server streaming without end filled memory.
/// Every answer but a watch's is capped, and the error names the limit.
#[tokio::test]
async fn an_endless_kubernetes_body_is_refused_at_the_limit() {
    let app = Router::new().route(
        "/api/v1/namespaces/{ns}/configmaps/{name}",
        axum::routing::get(|| async { endless(200) }),
    );
    let base = serve(app).await;
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {base}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: t}}\n"
    );
    let kube = asm_canary::k8s::client_from_kubeconfig_bytes(kubeconfig.as_bytes(), None)
        .await
        .unwrap();
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(kube, "shop");
    let err = tokio::time::timeout(Duration::from_secs(60), api.get("settings"))
        .await
        .expect("the read stops at the limit")
        .unwrap_err();
    let text = asm_canary::cli::error::chain(&err);
    assert!(text.contains("larger than 128 MiB"), "{text}");
}
