//! Building the HTTP request for a batch: method, URL, headers (secret values marked so they can
//! be redacted), credentials, the stable request id and signature. Shared by delivery, `render`
//! and `test`, so what `render` shows is exactly what is sent.

use super::signing::Signer;
use crate::api::HttpMethod;
use sha2::Digest;
use std::sync::Arc;
use std::time::Duration;

pub const REDACTED: &str = "[redacted]";

#[derive(Debug, Clone)]
pub struct HeaderEntry {
    pub name: String,
    pub value: String,
    pub secret: bool,
}

/// Where and how a destination's requests are sent; built once per destination.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    pub method: HttpMethod,
    pub url: reqwest::Url,
    pub headers: Vec<HeaderEntry>,
    pub bearer_token: Option<String>,
    pub signer: Option<Signer>,
    pub timeout: Duration,
    /// `spec.endpoint.tls`, read from its Secrets: a rotation swaps it with the rest.
    pub tls: Option<Arc<super::tls::TlsSettings>>,
}

#[derive(Debug, Clone)]
pub struct OutgoingRequest {
    pub method: HttpMethod,
    pub url: reqwest::Url,
    pub headers: Vec<HeaderEntry>,
    pub body: bytes::Bytes,
}

impl RequestTemplate {
    /// `id` is stable across retries of the same batch, so receivers can deduplicate.
    pub fn build(&self, id: &str, body: bytes::Bytes, timestamp: i64) -> OutgoingRequest {
        let mut headers = self.headers.clone();
        if !headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("content-type"))
        {
            headers.push(HeaderEntry {
                name: "Content-Type".into(),
                value: "application/json".into(),
                secret: false,
            });
        }
        if let Some(token) = &self.bearer_token {
            headers.push(HeaderEntry {
                name: "Authorization".into(),
                value: format!("Bearer {token}"),
                secret: true,
            });
        }
        headers.push(HeaderEntry {
            name: "Idempotency-Key".into(),
            value: id.to_string(),
            secret: false,
        });
        if let Some(signer) = &self.signer {
            for (name, value) in signer.headers(id, timestamp, &body) {
                headers.push(HeaderEntry {
                    name: name.into(),
                    value,
                    secret: false,
                });
            }
        }
        OutgoingRequest {
            method: self.method,
            url: self.url.clone(),
            headers,
            body,
        }
    }
}

/// The request id of a batch: the event's `messageId` when it carries one event, otherwise a
/// digest of all the ids, so the same batch always gets the same id.
pub fn request_id(message_ids: &[&str]) -> String {
    match message_ids {
        [one] if !one.is_empty() => one.to_string(),
        many => {
            let mut h = sha2::Sha256::new();
            for id in many {
                h.update(id.as_bytes());
                h.update([0]);
            }
            format!("batch_{}", &hex::encode(h.finalize())[..32])
        }
    }
}

impl OutgoingRequest {
    /// Adds an OAuth 2.0 access token, fetched just before the attempt.
    pub fn authorize(&mut self, access_token: &str) {
        self.headers.push(HeaderEntry {
            name: "Authorization".into(),
            value: format!("Bearer {access_token}"),
            secret: true,
        });
    }

    /// Sends the W3C `traceparent` on, so the receiver's trace continues the event's.
    pub fn continue_trace(&mut self, traceparent: String) {
        self.headers.push(HeaderEntry {
            name: crate::telemetry::TRACEPARENT.into(),
            value: traceparent,
            secret: false,
        });
    }

    /// The request as `render -o json` shows it: secrets redacted, the body as parsed JSON.
    pub fn to_redacted_json(&self) -> serde_json::Value {
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.clone(),
                    serde_json::Value::String(if h.secret {
                        REDACTED.into()
                    } else {
                        h.value.clone()
                    }),
                )
            })
            .collect();
        let body = serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&self.body).into_owned())
        });
        serde_json::json!({"method": self.method.as_str(), "url": self.url.as_str(), "headers": headers, "body": body})
    }

    /// The request as an HTTP/1.1 message for people to read, secrets redacted.
    pub fn to_redacted_text(&self) -> String {
        let mut out = format!("{} {}\n", self.method.as_str(), self.url);
        for h in &self.headers {
            out.push_str(&format!(
                "{}: {}\n",
                h.name,
                if h.secret { REDACTED } else { &h.value }
            ));
        }
        out.push('\n');
        match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(v) => out.push_str(&serde_json::to_string_pretty(&v).unwrap_or_default()),
            Err(_) => out.push_str(&String::from_utf8_lossy(&self.body)),
        }
        out.push('\n');
        out
    }
}
