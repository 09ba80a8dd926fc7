//! Sets: a HyperLogLog of precision 14 over a fixed-seed xxh3 hash of each member, so that sets built on
//! different hosts merge into the estimate of their union.
//!
//! Small sets stay sparse (the distinct member hashes, exact) and turn dense (16 KiB of registers) past
//! [`SPARSE_MAX`] members. The dense registers use the `hyperloglockless` estimator.

use hashbrown::HashTable;
use hyperloglockless::HyperLogLog;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Precision: 2^14 registers, about 0.8% standard error.
pub const PRECISION: u8 = 14;
pub const REGISTERS: usize = 1 << PRECISION;
/// Seed of the member hash. Part of the wire contract between locals and globals: never change it.
pub const MEMBER_HASH_SEED: u64 = 0x6861_7272_6965_7221; // "harrier!"
/// Distinct hashes kept exactly before turning dense (8 bytes each: 2048 × 8 = 16 KiB, the dense size).
pub const SPARSE_MAX: usize = 2048;
/// Largest register value: 1 + the trailing zeros of a 64-bit hash.
const MAX_REGISTER: u8 = 65;

/// The hash of a set member, as it travels between instances.
#[inline]
pub fn member_hash(member: &[u8]) -> u64 {
    xxh3_64_with_seed(member, MEMBER_HASH_SEED)
}

/// A mergeable distinct-count sketch.
#[derive(Debug, Clone)]
pub enum Set {
    /// Distinct member hashes (already xxh3, so they are their own table hash).
    Sparse(HashTable<u64>),
    Dense(Box<HyperLogLog>),
}

impl Default for Set {
    fn default() -> Self {
        Set::Sparse(HashTable::new())
    }
}

/// Why a forwarded set could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetDecodeError {
    #[error("set has {0} registers, expected {REGISTERS} (precision {PRECISION})")]
    WrongRegisterCount(usize),
    #[error("set register value {0} is larger than {MAX_REGISTER}")]
    RegisterTooLarge(u8),
}

impl Set {
    #[inline]
    pub fn insert(&mut self, member: &[u8]) {
        self.insert_hash(member_hash(member));
    }

    #[inline]
    pub fn insert_hash(&mut self, hash: u64) {
        match self {
            Set::Sparse(hashes) => {
                if let hashbrown::hash_table::Entry::Vacant(v) = hashes.entry(hash, |&h| h == hash, |&h| h) {
                    v.insert(hash);
                    if hashes.len() > SPARSE_MAX {
                        self.densify();
                    }
                }
            }
            Set::Dense(hll) => hll.insert_hash(hash),
        }
    }

    fn densify(&mut self) {
        if let Set::Sparse(hashes) = self {
            let mut hll = Box::new(new_dense());
            for &h in hashes.iter() {
                hll.insert_hash(h);
            }
            *self = Set::Dense(hll);
        }
    }

    /// Takes this interval's set out and leaves an empty one: a sparse set is copied out (one allocation of its
    /// size) and cleared in place, keeping its table for the next interval instead of growing a new one; a dense
    /// set is moved out.
    pub fn take_interval(&mut self) -> Set {
        match self {
            Set::Sparse(hashes) => {
                let out = Set::Sparse(hashes.clone());
                hashes.clear();
                out
            }
            Set::Dense(_) => std::mem::take(self),
        }
    }

    /// Takes this interval's estimate and leaves an empty set, keeping a sparse set's table (as
    /// [`Set::take_interval`] does) without copying it out.
    pub fn take_estimate(&mut self) -> f64 {
        let estimate = self.estimate();
        match self {
            Set::Sparse(hashes) => hashes.clear(),
            Set::Dense(_) => *self = Set::default(),
        }
        estimate
    }

    /// The estimated number of distinct members (exact while sparse).
    pub fn estimate(&self) -> f64 {
        match self {
            Set::Sparse(hashes) => hashes.len() as f64,
            Set::Dense(hll) => hll.count() as f64,
        }
    }

    /// Adds every member of `other` (set union).
    pub fn merge(&mut self, other: &Set) {
        match other {
            Set::Sparse(hashes) => {
                for &h in hashes.iter() {
                    self.insert_hash(h);
                }
            }
            Set::Dense(other_hll) => {
                self.densify();
                if let Set::Dense(hll) = self {
                    // Both have REGISTERS registers, so the length check cannot fail.
                    let _ = hll.union(other_hll);
                }
            }
        }
    }

    /// The dense registers (`REGISTERS` bytes), if dense.
    pub fn registers(&self) -> Option<Vec<u8>> {
        match self {
            Set::Sparse(_) => None,
            Set::Dense(hll) => Some(hll.iter().collect()),
        }
    }

    /// Rebuilds a dense set from forwarded registers, refusing malformed input.
    pub fn from_registers(registers: &[u8]) -> Result<Set, SetDecodeError> {
        if registers.len() != REGISTERS {
            return Err(SetDecodeError::WrongRegisterCount(registers.len()));
        }
        if let Some(&bad) = registers.iter().find(|&&r| r > MAX_REGISTER) {
            return Err(SetDecodeError::RegisterTooLarge(bad));
        }
        let zeros = registers.iter().filter(|&&r| r == 0).count();
        let sum: f64 = registers.iter().map(|&r| 2f64.powi(-i32::from(r))).sum();
        let hasher = new_dense().parts().1.clone();
        Ok(Set::Dense(Box::new(HyperLogLog::from_parts(
            registers.into(),
            hasher,
            zeros,
            sum,
        ))))
    }
}

fn new_dense() -> HyperLogLog {
    // The crate's hasher is unused: members are hashed by `member_hash` and inserted with `insert_hash`.
    HyperLogLog::seeded(PRECISION, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_of(range: std::ops::Range<u32>) -> Set {
        let mut s = Set::default();
        for i in range {
            s.insert(format!("member-{i}").as_bytes());
        }
        s
    }

    #[test]
    fn small_sets_count_exactly_and_ignore_repeats() {
        let mut s = set_of(0..1000);
        s.insert(b"member-5");
        assert_eq!(s.estimate(), 1000.0);
        assert!(matches!(s, Set::Sparse(_)));
    }

    #[test]
    fn large_sets_estimate_within_two_percent() {
        for n in [10_000u32, 200_000] {
            let s = set_of(0..n);
            let err = (s.estimate() - f64::from(n)).abs() / f64::from(n);
            assert!(err < 0.02, "n={n}: estimate {} ({:.2}% off)", s.estimate(), err * 100.0);
        }
    }

    #[test]
    fn merging_gives_the_union() {
        let mut a = set_of(0..60_000);
        let b = set_of(40_000..100_000);
        a.merge(&b);
        let err = (a.estimate() - 100_000.0).abs() / 100_000.0;
        assert!(err < 0.02, "{}", a.estimate());
        let mut small = set_of(0..10);
        small.merge(&set_of(5..20));
        assert_eq!(small.estimate(), 20.0);
    }

    #[test]
    fn registers_round_trip_and_bad_registers_are_refused() {
        let s = set_of(0..50_000);
        let regs = s.registers().unwrap();
        let back = Set::from_registers(&regs).unwrap();
        assert_eq!(back.estimate(), s.estimate());
        assert_eq!(
            Set::from_registers(&regs[..100]).unwrap_err(),
            SetDecodeError::WrongRegisterCount(100)
        );
        let mut bad = regs.clone();
        bad[7] = 200;
        assert_eq!(
            Set::from_registers(&bad).unwrap_err(),
            SetDecodeError::RegisterTooLarge(200)
        );
    }
}
