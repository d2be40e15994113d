//! Per plugin and hook: calls, errors, blocks and recent durations (for p50/p99 in
//! `GET /api/plugins`; Prometheus has the full histograms).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use switchyard_plugin::Hooks;

/// Durations kept per hook for the percentiles.
const RECENT: usize = 1024;

#[derive(Default)]
struct Hook {
    calls: u64,
    errors: u64,
    blocks: u64,
    recent_us: VecDeque<u32>,
}

/// One plugin's counts.
#[derive(Default)]
pub(super) struct Stats {
    hooks: Mutex<BTreeMap<&'static str, Hook>>,
}

/// One hook's counts, as the admin API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct HookStats {
    /// Calls.
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
    /// Requests refused, answered directly, or chunks dropped.
    pub blocks: u64,
    /// Median of the recent calls, microseconds.
    pub p50_us: u32,
    /// 99th percentile of the recent calls, microseconds.
    pub p99_us: u32,
}

/// A loaded plugin, as `GET /api/plugins` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginView {
    /// Position in `[[plugins]]` (answers go back in reverse order).
    pub order: usize,
    /// Name.
    pub name: String,
    /// `builtin` or `webhook`.
    pub kind: &'static str,
    /// Hooks it implements.
    #[serde(serialize_with = "hook_names")]
    pub hooks: Hooks,
    /// Models and routes it applies to (empty: all).
    pub scope: Vec<String>,
    /// `fail_closed` or `fail_open`.
    pub on_error: &'static str,
    /// Whether a virtual key may turn it off (`false`: it may).
    pub mandatory: bool,
    /// Whether it runs unless a key turns it off (`false`: only for keys that add it).
    pub default_on: bool,
    /// Per hook.
    pub stats: BTreeMap<&'static str, HookStats>,
}

fn hook_names<S: serde::Serializer>(h: &Hooks, s: S) -> Result<S::Ok, S::Error> {
    let mut names = Vec::new();
    if h.request {
        names.push("request");
    }
    if h.response {
        names.push("response");
    }
    if h.stream {
        names.push("stream_chunk");
    }
    if h.tool_call {
        names.push("tool_call");
    }
    if h.tool_result {
        names.push("tool_result");
    }
    if h.complete {
        names.push("complete");
    }
    names.serialize(s)
}

impl Stats {
    pub(super) fn record(&self, hook: &'static str, outcome: &'static str, secs: f64) {
        let Ok(mut hooks) = self.hooks.lock() else {
            return;
        };
        let h = hooks.entry(hook).or_default();
        h.calls += 1;
        match outcome {
            "error" => h.errors += 1,
            "blocked" | "answered" | "dropped" => h.blocks += 1,
            _ => {}
        }
        if h.recent_us.len() == RECENT {
            h.recent_us.pop_front();
        }
        h.recent_us
            .push_back((secs * 1e6).min(f64::from(u32::MAX)) as u32);
    }

    pub(super) fn views(&self) -> BTreeMap<&'static str, HookStats> {
        let Ok(hooks) = self.hooks.lock() else {
            return BTreeMap::new();
        };
        hooks
            .iter()
            .map(|(name, h)| {
                let mut sorted: Vec<u32> = h.recent_us.iter().copied().collect();
                sorted.sort_unstable();
                let pct = |p: f64| {
                    sorted
                        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
                        .copied()
                        .unwrap_or(0)
                };
                (
                    *name,
                    HookStats {
                        calls: h.calls,
                        errors: h.errors,
                        blocks: h.blocks,
                        p50_us: pct(0.5),
                        p99_us: pct(0.99),
                    },
                )
            })
            .collect()
    }
}
