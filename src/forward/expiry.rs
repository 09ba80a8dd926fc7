//! How long a batch may wait: at a destination that is down (or no longer a member) for `forward_max_intervals`
//! intervals before it goes to the next members (or is dropped, with none to take it), and merged but not
//! acknowledged for twice that before it is let go; and the destinations left empty when no longer members.

use std::sync::Arc;
use std::time::Instant;

use super::destination::{dest_tag, State};
use super::outbox::Outbox;
use super::LOG;
use crate::telemetry::catalog::FORWARD_DROPPED;

impl Outbox {
    /// Batches older than `forward_max_intervals` at a destination that is down (or no longer a member) go to
    /// the next members; with none to take them they are dropped. A merged batch still not acknowledged after
    /// twice that long is let go (its destination is alive and has it).
    pub fn expire(&mut self) {
        let now = Instant::now();
        let max_age = self.interval * self.max_intervals;
        let addrs: Vec<Arc<str>> = self.dests.keys().cloned().collect();
        for addr in addrs {
            let member = self.active.addrs().contains(&addr);
            let tag = dest_tag(&addr);
            let Some(d) = self.dests.get_mut(&addr) else { continue };
            let stranded = d.down || !member;
            let mut moving = Vec::new();
            let mut dropped = 0u64;
            let mut released = Vec::new();
            let mut kept = std::collections::VecDeque::new();
            for b in d.queue.drain(..) {
                let age = now.saturating_duration_since(b.born);
                let unsent_here = !member && b.state == State::ToSend;
                if (stranded && age >= max_age) || unsent_here {
                    moving.push(b);
                } else if age >= max_age * 2 {
                    if b.state == State::ToSend {
                        dropped += b.metrics.len() as u64;
                    }
                    released.push(b.settlement);
                } else {
                    kept.push_back(b);
                }
            }
            d.queue = kept;
            let empty = d.queue.is_empty();
            if dropped > 0 {
                self.telemetry
                    .add(&FORWARD_DROPPED, &[&tag, "cause:too_many_intervals"], dropped);
            }
            for o in released.into_iter().flatten() {
                self.settlements.add_parts(o, -1);
            }
            let others = self
                .active
                .addrs()
                .iter()
                .any(|a| *a != addr && self.dests.get(a).is_none_or(|d| !d.down));
            if others {
                self.move_batches(&addr, moving);
            } else {
                let n: u64 = moving.iter().map(|b| b.metrics.len() as u64).sum();
                if n > 0 {
                    self.telemetry
                        .add(&FORWARD_DROPPED, &[&tag, "cause:too_many_intervals"], n);
                    LOG.log(|| {
                        format!(
                            "{n} metrics for {addr} dropped after forward_max_intervals={} intervals with no \
                             member to take them",
                            self.max_intervals
                        )
                    });
                }
                for o in moving.into_iter().filter_map(|b| b.settlement) {
                    self.settlements.add_parts(o, -1);
                }
            }
            if empty && !member {
                if let Some(d) = self.dests.get(&addr) {
                    if d.queue.is_empty() {
                        self.dests.remove(&addr);
                    }
                }
            }
        }
    }
}
