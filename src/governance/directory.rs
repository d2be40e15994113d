//! The directory of customers, teams and keys: from the config file (read-only) and from the
//! admin API (kept in the store, secrets as SHA-256 hashes only). Read lock-free on the request
//! path; changed by copying, persisting and swapping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::counters::{Charge, Counters, Kind};
use super::period::{Period, Unit, Window};
use super::{GovernanceError, KEY_PREFIX, hash_secret};
use crate::config::Issue;
use crate::config::governance::{
    BudgetSpec, CustomerSpec, GovernanceConfig, KeySpec, LimitsSpec, TeamSpec, check_customer,
    check_key, check_team,
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
    fn word(self) -> &'static str {
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
}

/// Fixed one-minute windows for rate limits.
const MINUTE: Window = Window::Calendar(Period {
    n: 1,
    unit: Unit::Minute,
});

impl Level {
    fn new(kind: EntityKind, id: &str, budgets: &[BudgetSpec], limits: &LimitsSpec) -> Self {
        Self {
            prefix: format!("{}:{id}:", kind.word()),
            name: format!("{} `{id}`", kind.word()),
            budgets: budgets
                .iter()
                .map(|b| {
                    let p = b.period.as_deref().and_then(|s| Period::parse(s).ok());
                    (Window::new(p, b.calendar_aligned), b.max_usd)
                })
                .collect(),
            limits: limits.clone(),
        }
    }

    /// The charges of one request at this level.
    pub fn charges(&self, usd: f64, tokens: f64, out: &mut Vec<Charge>) {
        for (i, (window, max)) in self.budgets.iter().enumerate() {
            out.push(Charge {
                bucket: format!("{}budget{i}", self.prefix),
                kind: Kind::Budget,
                limit: *max,
                window: *window,
                amount: usd,
            });
        }
        let l = &self.limits;
        for (kind, limit, name, amount) in [
            (Kind::Requests, l.requests_per_minute, "rpm", 1.0),
            (Kind::Tokens, l.tokens_per_minute, "tpm", tokens),
            (Kind::Concurrent, l.concurrent, "concurrent", 1.0),
        ] {
            if let Some(limit) = limit {
                out.push(Charge {
                    bucket: format!("{}{name}", self.prefix),
                    kind,
                    limit: limit as f64,
                    window: if kind == Kind::Concurrent {
                        Window::Never
                    } else {
                        MINUTE
                    },
                    amount,
                });
            }
        }
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

    fn index(&mut self) {
        self.by_hash.clear();
        for k in self.keys.values() {
            for s in &k.secrets {
                self.by_hash
                    .insert(s.hash.clone(), (k.spec.id.clone(), s.valid_until_ms));
            }
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

/// The directory, its store, and the lock that orders changes.
pub struct Handle {
    current: ArcSwap<Directory>,
    write: Mutex<()>,
    store: Option<Store>,
}

impl Handle {
    /// Builds the directory from the config and the store.
    pub fn open(cfg: &GovernanceConfig, store: Option<Store>) -> Result<Self, GovernanceError> {
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
        if let Some(s) = &store {
            let records = s
                .list::<Stored>(trees::GOV_ENTITIES)
                .map_err(|e| GovernanceError::Store(e.to_string()))?;
            for (name, rec) in records {
                match rec {
                    // A config entity with the same id wins (the file is the source of truth).
                    Ok(Stored::Customer { spec, created_ms }) => {
                        if !d.customers.contains_key(&spec.id) {
                            d.customers.insert(
                                spec.id.clone(),
                                Arc::new(customer_entry(spec, false, created_ms)),
                            );
                        }
                    }
                    Ok(Stored::Team { spec, created_ms }) => {
                        if !d.teams.contains_key(&spec.id) {
                            d.teams.insert(
                                spec.id.clone(),
                                Arc::new(team_entry(spec, false, created_ms)),
                            );
                        }
                    }
                    Ok(Stored::Key {
                        spec,
                        secrets,
                        created_ms,
                    }) => {
                        if !d.keys.contains_key(&spec.id) {
                            d.keys.insert(
                                spec.id.clone(),
                                Arc::new(key_entry(spec, secrets, false, created_ms)),
                            );
                        }
                    }
                    Err(e) => {
                        tracing::error!(record = %name, error = %e, "a stored governance entity could not be read; it is ignored")
                    }
                }
            }
        }
        d.index();
        Ok(Self {
            current: ArcSwap::from_pointee(d),
            write: Mutex::new(()),
            store,
        })
    }

    /// The current directory.
    pub fn load(&self) -> arc_swap::Guard<Arc<Directory>> {
        self.current.load()
    }

    /// Applies `change` to a copy, persists what it returns, and swaps it in.
    fn change<T>(
        &self,
        change: impl FnOnce(
            &mut Directory,
        ) -> Result<(T, Vec<(String, Option<Stored>)>), GovernanceError>,
    ) -> Result<T, GovernanceError> {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut d = (**self.current.load()).clone();
        let (out, writes) = change(&mut d)?;
        if let Some(s) = &self.store {
            for (name, rec) in writes {
                let r = match rec {
                    Some(rec) => s.put(trees::GOV_ENTITIES, &name, &rec),
                    None => s.remove(trees::GOV_ENTITIES, &name).map(|_| ()),
                };
                r.map_err(|e| GovernanceError::Store(e.to_string()))?;
            }
        }
        d.index();
        self.current.store(Arc::new(d));
        Ok(out)
    }

    /// Creates an entity from a JSON body; for a key, also returns its secret (shown once).
    pub fn create(
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
    }

    /// Merges the given fields into an entity made through the API.
    pub fn patch(&self, kind: EntityKind, id: &str, body: Value) -> Result<(), GovernanceError> {
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
    }

    /// Deletes an entity made through the API (409 while it owns teams or keys).
    pub fn delete(
        &self,
        kind: EntityKind,
        id: &str,
        counters: &Counters,
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
            counters.forget(&format!("{}:{id}:", kind.word()));
            Ok(((), vec![(format!("{}/{id}", kind.word()), None)]))
        })
    }

    /// A new secret for a key; the old ones stay valid for `grace_seconds`.
    pub fn rotate(&self, id: &str, grace_seconds: u64) -> Result<String, GovernanceError> {
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
    }

    /// (level, id, period, spent, remaining) of every budget of customers and teams, and of keys
    /// when `per_key` (for the Prometheus gauges).
    pub fn budget_states(
        &self,
        counters: &Counters,
        per_key: bool,
    ) -> Vec<(&'static str, String, String, f64, f64)> {
        let d = self.load();
        let now = Utc::now();
        let mut out = Vec::new();
        let mut add = |kind: EntityKind, id: &str, level: &Level, specs: &[BudgetSpec]| {
            for (i, ((window, max), spec)) in level.budgets.iter().zip(specs).enumerate() {
                let s = counters.snapshot(&format!("{}budget{i}", level.prefix), *window, now);
                let period = spec.period.clone().unwrap_or_else(|| "none".into());
                out.push((
                    kind.word(),
                    id.to_owned(),
                    period,
                    s.used,
                    (max - s.used - s.reserved).max(0.0),
                ));
            }
        };
        for c in d.customers.values() {
            add(EntityKind::Customer, &c.spec.id, &c.level, &c.spec.budgets);
        }
        for t in d.teams.values() {
            add(EntityKind::Team, &t.spec.id, &t.level, &t.spec.budgets);
        }
        if per_key {
            for k in d.keys.values() {
                add(EntityKind::Key, &k.spec.id, &k.level, &k.spec.budgets);
            }
        }
        out
    }

    /// Every entity of a kind, as the API shows them.
    pub fn list(&self, kind: EntityKind, counters: &Counters) -> Vec<Value> {
        let d = self.load();
        let mut out: Vec<(String, Value)> = match kind {
            EntityKind::Customer => d
                .customers
                .values()
                .map(|e| (e.spec.id.clone(), customer_view(e, counters)))
                .collect(),
            EntityKind::Team => d
                .teams
                .values()
                .map(|e| (e.spec.id.clone(), team_view(e, counters)))
                .collect(),
            EntityKind::Key => d
                .keys
                .values()
                .map(|e| (e.spec.id.clone(), key_view(e, &d, counters)))
                .collect(),
        };
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// One entity as the API shows it.
    pub fn get(
        &self,
        kind: EntityKind,
        id: &str,
        counters: &Counters,
    ) -> Result<Value, GovernanceError> {
        let d = self.load();
        match kind {
            EntityKind::Customer => d.customers.get(id).map(|e| customer_view(e, counters)),
            EntityKind::Team => d.teams.get(id).map(|e| team_view(e, counters)),
            EntityKind::Key => d.keys.get(id).map(|e| key_view(e, &d, counters)),
        }
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

fn time(ms: Option<i64>) -> Value {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
        .map_or(Value::Null, |t| {
            json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        })
}

/// Budgets with spend, reservations, what is left and the next reset; limits with their window.
fn usage(level: &Level, specs: &[BudgetSpec], counters: &Counters) -> (Value, Value) {
    let now = Utc::now();
    let mut charges = Vec::new();
    level.charges(0.0, 0.0, &mut charges);
    let budgets: Vec<Value> = specs
        .iter()
        .zip(&level.budgets)
        .enumerate()
        .map(|(i, (spec, (window, max)))| {
            let s = counters.snapshot(&format!("{}budget{i}", level.prefix), *window, now);
            json!({
                "max_usd": max, "period": spec.period, "calendar_aligned": spec.calendar_aligned,
                "spent_usd": s.used, "reserved_usd": s.reserved,
                "remaining_usd": (max - s.used - s.reserved).max(0.0),
                "resets_at": time(s.resets_at_ms),
            })
        })
        .collect();
    let mut limits = serde_json::to_value(&level.limits).unwrap_or(Value::Null);
    let mut current = serde_json::Map::new();
    for c in charges.iter().filter(|c| c.kind != Kind::Budget) {
        let s = counters.snapshot(&c.bucket, c.window, now);
        let name = match c.kind {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
            Kind::Concurrent => "concurrent",
            _ => "tool_calls",
        };
        current.insert(
            name.into(),
            json!({
                "limit": c.limit, "used": s.used, "reserved": s.reserved,
                "resets_at": time(s.resets_at_ms),
            }),
        );
    }
    if let Value::Object(m) = &mut limits {
        m.insert("current".into(), Value::Object(current));
    }
    (Value::Array(budgets), limits)
}

fn with_state(
    mut v: Value,
    level: &Level,
    specs: &[BudgetSpec],
    from_config: bool,
    created_ms: i64,
    counters: &Counters,
) -> Value {
    let (budgets, limits) = usage(level, specs, counters);
    if let Value::Object(m) = &mut v {
        m.insert("budgets".into(), budgets);
        m.insert("rate_limits".into(), limits);
        m.insert(
            "source".into(),
            json!(if from_config { "config" } else { "api" }),
        );
        m.insert("created_at".into(), time(Some(created_ms)));
    }
    v
}

fn customer_view(e: &CustomerEntry, counters: &Counters) -> Value {
    let v = serde_json::to_value(&e.spec).unwrap_or(Value::Null);
    with_state(
        v,
        &e.level,
        &e.spec.budgets,
        e.from_config,
        e.created_ms,
        counters,
    )
}

fn team_view(e: &TeamEntry, counters: &Counters) -> Value {
    let v = serde_json::to_value(&e.spec).unwrap_or(Value::Null);
    with_state(
        v,
        &e.level,
        &e.spec.budgets,
        e.from_config,
        e.created_ms,
        counters,
    )
}

fn key_view(e: &KeyEntry, d: &Directory, counters: &Counters) -> Value {
    let mut v = serde_json::to_value(&e.spec).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("value");
        let newest = e.secrets.iter().rev().find(|s| s.valid_until_ms.is_none());
        m.insert(
            "prefix".into(),
            json!(newest.or(e.secrets.last()).map(|s| s.prefix.clone())),
        );
        m.insert("customer".into(), json!(d.customer_of(e)));
        let now = Utc::now().timestamp_millis();
        let grace: Vec<Value> = e
            .secrets
            .iter()
            .filter(|s| s.valid_until_ms.is_some_and(|t| t > now))
            .map(|s| json!({"prefix": s.prefix, "valid_until": time(s.valid_until_ms)}))
            .collect();
        m.insert("rotated_secrets".into(), Value::Array(grace));
    }
    with_state(
        v,
        &e.level,
        &e.spec.budgets,
        e.from_config,
        e.created_ms,
        counters,
    )
}
