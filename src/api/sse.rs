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

/// One SSE message whose data is `value` as JSON, written straight into the frame (JSON from
/// serde_json holds no raw line break, so it is one `data:` line). Same bytes as
/// `frame(event, &serde_json::to_string(value)?)`, one buffer instead of three.
pub fn json_frame<T: serde::Serialize + ?Sized>(
    event: Option<&str>,
    value: &T,
) -> Result<Bytes, serde_json::Error> {
    let mut buf = Vec::with_capacity(512);
    if let Some(e) = event {
        buf.extend_from_slice(b"event: ");
        buf.extend_from_slice(e.as_bytes());
        buf.push(b'\n');
    }
    buf.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut buf, value)?;
    buf.extend_from_slice(b"\n\n");
    Ok(Bytes::from(buf))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_frame_is_the_frame_of_the_json_text() {
        let v = serde_json::json!({"a": "line\nbreak", "b": [1, 2], "c": "quote\" and é"});
        let text = serde_json::to_string(&v).expect("encode");
        assert_eq!(json_frame(None, &v).expect("frame"), frame(None, &text));
        assert_eq!(
            json_frame(Some("message_start"), &v).expect("frame"),
            frame(Some("message_start"), &text)
        );
        assert_eq!(
            frame(Some("x"), "{}"),
            Bytes::from_static(b"event: x\ndata: {}\n\n")
        );
    }
}
