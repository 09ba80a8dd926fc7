//! The receiving side of end-to-end acknowledgement (a global, or a proxy).
//!
//! A sender numbers its batches (`harrier-batch-id: <sender>-<seq>`). The receiver admits each batch once (a
//! retry of a batch this incarnation already has is a duplicate), keeps it *outstanding* until it is safe, and
//! answers `Acknowledge` with a watermark: every batch of that sender at or below it is safe. Safe means, for a
//! global, flushed to all of its sinks: imports are recorded under the same lock that hands them to the shards,
//! and a flush takes the imports recorded before it under that lock too, so the shards' queues order them. For a
//! proxy, safe means acknowledged by every global the batch was routed to.
//!
//! Everything here lives in memory: a restarted receiver has a new `incarnation`, which tells senders that the
//! batches it had not acknowledged are gone and must be sent again.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// Batch numbers remembered per sender for de-duplication: a batch more than this far below the newest one
/// admitted is refused as a duplicate.
const WINDOW: u64 = 4096;
/// Senders remembered; past this, senders with nothing outstanding are forgotten.
const MAX_SENDERS: usize = 100_000;

#[derive(Default)]
struct SenderState {
    /// Batch numbers admitted, within [`WINDOW`] of `max`.
    admitted: BTreeSet<u64>,
    /// Admitted and not yet safe.
    outstanding: BTreeSet<u64>,
    max: u64,
}

impl SenderState {
    fn watermark(&self) -> u64 {
        match self.outstanding.first() {
            Some(&first) => first - 1,
            None => self.max,
        }
    }
}

/// A flush begun: its id, the (sender, seq) batches it took, and whether every sink is done with it.
type FlushRecord = (u64, Vec<(u64, u64)>, bool);

#[derive(Default)]
struct Inner {
    senders: HashMap<u64, SenderState>,
    /// Batches handed to the shards since the last flush began (global).
    pending: Vec<(u64, u64)>,
    /// Flushes begun and not yet done with all of their sinks, oldest first.
    flushes: VecDeque<FlushRecord>,
    next_flush: u64,
}

/// Acknowledgement state of one receiver process.
pub struct Acks {
    /// Random per process start.
    pub incarnation: u64,
    inner: Mutex<Inner>,
    changed: Notify,
    closed: AtomicBool,
}

impl Default for Acks {
    fn default() -> Self {
        Self::new()
    }
}

/// A batch identity `<sender hex>-<seq decimal>`.
pub fn parse_batch_id(id: &str) -> Option<(u64, u64)> {
    let (sender, seq) = id.split_once('-')?;
    Some((u64::from_str_radix(sender, 16).ok()?, seq.parse().ok()?))
}

/// The batch identity a sender put in a request's metadata, if any.
pub fn batch_id(metadata: &tonic::metadata::MetadataMap) -> Option<(u64, u64)> {
    metadata
        .get(super::destination::BATCH_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_batch_id)
}

impl Acks {
    pub fn new() -> Acks {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let local = 0u8;
        let incarnation = xxhash_rust::xxh3::xxh3_64(format!("{t}-{}-{:p}", std::process::id(), &local).as_bytes());
        Acks {
            incarnation: incarnation.max(1),
            inner: Mutex::default(),
            changed: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn admit_locked(inner: &mut Inner, sender: u64, seq: u64) -> bool {
        if inner.senders.len() >= MAX_SENDERS && !inner.senders.contains_key(&sender) {
            inner.senders.retain(|_, s| !s.outstanding.is_empty());
        }
        let s = inner.senders.entry(sender).or_default();
        if seq == 0 || seq + WINDOW <= s.max || !s.admitted.insert(seq) {
            return false;
        }
        s.outstanding.insert(seq);
        if seq > s.max {
            s.max = seq;
            let floor = s.max.saturating_sub(WINDOW);
            while s.admitted.first().is_some_and(|&f| f <= floor) {
                s.admitted.pop_first();
            }
        }
        true
    }

    /// A global's import: admits the batch (false for a duplicate) and, if admitted, runs `merge` (which hands it
    /// to the shards) under the lock that orders imports against flushes.
    pub fn import(&self, id: Option<(u64, u64)>, merge: impl FnOnce()) -> bool {
        let mut inner = self.lock();
        match id {
            Some((sender, seq)) => {
                if !Self::admit_locked(&mut inner, sender, seq) {
                    return false;
                }
                merge();
                inner.pending.push((sender, seq));
            }
            None => merge(),
        }
        true
    }

    /// A proxy's receipt: admits the batch (false for a duplicate); it stays outstanding until [`Acks::settle`].
    pub fn admit(&self, sender: u64, seq: u64) -> bool {
        Self::admit_locked(&mut self.lock(), sender, seq)
    }

    /// A batch admitted by [`Acks::admit`] could not be taken after all: the sender will send it again.
    pub fn forget(&self, sender: u64, seq: u64) {
        if let Some(s) = self.lock().senders.get_mut(&sender) {
            s.outstanding.remove(&seq);
            s.admitted.remove(&seq);
        }
    }

    /// A batch admitted by [`Acks::admit`] is safe.
    pub fn settle(&self, sender: u64, seq: u64) {
        if let Some(s) = self.lock().senders.get_mut(&sender) {
            s.outstanding.remove(&seq);
        }
        self.changed.notify_waiters();
    }

    /// Starts a flush: runs `request` (which asks every shard for its interval) under the import lock, and
    /// returns the flush's id for [`Acks::flushed`].
    pub fn begin_flush<T>(&self, request: impl FnOnce() -> T) -> (T, u64) {
        let mut inner = self.lock();
        let out = request();
        let id = inner.next_flush;
        inner.next_flush += 1;
        let batches = std::mem::take(&mut inner.pending);
        inner.flushes.push_back((id, batches, false));
        (out, id)
    }

    /// Every sink is done with flush `id`: its batches (and those of every earlier flush that is done) are safe.
    pub fn flushed(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(f) = inner.flushes.iter_mut().find(|f| f.0 == id) {
            f.2 = true;
        }
        while inner.flushes.front().is_some_and(|f| f.2) {
            let Some((_, batches, _)) = inner.flushes.pop_front() else {
                break;
            };
            for (sender, seq) in batches {
                if let Some(s) = inner.senders.get_mut(&sender) {
                    s.outstanding.remove(&seq);
                }
            }
        }
        drop(inner);
        self.changed.notify_waiters();
    }

    /// The sender's watermark: every batch it numbered at or below this that this incarnation admitted is safe.
    pub fn watermark(&self, sender: u64) -> u64 {
        self.lock().senders.get(&sender).map_or(0, SenderState::watermark)
    }

    /// Batches admitted and not yet safe, over all senders.
    pub fn outstanding(&self) -> usize {
        self.lock().senders.values().map(|s| s.outstanding.len()).sum()
    }

    /// Nothing more will become safe (the final flush is done): waiting calls answer at once.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// The answer to an `Acknowledge` call: at once for a sender that does not know this incarnation, else after
    /// [`Acks::wait`] (at most 30 s).
    pub async fn answer(&self, sender: u64, after: u64, wait_ms: u32, incarnation: u64) -> u64 {
        if incarnation != self.incarnation {
            return self.watermark(sender);
        }
        let wait = Duration::from_millis(u64::from(wait_ms)).min(Duration::from_secs(30));
        self.wait(sender, after, wait).await
    }

    /// Waits until the sender's watermark exceeds `after`, `wait` passes, or [`Acks::close`]; returns the
    /// watermark.
    pub async fn wait(&self, sender: u64, after: u64, wait: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let w = self.watermark(sender);
            if w > after || self.closed.load(Ordering::Acquire) {
                return w;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.watermark(sender);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_admitted_once_even_out_of_order() {
        let a = Acks::new();
        assert!(a.admit(7, 2));
        assert!(a.admit(7, 1), "an older batch not seen yet is admitted");
        assert!(!a.admit(7, 2));
        assert!(!a.admit(7, 1));
        assert!(a.admit(8, 1), "senders are independent");
        assert!(a.admit(7, 5000));
        assert!(!a.admit(7, 3), "too far below the newest to be told apart from a retry");
    }

    #[test]
    fn the_watermark_stops_below_the_oldest_batch_not_yet_safe() {
        let a = Acks::new();
        for seq in 1..=3 {
            assert!(a.admit(1, seq));
        }
        assert_eq!(a.watermark(1), 0);
        a.settle(1, 2);
        assert_eq!(a.watermark(1), 0);
        a.settle(1, 1);
        assert_eq!(a.watermark(1), 2);
        a.settle(1, 3);
        assert_eq!(a.watermark(1), 3);
        assert_eq!(a.watermark(99), 0);
    }

    #[test]
    fn imports_are_safe_once_the_flush_that_took_them_and_every_earlier_one_are_done() {
        let a = Acks::new();
        assert!(a.import(Some((1, 1)), || {}));
        let ((), f1) = a.begin_flush(|| ());
        assert!(a.import(Some((1, 2)), || {}));
        assert!(!a.import(Some((1, 2)), || panic!("a duplicate is not merged")));
        let ((), f2) = a.begin_flush(|| ());
        a.flushed(f2);
        assert_eq!(a.watermark(1), 0, "flush 2 is done but flush 1 is not");
        a.flushed(f1);
        assert_eq!(a.watermark(1), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_acknowledgement_answers_when_the_flush_is_done() {
        let a = std::sync::Arc::new(Acks::new());
        a.import(Some((5, 1)), || {});
        let ((), f) = a.begin_flush(|| ());
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.wait(5, 0, Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        a.flushed(f);
        let w = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w, 1);
        assert_eq!(
            a.wait(5, 1, Duration::from_millis(10)).await,
            1,
            "times out with the same watermark"
        );
    }

    /// On paused time: the waits of ten seconds and more that the acknowledgement protocol uses run in no time,
    /// and the test sees exactly when an answer comes.
    #[tokio::test(start_paused = true)]
    async fn a_wait_answers_at_the_flush_that_completes_the_batch_or_at_its_timeout_and_no_sooner() {
        let a = std::sync::Arc::new(Acks::new());
        a.import(Some((9, 1)), || {});
        let ((), f) = a.begin_flush(|| ());
        let started = tokio::time::Instant::now();
        // Nothing flushed: the wait runs to its full timeout with the watermark it had.
        assert_eq!(a.wait(9, 0, Duration::from_secs(30)).await, 0);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        // The flush completes 7 s into a wait of 30: the answer comes then, not at the timeout.
        let waiter = tokio::spawn({
            let a = a.clone();
            async move {
                let t0 = tokio::time::Instant::now();
                (a.wait(9, 0, Duration::from_secs(30)).await, t0.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_secs(7)).await;
        a.flushed(f);
        let (watermark, waited) = waiter.await.unwrap();
        assert_eq!(watermark, 1);
        assert_eq!(waited, Duration::from_secs(7));
        // Closed at shutdown: a waiter is answered at once.
        a.close();
        let t0 = tokio::time::Instant::now();
        assert_eq!(a.wait(9, 1, Duration::from_secs(30)).await, 1);
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }
}
