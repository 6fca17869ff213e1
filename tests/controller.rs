//! The real `kube::runtime::Controller` against an in-process API server: WebhookDestinations
//! become ConfigMap + ServiceAccount + Deployment + Service, status follows, drift is undone.

mod support;

use hookline::api::WebhookDestination;
use hookline::config::worker::WorkerConfig;
use hookline::controller::build::{CONFIG_HASH_ANNOTATION, CONFIG_KEY};
use hookline::controller::worker_status::WorkerStatusOptions;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::apiserver::ApiServer;
use support::free_port;
use support::operator::{
    NS, Operator, bearer_destination, condition, eventually, options, wait_condition,
};
use support::rbac::{assert_rules_cover, assert_rules_cover_exactly};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_destination_becomes_owned_children_and_ready_follows_the_worker() {
    let op = Operator::start().await;
    op.create_secret("crm", json!({"token": "super-secret-token"}))
        .await;
    let created = op
        .create_destination(&bearer_destination("orders", ""))
        .await;
    let uid = created.uid().unwrap();

    let (d, reason, _) = wait_condition(&op, "orders", "WorkerAvailable", "False").await;
    assert_eq!(reason, "Progressing");
    assert_eq!(condition(&d, "Accepted").unwrap().0, "True");
    assert_eq!(condition(&d, "AuthReady").unwrap().1, "BearerToken");
    assert_eq!(condition(&d, "Ready").unwrap().0, "False");
    let status = d.status.clone().unwrap();
    assert_eq!(
        status.ingest_url.as_deref(),
        Some("http://orders-hookline.analytics.svc:8080")
    );

    let owned_by_dest = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        let refs = meta.owner_references.clone().unwrap_or_default();
        refs.len() == 1 && refs[0].uid == uid && refs[0].controller == Some(true)
    };
    let cm: ConfigMap = op.api().get("orders-hookline").await.unwrap();
    assert!(owned_by_dest(&cm.metadata));
    let config_text = &cm.data.unwrap()[CONFIG_KEY];
    assert!(!config_text.contains("super-secret-token"), "{config_text}");
    let config: WorkerConfig = serde_saphyr::from_str(config_text).unwrap();
    assert_eq!(config.destination.name_any(), "orders");
    let sa: ServiceAccount = op.api().get("orders-hookline").await.unwrap();
    assert!(owned_by_dest(&sa.metadata));
    let svc: Service = op.api().get("orders-hookline").await.unwrap();
    assert!(owned_by_dest(&svc.metadata));
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 8080);
    let deploy: Deployment = op.api().get("orders-hookline").await.unwrap();
    assert!(owned_by_dest(&deploy.metadata));
    let pod = deploy.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("hookline:test"));
    assert_eq!(
        container.args.clone().unwrap(),
        ["worker", "--config", "/etc/hookline/config/worker.yaml"]
    );
    for probe in [&container.readiness_probe, &container.liveness_probe] {
        let probe = probe.as_ref().expect("worker probes");
        assert_eq!(
            probe.timeout_seconds,
            Some(5),
            "probes wait for ingestion threads that yield to delivery"
        );
    }
    let sc = container.security_context.clone().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let secret_volumes: Vec<String> = pod
        .volumes
        .unwrap()
        .iter()
        .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
        .collect();
    assert_eq!(secret_volumes, ["crm"]);

    op.make_available("orders-hookline").await;
    let (d, reason, _) = wait_condition(&op, "orders", "Ready", "True").await;
    assert_eq!(reason, "Delivering");
    assert_eq!(d.status.unwrap().observed_generation, Some(1));
    // One Normal event says it is ready; starting up drew none.
    let events = eventually("the Ready event", || async {
        let events = op.server.objects("events.k8s.io/v1/events");
        (!events.is_empty()).then_some(events)
    })
    .await;
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert_eq!(reasons, ["Ready"], "{events:#?}");
    assert_eq!(events[0]["type"], "Normal");
    op.stop().await;
}

#[tokio::test]
async fn a_spec_edit_is_observed_and_rolls_the_deployment() {
    let op = Operator::with_a_ready_destination().await;
    let hash = |d: &Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    };
    let before = hash(&op.api().get("orders-hookline").await.unwrap());

    let patch = json!({"spec": {"mapping": {"order": {"@path": "$.properties.order_id"}}}});
    op.api::<WebhookDestination>()
        .patch("orders", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let d = eventually("observedGeneration 2", || async {
        let d = op.destination("orders").await;
        (d.status.as_ref()?.observed_generation == Some(2)).then_some(d)
    })
    .await;
    assert_eq!(d.metadata.generation, Some(2));
    let after = hash(&op.api().get("orders-hookline").await.unwrap());
    assert_ne!(before, after, "a config change must roll the worker pods");
    let cm: ConfigMap = op.api().get("orders-hookline").await.unwrap();
    assert!(cm.data.unwrap()[CONFIG_KEY].contains("order_id"));
    // The new pods are not available yet: the summary says so until they are.
    let (_, reason, _) = wait_condition(&op, "orders", "Ready", "False").await;
    assert_eq!(reason, "Progressing");
    op.stop().await;
}

#[tokio::test]
async fn an_invalid_spec_is_not_accepted_and_nothing_is_deployed() {
    let op = Operator::start().await;
    op.create_secret("crm", json!({"token": "t"})).await;
    let bad_mapping = bearer_destination("bad-mapping", "").replace(
        r#"{ id: { "@path": "$.messageId" } }"#,
        r#"{ id: { "@template": 5 } }"#,
    );
    op.create_destination(&bad_mapping).await;
    op.create_destination(&bearer_destination(
        "bad-subscription",
        "  subscription: 'type = \"track\" and'\n",
    ))
    .await;

    let (d, reason, message) = wait_condition(&op, "bad-mapping", "Accepted", "False").await;
    assert_eq!(reason, "InvalidMapping");
    assert!(message.contains("/id/@template"), "{message}");
    assert_eq!(condition(&d, "Ready").unwrap().1, "InvalidMapping");
    let (_, reason, message) = wait_condition(&op, "bad-subscription", "Accepted", "False").await;
    assert_eq!(reason, "InvalidSubscription");
    assert!(message.starts_with("spec.subscription"), "{message}");

    let deployments = op
        .api::<Deployment>()
        .list(&Default::default())
        .await
        .unwrap();
    assert!(deployments.items.is_empty(), "nothing may be deployed");
    let events = op.server.objects("events.k8s.io/v1/events");
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "InvalidMapping" && e["type"] == "Warning")
    );
    op.stop().await;
}

#[tokio::test]
async fn a_missing_secret_holds_the_destination_until_it_is_created() {
    let op = Operator::start().await;
    op.create_destination(&bearer_destination("orders", ""))
        .await;
    let (_, reason, message) = wait_condition(&op, "orders", "AuthReady", "False").await;
    assert_eq!(reason, "SecretNotFound");
    assert!(
        message.contains("crm") && message.contains("spec.auth.bearer.tokenSecretRef"),
        "{message}"
    );
    assert!(
        op.api::<Deployment>()
            .get_opt("orders-hookline")
            .await
            .unwrap()
            .is_none()
    );

    op.create_secret("crm", json!({"token": "t"})).await;
    let (_, reason, _) = wait_condition(&op, "orders", "AuthReady", "True").await;
    assert_eq!(reason, "BearerToken");
    eventually("the worker deployment", || async {
        op.api::<Deployment>()
            .get_opt("orders-hookline")
            .await
            .unwrap()
    })
    .await;
    // Secrets trigger reconciles through a metadata-only watch: values are read only by name.
    let calls = op.server.calls();
    let secret_reads: Vec<_> = calls
        .keys()
        .filter(|k| k.contains("v1/secrets") && !k.starts_with("create "))
        .collect();
    assert!(
        secret_reads
            .iter()
            .all(|k| k.starts_with("get ") || k.ends_with("(metadata)")),
        "{secret_reads:?}"
    );
    assert!(
        calls.contains_key("watch v1/secrets (metadata)"),
        "{secret_reads:?}"
    );
    op.stop().await;
}

#[tokio::test]
async fn disabled_scales_the_worker_to_zero() {
    let op = Operator::start().await;
    op.create_secret("crm", json!({"token": "t"})).await;
    op.create_destination(&bearer_destination("orders", "  enabled: false\n"))
        .await;
    let (d, reason, _) = wait_condition(&op, "orders", "Ready", "True").await;
    assert_eq!(reason, "Disabled");
    assert_eq!(condition(&d, "WorkerAvailable").unwrap().1, "ScaledToZero");
    let deploy: Deployment = op.api().get("orders-hookline").await.unwrap();
    assert_eq!(deploy.spec.unwrap().replicas, Some(0));
    op.stop().await;
}

#[tokio::test]
async fn drift_in_children_is_corrected() {
    let op = Operator::start().await;
    op.create_secret("crm", json!({"token": "t"})).await;
    op.create_destination(&bearer_destination("orders", ""))
        .await;
    wait_condition(&op, "orders", "WorkerAvailable", "False").await;

    op.delete_service_and_wait_for_it("orders-hookline").await;

    let scale = json!({"spec": {"replicas": 7}});
    op.api::<Deployment>()
        .patch(
            "orders-hookline",
            &PatchParams::default(),
            &Patch::Merge(scale),
        )
        .await
        .unwrap();
    eventually("the edited Deployment to be put back", || async {
        let d: Deployment = op.api().get("orders-hookline").await.unwrap();
        (d.spec?.replicas == Some(1)).then_some(())
    })
    .await;
    op.stop().await;
}

#[tokio::test]
async fn an_unchanged_status_is_not_written_again() {
    let op = Operator::with_a_ready_destination().await;
    let status_writes =
        |op: &Operator| op.server.calls()["patch hookline.dev/v1alpha1/webhookdestinations/status"];
    let writes_before = status_writes(&op);
    // Two reconciles with nothing new for the status: each recreates a deleted Service.
    for _ in 0..2 {
        op.delete_service_and_wait_for_it("orders-hookline").await;
    }
    assert_eq!(status_writes(&op), writes_before);
    op.stop().await;
}

#[tokio::test]
async fn only_the_lease_holder_reconciles() {
    let server = ApiServer::new();
    let a = Operator::start_on(server.clone(), Some("hookline-system"), "op-a").await;
    let b = Operator::start_on(server.clone(), Some("hookline-system"), "op-b").await;
    let lease = eventually("the lease", || async {
        server.objects("coordination.k8s.io/v1/leases").pop()
    })
    .await;
    let holder = lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    let (leader, follower) = if holder == "op-a" { (a, b) } else { (b, a) };
    // Both are ready: a standby serves health and metrics and must not stall a rollout.
    eventually("both replicas ready", || async {
        (leader.ready().await && follower.ready().await).then_some(())
    })
    .await;

    leader.create_secret("crm", json!({"token": "t"})).await;
    leader
        .create_destination(&bearer_destination("orders", ""))
        .await;
    wait_condition(&leader, "orders", "Accepted", "True").await;
    leader.make_available("orders-hookline").await;
    let events = eventually("an event", || async {
        let events = server.objects("events.k8s.io/v1/events");
        (!events.is_empty()).then_some(events)
    })
    .await;
    let reporters: Vec<_> = events
        .iter()
        .map(|e| {
            e["reportingInstance"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(!reporters.is_empty());
    assert!(
        reporters.iter().all(|r| *r == holder),
        "two replicas must never both run the controller: {reporters:?}"
    );
    leader.stop().await;
    follower.stop().await;
}

#[tokio::test]
async fn a_watch_namespace_limits_what_the_operator_touches() {
    let mut opts = options(None, "op-1", free_port());
    opts.watch_namespace = Some(NS.into());
    let op = Operator::launch(ApiServer::new(), opts);
    let elsewhere: Api<WebhookDestination> = Api::namespaced(op.client.clone(), "other");
    let mut outside: WebhookDestination =
        serde_saphyr::from_str(&bearer_destination("outside", "")).unwrap();
    outside.metadata.namespace = Some("other".into());
    elsewhere
        .create(&PostParams::default(), &outside)
        .await
        .unwrap();
    op.create_secret("crm", json!({"token": "t"})).await;
    op.create_destination(&bearer_destination("inside", ""))
        .await;
    wait_condition(&op, "inside", "Accepted", "True").await;
    // The destination outside was created first, so had it been watched it would be done too.
    let outside = elsewhere.get("outside").await.unwrap();
    assert!(outside.status.is_none(), "{:?}", outside.status);
    assert!(
        op.server
            .objects("apps/v1/deployments")
            .iter()
            .all(|d| d["metadata"]["namespace"] == NS)
    );
    op.stop().await;
}

fn oauth_destination(name: &str, server: &support::oauth::OAuthServer, grant: &str) -> String {
    server.destination(name, NS, grant, "")
}

async fn token_secret(op: &Operator, name: &str) -> Option<Secret> {
    op.api::<Secret>()
        .get_opt(&format!("{name}-oauth-token"))
        .await
        .unwrap()
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let data = secret.data.as_ref()?;
    data.get(key)
        .map(|v| String::from_utf8(v.0.clone()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_tokens_are_kept_in_an_owned_secret() {
    let server = support::oauth::OAuthServer::start(Duration::from_secs(3600), false).await;
    let op = Operator::start().await;
    op.create_secret(
        "crm-oauth",
        json!({"clientSecret": support::oauth::CLIENT_SECRET}),
    )
    .await;
    let created = op
        .create_destination(&oauth_destination("orders", &server, "ClientCredentials"))
        .await;
    let (d, reason, _) = wait_condition(&op, "orders", "AuthReady", "True").await;
    assert_eq!(reason, "TokenAvailable");
    let auth = d.status.unwrap().auth.unwrap();
    assert_eq!(
        auth.token_secret_name.as_deref(),
        Some("orders-oauth-token")
    );
    let expires_at = auth.expires_at.unwrap();
    assert!(expires_at.ends_with('Z'), "{expires_at}");

    let secret = token_secret(&op, "orders").await.unwrap();
    let issued = server.issued();
    assert_eq!(
        secret_text(&secret, "access_token").unwrap(),
        issued[0].token
    );
    assert!(secret_text(&secret, "expires_at").is_some());
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.uid, created.uid().unwrap());
    assert!(
        op.api::<Deployment>()
            .get_opt("orders-hookline")
            .await
            .unwrap()
            .is_some()
    );
    // Deleting the token Secret is drift: the operator stores its token again.
    op.api::<Secret>()
        .delete("orders-oauth-token", &DeleteParams::default())
        .await
        .unwrap();
    let restored = eventually("the token Secret restored", || async {
        token_secret(&op, "orders").await
    })
    .await;
    assert_eq!(
        secret_text(&restored, "access_token").unwrap(),
        issued[0].token
    );
    assert_eq!(server.issued().len(), 1, "restored, not fetched again");

    // Tokens never reach status or events.
    let everything = format!(
        "{:?}{:?}",
        op.destination("orders").await.status,
        op.server.objects("events.k8s.io/v1/events")
    );
    assert!(!everything.contains(&issued[0].token));
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_is_reported_with_the_servers_error() {
    let server = support::oauth::OAuthServer::start(Duration::from_secs(3600), false).await;
    let op = Operator::start().await;
    op.create_secret("crm-oauth", json!({"clientSecret": "wrong"}))
        .await;
    op.create_destination(&oauth_destination("orders", &server, "ClientCredentials"))
        .await;
    let (_, reason, message) = wait_condition(&op, "orders", "AuthReady", "False").await;
    let (reason, message) = if reason == "TokenPending" {
        let (_, r, m) = eventually("InvalidClient", || async {
            let d = op.destination("orders").await;
            condition(&d, "AuthReady").filter(|c| c.1 == "InvalidClient")
        })
        .await;
        (r, m)
    } else {
        (reason, message)
    };
    assert_eq!(reason, "InvalidClient");
    assert!(message.contains("invalid_client"), "{message}");
    op.warning_event("InvalidClient").await;
    assert!(token_secret(&op, "orders").await.is_none());
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hookline_connect_stores_the_grant_for_the_operator() {
    let server = support::oauth::OAuthServer::start(Duration::from_secs(3600), false).await;
    let op = Operator::start().await;
    op.create_secret(
        "crm-oauth",
        json!({"clientSecret": support::oauth::CLIENT_SECRET}),
    )
    .await;
    op.create_destination(&oauth_destination("orders", &server, "AuthorizationCode"))
        .await;
    let (d, reason, message) = eventually("ConsentRequired", || async {
        let d = op.destination("orders").await;
        condition(&d, "AuthReady")
            .filter(|c| c.1 == "ConsentRequired")
            .map(|(_, r, m)| (d, r, m))
    })
    .await;
    assert_eq!(reason, "ConsentRequired");
    assert!(message.contains("hookline connect"), "{message}");
    assert_eq!(
        d.status.unwrap().auth.unwrap().authorization_url,
        Some(format!("{}/authorize", server.url))
    );

    let (_dir, kubeconfig) = op.kubeconfig().await;
    let mut child = std::process::Command::new(support::bin())
        .args(["connect", "orders", "-n", NS, "--no-browser"])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    // The reader stays alive: connect prints once more when it is done.
    let (url, _stdout) = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        (line, stdout)
    })
    .await
    .unwrap();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = browser.get(url.trim()).send().await.unwrap();
    let callback = answer.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(browser.get(&callback).send().await.unwrap().status(), 200);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());

    let (_, reason, _) = wait_condition(&op, "orders", "AuthReady", "True").await;
    assert_eq!(reason, "TokenAvailable");
    let secret = token_secret(&op, "orders").await.unwrap();
    assert!(
        secret_text(&secret, "refresh_token")
            .unwrap()
            .starts_with("rt-")
    );
    let deploy: Deployment = op.api().get("orders-hookline").await.unwrap();
    let volumes = deploy.spec.unwrap().template.spec.unwrap().volumes.unwrap();
    let token_volume = volumes
        .iter()
        .find_map(|v| {
            v.secret
                .as_ref()
                .filter(|s| s.secret_name.as_deref() == Some("orders-oauth-token"))
        })
        .expect("the worker follows the token Secret");
    assert_eq!(token_volume.optional, Some(true));
    op.stop().await;
}

/// Every call the operator makes is allowed by the chart's RBAC, and every rule is used: a new
/// call without a rule, or a rule nothing needs, fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_rbac_covers_exactly_the_calls_the_operator_makes() {
    let oauth = support::oauth::OAuthServer::start(Duration::from_secs(3600), false).await;
    let server = ApiServer::new();
    // The test's own setup happens before the operator starts, so its calls can be told apart.
    let secrets: Api<Secret> = Api::namespaced(server.client(), NS);
    for (name, data) in [
        ("crm", json!({"token": "t"})),
        (
            "crm-oauth",
            json!({"clientSecret": support::oauth::CLIENT_SECRET}),
        ),
    ] {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS}, "stringData": data,
        }))
        .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    let destinations: Api<WebhookDestination> = Api::namespaced(server.client(), NS);
    for yaml in [
        bearer_destination("orders", ""),
        oauth_destination("tokens", &oauth, "ClientCredentials"),
    ] {
        let d: WebhookDestination = serde_saphyr::from_str(&yaml).unwrap();
        destinations
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }
    let source: hookline::api::WebhookSource = serde_json::from_value(json!({
        "apiVersion": "hookline.dev/v1alpha1", "kind": "WebhookSource",
        "metadata": {"name": "website", "namespace": NS}, "spec": {},
    }))
    .unwrap();
    Api::namespaced(server.client(), NS)
        .create(&PostParams::default(), &source)
        .await
        .unwrap();
    let reader: WebhookDestination = serde_saphyr::from_str(&bearer_destination(
        "reader",
        "  source:\n    sourceRef: { name: website }\n",
    ))
    .unwrap();
    destinations
        .create(&PostParams::default(), &reader)
        .await
        .unwrap();
    let setup_calls = server.calls();
    let mut opts = options(Some("hookline-system"), "op-a", free_port());
    opts.worker_status = Some(WorkerStatusOptions {
        url: "http://127.0.0.1:9/status".into(),
        every: Duration::from_millis(200),
    });
    let client = server.http_client().await;
    let op = Operator::launch_with(server.clone(), client, opts);
    wait_condition(&op, "orders", "Accepted", "True").await;
    wait_condition(&op, "reader", "Accepted", "True").await;
    let sources: Api<hookline::api::WebhookSource> = op.api();
    eventually("the source's status", || async {
        sources
            .get("website")
            .await
            .unwrap()
            .status
            .filter(|s| s.destinations == Some(1))
    })
    .await;
    wait_condition(&op, "tokens", "AuthReady", "True").await;
    op.make_available("orders-hookline").await;
    wait_condition(&op, "orders", "Ready", "True").await;
    op.delete_service_and_wait_for_it("orders-hookline").await;
    // A test event, sent by the destination's worker pod through the operator's port-forward.
    let endpoint = support::Endpoint::start().await;
    let local = bearer_destination("orders", "")
        .replace("https://crm.example.com/api/events", &endpoint.url);
    let _worker = op.worker_pod(&local, json!({"token": "t"}), &[]).await;
    let annotate = json!({"metadata": {"annotations": {"hookline.dev/test-event": "rbac-1"}}});
    destinations
        .patch("orders", &PatchParams::default(), &Patch::Merge(annotate))
        .await
        .unwrap();
    eventually("the test event's answer", || async {
        let last = op.destination("orders").await.status?.last_test_event?;
        (last.status_code == Some(200)).then_some(())
    })
    .await;
    op.stop().await;

    // What the test did meanwhile (playing the Deployment controller and the kubelet, deleting a
    // Service, asking for a test event, reading results) is not the operator's.
    let own = [
        "get hookline.dev/v1alpha1/webhookdestinations",
        "get hookline.dev/v1alpha1/webhooksources",
        "patch hookline.dev/v1alpha1/webhookdestinations",
        "patch apps/v1/deployments/status",
        "get apps/v1/deployments",
        "delete v1/services",
        "get v1/services",
        "create v1/pods",
        "patch v1/pods/status",
    ];
    let operator_calls = calls_since(&server, &setup_calls, &own);
    assert_rules_cover_exactly(
        &operator_calls,
        &[
            "operator-rules.yaml",
            "namespace-rules.yaml",
            "leader-election-rules.yaml",
        ],
    );
}

/// The kinds of call made since `setup` (more of them than then), less the test's `own`.
fn calls_since(
    server: &ApiServer,
    setup: &std::collections::HashMap<String, u64>,
    own: &[&str],
) -> Vec<String> {
    server
        .calls()
        .into_iter()
        .filter(|(c, n)| setup.get(c).is_none_or(|before| n > before))
        .map(|(c, _)| c)
        .filter(|c| !own.contains(&c.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hookline_test_in_the_cluster_sends_with_the_real_credentials() {
    let endpoint = support::Endpoint::start().await;
    let op = Operator::start_over_http().await;
    let yaml = op.bearer_destination_to(&endpoint, "cluster-token").await;
    let _worker = op
        .worker_pod(&yaml, json!({"token": "cluster-token"}), &[])
        .await;

    let out = op.hookline_test("orders", &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("response: 200"), "{stdout}");
    let got = endpoint.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers["authorization"], "Bearer cluster-token");
    let last = op
        .destination("orders")
        .await
        .status
        .unwrap()
        .last_test_event
        .unwrap();
    assert_eq!(last.status_code, Some(200));
    assert!(last.request_id.is_some() && last.latency_millis.is_some());

    // A failing endpoint that echoes the request: exit 1, and the token never reaches status.
    endpoint.respond(|_| (500, vec![]));
    let event = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        event.path(),
        r#"{"type":"track","event":"Custom","messageId":"m-7"}"#,
    )
    .unwrap();
    let out = op
        .hookline_test("orders", &["--event", event.path().to_str().unwrap()])
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("response: 500"));
    assert_eq!(endpoint.received()[1].body["id"], "m-7");
    let status = format!("{:?}", op.destination("orders").await.status);
    assert!(!status.contains("cluster-token"), "{status}");
    op.stop().await;
}

/// An endpoint that takes requests and answers none of them until `release` is notified.
async fn holding_endpoint() -> (String, Arc<tokio::sync::Notify>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let release = Arc::new(tokio::sync::Notify::new());
    let requests = Arc::new(AtomicUsize::new(0));
    let (r, n) = (release.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let (r, n) = (r.clone(), n.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = socket.read(&mut buf).await;
                // Registered before the request is counted, so no release can be missed.
                let released = r.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                n.fetch_add(1, Ordering::SeqCst);
                released.await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    (url, release, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_test_event_does_not_hold_back_a_spec_change() {
    let (url, release, requests) = holding_endpoint().await;
    let op = Operator::start_over_http().await;
    op.create_secret("crm", json!({"token": "t"})).await;
    let yaml = bearer_destination("orders", "").replace(
        r#"url: "https://crm.example.com/api/events" }"#,
        &format!(r#"url: "{url}/in", timeoutSeconds: 60 }}"#),
    );
    op.create_destination(&yaml).await;
    wait_condition(&op, "orders", "Accepted", "True").await;
    let _worker = op.worker_pod(&yaml, json!({"token": "t"}), &[]).await;

    let annotate = json!({"metadata": {"annotations": {"hookline.dev/test-event": "req-1"}}});
    op.api::<WebhookDestination>()
        .patch("orders", &PatchParams::default(), &Patch::Merge(annotate))
        .await
        .unwrap();
    eventually("the test event to reach the endpoint", || async {
        (requests.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;

    // The endpoint holds the test event for up to a minute; the spec change is reconciled now.
    let patch = json!({"spec": {"mapping": {"order": {"@path": "$.properties.order_id"}}}});
    op.api::<WebhookDestination>()
        .patch("orders", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    eventually(
        "observedGeneration 2 while the test event waits",
        || async {
            let d = op.destination("orders").await;
            (d.status.as_ref()?.observed_generation == Some(2)).then_some(())
        },
    )
    .await;
    let cm: ConfigMap = op.api().get("orders-hookline").await.unwrap();
    assert!(cm.data.unwrap()[CONFIG_KEY].contains("order_id"));
    assert!(
        op.destination("orders")
            .await
            .status
            .unwrap()
            .last_test_event
            .is_none()
    );

    release.notify_waiters();
    let answer = eventually("the test event's answer in the status", || async {
        op.destination("orders").await.status?.last_test_event
    })
    .await;
    assert_eq!(answer.request_id.as_deref(), Some("req-1"));
    assert_eq!(answer.status_code, Some(200));
    assert_eq!(requests.load(Ordering::SeqCst), 1, "sent once");
    op.stop().await;
}

/// `count` Bearer destinations `d-0`…, each with a Secret of its own, rolled out and Ready.
async fn create_ready_destinations(op: &Operator, count: usize) {
    for i in 0..count {
        let secret = format!("crm-{i}");
        op.create_secret(&secret, json!({"token": "t"})).await;
        let yaml = bearer_destination(&format!("d-{i}"), "")
            .replace("name: crm, key", &format!("name: {secret}, key"));
        op.create_destination(&yaml).await;
    }
    for i in 0..count {
        wait_condition(op, &format!("d-{i}"), "WorkerAvailable", "False").await;
        roll_out(op, &format!("d-{i}-hookline")).await;
    }
    for i in 0..count {
        wait_condition(op, &format!("d-{i}"), "Ready", "True").await;
    }
}

/// Plays the controller-manager rolling out a new Deployment: observed, then pods up, then available.
async fn roll_out(op: &Operator, name: &str) {
    let api: Api<Deployment> = op.api();
    let generation = api.get(name).await.unwrap().metadata.generation;
    for (updated, ready) in [(0, 0), (1, 0), (1, 1)] {
        let status = json!({"status": {
            "observedGeneration": generation, "replicas": 1,
            "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": ready,
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
    }
}

/// The operator's calls so far, once they stop changing (polled with a deadline).
async fn settled_calls(op: &Operator) -> std::collections::HashMap<String, u64> {
    let mut last = op.server.calls();
    let mut unchanged = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while unchanged < 10 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let now = op.server.calls();
        unchanged = if now == last { unchanged + 1 } else { 0 };
        last = now;
        assert!(Instant::now() < deadline, "the operator never settled");
    }
    last
}

fn applies(calls: &std::collections::HashMap<String, u64>) -> u64 {
    [
        "patch v1/configmaps",
        "patch v1/serviceaccounts",
        "patch v1/services",
        "patch apps/v1/deployments",
    ]
    .iter()
    .map(|k| calls.get(*k).copied().unwrap_or(0))
    .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_destination_costs_at_most_seven_writes_and_reads() {
    const N: usize = 30;
    let op = Operator::start().await;
    create_ready_destinations(&op, N).await;
    let calls = settled_calls(&op).await;
    let get = |k: &str| calls.get(k).copied().unwrap_or(0);
    let secret_reads = get("get v1/secrets");
    let status_writes = get("patch hookline.dev/v1alpha1/webhookdestinations/status");
    let per_destination = (applies(&calls) + secret_reads + status_writes) as f64 / N as f64;
    assert!(
        per_destination <= 7.0,
        "{per_destination} calls per destination: {calls:#?}"
    );
    assert_eq!(
        applies(&calls),
        4 * N as u64,
        "each child applied once: {calls:#?}"
    );
    let events = get("create events.k8s.io/v1/events");
    assert_eq!(events, N as u64, "one Ready event each: {calls:#?}");
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restart_over_unchanged_destinations_applies_nothing() {
    const N: usize = 8;
    let op = Operator::start().await;
    create_ready_destinations(&op, N).await;
    let before = settled_calls(&op).await;
    let server = op.server.clone();
    op.stop().await;

    let op = Operator::start_on(server, None, "op-2").await;
    // Each destination reads its own Secret once on its first reconcile: all were reconciled.
    let reads = |c: &std::collections::HashMap<String, u64>| c.get("get v1/secrets").copied();
    eventually("every destination reconciled", || async {
        (reads(&op.server.calls()) >= Some(reads(&before).unwrap_or(0) + N as u64)).then_some(())
    })
    .await;
    let after = settled_calls(&op).await;
    assert_eq!(applies(&after), applies(&before), "{after:#?}");
    assert_eq!(
        after.get("patch hookline.dev/v1alpha1/webhookdestinations/status"),
        before.get("patch hookline.dev/v1alpha1/webhookdestinations/status")
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_jetstream_mode_consumer_and_route_exist_before_the_worker_and_go_with_a_finalizer() {
    let nats_server = support::nats::NatsServer::start().await;
    let args = hookline::jetstream::NatsArgs {
        url: nats_server.url(),
        creds: None,
        inbox: None,
        ca: None,
        replicas: None,
        max_age: Duration::from_secs(3600),
        own_creds: None,
    };
    let nats = args.connect("test").await.unwrap().unwrap();
    let mut opts = options(None, "op-1", free_port());
    opts.build.jetstream = Some(hookline::controller::build::JetStreamOptions {
        url: nats_server.url(),
        credentials: [("token".to_string(), "s3cret".to_string())].into(),
        gateway_url: Some("http://hookline-gateway.hookline.svc:8080".into()),
        identities: None,
    });
    opts.jetstream = Some((nats.clone(), args.retention()));
    let server = ApiServer::new();
    let op = Operator::launch(server.clone(), opts);
    let setup_calls = server.calls();
    op.create_secret("crm", json!({"token": "t", "writeKey": "wk-1"}))
        .await;
    op.create_destination(&bearer_destination(
        "orders",
        "  source:\n    writeKeySecretRef: { name: crm, key: writeKey }\n",
    ))
    .await;
    let deployment = op.deployment("orders-hookline").await;
    // Created before the Deployment was applied.
    let js = &nats.context;
    let stream = js.get_stream("HOOKLINE_EVENTS").await.unwrap();
    let consumer = stream.consumer_info(format!("{NS}_orders")).await.unwrap();
    let digest = hookline::jetstream::names::KeyDigest::of("wk-1");
    // A private key's events are this destination's alone: its own subject — and the key's
    // subject of the earlier version, so what an old gateway accepts during an upgrade arrives.
    let legacy = hookline::jetstream::names::legacy_key_subject(&digest);
    assert_eq!(
        consumer.config.filter_subjects,
        [format!("hookline.events.dest.{NS}_orders"), legacy.clone()]
    );
    js.publish(legacy, "{\"event\":{}}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let info = stream.consumer_info(format!("{NS}_orders")).await.unwrap();
    assert_eq!(info.num_pending, 1, "an earlier version's event is read");
    let routes = js.get_key_value("hookline-routes").await.unwrap();
    assert!(
        routes
            .get(format!("{}.{NS}_orders", digest.0))
            .await
            .unwrap()
            .is_some()
    );
    let env = deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert!(
        env.iter().any(|e| e.name == "HOOKLINE_NATS_URL"
            && e.value.as_deref() == Some(nats_server.url().as_str()))
    );
    assert!(
        env.iter()
            .any(|e| e.name == "HOOKLINE_NATS_TOKEN" && e.value.is_none()),
        "credentials come from a Secret"
    );

    let dest = eventually("status.backlog", || async {
        let d = op.destination("orders").await;
        d.status.as_ref().and_then(|s| s.backlog).map(|_| d)
    })
    .await;
    assert!(
        dest.finalizers()
            .contains(&"hookline.dev/jetstream".to_string())
    );
    assert_eq!(
        dest.status.unwrap().ingest_url.as_deref(),
        Some("http://hookline-gateway.hookline.svc:8080")
    );

    op.api::<WebhookDestination>()
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the destination to be gone", || async {
        op.api::<WebhookDestination>()
            .get_opt("orders")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        stream.consumer_info(format!("{NS}_orders")).await.is_err(),
        "the consumer is removed"
    );
    assert!(
        routes
            .get(format!("{}.{NS}_orders", digest.0))
            .await
            .unwrap()
            .is_none(),
        "the route is removed"
    );
    op.stop().await;
    let own = [
        "create v1/secrets",
        "create hookline.dev/v1alpha1/webhookdestinations",
        "get hookline.dev/v1alpha1/webhookdestinations",
        "delete hookline.dev/v1alpha1/webhookdestinations",
        "get apps/v1/deployments",
    ];
    let operator_calls = calls_since(&server, &setup_calls, &own);
    // A short scenario: every call covered, and the JetStream rules all needed.
    assert_rules_cover(
        &operator_calls,
        &[
            "operator-rules.yaml",
            "namespace-rules.yaml",
            "jetstream-rules.yaml",
        ],
        2,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_the_worker_finds_down_is_reported_on_the_resource_with_events() {
    // The worker pod, played by `hookline run` with the same destination: its `/status` is what
    // the operator reads.
    let endpoint = support::Endpoint::start().await;
    let outage = endpoint.down(502);
    let dir = tempfile::tempdir().unwrap();
    let spec =
        "  delivery:\n    circuitBreaker: { consecutiveFailures: 2, probeIntervalSeconds: 1 }\n";
    let file = support::manifest(
        dir.path(),
        "orders.yaml",
        &support::destination("orders", &endpoint.url, spec),
    );
    let worker = support::Hookline::start(&[file], &dir.path().join("data")).await;

    let mut opts = options(None, "op-1", free_port());
    opts.worker_status = Some(WorkerStatusOptions {
        url: format!("{}/status", worker.base),
        every: Duration::from_millis(200),
    });
    let op = Operator::launch(ApiServer::new(), opts);
    op.create_secret("crm", json!({"token": "t"})).await;
    op.create_destination(&bearer_destination("orders", ""))
        .await;
    wait_condition(&op, "orders", "WorkerAvailable", "False").await;
    op.make_available("orders-hookline").await;
    let (_, reason, _) = wait_condition(&op, "orders", "Delivering", "True").await;
    assert_eq!(reason, "Delivering");

    let event = support::track("u1", "Order Completed", json!({}));
    assert_eq!(worker.post("/v1/track", event).await.status(), 200);
    let (d, reason, message) = wait_condition(&op, "orders", "Delivering", "False").await;
    assert_eq!(reason, "EndpointUnhealthy");
    assert!(message.contains("HTTP 502"), "{message}");
    // The endpoint is probed and comes back by itself: the destination stays Ready.
    assert_eq!(condition(&d, "Ready").unwrap().0, "True");
    let warned = |reason: &'static str, kind: &'static str| {
        let op = &op;
        move || async move {
            op.server
                .objects("events.k8s.io/v1/events")
                .into_iter()
                .find(|e| e["reason"] == reason && e["type"] == kind)
        }
    };
    let event = eventually("a Warning Event", warned("EndpointUnhealthy", "Warning")).await;
    assert!(
        event["note"].as_str().unwrap().contains("HTTP 502"),
        "{event}"
    );

    outage.end();
    wait_condition(&op, "orders", "Delivering", "True").await;
    eventually("a Normal Event", warned("EndpointRecovered", "Normal")).await;
    // Delivering again means a request succeeded: the held event.
    let metrics = worker.metrics().await;
    assert!(
        metrics.contains("hookline_events_delivered_total{destination=\"orders\"} 1"),
        "{metrics}"
    );
    op.stop().await;
}

/// A worker serving `/status` with one destination `orders` whose `Delivering` is `ok`.
async fn fake_worker(ok: bool) -> u16 {
    let body = json!({"destinations": [{"name": "orders", "conditions": [{
        "type": "Delivering",
        "status": if ok { "True" } else { "False" },
        "reason": if ok { "Delivering" } else { "EndpointUnhealthy" },
        "message": if ok { "" } else { "the endpoint keeps failing: HTTP 503" },
    }]}]});
    let app = axum::Router::new().route(
        "/status",
        axum::routing::get(move || {
            let body = body.clone();
            async move { axum::Json(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// With two worker pods that disagree, the resource says what the unhealthy one says — every
/// ready pod the Service's EndpointSlices list is asked, not whichever the Service picks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worst_of_the_worker_pods_is_reported_with_how_many_say_it() {
    let mut opts = options(None, "op-1", free_port());
    opts.worker_status = Some(WorkerStatusOptions {
        // Through the Service: never reached while the slices list the pods.
        url: "http://127.0.0.1:9/status".into(),
        every: Duration::from_millis(100),
    });
    let op = Operator::launch(ApiServer::new(), opts);
    op.create_secret("crm", json!({"token": "t"})).await;
    op.create_destination(&bearer_destination("orders", ""))
        .await;
    wait_condition(&op, "orders", "WorkerAvailable", "False").await;
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> = op.api();
    for (i, ok) in [(0, true), (1, false)] {
        let port = fake_worker(ok).await;
        let slice = serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("orders-hookline-{i}"), "namespace": NS, "labels": {
                "kubernetes.io/service-name": "orders-hookline",
                "app.kubernetes.io/managed-by": "hookline",
            }},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "name": format!("orders-hookline-7f9c-{i}")}}],
        }))
        .unwrap();
        slices.create(&PostParams::default(), &slice).await.unwrap();
    }
    op.make_available("orders-hookline").await;
    let (_, reason, message) = wait_condition(&op, "orders", "Delivering", "False").await;
    assert_eq!(reason, "EndpointUnhealthy");
    assert_eq!(
        message,
        "1 of 2 worker pods report: the endpoint keeps failing: HTTP 503"
    );
    // The unhealthy pod is no longer ready: the other one's word is the resource's.
    let patch = json!({"endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": false},
        "targetRef": {"kind": "Pod", "name": "orders-hookline-7f9c-1"}}]});
    slices
        .patch(
            "orders-hookline-1",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    wait_condition(&op, "orders", "Delivering", "True").await;
    op.stop().await;
}
