//! A Qdrant server as the store (`store = "qdrant"`), through qdrant-client over gRPC, for when
//! several gateways share one cache. Same entries, ids, payload indexes and filters as the
//! embedded shard.

use std::collections::HashMap;

use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, Direction, FieldType, Filter, GetPointsBuilder, OrderByBuilder, PointId,
    PointStruct, PointsIdsList, QueryPointsBuilder, Range, ScrollPointsBuilder,
    SearchParamsBuilder, SetPayloadPointsBuilder, UpsertPointsBuilder, VectorParamsBuilder,
    VectorsConfigBuilder, point_id::PointIdOptions,
};
use qdrant_client::{Payload, Qdrant};
use uuid::Uuid;

use super::{
    Candidate, Entry, HNSW_EF, INTEGER_FIELDS, IndexError, KEYWORD_FIELDS, Selector, VECTOR,
    VectorIndex, entry_from_payload, entry_payload,
};

/// A collection on a Qdrant server.
pub struct QdrantIndex {
    client: Qdrant,
    collection: String,
}

fn store_err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Store(e.to_string())
}

fn point(id: Uuid) -> PointId {
    PointId::from(id.to_string())
}

fn uuid_of(id: Option<PointId>) -> Option<Uuid> {
    match id?.point_id_options? {
        PointIdOptions::Uuid(s) => Uuid::parse_str(&s).ok(),
        PointIdOptions::Num(_) => None,
    }
}

fn to_entry(payload: HashMap<String, qdrant_client::qdrant::Value>) -> Result<Entry, IndexError> {
    let map: serde_json::Map<String, serde_json::Value> = payload
        .into_iter()
        .map(|(k, v)| (k, v.into_json()))
        .collect();
    entry_from_payload(map)
}

fn selector_filter(sel: &Selector) -> Filter {
    let mut must = Vec::new();
    if let Some(m) = &sel.model {
        must.push(Condition::matches("model", m.clone()));
    }
    if let Some(t) = sel.expired_at {
        must.push(Condition::range(
            "expires",
            Range {
                lte: Some(t as f64),
                ..Default::default()
            },
        ));
    }
    Filter::must(must)
}

impl QdrantIndex {
    /// Connects and makes sure the collection and its payload indexes exist.
    pub async fn open(
        url: &str,
        collection: &str,
        api_key: Option<&str>,
        dimensions: usize,
    ) -> Result<Self, IndexError> {
        let mut builder = Qdrant::from_url(url).skip_compatibility_check();
        if let Some(k) = api_key {
            builder = builder.api_key(k.to_owned());
        }
        let client = builder
            .build()
            .map_err(|e| IndexError::Store(format!("cannot reach Qdrant at {url}: {e}")))?;
        let exists = client
            .collection_exists(collection)
            .await
            .map_err(|e| IndexError::Store(format!("Qdrant at {url}: {e}")))?;
        if !exists {
            let mut vectors = VectorsConfigBuilder::default();
            vectors.add_named_vector_params(
                VECTOR,
                VectorParamsBuilder::new(
                    dimensions as u64,
                    qdrant_client::qdrant::Distance::Cosine,
                ),
            );
            client
                .create_collection(CreateCollectionBuilder::new(collection).vectors_config(vectors))
                .await
                .map_err(store_err)?;
            for (fields, kind) in [
                (KEYWORD_FIELDS, FieldType::Keyword),
                (INTEGER_FIELDS, FieldType::Integer),
            ] {
                for f in fields {
                    client
                        .create_field_index(
                            CreateFieldIndexCollectionBuilder::new(collection, *f, kind).wait(true),
                        )
                        .await
                        .map_err(store_err)?;
                }
            }
        }
        Ok(Self {
            client,
            collection: collection.to_owned(),
        })
    }
}

impl QdrantIndex {
    /// Points matching `filter` (all when `None`).
    async fn count_where(&self, filter: Option<Filter>) -> Result<u64, IndexError> {
        let mut req = CountPointsBuilder::new(&self.collection).exact(true);
        if let Some(f) = filter {
            req = req.filter(f);
        }
        Ok(self
            .client
            .count(req)
            .await
            .map_err(store_err)?
            .result
            .map_or(0, |r| r.count))
    }

    /// Points ordered by `last_used` (`Desc` for listings, `Asc` for eviction).
    async fn scroll_by_last_used(
        &self,
        direction: Direction,
        limit: usize,
        filter: Option<Filter>,
        with_payload: bool,
    ) -> Result<Vec<qdrant_client::qdrant::RetrievedPoint>, IndexError> {
        let mut req = ScrollPointsBuilder::new(&self.collection)
            .limit(limit as u32)
            .order_by(OrderByBuilder::new("last_used").direction(direction as i32))
            .with_payload(with_payload);
        if let Some(f) = filter {
            req = req.filter(f);
        }
        Ok(self.client.scroll(req).await.map_err(store_err)?.result)
    }
}

impl VectorIndex for QdrantIndex {
    async fn get(&self, id: Uuid) -> Result<Option<Entry>, IndexError> {
        let resp = self
            .client
            .get_points(GetPointsBuilder::new(&self.collection, vec![point(id)]).with_payload(true))
            .await
            .map_err(store_err)?;
        match resp.result.into_iter().next() {
            Some(p) => to_entry(p.payload).map(Some),
            None => Ok(None),
        }
    }

    async fn search(
        &self,
        vector: Vec<f32>,
        partition: &str,
        now: u64,
        floor: f32,
        limit: usize,
    ) -> Result<Vec<Candidate>, IndexError> {
        let f = Filter::must([
            Condition::matches("partition", partition.to_owned()),
            Condition::range(
                "expires",
                Range {
                    gt: Some(now as f64),
                    ..Default::default()
                },
            ),
        ]);
        let resp = self
            .client
            .query(
                QueryPointsBuilder::new(&self.collection)
                    .query(vector)
                    .using(VECTOR)
                    .filter(f)
                    .score_threshold(floor)
                    .params(SearchParamsBuilder::default().hnsw_ef(HNSW_EF as u64))
                    .limit(limit as u64)
                    .with_payload(true),
            )
            .await
            .map_err(store_err)?;
        Ok(resp
            .result
            .into_iter()
            .filter_map(|p| {
                let score = p.score;
                to_entry(p.payload)
                    .ok()
                    .map(|entry| Candidate { entry, score })
            })
            .collect())
    }

    async fn upsert(&self, entry: Entry, vector: Option<Vec<f32>>) -> Result<(), IndexError> {
        let id = entry.id;
        let searchable = vector.is_some();
        let payload =
            Payload::try_from(serde_json::Value::Object(entry_payload(entry, searchable)))
                .map_err(store_err)?;
        let vectors: HashMap<String, Vec<f32>> = vector
            .map(|v| HashMap::from([(VECTOR.to_owned(), v)]))
            .unwrap_or_default();
        let p = PointStruct::new(point(id), vectors, payload);
        self.client
            .upsert_points(UpsertPointsBuilder::new(&self.collection, vec![p]).wait(true))
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn touch(&self, id: Uuid, hits: u64, last_used: u64) -> Result<(), IndexError> {
        let payload = Payload::try_from(serde_json::json!({"hits": hits, "last_used": last_used}))
            .map_err(store_err)?;
        self.client
            .set_payload(
                SetPayloadPointsBuilder::new(&self.collection, payload)
                    .points_selector(PointsIdsList {
                        ids: vec![point(id)],
                    })
                    .wait(true),
            )
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn delete(&self, id: Uuid) -> Result<bool, IndexError> {
        let existed = self.get(id).await?.is_some();
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(PointsIdsList {
                        ids: vec![point(id)],
                    })
                    .wait(true),
            )
            .await
            .map_err(store_err)?;
        Ok(existed)
    }

    async fn delete_many(&self, ids: Vec<Uuid>) -> Result<(), IndexError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(PointsIdsList {
                        ids: ids.into_iter().map(point).collect(),
                    })
                    .wait(true),
            )
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn delete_where(&self, sel: Selector) -> Result<u64, IndexError> {
        let f = selector_filter(&sel);
        let n = self.count_where(Some(f.clone())).await?;
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(f)
                    .wait(true),
            )
            .await
            .map_err(store_err)?;
        Ok(n)
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
        });
        let points = self
            .scroll_by_last_used(Direction::Desc, offset + limit, Some(f), true)
            .await?;
        Ok(points
            .into_iter()
            .skip(offset)
            .filter_map(|p| to_entry(p.payload).ok())
            .collect())
    }

    async fn count(&self) -> Result<u64, IndexError> {
        self.count_where(None).await
    }

    async fn least_used(&self, n: usize) -> Result<Vec<Uuid>, IndexError> {
        let points = self
            .scroll_by_last_used(Direction::Asc, n, None, false)
            .await?;
        Ok(points.into_iter().filter_map(|p| uuid_of(p.id)).collect())
    }

    async fn maintain(&self) -> Result<(), IndexError> {
        // The server runs its own optimizer.
        Ok(())
    }
}
