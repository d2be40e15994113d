//! The embedded store's answers without a vector (exact mode, or a request the semantic tier
//! does not cover): a sled database inside the shard's directory, `data_dir/cache/edge/exact`.
//! Such an answer is only ever read by its id, so a vector shard's payload store, WAL and payload
//! indexes are more than it needs.
//!
//! Answers are written in **chunks**: the writer thread drains what the request path queued every
//! few milliseconds, and the answers of one drain go into one sled value (up to
//! [`CHUNK_ENTRIES`] answers or [`CHUNK_BYTES`]), keyed by a sequence number in the order they
//! were stored. sled's cost is per value (a tree descent, a page's delta, its splits every 16
//! values, its log write), so under load one value carries tens of answers instead of one (an
//! append keyed per answer took about 10 % of the gateway's CPU with every feature on;
//! docs/performance.md). Each record in a chunk is the entry's id, last use, expiry and length,
//! then the entry in postcard's compact binary form.
//!
//! What is looked up by id or walked in order is kept in memory, about 120 bytes an entry, and
//! rebuilt from the values when the store opens: each entry's chunk and place in it, its hits
//! and last use, the last-use order for eviction and listings, the expiry order for the sweep,
//! and how many of each chunk's records are still alive. A chunk is deleted when its last record
//! goes; a chunk with three quarters of its records gone (an eviction kept its few recently used
//! answers) has the survivors copied into a new chunk, so the file never holds much more than
//! the live answers. A hit does not rewrite its answer: hit counts and last uses go to a small
//! second tree keyed by id, read back over the chunk's figures when the store opens.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

use super::{Entry, IndexError, Selector};

/// sled keeps at most this much of the store's pages in memory (its default is 1 GiB).
const PAGE_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Records in one chunk at most.
const CHUNK_ENTRIES: usize = 64;
/// A chunk is closed once it holds this many bytes (an answer larger than this has its own).
const CHUNK_BYTES: usize = 256 * 1024;
/// A chunk with at most this share of its records alive has them copied to a new chunk.
const SPARSE_DIVISOR: u32 = 4;

/// The first byte of a chunk: records whose entries are postcard, fields in `Entry`'s order.
/// postcard writes no field names, so a change to `Entry`'s fields must change this number (the
/// golden test below fails until it does); chunks of another format are dropped when the store
/// opens.
const FORMAT: u8 = 2;
/// Before a record's entry: its id, last use and expiry (big-endian), the entry's length.
const RECORD_HEAD: usize = 36;

/// The single-entry values of the first format (tree `entries`, one value per answer: last use,
/// expiry, id, format byte 1, the postcard entry). Carried into chunks when the store opens.
const LEGACY_TREE: &str = "entries";
const LEGACY_HEAD: usize = 33;
const LEGACY_FORMAT: u8 = 1;

fn store_err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Store(e.to_string())
}

/// Where an entry is and where it stands in the two orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    /// The chunk's key and the record's byte offset in it.
    chunk: u64,
    offset: u32,
    used: u64,
    expires: u64,
    hits: u64,
    /// A hit count for it is in the `touched` tree.
    touched: bool,
}

/// One record of a chunk, as read from its bytes.
struct Record<'a> {
    id: Uuid,
    used: u64,
    expires: u64,
    offset: u32,
    /// The whole record, head included.
    bytes: &'a [u8],
}

fn be_u64(v: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(at..at + 8)?.try_into().ok()?))
}

/// The records of a chunk value; `None` when its format is another or its bytes do not parse.
fn records(v: &[u8]) -> Option<Vec<Record<'_>>> {
    if *v.first()? != FORMAT {
        return None;
    }
    let mut out = Vec::new();
    let mut at = 1;
    while at < v.len() {
        let id = Uuid::from_slice(v.get(at..at + 16)?).ok()?;
        let used = be_u64(v, at + 16)?;
        let expires = be_u64(v, at + 24)?;
        let len = u32::from_be_bytes(v.get(at + 32..at + 36)?.try_into().ok()?) as usize;
        let end = at.checked_add(RECORD_HEAD)?.checked_add(len)?;
        out.push(Record {
            id,
            used,
            expires,
            offset: u32::try_from(at).ok()?,
            bytes: v.get(at..end)?,
        });
        at = end;
    }
    Some(out)
}

/// Appends a record of `entry` to `chunk`.
fn encode_into(chunk: &mut Vec<u8>, entry: &Entry) -> Result<(), IndexError> {
    let start = chunk.len();
    chunk.extend_from_slice(entry.id.as_bytes());
    chunk.extend_from_slice(&entry.last_used.to_be_bytes());
    chunk.extend_from_slice(&entry.expires.to_be_bytes());
    chunk.extend_from_slice(&[0; 4]);
    let body = start + RECORD_HEAD;
    let mut v = postcard::to_extend(entry, std::mem::take(chunk)).map_err(store_err)?;
    let len = u32::try_from(v.len() - body)
        .map_err(|_| IndexError::Store("a cached answer is over 4 GiB".into()))?;
    v[start + 32..body].copy_from_slice(&len.to_be_bytes());
    *chunk = v;
    Ok(())
}

/// The entry of the record at `offset` of a chunk, if that record is `id`'s.
fn decode_at(chunk: &[u8], offset: u32, id: Uuid) -> Result<Option<Entry>, IndexError> {
    let at = offset as usize;
    let Some(head) = chunk.get(at..at + RECORD_HEAD) else {
        return Ok(None);
    };
    if head.get(..16) != Some(id.as_bytes().as_slice()) {
        return Ok(None);
    }
    let len = u32::from_be_bytes([head[32], head[33], head[34], head[35]]) as usize;
    let body = chunk
        .get(at + RECORD_HEAD..at + RECORD_HEAD + len)
        .ok_or_else(|| IndexError::Corrupt("a cached entry is shorter than its header".into()))?;
    postcard::from_bytes(body)
        .map(Some)
        .map_err(|e| IndexError::Corrupt(e.to_string()))
}

/// A `touched` value: the entry's expiry (which incarnation of the id it counts for), hits and
/// last use.
fn touched_value(slot: &Slot) -> [u8; 24] {
    let mut v = [0; 24];
    v[..8].copy_from_slice(&slot.expires.to_be_bytes());
    v[8..16].copy_from_slice(&slot.hits.to_be_bytes());
    v[16..].copy_from_slice(&slot.used.to_be_bytes());
    v
}

/// Records alive and written in a chunk.
#[derive(Debug, Clone, Copy, Default)]
struct Census {
    live: u32,
    total: u32,
}

/// What the store must do on disk after the in-memory side changed.
#[derive(Default)]
struct Chores {
    /// Chunks with no record alive.
    dead: Vec<u64>,
    /// Chunks with few records alive, to copy into a new chunk.
    sparse: Vec<u64>,
    /// Ids whose `touched` value no longer counts.
    untouch: Vec<Uuid>,
}

impl Chores {
    fn is_empty(&self) -> bool {
        self.dead.is_empty() && self.sparse.is_empty() && self.untouch.is_empty()
    }
}

/// The in-memory side: every entry's slot, the two orders and each chunk's census.
#[derive(Default)]
struct State {
    slots: HashMap<Uuid, Slot>,
    by_used: BTreeSet<(u64, Uuid)>,
    by_expiry: BTreeSet<(u64, Uuid)>,
    chunks: HashMap<u64, Census>,
    next_seq: u64,
}

impl State {
    fn insert(&mut self, id: Uuid, slot: Slot, chores: &mut Chores) {
        // Counted in before the old copy is released: a replace inside one chunk never sees
        // it empty.
        self.chunks.entry(slot.chunk).or_default().live += 1;
        if let Some(o) = self.slots.insert(id, slot) {
            self.by_used.remove(&(o.used, id));
            self.by_expiry.remove(&(o.expires, id));
            self.release(o, chores);
        }
        self.by_used.insert((slot.used, id));
        self.by_expiry.insert((slot.expires, id));
    }

    fn remove(&mut self, id: Uuid, chores: &mut Chores) -> bool {
        let Some(old) = self.slots.remove(&id) else {
            return false;
        };
        self.by_used.remove(&(old.used, id));
        self.by_expiry.remove(&(old.expires, id));
        self.release(old, chores);
        if old.touched {
            chores.untouch.push(id);
        }
        true
    }

    /// A record of a chunk is no longer alive.
    fn release(&mut self, old: Slot, chores: &mut Chores) {
        if let Some(c) = self.chunks.get_mut(&old.chunk) {
            c.live = c.live.saturating_sub(1);
            if c.live == 0 {
                self.chunks.remove(&old.chunk);
                chores.dead.push(old.chunk);
            } else if c.live * SPARSE_DIVISOR <= c.total && (c.live + 1) * SPARSE_DIVISOR > c.total
            {
                // Reported once, when it crosses the line.
                chores.sparse.push(old.chunk);
            }
        }
    }

    /// A hit moves the entry in the last-use order; never back in time.
    fn touch(&mut self, id: Uuid, hits: u64, used: u64) -> Option<Slot> {
        let slot = self.slots.get_mut(&id)?;
        let old_used = slot.used;
        slot.hits = slot.hits.max(hits);
        slot.used = slot.used.max(used);
        slot.touched = true;
        let s = *slot;
        if s.used != old_used {
            self.by_used.remove(&(old_used, id));
            self.by_used.insert((s.used, id));
        }
        Some(s)
    }

    fn next(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }
}

/// Exact-only entries of the embedded store.
pub(super) struct ExactStore {
    db: sled::Db,
    chunks: sled::Tree,
    touched: sled::Tree,
    state: Mutex<State>,
}

impl ExactStore {
    /// Opens (or creates) the store in `dir` and reads every entry's slot. A chunk that cannot
    /// be read is dropped (the cache loses those answers, nothing else).
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
        let chunks = db.open_tree("chunks").map_err(store_err)?;
        let touched = db.open_tree("touched").map_err(store_err)?;
        let mut state = State::default();
        let mut chores = Chores::default();
        for item in chunks.iter() {
            let (k, v) = item.map_err(store_err)?;
            let seq = <[u8; 8]>::try_from(k.as_ref()).ok().map(u64::from_be_bytes);
            let (Some(seq), Some(recs)) = (seq, records(&v)) else {
                chunks.remove(k).map_err(store_err)?;
                continue;
            };
            state.next_seq = seq + 1;
            if recs.is_empty() {
                chunks.remove(k).map_err(store_err)?;
                continue;
            }
            state.chunks.insert(
                seq,
                Census {
                    live: 0,
                    total: recs.len() as u32,
                },
            );
            // Keys come in order: a second copy of an id (a crash between a compaction's
            // two writes, or a replace) is the newer one.
            for r in recs {
                let slot = Slot {
                    chunk: seq,
                    offset: r.offset,
                    used: r.used,
                    expires: r.expires,
                    hits: 0,
                    touched: false,
                };
                state.insert(r.id, slot, &mut chores);
            }
        }
        for item in touched.iter() {
            let (k, v) = item.map_err(store_err)?;
            let id = Uuid::from_slice(&k).ok();
            let counts = (v.len() == 24).then(|| {
                (
                    be_u64(&v, 0).unwrap_or_default(),
                    be_u64(&v, 8).unwrap_or_default(),
                    be_u64(&v, 16).unwrap_or_default(),
                )
            });
            let applied = match (id, counts) {
                (Some(id), Some((expires, hits, used)))
                    if state.slots.get(&id).is_some_and(|s| s.expires == expires) =>
                {
                    state.touch(id, hits, used).is_some()
                }
                _ => false,
            };
            if !applied {
                touched.remove(k).map_err(store_err)?;
            }
        }
        let store = Self {
            db,
            chunks,
            touched,
            state: Mutex::new(state),
        };
        store.settle(chores)?;
        store.carry_legacy()?;
        Ok(store)
    }

    /// Moves the first format's single-entry values into chunks (once; the old tree is dropped).
    fn carry_legacy(&self) -> Result<(), IndexError> {
        if !self
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == LEGACY_TREE.as_bytes())
        {
            return Ok(());
        }
        let legacy = self.db.open_tree(LEGACY_TREE).map_err(store_err)?;
        let mut entries = Vec::new();
        for item in legacy.iter() {
            let (_, v) = item.map_err(store_err)?;
            if v.get(LEGACY_HEAD - 1) != Some(&LEGACY_FORMAT) {
                continue;
            }
            // In key order: a later copy of an id replaces an earlier one in `put`.
            if let Some(e) = v
                .get(LEGACY_HEAD..)
                .and_then(|b| postcard::from_bytes::<Entry>(b).ok())
            {
                entries.push(e);
            }
        }
        self.put(&entries)?;
        self.db.flush().map_err(store_err)?;
        drop(legacy);
        self.db
            .drop_tree(LEGACY_TREE)
            .map(|_| ())
            .map_err(store_err)
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

    /// The entry with this id.
    pub fn get(&self, id: Uuid) -> Result<Option<Entry>, IndexError> {
        // A compaction may move the entry between reading its slot and its chunk: then the
        // record is not at the slot's place, and the slot is read again.
        for _ in 0..4 {
            let Some(slot) = self.state().slots.get(&id).copied() else {
                return Ok(None);
            };
            let value = self
                .chunks
                .get(slot.chunk.to_be_bytes())
                .map_err(store_err)?;
            if let Some(mut e) = value
                .map(|v| decode_at(&v, slot.offset, id))
                .transpose()?
                .flatten()
            {
                e.hits = e.hits.max(slot.hits);
                e.last_used = e.last_used.max(slot.used);
                return Ok(Some(e));
            }
            if self.state().slots.get(&id) == Some(&slot) {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Stores (or replaces) entries, as many to a chunk as fit.
    pub fn put(&self, entries: &[Entry]) -> Result<(), IndexError> {
        let mut rest = entries;
        while !rest.is_empty() {
            let mut value = vec![FORMAT];
            let mut placed = Vec::new();
            for e in rest {
                if placed.len() == CHUNK_ENTRIES
                    || (value.len() >= CHUNK_BYTES && !placed.is_empty())
                {
                    break;
                }
                let offset = u32::try_from(value.len())
                    .map_err(|_| IndexError::Store("a cache chunk is over 4 GiB".into()))?;
                encode_into(&mut value, e)?;
                placed.push((e, offset));
            }
            rest = &rest[placed.len()..];
            let seq = self.state().next();
            self.chunks
                .insert(seq.to_be_bytes(), value)
                .map_err(store_err)?;
            let mut chores = Chores::default();
            {
                let mut st = self.state();
                st.chunks.insert(
                    seq,
                    Census {
                        live: 0,
                        total: placed.len() as u32,
                    },
                );
                for (e, offset) in placed {
                    let slot = Slot {
                        chunk: seq,
                        offset,
                        used: e.last_used,
                        expires: e.expires,
                        hits: e.hits,
                        touched: false,
                    };
                    // The id's earlier hit count was for its earlier answer.
                    if st.slots.get(&e.id).is_some_and(|s| s.touched) {
                        chores.untouch.push(e.id);
                    }
                    st.insert(e.id, slot, &mut chores);
                }
            }
            self.settle(chores)?;
        }
        Ok(())
    }

    /// Records hits; false when the entry is not here. Written to the `touched` tree, not into
    /// the answer's chunk.
    pub fn touch(&self, id: Uuid, hits: u64, last_used: u64) -> Result<bool, IndexError> {
        let Some(slot) = self.state().touch(id, hits, last_used) else {
            return Ok(false);
        };
        self.touched
            .insert(id.as_bytes(), &touched_value(&slot)[..])
            .map_err(store_err)?;
        Ok(true)
    }

    /// Deletes entries; returns the ids that were here.
    pub fn remove(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, IndexError> {
        let mut gone = Vec::new();
        let mut chores = Chores::default();
        {
            let mut st = self.state();
            for id in ids {
                if st.remove(*id, &mut chores) {
                    gone.push(*id);
                }
            }
        }
        self.settle(chores)?;
        Ok(gone)
    }

    /// Does on disk what the in-memory side decided: deletes dead chunks and stale hit counts,
    /// copies the survivors of sparse chunks.
    fn settle(&self, chores: Chores) -> Result<(), IndexError> {
        if chores.is_empty() {
            return Ok(());
        }
        for id in &chores.untouch {
            self.touched.remove(id.as_bytes()).map_err(store_err)?;
        }
        for seq in &chores.dead {
            self.chunks.remove(seq.to_be_bytes()).map_err(store_err)?;
        }
        for seq in chores.sparse {
            self.compact(seq)?;
        }
        Ok(())
    }

    /// Copies the records of chunk `seq` that are still alive into a new chunk and deletes it.
    fn compact(&self, seq: u64) -> Result<(), IndexError> {
        let Some(old) = self.chunks.get(seq.to_be_bytes()).map_err(store_err)? else {
            return Ok(());
        };
        let Some(recs) = records(&old) else {
            return Ok(());
        };
        let (new_seq, alive) = {
            let mut st = self.state();
            let alive: Vec<&Record<'_>> = recs
                .iter()
                .filter(|r| {
                    st.slots
                        .get(&r.id)
                        .is_some_and(|s| s.chunk == seq && s.offset == r.offset)
                })
                .collect();
            if alive.is_empty() {
                return Ok(());
            }
            (st.next(), alive)
        };
        let mut value = vec![FORMAT];
        let mut moved = Vec::new();
        for r in &alive {
            moved.push((r.id, r.offset, value.len() as u32));
            value.extend_from_slice(r.bytes);
        }
        self.chunks
            .insert(new_seq.to_be_bytes(), value)
            .map_err(store_err)?;
        let mut chores = Chores::default();
        {
            let mut st = self.state();
            let mut live = 0;
            for (id, from, to) in &moved {
                if let Some(s) = st.slots.get_mut(id) {
                    // Only if nothing replaced or deleted it meanwhile.
                    if s.chunk == seq && s.offset == *from {
                        s.chunk = new_seq;
                        s.offset = *to;
                        live += 1;
                    }
                }
            }
            st.chunks.insert(
                new_seq,
                Census {
                    live,
                    total: moved.len() as u32,
                },
            );
            if live == 0 {
                st.chunks.remove(&new_seq);
                chores.dead.push(new_seq);
            }
            if let Some(c) = st.chunks.get_mut(&seq) {
                c.live = c.live.saturating_sub(live);
                if c.live == 0 {
                    st.chunks.remove(&seq);
                    chores.dead.push(seq);
                }
            }
        }
        self.settle(chores)
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

    /// A chunk of these entries, as `put` writes it.
    fn chunk(entries: &[Entry]) -> Vec<u8> {
        let mut v = vec![FORMAT];
        for e in entries {
            encode_into(&mut v, e).expect("encode");
        }
        v
    }

    #[test]
    fn the_entry_format_is_pinned() {
        let e = entry(7, "m", 5, 9);
        let v = chunk(std::slice::from_ref(&e));
        assert_eq!(v[0], FORMAT);
        // A change to `Entry`'s fields changes these bytes: bump FORMAT, then update them.
        let body: String = v[1 + RECORD_HEAD..]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(body, GOLDEN, "Entry changed: bump FORMAT");
        let recs = records(&v).expect("records");
        assert_eq!(recs.len(), 1);
        assert_eq!((recs[0].id, recs[0].used, recs[0].expires), (e.id, 5, 9));
        assert_eq!(
            decode_at(&v, recs[0].offset, e.id).expect("decode"),
            Some(e.clone())
        );
        // Another id at that place is not this entry.
        assert_eq!(
            decode_at(&v, recs[0].offset, Uuid::from_u128(8)).expect("decode"),
            None
        );
        // A chunk of another format is not read.
        let mut other = v.clone();
        other[0] = FORMAT.wrapping_add(1);
        assert!(records(&other).is_none());
        // Nor one whose last record is cut.
        assert!(records(&v[..v.len() - 1]).is_none());
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
    fn unreadable_chunks_and_second_copies_are_dropped_when_the_store_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exact");
        let s = ExactStore::open(&path).expect("open");
        let e = entry(1, "a", 5, 100);
        let put = |k: &[u8], v: Vec<u8>| s.chunks.insert(k, v).expect("insert");
        put(&3u64.to_be_bytes(), chunk(std::slice::from_ref(&e)));
        // A later copy of entry 1, beside entry 2.
        put(
            &7u64.to_be_bytes(),
            chunk(&[
                Entry {
                    hits: 9,
                    ..e.clone()
                },
                entry(2, "a", 6, 100),
            ]),
        );
        put(&8u64.to_be_bytes(), b"short".to_vec());
        put(b"odd key", chunk(&[entry(3, "a", 5, 100)]));
        // A readable head over a damaged entry: listed, and read as a corrupt entry.
        let mut bad = chunk(&[entry(4, "a", 6, 100)]);
        let len = bad.len() - 1 - RECORD_HEAD;
        bad.truncate(1 + RECORD_HEAD + 3);
        bad[1 + 32..1 + RECORD_HEAD].copy_from_slice(&3u32.to_be_bytes());
        assert!(len > 3);
        put(&9u64.to_be_bytes(), bad);
        drop(s);
        let s = ExactStore::open(&path).expect("reopen");
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.chunks.len(),
            2,
            "the chunk of the older copy and the unreadable ones are gone"
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
            s.chunks.last().expect("last").map(|(k, _)| k.to_vec()),
            Some(10u64.to_be_bytes().to_vec())
        );
        // A listing skips what it cannot read.
        assert_eq!(ns(&s.most_used(10, None).expect("list")), [5, 2, 1]);
    }

    #[test]
    fn one_put_fills_chunks_and_sparse_chunks_are_copied_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exact");
        let s = ExactStore::open(&path).expect("open");
        let all: Vec<Entry> = (0..100u128)
            .map(|n| entry(n, "a", n as u64, 1_000))
            .collect();
        s.put(&all).expect("put");
        assert_eq!(s.len(), 100);
        assert_eq!(s.chunks.len(), 2, "64 answers to a chunk");
        assert!(s.touch(Uuid::from_u128(63), 4, 500).expect("touch"));
        // Evicting the 60 least used of the first chunk leaves 4 of its 64: copied out.
        let oldest: Vec<Uuid> = s
            .least_used(60)
            .expect("lru")
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        assert_eq!(s.remove(&oldest).expect("remove").len(), 60);
        assert_eq!(s.len(), 40);
        let keys: Vec<u64> = s
            .chunks
            .iter()
            .keys()
            .map(|k| u64::from_be_bytes(k.expect("key").as_ref().try_into().expect("8 bytes")))
            .collect();
        assert_eq!(
            keys,
            [1, 2],
            "the first chunk is gone, its survivors in a new one"
        );
        for n in 60..100u128 {
            let e = s.get(Uuid::from_u128(n)).expect("get").expect("kept");
            assert_eq!(e.prompt, format!("question {n}"));
        }
        let hot = s.get(Uuid::from_u128(63)).expect("get").expect("kept");
        assert_eq!((hot.hits, hot.last_used), (4, 500));
        // Removing every record of a chunk deletes it.
        let second: Vec<Uuid> = (64..100u128).map(Uuid::from_u128).collect();
        s.remove(&second).expect("remove");
        assert_eq!(s.chunks.len(), 1);
        drop(s);
        let s = ExactStore::open(&path).expect("reopen");
        assert_eq!(ns(&s.most_used(10, None).expect("list")), [63, 62, 61, 60]);
        let hot = s.get(Uuid::from_u128(63)).expect("get").expect("kept");
        assert_eq!((hot.hits, hot.last_used), (4, 500), "the hit count is kept");
    }

    #[test]
    fn hit_counts_survive_a_reopen_and_end_with_their_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exact");
        let s = ExactStore::open(&path).expect("open");
        s.put(&[entry(1, "a", 5, 100), entry(2, "a", 6, 100)])
            .expect("put");
        assert!(s.touch(Uuid::from_u128(1), 3, 50).expect("touch"));
        assert!(s.touch(Uuid::from_u128(2), 2, 40).expect("touch"));
        // A new answer under id 1 starts its own count; deleting 2 deletes its count.
        s.put(&[entry(1, "a", 7, 200)]).expect("put");
        s.remove(&[Uuid::from_u128(2)]).expect("remove");
        assert_eq!(s.touched.len(), 0);
        assert!(s.touch(Uuid::from_u128(1), 1, 60).expect("touch"));
        drop(s);
        let s = ExactStore::open(&path).expect("reopen");
        let e = s.get(Uuid::from_u128(1)).expect("get").expect("entry");
        assert_eq!((e.hits, e.last_used, e.expires), (1, 60, 200));
        assert_eq!(ids(&s.least_used(10).expect("lru")), [1]);
        // A count left for an answer that is gone is dropped when the store opens.
        let stale = Slot {
            chunk: 0,
            offset: 0,
            used: 1,
            expires: 1,
            hits: 1,
            touched: true,
        };
        s.touched
            .insert(Uuid::from_u128(9).as_bytes(), &touched_value(&stale)[..])
            .expect("insert");
        drop(s);
        let s = ExactStore::open(&path).expect("reopen");
        assert_eq!(s.touched.len(), 1);
    }

    #[test]
    fn answers_of_the_first_format_are_carried_into_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exact");
        {
            let db = crate::store::open_sled(&path, PAGE_CACHE_BYTES).expect("open");
            let t = db.open_tree(LEGACY_TREE).expect("tree");
            let legacy = |e: &Entry| {
                let mut v = Vec::new();
                v.extend_from_slice(&e.last_used.to_be_bytes());
                v.extend_from_slice(&e.expires.to_be_bytes());
                v.extend_from_slice(e.id.as_bytes());
                v.push(LEGACY_FORMAT);
                postcard::to_extend(e, v).expect("encode")
            };
            t.insert(1u64.to_be_bytes(), legacy(&entry(1, "a", 5, 100)))
                .expect("insert");
            t.insert(2u64.to_be_bytes(), legacy(&entry(2, "b", 6, 100)))
                .expect("insert");
            // The later copy of 1 wins.
            let newer = Entry {
                hits: 3,
                ..entry(1, "a", 7, 100)
            };
            t.insert(3u64.to_be_bytes(), legacy(&newer))
                .expect("insert");
            t.insert(4u64.to_be_bytes(), &b"garbage"[..])
                .expect("insert");
            db.flush().expect("flush");
        }
        let s = ExactStore::open(&path).expect("open");
        assert_eq!(s.len(), 2);
        let e = s.get(Uuid::from_u128(1)).expect("get").expect("entry");
        assert_eq!((e.hits, e.last_used), (3, 7));
        assert_eq!(
            s.get(Uuid::from_u128(2)).expect("get"),
            Some(entry(2, "b", 6, 100))
        );
        assert!(
            !s.db
                .tree_names()
                .iter()
                .any(|n| n.as_ref() == LEGACY_TREE.as_bytes())
        );
        drop(s);
        let s = ExactStore::open(&path).expect("reopen");
        assert_eq!(s.len(), 2);
    }
}
