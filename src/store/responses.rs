//! Stored Responses API responses (`store: true`), for `GET /v1/responses/{id}` and for
//! `previous_response_id`. A record holds one turn (its input, the assistant's answer and the
//! response object) and the id of the turn before, so a long conversation costs its length, not
//! its length squared. Records belong to a tenant (the virtual key, or none when ungoverned),
//! expire after `[responses] ttl_seconds`, and the oldest go first beyond `max_stored`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// The stored responses.
pub struct ResponseStore {
    store: Option<Store>,
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
        Self {
            store,
            ttl_ms: ttl.as_millis() as u64,
            max,
            count: AtomicU64::new(count),
            writes: AtomicU64::new(0),
        }
    }

    /// Whether responses can be kept at all.
    pub fn available(&self) -> bool {
        self.store.is_some()
    }

    /// When a response stored now expires (unix ms).
    pub fn expiry(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(self.ttl_ms)
    }

    /// Keeps a turn under `id` (ids sort by creation time: see `chat::new_id`).
    pub fn put(&self, id: &str, rec: &StoredResponse) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        // Ids are new for every response: each write adds a record.
        store.put(TREE, id, rec)?;
        self.count.fetch_add(1, Ordering::Relaxed);
        if self
            .writes
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(64)
        {
            self.sweep(crate::chat::unix_now_ms())?;
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
    pub fn get(&self, id: &str, tenant: &str) -> Result<Option<StoredResponse>, StoreError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let rec = match store.get::<StoredResponse>(TREE, id) {
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
    pub fn delete(&self, id: &str, tenant: &str) -> Result<bool, StoreError> {
        if self.get(id, tenant)?.is_none() {
            return Ok(false);
        }
        let Some(store) = &self.store else {
            return Ok(false);
        };
        let removed = store.remove(TREE, id)?;
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(removed)
    }

    /// The conversation up to and including `id`: every stored turn's input and answer, oldest
    /// first. Each turn of the chain must still be there for `tenant`.
    pub fn conversation(&self, id: &str, tenant: &str) -> Result<Vec<Message>, ResponsesError> {
        let mut turns = Vec::new();
        let mut next = Some(id.to_owned());
        while let Some(cur) = next.take() {
            if turns.len() >= MAX_TURNS {
                break;
            }
            let rec = self
                .get(&cur, tenant)?
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
    fn sweep(&self, now_ms: u64) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Role, new_id};

    fn turn(store: &ResponseStore, previous: Option<&str>, said: &str) -> String {
        let id = new_id("resp");
        let rec = StoredResponse {
            tenant: "k".into(),
            expires_at_ms: store.expiry(crate::chat::unix_now_ms()),
            previous: previous.map(str::to_owned),
            input: vec![Message::text(Role::User, said)],
            output: Some(Message::text(Role::Assistant, format!("re: {said}"))),
            response: Value::Null,
        };
        store.put(&id, &rec).unwrap();
        id
    }

    #[test]
    fn a_chain_of_turns_is_one_conversation_for_its_tenant_only() {
        let s = ResponseStore::open(
            Some(Store::temporary().unwrap()),
            std::time::Duration::from_secs(60),
            100,
        );
        let a = turn(&s, None, "one");
        let b = turn(&s, Some(&a), "two");
        let texts: Vec<String> = s
            .conversation(&b, "k")
            .unwrap()
            .iter()
            .map(Message::text_content)
            .collect();
        assert_eq!(texts, ["one", "re: one", "two", "re: two"]);
        assert!(matches!(
            s.conversation(&b, "other"),
            Err(ResponsesError::NotFound(_))
        ));
        assert!(!s.delete(&a, "other").unwrap());
        assert!(s.delete(&a, "k").unwrap());
        // A chain with a missing turn cannot be continued (the answer would lose context).
        assert!(matches!(
            s.conversation(&b, "k"),
            Err(ResponsesError::NotFound(id)) if id == a
        ));
    }

    #[test]
    fn the_oldest_go_first_beyond_max_stored() {
        let s = ResponseStore::open(
            Some(Store::temporary().unwrap()),
            std::time::Duration::from_secs(60),
            3,
        );
        let ids: Vec<String> = (0..5)
            .map(|i| {
                // Ids carry their millisecond: keep them apart so the order is certain.
                std::thread::sleep(std::time::Duration::from_millis(2));
                turn(&s, None, &i.to_string())
            })
            .collect();
        let kept: Vec<bool> = ids
            .iter()
            .map(|id| s.get(id, "k").unwrap().is_some())
            .collect();
        assert_eq!(kept, [false, false, true, true, true]);
    }
}
