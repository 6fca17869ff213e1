//! Building the HTTP request for a batch: method, URL, headers (secret values marked so they can
//! be redacted), credentials, the stable request id and signature. Shared by delivery, `render`
//! and `test`, so what `render` shows is exactly what is sent.

use super::signing::Signer;
use crate::api::HttpMethod;
use sha2::Digest;
use std::sync::Arc;
use std::time::Duration;

pub const REDACTED: &str = "[redacted]";

pub const USER_AGENT: &str = concat!("hookline/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone)]
pub struct HeaderEntry {
    pub name: String,
    pub value: String,
    pub secret: bool,
}

/// A header that cannot be sent; never shows the value (it may be a secret).
#[derive(Debug, thiserror::Error)]
#[error("header {name:?}: {reason}")]
pub struct InvalidHeader {
    pub name: String,
    reason: String,
}

impl HeaderEntry {
    fn to_http(&self) -> Result<(http::HeaderName, http::HeaderValue), InvalidHeader> {
        let invalid = |reason: &dyn std::fmt::Display| InvalidHeader {
            name: self.name.clone(),
            reason: reason.to_string(),
        };
        let name = http::HeaderName::from_bytes(self.name.as_bytes()).map_err(|e| invalid(&e))?;
        let mut value = http::HeaderValue::from_str(&self.value).map_err(|e| invalid(&e))?;
        value.set_sensitive(self.secret);
        Ok((name, value))
    }
}

/// The headers every request of a destination carries — its own, `Content-Type` unless it
/// sets one, a static bearer token — listed as `render` shows them, and parsed once for
/// sending: parsing each name and value again for every request showed in the profile.
#[derive(Debug)]
pub struct FixedHeaders {
    entries: Vec<HeaderEntry>,
    /// The entries, after a `User-Agent`.
    parsed: http::HeaderMap,
    bearer: bool,
}

impl FixedHeaders {
    pub fn new(own: Vec<HeaderEntry>, bearer_token: Option<&str>) -> Result<Self, InvalidHeader> {
        let mut entries = own;
        if !entries
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("content-type"))
        {
            entries.push(HeaderEntry {
                name: "Content-Type".into(),
                value: "application/json".into(),
                secret: false,
            });
        }
        if let Some(token) = bearer_token {
            entries.push(HeaderEntry {
                name: "Authorization".into(),
                value: format!("Bearer {token}"),
                secret: true,
            });
        }
        let mut parsed = http::HeaderMap::with_capacity(entries.len() + 1);
        parsed.append(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(USER_AGENT),
        );
        for entry in &entries {
            let (name, value) = entry.to_http()?;
            parsed.append(name, value);
        }
        Ok(FixedHeaders {
            entries,
            parsed,
            bearer: bearer_token.is_some(),
        })
    }

    /// Whether a static bearer token is among them.
    pub fn has_bearer(&self) -> bool {
        self.bearer
    }
}

/// Where and how a destination's requests are sent; built once per destination.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    pub method: HttpMethod,
    pub url: reqwest::Url,
    /// `url`, parsed once for hyper.
    pub uri: http::Uri,
    pub headers: Arc<FixedHeaders>,
    pub signer: Option<Signer>,
    pub timeout: Duration,
    /// `spec.endpoint.tls`, read from its Secrets: a rotation swaps it with the rest.
    pub tls: Option<Arc<super::tls::TlsSettings>>,
}

#[derive(Debug, Clone)]
pub struct OutgoingRequest {
    pub method: HttpMethod,
    pub url: reqwest::Url,
    pub uri: http::Uri,
    fixed: Arc<FixedHeaders>,
    /// This request's own, after the fixed ones: its id, signature, token, trace.
    own: Vec<HeaderEntry>,
    pub body: bytes::Bytes,
}

impl RequestTemplate {
    /// `id` is stable across retries of the same batch, so receivers can deduplicate.
    pub fn build(&self, id: &str, body: bytes::Bytes, timestamp: i64) -> OutgoingRequest {
        let mut own = vec![HeaderEntry {
            name: "Idempotency-Key".into(),
            value: id.to_string(),
            secret: false,
        }];
        if let Some(signer) = &self.signer {
            for (name, value) in signer.headers(id, timestamp, &body) {
                own.push(HeaderEntry {
                    name: name.into(),
                    value,
                    secret: false,
                });
            }
        }
        OutgoingRequest {
            method: self.method,
            url: self.url.clone(),
            uri: self.uri.clone(),
            fixed: self.headers.clone(),
            own,
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
    /// Every header, in the order they are sent (after a `User-Agent`).
    pub fn headers(&self) -> impl Iterator<Item = &HeaderEntry> {
        self.fixed.entries.iter().chain(&self.own)
    }

    /// [`headers`](Self::headers) for hyper, the fixed ones already parsed.
    pub fn http_headers(&self) -> Result<http::HeaderMap, InvalidHeader> {
        let mut headers = self.fixed.parsed.clone();
        for entry in &self.own {
            let (name, value) = entry.to_http()?;
            headers.append(name, value);
        }
        Ok(headers)
    }

    /// Adds an OAuth 2.0 access token, fetched just before the attempt.
    pub fn authorize(&mut self, access_token: &str) {
        self.own.push(HeaderEntry {
            name: "Authorization".into(),
            value: format!("Bearer {access_token}"),
            secret: true,
        });
    }

    /// Sends the W3C `traceparent` on, so the receiver's trace continues the event's.
    pub fn continue_trace(&mut self, traceparent: String) {
        self.own.push(HeaderEntry {
            name: crate::telemetry::TRACEPARENT.into(),
            value: traceparent,
            secret: false,
        });
    }

    /// The request as `render -o json` shows it: secrets redacted, the body as parsed JSON.
    pub fn to_redacted_json(&self) -> serde_json::Value {
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers()
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
        for h in self.headers() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, value: &str, secret: bool) -> HeaderEntry {
        HeaderEntry {
            name: name.into(),
            value: value.into(),
            secret,
        }
    }

    fn template(headers: FixedHeaders) -> RequestTemplate {
        let url = reqwest::Url::parse("https://crm.example/in?x=1").unwrap();
        RequestTemplate {
            method: HttpMethod::Post,
            uri: url.as_str().parse().unwrap(),
            url,
            headers: Arc::new(headers),
            signer: None,
            timeout: Duration::from_secs(1),
            tls: None,
        }
    }

    #[test]
    fn headers_are_listed_and_sent_in_one_order_the_fixed_ones_parsed_once() {
        let own = vec![
            entry("X-Api-Key", "k1", true),
            entry("X-Team", "growth", false),
        ];
        let fixed = FixedHeaders::new(own, Some("tok")).unwrap();
        assert!(fixed.has_bearer());
        let mut request = template(fixed).build("m-1", bytes::Bytes::from_static(b"{}"), 0);
        request.continue_trace("00-abc-def-01".into());
        let listed: Vec<_> = request.headers().map(|h| h.name.as_str()).collect();
        assert_eq!(
            listed,
            [
                "X-Api-Key",
                "X-Team",
                "Content-Type",
                "Authorization",
                "Idempotency-Key",
                "traceparent"
            ]
        );
        let sent = request.http_headers().unwrap();
        let sent: Vec<_> = sent
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap(), v.is_sensitive()))
            .collect();
        assert_eq!(
            sent,
            [
                ("user-agent", USER_AGENT, false),
                ("x-api-key", "k1", true),
                ("x-team", "growth", false),
                ("content-type", "application/json", false),
                ("authorization", "Bearer tok", true),
                ("idempotency-key", "m-1", false),
                ("traceparent", "00-abc-def-01", false),
            ]
        );
        assert_eq!(request.uri.to_string(), "https://crm.example/in?x=1");
    }

    #[test]
    fn a_content_type_of_its_own_is_kept_and_an_unsendable_id_is_an_error_naming_the_header() {
        let fixed =
            FixedHeaders::new(vec![entry("content-type", "text/plain", false)], None).unwrap();
        assert!(!fixed.has_bearer());
        let request = template(fixed).build("line\nbreak", bytes::Bytes::new(), 0);
        let types: Vec<_> = request
            .headers()
            .filter(|h| h.name.eq_ignore_ascii_case("content-type"))
            .collect();
        assert_eq!(types.len(), 1);
        assert_eq!(types[0].value, "text/plain");
        let error = request.http_headers().unwrap_err().to_string();
        assert!(
            error.contains("Idempotency-Key") && !error.contains("line"),
            "{error}"
        );
    }
}
