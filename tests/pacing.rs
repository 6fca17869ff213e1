//! Being a good citizen to the endpoint: `spec.delivery.rateLimit`, and a `429` with
//! `Retry-After` slowing the whole destination. Real `hookline run`, real endpoint.

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

fn batch(n: usize) -> serde_json::Value {
    let events: Vec<_> = (0..n)
        .map(|i| json!({"type": "track", "userId": "u", "event": "E", "properties": {"n": i}}))
        .collect();
    json!({ "batch": events })
}

const MAP_N: &str = "  mapping:\n    n: { \"@path\": \"$.properties.n\" }\n";

#[tokio::test]
async fn a_rate_limited_endpoint_never_sees_more_than_the_limit_plus_burst() {
    let endpoint = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = format!(
        "{MAP_N}  delivery:\n    concurrency: 8\n    rateLimit: {{ requestsPerSecond: 10, burst: 2 }}\n"
    );
    let files = [manifest(
        dir.path(),
        "d.yaml",
        &destination("crm", &endpoint.url, &spec),
    )];
    let h = Hookline::start(&files, &dir.path().join("data")).await;
    assert_eq!(h.post("/v1/batch", batch(40)).await.status(), 200);
    let got = endpoint.wait_for("all 40 events", |r| r.len() == 40).await;
    for (i, first) in got.iter().enumerate() {
        let within_a_second = got[i..]
            .iter()
            .take_while(|r| r.at.duration_since(first.at) < Duration::from_secs(1))
            .count();
        assert!(
            within_a_second <= 12,
            "{within_a_second} requests within a second from request {i}"
        );
    }
    let took = got[39].at.duration_since(got[0].at);
    assert!(
        took >= Duration::from_millis(3500),
        "40 requests at 10/s (burst 2) took {took:?}"
    );
}

#[tokio::test]
async fn a_429_with_retry_after_holds_every_request_of_the_destination() {
    let endpoint = Endpoint::start().await;
    endpoint.respond(|n| {
        if n == 0 {
            (429, vec![("Retry-After".into(), "2".into())])
        } else {
            (200, vec![])
        }
    });
    // One request at a time reaches the endpoint before the 429, so the hold is seen by all.
    endpoint.slow_down(Duration::from_millis(50));
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("{MAP_N}  delivery:\n    concurrency: 4\n");
    let files = [manifest(
        dir.path(),
        "d.yaml",
        &destination("crm", &endpoint.url, &spec),
    )];
    let h = Hookline::start(&files, &dir.path().join("data")).await;
    // 60 events, 4 at a time, 50 ms each: without the hold they would all be sent within
    // 800 ms of the 429.
    assert_eq!(h.post("/v1/batch", batch(60)).await.status(), 200);
    let got = endpoint
        .wait_for("the 60 events and the retry", |r| r.len() == 61)
        .await;
    // The 429 was answered 50 ms after the first request arrived; requests already on their
    // way then arrive at once, every later one only after the 2 seconds.
    let answered = got[0].at + Duration::from_millis(50);
    let late: Vec<Duration> = got
        .iter()
        .filter(|r| r.at > answered + Duration::from_millis(200))
        .map(|r| r.at.duration_since(answered))
        .collect();
    assert!(!late.is_empty());
    assert!(
        late.iter().all(|d| *d >= Duration::from_millis(1900)),
        "requests sent during the hold: {late:?}"
    );
}
