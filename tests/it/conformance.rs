//! One conformance suite, run against every adapter: plain, stream, tools, errors, retry, fallback.

use serde_json::{Value, json};

use crate::gateway::{Gateway, fold_openai, header, sse};
use crate::mock::{Mock, Reply, TEXT, Wire};

/// How a provider kind is wired to a mock.
pub struct Kind {
    /// `kind` in the config.
    pub kind: &'static str,
    /// Appended to the mock URL to form `base_url`.
    pub base_suffix: &'static str,
    /// Extra config lines.
    pub extra: &'static str,
    /// Path prefix the upstream request must hit.
    pub path: &'static str,
    /// The wire format the upstream speaks.
    pub wire: Wire,
    /// The upstream model asked for (`p/<model>`).
    pub model: &'static str,
}

/// A `[[providers]]` block named `name` pointing at `mock`.
pub fn provider_block(name: &str, k: &Kind, mock: &Mock) -> String {
    // Bedrock signs with the AWS credentials in `extra` (keys would be Bedrock API keys);
    // Vertex AI uses a service account whose token endpoint is the mock's.
    let keys = if k.wire == Wire::Bedrock {
        String::new()
    } else if k.kind == "vertex" {
        format!("credentials = {:?}\n", crate::vertex::key_file(mock))
    } else {
        format!("keys = [\"sk-test-{name}\"]\n")
    };
    format!(
        "[[providers]]\nname = \"{name}\"\nkind = \"{}\"\nbase_url = \"{}{}\"\n{keys}max_retries = 2\n{}\n",
        k.kind,
        mock.url(),
        k.base_suffix,
        k.extra
    )
}

/// Fast retries and breakers that stay out of the way.
pub const FAST_ROUTER: &str =
    "[router]\nretry_base_ms = 5\nretry_max_ms = 20\nbreaker_failures = 100\n";

/// A gateway with provider `p` in front of one mock.
pub async fn setup(k: &Kind) -> (Mock, Gateway) {
    let mock = Mock::start().await;
    let gw = Gateway::start(&format!("{}{FAST_ROUTER}", provider_block("p", k, &mock))).await;
    (mock, gw)
}

/// A simple chat body.
pub fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello"}
    ]})
}

/// A chat body offering the get_weather tool.
pub fn weather(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "Weather in Paris and London?"}],
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }}]
    })
}

pub fn expected_calls() -> Vec<(String, Value)> {
    vec![
        ("get_weather".into(), json!({"city": "Paris"})),
        ("get_weather".into(), json!({"city": "London"})),
    ]
}

macro_rules! provider_conformance {
    ($name:ident, $kind:expr) => {
        mod $name {
            use super::*;

            const K: Kind = $kind;

            #[tokio::test]
            async fn plain() {
                let (mock, gw) = setup(&K).await;
                let (status, h, body) = gw.chat(&hello(&format!("p/{}", K.model))).await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["choices"][0]["message"]["content"], TEXT);
                assert_eq!(body["choices"][0]["finish_reason"], "stop");
                assert_eq!(body["usage"]["prompt_tokens"], 19);
                assert_eq!(body["usage"]["completion_tokens"], 10);
                assert_eq!(header(&h, "x-switchyard-provider"), "p");
                assert_eq!(header(&h, "x-switchyard-model"), K.model);
                assert_eq!(header(&h, "x-switchyard-attempts"), "1");
                assert!(!header(&h, "x-request-id").is_empty());
                let seen = mock.last();
                assert!(seen.path.starts_with(K.path), "{}", seen.path);
                match K.kind {
                    "bedrock" => {}
                    "vertex" => assert!(seen.key().unwrap().starts_with("ya29.mock-token-"), "{:?}", seen.key()),
                    _ => assert_eq!(seen.key().as_deref(), Some("sk-test-p")),
                }
                if K.wire == Wire::Bedrock {
                    assert_eq!(seen.body["system"], json!([{"text": "You are terse."}]));
                    assert_eq!(seen.body["messages"], json!([{"role": "user", "content": [{"text": "Hello"}]}]));
                    let auth = seen.headers["authorization"].to_str().unwrap().to_owned();
                    assert!(
                        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") && auth.contains("/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="),
                        "{auth}"
                    );
                    assert_eq!(auth.rsplit("Signature=").next().unwrap().len(), 64);
                    assert!(seen.headers.get("x-amz-date").is_some());
                } else if K.wire == Wire::Gemini {
                    assert_eq!(seen.body["systemInstruction"], json!({"parts": [{"text": "You are terse."}]}));
                    assert_eq!(seen.body["contents"], json!([{"role": "user", "parts": [{"text": "Hello"}]}]));
                    if K.kind == "gemini" {
                        assert!(seen.headers.get("x-goog-api-key").is_some());
                    }
                } else if K.wire == Wire::Anthropic {
                    if K.kind == "vertex" {
                        // Claude on Vertex AI: the model is in the URL, the version in the body.
                        assert!(seen.body.get("model").is_none(), "{}", seen.body);
                        assert_eq!(seen.body["anthropic_version"], "vertex-2023-10-16");
                    } else {
                        assert_eq!(seen.body["model"], K.model);
                        assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
                    }
                    assert_eq!(seen.body["system"], "You are terse.");
                    assert_eq!(seen.body["messages"][0]["role"], "user");
                    assert!(seen.body["max_tokens"].as_u64().unwrap() > 0);
                } else {
                    assert_eq!(seen.body["messages"][0]["role"], "system");
                    if K.kind != "azure" {
                        assert_eq!(seen.body["model"], K.model);
                    }
                }
            }

            #[tokio::test]
                        async fn stream() {
                let (mock, gw) = setup(&K).await;
                let mut body = hello(&format!("p/{}", K.model));
                body["stream"] = json!(true);
                body["stream_options"] = json!({"include_usage": true});
                                let r = gw.post("/v1/chat/completions", &body).await;
                assert_eq!(r.status(), 200);
                assert_eq!(header(r.headers(), "x-switchyard-provider"), "p");
                let sent = mock.last().body;
                if K.wire == Wire::Bedrock {
                    assert!(mock.last().path.ends_with("/converse-stream"), "{}", mock.last().path);
                    assert!(sent.get("stream_options").is_none(), "{sent}");
                } else if K.wire == Wire::Gemini {
                    assert!(mock.last().path.ends_with(":streamGenerateContent?alt=sse"), "{}", mock.last().path);
                    assert!(sent.get("stream_options").is_none(), "{sent}");
                } else if K.wire == Wire::Anthropic || K.kind == "mistral" {
                    // Anthropic has no stream_options; Mistral reports usage unasked and is not sent them.
                    assert!(sent.get("stream_options").is_none(), "{sent}");
                } else {
                    assert_eq!(sent["stream_options"]["include_usage"], true, "{sent}");
                }
                assert!(header(r.headers(), "content-type").starts_with("text/event-stream"));
                let events = sse(r).await;
                assert_eq!(events.last().unwrap().data, "[DONE]");
                let first: Value = serde_json::from_str(&events[0].data).unwrap();
                assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
                let (text, calls, finish, usage) = fold_openai(&events);
                assert_eq!(text, TEXT);
                assert!(calls.is_empty());
                assert_eq!(finish.as_deref(), Some("stop"));
                let usage = usage.expect("usage chunk when include_usage is set");
                assert_eq!(usage["completion_tokens"], 10);

                // Without include_usage, no usage chunk reaches the client.
                body["stream_options"] = Value::Null;
                let events = sse(gw.post("/v1/chat/completions", &body).await).await;
                let (text, _, _, usage) = fold_openai(&events);
                assert_eq!(text, TEXT);
                assert!(usage.is_none(), "{usage:?}");
            }

            #[tokio::test]
            async fn tools() {
                let (mock, gw) = setup(&K).await;
                let (status, _, body) = gw.chat(&weather(&format!("p/{}", K.model))).await;
                assert_eq!(status, 200, "{body}");
                let msg = &body["choices"][0]["message"];
                assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
                let calls: Vec<(String, Value)> = msg["tool_calls"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| {
                        assert!(!c["id"].as_str().unwrap().is_empty());
                        assert_eq!(c["type"], "function");
                        let args = serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
                        (c["function"]["name"].as_str().unwrap().to_owned(), args)
                    })
                    .collect();
                assert_eq!(calls, expected_calls());
                if K.wire == Wire::Gemini {
                    let decl = &mock.last().body["tools"][0]["functionDeclarations"][0];
                    assert_eq!(decl["name"], "get_weather");
                    assert_eq!(decl["parametersJsonSchema"]["required"][0], "city");
                }
                if K.wire == Wire::Anthropic {
                    let tool = &mock.last().body["tools"][0];
                    assert_eq!(tool["name"], "get_weather");
                    assert_eq!(tool["input_schema"]["required"][0], "city");
                }

                // Continue the conversation with the tool results.
                let mut next = weather(&format!("p/{}", K.model));
                let history = next["messages"].as_array_mut().unwrap();
                history.push(msg.clone());
                for c in msg["tool_calls"].as_array().unwrap() {
                    history.push(json!({"role": "tool", "tool_call_id": c["id"], "content": "18C, sunny"}));
                }
                let (status, _, _) = gw.chat(&next).await;
                assert_eq!(status, 200);
                let sent = mock.last().body;
                let ids: Vec<String> = msg["tool_calls"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect();
                if K.wire == Wire::Bedrock {
                    let turns = sent["messages"].as_array().unwrap();
                    assert_eq!(turns.len(), 3, "{sent}");
                    assert_eq!(turns[1]["content"][0]["toolUse"], json!({"toolUseId": ids[0].as_str(), "name": "get_weather", "input": {"city": "Paris"}}));
                    let results = turns[2]["content"].as_array().unwrap();
                    assert_eq!(results[0]["toolResult"], json!({"toolUseId": ids[0].as_str(), "content": [{"text": "18C, sunny"}]}));
                    assert_eq!(results[1]["toolResult"]["toolUseId"], ids[1].as_str());
                    assert_eq!(sent["toolConfig"]["tools"][0]["toolSpec"]["name"], "get_weather");
                } else if K.wire == Wire::Gemini {
                    // The model turn goes back with its thought signature, the results as one turn.
                    let turns = sent["contents"].as_array().unwrap();
                    assert_eq!(turns.len(), 3, "{sent}");
                    assert_eq!(turns[1]["role"], "model");
                    let recorded: Value = serde_json::from_str(&crate::mock::fixture("gemini/generate_tools.json")).unwrap();
                    assert_eq!(
                        turns[1]["parts"][0]["thoughtSignature"],
                        recorded["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
                    );
                    assert_eq!(turns[1]["parts"][1]["functionCall"], json!({"name": "get_weather", "args": {"city": "London"}}));
                    assert_eq!(turns[2]["role"], "user");
                    assert_eq!(turns[2]["parts"][0]["functionResponse"], json!({"name": "get_weather", "response": {"result": "18C, sunny"}}));
                    assert_eq!(turns[2]["parts"].as_array().unwrap().len(), 2);
                } else if K.wire == Wire::Anthropic {
                    let turns = sent["messages"].as_array().unwrap();
                    assert_eq!(turns.len(), 3, "{sent}");
                    let uses: Vec<&Value> = turns[1]["content"].as_array().unwrap().iter().filter(|b| b["type"] == "tool_use").collect();
                    assert_eq!(uses.len(), 2);
                    assert_eq!(uses[0]["input"], json!({"city": "Paris"}));
                    let results = turns[2]["content"].as_array().unwrap();
                    assert_eq!(turns[2]["role"], "user");
                    assert_eq!(results[0]["type"], "tool_result");
                    assert_eq!(results[0]["tool_use_id"], ids[0].as_str());
                    assert_eq!(results[1]["tool_use_id"], ids[1].as_str());
                    assert_eq!(results[0]["content"], "18C, sunny");
                } else {
                    let turns = sent["messages"].as_array().unwrap();
                    assert_eq!(turns.len(), 4);
                    assert_eq!(turns[2]["role"], "tool");
                    assert_eq!(turns[2]["tool_call_id"], ids[0].as_str());
                }
            }

            #[tokio::test]
            async fn tools_stream() {
                let (_mock, gw) = setup(&K).await;
                let mut body = weather(&format!("p/{}", K.model));
                body["stream"] = json!(true);
                let events = sse(gw.post("/v1/chat/completions", &body).await).await;
                let (_, calls, finish, _) = fold_openai(&events);
                assert_eq!(calls, expected_calls());
                assert_eq!(finish.as_deref(), Some("tool_calls"));
            }

            #[tokio::test]
            async fn usage_and_cost() {
                let mock = Mock::start().await;
                let cfg = format!(
                    "{}{FAST_ROUTER}[prices]\n\"{}\" = {{ input = 1.0, output = 2.0 }}\n",
                    provider_block("p", &K, &mock),
                    K.model
                );
                let gw = Gateway::start(&cfg).await;
                let (status, _, _) = gw.chat(&hello(&format!("p/{}", K.model))).await;
                assert_eq!(status, 200);
                let mut body = hello(&format!("p/{}", K.model));
                body["stream"] = json!(true);
                let _ = sse(gw.post("/v1/chat/completions", &body).await).await;
                // Records are written after the answer: wait for both.
                let mut records = Vec::new();
                for _ in 0..200 {
                    let page: Value = gw.get("/api/logs", None).await.json().await.unwrap();
                    records = page["data"].as_array().unwrap().clone();
                    if records.len() == 2 {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                assert_eq!(records.len(), 2, "{records:?}");
                for r in &records {
                    assert_eq!((r["input_tokens"].as_u64(), r["output_tokens"].as_u64()), (Some(19), Some(10)), "{r}");
                    // 19 input tokens at $1/M and 10 output tokens at $2/M.
                    let cost = r["cost_usd"].as_f64().unwrap();
                    assert!((cost - 39e-6).abs() < 1e-12, "{r}");
                }
            }

            #[tokio::test]
            async fn upstream_client_error_is_not_retried() {
                let (mock, gw) = setup(&K).await;
                mock.always(Reply::Status(400, None));
                let (status, h, body) = gw.chat(&hello(&format!("p/{}", K.model))).await;
                assert_eq!(status, 400, "{body}");
                assert!(body["error"]["message"].as_str().unwrap().contains("injected 400"), "{body}");
                assert_eq!(mock.calls(), 1);
                assert_eq!(header(&h, "x-switchyard-attempts"), "1");
            }

            #[tokio::test]
            async fn retry_then_success() {
                let (mock, gw) = setup(&K).await;
                mock.script([Reply::Status(503, None), Reply::Status(500, None)]);
                let (status, h, body) = gw.chat(&hello(&format!("p/{}", K.model))).await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(header(&h, "x-switchyard-attempts"), "3");
                assert_eq!(mock.calls(), 3);
            }

            #[tokio::test]
            async fn retries_exhausted_is_502() {
                let (mock, gw) = setup(&K).await;
                mock.always(Reply::Status(500, None));
                let (status, h, body) = gw.chat(&hello(&format!("p/{}", K.model))).await;
                assert_eq!(status, 502, "{body}");
                assert_eq!(body["error"]["type"], "upstream_error");
                assert!(body["error"]["message"].as_str().unwrap().contains("injected 500"));
                assert_eq!(header(&h, "x-switchyard-attempts"), "3");
                assert_eq!(mock.calls(), 3, "1 attempt + max_retries 2");
            }

            #[tokio::test]
            async fn fallback_to_next_target() {
                let bad = Mock::start().await;
                let good = Mock::start().await;
                bad.always(Reply::Status(503, None));
                let cfg = format!(
                    "{}{}{FAST_ROUTER}[[routes]]\nmodel = \"smart\"\ntargets = [{{ model = \"p/a\" }}]\nfallbacks = [\"q/b\"]\n",
                    provider_block("p", &K, &bad),
                    provider_block("q", &K, &good)
                );
                let gw = Gateway::start(&cfg).await;
                let (status, h, body) = gw.chat(&hello("smart")).await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(header(&h, "x-switchyard-provider"), "q");
                assert_eq!(header(&h, "x-switchyard-model"), "b");
                assert_eq!(header(&h, "x-switchyard-attempts"), "4");
                assert_eq!((bad.calls(), good.calls()), (3, 1));

                // Streams fall back too when the first target breaks before the first byte.
                bad.always(Reply::Reset);
                let mut body = hello("smart");
                body["stream"] = json!(true);
                let r = gw.post("/v1/chat/completions", &body).await;
                assert_eq!(r.status(), 200);
                assert_eq!(header(r.headers(), "x-switchyard-provider"), "q");
                let (text, _, _, _) = fold_openai(&sse(r).await);
                assert_eq!(text, TEXT);
            }
        }
    };
}

provider_conformance!(
    openai,
    Kind {
        kind: "openai",
        base_suffix: "/v1",
        extra: "",
        path: "/v1/chat/completions",
        wire: Wire::OpenAi,
        model: "test-model"
    }
);
provider_conformance!(
    anthropic,
    Kind {
        kind: "anthropic",
        base_suffix: "",
        extra: "",
        path: "/v1/messages",
        wire: Wire::Anthropic,
        model: "test-model"
    }
);
provider_conformance!(
    azure,
    Kind {
        kind: "azure",
        base_suffix: "",
        extra: "api-version = \"2024-10-21\"",
        path: "/openai/deployments/test-model/chat/completions?api-version=2024-10-21",
        wire: Wire::OpenAi,
        model: "test-model"
    }
);
provider_conformance!(
    groq,
    Kind {
        kind: "groq",
        base_suffix: "/v1",
        extra: "",
        path: "/v1/chat/completions",
        wire: Wire::OpenAi,
        model: "test-model"
    }
);
provider_conformance!(
    openai_compatible,
    Kind {
        kind: "openai-compatible",
        base_suffix: "/v1",
        extra: "",
        path: "/v1/chat/completions",
        wire: Wire::OpenAi,
        model: "test-model"
    }
);
provider_conformance!(
    mistral,
    Kind {
        kind: "mistral",
        base_suffix: "/v1",
        extra: "",
        path: "/v1/chat/completions",
        wire: Wire::OpenAi,
        model: "test-model"
    }
);
provider_conformance!(
    ollama,
    Kind {
        kind: "ollama",
        base_suffix: "/v1",
        extra: "",
        path: "/v1/chat/completions",
        wire: Wire::OpenAi,
        model: "test-model"
    }
);
provider_conformance!(
    gemini,
    Kind {
        kind: "gemini",
        base_suffix: "",
        extra: "",
        path: "/v1beta/models/test-model:",
        wire: Wire::Gemini,
        model: "test-model"
    }
);
provider_conformance!(
    gemini_openai_endpoint,
    Kind {
        kind: "gemini",
        base_suffix: "/v1beta/openai",
        extra: "",
        path: "/v1beta/openai/chat/completions",
        wire: Wire::OpenAi,
        model: "test-model"
    }
);
provider_conformance!(
    bedrock,
    Kind {
        kind: "bedrock",
        base_suffix: "",
        extra: "region = \"us-east-1\"\naws_access_key_id = \"AKIDEXAMPLE\"\naws_secret_access_key = \"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\"",
        path: "/model/test-model/converse",
        wire: Wire::Bedrock,
        model: "test-model"
    }
);
provider_conformance!(
    vertex,
    Kind {
        kind: "vertex",
        base_suffix: "",
        extra: "project = \"p1\"\nlocation = \"us-central1\"",
        path: "/v1/projects/p1/locations/us-central1/publishers/google/models/test-model:",
        wire: Wire::Gemini,
        model: "test-model"
    }
);
provider_conformance!(
    vertex_claude,
    Kind {
        kind: "vertex",
        base_suffix: "",
        extra: "project = \"p1\"\nlocation = \"us-central1\"",
        path: "/v1/projects/p1/locations/us-central1/publishers/anthropic/models/claude-test:",
        wire: Wire::Anthropic,
        model: "claude-test"
    }
);

/// An answer as OpenAI's API writes it: its own spacing and field order, usage details, and
/// fields the gateway does not model.
pub const OPENAI_ANSWER: &str = "{\n  \"id\": \"chatcmpl-raw1\",\n  \"object\": \"chat.completion\",\n  \"created\": 1741569952,\n  \"model\": \"gpt-4.1-2025-04-14\",\n  \"choices\": [\n    {\n      \"index\": 0,\n      \"message\": {\"role\": \"assistant\", \"content\": \"Hello! How can I help you today?\", \"refusal\": null, \"annotations\": []},\n      \"logprobs\": null,\n      \"finish_reason\": \"stop\"\n    }\n  ],\n  \"usage\": {\"prompt_tokens\": 19, \"completion_tokens\": 10, \"total_tokens\": 29, \"prompt_tokens_details\": {\"cached_tokens\": 0, \"audio_tokens\": 0}, \"completion_tokens_details\": {\"reasoning_tokens\": 0}},\n  \"service_tier\": \"default\",\n  \"system_fingerprint\": \"fp_50cad350e4\"\n}\n";

/// An upstream answering every chat completion with `body` as it is; its base URL (`.../v1`).
pub async fn fixed_answer(body: &'static str) -> String {
    fixed_upstream("application/json", body.to_owned()).await
}

/// An upstream answering every chat completion with `body` of content type `kind`; its base URL.
async fn fixed_upstream(kind: &'static str, body: String) -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(
            move || async move { ([(axum::http::header::CONTENT_TYPE, kind)], body) },
        ),
    );
    format!("http://{}/v1", crate::mock::serve(app).await)
}

/// Sends a chat request; (status, x-switchyard-cache, content type, body text).
async fn raw_chat(gw: &Gateway, body: &Value) -> (u16, String, String, String) {
    let r = gw.post("/v1/chat/completions", body).await;
    let status = r.status().as_u16();
    let cache = header(r.headers(), "x-switchyard-cache");
    let kind = header(r.headers(), "content-type");
    (status, cache, kind, r.text().await.unwrap_or_default())
}

/// OpenAI's own API answers in OpenAI's shape, so its answer goes to the client as it came
/// (stored by the cache as it came too); an OpenAI-compatible server's answer goes as the gateway
/// reads it (the same JSON, written in OpenAI's shape).
#[tokio::test]
async fn openai_answers_reach_the_client_as_they_came_and_compatible_ones_as_read() {
    let url = fixed_answer(OPENAI_ANSWER).await;
    let provider = |kind: &str| {
        format!(
            "[[providers]]\nname = \"p\"\nkind = \"{kind}\"\nbase_url = \"{url}\"\nkeys = [\"sk-test-fixed-0123456789\"]\n\n{FAST_ROUTER}"
        )
    };
    let data = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&format!(
        "[server]\ndata_dir = {:?}\n\n{}\n[cache]\nmode = \"exact\"\n",
        data.path(),
        provider("openai")
    ))
    .await;
    gw.wait_ready().await;
    let ask = hello("p/gpt-4.1");
    let (status, cache, kind, text) = raw_chat(&gw, &ask).await;
    assert_eq!((status, cache.as_str()), (200, "miss"), "{text}");
    assert_eq!(kind, "application/json");
    assert_eq!(text, OPENAI_ANSWER);
    // The entry holds the same answer; a hit is served from it (with a fresh id).
    let want: Value = serde_json::from_str(OPENAI_ANSWER).unwrap();
    let mut hit = None;
    for _ in 0..250 {
        let (status, cache, _, text) = raw_chat(&gw, &ask).await;
        assert_eq!(status, 200, "{text}");
        if cache == "hit-exact" {
            hit = Some(serde_json::from_str::<Value>(&text).unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let hit = hit.unwrap_or_else(|| panic!("the answer was never stored"));
    assert_eq!(hit["choices"], want["choices"], "{hit}");
    assert_eq!(hit["usage"], want["usage"], "{hit}");
    assert_eq!(
        hit["system_fingerprint"], want["system_fingerprint"],
        "{hit}"
    );

    let gw = Gateway::start(&provider("openai-compatible")).await;
    let (status, _, kind, text) = raw_chat(&gw, &ask).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(kind, "application/json");
    assert_ne!(text, OPENAI_ANSWER, "written by the gateway, not passed on");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), want);
}

/// An answer from OpenAI's own API that is not a chat completion is the upstream's failure (502,
/// its reason named, nothing cached), whether it is read for the OpenAI client (as its bytes) or
/// decoded for another ingress; the same answer well formed is served through both.
#[tokio::test]
async fn a_malformed_openai_answer_is_a_502_through_every_ingress() {
    const BAD: [&str; 4] = [
        "not json",
        "{\"choices\": 1}",
        "{\"choices\": [{\"message\": {\"role\": \"robot\", \"content\": \"x\"}}]}",
        "{\"choices\": [], \"usage\": {\"prompt_tokens\": \"many\"}} trailing",
    ];
    for body in BAD {
        let url = fixed_answer(body).await;
        let gw = Gateway::start(&format!(
            "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"{url}\"\nkeys = [\"sk-test-fixed-0123456789\"]\n\n{FAST_ROUTER}[cache]\nmode = \"exact\"\n"
        ))
        .await;
        let (status, cache, _, text) = raw_chat(&gw, &hello("p/gpt-4.1")).await;
        assert_eq!(status, 502, "{body}: {text}");
        assert_ne!(cache, "hit-exact");
        let err: Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(err["error"]["type"], "upstream_error", "{body}: {text}");
        let anthropic = gw
            .post(
                "/anthropic/v1/messages",
                &json!({"model": "p/gpt-4.1", "max_tokens": 20, "messages": [{"role": "user", "content": "Hello"}]}),
            )
            .await;
        assert_eq!(anthropic.status().as_u16(), 502, "{body}");
        // Asked again: still refused, not served from the cache.
        let (status, _, _, text) = raw_chat(&gw, &hello("p/gpt-4.1")).await;
        assert_eq!(status, 502, "{body}: {text}");
    }
    let url = fixed_answer(OPENAI_ANSWER).await;
    let gw = Gateway::start(&format!(
        "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"{url}\"\nkeys = [\"sk-test-fixed-0123456789\"]\n\n{FAST_ROUTER}"
    ))
    .await;
    let anthropic = gw
        .post(
            "/anthropic/v1/messages",
            &json!({"model": "p/gpt-4.1", "max_tokens": 20, "messages": [{"role": "user", "content": "Hello"}]}),
        )
        .await;
    assert_eq!(anthropic.status().as_u16(), 200);
    let m: Value = anthropic.json().await.unwrap_or_default();
    assert_eq!(
        m["content"][0]["text"], "Hello! How can I help you today?",
        "{m}"
    );
    assert_eq!(m["usage"]["input_tokens"], 19, "{m}");
}

/// A stream as OpenAI's API writes it (usage asked for): every chunk with `"usage": null` last
/// but the first, where a member follows it, and members the gateway does not model.
pub const OPENAI_STREAM: [&str; 5] = [
    r#"{"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4.1","service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"x1"}"#,
    r#"{"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4.1","service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"Hel"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"{"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4.1","service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"lo"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"{"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4.1","service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
    r#"{"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4.1","service_tier":"default","system_fingerprint":"fp_1","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":2,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#,
];

/// An upstream answering every chat completion with [`OPENAI_STREAM`]; its base URL.
pub async fn fixed_stream() -> String {
    let body: String = OPENAI_STREAM
        .iter()
        .map(|d| format!("data: {d}\n\n"))
        .chain(["data: [DONE]\n\n".to_owned()])
        .collect();
    fixed_upstream("text/event-stream", body).await
}

/// The JSON of an event, without a `"usage": null` member.
fn without_null_usage(data: &str) -> Value {
    let mut v: Value = serde_json::from_str(data).unwrap();
    if v["usage"].is_null()
        && let Some(o) = v.as_object_mut()
    {
        o.remove("usage");
    }
    v
}

/// OpenAI's own chunks go to an OpenAI client as they came (without the `"usage": null` the
/// gateway's own request for usage brings, when the client did not ask for usage; a chunk where
/// that member cannot be cut out is written again); an OpenAI-compatible server's chunks go as
/// the gateway reads them (the same JSON, written in OpenAI's shape).
#[tokio::test]
async fn openai_chunks_reach_the_client_as_they_came_and_compatible_ones_as_read() {
    let url = fixed_stream().await;
    let config = |kind: &str| {
        format!(
            "[[providers]]\nname = \"p\"\nkind = \"{kind}\"\nbase_url = \"{url}\"\nkeys = [\"sk-test-fixed-0123456789\"]\n\n{FAST_ROUTER}"
        )
    };
    let data = |events: &[crate::gateway::Event]| -> Vec<String> {
        events.iter().map(|e| e.data.clone()).collect()
    };
    let mut ask = hello("p/gpt-4.1");
    ask["stream"] = json!(true);
    let gw = Gateway::start(&config("openai")).await;

    ask["stream_options"] = json!({"include_usage": true});
    let events = sse(gw.post("/v1/chat/completions", &ask).await).await;
    let mut want: Vec<String> = OPENAI_STREAM.iter().map(|s| (*s).to_owned()).collect();
    want.push("[DONE]".into());
    assert_eq!(data(&events), want);

    ask["stream_options"] = Value::Null;
    let events = sse(gw.post("/v1/chat/completions", &ask).await).await;
    let got = data(&events);
    assert_eq!(got.len(), 5, "{got:#?}");
    // The first chunk's usage is not last: written again, the same JSON without it.
    assert_ne!(got[0], OPENAI_STREAM[0]);
    assert_eq!(
        serde_json::from_str::<Value>(&got[0]).unwrap(),
        without_null_usage(OPENAI_STREAM[0])
    );
    for (got, sent) in got[1..4].iter().zip(&OPENAI_STREAM[1..4]) {
        assert_eq!(*got, sent.replace(",\"usage\":null}", "}"));
    }
    assert_eq!(got[4], "[DONE]");

    let gw = Gateway::start(&config("openai-compatible")).await;
    ask["stream_options"] = json!({"include_usage": true});
    let events = sse(gw.post("/v1/chat/completions", &ask).await).await;
    let got = data(&events);
    assert_eq!(got.len(), 6, "{got:#?}");
    for (got, sent) in got.iter().zip(&OPENAI_STREAM) {
        assert_ne!(got, sent, "written by the gateway, not passed on");
        assert_eq!(
            serde_json::from_str::<Value>(got).unwrap(),
            without_null_usage(sent)
        );
    }
}
