//! The Responses API ingress: `/v1/responses` in front of OpenAI- and Anthropic-format providers,
//! streams, stored responses and `previous_response_id`, per-key tenancy, the cache.

use serde_json::{Value, json};

use crate::conformance::FAST_ROUTER;
use crate::gateway::{Event, Gateway, header, sse};
use crate::mock::{Mock, Reply, STRUCTURED, TEXT};

fn providers(mock: &Mock) -> String {
    format!(
        "[[providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{0}/v1\"\nkeys = [\"ko\"]\n\n[[providers]]\nname = \"anthropic\"\nkind = \"anthropic\"\nbase_url = \"{0}\"\nkeys = [\"ka\"]\n{FAST_ROUTER}",
        mock.url()
    )
}

async fn setup() -> (Mock, Gateway) {
    let mock = Mock::start().await;
    let gw = Gateway::start(&providers(&mock)).await;
    (mock, gw)
}

const WEATHER_TOOL: &str = r#"{"type": "function", "name": "get_weather", "description": "Current weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}"#;

fn tool() -> Value {
    serde_json::from_str(WEATHER_TOOL).unwrap()
}

/// The text of a response object's message items.
fn output_text(v: &Value) -> String {
    v["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().unwrap().iter())
        .filter_map(|c| c["text"].as_str())
        .collect()
}

fn calls(v: &Value) -> Vec<Value> {
    v["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "function_call")
        .cloned()
        .collect()
}

#[tokio::test]
async fn text_through_both_provider_formats() {
    let (mock, gw) = setup().await;
    for model in ["openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5"] {
        let body = json!({"model": model, "input": "Hello", "instructions": "Be kind", "max_output_tokens": 100});
        let r = gw.post("/v1/responses", &body).await;
        assert_eq!(r.status(), 200, "{model}");
        assert_eq!(
            header(r.headers(), "x-switchyard-provider"),
            model.split('/').next().unwrap()
        );
        assert!(!header(r.headers(), "x-request-id").is_empty());
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["object"], "response");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["instructions"], "Be kind");
        assert_eq!(output_text(&v), TEXT, "{v}");
        assert_eq!(v["usage"]["input_tokens"], 19, "{v}");
        assert_eq!(v["usage"]["output_tokens"], 10);
        assert_eq!(v["usage"]["total_tokens"], 29);
        let sent = mock.last();
        if model.starts_with("openai") {
            assert_eq!(sent.path, "/v1/chat/completions");
            assert_eq!(
                sent.body["messages"],
                json!([{"role": "system", "content": "Be kind"}, {"role": "user", "content": "Hello"}])
            );
            assert_eq!(sent.body["max_completion_tokens"], 100);
        } else {
            assert_eq!(sent.path, "/v1/messages");
            assert_eq!(sent.body["system"], json!("Be kind"), "{}", sent.body);
            assert_eq!(sent.body["max_tokens"], 100);
        }
    }
    // The same under /openai.
    let r = gw
        .post(
            "/openai/v1/responses",
            &json!({"model": "openai/gpt-4o-mini", "input": "Hello"}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

/// The events of a streamed response, checked for order, sequence numbers and one response id.
fn check_lifecycle(events: &[Event]) -> Vec<Value> {
    let values: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    for (i, (e, v)) in events.iter().zip(&values).enumerate() {
        assert_eq!(e.event.as_deref(), v["type"].as_str(), "event name = type");
        assert_eq!(v["sequence_number"], i as u64);
    }
    let kinds: Vec<&str> = values.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(kinds[..2], ["response.created", "response.in_progress"]);
    assert_eq!(*kinds.last().unwrap(), "response.completed", "{kinds:?}");
    let id = &values[0]["response"]["id"];
    assert_eq!(&values.last().unwrap()["response"]["id"], id);
    values
}

#[tokio::test]
async fn streams_text_and_tool_calls_as_responses_events() {
    let (_mock, gw) = setup().await;
    for model in ["openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5"] {
        let r = gw
            .post(
                "/v1/responses",
                &json!({"model": model, "input": "Hello", "stream": true}),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert!(header(r.headers(), "content-type").starts_with("text/event-stream"));
        let values = check_lifecycle(&sse(r).await);
        let text: String = values
            .iter()
            .filter(|v| v["type"] == "response.output_text.delta")
            .map(|v| v["delta"].as_str().unwrap())
            .collect();
        assert_eq!(text, TEXT, "{model}");
        let done = values.last().unwrap();
        assert_eq!(output_text(&done["response"]), TEXT);
        assert_eq!(
            done["response"]["usage"]["output_tokens"], 10,
            "{model}: {done}"
        );

        let body = json!({"model": model, "input": "Weather in Paris and London?", "tools": [tool()], "stream": true});
        let values = check_lifecycle(&sse(gw.post("/v1/responses", &body).await).await);
        let done = &values.last().unwrap()["response"];
        let got: Vec<(String, Value)> = calls(done)
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    serde_json::from_str(c["arguments"].as_str().unwrap()).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("get_weather".to_owned(), json!({"city": "Paris"})),
                ("get_weather".to_owned(), json!({"city": "London"}))
            ],
            "{model}"
        );
        // Argument deltas add up to the arguments announced as done.
        for c in calls(done) {
            let streamed: String = values
                .iter()
                .filter(|v| {
                    v["type"] == "response.function_call_arguments.delta" && v["item_id"] == c["id"]
                })
                .map(|v| v["delta"].as_str().unwrap())
                .collect();
            assert_eq!(streamed, c["arguments"].as_str().unwrap());
        }
    }
}

#[tokio::test]
async fn a_tool_round_continues_with_previous_response_id() {
    let (mock, gw) = setup().await;
    for model in ["openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5"] {
        let first: Value = gw
            .post(
                "/v1/responses",
                &json!({"model": model, "input": "Weather in Paris and London?", "tools": [tool()], "instructions": "Use tools"}),
            )
            .await
            .json()
            .await
            .unwrap();
        let cs = calls(&first);
        assert_eq!(cs.len(), 2, "{first}");
        let outputs: Vec<Value> = cs
            .iter()
            .map(|c| json!({"type": "function_call_output", "call_id": c["call_id"], "output": "18C"}))
            .collect();
        let r = gw
            .post(
                "/v1/responses",
                &json!({"model": model, "previous_response_id": first["id"], "input": outputs, "tools": [tool()]}),
            )
            .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let second: Value = r.json().await.unwrap();
        assert_eq!(second["previous_response_id"], first["id"]);
        // The upstream saw the whole conversation: the question, the calls, both results, and
        // not the first turn's instructions.
        let sent = mock.last().body;
        if model.starts_with("openai") {
            let m = sent["messages"].as_array().unwrap();
            assert_eq!(m.len(), 4, "{sent}");
            assert_eq!(
                m[0],
                json!({"role": "user", "content": "Weather in Paris and London?"})
            );
            assert_eq!(m[1]["role"], "assistant");
            assert_eq!(m[1]["tool_calls"][0]["id"], cs[0]["call_id"]);
            assert_eq!(m[1]["tool_calls"][1]["function"]["name"], "get_weather");
            assert_eq!(
                m[2],
                json!({"role": "tool", "tool_call_id": cs[0]["call_id"], "content": "18C"})
            );
            assert_eq!(m[3]["tool_call_id"], cs[1]["call_id"]);
        } else {
            let m = sent["messages"].as_array().unwrap();
            assert_eq!(m.len(), 3, "{sent}");
            assert!(
                m[1]["content"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["type"] == "tool_use"),
                "{sent}"
            );
            assert_eq!(m[2]["content"][0]["type"], "tool_result");
            assert_eq!(m[2]["content"][0]["tool_use_id"], cs[0]["call_id"]);
            assert!(
                sent.get("system").is_none(),
                "instructions do not carry over: {sent}"
            );
        }
    }
}

#[tokio::test]
async fn stored_responses_are_read_deleted_and_expire_from_view() {
    let (_mock, gw) = setup().await;
    let v: Value = gw
        .post(
            "/v1/responses",
            &json!({"model": "openai/gpt-4o-mini", "input": "Hello"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = v["id"].as_str().unwrap();
    let got: Value = gw
        .get(&format!("/v1/responses/{id}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got, v);
    // A streamed response is stored too, once complete.
    let values = check_lifecycle(
        &sse(gw
            .post(
                "/v1/responses",
                &json!({"model": "openai/gpt-4o-mini", "input": "Hello", "stream": true}),
            )
            .await)
        .await,
    );
    let sid = values[0]["response"]["id"].as_str().unwrap().to_owned();
    let got: Value = gw
        .get(&format!("/v1/responses/{sid}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["status"], "completed");
    assert_eq!(output_text(&got), TEXT);
    // Continuing a streamed response works like any other.
    let r = gw
        .post(
            "/v1/responses",
            &json!({"model": "openai/gpt-4o-mini", "input": "More", "previous_response_id": sid}),
        )
        .await;
    assert_eq!(r.status(), 200);

    let items: Value = gw
        .get(&format!("/v1/responses/{id}/input_items"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(items["object"], "list");
    assert_eq!(items["data"][0]["type"], "message");
    assert_eq!(
        items["data"][0]["content"][0],
        json!({"type": "input_text", "text": "Hello"})
    );
    assert_eq!(items["has_more"], false);
    let r = gw
        .get(&format!("/v1/responses/{id}/input_items?limit=0"), None)
        .await;
    assert_eq!(r.status(), 400);
    let d: Value = gw
        .delete(&format!("/v1/responses/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(d, json!({"id": id, "object": "response", "deleted": true}));
    let r = gw.get(&format!("/v1/responses/{id}"), None).await;
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "not_found");
    assert!(e["error"]["message"].as_str().unwrap().contains(id));
    assert_eq!(
        gw.delete(&format!("/v1/responses/{id}")).await.status(),
        404
    );

    // Unknown or deleted: a 400 naming the id, as OpenAI answers it.
    for prev in [id, "resp_nope"] {
        let r = gw
            .post("/v1/responses", &json!({"model": "openai/gpt-4o-mini", "input": "Hi", "previous_response_id": prev}))
            .await;
        assert_eq!(r.status(), 400);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "previous_response_not_found");
        assert!(e["error"]["message"].as_str().unwrap().contains(prev));
    }
    // store: false keeps nothing.
    let v: Value = gw
        .post(
            "/v1/responses",
            &json!({"model": "openai/gpt-4o-mini", "input": "Hello", "store": false}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["store"], false);
    let r = gw
        .get(
            &format!("/v1/responses/{}", v["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn stored_responses_expire_after_the_ttl() {
    let mock = Mock::start().await;
    let gw = Gateway::start(&format!(
        "{}\n[responses]\nttl_seconds = 1\n",
        providers(&mock)
    ))
    .await;
    let v: Value = gw
        .post(
            "/v1/responses",
            &json!({"model": "openai/gpt-4o-mini", "input": "Hello"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = v["id"].as_str().unwrap();
    assert_eq!(
        gw.get(&format!("/v1/responses/{id}"), None).await.status(),
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        gw.get(&format!("/v1/responses/{id}"), None).await.status(),
        404
    );
    let r = gw
        .post(
            "/v1/responses",
            &json!({"model": "openai/gpt-4o-mini", "input": "Hi", "previous_response_id": id}),
        )
        .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn structured_output_and_bad_requests() {
    let (mock, gw) = setup().await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}, "temperature_c": {"type": "number"}}, "required": ["city", "temperature_c"], "additionalProperties": false});
    let v: Value = gw
        .post(
            "/v1/responses",
            &json!({"model": "openai/gpt-4o-mini", "input": "Weather in Paris as JSON",
                    "text": {"format": {"type": "json_schema", "name": "weather", "schema": schema, "strict": true}}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(output_text(&v), STRUCTURED);
    assert_eq!(v["text"]["format"]["name"], "weather");
    let sent = mock.last().body;
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert_eq!(sent["response_format"]["json_schema"]["schema"], schema);

    let calls_before = mock.calls();
    for (body, needle) in [
        (
            json!({"model": "openai/gpt-4o-mini", "input": "x", "tools": [{"type": "web_search"}]}),
            "tools[0]",
        ),
        (
            json!({"model": "openai/gpt-4o-mini", "input": "x", "background": true}),
            "background",
        ),
        (json!({"model": "openai/gpt-4o-mini", "input": 5}), "input"),
        (json!({"input": "x"}), "model"),
    ] {
        let r = gw.post("/v1/responses", &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(needle),
            "{e}"
        );
    }
    assert_eq!(
        mock.calls(),
        calls_before,
        "bad requests never reach the upstream"
    );
    // An upstream error is the OpenAI error shape and status, as for chat completions.
    mock.script([Reply::Status(400, None)]);
    let r = gw
        .post(
            "/v1/responses",
            &json!({"model": "openai/gpt-4o-mini", "input": "x"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected 400"),
        "{e}"
    );
}

const KEY_A: &str = "sk-sy-responses-key-a-0123456789";
const KEY_B: &str = "sk-sy-responses-key-b-0123456789";

#[tokio::test]
async fn stored_responses_belong_to_their_virtual_key() {
    let mock = Mock::start().await;
    let cfg = format!(
        "{}\n[governance]\nrequire_virtual_key = true\n\n[[governance.keys]]\nid = \"a\"\nvalue = \"env.KEY_A\"\nbudgets = [{{ max_usd = 1.0 }}]\n\n[[governance.keys]]\nid = \"b\"\nvalue = \"env.KEY_B\"\n",
        providers(&mock)
    );
    let env = |k: &str| match k {
        "KEY_A" => Some(KEY_A.to_owned()),
        "KEY_B" => Some(KEY_B.to_owned()),
        _ => None,
    };
    let gw = Gateway::start_env(&cfg, &env).await;
    let post = |key: &'static str, body: Value| {
        let rb = gw
            .http
            .post(gw.url("/v1/responses"))
            .bearer_auth(key)
            .json(&body);
        async move { rb.send().await.unwrap() }
    };
    let r = post(
        KEY_A,
        json!({"model": "openai/gpt-4o-mini", "input": "Hello"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(
        gw.get(&format!("/v1/responses/{id}"), Some(KEY_A))
            .await
            .status(),
        200
    );
    // Another key cannot read, continue or delete it; without a key the request is refused.
    assert_eq!(
        gw.get(&format!("/v1/responses/{id}"), Some(KEY_B))
            .await
            .status(),
        404
    );
    let r = post(
        KEY_B,
        json!({"model": "openai/gpt-4o-mini", "input": "Hi", "previous_response_id": id}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = gw
        .http
        .delete(gw.url(&format!("/v1/responses/{id}")))
        .bearer_auth(KEY_B)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        gw.get(&format!("/v1/responses/{id}"), None).await.status(),
        401
    );
    let r = post(
        KEY_A,
        json!({"model": "openai/gpt-4o-mini", "input": "Hi", "previous_response_id": id}),
    )
    .await;
    assert_eq!(r.status(), 200);
    // The answers were charged to the key's budget like chat completions, nothing left reserved.
    let k: Value = gw.get("/api/keys/a", None).await.json().await.unwrap();
    let b = &k["budgets"][0];
    assert!(b["spent_usd"].as_f64().unwrap() > 0.0, "{k}");
    assert_eq!(b["reserved_usd"].as_f64().unwrap(), 0.0, "{k}");
}

#[tokio::test]
async fn cache_hits_replay_as_responses() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\ndata_dir = {:?}\n\n{}\n[cache]\nmode = \"exact\"\n",
        dir.path(),
        providers(&mock)
    );
    let gw = Gateway::start(&cfg).await;
    gw.wait_ready().await;
    let body = json!({"model": "openai/gpt-4o-mini", "input": "What is the capital of France?"});
    let r = gw.post("/v1/responses", &body).await;
    assert_eq!(header(r.headers(), "x-switchyard-cache"), "miss");
    let first: Value = r.json().await.unwrap();
    // The entry is written after the answer; wait for it.
    let mut hit = None;
    for _ in 0..100 {
        let r = gw.post("/v1/responses", &body).await;
        if header(r.headers(), "x-switchyard-cache").starts_with("hit") {
            hit = Some(r.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let last = gw.post("/v1/responses", &body).await;
    let hit = hit.unwrap_or_else(|| {
        panic!(
            "the second request is served from the cache: {:?}",
            last.headers()
        )
    });
    assert_eq!(output_text(&hit), output_text(&first));
    assert_ne!(hit["id"], first["id"], "a hit is a new response");
    let calls = mock.calls();
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = gw.post("/v1/responses", &streamed).await;
    assert!(header(r.headers(), "x-switchyard-cache").starts_with("hit"));
    let values = check_lifecycle(&sse(r).await);
    assert_eq!(output_text(&values.last().unwrap()["response"]), TEXT);
    assert_eq!(mock.calls(), calls, "hits do not reach the upstream");
}

#[tokio::test]
async fn a_stream_cut_after_the_first_byte_ends_in_response_failed() {
    let (mock, gw) = setup().await;
    mock.script([Reply::Cut(3)]);
    let r = gw
        .post(
            "/v1/responses",
            &json!({"model": "openai/gpt-4o-mini", "input": "Hello", "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let events: Vec<Value> = sse(r)
        .await
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "response.created");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.failed", "{last}");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["id"], events[0]["response"]["id"]);
    assert!(
        !last["response"]["error"]["message"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    // A failed response is not stored.
    let id = last["response"]["id"].as_str().unwrap();
    assert_eq!(
        gw.get(&format!("/v1/responses/{id}"), None).await.status(),
        404
    );
}
