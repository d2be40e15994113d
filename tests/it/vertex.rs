//! Vertex AI specifics beyond the conformance suite: the service-account token exchange (a JWT
//! the mock verifies with the key's public half), token caching and refresh, refused grants,
//! and key validation in `check`.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::conformance::FAST_ROUTER;
use crate::gateway::Gateway;
use crate::mock::{Mock, TEXT, fixture};

/// The test service account's key with its `token_uri` at `mock`, written once per mock (and
/// optionally altered by `edit`).
pub fn key_file_with(mock: &Mock, tag: &str, edit: impl Fn(&mut Value)) -> PathBuf {
    let mut key: Value = serde_json::from_str(&fixture("vertex/service-account.json")).unwrap();
    key["token_uri"] = json!(format!("{}/token", mock.url()));
    edit(&mut key);
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("vertex-key-{}-{tag}.json", mock.addr.port()));
    std::fs::write(&path, key.to_string()).unwrap();
    path
}

/// The test service account's key, pointing at `mock` for tokens.
pub fn key_file(mock: &Mock) -> PathBuf {
    key_file_with(mock, "ok", |_| {})
}

fn config(mock: &Mock, key: &std::path::Path) -> String {
    format!(
        "[[providers]]\nname = \"v\"\nkind = \"vertex\"\nbase_url = \"{}\"\nlocation = \"europe-west4\"\ncredentials = {:?}\n{FAST_ROUTER}",
        mock.url(),
        key
    )
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello"}]})
}

#[tokio::test]
async fn one_token_serves_many_requests_and_is_renewed_before_it_expires() {
    let mock = Mock::start().await;
    let gw = Gateway::start(&config(&mock, &key_file(&mock))).await;
    for model in [
        "v/gemini-2.5-flash",
        "v/claude-sonnet-4-5",
        "v/gemini-2.5-flash",
    ] {
        let (status, _, body) = gw.chat(&hello(model)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], TEXT);
    }
    assert_eq!(mock.token_calls(), 1, "the token is cached");
    let seen = mock.last();
    assert_eq!(seen.key().as_deref(), Some("ya29.mock-token-1"));
    // The project comes from the key when the config names none; the location from the config.
    assert_eq!(
        seen.path,
        "/v1/projects/switchyard-test/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent"
    );

    // Tokens that live less than the refresh margin are renewed on every request.
    let mock = Mock::start().await;
    mock.token_lifetime(60);
    let gw = Gateway::start(&config(&mock, &key_file(&mock))).await;
    for _ in 0..3 {
        let (status, _, _) = gw.chat(&hello("v/gemini-2.5-flash")).await;
        assert_eq!(status, 200);
    }
    assert_eq!(mock.token_calls(), 3);
    assert_eq!(mock.last().key().as_deref(), Some("ya29.mock-token-3"));
}

#[tokio::test]
async fn a_token_lifetime_no_clock_holds_is_cut_not_a_crash() {
    // `expires_in` = u64::MAX seconds from the token endpoint: the gateway still answers, and
    // caches the token (for a day at most).
    let mock = Mock::start().await;
    mock.token_lifetime(u64::MAX);
    let gw = Gateway::start(&config(&mock, &key_file(&mock))).await;
    for _ in 0..2 {
        let (status, _, body) = gw.chat(&hello("v/gemini-2.5-flash")).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(mock.token_calls(), 1);
}

#[tokio::test]
async fn a_token_endpoint_that_never_ends_its_answer_is_a_prompt_error() {
    let mock = Mock::start().await;
    mock.token_endless();
    let gw = Gateway::start(&config(&mock, &key_file(&mock))).await;
    let t = std::time::Instant::now();
    let (status, _, body) = gw.chat(&hello("v/gemini-2.5-flash")).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("access_token")),
        "{body}"
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn concurrent_requests_share_one_token_exchange() {
    let mock = Mock::start().await;
    let gw = Gateway::start(&config(&mock, &key_file(&mock))).await;
    let body = hello("v/gemini-2.5-flash");
    let requests = (0..8).map(|_| gw.chat(&body));
    for (status, _, _) in futures_util::future::join_all(requests).await {
        assert_eq!(status, 200);
    }
    assert_eq!(mock.token_calls(), 1);
}

#[tokio::test]
async fn a_refused_grant_is_a_clear_401_and_never_reaches_the_model() {
    let mock = Mock::start().await;
    let key = key_file_with(&mock, "stranger", |k| {
        k["client_email"] = json!("stranger@elsewhere.iam.gserviceaccount.com");
    });
    let gw = Gateway::start(&config(&mock, &key)).await;
    let (status, _, body) = gw.chat(&hello("v/gemini-2.5-flash")).await;
    assert_eq!(status, 502, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("token exchange") && msg.contains("bad claims"),
        "{msg}"
    );
    assert_eq!(mock.calls(), 0, "no model call without a token");
}

#[tokio::test]
async fn check_reports_a_missing_or_broken_key_with_its_path() {
    let mock = Mock::start().await;
    let not_sa = key_file_with(&mock, "user", |k| k["type"] = json!("authorized_user"));
    let bad_pem = key_file_with(&mock, "pem", |k| {
        k["private_key"] = json!("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    });
    for (cred, needle) in [
        (
            "/nonexistent/key.json".to_owned(),
            "cannot read the key file",
        ),
        (not_sa.display().to_string(), "not a service-account key"),
        (
            bad_pem.display().to_string(),
            "not a PEM PKCS#8 RSA private key",
        ),
        ("{not json".to_owned(), "not JSON"),
    ] {
        let toml = format!(
            "[[providers]]\nname = \"v\"\nkind = \"vertex\"\nproject = \"p\"\ncredentials = {cred:?}\n"
        );
        let issues = switchyard::config::Config::parse(&toml, &|_| None).unwrap_err();
        let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(
            text[0].starts_with("providers[0].credentials") && text[0].contains(needle),
            "{needle}: {text:?}"
        );
    }
}
