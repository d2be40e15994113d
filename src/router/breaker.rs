//! Circuit breakers, one per (provider, model, key): open after repeated failures, half-open after a cool-down.

use foldhash::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Identifies one breaker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BreakerKey {
    /// Provider name.
    pub provider: Arc<str>,
    /// Upstream model.
    pub model: Arc<str>,
    /// Key index within the provider.
    pub key: usize,
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Traffic flows.
    Closed,
    /// No traffic until the instant passes.
    Open(Instant),
    /// One probe is in flight since this instant; its outcome closes or reopens the breaker.
    /// A probe that never reports (its request was cancelled) is replaced after a cool-down.
    HalfOpen(Instant),
}

impl State {
    /// A fixed label (also the metric value: 0 closed, 1 open, 2 half-open).
    pub fn label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open(_) => "open",
            Self::HalfOpen(_) => "half_open",
        }
    }
}

#[derive(Debug)]
struct Breaker {
    failures: u32,
    state: State,
}

/// All breakers.
#[derive(Debug)]
pub struct Breakers {
    map: Mutex<HashMap<BreakerKey, Breaker>>,
    threshold: u32,
    cooldown: Duration,
}

impl Breakers {
    /// Breakers that open after `threshold` consecutive failures for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            map: Mutex::new(HashMap::default()),
            threshold: threshold.max(1),
            cooldown,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<BreakerKey, Breaker>) -> R) -> R {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut map)
    }

    /// Whether an attempt may go through now (an expired open breaker lets one probe through).
    pub fn allow(&self, key: &BreakerKey) -> bool {
        let cooldown = self.cooldown;
        self.with(|m| {
            let Some(b) = m.get_mut(key) else { return true };
            let now = Instant::now();
            match b.state {
                State::Closed => true,
                State::HalfOpen(since) if now < since + cooldown => false,
                State::Open(until) if now < until => false,
                State::HalfOpen(_) | State::Open(_) => {
                    b.state = State::HalfOpen(now);
                    true
                }
            }
        })
    }

    /// Records a success: the breaker closes.
    pub fn success(&self, key: &BreakerKey) {
        self.with(|m| {
            if let Some(b) = m.get_mut(key) {
                b.failures = 0;
                b.state = State::Closed;
            }
        });
    }

    /// Records a failure; returns the new state.
    pub fn failure(&self, key: &BreakerKey) -> State {
        let (threshold, cooldown) = (self.threshold, self.cooldown);
        self.with(|m| {
            let now = Instant::now();
            let b = m.entry(key.clone()).or_insert(Breaker {
                failures: 0,
                state: State::Closed,
            });
            b.failures = b.failures.saturating_add(1);
            if matches!(b.state, State::HalfOpen(_)) || b.failures >= threshold {
                b.state = State::Open(now + cooldown);
            }
            b.state
        })
    }

    /// Current states, for metrics and the admin API.
    pub fn snapshot(&self) -> Vec<(BreakerKey, State)> {
        self.with(|m| m.iter().map(|(k, b)| (k.clone(), b.state)).collect())
    }
}
