//! Server-sent events out: framing, keep-alive comments while the upstream is silent.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// One SSE message with an optional event name.
pub fn frame(event: Option<&str>, data: &str) -> Bytes {
    let mut sse = sse_stream::Sse::default().data(data);
    if let Some(e) = event {
        sse = sse.event(e);
    }
    Bytes::from(sse)
}

const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// A streaming response of already framed events, with a keep-alive comment after `interval` of silence.
pub fn response<S>(events: S, interval: Duration) -> Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let body = async_stream::stream! {
        let mut events = std::pin::pin!(events);
        loop {
            match tokio::time::timeout(interval, events.next()).await {
                Ok(Some(b)) => yield Ok::<_, std::convert::Infallible>(b),
                Ok(None) => break,
                Err(_) => yield Ok(Bytes::from_static(KEEP_ALIVE)),
            }
        }
    };
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
