//! Runtime configuration: providers and routes added, changed and removed through the admin API
//! without a restart. Each change is validated with the config file exactly as `check` validates
//! a file (the layer is merged onto the file's document), recorded as a numbered version (time,
//! actor, masked diff, the whole layer with its secrets sealed), and handed back as the merged
//! config for the caller to apply atomically. Entities from the file (or, in zero-config, from
//! the environment) are not the API's to change.

use std::sync::Mutex;

use serde_json::{Value, json};

use crate::config::layer::{self, Entry, Kind, Layer};
use crate::config::sealed::{SecretBox, SecretError};
use crate::config::{Config, Issue};
use crate::store::versions::{Change, Version, VersionStore};
use crate::store::{Store, StoreError};

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No store to keep changes in (503).
    #[error("runtime configuration needs the store, which could not be opened at start")]
    Unavailable,
    /// The entity comes from the config file (409).
    #[error(
        "{noun} `{id}` is managed by the config file: edit the file and reload it (POST /api/config/reload or SIGHUP)"
    )]
    FileManaged {
        /// provider or route.
        noun: &'static str,
        /// Its name.
        id: String,
    },
    /// A create with a name that exists (409).
    #[error("{noun} `{id}` exists")]
    Exists {
        /// provider or route.
        noun: &'static str,
        /// Its name.
        id: String,
    },
    /// No such entity (404).
    #[error("no {noun} `{id}`")]
    NotFound {
        /// provider or route.
        noun: &'static str,
        /// Its name.
        id: String,
    },
    /// The body is not an entry (400).
    #[error("{0}")]
    BadRequest(String),
    /// The result does not validate (400 with every problem).
    #[error("the configuration would not be valid")]
    Invalid(Vec<Issue>),
    /// The store failed (500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Secrets could not be sealed or opened (500).
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// Another writer changed the configuration at the same moment (409; retry).
    #[error("the configuration changed meanwhile (version {0} was taken); try again")]
    Conflict(u64),
}

/// What a change does to the layer.
pub enum Op {
    /// Add an entry.
    Create(Entry),
    /// Merge fields into an entry (`null` removes a field).
    Update(String, Entry),
    /// Remove an entry.
    Delete(String),
    /// Restore version `n`'s layer.
    Rollback(u64),
}

struct Inner {
    /// The file's document (or the zero-config providers as entries).
    base: toml::Table,
    /// The layer, secrets sealed.
    layer: Layer,
    /// The newest version's number (0: none yet).
    version: u64,
}

/// The runtime layer, its versions, and the key that seals its secrets.
pub struct RuntimeConfig {
    versions: Option<std::sync::Arc<dyn VersionStore>>,
    secrets: Option<SecretBox>,
    /// The base holds the providers found in the environment, not a file.
    zero_config: bool,
    /// `config_source = "api"` (with a store): the file's providers and routes only seeded it.
    api_managed: bool,
    /// The versions are shared with other instances (Postgres): [`RuntimeConfig::refresh`]
    /// picks up their changes.
    shared: bool,
    /// One change at a time in this instance.
    writer: tokio::sync::Mutex<()>,
    inner: Mutex<Inner>,
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

impl RuntimeConfig {
    /// Loads the newest version's layer and merges it onto `config`'s document: the manager and
    /// the config to serve (the file's own when there is no layer). A layer that no longer fits
    /// the file is an error listing every problem. With `shared` (Postgres) the versions are the
    /// fleet's, and the sealing key must be the same on every instance (`SWITCHYARD_SECRET_KEY`).
    pub async fn open(
        config: &Config,
        store: Option<&Store>,
        shared: Option<std::sync::Arc<dyn VersionStore>>,
    ) -> Result<(Self, Option<Config>), String> {
        let key = env(crate::config::sealed::KEY_VAR).filter(|k| !k.trim().is_empty());
        let is_shared = shared.is_some();
        if is_shared && key.is_none() {
            return Err(format!(
                "with [server] state = \"postgres\", set {} to the same key on every instance (32 bytes as 64 hex digits, e.g. `openssl rand -hex 32`): it seals the provider keys they share",
                crate::config::sealed::KEY_VAR
            ));
        }
        let versions: Option<std::sync::Arc<dyn VersionStore>> = match (shared, store) {
            (Some(v), _) => Some(v),
            (None, Some(s)) => Some(std::sync::Arc::new(
                crate::store::versions::SledVersions::open(s).map_err(|e| e.to_string())?,
            )),
            (None, None) => None,
        };
        let secrets = match &versions {
            Some(_) => {
                Some(SecretBox::open(&config.server.data_dir, key).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let latest = match &versions {
            Some(v) => v.latest().await.map_err(|e| e.to_string())?,
            None => None,
        };
        let full = layer::base(config);
        // Without a store there is nothing for the API to manage: the file stays in charge.
        let api_managed = config.server.api_managed && versions.is_some();
        let base = base_of(config, api_managed);
        let (mut layer, mut version) = latest.map(|v| (v.layer, v.n)).unwrap_or_default();
        // `config_source = "api"`: the file's providers and routes seed an empty store once.
        let mut seed = None;
        if api_managed && version == 0 {
            let mut first = file_layer(&full);
            if first != Layer::default() {
                if let Some(b) = &secrets {
                    b.seal_layer(&mut first).map_err(|e| e.to_string())?;
                }
                seed = Some(Version::new(
                    1,
                    "seed",
                    "seed from the config file".into(),
                    changes(&Layer::default(), &file_layer(&full)),
                    first,
                ));
            }
        }
        if let (Some(v), Some(store)) = (&seed, &versions) {
            if store.append(v).await.map_err(|e| e.to_string())? {
                layer = v.layer.clone();
                version = v.n;
            } else if let Some(latest) = store.latest().await.map_err(|e| e.to_string())? {
                // Another instance seeded first.
                layer = latest.layer;
                version = latest.n;
            }
        }
        let manager = Self {
            versions,
            secrets,
            zero_config: config.zero_config,
            api_managed,
            shared: is_shared,
            writer: tokio::sync::Mutex::new(()),
            inner: Mutex::new(Inner {
                base,
                layer,
                version,
            }),
        };
        let merged = {
            let inner = manager.lock();
            if inner.layer == Layer::default() {
                None
            } else {
                let opened = manager.opened(&inner.layer).map_err(|e| e.to_string())?;
                Some(layer::merge(&inner.base, &opened, &env).map_err(|issues| {
                    let list: Vec<String> = issues.iter().map(ToString::to_string).collect();
                    format!(
                        "the providers and routes added through the admin API (version {version}) no longer fit the config file: {}; remove the clashing entries from the file, or roll back",
                        list.join("; ")
                    )
                })?)
            }
        };
        Ok((manager, merged))
    }

    /// Whether other instances share the versions (and [`RuntimeConfig::refresh`] is worth
    /// calling).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Picks up a newer version written by another instance: the merged config to apply, or
    /// `None` when there is nothing new (or it does not fit this instance's file: logged).
    pub async fn refresh(&self) -> Option<Config> {
        let versions = self.versions.as_ref()?;
        let _w = self.writer.lock().await;
        let n = match versions.latest_number().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the runtime configuration's version");
                return None;
            }
        };
        if n <= self.lock().version {
            return None;
        }
        let latest = match versions.latest().await {
            Ok(Some(v)) => v,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the runtime configuration");
                return None;
            }
        };
        let mut inner = self.lock();
        let merged = self
            .opened(&latest.layer)
            .map_err(|e| e.to_string())
            .and_then(|opened| {
                layer::merge(&inner.base, &opened, &env).map_err(|issues| {
                    issues
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
            });
        match merged {
            Ok(m) => {
                tracing::info!(version = latest.n, actor = %latest.actor, action = %latest.action, "runtime configuration changed by another instance: applied");
                inner.layer = latest.layer;
                inner.version = latest.n;
                Some(m)
            }
            Err(e) => {
                tracing::error!(version = latest.n, problems = %e, "runtime configuration from another instance does not fit this instance's config file: not applied");
                // Not retried until a newer version comes.
                inner.version = latest.n;
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The layer with its secrets open.
    fn opened(&self, sealed: &Layer) -> Result<Layer, ChangeError> {
        let mut out = sealed.clone();
        if let Some(b) = &self.secrets {
            out.secrets_mut(|s| {
                if SecretBox::is_sealed(s) {
                    *s = b.open_value(s)?;
                }
                Ok::<(), SecretError>(())
            })?;
        }
        Ok(out)
    }

    /// Every entity of `kind`: from the file (`"source": "file"`), the environment (`"env"`) or
    /// the API (`"api"`), secrets masked.
    pub fn list(&self, kind: Kind) -> Vec<Value> {
        let inner = self.lock();
        let source = if self.zero_config { "env" } else { "file" };
        let mut out = Vec::new();
        if let Some(items) = inner.base.get(kind.array()).and_then(|v| v.as_array()) {
            for item in items {
                let Ok(Value::Object(mut e)) = serde_json::to_value(item) else {
                    continue;
                };
                if kind == Kind::Provider {
                    let _ = layer::provider_secrets_mut(&mut e, &mut |s: &mut String| {
                        *s = layer::mask(s);
                        Ok::<(), ()>(())
                    });
                }
                e.insert("source".into(), source.into());
                out.push(Value::Object(e));
            }
        }
        // Masked from the open secrets, so a key shows its last characters.
        let shown = self
            .opened(&inner.layer)
            .unwrap_or_else(|_| inner.layer.clone())
            .masked();
        for e in shown.entries(kind) {
            let mut e = e.clone();
            e.insert("source".into(), "api".into());
            out.push(Value::Object(e));
        }
        out
    }

    /// Makes `op` by `actor`: validates the merged result, records a version, and returns it
    /// with the merged config to apply.
    pub async fn change(
        &self,
        actor: &str,
        kind: Kind,
        op: Op,
    ) -> Result<(Version, Config), ChangeError> {
        let Some(versions) = &self.versions else {
            return Err(ChangeError::Unavailable);
        };
        let _w = self.writer.lock().await;
        // Start from the newest version (another instance may have written one).
        let newest = if self.shared {
            versions.latest().await?
        } else {
            None
        };
        let rollback_to = match &op {
            Op::Rollback(n) => Some(versions.get(*n).await?),
            _ => None,
        };
        let (version, merged) = self.prepare(actor, kind, op, newest, rollback_to)?;
        if !versions.append(&version).await? {
            return Err(ChangeError::Conflict(version.n));
        }
        let mut inner = self.lock();
        inner.layer = version.layer.clone();
        inner.version = version.n;
        Ok((version, merged))
    }

    /// The version `op` makes, validated, with the merged config (nothing stored yet).
    fn prepare(
        &self,
        actor: &str,
        kind: Kind,
        op: Op,
        newest: Option<Version>,
        rollback_to: Option<Option<Version>>,
    ) -> Result<(Version, Config), ChangeError> {
        let Some(secrets) = &self.secrets else {
            return Err(ChangeError::Unavailable);
        };
        let mut inner = self.lock();
        if let Some(v) = newest
            && v.n > inner.version
        {
            inner.layer = v.layer;
            inner.version = v.n;
        }
        let file_ids = layer::base_ids(&inner.base, kind);
        let noun = kind.noun();
        let mut next = self.opened(&inner.layer)?;
        let action = match op {
            Op::Create(entry) => {
                let id = entry_name(kind, &entry)?;
                check_entry(kind, &entry)?;
                if file_ids.contains(&id) || next.find(kind, &id).is_some() {
                    return Err(ChangeError::Exists { noun, id });
                }
                next.entries_mut(kind).push(entry);
                format!("create {noun} {id}")
            }
            Op::Update(id, patch) => {
                if file_ids.contains(&id) {
                    return Err(ChangeError::FileManaged { noun, id });
                }
                if let Some(new_id) = patch.get(kind.id_field())
                    && new_id.as_str() != Some(id.as_str())
                {
                    return Err(ChangeError::BadRequest(format!(
                        "`{}` cannot be changed (delete the {noun} and create it under the new name)",
                        kind.id_field()
                    )));
                }
                check_entry(kind, &patch)?;
                let Some(entry) = next
                    .entries_mut(kind)
                    .iter_mut()
                    .find(|e| layer::entry_id(kind, e) == Some(id.as_str()))
                else {
                    return Err(ChangeError::NotFound { noun, id });
                };
                for (k, v) in patch {
                    if v.is_null() {
                        entry.remove(&k);
                    } else {
                        entry.insert(k, v);
                    }
                }
                format!("update {noun} {id}")
            }
            Op::Delete(id) => {
                if file_ids.contains(&id) {
                    return Err(ChangeError::FileManaged { noun, id });
                }
                let list = next.entries_mut(kind);
                let before = list.len();
                list.retain(|e| layer::entry_id(kind, e) != Some(id.as_str()));
                if list.len() == before {
                    return Err(ChangeError::NotFound { noun, id });
                }
                format!("delete {noun} {id}")
            }
            Op::Rollback(n) => {
                let Some(v) = rollback_to.flatten() else {
                    return Err(ChangeError::NotFound {
                        noun: "version",
                        id: n.to_string(),
                    });
                };
                next = self.opened(&v.layer)?;
                format!("rollback to {n}")
            }
        };
        let merged = layer::merge(&inner.base, &next, &env)
            .map_err(|issues| ChangeError::Invalid(named(&inner.base, &next, issues)))?;
        let changes = changes(&self.opened(&inner.layer)?, &next);
        let mut sealed = next;
        secrets.seal_layer(&mut sealed)?;
        let version = Version::new(inner.version + 1, actor, action, changes, sealed);
        Ok((version, merged))
    }

    /// A reload read `config` from the file: merges the layer onto its document (every problem,
    /// or the config to apply). The base is replaced only when the caller applies it
    /// ([`RuntimeConfig::reloaded`]).
    pub fn merge_file(&self, config: &Config) -> Result<Config, Vec<Issue>> {
        let inner = self.lock();
        let base = base_of(config, self.api_managed);
        if inner.layer == Layer::default() && !self.api_managed {
            return Ok(config.clone());
        }
        let opened = self
            .opened(&inner.layer)
            .map_err(|e| vec![Issue::new("", e.to_string())])?;
        let mut merged = layer::merge(&base, &opened, &env)?;
        merged.source.clone_from(&config.source);
        Ok(merged)
    }

    /// The file was reloaded: later changes are judged against its new document, and when its
    /// providers or routes changed, that is recorded as a version (actor `reload`; the runtime
    /// layer itself is unchanged, so a rollback to it restores only what the API manages).
    pub async fn reloaded(&self, config: &Config) {
        let base = base_of(config, self.api_managed);
        let _w = self.writer.lock().await;
        let (changes, version) = {
            let mut inner = self.lock();
            let changes = changes(&file_layer(&inner.base), &file_layer(&base));
            inner.base = base;
            (changes, inner.version)
        };
        let (Some(versions), false) = (&self.versions, changes.is_empty()) else {
            return;
        };
        // Behind a newer version another instance of a fleet wrote: not recorded (a version
        // holds a whole layer, and this instance's is about to be replaced by that one).
        match versions.latest_number().await {
            Ok(n) if n > version => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the reload is not recorded as a version");
                return;
            }
        }
        let (newest, layer) = (version, self.lock().layer.clone());
        let v = Version::new(
            newest + 1,
            "reload",
            "reload the config file".into(),
            changes,
            layer,
        );
        match versions.append(&v).await {
            Ok(true) => self.lock().version = v.n,
            Ok(false) => tracing::warn!(
                version = v.n,
                "the reload is not recorded: the version number was taken"
            ),
            Err(e) => tracing::warn!(error = %e, "the reload is not recorded as a version"),
        }
    }

    /// Every version, newest first (secrets in the layers masked).
    pub async fn versions(&self) -> Result<Vec<Value>, ChangeError> {
        let Some(v) = &self.versions else {
            return Err(ChangeError::Unavailable);
        };
        Ok(v.list()
            .await?
            .into_iter()
            .map(|v| {
                json!({"version": v.n, "at": v.at, "actor": v.actor, "action": v.action, "changes": v.changes})
            })
            .collect())
    }

    /// Version `n`: the runtime layer it holds, as TOML (secrets masked).
    pub async fn version_toml(&self, n: u64) -> Result<String, ChangeError> {
        let Some(v) = &self.versions else {
            return Err(ChangeError::Unavailable);
        };
        let Some(v) = v.get(n).await? else {
            return Err(ChangeError::NotFound {
                noun: "version",
                id: n.to_string(),
            });
        };
        let header = format!(
            "# Switchyard runtime configuration, version {} ({}, by {}: {})\n# Providers and routes added through the admin API; literal secrets are masked.\n\n",
            v.n, v.at, v.actor, v.action
        );
        toml::to_string(&v.layer.masked())
            .map(|body| header + &body)
            .map_err(|e| ChangeError::BadRequest(e.to_string()))
    }

    /// Where the entity of `kind` named `id` comes from: `file`, `env` (zero-config) or `api`.
    pub fn source(&self, kind: Kind, id: &str) -> &'static str {
        let inner = self.lock();
        if inner.layer.find(kind, id).is_some() {
            "api"
        } else if self.zero_config {
            "env"
        } else {
            "file"
        }
    }

    /// The whole effective configuration as TOML: the file's document with the providers and
    /// routes added at run time, every literal secret sealed with this gateway's key, so that
    /// `check` accepts it and `serve --config` starts from it wherever that key is.
    pub fn export(&self) -> Result<String, ChangeError> {
        let Some(secrets) = &self.secrets else {
            return Err(ChangeError::Unavailable);
        };
        let inner = self.lock();
        let mut doc = layer::document(&inner.base, &inner.layer)
            .map_err(|i| ChangeError::BadRequest(i.to_string()))?;
        secrets.seal_doc(&mut doc)?;
        let body = toml::to_string(&doc).map_err(|e| ChangeError::BadRequest(e.to_string()))?;
        Ok(format!(
            "# Switchyard configuration, exported {} (runtime version {}).\n# Literal secrets are sealed with this gateway's key ({} or data_dir/secret.key):\n# `switchyard check` and `serve --config` open them where that key is.\n\n{body}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            inner.version,
            crate::config::sealed::KEY_VAR,
        ))
    }

    /// The newest version's number (0: none).
    pub fn version(&self) -> u64 {
        self.lock().version
    }
}

/// The document the layer is merged onto: the file's, without its providers and routes when the
/// API manages them (`config_source = "api"`: they only seeded the store).
fn base_of(config: &Config, api_managed: bool) -> toml::Table {
    let mut base = layer::base(config);
    if api_managed {
        base.remove("providers");
        base.remove("routes");
    }
    base
}

/// The file's providers and routes as a layer, as written.
fn file_layer(base: &toml::Table) -> Layer {
    let entries = |kind: Kind| -> Vec<Entry> {
        base.get(kind.array())
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|e| match serde_json::to_value(e) {
                        Ok(Value::Object(o)) => Some(o),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    Layer {
        providers: entries(Kind::Provider),
        routes: entries(Kind::Route),
    }
}

/// Problems with the paths of layer entries written by name (`providers.eu.kind`, not
/// `providers[3].kind`): the index means nothing to an API user.
fn named(base: &toml::Table, layer: &Layer, issues: Vec<Issue>) -> Vec<Issue> {
    issues
        .into_iter()
        .map(|mut issue| {
            for kind in [Kind::Provider, Kind::Route] {
                let skip = layer::base_len(base, kind);
                for (i, e) in layer.entries(kind).iter().enumerate() {
                    let prefix = format!("{}[{}]", kind.array(), skip + i);
                    if let Some(rest) = issue.path.strip_prefix(&prefix)
                        && (rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
                    {
                        let id = layer::entry_id(kind, e).unwrap_or_default();
                        issue.path = format!("{}.{id}{rest}", kind.array());
                    }
                }
            }
            issue
        })
        .collect()
}

/// The masked changes from `before` to `after` (both with their secrets open).
fn changes(before: &Layer, after: &Layer) -> Vec<Change> {
    layer::diff(&before.masked(), &after.masked())
        .into_iter()
        .map(|(path, before, after)| Change {
            path,
            before,
            after,
        })
        .collect()
}

/// The entry's name, which must be a non-empty string.
fn entry_name(kind: Kind, entry: &Entry) -> Result<String, ChangeError> {
    match layer::entry_id(kind, entry) {
        Some(id) if !id.trim().is_empty() => Ok(id.to_owned()),
        _ => Err(ChangeError::BadRequest(format!(
            "`{}` is required: the {}'s name",
            kind.id_field(),
            kind.noun()
        ))),
    }
}

/// What the API does not take: masked secrets sent back, and route cache policies (which apply
/// at start only).
fn check_entry(kind: Kind, entry: &Entry) -> Result<(), ChangeError> {
    if kind == Kind::Route && entry.contains_key("cache") {
        return Err(ChangeError::BadRequest(
            "a route's `cache` policy is set in the config file (it applies at start)".into(),
        ));
    }
    if kind == Kind::Provider {
        let mut masked = false;
        let mut e = entry.clone();
        let _ = layer::provider_secrets_mut(&mut e, &mut |s: &mut String| {
            masked |= s.starts_with("****");
            Ok::<(), ()>(())
        });
        if masked {
            return Err(ChangeError::BadRequest(
                "a secret reads `****...`, as the API shows it: send the secret itself, or leave the field out to keep it".into(),
            ));
        }
    }
    Ok(())
}
