use serde_json::json;

use super::*;

fn plugin(config: Value) -> Box<dyn Plugin> {
    match create(&config) {
        Ok(p) => p,
        Err(e) => unreachable!("valid config: {e:?}"),
    }
}

fn ask(text: &str) -> ChatRequest {
    serde_json::from_value(json!({"model": "m", "messages": [{"role": "user", "content": text}]}))
        .unwrap_or_default()
}

const TEXT: &str = "Mail ada@example.com or call +44 20 7946 0958; card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, not 4111 1111 1111 1112.";

#[test]
fn checks() {
    assert!(luhn("4111 1111 1111 1111"));
    assert!(!luhn("4111 1111 1111 1112"));
    assert!(iban_ok("DE89 3704 0044 0532 0130 00"));
    assert!(iban_ok("GB82WEST12345698765432"));
    assert!(!iban_ok("DE89 3704 0044 0532 0130 01"));
}

#[test]
fn digits_of_other_scripts_in_an_iban_are_not_a_crash() {
    // The pattern's `\d` matches any script's digits; a three-byte one in the check digits cut
    // a character in two (a panic, so a 500) where the first four characters are moved to the end.
    assert!(!iban_ok("GB\u{0969}\u{0969}WEST12345698765432"));
    let p = plugin(json!({}));
    let mut state: State = None;
    let text = "IBAN GB\u{0969}\u{0969}WEST12345698765432 and ada@example.com";
    let mut req = ask(text);
    let _ = p.on_request(&RequestInfo::default(), &mut req, &mut state);
    assert_eq!(
        req.messages[0].text_content(),
        "IBAN GB\u{0969}\u{0969}WEST12345698765432 and [EMAIL_1]"
    );
}

#[test]
fn requests_lose_their_personal_data_and_answers_get_it_back() {
    let p = plugin(json!({}));
    let mut state: State = None;
    let mut req = ask(TEXT);
    let _ = p.on_request(&RequestInfo::default(), &mut req, &mut state);
    let sent = req.messages[0].text_content();
    assert_eq!(
        sent,
        "Mail [EMAIL_1] or call [PHONE_1]; card [CARD_1], IBAN [IBAN_1], not 4111 1111 1111 1112."
    );
    let mut resp: ChatResponse =
        serde_json::from_value(json!({"choices": [{"index": 0, "message": {
        "role": "assistant", "content": "I will write to [EMAIL_1] about [CARD_1]."}}]}))
        .unwrap_or_else(|_| unreachable!());
    let _ = p.on_response(&RequestInfo::default(), &mut resp, &mut state);
    assert_eq!(
        resp.choices[0].message.text_content(),
        "I will write to ada@example.com about 4111 1111 1111 1111."
    );
}

fn chunk(text: &str, finish: bool) -> ChatChunk {
    serde_json::from_value(json!({"choices": [{"index": 0, "delta": {"content": text},
        "finish_reason": if finish { Value::from("stop") } else { Value::Null }}]}))
    .unwrap_or_else(|_| unreachable!())
}

fn stream(p: &dyn Plugin, state: &mut State, pieces: &[&str]) -> (Vec<String>, String) {
    let mut out = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let mut c = chunk(piece, i + 1 == pieces.len());
        let _ = p.on_stream_chunk(&RequestInfo::default(), &mut c, state);
        out.push(c.choices[0].delta.content.clone().unwrap_or_default());
    }
    let rest: String = p
        .on_stream_end(&RequestInfo::default(), state)
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.choices[0].delta.content.clone())
        .collect();
    (out, rest)
}

#[test]
fn a_placeholder_split_across_chunks_is_restored() {
    let p = plugin(json!({}));
    let mut state: State = None;
    let _ = p.on_request(
        &RequestInfo::default(),
        &mut ask("I am ada@example.com"),
        &mut state,
    );
    let (out, rest) = stream(
        p.as_ref(),
        &mut state,
        &["Hello [EMA", "IL_1], how", " are you?"],
    );
    assert_eq!(out.concat() + &rest, "Hello ada@example.com, how are you?");
    assert_eq!(out[0], "Hello ", "the partial placeholder is held back");
}

#[test]
fn a_card_number_split_across_chunks_is_redacted_in_answers() {
    // Restoring stays on: what the model wrote itself is not the user's to get back.
    let p = plugin(json!({"redact_answers": true, "window": 32}));
    let mut state: State = None;
    let (out, rest) = stream(
        p.as_ref(),
        &mut state,
        &[
            "Your card is 4111 1111 ",
            "1111 1111 and ",
            "that is all, thanks for asking today.",
        ],
    );
    let whole = out.concat() + &rest;
    assert_eq!(
        whole,
        "Your card is [CARD_1] and that is all, thanks for asking today."
    );
    assert!(!whole.contains("4111"));
}

#[test]
fn a_cut_stream_flushes_what_was_held() {
    let p = plugin(json!({}));
    let mut state: State = None;
    let mut c = chunk("see [EMA", false);
    let _ = p.on_stream_chunk(&RequestInfo::default(), &mut c, &mut state);
    let rest = p
        .on_stream_end(&RequestInfo::default(), &mut state)
        .unwrap_or_default();
    assert_eq!(rest[0].choices[0].delta.content.as_deref(), Some("[EMA"));
}

#[test]
fn custom_patterns_and_config_errors() {
    let p = plugin(
        json!({"detect": ["email"], "patterns": [{"name": "employee-id", "pattern": "EMP-[0-9]{6}"}]}),
    );
    let mut req = ask("EMP-123456 at +44 20 7946 0958 and bob@x.io");
    let _ = p.on_request(&RequestInfo::default(), &mut req, &mut None);
    assert_eq!(
        req.messages[0].text_content(),
        "[EMPLOYEE_ID_1] at +44 20 7946 0958 and [EMAIL_1]"
    );
    let Err(errors) = create(
        &json!({"detect": ["email", "dna"], "patterns": [{"name": "x", "pattern": "("}], "window": 2, "mode": 1}),
    ) else {
        unreachable!("invalid config")
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for p in ["detect[1]", "patterns[0].pattern", "window", "mode"] {
        assert!(paths.contains(&p), "{p} in {paths:?}");
    }
}
