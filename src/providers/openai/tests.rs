use sse_stream::Sse;

use super::decode_event;
use crate::chat::StreamError;

fn data(d: &str) -> Result<Sse, StreamError> {
    Ok(Sse::default().data(d))
}

#[test]
fn chunks_decode() {
    let c = decode_event(data(
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}"#,
    ));
    assert_eq!(
        c.unwrap().unwrap().choices[0].delta.content.as_deref(),
        Some("x")
    );
}

#[test]
fn empty_and_comment_events_are_skipped() {
    assert!(decode_event(Ok(Sse::default())).is_none());
    assert!(decode_event(data("  ")).is_none());
}

#[test]
fn error_payloads_and_garbage_end_the_stream() {
    let e = decode_event(data(
        r#"{"error":{"message":"The server had an error","type":"server_error"}}"#,
    ));
    assert_eq!(e.unwrap().unwrap_err().message, "The server had an error");
    let e = decode_event(data("{not json"));
    assert!(
        e.unwrap()
            .unwrap_err()
            .message
            .starts_with("bad chunk from upstream")
    );
    let e = decode_event(Err(StreamError::new("upstream stream broke: reset")));
    assert_eq!(
        e.unwrap().unwrap_err().message,
        "upstream stream broke: reset"
    );
}
