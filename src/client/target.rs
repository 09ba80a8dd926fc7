//! Where `harrier emit` sends (`--to`), and the sending itself.

use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use super::error::{invalid, UsageError};

/// Which addresses a host name may resolve to (`udp4://`, `tcp6://`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// Any: IPv4 first when there are both.
    #[default]
    Any,
    V4,
    V6,
}

impl Family {
    fn suffix(self) -> &'static str {
        match self {
            Family::Any => "",
            Family::V4 => "4",
            Family::V6 => "6",
        }
    }
}

/// A unix socket: a file, or a name in Linux's abstract namespace (`@name`, no file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketName {
    Path(PathBuf),
    Abstract(String),
}

impl fmt::Display for SocketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketName::Path(p) => write!(f, "//{}", p.display()),
            SocketName::Abstract(name) => write!(f, "@{name}"),
        }
    }
}

/// A destination of `--to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `host:port`, resolved when sending.
    Udp(String, Family),
    /// `host:port`, newline-delimited lines.
    Tcp(String, Family),
    /// A unix datagram socket.
    Unixgram(SocketName),
    /// A unix stream socket, each packet framed by its length as a 4-byte little-endian integer.
    Unix(SocketName),
}

impl Target {
    /// Parses the forms `statsd_listen_addresses` takes (without `tls://`): `udp://host:port`, `tcp://host:port`
    /// (`udp4`, `udp6`, `tcp4`, `tcp6` pick the family), `unixgram:///path`, `unixgram:path`, `unixgram:@name`
    /// (a Linux abstract socket) and the same for `unix:`, or a bare `host:port` (UDP, as veneur-emit's
    /// `-hostport`). An empty host (`udp://:8125`, as a listener is often written) means this host. Host names are
    /// resolved when sending.
    pub fn parse(url: &str) -> Result<Target, UsageError> {
        let bad = |reason: &str| invalid("--to", url, reason);
        let known = [
            "udp",
            "udp4",
            "udp6",
            "tcp",
            "tcp4",
            "tcp6",
            "unixgram",
            "unix",
            "tls",
            "unixpacket",
        ];
        let (scheme, rest) = match url.split_once(':') {
            Some((scheme, rest)) if known.contains(&scheme.to_ascii_lowercase().as_str()) => {
                (scheme.to_ascii_lowercase(), rest)
            }
            Some((scheme, rest)) if rest.starts_with("//") => {
                return Err(bad(&format!(
                    "unknown scheme {scheme:?} (expected udp://, tcp://, unixgram:// or unix://)"
                )))
            }
            // `host:port`, `[::1]:8125`.
            _ => ("udp".to_string(), url),
        };
        let authority = rest.strip_prefix("//");
        let host_port = |family: Family| -> Result<String, UsageError> {
            let rest = match authority {
                Some(a) => a,
                // A bare `host:port`.
                None if rest == url => rest,
                None => return Err(bad(&format!("expected {scheme}://HOST:PORT"))),
            };
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| bad("expected HOST:PORT, e.g. udp://127.0.0.1:8125"))?;
            match port.parse::<u16>() {
                Ok(p) if p > 0 => {}
                _ => return Err(bad("the port is not a number from 1 to 65535")),
            }
            Ok(match (host, family) {
                ("" | "[]", Family::V6) => format!("[::1]:{port}"),
                ("" | "[]", _) => format!("127.0.0.1:{port}"),
                _ => rest.to_string(),
            })
        };
        // The listener's rule for a socket name, so that `--to` takes what `statsd_listen_addresses` takes.
        let socket = || match crate::config::unix_name(authority.unwrap_or(rest)) {
            Ok(Ok(path)) => Ok(SocketName::Path(path)),
            Ok(Err(name)) => Ok(SocketName::Abstract(name)),
            Err(reason) => Err(bad(&reason)),
        };
        match scheme.as_str() {
            "udp" => host_port(Family::Any).map(|a| Target::Udp(a, Family::Any)),
            "udp4" => host_port(Family::V4).map(|a| Target::Udp(a, Family::V4)),
            "udp6" => host_port(Family::V6).map(|a| Target::Udp(a, Family::V6)),
            "tcp" => host_port(Family::Any).map(|a| Target::Tcp(a, Family::Any)),
            "tcp4" => host_port(Family::V4).map(|a| Target::Tcp(a, Family::V4)),
            "tcp6" => host_port(Family::V6).map(|a| Target::Tcp(a, Family::V6)),
            "unixgram" => socket().map(Target::Unixgram),
            "unix" => socket().map(Target::Unix),
            "tls" => Err(bad(
                "tls:// is not supported by harrier emit (use tcp://, udp:// or a unix socket)",
            )),
            _ => Err(bad("unixpacket sockets are not supported (use unixgram: or unix:)")),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Udp(a, family) => write!(f, "udp{}://{a}", family.suffix()),
            Target::Tcp(a, family) => write!(f, "tcp{}://{a}", family.suffix()),
            Target::Unixgram(name) => write!(f, "unixgram:{name}"),
            Target::Unix(name) => write!(f, "unix:{name}"),
        }
    }
}

/// The addresses of `addr` in `family`, IPv4 first (as Go dials `udp` and `tcp`).
pub(crate) fn resolve(addr: &str, family: Family) -> io::Result<Vec<SocketAddr>> {
    let mut all: Vec<SocketAddr> = addr
        .to_socket_addrs()?
        .filter(|a| match family {
            Family::Any => true,
            Family::V4 => a.is_ipv4(),
            Family::V6 => a.is_ipv6(),
        })
        .collect();
    all.sort_by_key(|a| a.is_ipv6());
    if all.is_empty() {
        let which = match family {
            Family::Any => "",
            Family::V4 => " IPv4",
            Family::V6 => " IPv6",
        };
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} resolves to no{which} address"),
        ));
    }
    Ok(all)
}

/// The socket address of a unix socket name.
pub(crate) fn unix_address(name: &SocketName) -> io::Result<UnixAddr> {
    match name {
        SocketName::Path(p) => UnixAddr::from_pathname(p),
        #[cfg(target_os = "linux")]
        SocketName::Abstract(n) => {
            use std::os::linux::net::SocketAddrExt;
            UnixAddr::from_abstract_name(n.as_bytes())
        }
        #[cfg(not(target_os = "linux"))]
        SocketName::Abstract(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "abstract unix sockets (`@name`) exist on Linux only",
        )),
    }
}

/// Sends one line (a newline is added) to `target`: one datagram, or one write on a new connection (a frame
/// with its length on a unix stream), each step bounded by `timeout`.
pub fn send(target: &Target, line: &str, timeout: Duration) -> io::Result<()> {
    let mut packet = String::with_capacity(line.len() + 1);
    packet.push_str(line);
    packet.push('\n');
    let packet = packet.as_bytes();
    match target {
        Target::Udp(addr, family) => {
            // The first address is used: a datagram to an address with no listener is not an error anyway.
            let a = resolve(addr, *family)?[0];
            let local = if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let sock = UdpSocket::bind(local)?;
            sock.set_write_timeout(Some(timeout))?;
            sock.send_to(packet, a).map(|_| ())
        }
        Target::Tcp(addr, family) => {
            let mut last = None;
            for a in resolve(addr, *family)? {
                match TcpStream::connect_timeout(&a, timeout) {
                    Ok(mut conn) => {
                        conn.set_write_timeout(Some(timeout))?;
                        conn.write_all(packet)?;
                        conn.flush()?;
                        return conn.shutdown(std::net::Shutdown::Write);
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| io::Error::other("no address")))
        }
        Target::Unixgram(name) => {
            let sock = UnixDatagram::unbound()?;
            sock.set_write_timeout(Some(timeout))?;
            sock.send_to_addr(packet, &unix_address(name)?).map(|_| ())
        }
        Target::Unix(name) => {
            let len = u32::try_from(packet.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the line is too long for one frame"))?;
            let mut conn = UnixStream::connect_addr(&unix_address(name)?)?;
            conn.set_write_timeout(Some(timeout))?;
            let mut frame = Vec::with_capacity(4 + packet.len());
            frame.extend_from_slice(&len.to_le_bytes());
            frame.extend_from_slice(packet);
            conn.write_all(&frame)?;
            conn.flush()?;
            conn.shutdown(std::net::Shutdown::Write)
        }
    }
}
