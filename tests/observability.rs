//! The chart's dashboard and alerts against a real Prometheus (Debian's `prometheus`, started
//! here on loopback) scraping a real `hookline run` and the operator (on the in-process API
//! server) after real traffic: a retry, a dead letter, a filtered event, OAuth tokens, a refused
//! client secret and a destination whose Secret is missing.

mod support;

use hookline::controller::operator;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::apiserver::ApiServer;
use support::oauth::{CLIENT_SECRET, OAuthServer};
use support::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `targets` (`host:port`) every second and evaluates `rules` every second.
    async fn start(targets: &[String], rules: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [dir.path().join("rules.yaml")],
            "scrape_configs": [{"job_name": "hookline", "static_configs": [{"targets": targets}]}],
        });
        std::fs::write(dir.path().join("prometheus.yml"), config.to_string()).unwrap();
        let port = free_port();
        let binary = std::env::var("HOOKLINE_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let child = Command::new(&binary)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} (scripts/tools.sh installs it): {e}")
            });
        let p = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reqwest::get(format!("{}/-/ready", p.base))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        p
    }

    /// The result of an instant query; fails on a query Prometheus refuses.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let answer: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", expr)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn firing(&self) -> Vec<String> {
        let answer: Value = reqwest::get(format!("{}/api/v1/alerts", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .map(|a| a["labels"]["alertname"].as_str().unwrap().to_string())
            .collect()
    }
}

/// The chart's alerts, each firing as soon as its expression holds (the `for:` clauses are the
/// chart's patience, not what is tested here).
fn rules_without_waiting() -> (String, Vec<String>) {
    let text =
        std::fs::read_to_string(repo("charts/hookline/files/prometheus-rules.yaml")).unwrap();
    let rules: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("for:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let exprs = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("expr: "))
        .map(str::to_string)
        .collect();
    (rules, exprs)
}

/// Every query of the dashboard, with Grafana's `$destination` matching all.
fn dashboard_queries() -> Vec<String> {
    let board: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("charts/hookline/dashboards/hookline.json")).unwrap(),
    )
    .unwrap();
    board["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().replace("$destination", ".*"))
        .collect()
}

async fn until(what: &str, check: impl AsyncFn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_evaluates_every_dashboard_query_and_the_provoked_alerts_fire() {
    // `orders`: a retry (503), then a dead letter (400), then deliveries.
    let endpoint = Endpoint::start().await;
    endpoint.respond(|n| match n {
        0 => (503, vec![]),
        1 => (400, vec![]),
        _ => (200, vec![]),
    });
    // `crm` gets OAuth tokens; `broken` has a client secret the server refuses.
    let oauth = OAuthServer::start(Duration::from_secs(3600), false).await;
    let dir = tempfile::tempdir().unwrap();
    let orders = destination(
        "orders",
        &endpoint.url,
        "  subscription: 'type = \"track\"'\n  delivery: { maxAttempts: 3 }\n",
    );
    let secret = |name: &str, value: &str| {
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{ name: {name}-oauth, namespace: sales }}\nstringData: {{ clientSecret: \"{value}\" }}\n"
        )
    };
    let crm =
        oauth.destination("crm", "sales", "ClientCredentials", "") + &secret("crm", CLIENT_SECRET);
    let broken = oauth
        .destination("broken", "sales", "ClientCredentials", "")
        .replace("name: crm-oauth", "name: broken-oauth")
        + &secret("broken", "wrong");
    let files = [
        manifest(dir.path(), "orders.yaml", &orders),
        manifest(dir.path(), "crm.yaml", &crm),
        manifest(dir.path(), "broken.yaml", &broken),
    ];
    let run = Hookline::start(&files, &dir.path().join("data")).await;

    // The operator, on the in-process API server.
    let server = ApiServer::new();
    let operator_port = free_port();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let opts = operator_options(operator_port);
    let operator = tokio::spawn(operator::run(server.client(), opts, shutdown));

    let (rules, alert_exprs) = rules_without_waiting();
    let run_target = run.base.trim_start_matches("http://").to_string();
    let prometheus =
        Prometheus::start(&[run_target, format!("127.0.0.1:{operator_port}")], &rules).await;
    until("both targets scraped", async || {
        prometheus.query("up == 1").await.len() == 2
    })
    .await;

    for (kind, event) in [
        ("track", track("u1", "Order Completed", json!({}))),
        ("track", track("u2", "Order Completed", json!({}))),
        ("identify", json!({"userId": "u3"})),
    ] {
        assert_eq!(run.post(&format!("/v1/{kind}"), event).await.status(), 200);
    }
    // A destination whose Secret is missing, reconciled twice while Prometheus watches.
    let api: kube::Api<hookline::api::WebhookDestination> =
        kube::Api::namespaced(server.client(), "analytics");
    let missing: hookline::api::WebhookDestination = serde_saphyr::from_str(
        "apiVersion: hookline.dev/v1alpha1\nkind: WebhookDestination\nmetadata: { name: lost, namespace: analytics }\nspec:\n  endpoint: { url: \"https://crm.example.com/x\" }\n  auth: { type: Bearer, bearer: { tokenSecretRef: { name: nowhere, key: token } } }\n",
    )
    .unwrap();
    api.create(&Default::default(), &missing).await.unwrap();
    until("the first failed reconcile scraped", async || {
        !prometheus
            .query("hookline_reconcile_failures_total")
            .await
            .is_empty()
    })
    .await;
    let touch = json!({"spec": {"endpoint": {"url": "https://crm.example.com/y"}}});
    api.patch(
        "lost",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(touch),
    )
    .await
    .unwrap();

    for expr in dashboard_queries() {
        until(&format!("data for {expr}"), async || {
            !prometheus.query(&expr).await.is_empty()
        })
        .await;
    }
    for alert in [
        "HooklineDeadLetters",
        "HooklineAuthNotReady",
        "HooklineReconcileErrors",
    ] {
        until(&format!("{alert} firing"), async || {
            prometheus.firing().await.iter().any(|a| a == alert)
        })
        .await;
    }
    // The others parse and evaluate, and say nothing of a healthy destination.
    let firing = prometheus.firing().await;
    for expr in &alert_exprs {
        prometheus.query(expr).await;
    }
    for quiet in [
        "HooklineEndpointUnhealthy",
        "HooklineDeliveryPaused",
        "HooklineBacklogOld",
    ] {
        assert!(
            !firing.iter().any(|a| a == quiet),
            "{quiet} fired: {firing:?}"
        );
    }
    let _ = stop.send(true);
    let _ = operator.await;
}
