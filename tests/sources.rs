//! WebhookSources in the cluster (API §9), end to end: the real operator against the in-process
//! API server and a real nats-server, and the real gateway. Who may read a source, who owns a
//! key, and — counted in JetStream, not assumed — who receives what.

mod support;

use hookline::api::{WebhookDestination, WebhookSource};
use hookline::jetstream::names::KeyDigest;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use support::apiserver::ApiServer;
use support::nats::NatsServer;
use support::operator::{Operator, eventually, options};
use support::{Hookline, free_port};

/// The operator in JetStream mode, the NATS server it uses, and a client of it.
struct Cluster {
    op: Operator,
    nats: NatsServer,
    js: async_nats::jetstream::Context,
}

impl Cluster {
    async fn start() -> Cluster {
        let nats = NatsServer::start().await;
        let args = hookline::jetstream::NatsArgs {
            url: nats.url(),
            creds: None,
            inbox: None,
            ca: None,
            replicas: None,
            max_age: std::time::Duration::from_secs(3600),
            own_creds: None,
        };
        let connected = args.connect("test").await.unwrap().unwrap();
        let js = connected.context.clone();
        let mut opts = options(None, "op-1", free_port());
        opts.build.jetstream = Some(hookline::controller::build::JetStreamOptions {
            url: nats.url(),
            credentials: Default::default(),
            gateway_url: Some("http://hookline-gateway.hookline.svc:8080".into()),
            identities: None,
        });
        opts.jetstream = Some((connected, args.retention()));
        let op = Operator::launch(ApiServer::new(), opts);
        Cluster { op, nats, js }
    }

    async fn create<K>(&self, namespace: &str, object: Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let object: K = serde_json::from_value(object).unwrap();
        Api::namespaced(self.op.client.clone(), namespace)
            .create(&PostParams::default(), &object)
            .await
            .unwrap()
    }

    async fn namespace(&self, name: &str, labels: Value) {
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }))
        .unwrap();
        Api::<Namespace>::all(self.op.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }

    async fn label_namespace(&self, name: &str, labels: Value) {
        let patch = json!({"metadata": {"labels": labels}});
        Api::<Namespace>::all(self.op.client.clone())
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn key_secret(&self, namespace: &str, name: &str, key: &str) {
        self.create::<Secret>(
            namespace,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": name, "namespace": namespace},
                   "stringData": {"writeKey": key}}),
        )
        .await;
    }

    async fn source(&self, namespace: &str, name: &str, spec: Value) {
        self.create::<WebhookSource>(
            namespace,
            json!({"apiVersion": "hookline.dev/v1alpha1", "kind": "WebhookSource",
                   "metadata": {"name": name, "namespace": namespace}, "spec": spec}),
        )
        .await;
    }

    async fn destination(&self, namespace: &str, name: &str, source: Value) {
        self.create::<WebhookDestination>(
            namespace,
            json!({"apiVersion": "hookline.dev/v1alpha1", "kind": "WebhookDestination",
                   "metadata": {"name": name, "namespace": namespace},
                   "spec": {"endpoint": {"url": "http://127.0.0.1:9/"}, "source": source}}),
        )
        .await;
    }

    /// Waits for a condition of a destination; its reason and message.
    async fn destination_condition(
        &self,
        namespace: &str,
        name: &str,
        kind: &str,
        status: &str,
    ) -> (String, String) {
        let api: Api<WebhookDestination> = Api::namespaced(self.op.client.clone(), namespace);
        eventually(&format!("{namespace}/{name}: {kind}={status}"), || async {
            let d = api.get(name).await.unwrap();
            let c = d.status?.conditions.into_iter().find(|c| c.type_ == kind)?;
            (c.status == status).then_some((c.reason, c.message))
        })
        .await
    }

    /// Waits until a source's status satisfies `check`.
    async fn source_status(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        check: impl Fn(&hookline::api::WebhookSourceStatus) -> bool,
    ) -> hookline::api::WebhookSourceStatus {
        let api: Api<WebhookSource> = Api::namespaced(self.op.client.clone(), namespace);
        eventually(&format!("{namespace}/{name}: {what}"), || async {
            let status = api.get(name).await.unwrap().status?;
            check(&status).then_some(status)
        })
        .await
    }

    /// What the destination's consumer reads from its route.
    async fn consumer_subject(&self, namespace: &str, name: &str) -> Option<String> {
        let stream = self.js.get_stream("HOOKLINE_EVENTS").await.ok()?;
        let info = stream
            .consumer_info(format!("{namespace}_{name}"))
            .await
            .ok()?;
        // The first subject is the route's; its own (replays) and the legacy key's follow.
        let config = &info.config;
        Some(
            config
                .filter_subjects
                .first()
                .unwrap_or(&config.filter_subject)
                .clone(),
        )
    }

    async fn wait_consumer_subject(&self, namespace: &str, name: &str, subject: &str) {
        eventually(&format!("{namespace}_{name} reading {subject}"), || async {
            (self.consumer_subject(namespace, name).await.as_deref() == Some(subject)).then_some(())
        })
        .await;
    }

    /// Events waiting for the destination's consumer.
    async fn pending(&self, namespace: &str, name: &str) -> u64 {
        let stream = self.js.get_stream("HOOKLINE_EVENTS").await.unwrap();
        let info = stream
            .consumer_info(format!("{namespace}_{name}"))
            .await
            .unwrap();
        info.num_pending + info.num_ack_pending as u64
    }

    /// The routes the gateway would read: `(route key, owner)`.
    async fn routes(&self) -> Vec<String> {
        use futures::TryStreamExt;
        let bucket = self.js.get_key_value("hookline-routes").await.unwrap();
        let mut keys: Vec<String> = bucket.keys().await.unwrap().try_collect().await.unwrap();
        keys.sort();
        keys
    }

    async fn gateway(&self) -> Hookline {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        Hookline::start_args(
            &["gateway", "--listen", &listen, "--nats", &self.nats.url()],
            port,
        )
        .await
    }
}

async fn send(gateway: &Hookline, key: &str, user: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/v1/track", gateway.base))
        .basic_auth(key, Some(""))
        .json(&json!({"userId": user, "event": "Viewed"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Sends with `key` until the gateway has the route (it follows the bucket with a watch).
async fn send_when_routed(gateway: &Hookline, key: &str, user: &str) {
    eventually(&format!("the gateway to take {key}"), || async {
        (send(gateway, key, user).await == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_without_a_key_gets_a_generated_one_and_counts_its_readers() {
    let c = Cluster::start().await;
    c.namespace("shop", json!({})).await;
    c.source("shop", "website", json!({})).await;
    let status = c
        .source_status("shop", "website", "Ready", |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .await;
    assert_eq!(
        status.write_key_secret_name.as_deref(),
        Some("website-write-key")
    );
    assert_eq!(status.destinations, Some(0));
    assert_eq!(
        status.ingest_url.as_deref(),
        Some("http://hookline-gateway.hookline.svc:8080")
    );
    let secret: Secret = Api::namespaced(c.op.client.clone(), "shop")
        .get("website-write-key")
        .await
        .unwrap();
    let key = secret.string_data.as_ref().unwrap()["writeKey"].clone();
    assert!(
        key.len() >= 32 && key.chars().all(|c| c.is_ascii_alphanumeric()),
        "{key}"
    );
    assert_eq!(secret.owner_references()[0].kind, "WebhookSource");

    c.destination("shop", "crm", json!({"sourceRef": {"name": "website"}}))
        .await;
    c.destination_condition("shop", "crm", "Accepted", "True")
        .await;
    c.source_status("shop", "website", "one reader", |s| {
        s.destinations == Some(1)
    })
    .await;
    c.wait_consumer_subject("shop", "crm", "hookline.events.src.shop_website")
        .await;
    let gateway = c.gateway().await;
    send_when_routed(&gateway, &key, "u1").await;
    assert_eq!(send(&gateway, "not-the-key", "u2").await, 401);
    // Browsers reach the gateway too: its settings and CORS follow the source.
    let client = reqwest::Client::new();
    let settings = support::settings_via_proxy(&gateway.base, &key).await;
    assert_eq!(
        settings["integrations"]["Segment.io"]["apiHost"],
        "events.shop.example/v1"
    );
    let unknown = client
        .get(format!("{}/v1/projects/not-the-key/settings", gateway.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let preflight = client
        .request(reqwest::Method::OPTIONS, format!("{}/v1/t", gateway.base))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204, "the source allows any origin");
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    eventually("the event waiting for crm", || async {
        (c.pending("shop", "crm").await == 1).then_some(())
    })
    .await;
    assert!(
        c.routes().await.iter().all(|r| !r.contains(&key)),
        "the bucket holds the key's digest, never the key"
    );
    c.op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_across_namespaces_needs_a_grant_and_a_grant_taken_back_stops_the_events() {
    let c = Cluster::start().await;
    c.namespace("shop", json!({})).await;
    c.namespace("ads", json!({})).await;
    c.key_secret("shop", "key", "wk-shop").await;
    c.source(
        "shop",
        "website",
        json!({"writeKeySecretRef": {"name": "key", "key": "writeKey"},
               "destinations": {"namespaces": {"from": "Selector",
                                               "selector": {"matchLabels": {"team": "shop"}}}}}),
    )
    .await;
    c.destination("shop", "crm", json!({"sourceRef": {"name": "website"}}))
        .await;
    c.destination(
        "ads",
        "pixel",
        json!({"sourceRef": {"name": "website", "namespace": "shop"}}),
    )
    .await;
    c.destination(
        "ads",
        "nowhere",
        json!({"sourceRef": {"name": "missing", "namespace": "shop"}}),
    )
    .await;
    let (reason, message) = c
        .destination_condition("ads", "pixel", "Accepted", "False")
        .await;
    assert_eq!(reason, "SourceNotPermitted");
    assert!(message.contains("WebhookSource shop/website"), "{message}");
    let (reason, _) = c
        .destination_condition("ads", "nowhere", "Accepted", "False")
        .await;
    assert_eq!(reason, "SourceNotFound");
    // The source's own namespace does not match its selector either: only labelled ones.
    let (reason, _) = c
        .destination_condition("shop", "crm", "Accepted", "False")
        .await;
    assert_eq!(reason, "SourceNotPermitted");

    let source_subject = "hookline.events.src.shop_website";
    c.label_namespace("ads", json!({"team": "shop"})).await;
    c.destination_condition("ads", "pixel", "Accepted", "True")
        .await;
    c.wait_consumer_subject("ads", "pixel", source_subject)
        .await;
    c.source_status("shop", "website", "one reader", |s| {
        s.destinations == Some(1)
    })
    .await;
    let gateway = c.gateway().await;
    send_when_routed(&gateway, "wk-shop", "u1").await;
    eventually("pixel to have the event", || async {
        (c.pending("ads", "pixel").await == 1).then_some(())
    })
    .await;
    assert_eq!(
        c.consumer_subject("shop", "crm").await.as_deref(),
        Some("hookline.events.dest.shop_crm"),
        "a refused destination's consumer reads only its own subject"
    );
    assert_eq!(c.pending("shop", "crm").await, 0);

    // Taken back: pixel stops reading the source — what it had not yet delivered included.
    c.label_namespace("ads", json!({"team": null})).await;
    let (reason, _) = c
        .destination_condition("ads", "pixel", "Accepted", "False")
        .await;
    assert_eq!(reason, "SourceNotPermitted");
    c.wait_consumer_subject("ads", "pixel", "hookline.events.dest.ads_pixel")
        .await;
    c.source_status("shop", "website", "no reader", |s| {
        s.destinations == Some(0)
    })
    .await;
    assert_eq!(send(&gateway, "wk-shop", "u2").await, 200);
    assert_eq!(
        c.pending("ads", "pixel").await,
        0,
        "nothing of the source reaches it"
    );
    c.op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_key_conflicts_the_oldest_keeps_it_and_the_next_takes_over_when_it_goes() {
    let c = Cluster::start().await;
    for ns in ["a-shop", "b-thief"] {
        c.namespace(ns, json!({})).await;
    }
    // Created first (and first by namespace, should both be created in the same second).
    c.key_secret("a-shop", "key", "wk-shared").await;
    c.source(
        "a-shop",
        "website",
        json!({"writeKeySecretRef": {"name": "key", "key": "writeKey"}}),
    )
    .await;
    c.source_status("a-shop", "website", "Accepted", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Accepted" && c.status == "True")
    })
    .await;
    c.destination("a-shop", "crm", json!({"sourceRef": {"name": "website"}}))
        .await;

    // The key copied from the shop's web page, as a source and as a private key.
    c.key_secret("b-thief", "copied", "wk-shared").await;
    c.source(
        "b-thief",
        "copy",
        json!({"writeKeySecretRef": {"name": "copied", "key": "writeKey"}}),
    )
    .await;
    c.destination("b-thief", "reader", json!({"sourceRef": {"name": "copy"}}))
        .await;
    c.destination(
        "b-thief",
        "private",
        json!({"writeKeySecretRef": {"name": "copied", "key": "writeKey"}}),
    )
    .await;
    let status = c
        .source_status("b-thief", "copy", "WriteKeyConflict", |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Accepted" && c.reason == "WriteKeyConflict")
        })
        .await;
    let message = &status
        .conditions
        .iter()
        .find(|c| c.type_ == "Accepted")
        .unwrap()
        .message;
    assert!(
        !message.contains("a-shop"),
        "names no other namespace: {message}"
    );
    assert_eq!(status.destinations, Some(0));
    let (reason, message) = c
        .destination_condition("b-thief", "private", "Accepted", "False")
        .await;
    assert_eq!(reason, "WriteKeyConflict");
    assert!(!message.contains("a-shop"), "{message}");
    let (reason, _) = c
        .destination_condition("b-thief", "reader", "Accepted", "False")
        .await;
    assert_eq!(reason, "SourceNotReady");

    // Routed through the owner only: one route for the key, the shop's.
    let digest = KeyDigest::of("wk-shared").0;
    let routes = c.routes().await;
    assert_eq!(
        routes
            .iter()
            .filter(|r| r.starts_with(&digest))
            .collect::<Vec<_>>(),
        [&format!("{digest}.src.a-shop_website")]
    );
    c.wait_consumer_subject("a-shop", "crm", "hookline.events.src.a-shop_website")
        .await;
    let gateway = c.gateway().await;
    send_when_routed(&gateway, "wk-shared", "u1").await;
    eventually("crm to have the event", || async {
        (c.pending("a-shop", "crm").await == 1).then_some(())
    })
    .await;
    assert_eq!(
        c.pending("b-thief", "private").await,
        0,
        "the copy receives nothing"
    );

    // The owner goes: the next oldest holder (the copying source) gets the key.
    Api::<WebhookSource>::namespaced(c.op.client.clone(), "a-shop")
        .delete("website", &DeleteParams::default())
        .await
        .unwrap();
    c.source_status("b-thief", "copy", "Accepted after the owner left", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Accepted" && c.status == "True")
    })
    .await;
    let (reason, _) = c
        .destination_condition("b-thief", "private", "Accepted", "False")
        .await;
    assert_eq!(
        reason, "WriteKeyConflict",
        "the source is older than the private key"
    );
    eventually("the route to follow the new owner", || async {
        let routes = c.routes().await;
        let of_key: Vec<&String> = routes.iter().filter(|r| r.starts_with(&digest)).collect();
        (of_key == [&format!("{digest}.src.b-thief_copy")]).then_some(())
    })
    .await;
    c.op.stop().await;
}
