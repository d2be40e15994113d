use serde_json::{Value, json};

use super::ingress;
use super::translate::{self, StreamDecoder, id_with_signature, signature_of};
use super::wire::{GenerateRequest, GenerateResponse};
use crate::chat::{ChatRequest, ChatResponse, collect_stream};

fn chat(v: Value) -> ChatRequest {
    serde_json::from_value(v).unwrap()
}

#[test]
fn signatures_ride_in_call_ids_and_come_back_intact() {
    for sig in ["CiQBcsjafA+/xy==", "YWJj", "a/b+cw=="] {
        let id = id_with_signature("call_1", Some(sig));
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{id}"
        );
        let back = signature_of(&id).unwrap();
        assert_eq!(back.trim_end_matches('='), sig.trim_end_matches('='));
        assert_eq!(back.len() % 4, 0);
    }
    assert_eq!(id_with_signature("call_1", None), "call_1");
    assert_eq!(signature_of("call_1"), None);
}

#[test]
fn a_chat_request_becomes_contents_with_system_tools_and_config() {
    let req = chat(json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?x=1"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": id_with_signature("call_a", Some("SIG+/w==")), "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}},
                {"id": "call_b", "type": "function", "function": {"name": "find", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": id_with_signature("call_a", Some("SIG+/w==")), "content": "{\"seen\": \"cat\"}"},
            {"role": "tool", "tool_call_id": "call_b", "content": "nothing"}
        ],
        "tools": [{"type": "function", "function": {"name": "look", "description": "d", "parameters": {"type": "object", "additionalProperties": false}}}],
        "tool_choice": {"type": "function", "function": {"name": "look"}},
        "temperature": 0.3, "max_tokens": 99, "stop": "END", "seed": 7,
        "reasoning_effort": "medium",
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    }));
    let g = translate::to_generate_request(&req).unwrap();
    let v = serde_json::to_value(&g).unwrap();
    assert_eq!(
        v["systemInstruction"],
        json!({"parts": [{"text": "Be terse."}]})
    );
    let c = v["contents"].as_array().unwrap();
    assert_eq!(c.len(), 3, "{v}");
    assert_eq!(c[0]["role"], "user");
    assert_eq!(
        c[0]["parts"][1]["inlineData"],
        json!({"mimeType": "image/png", "data": "iVBOR"})
    );
    assert_eq!(c[0]["parts"][2]["fileData"]["mimeType"], "image/webp");
    assert_eq!(c[1]["role"], "model");
    assert_eq!(
        c[1]["parts"][0]["functionCall"],
        json!({"name": "look", "args": {"q": 1}})
    );
    assert_eq!(c[1]["parts"][0]["thoughtSignature"], "SIG+/w==");
    assert!(c[1]["parts"][1].get("thoughtSignature").is_none());
    assert_eq!(c[1]["parts"][1]["functionCall"]["args"], json!({}));
    // Both results in one user turn, each naming its function.
    assert_eq!(c[2]["role"], "user");
    assert_eq!(
        c[2]["parts"][0]["functionResponse"],
        json!({"name": "look", "response": {"seen": "cat"}})
    );
    assert_eq!(
        c[2]["parts"][1]["functionResponse"]["response"],
        json!({"result": "nothing"})
    );
    let decl = &v["tools"][0]["functionDeclarations"][0];
    assert_eq!(decl["parametersJsonSchema"]["additionalProperties"], false);
    assert_eq!(
        v["toolConfig"]["functionCallingConfig"],
        json!({"mode": "ANY", "allowedFunctionNames": ["look"]})
    );
    let gc = &v["generationConfig"];
    assert_eq!(gc["temperature"], 0.3);
    assert_eq!(gc["maxOutputTokens"], 99);
    assert_eq!(gc["stopSequences"], json!(["END"]));
    assert_eq!(gc["seed"], 7);
    assert_eq!(gc["thinkingConfig"]["thinkingBudget"], 8192);
    assert_eq!(gc["responseMimeType"], "application/json");
    assert_eq!(gc["responseJsonSchema"], json!({"type": "object"}));
}

#[test]
fn a_tool_result_without_its_call_is_refused() {
    let req = chat(json!({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "tool", "tool_call_id": "nope", "content": "y"}
    ]}));
    let e = translate::to_generate_request(&req).unwrap_err();
    assert!(
        e.0.contains("messages[1]") && e.0.contains("nope"),
        "{}",
        e.0
    );
}

fn answer(v: Value) -> ChatResponse {
    let r: GenerateResponse = serde_json::from_value(v).unwrap();
    translate::from_generate_response(r, "gemini-x")
}

#[test]
fn answers_map_text_calls_thoughts_usage_and_blocks() {
    let r = answer(json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Thinking about it", "thought": true},
            {"text": "Let me look."},
            {"functionCall": {"name": "look", "args": {"q": 1}}, "thoughtSignature": "U0lHTkFUVVJF"}
        ]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 27,
                          "cachedContentTokenCount": 4, "thoughtsTokenCount": 12},
        "modelVersion": "gemini-2.5-flash", "responseId": "r1"
    }));
    let c = &r.choices[0];
    assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(c.message.text_content(), "Let me look.");
    assert_eq!(c.message.extra["reasoning_content"], "Thinking about it");
    let call = &c.message.tool_calls.as_ref().unwrap()[0];
    assert_eq!(call.function.arguments, "{\"q\":1}");
    assert_eq!(signature_of(&call.id).as_deref(), Some("U0lHTkFUVVJF"));
    let u = r.usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (10, 17, 27)
    );
    let wire = serde_json::to_value(&u).unwrap();
    assert_eq!(wire["prompt_tokens_details"], json!({"cached_tokens": 4}));
    assert_eq!(
        wire["completion_tokens_details"],
        json!({"reasoning_tokens": 12})
    );
    assert_eq!(r.model, "gemini-2.5-flash");

    let blocked = answer(
        json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}),
    );
    let c = &blocked.choices[0];
    assert_eq!(c.finish_reason.as_deref(), Some("content_filter"));
    assert!(
        c.message.extra["refusal"]
            .as_str()
            .unwrap()
            .contains("SAFETY")
    );

    let cut = answer(
        json!({"candidates": [{"content": {"parts": [{"text": "Once"}]}, "finishReason": "MAX_TOKENS"}]}),
    );
    assert_eq!(cut.choices[0].finish_reason.as_deref(), Some("length"));
    let unsafe_ = answer(json!({"candidates": [{"finishReason": "SAFETY"}]}));
    assert_eq!(
        unsafe_.choices[0].finish_reason.as_deref(),
        Some("content_filter")
    );
    assert!(
        unsafe_.choices[0].message.extra["refusal"]
            .as_str()
            .unwrap()
            .contains("SAFETY")
    );
}

#[tokio::test]
async fn a_stream_folds_into_the_same_answer() {
    let events = [
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}], "modelVersion": "gemini-x"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}}]}),
        json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "a", "args": {}}, "thoughtSignature": "UzE="},
            {"functionCall": {"name": "b", "args": {"x": 2}}}
        ]}, "finishReason": "STOP"}],
         "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 10}}),
    ];
    let mut d = StreamDecoder::new("m");
    let chunks: Vec<_> = events
        .into_iter()
        .flat_map(|e| d.push(serde_json::from_value(e).unwrap()))
        .map(|c| Ok(Box::new(c.into())))
        .collect();
    let r = collect_stream(Box::pin(futures_util::stream::iter(chunks)))
        .await
        .unwrap();
    let m = &r.choices[0].message;
    assert_eq!(m.text_content(), "Hello");
    let calls = m.tool_calls.as_ref().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(signature_of(&calls[0].id).as_deref(), Some("UzE="));
    assert_eq!(calls[1].function.arguments, "{\"x\":2}");
    assert_eq!(r.choices[0].finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(r.usage.unwrap().total_tokens, 10);
}

#[test]
fn the_ingress_reads_a_genai_request_and_matches_results_to_calls() {
    let req: GenerateRequest = serde_json::from_value(json!({
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Weather?"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "QUJD"},
                {"functionCall": {"name": "get_weather", "args": {"city": "London"}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"t": 18}}},
                {"functionResponse": {"name": "get_weather", "response": {"t": 12}}}
            ]}
        ],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
        "generationConfig": {"maxOutputTokens": 50, "responseMimeType": "application/json", "stopSequences": ["X"]}
    })).unwrap();
    let c = ingress::from_generate_request(req, "openai/gpt-4o-mini", false).unwrap();
    assert_eq!(c.model, "openai/gpt-4o-mini");
    let m = &c.messages;
    assert_eq!(m.len(), 5);
    let calls = m[2].tool_calls.as_ref().unwrap();
    assert_eq!(signature_of(&calls[0].id).as_deref(), Some("QUJD"));
    assert_eq!(m[3].tool_call_id.as_deref(), Some(calls[0].id.as_str()));
    assert_eq!(m[4].tool_call_id.as_deref(), Some(calls[1].id.as_str()));
    assert_eq!(m[4].text_content(), "{\"t\":12}");
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(
        v["tools"][0]["function"]["parameters"]["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(v["tool_choice"], "required");
    assert_eq!(v["max_completion_tokens"], 50);
    assert_eq!(v["response_format"]["type"], "json_object");
    assert_eq!(v["stop"], json!(["X"]));

    // Back out: the answer's calls carry their ids and signatures for the next turn.
    let out = ingress::to_generate_response(answer(json!({"candidates": [{"content": {"parts": [
        {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "U0lH"}
    ]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1, "totalTokenCount": 3}})));
    let v = serde_json::to_value(&out).unwrap();
    let part = &v["candidates"][0]["content"]["parts"][0];
    assert_eq!(part["functionCall"]["args"], json!({"a": 1}));
    assert_eq!(part["thoughtSignature"], "U0lH");
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    assert_eq!(v["usageMetadata"]["totalTokenCount"], 3);
    assert!(
        ingress::from_generate_request(
            serde_json::from_value(json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "tools": [{"googleSearch": {}}]})).unwrap(),
            "m",
            false
        )
        .unwrap_err()
        .0
        .contains("googleSearch")
    );
}

#[test]
fn the_ingress_encoder_ignores_absurd_tool_call_indexes() {
    // Without a bound one chunk would make the encoder allocate 4,294,967,296 call slots.
    let mut enc = ingress::StreamEncoder::default();
    let chunk = |v: Value| serde_json::from_value::<crate::chat::ChatChunk>(v).unwrap();
    enc.push(chunk(
        json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 4294967295u32, "id": "x", "function": {"name": "junk", "arguments": "{}"}},
        {"index": 0, "id": "a", "function": {"name": "add", "arguments": "{\"a\":1}"}}]}}]}),
    ));
    enc.push(chunk(
        json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    ));
    let out = serde_json::to_value(enc.finish()).unwrap();
    let names: Vec<&str> = out
        .pointer("/candidates/0/content/parts")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{out}"))
        .iter()
        .filter_map(|p| p.pointer("/functionCall/name").and_then(Value::as_str))
        .collect();
    assert_eq!(names, ["add"], "{out}");
}

#[test]
fn token_counts_no_model_could_use_saturate_instead_of_overflowing() {
    let r = answer(json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": u64::MAX, "candidatesTokenCount": u64::MAX,
                          "thoughtsTokenCount": 12}
    }));
    let u = r.usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (u64::MAX, u64::MAX, u64::MAX)
    );
}
