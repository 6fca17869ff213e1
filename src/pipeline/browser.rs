//! Browsers at the ingestion API (API §9): CORS — the answer to a preflight and the headers of
//! every answer to a page of another origin — and the settings document analytics.js loads
//! from `<cdnURL>/v1/projects/<writeKey>/settings` before it sends anything. Pure: the
//! decisions of who is allowed are the sources' ([`super::source`]).

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use serde_json::{Value, json};

/// What a preflight may ask for: ingestion's `POST`s and the settings' `GET`.
const METHODS: &str = "POST, GET, OPTIONS";
/// How long a browser may keep a preflight's answer (Chromium keeps at most 2 hours).
const MAX_AGE_SECONDS: &str = "7200";
/// The request headers allowed when a preflight names none.
const DEFAULT_HEADERS: &str = "Authorization, Content-Type, Content-Encoding";

/// The headers of an answer to a page of `origin` that may send here. The origin is echoed
/// (never `*`, which a page sending credentials cannot use), and `Retry-After` is readable so
/// analytics.js can honour a 429's.
pub fn answer_headers(origin: &HeaderValue) -> [(HeaderName, HeaderValue); 3] {
    [
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
        (header::VARY, HeaderValue::from_static("Origin")),
        (
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After"),
        ),
    ]
}

/// The headers of a preflight's 204 for an allowed origin: the methods, the request headers it
/// asked for, and how long to remember the answer.
pub fn preflight_headers(origin: &HeaderValue, request: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in answer_headers(origin) {
        out.insert(name, value);
    }
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    let requested = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(DEFAULT_HEADERS));
    out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE_SECONDS),
    );
    out.append(
        header::VARY,
        HeaderValue::from_static("Access-Control-Request-Headers"),
    );
    // Chromium asks before a public page may reach a private address (Private Network Access):
    // Hookline on a laptop or in a cluster network is such an address.
    if request
        .get("access-control-request-private-network")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
    {
        out.insert(
            "access-control-allow-private-network",
            HeaderValue::from_static("true"),
        );
    }
    out
}

/// The settings document that points analytics.js at this host: the Segment.io integration
/// with the key, `apiHost` (`host[:port]/v1`) and `protocol`, and nothing that would load
/// code or send anywhere else (no device-mode destinations, no remote plugins, no metrics to
/// Segment).
pub fn settings(write_key: &str, headers: &HeaderMap) -> Value {
    let (host, protocol) = public_host(headers);
    json!({
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": format!("{host}/v1"),
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": true,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": true, "integrations": {}}},
            "identify": {"__default": {"enabled": true}},
            "group": {"__default": {"enabled": true}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": [],
    })
}

/// The host and scheme a client reached: behind a proxy its `X-Forwarded-Host`/`-Proto`
/// (or RFC 7239 `Forwarded`), else the request's `Host` over plain HTTP (what this listener
/// speaks).
pub fn public_host(headers: &HeaderMap) -> (String, String) {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let forwarded = |param: &str| {
        let value = first("forwarded")?;
        value.split(';').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case(param)
                .then(|| v.trim().trim_matches('"').to_string())
        })
    };
    let protocol = first("x-forwarded-proto")
        .or_else(|| forwarded("proto"))
        .map(|p| p.to_ascii_lowercase())
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| "http".into());
    let mut host = first("x-forwarded-host")
        .or_else(|| forwarded("host"))
        .or_else(|| first("host"))
        .unwrap_or_else(|| "localhost".into());
    if let Some(port) = first("x-forwarded-port").filter(|_| !host_has_port(&host)) {
        let default = if protocol == "https" { "443" } else { "80" };
        if port != default {
            host = format!("{host}:{port}");
        }
    }
    (host, protocol)
}

/// `example.com:8080` and `[::1]:8080` have one; `example.com` and `[::1]` do not.
fn host_has_port(host: &str) -> bool {
    match host.rsplit_once(':') {
        Some((before, _)) => !before.starts_with('[') || before.ends_with(']'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn settings_point_at_the_host_the_client_reached() {
        let doc = settings("wk", &headers(&[("host", "127.0.0.1:8080")]));
        let io = &doc["integrations"]["Segment.io"];
        assert_eq!(io["apiKey"], "wk");
        assert_eq!(io["apiHost"], "127.0.0.1:8080/v1");
        assert_eq!(io["protocol"], "http");
        assert_eq!(
            doc["metrics"]["sampleRate"], 0,
            "nothing is sent to Segment"
        );
        assert_eq!(
            doc["integrations"].as_object().unwrap().len(),
            1,
            "no device-mode destination to load"
        );
    }

    #[test]
    fn behind_a_proxy_the_forwarded_host_and_scheme_win() {
        let proxied = headers(&[
            ("host", "hookline-gateway.hookline.svc:8080"),
            ("x-forwarded-host", "events.shop.example, internal"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            public_host(&proxied),
            ("events.shop.example".into(), "https".into())
        );
        let with_port = headers(&[
            ("x-forwarded-host", "events.shop.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "8443"),
        ]);
        assert_eq!(public_host(&with_port).0, "events.shop.example:8443");
        let default_port = headers(&[
            ("x-forwarded-host", "events.shop.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
        ]);
        assert_eq!(public_host(&default_port).0, "events.shop.example");
        let rfc7239 = headers(&[
            ("host", "internal:8080"),
            (
                "forwarded",
                "for=1.2.3.4;proto=https;host=\"events.shop.example\"",
            ),
        ]);
        assert_eq!(
            public_host(&rfc7239),
            ("events.shop.example".into(), "https".into())
        );
        let bogus = headers(&[("host", "h:1"), ("x-forwarded-proto", "gopher")]);
        assert_eq!(public_host(&bogus), ("h:1".into(), "http".into()));
        assert!(host_has_port("[::1]:80") && !host_has_port("[::1]"));
    }

    #[test]
    fn a_preflight_allows_what_it_asked_for() {
        let origin = HeaderValue::from_static("https://shop.example");
        let asked = headers(&[
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization,content-type",
            ),
        ]);
        let out = preflight_headers(&origin, &asked);
        assert_eq!(out["access-control-allow-origin"], "https://shop.example");
        assert_eq!(
            out["access-control-allow-headers"],
            "authorization,content-type"
        );
        assert!(
            out["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
        assert_eq!(out["access-control-max-age"], MAX_AGE_SECONDS);
        let vary: Vec<_> = out.get_all("vary").iter().collect();
        assert_eq!(vary, ["Origin", "Access-Control-Request-Headers"]);
        let none = preflight_headers(&origin, &HeaderMap::new());
        assert_eq!(none["access-control-allow-headers"], DEFAULT_HEADERS);
        assert!(!none.contains_key("access-control-allow-private-network"));
        let private = preflight_headers(
            &origin,
            &headers(&[("access-control-request-private-network", "true")]),
        );
        assert_eq!(private["access-control-allow-private-network"], "true");
    }
}
