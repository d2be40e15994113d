//! Cost of the request log per record: N records through `RequestLog::record` (queue, writer
//! thread, sled), timed until all are stored; CPU time of the process over wall time.
//!
//!   cargo run --release --example requestlog_bench -- [records=100000]
//!
//! With `PG_URL` set, the records go to that Postgres instead (the fleet's shared log).

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::config::LogsConfig;
use switchyard::store::Store;
use switchyard::telemetry::metrics::Metrics;
use switchyard::telemetry::requestlog::{LogRecord, RequestLog};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    let (store, _) = Store::open(&dir.path().join("store"))?;
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let config = LogsConfig {
        queue: 1 << 20,
        ..LogsConfig::default()
    };
    let shared = match std::env::var("PG_URL") {
        Ok(url) => Some(Arc::new(
            switchyard::store::postgres::Postgres::connect(&url).await?,
        )),
        Err(_) => None,
    };
    let log = RequestLog::start(
        config,
        Some(store),
        shared,
        Arc::new(Metrics::new()),
        &tasks,
        &shutdown,
    );
    let template = LogRecord {
        at_ms: switchyard::chat::unix_now_ms(),
        endpoint: "chat".into(),
        model: "bench/gpt-4o-mini".into(),
        provider: "bench".into(),
        served_model: "gpt-4o-mini".into(),
        attempts: 1,
        status: 200,
        latency_ms: 0.8,
        upstream_ms: 0.3,
        input_tokens: 19,
        output_tokens: 10,
        cost_usd: 0.000_008_85,
        cache: Some("miss".into()),
        ..LogRecord::default()
    };
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    for i in 0..n {
        let mut r = template.clone();
        r.request_id = format!("{i:08x}-5c3a-4e0b-9a55-2f1d3c4b5a69");
        log.record(r);
    }
    let queued = t0.elapsed();
    while log.len() < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = t0.elapsed();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "{n} records: queued in {:.1} ms ({:.2} us each), stored in {:.1} ms; process CPU {:.1} ms = {:.1} us per record",
        queued.as_secs_f64() * 1e3,
        queued.as_secs_f64() * 1e6 / n as f64,
        wall.as_secs_f64() * 1e3,
        cpu * 1e3,
        cpu * 1e6 / n as f64
    );
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}
