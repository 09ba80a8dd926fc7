//! What the forwarding task holds for the global tier: the members in force, one [`Destination`] per address with
//! the batches queued for it, and the jobs waiting for their parts to be safe ([`super::settle`]); the routing of
//! metrics into those queues (each series to its owner among the members that can be reached, by
//! [`super::route`]); and the gauges of each destination.
//!
//! What changes the queues afterwards is in [`super::outcome`] (the answers of sends and acknowledgement polls) and
//! [`super::expiry`] (batches that waited too long).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::destination::{dest_tag, AckReport, Batch, Destination, State};
use super::route::Members;
use super::settle::Settlements;
use super::LOG;
use crate::config::ClientTlsConfig;
use crate::telemetry::catalog::{
    FORWARD_ACKNOWLEDGEMENTS_PENDING, FORWARD_BATCHES_UNSENT, FORWARD_DROPPED, FORWARD_REACHABLE, FORWARD_REROUTES,
};
use crate::telemetry::Telemetry;

/// The destinations, their queues and the settlements their batches belong to.
pub struct Outbox {
    /// The members in force.
    pub active: Members,
    pub dests: HashMap<Arc<str>, Destination>,
    pub settlements: Settlements,
    pub max_intervals: u32,
    pub interval: Duration,
    pub telemetry: Arc<Telemetry>,
    sender_base: u64,
    reports_tx: mpsc::UnboundedSender<AckReport>,
    /// `forward_tls`: connections to the globals are TLS with these files.
    tls: Option<Arc<ClientTlsConfig>>,
}

impl Outbox {
    /// An empty outbox, with no member in force yet; its destinations' acknowledgement tasks report to
    /// `reports_tx`.
    pub fn new(
        max_intervals: u32,
        interval: Duration,
        telemetry: Arc<Telemetry>,
        sender_base: u64,
        reports_tx: mpsc::UnboundedSender<AckReport>,
        tls: Option<Arc<ClientTlsConfig>>,
    ) -> Outbox {
        Outbox {
            active: Members::default(),
            dests: HashMap::new(),
            settlements: Settlements::default(),
            max_intervals,
            interval,
            telemetry,
            sender_base,
            reports_tx,
            tls,
        }
    }

    fn dest(&mut self, addr: &Arc<str>) -> Option<&mut Destination> {
        if !self.dests.contains_key(addr) {
            let tls = self.tls.as_deref();
            match Destination::new(
                addr.clone(),
                self.sender_base,
                self.interval,
                self.reports_tx.clone(),
                tls,
            ) {
                Ok(d) => {
                    self.dests.insert(addr.clone(), d);
                }
                Err(e) => {
                    LOG.log(|| e);
                    return None;
                }
            }
        }
        self.dests.get_mut(addr)
    }

    /// Splits metrics by owner among the members in force (skipping `exclude` and destinations that are down,
    /// unless every member is down) and queues one batch per owner. Returns the number of batches queued.
    pub fn route(
        &mut self,
        metrics: Vec<Bytes>,
        hashes: Vec<u64>,
        born: Instant,
        settlement: Option<u64>,
        exclude: Option<&str>,
    ) -> usize {
        let members = self.active.clone();
        let usable: Vec<bool> = members
            .addrs()
            .iter()
            .map(|a| Some(&**a) != exclude && self.dests.get(a).is_none_or(|d| !d.down))
            .collect();
        let fallback: Vec<bool> = members.addrs().iter().map(|a| Some(&**a) != exclude).collect();
        let any_usable = usable.iter().any(|&u| u);
        let mut parts: Vec<(Vec<Bytes>, Vec<u64>)> = vec![(Vec::new(), Vec::new()); members.len()];
        let mut unrouted = 0u64;
        // Metrics routed past their first choice, by that first choice (a destination down, or `exclude`).
        let some_skipped = usable.iter().zip(&fallback).any(|(u, f)| u != f) || exclude.is_some();
        let mut skipped = vec![0u64; members.len()];
        for (m, h) in metrics.into_iter().zip(hashes) {
            let owner = if any_usable {
                members.owner(h, |i| usable[i])
            } else {
                members.owner(h, |i| fallback[i])
            };
            if some_skipped && any_usable {
                if let Some(first) = members.owner(h, |_| true) {
                    if Some(first) != owner {
                        skipped[first] += 1;
                    }
                }
            }
            match owner {
                Some(i) => {
                    parts[i].0.push(m);
                    parts[i].1.push(h);
                }
                None => unrouted += 1,
            }
        }
        if unrouted > 0 {
            self.telemetry.add(&FORWARD_DROPPED, &["cause:no_members"], unrouted);
            LOG.log(|| format!("{unrouted} metrics dropped: no global to send them to"));
        }
        for (i, n) in skipped.into_iter().enumerate() {
            if n > 0 {
                self.telemetry
                    .add(&FORWARD_REROUTES, &[&dest_tag(&members.addrs()[i])], n);
            }
        }
        let mut queued = 0;
        for (i, (ms, hs)) in parts.into_iter().enumerate() {
            if ms.is_empty() {
                continue;
            }
            let addr = members.addrs()[i].clone();
            if let Some(d) = self.dest(&addr) {
                d.push(ms, hs, born, settlement);
                queued += 1;
            }
        }
        queued
    }

    /// Routes every batch `addr` has to send (never merged by a living incarnation) to the next members.
    pub fn reroute_unsent(&mut self, addr: &Arc<str>) {
        let Some(d) = self.dests.get_mut(addr) else { return };
        let (moving, staying): (Vec<_>, Vec<_>) = d.queue.drain(..).partition(|b| b.state == State::ToSend);
        d.queue.extend(staying);
        self.move_batches(addr, moving);
    }

    /// Routes batches taken from `from` to the next member of each of their series.
    pub fn move_batches(&mut self, from: &Arc<str>, batches: Vec<Batch>) {
        if batches.is_empty() {
            return;
        }
        let others = self.active.addrs().iter().any(|a| a != from);
        for b in batches {
            if !others {
                // Nowhere else to go: keep it for `from`.
                if let Some(d) = self.dests.get_mut(from) {
                    let pos = d.queue.partition_point(|x| x.seq < b.seq);
                    d.queue.insert(pos, b);
                }
                continue;
            }
            let metrics = Arc::try_unwrap(b.metrics).unwrap_or_else(|m| (*m).clone());
            let hashes = Arc::try_unwrap(b.hashes).unwrap_or_else(|h| (*h).clone());
            let queued = self.route(metrics, hashes, b.born, b.settlement, Some(from));
            if let Some(o) = b.settlement {
                self.settlements.add_parts(o, queued as isize - 1);
            }
        }
    }

    /// Tells each destination's acknowledgement task what to ask, and reports the gauges; stores in
    /// `reachable_out` how many members in force have answered and did not fail since.
    pub fn publish(&mut self, reachable_out: &AtomicUsize) {
        // Every member has a destination, so that each is probed and its reachability known before traffic.
        let mut reachable = 0;
        for a in self.active.addrs().to_vec() {
            if self.dest(&a).is_some_and(|d| d.confirmed && !d.down) {
                reachable += 1;
            }
        }
        reachable_out.store(reachable, Ordering::Relaxed);
        for d in self.dests.values() {
            d.update_want();
            let tag = dest_tag(&d.addr);
            let pending = d.queue.iter().filter(|b| matches!(b.state, State::Merged(_))).count();
            let unsent = d.queue.len() - pending;
            self.telemetry
                .set(&FORWARD_ACKNOWLEDGEMENTS_PENDING, &[&tag], pending as f64);
            self.telemetry.set(&FORWARD_BATCHES_UNSENT, &[&tag], unsent as f64);
            self.telemetry
                .set(&FORWARD_REACHABLE, &[&tag], if d.down { 0.0 } else { 1.0 });
        }
    }
}
