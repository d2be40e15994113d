//! The sled store under `data_dir/store`: one tree per record kind, JSON values, a schema
//! version: cache analytics and semantic candidates, MCP registrations, the request log; virtual
//! keys join them when governance lands.
//!
//! A damaged store is moved aside and the gateway starts with an empty one rather than not at
//! all; a store another process holds (a second gateway on the same `data_dir`) is left alone,
//! and this gateway runs without it (the log says so).

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub mod postgres;
pub mod responses;
pub mod versions;

/// Version of the records written here.
pub const SCHEMA: u32 = 1;

/// Trees.
pub mod trees {
    /// Cache analytics snapshots.
    pub const CACHE_STATS: &str = "cache_stats";
    /// MCP servers registered through the admin API, by name (the spec as written).
    pub const MCP_SERVERS: &str = "mcp_servers";
    /// The request log: time-ordered binary keys (telemetry/requestlog.rs).
    pub const REQUEST_LOG: &str = "request_log";
    /// Semantic candidates (hits and near misses) for the threshold what-if (cache/whatif.rs).
    pub const CACHE_CANDIDATES: &str = "cache_candidates";
    /// Cached answers reported wrong: the pairs of questions (cache/feedback.rs).
    pub const CACHE_FEEDBACK: &str = "cache_feedback";
    /// Governance counters: spend and windows of budgets and rate limits (governance/counters.rs).
    pub const GOV_COUNTERS: &str = "gov_counters";
    /// Customers, teams and keys created through the admin API (only secret hashes).
    pub const GOV_ENTITIES: &str = "gov_entities";
    /// Versions of the runtime configuration (providers and routes added through the admin
    /// API), by number (store/versions.rs).
    pub const CONFIG_VERSIONS: &str = "config_versions";
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error.
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// A record could not be encoded or decoded.
    #[error("store record {key}: {message}")]
    Record {
        /// The key.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// Postgres reported an error, or cannot be reached.
    #[error("postgres: {0}")]
    Postgres(String),
    /// The store directory could not be prepared.
    #[error("store directory {path}: {message}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

/// A record's key and its value (or why it does not decode).
pub type Record<T> = (String, Result<T, StoreError>);

/// Where a component keeps its state: the embedded store (when it opened) and, in a fleet, the
/// shared Postgres.
#[derive(Clone, Default)]
pub struct Stores {
    /// The sled store.
    pub local: Option<Store>,
    /// The fleet's Postgres (`[server] state = "postgres"`).
    pub shared: Option<std::sync::Arc<postgres::Postgres>>,
}

/// How much memory sled may keep of the store's pages (its default is 1 GiB): the request log
/// writes every request, and the page cache grew with it (docs/performance.md, memory).
pub const PAGE_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// How long an open waits for a database's lock before it is taken as held by another process.
/// A database this process has just closed keeps its lock until sled's background threads let go
/// of it (a reload reopening the store, or a restart in the same process, would otherwise be
/// refused now and then).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens a sled database keeping at most `page_cache` bytes of its pages in memory (the state
/// store here, the cache's exact store in `cache::index`). Blocks up to [`LOCK_WAIT`] while the
/// lock is held.
pub fn open_sled(dir: &Path, page_cache: u64) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(page_cache)
            .open()
        {
            Err(e) if held_elsewhere(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => return opened,
        }
    }
}

/// Whether sled could not open a database because another process holds its lock. sled 0.34
/// reports a failed `flock` as an `Other` I/O error with this text, not as `WouldBlock`.
pub fn held_elsewhere(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("could not acquire lock"))
}

/// Typed access to the sled database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    /// Opens `dir`; a damaged store is moved aside and replaced (the message says so).
    pub fn open(dir: &Path) -> Result<(Self, Option<String>), StoreError> {
        std::fs::create_dir_all(dir.parent().unwrap_or(Path::new("."))).map_err(|e| {
            StoreError::Dir {
                path: dir.to_owned(),
                message: e.to_string(),
            }
        })?;
        match open_sled(dir, PAGE_CACHE_BYTES) {
            Ok(db) => Ok((Self { db }, None)),
            Err(e) if held_elsewhere(&e) => Err(StoreError::Dir {
                path: dir.to_owned(),
                message: "another process holds it (is a second gateway using the same data_dir?)"
                    .into(),
            }),
            Err(e) => {
                let aside = dir.with_file_name(format!(
                    "{}.broken-{}",
                    dir.file_name().and_then(|n| n.to_str()).unwrap_or("store"),
                    crate::chat::unix_now()
                ));
                std::fs::rename(dir, &aside).map_err(|re| StoreError::Dir {
                    path: dir.to_owned(),
                    message: format!("cannot open ({e}) and cannot move it aside ({re})"),
                })?;
                let db = open_sled(dir, PAGE_CACHE_BYTES)?;
                Ok((
                    Self { db },
                    Some(format!(
                        "the store in {} could not be opened ({e}); moved it to {} and started an empty one",
                        dir.display(),
                        aside.display()
                    )),
                ))
            }
        }
    }

    /// An in-memory store (tests, tools).
    pub fn temporary() -> Result<Self, StoreError> {
        Ok(Self {
            db: sled::Config::new().temporary(true).open()?,
        })
    }

    /// Reads a record; a record that does not decode is reported, not returned.
    pub fn get<T: DeserializeOwned>(&self, tree: &str, key: &str) -> Result<Option<T>, StoreError> {
        let Some(bytes) = self.db.open_tree(tree)?.get(key)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Record {
                key: format!("{tree}/{key}"),
                message: e.to_string(),
            })
    }

    /// Writes a record.
    pub fn put<T: Serialize>(&self, tree: &str, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Record {
            key: format!("{tree}/{key}"),
            message: e.to_string(),
        })?;
        self.db.open_tree(tree)?.insert(key, bytes)?;
        Ok(())
    }

    /// Every record of a tree, in key order; each one that does not decode is reported as an error.
    pub fn list<T: DeserializeOwned>(&self, tree: &str) -> Result<Vec<Record<T>>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.open_tree(tree)?.iter() {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let value = serde_json::from_slice(&v).map_err(|e| StoreError::Record {
                key: format!("{tree}/{key}"),
                message: e.to_string(),
            });
            out.push((key, value));
        }
        Ok(out)
    }

    /// A tree for modules that need ordered binary keys (the request log, time series).
    pub fn tree(&self, tree: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(tree)?)
    }

    /// Deletes a record; true when there was one.
    pub fn remove(&self, tree: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self.db.open_tree(tree)?.remove(key)?.is_some())
    }

    /// Flushes to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

/// A time-ordered log in one tree, bounded to its newest `kept` records (the oldest go first).
/// Without a store nothing is kept and reads are empty. In a fleet the records go to Postgres
/// (one table, by the tree's name), written in the background on the gateway's task tracker
/// (shutdown waits for them), so every instance reads every instance's records.
pub struct BoundedLog {
    backend: LogBackend,
    tree: &'static str,
    kept: u64,
    seq: std::sync::atomic::AtomicU64,
    count: std::sync::atomic::AtomicU64,
}

enum LogBackend {
    Sled(Option<Store>),
    Postgres {
        pg: std::sync::Arc<postgres::Postgres>,
        tasks: tokio_util::task::TaskTracker,
    },
}

impl BoundedLog {
    /// Opens `tree` in `store`.
    pub fn open(store: Option<Store>, tree: &'static str, kept: u64) -> Self {
        let count = store
            .as_ref()
            .and_then(|s| s.tree(tree).ok())
            .map_or(0, |t| t.len() as u64);
        Self::with(LogBackend::Sled(store), tree, kept, count)
    }

    /// The fleet's log `tree` (in Postgres when there is one, else in the embedded store).
    pub fn open_in(
        stores: &Stores,
        tasks: &tokio_util::task::TaskTracker,
        tree: &'static str,
        kept: u64,
    ) -> Self {
        match &stores.shared {
            Some(pg) => Self::with(
                LogBackend::Postgres {
                    pg: pg.clone(),
                    tasks: tasks.clone(),
                },
                tree,
                kept,
                0,
            ),
            None => Self::open(stores.local.clone(), tree, kept),
        }
    }

    fn with(backend: LogBackend, tree: &'static str, kept: u64, count: u64) -> Self {
        Self {
            backend,
            tree,
            kept,
            seq: std::sync::atomic::AtomicU64::new(0),
            count: std::sync::atomic::AtomicU64::new(count),
        }
    }

    fn error(&self, e: &serde_json::Error) -> StoreError {
        StoreError::Record {
            key: self.tree.into(),
            message: e.to_string(),
        }
    }

    /// Appends a record made at `at_ms`, dropping the oldest beyond the bound.
    pub fn push<T: Serialize>(&self, at_ms: u64, record: &T) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let store = match &self.backend {
            LogBackend::Sled(None) => return Ok(()),
            LogBackend::Sled(Some(store)) => store,
            LogBackend::Postgres { pg, tasks } => {
                let value = serde_json::to_value(record).map_err(|e| self.error(&e))?;
                let (pg, tree, kept) = (pg.clone(), self.tree, self.kept);
                let at = i64::try_from(at_ms).unwrap_or(i64::MAX);
                // Trimmed to the bound every 64 records (of this instance).
                let trim = seq.is_multiple_of(64);
                tasks.spawn(async move {
                    let mut r = pg.record_push(tree, at, &value).await;
                    if r.is_ok() && trim {
                        let kept = i64::try_from(kept).unwrap_or(i64::MAX);
                        r = pg.record_trim(tree, kept).await.map(|_| ());
                    }
                    if let Err(e) = r {
                        tracing::warn!(log = tree, error = %e, "a record could not be kept in postgres");
                    }
                });
                return Ok(());
            }
        };
        let tree = store.tree(self.tree)?;
        let mut key = [0u8; 12];
        key[..8].copy_from_slice(&at_ms.to_be_bytes());
        key[8..].copy_from_slice(&(seq as u32).to_be_bytes());
        tree.insert(key, serde_json::to_vec(record).map_err(|e| self.error(&e))?)?;
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 > self.kept && tree.pop_min()?.is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Every record, oldest first (those that do not decode are skipped).
    pub async fn all<T: DeserializeOwned>(&self) -> Result<Vec<T>, StoreError> {
        let store = match &self.backend {
            LogBackend::Sled(None) => return Ok(Vec::new()),
            LogBackend::Sled(Some(store)) => store,
            LogBackend::Postgres { pg, .. } => {
                let rows = pg.record_all(self.tree).await?;
                return Ok(rows
                    .into_iter()
                    .filter_map(|v| serde_json::from_value(v).ok())
                    .collect());
            }
        };
        let mut out = Vec::new();
        for item in store.tree(self.tree)?.iter() {
            let (_, v) = item?;
            if let Ok(r) = serde_json::from_slice(&v) {
                out.push(r);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_another_opener_holds_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store");
        let (first, recovered) = Store::open(&path).expect("open");
        assert!(recovered.is_none());
        first.put("t", "k", &1).expect("put");
        // sled's lock is a flock, held per open file: a second opener (another gateway on the
        // same data_dir) is refused, and nothing is moved aside.
        match Store::open(&path) {
            Err(StoreError::Dir { message, .. }) => {
                assert!(message.contains("another process"), "{message}")
            }
            Err(e) => panic!("not refused as held: {e}"),
            Ok(_) => panic!("opened twice"),
        }
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
        assert_eq!(first.get::<i32>("t", "k").expect("get"), Some(1));
    }
}
