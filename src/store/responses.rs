//! Stored Responses API responses (`store: true`), for `GET /v1/responses/{id}` and for
//! `previous_response_id`. A record holds one turn (its input, the assistant's answer and the
//! response object) and the id of the turn before, so a long conversation costs its length, not
//! its length squared. Records belong to a tenant (the virtual key, or none when ungoverned),
//! expire after `[responses] ttl_seconds`, and the oldest go first beyond `max_stored`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use std::sync::Arc;

use super::postgres::Postgres;
use super::{Store, StoreError};
use crate::chat::Message;

/// The tree.
pub const TREE: &str = "responses";

/// How far back `previous_response_id` chains are followed.
const MAX_TURNS: usize = 10_000;

/// One stored turn.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredResponse {
    /// Who may read it: the virtual key id, or empty when ungoverned.
    pub tenant: String,
    /// When it expires (unix ms).
    pub expires_at_ms: u64,
    /// The turn before (`previous_response_id` of this one's request).
    pub previous: Option<String>,
    /// This turn's input as messages (instructions are not kept: they do not carry over).
    pub input: Vec<Message>,
    /// The assistant's answer.
    pub output: Option<Message>,
    /// The response object, as `GET` answers it.
    pub response: Value,
}

/// Why a conversation could not be continued.
#[derive(Debug, thiserror::Error)]
pub enum ResponsesError {
    /// No stored response with this id for this caller (never stored, expired or deleted).
    #[error("Previous response with id '{0}' not found.")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the responses are kept.
enum Backend {
    /// The embedded sled store (none when it could not be opened: nothing is kept).
    Sled(Option<Store>),
    /// A fleet's Postgres (`[server] state = "postgres"`): any instance continues any chain.
    Postgres(Arc<Postgres>),
}

/// The stored responses.
pub struct ResponseStore {
    backend: Backend,
    ttl_ms: u64,
    max: u64,
    count: AtomicU64,
    writes: AtomicU64,
}

impl ResponseStore {
    /// Opens the tree; without a store nothing is kept (and `previous_response_id` finds nothing).
    pub fn open(store: Option<Store>, ttl: std::time::Duration, max: u64) -> Self {
        let count = store
            .as_ref()
            .and_then(|s| s.tree(TREE).ok())
            .map_or(0, |t| t.len() as u64);
        Self::with(Backend::Sled(store), ttl, max, count)
    }

    /// Keeps the responses in the fleet's Postgres.
    pub fn shared(pg: Arc<Postgres>, ttl: std::time::Duration, max: u64) -> Self {
        Self::with(Backend::Postgres(pg), ttl, max, 0)
    }

    fn with(backend: Backend, ttl: std::time::Duration, max: u64, count: u64) -> Self {
        Self {
            backend,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            max,
            count: AtomicU64::new(count),
            writes: AtomicU64::new(0),
        }
    }

    /// Whether responses can be kept at all.
    pub fn available(&self) -> bool {
        !matches!(self.backend, Backend::Sled(None))
    }

    /// When a response stored now expires (unix ms).
    pub fn expiry(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(self.ttl_ms)
    }

    /// Keeps a turn under `id` (ids sort by creation time: see `chat::new_id`).
    pub async fn put(&self, id: &str, rec: &StoredResponse) -> Result<(), StoreError> {
        let sweep = self
            .writes
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(64);
        let store = match &self.backend {
            Backend::Sled(None) => return Ok(()),
            Backend::Sled(Some(store)) => store,
            Backend::Postgres(pg) => {
                let body = serde_json::to_value(rec).map_err(|e| StoreError::Record {
                    key: format!("{TREE}/{id}"),
                    message: e.to_string(),
                })?;
                pg.response_put(id, &rec.tenant, ms(rec.expires_at_ms), &body)
                    .await?;
                if sweep {
                    pg.response_prune(ms(crate::chat::unix_now_ms()), ms(self.max))
                        .await?;
                }
                return Ok(());
            }
        };
        // Ids are new for every response: each write adds a record.
        store.put(TREE, id, rec)?;
        self.count.fetch_add(1, Ordering::Relaxed);
        if sweep {
            self.sweep(store, crate::chat::unix_now_ms())?;
        }
        while self.count.load(Ordering::Relaxed) > self.max {
            if store.tree(TREE)?.pop_min()?.is_none() {
                break;
            }
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The response `id` if `tenant` may read it and it has not expired.
    pub async fn get(&self, id: &str, tenant: &str) -> Result<Option<StoredResponse>, StoreError> {
        let found = match &self.backend {
            Backend::Sled(None) => return Ok(None),
            Backend::Sled(Some(store)) => store.get::<StoredResponse>(TREE, id),
            Backend::Postgres(pg) => pg.response_get(id).await.and_then(|v| {
                v.map(|v| {
                    serde_json::from_value(v).map_err(|e| StoreError::Record {
                        key: format!("{TREE}/{id}"),
                        message: e.to_string(),
                    })
                })
                .transpose()
            }),
        };
        let rec = match found {
            Ok(Some(rec)) => rec,
            Ok(None) => return Ok(None),
            // A record that does not decode is as good as absent (and is not shown); a store
            // that fails is reported.
            Err(StoreError::Record { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if rec.tenant != tenant || rec.expires_at_ms <= crate::chat::unix_now_ms() {
            return Ok(None);
        }
        Ok(Some(rec))
    }

    /// Deletes `id` if `tenant` may; true when it was there.
    pub async fn delete(&self, id: &str, tenant: &str) -> Result<bool, StoreError> {
        if self.get(id, tenant).await?.is_none() {
            return Ok(false);
        }
        match &self.backend {
            Backend::Sled(None) => Ok(false),
            Backend::Sled(Some(store)) => {
                let removed = store.remove(TREE, id)?;
                if removed {
                    self.count.fetch_sub(1, Ordering::Relaxed);
                }
                Ok(removed)
            }
            Backend::Postgres(pg) => pg.response_delete(id, tenant).await,
        }
    }

    /// The conversation up to and including `id`: every stored turn's input and answer, oldest
    /// first. Each turn of the chain must still be there for `tenant`.
    pub async fn conversation(
        &self,
        id: &str,
        tenant: &str,
    ) -> Result<Vec<Message>, ResponsesError> {
        let mut turns = Vec::new();
        let mut next = Some(id.to_owned());
        while let Some(cur) = next.take() {
            if turns.len() >= MAX_TURNS {
                break;
            }
            let rec = self
                .get(&cur, tenant)
                .await?
                .ok_or_else(|| ResponsesError::NotFound(cur.clone()))?;
            next = rec.previous.clone();
            turns.push(rec);
        }
        let mut out = Vec::new();
        for t in turns.into_iter().rev() {
            out.extend(t.input);
            out.extend(t.output);
        }
        Ok(out)
    }

    /// Removes expired records from the oldest end.
    fn sweep(&self, store: &Store, now_ms: u64) -> Result<(), StoreError> {
        let tree = store.tree(TREE)?;
        for item in tree.iter() {
            let (k, _) = item?;
            let key = String::from_utf8_lossy(&k);
            let made = crate::chat::id_time_ms(&key).unwrap_or(0);
            if made.saturating_add(self.ttl_ms) > now_ms {
                break;
            }
            if tree.remove(&k)?.is_some() {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// Milliseconds and counts as Postgres's BIGINT.
fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The behaviour every backend must have, run against sled here and against Postgres in
/// tests/it/fleet.rs; each function takes a fresh store that keeps at most 3 responses for 60 s.
#[doc(hidden)]
#[allow(clippy::unwrap_used)]
pub mod suite {
    use super::*;
    use crate::chat::{Role, new_id};

    async fn turn(store: &ResponseStore, previous: Option<&str>, said: &str) -> String {
        let id = new_id("resp");
        let rec = StoredResponse {
            tenant: "k".into(),
            expires_at_ms: store.expiry(crate::chat::unix_now_ms()),
            previous: previous.map(str::to_owned),
            input: vec![Message::text(Role::User, said)],
            output: Some(Message::text(Role::Assistant, format!("re: {said}"))),
            response: Value::Null,
        };
        store.put(&id, &rec).await.unwrap();
        id
    }

    /// A chain of turns reads back as one conversation, for its tenant only.
    pub async fn a_chain_of_turns_is_one_conversation_for_its_tenant_only(s: &ResponseStore) {
        assert!(s.available());
        let a = turn(s, None, "one").await;
        let b = turn(s, Some(&a), "two").await;
        let texts: Vec<String> = s
            .conversation(&b, "k")
            .await
            .unwrap()
            .iter()
            .map(Message::text_content)
            .collect();
        assert_eq!(texts, ["one", "re: one", "two", "re: two"]);
        assert!(matches!(
            s.conversation(&b, "other").await,
            Err(ResponsesError::NotFound(_))
        ));
        assert!(s.get(&a, "other").await.unwrap().is_none());
        assert!(!s.delete(&a, "other").await.unwrap());
        assert!(s.delete(&a, "k").await.unwrap());
        assert!(!s.delete(&a, "k").await.unwrap(), "deleted twice");
        // A chain with a missing turn cannot be continued (the answer would lose context).
        assert!(matches!(
            s.conversation(&b, "k").await,
            Err(ResponsesError::NotFound(id)) if id == a
        ));
    }

    /// The oldest go first beyond `max_stored` (3).
    pub async fn the_oldest_go_first_beyond_max_stored(s: &ResponseStore) {
        let mut ids = Vec::new();
        for i in 0..65 {
            // Ids carry their millisecond: keep them apart so the order is certain.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            ids.push(turn(s, None, &i.to_string()).await);
        }
        let mut kept = Vec::new();
        for id in &ids[60..] {
            kept.push(s.get(id, "k").await.unwrap().is_some());
        }
        assert_eq!(kept, [false, false, true, true, true]);
        assert!(s.get(&ids[0], "k").await.unwrap().is_none());
    }

    /// An expired response is not found.
    pub async fn an_expired_response_is_not_found(s: &ResponseStore) {
        let id = new_id("resp");
        let rec = StoredResponse {
            tenant: "k".into(),
            expires_at_ms: crate::chat::unix_now_ms().saturating_sub(1),
            previous: None,
            input: Vec::new(),
            output: None,
            response: Value::Null,
        };
        s.put(&id, &rec).await.unwrap();
        assert!(s.get(&id, "k").await.unwrap().is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> ResponseStore {
        ResponseStore::open(
            Some(Store::temporary().unwrap()),
            std::time::Duration::from_secs(60),
            3,
        )
    }

    #[tokio::test]
    async fn sled_passes_the_suite() {
        suite::a_chain_of_turns_is_one_conversation_for_its_tenant_only(&store()).await;
        suite::the_oldest_go_first_beyond_max_stored(&store()).await;
        suite::an_expired_response_is_not_found(&store()).await;
    }
}
