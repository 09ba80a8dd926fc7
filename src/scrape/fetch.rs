//! One HTTP read of a target, bounded in time (`timeout`, connection included) and in size (`max_body_bytes`,
//! checked as the body arrives, so an enormous body is abandoned at the limit instead of being held).

use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT};

use crate::config::ScrapeConfig;

/// What the scrape asks for: the text format first (what every exporter serves), OpenMetrics text too.
const ACCEPT_FORMATS: &str = "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1";

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("the body is over {0} bytes (prometheus_scrape[].max_body_bytes)")]
    TooLarge(usize),
    #[error("{0}")]
    Request(String),
}

impl FetchError {
    /// The reason, as a tag value.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::Timeout(_) => "timeout",
            FetchError::Status(_) => "status",
            FetchError::TooLarge(_) => "too_large",
            FetchError::Request(_) => "request",
        }
    }
}

/// The HTTP client of one `prometheus_scrape` entry.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    timeout: Duration,
    max_body: usize,
}

impl Fetcher {
    /// The client for entry `key` (`prometheus_scrape[i]`): its headers, TLS files, timeout and size bound.
    pub fn new(key: &str, cfg: &ScrapeConfig) -> Result<Fetcher, String> {
        let mut headers = cfg
            .headers
            .header_map()
            .map_err(|name| format!("{key}.headers: {name} is not a valid HTTP header"))?;
        headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_FORMATS));
        let timeout = cfg.timeout();
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(timeout)
            .pool_idle_timeout(cfg.interval + Duration::from_secs(5))
            .user_agent(concat!("harrier/", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = &cfg.tls {
            crate::tls::install_provider();
            let config = crate::tls::https_client_config(&format!("{key}.tls"), tls).map_err(|e| e.to_string())?;
            builder = builder.tls_backend_preconfigured(config);
        }
        let client = builder
            .build()
            .map_err(|e| format!("{key}: cannot build the HTTP client: {e}"))?;
        Ok(Fetcher {
            client,
            timeout,
            max_body: cfg.max_body_bytes,
        })
    }

    /// Reads `url`'s body as text (bytes that are not UTF-8 are replaced, so the rest is still read).
    pub async fn fetch(&self, url: &str) -> Result<String, FetchError> {
        match tokio::time::timeout(self.timeout, self.read(url)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout(self.timeout)),
        }
    }

    async fn read(&self, url: &str) -> Result<String, FetchError> {
        let request_error = |e: reqwest::Error| FetchError::Request(without_url(&e));
        let mut response = self.client.get(url).send().await.map_err(request_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        if response.content_length().is_some_and(|n| n > self.max_body as u64) {
            return Err(FetchError::TooLarge(self.max_body));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(FetchError::TooLarge(self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(match String::from_utf8(body) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}

/// reqwest's error text with its source chain.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
