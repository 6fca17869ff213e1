//! Browsers at `hookline run` (API §9), spoken to over HTTP as a browser would: CORS preflights
//! and answers per the source's `allowedOrigins`, `text/plain` bodies, the settings document,
//! the per-source rate limit, and what reaches which destination. The same with a real
//! Chromium and analytics.js is `tests/browser/` (run by `tests/analytics_js.rs`).

mod support;

use serde_json::{Value, json};
use support::*;

const SHOP: &str = "https://shop.example";

fn sources(rate_limit: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{ name: keys }}
stringData: {{ web: wk-web, private: wk-private }}
---
apiVersion: hookline.dev/v1alpha1
kind: WebhookSource
metadata: {{ name: website }}
spec:
  writeKeySecretRef: {{ name: keys, key: web }}
  allowedOrigins: ["{SHOP}"]
{rate_limit}"#
    )
}

/// Two destinations reading the website source, and one with a private key of its own.
async fn start(rate_limit: &str) -> (Endpoint, tempfile::TempDir, Hookline) {
    start_with(rate_limit, true).await
}

async fn start_with(rate_limit: &str, private: bool) -> (Endpoint, tempfile::TempDir, Hookline) {
    let endpoint = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let reads = "  source:\n    sourceRef: { name: website }\n";
    let mut files = vec![
        manifest(dir.path(), "s.yaml", &sources(rate_limit)),
        manifest(
            dir.path(),
            "a.yaml",
            &destination("a", &format!("{}/a", endpoint.url), reads),
        ),
        manifest(
            dir.path(),
            "b.yaml",
            &destination("b", &format!("{}/b", endpoint.url), reads),
        ),
    ];
    if private {
        files.push(manifest(
            dir.path(),
            "p.yaml",
            &destination(
                "p",
                &format!("{}/p", endpoint.url),
                "  source:\n    writeKeySecretRef: { name: keys, key: private }\n",
            ),
        ));
    }
    let h = Hookline::start(&files, &dir.path().join("data")).await;
    (endpoint, dir, h)
}

fn basic(key: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

/// A `POST` as analytics.js sends it: `text/plain`, the key as HTTP Basic.
async fn beacon(h: &Hookline, origin: Option<&str>, key: &str, user: &str) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/t", h.base))
        .header("content-type", "text/plain")
        .header("authorization", basic(key))
        .body(json!({"userId": user, "event": "Viewed", "writeKey": key}).to_string());
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_and_its_posts_carry_cors_headers() {
    let (endpoint, _dir, h) = start("").await;
    let client = reqwest::Client::new();
    let preflight = client
        .request(reqwest::Method::OPTIONS, format!("{}/v1/t", h.base))
        .header("origin", SHOP)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], SHOP);
    assert_eq!(
        headers["access-control-allow-headers"],
        "authorization,content-type"
    );
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(headers.contains_key("access-control-max-age"));

    let sent = beacon(&h, Some(SHOP), "wk-web", "u1").await;
    assert_eq!(sent.status(), 200);
    assert_eq!(sent.headers()["access-control-allow-origin"], SHOP);
    assert_eq!(sent.headers()["vary"], "Origin");
    // Read by both of the source's destinations, not by the one with a private key.
    let got = endpoint.wait_for("a and b", |r| r.len() >= 2).await;
    let mut paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["/a", "/b"]);
    assert_eq!(got[0].body["userId"], "u1");
}

#[tokio::test]
async fn a_preflight_from_an_origin_no_source_allows_is_refused() {
    let (_endpoint, _dir, h) = start_with("", false).await;
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/v1/t", h.base))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 403);
    assert!(
        !preflight
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test]
async fn an_origin_the_source_does_not_allow_is_refused_and_nothing_is_stored() {
    // A preflight names no key: with a private key here that takes any origin, it passes,
    // and the POST is checked against its own key's source.
    let (endpoint, _dir, h) = start("").await;
    let client = reqwest::Client::new();
    // A simple request (sendBeacon) has no preflight: the POST itself is refused.
    let refused = beacon(&h, Some("https://evil.example"), "wk-web", "evil").await;
    assert_eq!(refused.status(), 403);
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
    let settings = client
        .get(format!("{}/v1/projects/wk-web/settings", h.base))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(settings.status(), 403);
    // A private key takes any origin; a server (no Origin) is not a browser.
    assert_eq!(
        beacon(&h, Some("https://evil.example"), "wk-private", "p1")
            .await
            .status(),
        200
    );
    assert_eq!(beacon(&h, None, "wk-web", "server").await.status(), 200);
    let got = endpoint.wait_for("p1 and server's", |r| r.len() >= 3).await;
    assert!(
        got.iter().all(|r| r.body["userId"] != "evil"),
        "nothing of the refused origin was stored"
    );
    assert_eq!(h.metrics().await.matches("evil").count(), 0);
}

#[tokio::test]
async fn the_settings_document_points_analytics_js_at_this_host() {
    let (_endpoint, _dir, h) = start("").await;
    let client = reqwest::Client::new();
    let settings = client
        .get(format!("{}/v1/projects/wk-web/settings", h.base))
        .header("origin", SHOP)
        .send()
        .await
        .unwrap();
    assert_eq!(settings.status(), 200);
    assert_eq!(settings.headers()["access-control-allow-origin"], SHOP);
    let doc: Value = settings.json().await.unwrap();
    let io = &doc["integrations"]["Segment.io"];
    assert_eq!(io["apiKey"], "wk-web");
    let port = h.base.rsplit(':').next().unwrap();
    assert_eq!(io["apiHost"], format!("127.0.0.1:{port}/v1"));
    assert_eq!(io["protocol"], "http");
    let proxied = settings_via_proxy(&h.base, "wk-web").await;
    assert_eq!(
        proxied["integrations"]["Segment.io"]["apiHost"],
        "events.shop.example/v1"
    );
    assert_eq!(proxied["integrations"]["Segment.io"]["protocol"], "https");
    let unknown = client
        .get(format!("{}/v1/projects/nope/settings", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn over_its_rate_limit_a_source_answers_429_with_retry_after() {
    let (endpoint, _dir, h) = start("  rateLimit: { requestsPerSecond: 0.01, burst: 2 }\n").await;
    for user in ["u1", "u2"] {
        assert_eq!(beacon(&h, Some(SHOP), "wk-web", user).await.status(), 200);
    }
    let limited = beacon(&h, Some(SHOP), "wk-web", "u3").await;
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&retry), "{retry}");
    assert_eq!(limited.headers()["access-control-allow-origin"], SHOP);
    assert_eq!(
        limited.headers()["access-control-expose-headers"],
        "Retry-After"
    );
    // Another source is not held by this one's limit.
    assert_eq!(beacon(&h, None, "wk-private", "p").await.status(), 200);
    let got = endpoint
        .wait_for("u1, u2 twice and p", |r| r.len() >= 5)
        .await;
    assert!(got.iter().all(|r| r.body["userId"] != "u3"));
}
