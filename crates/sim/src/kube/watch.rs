//! Watch streams: one compact JSON event per line in a `200` chunked response, headers flushed
//! at once; bookmarks carry kind/apiVersion/resourceVersion; an expired resourceVersion is an
//! `ERROR` event with a 410 `Expired` Status followed by the end of the stream (never an HTTP
//! 410, which kube-runtime would retry forever); `sendInitialEvents` ends its initial ADDED
//! events with the `k8s.io/initial-events-end` bookmark.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::object::labels_of;
use super::resources::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Event, EventType, Store, Stored};

pub struct WatchRequest {
    pub rt: &'static ResourceType,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub resource_version: Option<String>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Duration,
    /// How often an idle watch gets a bookmark (real time).
    pub bookmark_every: Duration,
}

impl WatchRequest {
    fn matches(&self, stored: &Stored) -> bool {
        if self.labels.is_empty() && self.fields.is_empty() {
            return true;
        }
        if self.labels.is_empty()
            && let Some(answer) = self.fields.matches_meta(&stored.namespace, &stored.name)
        {
            return answer;
        }
        let obj = stored.decode();
        self.labels.matches(labels_of(&obj)) && self.fields.matches(&obj)
    }

    fn in_scope(&self, ev: &Event) -> bool {
        ev.resource == self.rt.plural
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| ns == ev.namespace)
    }
}

fn line(kind: &str, obj: &Value) -> Bytes {
    line_raw(kind, &serde_json::to_vec(obj).unwrap_or_default())
}

fn line_raw(kind: &str, object: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(object.len() + 32);
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(kind.as_bytes());
    buf.extend_from_slice(b"\",\"object\":");
    buf.extend_from_slice(object);
    buf.extend_from_slice(b"}\n");
    Bytes::from(buf)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta}),
    )
}

/// Where a watch starts: a snapshot of the current objects (no resourceVersion, or
/// `sendInitialEvents`), the remembered events after a resourceVersion, or an error event
/// when that version is too old.
enum Start {
    Snapshot(Vec<Arc<Stored>>, u64, broadcast::Receiver<Arc<Event>>),
    Resume(Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>, u64),
    Expired(String),
}

impl Start {
    fn of(store: &Store, req: &WatchRequest) -> Self {
        let rv_param = req
            .resource_version
            .clone()
            .filter(|s| !s.is_empty() && s != "0");
        match (&rv_param, req.send_initial_events) {
            (None, _) | (Some(_), true) => {
                let (items, rv, rx) = store.snapshot_and_watch(req.rt, req.namespace.as_deref());
                Start::Snapshot(items, rv, rx)
            }
            (Some(rv), false) => match rv.parse::<u64>() {
                Ok(n) => match store.watch_from(req.rt, req.namespace.as_deref(), n) {
                    Ok((backlog, rx)) => Start::Resume(backlog, rx, n),
                    Err(oldest) => {
                        Start::Expired(format!("too old resource version: {n} ({oldest})"))
                    }
                },
                Err(_) => Start::Expired(format!("too old resource version: {rv} (invalid)")),
            },
        }
    }
}

/// Starts the watch and returns the streaming response.
pub fn serve(store: &Store, req: WatchRequest) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let start = Start::of(store, &req);
    let mut interrupts = store.watch_interrupts();
    interrupts.mark_unchanged();
    tokio::spawn(stream_events(req, start, tx, interrupts));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Sends where the watch starts; returns the live subscription and the resourceVersion
/// the watcher has seen, or `None` when the watch is over.
async fn send_start(
    req: &WatchRequest,
    start: Start,
    tx: &mpsc::Sender<Bytes>,
) -> Option<(broadcast::Receiver<Arc<Event>>, u64)> {
    match start {
        Start::Expired(msg) => {
            let _ = tx
                .send(line("ERROR", &ApiError::expired(msg).to_status()))
                .await;
            None
        }
        Start::Snapshot(items, rv, rx) => {
            for obj in items.iter().filter(|o| req.matches(o)) {
                if tx.send(line_raw("ADDED", &obj.bytes)).await.is_err() {
                    return None;
                }
            }
            if req.send_initial_events {
                let _ = tx.send(bookmark(req.rt, rv, true)).await;
            }
            Some((rx, rv))
        }
        Start::Resume(backlog, rx, since) => {
            let mut last_rv = since;
            for ev in backlog {
                last_rv = last_rv.max(ev.rv);
                if let Some(b) = render(req, &ev)
                    && tx.send(b).await.is_err()
                {
                    return None;
                }
            }
            Some((rx, last_rv))
        }
    }
}

/// The watch stream: where it starts, then live events and bookmarks until its timeout,
/// the client leaving, or an interruption.
async fn stream_events(
    req: WatchRequest,
    start: Start,
    tx: mpsc::Sender<Bytes>,
    mut interrupts: tokio::sync::watch::Receiver<(u64, bool)>,
) {
    let Some((mut live, mut last_rv)) = send_start(&req, start, &tx).await else {
        return;
    };
    let deadline = tokio::time::Instant::now() + req.timeout;
    let mut tick = tokio::time::interval(req.bookmark_every);
    tick.tick().await;
    loop {
        tokio::select! {
            ev = live.recv() => match ev {
                Ok(ev) => {
                    if ev.rv <= last_rv {
                        continue;
                    }
                    last_rv = ev.rv;
                    if let Some(b) = render(&req, &ev)
                        && tx.send(b).await.is_err() {
                            return;
                        }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let msg = format!("too old resource version: {last_rv} (the watch fell behind)");
                    let _ = tx.send(line("ERROR", &ApiError::expired(msg).to_status())).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick(), if req.bookmarks => {
                if tx.send(bookmark(req.rt, last_rv, false)).await.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tx.closed() => return,
            _ = interrupts.changed() => {
                if interrupts.borrow().1 {
                    let msg = format!("too old resource version: {last_rv} (history compacted)");
                    let _ = tx.send(line("ERROR", &ApiError::expired(msg).to_status())).await;
                }
                return;
            }
        }
    }
}

/// The event as this watcher sees it (filtered watches turn matching changes into
/// ADDED/DELETED), or nothing.
fn render(req: &WatchRequest, ev: &Event) -> Option<Bytes> {
    if !req.in_scope(ev) {
        return None;
    }
    let now = req.matches(&ev.object);
    match ev.kind {
        EventType::Added => now.then(|| line_raw("ADDED", &ev.object.bytes)),
        EventType::Deleted => {
            let before = ev.old.as_ref().map(|o| req.matches(o)).unwrap_or(now);
            (now || before).then(|| line_raw("DELETED", &ev.object.bytes))
        }
        EventType::Modified => {
            let before = ev.old.as_ref().map(|o| req.matches(o)).unwrap_or(true);
            match (before, now) {
                (true, true) => Some(line_raw("MODIFIED", &ev.object.bytes)),
                (false, true) => Some(line_raw("ADDED", &ev.object.bytes)),
                (true, false) => Some(line_raw("DELETED", &ev.object.bytes)),
                (false, false) => None,
            }
        }
    }
}
