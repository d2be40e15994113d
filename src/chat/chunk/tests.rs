use serde_json::{Value, json};

use super::*;

fn read(data: &str) -> Result<RawEvent, String> {
    Chunk::read_raw(data.to_owned())
}

/// The full decoder's reading of `data`: a chunk, an error payload, or a refusal.
fn full(data: &str) -> Result<Result<ChatChunk, Value>, ()> {
    match serde_json::from_str::<ChatChunk>(data) {
        Ok(c) => Ok(match c.extra.get("error") {
            Some(e) => Err(e.clone()),
            None => Ok(c),
        }),
        Err(_) => Err(()),
    }
}

/// Reads `data` both ways and holds them to each other: the same refusals, the same error
/// payloads, and a chunk that is the full one without `object` and the chunk's and the choices'
/// unmodelled members, which decodes in full to the full one.
fn agree(data: &str) {
    agree_with(data, read(data));
}

/// [`agree`] for `data` as read (`got`).
fn agree_with(data: &str, got: Result<RawEvent, String>) {
    match (full(data), got) {
        (Err(()), Err(back)) => assert_eq!(back, data),
        (Ok(Err(e)), Ok(RawEvent::Error(r))) => assert_eq!(e, r, "{data}"),
        // `error` twice: the provider reads data the reading gives back as a JSON value, which
        // keeps the last, as the full decoder does.
        (Ok(Err(e)), Err(back)) => {
            let v: Value = serde_json::from_str(&back).unwrap_or_default();
            assert_eq!(v.get("error"), Some(&e), "{data}");
        }
        (Ok(Ok(f)), Ok(RawEvent::Chunk(r))) => {
            let mut lean = f.clone();
            lean.object.clear();
            lean.extra.clear();
            lean.choices.iter_mut().for_each(|c| c.extra.clear());
            assert_eq!(**r, lean, "{data}");
            assert_eq!(joined(r.json(true)).as_deref(), Some(data));
            assert_eq!(r.into_chunk().ok(), Some(f), "{data}");
        }
        (f, r) => panic!("read differently: {data}\nfull: {f:?}\nraw: {r:?}"),
    }
}

/// The parts of [`Chunk::json`], joined.
fn joined(parts: Option<[&[u8]; 2]>) -> Option<String> {
    parts.map(|p| String::from_utf8_lossy(&p.concat()).into_owned())
}

fn fixture_events(name: &str) -> Vec<String> {
    let path = format!(
        "{}/tests/fixtures/openai/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(str::to_owned)
        .collect()
}

#[test]
fn reads_the_recorded_streams_as_the_full_decoder_does() {
    let mut n = 0;
    for name in ["chat_stream.sse", "chat_tools_stream.sse"] {
        for data in fixture_events(name) {
            agree(&data);
            n += 1;
        }
    }
    assert!(n >= 10, "{n} events");
}

#[test]
fn reads_and_refuses_what_the_full_decoder_does() {
    let base = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "system_fingerprint": "fp", "choices": [{"index": 0, "delta": {"content": "x", "refusal": null},
        "logprobs": null, "finish_reason": null}], "usage": null});
    let mut shapes: Vec<Value> = vec![base.clone(), json!({}), json!({"choices": []})];
    // Each modelled member in turn given values of every JSON type, and left out.
    let values = [
        json!(null),
        json!(true),
        json!(-1),
        json!(2),
        json!(1.5),
        json!("s"),
        json!([]),
        json!({}),
        json!([{"index": 0}]),
    ];
    let paths: [&[&str]; 10] = [
        &["id"],
        &["object"],
        &["created"],
        &["model"],
        &["choices"],
        &["usage"],
        &["error"],
        &["choices", "0", "index"],
        &["choices", "0", "delta"],
        &["choices", "0", "finish_reason"],
    ];
    for path in paths {
        for v in values.iter().cloned().map(Some).chain([None]) {
            let mut shape = base.clone();
            let (last, parents) = path.split_last().unwrap_or((&"", &[]));
            let mut at = &mut shape;
            for p in parents {
                at = match p.parse::<usize>() {
                    Ok(i) => &mut at[i],
                    Err(_) => &mut at[*p],
                };
            }
            if let Some(obj) = at.as_object_mut() {
                match v {
                    Some(v) => obj.insert((*last).to_owned(), v),
                    None => obj.remove(*last),
                };
            }
            shapes.push(shape);
        }
    }
    for delta in [
        json!({"role": "assistant"}),
        json!({"role": 1}),
        json!({"tool_calls": [{"index": 0, "id": "t", "type": "function", "function": {"name": "f", "arguments": "{"}}]}),
        json!({"tool_calls": [{"index": "0"}]}),
        json!({"reasoning_content": "hm", "content": null}),
    ] {
        let mut shape = base.clone();
        shape["choices"][0]["delta"] = delta;
        shapes.push(shape);
    }
    shapes.push(
        json!({"usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 1}, "completion_tokens_details": null}}),
    );
    shapes.push(json!({"usage": {"prompt_tokens": "3"}}));
    let mut texts: Vec<String> = shapes.iter().map(Value::to_string).collect();
    texts.extend(
        [
            "not json",
            "[]",
            "null",
            r#"{"id":"a","id":"b"}"#,
            r#"{"x":1,"x":2,"choices":[]}"#,
            r#"{"error":{"message":"a"},"error":{"message":"b"}}"#,
            r#"{"choices":[]} trailing"#,
            r#"{"choices":[{"index":0,"index":1}]}"#,
            r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
            r#"{"usage":null,"usage":null}"#,
            // serde's derive would read a struct from an array, member by member.
            r#"["c","chat.completion.chunk",1,"m",[]]"#,
            r#"{"choices":[[0,{"content":"x"},null]]}"#,
        ]
        .map(str::to_owned),
    );
    for text in &texts {
        agree(text);
    }
}

#[test]
fn usage_is_left_out_of_the_json_only_where_it_can_be() {
    let chunk = |data: &str| match read(data) {
        Ok(RawEvent::Chunk(c)) => c,
        other => panic!("{other:?}"),
    };
    let last = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"x"}}],"usage":null}"#;
    let c = chunk(last);
    assert_eq!(joined(c.json(true)).as_deref(), Some(last));
    assert_eq!(
        joined(c.json(false)).as_deref(),
        Some(r#"{"id":"c","choices":[{"index":0,"delta":{"content":"x"}}]}"#)
    );
    // No usage member: the JSON as it is.
    let none = r#"{"id":"c","choices":[]}"#;
    assert_eq!(joined(chunk(none).json(false)).as_deref(), Some(none));
    // Usage elsewhere, spaced, or with counts: written again.
    for data in [
        r#"{"usage":null,"id":"c","choices":[]}"#,
        r#"{"id":"c","choices":[],"usage": null}"#,
        r#"{"id":"c","choices":[],"usage":{"prompt_tokens":1}}"#,
    ] {
        let c = chunk(data);
        assert_eq!(joined(c.json(true)).as_deref(), Some(data));
        assert_eq!(c.json(false), None, "{data}");
    }
    // A key that only ends in usage is not the member.
    let other = r#"{"id":"c","choices":[],"my_usage":null}"#;
    assert_eq!(joined(chunk(other).json(false)).as_deref(), Some(other));
    let inside = r#"{"id":"c","choices":[],"x":",\"usage\":null}"}"#;
    assert_eq!(joined(chunk(inside).json(false)).as_deref(), Some(inside));
}

#[test]
fn a_changed_chunk_is_decoded_in_full_and_written_again() {
    let data = r#"{"id":"c","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":"x"},"logprobs":null}],"usage":null}"#;
    let Ok(RawEvent::Chunk(mut c)) = read(data) else {
        panic!("not a chunk")
    };
    assert!(c.extra.is_empty());
    let whole = c.make_mut().map(|c| c.clone()).ok();
    assert_eq!(c.json(true), None);
    assert_eq!(c.json(false), None);
    let whole = whole.unwrap_or_else(|| panic!("decoded"));
    assert_eq!(whole.extra.get("system_fingerprint"), Some(&json!("fp")));
    assert_eq!(whole.choices[0].extra.get("logprobs"), Some(&Value::Null));
    // A chunk that was never kept as its JSON has none to send.
    let plain = Chunk::from(whole);
    assert_eq!(plain.json(true), None);
    // Data the reading accepts but the full decoder refuses (an unpaired UTF-16 escape in a
    // member the reading skips) fails when it has to be decoded in full.
    let odd = r#"{"id":"c","system_fingerprint":"\ud800","choices":[]}"#;
    let Ok(RawEvent::Chunk(mut c)) = read(odd) else {
        panic!("not a chunk")
    };
    let err = c.make_mut().err().map(|e| e.message).unwrap_or_default();
    assert!(err.starts_with("bad chunk from upstream"), "{err}");
}

#[test]
fn only_one_line_is_kept() {
    assert!(Chunk::one_line(r#"{"a":1}"#));
    assert!(!Chunk::one_line("{\"a\":\n1}"));
    assert!(!Chunk::one_line("{\"a\":\r1}"));
}

/// The chunk every shape below is made from, as OpenAI writes one.
const FIRST: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}"#;

#[test]
fn a_chunk_after_one_with_the_same_head_reads_as_the_full_decoder_does() {
    // The head read once: the rest of each later chunk is read, and the result is the same.
    let mut heads = Heads::default();
    agree_with(FIRST, Chunk::read_raw_in(FIRST.to_owned(), &mut heads));
    assert!(heads.head.is_some(), "the head is kept");
    for name in ["chat_stream.sse", "chat_tools_stream.sse"] {
        let mut heads = Heads::default();
        for data in fixture_events(name) {
            agree_with(&data, Chunk::read_raw_in(data.clone(), &mut heads));
        }
        assert!(heads.head.is_some(), "{name}: the head is kept");
        // The later chunks were read from their rest (the buffer it is read from was used).
        assert!(
            heads.scratch.starts_with("{\"choices\":"),
            "{name}: {}",
            heads.scratch
        );
    }
    // Every way a later chunk can differ, each read after FIRST: a head member again after
    // `choices` (refused as it always was), a head that differs, members a head does not keep,
    // and data that is not a chunk at all.
    let head = &FIRST[..FIRST.find("\"choices\"").unwrap_or(0)];
    let rest = |r: &str| format!("{head}{r}");
    let mut later = vec![
        rest(r#""choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}"#),
        rest(r#""choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#),
        rest(r#""choices":[],"id":"again"}"#),
        rest(r#""choices":[],"model":"again"}"#),
        rest(r#""choices":[],"created":2}"#),
        rest(r#""choices":[],"object":"again"}"#),
        rest(r#""choices":[],"object":1}"#),
        rest(r#""choices":[],"system_fingerprint":"again"}"#),
        rest(r#""choices":[],"error":{"message":"late"}}"#),
        rest(r#""choices":[],"choices":[]}"#),
        rest(r#""choices":[] trailing"#),
        rest(r#""choices":{}}"#),
        rest(r#""choices""#),
        rest(""),
        FIRST.replace("chatcmpl-1", "chatcmpl-2"),
        FIRST.replace("\"created\":1694268190", "\"created\":-1"),
        FIRST.replace("\"created\":1694268190", "\"created\":1.5"),
        FIRST.replace("\"model\":\"gpt-4o-mini\"", "\"model\":null"),
        FIRST.replace(
            "\"id\":\"chatcmpl-1\"",
            "\"id\":\"chatcmpl-1\",\"id\":\"x\"",
        ),
        FIRST.replace("\"id\":\"chatcmpl-1\"", "\"id\":\"chat\\\"cmpl\""),
        FIRST.replace("\"id\":\"chatcmpl-1\"", "\"i\\u0064\":\"chatcmpl-1\""),
        FIRST.replace("{\"id\"", "{\"usage\":null,\"id\""),
        FIRST.replace("{\"id\"", "{\"error\":null,\"id\""),
        FIRST.replace("{\"id\"", "{ \"id\""),
        "{}".to_owned(),
        "not json".to_owned(),
    ];
    // Chunks whose head is only `{`, with head members after `choices` or none at all.
    later.extend(
        [
            r#"{"choices":[],"id":"x","created":3,"model":"m"}"#,
            r#"{"choices":[]}"#,
            r#"{"system_fingerprint":"fp","choices":[],"model":"m"}"#,
            r#"{"system_fingerprint":"fp","choices":[]}"#,
        ]
        .map(str::to_owned),
    );
    later.push(FIRST.to_owned());
    // Every chunk read after every other (the kept head follows the last chunk read whole), and
    // twice in a row.
    for first in &later {
        for data in &later {
            let mut heads = Heads::default();
            agree_with(first, Chunk::read_raw_in(first.clone(), &mut heads));
            agree_with(data, Chunk::read_raw_in(data.clone(), &mut heads));
            agree_with(data, Chunk::read_raw_in(data.clone(), &mut heads));
        }
    }
}

#[test]
fn a_later_chunk_takes_its_head_members_from_the_kept_head_only_when_its_bytes_are_the_same() {
    let mut heads = Heads::default();
    let _ = Chunk::read_raw_in(FIRST.to_owned(), &mut heads);
    let other = FIRST.replace("gpt-4o-mini", "gpt-4o");
    let Ok(RawEvent::Chunk(c)) = Chunk::read_raw_in(other, &mut heads) else {
        panic!("not a chunk")
    };
    assert_eq!(c.model, "gpt-4o");
    // A chunk that does not follow the head: none is kept, and none is looked for again.
    assert!(heads.head.is_none());
    let Ok(RawEvent::Chunk(c)) = Chunk::read_raw_in(FIRST.to_owned(), &mut heads) else {
        panic!("not a chunk")
    };
    assert_eq!(
        (c.id.as_str(), c.created, c.model.as_str()),
        ("chatcmpl-1", 1_694_268_190, "gpt-4o-mini")
    );
}

#[test]
fn a_head_is_found_only_where_its_bounds_are_certain() {
    let at = |d: &str| head_end(d.as_bytes());
    assert_eq!(at(r#"{"choices":[]}"#), Some(1));
    assert_eq!(at(r#"{"id":"c","choices":[]}"#), Some(10));
    assert_eq!(at(r#"{"id":"c","n":-1.5e3,"choices":[]}"#), Some(21));
    assert_eq!(at(FIRST), FIRST.find("\"choices\""));
    for d in [
        r#"{"id":"c"}"#,
        r#"{"id":"c\"","choices":[]}"#,
        r#"{"i\"d":"c","choices":[]}"#,
        r#"{"usage":null,"choices":[]}"#,
        r#"{"error":1,"choices":[]}"#,
        r#"{"id":null,"choices":[]}"#,
        r#"{"id":{},"choices":[]}"#,
        r#"{"id": "c","choices":[]}"#,
        r#"{"id":"c" ,"choices":[]}"#,
        r#"{"id":"c""#,
        r#"["choices"]"#,
        "",
    ] {
        assert_eq!(at(d), None, "{d}");
    }
}

#[test]
fn a_stream_whose_chunks_do_not_share_a_head_is_read_whole_once_each() {
    // Members in alphabetical order, as some OpenAI-compatible services write them: `choices`
    // first, so there is no head to keep, and each chunk is read once.
    let sorted = r#"{"choices":[{"index":0,"delta":{"content":"x"}}],"created":1,"id":"c","model":"m","object":"chat.completion.chunk"}"#;
    let mut heads = Heads::default();
    for _ in 0..3 {
        agree_with(sorted, Chunk::read_raw_in(sorted.to_owned(), &mut heads));
        assert!(heads.head.is_none() && heads.scratch.is_empty());
    }
    // A head, then a member of it again after `choices` in a later chunk: from then on the
    // stream's chunks are read whole (and still read as the full decoder reads them).
    let first = r#"{"id":"c","choices":[],"model":"m"}"#;
    let mut heads = Heads::default();
    agree_with(first, Chunk::read_raw_in(first.to_owned(), &mut heads));
    assert!(heads.head.is_some());
    agree_with(first, Chunk::read_raw_in(first.to_owned(), &mut heads));
    assert!(heads.head.is_none());
    heads.scratch.clear();
    agree_with(FIRST, Chunk::read_raw_in(FIRST.to_owned(), &mut heads));
    agree_with(FIRST, Chunk::read_raw_in(FIRST.to_owned(), &mut heads));
    assert!(heads.head.is_none() && heads.scratch.is_empty());
}
