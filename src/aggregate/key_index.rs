//! The index that finds a series by the hash of its canonical key: slot numbers in a hashbrown table, each beside
//! the high 32 bits of its key hash. Growing the table (a rehash) and telling most hash collisions apart then read
//! the table alone, never the slots: at a million new series, a rehash that read each slot's hash took a cache
//! miss per series, 8% of a worker's time while the series were being created.

use hashbrown::HashTable;

/// Key hash → slot number.
#[derive(Debug, Default)]
pub struct KeyIndex {
    /// Each entry: the high 32 bits of the key hash, then the slot number.
    table: HashTable<u64>,
}

#[inline]
fn entry(hash: u64, slot: u32) -> u64 {
    (hash & 0xFFFF_FFFF_0000_0000) | u64::from(slot)
}

/// The hash the table files an entry under: built from the 32 bits the entry keeps, so that a rehash recomputes
/// it from the entry alone (the top bits, which hashbrown compares first, are the key hash's own).
#[inline]
fn table_hash(hash: u64) -> u64 {
    let hi = hash >> 32;
    (hi << 32) | hi
}

#[inline]
fn slot_of(entry: u64) -> u32 {
    entry as u32
}

impl KeyIndex {
    /// The slot of key hash `hash` that `is_slot` accepts (it compares the keys).
    #[inline]
    pub fn find(&self, hash: u64, is_slot: impl Fn(u32) -> bool) -> Option<u32> {
        self.table
            .find(table_hash(hash), |&e| e >> 32 == hash >> 32 && is_slot(slot_of(e)))
            .map(|&e| slot_of(e))
    }

    pub fn insert(&mut self, hash: u64, slot: u32) {
        self.table
            .insert_unique(table_hash(hash), entry(hash, slot), |&e| table_hash(e));
    }

    pub fn remove(&mut self, hash: u64, slot: u32) {
        if let Ok(e) = self.table.find_entry(table_hash(hash), |&e| e == entry(hash, slot)) {
            e.remove();
        }
    }

    /// The series of key hash `hash` moved from slot `from` to slot `to`.
    pub fn move_slot(&mut self, hash: u64, from: u32, to: u32) {
        if let Some(e) = self.table.find_mut(table_hash(hash), |&e| e == entry(hash, from)) {
            *e = entry(hash, to);
        }
    }

    /// Gives back room beyond what `len` entries need.
    pub fn shrink_to(&mut self, len: usize) {
        self.table.shrink_to(len, |&e| table_hash(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn the_key_index_agrees_with_a_map_through_inserts_moves_and_removals(
            ops in proptest::collection::vec((0u8..3, 0u64..64, 0u32..8), 1..400),
        ) {
            // Hashes that collide in their high bits, low bits or both, to exercise the comparisons.
            let hash_of = |k: u64| ((k % 4) << 32) | (k / 4) | ((k % 3) << 60);
            let mut index = KeyIndex::default();
            let mut model: std::collections::HashMap<u64, u32> = Default::default();
            let mut next = 0u32;
            for (op, k, _) in ops {
                let h = hash_of(k);
                match op {
                    0 if !model.contains_key(&k) => {
                        index.insert(h, next);
                        model.insert(k, next);
                        next += 1;
                    }
                    1 => {
                        if let Some(s) = model.remove(&k) {
                            index.remove(h, s);
                        }
                    }
                    2 => {
                        if let Some(s) = model.get_mut(&k) {
                            index.move_slot(h, *s, next);
                            *s = next;
                            next += 1;
                        }
                    }
                    _ => {}
                }
                index.shrink_to(model.len());
            }
            for k in 0..64u64 {
                let expected = model.get(&k).copied();
                // The caller tells keys of equal hash apart by the slot's key; here, by the model.
                let found = index.find(hash_of(k), |s| expected == Some(s));
                proptest::prop_assert_eq!(found, expected);
            }
        }
    }
}
