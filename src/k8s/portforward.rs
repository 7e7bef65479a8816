//! An HTTP/1.1 GET through a pod port-forward, for istiod's `/debug/syncz` on 15014: istiod
//! only answers unauthenticated debug requests from loopback, which a port-forward is and the
//! API server's pod proxy is not.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;

use super::{K8sError, target};

/// Largest body accepted (syncz of a large mesh is a few MB).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Bytes,
}

/// GETs `path` (with its query) from `port` of pod `namespace/pod` over a port-forward.
pub async fn http_get_via_portforward(
    client: &Client,
    namespace: &str,
    pod: &str,
    port: u16,
    path: &str,
) -> Result<HttpResponse, K8sError> {
    let who = target(namespace, pod);
    let fail = |message: String| K8sError::PortForward {
        target: who.clone(),
        port,
        message,
    };
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let mut forwarder = api
        .portforward(pod, &[port])
        .await
        .map_err(|source| K8sError::Api {
            action: "port-forward to",
            kind: "Pod",
            target: who.clone(),
            source,
        })?;
    let stream = forwarder
        .take_stream(port)
        .ok_or_else(|| fail("the forwarder gave no stream for the port".into()))?;
    let port_error = forwarder.take_error(port);

    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(format!("HTTP handshake failed: {e}")))?;
    let conn_task = tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(%err, "port-forward HTTP connection ended with an error");
        }
    });
    let request = http::Request::get(path)
        .header(http::header::HOST, format!("localhost:{port}"))
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(format!("bad request path {path:?}: {e}")))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| fail(format!("GET {path} failed: {e}")))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| fail(format!("reading the body of GET {path} failed: {e}")))?
            .to_bytes();
        Ok::<_, K8sError>(HttpResponse { status, body })
    }
    .await;
    drop(sender);
    conn_task.abort();
    let result = match result {
        Ok(r) => Ok(r),
        Err(err) => {
            // The kubelet reports why it could not connect on the error channel.
            if let Some(port_error) = port_error
                && let Ok(Some(msg)) =
                    tokio::time::timeout(std::time::Duration::from_millis(200), port_error).await
            {
                Err(fail(msg))
            } else {
                Err(err)
            }
        }
    };
    forwarder.abort();
    let _ = forwarder.join().await;
    result
}
