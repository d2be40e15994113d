//! The embedded store's writer: one thread applies what the request path queues. Answers with
//! a vector go to the shard in one upsert per drain (the WAL and the segment's locks are paid
//! once per batch, not once per answer), answers without one to the exact store, and hit counts
//! at most once a second, merged per entry. A caller of `upsert` still learns when its entry is
//! stored.

use foldhash::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use qdrant_edge::{
    EdgeShard, PointId, PointInsertOperations, PointOperations, PointStruct, SetPayloadOp,
    UpdateOperation,
};
use serde_json::json;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::exact::ExactStore;
use super::{Entry, IndexError, Selector};

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
    pub item: Item,
    /// The entry was last stored in the other store (with a vector, now without, or the
    /// reverse): its old copy there is deleted first.
    pub moved: bool,
    pub done: Done,
}

/// Who hears that an answer was stored, or why it was not.
pub(super) enum Done {
    /// A caller awaiting `upsert`.
    Reply(oneshot::Sender<Result<(), IndexError>>),
    /// A caller that did not wait (`upsert_then`): runs on the thread that settles the answer
    /// (the writer's, or the caller's when the store is closing).
    Then(super::Then),
}

impl Done {
    fn send(self, result: Result<(), IndexError>) {
        match self {
            Done::Reply(tx) => {
                let _ = tx.send(result);
            }
            Done::Then(then) => then(result),
        }
    }
}

/// Where an answer goes.
pub(super) enum Item {
    /// To the shard, with its vector.
    Point(PointStruct),
    /// To the exact store (no vector).
    Exact(Entry),
}

#[derive(Default)]
struct Queued {
    upserts: Vec<Upsert>,
    /// Entry -> (hits, last used), the newest values.
    touches: HashMap<Uuid, (u64, u64)>,
    closed: bool,
    /// The writer waits on `wake` (it also sleeps between drains, when nobody needs to wake it).
    waiting: bool,
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
            drop(q);
            u.done
                .send(Err(IndexError::Store("the cache store is closing".into())));
            return;
        }
        q.upserts.push(u);
        // Only a waiting writer is woken: a notification is a system call whether or not a
        // thread waits (one per answer, under load, when the writer was mostly between drains).
        // Read under the lock the writer sets it under, so no wake-up is lost.
        let wake = q.waiting;
        drop(q);
        if wake {
            self.wake.notify_one();
        }
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
            u.done.send(Ok(()));
        }
    }

    /// Stops the writer once it has written what is queued.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }
}

/// Starts the writer thread for `shard` and `exact`.
pub(super) fn start(
    shard: Arc<EdgeShard>,
    exact: Arc<ExactStore>,
    writes: Arc<Writes>,
) -> Result<std::thread::JoinHandle<()>, IndexError> {
    std::thread::Builder::new()
        .name("switchyard-cache-writer".into())
        .spawn(move || run(&shard, &exact, &writes))
        .map_err(|e| IndexError::Store(format!("cannot start the cache writer: {e}")))
}

fn run(shard: &EdgeShard, exact: &ExactStore, writes: &Writes) {
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
                q.waiting = true;
                q = writes
                    .wake
                    .wait_timeout(q, wait.max(Duration::from_millis(1)))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                q.waiting = false;
            }
            let touches = if q.closed || touched.elapsed() >= TOUCH_EVERY {
                q.touches.clone()
            } else {
                HashMap::default()
            };
            (std::mem::take(&mut q.upserts), touches, q.closed)
        };
        store(shard, exact, upserts);
        if !touches.is_empty() {
            touch(shard, exact, &touches);
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

/// One upsert for the batch's points and one write of its exact entries (a failure is the
/// store's, e.g. a full disk: every answer in that part of the batch hears it).
fn store(shard: &EdgeShard, exact: &ExactStore, upserts: Vec<Upsert>) {
    let (mut points, mut entries) = (Vec::new(), Vec::new());
    let (mut to_shard, mut to_exact) = (Vec::new(), Vec::new());
    let (mut leave_shard, mut leave_exact) = (Vec::new(), Vec::new());
    for u in upserts {
        match u.item {
            Item::Point(p) => {
                if u.moved {
                    leave_exact.push(u.id);
                }
                points.push(p);
                to_shard.push(u.done);
            }
            Item::Exact(e) => {
                if u.moved {
                    leave_shard.push(PointId::Uuid(u.id));
                }
                entries.push(e);
                to_exact.push(u.done);
            }
        }
    }
    if !points.is_empty() {
        let mut result = exact.remove(&leave_exact).map(|_| ());
        if result.is_ok() {
            let op = UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                PointInsertOperations::PointsList(points.into_iter().map(Into::into).collect()),
            ));
            result = shard
                .update(op)
                .map(|_| ())
                .map_err(|e| IndexError::Store(e.to_string()));
        }
        answer(to_shard, &result);
    }
    if !entries.is_empty() {
        let mut result = Ok(());
        if !leave_shard.is_empty() {
            result = delete_points(shard, leave_shard);
        }
        if result.is_ok() {
            result = exact.put(&entries);
        }
        answer(to_exact, &result);
    }
}

/// Deletes these points from the shard (on the calling thread).
pub(super) fn delete_points(shard: &EdgeShard, ids: Vec<PointId>) -> Result<(), IndexError> {
    shard
        .update(UpdateOperation::PointOperation(
            PointOperations::DeletePoints { ids },
        ))
        .map(|_| ())
        .map_err(|e| IndexError::Store(e.to_string()))
}

fn answer(dones: Vec<Done>, result: &Result<(), IndexError>) {
    for d in dones {
        d.send(result.clone());
    }
}

fn touch(shard: &EdgeShard, exact: &ExactStore, touches: &HashMap<Uuid, (u64, u64)>) {
    for (id, (hits, last_used)) in touches {
        match exact.touch(*id, *hits, *last_used) {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(error = %e, "cache hit count not updated");
                continue;
            }
        }
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
