//! Versions of the runtime configuration: every change made through the admin API (or a reload of
//! the file, or a rollback) is one numbered record with its time, actor, what changed (secrets
//! masked) and the whole runtime layer after it (secrets sealed), so any version can be restored.
//!
//! [`VersionStore`] is the seam: the embedded sled store implements it here; a shared store for a
//! fleet implements the same trait and runs the same tests.

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

/// Where versions are kept.
pub trait VersionStore: Send + Sync {
    /// The newest version.
    fn latest(&self) -> Result<Option<Version>, StoreError>;
    /// Appends `v` unless version `v.n` exists (`Ok(false)`: another writer took the number).
    fn append(&self, v: &Version) -> Result<bool, StoreError>;
    /// Every version, newest first.
    fn list(&self) -> Result<Vec<Version>, StoreError>;
    /// Version `n`.
    fn get(&self, n: u64) -> Result<Option<Version>, StoreError>;
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

impl VersionStore for SledVersions {
    fn latest(&self) -> Result<Option<Version>, StoreError> {
        match self.tree.last()? {
            Some((k, v)) => decode(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    fn append(&self, v: &Version) -> Result<bool, StoreError> {
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

    fn list(&self) -> Result<Vec<Version>, StoreError> {
        self.tree
            .iter()
            .rev()
            .map(|item| {
                let (k, v) = item?;
                decode(&k, &v)
            })
            .collect()
    }

    fn get(&self, n: u64) -> Result<Option<Version>, StoreError> {
        match self.tree.get(n.to_be_bytes())? {
            Some(v) => decode(&n.to_be_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }
}

/// The tests every [`VersionStore`] passes.
#[cfg(test)]
pub mod suite {
    #![allow(clippy::unwrap_used)]
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
    pub fn numbers_are_taken_once_and_listed_newest_first(store: &dyn VersionStore) {
        assert!(store.latest().unwrap().is_none());
        for n in 1..=3 {
            assert!(store.append(&version(n)).unwrap());
        }
        assert!(!store.append(&version(2)).unwrap(), "2 is taken");
        assert_eq!(store.latest().unwrap().unwrap().n, 3);
        let ns: Vec<u64> = store.list().unwrap().iter().map(|v| v.n).collect();
        assert_eq!(ns, vec![3, 2, 1]);
        assert_eq!(store.get(2).unwrap().unwrap().action, "change 2");
        assert!(store.get(9).unwrap().is_none());
    }

    #[test]
    fn sled() {
        let store = Store::temporary().unwrap();
        numbers_are_taken_once_and_listed_newest_first(&SledVersions::open(&store).unwrap());
    }
}
