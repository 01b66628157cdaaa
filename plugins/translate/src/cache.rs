//! The translation cache: the most recently used translations in the step's key-value
//! state, at most `cache_entries` of them.
//!
//! The host's key-value state has a size cap (`state_limit`) but no eviction and no way to
//! list keys, so without bookkeeping here the cache would fill the state once and then
//! stop caching for good. [`Lru`] keeps the recency order of its keys in memory and in one
//! key-value entry ([`ORDER_KEY`]), evicts the least recently used entry before inserting
//! past its bound, and evicts once more and retries when the host refuses a write because
//! the state is full. The order is written back once per batch ([`Lru::save`]), not per
//! message, because it is one value holding every cached key; and only after a batch that
//! added or evicted entries: most chat lines are cache hits, and rewriting the whole order
//! for each of them would cost more than it saves. A hit still reorders in memory and is
//! saved with the next change, so a hot reload forgets at most the hits since then.
//!
//! Storage goes through [`Store`] so the eviction paths, the refused write included
//! (which the SDK's native key-value stand-in never produces), are unit-tested here.

use std::collections::{BTreeMap, HashMap};

use streamtap_plugin_sdk::host;

/// Key-value entry holding the cache's keys, least recently used first, as a JSON array.
/// Not shaped like a cache key (`tr:{target}:{text}`), so it can never collide with one.
pub const ORDER_KEY: &str = "tr-order";

/// Where the cache keeps its entries: the step's key-value state, or a stand-in in tests.
pub trait Store {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Fails when the state would grow past its cap.
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String>;
    fn delete(&mut self, key: &str);
}

/// The step's key-value state through the host.
pub struct HostKv;

impl Store for HostKv {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        host::kv::get(key)
    }
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        host::kv::set(key, value)
    }
    fn delete(&mut self, key: &str) {
        host::kv::delete(key)
    }
}

/// A bounded least-recently-used cache over a [`Store`].
pub struct Lru<S: Store> {
    store: S,
    capacity: usize,
    /// Key → its recency stamp (higher is more recent).
    stamps: HashMap<String, u64>,
    /// Recency stamp → key; the first entry is the next to evict.
    order: BTreeMap<u64, String>,
    next_stamp: u64,
    /// Whether entries were added or evicted since the order was last written to
    /// [`ORDER_KEY`] (hits alone do not count: see the module docs).
    dirty: bool,
}

impl<S: Store> Lru<S> {
    /// Picks up the order a previous instance of the step saved (the state survives hot
    /// reloads), evicting the oldest entries if `capacity` is now lower. A missing or
    /// unreadable order starts empty; entries it named stay in the state until a lookup
    /// finds them and adopts them (see [`Lru::get`]).
    pub fn load(store: S, capacity: usize) -> Self {
        let saved: Vec<String> = store
            .get(ORDER_KEY)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut lru = Lru {
            store,
            capacity: capacity.max(1),
            stamps: HashMap::new(),
            order: BTreeMap::new(),
            next_stamp: 0,
            dirty: false,
        };
        for key in saved {
            lru.touch(key);
        }
        lru.dirty = false;
        while lru.stamps.len() > lru.capacity {
            lru.evict_oldest();
        }
        lru
    }

    /// Number of entries the cache tracks.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.stamps.len()
    }

    /// The cached value, marking it as just used. A value the order does not know (written
    /// by a version without the bound, or lost with an unreadable order) is adopted, so it
    /// becomes evictable instead of occupying the state forever.
    pub fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        let value = self.store.get(key)?;
        let adopted = !self.stamps.contains_key(key);
        if adopted {
            self.make_room();
        }
        let dirty = self.dirty;
        self.touch(key.to_string());
        self.dirty = dirty || adopted;
        Some(value)
    }

    /// Drops an entry (a corrupt one, so it is fetched again).
    pub fn remove(&mut self, key: &str) {
        self.store.delete(key);
        if let Some(stamp) = self.stamps.remove(key) {
            self.order.remove(&stamp);
            self.dirty = true;
        }
    }

    /// Stores `value` as the most recent entry, first evicting the least recently used
    /// one if the cache is at its bound. When the host refuses the write (the step's
    /// state is full, with other keys or larger texts than the bound allowed for), one
    /// more entry is evicted and the write retried once; the error is returned when that
    /// fails too, and the value is then not cached.
    pub fn insert(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        if !self.stamps.contains_key(key) {
            self.make_room();
        }
        if let Err(first) = self.store.set(key, value) {
            // Never evict the entry being written: it is the one we want to keep.
            if self.oldest().is_none_or(|k| k == key) || !self.evict_oldest() {
                return Err(first);
            }
            self.store.set(key, value)?;
        }
        self.touch(key.to_string());
        Ok(())
    }

    /// Writes the order back if entries were added or evicted since the last save. A refused write evicts the oldest entry and
    /// retries once, like [`Lru::insert`]; if that fails too the saved order is left as it
    /// was (stale, not lost: a later save replaces it).
    pub fn save(&mut self) -> Result<(), String> {
        if !self.dirty {
            return Ok(());
        }
        if let Err(first) = self.store.set(ORDER_KEY, &self.encode_order()) {
            if !self.evict_oldest() {
                return Err(first);
            }
            self.store.set(ORDER_KEY, &self.encode_order())?;
        }
        self.dirty = false;
        Ok(())
    }

    fn encode_order(&self) -> Vec<u8> {
        let keys: Vec<&String> = self.order.values().collect();
        serde_json::to_vec(&keys).unwrap_or_else(|_| b"[]".to_vec())
    }

    fn oldest(&self) -> Option<&str> {
        self.order.values().next().map(String::as_str)
    }

    /// Evicts until one more entry fits under the bound.
    fn make_room(&mut self) {
        while self.stamps.len() >= self.capacity && self.evict_oldest() {}
    }

    /// Marks `key` as the most recently used (and the order as to be saved).
    fn touch(&mut self, key: String) {
        if let Some(old) = self.stamps.get(&key) {
            self.order.remove(old);
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.order.insert(stamp, key.clone());
        self.stamps.insert(key, stamp);
        self.dirty = true;
    }

    /// Deletes the least recently used entry; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        let Some((_, key)) = self.order.pop_first() else {
            return false;
        };
        self.stamps.remove(&key);
        self.store.delete(&key);
        self.dirty = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory store with a byte cap counted like the host's (keys + values).
    #[derive(Default)]
    struct Capped {
        map: HashMap<String, Vec<u8>>,
        max_bytes: usize,
        refused: usize,
    }

    impl Capped {
        fn new(max_bytes: usize) -> Self {
            Capped {
                max_bytes,
                ..Default::default()
            }
        }
        fn used(&self) -> usize {
            self.map.iter().map(|(k, v)| k.len() + v.len()).sum()
        }
    }

    impl Store for Capped {
        fn get(&self, key: &str) -> Option<Vec<u8>> {
            self.map.get(key).cloned()
        }
        fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
            let old = self.map.get(key).map_or(0, |v| key.len() + v.len());
            if self.used() - old + key.len() + value.len() > self.max_bytes {
                self.refused += 1;
                return Err(format!("state over {} bytes", self.max_bytes));
            }
            self.map.insert(key.to_string(), value.to_vec());
            Ok(())
        }
        fn delete(&mut self, key: &str) {
            self.map.remove(key);
        }
    }

    fn keys(lru: &Lru<Capped>) -> Vec<&str> {
        lru.order.values().map(String::as_str).collect()
    }

    #[test]
    fn evicts_the_least_recently_used_past_the_bound() {
        let mut lru = Lru::load(Capped::new(usize::MAX), 3);
        for k in ["a", "b", "c"] {
            lru.insert(k, b"1").unwrap();
        }
        // A hit makes "a" the most recent, so "b" goes first.
        assert!(lru.get("a").is_some());
        lru.insert("d", b"1").unwrap();
        assert_eq!(keys(&lru), ["c", "a", "d"]);
        assert_eq!(lru.store.get("b"), None, "evicted from the state too");
        // Overwriting a cached key does not evict anything.
        lru.insert("c", b"2").unwrap();
        assert_eq!(keys(&lru), ["a", "d", "c"]);
        assert_eq!(lru.len(), 3);
    }

    #[test]
    fn the_order_survives_a_reload_and_a_lower_bound_trims_it() {
        let mut lru = Lru::load(Capped::new(usize::MAX), 4);
        for k in ["a", "b", "c", "d"] {
            lru.insert(k, b"1").unwrap();
        }
        lru.save().unwrap();
        let store = lru.store;
        let mut reloaded = Lru::load(store, 2);
        assert_eq!(keys(&reloaded), ["c", "d"]);
        assert_eq!(reloaded.store.get("a"), None);
        assert_eq!(reloaded.store.get("b"), None);
        // The trimmed order is saved on the next save.
        reloaded.save().unwrap();
        let again = Lru::load(reloaded.store, 2);
        assert_eq!(keys(&again), ["c", "d"]);
    }

    #[test]
    fn save_writes_only_when_the_order_changed() {
        let mut lru = Lru::load(Capped::new(usize::MAX), 2);
        lru.save().unwrap();
        assert_eq!(
            lru.store.get(ORDER_KEY),
            None,
            "nothing changed, nothing written"
        );
        lru.insert("a", b"1").unwrap();
        lru.save().unwrap();
        assert_eq!(lru.store.get(ORDER_KEY), Some(br#"["a"]"#.to_vec()));
        lru.store.delete(ORDER_KEY);
        lru.save().unwrap();
        assert_eq!(lru.store.get(ORDER_KEY), None);
        // A hit reorders in memory only; the next change saves it along.
        lru.insert("b", b"1").unwrap();
        lru.save().unwrap();
        assert!(lru.get("a").is_some());
        lru.save().unwrap();
        assert_eq!(lru.store.get(ORDER_KEY), Some(br#"["a","b"]"#.to_vec()));
        lru.insert("c", b"1").unwrap();
        lru.save().unwrap();
        assert_eq!(lru.store.get(ORDER_KEY), Some(br#"["a","c"]"#.to_vec()));
    }

    #[test]
    fn a_full_state_evicts_and_retries_once() {
        // Room for two 10-byte entries (1-byte key + 9-byte value) and no more.
        let mut lru = Lru::load(Capped::new(20), 100);
        lru.insert("a", &[0; 9]).unwrap();
        lru.insert("b", &[0; 9]).unwrap();
        // The bound (100) is far away, but the state is full: "a" makes room.
        lru.insert("c", &[0; 9]).unwrap();
        assert_eq!(keys(&lru), ["b", "c"]);
        assert_eq!(lru.store.refused, 1);
        // One eviction is not enough for an entry this large: it is refused, only one
        // entry is given up for it, and the rest of the cache stays usable.
        let err = lru.insert("d", &[0; 19]).unwrap_err();
        assert!(err.contains("20 bytes"), "{err}");
        assert_eq!(keys(&lru), ["c"]);
        lru.insert("e", &[0; 9]).unwrap();
        assert_eq!(keys(&lru), ["c", "e"]);
    }

    #[test]
    fn a_refused_write_never_evicts_the_entry_being_written() {
        let mut lru = Lru::load(Capped::new(10), 5);
        lru.insert("a", &[0; 9]).unwrap();
        assert!(lru.insert("a", &[0; 20]).is_err());
        assert_eq!(lru.store.get("a"), Some(vec![0; 9]), "old value kept");
        assert_eq!(keys(&lru), ["a"]);
    }

    #[test]
    fn a_full_state_evicts_to_save_the_order() {
        // Two 10-byte entries and their saved order (`tr-order` + `["a","b"]`, 17 bytes)
        // leave 3 bytes: exactly a third entry "zz" of one byte, but then no room for the
        // longer order naming it.
        let mut lru = Lru::load(Capped::new(40), 100);
        lru.insert("a", &[0; 9]).unwrap();
        lru.insert("b", &[0; 9]).unwrap();
        lru.save().unwrap();
        lru.insert("zz", &[0; 1]).unwrap();
        assert_eq!(lru.store.refused, 0);
        lru.save().unwrap();
        assert_eq!(
            lru.store.refused, 1,
            "the first write of the order was refused"
        );
        assert_eq!(keys(&lru), ["b", "zz"]);
        assert_eq!(lru.store.get("a"), None);
        let reloaded = Lru::load(lru.store, 100);
        assert_eq!(keys(&reloaded), ["b", "zz"]);
    }

    #[test]
    fn unknown_entries_are_adopted_on_a_hit_and_corrupt_ones_removed() {
        let mut store = Capped::new(usize::MAX);
        store.set("old", b"1").unwrap();
        store.set(ORDER_KEY, b"not json").unwrap();
        let mut lru = Lru::load(store, 1);
        assert_eq!(lru.len(), 0, "an unreadable order starts empty");
        assert_eq!(lru.get("old"), Some(b"1".to_vec()));
        assert_eq!(keys(&lru), ["old"]);
        lru.insert("new", b"2").unwrap();
        assert_eq!(lru.store.get("old"), None, "adopted, so evictable");
        lru.remove("new");
        assert_eq!(lru.len(), 0);
        assert_eq!(lru.store.get("new"), None);
    }
}
