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
