//! `statsd_listen_addresses`: the listener URLs and their parsing.
//!
//! The forms are Veneur's (`protocol.ResolveAddr`, Go's `net/url` and `net`): `udp://host:port`,
//! `tcp://host:port` (also `udp4`/`udp6`/`tcp4`/`tcp6`, which pick that family when the host resolves to
//! several), IPv6 in brackets (`udp://[::1]:8125`), an empty host for every address (`udp://:8125`),
//! `unixgram:///path` or `unixgram:path`, and `unixgram:@name` for a Linux abstract socket (the socket address
//! is a NUL byte followed by `name`; there is no file). `unix:` takes the same forms as `unixgram:` (Harrier's
//! length-prefixed stream socket), and `tls://host:port` is Harrier's own.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// A parsed entry of `statsd_listen_addresses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    Udp(SocketAddr),
    Tcp(SocketAddr),
    /// TCP with TLS (`statsd_tls`), newline-delimited like `Tcp`.
    Tls(SocketAddr),
    /// Unix datagram socket.
    Unixgram(PathBuf),
    /// Unix datagram socket in Linux's abstract namespace (`unixgram:@name`; the name without the `@`).
    UnixgramAbstract(String),
    /// Unix stream socket with length-prefixed frames.
    Unix(PathBuf),
    /// Unix stream socket in Linux's abstract namespace (`unix:@name`; the name without the `@`).
    UnixAbstract(String),
}

/// Which addresses a host name may resolve to.
#[derive(Clone, Copy)]
enum Family {
    /// Either; IPv4 first when there are both (as Go resolves `udp`/`tcp`).
    Any,
    V4,
    V6,
}

/// `host:port`, resolved; an empty host is every address of the family.
fn socket(rest: &str, family: Family) -> Result<SocketAddr, String> {
    if rest.is_empty() {
        return Err("the address is empty (expected host:port)".to_string());
    }
    if let Some(port) = rest.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| format!("{port:?} is not a port number"))?;
        let ip = match family {
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            Family::Any | Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        return Ok(SocketAddr::new(ip, port));
    }
    let all: Vec<SocketAddr> = rest
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {rest:?}: {e}"))?
        .collect();
    let pick = match family {
        Family::Any => all.iter().find(|a| a.is_ipv4()).or(all.first()),
        Family::V4 => all.iter().find(|a| a.is_ipv4()),
        Family::V6 => all.iter().find(|a| a.is_ipv6()),
    };
    pick.copied().ok_or_else(|| match family {
        Family::Any => format!("{rest:?} resolves to no address"),
        Family::V4 => format!("{rest:?} resolves to no IPv4 address"),
        Family::V6 => format!("{rest:?} resolves to no IPv6 address"),
    })
}

/// A unix socket's name: a path, or `@name` for an abstract socket (`Err(name)` here). Also what `harrier emit
/// --to` takes after `unixgram:` and `unix:`.
pub fn unix_name(rest: &str) -> Result<Result<PathBuf, String>, String> {
    if let Some(name) = rest.strip_prefix('@') {
        if name.is_empty() {
            return Err("the abstract socket name after `@` is empty".to_string());
        }
        if name.contains('\0') {
            return Err("the abstract socket name contains a NUL byte".to_string());
        }
        if name.len() > 107 {
            return Err(format!(
                "the abstract socket name is {} bytes long (at most 107)",
                name.len()
            ));
        }
        return Ok(Err(name.to_string()));
    }
    if rest.is_empty() {
        Err("the socket path is empty".to_string())
    } else {
        Ok(Ok(PathBuf::from(rest)))
    }
}

impl ListenAddress {
    /// Parses one entry of `statsd_listen_addresses` (the forms are in the module's documentation).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url.split_once(':').ok_or_else(|| {
            "expected scheme://address (udp://host:port, tcp://host:port, unixgram:///path or unixgram:@name)"
                .to_string()
        })?;
        let scheme = scheme.to_ascii_lowercase();
        // `scheme://…` or, for unix sockets, Go's opaque form `scheme:…` (`unixgram:@name`, `unixgram:path`).
        let authority = rest.strip_prefix("//");
        let ip = |family| -> Result<SocketAddr, String> {
            let rest = authority.ok_or_else(|| format!("expected {scheme}://host:port"))?;
            socket(rest, family)
        };
        let unix = || unix_name(authority.unwrap_or(rest));
        match scheme.as_str() {
            "udp" => ip(Family::Any).map(ListenAddress::Udp),
            "udp4" => ip(Family::V4).map(ListenAddress::Udp),
            "udp6" => ip(Family::V6).map(ListenAddress::Udp),
            "tcp" => ip(Family::Any).map(ListenAddress::Tcp),
            "tcp4" => ip(Family::V4).map(ListenAddress::Tcp),
            "tcp6" => ip(Family::V6).map(ListenAddress::Tcp),
            "tls" => ip(Family::Any).map(ListenAddress::Tls),
            "unixgram" => Ok(match unix()? {
                Ok(path) => ListenAddress::Unixgram(path),
                Err(name) => ListenAddress::UnixgramAbstract(name),
            }),
            "unix" => Ok(match unix()? {
                Ok(path) => ListenAddress::Unix(path),
                Err(name) => ListenAddress::UnixAbstract(name),
            }),
            "unixpacket" => Err("unixpacket sockets are not supported (use unixgram or unix)".to_string()),
            other => Err(format!(
                "unknown scheme {other:?} (expected udp, tcp, tls, unixgram or unix)"
            )),
        }
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Udp(a) => write!(f, "udp://{a}"),
            ListenAddress::Tls(a) => write!(f, "tls://{a}"),
            ListenAddress::Tcp(a) => write!(f, "tcp://{a}"),
            ListenAddress::Unixgram(p) => write!(f, "unixgram://{}", p.display()),
            ListenAddress::UnixgramAbstract(name) => write!(f, "unixgram:@{name}"),
            ListenAddress::Unix(p) => write!(f, "unix://{}", p.display()),
            ListenAddress::UnixAbstract(name) => write!(f, "unix:@{name}"),
        }
    }
}
