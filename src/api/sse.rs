//! Server-sent events out: framing, keep-alive comments while the upstream is silent.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::Instant;

/// One SSE message with an optional event name.
pub fn frame(event: Option<&str>, data: &str) -> Bytes {
    let mut sse = sse_stream::Sse::default().data(data);
    if let Some(e) = event {
        sse = sse.event(e);
    }
    Bytes::from(sse)
}

/// Appends one SSE message whose data is one line of JSON, as it is, given in parts (a chunk's
/// upstream JSON; see `chat::Chunk::json`). Same bytes as `frame(None, <the parts joined>)`.
pub fn json_line_into(out: &mut Vec<u8>, parts: [&[u8]; 2]) {
    out.reserve(parts[0].len() + parts[1].len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(parts[0]);
    out.extend_from_slice(parts[1]);
    out.extend_from_slice(b"\n\n");
}

/// Appends one SSE message whose data is `value` as JSON, written straight into `out` (JSON from
/// serde_json holds no raw line break, so it is one `data:` line). Same bytes as
/// `frame(event, &serde_json::to_string(value)?)`. On an error `out` is left as it was.
pub fn json_frame_into<T: serde::Serialize + ?Sized>(
    out: &mut Vec<u8>,
    event: Option<&str>,
    value: &T,
) -> Result<(), serde_json::Error> {
    let start = out.len();
    if let Some(e) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    if let Err(e) = serde_json::to_writer(&mut *out, value) {
        out.truncate(start);
        return Err(e);
    }
    out.extend_from_slice(b"\n\n");
    Ok(())
}

/// Appends one SSE message named `event` whose data is a JSON value: the same bytes as
/// `frame(Some(event), &value.to_string())`, written straight into `out`.
pub fn value_frame_into(out: &mut Vec<u8>, event: &str, value: &serde_json::Value) {
    if json_frame_into(out, Some(event), value).is_err() {
        // Not reached (a `Value` always encodes); the same bytes the long way if it were.
        out.extend_from_slice(&frame(Some(event), &value.to_string()));
    }
}

const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// A streaming response of already framed events, with a keep-alive comment after `interval` of silence.
pub fn response<S>(events: S, interval: Duration) -> Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    // One timer for the whole stream, re-armed only when it fires: a timeout per event built and
    // dropped a timer entry for every chunk (docs/performance.md, twelfth slice). The timer fires
    // at most `interval` after the last event; if an event came since, it is set again for
    // `interval` after that event, so a keep-alive goes out after exactly `interval` of silence.
    let body = async_stream::stream! {
        let mut events = std::pin::pin!(events);
        let mut last = Instant::now();
        let timer = tokio::time::sleep_until(last + interval);
        let mut timer = std::pin::pin!(timer);
        loop {
            tokio::select! {
                biased;
                next = events.next() => match next {
                    Some(b) => {
                        last = Instant::now();
                        yield Ok::<_, std::convert::Infallible>(b);
                    }
                    None => break,
                },
                () = &mut timer => {
                    let due = last + interval;
                    if Instant::now() >= due {
                        yield Ok(Bytes::from_static(KEEP_ALIVE));
                        last = Instant::now();
                        timer.as_mut().reset(last + interval);
                    } else {
                        timer.as_mut().reset(due);
                    }
                }
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

    /// The body of `response`, read with the time each frame arrived (paused clock).
    async fn timed_frames(resp: Response) -> Vec<(u64, Bytes)> {
        let start = Instant::now();
        let mut body = resp.into_body().into_data_stream();
        let mut out = Vec::new();
        while let Some(frame) = body.next().await {
            let at = (Instant::now() - start).as_millis() as u64;
            out.push((at, frame.expect("frame")));
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alives_fill_each_silence_and_only_silence() {
        let ka = Bytes::from_static(KEEP_ALIVE);
        // Events at 0, 50 and 120 ms, then 350 ms of silence before the last at 470 ms.
        let events = async_stream::stream! {
            for (wait, text) in [(0, "a"), (50, "b"), (70, "c"), (350, "d")] {
                tokio::time::sleep(Duration::from_millis(wait)).await;
                yield Bytes::from(text);
            }
        };
        let frames = timed_frames(response(events, Duration::from_millis(100))).await;
        let expect: Vec<(u64, Bytes)> = vec![
            (0, Bytes::from("a")),
            (50, Bytes::from("b")),
            (120, Bytes::from("c")),
            // 100 ms after the last event, then every 100 ms until the next.
            (220, ka.clone()),
            (320, ka.clone()),
            (420, ka.clone()),
            (470, Bytes::from("d")),
        ];
        assert_eq!(frames, expect);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_stream_gets_no_keep_alive() {
        // An event every 60 ms for a second: never 100 ms of silence.
        let events = async_stream::stream! {
            for i in 0..16 {
                tokio::time::sleep(Duration::from_millis(60)).await;
                yield Bytes::from(format!("{i}"));
            }
        };
        let frames = timed_frames(response(events, Duration::from_millis(100))).await;
        assert_eq!(frames.len(), 16);
        assert!(
            frames.iter().all(|(_, b)| b.as_ref() != KEEP_ALIVE),
            "{frames:?}"
        );
    }

    #[test]
    fn a_json_frame_is_the_frame_of_the_json_text() {
        let v = serde_json::json!({"a": "line\nbreak", "b": [1, 2], "c": "quote\" and é"});
        let text = serde_json::to_string(&v).expect("encode");
        let json_frame = |event| {
            let mut out = b"before".to_vec();
            json_frame_into(&mut out, event, &v).expect("frame");
            out.split_off(6)
        };
        assert_eq!(json_frame(None), frame(None, &text));
        assert_eq!(
            json_frame(Some("message_start")),
            frame(Some("message_start"), &text)
        );
        let mut out = b"before".to_vec();
        json_line_into(&mut out, [b"{\"a\":1", b"}"]);
        assert_eq!(out, b"beforedata: {\"a\":1}\n\n");
        // A value serde_json cannot write (a key that is not a string) leaves nothing behind.
        let bad = std::collections::BTreeMap::from([(vec![1u8], 1)]);
        let mut out = b"before".to_vec();
        assert!(json_frame_into(&mut out, Some("x"), &bad).is_err());
        assert_eq!(out, b"before");
        assert_eq!(
            frame(Some("x"), "{}"),
            Bytes::from_static(b"event: x\ndata: {}\n\n")
        );
    }
}
