//! Insert functions through the real binary: `hookline run` delivers what the function
//! returns, counts what it drops, dead-letters what it fails on; `render` runs it too; a
//! function that does not compile is refused when the manifest is loaded.

mod support;

use serde_json::{Value, json};
use support::*;

const FUNCTION: &str = r#"
  transform:
    javascript: |
      async function onTrack(event, settings) {
        if (event.event === "Ignore Me") throw new DropEvent("not for the CRM");
        if (event.event === "Broken") return event.properties.missing.field;
        event.properties.total_cents = Math.round(event.properties.total * 100);
        event.properties.destination = settings.destination;
        console.log("seen", event.event);
        return event;
      }
  mapping:
    order: { "@path": "$.properties.order_id" }
    cents: { "@path": "$.properties.total_cents" }
    via: { "@path": "$.properties.destination" }
"#;

#[tokio::test]
async fn run_delivers_what_the_function_returns_and_counts_what_it_drops() {
    let endpoint = Endpoint::start().await;
    let (dir, h) = Hookline::crm(&format!("{}/in", endpoint.url), FUNCTION).await;
    for (event, props) in [
        ("Ignore Me", json!({})),
        ("Broken", json!({})),
        (
            "Order Completed",
            json!({"order_id": "o-1", "total": 12.34}),
        ),
    ] {
        assert_eq!(
            h.post("/v1/track", track("u", event, props)).await.status(),
            200
        );
    }
    assert_eq!(
        h.post("/v1/identify", json!({"userId": "u"}))
            .await
            .status(),
        200
    );
    let got = endpoint
        .wait_for("the transformed event", |r| !r.is_empty())
        .await;
    assert_eq!(
        got[0].body,
        json!({"order": "o-1", "cents": 1234, "via": "crm"})
    );

    let dropped = ["DropEvent", "NoHandler"].map(|reason| {
        format!("hookline_events_filtered_total{{destination=\"crm\",reason=\"{reason}\"}} 1")
    });
    h.wait_for_metrics("both dropped events counted", |m| {
        dropped.iter().all(|line| m.contains(line))
    })
    .await;
    drop(h);
    let letters = dead_letters(&dir.path().join("data"));
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let error = letters[0]["lastError"].as_str().unwrap();
    assert!(
        error.contains("TypeError") && error.contains("line 3"),
        "{error}"
    );
    assert_eq!(letters[0]["event"]["event"], "Broken");
    assert_eq!(endpoint.received().len(), 1);
}

#[tokio::test]
async fn what_the_endpoint_refuses_is_dead_lettered_as_it_came_not_as_the_function_made_it() {
    let endpoint = Endpoint::start().await;
    endpoint.respond(|_| (422, vec![]));
    let (dir, h) = Hookline::crm(&format!("{}/in", endpoint.url), FUNCTION).await;
    let order = json!({"order_id": "o-2", "total": 1.5});
    let sent = track("u", "Order Completed", order.clone());
    assert_eq!(h.post("/v1/track", sent).await.status(), 200);
    let refused = endpoint.wait_for("the attempt", |r| !r.is_empty()).await;
    assert_eq!(refused[0].body["cents"], 150);
    h.wait_for_metrics("the event dead-lettered", |m| {
        m.contains("hookline_events_dead_lettered_total{destination=\"crm\"} 1")
    })
    .await;
    drop(h);
    let letters = dead_letters(&dir.path().join("data"));
    // Replaying it runs the function once more, on the event as it was sent.
    assert_eq!(letters[0]["event"]["properties"], order, "{letters}");
}

#[tokio::test]
async fn on_batch_gets_each_batch_in_order() {
    let endpoint = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = r#"
  batching: { size: 3, maxWaitMillis: 60000 }
  transform:
    javascript: |
      async function onBatch(events, settings) {
        return events.map((e, i) => i === 1 ? null : { ...e, position: i, size: events.length });
      }
  mapping:
    n: { "@path": "$.properties.n" }
    position: { "@path": "$.position" }
    size: { "@path": "$.size" }
"#;
    let file = manifest(
        dir.path(),
        "d.yaml",
        &destination("b", &format!("{}/in", endpoint.url), spec),
    );
    let h = Hookline::start(&[file], &dir.path().join("data")).await;
    for n in 0..3 {
        h.post("/v1/track", track("u", "E", json!({"n": n}))).await;
    }
    let got = endpoint.wait_for("one batch", |r| !r.is_empty()).await;
    assert_eq!(
        got[0].body,
        json!([{"n": 0, "position": 0, "size": 3}, {"n": 2, "position": 2, "size": 3}])
    );
}

#[tokio::test]
async fn a_function_computing_for_long_holds_up_only_its_own_destination() {
    let endpoint = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spinning = "  transform:\n    javascript: |\n      async function onTrack(event) {\n        while (true) {}\n      }\n";
    let file = manifest(
        dir.path(),
        "d.yaml",
        &format!(
            "{}\n---\n{}",
            destination("slow", &format!("{}/slow", endpoint.url), spinning),
            destination("fast", &format!("{}/fast", endpoint.url), "")
        ),
    );
    let data = dir.path().join("data");
    let h = Hookline::start(&[file], &data).await;
    assert_eq!(
        h.post("/v1/track", track("u", "E", json!({})))
            .await
            .status(),
        200
    );
    let got = endpoint
        .wait_for("the event at the destination without a function", |r| {
            !r.is_empty()
        })
        .await;
    assert_eq!(got[0].path, "/fast");
    // The other destination's function is still computing (until its time limit, when the
    // event is dead-lettered): each destination delivers from its own thread.
    assert_eq!(dead_letters(&data), json!([]));
}

#[test]
fn render_runs_the_function_and_a_broken_one_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = manifest(
        dir.path(),
        "d.yaml",
        &destination("crm", "http://127.0.0.1:9/in", FUNCTION),
    );
    let event = manifest(
        dir.path(),
        "e.json",
        &json!({"type": "track", "event": "Order Completed", "properties": {"order_id": "o-2", "total": 1.5}}).to_string(),
    );
    let out = run_cli(&[
        "render",
        "-f",
        file.to_str().unwrap(),
        "--event",
        event.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        requests[0]["body"],
        json!({"order": "o-2", "cents": 150, "via": "crm"})
    );

    let dropped = manifest(
        dir.path(),
        "drop.json",
        &json!({"type": "track", "event": "Ignore Me"}).to_string(),
    );
    let out = run_cli(&[
        "render",
        "-f",
        file.to_str().unwrap(),
        "--event",
        dropped.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );

    let broken = manifest(
        dir.path(),
        "broken.json",
        &json!({"type": "track", "event": "Broken"}).to_string(),
    );
    let out = run_cli(&[
        "render",
        "-f",
        file.to_str().unwrap(),
        "--event",
        broken.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TypeError"));

    let bad = manifest(
        dir.path(),
        "bad.yaml",
        &destination(
            "crm",
            "http://127.0.0.1:9/in",
            "  transform:\n    javascript: |\n      async function onTrack(e) {\n        return e +;\n      }\n",
        ),
    );
    let out = run_cli(&[
        "render",
        "-f",
        bad.to_str().unwrap(),
        "--event",
        event.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.transform.javascript")
            && stderr.contains("SyntaxError")
            && stderr.contains("line 2"),
        "{stderr}"
    );
}
