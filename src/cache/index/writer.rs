//! The embedded store's writer: one thread applies what the request path queues. Answers to
//! store go to the shard in one upsert per drain (the WAL and the segment's locks are paid
//! once per batch, not once per answer), and hit counts at most once a second, merged per
//! entry. A caller of `upsert` still learns when its entry is in the shard.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use qdrant_edge::{
    EdgeShard, PointId, PointInsertOperations, PointOperations, PointStruct, SetPayloadOp,
    UpdateOperation,
};
use serde_json::json;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{IndexError, Selector};

/// Pause after each drain, so that under load one drain carries many answers.
const DRAIN_EVERY: Duration = Duration::from_millis(5);
/// Hit counts and last uses are written at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(1);

/// One answer waiting to be stored.
pub(super) struct Upsert {
    pub id: Uuid,
    /// For deletes by selector while the answer waits.
    pub model: String,
    pub expires: u64,
    pub point: PointStruct,
    pub done: oneshot::Sender<Result<(), IndexError>>,
}

#[derive(Default)]
struct Queued {
    upserts: Vec<Upsert>,
    /// Entry -> (hits, last used), the newest values.
    touches: HashMap<Uuid, (u64, u64)>,
    closed: bool,
}

/// The queue between the request path and the writer thread.
#[derive(Default)]
pub(super) struct Writes {
    queued: Mutex<Queued>,
    wake: Condvar,
}

impl Writes {
    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an answer; the writer wakes at once.
    pub fn upsert(&self, u: Upsert) {
        let mut q = self.lock();
        if q.closed {
            let _ = u
                .done
                .send(Err(IndexError::Store("the cache store is closing".into())));
            return;
        }
        q.upserts.push(u);
        drop(q);
        self.wake.notify_one();
    }

    /// Records a hit; written with the next batch of hit counts.
    pub fn touch(&self, id: Uuid, hits: u64, last_used: u64) {
        let mut q = self.lock();
        let t = q.touches.entry(id).or_insert((hits, last_used));
        *t = (t.0.max(hits), t.1.max(last_used));
    }

    /// The hit count and last use not yet written for this entry.
    pub fn pending_touch(&self, id: Uuid) -> Option<(u64, u64)> {
        self.lock().touches.get(&id).copied()
    }

    /// Drops what waits for an entry that is being deleted (its caller hears it was stored:
    /// it was, and then deleted).
    pub fn forget(&self, id: Uuid) {
        self.forget_where(|u| u.id == id);
        self.lock().touches.remove(&id);
    }

    /// Drops waiting answers a bulk delete selects.
    pub fn forget_selected(&self, sel: &Selector) {
        self.forget_where(|u| {
            sel.model.as_ref().is_none_or(|m| *m == u.model)
                && sel.expired_at.is_none_or(|t| u.expires <= t)
        });
    }

    fn forget_where(&self, dropped: impl Fn(&Upsert) -> bool) {
        let mut q = self.lock();
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut q.upserts)
            .into_iter()
            .partition(|u| dropped(u));
        q.upserts = kept;
        drop(q);
        for u in gone {
            let _ = u.done.send(Ok(()));
        }
    }

    /// Stops the writer once it has written what is queued.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }
}

/// Starts the writer thread for `shard`.
pub(super) fn start(
    shard: Arc<EdgeShard>,
    writes: Arc<Writes>,
) -> Result<std::thread::JoinHandle<()>, IndexError> {
    std::thread::Builder::new()
        .name("switchyard-cache-writer".into())
        .spawn(move || run(&shard, &writes))
        .map_err(|e| IndexError::Store(format!("cannot start the cache writer: {e}")))
}

fn run(shard: &EdgeShard, writes: &Writes) {
    let mut touched = Instant::now();
    loop {
        let (upserts, touches, closed) = {
            let mut q = writes.lock();
            loop {
                let touch_due = !q.touches.is_empty() && touched.elapsed() >= TOUCH_EVERY;
                if !q.upserts.is_empty() || q.closed || touch_due {
                    break;
                }
                let wait = if q.touches.is_empty() {
                    TOUCH_EVERY
                } else {
                    TOUCH_EVERY.saturating_sub(touched.elapsed())
                };
                q = writes
                    .wake
                    .wait_timeout(q, wait.max(Duration::from_millis(1)))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            let touches = if q.closed || touched.elapsed() >= TOUCH_EVERY {
                q.touches.clone()
            } else {
                HashMap::new()
            };
            (std::mem::take(&mut q.upserts), touches, q.closed)
        };
        store(shard, upserts);
        if !touches.is_empty() {
            touch(shard, &touches);
            touched = Instant::now();
            // What was written is no longer pending (unless a newer hit came meanwhile).
            let mut q = writes.lock();
            for (id, v) in touches {
                if q.touches.get(&id) == Some(&v) {
                    q.touches.remove(&id);
                }
            }
        }
        if closed {
            break;
        }
        std::thread::sleep(DRAIN_EVERY);
    }
}

/// One upsert for the whole batch (a failure is the store's, e.g. a full disk: every answer in
/// the batch hears it).
fn store(shard: &EdgeShard, upserts: Vec<Upsert>) {
    if upserts.is_empty() {
        return;
    }
    let (points, dones): (Vec<_>, Vec<_>) = upserts.into_iter().map(|u| (u.point, u.done)).unzip();
    let op = UpdateOperation::PointOperation(PointOperations::UpsertPoints(
        PointInsertOperations::PointsList(points.into_iter().map(Into::into).collect()),
    ));
    let result = shard.update(op).map(|_| ()).map_err(|e| e.to_string());
    for d in dones {
        let _ = d.send(result.clone().map_err(IndexError::Store));
    }
}

fn touch(shard: &EdgeShard, touches: &HashMap<Uuid, (u64, u64)>) {
    for (id, (hits, last_used)) in touches {
        let mut payload = serde_json::Map::new();
        payload.insert("hits".into(), json!(hits));
        payload.insert("last_used".into(), json!(last_used));
        let op = SetPayloadOp {
            payload: qdrant_edge::Payload(payload),
            points: Some(vec![PointId::Uuid(*id)]),
            filter: None,
            key: None,
        };
        // An entry deleted since its hit has nothing to update.
        if let Err(e) = shard.update(UpdateOperation::PayloadOperation(
            qdrant_edge::PayloadOps::SetPayload(op),
        )) {
            tracing::debug!(error = %e, "cache hit count not updated");
        }
    }
}
