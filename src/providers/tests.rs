use std::time::Duration;

use super::*;

#[test]
fn retry_after_seconds_and_date() {
    assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
    assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
    assert_eq!(parse_retry_after("-1"), None);
    let later = std::time::SystemTime::now() + Duration::from_secs(30);
    let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
    assert!(
        d > Duration::from_secs(25) && d <= Duration::from_secs(30),
        "{d:?}"
    );
    assert_eq!(parse_retry_after("soon"), None);
    // Values no Duration holds are ignored, not a panic on the provider's answer.
    for v in ["1e300", "inf", "NaN", "-0.5"] {
        assert_eq!(parse_retry_after(v), None, "{v}");
    }
}

#[test]
fn redacts_keys() {
    let key = Secret::new("sk-test-abcdefghijklmnop");
    let r = Redactor::for_secret(&key);
    let m = r.text("Incorrect API key provided: sk-test-abcdefghijklmnop.");
    assert!(!m.contains("abcdefghijklmnop"), "{m}");
    let m = Redactor::default().text("bad key sk-live-zzzzzzzzzzzzzzzz here");
    assert!(!m.contains("zzzz"), "{m}");
    assert_eq!(Redactor::default().text("plain message"), "plain message");
}

#[test]
fn error_messages_from_both_shapes() {
    assert_eq!(
        error_message(r#"{"error":{"message":"boom","type":"x"}}"#),
        "boom"
    );
    assert_eq!(
        error_message(
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
        ),
        "Overloaded"
    );
    assert_eq!(error_message("gateway down"), "gateway down");
}

#[test]
fn classification() {
    let s = |status| ProviderError::Status {
        status,
        message: String::new(),
        retry_after: None,
    };
    assert!(s(429).is_retryable() && s(429).is_key_problem());
    assert!(s(503).is_retryable() && !s(503).is_key_problem());
    assert!(!s(400).is_retryable());
    assert!(ProviderError::Connect("x".into()).is_retryable());
    assert_eq!(s(401).label(), "auth_error");
}
