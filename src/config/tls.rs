//! The TLS part of the configuration: `grpc_tls` (the gRPC import server of a global or proxy), `statsd_tls`
//! (`tls://` statsd listeners) and `forward_tls` (the forwarding client). Files are PEM; they are read at start
//! (an unreadable or mismatched file stops the start with the key and the file named) and again on SIGHUP or
//! when they change (see [`crate::tls`]).

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// A TLS server's files: `grpc_tls` and `statsd_tls`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// The server's certificate chain (PEM, leaf first). Required.
    pub cert_file: String,
    /// The server certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1). Required.
    pub key_file: String,
    /// CA certificates (PEM). When set, clients must present a certificate signed by one of them (mutual TLS);
    /// a client without one, or with one of another CA, is refused at the handshake. Default: empty (any
    /// client, no client certificate asked).
    #[serde(default)]
    pub client_ca_file: String,
}

/// The forwarding client's TLS: `forward_tls`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// CA certificates (PEM) that the globals' (or proxies') certificates must chain to. Required.
    pub ca_file: String,
    /// This instance's client certificate (PEM), for globals that require one. Default: empty (none).
    #[serde(default)]
    pub cert_file: String,
    /// The client certificate's private key (PEM). Required with `cert_file`. Default: empty.
    #[serde(default)]
    pub key_file: String,
    /// The name the globals' certificates must carry. Default: empty (the host of each forward address).
    #[serde(default)]
    pub server_name: String,
}

pub(super) fn required(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::invalid(key, value, "required: the path of a PEM file"));
    }
    Ok(())
}

/// Checks the TLS keys against each other and the rest of the configuration (the files themselves are read
/// when the server starts).
pub(super) fn validate(c: &Config) -> Result<(), ConfigError> {
    for (key, tls) in [("grpc_tls", &c.grpc_tls), ("statsd_tls", &c.statsd_tls)] {
        if let Some(t) = tls {
            required(&format!("{key}.cert_file"), &t.cert_file)?;
            required(&format!("{key}.key_file"), &t.key_file)?;
        }
    }
    if c.grpc_tls.is_some() && c.grpc_address.is_empty() {
        return Err(ConfigError::invalid(
            "grpc_tls",
            "set",
            "there is no gRPC server to secure: set grpc_address too",
        ));
    }
    let tls_listener = c.statsd_listen_addresses.iter().any(|a| a.starts_with("tls://"));
    match (&c.statsd_tls, tls_listener) {
        (None, true) => {
            return Err(ConfigError::invalid(
                "statsd_tls",
                "missing",
                "a tls:// listener in statsd_listen_addresses needs statsd_tls: {cert_file, key_file}",
            ))
        }
        (Some(_), false) if !c.proxy => {
            return Err(ConfigError::invalid(
                "statsd_tls",
                "set",
                "no tls://host:port listener in statsd_listen_addresses uses it",
            ))
        }
        _ => {}
    }
    if let Some(t) = &c.forward_tls {
        required("forward_tls.ca_file", &t.ca_file)?;
        if t.cert_file.is_empty() != t.key_file.is_empty() {
            return Err(ConfigError::invalid(
                "forward_tls",
                "cert_file/key_file",
                "give both cert_file and key_file (a client certificate), or neither",
            ));
        }
        if !c.forwards() {
            return Err(ConfigError::invalid(
                "forward_tls",
                "set",
                "nothing is forwarded: set forward_address, forward_addresses or forward_discovery too",
            ));
        }
    }
    Ok(())
}
