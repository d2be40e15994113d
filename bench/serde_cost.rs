//! Cost of the canonical-type JSON work per request: decode, clone and re-encode a chat request;
//! decode and re-encode a chat response. `cargo run --release --example serde_cost`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;
use switchyard::chat::{ChatRequest, ChatResponse};
fn main() {
    let req = br#"{"model":"bench/gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello! How are you today?"}],"temperature":0.2,"max_tokens":64}"#;
    let resp = std::fs::read("tests/fixtures/openai/chat.json").unwrap();
    let n = 200_000;
    let t = Instant::now();
    for _ in 0..n {
        let r: ChatRequest = serde_json::from_slice(req).unwrap();
        let mut c = r.clone();
        c.model = "gpt-4o-mini".into();
        let out = serde_json::to_vec(&c).unwrap();
        std::hint::black_box(out);
    }
    println!(
        "request decode+clone+encode: {:.2} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let t = Instant::now();
    for _ in 0..n {
        let r: ChatResponse = serde_json::from_slice(&resp).unwrap();
        let out = serde_json::to_vec(&r).unwrap();
        std::hint::black_box(out);
    }
    println!(
        "response decode+encode: {:.2} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
