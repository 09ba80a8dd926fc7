//! TLS between tiers and on statsd ingest, with certificates generated here (rcgen): mutual TLS forwarding, locals
//! refused for a missing or foreign client certificate, `tls://` ingest with exact totals, plaintext on the TLS
//! port, certificates replaced while running, and files that stop the start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use harrier::config::Config;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A certificate authority that signs leaf certificates into PEM files under `dir`.
struct Ca {
    dir: PathBuf,
    name: String,
    params: CertificateParams,
    key: KeyPair,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), cert.pem()).unwrap();
        Ca {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            params,
            key,
        }
    }

    fn ca_file(&self) -> String {
        self.dir.join(format!("{}-ca.pem", self.name)).display().to_string()
    }

    /// A leaf for `localhost` and 127.0.0.1: (cert file, key file).
    fn leaf(&self, who: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, who);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let cert_file = self.dir.join(format!("{}-{who}.pem", self.name));
        let key_file = self.dir.join(format!("{}-{who}-key.pem", self.name));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file.display().to_string(), key_file.display().to_string())
    }
}

fn temp_dir(tag: &str) -> crate::common::Scratch {
    crate::common::Scratch::new(&format!("harrier-tls-{tag}-{}", std::process::id()))
}

fn global_yaml(ca: &Ca, mutual: bool) -> String {
    let (cert, key) = ca.leaf("global");
    let client_ca = if mutual {
        format!(", client_ca_file: \"{}\"", ca.ca_file())
    } else {
        String::new()
    };
    config(
        &["udp://127.0.0.1:0"],
        &format!(
            "grpc_address: \"127.0.0.1:0\"\npercentiles: [0.5]\n\
             grpc_tls: {{cert_file: \"{cert}\", key_file: \"{key}\"{client_ca}}}\n"
        ),
    )
}

/// A local forwarding to `grpc` with `forward_tls` (`identity`: its client certificate, if any).
fn local_yaml(grpc: SocketAddr, ca_file: &str, identity: Option<(String, String)>) -> String {
    let identity = identity.map_or(String::new(), |(c, k)| {
        format!(", cert_file: \"{c}\", key_file: \"{k}\"")
    });
    config(
        &["udp://127.0.0.1:0"],
        &format!(
            "forward_address: \"{grpc}\"\npercentiles: [0.5]\n\
             forward_tls: {{ca_file: \"{ca_file}\", server_name: localhost{identity}}}\n"
        ),
    )
    .replace("interval: 1h", "interval: 1s")
}

fn send_udp(addr: SocketAddr, text: &str) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(text.as_bytes(), addr).unwrap();
}

/// Sends timer lines to a local until the global has imported something (or `wait` passes); true if it did.
async fn imported(global: &harrier::server::RunningServer, local: SocketAddr, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        send_udp(local, "tls.latency:10|ms\ntls.latency:20|ms\ntls.latency:30|ms\n");
        if global.telemetry.peek("harrier.import.metrics", "") > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    global.telemetry.peek("harrier.import.metrics", "") > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_forwards_sketches_to_a_global_over_mutual_tls() {
    let dir = temp_dir("mtls");
    let ca = Ca::new(&dir, "fleet");
    let (global, global_sink) = start(&global_yaml(&ca, true)).await;
    let grpc = global.grpc_address.unwrap();
    let (local, _) = start(&local_yaml(grpc, &ca.ca_file(), Some(ca.leaf("local")))).await;
    assert!(
        imported(&global, local.udp_address().unwrap(), Duration::from_secs(20)).await,
        "the global imported nothing over mTLS"
    );
    local.shutdown().await;
    global.shutdown().await;
    assert_eq!(global_sink.self_metric("harrier.import.errors", ""), 0.0);
    let values = global_sink.values();
    assert!(
        values.get("tls.latency.50percentile").is_some_and(|v| *v >= 10.0),
        "the global reports the forwarded timer's percentile: {values:?}"
    );
    assert_eq!(
        global_sink.self_metric("harrier.tls.handshake_errors", ""),
        0.0,
        "no handshake failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locals_without_a_client_certificate_or_with_one_of_another_ca_deliver_nothing_and_are_counted() {
    let dir = temp_dir("refused");
    let ca = Ca::new(&dir, "fleet");
    let other = Ca::new(&dir, "other");
    let (global, _) = start(&global_yaml(&ca, true)).await;
    let grpc = global.grpc_address.unwrap();
    // Both trust the global's CA; neither has a certificate the global accepts.
    let (bare, _) = start(&local_yaml(grpc, &ca.ca_file(), None)).await;
    let (foreign, _) = start(&local_yaml(grpc, &ca.ca_file(), Some(other.leaf("intruder")))).await;
    for local in [&bare, &foreign] {
        assert!(
            !imported(&global, local.udp_address().unwrap(), Duration::from_secs(4)).await,
            "a refused local delivered metrics"
        );
    }
    for (name, local) in [("without a certificate", &bare), ("with another CA's", &foreign)] {
        assert!(
            eventually(Duration::from_secs(10), || local
                .telemetry
                .peek("harrier.forward.errors", "")
                > 0)
            .await,
            "the local {name} counts its failed sends"
        );
        assert_eq!(
            local.telemetry.peek("harrier.forward.acknowledged", ""),
            0,
            "the local {name} believes nothing was delivered"
        );
    }
    assert!(
        global
            .telemetry
            .peek("harrier.tls.handshake_errors", "reason:no_client_certificate")
            > 0,
        "the global counts the local without a certificate"
    );
    assert!(
        global
            .telemetry
            .peek("harrier.tls.handshake_errors", "reason:bad_certificate")
            > 0,
        "the global counts the local with another CA's certificate"
    );
    // Everyone is alive: a local with a good certificate is served by the same global.
    let (good, _) = start(&local_yaml(grpc, &ca.ca_file(), Some(ca.leaf("good")))).await;
    assert!(imported(&global, good.udp_address().unwrap(), Duration::from_secs(20)).await);
    for s in [good, bare, foreign, global] {
        s.shutdown().await;
    }
}

/// A TLS client trusting `ca_file`, connected to `addr` as `localhost`.
async fn tls_client(
    addr: SocketAddr,
    ca_file: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    harrier::tls::install_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in harrier::tls::load_certs("test", ca_file).unwrap() {
        roots.add(c).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

fn tls_listener_yaml(cert: &str, key: &str) -> String {
    config(
        &["tls://127.0.0.1:0"],
        &format!("statsd_tls: {{cert_file: \"{cert}\", key_file: \"{key}\"}}\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statsd_lines_over_tls_arrive_with_exact_totals_and_plaintext_on_the_tls_port_harms_nothing() {
    let dir = temp_dir("ingest");
    let ca = Ca::new(&dir, "edge");
    let (cert, key) = ca.leaf("server");
    let (server, sink) = start(&tls_listener_yaml(&cert, &key)).await;
    let addr = match server.addresses[0] {
        harrier::config::ListenAddress::Tls(a) => a,
        ref other => panic!("not a TLS listener: {other}"),
    };
    // A plaintext client that sends statsd lines, and one that connects and says nothing: neither may stall
    // the TLS clients.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"plain.counter:1|c\n").await.unwrap();
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut clients = Vec::new();
    for c in 0..3 {
        let mut conn = tls_client(addr, &ca.ca_file()).await.expect("TLS handshake");
        clients.push(tokio::spawn(async move {
            for i in 0..2000u32 {
                conn.write_all(format!("tls.counter:{}|c|#client:{c}\n", 1 + i % 3).as_bytes())
                    .await
                    .unwrap();
            }
            conn.shutdown().await.unwrap();
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    // The plaintext client is refused: the server closes its connection.
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "the plaintext connection was not closed"
    );
    let stats = server.telemetry.listeners[0].clone();
    assert!(
        eventually(Duration::from_secs(10), || stats
            .lines
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 6000)
        .await
    );
    server.shutdown().await;
    let values = sink.values();
    // 2000 lines of 1, 2, 3, 1, 2, 3...: 667×1 + 667×2 + 666×3 = 3999 per client.
    for c in 0..3 {
        assert_eq!(values[&format!("tls.counter#client:{c}")], 3999.0, "{values:?}");
    }
    assert!(!values.contains_key("plain.counter"), "plaintext lines were taken in");
    assert!(sink.self_metric("harrier.listener.tls_handshake_errors", "") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_without_a_restart() {
    let dir = temp_dir("reload");
    let old_ca = Ca::new(&dir, "old");
    let new_ca = Ca::new(&dir, "new");
    let (cert, key) = old_ca.leaf("server");
    let (server, _) = start(&tls_listener_yaml(&cert, &key)).await;
    let addr = match server.addresses[0] {
        harrier::config::ListenAddress::Tls(a) => a,
        ref other => panic!("not a TLS listener: {other}"),
    };
    assert!(tls_client(addr, &old_ca.ca_file()).await.is_ok());
    assert!(tls_client(addr, &new_ca.ca_file()).await.is_err());
    // The files are replaced in place (as a certificate manager renews them).
    let (new_cert, new_key) = new_ca.leaf("server");
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    let mut served = false;
    for _ in 0..100 {
        if tls_client(addr, &new_ca.ca_file()).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served, "the renewed certificate was not served within 20 s");
    assert!(
        tls_client(addr, &old_ca.ca_file()).await.is_err(),
        "the old one still is"
    );
    assert!(server.telemetry.peek("harrier.tls.reloads", "result:ok") >= 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_file_or_a_key_of_another_certificate_stops_the_start_naming_the_key_and_the_file() {
    let dir = temp_dir("bad");
    let ca = Ca::new(&dir, "fleet");
    let (cert, _) = ca.leaf("a");
    let (_, other_key) = ca.leaf("b");
    let missing = dir.join("missing.pem").display().to_string();
    for (yaml, want) in [
        (
            tls_listener_yaml(&missing, &other_key),
            vec!["statsd_tls.cert_file", "missing.pem"],
        ),
        (
            tls_listener_yaml(&cert, &other_key),
            vec!["statsd_tls", "does not match", "fleet-b-key.pem", "fleet-a.pem"],
        ),
    ] {
        let config = Config::from_yaml_with_env(&yaml, "test", |_| None).unwrap();
        let err = match harrier::server::start(config, Vec::new()).await {
            Ok(_) => panic!("the server started with {yaml}"),
            Err(e) => e.to_string(),
        };
        for w in want {
            assert!(err.contains(w), "{err:?} does not name {w:?}");
        }
    }
}

/// An HTTPS exporter that requires a client certificate of `ca`, answering one gauge; counts the bodies it wrote.
async fn https_exporter(ca: &Ca) -> (SocketAddr, Arc<std::sync::atomic::AtomicU64>) {
    let (cert_file, key_file) = ca.leaf("exporter");
    let files = harrier::config::ServerTlsConfig {
        cert_file,
        key_file,
        client_ca_file: ca.ca_file(),
    };
    harrier::tls::install_provider();
    let config = harrier::tls::server_config("test", &files, &[b"http/1.1"]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "secure_gauge 7\n";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                if tls.write_all(reply.as_bytes()).await.is_ok() {
                    let _ = tls.shutdown().await;
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    (addr, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_target_is_scraped_with_the_configured_ca_and_client_certificate_and_a_foreign_one_is_refused() {
    let dir = temp_dir("scrape-tls");
    let ca = Ca::new(&dir, "exporters");
    let other = Ca::new(&dir, "other");
    let (addr, served) = https_exporter(&ca).await;
    let (cert, key) = ca.leaf("harrier");
    let (other_cert, other_key) = other.leaf("stranger");
    let yaml = format!(
        "statsd_listen_addresses: []\ninterval: 1s\n\
         prometheus_scrape:\n\
         - {{targets: [\"https://localhost:{port}/metrics\"], interval: 500ms, tls: {{ca_file: \"{ca_file}\", \
           cert_file: \"{cert}\", key_file: \"{key}\"}}, tags: [\"via:good\"]}}\n\
         - {{targets: [\"https://127.0.0.1:{port}/metrics\"], interval: 500ms, tls: {{ca_file: \"{ca_file}\", \
           cert_file: \"{other_cert}\", key_file: \"{other_key}\"}}, tags: [\"via:stranger\"]}}\n",
        port = addr.port(),
        ca_file = ca.ca_file(),
    );
    let (server, sink) = start(&yaml).await;
    let arrived = eventually(Duration::from_secs(10), || {
        sink.user_series()
            .iter()
            .any(|s| &*s.name == "secure_gauge" && s.value == 7.0 && s.tags.contains("via:good"))
    })
    .await;
    assert!(arrived, "{:?}", sink.user_series());
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.shutdown().await;
    let stranger = sink.user_series().iter().any(|s| s.tags.contains("via:stranger"));
    assert!(!stranger, "the exporter refuses a client certificate of another CA");
    let failed = sink.self_metric("harrier.scrape.scrapes", "result:request");
    assert!(failed >= 1.0, "the refused reads are counted: {failed}");
    assert!(served.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_over_https_and_grpcs_is_taken_with_otlp_tls_and_plaintext_on_its_port_is_refused() {
    use harrier::config::otlp::OtlpTransport;
    use harrier::otlp::proto::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use prost::Message;

    let dir = temp_dir("otlp");
    let ca = Ca::new(&dir, "otlp");
    let (cert, key) = ca.leaf("harrier");
    let yaml = config(
        &["udp://127.0.0.1:0"],
        &format!(
            "otlp_listen_addresses: [\"https://127.0.0.1:0\", \"grpcs://127.0.0.1:0\"]\n\
             otlp_tls: {{cert_file: \"{cert}\", key_file: \"{key}\"}}\n"
        ),
    );
    let (server, sink) = start(&yaml).await;
    let addr = |t| server.otlp_addresses.iter().find(|a| a.transport == t).unwrap().addr;
    let (https, grpcs) = (addr(OtlpTransport::Http), addr(OtlpTransport::Grpc));
    let pem = std::fs::read(ca.ca_file()).unwrap();

    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let resp = client
        .post(format!("https://localhost:{}/v1/metrics", https.port()))
        .header("content-type", "application/x-protobuf")
        .body(otel::gauge_request("over.https", &[1.5]).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Plaintext on the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .post(format!("http://{https}/v1/metrics"))
        .body(otel::gauge_request("over.plain", &[9.0]).encode_to_vec())
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&pem))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(format!("https://{grpcs}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    MetricsServiceClient::new(channel)
        .export(otel::gauge_request("over.grpcs", &[2.5]))
        .await
        .unwrap();
    server.shutdown().await;
    let v = sink.values();
    assert_eq!(v.get("over.https"), Some(&1.5), "{v:?}");
    assert_eq!(v.get("over.grpcs"), Some(&2.5), "{v:?}");
    assert!(!v.contains_key("over.plain"));
}
