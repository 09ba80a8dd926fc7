//! The forwarding part of the configuration: where the global tier is (`forward_address`, `forward_addresses`,
//! `forward_discovery`), and the proxy role.

use std::time::Duration;

use serde::Deserialize;

use super::{strip_http_scheme, Config, ConfigError};

/// Where discovery looks the globals up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryKind {
    /// A (and AAAA) records of `name`; every address is a global on `port` (a Kubernetes headless service).
    DnsA,
    /// SRV records of `name` (e.g. `_grpc._tcp.harrier-global.default.svc.cluster.local`, or Consul's
    /// `harrier-global.service.consul`); each target is resolved to its addresses, with the record's port.
    DnsSrv,
}

/// `forward_discovery`: the globals from DNS, refreshed every `refresh`. A refresh that fails or finds no
/// member keeps the previous members (logged and counted in `harrier.discovery.refreshes{result}`). Changes
/// take effect at the next interval boundary.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// `dns_a` or `dns_srv`. Required.
    pub kind: DiscoveryKind,
    /// The DNS name to look up. Required.
    pub name: String,
    /// The globals' gRPC port (`dns_a` only: SRV records carry their own). Required with `dns_a`.
    #[serde(default)]
    pub port: Option<u16>,
    /// How often the name is looked up again. Default: `30s`.
    #[serde(
        default = "default_refresh",
        deserialize_with = "super::deserialize_duration",
        serialize_with = "super::serialize_duration"
    )]
    pub refresh: Duration,
    /// `host:port` of the DNS server to ask (UDP, then TCP for truncated answers). Default: empty, the system
    /// resolver (`/etc/resolv.conf`).
    #[serde(default)]
    pub nameserver: String,
}

fn default_refresh() -> Duration {
    Duration::from_secs(30)
}

impl DiscoveryConfig {
    /// Checks the fields of the discovery at `key`; `port_hint` says which port `dns_a` needs.
    pub(super) fn validate(&self, key: &str, port_hint: &str) -> Result<(), ConfigError> {
        let k = |field: &str| format!("{key}.{field}");
        if self.name.trim().is_empty() {
            return Err(ConfigError::invalid(k("name"), "", "the DNS name to look up is empty"));
        }
        match (self.kind, self.port) {
            (DiscoveryKind::DnsA, None | Some(0)) => {
                return Err(ConfigError::invalid(
                    k("port"),
                    self.port.unwrap_or(0),
                    format!("dns_a needs {port_hint}"),
                ))
            }
            (DiscoveryKind::DnsSrv, Some(p)) => {
                return Err(ConfigError::invalid(
                    k("port"),
                    p,
                    "dns_srv takes each address's port from its SRV record; remove `port`",
                ))
            }
            _ => {}
        }
        if self.refresh < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                k("refresh"),
                format!("{:?}", self.refresh),
                "must be at least 100ms",
            ));
        }
        if !self.nameserver.is_empty() {
            self.nameserver
                .parse::<std::net::SocketAddr>()
                .map_err(|_| ConfigError::invalid(k("nameserver"), &self.nameserver, "expected ip:port"))?;
        }
        Ok(())
    }
}

fn host_port(key: &str, value: &str) -> Result<(), ConfigError> {
    let host_port = strip_http_scheme(value);
    if host_port
        .rsplit_once(':')
        .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(ConfigError::invalid(
            key,
            value,
            "expected host:port, e.g. 127.0.0.1:8128",
        ));
    }
    Ok(())
}

/// Checks the forwarding keys together.
pub(super) fn validate(c: &Config) -> Result<(), ConfigError> {
    let set = [
        ("forward_address", !c.forward_address.is_empty()),
        ("forward_addresses", !c.forward_addresses.is_empty()),
        ("forward_discovery", c.forward_discovery.is_some()),
    ];
    let given: Vec<&str> = set.iter().filter(|(_, on)| *on).map(|(k, _)| *k).collect();
    if given.len() > 1 {
        return Err(ConfigError::invalid(
            given.join(" and "),
            "both set",
            "give the global tier one way: forward_address (one global), forward_addresses (a list) or \
             forward_discovery (DNS)",
        ));
    }
    if !c.forward_address.is_empty() {
        host_port("forward_address", &c.forward_address)?;
    }
    let mut seen = std::collections::HashSet::new();
    for a in &c.forward_addresses {
        host_port("forward_addresses", a)?;
        if !seen.insert(strip_http_scheme(a)) {
            return Err(ConfigError::invalid("forward_addresses", a, "listed twice"));
        }
    }
    if let Some(d) = &c.forward_discovery {
        d.validate("forward_discovery", "the globals' gRPC port, e.g. 8128")?;
    }
    if c.proxy {
        if c.grpc_address.is_empty() {
            return Err(ConfigError::invalid(
                "grpc_address",
                "",
                "a proxy (proxy: true) receives the locals' streams on grpc_address; set it",
            ));
        }
        if !c.forwards() {
            return Err(ConfigError::invalid(
                "proxy",
                true,
                "a proxy needs the globals: set forward_addresses, forward_address or forward_discovery",
            ));
        }
    }
    Ok(())
}
