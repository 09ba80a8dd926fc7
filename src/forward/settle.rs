//! Completion tracking of the forwarder's jobs: a job handed over with a [`Settle`] callback (a proxy's incoming
//! batch) becomes a [`Settlement`], split into parts (one per batch it is routed to); the callback runs once every
//! part is safe (acknowledged, refused, or given up).
//!
//! Each batch names its settlement by number ([`super::destination::Batch::settlement`]); routing a batch again
//! adds parts, and each part that becomes safe removes one.

use std::collections::HashMap;

/// Called once every part of a job is safe (or given up).
pub type Settle = Box<dyn FnOnce() + Send>;

/// A job whose owner waits for every part of it to be safe.
pub struct Settlement {
    /// Parts not yet safe.
    parts: usize,
    settle: Settle,
}

/// The settlements still waiting, by number.
#[derive(Default)]
pub struct Settlements {
    open: HashMap<u64, Settlement>,
    /// The number of the latest settlement opened.
    next: u64,
}

impl Settlements {
    /// Opens a settlement with no part yet; returns its number, for the batches it is routed as.
    pub fn open(&mut self, settle: Settle) -> u64 {
        self.next += 1;
        self.open.insert(self.next, Settlement { parts: 0, settle });
        self.next
    }

    /// Adds to a settlement's count of unsettled parts; settles it at zero.
    pub fn add_parts(&mut self, settlement: u64, delta: isize) {
        let Some(o) = self.open.get_mut(&settlement) else {
            return;
        };
        o.parts = (o.parts as isize + delta).max(0) as usize;
        if o.parts == 0 {
            if let Some(o) = self.open.remove(&settlement) {
                (o.settle)();
            }
        }
    }
}
