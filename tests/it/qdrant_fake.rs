//! An in-process fake Qdrant server: the tonic server stubs that qdrant-client ships, backed by a
//! map, implementing the RPCs the cache uses (collections, upsert, get, query with a payload
//! filter and score threshold, set payload, delete, count, ordered scroll). Everything else
//! answers `unimplemented`. It checks the requests the gateway builds and the responses it
//! reads; a real server is exercised by the env-gated test in cache_qdrant.rs.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use qdrant_client::qdrant::{
    self, collections_server::CollectionsServer, points_server::PointsServer,
    qdrant_server::QdrantServer,
};
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
struct Point {
    vector: Option<Vec<f32>>,
    payload: HashMap<String, qdrant::Value>,
}

#[derive(Debug, Default)]
struct Collection {
    points: BTreeMap<String, Point>,
    indexes: Vec<String>,
}

/// What the fake holds, shared with the test.
#[derive(Debug, Default)]
pub struct State {
    collections: HashMap<String, Collection>,
    /// RPC names in call order.
    pub calls: Vec<String>,
}

/// The fake server's handle.
#[derive(Clone, Default)]
pub struct Fake {
    state: Arc<Mutex<State>>,
}

impl Fake {
    /// Starts the fake on 127.0.0.1:0.
    pub async fn start() -> (Self, SocketAddr) {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts the fake on `addr`.
    pub async fn start_on(addr: SocketAddr) -> (Self, SocketAddr) {
        let fake = Self::default();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tokio_stream_listener(listener);
        let f = fake.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(QdrantServer::new(f.clone()))
                .add_service(CollectionsServer::new(f.clone()))
                .add_service(PointsServer::new(f))
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        (fake, addr)
    }

    /// Points stored in `collection`.
    pub fn len(&self, collection: &str) -> usize {
        let s = self.state.lock().unwrap();
        s.collections.get(collection).map_or(0, |c| c.points.len())
    }

    /// Payload indexes created on `collection`.
    pub fn indexes(&self, collection: &str) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.collections
            .get(collection)
            .map(|c| c.indexes.clone())
            .unwrap_or_default()
    }

    /// RPCs seen.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    fn with<T>(
        &self,
        call: &str,
        f: impl FnOnce(&mut State) -> Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(call.to_owned());
        f(&mut s).map(Response::new)
    }
}

fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = Result<tokio::net::TcpStream, std::io::Error>> {
    futures_util::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}

fn id_string(id: &Option<qdrant::PointId>) -> Result<String, Status> {
    match id.as_ref().and_then(|p| p.point_id_options.clone()) {
        Some(qdrant::point_id::PointIdOptions::Uuid(u)) => Ok(u),
        Some(qdrant::point_id::PointIdOptions::Num(n)) => Ok(n.to_string()),
        None => Err(Status::invalid_argument("point without id")),
    }
}

fn point_id(s: &str) -> qdrant::PointId {
    qdrant::PointId::from(s.to_owned())
}

fn dense(v: &qdrant::Vector) -> Vec<f32> {
    #[allow(deprecated)]
    if !v.data.is_empty() {
        return v.data.clone();
    }
    match &v.vector {
        Some(qdrant::vector::Vector::Dense(d)) => d.data.clone(),
        _ => Vec::new(),
    }
}

fn named_vector(v: &Option<qdrant::Vectors>, name: &str) -> Option<Vec<f32>> {
    match v.as_ref()?.vectors_options.as_ref()? {
        qdrant::vectors::VectorsOptions::Vectors(named) => named.vectors.get(name).map(dense),
        qdrant::vectors::VectorsOptions::Vector(v) => Some(dense(v)),
    }
}

fn number(v: &qdrant::Value) -> Option<f64> {
    match v.kind.as_ref()? {
        qdrant::value::Kind::IntegerValue(i) => Some(*i as f64),
        qdrant::value::Kind::DoubleValue(d) => Some(*d),
        _ => None,
    }
}

fn matches(filter: &Option<qdrant::Filter>, p: &Point) -> Result<bool, Status> {
    let Some(f) = filter else { return Ok(true) };
    if !f.should.is_empty() || !f.must_not.is_empty() || f.min_should.is_some() {
        return Err(Status::unimplemented("fake: only `must` filters"));
    }
    for c in &f.must {
        let Some(qdrant::condition::ConditionOneOf::Field(fc)) = &c.condition_one_of else {
            return Err(Status::unimplemented("fake: only field conditions"));
        };
        let value = p.payload.get(&fc.key);
        if let Some(m) = &fc.r#match {
            let want = match &m.match_value {
                Some(qdrant::r#match::MatchValue::Keyword(k)) => k,
                _ => return Err(Status::unimplemented("fake: only keyword matches")),
            };
            let have = match value.and_then(|v| v.kind.as_ref()) {
                Some(qdrant::value::Kind::StringValue(s)) => Some(s),
                _ => None,
            };
            if have != Some(want) {
                return Ok(false);
            }
        }
        if let Some(r) = &fc.range {
            let Some(x) = value.and_then(number) else {
                return Ok(false);
            };
            let ok = r.lt.is_none_or(|b| x < b)
                && r.gt.is_none_or(|b| x > b)
                && r.lte.is_none_or(|b| x <= b)
                && r.gte.is_none_or(|b| x >= b);
            if !ok {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn selected(sel: &Option<qdrant::PointsSelector>, c: &Collection) -> Result<Vec<String>, Status> {
    match sel.as_ref().and_then(|s| s.points_selector_one_of.as_ref()) {
        Some(qdrant::points_selector::PointsSelectorOneOf::Points(list)) => list
            .ids
            .iter()
            .map(|i| id_string(&Some(i.clone())))
            .collect(),
        Some(qdrant::points_selector::PointsSelectorOneOf::Filter(f)) => {
            let mut out = Vec::new();
            for (id, p) in &c.points {
                if matches(&Some(f.clone()), p)? {
                    out.push(id.clone());
                }
            }
            Ok(out)
        }
        None => Err(Status::invalid_argument("no points selector")),
    }
}

fn collection<'a>(s: &'a mut State, name: &str) -> Result<&'a mut Collection, Status> {
    s.collections
        .get_mut(name)
        .ok_or_else(|| Status::not_found(format!("collection {name} not found")))
}

fn done() -> qdrant::PointsOperationResponse {
    qdrant::PointsOperationResponse {
        result: Some(qdrant::UpdateResult {
            operation_id: Some(0),
            status: qdrant::UpdateStatus::Completed as i32,
        }),
        time: 0.0,
        usage: None,
    }
}

macro_rules! unimplemented_rpcs {
    ($($name:ident($req:ident) -> $resp:ident;)*) => {
        // Written out the way #[async_trait] expands (it does not see inside macro calls).
        $(
            fn $name<'life0, 'async_trait>(
                &'life0 self,
                _: Request<qdrant::$req>,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<qdrant::$resp>, Status>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                let r = self.with(stringify!($name), |_| Err(Status::unimplemented(stringify!($name))));
                Box::pin(async move { r })
            }
        )*
    };
}

#[tonic::async_trait]
impl qdrant::qdrant_server::Qdrant for Fake {
    async fn health_check(
        &self,
        _: Request<qdrant::HealthCheckRequest>,
    ) -> Result<Response<qdrant::HealthCheckReply>, Status> {
        self.with("health_check", |_| {
            Ok(qdrant::HealthCheckReply {
                title: "fake qdrant (tonic, in-process)".into(),
                version: "1.20.0".into(),
                commit: None,
            })
        })
    }
}

#[tonic::async_trait]
impl qdrant::collections_server::Collections for Fake {
    async fn collection_exists(
        &self,
        r: Request<qdrant::CollectionExistsRequest>,
    ) -> Result<Response<qdrant::CollectionExistsResponse>, Status> {
        let name = r.into_inner().collection_name;
        self.with("collection_exists", |s| {
            Ok(qdrant::CollectionExistsResponse {
                result: Some(qdrant::CollectionExists {
                    exists: s.collections.contains_key(&name),
                }),
                time: 0.0,
            })
        })
    }

    async fn create(
        &self,
        r: Request<qdrant::CreateCollection>,
    ) -> Result<Response<qdrant::CollectionOperationResponse>, Status> {
        let req = r.into_inner();
        self.with("create_collection", |s| {
            let named = matches!(
                req.vectors_config.as_ref().and_then(|v| v.config.as_ref()),
                Some(qdrant::vectors_config::Config::ParamsMap(m)) if m.map.contains_key("prompt")
            );
            if !named {
                return Err(Status::invalid_argument(
                    "fake: expected the named vector `prompt`",
                ));
            }
            s.collections
                .insert(req.collection_name.clone(), Collection::default());
            Ok(qdrant::CollectionOperationResponse {
                result: true,
                time: 0.0,
            })
        })
    }

    unimplemented_rpcs! {
        get(GetCollectionInfoRequest) -> GetCollectionInfoResponse;
        list(ListCollectionsRequest) -> ListCollectionsResponse;
        update(UpdateCollection) -> CollectionOperationResponse;
        delete(DeleteCollection) -> CollectionOperationResponse;
        update_aliases(ChangeAliases) -> CollectionOperationResponse;
        list_collection_aliases(ListCollectionAliasesRequest) -> ListAliasesResponse;
        list_aliases(ListAliasesRequest) -> ListAliasesResponse;
        collection_cluster_info(CollectionClusterInfoRequest) -> CollectionClusterInfoResponse;
        update_collection_cluster_setup(UpdateCollectionClusterSetupRequest) -> UpdateCollectionClusterSetupResponse;
        create_shard_key(CreateShardKeyRequest) -> CreateShardKeyResponse;
        delete_shard_key(DeleteShardKeyRequest) -> DeleteShardKeyResponse;
        list_shard_keys(ListShardKeysRequest) -> ListShardKeysResponse;
    }
}

#[tonic::async_trait]
impl qdrant::points_server::Points for Fake {
    async fn upsert(
        &self,
        r: Request<qdrant::UpsertPoints>,
    ) -> Result<Response<qdrant::PointsOperationResponse>, Status> {
        let req = r.into_inner();
        self.with("upsert", |s| {
            let c = collection(s, &req.collection_name)?;
            for p in req.points {
                let id = id_string(&p.id)?;
                c.points.insert(
                    id,
                    Point {
                        vector: named_vector(&p.vectors, "prompt"),
                        payload: p.payload,
                    },
                );
            }
            Ok(done())
        })
    }

    async fn get(
        &self,
        r: Request<qdrant::GetPoints>,
    ) -> Result<Response<qdrant::GetResponse>, Status> {
        let req = r.into_inner();
        self.with("get", |s| {
            let c = collection(s, &req.collection_name)?;
            let mut result = Vec::new();
            for id in &req.ids {
                let id = id_string(&Some(id.clone()))?;
                if let Some(p) = c.points.get(&id) {
                    result.push(qdrant::RetrievedPoint {
                        id: Some(point_id(&id)),
                        payload: p.payload.clone(),
                        ..Default::default()
                    });
                }
            }
            Ok(qdrant::GetResponse {
                result,
                time: 0.0,
                usage: None,
            })
        })
    }

    async fn query(
        &self,
        r: Request<qdrant::QueryPoints>,
    ) -> Result<Response<qdrant::QueryResponse>, Status> {
        let req = r.into_inner();
        self.with("query", |s| {
            if req.using.as_deref() != Some("prompt") {
                return Err(Status::invalid_argument(
                    "fake: query must use the `prompt` vector",
                ));
            }
            let q = match req.query.and_then(|q| q.variant) {
                Some(qdrant::query::Variant::Nearest(input)) => match input.variant {
                    Some(qdrant::vector_input::Variant::Dense(d)) => d.data,
                    _ => return Err(Status::unimplemented("fake: dense nearest only")),
                },
                _ => return Err(Status::unimplemented("fake: nearest queries only")),
            };
            let c = collection(s, &req.collection_name)?;
            let mut scored = Vec::new();
            for (id, p) in &c.points {
                let Some(v) = &p.vector else { continue };
                if !matches(&req.filter, p)? {
                    continue;
                }
                let dot: f32 = v.iter().zip(&q).map(|(a, b)| a * b).sum();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt()
                    * q.iter().map(|x| x * x).sum::<f32>().sqrt();
                let score = if norm > 0.0 { dot / norm } else { 0.0 };
                if req.score_threshold.is_none_or(|t| score >= t) {
                    scored.push((score, id.clone(), p.payload.clone()));
                }
            }
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            scored.truncate(req.limit.unwrap_or(10) as usize);
            let result = scored
                .into_iter()
                .map(|(score, id, payload)| qdrant::ScoredPoint {
                    id: Some(point_id(&id)),
                    payload,
                    score,
                    ..Default::default()
                })
                .collect();
            Ok(qdrant::QueryResponse {
                result,
                time: 0.0,
                usage: None,
            })
        })
    }

    async fn set_payload(
        &self,
        r: Request<qdrant::SetPayloadPoints>,
    ) -> Result<Response<qdrant::PointsOperationResponse>, Status> {
        let req = r.into_inner();
        self.with("set_payload", |s| {
            let c = collection(s, &req.collection_name)?;
            for id in selected(&req.points_selector, c)? {
                if let Some(p) = c.points.get_mut(&id) {
                    p.payload.extend(req.payload.clone());
                }
            }
            Ok(done())
        })
    }

    async fn delete(
        &self,
        r: Request<qdrant::DeletePoints>,
    ) -> Result<Response<qdrant::PointsOperationResponse>, Status> {
        let req = r.into_inner();
        self.with("delete", |s| {
            let c = collection(s, &req.collection_name)?;
            for id in selected(&req.points, c)? {
                c.points.remove(&id);
            }
            Ok(done())
        })
    }

    async fn count(
        &self,
        r: Request<qdrant::CountPoints>,
    ) -> Result<Response<qdrant::CountResponse>, Status> {
        let req = r.into_inner();
        self.with("count", |s| {
            let c = collection(s, &req.collection_name)?;
            let mut n = 0;
            for p in c.points.values() {
                if matches(&req.filter, p)? {
                    n += 1;
                }
            }
            Ok(qdrant::CountResponse {
                result: Some(qdrant::CountResult { count: n }),
                time: 0.0,
                usage: None,
            })
        })
    }

    async fn scroll(
        &self,
        r: Request<qdrant::ScrollPoints>,
    ) -> Result<Response<qdrant::ScrollResponse>, Status> {
        let req = r.into_inner();
        self.with("scroll", |s| {
            let c = collection(s, &req.collection_name)?;
            let mut rows = Vec::new();
            for (id, p) in &c.points {
                if matches(&req.filter, p)? {
                    rows.push((id.clone(), p.clone()));
                }
            }
            if let Some(o) = &req.order_by {
                if !c.indexes.contains(&o.key) {
                    return Err(Status::invalid_argument(format!(
                        "no index for order_by {}",
                        o.key
                    )));
                }
                let key = |p: &Point| p.payload.get(&o.key).and_then(number).unwrap_or(0.0);
                rows.sort_by(|a, b| key(&a.1).total_cmp(&key(&b.1)));
                if o.direction == Some(qdrant::Direction::Desc as i32) {
                    rows.reverse();
                }
            }
            rows.truncate(req.limit.unwrap_or(10) as usize);
            let result = rows
                .into_iter()
                .map(|(id, p)| qdrant::RetrievedPoint {
                    id: Some(point_id(&id)),
                    payload: p.payload,
                    ..Default::default()
                })
                .collect();
            Ok(qdrant::ScrollResponse {
                result,
                next_page_offset: None,
                time: 0.0,
                usage: None,
            })
        })
    }

    async fn create_field_index(
        &self,
        r: Request<qdrant::CreateFieldIndexCollection>,
    ) -> Result<Response<qdrant::PointsOperationResponse>, Status> {
        let req = r.into_inner();
        self.with("create_field_index", |s| {
            let c = collection(s, &req.collection_name)?;
            c.indexes.push(req.field_name);
            Ok(done())
        })
    }

    unimplemented_rpcs! {
        update_vectors(UpdatePointVectors) -> PointsOperationResponse;
        delete_vectors(DeletePointVectors) -> PointsOperationResponse;
        overwrite_payload(SetPayloadPoints) -> PointsOperationResponse;
        delete_payload(DeletePayloadPoints) -> PointsOperationResponse;
        clear_payload(ClearPayloadPoints) -> PointsOperationResponse;
        delete_field_index(DeleteFieldIndexCollection) -> PointsOperationResponse;
        create_vector_name(CreateVectorNameRequest) -> PointsOperationResponse;
        delete_vector_name(DeleteVectorNameRequest) -> PointsOperationResponse;
        search(SearchPoints) -> SearchResponse;
        search_batch(SearchBatchPoints) -> SearchBatchResponse;
        search_groups(SearchPointGroups) -> SearchGroupsResponse;
        recommend(RecommendPoints) -> RecommendResponse;
        recommend_batch(RecommendBatchPoints) -> RecommendBatchResponse;
        recommend_groups(RecommendPointGroups) -> RecommendGroupsResponse;
        discover(DiscoverPoints) -> DiscoverResponse;
        discover_batch(DiscoverBatchPoints) -> DiscoverBatchResponse;
        update_batch(UpdateBatchPoints) -> UpdateBatchResponse;
        query_batch(QueryBatchPoints) -> QueryBatchResponse;
        query_groups(QueryPointGroups) -> QueryGroupsResponse;
        facet(FacetCounts) -> FacetResponse;
        search_matrix_pairs(SearchMatrixPoints) -> SearchMatrixPairsResponse;
        search_matrix_offsets(SearchMatrixPoints) -> SearchMatrixOffsetsResponse;
    }
}
