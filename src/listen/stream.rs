//! Stream listeners: TCP (newline-delimited lines) and unix stream sockets (frames of a 4-byte little-endian
//! length then the packet, as datadog-go writes them). One task per connection; each read's complete lines or
//! frames go on as one batch.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use super::{framing, ListenOptions};
use crate::pipeline::{Ingest, BATCH_BYTES};
use crate::shutdown::stopped;
use crate::telemetry::{LimitedLog, ListenerStats};

static OVERSIZE_LOG: LimitedLog = LimitedLog::new("oversize stream line or frame dropped");
static ACCEPT_LOG: LimitedLog = LimitedLog::new("accept failed");
static LIMIT_LOG: LimitedLog = LimitedLog::new("connection limit");

#[derive(Clone)]
pub(super) struct Context {
    index: usize,
    stats: Arc<ListenerStats>,
    ingest: Ingest,
    max_packet: usize,
    idle_timeout: Duration,
    max_connections: usize,
    stop: watch::Receiver<bool>,
    /// Set when the stop signal is seen: reading continues until then.
    drain_until: Option<tokio::time::Instant>,
}

/// How long a stream connection keeps being read after the stop signal.
const DRAIN_AT_STOP: Duration = Duration::from_secs(1);

impl Context {
    pub fn new(
        index: usize,
        stats: Arc<ListenerStats>,
        ingest: Ingest,
        opts: &ListenOptions,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Context {
            index,
            stats,
            ingest,
            max_packet: opts.max_packet,
            idle_timeout: opts.idle_timeout,
            max_connections: opts.max_connections,
            stop,
            drain_until: None,
        }
    }

    /// The context of a new connection: its own lane, so that all its batches go to one worker.
    fn connection(&self) -> Context {
        Context {
            ingest: self.ingest.lane(),
            ..self.clone()
        }
    }

    fn oversize(&self, what: &str) {
        self.stats.oversize.fetch_add(1, Ordering::Relaxed);
        OVERSIZE_LOG.log(|| {
            format!(
                "{}: a {what} longer than metric_max_length ({} bytes) was dropped",
                self.stats.name, self.max_packet
            )
        });
    }
}

/// A stream listener: TCP or unix.
pub(super) trait Accept: Send + 'static {
    type Conn: AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl std::future::Future<Output = std::io::Result<Self::Conn>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Conn = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<Self::Conn> {
        tokio::net::TcpListener::accept(self).await.map(|(c, _)| c)
    }
}

impl Accept for tokio::net::UnixListener {
    type Conn = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<Self::Conn> {
        tokio::net::UnixListener::accept(self).await.map(|(c, _)| c)
    }
}

/// How a connection's bytes are cut into packets.
#[derive(Clone)]
pub(super) enum Framing {
    /// Newline-delimited lines (TCP).
    Lines,
    /// Newline-delimited lines inside TLS: the handshake first (in the connection's task, bounded by a timeout,
    /// so that a slow or plaintext client holds up no other), then as `Lines`.
    TlsLines(Arc<crate::tls::ReloadingServer>),
    /// 4-byte little-endian length, then the packet (unix stream sockets).
    LengthPrefixed,
}

/// Accepts connections until the stop signal, one task each; then waits for them to hand on what they read.
pub(super) async fn accept<L: Accept>(listener: L, framing: Framing, ctx: Context) {
    let mut stop = ctx.stop.clone();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) if ctx.max_connections > 0 && connections.len() >= ctx.max_connections => {
                    // Closed at once (dropped): the ones already open go on.
                    drop(conn);
                    ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
                    LIMIT_LOG.log(|| {
                        format!(
                            "{}: max_connections ({}) open; a new connection was closed",
                            ctx.stats.name, ctx.max_connections
                        )
                    });
                }
                Ok(conn) => {
                    ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
                    match &framing {
                        Framing::Lines => connections.spawn(read_lines(conn, ctx.connection())),
                        Framing::TlsLines(tls) => connections.spawn(read_tls_lines(conn, tls.clone(), ctx.connection())),
                        Framing::LengthPrefixed => connections.spawn(read_frames(conn, ctx.connection())),
                    };
                }
                Err(e) => {
                    ACCEPT_LOG.log(|| format!("{}: {e}", ctx.stats.name));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Connections notice the stop themselves and hand on what they read.
    while connections.join_next().await.is_some() {}
}

/// The result of one read.
enum Read {
    Data(usize),
    /// The peer closed the connection.
    Eof,
    /// Idle timeout, error, or shutdown with nothing left to read: close.
    Close,
}

/// Reads once, bounded by the idle timeout and the stop signal. Once the server is stopping, what the kernel
/// already holds for this connection is still read (each read waits at most 20 ms, for at most
/// [`DRAIN_AT_STOP`]), so that nothing accepted before the stop is lost.
async fn read_some<R: AsyncRead + Unpin>(conn: &mut R, buf: &mut Vec<u8>, ctx: &mut Context) -> Read {
    if ctx.drain_until.is_none() {
        let stop = &mut ctx.stop;
        tokio::select! {
            _ = stopped(stop) => ctx.drain_until = Some(tokio::time::Instant::now() + DRAIN_AT_STOP),
            r = tokio::time::timeout(ctx.idle_timeout, conn.read_buf(buf)) => return done(r, &ctx.stats),
        }
    }
    // Stopping: read what is already there, 20 ms at a time, for at most DRAIN_AT_STOP (a client that keeps
    // sending must not hold the shutdown).
    let until = ctx.drain_until.unwrap_or_else(tokio::time::Instant::now);
    if tokio::time::Instant::now() >= until {
        return Read::Close;
    }
    match tokio::time::timeout(Duration::from_millis(20), conn.read_buf(buf)).await {
        Ok(Ok(n)) if n > 0 => Read::Data(n),
        Ok(Ok(_)) => Read::Eof,
        _ => Read::Close,
    }
}

fn done(r: Result<std::io::Result<usize>, tokio::time::error::Elapsed>, stats: &ListenerStats) -> Read {
    match r {
        Ok(Ok(0)) => Read::Eof,
        Ok(Ok(n)) => Read::Data(n),
        Err(_) => Read::Close,
        Ok(Err(_)) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            Read::Close
        }
    }
}

/// A TLS connection: its handshake, then its lines. A failed handshake is counted
/// (`harrier.listener.tls_handshake_errors{listener}`) and the connection closed.
async fn read_tls_lines<R>(conn: R, tls: Arc<crate::tls::ReloadingServer>, ctx: Context)
where
    R: AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut stop = ctx.stop.clone();
    let stream = tokio::select! {
        _ = stopped(&mut stop) => return,
        s = tls.handshake(conn) => s,
    };
    match stream {
        Ok(stream) => read_lines(stream, ctx).await,
        Err(_) => {
            ctx.stats.tls_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Newline-delimited lines. A line longer than the limit is dropped (up to its newline) and counted; the
/// connection stays open. Bad lines are the parser's business: they are counted and the connection stays open.
async fn read_lines<R: AsyncRead + Unpin>(mut conn: R, mut ctx: Context) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut framer = framing::Lines::new(ctx.max_packet);
    let mut eof = false;
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        let n = match read_some(&mut conn, &mut buf, &mut ctx).await {
            Read::Data(n) => n,
            Read::Eof => {
                eof = true;
                break;
            }
            Read::Close => break,
        };
        ctx.stats.packets.fetch_add(1, Ordering::Relaxed);
        ctx.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let mut batch = ctx.ingest.batch(ctx.index);
        let mut start = 0;
        loop {
            framer.cut(&buf, &mut start, |line| {
                batch.push_packet(line);
                batch.data.len() < BATCH_BYTES
            });
            if batch.data.len() < BATCH_BYTES {
                break;
            }
            let full = std::mem::replace(&mut batch, ctx.ingest.batch(ctx.index));
            if !ctx.ingest.send(full).await {
                return;
            }
        }
        buf.drain(..start);
        if framer.drop_partial(buf.len()) {
            // The line in progress is already too long: dropped with everything up to its newline.
            buf.clear();
        }
        for _ in 0..framer.take_oversize() {
            ctx.oversize("line");
        }
        if !ctx.ingest.send(batch).await {
            return;
        }
    }
    // A last line without its newline still counts when the client closed, as in the agent (not when the
    // connection is cut, where it may be a fragment).
    if let Some(last) = framer.last(&buf).filter(|_| eof) {
        let mut batch = ctx.ingest.batch(ctx.index);
        batch.push_packet(last);
        ctx.ingest.send(batch).await;
    }
}

/// Length-prefixed frames. A frame longer than the limit closes the connection (the agent does the same).
async fn read_frames<R: AsyncRead + Unpin>(mut conn: R, mut ctx: Context) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        let Read::Data(n) = read_some(&mut conn, &mut buf, &mut ctx).await else {
            break;
        };
        ctx.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let mut batch = ctx.ingest.batch(ctx.index);
        let mut start = 0;
        let stats = &ctx.stats;
        let cut = framing::cut_frames(&buf, &mut start, ctx.max_packet, |frame| {
            stats.packets.fetch_add(1, Ordering::Relaxed);
            batch.push_packet(frame);
        });
        let close = cut.is_err();
        if close {
            ctx.oversize("frame");
        }
        buf.drain(..start);
        if !ctx.ingest.send(batch).await || close {
            return;
        }
    }
}
