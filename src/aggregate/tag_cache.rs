//! Shared tag sets for new series: many series carry the same tags (a host's, a service's, a deployment's tags on
//! every metric name it sends), and each would otherwise hold its own copy of the same canonical text.
//!
//! A small direct-mapped cache per shard, indexed by the hash of the canonical text: a new series whose tags are
//! in it takes a clone (a reference count), else its tags are allocated and take that cache entry. No reference
//! counting of the cache's own, no removal: the memory it keeps alive is bounded by its [`ENTRIES`] sets, and a
//! series with tags nobody else has costs the one allocation it always did. Only series creation looks here: from a
//! line, and from an import (a global's series).

use xxhash_rust::xxh3::xxh3_64;

use crate::model::TagSet;

/// Tag sets the cache remembers (a power of two).
pub const ENTRIES: usize = 4096;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct TagCache {
    /// Empty until the first set with tags is asked for; an empty [`TagSet`] is a vacant entry.
    entries: Vec<TagSet>,
}

impl TagCache {
    /// The tag set of canonical text `canonical`, shared with earlier series if the cache holds it.
    pub fn get(&mut self, canonical: &str) -> TagSet {
        if canonical.is_empty() {
            return TagSet::default();
        }
        if self.entries.is_empty() {
            self.entries = vec![TagSet::default(); ENTRIES];
        }
        let entry = &mut self.entries[xxh3_64(canonical.as_bytes()) as usize & (ENTRIES - 1)];
        if entry.joined() != canonical {
            *entry = TagSet::from_canonical(canonical);
        }
        entry.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(a: &TagSet, b: &TagSet) -> bool {
        std::ptr::eq(a.joined().as_ptr(), b.joined().as_ptr())
    }

    #[test]
    fn series_with_the_same_tags_share_one_allocation_and_different_tags_do_not() {
        let mut cache = TagCache::default();
        let a = cache.get("env:prod,service:api");
        let b = cache.get("env:prod,service:api");
        let c = cache.get("env:prod,service:web");
        assert_eq!(a.joined(), "env:prod,service:api");
        assert!(shares(&a, &b));
        assert_eq!(c.joined(), "env:prod,service:web");
        assert!(!shares(&a, &c));
    }

    #[test]
    fn a_set_displaced_from_its_entry_stays_intact_for_the_series_that_hold_it() {
        let mut cache = TagCache::default();
        let held: Vec<TagSet> = (0..3 * ENTRIES).map(|i| cache.get(&format!("k:{i}"))).collect();
        for (i, t) in held.iter().enumerate() {
            assert_eq!(t.joined(), format!("k:{i}"));
        }
        // Whatever was displaced, asking again gives the right text.
        for i in (0..3 * ENTRIES).step_by(97) {
            assert_eq!(cache.get(&format!("k:{i}")).joined(), format!("k:{i}"));
        }
        assert!(cache.entries.len() == ENTRIES, "the cache never grows");
    }

    #[test]
    fn no_tags_allocate_nothing() {
        let mut cache = TagCache::default();
        assert!(cache.get("").is_empty());
        assert!(cache.entries.is_empty());
    }
}
