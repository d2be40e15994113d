//! Versions of the runtime configuration: every change made through the admin API (or a reload of
//! the file, or a rollback) is one numbered record with its time, actor, what changed (secrets
//! masked) and the whole runtime layer after it (secrets sealed), so any version can be restored.
//!
//! [`VersionStore`] is the seam: the embedded sled store implements it here, Postgres (a fleet's
//! shared store) in store/postgres.rs; both pass [`suite`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Store, StoreError, trees};
use crate::config::layer::Layer;

/// One field that changed: where, and its value before and after (masked; `None`: absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// `providers.<name>.base_url`, `routes.<model>`, ...
    pub path: String,
    /// Before (absent when added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// After (absent when removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// One version of the runtime configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    /// 1, 2, 3, ...
    pub n: u64,
    /// When (RFC 3339).
    pub at: String,
    /// Who: `api` (the admin token), `ui`, `reload`.
    pub actor: String,
    /// What, in words: `create provider openai-eu`, `rollback to 3`, ...
    pub action: String,
    /// The fields that changed (secrets masked).
    pub changes: Vec<Change>,
    /// The runtime layer after the change (secrets sealed).
    pub layer: Layer,
}

impl Version {
    /// Version `n`, made now.
    pub fn new(n: u64, actor: &str, action: String, changes: Vec<Change>, layer: Layer) -> Self {
        Self {
            n,
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            actor: actor.to_owned(),
            action,
            changes,
            layer,
        }
    }
}

/// A boxed future (the trait is used as `dyn`).
pub type Fut<'a, T> = futures_util::future::BoxFuture<'a, Result<T, StoreError>>;

/// Where versions are kept.
pub trait VersionStore: Send + Sync {
    /// The newest version.
    fn latest(&self) -> Fut<'_, Option<Version>>;
    /// The newest version's number (0: none), cheaply (instances poll it).
    fn latest_number(&self) -> Fut<'_, u64>;
    /// Appends `v` unless version `v.n` exists (`Ok(false)`: another writer took the number).
    fn append<'a>(&'a self, v: &'a Version) -> Fut<'a, bool>;
    /// Every version, newest first.
    fn list(&self) -> Fut<'_, Vec<Version>>;
    /// Version `n`.
    fn get(&self, n: u64) -> Fut<'_, Option<Version>>;
}

/// Versions in the embedded sled store.
pub struct SledVersions {
    tree: sled::Tree,
}

impl SledVersions {
    /// The versions tree of `store`.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            tree: store.tree(trees::CONFIG_VERSIONS)?,
        })
    }
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<Version, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Record {
        key: format!("{}/{key:?}", trees::CONFIG_VERSIONS),
        message: e.to_string(),
    })
}

impl SledVersions {
    fn latest_now(&self) -> Result<Option<Version>, StoreError> {
        match self.tree.last()? {
            Some((k, v)) => decode(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    fn append_now(&self, v: &Version) -> Result<bool, StoreError> {
        let bytes = serde_json::to_vec(v).map_err(|e| StoreError::Record {
            key: format!("{}/{}", trees::CONFIG_VERSIONS, v.n),
            message: e.to_string(),
        })?;
        let taken = self
            .tree
            .compare_and_swap(v.n.to_be_bytes(), None as Option<&[u8]>, Some(bytes))?
            .is_err();
        if !taken {
            self.tree.flush()?;
        }
        Ok(!taken)
    }

    fn list_now(&self) -> Result<Vec<Version>, StoreError> {
        self.tree
            .iter()
            .rev()
            .map(|item| {
                let (k, v) = item?;
                decode(&k, &v)
            })
            .collect()
    }

    fn get_now(&self, n: u64) -> Result<Option<Version>, StoreError> {
        match self.tree.get(n.to_be_bytes())? {
            Some(v) => decode(&n.to_be_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }
}

impl VersionStore for SledVersions {
    fn latest(&self) -> Fut<'_, Option<Version>> {
        Box::pin(async move { self.latest_now() })
    }

    fn latest_number(&self) -> Fut<'_, u64> {
        Box::pin(async move {
            Ok(match self.tree.last()? {
                Some((k, _)) => <[u8; 8]>::try_from(&k[..]).map_or(0, u64::from_be_bytes),
                None => 0,
            })
        })
    }

    fn append<'a>(&'a self, v: &'a Version) -> Fut<'a, bool> {
        Box::pin(async move { self.append_now(v) })
    }

    fn list(&self) -> Fut<'_, Vec<Version>> {
        Box::pin(async move { self.list_now() })
    }

    fn get(&self, n: u64) -> Fut<'_, Option<Version>> {
        Box::pin(async move { self.get_now(n) })
    }
}

/// The tests every [`VersionStore`] passes (run against sled here and against a real Postgres in
/// tests/it/fleet.rs).
#[doc(hidden)]
#[allow(clippy::unwrap_used)]
pub mod suite {
    use super::*;

    fn version(n: u64) -> Version {
        Version {
            n,
            at: "2026-12-01T00:00:00Z".into(),
            actor: "api".into(),
            action: format!("change {n}"),
            changes: vec![Change {
                path: "providers.p".into(),
                before: None,
                after: Some(serde_json::json!({"kind": "openai"})),
            }],
            layer: Layer::default(),
        }
    }

    /// Numbers are taken once; the newest is the latest; list is newest first.
    pub async fn numbers_are_taken_once_and_listed_newest_first(store: &dyn VersionStore) {
        assert!(store.latest().await.unwrap().is_none());
        assert_eq!(store.latest_number().await.unwrap(), 0);
        for n in 1..=3 {
            assert!(store.append(&version(n)).await.unwrap());
        }
        assert!(!store.append(&version(2)).await.unwrap(), "2 is taken");
        assert_eq!(store.latest().await.unwrap().unwrap().n, 3);
        assert_eq!(store.latest_number().await.unwrap(), 3);
        let ns: Vec<u64> = store.list().await.unwrap().iter().map(|v| v.n).collect();
        assert_eq!(ns, vec![3, 2, 1]);
        assert_eq!(store.get(2).await.unwrap().unwrap().action, "change 2");
        assert!(store.get(9).await.unwrap().is_none());
    }

    #[cfg(test)]
    #[tokio::test]
    async fn sled() {
        let store = Store::temporary().unwrap();
        numbers_are_taken_once_and_listed_newest_first(&SledVersions::open(&store).unwrap()).await;
    }
}
