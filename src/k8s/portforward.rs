//! An HTTP/1.1 GET through a pod port-forward, for istiod's `/debug/syncz` on 15014: istiod
//! only answers unauthenticated debug requests from loopback, which a port-forward is and the
//! API server's pod proxy is not.

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
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

/// What [`http_get_parsed_via_portforward`] got: the body as parsed, or, when the status was
/// not 200, the whole answer (the body up to [`MAX_BODY`]) unparsed.
#[derive(Debug)]
pub enum Parsed<T> {
    Ok(T),
    NotOk(HttpResponse),
}

/// GETs `path` (with its query) from `port` of pod `namespace/pod` over a port-forward.
pub async fn http_get_via_portforward(
    client: &Client,
    namespace: &str,
    pod: &str,
    port: u16,
    path: &str,
) -> Result<HttpResponse, K8sError> {
    get_with(client, namespace, pod, port, path, collect).await
}

/// GETs `path` like [`http_get_via_portforward`] and hands a 200's body to `parse` as a
/// reader over the chunks as they were received, never copied into one buffer (the body of
/// a large mesh's syncz is megabytes: `parse` can turn it into what it keeps as it reads).
pub async fn http_get_parsed_via_portforward<T>(
    client: &Client,
    (namespace, pod, port): (&str, &str, u16),
    path: &str,
    parse: impl FnOnce(&mut dyn std::io::Read) -> T,
) -> Result<Parsed<T>, K8sError> {
    get_with(
        client,
        namespace,
        pod,
        port,
        path,
        async move |status, body| {
            let chunks = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            if status != 200 {
                let body = chunks.to_bytes();
                return Ok(Parsed::NotOk(HttpResponse { status, body }));
            }
            Ok(Parsed::Ok(parse(&mut chunks.aggregate().reader())))
        },
    )
    .await
}

/// The whole body, up to [`MAX_BODY`].
async fn collect(status: u16, body: Incoming) -> Result<HttpResponse, String> {
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(HttpResponse { status, body })
}

/// Opens the port-forward, sends the GET and gives the answer's status and body to `read`
/// (whose error is reported as a failure to read the body), then closes the forward.
async fn get_with<T>(
    client: &Client,
    namespace: &str,
    pod: &str,
    port: u16,
    path: &str,
    read: impl AsyncFnOnce(u16, Incoming) -> Result<T, String>,
) -> Result<T, K8sError> {
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
        read(status, response.into_body())
            .await
            .map_err(|e| fail(format!("reading the body of GET {path} failed: {e}")))
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
