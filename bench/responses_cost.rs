//! Cost of the Responses API translation, beyond the canonical JSON work that chat completions
//! also pays: per request (decode a Responses request, translate it to the canonical chat request,
//! build the echo; translate the chat answer into a response object and encode it) and per streamed
//! chunk (a text delta into its Responses event, encoded as an SSE payload).
//! `cargo run --release --example responses_cost`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use switchyard::chat::{ChatChunk, ChatResponse, ChunkChoice, Delta, Extra};
use switchyard::providers::openai::responses::{self, Echo, ResponsesRequest};
use switchyard::providers::openai::responses_stream::StreamEncoder;

fn main() {
    let req = br#"{"model":"bench/gpt-4o-mini","instructions":"You are terse.","input":[{"role":"user","content":[{"type":"input_text","text":"Hello! How are you today?"}]}],"temperature":0.2,"max_output_tokens":64,"tools":[{"type":"function","name":"get_weather","description":"Current weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}]}"#;
    let resp: ChatResponse =
        serde_json::from_slice(&std::fs::read("tests/fixtures/openai/chat.json").unwrap()).unwrap();
    let n = 200_000;
    let t = Instant::now();
    for _ in 0..n {
        let r: ResponsesRequest = serde_json::from_slice(req).unwrap();
        let (chat, turn) = responses::to_chat(&r, Vec::new()).unwrap();
        let echo = Echo::new(&r);
        std::hint::black_box((chat, turn, echo));
    }
    let per_req_in = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let r: ResponsesRequest = serde_json::from_slice(req).unwrap();
    let echo = Echo::new(&r);
    let t = Instant::now();
    for _ in 0..n {
        let body = echo.response(&resp.model, &responses::outcome(&resp));
        std::hint::black_box(serde_json::to_vec(&body).unwrap());
    }
    let per_req_out = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("request: Responses -> canonical {per_req_in:.2} us");
    println!("answer: canonical -> response object, encoded {per_req_out:.2} us");
    println!("per request, both: {:.2} us", per_req_in + per_req_out);

    let chunk = ChatChunk {
        id: "c".into(),
        object: "chat.completion.chunk".into(),
        created: 0,
        model: "gpt-4o-mini".into(),
        choices: vec![ChunkChoice {
            index: 0,
            delta: Delta {
                content: Some("Hello there, ".into()),
                ..Delta::default()
            },
            finish_reason: None,
            extra: Extra::new(),
        }],
        usage: None,
        extra: Extra::new(),
    };
    let mut enc = StreamEncoder::new(echo.clone());
    enc.push(chunk.clone()); // the opening events
    let t = Instant::now();
    for _ in 0..n {
        for (_, ev) in enc.push(chunk.clone()) {
            std::hint::black_box(ev.to_string());
        }
    }
    println!(
        "per streamed text chunk (event built and encoded, chunk clone included): {:.2} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
