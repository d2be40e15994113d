//! The embedded store: one Qdrant Edge shard under `data_dir/cache/edge` (segments, WAL, HNSW,
//! payload indexes), in process, no server, for answers the semantic tier may find; answers
//! without a vector live beside it in the exact store (`exact.rs`, `edge/exact`). Listings,
//! eviction, expiry and deletes see both as one.
//!
//! Opening never fails the gateway: an unreadable, corrupt or incompatible shard is moved aside
//! (`edge.broken-<unix time>`, kept for inspection) and an empty one is created in its place.

use foldhash::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use qdrant_edge::{
    CountRequestBuilder, Distance, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder,
    FieldIndexOperations, Filter, NamedQuery, OrderByInterface, PointId, PointOperations,
    PointStruct, QueryEnum, QueryRequestBuilder, RetrieveRequestBuilder, ScoringQuery,
    ScrollRequestBuilder, UpdateOperation, VectorInternal, Vectors, WalOptions,
    WithPayloadInterface,
};
use serde_json::json;
use uuid::Uuid;

use super::exact::ExactStore;
use super::writer::{self, Done, Item, Upsert, Writes};
use super::{
    Candidate, Entry, HNSW_EF, INTEGER_FIELDS, IndexError, KEYWORD_FIELDS, Selector, VECTOR,
    VectorIndex, entry_from_payload, entry_payload,
};
use crate::cache::key::SCHEMA;

/// What a shard on disk was created for; a mismatch means "start over".
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
struct Meta {
    schema: u32,
    dimensions: usize,
    vector: String,
}

/// Which store holds an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The shard (stored with a vector).
    Shard,
    /// The exact store (no vector).
    Exact,
}

/// Embedded Qdrant Edge shard and exact store. Both are this process's alone, so the index also
/// keeps the id of every entry in memory, with the store that holds it: a lookup of an answer
/// never stored (every miss of the exact tier) is settled without reading either. The map may
/// hold more than the stores (an id goes in before its write and out after its delete), never
/// less: a stale id costs a read, not a hit.
pub struct EdgeIndex {
    shard: Arc<EdgeShard>,
    exact: Arc<ExactStore>,
    writes: AtomicU64,
    ids: Mutex<HashMap<Uuid, Place>>,
    queue: Arc<Writes>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn store_err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Store(e.to_string())
}

fn point(id: Uuid) -> PointId {
    PointId::Uuid(id)
}

fn filter(v: serde_json::Value) -> Result<Filter, IndexError> {
    serde_json::from_value(v).map_err(store_err)
}

impl EdgeIndex {
    /// Opens (or creates) the shard in `dir`. The second value says what was recovered from,
    /// when the old shard could not be used.
    pub fn open(dir: &Path, dimensions: usize) -> Result<(Self, Option<String>), IndexError> {
        let meta = Meta {
            schema: SCHEMA,
            dimensions,
            vector: VECTOR.into(),
        };
        let meta_path = dir.join("switchyard-meta.json");
        let mut recovered = None;
        if dir.exists() {
            match load_existing(dir, &meta_path, &meta) {
                Ok((shard, exact)) => return Ok((Self::with(shard, exact)?, None)),
                // Another gateway uses this directory: its cache is left alone.
                Err(Unusable::Busy(e)) => return Err(e),
                Err(Unusable::Broken(reason)) => {
                    let aside = quarantine(dir)?;
                    recovered = Some(format!(
                        "{reason}; moved it to {} and started an empty cache",
                        aside.display()
                    ));
                }
            }
        }
        std::fs::create_dir_all(dir).map_err(store_err)?;
        let shard = create(dir, dimensions)?;
        let exact = ExactStore::open(&dir.join(EXACT_DIR))?;
        let text = serde_json::to_vec(&meta).map_err(store_err)?;
        std::fs::write(&meta_path, text).map_err(store_err)?;
        Ok((Self::with(shard, exact)?, recovered))
    }

    /// Starts the writer and reads every entry id of opened stores.
    fn with(shard: EdgeShard, exact: ExactStore) -> Result<Self, IndexError> {
        let mut ids: HashMap<Uuid, Place> = all_ids(&shard)?
            .into_iter()
            .map(|id| (id, Place::Shard))
            .collect();
        let mut in_both = Vec::new();
        for id in exact.ids()? {
            if ids.insert(id, Place::Exact).is_some() {
                in_both.push(id);
            }
        }
        for id in in_both {
            ids.insert(id, keep_one(&shard, &exact, id));
        }
        let shard = Arc::new(shard);
        let exact = Arc::new(exact);
        let queue = Arc::new(Writes::default());
        let writer = writer::start(shard.clone(), exact.clone(), queue.clone())?;
        Ok(Self {
            shard,
            exact,
            writes: AtomicU64::new(0),
            ids: Mutex::new(ids),
            queue,
            writer: Mutex::new(Some(writer)),
        })
    }

    fn ids(&self) -> MutexGuard<'_, HashMap<Uuid, Place>> {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn place(&self, id: Uuid) -> Option<Place> {
        self.ids().get(&id).copied()
    }

    /// The shard's copy of an entry.
    async fn shard_get(&self, id: Uuid) -> Result<Option<Entry>, IndexError> {
        self.run(move |s| shard_entry(s, id)).await
    }

    async fn run_exact<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ExactStore) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, IndexError> {
        blocking(&self.exact, f).await
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EdgeShard) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, IndexError> {
        blocking(&self.shard, f).await
    }
}

/// Runs `f` on one of the stores on the blocking pool (both do disk I/O).
async fn blocking<S: Send + Sync + 'static, T: Send + 'static>(
    store: &Arc<S>,
    f: impl FnOnce(&S) -> Result<T, IndexError> + Send + 'static,
) -> Result<T, IndexError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| IndexError::Task(e.to_string()))?
}

/// The id of a record, when it is one of ours (every entry's id is a UUID).
fn uuid_of(r: qdrant_edge::Record) -> Option<Uuid> {
    match r.id {
        PointId::Uuid(u) => Some(u),
        PointId::NumId(_) => None,
    }
}

/// Every point id in the shard, a page at a time.
/// The shard's copy of an entry, read on this thread.
fn shard_entry(shard: &EdgeShard, id: Uuid) -> Result<Option<Entry>, IndexError> {
    let req = RetrieveRequestBuilder::new(vec![point(id)])
        .with_payload(WithPayloadInterface::Bool(true))
        .build();
    let records = shard.retrieve(req).map_err(store_err)?;
    match records.into_iter().next().and_then(|r| r.payload) {
        Some(p) => entry_from_payload(p.0).map(Some),
        None => Ok(None),
    }
}

/// An answer found in both stores at start: a crash came between a move's two writes (the old
/// copy's delete was not yet durable when the new copy was). The newer copy (by when it was
/// stored; the exact store's on a tie, as a move writes there last) is kept and the other deleted,
/// so the answer is counted and evicted once; a copy that cannot be read is the one dropped.
/// Best effort: if the other copy cannot be deleted (a full disk), the cache still opens, serving
/// the kept copy, and the other stays as it was before this was mended.
fn keep_one(shard: &EdgeShard, exact: &ExactStore, id: Uuid) -> Place {
    let in_shard = shard_entry(shard, id).ok().flatten();
    let in_exact = exact.get(id).ok().flatten();
    let keep = match (in_shard, in_exact) {
        (Some(s), Some(x)) if s.created > x.created => Place::Shard,
        (Some(_), None) => Place::Shard,
        _ => Place::Exact,
    };
    let dropped = match keep {
        Place::Shard => exact.remove(&[id]).map(|_| ()),
        Place::Exact => writer::delete_points(shard, vec![point(id)]),
    };
    if let Err(e) = dropped {
        tracing::warn!(%id, error = %e, "cannot delete the older of two copies of a cached answer (is the disk full or read-only?)");
    }
    keep
}

fn all_ids(shard: &EdgeShard) -> Result<Vec<Uuid>, IndexError> {
    const PAGE: usize = 10_000;
    let mut ids = Vec::new();
    let mut offset = None;
    loop {
        let mut req = ScrollRequestBuilder::new()
            .limit(PAGE)
            .with_payload(WithPayloadInterface::Bool(false));
        if let Some(o) = offset {
            req = req.offset(o);
        }
        let (records, next) = shard.scroll(req.build()).map_err(store_err)?;
        ids.extend(records.into_iter().filter_map(uuid_of));
        match next {
            Some(n) => offset = Some(n),
            None => return Ok(ids),
        }
    }
}

/// The exact store's directory inside the shard's.
const EXACT_DIR: &str = "exact";

/// Why an existing cache directory cannot be used.
enum Unusable {
    /// Damaged or written for another build: moved aside, and an empty cache started.
    Broken(String),
    /// Held by another process.
    Busy(IndexError),
}

impl From<String> for Unusable {
    fn from(reason: String) -> Self {
        Self::Broken(reason)
    }
}

fn load_existing(
    dir: &Path,
    meta_path: &Path,
    want: &Meta,
) -> Result<(EdgeShard, ExactStore), Unusable> {
    // First, as it is the one store here that holds a lock: a cache another gateway is using is
    // left alone, whatever else is found.
    let exact = match ExactStore::open(&dir.join(EXACT_DIR)) {
        Ok(x) => x,
        Err(e @ IndexError::Busy(_)) => return Err(Unusable::Busy(e)),
        Err(e) => return Err(Unusable::Broken(e.to_string())),
    };
    let text = std::fs::read(meta_path)
        .map_err(|e| format!("cannot read {}: {e}", meta_path.display()))?;
    let have: Meta = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not valid: {e}", meta_path.display()))?;
    if &have != want {
        return Err(format!(
            "the cache in {} was written for {have:?}, this build needs {want:?}",
            dir.display()
        )
        .into());
    }
    let path = dir.to_owned();
    let loaded = std::panic::catch_unwind(move || {
        let shard = EdgeShard::load(&path, None).map_err(|e| e.to_string())?;
        // Touch the data once so a damaged segment shows up now, not on the first request.
        shard
            .count(CountRequestBuilder::new().exact(true).build())
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(shard)
    });
    match loaded {
        Ok(Ok(shard)) => Ok((shard, exact)),
        Ok(Err(e)) => Err(format!("cannot open the cache in {}: {e}", dir.display()).into()),
        Err(_) => Err(format!(
            "the cache in {} is damaged (the store panicked while reading it)",
            dir.display()
        )
        .into()),
    }
}

fn quarantine(dir: &Path) -> Result<PathBuf, IndexError> {
    let name = format!(
        "{}.broken-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("edge"),
        crate::chat::unix_now()
    );
    let aside = dir.with_file_name(name);
    std::fs::rename(dir, &aside).map_err(|e| {
        IndexError::Store(format!(
            "cannot move the damaged cache {} aside: {e}",
            dir.display()
        ))
    })?;
    Ok(aside)
}

fn create(dir: &Path, dimensions: usize) -> Result<EdgeShard, IndexError> {
    let config = EdgeConfigBuilder::new()
        .vector(
            VECTOR,
            EdgeVectorParamsBuilder::new(dimensions, Distance::Cosine)
                .quantization_config(quantization()?)
                .build(),
        )
        .wal_options(WalOptions {
            segment_capacity: 4 * 1024 * 1024,
            ..WalOptions::default()
        })
        .build();
    let shard = EdgeShard::new(dir, config).map_err(store_err)?;
    // Integer fields are filtered by range and ordered, never matched by value: their index
    // keeps no lookup map (one index less to update per stored answer).
    let integer = json!({"type": "integer", "lookup": false, "range": true});
    for (fields, schema) in [
        (KEYWORD_FIELDS, json!("keyword")),
        (INTEGER_FIELDS, integer),
    ] {
        for f in fields {
            let op = serde_json::from_value(json!({"field_name": f, "field_schema": schema}))
                .map_err(store_err)?;
            shard
                .update(UpdateOperation::FieldIndexOperation(
                    FieldIndexOperations::CreateIndex(op),
                ))
                .map_err(store_err)?;
        }
    }
    Ok(shard)
}

/// int8 scalar quantization, kept in RAM: HNSW walks compare 4x smaller vectors, and the top
/// candidates are rescored with the original floats (measured in docs/performance.md).
fn quantization() -> Result<qdrant_edge::QuantizationConfig, IndexError> {
    serde_json::from_value(
        json!({"scalar": {"type": "int8", "quantile": 0.99, "always_ram": true}}),
    )
    .map_err(store_err)
}

/// Records ordered by `last_used` (`desc` for listings, `asc` for eviction).
fn scroll_by_last_used(
    s: &EdgeShard,
    direction: &str,
    limit: usize,
    filter: Option<Filter>,
    with_payload: WithPayloadInterface,
) -> Result<Vec<qdrant_edge::Record>, IndexError> {
    let order: OrderByInterface =
        serde_json::from_value(json!({"key": "last_used", "direction": direction}))
            .map_err(store_err)?;
    let mut req = ScrollRequestBuilder::new()
        .limit(limit)
        .order_by(order)
        .with_payload(with_payload);
    if let Some(f) = filter {
        req = req.filter(f);
    }
    Ok(s.scroll(req.build()).map_err(store_err)?.0)
}

/// Ids of the points a filter selects.
fn ids_where(s: &EdgeShard, f: &Filter) -> Result<Vec<Uuid>, IndexError> {
    let n = s
        .count(
            CountRequestBuilder::new()
                .filter(f.clone())
                .exact(true)
                .build(),
        )
        .map_err(store_err)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let req = ScrollRequestBuilder::new()
        .limit(n)
        .filter(f.clone())
        .with_payload(WithPayloadInterface::Bool(false))
        .build();
    Ok(s.scroll(req)
        .map_err(store_err)?
        .0
        .into_iter()
        .filter_map(uuid_of)
        .collect())
}

fn selector_filter(sel: &Selector) -> Result<Filter, IndexError> {
    let mut must = Vec::new();
    if let Some(m) = &sel.model {
        must.push(json!({"key": "model", "match": {"value": m}}));
    }
    if let Some(t) = sel.expired_at {
        must.push(json!({"key": "expires", "range": {"lte": t}}));
    }
    filter(json!({ "must": must }))
}

impl EdgeIndex {
    /// Queues an answer for the writer thread: with a vector to the shard, without one to the
    /// exact store (encoded by the writer); `done` hears when it is written.
    pub(super) fn enqueue(&self, entry: Entry, vector: Option<Vec<f32>>, done: Done) {
        let (id, model, expires) = (entry.id, entry.model.clone(), entry.expires);
        let (place, item) = match vector {
            Some(v) => {
                let payload = serde_json::Value::Object(entry_payload(entry, true));
                let vectors = Vectors::new_named([(VECTOR, v)]);
                (
                    Place::Shard,
                    Item::Point(PointStruct::new(point(id), vectors, payload)),
                )
            }
            None => (Place::Exact, Item::Exact(entry)),
        };
        self.writes.fetch_add(1, Ordering::Relaxed);
        let before = self.ids().insert(id, place);
        self.queue.upsert(Upsert {
            id,
            model,
            expires,
            item,
            moved: before.is_some_and(|p| p != place),
            done,
        });
    }
}

impl VectorIndex for EdgeIndex {
    async fn get(&self, id: Uuid) -> Result<Option<Entry>, IndexError> {
        let entry = match self.place(id) {
            None => return Ok(None),
            Some(Place::Exact) => self.run_exact(move |x| x.get(id)).await?,
            Some(Place::Shard) => self.shard_get(id).await?,
        };
        // Hits not yet written count already.
        Ok(entry.map(|mut e| {
            if let Some((hits, last_used)) = self.queue.pending_touch(id) {
                e.hits = e.hits.max(hits);
                e.last_used = e.last_used.max(last_used);
            }
            e
        }))
    }

    async fn search(
        &self,
        vector: Vec<f32>,
        partition: &str,
        now: u64,
        floor: f32,
        limit: usize,
    ) -> Result<Vec<Candidate>, IndexError> {
        let f = filter(json!({"must": [
            {"key": "partition", "match": {"value": partition}},
            {"key": "expires", "range": {"gt": now}},
        ]}))?;
        let params = serde_json::from_value(json!({ "hnsw_ef": HNSW_EF })).map_err(store_err)?;
        self.run(move |s| {
            let req = QueryRequestBuilder::new(limit)
                .query(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery::new(
                    VectorInternal::from(vector),
                    VECTOR,
                ))))
                .score_threshold(floor)
                .params(params)
                .filter(f)
                .with_payload(WithPayloadInterface::Bool(true))
                .build();
            let points = s.query(req).map_err(store_err)?;
            let mut out = Vec::with_capacity(points.len());
            for p in points {
                let Some(payload) = p.payload else { continue };
                // An unreadable entry is skipped (never served), not fatal.
                if let Ok(entry) = entry_from_payload(payload.0) {
                    out.push(Candidate {
                        entry,
                        score: p.score,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn upsert(&self, entry: Entry, vector: Option<Vec<f32>>) -> Result<(), IndexError> {
        let (done, stored) = tokio::sync::oneshot::channel();
        self.enqueue(entry, vector, Done::Reply(done));
        stored
            .await
            .map_err(|_| IndexError::Task("the cache writer stopped".into()))?
    }

    async fn touch(&self, id: Uuid, hits: u64, last_used: u64) -> Result<(), IndexError> {
        self.queue.touch(id, hits, last_used);
        Ok(())
    }

    async fn delete(&self, id: Uuid) -> Result<bool, IndexError> {
        self.queue.forget(id);
        let existed = match self.place(id) {
            None => false,
            Some(Place::Exact) => !self.run_exact(move |x| x.remove(&[id])).await?.is_empty(),
            Some(Place::Shard) => {
                let existed = self.shard_get(id).await?.is_some();
                self.run(move |s| writer::delete_points(s, vec![point(id)]))
                    .await?;
                existed
            }
        };
        self.ids().remove(&id);
        Ok(existed)
    }

    async fn delete_many(&self, ids: Vec<Uuid>) -> Result<(), IndexError> {
        if ids.is_empty() {
            return Ok(());
        }
        for id in &ids {
            self.queue.forget(*id);
        }
        let (mut points, mut exact) = (Vec::new(), Vec::new());
        for id in &ids {
            match self.place(*id) {
                Some(Place::Shard) => points.push(point(*id)),
                Some(Place::Exact) => exact.push(*id),
                None => {}
            }
        }
        if !exact.is_empty() {
            self.run_exact(move |x| x.remove(&exact)).await?;
        }
        if !points.is_empty() {
            self.run(move |s| writer::delete_points(s, points)).await?;
        }
        let mut known = self.ids();
        for id in &ids {
            known.remove(id);
        }
        Ok(())
    }

    async fn delete_where(&self, sel: Selector) -> Result<u64, IndexError> {
        self.queue.forget_selected(&sel);
        let f = selector_filter(&sel)?;
        let sel2 = sel.clone();
        let exact_gone = self.run_exact(move |x| x.remove_where(&sel2)).await?;
        let gone = self
            .run(move |s| {
                let gone = ids_where(s, &f)?;
                s.update(UpdateOperation::PointOperation(
                    PointOperations::DeletePointsByFilter(f),
                ))
                .map_err(store_err)?;
                Ok(gone)
            })
            .await?;
        let mut ids = self.ids();
        for id in gone.iter().chain(&exact_gone) {
            ids.remove(id);
        }
        Ok((gone.len() + exact_gone.len()) as u64)
    }

    async fn list(
        &self,
        offset: usize,
        limit: usize,
        model: Option<String>,
    ) -> Result<Vec<Entry>, IndexError> {
        let want = offset.saturating_add(limit);
        let of_model = model.clone();
        let mut entries = self
            .run_exact(move |x| x.most_used(want, of_model.as_deref()))
            .await?;
        let f = selector_filter(&Selector {
            model,
            expired_at: None,
        })?;
        let all = WithPayloadInterface::Bool(true);
        let from_shard = self
            .run(move |s| scroll_by_last_used(s, "desc", want, Some(f), all))
            .await?;
        entries.extend(
            from_shard
                .into_iter()
                .filter_map(|r| r.payload.and_then(|p| entry_from_payload(p.0).ok())),
        );
        // Both stores' newest, merged (the sort is stable: ties keep the exact store first).
        entries.sort_by_key(|e| std::cmp::Reverse(e.last_used));
        Ok(entries.into_iter().skip(offset).take(limit).collect())
    }

    async fn count(&self) -> Result<u64, IndexError> {
        let in_shard = self
            .run(|s| {
                s.count(CountRequestBuilder::new().exact(true).build())
                    .map(|n| n as u64)
                    .map_err(store_err)
            })
            .await?;
        Ok(in_shard + self.exact.len())
    }

    async fn least_used(&self, n: usize) -> Result<Vec<Uuid>, IndexError> {
        let mut oldest = self.run_exact(move |x| x.least_used(n)).await?;
        // Only the last use of the shard's candidates is read, not their answers.
        let used: WithPayloadInterface =
            serde_json::from_value(json!(["last_used"])).map_err(store_err)?;
        let records = self
            .run(move |s| scroll_by_last_used(s, "asc", n, None, used))
            .await?;
        for r in records {
            let used = r
                .payload
                .as_ref()
                .and_then(|p| p.0.get("last_used"))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            if let Some(id) = uuid_of(r) {
                oldest.push((used, id));
            }
        }
        oldest.sort_by_key(|(used, _)| *used);
        Ok(oldest.into_iter().take(n).map(|(_, id)| id).collect())
    }

    async fn maintain(&self) -> Result<(), IndexError> {
        self.run_exact(ExactStore::flush).await?;
        self.run(|s| {
            s.optimize().map_err(store_err)?;
            s.flush().map_err(store_err)
        })
        .await
    }
}

impl Drop for EdgeIndex {
    fn drop(&mut self) {
        // What is queued is written first.
        self.queue.close();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = writer {
            let _ = w.join();
        }
        // Best effort: the WAL already makes writes durable; flushing shortens the next replay.
        let _ = self.shard.flush();
        let _ = self.exact.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    use super::super::Then;
    use super::super::tests::{entry, ns};

    fn open(dir: &Path) -> EdgeIndex {
        match EdgeIndex::open(dir, 4) {
            Ok((idx, None)) => idx,
            Ok((_, Some(why))) => panic!("a fresh shard was recovered: {why}"),
            Err(e) => panic!("cannot open: {e}"),
        }
    }

    const FAR: u64 = u64::MAX / 2;

    /// A vector: the answer goes to the shard (without one, to the exact store).
    fn v() -> Option<Vec<f32>> {
        Some(vec![1.0, 0.0, 0.0, 0.0])
    }

    #[tokio::test]
    async fn writes_are_batched_read_back_and_kept_across_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edge");
        let idx = Arc::new(open(&path));
        // Many answers at once: one drain writes them together, each caller hears it.
        let writes =
            (1..=50).map(|n| idx.upsert(entry(n, "m", FAR), Some(vec![1.0, 0.0, 0.0, n as f32])));
        for w in futures_util::future::join_all(writes).await {
            w.expect("stored");
        }
        assert_eq!(idx.count().await.expect("count"), 50);
        let got = idx.get(Uuid::from_u128(7)).await.expect("get");
        assert_eq!(got.map(|e| e.prompt), Some("question 7".into()));
        // Never stored: settled without the shard, still a clean miss.
        assert!(idx.get(Uuid::from_u128(99)).await.expect("get").is_none());
        drop(Arc::into_inner(idx).expect("one owner"));
        // The id set is rebuilt from the shard.
        let idx = open(&path);
        let got = idx.get(Uuid::from_u128(50)).await.expect("get");
        assert_eq!(got.map(|e| e.exact), Some("exact-50".into()));
        assert_eq!(idx.count().await.expect("count"), 50);
    }

    #[tokio::test]
    async fn an_idle_writer_is_woken_for_an_answer() {
        // The writer is woken only when it waits (not while it sleeps between drains): an
        // answer queued while it waits is stored at once, not at its one-second timeout.
        let dir = tempfile::tempdir().expect("tempdir");
        let idx = open(&dir.path().join("edge"));
        for n in 1..=3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let since = std::time::Instant::now();
            idx.upsert(entry(n, "m", FAR), None).await.expect("stored");
            let took = since.elapsed();
            assert!(
                took < Duration::from_millis(500),
                "answer {n} stored after {took:?}: the waiting writer was not woken"
            );
        }
        assert_eq!(idx.count().await.expect("count"), 3);
    }

    /// Waits until entry `n`'s hits are written (about a second; a busy machine gets ten).
    async fn hits_written(idx: &EdgeIndex, n: u128) {
        let since = std::time::Instant::now();
        while idx.queue.pending_touch(Uuid::from_u128(n)).is_some() {
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "hit counts never written"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The hit count and last use an entry reads back with.
    async fn hits_of(idx: &EdgeIndex, n: u128) -> (u64, u64) {
        let e = idx.get(Uuid::from_u128(n)).await.expect("get");
        let e = e.expect("entry");
        (e.hits, e.last_used)
    }

    #[tokio::test]
    async fn hits_count_before_they_are_written_and_are_written_in_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edge");
        let idx = open(&path);
        idx.upsert(entry(1, "m", FAR), None).await.expect("stored");
        idx.touch(Uuid::from_u128(1), 1, 100).await.expect("touch");
        idx.touch(Uuid::from_u128(1), 2, 200).await.expect("touch");
        assert_eq!(hits_of(&idx, 1).await, (2, 200));
        // Within about a second the store has them too (read past the pending ones).
        hits_written(&idx, 1).await;
        drop(idx);
        let idx = open(&path);
        assert_eq!(hits_of(&idx, 1).await, (2, 200));
        let ids = idx.least_used(1).await.expect("least used");
        assert_eq!(ids, vec![Uuid::from_u128(1)]);
    }

    #[tokio::test]
    async fn deletes_remove_entries_from_the_shard_and_the_id_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let idx = open(&dir.path().join("edge"));
        idx.upsert(entry(1, "a", FAR), None).await.expect("stored");
        idx.upsert(entry(2, "b", FAR), None).await.expect("stored");
        idx.upsert(entry(3, "b", 10), None).await.expect("stored");
        assert!(idx.delete(Uuid::from_u128(1)).await.expect("delete"));
        assert!(!idx.delete(Uuid::from_u128(1)).await.expect("delete"));
        assert!(idx.get(Uuid::from_u128(1)).await.expect("get").is_none());
        idx.upsert(entry(4, "c", FAR), None).await.expect("stored");
        idx.upsert(entry(5, "c", FAR), None).await.expect("stored");
        idx.delete_many(vec![
            Uuid::from_u128(4),
            Uuid::from_u128(5),
            Uuid::from_u128(1),
        ])
        .await
        .expect("delete many");
        for n in [4, 5] {
            assert!(idx.get(Uuid::from_u128(n)).await.expect("get").is_none());
            assert!(!idx.ids().contains_key(&Uuid::from_u128(n)));
        }
        assert!(idx.get(Uuid::from_u128(2)).await.expect("get").is_some());
        let expired = Selector {
            model: None,
            expired_at: Some(20),
        };
        assert_eq!(idx.delete_where(expired).await.expect("delete"), 1);
        assert!(!idx.ids().contains_key(&Uuid::from_u128(3)));
        let by_model = Selector {
            model: Some("b".into()),
            expired_at: None,
        };
        assert_eq!(idx.delete_where(by_model).await.expect("delete"), 1);
        assert!(idx.ids().is_empty());
        assert_eq!(idx.count().await.expect("count"), 0);
    }

    fn used(n: u128, model: &str, last_used: u64) -> Entry {
        Entry {
            last_used,
            ..entry(n, model, FAR)
        }
    }

    #[tokio::test]
    async fn answers_with_and_without_a_vector_are_one_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edge");
        let idx = open(&path);
        // Odd ids with a vector (the shard), even ones without (the exact store).
        idx.upsert(used(1, "a", 50), v()).await.expect("stored");
        idx.upsert(used(2, "a", 40), None).await.expect("stored");
        idx.upsert(used(3, "b", 30), v()).await.expect("stored");
        idx.upsert(used(4, "b", 20), None).await.expect("stored");
        idx.upsert(used(6, "a", 60), None).await.expect("stored");
        assert_eq!(idx.count().await.expect("count"), 5);
        assert_eq!(idx.exact.len(), 3);
        // Listings and eviction see one order across both stores.
        assert_eq!(
            ns(&idx.list(0, 10, None).await.expect("list")),
            [6, 1, 2, 3, 4]
        );
        assert_eq!(ns(&idx.list(1, 2, None).await.expect("list")), [1, 2]);
        assert_eq!(
            ns(&idx.list(0, 10, Some("b".into())).await.expect("list")),
            [3, 4]
        );
        let lru: Vec<_> = idx
            .least_used(3)
            .await
            .expect("lru")
            .iter()
            .map(|u| u.as_u128())
            .collect();
        assert_eq!(lru, [4, 3, 2]);
        // The semantic tier finds only what has a vector.
        let found = idx
            .search(vec![1.0, 0.0, 0.0, 0.0], "p", 0, 0.0, 10)
            .await
            .expect("search");
        let mut found: Vec<_> = found.iter().map(|c| c.entry.id.as_u128()).collect();
        found.sort();
        assert_eq!(found, [1, 3]);
        // An answer stored again the other way has one copy: the newest.
        idx.upsert(used(2, "a", 70), v()).await.expect("stored");
        idx.upsert(used(1, "a", 80), None).await.expect("stored");
        assert_eq!(idx.count().await.expect("count"), 5);
        assert_eq!(
            idx.get(Uuid::from_u128(2))
                .await
                .expect("get")
                .map(|e| e.last_used),
            Some(70)
        );
        assert_eq!(
            ns(&idx.list(0, 10, None).await.expect("list")),
            [1, 2, 6, 3, 4]
        );
        // A hit on an exact entry moves it in the order, and is written in time.
        idx.touch(Uuid::from_u128(4), 3, 90).await.expect("touch");
        hits_written(&idx, 4).await;
        drop(idx);
        // Both stores and their ids are read back.
        let idx = open(&path);
        assert_eq!(idx.count().await.expect("count"), 5);
        assert_eq!(
            ns(&idx.list(0, 10, None).await.expect("list")),
            [4, 1, 2, 6, 3]
        );
        let e4 = idx
            .get(Uuid::from_u128(4))
            .await
            .expect("get")
            .expect("entry");
        assert_eq!((e4.hits, e4.last_used), (3, 90));
        let by_model = Selector {
            model: Some("a".into()),
            expired_at: None,
        };
        assert_eq!(idx.delete_where(by_model).await.expect("delete"), 3);
        assert_eq!(ns(&idx.list(0, 10, None).await.expect("list")), [4, 3]);
        idx.delete_many(vec![Uuid::from_u128(3), Uuid::from_u128(4)])
            .await
            .expect("delete many");
        assert_eq!(idx.count().await.expect("count"), 0);
        assert!(idx.ids().is_empty());
    }

    #[tokio::test]
    async fn an_answer_left_in_both_stores_by_a_crash_is_kept_once_the_newer_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edge");
        let idx = open(&path);
        let at = |n: u128, created: u64, prompt: &str| Entry {
            created,
            prompt: prompt.into(),
            ..entry(n, "m", FAR)
        };
        // 1: the shard's copy is older than the exact store's; 2: the other way round.
        idx.upsert(at(1, 100, "older"), v()).await.expect("stored");
        idx.upsert(at(2, 200, "newer"), v()).await.expect("stored");
        idx.upsert(at(3, 100, "only"), None).await.expect("stored");
        // What a crash between a move's two writes leaves: a second copy in the other store.
        idx.exact
            .put(&[at(1, 200, "newer"), at(2, 100, "older")])
            .expect("put");
        drop(idx);
        let idx = open(&path);
        assert_eq!(idx.count().await.expect("count"), 3, "each answer once");
        for n in [1, 2, 3] {
            let got = idx.get(Uuid::from_u128(n)).await.expect("get");
            assert_ne!(got.map(|e| e.prompt), Some("older".into()), "entry {n}");
        }
        assert_eq!(idx.exact.len(), 2, "1 and 3 in the exact store");
        assert!(
            shard_entry(&idx.shard, Uuid::from_u128(1))
                .expect("read")
                .is_none(),
            "the shard's older copy is gone"
        );
        // And it stays so: the next start finds nothing to mend.
        drop(idx);
        let idx = open(&path);
        assert_eq!(idx.count().await.expect("count"), 3);
        assert_eq!(
            idx.get(Uuid::from_u128(2))
                .await
                .expect("get")
                .map(|e| e.prompt),
            Some("newer".into())
        );
    }

    #[tokio::test]
    async fn a_cache_another_process_holds_is_busy_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edge");
        let idx = open(&path);
        idx.upsert(entry(1, "m", FAR), None).await.expect("stored");
        // The exact store's directory lock shuts out a second process; it is taken per open
        // file, so within one process a second open is refused the same way.
        match EdgeIndex::open(&path, 4) {
            Err(IndexError::Busy(why)) => assert!(why.contains("another process"), "{why}"),
            Err(e) => panic!("not busy: {e}"),
            Ok(_) => panic!("opened twice"),
        }
        let siblings = std::fs::read_dir(dir.path()).expect("list").count();
        assert_eq!(siblings, 1, "nothing was moved aside");
        assert_eq!(idx.count().await.expect("count"), 1);
    }

    #[tokio::test]
    async fn an_answer_stored_without_waiting_is_written_and_its_caller_told() {
        let dir = tempfile::tempdir().expect("tempdir");
        let idx = open(&dir.path().join("edge"));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let told = |n: u128| -> Then {
            let tx = tx.clone();
            Box::new(move |r| {
                let _ = tx.send((n, r));
            })
        };
        // Half with a vector (the shard), half without (the exact store).
        for n in 1..=20u128 {
            let vector = (n % 2 == 0).then(|| vec![1.0, 0.0, 0.0, n as f32]);
            idx.enqueue(entry(n, "m", FAR), vector, Done::Then(told(n)));
        }
        let mut heard = Vec::new();
        for _ in 1..=20 {
            let (n, r) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("told within 5 s")
                .expect("a sender is alive");
            r.expect("stored");
            heard.push(n);
        }
        heard.sort_unstable();
        assert_eq!(heard, (1..=20).collect::<Vec<_>>());
        assert_eq!(idx.count().await.expect("count"), 20);
        for n in [7, 8] {
            let got = idx.get(Uuid::from_u128(n)).await.expect("get");
            assert_eq!(got.map(|e| e.prompt), Some(format!("question {n}")));
        }
        // Once the store is closing, the caller hears why its answer was not kept.
        idx.queue.close();
        idx.enqueue(entry(30, "m", FAR), None, Done::Then(told(30)));
        let (n, r) = rx.recv().await.expect("told");
        assert_eq!(n, 30);
        assert!(matches!(r, Err(IndexError::Store(_))), "{r:?}");
    }

    #[test]
    fn an_answer_deleted_while_it_waits_is_never_written() {
        let writes = Writes::default();
        let (done, mut heard) = tokio::sync::oneshot::channel();
        let e = entry(5, "m", FAR);
        writes.upsert(Upsert {
            id: e.id,
            model: e.model.clone(),
            expires: e.expires,
            item: Item::Exact(e),
            moved: false,
            done: Done::Reply(done),
        });
        writes.touch(Uuid::from_u128(5), 3, 3);
        writes.forget(Uuid::from_u128(5));
        assert!(matches!(heard.try_recv(), Ok(Ok(()))));
        assert!(writes.pending_touch(Uuid::from_u128(5)).is_none());
    }
}
