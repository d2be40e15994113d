use serde_json::{Value, json};

use super::*;
use crate::chat::{ChatChunk, ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta};
use crate::providers::openai::responses_stream::StreamEncoder;

fn req(v: Value) -> ResponsesRequest {
    serde_json::from_value(v).unwrap()
}

#[test]
fn a_string_input_with_instructions_becomes_system_and_user() {
    let r = req(
        json!({"model": "m", "input": "Hi", "instructions": "Be brief", "max_output_tokens": 50, "temperature": 0.2}),
    );
    let (chat, turn) = to_chat(&r, Vec::new()).unwrap();
    assert_eq!(chat.messages.len(), 2);
    assert_eq!(chat.messages[0].role, Role::System);
    assert_eq!(chat.messages[0].text_content(), "Be brief");
    assert_eq!(chat.messages[1].text_content(), "Hi");
    assert_eq!(chat.max_completion_tokens, Some(50));
    assert_eq!(chat.temperature, Some(0.2));
    assert!(chat.stream.is_none());
    // Instructions are not part of the stored turn.
    assert_eq!(turn.len(), 1);
    assert_eq!(turn[0].role, Role::User);
}

#[test]
fn items_translate_to_messages_calls_and_tool_results() {
    let r = req(json!({"model": "m", "input": [
        {"role": "developer", "content": "Use tools"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is in "},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}
        ]},
        {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": "{\"x\":1}"},
        {"type": "function_call", "call_id": "call_2", "name": "look", "arguments": "{\"x\":2}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "a cat"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "a dog"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []}
    ]}));
    let (chat, _) = to_chat(&r, Vec::new()).unwrap();
    let m = &chat.messages;
    assert_eq!(m.len(), 5, "{m:?}");
    assert_eq!(m[0].role, Role::System);
    let Some(Content::Parts(parts)) = &m[1].content else {
        panic!("parts expected: {:?}", m[1].content)
    };
    assert_eq!(parts[0].text.as_deref(), Some("What is in "));
    assert_eq!(parts[1].kind, "image_url");
    assert_eq!(
        parts[1].image_url,
        Some(json!({"url": "data:image/png;base64,AAAA", "detail": "low"}))
    );
    // Both calls in one assistant message, as chat completions wants them.
    assert_eq!(m[2].role, Role::Assistant);
    let calls = m[2].tool_calls.as_ref().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].id, "call_2");
    assert_eq!(calls[1].function.arguments, "{\"x\":2}");
    assert_eq!(m[3].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(m[4].text_content(), "a dog");
}

#[test]
fn tools_choice_format_and_reasoning_translate() {
    let r = req(json!({
        "model": "m", "input": "x", "stream": true, "parallel_tool_calls": false,
        "tools": [{"type": "function", "name": "get_weather", "description": "d", "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
        "reasoning": {"effort": "low", "summary": "auto"},
        "service_tier": "flex", "include": ["reasoning.encrypted_content"], "truncation": "auto"
    }));
    let (chat, _) = to_chat(&r, Vec::new()).unwrap();
    let v = serde_json::to_value(&chat).unwrap();
    assert_eq!(v["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(v["tools"][0]["function"]["strict"], true);
    assert_eq!(
        v["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    assert_eq!(v["response_format"]["type"], "json_schema");
    assert_eq!(v["response_format"]["json_schema"]["name"], "w");
    assert_eq!(v["reasoning_effort"], "low");
    assert_eq!(v["parallel_tool_calls"], false);
    assert_eq!(v["service_tier"], "flex");
    assert_eq!(v["stream_options"]["include_usage"], true);
    // Responses-only fields do not reach a chat completions upstream.
    assert!(
        v.get("include").is_none() && v.get("truncation").is_none(),
        "{v}"
    );
}

#[test]
fn what_cannot_be_honoured_is_refused_with_the_field() {
    for (body, needle) in [
        (
            json!({"model": "m", "input": "x", "background": true}),
            "`background`",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
            "tools[0]: tool type `web_search`",
        ),
        (
            json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}),
            "input[0]: input item type `item_reference`",
        ),
        (
            json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}),
            "input[0].role",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]}),
            "input[0].call_id",
        ),
        (json!({"model": "m", "input": []}), "`input` must hold"),
        (
            json!({"model": "m", "input": "x", "tool_choice": "required"}),
            "`tool_choice` needs `tools`",
        ),
        (
            json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}),
            "text.format.name",
        ),
    ] {
        let e = to_chat(&req(body.clone()), Vec::new()).unwrap_err();
        assert!(e.0.contains(needle), "{body}: {}", e.0);
    }
}

#[test]
fn history_comes_before_the_new_turn() {
    let history = vec![
        Message::text(Role::User, "My name is Ada"),
        Message::text(Role::Assistant, "Hello Ada"),
    ];
    let r = req(json!({"model": "m", "input": "What is my name?", "instructions": "x"}));
    let (chat, turn) = to_chat(&r, history).unwrap();
    let texts: Vec<String> = chat.messages.iter().map(Message::text_content).collect();
    assert_eq!(
        texts,
        ["x", "My name is Ada", "Hello Ada", "What is my name?"]
    );
    assert_eq!(turn.len(), 1);
}

fn chat_response(v: Value) -> ChatResponse {
    serde_json::from_value(v).unwrap()
}

#[test]
fn a_chat_answer_becomes_output_items_with_usage() {
    let r = chat_response(json!({
        "id": "c1", "model": "gpt-x", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking",
            "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                  "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 2}}
    }));
    let echo = Echo::new(&req(json!({"model": "m", "input": "x"})));
    let v = echo.response(&r.model, &outcome(&r));
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "gpt-x");
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["text"], "Checking");
    assert_eq!(v["output"][1]["type"], "function_call");
    assert_eq!(v["output"][1]["call_id"], "call_9");
    assert_eq!(v["usage"]["input_tokens"], 10);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 4);
    assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], 2);
    let turn = assistant_turn(&r).unwrap();
    assert_eq!(turn.tool_calls.unwrap()[0].id, "call_9");
}

#[test]
fn a_length_cut_is_incomplete() {
    let r = chat_response(
        json!({"model": "m", "choices": [{"index": 0, "finish_reason": "length",
        "message": {"role": "assistant", "content": "Once upon"}}]}),
    );
    let v = Echo::new(&req(json!({"model": "m", "input": "x"}))).response("m", &outcome(&r));
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
}

fn chunk(delta: Delta, finish: Option<&str>) -> ChatChunk {
    ChatChunk {
        id: "c".into(),
        object: "chat.completion.chunk".into(),
        created: 0,
        model: "gpt-x".into(),
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish.map(str::to_owned),
            extra: Extra::new(),
        }],
        usage: None,
        extra: Extra::new(),
    }
}

fn text(t: &str) -> Delta {
    Delta {
        content: Some(t.into()),
        ..Delta::default()
    }
}

fn call(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> Delta {
    Delta {
        tool_calls: Some(vec![ToolCallDelta {
            index,
            id: id.map(str::to_owned),
            kind: id.map(|_| "function".to_owned()),
            function: Some(FunctionCallDelta {
                name: name.map(str::to_owned),
                arguments: Some(args.into()),
            }),
        }]),
        ..Delta::default()
    }
}

#[test]
fn a_stream_emits_the_lifecycle_in_order_with_stable_ids() {
    let echo = Echo::new(&req(json!({"model": "m", "input": "x", "stream": true})));
    let mut enc = StreamEncoder::new(echo);
    let mut events = Vec::new();
    for c in [
        chunk(text("Hel"), None),
        chunk(text("lo"), None),
        chunk(call(0, Some("call_a"), Some("f"), "{\"a\""), None),
        chunk(call(0, None, None, ":1}"), None),
        chunk(call(1, Some("call_b"), Some("g"), "{}"), Some("tool_calls")),
    ] {
        events.extend(enc.push(c));
    }
    let (end, response) = enc.finish("gpt-x");
    events.extend(end);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (k, v)) in events.iter().enumerate() {
        assert_eq!(v["sequence_number"], i as u64, "{k}");
        assert_eq!(v["type"], *k);
    }
    // The ids announced are the ids completed, and the final response lists the same items.
    let added: Vec<&Value> = events
        .iter()
        .filter(|(k, _)| *k == "response.output_item.added")
        .map(|(_, v)| &v["item"]["id"])
        .collect();
    let out: Vec<&Value> = response["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["id"])
        .collect();
    assert_eq!(added, out);
    assert_eq!(response["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(response["output"][1]["arguments"], "{\"a\":1}");
    assert_eq!(response["output"][2]["call_id"], "call_b");
    assert_eq!(events[0].1["response"]["id"], response["id"]);
    let turn = enc.assistant_turn();
    assert_eq!(turn.text_content(), "Hello");
    assert_eq!(turn.tool_calls.unwrap().len(), 2);
}

#[test]
fn a_broken_stream_ends_in_response_failed() {
    let echo = Echo::new(&req(json!({"model": "m", "input": "x", "stream": true})));
    let mut enc = StreamEncoder::new(echo);
    let mut events = enc.push(chunk(text("Hi"), None));
    events.extend(enc.fail("gpt-x", "upstream reset"));
    let (kind, last) = events.last().unwrap();
    assert_eq!(*kind, "response.failed");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["error"]["message"], "upstream reset");
}
