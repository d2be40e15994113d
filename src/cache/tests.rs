//! Golden tests for the cache key: identical requests hash identically, formatting and
//! irrelevant fields do not matter, and everything in the partition does.

use serde_json::{Value, json};

use super::key::{canonical, fingerprint, point_id};
use crate::chat::ChatRequest;

fn req(v: Value) -> ChatRequest {
    serde_json::from_value(v).unwrap()
}

fn base() -> Value {
    json!({"model": "openai/gpt-4o-mini", "temperature": 0.2, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "How do I reset my password?"}
    ]})
}

#[test]
fn golden_hash_of_a_fixed_request() {
    // Changing the derivation changes this value: bump key::SCHEMA when that is intended, so
    // entries written by older builds are never matched by the new key.
    let fp = fingerprint(&req(base()), "").unwrap();
    assert_eq!(fp.partition, "40876d8603e7cd9f098bd9f1d3441ed6");
    assert_eq!(
        fp.exact,
        "72bac7b16077f4b167e4cd383549417220866e00bb97f7723ef940d024f820a4"
    );
    assert_eq!(fp.text.as_deref(), Some("How do I reset my password?"));
    assert_eq!(
        point_id(&fp.exact).as_bytes()[..4],
        [0x72, 0xba, 0xc7, 0xb1]
    );
}

#[test]
fn a_point_id_is_the_keys_first_sixteen_bytes() {
    // The id addresses stored entries: it must stay what it was for every key.
    let fp = fingerprint(&req(base()), "").unwrap();
    assert_eq!(
        point_id(&fp.exact).to_string(),
        "72bac7b1-6077-f4b1-67e4-cd3835494172"
    );
    // Not a key of ours (short, or not hex): byte by byte, a pair that is not hex as zero.
    assert_eq!(
        point_id("0aff").as_bytes()[..3],
        [0x0a, 0xff, 0x00],
        "short"
    );
    // Either case; a pair with one digit that is not hex, or half missing, is zero.
    assert_eq!(point_id("0AfZ1").as_bytes()[..3], [0x0a, 0x00, 0x00]);
    assert_eq!(point_id("Ff9g").as_bytes()[..2], [0xff, 0x00]);
    let mut odd = "zz".to_owned();
    odd.push_str(&fp.exact[2..]);
    assert_eq!(point_id(&odd).as_bytes()[..3], [0x00, 0xba, 0xc7]);
}

#[test]
fn formatting_key_order_and_irrelevant_fields_do_not_matter() {
    let a = fingerprint(&req(base()), "").unwrap();
    let text = r#"{ "messages" : [ { "content" : "You are terse." , "role" : "system" },
        {"content":"  How do I reset my password?\n", "role":"user"} ],
        "temperature": 0.20, "model": "openai/gpt-4o-mini",
        "stream": true, "stream_options": {"include_usage": true}, "user": "u-42",
        "metadata": {"trace": "x"}, "n": 1 }"#;
    let b = fingerprint(&serde_json::from_str(text).unwrap(), "").unwrap();
    assert_eq!(a, b);
    let mut parts = base();
    parts["messages"][1]["content"] =
        json!([{"type": "text", "text": "How do I reset my password?"}]);
    assert_eq!(fingerprint(&req(parts), "").unwrap(), a);
    for _ in 0..100 {
        assert_eq!(fingerprint(&req(base()), "").unwrap(), a, "deterministic");
    }
}

#[test]
fn everything_in_the_partition_matters() {
    let a = fingerprint(&req(base()), "").unwrap();
    let mut variants = Vec::new();
    for (path, value) in [
        ("model", json!("openai/gpt-4o")),
        ("temperature", json!(0.7)),
        ("max_tokens", json!(10)),
        ("seed", json!(7)),
        ("response_format", json!({"type": "json_object"})),
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f"}}]),
        ),
        ("tool_choice", json!("none")),
    ] {
        let mut v = base();
        v[path] = value;
        variants.push(v);
    }
    let mut system = base();
    system["messages"][0]["content"] = json!("You are verbose.");
    variants.push(system);
    let mut history = base();
    history["messages"]
        .as_array_mut()
        .unwrap()
        .insert(1, json!({"role": "user", "content": "hi"}));
    history["messages"]
        .as_array_mut()
        .unwrap()
        .insert(2, json!({"role": "assistant", "content": "hello"}));
    variants.push(history);
    let mut image = base();
    image["messages"][1]["content"] = json!([
        {"type": "text", "text": "How do I reset my password?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    ]);
    variants.push(image);
    for v in variants {
        let b = fingerprint(&req(v.clone()), "").unwrap();
        assert_ne!(a.partition, b.partition, "{v}");
        assert_ne!(a.exact, b.exact, "{v}");
    }
    assert_ne!(
        fingerprint(&req(base()), "tenant-b").unwrap().partition,
        a.partition
    );
    // The last user turn changes the exact key but not the partition.
    let mut other = base();
    other["messages"][1]["content"] = json!("How do I reset my router?");
    let c = fingerprint(&req(other), "").unwrap();
    assert_eq!(c.partition, a.partition);
    assert_ne!(c.exact, a.exact);
}

#[test]
fn not_cacheable_and_exact_only_cases() {
    let mut n = base();
    n["n"] = json!(3);
    assert!(fingerprint(&req(n), "").is_err());
    let mut tool_result = base();
    tool_result["messages"].as_array_mut().unwrap().push(json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}));
    tool_result["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "tool", "tool_call_id": "c1", "content": "42"}));
    assert_eq!(fingerprint(&req(tool_result), "").unwrap().text, None);
    let mut two = base();
    two["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "user", "content": "And my username?"}));
    assert_eq!(
        fingerprint(&req(two), "").unwrap().text.as_deref(),
        Some("How do I reset my password?\nAnd my username?")
    );
}

#[test]
fn canonical_json_sorts_keys_and_normalises_integral_floats() {
    let v: Value =
        serde_json::from_str(r#"{"b": [1.0, 2.5, {"z": 1, "a": null}], "a": "x\n"}"#).unwrap();
    assert_eq!(canonical(&v), r#"{"a":"x\n","b":[1,2.5,{"a":null,"z":1}]}"#);
}

fn conversation(earlier: &[(&str, &str)], last: &str) -> ChatRequest {
    let mut messages = vec![json!({"role": "system", "content": "You are terse."})];
    for (role, text) in earlier {
        messages.push(json!({"role": role, "content": text}));
    }
    messages.push(json!({"role": "user", "content": last}));
    req(json!({"model": "openai/gpt-4o-mini", "temperature": 0.2, "messages": messages}))
}

#[test]
fn by_meaning_plain_earlier_turns_leave_the_partition_for_the_context() {
    use super::key::fingerprint_with;
    let a = conversation(
        &[
            ("user", "I bought a blender."),
            ("assistant", "How can I help?"),
        ],
        "How do I return it?",
    );
    let b = conversation(
        &[
            ("user", "I ordered a blender from you."),
            ("assistant", "Sure."),
        ],
        "How do I return it?",
    );
    let single = req(base());
    let (fa, fb, fs) = (
        fingerprint_with(&a, "", true).unwrap(),
        fingerprint_with(&b, "", true).unwrap(),
        fingerprint_with(&single, "", true).unwrap(),
    );
    // One partition (the system prompt and parameters): the verifier compares the contexts.
    assert_eq!(fa.partition, fb.partition);
    assert_eq!(fa.partition, fs.partition);
    assert_eq!(fa.context, "u: I bought a blender. // a: How can I help?");
    assert_eq!(fs.context, "");
    // The exact key still covers every turn.
    assert_ne!(fa.exact, fb.exact);
    let same_last = conversation(
        &[("user", "Something else."), ("assistant", "Sure.")],
        "How do I return it?",
    );
    assert_ne!(
        fingerprint_with(&same_last, "", true).unwrap().exact,
        fb.exact
    );
    // A single question keys as before (no schema bump: the golden hash holds both ways).
    assert_eq!(fs, fingerprint(&single, "").unwrap());
    // Without `by_meaning`, earlier turns are the partition.
    assert_ne!(
        fingerprint(&a, "").unwrap().partition,
        fingerprint(&b, "").unwrap().partition
    );
    assert_eq!(fingerprint(&a, "").unwrap().context, "");
    // The system prompt still partitions.
    let mut other_system = serde_json::to_value(&a).unwrap();
    other_system["messages"][0]["content"] = json!("You are verbose.");
    assert_ne!(
        fingerprint_with(&req(other_system), "", true)
            .unwrap()
            .partition,
        fa.partition
    );
}

#[test]
fn by_meaning_earlier_turns_with_tools_or_images_stay_exact() {
    use super::key::fingerprint_with;
    let mut tools = serde_json::to_value(conversation(&[], "And now?")).unwrap();
    let msgs = tools["messages"].as_array_mut().unwrap();
    msgs.insert(1, json!({"role": "user", "content": "Add 2 and 3"}));
    msgs.insert(2, json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}]}));
    msgs.insert(
        3,
        json!({"role": "tool", "tool_call_id": "c1", "content": "5"}),
    );
    let with_tools = fingerprint_with(&req(tools.clone()), "", true).unwrap();
    assert_eq!(with_tools.context, "");
    assert_eq!(with_tools, fingerprint(&req(tools), "").unwrap());
    let image = req(json!({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "How old is it?"}]}));
    let fi = fingerprint_with(&image, "", true).unwrap();
    assert_eq!(fi.context, "");
    assert_eq!(fi, fingerprint(&image, "").unwrap());
}

/// Requests of every shape the key covers (tools, tool calls and results, images, several
/// trailing user turns, escapes, numbers, unknown fields, conversations by meaning), each with
/// the partition and exact key the derivation gave when this table was written: a change to
/// how the key is computed must keep every one (or bump `key::SCHEMA`).
#[test]
fn golden_hashes_of_varied_requests() {
    use super::key::fingerprint_with;
    let table: Vec<(Value, &str, bool, &str, &str)> = vec![
        (
            json!({"model": "m", "temperature": 1.0, "top_p": 0.1, "max_tokens": 100, "seed": -7,
                "stop": ["\n", "END"], "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"b": {"type": "integer", "maximum": 1e20}, "a": {"type": "number", "minimum": -2.5}}}}},
                "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object", "required": ["x"], "properties": {"x": {"type": "string"}}}, "strict": true}}],
                "tool_choice": {"type": "function", "function": {"name": "f"}},
                "logit_bias": {"50256": -100}, "frequency_penalty": 0.0, "custom_field": [1, 2.0, null, true],
                "user": "u", "store": true, "metadata": {"a": "b"}, "n": 1,
                "messages": [{"role": "user", "content": "Weather in \"Paris\"?\tÉté ☀ \u{1}"}]}),
            "",
            false,
            "1096e5698b284bf3183033b0ec649365",
            "82383b1a04f4e01634e3e6ebd726f96dbdea05f20950aa6a2d8290e0a27820b1",
        ),
        (
            json!({"model": "m", "messages": [
                {"role": "system", "content": [{"type": "text", "text": " Be brief. "}]},
                {"role": "user", "content": "Add 2 and 3", "name": "ann"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\":2,\"b\":3}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "5"},
                {"role": "assistant", "content": "It is 5."},
                {"role": "user", "content": "  And 4 and 4?  "},
                {"role": "user", "content": [{"type": "text", "text": "Quickly."}, {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]}]}),
            "tenant-1",
            false,
            "c5860313ecde12b70b6214053f0bacaa",
            "04551c11e75f181e9e2e222e441ce6ebb3c997f267528452afcd22709ad36202",
        ),
        (
            json!({"model": "m", "temperature": 0.7, "messages": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "I bought a blender."},
                {"role": "assistant", "content": [{"type": "text", "text": "How can I help?"}]},
                {"role": "user", "content": "How do I return it?"}]}),
            "",
            true,
            "544959ff22882841303a4c8e28f9a4d6",
            "8a95ed188ff13556670308aa599a603a8cc9832c5d39ba9f819a3668af192630",
        ),
        (
            json!({"model": "m", "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}]}),
            "t",
            true,
            "819eb71601864bbe13fc51ffbcb7457f",
            "407844429871d06bbdf2541fb17d0a3209d85ae0583560798bf1c5e37f742fab",
        ),
        (
            json!({"model": "m", "max_completion_tokens": 5, "reasoning_effort": "low",
                "audio": {"voice": "x"}, "modalities": ["text"], "parallel_tool_calls": false,
                "messages": [{"role": "developer", "content": "D"}, {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAA=", "format": "wav"}}]}]}),
            "",
            false,
            "1e7d0cc76bb9279cadd9e6e43ae42edf",
            "fea8c8a9f78f98858659dda192d5edf3a7c706466cb74b28014804a2293f3935",
        ),
    ];
    for (i, (v, tenant, by_meaning, partition, exact)) in table.into_iter().enumerate() {
        let fp = fingerprint_with(&req(v), tenant, by_meaning).unwrap();
        assert_eq!(
            (fp.partition.as_str(), fp.exact.as_str()),
            (partition, exact),
            "request {i}"
        );
    }
}
