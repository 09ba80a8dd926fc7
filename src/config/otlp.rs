//! The OTLP source's part of the configuration: `otlp_listen_addresses`, `otlp_tls`, `otlp_max_request_bytes`
//! and `otlp_resource_attributes_as_tags` (see [`crate::otlp`]).

use std::net::SocketAddr;

use super::{parse_socket_addr, Config, ConfigError};

/// Which OTLP transport an address serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpTransport {
    /// OTLP/HTTP, protobuf (`POST /v1/metrics`): `http://` (`https://` with TLS), conventionally port 4318.
    Http,
    /// OTLP/gRPC (`MetricsService/Export`): `grpc://` (`grpcs://` with TLS), conventionally port 4317.
    Grpc,
}

/// One entry of `otlp_listen_addresses`, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtlpAddress {
    pub transport: OtlpTransport,
    /// `https://` or `grpcs://`: with `otlp_tls`.
    pub tls: bool,
    pub addr: SocketAddr,
}

impl std::fmt::Display for OtlpAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match (self.transport, self.tls) {
            (OtlpTransport::Http, false) => "http",
            (OtlpTransport::Http, true) => "https",
            (OtlpTransport::Grpc, false) => "grpc",
            (OtlpTransport::Grpc, true) => "grpcs",
        };
        write!(f, "{scheme}://{}", self.addr)
    }
}

/// Parses `http://`, `https://`, `grpc://` or `grpcs://` followed by `host:port`.
pub fn parse_otlp_address(s: &str) -> Result<OtlpAddress, String> {
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| format!("{s:?} has no scheme: write http://host:4318 or grpc://host:4317"))?;
    let (transport, tls) = match scheme {
        "http" => (OtlpTransport::Http, false),
        "https" => (OtlpTransport::Http, true),
        "grpc" => (OtlpTransport::Grpc, false),
        "grpcs" => (OtlpTransport::Grpc, true),
        other => return Err(format!("unknown scheme {other:?}: http, https, grpc or grpcs")),
    };
    let addr = parse_socket_addr(rest.trim_end_matches('/'))?;
    Ok(OtlpAddress { transport, tls, addr })
}

impl Config {
    /// `otlp_listen_addresses`, parsed.
    pub fn otlp_addresses(&self) -> Result<Vec<OtlpAddress>, ConfigError> {
        self.otlp_listen_addresses
            .iter()
            .map(|a| parse_otlp_address(a).map_err(|reason| ConfigError::invalid("otlp_listen_addresses", a, reason)))
            .collect()
    }
}

pub(super) fn validate(c: &Config) -> Result<(), ConfigError> {
    let addresses = c.otlp_addresses()?;
    let tls = addresses.iter().any(|a| a.tls);
    match (&c.otlp_tls, tls) {
        (None, true) => {
            return Err(ConfigError::invalid(
                "otlp_tls",
                "none",
                "an https:// or grpcs:// entry of otlp_listen_addresses needs otlp_tls: {cert_file, key_file}",
            ))
        }
        (Some(_), false) => {
            return Err(ConfigError::invalid(
                "otlp_tls",
                "set",
                "no https:// or grpcs:// entry of otlp_listen_addresses uses it",
            ))
        }
        (Some(t), true) => {
            super::tls::required("otlp_tls.cert_file", &t.cert_file)?;
            super::tls::required("otlp_tls.key_file", &t.key_file)?;
        }
        (None, false) => {}
    }
    if !(1024..=256 * 1024 * 1024).contains(&c.otlp_max_request_bytes) {
        return Err(ConfigError::invalid(
            "otlp_max_request_bytes",
            c.otlp_max_request_bytes,
            "must be between 1 KiB and 256 MiB",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_addresses_name_their_transport_and_tls_by_scheme() {
        let a = parse_otlp_address("grpcs://127.0.0.1:4317").unwrap();
        assert_eq!((a.transport, a.tls, a.addr.port()), (OtlpTransport::Grpc, true, 4317));
        let a = parse_otlp_address("http://127.0.0.1:4318/").unwrap();
        assert_eq!((a.transport, a.tls), (OtlpTransport::Http, false));
        assert_eq!(a.to_string(), "http://127.0.0.1:4318");
        assert!(parse_otlp_address("udp://127.0.0.1:4318")
            .unwrap_err()
            .contains("unknown scheme"));
        assert!(parse_otlp_address("127.0.0.1:4318").unwrap_err().contains("no scheme"));
    }

    #[test]
    fn a_tls_address_without_otlp_tls_is_refused_naming_the_key() {
        let yaml = "otlp_listen_addresses: [\"https://127.0.0.1:0\"]\n";
        let e = Config::from_yaml_with_env(yaml, "t", |_| None).unwrap_err().to_string();
        assert!(e.contains("otlp_tls"), "{e}");
    }
}
