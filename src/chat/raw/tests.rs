use serde_json::{Value, json};

use super::*;

/// Tokens, choices, the first finish reason, whether it says anything, its tools' names.
type Facts = (Option<(u64, u64)>, usize, Option<String>, bool, Vec<String>);

/// What a stage would read of the same answer decoded in full.
fn facts(r: &ChatResponse) -> Facts {
    let first = r.choices.first();
    let names: Vec<String> = first
        .and_then(|c| c.message.tool_calls.as_ref())
        .map(|calls| calls.iter().map(|t| t.function.name.clone()).collect())
        .unwrap_or_default();
    let text = first.is_some_and(|c| !c.message.text_content().is_empty());
    (
        r.usage
            .as_ref()
            .map(|u| (u.prompt_tokens, u.completion_tokens)),
        r.choices.len(),
        first.and_then(|c| c.finish_reason.clone()),
        text || !names.is_empty(),
        names,
    )
}

fn read(v: &Value) -> Result<RawAnswer, serde_json::Error> {
    RawAnswer::read(Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/openai/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[test]
fn reads_what_the_full_decoder_reads() {
    let mut answers = vec![fixture("chat.json"), fixture("chat_tools.json")];
    answers.extend([
        // Two choices, parts for content, no usage.
        json!({"id": "a", "object": "chat.completion", "created": 1, "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "hi"}]}, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "two"}, "finish_reason": "length"}
        ]}),
        // Nothing said, cut short, usage with odd details and vendor members.
        json!({"choices": [{"message": {"role": "assistant", "content": null}}],
               "usage": {"prompt_tokens": 7, "completion_tokens": 0, "prompt_tokens_details": 3, "cost": 0.1},
               "vendor": {"x": [1, 2, {"y": "z"}]}}),
        // Empty text and empty parts, null usage.
        json!({"choices": [{"message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}], "usage": null}),
        json!({"choices": [{"message": {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}, "finish_reason": "stop"}]}),
        // No choices at all; escaped strings.
        json!({"id": "a\"\\\u{e9}", "choices": []}),
        // Tool calls beside text.
        json!({"choices": [{"message": {"role": "assistant", "content": "let me see", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "calc__add", "arguments": "{}"}},
            {"id": "c2", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
        ]}, "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}),
    ]);
    for v in &answers {
        assert!(v.is_object(), "fixture missing");
        let full: ChatResponse = serde_json::from_value(v.clone()).expect("a valid answer");
        let raw = read(v).expect("read");
        let got = (
            raw.tokens,
            raw.choices,
            raw.finish_reason.clone(),
            raw.said,
            raw.tool_names.clone(),
        );
        assert_eq!(got, facts(&full), "{v}");
        assert_eq!(raw.decode().expect("decode"), full);
        assert_eq!(raw.bytes, serde_json::to_vec(v).unwrap_or_default());
    }
}

#[test]
fn refuses_what_the_full_decoder_refuses_in_what_it_reads() {
    let answer = |choice: Value| json!({"id": "a", "choices": [choice]});
    let msg = |m: Value| answer(json!({"index": 0, "message": m, "finish_reason": "stop"}));
    let bad = [
        json!({"id": "a"}),
        json!({"choices": {}}),
        json!({"choices": [1]}),
        json!({"id": null, "choices": []}),
        json!({"id": 5, "choices": []}),
        json!({"created": "yesterday", "choices": []}),
        json!({"created": -1, "choices": []}),
        json!({"model": ["m"], "choices": []}),
        json!({"choices": [], "usage": {"prompt_tokens": "many"}}),
        json!({"choices": [], "usage": {"completion_tokens": -2}}),
        json!({"choices": [], "usage": 3}),
        answer(json!({"index": 0, "finish_reason": "stop"})),
        answer(json!({"index": "0", "message": {"role": "assistant"}})),
        answer(json!({"message": {"role": "assistant"}, "finish_reason": 1})),
        msg(json!({"content": "no role"})),
        msg(json!({"role": "robot", "content": "x"})),
        msg(json!({"role": "assistant", "content": 5})),
        msg(json!({"role": "assistant", "content": {"text": "x"}})),
        msg(json!({"role": "assistant", "content": [{"text": "no type"}]})),
        msg(json!({"role": "assistant", "tool_calls": {}})),
        msg(
            json!({"role": "assistant", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}),
        ),
    ];
    for v in &bad {
        assert!(
            serde_json::from_value::<ChatResponse>(v.clone()).is_err(),
            "the full decoder takes {v}"
        );
        assert!(read(v).is_err(), "read took {v}");
    }
    // Text that is not one JSON value, or a modelled member twice.
    for text in [
        "",
        "{",
        "{\"choices\": []} trailing",
        "{\"choices\": [], \"choices\": []}",
        "{\"choices\": [], \"usage\": {\"prompt_tokens\": 1, \"prompt_tokens\": 2}}",
        "{\"choices\": [], \"vendor\": [1,}",
        "[]",
        "null",
        // serde's derive would read a struct from an array, member by member.
        "[\"a\", \"chat.completion\", 1, \"m\", []]",
        "{\"choices\": [[0, {\"role\": \"assistant\"}, \"stop\"]]}",
        "{\"choices\": [{\"message\": [\"assistant\", \"hi\"]}]}",
        "{\"choices\": [], \"usage\": [1, 2, 3]}",
    ] {
        assert!(
            serde_json::from_str::<ChatResponse>(text).is_err(),
            "{text}"
        );
        assert!(
            RawAnswer::read(Bytes::from_static(text.as_bytes())).is_err(),
            "read took {text:?}"
        );
    }
}
