//! `[governance]`: virtual keys, the customer -> team -> key hierarchy, budgets and rate limits.
//!
//! The entity shapes here are also the bodies of the admin API (`/api/customers`, `/api/teams`,
//! `/api/keys`): one validation, with field paths, for the file and for the API.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::Issue;

/// A budget as written: `{ max_usd = 20.0, period = "1d", calendar_aligned = true }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// Most that may be spent in one period, in USD.
    pub max_usd: f64,
    /// `1m`, `1h`, `1d`, `1w`, `1M`, `1y` (any count, e.g. `30m`), or absent: never resets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// Reset on UTC calendar boundaries (midnight, Monday, the 1st) instead of a period after first use.
    #[serde(default)]
    pub calendar_aligned: bool,
}

/// Rate limits as written; absent fields are unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Prompt plus completion tokens per minute (reserved at admission, corrected at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<u64>,
    /// MCP tool calls per minute (keys only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls_per_minute: Option<u64>,
    /// Limits per model or route (keys only): glob -> limits, e.g.
    /// `models = { "openai/gpt-4o*" = { requests_per_minute = 10 } }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, ModelLimits>,
}

/// A key's limits for the models one glob matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelLimits {
    /// Requests per minute to those models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute to those models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
}

impl LimitsSpec {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A customer (the top of the hierarchy).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerSpec {
    /// Its id (letters, digits, `-`, `_`, `.`).
    pub id: String,
    /// Budgets.
    #[serde(default)]
    pub budgets: Vec<BudgetSpec>,
    /// Rate limits over all its teams' and keys' requests.
    #[serde(default, skip_serializing_if = "LimitsSpec::is_empty")]
    pub rate_limits: LimitsSpec,
    /// Free-form data kept with it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// A team, optionally of a customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamSpec {
    /// Its id.
    pub id: String,
    /// The customer it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// Budgets.
    #[serde(default)]
    pub budgets: Vec<BudgetSpec>,
    /// Rate limits over all its keys' requests.
    #[serde(default, skip_serializing_if = "LimitsSpec::is_empty")]
    pub rate_limits: LimitsSpec,
    /// Free-form data kept with it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// A virtual key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// Its id.
    pub id: String,
    /// A human name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Owning team (its customer is the key's customer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Owning customer, for a key without a team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// The secret, in the config file only (`env.NAME`); API keys get a generated one.
    #[serde(default, skip_serializing)]
    pub value: Option<String>,
    /// Allowed models and routes (globs); absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Refused models and routes (globs), checked after `models`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_models: Vec<String>,
    /// Allowed MCP tools (globs on `server__tool`); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_tools: Option<Vec<String>>,
    /// `[[plugins]]` (by name) this key adds: opt-in plugins (`default_on = false`) run for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<String>,
    /// `[[plugins]]` this key turns off; never a mandatory one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disable_plugins: Vec<String>,
    /// Budgets.
    #[serde(default)]
    pub budgets: Vec<BudgetSpec>,
    /// Rate limits.
    #[serde(default, skip_serializing_if = "LimitsSpec::is_empty")]
    pub rate_limits: LimitsSpec,
    /// RFC 3339 time after which the key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// `false` refuses the key (403 `key_disabled`).
    #[serde(default = "yes")]
    pub active: bool,
    /// Free-form data kept with it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

fn yes() -> bool {
    true
}

/// Where keys and counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GovStore {
    /// The sled store under `data_dir` (one instance).
    Embedded,
    /// Redis (several instances).
    Redis,
}

/// Whose cached answers a governed request may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// The key's own.
    Key,
    /// Its team's (a key without a team: its customer's, else its own).
    Team,
    /// Its customer's (else its team's, else its own).
    Customer,
    /// Everyone's.
    Global,
}

/// `[governance]`, validated.
#[derive(Debug, Clone)]
pub struct GovernanceConfig {
    /// Every request to `/v1`, `/openai`, `/anthropic` and `/mcp` needs a virtual key.
    pub require_virtual_key: bool,
    /// Where counters live.
    pub store: GovStore,
    /// `redis://...` or `unix://...` (store = "redis").
    pub redis_url: Option<String>,
    /// Redis unreachable: refuse (503) when true, admit with a warning when false.
    pub fail_closed: bool,
    /// Cache partition of governed requests.
    pub cache_scope: CacheScope,
    /// Prometheus labels per key.
    pub metrics_per_key: bool,
    /// Admit models without a price under a USD budget (as costing nothing).
    pub allow_unpriced: bool,
    /// Redis store: how long a reservation is held for an instance that never settles it (killed
    /// mid-request) before any instance gives it back.
    pub reservation_ttl: std::time::Duration,
    /// Customers from the file (read-only through the API).
    pub customers: Vec<CustomerSpec>,
    /// Teams from the file.
    pub teams: Vec<TeamSpec>,
    /// Keys from the file, with their secrets resolved.
    pub keys: Vec<KeySpec>,
}

impl Default for GovernanceConfig {
    fn default() -> Self {
        Self {
            require_virtual_key: false,
            store: GovStore::Embedded,
            redis_url: None,
            fail_closed: true,
            cache_scope: CacheScope::Team,
            metrics_per_key: false,
            allow_unpriced: false,
            reservation_ttl: std::time::Duration::from_secs(DEFAULT_RESERVATION_TTL_SECONDS),
            customers: Vec::new(),
            teams: Vec::new(),
            keys: Vec::new(),
        }
    }
}

/// Default of `reservation_ttl_seconds`: an hour, longer than any request or stream should run.
pub const DEFAULT_RESERVATION_TTL_SECONDS: u64 = 3600;

/// `[governance]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawGovernance {
    require_virtual_key: Option<bool>,
    store: Option<String>,
    redis_url: Option<String>,
    fail_closed: Option<bool>,
    cache_scope: Option<String>,
    metrics_per_key: Option<bool>,
    unpriced_models: Option<String>,
    reservation_ttl_seconds: Option<u64>,
    customers: Vec<CustomerSpec>,
    teams: Vec<TeamSpec>,
    keys: Vec<KeySpec>,
}

/// Checks `[governance]`, recording every problem with its path.
pub fn validate(raw: RawGovernance, issues: &mut Vec<Issue>) -> GovernanceConfig {
    let mut g = GovernanceConfig {
        require_virtual_key: raw.require_virtual_key.unwrap_or(false),
        fail_closed: raw.fail_closed.unwrap_or(true),
        metrics_per_key: raw.metrics_per_key.unwrap_or(false),
        redis_url: raw.redis_url,
        ..GovernanceConfig::default()
    };
    g.store = match raw.store.as_deref() {
        None | Some("embedded") => GovStore::Embedded,
        Some("redis") => GovStore::Redis,
        Some(other) => {
            issues.push(Issue::new(
                "governance.store",
                format!("must be `embedded` or `redis`, got `{other}`"),
            ));
            GovStore::Embedded
        }
    };
    if g.store == GovStore::Redis {
        match g.redis_url.as_deref() {
            None => issues.push(Issue::new(
                "governance.redis_url",
                "required with store = \"redis\" (redis://host:6379/0 or unix:///path/redis.sock)",
            )),
            Some(u)
                if !(u.starts_with("redis://")
                    || u.starts_with("unix://")
                    || u.starts_with("redis+unix://")) =>
            {
                issues.push(Issue::new(
                    "governance.redis_url",
                    format!(
                        "`{}` is not a redis:// or unix:// URL (TLS, rediss://, is not built in)",
                        crate::governance::redis::safe_url(u)
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    match raw.reservation_ttl_seconds {
        None => {}
        Some(s @ 1..=604_800) => g.reservation_ttl = std::time::Duration::from_secs(s),
        Some(s) => issues.push(Issue::new(
            "governance.reservation_ttl_seconds",
            format!("must be between 1 and 604800 (a week), got {s}"),
        )),
    }
    g.cache_scope = match raw.cache_scope.as_deref() {
        None | Some("team") => CacheScope::Team,
        Some("key") => CacheScope::Key,
        Some("customer") => CacheScope::Customer,
        Some("global") => CacheScope::Global,
        Some(other) => {
            issues.push(Issue::new(
                "governance.cache_scope",
                format!("must be `key`, `team`, `customer` or `global`, got `{other}`"),
            ));
            CacheScope::Team
        }
    };
    g.allow_unpriced = match raw.unpriced_models.as_deref() {
        None | Some("refuse") => false,
        Some("allow") => true,
        Some(other) => {
            issues.push(Issue::new(
                "governance.unpriced_models",
                format!("must be `refuse` or `allow`, got `{other}`"),
            ));
            false
        }
    };
    let mut customers = HashSet::new();
    for (i, c) in raw.customers.iter().enumerate() {
        let path = format!("governance.customers[{i}]");
        check_customer(c, &path, issues);
        if !customers.insert(c.id.clone()) {
            issues.push(Issue::new(
                format!("{path}.id"),
                format!("`{}` is declared twice", c.id),
            ));
        }
    }
    let mut teams = HashSet::new();
    for (i, t) in raw.teams.iter().enumerate() {
        let path = format!("governance.teams[{i}]");
        check_team(t, &path, issues);
        if let Some(c) = &t.customer
            && !customers.contains(c)
        {
            issues.push(Issue::new(
                format!("{path}.customer"),
                format!("no customer `{c}` is declared"),
            ));
        }
        if !teams.insert(t.id.clone()) {
            issues.push(Issue::new(
                format!("{path}.id"),
                format!("`{}` is declared twice", t.id),
            ));
        }
    }
    let mut keys = HashSet::new();
    let mut values = HashSet::new();
    for (i, k) in raw.keys.iter().enumerate() {
        let path = format!("governance.keys[{i}]");
        check_key(k, &path, issues);
        if let Some(t) = &k.team
            && !teams.contains(t)
        {
            issues.push(Issue::new(
                format!("{path}.team"),
                format!("no team `{t}` is declared"),
            ));
        }
        if let Some(c) = &k.customer
            && !customers.contains(c)
        {
            issues.push(Issue::new(
                format!("{path}.customer"),
                format!("no customer `{c}` is declared"),
            ));
        }
        match k.value.as_deref() {
            None => issues.push(Issue::new(
                format!("{path}.value"),
                "a key in the config file needs its secret, as `env.NAME`",
            )),
            Some(v) if v.trim().len() < 16 => issues.push(Issue::new(
                format!("{path}.value"),
                "the secret must be at least 16 characters",
            )),
            Some(v) => {
                if !values.insert(v.to_owned()) {
                    issues.push(Issue::new(
                        format!("{path}.value"),
                        "two keys have the same secret",
                    ));
                }
            }
        }
        if !keys.insert(k.id.clone()) {
            issues.push(Issue::new(
                format!("{path}.id"),
                format!("`{}` is declared twice", k.id),
            ));
        }
    }
    g.customers = raw.customers;
    g.teams = raw.teams;
    g.keys = raw.keys;
    g
}

/// Checks an id: 1 to 64 of letters, digits, `-`, `_`, `.`.
pub fn check_id(id: &str, path: &str, issues: &mut Vec<Issue>) {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        issues.push(Issue::new(
            format!("{path}.id"),
            format!("`{id}` is not an id (1 to 64 letters, digits, `-`, `_`, `.`)"),
        ));
    }
}

fn check_budgets(budgets: &[BudgetSpec], path: &str, issues: &mut Vec<Issue>) {
    for (i, b) in budgets.iter().enumerate() {
        let p = format!("{path}.budgets[{i}]");
        if !b.max_usd.is_finite() || b.max_usd < 0.0 {
            issues.push(Issue::new(
                format!("{p}.max_usd"),
                format!("must be a number of USD >= 0, got {}", b.max_usd),
            ));
        }
        if let Some(s) = &b.period
            && let Err(e) = crate::governance::period::Period::parse(s)
        {
            issues.push(Issue::new(format!("{p}.period"), e));
        }
        if b.calendar_aligned && b.period.is_none() {
            issues.push(Issue::new(
                format!("{p}.calendar_aligned"),
                "needs a `period` (a budget without one never resets)",
            ));
        }
    }
}

fn check_limits(l: &LimitsSpec, path: &str, key: bool, issues: &mut Vec<Issue>) {
    for (name, v) in [
        ("requests_per_minute", l.requests_per_minute),
        ("tokens_per_minute", l.tokens_per_minute),
        ("concurrent", l.concurrent),
        ("tool_calls_per_minute", l.tool_calls_per_minute),
    ] {
        if v == Some(0) {
            issues.push(Issue::new(
                format!("{path}.rate_limits.{name}"),
                "must be at least 1 (leave it out for no limit)",
            ));
        }
    }
    if !key && l.tool_calls_per_minute.is_some() {
        issues.push(Issue::new(
            format!("{path}.rate_limits.tool_calls_per_minute"),
            "is a per-key limit",
        ));
    }
    if !key && !l.models.is_empty() {
        issues.push(Issue::new(
            format!("{path}.rate_limits.models"),
            "per-model limits are per key",
        ));
    }
    for (glob, m) in &l.models {
        let p = format!("{path}.rate_limits.models.\"{glob}\"");
        if let Err(e) = crate::governance::glob::check(glob) {
            issues.push(Issue::new(p.clone(), e));
        }
        for (name, v) in [
            ("requests_per_minute", m.requests_per_minute),
            ("tokens_per_minute", m.tokens_per_minute),
        ] {
            if v == Some(0) {
                issues.push(Issue::new(
                    format!("{p}.{name}"),
                    "must be at least 1 (leave it out for no limit)",
                ));
            }
        }
    }
}

/// Checks a customer's fields.
pub fn check_customer(c: &CustomerSpec, path: &str, issues: &mut Vec<Issue>) {
    check_id(&c.id, path, issues);
    check_budgets(&c.budgets, path, issues);
    check_limits(&c.rate_limits, path, false, issues);
}

/// Checks a team's fields (not whether its customer exists).
pub fn check_team(t: &TeamSpec, path: &str, issues: &mut Vec<Issue>) {
    check_id(&t.id, path, issues);
    check_budgets(&t.budgets, path, issues);
    check_limits(&t.rate_limits, path, false, issues);
}

/// Checks a key's fields (not whether its team or customer exists).
pub fn check_key(k: &KeySpec, path: &str, issues: &mut Vec<Issue>) {
    check_id(&k.id, path, issues);
    if k.team.is_some() && k.customer.is_some() {
        issues.push(Issue::new(
            format!("{path}.customer"),
            "give a key a team or a customer, not both (a team's key belongs to the team's customer)",
        ));
    }
    for (field, globs) in [
        ("models", k.models.as_deref().unwrap_or_default()),
        ("deny_models", k.deny_models.as_slice()),
        ("mcp_tools", k.mcp_tools.as_deref().unwrap_or_default()),
    ] {
        for (i, g) in globs.iter().enumerate() {
            if let Err(e) = crate::governance::glob::check(g) {
                issues.push(Issue::new(format!("{path}.{field}[{i}]"), e));
            }
        }
    }
    check_budgets(&k.budgets, path, issues);
    check_limits(&k.rate_limits, path, true, issues);
    if let Some(t) = &k.expires_at
        && chrono::DateTime::parse_from_rfc3339(t).is_err()
    {
        issues.push(Issue::new(
            format!("{path}.expires_at"),
            format!("`{t}` is not an RFC 3339 time like 2027-06-30T00:00:00Z"),
        ));
    }
}
