//! Reading datagram sockets with `recvmmsg`, up to [`RECV_BATCH`] datagrams per system call: the buffers a reader
//! thread (`listen`) and a worker reading its own socket ([`Source`]) both use.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use socket2::Socket;

use crate::telemetry::{LimitedLog, ListenerStats};

static OVERSIZE_LOG: LimitedLog = LimitedLog::new("oversize datagram dropped");
static ERROR_LOG: LimitedLog = LimitedLog::new("datagram socket error");

/// Counts a datagram longer than `metric_max_length` (dropped whole) and logs it at a limited rate.
pub(crate) fn oversize(stats: &ListenerStats, max_packet: usize) {
    stats.oversize.fetch_add(1, Ordering::Relaxed);
    OVERSIZE_LOG.log(|| {
        format!(
            "{}: a datagram longer than metric_max_length ({max_packet} bytes) was dropped whole",
            stats.name
        )
    });
}

/// Counts a socket error and logs it at a limited rate.
pub(crate) fn socket_error(stats: &ListenerStats, e: &io::Error) {
    stats.errors.fetch_add(1, Ordering::Relaxed);
    ERROR_LOG.log(|| format!("{}: {e}", stats.name));
}

/// Datagrams read per `recvmmsg` call.
pub const RECV_BATCH: usize = 32;

/// Receive buffers for `recvmmsg`: `RECV_BATCH` slots of `slot` bytes, with their iovecs and headers. The headers
/// point into the buffers, so neither is ever resized after construction.
pub(crate) struct RecvBuffers {
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
    pub(crate) fn new(slot: usize) -> Box<Self> {
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
    pub(crate) fn recv(&mut self, socket: &Socket, flags: libc::c_int) -> io::Result<usize> {
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
    pub(crate) fn datagram(&self, i: usize) -> &[u8] {
        let len = (self.headers[i].msg_len as usize).min(self.slot);
        &self.data[i * self.slot..i * self.slot + len]
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

    pub fn new(
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
                    socket_error(&self.stats, &e);
                    return 0;
                }
            }
        };
        let mut bytes = 0;
        for i in 0..n {
            let datagram = self.bufs.datagram(i);
            if datagram.len() > self.max_packet {
                oversize(&self.stats, self.max_packet);
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

/// An error that only means nothing was there (a timeout, a signal).
pub(crate) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
