//! The OTLP source: `otlp_listen_addresses`, OTLP/HTTP (`POST /v1/metrics`, protobuf, optionally gzip) and
//! OTLP/gRPC (`MetricsService/Export`), plain or TLS (`otlp_tls`). Each request is converted
//! ([`super::convert`]) and its series handed to the shards by their key, as a global's imports are, so that they
//! meet the DogStatsD lines of the same series.
//!
//! What the specification names for a request that cannot be taken: over HTTP 400 (not protobuf, or a bad
//! gzip body), 413 (larger than `otlp_max_request_bytes`, before or after gzip), 415 (another content type, JSON
//! included: not supported), 405 (another method), 404 (another path), 503 while the server stops; over gRPC
//! `INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED` and `UNAVAILABLE`. Points that cannot be taken in a request that can
//! are answered in `partial_success`. Every request is counted by transport and result, every point by type.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prost::Message;
use tokio::sync::watch;

use super::convert::{Converter, Outcome, POINT_TYPES};
use super::proto::collector::metrics::v1::metrics_service_server::{MetricsService, MetricsServiceServer};
use super::proto::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use crate::pipeline::{Pipeline, ShardMsg, ShardSender};
use crate::telemetry::catalog::{OTLP_POINTS, OTLP_REJECTED_POINTS, OTLP_REQUESTS};
use crate::telemetry::{LimitedLog, Telemetry};
use crate::tls::ReloadingServer;

static LOG: LimitedLog = LimitedLog::new("otlp");

/// What every OTLP endpoint shares: the conversion (and its cumulative streams), the shards, the limits.
pub struct Receiver {
    converter: Converter,
    shards: Vec<ShardSender>,
    telemetry: Arc<Telemetry>,
    /// `otlp_max_request_bytes`.
    max_bytes: usize,
    stop: watch::Receiver<bool>,
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error answer.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

impl Receiver {
    pub fn new(
        converter: Converter,
        shards: Vec<ShardSender>,
        telemetry: Arc<Telemetry>,
        max_bytes: usize,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Receiver {
            converter,
            shards,
            telemetry,
            max_bytes,
            stop,
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Takes a decoded request: its series to the shards, its counts to the self-metrics; the answer.
    pub fn export(
        &self,
        request: &ExportMetricsServiceRequest,
        transport: &'static str,
    ) -> ExportMetricsServiceResponse {
        let outcome = self.converter.convert(request);
        self.count(&outcome, transport);
        let rejected = outcome.rejected_points();
        let Outcome { entries, message, .. } = outcome;
        let n = self.shards.len().max(1);
        let mut per_shard: Vec<Vec<_>> = (0..n).map(|_| Vec::new()).collect();
        for e in entries {
            per_shard[Pipeline::shard_of(e.hash, n)].push(e);
        }
        for (shard, entries) in self.shards.iter().zip(per_shard) {
            if !entries.is_empty() {
                shard.send(ShardMsg::Import(entries));
            }
        }
        self.request_result(transport, "ok");
        let partial_success = (rejected > 0).then(|| {
            LOG.log(|| format!("{transport}: {rejected} data point(s) rejected; {message}"));
            ExportMetricsPartialSuccess {
                rejected_data_points: rejected as i64,
                error_message: message,
            }
        });
        ExportMetricsServiceResponse { partial_success }
    }

    fn count(&self, outcome: &Outcome, transport: &'static str) {
        let t = format!("transport:{transport}");
        for (kind, &n) in POINT_TYPES.iter().zip(&outcome.points) {
            if n > 0 {
                let ty = format!("type:{kind}");
                self.telemetry.add(&OTLP_POINTS, &[&t, &ty], n);
            }
        }
        for (reason, n) in &outcome.rejected {
            let r = format!("reason:{reason}");
            self.telemetry.add(&OTLP_REJECTED_POINTS, &[&t, &r], *n);
        }
    }

    fn request_result(&self, transport: &'static str, result: &str) {
        let t = format!("transport:{transport}");
        let r = format!("result:{result}");
        self.telemetry.add(&OTLP_REQUESTS, &[&t, &r], 1);
    }
}

/// An OTLP/HTTP error answer: the status and a `google.rpc.Status` body saying why.
fn refuse(receiver: &Receiver, status: StatusCode, result: &str, why: String) -> Response {
    receiver.request_result("http", result);
    LOG.log(|| format!("http: request refused ({status}): {why}"));
    // gRPC codes: 3 INVALID_ARGUMENT, 8 RESOURCE_EXHAUSTED, 14 UNAVAILABLE.
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => 8,
        StatusCode::SERVICE_UNAVAILABLE => 14,
        _ => 3,
    };
    let body = RpcStatus { code, message: why }.encode_to_vec();
    (status, [(header::CONTENT_TYPE, "application/x-protobuf")], body).into_response()
}

/// `POST /v1/metrics`.
async fn http_export(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: axum::body::Body) -> Response {
    if receiver.stopping() {
        let why = "the server is stopping".to_string();
        return refuse(&receiver, StatusCode::SERVICE_UNAVAILABLE, "stopping", why);
    }
    // Read up to the limit only: a larger body is refused without being held. (A body cut off by the client
    // ends here too; its answer reaches no one.)
    let body: Bytes = match axum::body::to_bytes(body, receiver.max_bytes).await {
        Ok(b) => b,
        Err(e) => {
            let why = format!(
                "no body within {} bytes (config key `otlp_max_request_bytes`): {e}",
                receiver.max_bytes
            );
            return refuse(&receiver, StatusCode::PAYLOAD_TOO_LARGE, "too_large", why);
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/x-protobuf") {
        let why = format!("content type {content_type:?}: only application/x-protobuf is taken (not JSON)");
        return refuse(
            &receiver,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            why,
        );
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    let body = match encoding {
        "identity" | "" => body.to_vec(),
        "gzip" => {
            let mut out = Vec::new();
            let limit = receiver.max_bytes as u64 + 1;
            match flate2::read::GzDecoder::new(&body[..])
                .take(limit)
                .read_to_end(&mut out)
            {
                Ok(_) if out.len() > receiver.max_bytes => {
                    let why = format!(
                        "more than {} bytes once decompressed (config key `otlp_max_request_bytes`)",
                        receiver.max_bytes
                    );
                    return refuse(&receiver, StatusCode::PAYLOAD_TOO_LARGE, "too_large", why);
                }
                Ok(_) => out,
                Err(e) => {
                    return refuse(
                        &receiver,
                        StatusCode::BAD_REQUEST,
                        "bad_gzip",
                        format!("bad gzip body: {e}"),
                    )
                }
            }
        }
        other => {
            let why = format!("content encoding {other:?}: only gzip is taken");
            return refuse(
                &receiver,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                why,
            );
        }
    };
    let request = match ExportMetricsServiceRequest::decode(&body[..]) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                &receiver,
                StatusCode::BAD_REQUEST,
                "bad_protobuf",
                format!("not an OTLP request: {e}"),
            )
        }
    };
    let answer = tokio::task::block_in_place(|| receiver.export(&request, "http"));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        answer.encode_to_vec(),
    )
        .into_response()
}

/// Serves OTLP/HTTP on `listener` (TLS with `tls`) until `stop`.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<ReloadingServer>>,
    receiver: Arc<Receiver>,
    telemetry: Arc<Telemetry>,
    mut stop: watch::Receiver<bool>,
) {
    // The handler reads the body against `otlp_max_request_bytes` itself (and counts what it refuses).
    let app = axum::Router::new()
        .route("/v1/metrics", axum::routing::post(http_export))
        .layer(DefaultBodyLimit::disable())
        .with_state(receiver);
    let handshakes = stop.clone();
    let stopped = async move { crate::shutdown::stopped(&mut stop).await };
    let served = match tls {
        None => axum::serve(listener, app).with_graceful_shutdown(stopped).await,
        Some(tls) => {
            let addr = listener
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
            let incoming = crate::tls::incoming(listener, tls, telemetry, handshakes);
            let listener = TlsListener { incoming, addr };
            axum::serve(listener, app).with_graceful_shutdown(stopped).await
        }
    };
    if let Err(e) = served {
        tracing::error!("OTLP/HTTP server stopped: {e}");
    }
}

/// Handshaken TLS connections as an axum listener.
struct TlsListener {
    incoming:
        tokio_stream::wrappers::ReceiverStream<std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>>,
    addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use tokio_stream::StreamExt;
        loop {
            match self.incoming.next().await {
                Some(Ok(stream)) => {
                    let peer = stream.get_ref().0.peer_addr().unwrap_or(self.addr);
                    return (stream, peer);
                }
                Some(Err(_)) => continue,
                // The stop signal ended the handshakes: wait for the graceful shutdown to end the server.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// The gRPC `MetricsService`.
struct Grpc(Arc<Receiver>);

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        if self.0.stopping() {
            self.0.request_result("grpc", "stopping");
            return Err(tonic::Status::unavailable("the server is stopping"));
        }
        let request = request.into_inner();
        let answer = tokio::task::block_in_place(|| self.0.export(&request, "grpc"));
        Ok(tonic::Response::new(answer))
    }
}

/// Serves OTLP/gRPC on `listener` (TLS with `tls`) until `stop`.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<ReloadingServer>>,
    receiver: Arc<Receiver>,
    telemetry: Arc<Telemetry>,
    mut stop: watch::Receiver<bool>,
) {
    let limit = receiver.max_bytes;
    let service = MetricsServiceServer::new(Grpc(receiver))
        .max_decoding_message_size(limit)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let routes = tonic::transport::Server::builder().add_service(service);
    let handshakes = stop.clone();
    let shutdown = async move { crate::shutdown::stopped(&mut stop).await };
    let served = match tls {
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            routes.serve_with_incoming_shutdown(incoming, shutdown).await
        }
        Some(tls) => {
            let incoming = crate::tls::incoming(listener, tls, telemetry, handshakes);
            routes.serve_with_incoming_shutdown(incoming, shutdown).await
        }
    };
    if let Err(e) = served {
        tracing::error!("OTLP/gRPC server stopped: {e}");
    }
}
