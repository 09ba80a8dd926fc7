//! `statsd_listen_addresses`: the listener URLs and their parsing.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
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
    /// Unix stream socket with length-prefixed frames.
    Unix(PathBuf),
}

impl ListenAddress {
    /// Parses `udp://host:port`, `tcp://host:port`, `tls://host:port`, `unixgram:///path` or `unix:///path`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| "expected scheme://address, e.g. udp://127.0.0.1:8125".to_string())?;
        let socket = |rest: &str| -> Result<SocketAddr, String> {
            rest.to_socket_addrs()
                .map_err(|e| format!("cannot resolve {rest:?}: {e}"))?
                .next()
                .ok_or_else(|| format!("{rest:?} resolves to no address"))
        };
        let path = |rest: &str| -> Result<PathBuf, String> {
            if rest.is_empty() {
                Err("the socket path is empty".to_string())
            } else {
                Ok(PathBuf::from(rest))
            }
        };
        match scheme {
            "udp" => socket(rest).map(ListenAddress::Udp),
            "tcp" => socket(rest).map(ListenAddress::Tcp),
            "tls" => socket(rest).map(ListenAddress::Tls),
            "unixgram" => path(rest).map(ListenAddress::Unixgram),
            "unix" => path(rest).map(ListenAddress::Unix),
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
            ListenAddress::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}
