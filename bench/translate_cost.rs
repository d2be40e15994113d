//! Cost of each wire translation beyond the canonical JSON work chat completions pays:
//! per request (decode the client's format and translate it to the canonical request, or the
//! canonical request to the provider's format and encode it; the answer back the other way) and
//! per streamed chunk or event. `cargo run --release --example translate_cost`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use serde_json::{Value, json};
use switchyard::chat::{ChatChunk, ChatRequest, ChatResponse, ChunkChoice, Delta, Extra};
use switchyard::providers::bedrock::translate as bedrock;
use switchyard::providers::gemini::{ingress as genai, translate as gemini, wire};
use switchyard::providers::openai::responses::{self, Echo, ResponsesRequest};
use switchyard::providers::openai::responses_stream::StreamEncoder;

const N: u32 = 100_000;

fn time(label: &str, mut f: impl FnMut()) {
    for _ in 0..N / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..N {
        f();
    }
    println!(
        "{label:<58} {:>6.2} us",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(N)
    );
}

fn chunk(text: &str) -> ChatChunk {
    ChatChunk {
        id: "c".into(),
        object: "chat.completion.chunk".into(),
        created: 0,
        model: "m".into(),
        choices: vec![ChunkChoice {
            index: 0,
            delta: Delta {
                content: Some(text.into()),
                ..Delta::default()
            },
            finish_reason: None,
            extra: Extra::new(),
        }],
        usage: None,
        extra: Extra::new(),
    }
}

fn main() {
    let fixture = |p: &str| std::fs::read_to_string(format!("tests/fixtures/{p}")).unwrap();
    let chat_req: ChatRequest = serde_json::from_value(json!({
        "model": "m",
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello! How are you today?"}],
        "temperature": 0.2, "max_tokens": 64,
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    }))
    .unwrap();
    let chat_resp: ChatResponse = serde_json::from_str(&fixture("openai/chat.json")).unwrap();

    println!("== Responses API ingress");
    let req = br#"{"model":"bench/gpt-4o-mini","instructions":"You are terse.","input":[{"role":"user","content":[{"type":"input_text","text":"Hello! How are you today?"}]}],"temperature":0.2,"max_output_tokens":64,"tools":[{"type":"function","name":"get_weather","description":"Current weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}]}"#;
    let r: ResponsesRequest = serde_json::from_slice(req).unwrap();
    let echo = Echo::new(&r);
    time("request: decode + to canonical + echo", || {
        let r: ResponsesRequest = serde_json::from_slice(req).unwrap();
        std::hint::black_box((responses::to_chat(&r, Vec::new()).unwrap(), Echo::new(&r)));
    });
    time("answer: canonical -> response object, encoded", || {
        let body = echo.response(&chat_resp.model, &responses::outcome(&chat_resp));
        std::hint::black_box(serde_json::to_vec(&body).unwrap());
    });
    let mut enc = StreamEncoder::new(echo.clone());
    enc.push(chunk("Hello"));
    let c = chunk("Hello there, ");
    time("per text chunk: event built and encoded", || {
        for (_, ev) in enc.push(c.clone()) {
            std::hint::black_box(ev.to_string());
        }
    });

    println!("== Gemini provider");
    let gemini_resp = fixture("gemini/generate.json");
    time("request: canonical -> generateContent, encoded", || {
        let g = gemini::to_generate_request(&chat_req).unwrap();
        std::hint::black_box(serde_json::to_vec(&g).unwrap());
    });
    time("answer: decode + to canonical", || {
        let r: wire::GenerateResponse = serde_json::from_str(&gemini_resp).unwrap();
        std::hint::black_box(gemini::from_generate_response(r, "m"));
    });
    let event = r#"{"candidates":[{"content":{"parts":[{"text":"Hello there, "}],"role":"model"},"index":0}],"modelVersion":"gemini-2.5-flash"}"#;
    let mut dec = gemini::StreamDecoder::new("m");
    time("per stream event: decode + to canonical chunk", || {
        let r: wire::GenerateResponse = serde_json::from_str(event).unwrap();
        std::hint::black_box(dec.push(r));
    });

    println!("== Gemini-shaped ingress (/genai)");
    let genai_req = br#"{"systemInstruction":{"parts":[{"text":"You are terse."}]},"contents":[{"role":"user","parts":[{"text":"Hello! How are you today?"}]}],"generationConfig":{"temperature":0.2,"maxOutputTokens":64}}"#;
    time("request: decode + to canonical", || {
        let g: wire::GenerateRequest = serde_json::from_slice(genai_req).unwrap();
        std::hint::black_box(genai::from_generate_request(g, "m", false).unwrap());
    });
    time(
        "answer: canonical -> generateContent answer, encoded",
        || {
            let out = genai::to_generate_response(chat_resp.clone());
            std::hint::black_box(serde_json::to_vec(&out).unwrap());
        },
    );
    let mut genc = genai::StreamEncoder::default();
    time("per text chunk: event built and encoded", || {
        for ev in genc.push(c.clone()) {
            std::hint::black_box(serde_json::to_vec(&ev).unwrap());
        }
    });

    println!("== Bedrock provider");
    let converse: Value = serde_json::from_str(&fixture("bedrock/converse.json")).unwrap();
    let converse_text = converse.to_string();
    time("request: canonical -> Converse, encoded", || {
        let v = bedrock::to_converse_request(&chat_req).unwrap();
        std::hint::black_box(serde_json::to_vec(&v).unwrap());
    });
    time("answer: decode + to canonical", || {
        let v: Value = serde_json::from_str(&converse_text).unwrap();
        std::hint::black_box(bedrock::from_converse_response(&v, "m"));
    });
    let delta = r#"{"contentBlockIndex":0,"delta":{"text":"Hello there, "},"p":"abcdefgh"}"#;
    let mut bdec = bedrock::StreamDecoder::new("m");
    time(
        "per stream event: payload decode + to canonical chunk",
        || {
            let v: Value = serde_json::from_str(delta).unwrap();
            std::hint::black_box(bdec.push("contentBlockDelta", &v));
        },
    );
}
