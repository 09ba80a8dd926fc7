//! What the forwarding task learns from its destinations, applied to their queues: the outcome of each send
//! (merged, refused, unreachable, timed out) and each acknowledgement report (the incarnation and watermark of
//! what is flushed, or no answer), with the resends, re-routing and settlements they lead to.

use std::sync::Arc;

use bytes::Bytes;

use super::destination::{dest_tag, AckReport, Failure, State};
use super::outbox::Outbox;
use super::view as proto;
use super::LOG;
use crate::telemetry::catalog::{
    FORWARD_ACKNOWLEDGED, FORWARD_BYTES, FORWARD_DROPPED, FORWARD_ERRORS, FORWARD_METRICS, FORWARD_RESENDS,
};

impl Outbox {
    /// Applies the results of a round of sends to `addr`, each with its batch's number.
    pub fn apply(&mut self, addr: &Arc<str>, outcomes: Vec<(u64, Result<proto::SendMetricsResponse, Failure>)>) {
        let tag = dest_tag(addr);
        let mut reroute = false;
        let mut settled = Vec::new();
        let Some(d) = self.dests.get_mut(addr) else { return };
        for (seq, result) in outcomes {
            let Some(pos) = d.queue.iter().position(|b| b.seq == seq) else {
                continue;
            };
            match result {
                Ok(r) => {
                    d.answered();
                    if r.incarnation != 0 {
                        let resent = d.answered_as(r.incarnation);
                        if resent > 0 {
                            self.telemetry.add(&FORWARD_RESENDS, &[&tag], resent);
                        }
                    }
                    let b = &mut d.queue[pos];
                    let n = b.metrics.len() as u64;
                    self.telemetry
                        .add(&FORWARD_METRICS, &[&tag, "result:sent"], r.accepted.min(n));
                    let bytes: usize = b.metrics.iter().map(Bytes::len).sum();
                    self.telemetry.add(&FORWARD_BYTES, &[&tag], bytes as u64);
                    if r.rejected > 0 {
                        self.telemetry
                            .add(&FORWARD_METRICS, &[&tag, "result:rejected"], r.rejected);
                    }
                    if r.incarnation == 0 {
                        // A receiver without acknowledgements: merged is all it will ever say.
                        settled.push(d.queue.remove(pos).and_then(|b| b.settlement));
                        continue;
                    }
                    b.state = State::Merged(r.incarnation);
                }
                Err(f) => {
                    self.telemetry
                        .add(&FORWARD_ERRORS, &[&tag, &format!("cause:{}", f.cause())], 1);
                    match f {
                        Failure::Refused => {
                            let b = d.queue.remove(pos);
                            let n = b.as_ref().map_or(0, |b| b.metrics.len() as u64);
                            self.telemetry.add(&FORWARD_DROPPED, &[&tag, "cause:refused"], n);
                            LOG.log(|| format!("{addr} refused a batch of {n} metrics; dropped"));
                            settled.push(b.and_then(|b| b.settlement));
                        }
                        Failure::Unreachable => {
                            d.failed();
                            reroute = true;
                        }
                        Failure::Timeout => d.failed(),
                    }
                }
            }
        }
        for o in settled.into_iter().flatten() {
            self.settlements.add_parts(o, -1);
        }
        if reroute {
            self.reroute_unsent(addr);
        }
    }

    /// Applies what a destination's acknowledgement task learnt: batches its incarnation flushed are safe, what
    /// another incarnation had merged is sent again, and no answer marks it down.
    pub fn on_report(&mut self, r: AckReport) {
        let tag = dest_tag(&r.addr);
        let Some(d) = self.dests.get_mut(&r.addr) else { return };
        let Some((incarnation, flushed)) = r.answer else {
            // Sends keep their own backoff; a failed probe only marks the destination down.
            if !d.down {
                d.failed();
            }
            return;
        };
        d.answered();
        let resent = d.answered_as(incarnation);
        if resent > 0 {
            self.telemetry.add(&FORWARD_RESENDS, &[&tag], resent);
            LOG.log(|| {
                format!(
                    "{} restarted; {resent} batches it had not flushed are sent again",
                    r.addr
                )
            });
        }
        let mut settled = Vec::new();
        d.queue.retain(|b| {
            let safe = b.state == State::Merged(incarnation) && b.seq <= flushed;
            if safe {
                settled.push(b.settlement);
            }
            !safe
        });
        self.telemetry.add(&FORWARD_ACKNOWLEDGED, &[&tag], settled.len() as u64);
        for o in settled.into_iter().flatten() {
            self.settlements.add_parts(o, -1);
        }
    }
}
