//! UDP and unix datagram readers: one thread per socket, reading up to [`RECV_BATCH`] datagrams per system call
//! with `recvmmsg`, each call waiting for at least one. Datagrams gather into a batch, handed on when it is full or
//! [`HOLD`] after its first datagram: under load a worker is woken once per full batch rather than once per
//! burst, which on a busy core saves a context switch per few datagrams. While a batch waits, the socket's
//! receive timeout is what is left of its hold; while none does, it is [`IDLE_WAIT`] (to notice shutdown).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::pipeline::{Ingest, BATCH_BYTES};
use crate::telemetry::{LimitedLog, ListenerStats};

static OVERSIZE_LOG: LimitedLog = LimitedLog::new("oversize datagram dropped");
static ERROR_LOG: LimitedLog = LimitedLog::new("datagram socket error");

pub(super) struct Reader {
    pub socket: Socket,
    pub index: usize,
    pub stats: Arc<ListenerStats>,
    pub ingest: Ingest,
    pub max_packet: usize,
    pub stop: Arc<AtomicBool>,
}

/// Datagrams read per `recvmmsg` call.
pub const RECV_BATCH: usize = 32;
/// Longest a partial batch waits for more datagrams before it is handed on.
const HOLD: Duration = Duration::from_millis(2);
/// How long a reader with nothing pending waits before it checks for shutdown.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Receive buffers for `recvmmsg`: `RECV_BATCH` slots of `slot` bytes, with their iovecs and headers. The headers
/// point into the buffers, so neither is ever resized after construction.
struct RecvBuffers {
    data: Vec<u8>,
    slot: usize,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `iovecs` and `headers` point only into `data` and `iovecs`, heap buffers owned by
// this same value and never resized; moving the value to another thread moves their sole owner with them, and
// nothing else holds these pointers.
unsafe impl Send for RecvBuffers {}

impl RecvBuffers {
    fn new(slot: usize) -> Box<Self> {
        let mut b = Box::new(RecvBuffers {
            data: vec![0u8; slot * RECV_BATCH],
            slot,
            iovecs: Vec::with_capacity(RECV_BATCH),
            headers: Vec::with_capacity(RECV_BATCH),
        });
        let base = b.data.as_mut_ptr();
        for i in 0..RECV_BATCH {
            b.iovecs.push(libc::iovec {
                // SAFETY: `i * slot` is within `data`, which holds `RECV_BATCH * slot` bytes.
                iov_base: unsafe { base.add(i * slot) }.cast(),
                iov_len: slot,
            });
        }
        let iov = b.iovecs.as_mut_ptr();
        for i in 0..RECV_BATCH {
            // SAFETY: an all-zero mmsghdr is a valid header with no name and no control data.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            // SAFETY: `i` is within `iovecs`, which is never resized.
            h.msg_hdr.msg_iov = unsafe { iov.add(i) };
            h.msg_hdr.msg_iovlen = 1;
            b.headers.push(h);
        }
        b
    }

    /// One `recvmmsg(2)`: the number of datagrams read.
    fn recv(&mut self, socket: &Socket, flags: libc::c_int) -> io::Result<usize> {
        // SAFETY: every header points at its own iovec and `slot`-byte region of `data`, all owned by `self` and
        // alive and unmoved for the call; the kernel writes at most `slot` bytes per datagram and sets msg_len.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Datagram `i` of the last call; its length is `slot` when it was longer than `slot - 1`.
    fn datagram(&self, i: usize) -> &[u8] {
        let len = (self.headers[i].msg_len as usize).min(self.slot);
        &self.data[i * self.slot..i * self.slot + len]
    }
}

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
                    ERROR_LOG.log(|| format!("{}: cannot set a read timeout: {e}", self.stats.name));
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
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    ERROR_LOG.log(|| format!("{}: {e}", self.stats.name));
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
            self.stats.oversize.fetch_add(1, Ordering::Relaxed);
            OVERSIZE_LOG.log(|| {
                format!(
                    "{}: a datagram longer than metric_max_length ({} bytes) was dropped whole",
                    self.stats.name, self.max_packet
                )
            });
            return;
        }
        batch.push_packet(datagram);
        batch.packets += 1;
    }
}

/// A datagram socket read by a worker thread itself (`num_readers: 0`): no reader thread and no hand-over, so
/// each datagram is parsed and aggregated by the thread that received it, while it is still in that core's cache.
pub struct Source {
    socket: Socket,
    pub listener: usize,
    pub stats: Arc<ListenerStats>,
    max_packet: usize,
    stop: Arc<AtomicBool>,
    bufs: Box<RecvBuffers>,
}

impl Source {
    /// Datagrams read per call of [`Source::read`] at most.
    pub const BATCH: usize = RECV_BATCH;

    pub(super) fn new(
        socket: Socket,
        listener: usize,
        stats: Arc<ListenerStats>,
        max_packet: usize,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Source {
            socket,
            listener,
            stats,
            // One byte more than the limit per slot, so that a longer datagram is seen as such.
            bufs: RecvBuffers::new(max_packet + 1),
            max_packet,
            stop,
        }
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }

    /// Whether the server is stopping (the worker then drains this socket and drops it).
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Reads what is queued, up to [`RECV_BATCH`] datagrams, without waiting, and hands each datagram that fits
    /// `metric_max_length` to `each` (oversize ones are counted and dropped). Returns the number read.
    pub fn read(&mut self, mut each: impl FnMut(&[u8])) -> usize {
        let n = loop {
            match self.bufs.recv(&self.socket, libc::MSG_DONTWAIT) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_transient(&e) => return 0,
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    ERROR_LOG.log(|| format!("{}: {e}", self.stats.name));
                    return 0;
                }
            }
        };
        let mut bytes = 0;
        for i in 0..n {
            let datagram = self.bufs.datagram(i);
            if datagram.len() > self.max_packet {
                self.stats.oversize.fetch_add(1, Ordering::Relaxed);
                OVERSIZE_LOG.log(|| {
                    format!(
                        "{}: a datagram longer than metric_max_length ({} bytes) was dropped whole",
                        self.stats.name, self.max_packet
                    )
                });
                continue;
            }
            bytes += datagram.len() as u64;
            each(datagram);
        }
        self.stats.packets.fetch_add(n as u64, Ordering::Relaxed);
        self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        n
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
