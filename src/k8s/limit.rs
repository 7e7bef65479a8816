//! Response bodies read with a cap, so a server (or a proxy in between) streaming without end
//! fails the request instead of filling memory. An answer is capped as a whole; a watch is a
//! stream that lasts as long as the watch, so each of its events (one JSON object per line)
//! is capped instead.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// The most of a Kubernetes API answer that is read: lists are paged, and a page of the
/// largest objects is a few MiB.
pub const KUBE_BODY_LIMIT: usize = 128 << 20;

/// The most of one watch event that is read: etcd refuses objects over 1.5 MiB, so one event's
/// JSON is far below this.
pub const KUBE_EVENT_LIMIT: usize = 16 << 20;

/// A Kubernetes answer larger than [`KUBE_BODY_LIMIT`].
#[derive(Debug, thiserror::Error)]
#[error(
    "the Kubernetes API answered a body larger than {} MiB; no real answer is that large — check the API server address and any proxy in between",
    KUBE_BODY_LIMIT >> 20
)]
pub struct KubeBodyTooLarge;

/// A watch event larger than [`KUBE_EVENT_LIMIT`].
#[derive(Debug, thiserror::Error)]
#[error(
    "the Kubernetes API sent a watch event larger than {} MiB; no real object is that large — check the API server address and any proxy in between",
    KUBE_EVENT_LIMIT >> 20
)]
pub struct KubeEventTooLarge;

/// Caps every response body: a watch's per event ([`KUBE_EVENT_LIMIT`]), any other as a whole
/// ([`KUBE_BODY_LIMIT`]).
#[derive(Clone, Copy, Debug)]
pub struct LimitBodiesLayer;

impl<S> tower::Layer<S> for LimitBodiesLayer {
    type Service = LimitBodies<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LimitBodies { inner }
    }
}

/// See [`LimitBodiesLayer`].
#[derive(Clone, Debug)]
pub struct LimitBodies<S> {
    inner: S,
}

fn is_watch(uri: &http::Uri) -> bool {
    uri.query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
}

impl<S, B> tower::Service<http::Request<kube::client::Body>> for LimitBodies<S>
where
    S: tower::Service<http::Request<kube::client::Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    type Response = http::Response<CappedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let cap = if is_watch(req.uri()) {
            Cap::PerEvent
        } else {
            Cap::Whole
        };
        let fut = self.inner.call(req);
        Box::pin(async move { Ok(fut.await?.map(|inner| CappedBody::new(inner, cap))) })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cap {
    /// The whole body, at most [`KUBE_BODY_LIMIT`].
    Whole,
    /// Each line (a watch event), at most [`KUBE_EVENT_LIMIT`].
    PerEvent,
}

/// A body that fails once it passes its cap; see [`LimitBodiesLayer`].
pub struct CappedBody<B> {
    inner: Pin<Box<B>>,
    cap: Cap,
    /// Bytes of the whole body, or of the current line, read so far.
    seen: usize,
}

impl<B> CappedBody<B> {
    fn new(inner: B, cap: Cap) -> Self {
        Self {
            inner: Box::pin(inner),
            cap,
            seen: 0,
        }
    }

    /// Counts `data`; the error when the cap is passed.
    fn count(&mut self, data: &[u8]) -> Result<(), tower::BoxError> {
        match self.cap {
            Cap::Whole => {
                self.seen += data.len();
                if self.seen > KUBE_BODY_LIMIT {
                    return Err(Box::new(KubeBodyTooLarge));
                }
            }
            Cap::PerEvent => {
                // The line running on from earlier chunks ends at the first newline; the
                // lines after it are within this chunk, and the last one runs on.
                let (ended, running) = match data.iter().position(|b| *b == b'\n') {
                    None => (0, self.seen + data.len()),
                    Some(first) => {
                        let last = data.iter().rposition(|b| *b == b'\n').unwrap_or(first);
                        (self.seen + first, data.len() - last - 1)
                    }
                };
                self.seen = running;
                if ended.max(running) > KUBE_EVENT_LIMIT {
                    return Err(Box::new(KubeEventTooLarge));
                }
            }
        }
        Ok(())
    }
}

impl<B> Body for CappedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<tower::BoxError>,
{
    type Data = Bytes;
    type Error = tower::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match ready!(self.inner.as_mut().poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref()
            && let Err(e) = self.count(data)
        {
            return Poll::Ready(Some(Err(e)));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_is_capped_per_event_and_an_answer_as_a_whole() {
        let mut watch = CappedBody::new((), Cap::PerEvent);
        let event = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            watch
                .count(&event)
                .unwrap_or_else(|_| panic!("one event per line"));
            watch.count(b"\n").unwrap();
        }
        let err = (0..17).try_for_each(|_| watch.count(&event)).unwrap_err();
        assert!(
            err.to_string().contains("watch event larger than 16 MiB"),
            "{err}"
        );

        let mut answer = CappedBody::new((), Cap::Whole);
        let err = (0..129).try_for_each(|_| answer.count(&event)).unwrap_err();
        assert!(err.to_string().contains("larger than 128 MiB"), "{err}");
    }
}
