use serde_json::{Value, json};

use super::translate::{self, StreamDecoder};
use crate::chat::{ChatRequest, collect_stream};

fn chat(v: Value) -> ChatRequest {
    serde_json::from_value(v).unwrap()
}

#[test]
fn a_chat_request_becomes_converse_with_cache_points_kept() {
    let req = chat(json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Long rules", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}, "cache_control": {"type": "ephemeral"}}
            ]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "tooluse_1", "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}}
            ]},
            {"role": "tool", "tool_call_id": "tooluse_1", "content": "a cat"},
            {"role": "tool", "tool_call_id": "tooluse_1", "content": "{\"n\": 2}"}
        ],
        "max_completion_tokens": 50, "temperature": 0.1, "stop": ["END"],
        "tools": [{"type": "function", "function": {"name": "look", "description": "Looks", "parameters": {"type": "object"}}}],
        "tool_choice": "required"
    }));
    let v = translate::to_converse_request(&req).unwrap();
    assert_eq!(
        v["system"],
        json!([{"text": "Long rules"}, {"cachePoint": {"type": "default"}}])
    );
    let m = v["messages"].as_array().unwrap();
    assert_eq!(m.len(), 3, "{v}");
    assert_eq!(
        m[0]["content"][1],
        json!({"image": {"format": "png", "source": {"bytes": "iVBOR"}}})
    );
    assert_eq!(
        m[0]["content"][2],
        json!({"cachePoint": {"type": "default"}})
    );
    // The empty assistant text is not sent (Bedrock refuses blank text blocks).
    assert_eq!(
        m[1]["content"],
        json!([{"toolUse": {"toolUseId": "tooluse_1", "name": "look", "input": {"q": 1}}}])
    );
    assert_eq!(m[2]["role"], "user");
    assert_eq!(
        m[2]["content"][0]["toolResult"]["content"],
        json!([{"text": "a cat"}])
    );
    assert_eq!(
        m[2]["content"][1]["toolResult"]["content"],
        json!([{"json": {"n": 2}}])
    );
    assert_eq!(
        v["inferenceConfig"],
        json!({"maxTokens": 50, "temperature": 0.1, "stopSequences": ["END"]})
    );
    assert_eq!(
        v["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"],
        json!({"json": {"type": "object"}})
    );
    assert_eq!(v["toolConfig"]["toolChoice"], json!({"any": {}}));
}

#[test]
fn a_follow_up_without_tools_still_declares_the_called_ones() {
    let req = chat(json!({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": ""}
    ]}));
    let v = translate::to_converse_request(&req).unwrap();
    assert_eq!(v["toolConfig"]["tools"][0]["toolSpec"]["name"], "f");
    assert_eq!(
        v["messages"][2]["content"][0]["toolResult"]["content"],
        json!([{"json": {}}])
    );
    let linked = chat(
        json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}),
    );
    assert!(
        translate::to_converse_request(&linked)
            .unwrap_err()
            .0
            .contains("data: URLs")
    );
}

#[test]
fn answers_map_text_tools_reasoning_and_cache_usage() {
    let v = json!({
        "output": {"message": {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s"}}},
            {"text": "Checking."},
            {"toolUse": {"toolUseId": "tooluse_x", "name": "f", "input": {"a": 1}}}
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 45, "cacheReadInputTokens": 20, "cacheWriteInputTokens": 10}
    });
    let r = translate::from_converse_response(&v, "anthropic.claude");
    let c = &r.choices[0];
    assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(c.message.text_content(), "Checking.");
    assert_eq!(c.message.extra["reasoning_content"], "hmm");
    let call = &c.message.tool_calls.as_ref().unwrap()[0];
    assert_eq!(
        (call.id.as_str(), call.function.arguments.as_str()),
        ("tooluse_x", "{\"a\":1}")
    );
    let u = r.usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (40, 5, 45)
    );
    assert_eq!(
        serde_json::to_value(&u).unwrap()["prompt_tokens_details"],
        json!({"cached_tokens": 20, "cache_write_tokens": 10})
    );
    let blocked = translate::from_converse_response(
        &json!({"output": {"message": {"content": []}}, "stopReason": "guardrail_intervened"}),
        "m",
    );
    assert_eq!(
        blocked.choices[0].finish_reason.as_deref(),
        Some("content_filter")
    );
}

#[tokio::test]
async fn stream_events_fold_into_the_answer_with_usage_from_metadata() {
    let events = [
        ("messageStart", json!({"role": "assistant"})),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Hi "}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "there"}}),
        ),
        ("contentBlockStop", json!({"contentBlockIndex": 0})),
        (
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu_1", "name": "f"}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\""}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": ":1}"}}}),
        ),
        ("contentBlockStop", json!({"contentBlockIndex": 1})),
        ("messageStop", json!({"stopReason": "tool_use"})),
        (
            "metadata",
            json!({"usage": {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10}, "metrics": {"latencyMs": 5}}),
        ),
    ];
    let mut d = StreamDecoder::new("m");
    let chunks: Vec<_> = events
        .iter()
        .flat_map(|(e, p)| d.push(e, p))
        .map(|c| Ok(Box::new(c.into())))
        .collect();
    let r = collect_stream(Box::pin(futures_util::stream::iter(chunks)))
        .await
        .unwrap();
    let m = &r.choices[0].message;
    assert_eq!(m.text_content(), "Hi there");
    let call = &m.tool_calls.as_ref().unwrap()[0];
    assert_eq!(
        (call.id.as_str(), call.function.arguments.as_str()),
        ("tu_1", "{\"a\":1}")
    );
    assert_eq!(r.choices[0].finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(r.usage.unwrap().total_tokens, 10);
}

#[test]
fn an_exception_frame_is_an_error_with_its_type_and_message() {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let frame = Message::new(&b"{\"message\":\"Too many tokens, please wait\"}"[..])
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("exception".into()),
        ))
        .add_header(Header::new(
            ":exception-type",
            HeaderValue::String("throttlingException".into()),
        ));
    let e = super::event_of(&frame, &crate::providers::Redactor::default()).unwrap_err();
    assert_eq!(
        e.message,
        "throttlingException: Too many tokens, please wait"
    );
    let event = Message::new(&b"{\"role\":\"assistant\"}"[..])
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ))
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String("messageStart".into()),
        ));
    let (name, payload) = super::event_of(&event, &crate::providers::Redactor::default())
        .unwrap()
        .unwrap();
    assert_eq!(
        (name.as_str(), payload["role"].as_str()),
        ("messageStart", Some("assistant"))
    );
}

#[test]
fn token_counts_no_model_could_use_saturate_instead_of_overflowing() {
    // An upstream (or a fault) reporting counts near u64::MAX: the sums stop at the maximum (an
    // overflow panicked in debug builds and wrapped to a small count, an under-charge, in release).
    let v = json!({
        "output": {"message": {"role": "assistant", "content": [{"text": "x"}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": u64::MAX, "outputTokens": u64::MAX, "cacheReadInputTokens": 5}
    });
    let u = translate::from_converse_response(&v, "m").usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (u64::MAX, u64::MAX, u64::MAX)
    );
}
