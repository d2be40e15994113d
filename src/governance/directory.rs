//! The directory of customers, teams and keys: from the config file (read-only) and from the
//! admin API (kept in the store, secrets as SHA-256 hashes only). Read lock-free on the request
//! path; changed by copying, persisting and swapping.

use foldhash::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::counters::{AnyCounters, Charge, Kind};
use super::period::{Period, Unit, Window};
pub use super::views::BudgetState;
use super::{GovernanceError, KEY_PREFIX, hash_secret};
use crate::config::Issue;
use crate::config::governance::{
    BudgetSpec, CacheScope, CustomerSpec, GovernanceConfig, KeySpec, LimitsSpec, TeamSpec,
    check_customer, check_key, check_team,
};
use crate::store::{Store, trees};

/// Customers, teams or keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    /// `/api/customers`
    Customer,
    /// `/api/teams`
    Team,
    /// `/api/keys`
    Key,
}

impl EntityKind {
    /// `customer`, `team`, `key`.
    pub fn word(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Team => "team",
            Self::Key => "key",
        }
    }
}

/// One level of the hierarchy as the counters see it: its buckets.
#[derive(Debug, Clone)]
pub struct Level {
    /// Bucket id prefix, e.g. `team:search:`.
    pub prefix: String,
    /// How errors name it, e.g. "team `search`".
    pub name: String,
    /// (window, max USD) per budget.
    pub budgets: Vec<(Window, f64)>,
    /// Its rate limits.
    pub limits: LimitsSpec,
    /// Its buckets for one request (amounts filled in per request).
    template: Vec<Charge>,
    /// Per-model buckets (keys): glob -> buckets.
    per_model: Vec<(String, Vec<Charge>)>,
}

/// Fixed one-minute windows for rate limits.
const MINUTE: Window = Window::Calendar(Period {
    n: 1,
    unit: Unit::Minute,
});

impl Level {
    fn new(kind: EntityKind, id: &str, budgets: &[BudgetSpec], limits: &LimitsSpec) -> Self {
        let prefix = format!("{}:{id}:", kind.word());
        let charge = |name: &str, kind, limit: u64, window| Charge {
            bucket: Arc::from(format!("{prefix}{name}")),
            kind,
            limit: limit as f64,
            window,
            amount: 0.0,
        };
        let budgets: Vec<(Window, f64)> = budgets
            .iter()
            .map(|b| {
                let p = b.period.as_deref().and_then(|s| Period::parse(s).ok());
                (Window::new(p, b.calendar_aligned), b.max_usd)
            })
            .collect();
        let mut template: Vec<Charge> = budgets
            .iter()
            .enumerate()
            .map(|(i, (window, max))| Charge {
                bucket: Arc::from(format!("{prefix}budget{i}")),
                kind: Kind::Budget,
                limit: *max,
                window: *window,
                amount: 0.0,
            })
            .collect();
        let l = limits;
        for (k, limit, name, window) in [
            (Kind::Requests, l.requests_per_minute, "rpm", MINUTE),
            (Kind::Tokens, l.tokens_per_minute, "tpm", MINUTE),
            (Kind::Concurrent, l.concurrent, "concurrent", Window::Never),
        ] {
            if let Some(limit) = limit {
                template.push(charge(name, k, limit, window));
            }
        }
        let per_model = l
            .models
            .iter()
            .map(|(glob, m)| {
                let mut charges = Vec::new();
                for (k, limit, name) in [
                    (Kind::Requests, m.requests_per_minute, "rpm"),
                    (Kind::Tokens, m.tokens_per_minute, "tpm"),
                ] {
                    if let Some(limit) = limit {
                        charges.push(charge(&format!("model:{glob}:{name}"), k, limit, MINUTE));
                    }
                }
                (glob.clone(), charges)
            })
            .collect();
        Self {
            name: format!("{} `{id}`", kind.word()),
            prefix,
            budgets,
            limits: limits.clone(),
            template,
            per_model,
        }
    }

    /// A request's charges from templates: worst-case USD for budgets, tokens for token limits,
    /// one for the rest.
    fn fill(template: &[Charge], usd: f64, tokens: f64, out: &mut Vec<Charge>) {
        out.extend(template.iter().map(|t| Charge {
            amount: match t.kind {
                Kind::Budget => usd,
                Kind::Tokens => tokens,
                _ => 1.0,
            },
            ..t.clone()
        }));
    }

    /// The per-model limits (keys) whose glob matches `model`.
    pub fn model_charges(&self, model: &str, tokens: f64, out: &mut Vec<Charge>) {
        for (glob, template) in &self.per_model {
            if super::glob::matches(glob, model) {
                Self::fill(template, 0.0, tokens, out);
            }
        }
    }

    /// This level's buckets (amounts zero): what the API and the metrics show.
    pub fn buckets(&self) -> &[Charge] {
        &self.template
    }

    /// The charges of one request at this level (bucket names are built once per entity).
    pub fn charges(&self, usd: f64, tokens: f64, out: &mut Vec<Charge>) {
        Self::fill(&self.template, usd, tokens, out);
    }
}

/// A secret of a key: its hash and the prefix shown instead of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretRec {
    /// SHA-256, hex.
    pub hash: String,
    /// `sk-sy-` and the next 6 characters.
    pub prefix: String,
    /// Rotated out: valid until then (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until_ms: Option<i64>,
}

/// A customer.
#[derive(Debug, Clone)]
pub struct CustomerEntry {
    /// As written.
    pub spec: CustomerSpec,
    /// Its buckets.
    pub level: Level,
    /// Declared in the config file (read-only).
    pub from_config: bool,
    /// Creation time (ms).
    pub created_ms: i64,
}

/// A team.
#[derive(Debug, Clone)]
pub struct TeamEntry {
    /// As written.
    pub spec: TeamSpec,
    /// Its buckets.
    pub level: Level,
    /// Declared in the config file (read-only).
    pub from_config: bool,
    /// Creation time (ms).
    pub created_ms: i64,
}

/// A key.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// As written (without the secret).
    pub spec: KeySpec,
    /// Its buckets.
    pub level: Level,
    /// Its secrets (the newest last).
    pub secrets: Vec<SecretRec>,
    /// `expires_at` in ms.
    pub expires_ms: Option<i64>,
    /// Declared in the config file (read-only).
    pub from_config: bool,
    /// Creation time (ms).
    pub created_ms: i64,
}

impl KeyEntry {
    /// Its team.
    pub fn team(&self) -> Option<String> {
        self.spec.team.clone()
    }
}

/// Everything known, swapped whole on change.
#[derive(Debug, Default, Clone)]
pub struct Directory {
    /// By id.
    pub customers: HashMap<String, Arc<CustomerEntry>>,
    /// By id.
    pub teams: HashMap<String, Arc<TeamEntry>>,
    /// By id.
    pub keys: HashMap<String, Arc<KeyEntry>>,
    /// Secret hash -> (key id, valid until ms for rotated-out secrets).
    pub by_hash: HashMap<String, (String, Option<i64>)>,
    /// Key id -> who a request with it is, built with the index: admission hands it out
    /// instead of copying the key's names, tools and partition on every request.
    pub principals: HashMap<String, Arc<super::Principal>>,
}

impl Directory {
    /// The key's level, then its team's and its customer's.
    pub fn chain<'a>(&'a self, k: &'a KeyEntry) -> Vec<&'a Level> {
        let mut out = vec![&k.level];
        let team = k.spec.team.as_ref().and_then(|t| self.teams.get(t));
        if let Some(t) = team {
            out.push(&t.level);
        }
        if let Some(c) = self.customer_of(k).and_then(|c| self.customers.get(&c)) {
            out.push(&c.level);
        }
        out
    }

    /// The key's customer: its team's, or its own.
    pub fn customer_of(&self, k: &KeyEntry) -> Option<String> {
        k.spec
            .team
            .as_ref()
            .and_then(|t| self.teams.get(t))
            .and_then(|t| t.spec.customer.clone())
            .or_else(|| k.spec.customer.clone())
    }

    fn index(&mut self, scope: CacheScope) {
        self.by_hash.clear();
        for k in self.keys.values() {
            for s in &k.secrets {
                self.by_hash
                    .insert(s.hash.clone(), (k.spec.id.clone(), s.valid_until_ms));
            }
        }
        let principals = self
            .keys
            .values()
            .map(|k| (k.spec.id.clone(), Arc::new(self.principal(k, scope))))
            .collect();
        self.principals = principals;
    }

    /// Who a request with key `k` is.
    fn principal(&self, k: &KeyEntry, scope: CacheScope) -> super::Principal {
        let team = k.team();
        let customer = self.customer_of(k);
        let key = || format!("key:{}", k.spec.id);
        let cache_partition = match scope {
            CacheScope::Global => String::new(),
            CacheScope::Key => key(),
            CacheScope::Team => team
                .as_ref()
                .map(|t| format!("team:{t}"))
                .or(customer.as_ref().map(|c| format!("customer:{c}")))
                .unwrap_or_else(key),
            CacheScope::Customer => customer
                .as_ref()
                .map(|c| format!("customer:{c}"))
                .or(team.as_ref().map(|t| format!("team:{t}")))
                .unwrap_or_else(key),
        };
        super::Principal {
            key: k.spec.id.clone(),
            team,
            customer,
            mcp_tools: k.spec.mcp_tools.clone(),
            cache_partition,
            plugins: crate::request::KeyPlugins {
                add: k.spec.plugins.clone(),
                remove: k.spec.disable_plugins.clone(),
            },
            tool_limit: k.spec.rate_limits.tool_calls_per_minute.map(|n| Charge {
                bucket: format!("{}tool_calls", k.level.prefix).into(),
                kind: Kind::ToolCalls,
                limit: n as f64,
                window: Window::Calendar(Period {
                    n: 1,
                    unit: Unit::Minute,
                }),
                amount: 1.0,
            }),
            tools: std::sync::OnceLock::new(),
        }
    }
}

fn key_entry(
    spec: KeySpec,
    secrets: Vec<SecretRec>,
    from_config: bool,
    created_ms: i64,
) -> KeyEntry {
    let expires_ms = spec
        .expires_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis());
    KeyEntry {
        level: Level::new(EntityKind::Key, &spec.id, &spec.budgets, &spec.rate_limits),
        spec,
        secrets,
        expires_ms,
        from_config,
        created_ms,
    }
}

fn team_entry(spec: TeamSpec, from_config: bool, created_ms: i64) -> TeamEntry {
    TeamEntry {
        level: Level::new(EntityKind::Team, &spec.id, &spec.budgets, &spec.rate_limits),
        spec,
        from_config,
        created_ms,
    }
}

fn customer_entry(spec: CustomerSpec, from_config: bool, created_ms: i64) -> CustomerEntry {
    CustomerEntry {
        level: Level::new(
            EntityKind::Customer,
            &spec.id,
            &spec.budgets,
            &spec.rate_limits,
        ),
        spec,
        from_config,
        created_ms,
    }
}

/// What the store keeps of an API-made entity.
// Decoded once per record and then taken apart; boxing the key's spec would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Stored {
    Customer {
        spec: CustomerSpec,
        created_ms: i64,
    },
    Team {
        spec: TeamSpec,
        created_ms: i64,
    },
    Key {
        spec: KeySpec,
        secrets: Vec<SecretRec>,
        created_ms: i64,
    },
}

/// A new secret: `sk-sy-` and 40 hex characters from the OS's random source.
fn new_secret() -> Result<(String, SecretRec), GovernanceError> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes)
        .map_err(|e| GovernanceError::Store(format!("no randomness: {e}")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let secret = format!("{KEY_PREFIX}{hex}");
    let rec = SecretRec {
        hash: hash_secret(&secret),
        prefix: secret.chars().take(KEY_PREFIX.len() + 6).collect(),
        valid_until_ms: None,
    };
    Ok((secret, rec))
}

fn issues_text(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where API-made entities are kept.
pub enum Persist {
    /// The sled store (one instance); none when it could not be opened.
    Sled(Option<Store>),
    /// Redis, shared by several instances.
    Redis(redis::aio::ConnectionManager),
    /// Postgres (`[server] state = "postgres"`), shared by a fleet; the counters stay where
    /// `[governance] store` puts them.
    Postgres(Arc<crate::store::postgres::Postgres>),
}

type Records = Vec<(String, Result<Stored, String>)>;

/// The config's entities and the stored ones (a config entity wins over a stored one with its id:
/// the file is the source of truth).
fn build(cfg: &GovernanceConfig, records: Records) -> Directory {
    let now = Utc::now().timestamp_millis();
    let mut d = Directory::default();
    for c in &cfg.customers {
        d.customers
            .insert(c.id.clone(), Arc::new(customer_entry(c.clone(), true, now)));
    }
    for t in &cfg.teams {
        d.teams
            .insert(t.id.clone(), Arc::new(team_entry(t.clone(), true, now)));
    }
    for k in &cfg.keys {
        let secret = k.value.clone().unwrap_or_default();
        let rec = SecretRec {
            hash: hash_secret(secret.trim()),
            prefix: secret.trim().chars().take(KEY_PREFIX.len() + 6).collect(),
            valid_until_ms: None,
        };
        let mut spec = k.clone();
        spec.value = None;
        d.keys.insert(
            k.id.clone(),
            Arc::new(key_entry(spec, vec![rec], true, now)),
        );
    }
    for (name, rec) in records {
        match rec {
            Ok(Stored::Customer { spec, created_ms }) => {
                if !d.customers.contains_key(&spec.id) {
                    let e = customer_entry(spec, false, created_ms);
                    d.customers.insert(e.spec.id.clone(), Arc::new(e));
                }
            }
            Ok(Stored::Team { spec, created_ms }) => {
                if !d.teams.contains_key(&spec.id) {
                    let e = team_entry(spec, false, created_ms);
                    d.teams.insert(e.spec.id.clone(), Arc::new(e));
                }
            }
            Ok(Stored::Key {
                spec,
                secrets,
                created_ms,
            }) => {
                if !d.keys.contains_key(&spec.id) {
                    let e = key_entry(spec, secrets, false, created_ms);
                    d.keys.insert(e.spec.id.clone(), Arc::new(e));
                }
            }
            Err(e) => {
                tracing::error!(record = %name, error = %e, "a stored governance entity could not be read; it is ignored");
            }
        }
    }
    d.index(cfg.cache_scope);
    d
}

fn store_err(e: impl std::fmt::Display) -> GovernanceError {
    GovernanceError::StoreUnavailable(format!("the governance store failed: {e}"))
}

/// The directory, its store, and the lock that orders changes.
pub struct Handle {
    current: ArcSwap<Directory>,
    write: tokio::sync::Mutex<()>,
    persist: Persist,
    config: GovernanceConfig,
    /// `sy:gov:version` last loaded (Redis).
    version: std::sync::atomic::AtomicI64,
}

impl Handle {
    /// Builds the directory from the config and the store.
    pub async fn open(cfg: &GovernanceConfig, persist: Persist) -> Result<Self, GovernanceError> {
        let (records, version) = load(&persist).await?;
        Ok(Self {
            current: ArcSwap::from_pointee(build(cfg, records)),
            write: tokio::sync::Mutex::new(()),
            persist,
            config: cfg.clone(),
            version: std::sync::atomic::AtomicI64::new(version),
        })
    }

    /// Whether several instances share the entities (Redis or Postgres).
    pub fn shared(&self) -> bool {
        !matches!(self.persist, Persist::Sled(_))
    }

    /// Whether the entities live in a fleet's Postgres.
    pub fn on_postgres(&self) -> bool {
        matches!(self.persist, Persist::Postgres(_))
    }

    /// Where the entities are kept, for messages.
    fn store_name(&self) -> &'static str {
        match self.persist {
            Persist::Sled(_) => "the embedded store",
            Persist::Redis(_) => "redis",
            Persist::Postgres(_) => "postgres",
        }
    }

    /// Reloads the entities when another instance changed them (shared stores): `Err` when the
    /// store cannot be read.
    pub async fn refresh(&self) -> Result<(), GovernanceError> {
        let latest = match &self.persist {
            Persist::Sled(_) => return Ok(()),
            Persist::Redis(conn) => {
                let mut c = conn.clone();
                let v: Option<i64> = redis::cmd("GET")
                    .arg(super::redis::VERSION)
                    .query_async(&mut c)
                    .await
                    .map_err(store_err)?;
                v.unwrap_or(0)
            }
            Persist::Postgres(pg) => pg.gov_version().await.map_err(store_err)?,
        };
        if latest == self.version.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let _w = self.write.lock().await;
        let (records, version) = load(&self.persist).await?;
        self.current.store(Arc::new(build(&self.config, records)));
        self.version
            .store(version, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Reloads the entities when another instance changed them, twice a second (with Postgres
    /// a notification also reloads them at once: see the application's watcher).
    pub async fn poll(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        if !self.shared() {
            return;
        }
        let mut failing = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                () = stop.cancelled() => return,
            }
            match self.refresh().await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    tracing::warn!(store = self.store_name(), error = %e, "governance store unreachable: keys changed on other instances are not seen until it is back");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// The current directory.
    pub fn load(&self) -> arc_swap::Guard<Arc<Directory>> {
        self.current.load()
    }

    /// The current directory, to hold across an await.
    pub fn load_full(&self) -> Arc<Directory> {
        self.current.load_full()
    }

    /// Applies `change` to a fresh copy (re-read from Redis when shared), persists what it
    /// returns, and swaps it in.
    async fn change<T>(
        &self,
        change: impl FnOnce(
            &mut Directory,
        ) -> Result<(T, Vec<(String, Option<Stored>)>), GovernanceError>,
    ) -> Result<T, GovernanceError> {
        let _w = self.write.lock().await;
        let mut pending = None;
        let mut d = match &self.persist {
            Persist::Redis(_) => build(&self.config, load(&self.persist).await?.0),
            Persist::Postgres(pg) => {
                let (tx, records) = pg.gov_begin().await.map_err(store_err)?;
                pending = Some(tx);
                build(&self.config, decode_all(records))
            }
            Persist::Sled(_) => (**self.current.load()).clone(),
        };
        let (out, writes) = change(&mut d)?;
        match &self.persist {
            Persist::Postgres(_) => {
                let mut rows = Vec::with_capacity(writes.len());
                for (name, rec) in writes {
                    let json = rec
                        .map(|r| serde_json::to_string(&r))
                        .transpose()
                        .map_err(|e| GovernanceError::Store(e.to_string()))?;
                    rows.push((name, json));
                }
                if let Some(tx) = pending {
                    let version = tx.commit(&rows).await.map_err(store_err)?;
                    self.version
                        .store(version, std::sync::atomic::Ordering::Release);
                }
            }
            Persist::Sled(Some(s)) => {
                for (name, rec) in writes {
                    let r = match rec {
                        Some(rec) => s.put(trees::GOV_ENTITIES, &name, &rec),
                        None => s.remove(trees::GOV_ENTITIES, &name).map(|_| ()),
                    };
                    r.map_err(|e| GovernanceError::Store(e.to_string()))?;
                }
            }
            Persist::Sled(None) => {}
            Persist::Redis(conn) => {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for (name, rec) in writes {
                    match rec {
                        Some(rec) => {
                            let json = serde_json::to_string(&rec)
                                .map_err(|e| GovernanceError::Store(e.to_string()))?;
                            pipe.hset(super::redis::ENTITIES, name, json).ignore();
                        }
                        None => {
                            pipe.hdel(super::redis::ENTITIES, name).ignore();
                        }
                    }
                }
                pipe.incr(super::redis::VERSION, 1);
                let mut c = conn.clone();
                let (version,): (i64,) = pipe.query_async(&mut c).await.map_err(store_err)?;
                self.version
                    .store(version, std::sync::atomic::Ordering::Release);
            }
        }
        d.index(self.config.cache_scope);
        self.current.store(Arc::new(d));
        Ok(out)
    }

    /// Creates an entity from a JSON body; for a key, also returns its secret (shown once).
    pub async fn create(
        &self,
        kind: EntityKind,
        body: Value,
    ) -> Result<(String, Option<String>), GovernanceError> {
        if kind == EntityKind::Key && body.get("value").is_some() {
            return Err(GovernanceError::Invalid(
                "`value`: the secret of a key made through the API is generated (and shown once); it cannot be given".into(),
            ));
        }
        let id = body
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let (secret, secrets) = if kind == EntityKind::Key {
            let (secret, rec) = new_secret()?;
            (Some(secret), vec![rec])
        } else {
            (None, Vec::new())
        };
        let now = Utc::now().timestamp_millis();
        self.change(|d| {
            let taken = match kind {
                EntityKind::Customer => d.customers.contains_key(&id),
                EntityKind::Team => d.teams.contains_key(&id),
                EntityKind::Key => d.keys.contains_key(&id),
            };
            if taken {
                return Err(GovernanceError::Conflict(format!(
                    "a {} named `{id}` exists",
                    kind.word()
                )));
            }
            let (id, write) = put(d, kind, body, now, secrets)?;
            Ok(((id, secret), vec![write]))
        })
        .await
    }

    /// Merges the given fields into an entity made through the API.
    pub async fn patch(
        &self,
        kind: EntityKind,
        id: &str,
        body: Value,
    ) -> Result<(), GovernanceError> {
        let Value::Object(fields) = body else {
            return Err(GovernanceError::Invalid(
                "the body must be a JSON object of the fields to change".into(),
            ));
        };
        if fields.get("id").is_some_and(|v| v.as_str() != Some(id)) {
            return Err(GovernanceError::Invalid("`id` cannot be changed".into()));
        }
        if fields.contains_key("value") {
            return Err(GovernanceError::Invalid(
                "`value`: use POST /api/keys/{id}/rotate for a new secret".into(),
            ));
        }
        self.change(|d| {
            let (current, from_config, created_ms, secrets) = match kind {
                EntityKind::Customer => d
                    .customers
                    .get(id)
                    .map(|e| (to_value(&e.spec), e.from_config, e.created_ms, Vec::new())),
                EntityKind::Team => d
                    .teams
                    .get(id)
                    .map(|e| (to_value(&e.spec), e.from_config, e.created_ms, Vec::new())),
                EntityKind::Key => d.keys.get(id).map(|e| {
                    (
                        to_value(&e.spec),
                        e.from_config,
                        e.created_ms,
                        e.secrets.clone(),
                    )
                }),
            }
            .ok_or_else(|| not_found(kind, id))?;
            read_only(from_config, kind, id)?;
            let mut merged = current?;
            if let Value::Object(m) = &mut merged {
                m.extend(fields);
            }
            let (_, write) = put(d, kind, merged, created_ms, secrets)?;
            Ok(((), vec![write]))
        })
        .await
    }

    /// Deletes an entity made through the API (409 while it owns teams or keys).
    pub async fn delete(
        &self,
        kind: EntityKind,
        id: &str,
        counters: &AnyCounters,
    ) -> Result<(), GovernanceError> {
        self.change(|d| {
            let from_config = match kind {
                EntityKind::Customer => d.customers.get(id).map(|e| e.from_config),
                EntityKind::Team => d.teams.get(id).map(|e| e.from_config),
                EntityKind::Key => d.keys.get(id).map(|e| e.from_config),
            }
            .ok_or_else(|| not_found(kind, id))?;
            read_only(from_config, kind, id)?;
            let mut owned: Vec<String> = Vec::new();
            if kind != EntityKind::Key {
                for k in d.keys.values() {
                    let mine = match kind {
                        EntityKind::Team => k.spec.team.as_deref() == Some(id),
                        _ => k.spec.customer.as_deref() == Some(id),
                    };
                    if mine {
                        owned.push(format!("key `{}`", k.spec.id));
                    }
                }
            }
            if kind == EntityKind::Customer {
                for t in d.teams.values() {
                    if t.spec.customer.as_deref() == Some(id) {
                        owned.push(format!("team `{}`", t.spec.id));
                    }
                }
            }
            if !owned.is_empty() {
                owned.sort();
                return Err(GovernanceError::Conflict(format!(
                    "the {} `{id}` still owns {}: delete or move them first",
                    kind.word(),
                    owned.join(", ")
                )));
            }
            match kind {
                EntityKind::Customer => d.customers.remove(id).map(|_| ()),
                EntityKind::Team => d.teams.remove(id).map(|_| ()),
                EntityKind::Key => d.keys.remove(id).map(|_| ()),
            };
            Ok(((), vec![(format!("{}/{id}", kind.word()), None)]))
        })
        .await?;
        counters.forget(&format!("{}:{id}:", kind.word())).await;
        Ok(())
    }

    /// A new secret for a key; the old ones stay valid for `grace_seconds`.
    pub async fn rotate(&self, id: &str, grace_seconds: u64) -> Result<String, GovernanceError> {
        let (secret, rec) = new_secret()?;
        let until = Utc::now()
            .timestamp_millis()
            .saturating_add(i64::try_from(grace_seconds.saturating_mul(1000)).unwrap_or(i64::MAX));
        self.change(|d| {
            let e = d
                .keys
                .get(id)
                .ok_or_else(|| not_found(EntityKind::Key, id))?;
            read_only(e.from_config, EntityKind::Key, id)?;
            let mut secrets: Vec<SecretRec> = e
                .secrets
                .iter()
                .filter(|s| {
                    s.valid_until_ms
                        .is_none_or(|t| t > Utc::now().timestamp_millis())
                })
                .cloned()
                .map(|mut s| {
                    s.valid_until_ms = Some(s.valid_until_ms.map_or(until, |t| t.min(until)));
                    s
                })
                .collect();
            secrets.push(rec);
            let (spec, created_ms) = (e.spec.clone(), e.created_ms);
            let stored = Stored::Key {
                spec: spec.clone(),
                secrets: secrets.clone(),
                created_ms,
            };
            d.keys.insert(
                id.to_owned(),
                Arc::new(key_entry(spec, secrets, false, created_ms)),
            );
            Ok((secret, vec![(format!("key/{id}"), Some(stored))]))
        })
        .await
    }

    /// (level, id, period, spent, remaining) of every budget of customers and teams, and of keys
    /// when `per_key` (for the Prometheus gauges).
    pub async fn budget_states(&self, counters: &AnyCounters, per_key: bool) -> Vec<BudgetState> {
        super::views::budget_states(&self.load_full(), counters, per_key).await
    }

    /// Every entity of a kind, as the API shows them.
    pub async fn list(&self, kind: EntityKind, counters: &AnyCounters) -> Vec<Value> {
        super::views::list(&self.load_full(), kind, counters).await
    }

    /// One entity as the API shows it.
    pub async fn get(
        &self,
        kind: EntityKind,
        id: &str,
        counters: &AnyCounters,
    ) -> Result<Value, GovernanceError> {
        super::views::one(&self.load_full(), kind, id, counters)
            .await
            .ok_or_else(|| not_found(kind, id))
    }
}

/// Parses and checks an entity, checks that its owners exist, and puts it in the directory (new
/// or replacing the one with its id); returns its id and what the store keeps.
fn put(
    d: &mut Directory,
    kind: EntityKind,
    body: Value,
    created_ms: i64,
    secrets: Vec<SecretRec>,
) -> Result<(String, (String, Option<Stored>)), GovernanceError> {
    let mut issues = Vec::new();
    let (id, stored) = match kind {
        EntityKind::Customer => {
            let spec: CustomerSpec = parse(body)?;
            check_customer(&spec, "", &mut issues);
            invalid(&issues)?;
            let entry = customer_entry(spec.clone(), false, created_ms);
            d.customers.insert(spec.id.clone(), Arc::new(entry));
            (spec.id.clone(), Stored::Customer { spec, created_ms })
        }
        EntityKind::Team => {
            let spec: TeamSpec = parse(body)?;
            check_team(&spec, "", &mut issues);
            invalid(&issues)?;
            owner_exists(d, None, spec.customer.as_deref())?;
            let entry = team_entry(spec.clone(), false, created_ms);
            d.teams.insert(spec.id.clone(), Arc::new(entry));
            (spec.id.clone(), Stored::Team { spec, created_ms })
        }
        EntityKind::Key => {
            let spec: KeySpec = parse(body)?;
            check_key(&spec, "", &mut issues);
            invalid(&issues)?;
            owner_exists(d, spec.team.as_deref(), spec.customer.as_deref())?;
            let entry = key_entry(spec.clone(), secrets.clone(), false, created_ms);
            d.keys.insert(spec.id.clone(), Arc::new(entry));
            let stored = Stored::Key {
                spec: spec.clone(),
                secrets,
                created_ms,
            };
            (spec.id, stored)
        }
    };
    let name = format!("{}/{id}", kind.word());
    Ok((id, (name, Some(stored))))
}

/// The stored entities and the version they are at.
async fn load(persist: &Persist) -> Result<(Records, i64), GovernanceError> {
    match persist {
        Persist::Sled(None) => Ok((Vec::new(), 0)),
        Persist::Sled(Some(s)) => {
            let records = s
                .list::<Stored>(trees::GOV_ENTITIES)
                .map_err(|e| GovernanceError::Store(e.to_string()))?
                .into_iter()
                .map(|(k, v)| (k, v.map_err(|e| e.to_string())))
                .collect();
            Ok((records, 0))
        }
        Persist::Redis(conn) => {
            let mut c = conn.clone();
            let (all, version): (Vec<(String, String)>, Option<i64>) = redis::pipe()
                .atomic()
                .hgetall(super::redis::ENTITIES)
                .get(super::redis::VERSION)
                .query_async(&mut c)
                .await
                .map_err(store_err)?;
            Ok((decode_all(all), version.unwrap_or(0)))
        }
        Persist::Postgres(pg) => {
            let (all, version) = pg.gov_load().await.map_err(store_err)?;
            Ok((decode_all(all), version))
        }
    }
}

/// Records kept as JSON text, each read on its own (one bad record does not hide the others).
fn decode_all(all: Vec<(String, String)>) -> Records {
    all.into_iter()
        .map(|(k, v)| {
            let r = serde_json::from_str::<Stored>(&v).map_err(|e| e.to_string());
            (k, r)
        })
        .collect()
}

fn parse<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, GovernanceError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            GovernanceError::Invalid(e.into_inner().to_string())
        } else {
            GovernanceError::Invalid(format!("`{path}`: {}", e.into_inner()))
        }
    })
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, GovernanceError> {
    serde_json::to_value(v).map_err(|e| GovernanceError::Store(e.to_string()))
}

fn invalid(issues: &[Issue]) -> Result<(), GovernanceError> {
    if issues.is_empty() {
        Ok(())
    } else {
        Err(GovernanceError::Invalid(issues_text(issues)))
    }
}

fn owner_exists(
    d: &Directory,
    team: Option<&str>,
    customer: Option<&str>,
) -> Result<(), GovernanceError> {
    if let Some(t) = team
        && !d.teams.contains_key(t)
    {
        return Err(GovernanceError::Invalid(format!(
            "`team`: no team `{t}` exists"
        )));
    }
    if let Some(c) = customer
        && !d.customers.contains_key(c)
    {
        return Err(GovernanceError::Invalid(format!(
            "`customer`: no customer `{c}` exists"
        )));
    }
    Ok(())
}

fn read_only(from_config: bool, kind: EntityKind, id: &str) -> Result<(), GovernanceError> {
    if from_config {
        return Err(GovernanceError::Conflict(format!(
            "the {} `{id}` is declared in the config file and is read-only here: change the file",
            kind.word()
        )));
    }
    Ok(())
}

fn not_found(kind: EntityKind, id: &str) -> GovernanceError {
    GovernanceError::NotFound(format!("no {} `{id}`", kind.word()))
}
