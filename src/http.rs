//! A small HTTP/1.1 server for `GET /healthcheck` (200 `ok`, or 503 when unhealthy), `GET /version` and
//! `GET /metrics` (the self-metrics in Prometheus' text format).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Whether this instance can do its job (`/healthcheck` answers 503 when not; a proxy with no reachable global).
pub type Health = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// Serves until `stop` is raised.
pub async fn serve(
    listener: TcpListener,
    health: Health,
    telemetry: std::sync::Arc<crate::telemetry::Telemetry>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = crate::shutdown::stopped(&mut stop) => return,
            accepted = listener.accept() => {
                if let Ok((conn, _)) = accepted {
                    let healthy = health();
                    let telemetry = telemetry.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(5), respond(conn, healthy, &telemetry)).await;
                    });
                }
            }
        }
    }
}

async fn respond(
    mut conn: tokio::net::TcpStream,
    healthy: bool,
    telemetry: &crate::telemetry::Telemetry,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    // Read the request head (we need only its first line), at most 8 KiB.
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        if buf.len() > 8192 || conn.read_buf(&mut buf).await? == 0 {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let mut content_type = "text/plain";
    let (status, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            content_type = "text/plain; version=0.0.4; charset=utf-8";
            ("200 OK", telemetry.prometheus_text())
        }
        ("GET" | "HEAD", "/healthcheck") if healthy => ("200 OK", "ok\n".to_string()),
        ("GET" | "HEAD", "/healthcheck") => ("503 Service Unavailable", "no reachable global\n".to_string()),
        ("GET" | "HEAD", "/version") => ("200 OK", format!("{}\n", crate::VERSION)),
        ("GET" | "HEAD", _) => ("404 Not Found", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "method not allowed\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        if method == "HEAD" { "" } else { body.as_str() }
    );
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}
