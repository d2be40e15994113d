//! OpenTelemetry traces end to end: the real binary exports over OTLP/gRPC to an in-process
//! collector (the server stubs opentelemetry-proto ships); the test checks the span tree of a
//! request that continues the caller's `traceparent`, looks the cache up, calls the model twice
//! and runs an MCP tool in between.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Value, json};

use crate::gateway::{Binary, client, header};
use crate::mcp::server_bin;
use crate::model::{Conv, Model, Turn};

/// An in-process OTLP/gRPC trace collector.
#[derive(Clone, Default)]
pub struct Collector {
    /// (service name, span) as received.
    pub spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push((service.clone(), s));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts a collector on 127.0.0.1 (a free port).
pub async fn collector() -> (Collector, SocketAddr) {
    let c = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = futures_util::stream::unfold(listener, |l| async move {
        Some((l.accept().await.map(|(s, _)| s), l))
    });
    let svc = TraceServiceServer::new(c.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    (c, addr)
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            AnyValue::DoubleValue(d) => d.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn adder(c: &Conv) -> Turn {
    if c.results.is_empty() {
        Turn::call(&[("calc__add", json!({"a": 2, "b": 3}))])
    } else {
        Turn::say(format!("The sum is {}.", c.results.join(" and ")))
    }
}

#[tokio::test]
async fn a_request_is_one_trace_continuing_the_callers_with_cache_upstream_and_tool_spans() {
    let (col, addr) = collector().await;
    let model = Model::start(adder).await;
    let mut gw = Binary::start(&format!(
        "[[providers]]\nname = \"mock\"\nkind = \"openai-compatible\"\nbase_url = \"{}\"\nkeys = [\"sk-test\"]\n\n[[mcp.servers]]\nname = \"calc\"\ntransport = \"stdio\"\ncommand = \"{}\"\n\n[telemetry]\notlp_endpoint = \"http://{addr}\"\nservice_name = \"switchyard-test\"\n\n[cache]\n\n[[plugins]]\nname = \"prompt-guard\"\nkind = \"builtin\"\nconfig = {{ rules = [{{ name = \"x\", pattern = \"forbidden\" }}] }}\n",
        model.openai_url(),
        server_bin("mcp-calculator").display()
    ))
    .await;
    let http = client();
    for _ in 0..200 {
        let v: Value = http
            .get(format!("{}/api/mcp/servers", gw.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["data"][0]["status"] == "connected" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let r = http
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("traceparent", format!("00-{trace_id}-{parent}-01"))
        .json(&json!({"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "Add 2 and 3."}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = header(r.headers(), "x-request-id");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "The sum is 5.");
    // A request without traceparent starts its own trace.
    let r = http
        .post(format!("{}/v1/chat/completions", gw.url))
        .json(&json!({"model": "mock/gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A streamed request: the tool loop runs while the body streams, still inside its trace.
    let stream_trace = "0af7651916cd43dd8448eb211c80319c";
    let r = http
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("traceparent", format!("00-{stream_trace}-b7ad6b7169203331-01"))
        .json(&json!({"model": "mock/gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "Add 2 and 3 again."}]}))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(
        text.contains("x-switchyard-mcp-tool-calls=1") && text.contains("[DONE]"),
        "{text}"
    );

    // Graceful shutdown flushes the exporter.
    gw.terminate();
    assert!(gw.wait().await.success());
    let spans = col.spans.lock().unwrap().clone();
    assert!(
        spans.iter().all(|(svc, _)| svc.contains("switchyard-test")),
        "service.name"
    );
    let ours: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| hex(&s.trace_id) == trace_id)
        .collect();
    let names: Vec<&str> = ours.iter().map(|s| s.name.as_str()).collect();

    let root = ours
        .iter()
        .find(|s| s.name == "chat mock/gpt-4o-mini")
        .unwrap_or_else(|| panic!("no request span in {names:?}"));
    assert_eq!(
        hex(&root.parent_span_id),
        parent,
        "continues the caller's span"
    );
    assert_eq!(root.kind, 2, "server span");
    assert_eq!(attr(root, "gen_ai.operation.name").as_deref(), Some("chat"));
    assert_eq!(
        attr(root, "gen_ai.request.model").as_deref(),
        Some("mock/gpt-4o-mini")
    );
    assert_eq!(attr(root, "gen_ai.provider.name").as_deref(), Some("mock"));
    assert_eq!(
        attr(root, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(root, "switchyard.request_id"), Some(request_id));
    assert_eq!(
        attr(root, "switchyard.mcp.tool_calls").as_deref(),
        Some("1")
    );
    assert!(attr(root, "gen_ai.usage.input_tokens").is_some());

    let children: HashMap<&str, Vec<&&Span>> = ours
        .iter()
        .filter(|s| s.parent_span_id == root.span_id)
        .fold(HashMap::new(), |mut m, s| {
            m.entry(s.name.as_str()).or_default().push(s);
            m
        });
    // Each plugin hook call is a span of the request.
    let hook = children
        .get("plugin prompt-guard request")
        .unwrap_or_else(|| panic!("no plugin span in {names:?}"));
    assert_eq!(
        attr(hook[0], "switchyard.plugin.hook").as_deref(),
        Some("request")
    );
    let lookup = children
        .get("cache.lookup")
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(
        attr(lookup[0], "switchyard.cache.outcome").as_deref(),
        Some("miss")
    );
    let attempts = children
        .get("chat gpt-4o-mini")
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(
        attempts.len(),
        2,
        "two model calls around the tool round: {names:?}"
    );
    for a in attempts {
        assert_eq!(a.kind, 3, "client span");
        assert_eq!(attr(a, "gen_ai.provider.name").as_deref(), Some("mock"));
        assert_eq!(
            attr(a, "gen_ai.request.model").as_deref(),
            Some("gpt-4o-mini")
        );
    }
    let tool = children
        .get("execute_tool calc__add")
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(
        attr(tool[0], "gen_ai.tool.name").as_deref(),
        Some("calc__add")
    );
    assert_eq!(
        attr(tool[0], "gen_ai.operation.name").as_deref(),
        Some("execute_tool")
    );
    assert!(tool[0].start_time_unix_nano >= attempts[0].end_time_unix_nano);

    let streamed: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| hex(&s.trace_id) == stream_trace)
        .collect();
    let sroot = streamed
        .iter()
        .find(|s| hex(&s.parent_span_id) == "b7ad6b7169203331")
        .expect("streamed request span");
    let snames: Vec<(&str, bool)> = streamed
        .iter()
        .map(|s| (s.name.as_str(), s.parent_span_id == sroot.span_id))
        .collect();
    assert!(
        snames.contains(&("execute_tool calc__add", true)),
        "{snames:?}"
    );
    assert_eq!(
        snames
            .iter()
            .filter(|(n, p)| *n == "chat gpt-4o-mini" && *p)
            .count(),
        2,
        "{snames:?}"
    );
    assert!(attr(sroot, "gen_ai.usage.output_tokens").is_some());

    // The failed request is a trace of its own, with the status on it.
    let failed = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| attr(s, "http.response.status_code").as_deref() == Some("400"))
        .unwrap_or_else(|| panic!("no span for the 400"));
    assert_ne!(hex(&failed.trace_id), trace_id);
    assert!(failed.parent_span_id.is_empty());
    assert_eq!(failed.name, "chat", "rejected before the model was read");
    assert_eq!(attr(failed, "error.type").as_deref(), Some("400"));
}
