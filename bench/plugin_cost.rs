//! Cost of plugin hooks on a 2 KB request: the host's own overhead (a plugin that does nothing),
//! `prompt-guard` (three regex rules and a size limit), `pii-redact` (all detectors) and the
//! WebAssembly sample `tag-and-route` (AssemblyScript; a rule that matches and rewrites the
//! request, and one that does not), each through the host as the pipeline calls it.
//! `(cd plugins/tag-and-route && npm ci && npm run build); cargo run --release --example plugin_cost`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use switchyard::chat::ChatRequest;
use switchyard::config::plugins::{OnError, PluginConfig, PluginKind};
use switchyard::plugins::PluginHost;
use switchyard_plugin::{ConfigError, Hooks, Plugin, RequestInfo};

struct Nothing;

impl Plugin for Nothing {
    fn hooks(&self) -> Hooks {
        Hooks {
            request: true,
            ..Hooks::default()
        }
    }
}

fn nothing(_: &Value) -> Result<Box<dyn Plugin>, Vec<ConfigError>> {
    Ok(Box::new(Nothing))
}

fn host(name: &str, factory: switchyard_plugin::Factory, config: Value) -> Arc<PluginHost> {
    host_of(name, PluginKind::Builtin(factory), config)
}

/// The AssemblyScript sample, as `npm run build` leaves it.
fn wasm(config: Value) -> Arc<PluginHost> {
    use sha2::Digest;
    let path = std::path::PathBuf::from("plugins/tag-and-route/build/tag-and-route.wasm");
    let bytes = std::fs::read(&path).unwrap();
    let source = switchyard::config::plugins::WasmSource {
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        path,
        bytes: bytes.into(),
        memory: 64 << 20,
        timeout: std::time::Duration::from_millis(100),
    };
    host_of("tag-and-route", PluginKind::Wasm(source), config)
}

fn host_of(name: &str, kind: PluginKind, config: Value) -> Arc<PluginHost> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = PluginConfig {
        name: name.into(),
        kind,
        config,
        scope: Vec::new(),
        on_error: OnError::FailClosed,
        mandatory: true,
        default_on: true,
    };
    Arc::new(
        PluginHost::new(
            &[cfg],
            reqwest::Client::new(),
            Arc::new(switchyard::telemetry::metrics::Metrics::new()),
        )
        .unwrap(),
    )
}

fn main() {
    // About 2 KB of prose with some personal data in it.
    let para = "Hello, I am writing about my order from last week. My e-mail is ada.lovelace@example.com and you can call me on +44 20 7946 0958 in the afternoon. ";
    let filler = "The package arrived late and the box was damaged, so I would like to know what the options are for a refund or a replacement. ";
    let mut text = String::from(para);
    while text.len() < 2000 {
        text.push_str(filler);
    }
    let req: ChatRequest = serde_json::from_value(json!({"model": "m", "messages": [
        {"role": "system", "content": "You are a helpful support agent."},
        {"role": "user", "content": text}
    ]}))
    .unwrap();
    println!("request text: {} bytes", text.len());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let cases = [
        (
            "host + a plugin that does nothing",
            host("nothing", nothing, Value::Null),
        ),
        (
            "prompt-guard (3 rules, size limit)",
            host(
                "prompt-guard",
                switchyard_prompt_guard::create,
                json!({"max_prompt_chars": 100000, "rules": [
                    {"name": "keys", "pattern": "(?i)BEGIN (RSA|OPENSSH) PRIVATE KEY"},
                    {"name": "topics", "topics": ["nerve agent", "build a bomb", "credit card dump"]},
                    {"name": "jailbreak", "pattern": "(?i)ignore (all )?previous instructions"}
                ]}),
            ),
        ),
        (
            "pii-redact (all detectors)",
            host("pii-redact", switchyard_pii_redact::create, Value::Null),
        ),
        (
            "wasm tag-and-route, rule matches",
            wasm(json!({"rules": [{"model": "m", "contains": "refund", "to": "small"}]})),
        ),
        (
            "wasm tag-and-route, no rule matches",
            wasm(json!({"rules": [{"model": "other", "to": "small"}]})),
        ),
    ];
    let n = 20_000u32;
    for (label, h) in cases {
        let t = Instant::now();
        for _ in 0..n {
            let mut r = req.clone();
            let mut run = h
                .begin(
                    RequestInfo {
                        request_id: "r".into(),
                        model: "m".into(),
                        key: None,
                    },
                    None,
                )
                .unwrap();
            let _ = rt.block_on(run.on_request(&mut r));
            std::hint::black_box(r);
        }
        let per = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(req.clone());
        }
        let clone = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        println!(
            "{label:<40} {:>7.2} us per request (the request's clone, {clone:.2} us, subtracted)",
            per - clone
        );
    }
}
