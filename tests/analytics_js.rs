//! Segment's browser library, for real: analytics.js 2.0 from npm, unmodified, on a web page of
//! another origin in a headless Chromium, pointed at `hookline run` by `cdnURL` alone (API §9).
//! The page is driven by `tests/browser/analytics.cjs`; Chromium and the npm packages come
//! from `scripts/tools.sh`.

mod support;

use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use support::*;

const EVENTS: usize = 6;

fn browser_tools() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/browser/node_modules");
    assert!(
        dir.join("puppeteer-core").exists() && std::path::Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Chromium and tests/browser's npm packages: run scripts/tools.sh (scripts/test.sh does)"
    );
    dir
}

/// Runs the page in Chromium; what it reports.
async fn browse(hookline: &str, key: &str, page_port: u16, mode: &'static str) -> Value {
    let modules = browser_tools();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/analytics.cjs");
    let (hookline, key) = (hookline.to_string(), key.to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .args([
                &hookline,
                &key,
                &page_port.to_string(),
                &EVENTS.to_string(),
                mode,
            ])
            .env("NODE_PATH", modules)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the page failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// `hookline run` with a source that lets only `allowed` send, read by one destination.
async fn start(allowed: &str, endpoint: &Endpoint) -> (tempfile::TempDir, Hookline) {
    let dir = tempfile::tempdir().unwrap();
    let manifests = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{ name: website-key }}
stringData: {{ writeKey: wk-browser }}
---
apiVersion: hookline.dev/v1alpha1
kind: WebhookSource
metadata: {{ name: website }}
spec:
  writeKeySecretRef: {{ name: website-key, key: writeKey }}
  allowedOrigins: ["{allowed}"]
---
{}"#,
        destination(
            "crm",
            &endpoint.url,
            "  source:\n    sourceRef: { name: website }\n"
        )
    );
    let file = manifest(dir.path(), "site.yaml", &manifests);
    let h = Hookline::start(&[file], &dir.path().join("data")).await;
    (dir, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_js_on_another_origin_delivers_every_event_once() {
    let endpoint = Endpoint::start().await;
    let page_port = free_port();
    let (_dir, h) = start(&format!("http://127.0.0.1:{page_port}"), &endpoint).await;
    let report = browse(&h.base, "wk-browser", page_port, "deliver").await;
    assert_eq!(report["delivered"], EVENTS, "{report:#}");
    let errors = report["consoleErrors"].as_array().unwrap();
    assert!(errors.is_empty(), "the browser console: {errors:#?}");
    let requests = report["requests"].as_array().unwrap();
    assert!(
        requests
            .iter()
            .all(|r| r["status"].as_u64().is_some_and(|s| s < 300)),
        "every request of the page answered: {requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r["url"].as_str().unwrap().ends_with("/settings")),
        "the settings came from hookline"
    );
    let got = endpoint
        .wait_for("every event", |r| r.len() >= EVENTS)
        .await;
    let mut times: HashMap<String, usize> = HashMap::new();
    for r in &got {
        *times
            .entry(r.body["messageId"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(times.len(), EVENTS, "{got:#?}");
    assert!(times.values().all(|n| *n == 1), "each once: {times:?}");
    let kinds: Vec<&str> = got.iter().filter_map(|r| r.body["type"].as_str()).collect();
    for kind in ["track", "page", "identify"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    assert!(
        got.iter()
            .all(|r| r.body["context"]["library"]["name"] == "analytics.js"),
        "sent by analytics.js itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_the_source_does_not_allow_stores_nothing() {
    let endpoint = Endpoint::start().await;
    let page_port = free_port();
    let (_dir, h) = start("https://shop.example", &endpoint).await;
    let report = browse(&h.base, "wk-browser", page_port, "refused").await;
    let refused = report["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "POST")
        .count();
    assert!(refused >= EVENTS, "each event was tried: {report:#}");
    let console = report["consoleErrors"].to_string();
    assert!(console.contains("blocked by CORS policy"), "{console}");
    let metrics = h.metrics().await;
    assert!(
        !metrics.contains("hookline_events_received_total{"),
        "nothing was stored: {metrics}"
    );
    assert!(endpoint.received().is_empty());
}
