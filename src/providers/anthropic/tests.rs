//! Translation tests against the recorded fixtures in tests/fixtures/anthropic.

use serde_json::{Value, json};

use super::translate::*;
use super::wire::*;
use crate::chat::{ChatChunk, ChatRequest};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn events(name: &str) -> Vec<StreamEvent> {
    fixture(name)
        .split("\n\n")
        .filter_map(|block| {
            block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_owned)
        })
        .map(|d| serde_json::from_str(&d).unwrap())
        .collect()
}

fn decode_all(evs: Vec<StreamEvent>) -> Vec<ChatChunk> {
    let mut d = StreamDecoder::default();
    evs.into_iter().flat_map(|e| d.push(e).unwrap()).collect()
}

#[test]
fn request_translation_moves_system_tools_and_results() {
    let req: ChatRequest = serde_json::from_value(json!({
        "model": "x",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "user", "content": "thanks"}
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": false,
        "stop": "END",
        "max_completion_tokens": 50,
        "user": "u-1"
    }))
    .unwrap();
    let out = serde_json::to_value(to_messages_request(&req, "claude-x").unwrap()).unwrap();
    assert_eq!(
        out,
        json!({
            "model": "claude-x",
            "system": "Be brief.",
            "max_tokens": 50,
            "stop_sequences": ["END"],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}
                ]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "c1", "content": "42"},
                    {"type": "text", "text": "thanks"}
                ]}
            ],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "u-1"}
        })
    );
}

#[test]
fn bad_tool_arguments_are_a_clear_error() {
    let req: ChatRequest = serde_json::from_value(json!({"model": "x", "messages": [
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}
    ]}))
    .unwrap();
    let e = to_messages_request(&req, "m").unwrap_err();
    assert!(
        e.0.contains("messages[0].tool_calls[0].function.arguments"),
        "{e}"
    );
}

#[test]
fn response_with_tools_to_canonical() {
    let r: MessagesResponse =
        serde_json::from_str(&fixture("anthropic/messages_tools.json")).unwrap();
    let c = from_messages_response(r);
    let m = &c.choices[0].message;
    assert_eq!(m.text_content(), "I'll check the weather in both cities.");
    let calls = m.tool_calls.as_ref().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].id, "toolu_01B19q90qw90lq917835lq8");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[1].function.arguments).unwrap(),
        json!({"city": "London"})
    );
    assert_eq!(c.choices[0].finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(c.usage.unwrap().prompt_tokens, 384);
}

#[test]
fn stream_decoder_reassembles_tool_calls_and_usage() {
    let chunks = decode_all(events("anthropic/messages_tools_stream.sse"));
    let stream: crate::chat::ChatStream = Box::pin(futures_util::stream::iter(
        chunks.into_iter().map(|c| Ok(Box::new(c.into()))),
    ));
    let r = futures_util::FutureExt::now_or_never(crate::chat::collect_stream(stream))
        .unwrap()
        .unwrap();
    let m = &r.choices[0].message;
    assert_eq!(m.text_content(), "I'll check the weather in both cities.");
    let calls = m.tool_calls.as_ref().unwrap();
    assert_eq!(calls[0].function.name, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].function.arguments).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(calls[1].id, "toolu_01B19q90qw90lq917835lq8");
    assert_eq!(r.choices[0].finish_reason.as_deref(), Some("tool_calls"));
    let u = r.usage.unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens), (472, 89));
}

/// Anthropic events -> canonical -> Anthropic events gives back the same blocks (the golden round trip).
#[test]
fn stream_round_trip_is_faithful() {
    for name in [
        "anthropic/messages_stream.sse",
        "anthropic/messages_tools_stream.sse",
    ] {
        let original = events(name);
        let chunks = decode_all(original.clone());
        let mut enc = StreamEncoder::default();
        let mut out: Vec<StreamEvent> = chunks.into_iter().flat_map(|c| enc.push(c)).collect();
        out.extend(enc.finish("", ""));
        let strip = |evs: &[StreamEvent]| -> Vec<Value> {
            evs.iter()
                .filter(|e| !matches!(e, StreamEvent::Ping | StreamEvent::MessageStart { .. }))
                .filter(|e| !matches!(e, StreamEvent::ContentBlockDelta { delta: BlockDelta::InputJsonDelta { partial_json }, .. } if partial_json.is_empty()))
                .map(|e| {
                    let mut v = serde_json::to_value(e).unwrap();
                    if let Some(u) = v.get_mut("usage") {
                        u.as_object_mut().unwrap().remove("input_tokens");
                    }
                    v
                })
                .collect()
        };
        assert_eq!(strip(&out), strip(&original), "{name}");
        let StreamEvent::MessageStart { message } = &out[0] else {
            panic!("first event must be message_start")
        };
        assert!(message.id.starts_with("msg_"));
    }
}

#[test]
fn ingress_request_to_canonical() {
    let r: MessagesRequest = serde_json::from_value(json!({
        "model": "openai/gpt-4o",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                {"type": "text", "text": "And tomorrow?"}
            ]}
        ],
        "tools": [{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"},
        "stop_sequences": ["X"]
    }))
    .unwrap();
    let c = serde_json::to_value(from_messages_request(r).unwrap()).unwrap();
    assert_eq!(
        c,
        json!({
            "model": "openai/gpt-4o",
            "max_tokens": 100,
            "stop": ["X"],
            "tool_choice": "required",
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "w", "parameters": {"type": "object"}}}],
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "content": "18C", "tool_call_id": "toolu_1"},
                {"role": "user", "content": "And tomorrow?"}
            ]
        })
    );
}

#[test]
fn unknown_block_types_are_rejected_in_requests() {
    for role in ["user", "assistant"] {
        let r: MessagesRequest = serde_json::from_value(json!({
            "model": "m", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}, {"role": role, "content": [{"type": "text", "text": "a"}, {"type": "hologram", "data": 1}]}]
        }))
        .unwrap();
        let e = from_messages_request(r).unwrap_err();
        assert!(
            e.0.contains("messages[1].content[1]: unsupported content block type"),
            "{e}"
        );
    }
}

#[test]
fn unknown_block_and_delta_types_in_answers_are_skipped() {
    let r: MessagesResponse = serde_json::from_value(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "text", "text": "Found it."}
        ],
        "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 4}
    }))
    .unwrap();
    assert_eq!(
        from_messages_response(r).choices[0].message.text_content(),
        "Found it."
    );
    let mut d = StreamDecoder::default();
    let ev: StreamEvent = serde_json::from_value(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "future_delta", "x": 1}})).unwrap();
    assert!(d.push(ev).unwrap().is_empty());
}

#[test]
fn stream_error_event_is_an_error() {
    let mut d = StreamDecoder::default();
    let ev: StreamEvent = serde_json::from_value(
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )
    .unwrap();
    assert_eq!(d.push(ev).unwrap_err(), "overloaded_error: Overloaded");
}

#[test]
fn several_choices_are_refused() {
    let req: ChatRequest = serde_json::from_value(
        json!({"model": "x", "n": 2, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .unwrap();
    assert!(
        to_messages_request(&req, "m")
            .unwrap_err()
            .0
            .contains("`n`")
    );
    let req: ChatRequest = serde_json::from_value(
        json!({"model": "x", "n": 1, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .unwrap();
    assert!(to_messages_request(&req, "m").is_ok());
}

/// Cache reads and writes count as input and are reported in `prompt_tokens_details`, both ways:
/// an OpenAI client sees them, and an Anthropic client of an OpenAI upstream gets its uncached
/// `input_tokens` with the cached ones beside them.
#[test]
fn prompt_cache_tokens_are_reported_both_ways() {
    let r: MessagesResponse = serde_json::from_value(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
        "content": [{"type": "text", "text": "x"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": 3, "cache_read_input_tokens": 70,
            "cache_creation_input_tokens": 25}
    }))
    .unwrap();
    let canonical = from_messages_response(r.clone());
    let u = serde_json::to_value(canonical.usage.as_ref().unwrap()).unwrap();
    assert_eq!(
        u,
        json!({"prompt_tokens": 100, "completion_tokens": 3, "total_tokens": 103,
            "prompt_tokens_details": {"cached_tokens": 70, "cache_write_tokens": 25}})
    );
    assert_eq!(to_messages_response(canonical).usage, r.usage);

    let openai: crate::chat::ChatResponse = serde_json::from_value(json!({
        "choices": [{"message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 3, "total_tokens": 103,
            "prompt_tokens_details": {"cached_tokens": 60, "audio_tokens": 0}}
    }))
    .unwrap();
    let u = to_messages_response(openai.clone()).usage;
    assert_eq!(
        (
            u.input_tokens,
            u.cache_read_input_tokens,
            u.cache_creation_input_tokens
        ),
        (40, Some(60), None)
    );
    let mut enc = StreamEncoder::default();
    let mut chunk = ChatChunk::of("c", 1, "m", Default::default(), Some("stop".into()));
    chunk.usage = openai.usage;
    enc.push(chunk);
    let delta = enc
        .finish("c", "m")
        .into_iter()
        .find_map(|e| match e {
            StreamEvent::MessageDelta { usage, .. } => Some(usage),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (
            delta.input_tokens,
            delta.cache_read_input_tokens,
            delta.output_tokens
        ),
        (Some(40), Some(60), 3)
    );

    // Streamed: the counts of `message_start`, and those a newer `message_delta` repeats.
    let mut dec = StreamDecoder::default();
    let start = json!({"type": "message_start", "message": {"id": "m", "type": "message",
        "role": "assistant", "model": "c", "content": [], "usage": {"input_tokens": 5,
        "output_tokens": 1, "cache_read_input_tokens": 70}}});
    let delta = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
        "usage": {"input_tokens": 6, "output_tokens": 9, "cache_creation_input_tokens": 4}});
    for ev in [start, delta, json!({"type": "message_stop"})] {
        let chunks = dec.push(serde_json::from_value(ev).unwrap()).unwrap();
        if let Some(u) = chunks.last().and_then(|c| c.usage.as_ref()) {
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.cached_tokens()),
                (80, 9, 70)
            );
            assert_eq!(u.cache_write_tokens(), 4);
            return;
        }
    }
    panic!("no usage chunk");
}

#[test]
fn token_counts_no_model_could_use_saturate_instead_of_overflowing() {
    let r: MessagesResponse = serde_json::from_value(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
        "content": [{"type": "text", "text": "x"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": u64::MAX, "output_tokens": 3, "cache_read_input_tokens": 7}
    }))
    .unwrap();
    let u = from_messages_response(r).usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (u64::MAX, 3, u64::MAX)
    );
}
