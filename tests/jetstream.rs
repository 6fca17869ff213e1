//! The JetStream backend (API §8) with real `nats-server` processes: `hookline run --nats`,
//! `hookline gateway`, several workers on one consumer, NATS and worker failures.

mod support;

use serde_json::{Value, json};
use std::collections::HashMap;
use support::nats::{NatsServer, urls};
use support::*;

const SECRETS: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: keys\nstringData:\n  shop: wk-shop\n  other: wk-other\n";

/// How many times each `properties.n` arrived (batched bodies are arrays).
fn counts(received: &[Received]) -> HashMap<i64, usize> {
    let mut counts = HashMap::new();
    for r in received {
        let items = match &r.body {
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        };
        for item in items {
            if let Some(n) = item["n"].as_i64() {
                *counts.entry(n).or_default() += 1;
            }
        }
    }
    counts
}

fn numbered(from: i64, to: i64) -> Value {
    let batch: Vec<Value> = (from..to)
        .map(|n| json!({"type": "track", "userId": "u", "event": "E", "messageId": format!("m-{n}"), "properties": {"n": n}}))
        .collect();
    json!({ "batch": batch })
}

const MAP_N: &str = "  mapping:\n    n: { \"@path\": \"$.properties.n\" }\n";

async fn run_nats(dir: &std::path::Path, nats: &str, files: &[std::path::PathBuf], data: &str) -> Hookline {
    Hookline::start_with(files, &dir.join(data), &["--nats", nats]).await
}

#[tokio::test]
async fn run_with_nats_delivers_retries_from_jetstream_and_dead_letters_to_a_stream() {
    let nats = NatsServer::start().await;
    let endpoint = Endpoint::start().await;
    // Every first attempt fails with a 503 and Retry-After: the retry comes back from JetStream.
    endpoint.respond(|n| if n % 2 == 0 { (503, vec![("Retry-After".into(), "0".into())]) } else { (200, vec![]) });
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("{MAP_N}  delivery:\n    maxAttempts: 5\n");
    let files = [manifest(dir.path(), "d.yaml", &destination("crm", &endpoint.url, &spec))];
    let h = run_nats(dir.path(), &nats.url(), &files, "a").await;
    let r = h.post("/v1/batch", numbered(0, 20)).await;
    assert_eq!(r.status(), 200);
    let got = endpoint
        .wait_for("20 events, each after one retry", |r| counts(r).len() == 20)
        .await;
    assert_eq!(got.len(), 40, "one 503 and one 200 per event");
    let retried = h.metrics().await;
    assert!(retried.contains("hookline_delivery_retries_total{cause=\"503\",destination=\"crm\"} 20"), "{retried}");
}
