//! Real time-series databases on a loopback port, for the remote-write sink: Debian's `prometheus` (with its
//! remote-write receiver on) and `victoria-metrics`, each with its own temporary storage, stopped on drop.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::{free_port, temp_dir};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const VICTORIA_METRICS: &str = "/usr/bin/victoria-metrics";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Prometheus,
    VictoriaMetrics,
}

/// A running database; killed (and its storage removed) on drop.
pub struct Tsdb {
    child: Child,
    pub kind: Kind,
    pub port: u16,
    /// Removed when dropped, after the child is stopped (fields drop after `drop`).
    dir: super::Scratch,
    client: reqwest::Client,
}

fn require(bin: &str, package: &str) {
    assert!(
        std::path::Path::new(bin).exists(),
        "{bin} is missing: the remote-write sink's tests need it (`apt-get install -y {package}`; .ci/run installs \
         it on a fresh machine)"
    );
}

impl Tsdb {
    /// Prometheus with `--web.enable-remote-write-receiver` and no scrape targets.
    pub async fn prometheus() -> Tsdb {
        Tsdb::prometheus_scraping(None).await
    }

    /// Prometheus, scraping `target` (`host:port`, path `/metrics`) every 500 ms as job `harrier` if given.
    pub async fn prometheus_scraping(target: Option<&str>) -> Tsdb {
        require(PROMETHEUS, "prometheus");
        let dir = temp_dir("prometheus");
        let config = dir.join("prometheus.yml");
        let scrape = match target {
            Some(t) => format!(
                "scrape_configs:\n  - job_name: harrier\n    scrape_interval: 500ms\n    scrape_timeout: 400ms\n    \
                 static_configs:\n      - targets: [\"{t}\"]\n"
            ),
            None => "scrape_configs: []\n".to_string(),
        };
        std::fs::write(&config, format!("global:\n  scrape_interval: 1h\n{scrape}")).unwrap();
        let port = free_port();
        let child = Command::new(PROMETHEUS)
            .args([
                &format!("--config.file={}", config.display()),
                &format!("--storage.tsdb.path={}", dir.join("data").display()),
                &format!("--web.listen-address=127.0.0.1:{port}"),
                "--web.enable-remote-write-receiver",
                "--log.level=warn",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Tsdb::ready(child, Kind::Prometheus, port, dir, "/-/ready").await
    }

    /// VictoriaMetrics, answering queries with the newest samples (no latency offset).
    pub async fn victoria_metrics() -> Tsdb {
        require(VICTORIA_METRICS, "victoria-metrics");
        let dir = temp_dir("victoria-metrics");
        let port = free_port();
        let child = Command::new(VICTORIA_METRICS)
            .args([
                &format!("-storageDataPath={}", dir.join("data").display()),
                &format!("-httpListenAddr=127.0.0.1:{port}"),
                "-search.latencyOffset=0s",
                "-search.disableCache",
                "-loggerLevel=ERROR",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics starts");
        Tsdb::ready(child, Kind::VictoriaMetrics, port, dir, "/health").await
    }

    async fn ready(child: Child, kind: Kind, port: u16, dir: super::Scratch, path: &str) -> Tsdb {
        let tsdb = Tsdb {
            child,
            kind,
            port,
            dir,
            client: reqwest::Client::new(),
        };
        let url = format!("http://127.0.0.1:{port}{path}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = tsdb.client.get(&url).send().await {
                if r.status().is_success() {
                    return tsdb;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{kind:?} did not become ready on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The remote-write endpoint.
    pub fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// An instant PromQL query at the current time: the `data.result` vector.
    pub async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let url = format!("http://127.0.0.1:{}/api/v1/query?query={encoded}&nocache=1", self.port);
        let resp = self.client.get(&url).send().await.expect("query answered");
        let bytes = resp.bytes().await.expect("query body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The single value a query answers, if it answers exactly one series.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql).await;
        match result.as_slice() {
            [one] => one["value"][1].as_str().and_then(|v| v.parse().ok()),
            _ => None,
        }
    }
}

impl Drop for Tsdb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
