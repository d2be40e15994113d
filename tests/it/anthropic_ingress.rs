//! The Anthropic ingress: Messages in and out, in front of OpenAI- and Anthropic-format providers.

use serde_json::{Value, json};

use crate::conformance::FAST_ROUTER;
use crate::gateway::{Gateway, header, sse};
use crate::mock::{Mock, Reply, TEXT};

async fn setup() -> (Mock, Gateway) {
    let mock = Mock::start().await;
    let cfg = format!(
        "[[providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{0}/v1\"\nkeys = [\"ko\"]\n\n[[providers]]\nname = \"anthropic\"\nkind = \"anthropic\"\nbase_url = \"{0}\"\nkeys = [\"ka\"]\n{FAST_ROUTER}",
        mock.url()
    );
    (mock.clone(), Gateway::start(&cfg).await)
}

fn weather(model: &str) -> Value {
    json!({
        "model": model,
        "max_tokens": 256,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Weather in Paris and London?"}],
        "tools": [{"name": "get_weather", "description": "Current weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    })
}

#[tokio::test]
async fn plain_message_through_openai_provider() {
    let (mock, gw) = setup().await;
    let body = json!({"model": "openai/gpt-4o-mini", "max_tokens": 100, "messages": [{"role": "user", "content": "Hello"}]});
    let r = gw.post("/anthropic/v1/messages", &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "x-switchyard-provider"), "openai");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["content"], json!([{"type": "text", "text": TEXT}]));
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 19);
    assert_eq!(v["usage"]["output_tokens"], 10);
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    let sent = mock.last().body;
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "Hello"}])
    );
}

#[tokio::test]
async fn tools_round_trip_through_openai_provider() {
    let (mock, gw) = setup().await;
    let v: Value = gw
        .post("/anthropic/v1/messages", &weather("openai/gpt-4o-mini"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["stop_reason"], "tool_use");
    let uses: Vec<&Value> = v["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .collect();
    assert_eq!(uses.len(), 2);
    assert_eq!(uses[0]["name"], "get_weather");
    assert_eq!(uses[0]["input"], json!({"city": "Paris"}));
    assert_eq!(uses[1]["id"], "call_def456");
    let sent = mock.last().body;
    assert_eq!(sent["tools"][0]["type"], "function");
    assert_eq!(
        sent["tools"][0]["function"]["parameters"]["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "You are terse."})
    );

    // The client answers with tool_result blocks; the OpenAI upstream must get tool messages.
    let mut next = weather("openai/gpt-4o-mini");
    let turns = next["messages"].as_array_mut().unwrap();
    turns.push(json!({"role": "assistant", "content": v["content"]}));
    turns.push(json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_abc123", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "call_def456", "content": [{"type": "text", "text": "12C"}]}
    ]}));
    assert_eq!(gw.post("/anthropic/v1/messages", &next).await.status(), 200);
    let sent = mock.last().body;
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(
        msgs[2]["tool_calls"][1]["function"]["arguments"],
        "{\"city\":\"London\"}"
    );
    assert_eq!(
        msgs[3],
        json!({"role": "tool", "tool_call_id": "call_abc123", "content": "18C"})
    );
    assert_eq!(
        msgs[4],
        json!({"role": "tool", "tool_call_id": "call_def456", "content": "12C"})
    );
}

#[tokio::test]
async fn streamed_tools_through_openai_provider_are_anthropic_events() {
    let (mock, gw) = setup().await;
    let mut body = weather("openai/gpt-4o-mini");
    body["stream"] = json!(true);
    let r = gw.post("/anthropic/v1/messages", &body).await;
    assert_eq!(r.status(), 200);
    let events = sse(r).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let data: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(data[1]["content_block"]["name"], "get_weather");
    assert_eq!(data[1]["content_block"]["id"], "call_abc123");
    let args = format!(
        "{}{}",
        data[2]["delta"]["partial_json"].as_str().unwrap(),
        data[3]["delta"]["partial_json"].as_str().unwrap()
    );
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(data[5]["index"], 1);
    assert_eq!(data[8]["delta"]["stop_reason"], "tool_use");
    assert_eq!(data[8]["usage"]["output_tokens"], 46);
    // The gateway asked the upstream for usage so message_delta can carry it.
    assert_eq!(mock.last().body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn streamed_text_through_anthropic_provider() {
    let (_mock, gw) = setup().await;
    let body = json!({"model": "anthropic/claude-sonnet-4-5", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "Hello"}]});
    let events = sse(gw.post("/anthropic/v1/messages", &body).await).await;
    let mut text = String::new();
    for e in &events {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        if v["type"] == "content_block_delta" {
            text.push_str(v["delta"]["text"].as_str().unwrap());
        }
    }
    assert_eq!(text, TEXT);
    let delta: Value = serde_json::from_str(&events[events.len() - 2].data).unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 10);
    assert_eq!(delta["usage"]["input_tokens"], 19);
}

#[tokio::test]
async fn anthropic_to_anthropic_keeps_tool_use_ids() {
    let (mock, gw) = setup().await;
    let v: Value = gw
        .post(
            "/anthropic/v1/messages",
            &weather("anthropic/claude-sonnet-4-5"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["content"][0],
        json!({"type": "text", "text": "I'll check the weather in both cities."})
    );
    assert_eq!(v["content"][1]["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(v["content"][2]["input"], json!({"city": "London"}));
    let sent = mock.last().body;
    assert_eq!(sent["system"], "You are terse.");
    assert_eq!(sent["tools"][0]["name"], "get_weather");
}

#[tokio::test]
async fn errors_are_readable_by_both_sdks() {
    let (mock, gw) = setup().await;
    let r = gw
        .post(
            "/anthropic/v1/messages",
            &json!({"model": "openai/x", "messages": []}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens"),
        "{v}"
    );
    mock.always(Reply::Status(500, None));
    let r = gw.post("/anthropic/v1/messages", &json!({"model": "openai/x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "upstream_error");
}

#[tokio::test]
async fn midstream_failure_is_an_anthropic_error_event() {
    let (mock, gw) = setup().await;
    mock.always(Reply::Cut(3));
    let body = json!({"model": "openai/x", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "Hello"}]});
    let events = sse(gw.post("/anthropic/v1/messages", &body).await).await;
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    let v: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(v["type"], "error");
}
