//! Semantic cache benchmark, against a fake upstream on loopback.
//!
//! `cargo run --release --example cache_bench [-- --entries 100000]`
//!
//! 1. End to end through the real gateway (HTTP on 127.0.0.1, cache on, embedded Qdrant Edge):
//!    exact hits and semantic hits, sequential, p50/p90/p99; the upstream (an in-process axum
//!    server answering tests/fixtures/openai/chat.json) is called only to fill the cache.
//! 2. The embedding model alone: one text at a time, then N concurrent requests through the
//!    batching thread (texts/s and the batch sizes it formed).
//! 3. The store alone: nearest-neighbour lookup (partition filter + TTL range + threshold) at 1k
//!    entries and at `--entries` (default 100k), after the index is built, with recall@1 for
//!    queries whose true neighbour is known. The vectors are random unit vectors: the worst case
//!    for HNSW (real prompt embeddings cluster), so recall here is a lower bound.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::disallowed_methods
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard::app::Server;
use switchyard::cache::embedder::{Embedder, Model, OnnxEmbedder};
use switchyard::cache::index::{EdgeIndex, Entry, VectorIndex};
use switchyard::config::Config;

const MODEL: &str = "models/all-MiniLM-L6-v2";
const RUNTIME: &str = "models/onnxruntime/libonnxruntime.so.1.24.4";

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn line(name: &str, v: &[f64]) {
    println!(
        "{name:<44} n={:<5} p50 {:>8.3} ms  p90 {:>8.3} ms  p99 {:>8.3} ms",
        v.len(),
        pct(v.to_vec(), 0.5),
        pct(v.to_vec(), 0.9),
        pct(v.to_vec(), 0.99)
    );
}

async fn upstream() -> SocketAddr {
    let body = std::fs::read_to_string("tests/fixtures/openai/chat.json").unwrap();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

async fn end_to_end() {
    let up = upstream().await;
    let data = tempfile::tempdir().unwrap();
    let cfg = Config::parse(
        &format!(
            "[server]\ndata_dir = {:?}\n[[providers]]\nname = \"fake\"\nkind = \"openai\"\nbase_url = \"http://{up}/v1\"\nkeys = [\"k\"]\n[cache]\n",
            data.path()
        ),
        &|_| None,
    )
    .unwrap();
    let server = Server::start(cfg, Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let url = format!("http://{}/v1/chat/completions", server.addr);
    let http = reqwest::Client::new();
    let ready = format!("http://{}/ready", server.addr);
    while http.get(&ready).send().await.unwrap().status() != 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ask = |q: &str| json!({"model": "fake/gpt-4o-mini", "messages": [{"role": "user", "content": q}]});
    let send = |body: Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let t = Instant::now();
            let r = http.post(&url).json(&body).send().await.unwrap();
            let h = r
                .headers()
                .get("x-switchyard-cache")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let _ = r.bytes().await.unwrap();
            (t.elapsed().as_secs_f64() * 1e3, h)
        }
    };
    let (_, h) = send(ask("How do I reset my password?")).await;
    assert_eq!(h, "miss");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..50 {
        send(ask("How do I reset my password?")).await;
    }
    let mut exact = Vec::new();
    for _ in 0..2000 {
        let (ms, h) = send(ask("How do I reset my password?")).await;
        assert_eq!(h, "hit-exact");
        exact.push(ms);
    }
    line("end to end: exact hit (HTTP, sequential)", &exact);
    let paraphrases = [
        "What are the steps to reset my password?",
        "How can I reset my password?",
        "How should I reset my password?",
    ];
    let mut semantic = Vec::new();
    for i in 0..300 {
        let (ms, h) = send(ask(paraphrases[i % paraphrases.len()])).await;
        assert_eq!(h, "hit-semantic");
        semantic.push(ms);
    }
    line("end to end: semantic hit (HTTP, sequential)", &semantic);
    // Conversations by meaning (the default): the earlier turns differ by small talk, so the
    // conversation verifier reads both conversations whole.
    let turns = |t: &[&str]| {
        let messages: Vec<Value> = t
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": c}))
            .collect();
        json!({"model": "fake/gpt-4o-mini", "messages": messages})
    };
    let question = "Is it worth buying an extended warranty?";
    let (_, h) = send(turns(&[
        "Just browsing, really.",
        "Happy to help.",
        question,
    ]))
    .await;
    assert_eq!(h, "miss");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let variants = [
        ask(question),
        turns(&["Hi there!", "Hello! How can I help?", question]),
        turns(&["Thanks for the help earlier.", "You're welcome!", question]),
    ];
    let mut conversation = Vec::new();
    for i in 0..300 {
        let (ms, h) = send(variants[i % variants.len()].clone()).await;
        assert_eq!(h, "hit-semantic", "{}", variants[i % variants.len()]);
        conversation.push(ms);
    }
    line("end to end: conversation hit by meaning", &conversation);
    let mut miss = Vec::new();
    for i in 0..200 {
        let (ms, h) = send(ask(&format!(
            "Unrelated question number {i} about gardening"
        )))
        .await;
        assert_eq!(h, "miss");
        miss.push(ms);
    }
    line("end to end: miss (embed + search + upstream)", &miss);
    server.shutdown().await.unwrap();
}

async fn embedder() {
    let mut model = Model::load(MODEL.as_ref(), RUNTIME.as_ref()).unwrap();
    let mut single = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        model
            .embed_batch(&[&format!("How do I reset the password of account {i}?")])
            .unwrap();
        single.push(t.elapsed().as_secs_f64() * 1e3);
    }
    line("embedder: one ~12-token text per call", &single);
    let e = Arc::new(OnnxEmbedder::start(model).unwrap());
    for conc in [1usize, 4, 16, 64] {
        let before = e.batch_stats();
        let n = 512;
        let t = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..conc {
            let e = e.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..n).step_by(conc) {
                    e.embed(format!(
                        "Question {i}: how do I reset the password of my account?"
                    ))
                    .await
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        let after = e.batch_stats();
        let batches = after.batches - before.batches;
        println!(
            "embedder: {conc:>2} concurrent callers          {:>7.0} texts/s  mean batch {:.1}",
            n as f64 / secs,
            (after.texts - before.texts) as f64 / batches as f64
        );
    }
}

fn unit(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..384)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= n);
    v
}

fn entry(i: u64) -> Entry {
    let id = uuid::Uuid::from_u64_pair(1, i);
    Entry {
        id,
        schema: 1,
        exact: format!("{i:064x}"),
        partition: "bench".into(),
        model: "fake/gpt-4o-mini".into(),
        provider: "fake".into(),
        served_model: "gpt-4o-mini".into(),
        prompt: format!("prompt {i}"),
        context: String::new(),
        response: std::fs::read_to_string("tests/fixtures/openai/chat.json").unwrap(),
        prompt_tokens: 19,
        completion_tokens: 10,
        created: 0,
        expires: u64::MAX / 2,
        last_used: i,
        hits: 0,
    }
}

/// Latencies, and recall: how often the stored source of a perturbed query came back first.
async fn search_latency(idx: &EdgeIndex, n: u64) -> (Vec<f64>, f64) {
    let mut out = Vec::new();
    let mut found = 0;
    for q in 0..300u64 {
        // A stored vector, slightly perturbed: one true neighbour above the threshold.
        let src = q * 7919 % n;
        let mut v = unit(src);
        v[0] += 0.05;
        let t = Instant::now();
        let hits = idx.search(v, "bench", 1, 0.8, 5).await.unwrap();
        out.push(t.elapsed().as_secs_f64() * 1e3);
        if hits
            .first()
            .is_some_and(|h| h.entry.id == uuid::Uuid::from_u64_pair(1, src))
        {
            found += 1;
        }
    }
    (out, f64::from(found) / 300.0)
}

async fn store(total: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (idx, _) = EdgeIndex::open(&dir.path().join("edge"), 384).unwrap();
    let mut at = 0u64;
    for target in [1_000u64, total] {
        let t = Instant::now();
        while at < target {
            idx.upsert(entry(at), Some(unit(at))).await.unwrap();
            at += 1;
        }
        let fill = t.elapsed();
        let t = Instant::now();
        idx.maintain().await.unwrap();
        println!(
            "store: {target} entries (insert {:.1} s, index build {:.1} s)",
            fill.as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
        let (lat, recall) = search_latency(&idx, target).await;
        line(&format!("store: search at {target} entries"), &lat);
        println!(
            "store: recall@1 at {target} entries: {:.1}%",
            recall * 100.0
        );
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let entries = args
        .iter()
        .position(|a| a == "--entries")
        .and_then(|i| args.get(i + 1))
        .map_or(100_000, |v| v.parse().unwrap());
    let _ = rustls::crypto::ring::default_provider().install_default();
    end_to_end().await;
    embedder().await;
    store(entries).await;
}
