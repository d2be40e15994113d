use std::time::Duration;

use super::breaker::{BreakerKey, Breakers, State};
use super::retry::{Action, State as RetryState, backoff, decide};
use crate::config::RouterConfig;
use crate::providers::ProviderError;

fn cfg() -> RouterConfig {
    RouterConfig {
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_millis(1000),
        max_retry_after: Duration::from_secs(10),
        breaker_failures: 3,
        breaker_cooldown: Duration::from_millis(50),
    }
}

fn st(retries: u32, other_key: bool) -> RetryState {
    RetryState {
        retries,
        max_retries: 2,
        other_key,
        remaining: Duration::from_secs(60),
    }
}

fn status(code: u16, ra: Option<u64>) -> ProviderError {
    ProviderError::Status {
        status: code,
        message: String::new(),
        retry_after: ra.map(Duration::from_secs),
    }
}

#[test]
fn policy() {
    let c = cfg();
    assert_eq!(decide(&status(400, None), st(0, true), &c), Action::Fail);
    assert_eq!(decide(&status(401, None), st(0, true), &c), Action::NextKey);
    assert_eq!(
        decide(&status(401, None), st(0, false), &c),
        Action::NextTarget
    );
    assert_eq!(decide(&status(429, None), st(0, true), &c), Action::NextKey);
    assert_eq!(
        decide(&status(429, Some(3)), st(0, false), &c),
        Action::Retry(Duration::from_secs(3))
    );
    assert_eq!(
        decide(&status(429, Some(30)), st(0, false), &c),
        Action::NextTarget
    );
    assert_eq!(
        decide(&status(503, None), st(2, false), &c),
        Action::NextTarget
    );
    assert!(matches!(
        decide(&ProviderError::Connect("x".into()), st(0, false), &c),
        Action::Retry(_)
    ));
    let short = RetryState {
        remaining: Duration::from_millis(10),
        ..st(0, false)
    };
    assert_eq!(decide(&status(429, Some(1)), short, &c), Action::NextTarget);
}

#[test]
fn backoff_grows_with_jitter_and_a_cap() {
    let c = cfg();
    for _ in 0..100 {
        let b0 = backoff(0, &c);
        assert!(
            b0 >= Duration::from_millis(50) && b0 <= Duration::from_millis(100),
            "{b0:?}"
        );
        let b2 = backoff(2, &c);
        assert!(
            b2 >= Duration::from_millis(200) && b2 <= Duration::from_millis(400),
            "{b2:?}"
        );
        let b9 = backoff(9, &c);
        assert!(
            b9 >= Duration::from_millis(500) && b9 <= Duration::from_millis(1000),
            "{b9:?}"
        );
    }
}

#[test]
fn breaker_cycle() {
    let b = Breakers::new(2, Duration::from_millis(30));
    let k = BreakerKey {
        provider: "p".into(),
        model: "m".into(),
        key: 0,
    };
    assert!(b.allow(&k));
    assert_eq!(b.failure(&k), State::Closed);
    assert!(matches!(b.failure(&k), State::Open(_)));
    assert!(!b.allow(&k));
    std::thread::sleep(Duration::from_millis(40));
    assert!(b.allow(&k), "half-open lets one probe through");
    assert!(!b.allow(&k), "but only one");
    b.success(&k);
    assert!(b.allow(&k) && b.allow(&k));
}

#[test]
fn weighted_pick_respects_zero_share() {
    for _ in 0..100 {
        assert_eq!(super::weighted_pick([0.0, 1.0].into_iter()), 1);
    }
}

#[test]
fn a_probe_that_never_reports_is_replaced_after_a_cool_down() {
    let b = Breakers::new(1, Duration::from_millis(20));
    let k = BreakerKey {
        provider: "p".into(),
        model: "m".into(),
        key: 0,
    };
    b.failure(&k);
    std::thread::sleep(Duration::from_millis(25));
    assert!(b.allow(&k), "first probe");
    // The probe's request is cancelled: no success or failure is ever recorded.
    assert!(!b.allow(&k));
    std::thread::sleep(Duration::from_millis(25));
    assert!(b.allow(&k), "a new probe after another cool-down");
}
