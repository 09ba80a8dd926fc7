//! Listeners: sockets → pooled batches of raw packets, handed to the parse workers; or, for a datagram listener
//! with `num_readers: 0`, its socket handed to a worker that reads it itself ([`Source`]). Nothing here parses.
//!
//! Binding happens before anything runs, so a bad address fails start-up with an error naming it, and a port
//! of 0 is resolved to the port the OS chose (tests read it from [`BoundListener::address`]).

mod datagram;
pub mod framing;
mod stream;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tokio::sync::watch;

use crate::config::ListenAddress;
use crate::pipeline::{Ingest, Source};
use crate::telemetry::ListenerStats;

/// A listener could not be bound.
#[derive(Debug, Error)]
#[error("cannot listen on {address} (config key `statsd_listen_addresses`): {source}")]
pub struct ListenError {
    pub address: String,
    #[source]
    pub source: io::Error,
}

/// Settings shared by every listener.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Reader threads per datagram listener; 0: the workers read the sockets themselves (one each).
    pub num_readers: usize,
    pub num_workers: usize,
    pub read_buffer_size: usize,
    pub max_packet: usize,
    pub idle_timeout: Duration,
    /// Most connections open at once per stream listener (0: no limit).
    pub max_connections: usize,
    /// The identity of `tls://` listeners (`statsd_tls`).
    pub tls: Option<Arc<crate::tls::ReloadingServer>>,
}

impl ListenOptions {
    /// Sockets per datagram listener: one per reader thread, or a single one when a worker reads it. Only
    /// several sockets need SO_REUSEPORT, which would also let another process of the same user bind the port and
    /// silently take part of the traffic; so the default (a worker reads) never sets it.
    fn datagram_sockets(&self) -> usize {
        self.num_readers.max(1)
    }
}

enum Sockets {
    /// UDP or unix datagram sockets: one reader thread each, or one per worker.
    Datagram(Vec<Socket>),
    Tcp(std::net::TcpListener),
    Tls(std::net::TcpListener),
    /// A stream listener, and its socket file to remove at stop (none for an abstract socket).
    Unix(std::os::unix::net::UnixListener, Option<PathBuf>),
}

/// A bound, not yet running listener.
pub struct BoundListener {
    /// The address actually bound (port 0 resolved).
    pub address: ListenAddress,
    sockets: Sockets,
}

impl BoundListener {
    /// The sockets of this listener that workers read themselves (a datagram listener with `num_readers: 0`), or
    /// `None` when it hands batches to the workers (reader threads, stream connections).
    fn worker_sockets(&self, opts: &ListenOptions) -> Option<usize> {
        match &self.sockets {
            Sockets::Datagram(sockets) if opts.num_readers == 0 => Some(sockets.len()),
            _ => None,
        }
    }
}

/// The number of workers to start: `num_workers` when set; for `0` (the default), fitted to the work and to the
/// cores this process may run on (`sched_getaffinity`, so one under `taskset -c 0`). When every listener is a
/// datagram socket read by a worker, one worker per socket (capped by the cores): a second worker would have
/// nothing to read, and its only effect would be to cost a core the sending application could use. With reader
/// threads, stream listeners or imports from other instances (`imports`: a global), one worker per core, as batches
/// and imports spread over them.
pub fn fitted_workers(bound: &[BoundListener], opts: &ListenOptions, imports: bool) -> usize {
    if opts.num_workers > 0 {
        return opts.num_workers;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if imports {
        return cores;
    }
    let mut sockets = 0;
    for b in bound {
        match b.worker_sockets(opts) {
            Some(n) => sockets += n,
            None => return cores,
        }
    }
    sockets.clamp(1, cores)
}

/// Binds one configured address.
pub fn bind(address: &ListenAddress, opts: &ListenOptions) -> Result<BoundListener, ListenError> {
    let err = |source| ListenError {
        address: address.to_string(),
        source,
    };
    match address {
        ListenAddress::Udp(addr) => {
            let mut sockets = Vec::with_capacity(opts.datagram_sockets());
            let mut bound = *addr;
            for _ in 0..opts.datagram_sockets() {
                let s = udp_socket(bound, opts).map_err(err)?;
                if let Some(a) = s.local_addr().map_err(err)?.as_socket() {
                    bound = a;
                }
                sockets.push(s);
            }
            Ok(BoundListener {
                address: ListenAddress::Udp(bound),
                sockets: Sockets::Datagram(sockets),
            })
        }
        ListenAddress::Unixgram(_) | ListenAddress::UnixgramAbstract(_) => {
            let sock = match address {
                ListenAddress::Unixgram(path) => {
                    remove_stale_socket(path).map_err(err)?;
                    let sock = std::os::unix::net::UnixDatagram::bind(path).map_err(err)?;
                    allow_every_sender(path).map_err(err)?;
                    sock
                }
                // An abstract socket has no file: nothing stale to remove, no permissions to set (any process
                // in the network namespace may send to it, as with the 0666 file).
                _ => {
                    let name = abstract_address(address).map_err(err)?;
                    std::os::unix::net::UnixDatagram::bind_addr(&name).map_err(err)?
                }
            };
            let sock = Socket::from(std::os::fd::OwnedFd::from(sock));
            set_receive_buffer(&sock, opts.read_buffer_size);
            let mut sockets = vec![sock];
            for _ in 1..opts.datagram_sockets() {
                sockets.push(sockets[0].try_clone().map_err(err)?);
            }
            Ok(BoundListener {
                address: address.clone(),
                sockets: Sockets::Datagram(sockets),
            })
        }
        ListenAddress::Tcp(addr) | ListenAddress::Tls(addr) => {
            let l = std::net::TcpListener::bind(addr).map_err(err)?;
            l.set_nonblocking(true).map_err(err)?;
            let bound = l.local_addr().map_err(err)?;
            Ok(match address {
                ListenAddress::Tls(_) => BoundListener {
                    address: ListenAddress::Tls(bound),
                    sockets: Sockets::Tls(l),
                },
                _ => BoundListener {
                    address: ListenAddress::Tcp(bound),
                    sockets: Sockets::Tcp(l),
                },
            })
        }
        ListenAddress::Unix(path) => {
            remove_stale_socket(path).map_err(err)?;
            let l = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
            allow_every_sender(path).map_err(err)?;
            l.set_nonblocking(true).map_err(err)?;
            Ok(BoundListener {
                address: address.clone(),
                sockets: Sockets::Unix(l, Some(path.clone())),
            })
        }
        ListenAddress::UnixAbstract(_) => {
            let name = abstract_address(address).map_err(err)?;
            let l = std::os::unix::net::UnixListener::bind_addr(&name).map_err(err)?;
            l.set_nonblocking(true).map_err(err)?;
            Ok(BoundListener {
                address: address.clone(),
                sockets: Sockets::Unix(l, None),
            })
        }
    }
}

/// The socket address of `unixgram:@name` or `unix:@name`: a NUL byte, then the name (Linux only).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_address(address: &ListenAddress) -> io::Result<std::os::unix::net::SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    match address {
        ListenAddress::UnixgramAbstract(name) | ListenAddress::UnixAbstract(name) => {
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an abstract socket address",
        )),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_address(_: &ListenAddress) -> io::Result<std::os::unix::net::SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets (`@name`) exist on Linux only",
    ))
}

fn udp_socket(addr: SocketAddr, opts: &ListenOptions) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if opts.datagram_sockets() > 1 {
        s.set_reuse_port(true)?;
    }
    set_receive_buffer(&s, opts.read_buffer_size);
    s.bind(&addr.into())?;
    Ok(s)
}

/// Sets SO_RCVBUF to `bytes`. The kernel caps it at `net.core.rmem_max`; a process allowed to (CAP_NET_ADMIN)
/// then sets it with SO_RCVBUFFORCE, since the operator asked for that size. Otherwise the smaller buffer is kept
/// and a warning names the sysctl: it is not a reason to refuse to start.
fn set_receive_buffer(s: &Socket, bytes: usize) {
    let _ = s.set_recv_buffer_size(bytes);
    // Linux reports twice the size set (the other half is its bookkeeping).
    if s.recv_buffer_size().unwrap_or(0) >= bytes.saturating_mul(2) {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: passes a pointer to a live c_int and its size; the descriptor is owned by `s`.
        let forced = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if forced == 0 {
            return;
        }
    }
    tracing::warn!(
        "read_buffer_size_bytes is {bytes} but the kernel gave {} (raise net.core.rmem_max to allow it)",
        s.recv_buffer_size().unwrap_or(0) / 2
    );
}

/// Services on the host run as other users: like Veneur, the socket is made writable by everyone (0666).
fn allow_every_sender(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
}

/// A socket file left by a previous run is replaced; any other file at the path is an error.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A running listener: reader threads or an accept task.
pub enum Running {
    Threads(Vec<std::thread::JoinHandle<()>>),
    /// Sockets handed to the workers, which drain them at stop (before answering the pipeline's sync).
    Attached,
    Task(tokio::task::JoinHandle<()>),
}

/// How listeners learn to stop.
#[derive(Clone)]
pub struct Stop {
    /// For reader threads (checked at least every 100 ms).
    pub flag: Arc<AtomicBool>,
    /// For async tasks.
    pub signal: watch::Receiver<bool>,
}

impl BoundListener {
    /// Starts reading. Must be called inside the tokio runtime.
    pub fn start(
        self,
        index: usize,
        stats: Arc<ListenerStats>,
        ingest: Ingest,
        opts: &ListenOptions,
        stop: Stop,
    ) -> io::Result<Running> {
        match self.sockets {
            Sockets::Datagram(sockets) if opts.num_readers == 0 => {
                // The listener's socket is read by one worker; several listeners spread over the workers.
                for socket in sockets {
                    let source = Source::new(socket, index, stats.clone(), opts.max_packet, stop.flag.clone());
                    ingest.attach(index, source);
                }
                Ok(Running::Attached)
            }
            Sockets::Datagram(sockets) => {
                let mut threads = Vec::with_capacity(sockets.len());
                for (i, socket) in sockets.into_iter().enumerate() {
                    let reader = datagram::Reader {
                        socket,
                        index,
                        stats: stats.clone(),
                        // Each reader on its own lane: a sender's datagrams (kept on one socket by the kernel's
                        // SO_REUSEPORT hash) stay on one worker.
                        ingest: ingest.lane(),
                        max_packet: opts.max_packet,
                        stop: stop.flag.clone(),
                    };
                    threads.push(
                        std::thread::Builder::new()
                            .name(format!("harrier-read-{index}-{i}"))
                            .spawn(move || reader.run())?,
                    );
                }
                Ok(Running::Threads(threads))
            }
            Sockets::Tcp(l) => {
                let l = tokio::net::TcpListener::from_std(l)?;
                let ctx = stream::Context::new(index, stats, ingest, opts, stop.signal);
                Ok(Running::Task(tokio::spawn(stream::accept(
                    l,
                    stream::Framing::Lines,
                    ctx,
                ))))
            }
            Sockets::Tls(l) => {
                let l = tokio::net::TcpListener::from_std(l)?;
                let tls = opts
                    .tls
                    .clone()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a tls:// listener needs statsd_tls"))?;
                let ctx = stream::Context::new(index, stats, ingest, opts, stop.signal);
                Ok(Running::Task(tokio::spawn(stream::accept(
                    l,
                    stream::Framing::TlsLines(tls),
                    ctx,
                ))))
            }
            Sockets::Unix(l, path) => {
                let l = tokio::net::UnixListener::from_std(l)?;
                let ctx = stream::Context::new(index, stats, ingest, opts, stop.signal);
                Ok(Running::Task(tokio::spawn(async move {
                    stream::accept(l, stream::Framing::LengthPrefixed, ctx).await;
                    if let Some(path) = path {
                        let _ = std::fs::remove_file(path);
                    }
                })))
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram, UnixStream};

    fn opts() -> ListenOptions {
        ListenOptions {
            num_readers: 0,
            num_workers: 1,
            read_buffer_size: 64 * 1024,
            max_packet: 8192,
            idle_timeout: Duration::from_secs(1),
            max_connections: 0,
            tls: None,
        }
    }

    fn unique(tag: &str) -> String {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        format!(
            "harrier-listen-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    #[test]
    fn listen_binds_an_abstract_unixgram_socket_without_a_file() {
        let name = unique("dgram");
        let address = ListenAddress::parse(&format!("unixgram:@{name}")).unwrap();
        let bound = bind(&address, &opts()).unwrap();
        assert_eq!(bound.address, address);
        assert_eq!(bound.address.to_string(), format!("unixgram:@{name}"));
        assert!(!std::path::Path::new(&format!("@{name}")).exists(), "no file is made");
        let Sockets::Datagram(sockets) = &bound.sockets else {
            panic!("not a datagram listener")
        };
        let to = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
        UnixDatagram::unbound().unwrap().send_to_addr(b"a:1|c", &to).unwrap();
        let mut buf = [std::mem::MaybeUninit::new(0u8); 64];
        let n = sockets[0].recv(&mut buf).unwrap();
        // SAFETY: recv initialised the first `n` bytes.
        let got: Vec<u8> = buf[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
        assert_eq!(got, b"a:1|c");
        // The name is taken while the listener lives, like a port.
        let again = bind(&address, &opts()).err().expect("the name is in use");
        assert_eq!(again.source.kind(), io::ErrorKind::AddrInUse);
        assert!(again.to_string().contains(&format!("unixgram:@{name}")), "{again}");
        drop(bound);
        bind(&address, &opts()).expect("free again once closed");
    }

    #[test]
    fn listen_binds_an_abstract_unix_stream_socket_without_a_file() {
        let name = unique("stream");
        let bound = bind(&ListenAddress::UnixAbstract(name.clone()), &opts()).unwrap();
        let Sockets::Unix(listener, path) = &bound.sockets else {
            panic!("not a stream listener")
        };
        assert!(path.is_none(), "nothing to remove at stop");
        let to = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
        let _client = UnixStream::connect_addr(&to).unwrap();
        listener.set_nonblocking(false).unwrap();
        listener.accept().expect("the connection arrives");
    }
}
