//! A fake Datadog intake on 127.0.0.1: a small HTTP/1.1 server (keep-alive) that checks nothing itself but
//! records every request (path, headers, decompressed body) and answers with what the test's policy says.
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
    /// The body, inflated when `Content-Encoding: deflate`.
    pub body: Vec<u8>,
    pub raw_body_len: usize,
}

impl Request {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// What to answer: a status, or no answer at all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reply {
    Status(u16),
    Hang,
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

    /// Answers 202 to everything.
    pub async fn accepting() -> Intake {
        Intake::start(|_, _| Reply::Status(202)).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
        let body = if headers.get("content-encoding").map(String::as_str) == Some("deflate") {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .expect("a deflate body is a valid zlib stream");
            out
        } else {
            raw.clone()
        };
        let req = Request {
            method,
            path,
            headers,
            body,
            raw_body_len: raw.len(),
        };
        let index = {
            let mut r = recorded.lock().unwrap();
            r.push(req.clone());
            r.len() - 1
        };
        match policy(&req, index) {
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
        }
    }
}
