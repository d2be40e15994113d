use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::{TokenSource, VertexProvider};
use crate::chat::ChatRequest;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/vertex/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn client() -> crate::providers::client::Client {
    crate::providers::client::Client::direct().unwrap()
}

#[test]
fn the_assertion_is_an_rs256_jwt_the_public_key_verifies() {
    let source = TokenSource::new(&fixture("service-account.json"), client()).unwrap();
    let jwt = source.assertion(1_800_000_000).unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(
        header,
        json!({"alg": "RS256", "typ": "JWT", "kid": "0123456789abcdef0123456789abcdef01234567"})
    );
    assert_eq!(
        claims["iss"],
        "gateway@switchyard-test.iam.gserviceaccount.com"
    );
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/cloud-platform"
    );
    assert_eq!(claims["aud"], "TOKEN_URI");
    assert_eq!(
        (claims["iat"].as_u64(), claims["exp"].as_u64()),
        (Some(1_800_000_000), Some(1_800_003_600))
    );
    let public = STANDARD
        .decode(fixture("service-account.pub.der.b64").trim())
        .unwrap();
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public,
    );
    let signed = format!("{}.{}", parts[0], parts[1]);
    key.verify(
        signed.as_bytes(),
        &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
    )
    .unwrap();
    // A changed claim no longer verifies.
    let forged = format!(
        "{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(b"{\"iss\":\"x\"}")
    );
    assert!(
        key.verify(
            forged.as_bytes(),
            &URL_SAFE_NO_PAD.decode(parts[2]).unwrap()
        )
        .is_err()
    );
}

#[test]
fn a_key_without_a_usable_private_key_is_refused() {
    let mut k: Value = serde_json::from_str(&fixture("service-account.json")).unwrap();
    k["private_key"] = json!("not a key");
    let e = TokenSource::new(&k.to_string(), client()).unwrap_err();
    assert!(e.contains("PEM"), "{e}");
}

#[test]
fn claude_bodies_drop_the_model_and_carry_vertex_s_version() {
    let req: ChatRequest = serde_json::from_value(
        json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .unwrap();
    let v = VertexProvider::claude_body(&req, "claude-sonnet-4-5", true).unwrap();
    assert!(v.get("model").is_none());
    assert_eq!(v["anthropic_version"], "vertex-2023-10-16");
    assert_eq!(v["stream"], true);
    assert_eq!(v["messages"][0]["role"], "user");
    assert!(VertexProvider::is_claude("claude-3-5-haiku@20241022"));
    assert!(!VertexProvider::is_claude("gemini-2.5-pro"));
    assert_eq!(
        crate::config::vertex_host("global"),
        "https://aiplatform.googleapis.com"
    );
    assert_eq!(
        crate::config::vertex_host("europe-west4"),
        "https://europe-west4-aiplatform.googleapis.com"
    );
}
