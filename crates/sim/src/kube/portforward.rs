//! `pods/portforward` over WebSocket, as kube-rs `Api::portforward` speaks it
//! (`v4.channel.k8s.io`; kubernetes-wire.md §6): after the upgrade the server sends the
//! 3-byte `[channel, port_lo, port_hi]` frame on the data and the error channel of every
//! requested port; then `[2*i, payload…]` carries the bytes of port `i` both ways, and an
//! error is plain text on channel `2*i+1`. An istiod pod's port 15014 is served by an
//! in-process HTTP/1.1 server answering as istiod's monitoring port does, a ready proxied
//! pod's 15090 as its Envoy's stats endpoint does ([`super::egress`]); any other port is
//! refused as a kubelet would report it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, WriteHalf};
use tokio::sync::mpsc;

use super::addon;
use super::egress;
use super::istio::{is_istiod, pod_revision};
use super::object::{name_of, pod_ready, uid_of};
use super::resources::by_plural;
use super::status::ApiError;
use crate::Shared;

const PROTOCOL: &str = "v4.channel.k8s.io";

pub async fn handle(
    shared: Arc<Shared>,
    ns: String,
    name: String,
    q: HashMap<String, String>,
    req: Request,
) -> Response {
    let pods = by_plural("pods");
    let Some(pod) = shared.kube.store.get(pods, &ns, &name) else {
        return ApiError::not_found(pods, &name).into_response();
    };
    let ports: Result<Vec<u16>, _> = q
        .get("ports")
        .map(String::as_str)
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<u16>())
        .collect();
    let ports = match ports {
        Ok(p) if !p.is_empty() && p.iter().all(|x| *x > 0) => p,
        _ => {
            return ApiError::bad_request(
                "query parameter \"port\" is required and must be a valid port number",
            )
            .into_response();
        }
    };
    let (mut parts, _body) = req.into_parts();
    let offered_v4 = parts
        .headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == PROTOCOL);
    let mut ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(_) => {
            return ApiError::bad_request("Upgrade request required").into_response();
        }
    };
    if offered_v4 {
        ws.set_selected_protocol(HeaderValue::from_static(PROTOCOL));
    }
    ws.on_upgrade(move |socket| forward(shared, pod, ports, socket))
}

async fn forward(shared: Arc<Shared>, pod: Arc<Value>, ports: Vec<u16>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if sink
                .send(Message::Binary(Bytes::from(frame)))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    });
    for (i, port) in ports.iter().enumerate() {
        let [lo, hi] = port.to_le_bytes();
        let _ = out_tx.send(vec![(2 * i) as u8, lo, hi]).await;
        let _ = out_tx.send(vec![(2 * i + 1) as u8, lo, hi]).await;
    }
    let istiod = is_istiod(&pod) && pod_ready(&pod);
    // a sidecar's (or gateway's) Envoy serves its stats on 15090
    let proxy = !is_istiod(&pod) && pod_revision(&pod).is_some() && pod_ready(&pod);
    let mut writers: HashMap<usize, WriteHalf<DuplexStream>> = HashMap::new();
    for (i, port) in ports.iter().enumerate() {
        let server: Option<Handler> = match port {
            15014 if istiod => Some(addon::istiod_http),
            15090 if proxy => Some(egress::proxy_http),
            _ => None,
        };
        if let Some(server) = server {
            writers.insert(i, connect_http(&shared, &pod, i, out_tx.clone(), server));
        } else {
            let _ = out_tx.send(refused(i, *port, &pod)).await;
        }
    }
    while let Some(msg) = stream.next().await {
        match msg {
            Ok(Message::Binary(data)) => {
                if data.len() < 2 {
                    continue;
                }
                let ch = data[0] as usize;
                if ch % 2 == 1 {
                    continue;
                }
                if let Some(w) = writers.get_mut(&(ch / 2))
                    && w.write_all(&data[1..]).await.is_err()
                {
                    writers.remove(&(ch / 2));
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(writers);
    drop(out_tx);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
}

/// An in-process HTTP server of a pod's port: (state, pod, path and query) → (status,
/// content type, body).
type Handler = fn(&super::KubeState, &Value, &str) -> (u16, &'static str, Vec<u8>);

/// Connects port `i` to an in-process HTTP server (istiod's monitoring port, a proxy's stats):
/// its answers go out on the port's data channel; the returned half takes what the client sends.
fn connect_http(
    shared: &Arc<Shared>,
    pod: &Arc<Value>,
    i: usize,
    out_tx: mpsc::Sender<Vec<u8>>,
    handler: Handler,
) -> WriteHalf<DuplexStream> {
    let (client, server) = tokio::io::duplex(256 * 1024);
    let kube_shared = shared.clone();
    let pod_c = pod.clone();
    tokio::spawn(async move {
        let router = axum::Router::new().fallback(move |req: Request| {
            let shared = kube_shared.clone();
            let pod = pod_c.clone();
            async move {
                let pq = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "/".into());
                let (code, ct, body) = handler(&shared.kube, &pod, &pq);
                let mut resp = Response::new(axum::body::Body::from(body));
                *resp.status_mut() =
                    axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::OK);
                resp.headers_mut().insert(
                    axum::http::header::CONTENT_TYPE,
                    HeaderValue::from_static(ct),
                );
                resp
            }
        });
        let service = hyper_util::service::TowerToHyperService::new(router);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(server), service)
            .await;
    });
    let (mut read, write) = tokio::io::split(client);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut frame = Vec::with_capacity(n + 1);
                    frame.push((2 * i) as u8);
                    frame.extend_from_slice(&buf[..n]);
                    if out_tx.send(frame).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    write
}

/// The error frame of port `i` when nothing listens on it, as a kubelet reports it.
fn refused(i: usize, port: u16, pod: &Value) -> Vec<u8> {
    let mut frame = vec![(2 * i + 1) as u8];
    frame.extend_from_slice(
        format!(
            "error forwarding port {port} to pod {}, uid {}: failed to execute portforward in network namespace: failed to connect to localhost:{port} inside namespace: connection refused",
            name_of(pod),
            uid_of(pod)
        )
        .as_bytes(),
    );
    frame
}
