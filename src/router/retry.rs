//! The one retry policy: what to do after a failed attempt, and how long to wait.

use std::time::Duration;

use crate::config::RouterConfig;
use crate::providers::ProviderError;

/// What the router does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Give up: the request itself is at fault (the client gets the upstream's 4xx).
    Fail,
    /// Same target, another key, no wait.
    NextKey,
    /// Same target after this delay.
    Retry(Duration),
    /// Move to the next target (weighted peers, then fallbacks).
    NextTarget,
}

/// Where the current target stands.
#[derive(Debug, Clone, Copy)]
pub struct State {
    /// Retries already spent on this target.
    pub retries: u32,
    /// The provider's `max_retries`.
    pub max_retries: u32,
    /// Whether another usable key of this provider remains.
    pub other_key: bool,
    /// Time left before the request's deadline.
    pub remaining: Duration,
}

/// Decides the next step after `err`.
pub fn decide(err: &ProviderError, st: State, cfg: &RouterConfig) -> Action {
    if !err.is_retryable() {
        return Action::Fail;
    }
    if err.is_key_problem() && st.other_key {
        return Action::NextKey;
    }
    let retry_after = match err {
        ProviderError::Status {
            status: 401 | 403, ..
        } => return Action::NextTarget,
        ProviderError::Status { retry_after, .. } => *retry_after,
        _ => None,
    };
    if st.retries >= st.max_retries {
        return Action::NextTarget;
    }
    let delay = match retry_after {
        Some(ra) if ra > cfg.max_retry_after => return Action::NextTarget,
        Some(ra) => ra.max(backoff(st.retries, cfg)),
        None => backoff(st.retries, cfg),
    };
    if delay >= st.remaining {
        return Action::NextTarget;
    }
    Action::Retry(delay)
}

/// Exponential backoff with jitter: half the step fixed, half random ("equal jitter").
pub fn backoff(retry: u32, cfg: &RouterConfig) -> Duration {
    let step = cfg
        .retry_base
        .saturating_mul(1u32 << retry.min(16))
        .min(cfg.retry_max);
    let half = step / 2;
    let jitter = half.mul_f64(fastrand::f64());
    half + jitter
}
