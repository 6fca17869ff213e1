//! Sending a batch: one pooled HTTP client per destination, and the verdict on each answer
//! (delivered, retry, or give up) that the worker acts on.

pub mod breaker;
pub mod dlq;
pub mod pace;
pub mod request;
pub mod retry;
pub mod signing;
pub mod tls;

use crate::api::HttpMethod;
use crate::egress::Egress;
use crate::egress::client::GuardedClient;
use crate::egress::connector::GuardedConnector;
use crate::root_cause;
use bytes::Bytes;
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
        match (self.status, self.verdict()) {
            (None | Some(408), _) => breaker::Health::Down,
            (Some(s), _) if s >= 500 => breaker::Health::Down,
            (Some(_), Verdict::GiveUp) => breaker::Health::Refused,
            (Some(_), _) => breaker::Health::Up,
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

type HyperClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<GuardedConnector>,
    http_body_util::Full<Bytes>,
>;

/// One destination's HTTP client: keep-alive connections shared by all its requests.
#[derive(Clone)]
pub struct HttpSender {
    transport: Transport,
    timeout: Duration,
}

#[derive(Clone)]
enum Transport {
    /// hyper's pooled client: half the instructions per request of reqwest's (callgrind), which
    /// wraps it in redirect handling and parses the URL again twice per request.
    Direct(std::sync::Arc<HyperClient>),
    /// Through an egress proxy (`HTTPS_PROXY` or `ALL_PROXY`, with `NO_PROXY`): reqwest, which
    /// speaks to proxies.
    Proxied(GuardedClient),
}

/// Why a client cannot be built: its TLS settings.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(String);

/// An exchange that failed before an answer: the message, and whether connecting failed.
struct Failed {
    message: String,
    connect: bool,
}

/// The parts of an answer delivery looks at.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: Bytes,
}

impl HttpSender {
    /// `tls`: the destination's own TLS settings, when it has any (checked when it was loaded).
    /// Every connection passes `egress`, the guard of this process (API §11).
    pub fn new(
        concurrency: usize,
        timeout: Duration,
        tls: Option<&tls::TlsSettings>,
        egress: &Egress,
    ) -> Result<Self, ClientError> {
        let config = tls
            .cloned()
            .unwrap_or_default()
            .client_config()
            .map_err(|e| ClientError(e.to_string()))?;
        let connect_timeout = timeout.min(Duration::from_secs(10));
        let transport = if egress.proxy().is_some() {
            let mut config = config;
            // hyper's connector offers the protocols itself; reqwest takes them from here.
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            // A redirected webhook is a misconfigured one: following it would re-send a signed
            // payload elsewhere (and turn a POST into a GET). The guard never follows; the 3xx
            // is reported.
            let client = GuardedClient::new(egress, |b| {
                b.use_preconfigured_tls(config)
                    .connect_timeout(connect_timeout)
                    .pool_max_idle_per_host(concurrency.max(1))
                    .tcp_nodelay(true)
            })
            .map_err(|e| ClientError(root_cause(&e)))?;
            Transport::Proxied(client)
        } else {
            let http = GuardedConnector::new(egress, |http| {
                http.enforce_http(false);
                http.set_nodelay(true);
                http.set_connect_timeout(Some(connect_timeout));
            });
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http);
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_max_idle_per_host(concurrency.max(1))
                    .build(https);
            Transport::Direct(std::sync::Arc::new(client))
        };
        Ok(HttpSender { transport, timeout })
    }

    pub async fn send(&self, req: &OutgoingRequest) -> Attempt {
        let started = Instant::now();
        let exchanged = tokio::time::timeout(self.timeout, self.exchange(req)).await;
        let latency = started.elapsed();
        let failed = |error: String| Attempt {
            status: None,
            error: Some(format!("{}: {error}", req.url)),
            body_excerpt: String::new(),
            latency,
            retry_after: None,
        };
        match exchanged {
            Err(_) => failed("timed out".into()),
            Ok(Err(Failed { message, connect })) if connect => {
                failed(format!("cannot connect: {message}"))
            }
            Ok(Err(Failed { message, .. })) => failed(message),
            Ok(Ok(answer)) => {
                let body = &answer.body;
                let mut body_excerpt =
                    String::from_utf8_lossy(&body[..body.len().min(EXCERPT)]).into_owned();
                if body.len() > EXCERPT {
                    body_excerpt.push('…');
                }
                Attempt {
                    status: Some(answer.status),
                    error: None,
                    body_excerpt,
                    latency,
                    retry_after: answer.retry_after,
                }
            }
        }
    }

    async fn exchange(&self, req: &OutgoingRequest) -> Result<Answer, Failed> {
        let method = match req.method {
            HttpMethod::Post => http::Method::POST,
            HttpMethod::Put => http::Method::PUT,
            HttpMethod::Patch => http::Method::PATCH,
        };
        match &self.transport {
            Transport::Direct(client) => {
                let headers = req.http_headers().map_err(|e| Failed {
                    message: e.to_string(),
                    connect: false,
                })?;
                let mut request = http::Request::new(http_body_util::Full::new(req.body.clone()));
                *request.method_mut() = method;
                *request.uri_mut() = req.uri.clone();
                *request.headers_mut() = headers;
                let response = client.request(request).await.map_err(|e| Failed {
                    connect: e.is_connect(),
                    message: root_cause(&e),
                })?;
                let (parts, body) = response.into_parts();
                let body = http_body_util::BodyExt::collect(body)
                    .await
                    .map_err(|e| Failed {
                        message: root_cause(&e),
                        connect: false,
                    })?
                    .to_bytes();
                Ok(Answer {
                    status: parts.status.as_u16(),
                    retry_after: retry_after(&parts.headers),
                    body,
                })
            }
            Transport::Proxied(client) => {
                let mut request = client
                    .request(method, req.url.clone())
                    .header(http::header::USER_AGENT, request::USER_AGENT)
                    .body(req.body.clone());
                for h in req.headers() {
                    request = request.header(h.name.as_str(), h.value.as_str());
                }
                let built = request.build().map_err(|e| Failed {
                    connect: false,
                    message: root_cause(&e),
                })?;
                let response = client.execute(built).await.map_err(|e| Failed {
                    connect: e.is_connect(),
                    message: e.to_string(),
                })?;
                let status = response.status().as_u16();
                let retry_after = retry_after(response.headers());
                let body = response.bytes().await.map_err(|e| Failed {
                    connect: false,
                    message: root_cause(&e),
                })?;
                Ok(Answer {
                    status,
                    retry_after,
                    body,
                })
            }
        }
    }
}

fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry::parse_retry_after(v, chrono::Utc::now()))
}
