//! Sending a batch: one pooled HTTP client per destination, and the verdict on each answer
//! (delivered, retry, or give up) that the worker acts on.

pub mod breaker;
pub mod dlq;
pub mod pace;
pub mod request;
pub mod retry;
pub mod signing;
pub mod tls;

use crate::root_cause;
use request::OutgoingRequest;
use std::time::{Duration, Instant};

/// What one HTTP attempt came to.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub body_excerpt: String,
    pub latency: Duration,
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Delivered,
    /// Connection errors, timeouts, 408, 429, 5xx.
    Retry,
    /// Any other answer: retrying cannot help.
    GiveUp,
}

impl Attempt {
    pub fn verdict(&self) -> Verdict {
        match self.status {
            Some(s) if (200..300).contains(&s) => Verdict::Delivered,
            None | Some(408 | 429) => Verdict::Retry,
            Some(s) if s >= 500 => Verdict::Retry,
            Some(_) => Verdict::GiveUp,
        }
    }

    /// What the answer says about the endpoint, for its circuit breaker.
    pub fn health(&self) -> breaker::Health {
        match self.status {
            None | Some(408) => breaker::Health::Down,
            Some(s) if s >= 500 => breaker::Health::Down,
            Some(_) => breaker::Health::Up,
        }
    }

    /// One line for the dead-letter store and logs.
    pub fn describe(&self) -> String {
        match (&self.status, &self.error) {
            (_, Some(e)) => e.clone(),
            (Some(s), None) if self.body_excerpt.is_empty() => format!("HTTP {s}"),
            (Some(s), None) => format!("HTTP {s}: {}", self.body_excerpt),
            (None, None) => "no answer".into(),
        }
    }
}

const EXCERPT: usize = 512;

/// One destination's HTTP client: keep-alive connections shared by all its requests.
#[derive(Clone)]
pub struct HttpSender {
    client: reqwest::Client,
}

impl HttpSender {
    /// `tls`: the destination's own TLS settings, when it has any (checked when it was loaded).
    pub fn new(
        concurrency: usize,
        timeout: Duration,
        tls: Option<&tls::TlsSettings>,
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder();
        if let Some(config) = tls.and_then(|t| t.client_config().ok()) {
            builder = builder.use_preconfigured_tls(config);
        }
        let client = builder
            // A redirected webhook is a misconfigured one: following it would re-send a signed
            // payload elsewhere (and turn a POST into a GET). The 3xx is reported instead.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(concurrency.max(1))
            .tcp_nodelay(true)
            .user_agent(concat!("hookline/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpSender { client })
    }

    pub async fn send(&self, req: &OutgoingRequest) -> Attempt {
        let method = reqwest::Method::from_bytes(req.method.as_str().as_bytes())
            .expect("POST, PUT and PATCH are valid methods");
        let mut headers = reqwest::header::HeaderMap::with_capacity(req.headers.len());
        for h in &req.headers {
            // Names and values were validated when the destination was loaded.
            if let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(h.name.as_bytes()),
                reqwest::header::HeaderValue::from_str(&h.value),
            ) {
                headers.append(name, value);
            }
        }
        let builder = self
            .client
            .request(method, req.url.clone())
            .headers(headers)
            .body(req.body.clone());
        let started = Instant::now();
        match builder.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry::parse_retry_after(v, chrono::Utc::now()));
                let body = resp.bytes().await.unwrap_or_default();
                let latency = started.elapsed();
                let mut body_excerpt =
                    String::from_utf8_lossy(&body[..body.len().min(EXCERPT)]).into_owned();
                if body.len() > EXCERPT {
                    body_excerpt.push('…');
                }
                Attempt {
                    status: Some(status),
                    error: None,
                    body_excerpt,
                    latency,
                    retry_after,
                }
            }
            Err(e) => {
                let error = if e.is_timeout() {
                    format!("{}: timed out", req.url)
                } else if e.is_connect() {
                    format!("{}: cannot connect: {}", req.url, root_cause(&e))
                } else {
                    format!("{}: {}", req.url, root_cause(&e))
                };
                Attempt {
                    status: None,
                    error: Some(error),
                    body_excerpt: String::new(),
                    latency: started.elapsed(),
                    retry_after: None,
                }
            }
        }
    }
}
