//! UDP and unix datagram readers: one thread per socket, reading up to
//! [`RECV_BATCH`](crate::pipeline::source::RECV_BATCH) datagrams per system call
//! with `recvmmsg`, each call waiting for at least one. Datagrams gather into a batch, handed on when it is full or
//! [`HOLD`] after its first datagram: under load a worker is woken once per full batch rather than once per
//! burst, which on a busy core saves a context switch per few datagrams. While a batch waits, the socket's
//! receive timeout is what is left of its hold; while none does, it is [`IDLE_WAIT`] (to notice shutdown).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::pipeline::source::{is_transient, oversize, socket_error, RecvBuffers};
use crate::pipeline::{Ingest, BATCH_BYTES};
use crate::telemetry::{LimitedLog, ListenerStats};

static TIMEOUT_LOG: LimitedLog = LimitedLog::new("datagram socket error");

pub(super) struct Reader {
    pub socket: Socket,
    pub index: usize,
    pub stats: Arc<ListenerStats>,
    pub ingest: Ingest,
    pub max_packet: usize,
    pub stop: Arc<AtomicBool>,
}

/// Longest a partial batch waits for more datagrams before it is handed on.
const HOLD: Duration = Duration::from_millis(2);
/// How long a reader with nothing pending waits before it checks for shutdown.
const IDLE_WAIT: Duration = Duration::from_millis(100);

impl Reader {
    pub fn run(self) {
        crate::pipeline::batch_scheduling();
        // One byte more than the limit per slot, so that a longer datagram is seen as such and never truncated.
        let mut bufs = RecvBuffers::new(self.max_packet + 1);
        let mut batch = self.ingest.batch(self.index);
        // When the pending batch got its first datagram; `None` while it is empty.
        let mut since: Option<Instant> = None;
        let mut timeout = Duration::ZERO;
        while !self.stop.load(Ordering::Relaxed) {
            let wait = match since {
                Some(t) => HOLD.saturating_sub(t.elapsed()).max(Duration::from_micros(100)),
                None => IDLE_WAIT,
            };
            // Only touch the socket option when the wait changes by more than a little.
            if wait.abs_diff(timeout) > Duration::from_micros(500) {
                if let Err(e) = self.socket.set_read_timeout(Some(wait)) {
                    TIMEOUT_LOG.log(|| format!("{}: cannot set a read timeout: {e}", self.stats.name));
                }
                timeout = wait;
            }
            // Block (up to the timeout) until at least one datagram is there, and take up to RECV_BATCH.
            match bufs.recv(&self.socket, libc::MSG_WAITFORONE) {
                Ok(n) => {
                    self.take_all(&bufs, n, &mut batch);
                    if since.is_none() && !batch.data.is_empty() {
                        since = Some(Instant::now());
                    }
                }
                Err(e) if is_transient(&e) => {}
                Err(e) => {
                    socket_error(&self.stats, &e);
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let due = since.is_some_and(|t| t.elapsed() >= HOLD);
            if batch.data.len() >= BATCH_BYTES || due {
                let full = std::mem::replace(&mut batch, self.ingest.batch(self.index));
                since = None;
                if !self.ingest.send_blocking(full) {
                    return;
                }
            }
        }
        // Shutdown: what is still queued in the socket is read and handed on, for at most one second (senders that
        // keep sending must not hold the shutdown).
        let until = std::time::Instant::now() + Duration::from_secs(1);
        while let Ok(n) = bufs.recv(&self.socket, libc::MSG_DONTWAIT) {
            if n == 0 || std::time::Instant::now() >= until {
                break;
            }
            self.take_all(&bufs, n, &mut batch);
            if batch.data.len() >= BATCH_BYTES {
                let full = std::mem::replace(&mut batch, self.ingest.batch(self.index));
                self.ingest.send_blocking(full);
            }
        }
        self.ingest.send_blocking(batch);
    }

    fn take_all(&self, bufs: &RecvBuffers, n: usize, batch: &mut crate::pipeline::Batch) {
        for i in 0..n {
            self.take(bufs.datagram(i), batch);
        }
    }

    #[inline]
    fn take(&self, datagram: &[u8], batch: &mut crate::pipeline::Batch) {
        if datagram.len() > self.max_packet {
            // The datagram was cut at max + 1 bytes; its real length is not known.
            self.stats.packets.fetch_add(1, Ordering::Relaxed);
            oversize(&self.stats, self.max_packet);
            return;
        }
        batch.push_packet(datagram);
        batch.packets += 1;
    }
}
