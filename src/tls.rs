//! TLS: the process's one rustls crypto provider, server identities read from PEM files and reloaded without a
//! restart (on SIGHUP, or when a file changes), handshakes bounded by a timeout, and the forwarding client's
//! configuration.
//!
//! The gRPC import server and the `tls://` statsd listener accept TCP connections themselves and hand each
//! accepted one to [`ReloadingServer::acceptor`], which always holds the identity last read successfully: a
//! reload that fails (a file half-written, a key that does not match) is logged and counted, and the previous
//! identity stays in use.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientTlsConfig, ServerTlsConfig};
use crate::shutdown::stopped;
use crate::telemetry::catalog::{TLS_HANDSHAKE_ERRORS, TLS_RELOADS};
use crate::telemetry::{LimitedLog, Telemetry};

/// How long a client has to complete its TLS handshake before its connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are checked for a change.
const WATCH_EVERY: Duration = Duration::from_secs(5);

static RELOAD_LOG: LimitedLog = LimitedLog::new("TLS reload");
static HANDSHAKE_LOG: LimitedLog = LimitedLog::new("TLS handshake failed");

/// Why a TLS configuration could not be built. Each message names the config key and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("config key `{key}`: cannot read {path}: {source}")]
    Read {
        key: String,
        path: String,
        source: std::io::Error,
    },
    #[error("config key `{key}`: {path} holds no PEM {what}")]
    Empty {
        key: String,
        path: String,
        what: &'static str,
    },
    #[error("config key `{key}`: {path} is not valid PEM: {detail}")]
    Pem { key: String, path: String, detail: String },
    #[error(
        "config key `{key}`: the private key in {key_path} does not match the certificate in {cert_path}: {detail}"
    )]
    Mismatch {
        key: String,
        cert_path: String,
        key_path: String,
        detail: String,
    },
    #[error("config key `{key}`: {detail}")]
    Invalid { key: String, detail: String },
}

/// Makes aws-lc-rs the process's rustls provider (the one reqwest and tonic are built with). Called once at start,
/// before any TLS configuration is built; later calls do nothing.
pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(key: &str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key: key.to_string(),
        path: path.to_string(),
        source,
    })
}

/// The certificates of a PEM file (at least one).
pub fn load_certs(key: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs(key, path, &read(key, path)?)
}

/// The certificates of `pem`, the contents of `path` (at least one).
fn parse_certs(key: &str, path: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            key: key.to_string(),
            path: path.to_string(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            key: key.to_string(),
            path: path.to_string(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn load_key(key: &str, path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    parse_key(key, path, &read(key, path)?)
}

/// The private key of `pem`, the contents of `path`.
fn parse_key(key: &str, path: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            key: key.to_string(),
            path: path.to_string(),
            what: "private key",
        },
        e => TlsError::Pem {
            key: key.to_string(),
            path: path.to_string(),
            detail: e.to_string(),
        },
    })
}

fn roots(key: &str, path: &str) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in load_certs(key, path)? {
        store.add(cert).map_err(|e| TlsError::Invalid {
            key: key.to_string(),
            detail: format!("{path}: {e}"),
        })?;
    }
    Ok(store)
}

/// A rustls server configuration from `files`, offering `alpn` (e.g. `h2` for gRPC).
pub fn server_config(key: &str, files: &ServerTlsConfig, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let certs = load_certs(&format!("{key}.cert_file"), &files.cert_file)?;
    let private = load_key(&format!("{key}.key_file"), &files.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            key: key.to_string(),
            detail: e.to_string(),
        })?;
    let builder = if files.client_ca_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let ca_key = format!("{key}.client_ca_file");
        let store = roots(&ca_key, &files.client_ca_file)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
            .build()
            .map_err(|e| TlsError::Invalid {
                key: ca_key,
                detail: e.to_string(),
            })?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(certs, private)
        .map_err(|e| TlsError::Mismatch {
            key: key.to_string(),
            cert_path: files.cert_file.clone(),
            key_path: files.key_file.clone(),
            detail: e.to_string(),
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A rustls client configuration for an HTTPS client (`prometheus_scrape[i].tls`, named by `key`): the servers'
/// certificates must chain to `ca_file`; `cert_file` and `key_file`, when set, are this client's certificate.
pub fn https_client_config(key: &str, files: &ClientTlsConfig) -> Result<rustls::ClientConfig, TlsError> {
    let store = roots(&format!("{key}.ca_file"), &files.ca_file)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            key: key.to_string(),
            detail: e.to_string(),
        })?
        .with_root_certificates(store);
    if files.cert_file.is_empty() {
        return Ok(builder.with_no_client_auth());
    }
    let certs = load_certs(&format!("{key}.cert_file"), &files.cert_file)?;
    let private = load_key(&format!("{key}.key_file"), &files.key_file)?;
    builder
        .with_client_auth_cert(certs, private)
        .map_err(|e| TlsError::Mismatch {
            key: key.to_string(),
            cert_path: files.cert_file.clone(),
            key_path: files.key_file.clone(),
            detail: e.to_string(),
        })
}

/// The tonic client TLS of `forward_tls` for a destination whose host is `host`.
pub fn client_config(files: &ClientTlsConfig, host: &str) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
    let ca = read("forward_tls.ca_file", &files.ca_file)?;
    // Parsed here too, so that a bad file is named at start rather than at the first connection.
    parse_certs("forward_tls.ca_file", &files.ca_file, &ca)?;
    let name = if files.server_name.is_empty() {
        host
    } else {
        &files.server_name
    };
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name(name.to_string());
    if !files.cert_file.is_empty() {
        let cert = read("forward_tls.cert_file", &files.cert_file)?;
        let key = read("forward_tls.key_file", &files.key_file)?;
        // The pair is checked as a server would check it, so that a mismatch stops the start.
        let certs = parse_certs("forward_tls.cert_file", &files.cert_file, &cert)?;
        let private = parse_key("forward_tls.key_file", &files.key_file, &key)?;
        rustls::sign::CertifiedKey::from_der(certs, private, &provider()).map_err(|e| TlsError::Mismatch {
            key: "forward_tls".to_string(),
            cert_path: files.cert_file.clone(),
            key_path: files.key_file.clone(),
            detail: e.to_string(),
        })?;
        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    Ok(tls)
}

/// Modification times of a server's files, to notice a change.
type Stamp = Vec<Option<SystemTime>>;

fn stamp(files: &ServerTlsConfig) -> Stamp {
    [&files.cert_file, &files.key_file, &files.client_ca_file]
        .iter()
        .map(|p| std::fs::metadata(Path::new(p)).and_then(|m| m.modified()).ok())
        .collect()
}

/// A TLS server identity that can be read again: the acceptor always uses the last one read successfully.
pub struct ReloadingServer {
    /// The config key (`grpc_tls`, `statsd_tls`), for messages and the `listener` tag.
    key: &'static str,
    files: ServerTlsConfig,
    alpn: Vec<&'static [u8]>,
    current: RwLock<TlsAcceptor>,
    stamp: Mutex<Stamp>,
}

impl ReloadingServer {
    /// Reads the files; an error names the key and the file.
    pub fn load(
        key: &'static str,
        files: &ServerTlsConfig,
        alpn: &[&'static [u8]],
    ) -> Result<Arc<ReloadingServer>, TlsError> {
        let config = server_config(key, files, alpn)?;
        Ok(Arc::new(ReloadingServer {
            key,
            files: files.clone(),
            alpn: alpn.to_vec(),
            current: RwLock::new(TlsAcceptor::from(Arc::new(config))),
            stamp: Mutex::new(stamp(files)),
        }))
    }

    pub fn key(&self) -> &'static str {
        self.key
    }

    /// The acceptor of the identity in force.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether a file changed since it was last read.
    fn changed(&self) -> bool {
        *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) != stamp(&self.files)
    }

    /// Reads the files again; on success the new identity is used for the next handshakes (connections already
    /// open keep theirs). On failure the previous identity stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let now = stamp(&self.files);
        *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = now;
        let config = server_config(self.key, &self.files, &self.alpn)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = TlsAcceptor::from(Arc::new(config));
        Ok(())
    }

    /// Completes the handshake of an accepted connection within [`HANDSHAKE_TIMEOUT`]. A failure (a plaintext
    /// client, a client certificate refused, a timeout) is logged at a limited rate and returned as the `reason`
    /// tag to count; the caller drops the connection.
    pub async fn handshake<IO>(&self, conn: IO) -> Result<tokio_rustls::server::TlsStream<IO>, &'static str>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor().accept(conn)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => {
                HANDSHAKE_LOG.log(|| format!("{}: {e}", self.key));
                Err(handshake_reason(&e))
            }
            Err(_) => {
                HANDSHAKE_LOG.log(|| format!("{}: no handshake within {HANDSHAKE_TIMEOUT:?}", self.key));
                Err("reason:timeout")
            }
        }
    }
}

impl std::fmt::Debug for ReloadingServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingServer")
            .field("key", &self.key)
            .field("files", &self.files)
            .finish()
    }
}

/// The connections of a TLS server on `listener`, handshaken: each accepted connection's handshake runs in its own
/// task (a slow or plaintext client holds up no other), and a failure is counted in
/// `harrier.tls.handshake_errors{listener, reason}`. Ends at the stop signal.
pub fn incoming(
    listener: tokio::net::TcpListener,
    tls: Arc<ReloadingServer>,
    telemetry: Arc<Telemetry>,
    mut stop: watch::Receiver<bool>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stopped(&mut stop) => return,
                a = listener.accept() => a,
            };
            let conn = match accepted {
                Ok((conn, _)) => conn,
                Err(_) => {
                    // Out of descriptors, say: try again shortly rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = conn.set_nodelay(true);
            let (tls, telemetry, tx) = (tls.clone(), telemetry.clone(), tx.clone());
            tokio::spawn(async move {
                match tls.handshake(conn).await {
                    Ok(stream) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Err(reason) => {
                        let listener = format!("listener:{}", tls.key());
                        telemetry.add(&TLS_HANDSHAKE_ERRORS, &[listener.as_str(), reason], 1);
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The `reason` tag of a failed handshake.
fn handshake_reason(e: &std::io::Error) -> &'static str {
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return "reason:io";
    };
    match tls {
        rustls::Error::InvalidMessage(_) => "reason:not_tls",
        rustls::Error::NoCertificatesPresented => "reason:no_client_certificate",
        rustls::Error::InvalidCertificate(_) => "reason:bad_certificate",
        _ => "reason:protocol",
    }
}

/// Reloads `servers` on SIGHUP and when their files change (checked every few seconds), until the stop signal;
/// counts each reload in `harrier.tls.reloads{listener, result}`.
pub async fn watch(servers: Vec<Arc<ReloadingServer>>, telemetry: Arc<Telemetry>, mut stop: watch::Receiver<bool>) {
    if servers.is_empty() {
        return;
    }
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        let forced = tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick.tick() => false,
            _ = hangup => true,
        };
        for s in &servers {
            if !forced && !s.changed() {
                continue;
            }
            let result = match s.reload() {
                Ok(()) => {
                    tracing::info!("{}: certificate and key read again", s.key);
                    "result:ok"
                }
                Err(e) => {
                    RELOAD_LOG.log(|| format!("{e}; the previous certificate stays in use"));
                    "result:error"
                }
            };
            let listener = format!("listener:{}", s.key);
            telemetry.add(&TLS_RELOADS, &[listener.as_str(), result], 1);
        }
    }
}
