//! Every Prometheus metric the gateway exports, in one place. Labels come from small fixed
//! vocabularies (endpoint, status class, configured provider names, outcome labels).

use foldhash::HashMap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// A label value from a fixed vocabulary: the words are static, so counting a request allocates
/// nothing for them.
pub type Word = Cow<'static, str>;

/// Labels of a client request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `chat`, `messages`, `embeddings`.
    pub endpoint: Word,
    /// `2xx`, `4xx`, `5xx`.
    pub status: Word,
    /// `true` for streamed answers.
    pub stream: Word,
}

/// Labels by endpoint only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// `chat`, `messages`, `embeddings`.
    pub endpoint: Word,
}

/// Labels of an upstream attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// Configured provider name.
    pub provider: String,
    /// `ok` or a `ProviderError::label()`.
    pub outcome: Word,
}

/// Labels by provider only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// Configured provider name.
    pub provider: String,
}

/// Labels of token counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// Configured provider name.
    pub provider: String,
    /// `input` or `output`.
    pub direction: Word,
}

/// Labels of a cache lookup or write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Lookups: `hit-exact`, `hit-semantic`, `miss`, `bypass`. Writes: `stored`, `skipped`,
    /// `failed`.
    pub outcome: Word,
}

/// Labels of the similarity histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SimilarityLabels {
    /// `hit`, `below_threshold` or `guard` (rejected by the guard).
    pub result: String,
}

/// Labels of saved tokens.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `input` or `output`.
    pub direction: String,
}

/// Labels of a governance refusal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The error code: `invalid_api_key`, `key_disabled`, `model_not_allowed`,
    /// `tool_not_allowed`, `budget_exceeded`, `rate_limit_exceeded`, `model_unpriced`.
    pub reason: String,
}

/// Labels of a budget.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    /// `customer`, `team` or `key` (keys only with `metrics_per_key`).
    pub level: String,
    /// Its id.
    pub id: String,
    /// The budget's period (`1d`, `1M`, ... or `none`).
    pub period: String,
}

/// Labels of MCP tool calls.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    /// Server name.
    pub server: String,
    /// Tool name on the server.
    pub tool: String,
}

/// Labels of MCP tool call counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolOutcomeLabels {
    /// Server name.
    pub server: String,
    /// Tool name on the server.
    pub tool: String,
    /// `ok`, `tool_error`, `timeout` or `failed`.
    pub outcome: String,
}

/// Labels of a plugin hook's duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginHookLabels {
    /// Plugin name.
    pub plugin: String,
    /// `request`, `response` or `stream_chunk`.
    pub hook: String,
}

/// Labels of plugin hook calls.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCallLabels {
    /// Plugin name.
    pub plugin: String,
    /// `request`, `response` or `stream_chunk`.
    pub hook: String,
    /// `ok`, `blocked`, `answered`, `dropped` or `error`.
    pub outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Handles of families' series, each found in its family once: a family's lookup hashes its
/// labels with SipHash under the family's lock (and allocates any owned label) on every call.
/// Handles share their family's series, so the export is the same; a series is still made on its
/// first use, never before.
struct Handles<K, M> {
    known: std::sync::RwLock<HashMap<K, M>>,
}

impl<K, M> Default for Handles<K, M> {
    fn default() -> Self {
        Self {
            known: std::sync::RwLock::new(HashMap::default()),
        }
    }
}

impl<K, M> std::fmt::Debug for Handles<K, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handles")
    }
}

impl<K: std::hash::Hash + Eq, M> Handles<K, M> {
    /// Runs `f` on the handle under `key`, made by `make` (with its key, owned) the first time.
    /// `make` runs outside this memo's lock: it takes the families' own locks.
    fn with<Q, R>(&self, key: &Q, make: impl FnOnce() -> (K, M), f: impl FnOnce(&M) -> R) -> R
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        if let Some(m) = self
            .known
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
        {
            return f(m);
        }
        let (key, m) = make();
        let mut known = self
            .known
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(known.entry(key).or_insert(m))
    }
}

/// The series a finished request touches, by their static labels.
#[derive(Debug, Default)]
struct RequestSeries {
    /// `requests` by (endpoint, status class, streamed).
    count: Handles<(&'static str, &'static str, bool), Counter>,
    /// `request_duration_seconds` by endpoint.
    duration: Handles<&'static str, Histogram>,
    /// `overhead_seconds` by endpoint.
    overhead: Handles<&'static str, Histogram>,
    /// `ttft_seconds` by endpoint.
    ttft: Handles<&'static str, Histogram>,
    /// `cache_lookups_total` and `cache_lookup_duration_seconds` by outcome.
    cache_lookup: Handles<&'static str, (Counter, Histogram)>,
    /// `mcp_tool_loops_total` by outcome.
    tool_loop: Handles<&'static str, Counter>,
}

/// One provider's series in the families an answer updates (the same series the families
/// export: a handle shares its family's counter).
#[derive(Debug)]
struct ProviderSeries {
    attempts_ok: Counter,
    attempt_duration: Histogram,
    input_tokens: Counter,
    output_tokens: Counter,
    cost: Counter<f64, AtomicU64>,
}

/// Observes `value` in `family`'s series for `endpoint`, through its handle.
fn observe_at(
    handles: &Handles<&'static str, Histogram>,
    family: &HistogramFamily<EndpointLabels>,
    endpoint: &'static str,
    value: f64,
) {
    let made = || {
        let labels = EndpointLabels {
            endpoint: Cow::Borrowed(endpoint),
        };
        (endpoint, family.get_or_create(&labels).clone())
    };
    handles.with(&endpoint, made, |h| h.observe(value));
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The gateway's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Each provider's series that every answer touches, looked up once: a family lookup hashes
    /// its labels (allocating the provider's name for them) under a lock each time.
    by_provider: Handles<String, Arc<ProviderSeries>>,
    /// The series every request touches whose labels are static words, found once each.
    by_words: RequestSeries,
    /// `switchyard_requests_total`.
    pub requests: Family<RequestLabels, Counter>,
    /// `switchyard_request_duration_seconds` (to the last byte, for streams too).
    pub request_duration: HistogramFamily<EndpointLabels>,
    /// `switchyard_in_flight_requests`.
    pub in_flight: Gauge,
    /// `switchyard_upstream_attempts_total`.
    pub upstream_attempts: Family<AttemptLabels, Counter>,
    /// `switchyard_upstream_attempt_duration_seconds`.
    pub upstream_duration: HistogramFamily<ProviderLabels>,
    /// `switchyard_fallbacks_total`: requests served by a target other than the first tried.
    pub fallbacks: Family<ProviderLabels, Counter>,
    /// `switchyard_tokens_total`.
    pub tokens: Family<TokenLabels, Counter>,
    /// `switchyard_circuit_breakers_open`: open or half-open breakers per provider.
    pub breakers_open: Family<ProviderLabels, Gauge>,
    /// `switchyard_cache_lookups_total` by outcome.
    pub cache_lookups: Family<OutcomeLabels, Counter>,
    /// `switchyard_cache_lookup_duration_seconds` by outcome.
    pub cache_lookup_duration: HistogramFamily<OutcomeLabels>,
    /// `switchyard_cache_similarity`: best candidate's cosine similarity, by result.
    pub cache_similarity: HistogramFamily<SimilarityLabels>,
    /// `switchyard_cache_saved_tokens_total` by direction.
    pub cache_saved_tokens: Family<DirectionLabels, Counter>,
    /// `switchyard_cache_writes_total` by outcome.
    pub cache_writes: Family<OutcomeLabels, Counter>,
    /// `switchyard_cache_shadow_hits_total` by outcome (`hit-exact`, `hit-semantic`): what shadow
    /// mode would have served.
    pub cache_shadow_hits: Family<OutcomeLabels, Counter>,
    /// `switchyard_cache_feedback_total` by outcome (`wrong`): entries reported and removed.
    pub cache_feedback: Family<OutcomeLabels, Counter>,
    /// `switchyard_cache_entries`.
    pub cache_entries: Gauge,
    /// `switchyard_mcp_tool_calls_total` by server, tool and outcome.
    pub mcp_tool_calls: Family<ToolOutcomeLabels, Counter>,
    /// `switchyard_mcp_tool_call_duration_seconds` by server and tool.
    pub mcp_tool_duration: HistogramFamily<ToolLabels>,
    /// `switchyard_mcp_loops_total` by how the loop ended.
    pub mcp_loops: Family<OutcomeLabels, Counter>,
    /// `switchyard_gateway_overhead_seconds`: request time not spent upstream or in tools.
    pub overhead: HistogramFamily<EndpointLabels>,
    /// `switchyard_time_to_first_token_seconds`: to the first streamed chunk.
    pub ttft: HistogramFamily<EndpointLabels>,
    /// `switchyard_cost_usd_total`: estimated spend by provider.
    pub cost: Family<ProviderLabels, Counter<f64, AtomicU64>>,
    /// `switchyard_cache_saved_usd_total`: estimated spend the cache avoided.
    pub cache_saved_usd: Counter<f64, AtomicU64>,
    /// `switchyard_upstream_retries_total`: attempts after the first, by provider.
    pub retries: Family<ProviderLabels, Counter>,
    /// `switchyard_log_records_dropped_total`: request log records lost (queue full, write error).
    pub log_dropped: Counter,
    /// `switchyard_governance_rejections_total` by reason.
    pub gov_rejections: Family<ReasonLabels, Counter>,
    /// `switchyard_budget_spent_usd`: spend in the current window, per budget.
    pub budget_spent: Family<BudgetLabels, Gauge<f64, AtomicU64>>,
    /// `switchyard_budget_remaining_usd`: what is left (reservations in flight subtracted).
    pub budget_remaining: Family<BudgetLabels, Gauge<f64, AtomicU64>>,
    /// `switchyard_governance_unchecked_total`: requests admitted without checks because the
    /// store was unreachable (`fail_closed = false`).
    pub gov_unchecked: Counter,
    /// `switchyard_plugin_calls_total` by plugin, hook and outcome.
    pub plugin_calls: Family<PluginCallLabels, Counter>,
    /// `switchyard_plugin_hook_duration_seconds` by plugin and hook.
    pub plugin_duration: HistogramFamily<PluginHookLabels>,
}

fn overhead_histogram() -> Histogram {
    // 20 us .. ~0.3 s
    Histogram::new(exponential_buckets(0.00002, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Client requests by endpoint, status class and streaming",
            requests.clone(),
        );
        let request_duration: HistogramFamily<EndpointLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request to the last byte of the answer",
            request_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Requests being served",
            in_flight.clone(),
        );
        let upstream_attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "upstream_attempts",
            "Upstream attempts by provider and outcome",
            upstream_attempts.clone(),
        );
        let upstream_duration: HistogramFamily<ProviderLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_attempt_duration_seconds",
            "Upstream attempt latency (to the first chunk for streams)",
            upstream_duration.clone(),
        );
        let fallbacks = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "fallbacks",
            "Requests answered by a target other than the first tried",
            fallbacks.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register("tokens", "Tokens by provider and direction", tokens.clone());
        let breakers_open = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "circuit_breakers_open",
            "Open or half-open circuit breakers",
            breakers_open.clone(),
        );
        let cache_lookups = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Cache lookups by outcome (hit-exact, hit-semantic, miss, bypass)",
            cache_lookups.clone(),
        );
        let cache_lookup_duration: HistogramFamily<OutcomeLabels> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.00005, 2.0, 14)));
        registry.register(
            "cache_lookup_duration_seconds",
            "Cache lookup time (embedding and search included) by outcome",
            cache_lookup_duration.clone(),
        );
        let cache_similarity: HistogramFamily<SimilarityLabels> =
            Family::new_with_constructor(|| {
                Histogram::new((0..=20).map(|i| 0.5 + f64::from(i) * 0.025))
            });
        registry.register(
            "cache_similarity",
            "Cosine similarity of the best semantic candidate, by result",
            cache_similarity.clone(),
        );
        let cache_saved_tokens = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "cache_saved_tokens",
            "Tokens not sent to a provider because the cache answered",
            cache_saved_tokens.clone(),
        );
        let cache_writes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "cache_writes",
            "Cache writes by outcome (stored, skipped, failed)",
            cache_writes.clone(),
        );
        let cache_shadow_hits = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "cache_shadow_hits",
            "Lookups in shadow mode that would have been served, by tier (not served)",
            cache_shadow_hits.clone(),
        );
        let cache_feedback = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "cache_feedback",
            "Cached answers reported by users, by verdict (wrong: the entry was removed)",
            cache_feedback.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register(
            "cache_entries",
            "Entries in the cache",
            cache_entries.clone(),
        );
        let mcp_tool_calls = Family::<ToolOutcomeLabels, Counter>::default();
        registry.register(
            "mcp_tool_calls",
            "MCP tool calls run by the gateway, by server, tool and outcome (ok, tool_error, timeout, failed)",
            mcp_tool_calls.clone(),
        );
        let mcp_tool_duration: HistogramFamily<ToolLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "mcp_tool_call_duration_seconds",
            "MCP tool call latency by server and tool",
            mcp_tool_duration.clone(),
        );
        let mcp_loops = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "mcp_loops",
            "Tool loops by how they ended (answered, client_tools, max_iterations, error)",
            mcp_loops.clone(),
        );
        let overhead: HistogramFamily<EndpointLabels> =
            Family::new_with_constructor(overhead_histogram);
        registry.register(
            "gateway_overhead_seconds",
            "Request time spent in the gateway itself: total minus upstream and MCP tool time (streams: to the first chunk)",
            overhead.clone(),
        );
        let ttft: HistogramFamily<EndpointLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "time_to_first_token_seconds",
            "Time from request to the first streamed chunk sent to the client",
            ttft.clone(),
        );
        let cost = Family::<ProviderLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "cost_usd",
            "Estimated USD spent upstream, by provider (price table: telemetry/prices.toml + [prices])",
            cost.clone(),
        );
        let cache_saved_usd = Counter::<f64, AtomicU64>::default();
        registry.register(
            "cache_saved_usd",
            "Estimated USD not spent because the cache answered",
            cache_saved_usd.clone(),
        );
        let retries = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "upstream_retries",
            "Upstream attempts after the first for a request, by provider",
            retries.clone(),
        );
        let log_dropped = Counter::default();
        registry.register(
            "log_records_dropped",
            "Request log records dropped (queue full or write error)",
            log_dropped.clone(),
        );
        let gov_rejections = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "governance_rejections",
            "Requests refused by governance, by reason (the error code)",
            gov_rejections.clone(),
        );
        let budget_spent = Family::<BudgetLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "budget_spent_usd",
            "Spend in the current window of each budget (teams and customers; keys with metrics_per_key)",
            budget_spent.clone(),
        );
        let budget_remaining = Family::<BudgetLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "budget_remaining_usd",
            "What is left of each budget, reservations in flight subtracted",
            budget_remaining.clone(),
        );
        let gov_unchecked = Counter::default();
        registry.register(
            "governance_unchecked",
            "Requests admitted without budget and limit checks: the governance store was unreachable and fail_closed is off",
            gov_unchecked.clone(),
        );
        let plugin_calls = Family::<PluginCallLabels, Counter>::default();
        registry.register(
            "plugin_calls",
            "Plugin hook calls by plugin, hook and outcome (ok, blocked, answered, dropped, error)",
            plugin_calls.clone(),
        );
        let plugin_duration: HistogramFamily<PluginHookLabels> =
            Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_001, 2.0, 22))
            });
        registry.register(
            "plugin_hook_duration_seconds",
            "Time in plugin hooks (webhook round trips included) by plugin and hook",
            plugin_duration.clone(),
        );
        Self {
            registry,
            by_provider: Default::default(),
            by_words: RequestSeries::default(),
            plugin_calls,
            plugin_duration,
            gov_unchecked,
            gov_rejections,
            budget_spent,
            budget_remaining,
            overhead,
            ttft,
            cost,
            cache_saved_usd,
            retries,
            log_dropped,
            mcp_tool_calls,
            mcp_tool_duration,
            mcp_loops,
            cache_lookups,
            cache_lookup_duration,
            cache_similarity,
            cache_saved_tokens,
            cache_writes,
            cache_shadow_hits,
            cache_feedback,
            cache_entries,
            requests,
            request_duration,
            in_flight,
            upstream_attempts,
            upstream_duration,
            fallbacks,
            tokens,
            breakers_open,
        }
    }

    /// `provider`'s series, made on its first answer.
    fn provider(&self, provider: &str) -> Arc<ProviderSeries> {
        self.by_provider.with(
            provider,
            || {
                (
                    provider.to_owned(),
                    Arc::new(self.provider_series(provider)),
                )
            },
            Arc::clone,
        )
    }

    /// `provider`'s series, taken from their families.
    fn provider_series(&self, provider: &str) -> ProviderSeries {
        // One statement each: a family's lookup holds its lock until the statement ends, and a
        // second lookup in the same family that has to add a series would wait for it forever.
        let by_provider = ProviderLabels {
            provider: provider.to_owned(),
        };
        let attempts_ok = self
            .upstream_attempts
            .get_or_create(&AttemptLabels {
                provider: provider.to_owned(),
                outcome: Cow::Borrowed("ok"),
            })
            .clone();
        let attempt_duration = self.upstream_duration.get_or_create(&by_provider).clone();
        let tokens = |direction: &'static str| {
            self.tokens
                .get_or_create(&TokenLabels {
                    provider: provider.to_owned(),
                    direction: Cow::Borrowed(direction),
                })
                .clone()
        };
        let input_tokens = tokens("input");
        let output_tokens = tokens("output");
        let cost = self.cost.get_or_create(&by_provider).clone();
        ProviderSeries {
            attempts_ok,
            attempt_duration,
            input_tokens,
            output_tokens,
            cost,
        }
    }

    /// Counts one upstream attempt.
    pub fn attempt(&self, provider: &str, outcome: &'static str, secs: f64) {
        if outcome == "ok" {
            let series = self.provider(provider);
            series.attempts_ok.inc();
            series.attempt_duration.observe(secs);
            return;
        }
        self.upstream_attempts
            .get_or_create(&AttemptLabels {
                provider: provider.to_owned(),
                outcome: Cow::Borrowed(outcome),
            })
            .inc();
        self.upstream_duration
            .get_or_create(&ProviderLabels {
                provider: provider.to_owned(),
            })
            .observe(secs);
    }

    /// Counts one MCP tool call.
    pub fn tool_call(&self, server: &str, tool: &str, outcome: &str, secs: f64) {
        self.mcp_tool_calls
            .get_or_create(&ToolOutcomeLabels {
                server: server.to_owned(),
                tool: tool.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.mcp_tool_duration
            .get_or_create(&ToolLabels {
                server: server.to_owned(),
                tool: tool.to_owned(),
            })
            .observe(secs);
    }

    /// Counts one finished tool loop.
    pub fn tool_loop(&self, outcome: &'static str) {
        let made = || {
            let labels = OutcomeLabels {
                outcome: Cow::Borrowed(outcome),
            };
            (outcome, self.mcp_loops.get_or_create(&labels).clone())
        };
        self.by_words.tool_loop.with(&outcome, made, Counter::inc);
    }

    /// Counts one cache lookup and its time.
    pub fn cache_lookup(&self, outcome: &'static str, secs: f64) {
        self.by_words.cache_lookup.with(
            &outcome,
            || {
                let labels = OutcomeLabels {
                    outcome: Cow::Borrowed(outcome),
                };
                // One statement each: a family's lookup holds its lock until the statement ends.
                let count = self.cache_lookups.get_or_create(&labels).clone();
                let time = self.cache_lookup_duration.get_or_create(&labels).clone();
                (outcome, (count, time))
            },
            |(count, time)| {
                count.inc();
                time.observe(secs);
            },
        );
    }

    /// Counts tokens of one answer.
    pub fn usage(&self, provider: &str, input: u64, output: u64) {
        let series = self.provider(provider);
        series.input_tokens.inc_by(input);
        series.output_tokens.inc_by(output);
    }

    /// Counts one finished client request.
    pub fn request(&self, endpoint: &'static str, status: u16, stream: bool, secs: f64) {
        let class = match status {
            200..=299 => "2xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let key = (endpoint, class, stream);
        let made = || {
            let labels = RequestLabels {
                endpoint: Cow::Borrowed(endpoint),
                status: Cow::Borrowed(class),
                stream: Cow::Borrowed(if stream { "true" } else { "false" }),
            };
            (key, self.requests.get_or_create(&labels).clone())
        };
        self.by_words.count.with(&key, made, Counter::inc);
        observe_at(
            &self.by_words.duration,
            &self.request_duration,
            endpoint,
            secs,
        );
    }

    /// Records where a finished request's time went.
    pub fn timing(&self, endpoint: &'static str, overhead: Option<f64>, ttft: Option<f64>) {
        if let Some(o) = overhead {
            observe_at(
                &self.by_words.overhead,
                &self.overhead,
                endpoint,
                o.max(0.0),
            );
        }
        if let Some(t) = ttft {
            observe_at(&self.by_words.ttft, &self.ttft, endpoint, t);
        }
    }

    /// Adds estimated spend.
    pub fn spend(&self, provider: &str, usd: f64) {
        if usd > 0.0 {
            self.provider(provider).cost.inc_by(usd);
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Metrics {
    /// Counts and times one plugin hook call.
    pub fn plugin_call(&self, plugin: &str, hook: &str, outcome: &str, secs: f64) {
        self.plugin_calls
            .get_or_create(&PluginCallLabels {
                plugin: plugin.to_owned(),
                hook: hook.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.plugin_duration
            .get_or_create(&PluginHookLabels {
                plugin: plugin.to_owned(),
                hook: hook.to_owned(),
            })
            .observe(secs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every series name the exposition can hold, once each family has one sample.
    fn exposed() -> std::collections::BTreeSet<String> {
        let m = Metrics::new();
        m.request("chat", 200, false, 0.1);
        m.timing("chat", Some(0.001), Some(0.01));
        m.attempt("p", "ok", 0.1);
        m.retries
            .get_or_create(&ProviderLabels {
                provider: "p".into(),
            })
            .inc();
        m.fallbacks
            .get_or_create(&ProviderLabels {
                provider: "p".into(),
            })
            .inc();
        m.usage("p", 1, 1);
        m.spend("p", 0.1);
        m.breakers_open
            .get_or_create(&ProviderLabels {
                provider: "p".into(),
            })
            .set(0);
        let o = OutcomeLabels {
            outcome: "miss".into(),
        };
        m.cache_lookups.get_or_create(&o).inc();
        m.cache_shadow_hits.get_or_create(&o).inc();
        m.cache_feedback.get_or_create(&o).inc();
        m.cache_lookup_duration.get_or_create(&o).observe(0.001);
        m.cache_similarity
            .get_or_create(&SimilarityLabels {
                result: "hit".into(),
            })
            .observe(0.9);
        m.cache_saved_tokens
            .get_or_create(&DirectionLabels {
                direction: "input".into(),
            })
            .inc();
        m.cache_saved_usd.inc_by(0.1);
        m.cache_writes.get_or_create(&o).inc();
        m.tool_call("s", "t", "ok", 0.01);
        m.tool_loop("answered");
        m.gov_rejections
            .get_or_create(&ReasonLabels {
                reason: "budget_exceeded".into(),
            })
            .inc();
        let b = BudgetLabels {
            level: "team".into(),
            id: "t".into(),
            period: "1d".into(),
        };
        m.budget_spent.get_or_create(&b).set(1.0);
        m.budget_remaining.get_or_create(&b).set(1.0);
        let text = m.encode();
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let mut parts = l.split(' ');
                let name = parts.next().unwrap_or_default();
                match parts.next() {
                    Some("counter") => format!("{name}_total"),
                    _ => name.to_owned(),
                }
            })
            .collect()
    }

    /// A provider's remembered series are the ones exported: counts made through them and
    /// through the families add up in one sample, per provider.
    #[test]
    fn provider_series_are_the_exported_ones() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.attempt("a", "ok", 0.5);
            m.usage("a", 10, 2);
            m.spend("a", 0.25);
        }
        m.attempt("b", "ok", 0.1);
        m.attempt("a", "timeout", 0.1);
        m.upstream_attempts
            .get_or_create(&AttemptLabels {
                provider: "a".into(),
                outcome: "ok".into(),
            })
            .inc();
        let text = m.encode();
        for line in [
            "switchyard_upstream_attempts_total{provider=\"a\",outcome=\"ok\"} 4",
            "switchyard_upstream_attempts_total{provider=\"a\",outcome=\"timeout\"} 1",
            "switchyard_upstream_attempts_total{provider=\"b\",outcome=\"ok\"} 1",
            "switchyard_tokens_total{provider=\"a\",direction=\"input\"} 30",
            "switchyard_tokens_total{provider=\"a\",direction=\"output\"} 6",
            "switchyard_cost_usd_total{provider=\"a\"} 0.75",
            "switchyard_upstream_attempt_duration_seconds_count{provider=\"a\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn docs_metrics_md_lists_exactly_what_is_exported() {
        let doc = include_str!("../../docs/metrics.md");
        let documented: std::collections::BTreeSet<String> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_owned)
            .collect();
        assert_eq!(documented, exposed());
    }
}
