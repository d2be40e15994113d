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

/// A chunk whose id tells it apart.
fn chunk(id: &str) -> Box<crate::chat::Chunk> {
    Box::new(crate::chat::Chunk::from(crate::chat::ChatChunk {
        id: id.to_owned(),
        object: "chat.completion.chunk".into(),
        created: 0,
        model: "m".into(),
        choices: Vec::new(),
        usage: None,
        extra: crate::chat::Extra::new(),
    }))
}

/// An upstream that sends `c1`, `c2`, ... each after the given pause (from a task of its own,
/// as a network peer would, whether or not the stream is being read), then ends.
fn paced(pauses: Vec<Duration>) -> crate::chat::ChatStream {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // A test's upstream: nothing to wait for at shutdown.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move {
        for (i, p) in pauses.into_iter().enumerate() {
            tokio::time::sleep(p).await;
            if tx.send(Ok(chunk(&format!("c{}", i + 1)))).is_err() {
                return;
            }
        }
    });
    Box::pin(async_stream::stream! {
        while let Some(item) = rx.recv().await {
            yield item;
        }
    })
}

/// What the stages get from a streamed attempt whose first chunk is `c0`: (chunk id or error,
/// milliseconds since the start when it came).
async fn watched(pauses: Vec<Duration>, idle: Duration) -> Vec<(String, u128)> {
    use futures_util::StreamExt;
    let start = tokio::time::Instant::now();
    let opened = super::Opened {
        first: chunk("c0"),
        rest: paced(pauses),
    };
    let mut s = super::Watched::new(opened, idle);
    let mut got = Vec::new();
    while let Some(item) = s.next().await {
        let what = match item {
            Ok(c) => c.id.clone(),
            Err(e) => e.message,
        };
        got.push((what, start.elapsed().as_millis()));
    }
    // Ended for good.
    assert!(s.next().await.is_none());
    got
}

#[tokio::test(start_paused = true)]
async fn a_stream_slower_than_idle_overall_but_never_silent_for_it_is_not_cut() {
    let ms = Duration::from_millis;
    let got = watched(vec![ms(600); 6], ms(1000)).await;
    let ids: Vec<&str> = got.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(ids, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
    assert_eq!(got.last().map(|g| g.1), Some(3600));
}

#[tokio::test(start_paused = true)]
async fn a_silent_upstream_ends_the_stream_after_idle() {
    let ms = Duration::from_millis;
    // Two chunks, then a silence longer than idle (the upstream would send c3 at 4 s).
    let got = watched(vec![ms(300), ms(900), ms(2800)], Duration::from_secs(2)).await;
    assert_eq!(
        got,
        [
            ("c0".to_owned(), 0),
            ("c1".to_owned(), 300),
            ("c2".to_owned(), 1200),
            ("upstream sent nothing for 2s".to_owned(), 3200),
        ]
    );
    // Silent from the start.
    let got = watched(vec![ms(5000)], Duration::from_secs(2)).await;
    assert_eq!(
        got,
        [
            ("c0".to_owned(), 0),
            ("upstream sent nothing for 2s".to_owned(), 2000)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_wait_is_counted_from_when_it_begins_not_from_the_last_chunk() {
    use futures_util::StreamExt;
    let ms = Duration::from_millis;
    let opened = super::Opened {
        first: chunk("c0"),
        rest: paced(vec![ms(100), ms(1500)]),
    };
    let mut s = super::Watched::new(opened, ms(1000));
    assert!(s.next().await.is_some_and(|c| c.is_ok()));
    assert!(s.next().await.is_some_and(|c| c.is_ok()));
    // The consumer is busy for longer than idle (a client reading slowly): the upstream's
    // 1.5 s pause began when c1 was taken, so c2 is due 0.5 s into the next wait, within idle.
    tokio::time::sleep(ms(1200)).await;
    let next = s.next().await;
    assert!(matches!(&next, Some(Ok(c)) if c.id == "c2"), "{next:?}");
}

#[tokio::test(start_paused = true)]
async fn an_idle_bound_too_large_to_add_waits_instead_of_panicking() {
    use futures_util::StreamExt;
    let ms = Duration::from_millis;
    let opened = super::Opened {
        first: chunk("c0"),
        rest: paced(vec![ms(5000)]),
    };
    let mut s = super::Watched::new(opened, Duration::MAX);
    let ids: Vec<String> = s
        .by_ref()
        .map(|c| c.map(|c| c.id.clone()).unwrap_or_else(|e| e.message))
        .collect()
        .await;
    assert_eq!(ids, ["c0", "c1"]);
}
