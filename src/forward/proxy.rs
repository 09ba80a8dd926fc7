//! The receiving side of a proxy: each stream of a local is read whole (each metric kept as the bytes received,
//! see [`super::wire`]) and handed at once to the router ([`Forwarder`] in immediate mode), which sends each metric to
//! the global that owns its series. The local's batch is safe, and acknowledged to it, only once every global it
//! was routed to has acknowledged its part.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{watch, Semaphore};
use tonic::{Request, Response, Status, Streaming};

use super::ack::{batch_id, Acks};
use super::client::Forwarder;
use super::settle::Settle;
use super::view::forward_server::Forward;
use super::view::{AcknowledgeRequest, AcknowledgeResponse, Metric, SendMetricsResponse};
use super::wire::RawBatch;
use crate::telemetry::catalog::{IMPORT_DUPLICATES, IMPORT_METRICS};
use crate::telemetry::Telemetry;

/// Most metrics accepted in one stream.
const MAX_METRICS_PER_STREAM: usize = 5_000_000;
/// Streams read at the same time; more wait.
const CONCURRENT_STREAMS: usize = 64;

/// A proxy's gRPC service.
pub struct ProxyService {
    pub router: Arc<Forwarder>,
    pub acks: Arc<Acks>,
    pub telemetry: Arc<Telemetry>,
    /// Raised at shutdown: streams still open are refused (the sender keeps their data).
    pub stop: watch::Receiver<bool>,
    permits: Semaphore,
}

impl ProxyService {
    pub fn new(
        router: Arc<Forwarder>,
        acks: Arc<Acks>,
        telemetry: Arc<Telemetry>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        ProxyService {
            router,
            acks,
            telemetry,
            stop,
            permits: Semaphore::new(CONCURRENT_STREAMS),
        }
    }

    fn response(&self, accepted: u64, duplicate: bool) -> Response<SendMetricsResponse> {
        Response::new(SendMetricsResponse {
            accepted,
            rejected: 0,
            incarnation: self.acks.incarnation,
            duplicate,
        })
    }
}

/// What a stream carries: one metric per message (decoded as a view, encoded again), or a batch whose metrics are
/// kept as the bytes received.
trait IntoRaw {
    fn into_raw(self, out: &mut Vec<Bytes>);
}

impl IntoRaw for Metric {
    fn into_raw(self, out: &mut Vec<Bytes>) {
        out.push(Bytes::from(prost::Message::encode_to_vec(&self)));
    }
}

impl IntoRaw for RawBatch {
    fn into_raw(self, out: &mut Vec<Bytes>) {
        out.extend(self.metrics);
    }
}

impl ProxyService {
    async fn receive<T: IntoRaw + Send + 'static>(
        &self,
        request: Request<Streaming<T>>,
    ) -> Result<Response<SendMetricsResponse>, Status> {
        let batch = batch_id(request.metadata());
        let mut stream = request.into_inner();
        let mut stop = self.stop.clone();
        let _permit = tokio::select! {
            _ = crate::shutdown::stopped(&mut stop) => return Err(Status::unavailable("shutting down")),
            p = self.permits.acquire() => p.map_err(|_| Status::unavailable("shutting down"))?,
        };
        let mut metrics = Vec::new();
        loop {
            let next = tokio::select! {
                _ = crate::shutdown::stopped(&mut stop) => return Err(Status::unavailable("shutting down")),
                m = stream.message() => m?,
            };
            let Some(item) = next else { break };
            item.into_raw(&mut metrics);
            if metrics.len() > MAX_METRICS_PER_STREAM {
                return Err(Status::resource_exhausted("too many metrics in one stream"));
            }
        }
        let accepted = metrics.len() as u64;
        let settle: Option<Settle> = match batch {
            Some((sender, seq)) => {
                if !self.acks.admit(sender, seq) {
                    self.telemetry.add(&IMPORT_DUPLICATES, &[], 1);
                    return Ok(self.response(accepted, true));
                }
                let acks = self.acks.clone();
                Some(Box::new(move || acks.settle(sender, seq)))
            }
            None => None,
        };
        if !self.router.submit(metrics, settle) {
            // Not routed: the sender keeps it and tries again.
            if let Some((sender, seq)) = batch {
                self.acks.forget(sender, seq);
            }
            return Err(Status::unavailable("the proxy's routing queue is full"));
        }
        self.telemetry.add(&IMPORT_METRICS, &[], accepted);
        Ok(self.response(accepted, false))
    }
}

#[tonic::async_trait]
impl Forward for ProxyService {
    async fn send_metrics(&self, request: Request<Streaming<Metric>>) -> Result<Response<SendMetricsResponse>, Status> {
        self.receive(request).await
    }

    async fn send_metric_batches(
        &self,
        request: Request<Streaming<RawBatch>>,
    ) -> Result<Response<SendMetricsResponse>, Status> {
        self.receive(request).await
    }

    async fn acknowledge(&self, request: Request<AcknowledgeRequest>) -> Result<Response<AcknowledgeResponse>, Status> {
        let r = request.into_inner();
        let flushed_seq = self.acks.answer(r.sender, r.after_seq, r.wait_ms, r.incarnation).await;
        Ok(Response::new(AcknowledgeResponse {
            incarnation: self.acks.incarnation,
            flushed_seq,
        }))
    }
}
