//! How single values of the configuration are written: durations, `host:port`, the hostname.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// `forward_address` may be written with an `http://` scheme (as for Veneur's HTTP forwarding); gRPC only
/// needs host and port.
pub fn strip_http_scheme(addr: &str) -> &str {
    addr.strip_prefix("http://").unwrap_or(addr)
}

/// Resolves `host:port` to one socket address.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?} as host:port: {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

/// Parses `1h2m3s`, `10s`, `500ms`, `1.5s`, `250us`, `100ns`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".to_string());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return Err(format!("{s:?} is not a duration like 10s, 500ms or 1m30s"));
        }
        let n: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("bad number in duration {s:?}"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            "" => return Err(format!("duration {s:?} needs a unit (h, m, s, ms, us, ns)")),
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        total += n * unit;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("duration {s:?}: {e}"))
}

pub(crate) fn deserialize_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Seconds(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

/// A duration as the config writes it: `10s`, `1500ms`.
pub(crate) fn serialize_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    if d.subsec_nanos() == 0 {
        s.serialize_str(&format!("{}s", d.as_secs()))
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    } else {
        s.serialize_str(&format!("{}ns", d.as_nanos()))
    }
}

/// This machine's hostname, or `localhost` when it cannot be read.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_string())
}

/// Configured headers as request headers, their values marked sensitive (never shown); `Err` names the first
/// header whose name or value cannot be sent.
pub(super) fn header_map(
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<reqwest::header::HeaderMap, &str> {
    use reqwest::header::{HeaderName, HeaderValue};
    let mut map = reqwest::header::HeaderMap::new();
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| k.as_str())?;
        let mut value = HeaderValue::from_str(v).map_err(|_| k.as_str())?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}
