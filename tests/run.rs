//! `hookline run` end to end: the real binary, a real endpoint on 127.0.0.1.

mod support;

use base64::Engine;
use hmac::Mac;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::Write;
use support::*;

const SECRETS: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  token: tok-123\n  apiKey: key-456\n  writeKey: wk-789\n  signing: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n  sha1: plain-secret\n";

fn ids(received: &[Received]) -> HashSet<String> {
    received
        .iter()
        .flat_map(|r| match &r.body {
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        })
        .filter_map(|p| p["id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn mapped_events_arrive_with_headers_auth_and_signature() {
    let endpoint = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = r#"    method: PUT
    headers:
      - name: X-Team
        value: growth
      - name: X-Api-Key
        valueFrom: { secretKeyRef: { name: creds, key: apiKey } }
  auth:
    type: Bearer
    bearer: { tokenSecretRef: { name: creds, key: token } }
  subscription: 'type = "track" and event = "Order Completed"'
  mapping:
    order_id: { "@path": "$.properties.order_id" }
    email: { "@path": "$.context.traits.email" }
    who: { "@template": "{{userId}}" }
  signing:
    scheme: StandardWebhooks
    secretRef: { name: creds, key: signing }
  source:
    writeKeySecretRef: { name: creds, key: writeKey }
"#;
    let files = [
        manifest(
            dir.path(),
            "d.yaml",
            &destination("crm", &format!("{}/hook", endpoint.url), spec),
        ),
        manifest(dir.path(), "s.yaml", SECRETS),
    ];
    let h = Hookline::start(&files, &dir.path().join("data")).await;
    let client = reqwest::Client::new();

    let unauthorized = h
        .post("/v1/track", track("u1", "Order Completed", json!({})))
        .await;
    assert_eq!(unauthorized.status(), 401);
    let body: Value = unauthorized.json().await.unwrap();
    assert_eq!(body["success"], false);

    let ok = client
        .post(format!("{}/v1/track", h.base))
        .basic_auth("wk-789", Some(""))
        .json(&json!({"userId": "u1", "event": "Order Completed", "messageId": "msg-1", "properties": {"order_id": "o-1"}, "context": {"traits": {"email": "a@example.com"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap(), json!({"success": true}));
    // Filtered out by the subscription, and authenticated with writeKey in the body.
    let filtered = h
        .post(
            "/track",
            json!({"userId": "u1", "event": "Product Viewed", "writeKey": "wk-789"}),
        )
        .await;
    assert_eq!(filtered.status(), 200);

    let got = endpoint.wait_for("the order", |r| !r.is_empty()).await;
    let r = &got[0];
    assert_eq!(r.method, "PUT");
    assert_eq!(r.path, "/hook");
    assert_eq!(
        r.body,
        json!({"order_id": "o-1", "email": "a@example.com", "who": "u1"})
    );
    let header = |name: &str| {
        r.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(header("authorization"), "Bearer tok-123");
    assert_eq!(header("x-api-key"), "key-456");
    assert_eq!(header("x-team"), "growth");
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("idempotency-key"), "msg-1");
    assert_eq!(header("webhook-id"), "msg-1");
    // Verify as a Standard Webhooks receiver does.
    let key = base64::engine::general_purpose::STANDARD
        .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("msg-1.{}.", header("webhook-timestamp")).as_bytes());
    mac.update(&r.raw);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(header("webhook-signature"), format!("v1,{expected}"));

    let metrics = h.metrics().await;
    assert!(
        metrics.contains("hookline_events_received_total"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("hookline_leader") && !metrics.contains("hookline_reconcile"),
        "run shows operator series: {metrics}"
    );
    h.wait_for_metrics("the filtered event counted", |m| {
        m.contains("hookline_events_filtered_total{destination=\"crm\",reason=\"subscription\"} 1")
    })
    .await;
    assert_eq!(
        endpoint.received().len(),
        1,
        "the filtered event must not be delivered"
    );
}

#[tokio::test]
async fn batches_gzip_and_segment_hmac() {
    let endpoint = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = "  mapping:\n    id: { \"@path\": \"$.properties.n\" }\n  batching: { size: 3, maxWaitMillis: 200 }\n  signing: { scheme: SegmentHmacSha1, secretRef: { name: creds, key: sha1 } }\n";
    let files = [
        manifest(dir.path(), "d.yaml", &destination("b", &endpoint.url, spec)),
        manifest(dir.path(), "s.yaml", SECRETS),
    ];
    let h = Hookline::start(&files, &dir.path().join("data")).await;

    let batch: Vec<Value> = (0..7).map(|n| json!({"type": "track", "userId": "u", "event": "E", "properties": {"n": n.to_string()}})).collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(
        json!({"batch": batch, "context": {"library": {"name": "test"}}})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/batch", h.base))
        .header("content-encoding", "gzip")
        .header("content-type", "application/json")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let got = endpoint.wait_for("7 events", |r| ids(r).len() == 7).await;
    let sizes: Vec<usize> = got
        .iter()
        .map(|r| r.body.as_array().expect("a batch body is an array").len())
        .collect();
    assert_eq!(
        sizes,
        vec![3, 3, 1],
        "ordered batches of at most 3, the last flushed by maxWaitMillis"
    );
    let order: Vec<String> = got
        .iter()
        .flat_map(|r| r.body.as_array().unwrap().clone())
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order, (0..7).map(|n| n.to_string()).collect::<Vec<_>>());
    for r in &got {
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"plain-secret").unwrap();
        mac.update(&r.raw);
        assert_eq!(
            r.headers["x-signature"].to_str().unwrap(),
            hex::encode(mac.finalize().into_bytes())
        );
    }
}

#[tokio::test]
async fn flaky_endpoint_gets_everything_after_retry_after() {
    let endpoint = Endpoint::start().await;
    endpoint.respond(|n| {
        if n < 2 {
            (503, vec![("Retry-After".into(), "1".into())])
        } else {
            (200, vec![])
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let spec = "  mapping:\n    id: { \"@path\": \"$.messageId\" }\n";
    let files = [manifest(
        dir.path(),
        "d.yaml",
        &destination("flaky", &endpoint.url, spec),
    )];
    let h = Hookline::start(&files, &dir.path().join("data")).await;
    for i in 0..5 {
        let r = h
            .post(
                "/v1/track",
                json!({"userId": "u", "event": "E", "messageId": format!("m{i}")}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let got = endpoint
        .wait_for("all 5 delivered", |r| ids(&r[r.len().min(2)..]).len() == 5)
        .await;
    let delivered: Vec<&str> = got[2..]
        .iter()
        .map(|r| r.body["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        &delivered[..5],
        &["m0", "m1", "m2", "m3", "m4"],
        "in order, after the retries"
    );
}

#[tokio::test]
async fn rejected_events_are_dead_lettered_listed_and_replayed() {
    let endpoint = Endpoint::start().await;
    endpoint.respond(|_| (400, vec![]));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The mapping reads only `userId`: the dead letter still holds the whole event.
    let spec = "  mapping:\n    user: { \"@path\": \"$.userId\" }\n";
    let files = [manifest(
        dir.path(),
        "d.yaml",
        &destination("strict", &endpoint.url, spec),
    )];
    let h = Hookline::start(&files, &data).await;
    let r = h
        .post(
            "/v1/identify",
            json!({"userId": "u9", "traits": {"plan": "pro"}, "context": {"ip": "203.0.113.7"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    endpoint
        .wait_for("the rejected attempt", |r| !r.is_empty())
        .await;

    let data_arg = data.to_str().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let listed = loop {
        let listed = dead_letters(&data);
        if listed.as_array().is_some_and(|a| !a.is_empty()) {
            break listed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing dead-lettered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let entry = &listed[0];
    assert_eq!(entry["destination"], "strict");
    assert_eq!(entry["event"]["userId"], "u9");
    assert_eq!(entry["event"]["type"], "identify");
    assert_eq!(entry["event"]["traits"], json!({"plan": "pro"}));
    assert_eq!(entry["event"]["context"], json!({"ip": "203.0.113.7"}));
    assert!(entry["event"]["receivedAt"].is_string() && entry["event"]["messageId"].is_string());
    assert_eq!(entry["attempts"], 1, "a 400 is not retried");
    assert_eq!(entry["lastStatus"], 400);
    assert!(entry["lastError"].as_str().unwrap().contains("400"));
    assert!(entry["failedAt"].is_string());

    // The same dead letters on the admin listener alone (API §10), not on the ingestion port.
    let admin = get_json(&format!("{}/dlq", h.admin.as_ref().unwrap())).await;
    assert_eq!(admin, listed);
    let ingestion = reqwest::get(format!("{}/dlq", h.base)).await.unwrap();
    assert_eq!(ingestion.status(), 404);

    endpoint.respond(|_| (200, vec![]));
    let out = run_cli(&["dlq", "replay", "--data-dir", data_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = endpoint
        .wait_for("the replayed event", |r| r.len() >= 2)
        .await;
    assert_eq!(got[1].body, json!({"user": "u9"}));
    assert_eq!(dead_letters(&data), json!([]));
    drop(h);
}

#[tokio::test]
async fn kill_9_during_delivery_loses_nothing() {
    let endpoint = Endpoint::start().await;
    endpoint.respond(|_| (500, vec![]));
    let dir = tempfile::tempdir().unwrap();
    let spec =
        "  mapping:\n    id: { \"@path\": \"$.messageId\" }\n  delivery: { concurrency: 4 }\n";
    let files = [manifest(
        dir.path(),
        "d.yaml",
        &destination("durable", &endpoint.url, spec),
    )];
    let mut h = Hookline::start(&files, &dir.path().join("data")).await;
    let batch: Vec<Value> = (0..200)
        .map(
            |i| json!({"type": "track", "userId": "u", "event": "E", "messageId": format!("k{i}")}),
        )
        .collect();
    assert_eq!(
        h.post("/v1/batch", json!({"batch": batch})).await.status(),
        200
    );
    endpoint
        .wait_for("delivery attempts under way", |r| !r.is_empty())
        .await;
    h.kill9();

    endpoint.respond(|_| (200, vec![]));
    h.restart().await;
    endpoint
        .wait_for("all 200 accepted events after the restart", |r| {
            ids(r).len() == 200
        })
        .await;
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors() {
    let endpoint = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let files = [manifest(
        dir.path(),
        "d.yaml",
        &destination("x", &endpoint.url, ""),
    )];
    let h = Hookline::start(&files, &dir.path().join("data")).await;
    let client = reqwest::Client::new();
    let no_id = h.post("/v1/track", json!({"event": "E"})).await;
    assert_eq!(no_id.status(), 400);
    assert!(
        no_id.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("userId")
    );
    let not_json = client
        .post(format!("{}/v1/track", h.base))
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let big = h
        .post(
            "/v1/track",
            json!({"userId": "u", "event": "E", "properties": {"blob": "x".repeat(40 * 1024)}}),
        )
        .await;
    assert_eq!(big.status(), 413);
    let bad_item = h
        .post(
            "/v1/batch",
            json!({"batch": [{"type": "track", "userId": "u"}, {"type": "nope", "userId": "u"}]}),
        )
        .await;
    assert_eq!(bad_item.status(), 400);
    assert!(
        bad_item.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("batch[1].type")
    );
    let metrics = h.metrics().await;
    assert!(
        !metrics.contains("hookline_events_received_total{"),
        "rejected requests queue nothing: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_proxy_from_the_environment_carries_the_requests() {
    // The proxy, played by the test endpoint: a proxied request names the real host.
    let proxy = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let files = [manifest(
        dir.path(),
        "d.yaml",
        &destination("crm", "http://crm.invalid/hook", ""),
    )];
    let proxy_url = proxy.url.trim_end_matches("/events").to_string();
    let h = Hookline::start_env(
        &files,
        &dir.path().join("data"),
        &[],
        &[("HTTP_PROXY", &proxy_url), ("NO_PROXY", "127.0.0.1")],
    )
    .await;
    let event = track("u1", "Order Completed", serde_json::json!({}));
    assert_eq!(h.post("/v1/track", event).await.status(), 200);
    let got = proxy
        .wait_for("the proxied request", |r| !r.is_empty())
        .await;
    assert_eq!(got[0].path, "/hook");
    assert_eq!(got[0].headers["host"], "crm.invalid");
}
