//! A bounded map whose entries expire: the Hub's answers by token hash.
//! Time is passed in, so expiry is tested without sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

pub struct ExpiringCache<K, V> {
    entries: HashMap<K, (V, Instant)>,
    ttl: Duration,
    max: usize,
}

impl<K: Eq + Hash, V: Clone> ExpiringCache<K, V> {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self { entries: HashMap::new(), ttl, max }
    }

    /// The value, while it has not expired.
    pub fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        match self.entries.get(key) {
            Some((value, expires)) if *expires > now => Some(value.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `value` for the cache's time to live. A full cache drops its
    /// expired entries first; when every entry is live the value is not
    /// kept (the next request asks again) rather than growing without bound.
    pub fn insert(&mut self, key: K, value: V, now: Instant) {
        if self.ttl.is_zero() || self.max == 0 {
            return;
        }
        if self.entries.len() >= self.max && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, expires)| *expires > now);
            if self.entries.len() >= self.max {
                return;
            }
        }
        self.entries.insert(key, (value, now + self.ttl));
    }

    pub fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_ttl() {
        let start = Instant::now();
        let mut cache = ExpiringCache::new(Duration::from_secs(60), 10);
        cache.insert("a", 1, start);
        assert_eq!(cache.get(&"a", start + Duration::from_secs(59)), Some(1));
        assert_eq!(cache.get(&"a", start + Duration::from_secs(60)), None);
        assert_eq!(cache.len(), 0, "an expired entry is dropped when read");
    }

    #[test]
    fn the_size_is_bounded_and_expired_entries_make_room() {
        let start = Instant::now();
        let mut cache = ExpiringCache::new(Duration::from_secs(10), 2);
        cache.insert(1, "x", start);
        cache.insert(2, "y", start);
        cache.insert(3, "z", start);
        assert_eq!((cache.len(), cache.get(&3, start)), (2, None));
        let later = start + Duration::from_secs(11);
        cache.insert(3, "z", later);
        assert_eq!((cache.len(), cache.get(&3, later)), (1, Some("z")));
    }

    #[test]
    fn a_zero_ttl_caches_nothing() {
        let now = Instant::now();
        let mut cache = ExpiringCache::new(Duration::ZERO, 10);
        cache.insert(1, 1, now);
        assert_eq!(cache.get(&1, now), None);
    }
}
