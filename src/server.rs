//! Wires the parts for a configuration, and stops them in order.
//!
//! Start: bind every listener (errors name the address), start the shards and parse workers, the readers, the
//! HTTP server and the flusher. Stop (SIGTERM, SIGINT or [`RunningServer::shutdown`]): stop reading, let every
//! batch already read reach its shard, run a final flush bounded by one interval (and the sinks' request timeout),
//! then stop the shards.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::watch;

use crate::aggregate::admit::Admission;
use crate::aggregate::{EmitConfig, ExtendTags};
use crate::capture::Capture;
use crate::config::otlp::{OtlpAddress, OtlpTransport};
use crate::config::{parse_socket_addr, Config, ConfigError, ListenAddress, SinkKind};
use crate::flush::{Flusher, Forward, StatsClient};
use crate::forward::ack::Acks;
use crate::forward::client::{Forwarder, Mode};
use crate::forward::discovery;
use crate::forward::proto::forward_server::ForwardServer;
use crate::forward::proxy::ProxyService;
use crate::forward::server::ImportService;
use crate::forward::view::forward_server::ForwardServer as ViewServer;
use crate::listen::{self, ListenError, ListenOptions, Stop};
use crate::pipeline::Pipeline;
use crate::sink::console::ConsoleSink;
use crate::sink::datadog::DatadogSink;
use crate::sink::otlp::OtlpSink;
use crate::sink::prometheus::PrometheusSink;
use crate::sink::Sink;
use crate::telemetry::series_table::SeriesStats;
use crate::telemetry::{ListenerStats, Telemetry};
use crate::tls::ReloadingServer;

mod stop_order;
use stop_order::StopOrder;

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("cannot serve gRPC imports on {address} (config key `grpc_address`): {source}")]
    Grpc { address: String, source: std::io::Error },
    #[error("cannot forward (config key `forward_address`): {0}")]
    Forward(String),
    #[error("cannot serve OTLP on {address} (config key `otlp_listen_addresses`): {source}")]
    Otlp { address: String, source: std::io::Error },
    #[error("cannot serve HTTP on {address} (config key `http_address`): {source}")]
    Http { address: String, source: std::io::Error },
    #[error("cannot start {what}: {source}")]
    Start { what: String, source: std::io::Error },
    #[error("cannot scrape (config key `prometheus_scrape`): {0}")]
    Scrape(String),
    #[error("sink {name}: {message}")]
    Sink { name: String, message: String },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot apply the controls (config key `mapper_profiles`): {0}")]
    Admission(String),
}

/// A server that is running.
pub struct RunningServer {
    /// Every listener's address as bound (ports chosen by the OS are resolved).
    pub addresses: Vec<ListenAddress>,
    /// The HTTP server's address, if one was configured.
    pub http_address: Option<SocketAddr>,
    /// The gRPC import server's address, if one was configured.
    pub grpc_address: Option<SocketAddr>,
    /// The OTLP listeners (`otlp_listen_addresses`) as bound, in their order.
    pub otlp_addresses: Vec<OtlpAddress>,
    /// Self-metrics, for tests and embedding.
    pub telemetry: Arc<Telemetry>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// The first UDP listener's address.
    pub fn udp_address(&self) -> Option<SocketAddr> {
        self.addresses.iter().find_map(|a| match a {
            ListenAddress::Udp(s) => Some(*s),
            _ => None,
        })
    }

    /// The first TCP listener's address.
    pub fn tcp_address(&self) -> Option<SocketAddr> {
        self.addresses.iter().find_map(|a| match a {
            ListenAddress::Tcp(s) => Some(*s),
            _ => None,
        })
    }

    /// Stops reading, processes what was received, runs the final flush (if `flush_on_shutdown`), and waits
    /// until everything has stopped.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.done.await;
    }
}

/// Binds `host:port` for an optional TCP service; an empty address means none.
async fn bind_tcp(
    address: &str,
    error: impl Fn(String, std::io::Error) -> ServerError,
) -> Result<Option<tokio::net::TcpListener>, ServerError> {
    if address.is_empty() {
        return Ok(None);
    }
    let addr = parse_socket_addr(address).map_err(|m| {
        error(
            address.to_string(),
            std::io::Error::new(std::io::ErrorKind::InvalidInput, m),
        )
    })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| error(address.to_string(), e))?;
    Ok(Some(listener))
}

/// The sinks a configuration asks for.
pub fn sinks_from_config(config: &Config, telemetry: &Arc<Telemetry>) -> Result<Vec<Arc<dyn Sink>>, ServerError> {
    let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
    for s in &config.metric_sinks {
        match s.kind {
            SinkKind::Console => sinks.push(Arc::new(ConsoleSink::new(s.display_name()))),
            SinkKind::Datadog => {
                let sink = DatadogSink::new(s.display_name(), s.datadog()?, telemetry.clone()).map_err(|message| {
                    ServerError::Sink {
                        name: s.display_name().to_string(),
                        message,
                    }
                })?;
                sinks.push(Arc::new(sink));
            }
            SinkKind::Otlp => {
                let sink = OtlpSink::new(s.display_name(), s.otlp()?, telemetry.clone()).map_err(|message| {
                    ServerError::Sink {
                        name: s.display_name().to_string(),
                        message,
                    }
                })?;
                sinks.push(Arc::new(sink));
            }
            SinkKind::PrometheusRemoteWrite => {
                let sink =
                    PrometheusSink::new(s.display_name(), s.prometheus()?, telemetry.clone()).map_err(|message| {
                        ServerError::Sink {
                            name: s.display_name().to_string(),
                            message,
                        }
                    })?;
                sinks.push(Arc::new(sink));
            }
        }
    }
    Ok(sinks)
}

/// Starts a server. `extra_sinks` are added to the configured ones; when neither gives a sink, the console sink
/// is used. Must be called inside a multi-threaded tokio runtime.
pub async fn start(config: Config, extra_sinks: Vec<Arc<dyn Sink>>) -> Result<RunningServer, ServerError> {
    start_with_forwarder(config, extra_sinks, None).await
}

/// Certificates of the TLS listeners, read before anything is bound: a bad file stops the start, naming the key
/// and the file.
struct ServerTls {
    statsd: Option<Arc<ReloadingServer>>,
    grpc: Option<Arc<ReloadingServer>>,
    /// `otlp_tls`, for the `https://` (HTTP/1.1) and the `grpcs://` (HTTP/2) OTLP listeners.
    otlp_http: Option<Arc<ReloadingServer>>,
    otlp_grpc: Option<Arc<ReloadingServer>>,
}

impl ServerTls {
    fn load(config: &Config) -> Result<ServerTls, ServerError> {
        crate::tls::install_provider();
        let statsd = match &config.statsd_tls {
            Some(files) => Some(ReloadingServer::load("statsd_tls", files, &[])?),
            None => None,
        };
        let grpc = match &config.grpc_tls {
            Some(files) => Some(ReloadingServer::load("grpc_tls", files, &[b"h2"])?),
            None => None,
        };
        let (otlp_http, otlp_grpc) = match &config.otlp_tls {
            Some(files) => (
                Some(ReloadingServer::load("otlp_tls", files, &[b"http/1.1"])?),
                Some(ReloadingServer::load("otlp_tls", files, &[b"h2"])?),
            ),
            None => (None, None),
        };
        if let Some(files) = &config.forward_tls {
            // Read now, so that a bad file stops the start (each connection to a global reads them again).
            crate::tls::client_config(files, "localhost")?;
        }
        Ok(ServerTls {
            statsd,
            grpc,
            otlp_http,
            otlp_grpc,
        })
    }

    /// The certificates watched for changes.
    fn reloading(&self) -> Vec<Arc<ReloadingServer>> {
        [&self.statsd, &self.grpc, &self.otlp_http, &self.otlp_grpc]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// Every socket of a configuration, bound (errors name the address and the key).
struct Sockets {
    listeners: Vec<listen::BoundListener>,
    http: Option<tokio::net::TcpListener>,
    grpc: Option<tokio::net::TcpListener>,
    /// `otlp_listen_addresses`, with the port each is bound to.
    otlp: Vec<(OtlpAddress, tokio::net::TcpListener)>,
}

impl Sockets {
    async fn bind(config: &Config, opts: &ListenOptions) -> Result<Sockets, ServerError> {
        let mut listeners = Vec::new();
        // A proxy takes no DogStatsD: only forwarded streams.
        if !config.proxy {
            for address in config.listen_addresses()? {
                listeners.push(listen::bind(&address, opts)?);
            }
        }
        let http = bind_tcp(&config.http_address, |address, source| ServerError::Http {
            address,
            source,
        })
        .await?;
        let grpc = bind_tcp(&config.grpc_address, |address, source| ServerError::Grpc {
            address,
            source,
        })
        .await?;
        let mut otlp = Vec::new();
        for mut address in config.otlp_addresses()? {
            let error = |source| ServerError::Otlp {
                address: address.to_string(),
                source,
            };
            let listener = tokio::net::TcpListener::bind(address.addr).await.map_err(error)?;
            address.addr = listener.local_addr().map_err(error)?;
            otlp.push((address, listener));
        }
        Ok(Sockets {
            listeners,
            http,
            grpc,
            otlp,
        })
    }
}

/// The forwarding client to the global tier, for a local or a proxy (none when the caller brought its own).
async fn start_router(
    config: &Config,
    telemetry: &Arc<Telemetry>,
    stop: &watch::Receiver<bool>,
) -> Result<Arc<Forwarder>, ServerError> {
    let members = match &config.forward_discovery {
        Some(d) => discovery::start(d.clone(), telemetry.clone(), stop.clone())
            .await
            .map_err(ServerError::Forward)?,
        None if config.forward_addresses.is_empty() => discovery::fixed([config.forward_address.as_str()]),
        None => discovery::fixed(&config.forward_addresses),
    };
    let mode = if config.proxy { Mode::Immediate } else { Mode::Interval };
    Ok(Forwarder::start(
        members,
        mode,
        config.forward_max_intervals,
        config.interval,
        telemetry.clone(),
        config.forward_tls.clone().map(Arc::new),
    ))
}

/// What the gRPC server serves: imports into this instance's shards (a global), or forwarded streams routed on
/// to the global tier (a proxy).
struct GrpcService {
    import: ImportService,
    proxy: Option<ProxyService>,
    tls: Option<Arc<ReloadingServer>>,
    telemetry: Arc<Telemetry>,
}

impl GrpcService {
    /// Serves until `stop` turns true.
    async fn serve(self, listener: tokio::net::TcpListener, mut stop: watch::Receiver<bool>) {
        let limit = 64 * 1024 * 1024;
        let mut builder = tonic::transport::Server::builder();
        let routes = match self.proxy {
            Some(p) => builder.add_service(ViewServer::new(p).max_decoding_message_size(limit)),
            None => builder.add_service(ForwardServer::new(self.import).max_decoding_message_size(limit)),
        };
        let handshakes = stop.clone();
        let shutdown = async move { crate::shutdown::stopped(&mut stop).await };
        let served = match self.tls {
            None => {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                routes.serve_with_incoming_shutdown(incoming, shutdown).await
            }
            Some(tls) => {
                let incoming = crate::tls::incoming(listener, tls, self.telemetry, handshakes);
                routes.serve_with_incoming_shutdown(incoming, shutdown).await
            }
        };
        if let Err(e) = served {
            tracing::error!("gRPC import server stopped: {e}");
        }
    }
}

fn listen_options(config: &Config, tls: &ServerTls) -> ListenOptions {
    ListenOptions {
        num_readers: config.num_readers,
        num_workers: config.num_workers,
        read_buffer_size: config.read_buffer_size_bytes,
        max_packet: config.metric_max_length,
        idle_timeout: config.tcp_idle_timeout,
        max_connections: config.max_connections,
        tls: tls.statsd.clone(),
    }
}

/// The configured sinks and the caller's; the console sink when neither gives one (a proxy reports nothing).
fn all_sinks(
    config: &Config,
    telemetry: &Arc<Telemetry>,
    extra: Vec<Arc<dyn Sink>>,
) -> Result<Vec<Arc<dyn Sink>>, ServerError> {
    let mut sinks = sinks_from_config(config, telemetry)?;
    sinks.extend(extra);
    if sinks.is_empty() && !config.proxy {
        sinks.push(Arc::new(ConsoleSink::new("console")));
    }
    Ok(sinks)
}

/// Serves `/metrics` and the health check (a proxy is healthy while it reaches a global).
fn serve_http(
    listener: tokio::net::TcpListener,
    proxy_router: Option<Arc<Forwarder>>,
    telemetry: &Arc<Telemetry>,
    series: &Arc<SeriesStats>,
    capture: &Arc<Capture>,
    stop: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let health: crate::http::Health = match proxy_router {
        Some(r) => Arc::new(move || r.reachable() > 0),
        None => Arc::new(|| true),
    };
    tokio::spawn(crate::http::serve(
        listener,
        health,
        telemetry.clone(),
        series.clone(),
        capture.clone(),
        stop.clone(),
    ))
}

/// Starts reading every bound listener into the workers.
fn start_listeners(
    listeners: Vec<listen::BoundListener>,
    stats: &[Arc<ListenerStats>],
    ingest: &crate::pipeline::Ingest,
    opts: &ListenOptions,
    stop: &Stop,
) -> Result<Vec<listen::Running>, ServerError> {
    let mut running = Vec::new();
    for (i, b) in listeners.into_iter().enumerate() {
        let what = b.address.to_string();
        let r = b
            .start(i, stats[i].clone(), ingest.clone(), opts, stop.clone())
            .map_err(|source| ServerError::Start { what, source })?;
        running.push(r);
    }
    Ok(running)
}

/// Serves every OTLP listener into the shards; each task ends at the stop signal.
fn start_otlp(
    config: &Config,
    sockets: Vec<(OtlpAddress, tokio::net::TcpListener)>,
    tls: &ServerTls,
    pipeline: &Pipeline,
    extend: Arc<ExtendTags>,
    telemetry: &Arc<Telemetry>,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    if sockets.is_empty() {
        return Vec::new();
    }
    let converter = crate::otlp::convert::Converter::new(crate::otlp::convert::Options {
        extend,
        resource_tags: config.otlp_resource_attributes_as_tags,
        sketches: config.distributions == crate::config::Distributions::Sketch,
    });
    let receiver = Arc::new(crate::otlp::server::Receiver::new(
        converter,
        pipeline.shards.clone(),
        telemetry.clone(),
        config.otlp_max_request_bytes,
        stop.clone(),
    ));
    let mut tasks = Vec::new();
    for (address, listener) in sockets {
        let (receiver, telemetry, stop) = (receiver.clone(), telemetry.clone(), stop.clone());
        let task = match address.transport {
            OtlpTransport::Http => {
                let tls = tls.otlp_http.clone().filter(|_| address.tls);
                tokio::spawn(crate::otlp::server::serve_http(
                    listener, tls, receiver, telemetry, stop,
                ))
            }
            OtlpTransport::Grpc => {
                let tls = tls.otlp_grpc.clone().filter(|_| address.tls);
                tokio::spawn(crate::otlp::server::serve_grpc(
                    listener, tls, receiver, telemetry, stop,
                ))
            }
        };
        tasks.push(task);
    }
    tasks
}

/// The client of `stats_address` (the flush's own timings sent as DogStatsD), if set.
fn stats_client(config: &Config) -> Result<Option<StatsClient>, ServerError> {
    let error = |message: String| ServerError::Sink {
        name: "stats_address".to_string(),
        message,
    };
    match config.stats_address.as_str() {
        "" => Ok(None),
        a => {
            let target = parse_socket_addr(a).map_err(error)?;
            Ok(Some(StatsClient::new(target).map_err(|e| error(e.to_string()))?))
        }
    }
}

/// [`start`], with the component that forwards sketches in local mode. The phases, in order: certificates, sockets,
/// self-metrics and sinks, workers, listeners, the forwarding client, HTTP and gRPC servers, the flusher; then the
/// ordered stop (`stop_order::StopOrder`) waits for the stop signal.
pub async fn start_with_forwarder(
    config: Config,
    extra_sinks: Vec<Arc<dyn Sink>>,
    forwarder: Option<Arc<dyn Forward>>,
) -> Result<RunningServer, ServerError> {
    config.validate()?;
    let tls = ServerTls::load(&config)?;
    let opts = listen_options(&config, &tls);
    let mut sockets = Sockets::bind(&config, &opts).await?;
    let addresses: Vec<ListenAddress> = sockets.listeners.iter().map(|b| b.address.clone()).collect();
    let otlp_sockets = std::mem::take(&mut sockets.otlp);
    let otlp_addresses: Vec<OtlpAddress> = otlp_sockets.iter().map(|(a, _)| *a).collect();
    let http_address = sockets.http.as_ref().and_then(|l| l.local_addr().ok());
    let grpc_address = sockets.grpc.as_ref().and_then(|l| l.local_addr().ok());

    let mut stats: Vec<Arc<ListenerStats>> = addresses
        .iter()
        .map(|a| Arc::new(ListenerStats::new(a.to_string())))
        .collect();
    // Scraped lines are counted as the lines of one more listener.
    let scrape_listener = stats.len();
    if !config.prometheus_scrape.is_empty() {
        stats.push(Arc::new(ListenerStats::new("prometheus_scrape".to_string())));
    }
    let telemetry = Arc::new(Telemetry::new(stats.clone()));
    let sinks = all_sinks(&config, &telemetry, extra_sinks)?;
    let stats_client = stats_client(&config)?;

    let extend = Arc::new(ExtendTags::new(&config.extend_tags));
    let emit = Arc::new(EmitConfig {
        sketches: config.distributions == crate::config::Distributions::Sketch,
        exponential: config.histogram_buckets(),
        ..EmitConfig::new(config.is_local(), &config.aggregates, &config.percentiles)
    });
    let imports = sockets.grpc.is_some() || !otlp_sockets.is_empty();
    let workers = listen::fitted_workers(&sockets.listeners, &opts, imports);
    tracing::debug!(workers, "starting the workers");
    let admission = Admission::new(&config).map_err(ServerError::Admission)?;
    let capture = Arc::new(Capture::new(stats.iter().map(|s| s.name.clone()).collect()));
    let pipeline = Pipeline::start(
        workers,
        extend.clone(),
        telemetry.clone(),
        admission,
        emit.clone(),
        capture.clone(),
    );
    let series_stats = Arc::new(SeriesStats::default());
    let ingest = pipeline.ingest.clone();

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_flag = Arc::new(AtomicBool::new(false));
    let stop = Stop {
        flag: stop_flag.clone(),
        signal: stop_rx.clone(),
    };
    let running = start_listeners(sockets.listeners, &stats, &ingest, &opts, &stop)?;
    let scrapes = crate::scrape::start(
        &config.prometheus_scrape,
        &ingest,
        scrape_listener,
        telemetry.clone(),
        stop_rx.clone(),
    )
    .map_err(ServerError::Scrape)?;
    let otlp = start_otlp(&config, otlp_sockets, &tls, &pipeline, extend, &telemetry, &stop_rx);
    let router = match config.forwards() && forwarder.is_none() {
        true => Some(start_router(&config, &telemetry, &stop_rx).await?),
        false => None,
    };
    let proxy_router = router.clone().filter(|_| config.proxy);
    let acks = Arc::new(Acks::new());
    let http_task = sockets
        .http
        .map(|l| serve_http(l, proxy_router.clone(), &telemetry, &series_stats, &capture, &stop_rx));
    // The import server outlives the final flush, so that senders hear that it is flushed.
    let (grpc_stop_tx, grpc_stop_rx) = watch::channel(false);
    let grpc_task = sockets.grpc.map(|l| {
        let service = GrpcService {
            import: ImportService::new(
                pipeline.shards.clone(),
                acks.clone(),
                telemetry.clone(),
                stop_rx.clone(),
            ),
            proxy: proxy_router.map(|r| ProxyService::new(r, acks.clone(), telemetry.clone(), stop_rx.clone())),
            tls: tls.grpc.clone(),
            telemetry: telemetry.clone(),
        };
        tokio::spawn(service.serve(l, grpc_stop_rx))
    });
    tokio::spawn(crate::tls::watch(tls.reloading(), telemetry.clone(), stop_rx.clone()));
    let forwarder = match forwarder {
        Some(f) => Some(f),
        None if config.is_local() => router.map(|r| r as Arc<dyn Forward>),
        None => None,
    };
    let imports_acked = grpc_task.is_some() && !config.proxy;

    let flusher = Arc::new(Flusher {
        shards: pipeline.shards.clone(),
        sinks,
        emit: (*emit).clone(),
        telemetry: telemetry.clone(),
        interval: config.interval,
        hostname: config.hostname.clone(),
        forwarder,
        acks: imports_acked.then(|| acks.clone()),
        sink_tags: config.tags.clone(),
        stats: stats_client,
        series_stats,
    });
    let flush_task = tokio::spawn(flusher.clone().run(stop_rx.clone()));
    let order = StopOrder {
        stop_flag,
        running,
        scrapes,
        otlp,
        ingest,
        pipeline,
        flush_task,
        flusher,
        flush_on_shutdown: config.flush_on_shutdown,
        interval: config.interval,
        acks,
        grpc_stop: grpc_stop_tx,
        grpc_task,
        http_task,
    };
    let done = tokio::spawn(order.run(stop_rx));
    Ok(RunningServer {
        addresses,
        http_address,
        grpc_address,
        otlp_addresses,
        telemetry,
        stop: stop_tx,
        done,
    })
}
