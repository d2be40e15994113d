//! Where cached answers live: the `VectorIndex` seam, with an embedded Qdrant Edge shard and a
//! Qdrant server behind it. Both store the same [`Entry`] payload under the same point ids and
//! filter on the same fields, so they behave alike.

mod edge;
mod exact;
mod order;
mod qdrant;
mod writer;

pub use edge::EdgeIndex;
pub use qdrant::QdrantIndex;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// Name of the vector in both stores.
pub const VECTOR: &str = "prompt";

/// HNSW search breadth. A missed neighbour is a missed hit (never a wrong one), so the cache
/// searches wider than Qdrant's default (measured in docs/performance.md).
pub const HNSW_EF: usize = 128;

/// Payload fields with an index (filters, ordering).
pub const KEYWORD_FIELDS: &[&str] = &["partition", "model"];
/// Integer payload fields with an index.
pub const INTEGER_FIELDS: &[&str] = &["expires", "last_used"];

/// Where the partition of an entry without a vector is stored (see [`Entry::partition`]).
pub const UNINDEXED_PARTITION: &str = "partition_unindexed";

/// One cached answer, as stored in the payload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// Point id (derived from `exact`).
    pub id: Uuid,
    /// Key schema the entry was written with.
    pub schema: u32,
    /// Exact-tier key.
    pub exact: String,
    /// Partition hash (exact filter of the semantic tier). An entry stored without a vector
    /// (the semantic tier never finds it) keeps it under [`UNINDEXED_PARTITION`], a field
    /// without a payload index: its write updates one index less.
    #[serde(alias = "partition_unindexed")]
    pub partition: String,
    /// Model the client asked for.
    pub model: String,
    /// Provider that served the original answer.
    pub provider: String,
    /// Upstream model that served it.
    pub served_model: String,
    /// The last user turn(s): what the semantic tier compared.
    pub prompt: String,
    /// The earlier turns as the verifier reads them, when conversations are judged by meaning
    /// (see `key::Fingerprint::context`); empty otherwise.
    #[serde(default)]
    pub context: String,
    /// The answer, as canonical ChatResponse JSON.
    pub response: String,
    /// Prompt tokens of the original call (saved on every hit).
    pub prompt_tokens: u64,
    /// Completion tokens of the original call.
    pub completion_tokens: u64,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds after which the entry is not served.
    pub expires: u64,
    /// Unix seconds of the last hit (or creation).
    pub last_used: u64,
    /// Hits served.
    pub hits: u64,
}

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IndexError {
    /// The store reported an error.
    #[error("cache store: {0}")]
    Store(String),
    /// A stored payload could not be read back (treated as a miss).
    #[error("cache entry unreadable: {0}")]
    Corrupt(String),
    /// The blocking task died.
    #[error("cache store task failed: {0}")]
    Task(String),
    /// Another process holds the store (never treated as damage: nothing is moved aside).
    #[error("cache store busy: {0}")]
    Busy(String),
}

/// Which entries a bulk delete removes.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// Only entries for this requested model.
    pub model: Option<String>,
    /// Only entries that expired at or before this time (unix seconds).
    pub expired_at: Option<u64>,
}

/// A semantic candidate.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The entry.
    pub entry: Entry,
    /// Cosine similarity to the query.
    pub score: f32,
}

/// Vector store operations the cache needs; the cache's second seam.
pub trait VectorIndex: Send + Sync {
    /// The entry with this id, if any.
    fn get(&self, id: Uuid) -> impl Future<Output = Result<Option<Entry>, IndexError>> + Send;
    /// Nearest live entries in `partition` scoring at least `floor`, best first.
    fn search(
        &self,
        vector: Vec<f32>,
        partition: &str,
        now: u64,
        floor: f32,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Candidate>, IndexError>> + Send;
    /// Inserts or replaces an entry (with its vector when the semantic tier may find it).
    fn upsert(
        &self,
        entry: Entry,
        vector: Option<Vec<f32>>,
    ) -> impl Future<Output = Result<(), IndexError>> + Send;
    /// Records a hit.
    fn touch(
        &self,
        id: Uuid,
        hits: u64,
        last_used: u64,
    ) -> impl Future<Output = Result<(), IndexError>> + Send;
    /// Deletes one entry; false when it did not exist.
    fn delete(&self, id: Uuid) -> impl Future<Output = Result<bool, IndexError>> + Send;
    /// Deletes these entries in one operation (eviction); ids that do not exist are skipped.
    fn delete_many(&self, ids: Vec<Uuid>) -> impl Future<Output = Result<(), IndexError>> + Send;
    /// Deletes every entry the selector matches; returns how many went.
    fn delete_where(&self, sel: Selector) -> impl Future<Output = Result<u64, IndexError>> + Send;
    /// Entries, most recently used first, for the admin API.
    fn list(
        &self,
        offset: usize,
        limit: usize,
        model: Option<String>,
    ) -> impl Future<Output = Result<Vec<Entry>, IndexError>> + Send;
    /// Number of entries.
    fn count(&self) -> impl Future<Output = Result<u64, IndexError>> + Send;
    /// Ids of the `n` least recently used entries (eviction).
    fn least_used(&self, n: usize) -> impl Future<Output = Result<Vec<Uuid>, IndexError>> + Send;
    /// Housekeeping after many writes (index building, flushing).
    fn maintain(&self) -> impl Future<Output = Result<(), IndexError>> + Send;
}

/// The store in use: closed set, static dispatch.
pub enum AnyIndex {
    /// Embedded Qdrant Edge shard.
    Edge(EdgeIndex),
    /// Qdrant server.
    Qdrant(QdrantIndex),
}

/// Hears how a store that was not waited for went (`AnyIndex::upsert_then`).
pub type Then = Box<dyn FnOnce(Result<(), IndexError>) + Send>;

impl AnyIndex {
    /// Stores an answer without the caller waiting; `then` hears the outcome. The embedded store
    /// queues it for its writer thread, which runs `then` (no task per answer on the request
    /// path's runtime); a Qdrant server is written by a task on `tasks`. Either way `tasks` counts
    /// the answer until it is written, so waiting for `tasks` at shutdown waits for it.
    pub fn upsert_then(
        self: Arc<Self>,
        entry: Entry,
        vector: Option<Vec<f32>>,
        tasks: &TaskTracker,
        then: Then,
    ) {
        match &*self {
            AnyIndex::Edge(i) => {
                let written = tasks.token();
                i.enqueue(
                    entry,
                    vector,
                    writer::Done::Then(Box::new(move |result| {
                        then(result);
                        drop(written);
                    })),
                );
            }
            AnyIndex::Qdrant(_) => {
                tasks.spawn(async move { then(self.upsert(entry, vector).await) });
            }
        }
    }
}

/// Awaits the same call on whichever store is in use. The Qdrant client's futures (gRPC) are
/// kilobytes large: boxed, so every caller's future (up to the request handler's) does not carry
/// their size on the embedded store's path, where it would be copied at each await level.
macro_rules! delegate {
    ($self:ident, $i:ident => $e:expr) => {
        match $self {
            AnyIndex::Edge($i) => $e.await,
            AnyIndex::Qdrant($i) => Box::pin($e).await,
        }
    };
}

impl VectorIndex for AnyIndex {
    async fn get(&self, id: Uuid) -> Result<Option<Entry>, IndexError> {
        delegate!(self, i => i.get(id))
    }
    async fn search(
        &self,
        vector: Vec<f32>,
        partition: &str,
        now: u64,
        floor: f32,
        limit: usize,
    ) -> Result<Vec<Candidate>, IndexError> {
        delegate!(self, i => i.search(vector, partition, now, floor, limit))
    }
    async fn upsert(&self, entry: Entry, vector: Option<Vec<f32>>) -> Result<(), IndexError> {
        delegate!(self, i => i.upsert(entry, vector))
    }
    async fn touch(&self, id: Uuid, hits: u64, last_used: u64) -> Result<(), IndexError> {
        delegate!(self, i => i.touch(id, hits, last_used))
    }
    async fn delete(&self, id: Uuid) -> Result<bool, IndexError> {
        delegate!(self, i => i.delete(id))
    }
    async fn delete_many(&self, ids: Vec<Uuid>) -> Result<(), IndexError> {
        delegate!(self, i => i.delete_many(ids))
    }
    async fn delete_where(&self, sel: Selector) -> Result<u64, IndexError> {
        delegate!(self, i => i.delete_where(sel))
    }
    async fn list(
        &self,
        offset: usize,
        limit: usize,
        model: Option<String>,
    ) -> Result<Vec<Entry>, IndexError> {
        delegate!(self, i => i.list(offset, limit, model))
    }
    async fn count(&self) -> Result<u64, IndexError> {
        delegate!(self, i => i.count())
    }
    async fn least_used(&self, n: usize) -> Result<Vec<Uuid>, IndexError> {
        delegate!(self, i => i.least_used(n))
    }
    async fn maintain(&self) -> Result<(), IndexError> {
        delegate!(self, i => i.maintain())
    }
}

/// Reads an entry back from a JSON payload.
pub fn entry_from_payload(
    payload: serde_json::Map<String, serde_json::Value>,
) -> Result<Entry, IndexError> {
    serde_json::from_value(serde_json::Value::Object(payload))
        .map_err(|e| IndexError::Corrupt(e.to_string()))
}

/// The JSON payload of an entry, its strings moved rather than copied (the same fields and
/// names as its `Serialize`, which the test below holds it to). `searchable`: the entry is
/// stored with a vector, so its partition goes where the semantic tier's filter (and its
/// payload index) reads it; otherwise under [`UNINDEXED_PARTITION`].
pub fn entry_payload(entry: Entry, searchable: bool) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    let Entry {
        id,
        schema,
        exact,
        partition,
        model,
        provider,
        served_model,
        prompt,
        context,
        response,
        prompt_tokens,
        completion_tokens,
        created,
        expires,
        last_used,
        hits,
    } = entry;
    let fields: [(&str, Value); 16] = [
        ("id", Value::String(id.to_string())),
        ("schema", schema.into()),
        ("exact", exact.into()),
        (
            if searchable {
                "partition"
            } else {
                UNINDEXED_PARTITION
            },
            partition.into(),
        ),
        ("model", model.into()),
        ("provider", provider.into()),
        ("served_model", served_model.into()),
        ("prompt", prompt.into()),
        ("context", context.into()),
        ("response", response.into()),
        ("prompt_tokens", prompt_tokens.into()),
        ("completion_tokens", completion_tokens.into()),
        ("created", created.into()),
        ("expires", expires.into()),
        ("last_used", last_used.into()),
        ("hits", hits.into()),
    ];
    let mut map = serde_json::Map::with_capacity(fields.len());
    for (k, v) in fields {
        map.insert(k.to_owned(), v);
    }
    map
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An entry for the stores' tests: id `n`, last used at 1.
    pub fn entry(n: u128, model: &str, expires: u64) -> Entry {
        Entry {
            id: Uuid::from_u128(n),
            schema: crate::cache::key::SCHEMA,
            exact: format!("exact-{n}"),
            partition: "p".into(),
            model: model.into(),
            provider: "openai".into(),
            served_model: "gpt".into(),
            prompt: format!("question {n}"),
            context: String::new(),
            response: "{}".into(),
            prompt_tokens: 1,
            completion_tokens: 1,
            created: 1,
            expires,
            last_used: 1,
            hits: 0,
        }
    }

    /// The ids of entries, as the numbers their tests made them from.
    pub fn ns(entries: &[Entry]) -> Vec<u128> {
        entries.iter().map(|e| e.id.as_u128()).collect()
    }

    #[tokio::test]
    async fn waiting_for_the_tasks_waits_for_answers_queued_without_a_task() {
        let dir = tempfile::tempdir().expect("tempdir");
        let idx = match EdgeIndex::open(&dir.path().join("edge"), 4) {
            Ok((idx, None)) => Arc::new(AnyIndex::Edge(idx)),
            Ok((_, Some(why))) => panic!("a fresh shard was recovered: {why}"),
            Err(e) => panic!("cannot open: {e}"),
        };
        let tasks = TaskTracker::new();
        let stored = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for n in 1..=30u128 {
            let stored = stored.clone();
            idx.clone().upsert_then(
                entry(n, "m", u64::MAX / 2),
                None,
                &tasks,
                Box::new(move |r| {
                    if r.is_ok() {
                        stored.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }),
            );
        }
        // What a shutdown does: every answer is written by the time the tracker is done.
        tasks.close();
        tokio::time::timeout(std::time::Duration::from_secs(5), tasks.wait())
            .await
            .expect("the writer writes within 5 s");
        assert_eq!(stored.load(std::sync::atomic::Ordering::SeqCst), 30);
        assert_eq!(idx.count().await.expect("count"), 30);
    }

    #[test]
    fn the_payload_is_what_serde_writes_and_reads_back() {
        let e = Entry {
            id: Uuid::from_u128(7),
            schema: 3,
            exact: "x".into(),
            partition: "p".into(),
            model: "m".into(),
            provider: "openai".into(),
            served_model: "gpt".into(),
            prompt: "q \"quoted\"".into(),
            context: "u: earlier // a: \"reply\"".into(),
            response: "{\"a\":1}".into(),
            prompt_tokens: 1,
            completion_tokens: 2,
            created: 3,
            expires: 4,
            last_used: 5,
            hits: 6,
        };
        let by_serde = match serde_json::to_value(&e) {
            Ok(serde_json::Value::Object(m)) => m,
            other => panic!("not an object: {other:?}"),
        };
        let moved = entry_payload(e.clone(), true);
        assert_eq!(moved, by_serde);
        assert_eq!(entry_from_payload(moved).ok(), Some(e.clone()));
        // Without a vector the partition is kept out of the indexed field, and read back.
        let exact_only = entry_payload(e.clone(), false);
        assert!(!exact_only.contains_key("partition"));
        assert_eq!(exact_only[UNINDEXED_PARTITION], "p");
        assert_eq!(entry_from_payload(exact_only).ok(), Some(e));
    }
}
