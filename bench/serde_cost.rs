//! Cost of the canonical-type JSON work per request: decode, clone and re-encode a chat request;
//! decode and re-encode a chat response; read a streamed answer's chunks as the OpenAI provider
//! does, beside serde_json only checking the same JSON. `cargo run --release --example serde_cost`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;
use switchyard::chat::{ChatRequest, ChatResponse, Chunk, Heads, RawEvent, StreamCollector};

/// Runs `f` `n` times and prints the mean time of one run.
fn time(label: &str, n: u32, mut f: impl FnMut()) {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    println!(
        "{label}: {:.2} us",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
}

fn main() {
    let req = br#"{"model":"bench/gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello! How are you today?"}],"temperature":0.2,"max_tokens":64}"#;
    let resp = std::fs::read("tests/fixtures/openai/chat.json").unwrap();
    let n = 200_000;
    time("request decode+clone+encode", n, || {
        let r: ChatRequest = serde_json::from_slice(req).unwrap();
        let mut c = r.clone();
        c.model = "gpt-4o-mini".into();
        let out = serde_json::to_vec(&c).unwrap();
        std::hint::black_box(out);
    });
    time("response decode+encode", n, || {
        let r: ChatResponse = serde_json::from_slice(&resp).unwrap();
        let out = serde_json::to_vec(&r).unwrap();
        std::hint::black_box(out);
    });
    // A streamed answer as the OpenAI provider reads it when no stage changes the chunks: each
    // event's data read for what the stages need (`Chunk::read_raw_in`, the head the chunks share
    // read once), folded for the cache, and its JSON taken for the client.
    let sse = std::fs::read_to_string("tests/fixtures/openai/chat_stream.sse").unwrap();
    let events: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .collect();
    let chunks = events.len();
    time(&format!("stream of {chunks} chunks read+fold"), n, || {
        let mut acc = StreamCollector::default();
        let mut heads = Heads::default();
        for data in &events {
            let RawEvent::Chunk(chunk) =
                Chunk::read_raw_in((*data).to_owned(), &mut heads).unwrap()
            else {
                unreachable!("the fixture's events are chunks");
            };
            acc.push(&chunk);
            std::hint::black_box(chunk.json(false));
        }
        std::hint::black_box(acc.finish());
    });
    time(&format!("stream of {chunks} chunks read only"), n, || {
        let mut heads = Heads::default();
        for data in &events {
            std::hint::black_box(Chunk::read_raw_in((*data).to_owned(), &mut heads).is_ok());
        }
    });
    time(
        &format!("stream of {chunks} chunks read only, each whole (no head kept)"),
        n,
        || {
            for data in &events {
                std::hint::black_box(Chunk::read_raw((*data).to_owned()).is_ok());
            }
        },
    );
    time(
        &format!("stream of {chunks} chunks, serde_json validating only"),
        n,
        || {
            for data in &events {
                std::hint::black_box(serde_json::from_str::<serde::de::IgnoredAny>(data).is_ok());
            }
        },
    );
}
