//! The embedded store's answers without a vector (exact mode, or a request the semantic tier
//! does not cover): a sled database inside the shard's directory, `data_dir/cache/edge/exact`.
//! Such an answer is only ever read by its id, so a vector shard's payload store, WAL and payload
//! indexes are more than it needs; here it costs three small B-tree writes.
//!
//! Trees: `entries` (id -> the two order keys' values, then the entry as JSON), `by_used`
//! (last use, id: the LRU order for eviction and listings) and `by_expiry` (expiry, id: the
//! expiry sweep). Every change goes through this type, which keeps the three in step; a crash
//! between two of them leaves at most an order key without its entry, which the readers skip.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

use super::{Entry, IndexError, Selector};

/// sled keeps at most this much of the store's pages in memory (its default is 1 GiB).
const PAGE_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Bytes before the entry's JSON in `entries`: its last use and expiry (big-endian).
const HEAD: usize = 16;

fn store_err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Store(e.to_string())
}

/// An order key: the value big-endian (so keys sort by it), then the id.
fn order_key(value: u64, id: Uuid) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&value.to_be_bytes());
    k[8..].copy_from_slice(id.as_bytes());
    k
}

/// The (value, id) of an order key; `None` for bytes this type never writes.
fn parse_order_key(k: &[u8]) -> Option<(u64, Uuid)> {
    let value = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
    let id = Uuid::from_slice(k.get(8..24)?).ok()?;
    Some((value, id))
}

/// (last used, expires) from a stored value's head.
fn head_of(v: &[u8]) -> Option<(u64, u64)> {
    let used = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let expires = u64::from_be_bytes(v.get(8..HEAD)?.try_into().ok()?);
    Some((used, expires))
}

fn encode(entry: &Entry) -> Result<Vec<u8>, IndexError> {
    let mut v = Vec::with_capacity(HEAD + 256 + entry.response.len() + entry.prompt.len());
    v.extend_from_slice(&entry.last_used.to_be_bytes());
    v.extend_from_slice(&entry.expires.to_be_bytes());
    serde_json::to_writer(&mut v, entry).map_err(store_err)?;
    Ok(v)
}

fn decode(v: &[u8]) -> Result<Entry, IndexError> {
    let json = v
        .get(HEAD..)
        .ok_or_else(|| IndexError::Corrupt("a cached entry is shorter than its header".into()))?;
    serde_json::from_slice(json).map_err(|e| IndexError::Corrupt(e.to_string()))
}

/// Exact-only entries of the embedded store.
pub(super) struct ExactStore {
    db: sled::Db,
    entries: sled::Tree,
    by_used: sled::Tree,
    by_expiry: sled::Tree,
    count: AtomicU64,
}

impl ExactStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(PAGE_CACHE_BYTES)
            .open()
            .map_err(|e| store_err(format!("cannot open {}: {e}", dir.display())))?;
        let entries = db.open_tree("entries").map_err(store_err)?;
        let by_used = db.open_tree("by_used").map_err(store_err)?;
        let by_expiry = db.open_tree("by_expiry").map_err(store_err)?;
        let count = AtomicU64::new(entries.len() as u64);
        Ok(Self {
            db,
            entries,
            by_used,
            by_expiry,
            count,
        })
    }

    /// Every stored id (read once, when the index opens).
    pub fn ids(&self) -> Result<Vec<Uuid>, IndexError> {
        let mut ids = Vec::with_capacity(self.len() as usize);
        for k in self.entries.iter().keys() {
            if let Ok(id) = Uuid::from_slice(&k.map_err(store_err)?) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The entry with this id.
    pub fn get(&self, id: Uuid) -> Result<Option<Entry>, IndexError> {
        match self.entries.get(id.as_bytes()).map_err(store_err)? {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Stores (or replaces) entries.
    pub fn put(&self, entries: &[Entry]) -> Result<(), IndexError> {
        for e in entries {
            let value = encode(e)?;
            let old = self
                .entries
                .insert(e.id.as_bytes(), value)
                .map_err(store_err)?;
            self.reorder(e.id, old.as_deref(), Some((e.last_used, e.expires)))?;
        }
        Ok(())
    }

    /// Moves an entry's order keys from the `old` stored value's to `new` (last used, expires),
    /// and keeps the count.
    fn reorder(
        &self,
        id: Uuid,
        old: Option<&[u8]>,
        new: Option<(u64, u64)>,
    ) -> Result<(), IndexError> {
        let old_head = old.and_then(head_of);
        if old_head == new {
            return Ok(());
        }
        if let Some((used, expires)) = old_head {
            self.by_used
                .remove(order_key(used, id))
                .map_err(store_err)?;
            self.by_expiry
                .remove(order_key(expires, id))
                .map_err(store_err)?;
        }
        if let Some((used, expires)) = new {
            self.by_used
                .insert(order_key(used, id), &[])
                .map_err(store_err)?;
            self.by_expiry
                .insert(order_key(expires, id), &[])
                .map_err(store_err)?;
        }
        match (old.is_some(), new.is_some()) {
            (false, true) => {
                self.count.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        Ok(())
    }

    /// Records hits; false when the entry is not here.
    pub fn touch(&self, id: Uuid, hits: u64, last_used: u64) -> Result<bool, IndexError> {
        let Some(old) = self.entries.get(id.as_bytes()).map_err(store_err)? else {
            return Ok(false);
        };
        let mut e = decode(&old)?;
        e.hits = e.hits.max(hits);
        e.last_used = e.last_used.max(last_used);
        let value = encode(&e)?;
        // Replaced only if nothing changed it meanwhile (a delete, a newer answer).
        if self
            .entries
            .compare_and_swap(id.as_bytes(), Some(&old), Some(value))
            .map_err(store_err)?
            .is_ok()
        {
            self.reorder(id, Some(&old), Some((e.last_used, e.expires)))?;
        }
        Ok(true)
    }

    /// Deletes entries; returns the ids that were here.
    pub fn remove(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, IndexError> {
        let mut gone = Vec::new();
        for id in ids {
            if let Some(old) = self.entries.remove(id.as_bytes()).map_err(store_err)? {
                self.reorder(*id, Some(&old), None)?;
                gone.push(*id);
            }
        }
        Ok(gone)
    }

    /// Deletes every entry the selector matches; returns their ids.
    pub fn remove_where(&self, sel: &Selector) -> Result<Vec<Uuid>, IndexError> {
        let candidates: Vec<Uuid> = match sel.expired_at {
            // Expired ones from the expiry order, without reading the others.
            Some(t) => {
                let mut ids = Vec::new();
                let end = order_key(t.saturating_add(1), Uuid::nil());
                for k in self.by_expiry.range(..end).keys() {
                    let k = k.map_err(store_err)?;
                    let Some((_, id)) = parse_order_key(&k) else {
                        continue;
                    };
                    if self
                        .entries
                        .contains_key(id.as_bytes())
                        .map_err(store_err)?
                    {
                        ids.push(id);
                    } else {
                        // A stray key would be swept again every time: dropped.
                        self.by_expiry.remove(&k).map_err(store_err)?;
                    }
                }
                ids
            }
            None => self.ids()?,
        };
        let selected = match &sel.model {
            None => candidates,
            Some(m) => {
                let mut ids = Vec::new();
                for id in candidates {
                    if self.get(id)?.is_some_and(|e| e.model == *m) {
                        ids.push(id);
                    }
                }
                ids
            }
        };
        self.remove(&selected)
    }

    /// Up to `n` (last used, id), least recently used first.
    pub fn least_used(&self, n: usize) -> Result<Vec<(u64, Uuid)>, IndexError> {
        let mut out = Vec::with_capacity(n.min(self.len() as usize));
        for k in self.by_used.iter().keys() {
            if out.len() >= n {
                break;
            }
            let k = k.map_err(store_err)?;
            let Some((used, id)) = parse_order_key(&k) else {
                continue;
            };
            if self
                .entries
                .contains_key(id.as_bytes())
                .map_err(store_err)?
            {
                out.push((used, id));
            } else {
                // A stray key (a delete raced a replace, or a crash between two writes) would
                // stand first in line for eviction forever: dropped instead.
                self.by_used.remove(&k).map_err(store_err)?;
            }
        }
        Ok(out)
    }

    /// Up to `n` entries (of `model`, when given), most recently used first.
    pub fn most_used(&self, n: usize, model: Option<&str>) -> Result<Vec<Entry>, IndexError> {
        let mut out = Vec::new();
        for k in self.by_used.iter().keys().rev() {
            if out.len() >= n {
                break;
            }
            let Some((_, id)) = parse_order_key(&k.map_err(store_err)?) else {
                continue;
            };
            // An order key whose entry is gone (a crash between the two writes) is skipped.
            let Some(e) = self.get(id).ok().flatten() else {
                continue;
            };
            if model.is_none_or(|m| e.model == m) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Writes what sled holds in memory to disk.
    pub fn flush(&self) -> Result<(), IndexError> {
        self.db.flush().map(|_| ()).map_err(store_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u128, model: &str, used: u64, expires: u64) -> Entry {
        Entry {
            id: Uuid::from_u128(n),
            schema: 1,
            exact: format!("exact-{n}"),
            partition: "p".into(),
            model: model.into(),
            provider: "openai".into(),
            served_model: "gpt".into(),
            prompt: format!("question {n}"),
            context: String::new(),
            response: "{\"answer\":1}".into(),
            prompt_tokens: 1,
            completion_tokens: 2,
            created: 1,
            expires,
            last_used: used,
            hits: 0,
        }
    }

    fn ids(v: &[(u64, Uuid)]) -> Vec<u128> {
        v.iter().map(|(_, id)| id.as_u128()).collect()
    }

    #[test]
    fn entries_keep_their_orders_through_replaces_touches_and_deletes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = ExactStore::open(&dir.path().join("exact")).expect("open");
        s.put(&[
            entry(1, "a", 30, 100),
            entry(2, "a", 10, 200),
            entry(3, "b", 20, 50),
        ])
        .expect("put");
        assert_eq!(s.len(), 3);
        assert_eq!(ids(&s.least_used(10).expect("lru")), [2, 3, 1]);
        assert_eq!(
            s.get(Uuid::from_u128(3)).expect("get"),
            Some(entry(3, "b", 20, 50))
        );
        // A replace moves its order keys; the count stays.
        s.put(&[entry(2, "a", 40, 200)]).expect("put");
        assert_eq!(s.len(), 3);
        assert_eq!(ids(&s.least_used(10).expect("lru")), [3, 1, 2]);
        // A hit moves it too, and never back in time.
        assert!(s.touch(Uuid::from_u128(3), 5, 50).expect("touch"));
        assert!(s.touch(Uuid::from_u128(3), 4, 45).expect("touch"));
        let e3 = s.get(Uuid::from_u128(3)).expect("get").expect("entry");
        assert_eq!((e3.hits, e3.last_used), (5, 50));
        assert_eq!(ids(&s.least_used(2).expect("lru")), [1, 2]);
        assert!(!s.touch(Uuid::from_u128(9), 1, 1).expect("touch"));
        let newest: Vec<_> = s
            .most_used(10, None)
            .expect("list")
            .iter()
            .map(|e| e.id.as_u128())
            .collect();
        assert_eq!(newest, [3, 2, 1]);
        let of_a: Vec<_> = s
            .most_used(1, Some("a"))
            .expect("list")
            .iter()
            .map(|e| e.id.as_u128())
            .collect();
        assert_eq!(of_a, [2]);
        // Expired at 100: entries 1 (100) and 3 (50), not 2 (200).
        let mut gone = s
            .remove_where(&Selector {
                model: None,
                expired_at: Some(100),
            })
            .expect("sweep");
        gone.sort();
        assert_eq!(gone, [Uuid::from_u128(1), Uuid::from_u128(3)]);
        assert_eq!(s.len(), 1);
        assert_eq!(ids(&s.least_used(10).expect("lru")), [2]);
        assert!(s.remove(&[Uuid::from_u128(1)]).expect("remove").is_empty());
        s.put(&[entry(4, "b", 1, 1_000)]).expect("put");
        let gone = s
            .remove_where(&Selector {
                model: Some("a".into()),
                expired_at: None,
            })
            .expect("by model");
        assert_eq!(gone, [Uuid::from_u128(2)]);
        assert_eq!(s.ids().expect("ids"), [Uuid::from_u128(4)]);
        assert_eq!(s.len(), 1);
        drop(s);
        // Kept across a reopen, count included.
        let s = ExactStore::open(&dir.path().join("exact")).expect("reopen");
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.get(Uuid::from_u128(4)).expect("get"),
            Some(entry(4, "b", 1, 1_000))
        );
    }

    #[test]
    fn a_damaged_value_is_a_corrupt_entry_and_a_stray_order_key_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = ExactStore::open(&dir.path().join("exact")).expect("open");
        s.entries
            .insert(Uuid::from_u128(1).as_bytes(), &b"short"[..])
            .expect("insert");
        assert!(matches!(
            s.get(Uuid::from_u128(1)),
            Err(IndexError::Corrupt(_))
        ));
        s.by_used
            .insert(order_key(5, Uuid::from_u128(2)), &[])
            .expect("insert");
        s.by_expiry
            .insert(order_key(5, Uuid::from_u128(2)), &[])
            .expect("insert");
        assert!(s.most_used(10, None).expect("list").is_empty());
        // Eviction and the expiry sweep skip stray keys and drop them.
        assert!(s.least_used(10).expect("lru").is_empty());
        assert!(s.by_used.is_empty());
        let sweep = Selector {
            model: None,
            expired_at: Some(10),
        };
        assert!(s.remove_where(&sweep).expect("sweep").is_empty());
        assert!(s.by_expiry.is_empty());
    }
}
