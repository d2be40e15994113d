//! The embedded store's answers without a vector (exact mode, or a request the semantic tier
//! does not cover): a sled database inside the shard's directory, `data_dir/cache/edge/exact`.
//! Such an answer is only ever read by its id, so a vector shard's payload store, WAL and payload
//! indexes are more than it needs.
//!
//! One tree, keyed by a sequence number in the order answers were stored, so sled appends at its
//! right edge instead of splitting pages all over the tree (keyed by the entry's id, the writes
//! cost more than the shard's). Each value is the entry's last use, expiry and id, a format
//! byte, then the entry in postcard's compact binary form (the answer's JSON is copied as it is;
//! as a JSON string it was escaped again, and half again as long). What is looked up by id or
//! walked in order (the id's slot, the last-use order for eviction and listings, the expiry order
//! for the sweep) is kept in memory, about 100 bytes an entry, and rebuilt from the tree's values
//! when the store opens.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

use super::{Entry, IndexError, Selector};

/// sled keeps at most this much of the store's pages in memory (its default is 1 GiB).
const PAGE_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Bytes before the entry in a value: last use and expiry (big-endian), the id, the format.
const HEAD: usize = 33;

/// How the entry after the head is written: postcard, fields in `Entry`'s order. postcard
/// writes no field names, so a change to `Entry`'s fields must change this number (the golden
/// test below fails until it does); values of another format are dropped when the store opens.
const FORMAT: u8 = 1;

fn store_err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Store(e.to_string())
}

/// Where an entry is and where it stands in the two orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    seq: u64,
    used: u64,
    expires: u64,
}

/// (last used, expires, id) from a stored value's head.
fn head_of(v: &[u8]) -> Option<(u64, u64, Uuid)> {
    let used = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let expires = u64::from_be_bytes(v.get(8..16)?.try_into().ok()?);
    let id = Uuid::from_slice(v.get(16..32)?).ok()?;
    (*v.get(32)? == FORMAT).then_some((used, expires, id))
}

fn encode(entry: &Entry) -> Result<Vec<u8>, IndexError> {
    let mut v = Vec::with_capacity(HEAD + 256 + entry.response.len() + entry.prompt.len());
    v.extend_from_slice(&entry.last_used.to_be_bytes());
    v.extend_from_slice(&entry.expires.to_be_bytes());
    v.extend_from_slice(entry.id.as_bytes());
    v.push(FORMAT);
    postcard::to_extend(entry, v).map_err(store_err)
}

fn decode(v: &[u8]) -> Result<Entry, IndexError> {
    let body = v
        .get(HEAD..)
        .ok_or_else(|| IndexError::Corrupt("a cached entry is shorter than its header".into()))?;
    postcard::from_bytes(body).map_err(|e| IndexError::Corrupt(e.to_string()))
}

/// The in-memory side: every entry's slot and the two orders.
#[derive(Default)]
struct State {
    slots: HashMap<Uuid, Slot>,
    by_used: BTreeSet<(u64, Uuid)>,
    by_expiry: BTreeSet<(u64, Uuid)>,
    next_seq: u64,
}

impl State {
    fn insert(&mut self, id: Uuid, slot: Slot) -> Option<Slot> {
        let old = self.slots.insert(id, slot);
        if let Some(o) = old {
            self.by_used.remove(&(o.used, id));
            self.by_expiry.remove(&(o.expires, id));
        }
        self.by_used.insert((slot.used, id));
        self.by_expiry.insert((slot.expires, id));
        old
    }

    fn remove(&mut self, id: Uuid) -> Option<Slot> {
        let old = self.slots.remove(&id)?;
        self.by_used.remove(&(old.used, id));
        self.by_expiry.remove(&(old.expires, id));
        Some(old)
    }
}

/// Exact-only entries of the embedded store.
pub(super) struct ExactStore {
    db: sled::Db,
    entries: sled::Tree,
    state: Mutex<State>,
}

impl ExactStore {
    /// Opens (or creates) the store in `dir` and reads every entry's slot. A value that cannot
    /// be read is dropped (the cache loses that answer, nothing else).
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        let db = match crate::store::open_sled(dir, PAGE_CACHE_BYTES) {
            Ok(db) => db,
            Err(e) if crate::store::held_elsewhere(&e) => {
                return Err(IndexError::Busy(format!(
                    "another process holds {} (is a second gateway using the same data_dir?)",
                    dir.display()
                )));
            }
            Err(e) => return Err(store_err(format!("cannot open {}: {e}", dir.display()))),
        };
        let entries = db.open_tree("entries").map_err(store_err)?;
        let mut state = State::default();
        let mut dropped = Vec::new();
        for item in entries.iter() {
            let (k, v) = item.map_err(store_err)?;
            let seq = <[u8; 8]>::try_from(k.as_ref()).ok().map(u64::from_be_bytes);
            let (Some(seq), Some((used, expires, id))) = (seq, head_of(&v)) else {
                dropped.push(k);
                continue;
            };
            // Keys come in order: a second copy of an id (a crash between a replace's two
            // writes) is the newer one.
            if let Some(older) = state.insert(id, Slot { seq, used, expires }) {
                dropped.push(older.seq.to_be_bytes().as_slice().into());
            }
            state.next_seq = seq + 1;
        }
        for k in dropped {
            entries.remove(k).map_err(store_err)?;
        }
        Ok(Self {
            db,
            entries,
            state: Mutex::new(state),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every stored id (read once, when the index opens).
    pub fn ids(&self) -> Result<Vec<Uuid>, IndexError> {
        Ok(self.state().slots.keys().copied().collect())
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.state().slots.len() as u64
    }

    fn read(&self, seq: u64) -> Result<Option<sled::IVec>, IndexError> {
        self.entries.get(seq.to_be_bytes()).map_err(store_err)
    }

    /// The entry with this id.
    pub fn get(&self, id: Uuid) -> Result<Option<Entry>, IndexError> {
        let Some(slot) = self.state().slots.get(&id).copied() else {
            return Ok(None);
        };
        match self.read(slot.seq)? {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Stores (or replaces) entries.
    pub fn put(&self, entries: &[Entry]) -> Result<(), IndexError> {
        for e in entries {
            let value = encode(e)?;
            let seq = {
                let mut st = self.state();
                let seq = st.next_seq;
                st.next_seq += 1;
                seq
            };
            self.entries
                .insert(seq.to_be_bytes(), value)
                .map_err(store_err)?;
            let slot = Slot {
                seq,
                used: e.last_used,
                expires: e.expires,
            };
            let old = self.state().insert(e.id, slot);
            if let Some(o) = old {
                self.entries
                    .remove(o.seq.to_be_bytes())
                    .map_err(store_err)?;
            }
        }
        Ok(())
    }

    /// Records hits; false when the entry is not here.
    pub fn touch(&self, id: Uuid, hits: u64, last_used: u64) -> Result<bool, IndexError> {
        let Some(slot) = self.state().slots.get(&id).copied() else {
            return Ok(false);
        };
        let Some(old) = self.read(slot.seq)? else {
            return Ok(false);
        };
        let mut e = decode(&old)?;
        e.hits = e.hits.max(hits);
        e.last_used = e.last_used.max(last_used);
        let value = encode(&e)?;
        // Rewritten in place only if nothing changed it meanwhile (a delete, a newer answer).
        let swapped = self
            .entries
            .compare_and_swap(slot.seq.to_be_bytes(), Some(&old), Some(value))
            .map_err(store_err)?
            .is_ok();
        if swapped {
            let mut st = self.state();
            if st.slots.get(&id) == Some(&slot) {
                st.insert(
                    id,
                    Slot {
                        used: e.last_used,
                        ..slot
                    },
                );
            }
        }
        Ok(true)
    }

    /// Deletes entries; returns the ids that were here.
    pub fn remove(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, IndexError> {
        let mut gone = Vec::new();
        for id in ids {
            let slot = self.state().remove(*id);
            if let Some(slot) = slot {
                self.entries
                    .remove(slot.seq.to_be_bytes())
                    .map_err(store_err)?;
                gone.push(*id);
            }
        }
        Ok(gone)
    }

    /// Deletes every entry the selector matches; returns their ids.
    pub fn remove_where(&self, sel: &Selector) -> Result<Vec<Uuid>, IndexError> {
        let candidates: Vec<Uuid> = {
            let st = self.state();
            match sel.expired_at {
                // Expired ones from the expiry order, without reading the others.
                Some(t) => st
                    .by_expiry
                    .range(..(t.saturating_add(1), Uuid::nil()))
                    .map(|(_, id)| *id)
                    .collect(),
                None => st.slots.keys().copied().collect(),
            }
        };
        let selected = match &sel.model {
            None => candidates,
            Some(m) => {
                let mut ids = Vec::new();
                for id in candidates {
                    if self.get(id).ok().flatten().is_some_and(|e| e.model == *m) {
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
        Ok(self.state().by_used.iter().take(n).copied().collect())
    }

    /// Up to `n` entries (of `model`, when given), most recently used first.
    pub fn most_used(&self, n: usize, model: Option<&str>) -> Result<Vec<Entry>, IndexError> {
        let mut out = Vec::new();
        let mut before: Option<(u64, Uuid)> = None;
        // A page of the order at a time, so the lock is not held while entries are read.
        while out.len() < n {
            let page: Vec<(u64, Uuid)> = {
                let st = self.state();
                let iter: Box<dyn Iterator<Item = &(u64, Uuid)>> = match before {
                    None => Box::new(st.by_used.iter().rev()),
                    Some(b) => Box::new(st.by_used.range(..b).rev()),
                };
                iter.take(256).copied().collect()
            };
            let Some(last) = page.last().copied() else {
                break;
            };
            before = Some(last);
            for (_, id) in page {
                if out.len() >= n {
                    break;
                }
                // An entry deleted since the page was read is skipped.
                let Some(e) = self.get(id).ok().flatten() else {
                    continue;
                };
                if model.is_none_or(|m| e.model == m) {
                    out.push(e);
                }
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
    use super::super::tests::ns;
    use super::*;

    fn entry(n: u128, model: &str, used: u64, expires: u64) -> Entry {
        Entry {
            last_used: used,
            ..super::super::tests::entry(n, model, expires)
        }
    }

    /// The entry's bytes after the head, as hex.
    fn body_hex(e: &Entry) -> String {
        let v = encode(e).expect("encode");
        v[HEAD..].iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_entry_format_is_pinned() {
        let e = entry(7, "m", 5, 9);
        // A change to `Entry`'s fields changes these bytes: bump FORMAT, then update them.
        assert_eq!(body_hex(&e), GOLDEN, "Entry changed: bump FORMAT");
        let v = encode(&e).expect("encode");
        assert_eq!(v[HEAD - 1], FORMAT);
        assert_eq!(decode(&v).expect("decode"), e);
        // A value of another format is not read as an entry.
        let mut other = v.clone();
        other[HEAD - 1] = FORMAT.wrapping_add(1);
        assert!(head_of(&other).is_none());
    }

    const GOLDEN: &str = "1000000000000000000000000000000007010765786163742d370170016d066f70656e6169036770740a7175657374696f6e203700027b7d010101090500";

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
        assert_eq!(ns(&s.most_used(10, None).expect("list")), [3, 2, 1]);
        assert_eq!(ns(&s.most_used(1, Some("a")).expect("list")), [2]);
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
    fn unreadable_values_and_second_copies_are_dropped_when_the_store_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exact");
        let s = ExactStore::open(&path).expect("open");
        let e = entry(1, "a", 5, 100);
        s.entries
            .insert(3u64.to_be_bytes(), encode(&e).expect("encode"))
            .expect("insert");
        s.entries
            .insert(
                7u64.to_be_bytes(),
                encode(&Entry {
                    hits: 9,
                    ..e.clone()
                })
                .expect("encode"),
            )
            .expect("insert");
        s.entries
            .insert(8u64.to_be_bytes(), &b"short"[..])
            .expect("insert");
        s.entries
            .insert(
                &b"odd key"[..],
                encode(&entry(2, "a", 5, 100)).expect("encode"),
            )
            .expect("insert");
        // A readable head over a damaged entry: listed, and read as a corrupt entry.
        let mut bad = encode(&entry(4, "a", 6, 100)).expect("encode");
        bad.truncate(HEAD + 3);
        s.entries.insert(9u64.to_be_bytes(), bad).expect("insert");
        drop(s);
        let s = ExactStore::open(&path).expect("reopen");
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.entries.len(),
            2,
            "the older copy and the unreadable values are gone"
        );
        assert_eq!(
            s.get(Uuid::from_u128(1)).expect("get").map(|e| e.hits),
            Some(9)
        );
        assert!(matches!(
            s.get(Uuid::from_u128(4)),
            Err(IndexError::Corrupt(_))
        ));
        // New entries go after the highest key read.
        s.put(&[entry(5, "b", 7, 100)]).expect("put");
        assert_eq!(
            s.entries.last().expect("last").map(|(k, _)| k.to_vec()),
            Some(10u64.to_be_bytes().to_vec())
        );
        // A listing skips what it cannot read.
        assert_eq!(ns(&s.most_used(10, None).expect("list")), [5, 1]);
    }
}
