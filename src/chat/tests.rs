use serde_json::json;

use super::*;

#[test]
fn unknown_fields_round_trip() {
    let body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hi", "x_msg": 1}],
        "response_format": {"type": "json_object"},
        "seed": 7,
        "stream_options": {"include_usage": true, "future": "x"}
    });
    let req: ChatRequest = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(req.extra.get("seed"), Some(&json!(7)));
    assert!(req.wants_stream_usage());
    assert_eq!(serde_json::to_value(&req).unwrap(), body);
}

#[test]
fn developer_role_is_system() {
    let m: Message =
        serde_json::from_value(json!({"role": "developer", "content": "be brief"})).unwrap();
    assert_eq!(m.role, Role::System);
}

#[test]
fn content_parts_text() {
    let m: Message = serde_json::from_value(json!({"role": "user", "content": [
        {"type": "text", "text": "a"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
        {"type": "text", "text": "b"}
    ]}))
    .unwrap();
    assert_eq!(m.text_content(), "ab");
}

#[tokio::test]
async fn collect_folds_text_and_tool_calls() {
    let chunks: Vec<ChatChunk> = vec![
        serde_json::from_value(json!({"id": "c1", "model": "m", "created": 5, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]})).unwrap(),
        serde_json::from_value(json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": "lo"}}]})).unwrap(),
        serde_json::from_value(json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{\"a\":"}}]}}]})).unwrap(),
        serde_json::from_value(json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, "finish_reason": "tool_calls"}]})).unwrap(),
        serde_json::from_value(json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})).unwrap(),
    ];
    let stream: ChatStream = Box::pin(futures_util::stream::iter(
        chunks.into_iter().map(|c| Ok(Box::new(c.into()))),
    ));
    let r = collect_stream(stream).await.unwrap();
    assert_eq!(r.id, "c1");
    assert_eq!(r.model, "m");
    let c = &r.choices[0];
    assert_eq!(c.message.text_content(), "Hello");
    let calls = c.message.tool_calls.as_ref().unwrap();
    assert_eq!(calls[0].function.name, "add");
    assert_eq!(calls[0].function.arguments, "{\"a\":1}");
    assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(r.usage.unwrap().total_tokens, 7);
}

#[tokio::test]
async fn absurd_indexes_from_upstream_are_left_out_of_the_fold() {
    // Without a bound the fold would allocate 4,294,967,296 choice or tool-call slots.
    let chunks: Vec<ChatChunk> = vec![
        serde_json::from_value(json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": "ok"}}]})).unwrap(),
        serde_json::from_value(json!({"id": "c1", "choices": [{"index": 4294967295u32, "delta": {"content": "junk"}}]})).unwrap(),
        serde_json::from_value(json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 4294967295u32, "id": "x", "function": {"name": "f", "arguments": "{}"}}]}}]})).unwrap(),
        serde_json::from_value(json!({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})).unwrap(),
    ];
    let stream: ChatStream = Box::pin(futures_util::stream::iter(
        chunks.into_iter().map(|c| Ok(Box::new(c.into()))),
    ));
    let r = collect_stream(stream).await.unwrap();
    assert_eq!(r.choices.len(), 1);
    assert_eq!(r.choices[0].message.text_content(), "ok");
    assert!(r.choices[0].message.tool_calls.is_none());
    assert_eq!(r.choices[0].finish_reason.as_deref(), Some("stop"));
}
