//! OpenTelemetry traces end to end: a real `hookline run` exporting over OTLP/HTTP (JSON) to a
//! receiver on 127.0.0.1, an event sent with a W3C `traceparent`, and the endpoint receiving
//! the trace's continuation.

mod support;

use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use support::*;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const TOKEN: &str = "s3cret-bearer-token";

/// An OTLP/HTTP receiver: every span it gets, flattened.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let spans: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let export: Value = serde_json::from_slice(&body).unwrap();
                let mut kept = kept.lock().unwrap();
                for rs in export["resourceSpans"].as_array().into_iter().flatten() {
                    for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                        for span in ss["spans"].as_array().into_iter().flatten() {
                            let mut span = span.clone();
                            span["resource"] = rs["resource"].clone();
                            kept.push(span);
                        }
                    }
                }
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

fn attribute<'a>(span: &'a Value, key: &str) -> &'a Value {
    span["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|kv| kv["key"] == key))
        .map(|kv| &kv["value"])
        .unwrap_or(&Value::Null)
}

fn bearer_destination(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let spec = "  auth:\n    type: Bearer\n    bearer: { tokenSecretRef: { name: tok, key: token } }\n  mapping:\n    marker: { \"@path\": \"$.properties.marker\" }\n";
    let yaml = format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{ name: tok }}\nstringData: {{ token: {TOKEN} }}\n",
        destination("crm", url, spec)
    );
    manifest(dir, "d.yaml", &yaml)
}

async fn send_traced(h: &Hookline) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/track", h.base))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&track(
            "u1",
            "Order Completed",
            json!({"marker": "payload-marker"}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_is_one_trace_from_the_client_to_the_endpoint() {
    let (otlp, spans) = receiver().await;
    let endpoint = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let files = [bearer_destination(dir.path(), &endpoint.url)];
    let h = Hookline::start_env(
        &files,
        &dir.path().join("data"),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    send_traced(&h).await;

    let got = endpoint.wait_for("the event", |r| !r.is_empty()).await;
    let traceparent = got[0].headers["traceparent"].to_str().unwrap().to_string();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(
        parts[1], CLIENT_TRACE,
        "the receiver continues the client's trace"
    );
    assert_ne!(parts[2], CLIENT_SPAN);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (ingest, deliver) = loop {
        let all = spans.lock().unwrap().clone();
        let named = |name: &str| all.iter().find(|s| s["name"] == name).cloned();
        if let (Some(i), Some(d)) = (named("ingest"), named("deliver")) {
            break (i, d);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "spans received: {all:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    for span in [&ingest, &deliver] {
        assert_eq!(
            span["traceId"].as_str().unwrap().to_lowercase(),
            CLIENT_TRACE
        );
    }
    assert_eq!(
        ingest["parentSpanId"].as_str().unwrap().to_lowercase(),
        CLIENT_SPAN
    );
    assert_eq!(deliver["parentSpanId"], ingest["spanId"]);
    assert_eq!(deliver["spanId"].as_str().unwrap().to_lowercase(), parts[2]);
    assert_eq!(attribute(&ingest, "events")["intValue"], json!("1"));
    assert_eq!(attribute(&deliver, "destination")["stringValue"], "crm");
    assert_eq!(attribute(&deliver, "attempt")["intValue"], json!("1"));
    assert_eq!(attribute(&deliver, "batch.size")["intValue"], json!("1"));
    assert_eq!(
        attribute(&deliver, "http.response.status_code")["intValue"],
        json!("200")
    );
    let service = ingest["resource"]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|kv| kv["key"] == "service.name")
        .unwrap();
    assert_eq!(service["value"]["stringValue"], "hookline");
    let exported = serde_json::to_string(&*spans.lock().unwrap()).unwrap();
    assert!(!exported.contains(TOKEN), "a secret in the spans");
    assert!(
        !exported.contains("payload-marker"),
        "a payload in the spans"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracing_the_clients_traceparent_is_passed_on() {
    let endpoint = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let files = [bearer_destination(dir.path(), &endpoint.url)];
    let h = Hookline::start(&files, &dir.path().join("data")).await;
    send_traced(&h).await;
    let got = endpoint.wait_for("the event", |r| !r.is_empty()).await;
    assert_eq!(
        got[0].headers["traceparent"],
        format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
    );
}
