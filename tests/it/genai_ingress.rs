//! The Gemini-shaped ingress (`/genai`): generateContent in and out in front of OpenAI-, Anthropic-
//! and Gemini-format providers, streams (SSE and the JSON array), Google-shaped errors, keys.

use serde_json::{Value, json};

use crate::conformance::FAST_ROUTER;
use crate::gateway::{Gateway, header, sse};
use crate::mock::{Mock, TEXT, fixture};

async fn setup(extra: &str, env: &dyn Fn(&str) -> Option<String>) -> (Mock, Gateway) {
    let mock = Mock::start().await;
    let cfg = format!(
        "[[providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{0}/v1\"\nkeys = [\"ko\"]\n\n[[providers]]\nname = \"anthropic\"\nkind = \"anthropic\"\nbase_url = \"{0}\"\nkeys = [\"ka\"]\n\n[[providers]]\nname = \"gemini\"\nkind = \"gemini\"\nbase_url = \"{0}\"\nkeys = [\"kg\"]\n{FAST_ROUTER}{extra}",
        mock.url()
    );
    (mock.clone(), Gateway::start_env(&cfg, env).await)
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn text_of(v: &Value) -> String {
    v["candidates"][0]["content"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["text"].as_str())
        .collect()
}

fn hello() -> Value {
    json!({"systemInstruction": {"parts": [{"text": "Be kind"}]},
           "contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
           "generationConfig": {"maxOutputTokens": 100, "temperature": 0.5}})
}

#[tokio::test]
async fn generate_content_through_every_provider_format() {
    let (mock, gw) = setup("", &no_env).await;
    for model in [
        "openai/gpt-4o-mini",
        "anthropic/claude-sonnet-4-5",
        "gemini/gemini-2.5-flash",
    ] {
        for version in ["v1beta", "v1"] {
            let r = gw
                .post(
                    &format!("/genai/{version}/models/{model}:generateContent"),
                    &hello(),
                )
                .await;
            assert_eq!(r.status(), 200, "{model}");
            assert_eq!(
                header(r.headers(), "x-switchyard-provider"),
                model.split('/').next().unwrap()
            );
            let v: Value = r.json().await.unwrap();
            assert_eq!(text_of(&v), TEXT, "{model}: {v}");
            assert_eq!(v["candidates"][0]["finishReason"], "STOP");
            assert_eq!(v["usageMetadata"]["promptTokenCount"], 19);
            assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 10);
        }
        let sent = mock.last();
        match model.split('/').next().unwrap() {
            "openai" => {
                assert_eq!(
                    sent.body["messages"][0],
                    json!({"role": "system", "content": "Be kind"})
                );
                assert_eq!(sent.body["max_completion_tokens"], 100);
                assert_eq!(sent.body["temperature"], 0.5);
            }
            "anthropic" => assert_eq!(sent.body["system"], "Be kind"),
            _ => {
                assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:generateContent");
                assert_eq!(
                    sent.body["systemInstruction"],
                    json!({"parts": [{"text": "Be kind"}]})
                );
                assert_eq!(sent.body["generationConfig"]["maxOutputTokens"], 100);
            }
        }
    }
}

#[tokio::test]
async fn streams_as_sse_or_as_one_json_array() {
    let (_mock, gw) = setup("", &no_env).await;
    for model in ["openai/gpt-4o-mini", "gemini/gemini-2.5-flash"] {
        let r = gw
            .post(
                &format!("/genai/v1beta/models/{model}:streamGenerateContent?alt=sse"),
                &hello(),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert!(header(r.headers(), "content-type").starts_with("text/event-stream"));
        let events: Vec<Value> = sse(r)
            .await
            .iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect();
        let text: String = events.iter().map(text_of).collect();
        assert_eq!(text, TEXT, "{model}");
        let last = events.last().unwrap();
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 10, "{last}");

        let r = gw
            .post(
                &format!("/genai/v1beta/models/{model}:streamGenerateContent"),
                &hello(),
            )
            .await;
        assert_eq!(r.status(), 200);
        let arr: Value = r.json().await.unwrap();
        let text: String = arr.as_array().unwrap().iter().map(text_of).collect();
        assert_eq!(text, TEXT);
    }
}

#[tokio::test]
async fn a_gemini_round_trip_keeps_the_thought_signature() {
    let (mock, gw) = setup("", &no_env).await;
    let tools = json!([{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}}}]}]);
    let ask = json!({"role": "user", "parts": [{"text": "Weather in Paris and London?"}]});
    let v: Value = gw
        .post(
            "/genai/v1beta/models/gemini/gemini-2.5-flash:generateContent",
            &json!({"contents": [ask], "tools": tools}),
        )
        .await
        .json()
        .await
        .unwrap();
    let recorded: Value = serde_json::from_str(&fixture("gemini/generate_tools.json")).unwrap();
    let signature = &recorded["candidates"][0]["content"]["parts"][0]["thoughtSignature"];
    let model_turn = v["candidates"][0]["content"].clone();
    assert_eq!(
        model_turn["parts"][0]["thoughtSignature"], *signature,
        "{v}"
    );
    assert_eq!(
        model_turn["parts"][1]["functionCall"]["args"],
        json!({"city": "London"})
    );
    // The client sends the model's turn back as it came, then the function responses.
    let results = json!({"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"t": 18}}},
        {"functionResponse": {"name": "get_weather", "response": {"t": 12}}}
    ]});
    let r = gw
        .post(
            "/genai/v1beta/models/gemini/gemini-2.5-flash:generateContent",
            &json!({"contents": [ask, model_turn, results], "tools": tools}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let sent = mock.last().body;
    let turns = sent["contents"].as_array().unwrap();
    assert_eq!(turns.len(), 3, "{sent}");
    assert_eq!(turns[1]["parts"][0]["thoughtSignature"], *signature);
    assert_eq!(
        turns[1]["parts"][0]["functionCall"],
        json!({"name": "get_weather", "args": {"city": "Paris"}})
    );
    assert_eq!(
        turns[2]["parts"][1]["functionResponse"],
        json!({"name": "get_weather", "response": {"t": 12}})
    );
}

#[tokio::test]
async fn errors_are_google_shaped() {
    let (mock, gw) = setup("", &no_env).await;
    let r = gw
        .post("/genai/v1beta/models/nope:generateContent", &hello())
        .await;
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], 404);
    assert_eq!(e["error"]["status"], "NOT_FOUND");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown model"),
        "{e}"
    );
    assert_eq!(
        e["error"]["details"][0]["@type"],
        "type.googleapis.com/google.rpc.ErrorInfo"
    );

    for (path, body, status, name) in [
        (
            "/genai/v1beta/models/openai/gpt-4o-mini:countTokens",
            hello(),
            404,
            "NOT_FOUND",
        ),
        (
            "/genai/v1beta/models/openai/gpt-4o-mini:generateContent",
            json!({"contents": "x"}),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "/genai/v1beta/models/openai/gpt-4o-mini:generateContent",
            json!({"contents": []}),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "/genai/v1beta/models/openai/gpt-4o-mini:generateContent",
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "tools": [{"codeExecution": {}}]}),
            400,
            "INVALID_ARGUMENT",
        ),
    ] {
        let r = gw.post(path, &body).await;
        assert_eq!(r.status(), status, "{path} {body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["status"], name, "{e}");
        assert_eq!(e["error"]["code"], status);
    }
    // A wrong method on the path: Google-shaped too.
    let r = gw
        .http
        .get(gw.url("/genai/v1beta/models/openai/gpt-4o-mini:generateContent"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], 405, "{e}");
    assert_eq!(mock.calls(), 0, "bad requests never reach the upstream");
}

const KEY: &str = "sk-sy-genai-key-0123456789abcdef";

#[tokio::test]
async fn virtual_keys_travel_in_x_goog_api_key() {
    let env = |k: &str| (k == "GENAI_KEY").then(|| KEY.to_owned());
    let (_mock, gw) = setup(
        "[governance]\nrequire_virtual_key = true\n\n[[governance.keys]]\nid = \"g\"\nvalue = \"env.GENAI_KEY\"\n",
        &env,
    )
    .await;
    let url = gw.url("/genai/v1beta/models/openai/gpt-4o-mini:generateContent");
    let r = gw
        .http
        .post(&url)
        .header("x-goog-api-key", KEY)
        .json(&hello())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = gw
        .http
        .post(&url)
        .header("x-goog-api-key", "sk-sy-wrong")
        .json(&hello())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(e["error"]["details"][0]["reason"], "invalid_api_key");
}
