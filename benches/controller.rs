//! The operator at scale: a real `hookline controller` process against the in-process API server
//! (over HTTP), 1,000 WebhookDestinations created at once. Prints the time until every one is
//! reconciled (children applied, status written), the time until every one is `Ready` once its
//! Deployment reports available, the API calls per destination by verb, the controller's peak
//! RSS, and then the same for an operator restart over the unchanged destinations. Run with
//! `cargo bench --bench controller [-- COUNT]`.
//!
//! The in-process API server answers in microseconds; a real one is far slower per call, so the
//! figure that carries over to a cluster is the calls per destination, not the seconds.

#[path = "../tests/support/apiserver.rs"]
mod apiserver;

use apiserver::ApiServer;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NAMESPACE: &str = "bench";
const DESTINATIONS: &str = "hookline.dev/v1alpha1/webhookdestinations";
const DEPLOYMENTS: &str = "apps/v1/deployments";
const DEADLINE: Duration = Duration::from_secs(300);

fn destination(i: usize) -> Value {
    json!({
        "apiVersion": "hookline.dev/v1alpha1", "kind": "WebhookDestination",
        "metadata": {"name": format!("dest-{i:04}"), "namespace": NAMESPACE},
        "spec": {
            "endpoint": {"url": format!("https://crm-{i}.example.com/events")},
            "subscription": "type = \"track\" and event = \"Order Completed\"",
            "mapping": {"orderId": {"@path": "$.properties.order_id"}, "email": {"@path": "$.context.traits.email"}},
            "auth": {"type": "Bearer", "bearer": {"tokenSecretRef": {"name": "crm-token", "key": "token"}}},
            "batching": {"size": 50},
        },
    })
}

fn condition_status(obj: &Value, kind: &str) -> Option<String> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Polls until `done` holds for `count` objects, returning the time since `start`.
async fn until_all(
    server: &ApiServer,
    count: usize,
    start: Instant,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Duration {
    loop {
        let n = server
            .objects(DESTINATIONS)
            .iter()
            .filter(|d| done(d))
            .count();
        if n == count {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "only {n} of {count} {what} after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start_controller(kubeconfig: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hookline"))
        .args(["controller", "--listen", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", kubeconfig)
        .env("HOOKLINE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hookline controller")
}

async fn wait_ready(port: u16) {
    let start = Instant::now();
    while !reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "controller never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create_all(client: &Client, count: usize) {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), NAMESPACE);
    let secret = serde_json::from_value(json!({
        "metadata": {"name": "crm-token", "namespace": NAMESPACE},
        "stringData": {"token": "tok-123"},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let api: Api<hookline::api::WebhookDestination> = Api::namespaced(client.clone(), NAMESPACE);
    for i in 0..count {
        let d = serde_json::from_value(destination(i)).unwrap();
        api.create(&PostParams::default(), &d).await.unwrap();
    }
}

/// Plays the Deployment controller: every worker Deployment becomes available.
async fn make_all_available(server: &ApiServer, client: &Client) {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), NAMESPACE);
    for d in server.objects(DEPLOYMENTS) {
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let status = json!({"status": {
            "observedGeneration": d["metadata"]["generation"],
            "replicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas,
        }});
        let name = d["metadata"]["name"].as_str().unwrap();
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
    }
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let server = ApiServer::new();
    let addr = server.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, ApiServer::kubeconfig(addr, NAMESPACE)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut controller = start_controller(&kubeconfig, port);
    wait_ready(port).await;
    let client = server.client();

    let start = Instant::now();
    create_all(&client, count).await;
    let created = start.elapsed();
    let reconciled = until_all(&server, count, start, "reconciled", |d| {
        d["status"]["observedGeneration"] == 1
            && condition_status(d, "Accepted").as_deref() == Some("True")
    })
    .await;
    let deployments = server.objects(DEPLOYMENTS).len();
    assert_eq!(deployments, count, "one worker Deployment per destination");

    let available = Instant::now();
    make_all_available(&server, &client).await;
    let ready = until_all(&server, count, available, "Ready", |d| {
        condition_status(d, "Ready").as_deref() == Some("True")
    })
    .await;
    let peak = peak_rss_mb(controller.id());

    let stop = Instant::now();
    // SIGTERM: the graceful shutdown a Deployment rollout would trigger.
    let _ = Command::new("kill")
        .arg(controller.id().to_string())
        .status();
    let exit = controller.wait().unwrap();
    let shutdown = stop.elapsed();

    let calls = server.calls();
    let total_calls: u64 = calls.values().sum();

    // A restart over the same, unchanged destinations.
    let restart = Instant::now();
    let mut controller = start_controller(&kubeconfig, port);
    wait_ready(port).await;
    while reconciles(port).await < count as f64 {
        assert!(
            restart.elapsed() < DEADLINE,
            "the restarted operator never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let restarted = restart.elapsed();
    let restart_peak = peak_rss_mb(controller.id());
    let _ = Command::new("kill")
        .arg(controller.id().to_string())
        .status();
    let _ = controller.wait();
    let after_restart = server.calls();

    println!("destinations:               {count}");
    println!("created (API calls) in:     {:.2} s", created.as_secs_f64());
    println!(
        "all reconciled after:       {:.2} s  ({:.0} destinations/s)",
        reconciled.as_secs_f64(),
        count as f64 / reconciled.as_secs_f64()
    );
    println!("all Ready after available:  {:.2} s", ready.as_secs_f64());
    println!("controller peak RSS:        {peak:.1} MB");
    println!("API requests served:        {total_calls}");
    println!(
        "graceful shutdown:          {:.2} s ({exit})",
        shutdown.as_secs_f64()
    );
    println!("API calls per destination (the bench's own: creates, deployments/status):");
    print_per_destination(&calls, &Default::default(), count);
    println!(
        "restart: all reconciled in  {:.2} s, peak RSS {restart_peak:.1} MB; calls per destination:",
        restarted.as_secs_f64()
    );
    print_per_destination(&after_restart, &calls, count);
}

/// Calls made between `before` and `now`, per destination, by verb and collection.
fn print_per_destination(
    now: &std::collections::HashMap<String, u64>,
    before: &std::collections::HashMap<String, u64>,
    count: usize,
) {
    let mut rows: Vec<(&String, u64)> = now
        .iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    rows.sort();
    for (call, n) in rows {
        println!("  {:>8.2}  {call}", n as f64 / count as f64);
    }
}

/// `hookline_reconciles_total` of the controller listening on `port`.
async fn reconciles(port: u16) -> f64 {
    let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return 0.0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("hookline_reconciles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
