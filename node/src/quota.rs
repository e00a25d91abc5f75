//! Per-key shares of a resource, held by guards: what one client or one peer may hold at once (streams, calls,
//! bytes waiting for signature checks), taken before the work and given back when the guard is dropped. The table
//! holds only keys with something taken, so it is bounded by what is outstanding.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Amounts taken per key (cheap to clone; clones share the table).
#[derive(Debug)]
pub struct Quota<K: Hash + Eq> {
    used: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Hash + Eq> Clone for Quota<K> {
    fn clone(&self) -> Self {
        Quota {
            used: self.used.clone(),
        }
    }
}

impl<K: Hash + Eq> Default for Quota<K> {
    fn default() -> Self {
        Quota {
            used: Arc::default(),
        }
    }
}

/// `n` taken under `key`; given back on drop.
#[derive(Debug)]
pub struct QuotaGuard<K: Hash + Eq> {
    key: Option<K>,
    n: usize,
    used: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Hash + Eq + Clone> Quota<K> {
    /// Takes `n` under `key` if that keeps the key at or below `max`.
    pub fn take(&self, key: &K, n: usize, max: usize) -> Option<QuotaGuard<K>> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let now = used.get(key).copied().unwrap_or(0);
        if now + n > max {
            return None;
        }
        used.insert(key.clone(), now + n);
        Some(QuotaGuard {
            key: Some(key.clone()),
            n,
            used: self.used.clone(),
        })
    }
}

impl<K: Hash + Eq> Drop for QuotaGuard<K> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(now) = used.get_mut(&key) {
            *now = now.saturating_sub(self.n);
            if *now == 0 {
                used.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_its_max_until_guards_are_dropped() {
        let q = Quota::<u8>::default();
        let a = q.take(&1, 3, 5).unwrap();
        assert!(q.take(&1, 3, 5).is_none());
        let b = q.take(&2, 5, 5).unwrap();
        drop(a);
        let _c = q.take(&1, 5, 5).unwrap();
        drop(b);
        assert_eq!(
            q.used.lock().unwrap().len(),
            1,
            "released keys leave the table"
        );
    }
}
