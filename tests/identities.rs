//! NATS identities per role (API §10) against a real nats-server in operator mode, set up as
//! the guide says: the server refuses a worker's identity everything but its own consumer and
//! dead letters, and the gateway's everything but publishing events and reading routes; with
//! those identities delivery, retries, dead letters and replay still work, and a renewed
//! identity is taken up before the old one expires.

mod support;

use hookline::jetstream::identity::{Identities, Permissions};
use hookline::jetstream::names::DestinationNames;
use hookline::jetstream::objects::{self, ConsumerPlan};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::nats::{Accounts, NatsServer};
use support::*;

fn identities(accounts: &Accounts, lifetime: Duration) -> Identities {
    Identities {
        issuer: accounts.issuer(),
        lifetime,
    }
}

fn nats_args(url: &str, creds: Option<&Path>) -> hookline::jetstream::NatsArgs {
    hookline::jetstream::NatsArgs {
        url: url.into(),
        creds: creds.map(Path::to_path_buf),
        inbox: None,
        ca: None,
        replicas: Some(1),
        max_age: Duration::from_secs(3600),
        own_creds: None,
    }
}

/// The streams, the routes bucket and the consumers of `destinations` (in `default`), made
/// with the operator's identity.
async fn objects_for(url: &str, admin: &Path, destinations: &[&str]) {
    let args = nats_args(url, Some(admin));
    let nats = args.connect("test operator").await.unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while objects::ensure_streams(&nats, args.retention())
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the streams cannot be made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for name in destinations {
        let names = DestinationNames::new("default", name);
        let plan = ConsumerPlan::reading(names, None, 1, 1);
        objects::ensure_consumer(&nats, &plan).await.unwrap();
    }
}

/// A raw client on an identity, recording what the server says to it.
struct Connected {
    client: async_nats::Client,
    errors: Arc<Mutex<Vec<String>>>,
}

async fn connect(url: &str, creds: &str, inbox: &str) -> Connected {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let client = async_nats::ConnectOptions::with_credentials(creds)
        .unwrap()
        .custom_inbox_prefix(inbox)
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    seen.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .unwrap();
    Connected { client, errors }
}

impl Connected {
    /// Waits for the server to refuse `what` with a permissions violation.
    async fn refused(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self
                .errors
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.to_lowercase().contains("permissions violation") && e.contains(what))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no permissions violation for {what}: {:?}",
                self.errors.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn publish_refused(&self, subject: &str) {
        self.client
            .publish(subject.to_string(), "{}".into())
            .await
            .unwrap();
        self.client.flush().await.unwrap();
        self.refused(subject).await;
    }

    async fn subscribe_refused(&self, subject: &str) {
        let _sub = self.client.subscribe(subject.to_string()).await.unwrap();
        self.client.flush().await.unwrap();
        self.refused(subject).await;
    }
}

#[tokio::test]
async fn the_server_refuses_a_worker_and_the_gateway_everything_beyond_their_role() {
    let (nats, accounts) = NatsServer::with_identities().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = accounts.admin_creds(dir.path(), "operator");
    objects_for(&nats.url(), &admin, &["crm", "other"]).await;
    let ids = identities(&accounts, Duration::from_secs(3600));
    let now = chrono::Utc::now();

    let crm = DestinationNames::new("default", "crm");
    let worker = connect(
        &nats.url(),
        &ids.worker(&crm, now).unwrap().creds,
        &Permissions::worker(&crm).inbox,
    )
    .await;
    // Its own consumer's info is answered.
    let js = async_nats::jetstream::new(worker.client.clone());
    let own: async_nats::jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream("default_crm", "HOOKLINE_EVENTS")
        .await
        .unwrap();
    assert_eq!(own.cached_info().name, "default_crm");
    // Another destination's consumer, the events subjects, a stream, a route: refused.
    worker
        .publish_refused("$JS.API.CONSUMER.MSG.NEXT.HOOKLINE_EVENTS.default_other")
        .await;
    worker.subscribe_refused("hookline.events.>").await;
    worker
        .publish_refused("$JS.API.STREAM.DELETE.HOOKLINE_EVENTS")
        .await;
    worker
        .publish_refused("$KV.hookline-routes.abc.src.default_x")
        .await;
    worker.subscribe_refused("_INBOX.>").await;
    worker.publish_refused("hookline.dlq.default_other").await;

    let gateway = connect(
        &nats.url(),
        &ids.gateway(now).unwrap().creds,
        &Permissions::gateway().inbox,
    )
    .await;
    // Publishing an event is stored; reading the routes works.
    let js = async_nats::jetstream::new(gateway.client.clone());
    js.publish("hookline.events.dest.default_crm", "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let routes = js.get_key_value("hookline-routes").await.unwrap();
    assert!(routes.get("nothing").await.unwrap().is_none());
    gateway
        .publish_refused("$JS.API.CONSUMER.MSG.NEXT.HOOKLINE_EVENTS.default_crm")
        .await;
    gateway.subscribe_refused("hookline.events.>").await;
    gateway
        .publish_refused("$JS.API.STREAM.DELETE.HOOKLINE_EVENTS")
        .await;
    gateway
        .publish_refused("$KV.hookline-routes.abc.src.default_x")
        .await;
    gateway.publish_refused("hookline.dlq.default_crm").await;
}

/// `hookline dlq …` with the operator's identity (the dead-letter stream path).
fn dlq(args: &[&str], url: &str, admin: &Path) -> std::process::Output {
    let out = std::process::Command::new(bin())
        .arg("dlq")
        .args(args)
        .args(["--nats", url, "--nats-creds"])
        .arg(admin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What the server says about connections it closed.
async fn closed_connections(monitor: u16) -> Vec<Value> {
    let connz = get_json(&format!("http://127.0.0.1:{monitor}/connz?state=closed")).await;
    connz["connections"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn delivery_retries_dead_letters_and_replay_work_with_reduced_identities_renewed_before_expiry()
 {
    let (nats, accounts) = NatsServer::with_identities().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let admin = accounts.admin_creds(dir.path(), "operator");
    objects_for(&url, &admin, &["crm"]).await;
    let crm = DestinationNames::new("default", "crm");
    // The operator's part: the private key's route, and the identities.
    let operator = nats_args(&url, Some(&admin))
        .connect("test operator")
        .await
        .unwrap()
        .unwrap();
    let key = hookline::jetstream::names::KeyDigest::of("wk");
    let route = hookline::pipeline::source::RouteSpec::private(&crm, &key, "0".into());
    objects::ensure_route(&operator, crm.consumer(), Some(&route))
        .await
        .unwrap();
    let lifetime = Duration::from_secs(8);
    let short = identities(&accounts, lifetime);
    let issued_at = Instant::now();
    let worker_creds = dir.path().join("worker.creds");
    std::fs::write(
        &worker_creds,
        short.worker(&crm, chrono::Utc::now()).unwrap().creds,
    )
    .unwrap();
    let gateway_creds = dir.path().join("gateway.creds");
    let long = identities(&accounts, Duration::from_secs(3600));
    std::fs::write(
        &gateway_creds,
        long.gateway(chrono::Utc::now()).unwrap().creds,
    )
    .unwrap();

    let endpoint = Endpoint::start().await;
    let port = free_port();
    let config = manifest(
        dir.path(),
        "worker.yaml",
        &format!(
            "destination:\n  apiVersion: hookline.dev/v1alpha1\n  kind: WebhookDestination\n  metadata: {{ name: crm, namespace: default }}\n  spec:\n    endpoint: {{ url: \"{}/in\" }}\n    mapping:\n      n: {{ \"@path\": \"$.properties.n\" }}\n    delivery: {{ maxAttempts: 3 }}\nsecretsDir: {}\ndataDir: {}\nlisten: 127.0.0.1:{port}\n",
            endpoint.url,
            dir.path().join("secrets").display(),
            dir.path().join("data").display()
        ),
    );
    let worker_inbox = Permissions::worker(&crm).inbox;
    let worker = Hookline::start_args_env(
        &["worker", "--config", config.to_str().unwrap()],
        &[
            ("HOOKLINE_NATS_URL", &url),
            ("HOOKLINE_NATS_CREDS", worker_creds.to_str().unwrap()),
            ("HOOKLINE_NATS_INBOX", &worker_inbox),
        ],
        port,
    )
    .await;
    let gateway_port = free_port();
    let gateway_listen = format!("127.0.0.1:{gateway_port}");
    let gateway = Hookline::start_args_env(
        &["gateway", "--listen", &gateway_listen],
        &[
            ("HOOKLINE_NATS_URL", &url),
            ("HOOKLINE_NATS_CREDS", gateway_creds.to_str().unwrap()),
            ("HOOKLINE_NATS_INBOX", &Permissions::gateway().inbox),
        ],
        gateway_port,
    )
    .await;

    // Renewed halfway, as the operator does; the kubelet swaps the file under the worker.
    std::fs::write(
        &worker_creds,
        long.worker(&crm, chrono::Utc::now()).unwrap().creds,
    )
    .unwrap();
    // Everything below happens after the first identity expired.
    let expired = issued_at + lifetime + Duration::from_secs(1);
    tokio::time::sleep_until(expired.into()).await;

    // A dead letter: the endpoint refuses the event. The worker's admin listener (what `dlq
    // NAME -n NS` reaches) lists it with the worker's own identity.
    endpoint.respond(|_| (400, vec![]));
    assert_eq!(worker.post("/v1/batch", numbered(0, 1)).await.status(), 200);
    let admin_listener = worker.admin.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let letters = get_json(&format!("{admin_listener}/dlq")).await;
        if letters.as_array().is_some_and(|a| a.len() == 1) {
            assert_eq!(letters[0]["event"]["properties"]["n"], 0);
            break;
        }
        assert!(Instant::now() < deadline, "no dead letter: {letters}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed: Value =
        serde_json::from_slice(&dlq(&["list", "crm", "-o", "json"], &url, &admin).stdout).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "the stream path lists it too"
    );
    // A retry from JetStream: the first attempt fails, the second is delivered. Sent through
    // the gateway with the destination's private key.
    endpoint.respond(|n| {
        if n == 1 {
            (503, vec![("Retry-After".into(), "0".into())])
        } else {
            (200, vec![])
        }
    });
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/batch", gateway.base))
        .basic_auth("wk", Some(""))
        .json(&numbered(1, 2))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    endpoint
        .wait_for("event 1 after a retry", |r| {
            r.iter().filter(|r| r.body["n"] == 1).count() == 2
        })
        .await;
    // Replay of the dead letter, by the worker's own identity, reaches the destination.
    let replayed = post_json(&format!("{admin_listener}/dlq/replay")).await;
    assert_eq!(replayed["replayed"], 1);
    endpoint
        .wait_for("the replayed event 0", |r| {
            r.iter().filter(|r| r.body["n"] == 0).count() == 2
        })
        .await;
    let letters: Value =
        serde_json::from_slice(&dlq(&["list", "crm", "-o", "json"], &url, &admin).stdout).unwrap();
    assert_eq!(letters, json!([]));

    // No connection was ever dropped for an expired identity: the renewal came first.
    let closed = closed_connections(nats.monitor.unwrap()).await;
    assert!(
        closed
            .iter()
            .all(|c| !c["reason"].as_str().unwrap_or_default().contains("Expired")),
        "{closed:#?}"
    );
    drop((worker, gateway));
}

/// The `.creds` text of a Secret key.
fn creds_of(secret: &k8s_openapi::api::core::v1::Secret) -> Option<String> {
    let data = secret.data.as_ref()?.get("creds")?;
    Some(String::from_utf8(data.0.clone()).unwrap())
}

/// The operator's options in JetStream mode with identities per role: it connects as `admin`
/// and issues identities with `ids`.
async fn operator_with_identities(
    nats: &NatsServer,
    admin: &Path,
    ids: &Arc<Identities>,
) -> hookline::controller::operator::OperatorOptions {
    let args = nats_args(&nats.url(), Some(admin));
    let mut opts = support::operator::options(None, "op-1", free_port());
    opts.build.jetstream = Some(hookline::controller::build::JetStreamOptions {
        url: nats.url(),
        credentials: [("creds".to_string(), std::fs::read_to_string(admin).unwrap())].into(),
        gateway_url: None,
        identities: Some(ids.clone()),
    });
    let connected = args.connect("test operator").await.unwrap().unwrap();
    opts.jetstream = Some((connected, args.retention()));
    opts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_issues_each_destination_and_the_gateway_an_identity_and_renews_it_halfway() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Secret;
    use support::operator::{NS, Operator, bearer_destination, eventually};

    let (nats, accounts) = NatsServer::with_identities().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = accounts.admin_creds(dir.path(), "operator");
    let ids = Arc::new(identities(&accounts, Duration::from_secs(4)));
    let mut opts = operator_with_identities(&nats, &admin, &ids).await;
    opts.gateway_identity = Some(hookline::controller::identities::GatewayIdentity {
        identities: ids,
        namespace: NS.into(),
        name: "hookline-gateway-nats".into(),
        ca: None,
    });
    let op = Operator::launch(support::apiserver::ApiServer::new(), opts);
    op.create_secret("crm", json!({"token": "t"})).await;
    op.create_destination(&bearer_destination("orders", ""))
        .await;

    let secrets = op.api::<Secret>();
    let secret = eventually("the workers' identity", || async {
        secrets.get_opt("orders-hookline-nats").await.unwrap()
    })
    .await;
    let first = creds_of(&secret).expect("an identity of their own");
    assert!(
        !first.contains(&std::fs::read_to_string(&admin).unwrap()),
        "the operator's own credentials are not copied"
    );
    let deployment = op.deployment("orders-hookline").await;
    let template = deployment.spec.unwrap().template;
    let env = template.spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let var = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        var("HOOKLINE_NATS_CREDS").as_deref(),
        Some("/etc/hookline/nats/creds")
    );
    let inbox = var("HOOKLINE_NATS_INBOX").unwrap();
    // The server takes it, for that destination's consumer.
    let worker = connect(&nats.url(), &first, &inbox).await;
    async_nats::jetstream::new(worker.client.clone())
        .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
            format!("{NS}_orders"),
            "HOOKLINE_EVENTS",
        )
        .await
        .unwrap();

    // Halfway through its life a new one replaces it, rolling no pod.
    let renewed = eventually("the renewed identity", || async {
        let s = secrets.get("orders-hookline-nats").await.unwrap();
        creds_of(&s).filter(|c| *c != first)
    })
    .await;
    assert_ne!(renewed, first);
    let after = op.api::<Deployment>().get("orders-hookline").await.unwrap();
    assert_eq!(after.spec.unwrap().template.metadata, template.metadata);

    let gateway = eventually("the gateway's identity", || async {
        secrets.get_opt("hookline-gateway-nats").await.unwrap()
    })
    .await;
    let gateway = connect(
        &nats.url(),
        &creds_of(&gateway).unwrap(),
        &Permissions::gateway().inbox,
    )
    .await;
    gateway
        .publish_refused(&format!(
            "$JS.API.CONSUMER.MSG.NEXT.HOOKLINE_EVENTS.{NS}_orders"
        ))
        .await;
    op.stop().await;
}

/// An operator restart issues no identity that is still fresh: the renewal time on each
/// Secret is read back from the restarted operator's cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_issues_no_identity_that_is_still_fresh() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Patch, PatchParams};
    use support::operator::{Operator, bearer_destination, eventually};

    let (nats, accounts) = NatsServer::with_identities().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = accounts.admin_creds(dir.path(), "operator");
    let ids = Arc::new(identities(&accounts, Duration::from_secs(3600)));
    let operator_options = || operator_with_identities(&nats, &admin, &ids);
    let server = support::apiserver::ApiServer::new();
    let op = Operator::launch(server.clone(), operator_options().await);
    op.create_secret("crm", json!({"token": "t"})).await;
    op.create_destination(&bearer_destination("orders", ""))
        .await;
    let secrets = op.api::<Secret>();
    let issued = eventually("the workers' identity", || async {
        creds_of(&secrets.get_opt("orders-hookline-nats").await.unwrap()?)
    })
    .await;
    op.stop().await;

    let writes = |calls: &std::collections::HashMap<String, u64>| {
        ["patch v1/secrets", "create v1/secrets"]
            .iter()
            .map(|c| calls.get(*c).copied().unwrap_or(0))
            .sum::<u64>()
    };
    let before = writes(&server.calls());
    let op = Operator::launch(server.clone(), operator_options().await);
    // A spec change makes the restarted operator reconcile the destination again.
    let patch = json!({"spec": {"mapping": {"order": {"@path": "$.properties.order_id"}}}});
    op.api::<hookline::api::WebhookDestination>()
        .patch("orders", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    eventually("observedGeneration 2", || async {
        let d = op.destination("orders").await;
        (d.status?.observed_generation == Some(2)).then_some(())
    })
    .await;
    let kept = creds_of(&secrets.get("orders-hookline-nats").await.unwrap()).unwrap();
    assert_eq!(kept, issued, "the fresh identity was issued again");
    assert_eq!(writes(&server.calls()), before, "a Secret was written");
    op.stop().await;
}

/// `nats.install` as the chart wires it: the operator (a real `hookline controller` process)
/// makes Hookline's NATS keys and the servers' configuration on first start; NATS, started
/// from that configuration, accepts the identity it issues a destination's workers; restarted,
/// the operator keeps the same keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_makes_the_nats_keys_once_and_the_server_takes_its_identities() {
    use k8s_openapi::api::core::v1::Secret;
    use support::operator::eventually;

    let api = support::apiserver::ApiServer::new();
    let addr = api.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        support::apiserver::ApiServer::kubeconfig(addr, "analytics"),
    )
    .unwrap();
    let nats_port = free_port();
    let start_operator = || {
        let port = free_port();
        let args = [
            "controller",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--nats",
            &format!("nats://127.0.0.1:{nats_port}"),
            "--nats-replicas",
            "1",
            "--nats-keys-secret",
            "hookline-nats-keys",
            "--nats-server-secret",
            "hookline-nats-server",
            "--lease-namespace",
            "hookline-system",
            "--gateway-nats-secret",
            "hookline-gateway-nats",
        ];
        let child = std::process::Command::new(support::bin())
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOOKLINE_LOG", "warn")
            .env_remove("HOOKLINE_NATS_URL")
            .spawn()
            .unwrap();
        (KilledOnDrop(child), port)
    };
    // Its health endpoint answers once it has its keys (it exits when it cannot have them).
    let healthy = |port: u16| async move {
        eventually("the operator's health endpoint", || async {
            reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await;
    };
    let (operator, _) = start_operator();
    let secrets: kube::Api<Secret> = kube::Api::namespaced(api.client(), "hookline-system");
    let text = |s: &Secret, key: &str| {
        String::from_utf8(hookline::config::secrets::secret_data(s)[key].clone()).unwrap()
    };
    let server = eventually("the servers' configuration", || async {
        secrets.get_opt("hookline-nats-server").await.unwrap()
    })
    .await;
    let keys = secrets.get("hookline-nats-keys").await.unwrap();
    let account = text(&keys, "account.pub");
    // The NATS pods start once the Secret is there, with it included.
    let _nats = NatsServer::with_config_on(nats_port, &text(&server, "auth.conf")).await;

    let client = api.client();
    let namespaced = |kind| kube::Api::<Secret>::namespaced(client.clone(), kind);
    let crm: Secret = serde_json::from_value(json!({"metadata": {"name": "crm", "namespace": "analytics"}, "stringData": {"token": "t"}})).unwrap();
    namespaced("analytics")
        .create(&Default::default(), &crm)
        .await
        .unwrap();
    let dest: hookline::api::WebhookDestination =
        serde_saphyr::from_str(&support::operator::bearer_destination("orders", "")).unwrap();
    kube::Api::<hookline::api::WebhookDestination>::namespaced(client.clone(), "analytics")
        .create(&Default::default(), &dest)
        .await
        .unwrap();
    let identity = eventually("the workers' identity", || async {
        creds_of(
            &namespaced("analytics")
                .get_opt("orders-hookline-nats")
                .await
                .unwrap()?,
        )
    })
    .await;
    let worker = connect(
        &format!("nats://127.0.0.1:{nats_port}"),
        &identity,
        "_INBOX_analytics_orders",
    )
    .await;
    async_nats::jetstream::new(worker.client.clone())
        .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
            "analytics_orders",
            "HOOKLINE_EVENTS",
        )
        .await
        .unwrap();
    assert!(!identity.contains(&text(&keys, "signing-key.nk")));
    eventually("the gateway's identity", || async {
        secrets.get_opt("hookline-gateway-nats").await.unwrap()
    })
    .await;

    // Restarted, the operator finds its keys: the same account, nothing made again.
    drop(operator);
    let (mut operator, port) = start_operator();
    healthy(port).await;
    assert!(
        operator.0.try_wait().unwrap().is_none(),
        "the restarted operator exited"
    );
    let again = secrets.get("hookline-nats-keys").await.unwrap();
    assert_eq!(text(&again, "account.pub"), account);
    assert_eq!(
        again.metadata.resource_version,
        keys.metadata.resource_version
    );
}

/// A process the test started, stopped however the test ends.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn keys_are_made_only_where_asked_and_never_beside_an_orphaned_configuration() {
    use hookline::controller::nats_keys::{KeysSecretError, KeysSecrets};
    let api = support::apiserver::ApiServer::new();
    let client = api.client();
    let own_nats = KeysSecrets {
        namespace: "hookline-system",
        keys: "hookline-nats-keys",
        make: false,
        server: None,
    };
    let missing = own_nats.ensure(&client).await.unwrap_err();
    assert!(matches!(missing, KeysSecretError::Missing { .. }));
    assert!(
        missing
            .to_string()
            .contains("hookline nats setup --apply -n hookline-system"),
        "{missing}"
    );

    let installed = KeysSecrets {
        make: true,
        server: Some("hookline-nats-server"),
        ..own_nats
    };
    let made = installed.ensure(&client).await.unwrap();
    let again = installed.ensure(&client).await.unwrap();
    assert_eq!(made.account(), again.account());
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client, "hookline-system");
    secrets
        .delete("hookline-nats-keys", &Default::default())
        .await
        .unwrap();
    let orphaned = installed.ensure(&secrets.into_client()).await.unwrap_err();
    assert!(
        matches!(orphaned, KeysSecretError::Orphaned { .. }),
        "{orphaned}"
    );
}
