//! A fake Datadog intake on 127.0.0.1: a small HTTP/1.1 server (keep-alive) that checks nothing itself but
//! records every request (path, headers, decompressed body: deflate, zstd or gzip) and answers with what the test's
//! policy says (a status, with a `Retry-After` header or a protobuf body if asked).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Lower-case header names.
    pub headers: HashMap<String, String>,
    /// The body, decompressed per its `Content-Encoding` (deflate, zstd, gzip).
    pub body: Vec<u8>,
    pub raw_body_len: usize,
    /// When its body was read.
    pub at: std::time::Instant,
}

impl Request {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// The series points of a `/api/v1/series` (JSON) or `/api/v2/series` (the agent's `MetricPayload`) body;
    /// empty for any other path.
    pub fn points(&self) -> Vec<Point> {
        match self.path.as_str() {
            "/api/v1/series" => {
                let json = self.json();
                let series = json["series"].as_array().expect("a series array").clone();
                series
                    .iter()
                    .map(|s| Point {
                        metric: s["metric"].as_str().expect("metric").to_string(),
                        tags: s["tags"]
                            .as_array()
                            .map(|t| t.iter().map(|t| t.as_str().unwrap().to_string()).collect())
                            .unwrap_or_default(),
                        host: s["host"].as_str().map(str::to_string),
                        device: s["device"].as_str().map(str::to_string),
                        value: s["points"][0][1].as_f64().expect("a value"),
                        kind: s["type"].as_str().expect("type").to_string(),
                        interval: s["interval"].as_i64().unwrap_or(0),
                        timestamp: s["points"][0][0].as_i64().expect("a timestamp"),
                    })
                    .collect()
            }
            "/api/v2/series" => {
                use harrier::sink::datadog::payload::{metric_payload::MetricType, MetricPayload};
                use prost::Message;
                assert_eq!(
                    self.headers.get("content-type").map(String::as_str),
                    Some("application/x-protobuf")
                );
                let p = MetricPayload::decode(&self.body[..]).expect("a MetricPayload");
                p.series
                    .into_iter()
                    .map(|s| {
                        assert_eq!(s.points.len(), 1, "one point per series");
                        let resource =
                            |kind: &str| s.resources.iter().find(|r| r.r#type == kind).map(|r| r.name.clone());
                        Point {
                            host: resource("host"),
                            device: resource("device"),
                            kind: match s.r#type() {
                                MetricType::Gauge => "gauge",
                                MetricType::Rate => "rate",
                                MetricType::Count => "count",
                                MetricType::Unspecified => "unspecified",
                            }
                            .to_string(),
                            metric: s.metric,
                            tags: s.tags,
                            value: s.points[0].value,
                            interval: s.interval,
                            timestamp: s.points[0].timestamp,
                        }
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

/// What to answer: a status, no answer at all, or a status after a delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reply {
    Status(u16),
    Hang,
    After(Duration, u16),
    /// A status with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// A status with this body as `application/x-protobuf`.
    Body(u16, &'static [u8]),
}

/// One series point as the intake received it, from a v1 JSON or a v2 protobuf body.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub metric: String,
    pub tags: Vec<String>,
    pub host: Option<String>,
    pub device: Option<String>,
    pub value: f64,
    /// `gauge`, `rate` or `count`.
    pub kind: String,
    /// 0 when absent.
    pub interval: i64,
    pub timestamp: i64,
}

impl Point {
    /// What the point stands for over its interval: a rate times its interval, else the value.
    pub fn total(&self) -> f64 {
        if self.kind == "rate" {
            self.value * self.interval as f64
        } else {
            self.value
        }
    }
}

type Policy = Arc<dyn Fn(&Request, usize) -> Reply + Send + Sync>;

/// A running fake intake.
pub struct Intake {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Request>>>,
}

impl Intake {
    /// Starts an intake; `policy` gets each request and its index (0-based, over all paths).
    pub async fn start(policy: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> Intake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Intake::serve_listener(listener, policy)
    }

    fn serve_listener(
        listener: TcpListener,
        policy: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static,
    ) -> Intake {
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let policy: Policy = Arc::new(policy);
        let recorded = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else { return };
                let recorded = recorded.clone();
                let policy = policy.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, recorded, policy).await;
                });
            }
        });
        Intake { addr, requests }
    }

    /// Starts an intake on `addr` (a port a test kept closed until now, to refuse connections meanwhile).
    pub async fn start_on(
        addr: SocketAddr,
        policy: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static,
    ) -> Intake {
        let listener = TcpListener::bind(addr).await.expect("the intake's port is free again");
        Intake::serve_listener(listener, policy)
    }

    /// Answers 202 to everything.
    pub async fn accepting() -> Intake {
        Intake::start(|_, _| Reply::Status(202)).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every series point received, in order, with the index of its request.
    pub fn points(&self) -> Vec<(usize, Point)> {
        let reqs = self.requests.lock().unwrap().clone();
        reqs.iter()
            .enumerate()
            .flat_map(|(i, r)| r.points().into_iter().map(move |p| (i, p)))
            .collect()
    }

    /// Every Dogsketch received for `metric` at `/api/beta/sketches`, with its sketch's tags (as sent) and host.
    pub fn dogsketches(
        &self,
        metric: &str,
    ) -> Vec<(
        Vec<String>,
        String,
        harrier::sink::datadog::payload::sketch_payload::sketch::Dogsketch,
    )> {
        use harrier::sink::datadog::payload::SketchPayload;
        use prost::Message;
        let mut out = Vec::new();
        for r in self.requests_to("/api/beta/sketches") {
            assert_eq!(
                r.headers.get("content-type").map(String::as_str),
                Some("application/x-protobuf")
            );
            let p = SketchPayload::decode(&r.body[..]).expect("a SketchPayload");
            for s in p.sketches.into_iter().filter(|s| s.metric == metric) {
                for d in s.dogsketches {
                    out.push((s.tags.clone(), s.host.clone(), d));
                }
            }
        }
        out
    }

    /// Requests to either series endpoint.
    pub fn series_requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == "/api/v1/series" || r.path == "/api/v2/series")
            .cloned()
            .collect()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

async fn serve(
    mut conn: tokio::net::TcpStream,
    recorded: Arc<Mutex<Vec<Request>>>,
    policy: Policy,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        // Head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if conn.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split_whitespace();
        let method = first.next().unwrap_or("").to_string();
        let path = first.next().unwrap_or("").to_string();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        buf.drain(..head_end + 4);
        while buf.len() < len {
            if conn.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let raw: Vec<u8> = buf.drain(..len).collect();
        let body = match headers.get("content-encoding").map(String::as_str) {
            Some("deflate") => {
                let mut out = Vec::new();
                flate2::read::ZlibDecoder::new(&raw[..])
                    .read_to_end(&mut out)
                    .expect("a deflate body is a valid zlib stream");
                out
            }
            Some("zstd") => zstd::stream::decode_all(&raw[..]).expect("a zstd body is a valid zstd frame"),
            Some("gzip") => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&raw[..])
                    .read_to_end(&mut out)
                    .expect("a gzip body is a valid gzip stream");
                out
            }
            _ => raw.clone(),
        };
        let req = Request {
            method,
            path,
            headers,
            body,
            raw_body_len: raw.len(),
            at: std::time::Instant::now(),
        };
        let index = {
            let mut r = recorded.lock().unwrap();
            r.push(req.clone());
            r.len() - 1
        };
        let reply = match policy(&req, index) {
            Reply::After(delay, code) => {
                tokio::time::sleep(delay).await;
                Reply::Status(code)
            }
            other => other,
        };
        match reply {
            Reply::After(..) => unreachable!(),
            Reply::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
            Reply::Status(code) => {
                let body = if code < 300 {
                    "{\"status\":\"ok\"}"
                } else {
                    "{\"errors\":[\"test\"]}"
                };
                let resp = format!(
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                conn.write_all(resp.as_bytes()).await?;
            }
            Reply::RetryAfter(code, seconds) => {
                let resp = format!("HTTP/1.1 {code} X\r\nRetry-After: {seconds}\r\nContent-Length: 0\r\n\r\n");
                conn.write_all(resp.as_bytes()).await?;
            }
            Reply::Body(code, body) => {
                let head = format!(
                    "HTTP/1.1 {code} X\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                conn.write_all(head.as_bytes()).await?;
                conn.write_all(body).await?;
            }
        }
    }
}
