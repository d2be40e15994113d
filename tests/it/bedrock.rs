//! Bedrock specifics beyond the conformance suite: SigV4 proven against botocore's signer,
//! session tokens, Bedrock API keys, versioned model ids in the path, errors inside the event
//! stream, throttling retried, cache points kept.

use serde_json::{Value, json};

use crate::conformance::FAST_ROUTER;
use crate::gateway::{Gateway, fold_openai, header, sse};
use crate::mock::{Mock, Reply, TEXT};

const AK: &str = "AKIDEXAMPLE";
const SK: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const TOKEN: &str = "FwoGZXIvYXdzEXAMPLE//////////wEaDExampleSessionToken+/=";
const MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";

async fn gateway(mock: &Mock, auth: &str) -> Gateway {
    let cfg = format!(
        "[[providers]]\nname = \"b\"\nkind = \"bedrock\"\nbase_url = \"{}\"\nregion = \"eu-central-1\"\n{auth}\n{FAST_ROUTER}",
        mock.url()
    );
    Gateway::start(&cfg).await
}

fn signed_auth() -> String {
    format!(
        "aws_access_key_id = \"{AK}\"\naws_secret_access_key = \"{SK}\"\naws_session_token = \"{TOKEN}\""
    )
}

fn hello() -> Value {
    json!({"model": format!("b/{MODEL}"), "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello"}
    ], "max_tokens": 100})
}

#[tokio::test]
async fn the_signature_is_the_one_botocore_computes() {
    let Some(py) = crate::interop::python() else {
        return;
    };
    let mock = Mock::start().await;
    let gw = gateway(&mock, &signed_auth()).await;
    for stream in [false, true] {
        let mut body = hello();
        body["stream"] = json!(stream);
        let r = gw.post("/v1/chat/completions", &body).await;
        assert_eq!(r.status(), 200);
        let _ = r.text().await.unwrap();
        let seen = mock.last();
        // The versioned id is percent-encoded in the path, as the AWS SDKs send it.
        let action = if stream {
            "converse-stream"
        } else {
            "converse"
        };
        assert_eq!(
            seen.path,
            format!("/model/anthropic.claude-3-haiku-20240307-v1%3A0/{action}")
        );
        let h = |n: &str| {
            seen.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let request = json!({
            "url": format!("{}{}", mock.url(), seen.path),
            "body": String::from_utf8(seen.raw.to_vec()).unwrap(),
            "amz_date": h("x-amz-date").expect("x-amz-date sent"),
            "authorization": h("authorization").expect("authorization sent"),
            "security_token": h("x-amz-security-token"),
            "region": "eu-central-1",
            "service": "bedrock",
            "access_key": AK,
            "secret_key": SK,
            "token": TOKEN,
        });
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), request.to_string()).unwrap();
        let script = format!(
            "{}/tests/interop/sigv4_check.py",
            env!("CARGO_MANIFEST_DIR")
        );
        let out = tokio::process::Command::new(&py)
            .arg(&script)
            .arg(file.path())
            .output()
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("sigv4 interop: ok"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_bedrock_api_key_is_sent_as_a_bearer_token() {
    let mock = Mock::start().await;
    let gw = gateway(&mock, "keys = [\"ABSKexampleBedrockApiKey\"]").await;
    let (status, _, body) = gw.chat(&hello()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], TEXT);
    let seen = mock.last();
    assert_eq!(
        seen.headers["authorization"],
        "Bearer ABSKexampleBedrockApiKey"
    );
    assert!(seen.headers.get("x-amz-date").is_none());
}

#[tokio::test]
async fn throttling_is_retried_and_validation_is_not() {
    let mock = Mock::start().await;
    let gw = gateway(&mock, &signed_auth()).await;
    mock.script([Reply::Status(429, None)]);
    let (status, h, body) = gw.chat(&hello()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "x-switchyard-attempts"), "2");
    mock.script([Reply::Status(400, None)]);
    let (status, _, body) = gw.chat(&hello()).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected 400"),
        "{body}"
    );
}

#[tokio::test]
async fn a_stream_cut_mid_way_ends_in_an_error_and_usage_comes_from_metadata() {
    let mock = Mock::start().await;
    let gw = gateway(&mock, &signed_auth()).await;
    let mut body = hello();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = sse(gw.post("/v1/chat/completions", &body).await).await;
    let (text, _, finish, usage) = fold_openai(&events);
    assert_eq!(text, TEXT);
    assert_eq!(finish.as_deref(), Some("stop"));
    assert_eq!(usage.unwrap()["prompt_tokens"], 19);

    // Three frames, then the connection breaks: the client sees an error, not a clean end.
    mock.script([Reply::Cut(3)]);
    let events = sse(gw.post("/v1/chat/completions", &body).await).await;
    let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(last["error"]["code"], "stream_error", "{last}");
}

#[tokio::test]
async fn cache_points_reach_bedrock() {
    let mock = Mock::start().await;
    let gw = gateway(&mock, &signed_auth()).await;
    let body = json!({"model": format!("b/{MODEL}"), "messages": [
        {"role": "system", "content": [{"type": "text", "text": "A long policy.", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": [{"type": "text", "text": "Hello", "cache_control": {"type": "ephemeral"}}]}
    ]});
    let (status, _, _) = gw.chat(&body).await;
    assert_eq!(status, 200);
    let sent = mock.last().body;
    assert_eq!(
        sent["system"][1],
        json!({"cachePoint": {"type": "default"}}),
        "{sent}"
    );
    assert_eq!(
        sent["messages"][0]["content"][1],
        json!({"cachePoint": {"type": "default"}})
    );
}

#[tokio::test]
async fn embeddings_go_through_invoke_model_for_titan_and_cohere() {
    let mock = Mock::start().await;
    let gw = gateway(&mock, &signed_auth()).await;
    let r = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "b/amazon.titan-embed-text-v2:0", "input": ["one two", "three"], "dimensions": 256}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][0]["embedding"], json!([0.25, 0.5, 0.75]));
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    let seen = mock.last();
    assert_eq!(seen.path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
    assert_eq!(seen.body, json!({"inputText": "three", "dimensions": 256}));
    assert!(
        seen.headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("AWS4-HMAC-SHA256")
    );

    let v: Value = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "b/cohere.embed-english-v3", "input": ["a", "b"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][1]["embedding"], json!([0.5, 1.0]));
    assert_eq!(mock.last().body["input_type"], "search_document");
}
