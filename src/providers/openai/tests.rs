use sse_stream::Sse;

use super::decode_event;
use crate::chat::StreamError;

fn data(d: &str) -> Result<Sse, StreamError> {
    Ok(Sse::default().data(d))
}

/// `decode_event` read both ways (in full, and kept as its JSON), which must agree; the full one.
fn decode_event_both(ev: Result<Sse, StreamError>) -> Option<crate::chat::StreamItem> {
    let full = decode_event(ev.clone(), None);
    let raw = decode_event(ev, Some(&mut crate::chat::Heads::default()));
    match (&full, &raw) {
        (None, None) => {}
        (Some(Ok(f)), Some(Ok(r))) => {
            // Decoded in full from its JSON, the raw chunk is the full one.
            let whole = r.as_ref().clone().into_chunk().ok();
            assert_eq!(whole.as_ref(), Some(&***f));
            // As read, it lacks only `object` and the chunk's and the choices' unmodelled members.
            let mut lean = (***f).clone();
            lean.object.clear();
            lean.extra.clear();
            lean.choices.iter_mut().for_each(|c| c.extra.clear());
            assert_eq!(lean, ***r);
        }
        (Some(Err(f)), Some(Err(r))) => assert_eq!(f, r),
        _ => panic!("read differently: {full:?} / {raw:?}"),
    }
    full
}

#[test]
fn chunks_decode() {
    let c = decode_event_both(data(
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}"#,
    ));
    assert_eq!(
        c.unwrap().unwrap().choices[0].delta.content.as_deref(),
        Some("x")
    );
}

#[test]
fn empty_and_comment_events_are_skipped() {
    assert!(decode_event_both(Ok(Sse::default())).is_none());
    assert!(decode_event_both(data("  ")).is_none());
}

#[test]
fn error_payloads_and_garbage_end_the_stream() {
    let e = decode_event_both(data(
        r#"{"error":{"message":"The server had an error","type":"server_error"}}"#,
    ));
    assert_eq!(e.unwrap().unwrap_err().message, "The server had an error");
    // An error payload that does not fit a chunk's shape is still read as the error.
    let e = decode_event_both(data(
        r#"{"choices":"none","error":{"message":"overloaded"}}"#,
    ));
    assert_eq!(e.unwrap().unwrap_err().message, "overloaded");
    // A chunk that does not fit, without an error, is a bad chunk.
    let e = decode_event_both(data(r#"{"choices":"none"}"#));
    assert!(
        e.unwrap()
            .unwrap_err()
            .message
            .starts_with("bad chunk from upstream")
    );
    let e = decode_event_both(data("{not json"));
    assert!(
        e.unwrap()
            .unwrap_err()
            .message
            .starts_with("bad chunk from upstream")
    );
    let e = decode_event_both(Err(StreamError::new("upstream stream broke: reset")));
    assert_eq!(
        e.unwrap().unwrap_err().message,
        "upstream stream broke: reset"
    );
}

#[test]
fn the_outgoing_request_encodes_like_the_clients_with_the_attempts_fields() {
    use super::outgoing;
    use crate::chat::ChatRequest;
    let req: ChatRequest = serde_json::from_value(serde_json::json!({
        "model": "route-a",
        "messages": [{"role": "system", "content": "terse"}, {"role": "user", "content": "hi"}],
        "stream": true,
        "stream_options": {"include_usage": false, "other": 1},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "max_tokens": 5,
        "max_completion_tokens": 6,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["x"],
        "n": 2,
        "seed": 7,
        "response_format": {"type": "json_object"}
    }))
    .expect("request");
    let mut as_before = req.clone();
    as_before.model = "gpt-4o".into();
    as_before.stream = None;
    as_before.stream_options = None;
    let sent = serde_json::to_string(&outgoing(&req, "gpt-4o", None, None)).expect("json");
    assert_eq!(sent, serde_json::to_string(&as_before).expect("json"));

    let mut opts = req.stream_options.clone().unwrap_or_default();
    opts.include_usage = Some(true);
    as_before.stream = Some(true);
    as_before.stream_options = Some(opts.clone());
    let sent =
        serde_json::to_string(&outgoing(&req, "gpt-4o", Some(true), Some(opts))).expect("json");
    assert_eq!(sent, serde_json::to_string(&as_before).expect("json"));
    assert!(sent.contains(r#""stream_options":{"include_usage":true,"other":1}"#));
}
