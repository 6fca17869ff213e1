//! The JetStream backend (API §8) with real `nats-server` processes: `hookline run --nats`,
//! `hookline gateway`, several workers on one consumer, NATS and worker failures.

mod support;

use serde_json::{Value, json};
use std::collections::HashMap;
use support::nats::{NatsServer, urls};
use support::*;

const SECRETS: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: keys\nstringData:\n  shop: wk-shop\n  other: wk-other\n";
/// The source several destinations read, with the key `wk-shop`.
const SHOP_SOURCE: &str = "---\napiVersion: hookline.dev/v1alpha1\nkind: WebhookSource\nmetadata:\n  name: shop\nspec:\n  writeKeySecretRef: { name: keys, key: shop }\n";
/// How a destination reads it.
const READS_SHOP: &str = "  source:\n    sourceRef: { name: shop }\n";

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

const MAP_N: &str = "  mapping:\n    n: { \"@path\": \"$.properties.n\" }\n";

async fn run_nats(
    dir: &std::path::Path,
    nats: &str,
    files: &[std::path::PathBuf],
    data: &str,
) -> Hookline {
    Hookline::start_with(files, &dir.join(data), &["--nats", nats]).await
}

/// One nats-server, one endpoint, and the destination `crm` sending to it with `spec`.
struct Setup {
    nats: NatsServer,
    endpoint: Endpoint,
    dir: tempfile::TempDir,
    files: Vec<std::path::PathBuf>,
}

impl Setup {
    async fn new(spec: &str) -> Setup {
        let nats = NatsServer::start().await;
        let endpoint = Endpoint::start().await;
        let dir = tempfile::tempdir().unwrap();
        let files = vec![manifest(
            dir.path(),
            "d.yaml",
            &destination("crm", &endpoint.url, spec),
        )];
        Setup {
            nats,
            endpoint,
            dir,
            files,
        }
    }

    /// `hookline run --nats` with its own data dir `data`.
    async fn worker(&self, data: &str) -> Hookline {
        run_nats(self.dir.path(), &self.nats.url(), &self.files, data).await
    }
}

#[tokio::test]
async fn run_with_nats_retries_from_jetstream_and_keeps_the_order() {
    let spec = format!("{MAP_N}  delivery:\n    maxAttempts: 5\n");
    let t = Setup::new(&spec).await;
    let endpoint = &t.endpoint;
    // Every first attempt fails with a 503 and Retry-After: the retry comes back from JetStream.
    endpoint.respond(|n| {
        if n % 2 == 0 {
            (503, vec![("Retry-After".into(), "0".into())])
        } else {
            (200, vec![])
        }
    });
    let h = t.worker("a").await;
    let r = h.post("/v1/batch", numbered(0, 20)).await;
    assert_eq!(r.status(), 200);
    let got = endpoint
        .wait_for("20 events, each after one retry", |r| r.len() >= 40)
        .await;
    assert_eq!(got.len(), 40, "one 503 and one 200 per event");
    assert!(counts(&got).values().all(|c| *c == 2));
    // concurrency 1: a retried event holds back the ones behind it.
    let delivered: Vec<i64> = got
        .iter()
        .skip(1)
        .step_by(2)
        .map(|r| r.body["n"].as_i64().unwrap())
        .collect();
    assert_eq!(delivered, (0..20).collect::<Vec<_>>());
    let retried = h.metrics().await;
    assert!(
        retried.contains("hookline_delivery_retries_total{cause=\"503\",destination=\"crm\"} 20"),
        "{retried}"
    );
}

/// Messages in the events stream, and the events they hold (a bundle's header counts them).
/// Read through an ordered consumer up to the last message; one removed meanwhile (every
/// destination done with it) is simply not counted.
async fn stored_events(nats: &str) -> (u64, u64) {
    use futures::StreamExt;
    let client = async_nats::connect(nats).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("HOOKLINE_EVENTS").await.unwrap();
    if stream.info().await.unwrap().state.messages == 0 {
        return (0, 0);
    }
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut read = consumer.messages().await.unwrap();
    let (mut messages, mut events) = (0, 0);
    // Nothing arriving for this long: the messages there were are gone.
    let quiet = std::time::Duration::from_millis(500);
    while let Ok(next) = tokio::time::timeout(quiet, read.next()).await {
        let m = next.unwrap().unwrap();
        messages += 1;
        let count = m.headers.as_ref().and_then(|h| h.get("Hookline-Events"));
        events += count.map_or(1, |c| c.as_str().parse::<u64>().unwrap());
        if m.info().unwrap().pending == 0 {
            break;
        }
    }
    (messages, events)
}

#[tokio::test]
async fn the_gateway_stores_each_event_once_and_every_destination_reading_the_source_gets_its_own()
{
    let nats = NatsServer::start().await;
    let endpoint = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = READS_SHOP;
    let files = [
        manifest(
            dir.path(),
            "a.yaml",
            &destination(
                "a",
                &format!("{}/a", endpoint.url),
                &format!("{MAP_N}{key}  subscription: 'properties.n < 5'\n"),
            ),
        ),
        manifest(
            dir.path(),
            "b.yaml",
            &destination(
                "b",
                &format!("{}/b", endpoint.url),
                &format!(
                    "  mapping:\n    b: {{ \"@path\": \"$.properties.n\" }}\n{key}  subscription: 'properties.n >= 5'\n"
                ),
            ),
        ),
        manifest(
            dir.path(),
            "c.yaml",
            &destination(
                "c",
                &format!("{}/c", endpoint.url),
                &format!("{MAP_N}{key}"),
            ),
        ),
        manifest(dir.path(), "s.yaml", &format!("{SECRETS}{SHOP_SOURCE}")),
    ];
    // The workers create their consumers and routes, and stop: the stream keeps every event
    // until they are back.
    drop(run_nats(dir.path(), &nats.url(), &files, "w").await);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gateway = Hookline::start_args(
        &["gateway", "--listen", &listen, "--nats", &nats.url()],
        port,
    )
    .await;
    let client = reqwest::Client::new();
    let post = |key: &'static str, body: Value| {
        client
            .post(format!("{}/v1/batch", gateway.base))
            .basic_auth(key, Some(""))
            .json(&body)
            .send()
    };
    assert_eq!(
        post("wk-other", numbered(0, 1)).await.unwrap().status(),
        401
    );
    assert_eq!(
        post("wk-shop", numbered(0, 10)).await.unwrap().status(),
        200
    );
    // A client's retry of the same messages is not stored again.
    assert_eq!(
        post("wk-shop", numbered(0, 10)).await.unwrap().status(),
        200
    );
    assert_eq!(
        stored_events(&nats.url()).await,
        (1, 10),
        "each event stored once, in one message for the request"
    );

    let _workers = run_nats(dir.path(), &nats.url(), &files, "w").await;
    let got = endpoint
        .wait_for("a: 5 events, b: 5, c: 10", |r| {
            r.len() >= 20
                && r.iter()
                    .filter(|x| x.path == "/c" && !x.raw.is_empty())
                    .count()
                    >= 10
        })
        .await;
    let on = |path: &str| -> Vec<Value> {
        let mut v: Vec<Value> = got
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.body.clone())
            .collect();
        v.sort_by_key(|b| b.to_string());
        v.dedup();
        v
    };
    assert_eq!(on("/a").len(), 5);
    assert!(on("/a").iter().all(|b| b["n"].as_i64().unwrap() < 5));
    assert_eq!(on("/b").len(), 5);
    assert!(on("/b").iter().all(|b| b["b"].as_i64().unwrap() >= 5));
    assert_eq!(on("/c").len(), 10);
}

#[tokio::test]
async fn without_jetstream_the_gateway_answers_503_never_200() {
    let mut nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let files = [
        manifest(
            dir.path(),
            "a.yaml",
            &destination(
                "a",
                "http://127.0.0.1:9/",
                "  source:\n    writeKeySecretRef: { name: keys, key: shop }\n",
            ),
        ),
        manifest(dir.path(), "s.yaml", SECRETS),
    ];
    let _workers = run_nats(dir.path(), &nats.url(), &files, "w").await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gateway = Hookline::start_args(
        &["gateway", "--listen", &listen, "--nats", &nats.url()],
        port,
    )
    .await;
    nats.kill9();
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1/track", gateway.base))
        .basic_auth("wk-shop", Some(""))
        .json(&track("u", "E", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let ready = client
        .get(format!("{}/readyz", gateway.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
}

#[tokio::test]
async fn two_workers_share_one_consumer_and_a_killed_one_loses_nothing() {
    let spec = format!("{MAP_N}  delivery:\n    concurrency: 4\n");
    let t = Setup::new(&spec).await;
    let endpoint = &t.endpoint;
    endpoint.slow_down(std::time::Duration::from_millis(50));
    let mut first = t.worker("a").await;
    let second = t.worker("b").await;
    for i in 0..4 {
        let target = if i % 2 == 0 { &first } else { &second };
        assert_eq!(
            target
                .post("/v1/batch", numbered(i * 50, i * 50 + 50))
                .await
                .status(),
            200
        );
    }
    endpoint
        .wait_for("the first deliveries", |r| r.len() >= 20)
        .await;
    first.kill9();
    let got = endpoint
        .wait_for("all 200 events", |r| counts(r).len() == 200)
        .await;
    let twice = counts(&got).values().filter(|c| **c > 1).count();
    // Only what the killed worker had in flight (4 requests) may come twice: what it held
    // without sending comes back to the other worker unsent.
    assert!(twice <= 4, "{twice} events delivered twice");
    let m = second.metrics().await;
    assert!(
        m.contains("hookline_events_delivered_total{destination=\"crm\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn two_live_workers_deliver_each_event_once() {
    let spec = format!("{MAP_N}  delivery:\n    concurrency: 4\n");
    let t = Setup::new(&spec).await;
    let endpoint = &t.endpoint;
    let first = t.worker("a").await;
    let second = t.worker("b").await;
    assert_eq!(
        first.post("/v1/batch", numbered(0, 100)).await.status(),
        200
    );
    assert_eq!(
        second.post("/v1/batch", numbered(100, 200)).await.status(),
        200
    );
    let got = endpoint
        .wait_for("all 200 events", |r| counts(r).len() == 200)
        .await;
    assert!(
        counts(&got).values().all(|c| *c == 1),
        "an event was delivered twice"
    );
    assert_eq!(got.len(), 200);
    let delivered = |m: String| m.contains("hookline_events_delivered_total{destination=\"crm\"}");
    assert!(
        delivered(first.metrics().await) && delivered(second.metrics().await),
        "both workers delivered"
    );
}

#[tokio::test]
async fn a_worker_stopped_while_the_endpoint_is_down_hands_its_events_to_the_next() {
    let spec = format!("{MAP_N}  batching:\n    size: 10\n    maxWaitMillis: 50\n");
    let t = Setup::new(&spec).await;
    let endpoint = &t.endpoint;
    endpoint.respond(|_| (503, vec![]));
    let mut old = t.worker("a").await;
    assert_eq!(old.post("/v1/batch", numbered(0, 30)).await.status(), 200);
    endpoint
        .wait_for("a failing attempt", |r| !r.is_empty())
        .await;
    old.stop().await;
    endpoint.respond(|_| (200, vec![]));
    let _new = t.worker("b").await;
    let got = endpoint
        .wait_for("all 30 events", |r| {
            counts(
                &r.iter()
                    .filter(|x| x.body.is_array())
                    .cloned()
                    .collect::<Vec<_>>(),
            )
            .len()
                == 30
                && r.len() > 3
        })
        .await;
    assert!(counts(&got).len() == 30);
}

#[tokio::test]
async fn killing_one_nats_server_of_three_loses_no_accepted_event() {
    let mut servers = NatsServer::cluster().await;
    let endpoint = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("{MAP_N}  delivery:\n    concurrency: 4\n");
    let files = [manifest(
        dir.path(),
        "d.yaml",
        &destination("crm", &endpoint.url, &spec),
    )];
    let all = urls(&servers);
    let h = Hookline::start_with(
        &files,
        &dir.path().join("a"),
        // Replicas: 3 by default on a cluster.
        &["--nats", &all],
    )
    .await;
    // A client that retries a refused batch, as Segment's libraries do: every batch is accepted
    // in the end, by the two servers left.
    let mut accepted = Vec::new();
    let mut refusals = 0;
    for round in 0..20i64 {
        if round == 5 {
            servers[0].kill9();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let r = h
                .post("/v1/batch", numbered(round * 10, round * 10 + 10))
                .await;
            if r.status() == 200 {
                accepted.extend(round * 10..round * 10 + 10);
                break;
            }
            assert_eq!(
                r.status(),
                503,
                "an unstored batch is refused, never half-accepted"
            );
            refusals += 1;
            assert!(
                std::time::Instant::now() < deadline,
                "the two servers left never took the batch"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    assert_eq!(accepted.len(), 200, "after {refusals} refusals");
    let client = async_nats::connect(servers[1].url()).await.unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream("HOOKLINE_EVENTS")
        .await
        .unwrap();
    assert_eq!(stream.info().await.unwrap().config.num_replicas, 3);
    let got = endpoint
        .wait_for("every accepted event", |r| {
            let c = counts(r);
            accepted.iter().all(|n| c.contains_key(n))
        })
        .await;
    assert!(got.len() >= 200);
}

#[tokio::test]
async fn dead_letters_go_to_the_stream_and_replay_to_their_destination() {
    let t = Setup::new(MAP_N).await;
    let (nats, endpoint) = (&t.nats, &t.endpoint);
    endpoint.respond(|_| (400, vec![]));
    let h = t.worker("a").await;
    assert_eq!(h.post("/v1/batch", numbered(0, 3)).await.status(), 200);
    endpoint
        .wait_for("three refused events", |r| r.len() >= 3)
        .await;
    let list = || run_cli(&["dlq", "list", "crm", "--nats", &nats.url(), "-o", "json"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let letters: Value = loop {
        let out = list();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let letters: Value = serde_json::from_slice(&out.stdout).unwrap();
        if letters.as_array().unwrap().len() == 3 {
            break letters;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dead letters: {letters}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(letters[0]["destination"], "crm");
    assert_eq!(letters[0]["lastStatus"], 400);
    assert_eq!(letters[0]["event"]["properties"]["n"], 0);
    // Served by the worker's admin listener too (for `dlq NAME -n NS` through a port-forward),
    // never on its ingestion port.
    let served = get_json(&format!("{}/dlq", h.admin.as_ref().unwrap())).await;
    assert_eq!(served.as_array().unwrap().len(), 3);
    for (method, path) in [("GET", "/dlq"), ("POST", "/dlq/replay")] {
        let answer = reqwest::Client::new()
            .request(method.parse().unwrap(), format!("{}{path}", h.base))
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.status(),
            404,
            "{method} {path} on the ingestion port"
        );
    }

    endpoint.respond(|_| (200, vec![]));
    let out = run_cli(&["dlq", "replay", "crm", "--nats", &nats.url()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    endpoint
        .wait_for("the replayed events", |r| r.len() >= 6)
        .await;
    let out = list();
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );
}

#[tokio::test]
async fn events_accepted_while_a_destination_is_disabled_are_delivered_once_it_is_enabled() {
    let nats = NatsServer::start().await;
    let endpoint = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = |enabled: bool| {
        format!(
            "  enabled: {enabled}\n{MAP_N}  source:\n    writeKeySecretRef: {{ name: keys, key: shop }}\n"
        )
    };
    let secrets = manifest(dir.path(), "s.yaml", SECRETS);
    let disabled = [
        manifest(
            dir.path(),
            "off.yaml",
            &destination("crm", &endpoint.url, &spec(false)),
        ),
        secrets.clone(),
    ];
    let off = run_nats(dir.path(), &nats.url(), &disabled, "a").await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gateway = Hookline::start_args(
        &["gateway", "--listen", &listen, "--nats", &nats.url()],
        port,
    )
    .await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/batch", gateway.base))
        .basic_auth("wk-shop", Some(""))
        .json(&numbered(0, 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        stored_events(&nats.url()).await,
        (1, 10),
        "kept for the disabled destination"
    );
    assert!(endpoint.received().is_empty());
    drop(off);
    let enabled = [
        manifest(
            dir.path(),
            "on.yaml",
            &destination("crm", &endpoint.url, &spec(true)),
        ),
        secrets,
    ];
    let _on = run_nats(dir.path(), &nats.url(), &enabled, "a").await;
    endpoint
        .wait_for("the 10 events", |r| counts(r).len() == 10)
        .await;
}

#[tokio::test]
async fn attempts_are_counted_across_workers_from_jetstream() {
    let spec = format!("{MAP_N}  delivery:\n    maxAttempts: 2\n");
    let t = Setup::new(&spec).await;
    let (nats, endpoint) = (&t.nats, &t.endpoint);
    endpoint.respond(|_| (503, vec![("Retry-After".into(), "1".into())]));
    let mut first = t.worker("a").await;
    assert_eq!(first.post("/v1/batch", numbered(0, 1)).await.status(), 200);
    endpoint
        .wait_for("the first attempt", |r| r.len() == 1)
        .await;
    // The retry waits in JetStream: the worker that made the first attempt is gone.
    first.kill9();
    let _second = t.worker("b").await;
    endpoint
        .wait_for("the second attempt", |r| r.len() == 2)
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let letters = loop {
        let out = run_cli(&["dlq", "list", "crm", "--nats", &nats.url(), "-o", "json"]);
        let letters: Value = serde_json::from_slice(&out.stdout).unwrap();
        if !letters.as_array().unwrap().is_empty() {
            break letters;
        }
        assert!(std::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        letters[0]["attempts"], 2,
        "the second worker knew of the first attempt"
    );
    assert_eq!(endpoint.received().len(), 2);
}

// Multi-threaded: the CLI runs as a blocking child process while this runtime serves the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_name_n_ns_works_with_a_kubeconfig_alone_through_a_port_forward() {
    let t = Setup::new(MAP_N).await;
    t.endpoint.respond(|_| (422, vec![]));
    let worker = t.worker("a").await;
    assert_eq!(worker.post("/v1/batch", numbered(0, 2)).await.status(), 200);
    t.endpoint
        .wait_for("two refused events", |r| r.len() >= 2)
        .await;

    // Two worker pods of `crm` in `default`, one of them ready; the API server forwards the
    // ready one's loopback port 9091 to the worker's admin listener. The user has only a
    // kubeconfig.
    let api = support::apiserver::ApiServer::new();
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(api.client(), "default");
    for (pod, ready) in [
        ("crm-hookline-5d8f-old", "False"),
        ("crm-hookline-5d8f-new", "True"),
    ] {
        let created: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": pod, "namespace": "default", "labels": {
                "app.kubernetes.io/name": "hookline-worker", "app.kubernetes.io/instance": "crm"}},
        }))
        .unwrap();
        pods.create(&Default::default(), &created).await.unwrap();
        let status = json!({"status": {"conditions": [{"type": "Ready", "status": ready}]}});
        pods.patch_status(pod, &Default::default(), &kube::api::Patch::Merge(status))
            .await
            .unwrap();
    }
    let admin = worker.admin.as_ref().unwrap().trim_start_matches("http://");
    api.forward_pod_port("default", "crm-hookline-5d8f-new", 9091, admin);
    let setup = api.calls();
    let addr = api.serve().await;
    let kubeconfig = t.dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        support::apiserver::ApiServer::kubeconfig(addr, "default"),
    )
    .unwrap();
    let dlq = |args: &[&str]| {
        std::process::Command::new(bin())
            .arg("dlq")
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("HOOKLINE_NATS_URL")
            .output()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let letters = loop {
        let out = dlq(&["list", "crm", "-n", "default", "-o", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let letters: Value = serde_json::from_slice(&out.stdout).unwrap();
        if letters.as_array().unwrap().len() == 2 {
            break letters;
        }
        assert!(std::time::Instant::now() < deadline, "{letters}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(letters[0]["lastStatus"], 422);
    assert_eq!(letters[0]["destination"], "crm");

    t.endpoint.respond(|_| (200, vec![]));
    let out = dlq(&["replay", "crm", "-n", "default"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-queued 2 event(s)"));
    t.endpoint
        .wait_for("the replayed events", |r| r.len() >= 4)
        .await;
    // The chart's dlq-viewer ClusterRole grants exactly what the command used, and the `get`
    // on pods that `kubectl port-forward` makes first (API §10 grants both).
    let mut used: Vec<String> = api
        .calls()
        .into_keys()
        .filter(|c| !setup.contains_key(c))
        .collect();
    used.push("get v1/pods".into());
    support::rbac::assert_rules_cover_exactly(&used, &["dlq-viewer-rules.yaml"]);

    let missing = dlq(&["list", "nope", "-n", "default"]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("no worker pod of WebhookDestination default/nope is ready"),
        "{err}"
    );
}

#[tokio::test]
async fn a_replay_on_a_shared_source_reaches_only_its_own_destination() {
    let nats = NatsServer::start().await;
    let (refusing, accepting) = (Endpoint::start().await, Endpoint::start().await);
    refusing.respond(|_| (400, vec![]));
    let dir = tempfile::tempdir().unwrap();
    let key = READS_SHOP;
    let files = [
        manifest(
            dir.path(),
            "a.yaml",
            &destination("a", &refusing.url, &format!("{MAP_N}{key}")),
        ),
        manifest(
            dir.path(),
            "b.yaml",
            &destination("b", &accepting.url, &format!("{MAP_N}{key}")),
        ),
        manifest(dir.path(), "s.yaml", &format!("{SECRETS}{SHOP_SOURCE}")),
    ];
    let h = run_nats(dir.path(), &nats.url(), &files, "w").await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/batch", h.base))
        .basic_auth("wk-shop", Some(""))
        .json(&numbered(0, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    accepting
        .wait_for("b's three events", |r| r.len() == 3)
        .await;
    refusing
        .wait_for("a's three refusals", |r| r.len() == 3)
        .await;
    let list = || run_cli(&["dlq", "list", "a", "--nats", &nats.url(), "-o", "json"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while serde_json::from_slice::<Value>(&list().stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .len()
        < 3
    {
        assert!(std::time::Instant::now() < deadline, "a's dead letters");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    refusing.respond(|_| (200, vec![]));
    let out = run_cli(&["dlq", "replay", "a", "--nats", &nats.url()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    refusing
        .wait_for("a's replayed events", |r| r.len() == 6)
        .await;
    // The replays went to a's own subject, which b does not read; once a is done with them
    // nothing is left.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while stored_events(&nats.url()).await.0 > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the replays were not finished with"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(accepting.received().len(), 3, "b got nothing twice");
}

#[tokio::test]
async fn a_request_slower_than_the_ack_wait_is_not_handed_to_another_worker() {
    // The ack wait is 10 s; the request takes 12: the worker marks the event in progress.
    let nats = NatsServer::start().await;
    let endpoint = Endpoint::start().await;
    endpoint.slow_down(std::time::Duration::from_secs(12));
    let dir = tempfile::tempdir().unwrap();
    let slow = destination("crm", &endpoint.url, MAP_N)
        .replace("    url:", "    timeoutSeconds: 20\n    url:");
    let files = [manifest(dir.path(), "d.yaml", &slow)];
    let first = run_nats(dir.path(), &nats.url(), &files, "a").await;
    let _second = run_nats(dir.path(), &nats.url(), &files, "b").await;
    assert_eq!(first.post("/v1/batch", numbered(0, 1)).await.status(), 200);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream("HOOKLINE_EVENTS")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let info = loop {
        let info = stream.consumer_info("default_crm").await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 && !endpoint.received().is_empty() {
            break info;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered: {info:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(info.num_redelivered, 0, "JetStream handed it out again");
    assert_eq!(endpoint.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_holds_jetstream_events_without_using_their_attempts() {
    // Two attempts per event: held events that used them up would be dead-lettered.
    let spec = format!(
        "{MAP_N}  delivery:\n    maxAttempts: 2\n    concurrency: 2\n    circuitBreaker: {{ consecutiveFailures: 2, probeIntervalSeconds: 1 }}\n"
    );
    let t = Setup::new(&spec).await;
    let (nats, endpoint) = (&t.nats, &t.endpoint);
    let outage = endpoint.down(503);
    let worker = t.worker("a").await;
    assert_eq!(
        worker.post("/v1/batch", numbered(0, 10)).await.status(),
        200
    );
    // The requests in flight when the breaker opened (a nak frees its slot at once, so one
    // more may go out before the second failure), then a probe after a second and another
    // after two more.
    let ms = std::time::Duration::from_millis;
    let burst = |r: &[Received]| {
        r.iter()
            .take_while(|x| x.at.duration_since(r[0].at) < ms(500))
            .count()
    };
    let probed = endpoint
        .wait_for("two probes", |r| !r.is_empty() && r.len() >= burst(r) + 2)
        .await;
    let first = burst(&probed);
    assert!(first <= 3, "{first} requests before the breaker opened");
    let gap = |a: usize| probed[a + 1].at.duration_since(probed[a].at);
    assert!(
        gap(first - 1) >= ms(900),
        "first probe after {:?}",
        gap(first - 1)
    );
    assert!(
        gap(first) >= ms(1900),
        "second probe after {:?}",
        gap(first)
    );
    let during = endpoint.received().len();
    assert_eq!(during, first + 2, "only probes while the endpoint is down");
    outage.end();
    let got = endpoint
        .wait_for("every held event", |r| {
            // From the first probe on: the last may already have met the endpoint back up.
            let mut n: Vec<i64> = r[first..]
                .iter()
                .map(|r| r.body["n"].as_i64().unwrap())
                .collect();
            n.sort();
            n.dedup();
            n == (0..10).collect::<Vec<_>>()
        })
        .await;
    assert!(got.len() >= first + 10);
    let out = run_cli(&["dlq", "list", "crm", "--nats", &nats.url(), "-o", "json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );
}

/// A connection to `server` as the operator's, with the streams made, and the consumer of
/// default/crm reading its own subject.
async fn operator_with_consumer(
    server: &NatsServer,
) -> (
    hookline::jetstream::Nats,
    hookline::jetstream::names::DestinationNames,
) {
    use hookline::jetstream::names::DestinationNames;
    use hookline::jetstream::objects::{self, ConsumerPlan};
    let args = hookline::jetstream::NatsArgs {
        url: server.url(),
        creds: None,
        inbox: None,
        ca: None,
        replicas: None,
        max_age: std::time::Duration::from_secs(3600),
        own_creds: None,
    };
    let nats = args.connect("test").await.unwrap().expect("a NATS URL");
    // The connection is made in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Err(e) = objects::ensure_streams(&nats, args.retention()).await {
        assert!(std::time::Instant::now() < deadline, "{e}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let names = DestinationNames::new("default", "crm");
    let plan = ConsumerPlan::new(names.clone(), names.subject(), 4, 1);
    objects::ensure_consumer(&nats, &plan).await.unwrap();
    (nats, names)
}

#[tokio::test]
async fn removing_a_destination_whose_consumer_is_already_gone_is_done() {
    use hookline::jetstream::{backlog, objects};
    let server = NatsServer::start().await;
    let (nats, names) = operator_with_consumer(&server).await;
    assert_eq!(
        backlog::events(&nats, &names, None).await.unwrap().events,
        0
    );

    objects::remove_destination(&nats, &names).await.unwrap();
    assert!(
        backlog::events(&nats, &names, None).await.is_err(),
        "the consumer is gone"
    );
    // A deletion retried after the consumer went (the operator's finalizer runs again when
    // removing the finalizer failed) finishes rather than failing forever.
    objects::remove_destination(&nats, &names).await.unwrap();
}

/// `status.backlog` counts events (API §8), and a stored request holds many: each waiting
/// message counts the events it holds, and one acknowledged counts no more.
#[tokio::test]
async fn the_backlog_counts_the_events_in_each_stored_message() {
    use futures::StreamExt;
    use hookline::jetstream::{backlog, bundle, objects};
    let server = NatsServer::start().await;
    let (nats, names) = operator_with_consumer(&server).await;
    let js = &nats.context;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(bundle::EVENTS, "10");
    js.publish_with_headers(names.subject(), headers, "[]".into())
        .await
        .unwrap()
        .await
        .unwrap();
    js.publish(names.subject(), "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(backlog::messages(&nats, &names).await.unwrap(), 2);
    let count = || backlog::events(&nats, &names, None);
    let counted = count().await.unwrap();
    assert_eq!(counted.events, 11);

    let consumer: async_nats::jetstream::consumer::PullConsumer = objects::events_stream(&nats)
        .await
        .unwrap()
        .get_consumer(names.consumer())
        .await
        .unwrap();
    let mut pulled = consumer.fetch().max_messages(1).messages().await.unwrap();
    let bundle = pulled.next().await.unwrap().unwrap();
    assert_eq!(backlog::events_in(&bundle), 10);
    // Delivered and not yet done with: still waiting.
    assert_eq!(count().await.unwrap().events, 11);
    bundle.double_ack().await.unwrap();
    assert_eq!(count().await.unwrap().events, 1);
    // Counted again from a count made before the consumer moved: counted anew.
    let recounted = backlog::events(&nats, &names, Some(counted)).await.unwrap();
    assert_eq!(recounted.events, 1);
    // From a count of the consumer as it still is: its info alone, no counting consumer.
    let api_calls = || async { js.query_account().await.unwrap().requests.total };
    let before = api_calls().await;
    let again = backlog::events(&nats, &names, Some(recounted))
        .await
        .unwrap();
    assert_eq!(again, recounted);
    assert_eq!(
        api_calls().await - before,
        2,
        "the consumer's info, and this query"
    );
    // The consumers that counted are gone: nothing holds the stream's messages for them.
    let consumers: Vec<String> = objects::events_stream(&nats)
        .await
        .unwrap()
        .consumer_names()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(consumers, [names.consumer().to_string()]);
}

/// As in local mode (tests/pacing.rs): with the defaults, an endpoint answering 503 to
/// everything turns `Delivering=False` by time, and back once it answers; nothing is
/// dead-lettered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_long_enough_is_unhealthy_in_jetstream_mode_too() {
    let t = Setup::new(&format!(
        "{MAP_N}  delivery:\n    circuitBreaker: {{ unhealthyAfterSeconds: 1 }}\n"
    ))
    .await;
    let outage = t.endpoint.down(503);
    let h = t.worker("a").await;
    assert_eq!(h.post("/v1/batch", numbered(0, 60)).await.status(), 200);
    let unhealthy = wait_delivering(&h, "EndpointUnhealthy").await;
    assert_eq!(unhealthy["status"], "False");
    h.wait_for_metrics("the endpoint unhealthy", |m| {
        m.contains("hookline_endpoint_healthy{destination=\"crm\"} 0")
    })
    .await;
    outage.end();
    assert_eq!(wait_delivering(&h, "Delivering").await["status"], "True");
    t.endpoint
        .wait_for("every event", |r| counts(r).len() == 60)
        .await;
    let letters = run_cli(&["dlq", "list", "crm", "--nats", &t.nats.url(), "-o", "json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&letters.stdout).unwrap(),
        json!([])
    );
}

#[tokio::test]
async fn one_stored_request_whose_events_fare_differently_survives_a_worker_killed_mid_retry() {
    let spec = format!(
        "{MAP_N}  subscription: 'properties.n != 3'\n  delivery:\n    concurrency: 4\n    maxAttempts: 5\n"
    );
    let t = Setup::new(&spec).await;
    let endpoint = &t.endpoint;
    // 0 is delivered, 1 refused for good (dead-lettered), 2 refused once with a 2 s
    // Retry-After then accepted, 3 filtered out.
    endpoint.respond_by_body(|body, before| match body["n"].as_i64() {
        Some(1) => (400, vec![]),
        Some(2) if !before.iter().any(|r| r.body["n"] == 2) => {
            (503, vec![("Retry-After".into(), "2".into())])
        }
        _ => (200, vec![]),
    });
    let mut first = t.worker("a").await;
    assert_eq!(first.post("/v1/batch", numbered(0, 4)).await.status(), 200);
    // Three attempts made; the bundle is done with once 2's retry is stored on its own.
    endpoint
        .wait_for("0 delivered, 1 refused, 2 refused once", |r| r.len() >= 3)
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while stored_events(&t.nats.url()).await != (1, 1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the retry was not stored on its own: {:?}",
            stored_events(&t.nats.url()).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Killed between the retry and its delivery: another worker makes the second attempt.
    first.kill9();
    let _second = t.worker("b").await;
    let got = endpoint
        .wait_for("2 delivered on its second attempt", |r| {
            r.iter().filter(|r| r.body["n"] == 2).count() == 2
        })
        .await;
    let c = counts(&got);
    assert_eq!(
        (c.get(&0), c.get(&1), c.get(&2), c.get(&3)),
        (Some(&1), Some(&1), Some(&2), None)
    );
    let out = run_cli(&["dlq", "list", "crm", "--nats", &t.nats.url(), "-o", "json"]);
    let letters: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(letters.as_array().unwrap().len(), 1, "{letters}");
    assert_eq!(letters[0]["event"]["properties"]["n"], 1);
    while stored_events(&t.nats.url()).await != (0, 0) {
        assert!(std::time::Instant::now() < deadline + std::time::Duration::from_secs(10));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_bundled_event_retried_on_its_own_keeps_its_attempt_count() {
    let spec = format!("{MAP_N}  delivery:\n    concurrency: 4\n    maxAttempts: 3\n");
    let t = Setup::new(&spec).await;
    t.endpoint
        .respond_by_body(|body, _| match body["n"].as_i64() {
            Some(1) => (503, vec![("Retry-After".into(), "0".into())]),
            _ => (200, vec![]),
        });
    let h = t.worker("a").await;
    assert_eq!(h.post("/v1/batch", numbered(0, 2)).await.status(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let letters = loop {
        let out = run_cli(&["dlq", "list", "crm", "--nats", &t.nats.url(), "-o", "json"]);
        let letters: Value = serde_json::from_slice(&out.stdout).unwrap();
        if !letters.as_array().unwrap().is_empty() {
            break letters;
        }
        assert!(std::time::Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(letters[0]["attempts"], 3);
    let tried = t
        .endpoint
        .received()
        .iter()
        .filter(|r| r.body["n"] == 1)
        .count();
    assert_eq!(
        tried, 3,
        "maxAttempts 3, across the bundle and the retries on its own"
    );
}

#[tokio::test]
async fn a_worker_stopped_partway_through_a_stored_request_leaves_the_rest_in_order_and_none_twice()
{
    let spec = format!("{MAP_N}  delivery:\n    concurrency: 1\n");
    let t = Setup::new(&spec).await;
    t.endpoint.slow_down(std::time::Duration::from_millis(20));
    let mut old = t.worker("a").await;
    assert_eq!(old.post("/v1/batch", numbered(0, 30)).await.status(), 200);
    t.endpoint
        .wait_for("the first deliveries", |r| r.len() >= 5)
        .await;
    old.stop().await;
    let _new = t.worker("b").await;
    let got = t
        .endpoint
        .wait_for("all 30 events", |r| counts(r).len() == 30)
        .await;
    let order: Vec<i64> = got.iter().map(|r| r.body["n"].as_i64().unwrap()).collect();
    assert_eq!(order, (0..30).collect::<Vec<_>>(), "in order, none twice");
}

/// A NATS server without room for the progress bucket's records (the bundled chart once ran
/// with no memory storage): the refusal is counted and logged, not lost in fire-and-forget.
#[tokio::test]
async fn a_progress_record_the_bucket_refuses_shows_in_a_metric() {
    use hookline::jetstream::names::DestinationNames;
    use hookline::jetstream::progress::{Progress, bits};
    let nats = NatsServer::with_config("jetstream { max_memory_store: 1 }").await;
    let args = hookline::jetstream::NatsArgs {
        url: nats.url(),
        creds: None,
        inbox: None,
        ca: None,
        replicas: Some(1),
        max_age: std::time::Duration::from_secs(3600),
        own_creds: None,
    };
    let connected = args.connect("test").await.unwrap().unwrap();
    connected
        .connected(&mut tokio::sync::watch::channel(false).1)
        .await;
    hookline::jetstream::objects::ensure_streams(&connected, args.retention())
        .await
        .unwrap();
    let progress = Progress::open(&connected, &DestinationNames::new("default", "refused"))
        .await
        .expect("the bucket exists");
    // Records are checked once a second: keep recording until one is, within a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let failures = || {
        hookline::metrics::METRICS
            .progress_write_failures
            .with_label_values(&["refused"])
            .get()
    };
    let mut seq = 0;
    while failures() == 0 {
        assert!(std::time::Instant::now() < deadline, "no refusal counted");
        for _ in 0..3 {
            seq += 1;
            progress.record(seq, bits([true, false, true].into_iter()));
        }
        progress.flush(&connected.client).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
