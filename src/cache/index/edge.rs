//! The embedded store: one Qdrant Edge shard under `data_dir/cache/edge` (segments, WAL, HNSW,
//! payload indexes), in process, no server.
//!
//! Opening never fails the gateway: an unreadable, corrupt or incompatible shard is moved aside
//! (`edge.broken-<unix time>`, kept for inspection) and an empty one is created in its place.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use qdrant_edge::{
    CountRequestBuilder, Distance, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder,
    FieldIndexOperations, Filter, NamedQuery, OrderByInterface, PointId, PointInsertOperations,
    PointOperations, PointStruct, QueryEnum, QueryRequestBuilder, RetrieveRequestBuilder,
    ScoringQuery, ScrollRequestBuilder, SetPayloadOp, UpdateOperation, VectorInternal, Vectors,
    WalOptions, WithPayloadInterface,
};
use serde_json::json;
use uuid::Uuid;

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

/// Embedded Qdrant Edge shard.
pub struct EdgeIndex {
    shard: Arc<EdgeShard>,
    writes: AtomicU64,
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
                Ok(shard) => {
                    return Ok((
                        Self {
                            shard: Arc::new(shard),
                            writes: AtomicU64::new(0),
                        },
                        None,
                    ));
                }
                Err(reason) => {
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
        let text = serde_json::to_vec(&meta).map_err(store_err)?;
        std::fs::write(&meta_path, text).map_err(store_err)?;
        Ok((
            Self {
                shard: Arc::new(shard),
                writes: AtomicU64::new(0),
            },
            recovered,
        ))
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EdgeShard) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, IndexError> {
        let shard = self.shard.clone();
        tokio::task::spawn_blocking(move || f(&shard))
            .await
            .map_err(|e| IndexError::Task(e.to_string()))?
    }
}

fn load_existing(dir: &Path, meta_path: &Path, want: &Meta) -> Result<EdgeShard, String> {
    let text = std::fs::read(meta_path)
        .map_err(|e| format!("cannot read {}: {e}", meta_path.display()))?;
    let have: Meta = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not valid: {e}", meta_path.display()))?;
    if &have != want {
        return Err(format!(
            "the cache in {} was written for {have:?}, this build needs {want:?}",
            dir.display()
        ));
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
        Ok(Ok(shard)) => Ok(shard),
        Ok(Err(e)) => Err(format!("cannot open the cache in {}: {e}", dir.display())),
        Err(_) => Err(format!(
            "the cache in {} is damaged (the store panicked while reading it)",
            dir.display()
        )),
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
    for (fields, schema) in [(KEYWORD_FIELDS, "keyword"), (INTEGER_FIELDS, "integer")] {
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
    with_payload: bool,
) -> Result<Vec<qdrant_edge::Record>, IndexError> {
    let order: OrderByInterface =
        serde_json::from_value(json!({"key": "last_used", "direction": direction}))
            .map_err(store_err)?;
    let mut req = ScrollRequestBuilder::new()
        .limit(limit)
        .order_by(order)
        .with_payload(WithPayloadInterface::Bool(with_payload));
    if let Some(f) = filter {
        req = req.filter(f);
    }
    Ok(s.scroll(req.build()).map_err(store_err)?.0)
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

impl VectorIndex for EdgeIndex {
    async fn get(&self, id: Uuid) -> Result<Option<Entry>, IndexError> {
        self.run(move |s| {
            let req = RetrieveRequestBuilder::new(vec![point(id)])
                .with_payload(WithPayloadInterface::Bool(true))
                .build();
            let records = s.retrieve(req).map_err(store_err)?;
            match records.into_iter().next().and_then(|r| r.payload) {
                Some(p) => entry_from_payload(p.0).map(Some),
                None => Ok(None),
            }
        })
        .await
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
        let payload = serde_json::Value::Object(entry_payload(&entry));
        let id = entry.id;
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.run(move |s| {
            let vectors: Vectors = match vector {
                Some(v) => Vectors::new_named([(VECTOR, v)]),
                None => std::collections::HashMap::<String, Vec<f32>>::new().into(),
            };
            let p = PointStruct::new(point(id), vectors, payload);
            s.update(UpdateOperation::PointOperation(
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(vec![p.into()])),
            ))
            .map_err(store_err)
        })
        .await
    }

    async fn touch(&self, id: Uuid, hits: u64, last_used: u64) -> Result<(), IndexError> {
        self.run(move |s| {
            let mut payload = serde_json::Map::new();
            payload.insert("hits".into(), json!(hits));
            payload.insert("last_used".into(), json!(last_used));
            let op = SetPayloadOp {
                payload: qdrant_edge::Payload(payload),
                points: Some(vec![point(id)]),
                filter: None,
                key: None,
            };
            s.update(UpdateOperation::PayloadOperation(
                qdrant_edge::PayloadOps::SetPayload(op),
            ))
            .map_err(store_err)
        })
        .await
    }

    async fn delete(&self, id: Uuid) -> Result<bool, IndexError> {
        let existed = self.get(id).await?.is_some();
        self.run(move |s| {
            s.update(UpdateOperation::PointOperation(
                PointOperations::DeletePoints {
                    ids: vec![point(id)],
                },
            ))
            .map_err(store_err)
        })
        .await?;
        Ok(existed)
    }

    async fn delete_where(&self, sel: Selector) -> Result<u64, IndexError> {
        let f = selector_filter(&sel)?;
        self.run(move |s| {
            let n = s
                .count(
                    CountRequestBuilder::new()
                        .filter(f.clone())
                        .exact(true)
                        .build(),
                )
                .map_err(store_err)?;
            s.update(UpdateOperation::PointOperation(
                PointOperations::DeletePointsByFilter(f),
            ))
            .map_err(store_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn list(
        &self,
        offset: usize,
        limit: usize,
        model: Option<String>,
    ) -> Result<Vec<Entry>, IndexError> {
        let f = selector_filter(&Selector {
            model,
            expired_at: None,
        })?;
        self.run(move |s| {
            let records = scroll_by_last_used(s, "desc", offset + limit, Some(f), true)?;
            Ok(records
                .into_iter()
                .skip(offset)
                .filter_map(|r| r.payload.and_then(|p| entry_from_payload(p.0).ok()))
                .collect())
        })
        .await
    }

    async fn count(&self) -> Result<u64, IndexError> {
        self.run(|s| {
            s.count(CountRequestBuilder::new().exact(true).build())
                .map(|n| n as u64)
                .map_err(store_err)
        })
        .await
    }

    async fn least_used(&self, n: usize) -> Result<Vec<Uuid>, IndexError> {
        self.run(move |s| {
            let records = scroll_by_last_used(s, "asc", n, None, false)?;
            Ok(records
                .into_iter()
                .filter_map(|r| match r.id {
                    PointId::Uuid(u) => Some(u),
                    PointId::NumId(_) => None,
                })
                .collect())
        })
        .await
    }

    async fn maintain(&self) -> Result<(), IndexError> {
        self.run(|s| {
            s.optimize().map_err(store_err)?;
            s.flush().map_err(store_err)
        })
        .await
    }
}

impl Drop for EdgeIndex {
    fn drop(&mut self) {
        // Best effort: the WAL already makes writes durable; flushing shortens the next replay.
        let _ = self.shard.flush();
    }
}
