//! Ids ordered by a time in whole seconds (the exact store's last-use and expiry orders).
//!
//! A `BTreeSet<(u64, Uuid)>` did this with a tree descent and sixteen-byte key comparisons for
//! every answer stored (about 140 ns an insert here, two orders an answer). Almost every insert
//! is at or near the newest second, so the ids are kept in one hash set per second instead:
//! storing an answer finds its second among a few (the seconds still live) and inserts into that
//! second's set. Removal is exact (the caller knows the time it inserted with), so nothing stale
//! is left behind. Walks in order sort one second's ids at a time, which gives the same order
//! as the tree: by time, then by id. A second with few ids (a quiet gateway stores an answer
//! every few seconds, so most of its seconds hold one) keeps them in a short vector instead of
//! a hash set: with one id a second, sets took 176 bytes an id, the tree 48, vectors 79.

use std::collections::BTreeMap;

use foldhash::HashSet;
use uuid::Uuid;

/// A second's ids: a short vector until it holds more than [`FEW`], then a hash set.
enum Ids {
    Few(Vec<Uuid>),
    Many(Box<HashSet<Uuid>>),
}

/// The most ids a second keeps in a vector (found by a scan of at most this many).
const FEW: usize = 16;

impl Ids {
    fn insert(&mut self, id: Uuid) {
        match self {
            Ids::Few(v) if v.contains(&id) => {}
            Ids::Few(v) if v.len() < FEW => v.push(id),
            Ids::Few(v) => {
                let mut set: HashSet<Uuid> = v.drain(..).collect();
                set.insert(id);
                *self = Ids::Many(Box::new(set));
            }
            Ids::Many(set) => {
                set.insert(id);
            }
        }
    }

    fn remove(&mut self, id: &Uuid) -> bool {
        match self {
            Ids::Few(v) => match v.iter().position(|x| x == id) {
                Some(i) => {
                    v.swap_remove(i);
                    true
                }
                None => false,
            },
            Ids::Many(set) => set.remove(id),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Ids::Few(v) => v.is_empty(),
            Ids::Many(set) => set.is_empty(),
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = &Uuid> + '_> {
        match self {
            Ids::Few(v) => Box::new(v.iter()),
            Ids::Many(set) => Box::new(set.iter()),
        }
    }
}

/// Ids by (time, id), ascending.
#[derive(Default)]
pub(super) struct Order {
    seconds: BTreeMap<u64, Ids>,
}

impl Order {
    /// Adds `id` at time `t` (a no-op when it is there at that time already).
    pub(super) fn insert(&mut self, t: u64, id: Uuid) {
        self.seconds
            .entry(t)
            // Room for one: most seconds of a quiet gateway never hold a second id.
            .or_insert_with(|| Ids::Few(Vec::with_capacity(1)))
            .insert(id);
    }

    /// Takes `id` out of time `t`; false when it was not there.
    pub(super) fn remove(&mut self, t: u64, id: Uuid) -> bool {
        let Some(ids) = self.seconds.get_mut(&t) else {
            return false;
        };
        let found = ids.remove(&id);
        if ids.is_empty() {
            self.seconds.remove(&t);
        }
        found
    }

    /// The first `n`, in order.
    pub(super) fn first(&self, n: usize) -> Vec<(u64, Uuid)> {
        let mut out = Vec::with_capacity(n.min(4096));
        for (t, ids) in &self.seconds {
            if out.len() >= n {
                break;
            }
            let mut sorted: Vec<Uuid> = ids.iter().copied().collect();
            sorted.sort_unstable();
            out.extend(sorted.into_iter().take(n - out.len()).map(|id| (*t, id)));
        }
        out
    }

    /// Every id at time `t` or earlier (in no particular order).
    pub(super) fn up_to(&self, t: u64) -> Vec<Uuid> {
        self.seconds
            .range(..=t)
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect()
    }

    /// Up to `n` before `before` (all when `None`), last first.
    pub(super) fn last_before(&self, before: Option<(u64, Uuid)>, n: usize) -> Vec<(u64, Uuid)> {
        let mut out = Vec::with_capacity(n.min(4096));
        let seconds: Box<dyn Iterator<Item = (&u64, &Ids)>> = match before {
            None => Box::new(self.seconds.iter().rev()),
            Some((bt, _)) => Box::new(self.seconds.range(..=bt).rev()),
        };
        for (t, ids) in seconds {
            if out.len() >= n {
                break;
            }
            let mut sorted: Vec<Uuid> = ids
                .iter()
                .copied()
                .filter(|id| before.is_none_or(|b| (*t, *id) < b))
                .collect();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            out.extend(sorted.into_iter().take(n - out.len()).map(|id| (*t, id)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Random operations against a `BTreeSet<(u64, Uuid)>`: every walk agrees with the tree's.
    #[test]
    fn walks_match_an_ordered_set() {
        let mut order = Order::default();
        let mut set: BTreeSet<(u64, Uuid)> = BTreeSet::new();
        let mut live: Vec<(u64, Uuid)> = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for step in 0..20_000 {
            let r = next();
            if r % 3 == 0 && !live.is_empty() {
                let (t, id) = live.swap_remove((r as usize / 3) % live.len());
                assert!(order.remove(t, id));
                assert!(set.remove(&(t, id)));
                assert!(!order.remove(t, id), "removed twice");
            } else {
                // Mostly recent seconds, some far off; ids from a small pool now and then so
                // that one id sits at several times.
                let t = 1_000 + step / 50 + if r % 7 == 0 { r % 5_000 } else { r % 3 };
                let id = if r % 11 == 0 {
                    Uuid::from_u128(u128::from(r % 5))
                } else {
                    Uuid::from_u128(u128::from(next()) << 64 | u128::from(next()))
                };
                if set.insert((t, id)) {
                    live.push((t, id));
                }
                order.insert(t, id);
            }
            if step % 997 == 0 {
                let all: Vec<(u64, Uuid)> = set.iter().copied().collect();
                assert_eq!(order.first(usize::MAX), all);
                assert_eq!(
                    order.first(37),
                    all.iter().copied().take(37).collect::<Vec<_>>()
                );
                let cut = all.get(all.len() / 2).map_or(0, |(t, _)| *t);
                let mut expired = order.up_to(cut);
                expired.sort_unstable();
                let mut want: Vec<Uuid> =
                    set.range(..(cut + 1, Uuid::nil())).map(|x| x.1).collect();
                want.sort_unstable();
                assert_eq!(expired, want);
                // Paging from the newest, 100 at a time, walks the whole set backwards.
                let mut paged = Vec::new();
                let mut before = None;
                loop {
                    let page = order.last_before(before, 100);
                    let Some(last) = page.last().copied() else {
                        break;
                    };
                    assert_eq!(
                        page,
                        match before {
                            None => set.iter().rev().take(100).copied().collect::<Vec<_>>(),
                            Some(b) => set.range(..b).rev().take(100).copied().collect(),
                        }
                    );
                    paged.extend(page);
                    before = Some(last);
                }
                paged.reverse();
                assert_eq!(paged, all);
            }
        }
        assert!(!set.is_empty());
    }

    #[test]
    fn a_second_grows_from_a_vector_to_a_set_and_keeps_its_order() {
        let mut order = Order::default();
        let ids: Vec<Uuid> = (0..40u128)
            .map(|n| Uuid::from_u128(n * 7919 % 101))
            .collect();
        for id in &ids {
            order.insert(9, *id);
            order.insert(9, *id);
        }
        assert!(matches!(order.seconds.get(&9), Some(Ids::Many(_))));
        for id in &ids[..30] {
            assert!(order.remove(9, *id));
        }
        let mut left: Vec<(u64, Uuid)> = ids[30..].iter().map(|id| (9, *id)).collect();
        left.sort_unstable();
        assert_eq!(order.first(100), left);
        // A quiet second stays a vector.
        order.insert(3, Uuid::from_u128(1));
        assert!(matches!(order.seconds.get(&3), Some(Ids::Few(_))));
        assert_eq!(order.first(1), [(3, Uuid::from_u128(1))]);
    }

    #[test]
    fn an_emptied_second_is_dropped() {
        let mut order = Order::default();
        let id = Uuid::from_u128(7);
        order.insert(5, id);
        order.insert(5, id);
        assert!(order.remove(5, id));
        assert!(order.seconds.is_empty());
        assert!(!order.remove(6, id));
        assert!(order.first(10).is_empty());
    }
}
