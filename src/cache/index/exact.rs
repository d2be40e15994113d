//! The embedded store's answers without a vector (exact mode, or a request the semantic tier
//! does not cover), in `data_dir/cache/edge/exact`. Such an answer is only ever read by its id, so
//! a vector shard's payload store, WAL and payload indexes are more than it needs.
//!
//! It is a log: segment files (`0000000001.log`, ...) of records appended in the order they
//! are written, each a CRC-32, a length, a kind (an answer, or the deletion of an id) and the
//! body. An answer's body is the entry's last use, expiry and id, a format byte, then the entry in
//! postcard's compact binary form (the answer's JSON is copied as it is). What is looked up by
//! id or walked in order (where each answer's record is, the last-use order for eviction and
//! listings, the expiry order for the sweep, each segment's live bytes) is kept in memory, about
//! 120 bytes an entry, and rebuilt by reading the log when the store opens: records in order, a
//! later answer with the same id replacing an earlier one, a deletion removing it. The answers
//! one drain of the writer holds are one write. A hit's new count and last use is a new record.
//!
//! Space is taken back from the oldest segment only, once the files hold more than twice the
//! live answers (plus two segments): its live answers are written again at the end, the copies
//! made durable, then the file deleted. Deletions are only ever needed by records older than
//! themselves, so deleting the oldest file never brings an answer back. A torn record at the end
//! of the last segment (a crash mid-write) is cut off when the store opens; a damaged record
//! elsewhere ends what is read of its segment, and a write that fails closes its segment, so
//! nothing is appended after a partial record.
//!
//! Up to 2026-12-02 the store was a sled tree in the same directory; such a store is copied over
//! when it is first opened (`copy_from_sled`). sled cost six bytes written for each byte
//! stored, and about 12 us of CPU an answer (docs/performance.md, "Ninth slice").

use std::collections::BTreeMap;

use foldhash::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

use super::order::Order;
use super::{Entry, IndexError, Selector};

/// Bytes before the entry in an answer's body: last use and expiry (big-endian), the id, the
/// format.
const HEAD: usize = 33;

/// How the entry after the head is written: postcard, fields in `Entry`'s order. postcard
/// writes no field names, so a change to `Entry`'s fields must change this number (the golden
/// test below fails until it does); answers of another format are dropped when the store opens.
const FORMAT: u8 = 1;

/// A segment is closed, and the next one started, once it holds this much.
const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// A record's head: CRC-32 of the rest of the record (little-endian), the body's length
/// (little-endian), the kind.
const RECORD_HEAD: usize = 9;

/// An answer: the body is the encoded entry.
const PUT: u8 = 1;

/// A deletion: the body is the id.
const DELETE: u8 = 2;

/// How long opening waits for another process to release the directory (a restart overlapping
/// the old process's exit).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Written answers are made durable (fsync, on a thread of their own) at most about this long
/// after they are written, as sled did.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Live answers copied forward in writes of about this size.
const COPY_BYTES: usize = 1024 * 1024;

/// The file that marks a store written by an earlier version, with sled.
const SLED_FILE: &str = "db";

/// Present while a sled store is being copied.
const COPYING_FILE: &str = "COPYING";

fn store_err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Store(e.to_string())
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

/// Where an entry's record is and where it stands in the two orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    /// The segment, and the offset and length of the body in it.
    seg: u64,
    off: u64,
    len: u32,
    used: u64,
    expires: u64,
}

impl Slot {
    /// The bytes of the record, head included.
    fn record_bytes(&self) -> u64 {
        RECORD_HEAD as u64 + u64::from(self.len)
    }
}

/// A segment file: open for reading (and, the last one, for appending), its size and how much
/// of it is live answers.
struct Segment {
    file: Arc<File>,
    bytes: u64,
    live: u64,
}

/// The in-memory side: every entry's slot, the two orders and the segments.
#[derive(Default)]
struct State {
    slots: HashMap<Uuid, Slot>,
    by_used: Order,
    by_expiry: Order,
    /// Oldest first; the last is the one written to.
    segments: BTreeMap<u64, Segment>,
}

impl State {
    fn insert(&mut self, id: Uuid, slot: Slot) -> Option<Slot> {
        let old = self.slots.insert(id, slot);
        if let Some(old) = old {
            self.unlist(id, old);
        }
        self.by_used.insert(slot.used, id);
        self.by_expiry.insert(slot.expires, id);
        if let Some(seg) = self.segments.get_mut(&slot.seg) {
            seg.live += slot.record_bytes();
        }
        old
    }

    fn remove(&mut self, id: Uuid) -> Option<Slot> {
        let old = self.slots.remove(&id)?;
        self.unlist(id, old);
        Some(old)
    }

    /// Takes a slot that is no longer `id`'s out of the orders and its segment's live bytes.
    fn unlist(&mut self, id: Uuid, old: Slot) {
        self.by_used.remove(old.used, id);
        self.by_expiry.remove(old.expires, id);
        if let Some(seg) = self.segments.get_mut(&old.seg) {
            seg.live = seg.live.saturating_sub(old.record_bytes());
        }
    }

    /// The segment written to, its file and size.
    fn active(&self) -> Option<(u64, Arc<File>, u64)> {
        let (id, seg) = self.segments.last_key_value()?;
        Some((*id, seg.file.clone(), seg.bytes))
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:010}.log"))
}

/// The segment files in `dir`, oldest first.
fn segment_ids(dir: &Path) -> Result<Vec<u64>, IndexError> {
    let listing = std::fs::read_dir(dir)
        .map_err(|e| store_err(format!("cannot list {}: {e}", dir.display())))?;
    let mut ids: Vec<u64> = listing
        .flatten()
        .filter_map(|item| {
            let name = item.file_name();
            let stem = name.to_str()?.strip_suffix(".log")?;
            (stem.len() == 10).then(|| stem.parse().ok()).flatten()
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

fn open_segment(dir: &Path, id: u64, create: bool) -> Result<File, IndexError> {
    let path = segment_path(dir, id);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(&path)
        .map_err(|e| store_err(format!("cannot open {}: {e}", path.display())))
}

/// Appends a record to `buf`.
fn push_record(buf: &mut Vec<u8>, kind: u8, body: &[u8]) -> Result<(), IndexError> {
    let len = u32::try_from(body.len())
        .map_err(|_| store_err("an answer of 4 GiB or more cannot be cached"))?;
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(body);
    let crc = crc32fast::hash(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// One record read back: its kind, and where its body is in the segment.
struct Record {
    kind: u8,
    off: usize,
    len: usize,
}

/// The record at `pos` of `data`; None when what is there is not a whole record with its CRC.
fn record_at(data: &[u8], pos: usize) -> Option<Record> {
    let head = data.get(pos..pos.checked_add(RECORD_HEAD)?)?;
    let crc = u32::from_le_bytes(head[0..4].try_into().ok()?);
    let len = u32::from_le_bytes(head[4..8].try_into().ok()?) as usize;
    let end = pos.checked_add(RECORD_HEAD)?.checked_add(len)?;
    let checked = data.get(pos + 4..end)?;
    (crc32fast::hash(checked) == crc).then_some(Record {
        kind: head[8],
        off: pos + RECORD_HEAD,
        len,
    })
}

fn remove_if_there(path: &Path) -> Result<(), IndexError> {
    let gone = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match gone {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(store_err(format!("cannot remove {}: {e}", path.display())))
        }
        _ => Ok(()),
    }
}

/// Locks `dir` for this process: a second gateway on the same data directory is refused
/// instead of writing the same files. The lock is taken per open file, so a second open in the
/// same process is refused too.
fn lock_dir(dir: &Path) -> Result<File, IndexError> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| store_err(format!("cannot open {}: {e}", path.display())))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(IndexError::Busy(format!(
                    "another process holds {} (is a second gateway using the same data_dir?)",
                    dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(store_err(format!("cannot lock {}: {e}", path.display())));
            }
        }
    }
}

/// Makes written segments durable off the writer's path: every [`SYNC_EVERY`], at once when asked
/// (before a compaction deletes a file, and on flush), and a last time when the store closes.
#[derive(Default)]
struct Syncer {
    /// Written since their last sync, by segment.
    dirty: Mutex<HashMap<u64, Arc<File>>>,
    stop: Mutex<bool>,
    wake: std::sync::Condvar,
}

impl Syncer {
    fn dirty(&self, id: u64, file: Arc<File>) {
        self.dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_insert(file);
    }

    /// Syncs every segment written since its last sync.
    fn now(&self) -> Result<(), IndexError> {
        let files = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(PoisonError::into_inner));
        let mut failed = None;
        for (id, file) in files {
            if let Err(e) = file.sync_data() {
                failed = Some(format!("cannot sync segment {id} of the exact store: {e}"));
            }
        }
        failed.map_or(Ok(()), |e| Err(store_err(e)))
    }

    fn run(&self) {
        loop {
            // Every SYNC_EVERY, or at once when the store closes.
            let stopping = {
                let stop = self.stop.lock().unwrap_or_else(PoisonError::into_inner);
                *self
                    .wake
                    .wait_timeout_while(stop, SYNC_EVERY, |stop| !*stop)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            };
            if let Err(e) = self.now() {
                tracing::warn!("{e}; the answers written are kept by the operating system");
            }
            if stopping {
                return;
            }
        }
    }
}

impl Drop for ExactStore {
    fn drop(&mut self) {
        *self
            .sync
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.sync.wake.notify_all();
        if let Some(t) = self.sync_thread.take() {
            let _ = t.join();
        }
    }
}

/// Exact-only entries of the embedded store.
pub(super) struct ExactStore {
    dir: PathBuf,
    /// [`SEGMENT_BYTES`], smaller in tests.
    segment_bytes: u64,
    state: Mutex<State>,
    /// Held by every write: appends, and a hit's rewrite that must not bring back an entry
    /// deleted meanwhile.
    writes: Mutex<()>,
    /// Segments written since they were last made durable, and the thread that does it.
    sync: Arc<Syncer>,
    sync_thread: Option<std::thread::JoinHandle<()>>,
    /// The directory's lock, held while the store is open.
    _lock: File,
}

impl ExactStore {
    /// Opens (or creates) the store in `dir` and reads every entry's slot. A record that cannot
    /// be read is dropped (the cache loses that answer, nothing else).
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        Self::open_with(dir, SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, segment_bytes: u64) -> Result<Self, IndexError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| store_err(format!("cannot create {}: {e}", dir.display())))?;
        let lock = lock_dir(dir)?;
        // A store written by an earlier version (sled) is copied over once: when there is no
        // log yet, or when a copy was interrupted (its marker is still there).
        let marker = dir.join(COPYING_FILE);
        let mut ids = segment_ids(dir)?;
        let from_sled = dir.join(SLED_FILE).is_file() && (ids.is_empty() || marker.exists());
        if from_sled {
            std::fs::write(&marker, b"")
                .map_err(|e| store_err(format!("cannot write {}: {e}", marker.display())))?;
            for id in ids.drain(..) {
                remove_if_there(&segment_path(dir, id))?;
            }
        }
        let mut state = State::default();
        let last = ids.last().copied();
        for id in ids {
            read_segment(dir, id, Some(id) == last, &mut state)?;
        }
        let sync = Arc::new(Syncer::default());
        let sync_thread = {
            let sync = sync.clone();
            std::thread::Builder::new()
                .name("switchyard-cache-sync".into())
                .spawn(move || sync.run())
                .map_err(|e| {
                    store_err(format!("cannot start the exact store's sync thread: {e}"))
                })?
        };
        let store = Self {
            dir: dir.to_owned(),
            segment_bytes,
            state: Mutex::new(state),
            writes: Mutex::new(()),
            sync: sync.clone(),
            sync_thread: Some(sync_thread),
            _lock: lock,
        };
        {
            let _writes = store.writes();
            let next = match store.state().active() {
                Some((id, _, bytes)) if bytes >= segment_bytes => Some(id + 1),
                Some(_) => None,
                None => Some(1),
            };
            if let Some(id) = next {
                store.start_segment(id)?;
            }
        }
        if from_sled {
            copy_from_sled(dir, &store)?;
            remove_if_there(&marker)?;
        }
        Ok(store)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn writes(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts segment `id` as the one written to (the caller holds the write lock).
    fn start_segment(&self, id: u64) -> Result<(), IndexError> {
        let file = open_segment(&self.dir, id, true)?;
        let bytes = file.metadata().map_err(store_err)?.len();
        self.state().segments.insert(
            id,
            Segment {
                file: Arc::new(file),
                bytes,
                live: 0,
            },
        );
        Ok(())
    }

    /// Writes `buf` (whole records) at the end of the log; returns the segment and the offset it
    /// starts at. A failed write closes its segment, so nothing lands after a partial record.
    /// What is written is made durable by the sync thread within [`SYNC_EVERY`]. The caller
    /// holds the write lock.
    fn append(&self, buf: &[u8]) -> Result<(u64, u64), IndexError> {
        let Some((id, file, at)) = self.state().active() else {
            return Err(store_err("the exact store has no segment to write to"));
        };
        if let Err(e) = file.write_all_at(buf, at) {
            // What was written of it is cut off when the store next opens; the next write goes
            // to a new segment (if that cannot be started either, the error says so next time).
            let _ = self.start_segment(id + 1);
            return Err(store_err(format!(
                "cannot write {}: {e}",
                segment_path(&self.dir, id).display()
            )));
        }
        let end = at + buf.len() as u64;
        if let Some(seg) = self.state().segments.get_mut(&id) {
            seg.bytes = end;
        }
        self.sync.dirty(id, file);
        if end >= self.segment_bytes {
            self.start_segment(id + 1)?;
        }
        Ok((id, at))
    }

    /// Appends answers already encoded (a value whose head cannot be read is skipped) and points
    /// their ids at them. The caller holds the write lock.
    fn append_answers(&self, values: &[impl AsRef<[u8]>]) -> Result<(), IndexError> {
        let mut buf =
            Vec::with_capacity(values.iter().map(|v| RECORD_HEAD + v.as_ref().len()).sum());
        let mut placed = Vec::with_capacity(values.len());
        for v in values {
            let v = v.as_ref();
            let Some((used, expires, id)) = head_of(v) else {
                continue;
            };
            let off = (buf.len() + RECORD_HEAD) as u64;
            push_record(&mut buf, PUT, v)?;
            placed.push((id, off, v.len() as u32, used, expires));
        }
        if buf.is_empty() {
            return Ok(());
        }
        let (seg, at) = self.append(&buf)?;
        let mut st = self.state();
        for (id, off, len, used, expires) in placed {
            st.insert(
                id,
                Slot {
                    seg,
                    off: at + off,
                    len,
                    used,
                    expires,
                },
            );
        }
        Ok(())
    }

    /// Appends answers already encoded in writes of about [`COPY_BYTES`] (copies of many
    /// answers: a compaction's, or a sled store's). The caller holds the write lock.
    fn append_batched<V: AsRef<[u8]>>(
        &self,
        values: impl IntoIterator<Item = Result<V, IndexError>>,
    ) -> Result<(), IndexError> {
        let mut batch = Vec::new();
        let mut size = 0;
        for v in values {
            let v = v?;
            size += v.as_ref().len();
            batch.push(v);
            if size >= COPY_BYTES {
                self.append_answers(&batch)?;
                batch.clear();
                size = 0;
            }
        }
        self.append_answers(&batch)
    }

    /// Takes space back from the oldest segments while the files hold more than twice the live
    /// answers and two segments. The caller holds the write lock.
    fn collect(&self) -> Result<(), IndexError> {
        loop {
            let (oldest, file, live) = {
                let st = self.state();
                let total: u64 = st.segments.values().map(|s| s.bytes).sum();
                let live: u64 = st.segments.values().map(|s| s.live).sum();
                if st.segments.len() < 2 || total <= 2 * live + 2 * self.segment_bytes {
                    return Ok(());
                }
                let Some((id, seg)) = st.segments.first_key_value() else {
                    return Ok(());
                };
                let mut live: Vec<(Uuid, Slot)> = st
                    .slots
                    .iter()
                    .filter(|(_, s)| s.seg == *id)
                    .map(|(id, s)| (*id, *s))
                    .collect();
                live.sort_unstable_by_key(|(_, s)| s.off);
                (*id, seg.file.clone(), live)
            };
            // An unreadable answer goes with its segment (a miss, as a damaged answer is).
            self.append_batched(live.iter().filter_map(|(_, slot)| {
                let mut v = vec![0; slot.len as usize];
                file.read_exact_at(&mut v, slot.off).ok().map(|()| Ok(v))
            }))?;
            // The copies are on disk before the only other copy goes.
            self.sync.now()?;
            {
                let mut st = self.state();
                // Whatever still points into it (an answer that could not be read) goes too.
                for (id, _) in live {
                    if st.slots.get(&id).is_some_and(|s| s.seg == oldest) {
                        st.remove(id);
                    }
                }
                st.segments.remove(&oldest);
            }
            remove_if_there(&segment_path(&self.dir, oldest))?;
        }
    }

    /// Every stored id (read once, when the index opens).
    pub fn ids(&self) -> Result<Vec<Uuid>, IndexError> {
        Ok(self.state().slots.keys().copied().collect())
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.state().slots.len() as u64
    }

    /// The body of the answer in `slot`.
    fn read(&self, slot: Slot) -> Result<Option<Vec<u8>>, IndexError> {
        // The file stays readable through this handle even if it is deleted meanwhile.
        let Some(file) = self.state().segments.get(&slot.seg).map(|s| s.file.clone()) else {
            return Ok(None);
        };
        let mut v = vec![0; slot.len as usize];
        file.read_exact_at(&mut v, slot.off)
            .map_err(|e| IndexError::Corrupt(format!("cannot read a cached answer: {e}")))?;
        Ok(Some(v))
    }

    /// The entry with this id.
    pub fn get(&self, id: Uuid) -> Result<Option<Entry>, IndexError> {
        // An answer moved forward between reading its place and reading its segment (whose file
        // is gone) is read again where it went; a place that did not change is a true miss.
        let mut tried = None;
        loop {
            let Some(slot) = self.state().slots.get(&id).copied() else {
                return Ok(None);
            };
            if tried == Some(slot) {
                return Ok(None);
            }
            if let Some(v) = self.read(slot)? {
                return decode(&v).map(Some);
            }
            tried = Some(slot);
        }
    }

    /// Stores (or replaces) entries, in one write.
    pub fn put(&self, entries: &[Entry]) -> Result<(), IndexError> {
        let values = entries.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        let _writes = self.writes();
        self.append_answers(&values)?;
        self.collect()
    }

    /// Records hits; false when the entry is not here.
    pub fn touch(&self, id: Uuid, hits: u64, last_used: u64) -> Result<bool, IndexError> {
        let _writes = self.writes();
        let Some(slot) = self.state().slots.get(&id).copied() else {
            return Ok(false);
        };
        let Some(old) = self.read(slot)? else {
            return Ok(false);
        };
        let mut e = decode(&old)?;
        e.hits = e.hits.max(hits);
        e.last_used = e.last_used.max(last_used);
        self.append_answers(&[encode(&e)?])?;
        self.collect()?;
        Ok(true)
    }

    /// Deletes entries; returns the ids that were here.
    pub fn remove(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, IndexError> {
        let _writes = self.writes();
        let present: Vec<Uuid> = {
            let st = self.state();
            ids.iter()
                .filter(|id| st.slots.contains_key(id))
                .copied()
                .collect()
        };
        if present.is_empty() {
            return Ok(present);
        }
        let mut buf = Vec::with_capacity(present.len() * (RECORD_HEAD + 16));
        for id in &present {
            push_record(&mut buf, DELETE, id.as_bytes())?;
        }
        self.append(&buf)?;
        {
            let mut st = self.state();
            for id in &present {
                st.remove(*id);
            }
        }
        self.collect()?;
        Ok(present)
    }

    /// Deletes every entry the selector matches; returns their ids.
    pub fn remove_where(&self, sel: &Selector) -> Result<Vec<Uuid>, IndexError> {
        let candidates: Vec<Uuid> = {
            let st = self.state();
            match sel.expired_at {
                // Expired ones from the expiry order, without reading the others.
                Some(t) => st.by_expiry.up_to(t),
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
        Ok(self.state().by_used.first(n))
    }

    /// Up to `n` entries (of `model`, when given), most recently used first.
    pub fn most_used(&self, n: usize, model: Option<&str>) -> Result<Vec<Entry>, IndexError> {
        let mut out = Vec::new();
        let mut before: Option<(u64, Uuid)> = None;
        // A page of the order at a time, so the lock is not held while entries are read.
        while out.len() < n {
            let page = self.state().by_used.last_before(before, 256);
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

    /// Makes what was written durable (it is in the operating system's hands after each
    /// write already, so a crash of the process alone loses nothing).
    pub fn flush(&self) -> Result<(), IndexError> {
        let _writes = self.writes();
        self.sync.now()
    }
}

/// Reads segment `id` into `state`. A damaged or partial record ends what is read of it; at the
/// end of the last segment (a write the process did not finish) it is also cut off, so the next
/// write follows the last whole record.
fn read_segment(dir: &Path, id: u64, last: bool, state: &mut State) -> Result<(), IndexError> {
    let file = Arc::new(open_segment(dir, id, false)?);
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut &*file, &mut data).map_err(|e| {
        store_err(format!(
            "cannot read {}: {e}",
            segment_path(dir, id).display()
        ))
    })?;
    state.segments.insert(
        id,
        Segment {
            file: file.clone(),
            bytes: data.len() as u64,
            live: 0,
        },
    );
    let mut pos = 0;
    while pos < data.len() {
        let Some(rec) = record_at(&data, pos) else {
            break;
        };
        let body = &data[rec.off..rec.off + rec.len];
        match rec.kind {
            PUT => {
                if let Some((used, expires, entry)) = head_of(body) {
                    state.insert(
                        entry,
                        Slot {
                            seg: id,
                            off: rec.off as u64,
                            len: rec.len as u32,
                            used,
                            expires,
                        },
                    );
                }
            }
            DELETE => {
                if let Ok(entry) = Uuid::from_slice(body) {
                    state.remove(entry);
                }
            }
            _ => {}
        }
        pos = rec.off + rec.len;
    }
    if pos < data.len() && last {
        file.set_len(pos as u64).map_err(|e| {
            store_err(format!(
                "cannot truncate {}: {e}",
                segment_path(dir, id).display()
            ))
        })?;
        if let Some(seg) = state.segments.get_mut(&id) {
            seg.bytes = pos as u64;
        }
    }
    Ok(())
}

/// Copies a store an earlier version wrote with sled into `store` (the same values), makes the
/// copy durable, then deletes sled's files, its `db` first. Until the caller removes its marker,
/// an interrupted copy is started again from nothing, so it loses nothing.
fn copy_from_sled(dir: &Path, store: &ExactStore) -> Result<(), IndexError> {
    let db = match crate::store::open_sled(dir, 4 * 1024 * 1024) {
        Ok(db) => db,
        Err(e) if crate::store::held_elsewhere(&e) => {
            return Err(IndexError::Busy(format!(
                "another process holds {} (is a second gateway using the same data_dir?)",
                dir.display()
            )));
        }
        Err(e) => return Err(store_err(format!("cannot open {}: {e}", dir.display()))),
    };
    let old = db.open_tree("entries").map_err(store_err)?;
    {
        let _writes = store.writes();
        // In key order, the order they were stored: a second copy of an id is the newer one.
        store.append_batched(
            old.iter()
                .map(|item| item.map(|(_, v)| v).map_err(store_err)),
        )?;
    }
    store.flush()?;
    drop(old);
    drop(db);
    remove_if_there(&dir.join(SLED_FILE))?;
    let listing = std::fs::read_dir(dir)
        .map_err(|e| store_err(format!("cannot list {}: {e}", dir.display())))?;
    for item in listing.flatten() {
        let name = item.file_name();
        let name = name.to_string_lossy();
        if name == "conf" || name == "blobs" || name.starts_with("snap.") {
            remove_if_there(&item.path())?;
        }
    }
    Ok(())
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

    /// The segment files in `path`, oldest first.
    fn segments(path: &Path) -> Vec<u64> {
        segment_ids(path).expect("list")
    }

    #[test]
    fn unreadable_records_and_second_copies_are_dropped_when_the_store_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exact");
        let s = ExactStore::open(&path).expect("open");
        let e = entry(1, "a", 5, 100);
        let mut bad = encode(&entry(4, "a", 6, 100)).expect("encode");
        // A readable head over a damaged entry: listed, and read as a corrupt entry.
        bad.truncate(HEAD + 3);
        {
            let _writes = s.writes();
            s.append_answers(&[
                encode(&e).expect("encode"),
                encode(&Entry {
                    hits: 9,
                    ..e.clone()
                })
                .expect("encode"),
                b"short".to_vec(),
                bad,
            ])
            .expect("append");
        }
        drop(s);
        let s = ExactStore::open(&path).expect("reopen");
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.get(Uuid::from_u128(1)).expect("get").map(|e| e.hits),
            Some(9),
            "the later copy"
        );
        assert!(matches!(
            s.get(Uuid::from_u128(4)),
            Err(IndexError::Corrupt(_))
        ));
        s.put(&[entry(5, "b", 7, 100)]).expect("put");
        // A listing skips what it cannot read.
        assert_eq!(ns(&s.most_used(10, None).expect("list")), [5, 1]);
    }

    #[test]
    fn a_torn_write_is_cut_off_and_a_damaged_record_ends_its_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exact");
        // Segments of about two answers.
        let s = ExactStore::open_with(&path, 200).expect("open");
        for n in 1..=6 {
            s.put(&[entry(n, "a", n as u64, 1_000)]).expect("put");
        }
        let segs = segments(&path);
        assert!(segs.len() >= 3, "{segs:?}");
        drop(s);
        // The process died in the middle of a write at the end of the last segment.
        let last = segment_path(&path, *segs.last().expect("last"));
        let whole = std::fs::metadata(&last).expect("size").len();
        let mut torn = Vec::new();
        push_record(
            &mut torn,
            PUT,
            &encode(&entry(7, "a", 7, 1_000)).expect("encode"),
        )
        .expect("record");
        torn.truncate(torn.len() / 2);
        let mut data = std::fs::read(&last).expect("read");
        data.extend_from_slice(&torn);
        std::fs::write(&last, &data).expect("write");
        // And a bit flipped in the first record of the first segment.
        let first = segment_path(&path, segs[0]);
        let mut data = std::fs::read(&first).expect("read");
        data[RECORD_HEAD + 20] ^= 0x40;
        std::fs::write(&first, &data).expect("write");

        let s = ExactStore::open_with(&path, 200).expect("reopen");
        assert_eq!(
            std::fs::metadata(&last).expect("size").len(),
            whole,
            "cut off"
        );
        let mut left = ns(&s.most_used(10, None).expect("list"));
        left.sort();
        // The first segment's records are lost from the damaged one on; the rest are whole.
        assert!(!left.contains(&1) && !left.contains(&7), "{left:?}");
        assert!(left.ends_with(&[3, 4, 5, 6]), "{left:?}");
        // Writing goes on after the last whole record, and reads back.
        s.put(&[entry(8, "b", 8, 1_000)]).expect("put");
        drop(s);
        let s = ExactStore::open_with(&path, 200).expect("reopen");
        assert_eq!(
            s.get(Uuid::from_u128(8)).expect("get"),
            Some(entry(8, "b", 8, 1_000))
        );
    }

    #[test]
    fn space_is_taken_back_from_the_oldest_segments_and_nothing_deleted_comes_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exact");
        let open = || ExactStore::open_with(&path, 1_000).expect("open");
        let s = open();
        // Long-lived answers first, then churn: each new answer evicts the oldest short-lived one.
        s.put(&[entry(1, "keep", 1, 1_000), entry(2, "keep", 2, 1_000)])
            .expect("put");
        assert!(s.touch(Uuid::from_u128(2), 7, 3).expect("touch"));
        for n in 10..400u128 {
            s.put(&[entry(n, "churn", n as u64 + 10, 1_000)])
                .expect("put");
            if n >= 20 {
                assert_eq!(
                    s.remove(&[Uuid::from_u128(n - 10)]).expect("remove").len(),
                    1
                );
            }
        }
        let files: u64 = segments(&path)
            .iter()
            .map(|id| {
                std::fs::metadata(segment_path(&path, *id))
                    .expect("size")
                    .len()
            })
            .sum();
        let live: u64 = s.state().segments.values().map(|seg| seg.live).sum();
        assert!(
            files <= 2 * live + 3 * 1_000,
            "{files} bytes on disk for {live} live"
        );
        assert!(segments(&path)[0] > 1, "the first segments were deleted");
        let expect = |s: &ExactStore| {
            assert_eq!(s.len(), 12);
            let e2 = s.get(Uuid::from_u128(2)).expect("get").expect("kept");
            assert_eq!((e2.hits, e2.last_used), (7, 3), "moved with its hit");
            assert!(s.get(Uuid::from_u128(1)).expect("get").is_some());
            for n in 10..390u128 {
                assert!(
                    s.get(Uuid::from_u128(n)).expect("get").is_none(),
                    "{n} is back"
                );
            }
            for n in 390..400u128 {
                assert!(
                    s.get(Uuid::from_u128(n)).expect("get").is_some(),
                    "{n} is lost"
                );
            }
        };
        expect(&s);
        drop(s);
        expect(&open());
    }

    /// Writes entries as an earlier version did: a sled tree `entries` in `dir` itself.
    fn sled_store(dir: &Path, entries: &[(u64, Entry)]) {
        let db = sled::Config::new().path(dir).open().expect("sled");
        let tree = db.open_tree("entries").expect("tree");
        for (seq, e) in entries {
            tree.insert(seq.to_be_bytes(), encode(e).expect("encode"))
                .expect("insert");
        }
        db.flush().expect("flush");
    }

    #[test]
    fn a_store_written_with_sled_is_copied_over_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exact");
        sled_store(
            &path,
            &[
                (4, entry(1, "a", 5, 100)),
                (9, entry(2, "b", 6, 100)),
                (12, entry(1, "a", 8, 100)),
            ],
        );
        let s = ExactStore::open(&path).expect("open");
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.get(Uuid::from_u128(2)).expect("get"),
            Some(entry(2, "b", 6, 100))
        );
        assert_eq!(
            s.get(Uuid::from_u128(1)).expect("get").map(|e| e.last_used),
            Some(8),
            "the later copy"
        );
        for gone in ["db", "conf", COPYING_FILE] {
            assert!(!path.join(gone).exists(), "{gone} is left");
        }
        s.put(&[entry(3, "a", 7, 100)]).expect("put");
        drop(s);
        let s = ExactStore::open(&path).expect("reopen");
        assert_eq!(ns(&s.most_used(10, None).expect("list")), [1, 3, 2]);
        drop(s);
        // sled files that appear beside this version's store (an older build started on the same
        // directory later) are not copied over it.
        sled_store(&path, &[(1, entry(8, "a", 9, 100))]);
        let s = ExactStore::open(&path).expect("reopen");
        assert_eq!(ns(&s.most_used(10, None).expect("list")), [1, 3, 2]);
    }

    #[test]
    fn an_interrupted_copy_from_sled_starts_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exact");
        sled_store(&path, &[(4, entry(1, "a", 5, 100))]);
        // A copy that stopped half way: the log holds something else, the marker is there.
        {
            let s = ExactStore::open(&dir.path().join("other")).expect("open");
            s.put(&[entry(7, "z", 1, 100)]).expect("put");
        }
        std::fs::rename(
            segment_path(&dir.path().join("other"), 1),
            segment_path(&path, 1),
        )
        .expect("move");
        std::fs::write(path.join(COPYING_FILE), b"").expect("marker");
        let s = ExactStore::open(&path).expect("open");
        assert_eq!(ns(&s.most_used(10, None).expect("list")), [1]);
        assert!(!path.join(COPYING_FILE).exists());
    }

    #[test]
    fn a_damaged_file_is_an_error_or_a_loss_never_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exact");
        {
            let s = ExactStore::open_with(&path, 100).expect("open");
            for n in 1..=4 {
                s.put(&[entry(n, "a", 5, 100)]).expect("put");
            }
        }
        for id in segments(&path) {
            std::fs::write(segment_path(&path, id), b"\x07 not what was written \xff")
                .expect("damage");
            let opened =
                std::panic::catch_unwind(|| ExactStore::open_with(&path, 100).map(|s| s.len()));
            match opened {
                Err(_) => panic!("damaged segment {id} crashed the open"),
                Ok(Ok(n)) => assert!(n < 4),
                Ok(Err(e)) => panic!("a damaged segment is a loss, not an error: {e}"),
            }
        }
    }

    #[test]
    fn an_answer_being_moved_forward_is_read_all_along() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = std::sync::Arc::new(
            ExactStore::open_with(&dir.path().join("exact"), 600).expect("open"),
        );
        s.put(&[entry(1, "keep", 1, 1_000)]).expect("put");
        let reader = {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut reads = 0;
                while s.get(Uuid::from_u128(2)).expect("get").is_none() {
                    let e = s.get(Uuid::from_u128(1)).expect("get");
                    assert!(e.is_some(), "a live answer was missed after {reads} reads");
                    reads += 1;
                }
                reads
            })
        };
        // Churn that moves answer 1 forward again and again.
        for n in 10..3_000u128 {
            s.put(&[entry(n, "churn", 2, 1_000)]).expect("put");
            s.remove(&[Uuid::from_u128(n)]).expect("remove");
        }
        let first = segments(&dir.path().join("exact"))[0];
        s.put(&[entry(2, "done", 3, 1_000)]).expect("put");
        let reads = reader.join().expect("reader");
        assert!(
            first > 10,
            "answer 1 was moved: the first segment is now {first}"
        );
        assert!(reads > 0);
    }
}
