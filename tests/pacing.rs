//! Being a good citizen to the endpoint: `spec.delivery.rateLimit`, a `429` with `Retry-After`
//! slowing the whole destination, and the circuit breaker holding the queue while the endpoint
//! is down. Real `hookline run`, real endpoint.

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
    let spec = format!(
        "{MAP_N}  delivery:\n    concurrency: 8\n    rateLimit: {{ requestsPerSecond: 10, burst: 2 }}\n"
    );
    let (_dir, h) = Hookline::crm(&endpoint.url, &spec).await;
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
    let spec = format!("{MAP_N}  delivery:\n    concurrency: 4\n");
    let (_dir, h) = Hookline::crm(&endpoint.url, &spec).await;
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

/// The distinct `n` the requests carried, in order.
fn distinct(requests: &[Received]) -> Vec<i64> {
    let mut n: Vec<i64> = requests
        .iter()
        .map(|r| r.body["n"].as_i64().unwrap())
        .collect();
    n.sort();
    n.dedup();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_is_down_gets_one_probe_per_pause_and_every_held_event_later() {
    let endpoint = Endpoint::start().await;
    let outage = endpoint.down(503);
    // Two attempts per event: if the probes used attempts, the held events would be
    // dead-lettered at the first one.
    let spec = format!(
        "{MAP_N}  delivery:\n    concurrency: 4\n    maxAttempts: 2\n    circuitBreaker: {{ consecutiveFailures: 3, probeIntervalSeconds: 1 }}\n"
    );
    let (_dir, h) = Hookline::crm(&endpoint.url, &spec).await;
    assert_eq!(wait_delivering(&h, "Delivering").await["status"], "True");
    assert_eq!(h.post("/v1/batch", batch(30)).await.status(), 200);

    let unhealthy = wait_delivering(&h, "EndpointUnhealthy").await;
    assert_eq!(unhealthy["status"], "False");
    let message = unhealthy["message"].as_str().unwrap();
    assert!(message.contains("HTTP 503"), "{message}");
    assert!(
        h.metrics()
            .await
            .contains("hookline_endpoint_healthy{destination=\"crm\"} 0")
    );

    // The four requests in flight fail (the third opens the breaker), then one probe after a
    // second, the next after two more.
    let got = endpoint.wait_for("two probes", |r| r.len() >= 6).await;
    let gap = |a: usize, b: usize| got[b].at.duration_since(got[a].at);
    assert!(gap(0, 3) < Duration::from_millis(500), "{:?}", gap(0, 3));
    assert!(
        gap(3, 4) >= Duration::from_millis(900),
        "first probe after {:?}",
        gap(3, 4)
    );
    assert!(
        gap(4, 5) >= Duration::from_millis(1900),
        "second probe after {:?}",
        gap(4, 5)
    );
    assert_eq!(got.len(), 6, "only probes while the endpoint is down");

    outage.end();
    // From the first probe on: the last probe may already have met the endpoint back up.
    let got = endpoint
        .wait_for("every held event", |r| {
            distinct(&r[4..]) == (0..30).collect::<Vec<_>>()
        })
        .await;
    let after = &got[6..];
    assert_eq!(
        distinct(after).len(),
        after.len(),
        "each event once after the endpoint came back"
    );
    assert_eq!(wait_delivering(&h, "Delivering").await["status"], "True");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("hookline_endpoint_healthy{destination=\"crm\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hookline_events_dead_lettered_total{destination=\"crm\"} 0"),
        "{metrics}"
    );
    assert_eq!(dead_letters(&h.data_dir), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_down_longer_than_disable_after_is_paused_until_a_restart() {
    let endpoint = Endpoint::start().await;
    let outage = endpoint.down(500);
    let spec = format!(
        "{MAP_N}  delivery:\n    disableAfterSeconds: 2\n    circuitBreaker: {{ consecutiveFailures: 1, probeIntervalSeconds: 1 }}\n"
    );
    let (_dir, mut h) = Hookline::crm(&endpoint.url, &spec).await;
    assert_eq!(h.post("/v1/batch", batch(3)).await.status(), 200);

    // Opened at once, probed after 1 s and 2 s more: that probe fails past the 2 s.
    let paused = wait_delivering(&h, "DeliveryPaused").await;
    assert_eq!(paused["status"], "False");
    let message = paused["message"].as_str().unwrap();
    assert!(message.contains("rollout restart"), "{message}");
    let ready = condition(&h.status().await, "Ready").clone();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("DeliveryPaused"))
    );
    assert!(
        h.metrics()
            .await
            .contains("hookline_delivery_paused{destination=\"crm\"} 1")
    );

    // Back up, but nobody asks it: no probe goes out any more (the last pause was 2 s).
    outage.end();
    let sent = endpoint.received().len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        endpoint.received().len(),
        sent,
        "a paused destination sent requests"
    );

    // A person restarts it: the held events go out.
    h.sigterm();
    h.wait_exit(Duration::from_secs(30)).await;
    h.restart().await;
    let got = endpoint
        .wait_for("the held events", |r| {
            r.len() > sent && distinct(&r[sent..]) == vec![0, 1, 2]
        })
        .await;
    assert_eq!(got.len(), sent + 3);
    assert_eq!(dead_letters(&h.data_dir), json!([]));
}

/// Health is judged by time as well as count: with the defaults (one request in flight, retried
/// with a growing backoff) an endpoint answering 503 to everything makes few requests, yet it
/// shows as unhealthy once it has failed for `unhealthyAfterSeconds` — 1 here, 30 by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_long_enough_is_unhealthy_with_few_requests_and_recovers() {
    let endpoint = Endpoint::start().await;
    let outage = endpoint.down(503);
    let spec = format!("{MAP_N}  delivery:\n    circuitBreaker: {{ unhealthyAfterSeconds: 1 }}\n");
    let (dir, h) = Hookline::crm(&endpoint.url, &spec).await;
    assert_eq!(h.post("/v1/batch", batch(60)).await.status(), 200);
    let unhealthy = wait_delivering(&h, "EndpointUnhealthy").await;
    assert_eq!(unhealthy["status"], "False");
    assert!(unhealthy["message"].as_str().unwrap().contains("HTTP 503"));
    assert!(
        endpoint.received().len() < 10,
        "fewer requests than open the breaker"
    );
    h.wait_for_metrics("the endpoint unhealthy", |m| {
        m.contains("hookline_endpoint_healthy{destination=\"crm\"} 0")
    })
    .await;
    outage.end();
    assert_eq!(wait_delivering(&h, "Delivering").await["status"], "True");
    endpoint
        .wait_for("every event", |r| {
            distinct(r) == (0..60).collect::<Vec<_>>()
        })
        .await;
    h.wait_for_metrics("the endpoint healthy", |m| {
        m.contains("hookline_endpoint_healthy{destination=\"crm\"} 1")
    })
    .await;
    assert_eq!(
        dead_letters(&dir.path().join("data")),
        serde_json::json!([])
    );
}

/// An endpoint that is up but refuses every event (a 400 for each, so each is dead-lettered at
/// once) delivers nothing: after `unhealthyAfterSeconds` of refusals it says so, and recovers
/// with the first delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_refusing_every_event_is_reported_and_recovers() {
    let endpoint = Endpoint::start().await;
    endpoint.respond(|_| (400, vec![]));
    let spec = format!("{MAP_N}  delivery:\n    circuitBreaker: {{ unhealthyAfterSeconds: 1 }}\n");
    let (_dir, h) = Hookline::crm(&endpoint.url, &spec).await;
    assert_eq!(h.post("/v1/batch", batch(3)).await.status(), 200);
    let rejected = wait_delivering(&h, "EventsRejected").await;
    assert_eq!(rejected["status"], "False");
    let message = rejected["message"].as_str().unwrap();
    assert!(
        message.contains("HTTP 400") && message.contains("hookline dlq list"),
        "{message}"
    );
    assert_eq!(
        condition(&h.status().await, "Ready")["status"],
        "True",
        "a person fixes the mapping; nothing is held"
    );
    endpoint.respond(|_| (200, vec![]));
    assert_eq!(h.post("/v1/batch", batch(1)).await.status(), 200);
    assert_eq!(wait_delivering(&h, "Delivering").await["status"], "True");
}
