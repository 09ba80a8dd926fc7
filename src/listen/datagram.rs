//! UDP and unix datagram readers: one thread per socket. Each wait for the first datagram blocks (with a 100 ms
//! timeout to notice shutdown); then the socket is drained without blocking into one batch, which is handed on
//! as soon as the socket is empty or the batch is full.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

/// One `recv(2)` into `buf`. Returns the datagram's length, which is `buf.len()` when it was longer.
fn recv(socket: &Socket, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable slice for the whole call, and the kernel writes at most `buf.len()`
    // bytes into it; the descriptor is owned by `socket`, which outlives the call.
    let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl Reader {
    pub fn run(self) {
        if let Err(e) = self.socket.set_read_timeout(Some(Duration::from_millis(100))) {
            ERROR_LOG.log(|| format!("{}: cannot set a read timeout: {e}", self.stats.name));
        }
        // One byte more than the limit, so that a longer datagram is seen as such and never truncated.
        let mut buf = vec![0u8; self.max_packet + 1];
        let mut batch = self.ingest.batch(self.index);
        while !self.stop.load(Ordering::Relaxed) {
            match recv(&self.socket, &mut buf, 0) {
                Ok(n) => self.take(&buf[..n], &mut batch),
                Err(e) => {
                    if !is_transient(&e) {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                        ERROR_LOG.log(|| format!("{}: {e}", self.stats.name));
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    continue;
                }
            }
            // Drain what is already queued without blocking.
            loop {
                match recv(&self.socket, &mut buf, libc::MSG_DONTWAIT) {
                    Ok(n) => self.take(&buf[..n], &mut batch),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
                if batch.data.len() >= BATCH_BYTES {
                    let full = std::mem::replace(&mut batch, self.ingest.batch(self.index));
                    if !self.ingest.send_blocking(full) {
                        return;
                    }
                }
            }
            let full = std::mem::replace(&mut batch, self.ingest.batch(self.index));
            if !self.ingest.send_blocking(full) {
                return;
            }
        }
        // Shutdown: whatever is still queued in the socket is read and handed on.
        while let Ok(n) = recv(&self.socket, &mut buf, libc::MSG_DONTWAIT) {
            self.take(&buf[..n], &mut batch);
            if batch.data.len() >= BATCH_BYTES {
                let full = std::mem::replace(&mut batch, self.ingest.batch(self.index));
                self.ingest.send_blocking(full);
            }
        }
        self.ingest.send_blocking(batch);
    }

    #[inline]
    fn take(&self, datagram: &[u8], batch: &mut crate::pipeline::Batch) {
        if datagram.len() > self.max_packet {
            self.stats.packets.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes.fetch_add(datagram.len() as u64, Ordering::Relaxed);
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

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
