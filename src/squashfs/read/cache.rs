//! A small weight-bounded LRU cache behind a mutex.
//!
//! The lock is held only for the map operations; callers compute (read,
//! decompress) values outside of it and insert afterwards, so threads missing
//! on different keys work in parallel. Two threads missing on the same key may
//! both compute it; the image is immutable, so either result is fine.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

struct Inner<K, V> {
    map: HashMap<K, (V, u64, usize)>,
    order: BTreeMap<u64, K>,
    tick: u64,
    weight: usize,
}

pub(crate) struct Lru<K, V> {
    inner: Mutex<Inner<K, V>>,
    max_weight: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> Lru<K, V> {
    pub(crate) fn new(max_weight: usize) -> Self {
        Lru {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: BTreeMap::new(),
                tick: 0,
                weight: 0,
            }),
            max_weight,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        // A panic while holding the lock cannot leave the map half-updated in
        // a way that matters for a cache; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        let mut g = self.lock();
        let inner = &mut *g;
        inner.tick += 1;
        let tick = inner.tick;
        let (v, t, _) = inner.map.get_mut(key)?;
        let old = std::mem::replace(t, tick);
        let v = v.clone();
        inner.order.remove(&old);
        inner.order.insert(tick, key.clone());
        Some(v)
    }

    pub(crate) fn insert(&self, key: K, value: V, weight: usize) {
        if weight > self.max_weight {
            return;
        }
        let mut g = self.lock();
        let inner = &mut *g;
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((_, old_tick, old_w)) = inner.map.remove(&key) {
            inner.order.remove(&old_tick);
            inner.weight -= old_w;
        }
        while inner.weight + weight > self.max_weight {
            let Some((_, k)) = inner.order.pop_first() else {
                break;
            };
            if let Some((_, _, w)) = inner.map.remove(&k) {
                inner.weight -= w;
            }
        }
        inner.order.insert(tick, key.clone());
        inner.map.insert(key, (value, tick, weight));
        inner.weight += weight;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let c: Lru<u32, u32> = Lru::new(3);
        c.insert(1, 10, 1);
        c.insert(2, 20, 1);
        c.insert(3, 30, 1);
        assert_eq!(c.get(&1), Some(10));
        c.insert(4, 40, 1);
        assert_eq!(c.get(&2), None);
        assert_eq!(c.get(&1), Some(10));
        assert_eq!(c.get(&3), Some(30));
        assert_eq!(c.len(), 3);
        c.insert(5, 50, 3);
        assert_eq!(c.len(), 1);
        c.insert(6, 60, 4); // too heavy: ignored
        assert_eq!(c.get(&5), Some(50));
    }
}
