//! Wires the parts for a configuration, and stops them in order.
//!
//! Start: bind every listener (errors name the address), start the shards and parse workers, the readers, the
//! HTTP server and the flusher. Stop (SIGTERM, SIGINT or [`RunningServer::shutdown`]): stop reading, let every
//! batch already read reach its shard, run a final flush bounded by one interval (and the sinks' request timeout),
//! then stop the shards.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::aggregate::{EmitConfig, ExtendTags};
use crate::config::{parse_socket_addr, Config, ConfigError, ListenAddress, SinkKind};
use crate::flush::{Flusher, Forward, StatsClient};
use crate::forward::ack::Acks;
use crate::forward::client::{Forwarder, Mode};
use crate::forward::discovery;
use crate::forward::proto::forward_server::ForwardServer;
use crate::forward::proxy::ProxyService;
use crate::forward::server::ImportService;
use crate::forward::view::forward_server::ForwardServer as ViewServer;
use crate::listen::{self, ListenError, ListenOptions, Running, Stop};
use crate::pipeline::Pipeline;
use crate::sink::console::ConsoleSink;
use crate::sink::datadog::DatadogSink;
use crate::sink::prometheus::PrometheusSink;
use crate::sink::Sink;
use crate::telemetry::{ListenerStats, Telemetry};
use crate::tls::ReloadingServer;

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
    #[error("cannot serve HTTP on {address} (config key `http_address`): {source}")]
    Http { address: String, source: std::io::Error },
    #[error("cannot start {what}: {source}")]
    Start { what: String, source: std::io::Error },
    #[error("sink {name}: {message}")]
    Sink { name: String, message: String },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A server that is running.
pub struct RunningServer {
    /// Every listener's address as bound (ports chosen by the OS are resolved).
    pub addresses: Vec<ListenAddress>,
    /// The HTTP server's address, if one was configured.
    pub http_address: Option<SocketAddr>,
    /// The gRPC import server's address, if one was configured.
    pub grpc_address: Option<SocketAddr>,
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

/// [`start`], with the component that forwards sketches in local mode.
pub async fn start_with_forwarder(
    config: Config,
    extra_sinks: Vec<Arc<dyn Sink>>,
    forwarder: Option<Arc<dyn Forward>>,
) -> Result<RunningServer, ServerError> {
    config.validate()?;
    crate::tls::install_provider();
    // Certificates are read before anything is bound: a bad file stops the start, naming the key and the file.
    let statsd_tls = match &config.statsd_tls {
        Some(files) => Some(ReloadingServer::load("statsd_tls", files, &[])?),
        None => None,
    };
    let grpc_tls = match &config.grpc_tls {
        Some(files) => Some(ReloadingServer::load("grpc_tls", files, &[b"h2"])?),
        None => None,
    };
    if let Some(files) = &config.forward_tls {
        // Read now, so that a bad file stops the start (each connection to a global reads them again).
        crate::tls::client_config(files, "localhost")?;
    }
    let reloading: Vec<Arc<ReloadingServer>> = statsd_tls.iter().chain(grpc_tls.iter()).cloned().collect();
    let opts = ListenOptions {
        num_readers: config.num_readers,
        num_workers: config.num_workers,
        read_buffer_size: config.read_buffer_size_bytes,
        max_packet: config.metric_max_length,
        idle_timeout: config.tcp_idle_timeout,
        max_connections: config.max_connections,
        tls: statsd_tls.clone(),
    };
    let mut bound = Vec::new();
    // A proxy takes no DogStatsD: only forwarded streams.
    if !config.proxy {
        for address in config.listen_addresses()? {
            bound.push(listen::bind(&address, &opts)?);
        }
    }
    let addresses: Vec<ListenAddress> = bound.iter().map(|b| b.address.clone()).collect();
    let http_listener = bind_tcp(&config.http_address, |address, source| ServerError::Http {
        address,
        source,
    })
    .await?;
    let http_address = http_listener.as_ref().and_then(|l| l.local_addr().ok());
    let grpc_listener = bind_tcp(&config.grpc_address, |address, source| ServerError::Grpc {
        address,
        source,
    })
    .await?;
    let grpc_address = grpc_listener.as_ref().and_then(|l| l.local_addr().ok());

    let stats: Vec<Arc<ListenerStats>> = addresses
        .iter()
        .map(|a| Arc::new(ListenerStats::new(a.to_string())))
        .collect();
    let telemetry = Arc::new(Telemetry::new(stats.clone()));
    let mut sinks = sinks_from_config(&config, &telemetry)?;
    sinks.extend(extra_sinks);
    if sinks.is_empty() && !config.proxy {
        sinks.push(Arc::new(ConsoleSink::new("console")));
    }
    let extend = Arc::new(ExtendTags::new(&config.extend_tags));
    let emit = Arc::new(EmitConfig {
        sketches: config.distributions == crate::config::Distributions::Sketch,
        ..EmitConfig::new(config.is_local(), &config.aggregates, &config.percentiles)
    });
    let workers = listen::fitted_workers(&bound, &opts, grpc_listener.is_some());
    tracing::debug!(workers, "starting the workers");
    let pipeline = Pipeline::start(workers, extend, telemetry.clone(), config.series_limit, emit.clone());
    let ingest = pipeline.ingest.clone();

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_flag = Arc::new(AtomicBool::new(false));
    let stop = Stop {
        flag: stop_flag.clone(),
        signal: stop_rx.clone(),
    };
    let mut running = Vec::new();
    for (i, b) in bound.into_iter().enumerate() {
        let what = b.address.to_string();
        let r = b
            .start(i, stats[i].clone(), ingest.clone(), &opts, stop.clone())
            .map_err(|source| ServerError::Start { what, source })?;
        running.push(r);
    }
    // The global tier, for a local or a proxy.
    let router = if config.forwards() && forwarder.is_none() {
        let members = match &config.forward_discovery {
            Some(d) => discovery::start(d.clone(), telemetry.clone(), stop_rx.clone())
                .await
                .map_err(ServerError::Forward)?,
            None if config.forward_addresses.is_empty() => discovery::fixed([config.forward_address.as_str()]),
            None => discovery::fixed(&config.forward_addresses),
        };
        let mode = if config.proxy { Mode::Immediate } else { Mode::Interval };
        Some(Forwarder::start(
            members,
            mode,
            config.forward_max_intervals,
            config.interval,
            telemetry.clone(),
            config.forward_tls.clone().map(Arc::new),
        ))
    } else {
        None
    };
    let acks = Arc::new(Acks::new());
    let health: crate::http::Health = match (&router, config.proxy) {
        (Some(r), true) => {
            let r = r.clone();
            Arc::new(move || r.reachable() > 0)
        }
        _ => Arc::new(|| true),
    };
    let http_task =
        http_listener.map(|l| tokio::spawn(crate::http::serve(l, health, telemetry.clone(), stop_rx.clone())));
    // The import server outlives the final flush, so that senders hear that it is flushed.
    let (grpc_stop_tx, grpc_stop_rx) = watch::channel(false);
    let grpc_task = grpc_listener.map(|l| {
        let limit = 64 * 1024 * 1024;
        let router = match (&router, config.proxy) {
            (Some(r), true) => Some(r.clone()),
            _ => None,
        };
        let global = ImportService::new(
            pipeline.shards.clone(),
            acks.clone(),
            telemetry.clone(),
            stop_rx.clone(),
        );
        let proxy = router.map(|r| ProxyService::new(r, acks.clone(), telemetry.clone(), stop_rx.clone()));
        let mut stop = grpc_stop_rx;
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            let builder = tonic::transport::Server::builder();
            let mut builder = builder;
            let routes = match proxy {
                Some(p) => builder.add_service(ViewServer::new(p).max_decoding_message_size(limit)),
                None => builder.add_service(ForwardServer::new(global).max_decoding_message_size(limit)),
            };
            let handshakes = stop.clone();
            let shutdown = async move { crate::shutdown::stopped(&mut stop).await };
            let served = match grpc_tls {
                None => {
                    let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
                    routes.serve_with_incoming_shutdown(incoming, shutdown).await
                }
                Some(tls) => {
                    let incoming = crate::tls::incoming(l, tls, telemetry, handshakes);
                    routes.serve_with_incoming_shutdown(incoming, shutdown).await
                }
            };
            if let Err(e) = served {
                tracing::error!("gRPC import server stopped: {e}");
            }
        })
    });
    tokio::spawn(crate::tls::watch(reloading, telemetry.clone(), stop_rx.clone()));
    let forwarder = match forwarder {
        Some(f) => Some(f),
        None if config.is_local() => router.map(|r| r as Arc<dyn Forward>),
        None => None,
    };
    let imports_acked = grpc_task.is_some() && !config.proxy;

    let stats = match config.stats_address.as_str() {
        "" => None,
        a => {
            let target = crate::config::parse_socket_addr(a).map_err(|message| ServerError::Sink {
                name: "stats_address".to_string(),
                message,
            })?;
            Some(StatsClient::new(target).map_err(|e| ServerError::Sink {
                name: "stats_address".to_string(),
                message: e.to_string(),
            })?)
        }
    };
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
        stats,
    });
    let flush_task = tokio::spawn(flusher.clone().run(stop_rx.clone()));
    let flush_on_shutdown = config.flush_on_shutdown;
    let interval = config.interval;

    let mut wait_stop = stop_rx;
    let done = tokio::spawn(async move {
        crate::shutdown::stopped(&mut wait_stop).await;
        // 1. Stop reading; readers hand on what they already read.
        stop_flag.store(true, Ordering::Relaxed);
        for r in running {
            match r {
                Running::Threads(threads) => {
                    let _ = tokio::task::spawn_blocking(move || {
                        for t in threads {
                            let _ = t.join();
                        }
                    })
                    .await;
                }
                Running::Attached => {}
                Running::Task(task) => {
                    // Connections drain for at most a second; this bound is a second line of defence.
                    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
                }
            }
        }
        // 2. Every batch read reaches its shard.
        drop(ingest);
        pipeline.sync().await;
        let _ = flush_task.await;
        // 3. The final flush, bounded by one interval and the sinks' request timeout (a request under way is not
        // cut; what fails goes to the retry queue, and to `retry_queue_dir` when set).
        if flush_on_shutdown {
            let mut tasks = JoinSet::new();
            flusher.flush_once(&mut tasks).await;
            let slack = flusher
                .sinks
                .iter()
                .map(|s| s.request_timeout())
                .max()
                .unwrap_or_default();
            let _ = tokio::time::timeout(interval + slack, async { while tasks.join_next().await.is_some() {} }).await;
        }
        drop(flusher);
        // Senders waiting to hear what is flushed get their answer; then the import server stops (imports were
        // refused since the stop began).
        acks.close();
        let _ = grpc_stop_tx.send(true);
        if let Some(t) = grpc_task {
            let _ = tokio::time::timeout(interval.max(Duration::from_secs(1)), t).await;
        }
        // 4. Stop the workers.
        let _ = tokio::task::spawn_blocking(move || pipeline.stop()).await;
        if let Some(t) = http_task {
            let _ = t.await;
        }
    });

    Ok(RunningServer {
        addresses,
        http_address,
        grpc_address,
        telemetry,
        stop: stop_tx,
        done,
    })
}
