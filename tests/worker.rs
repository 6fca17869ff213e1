//! `hookline worker --config FILE`: the configuration the operator renders, Secrets mounted as
//! files the way the kubelet mounts them, and credentials rotated on disk while it runs.

mod support;

use std::path::Path;
use support::*;

/// Writes `dir/<secret>/<key>` the way the kubelet does: the key is a symlink through `..data`,
/// and an update swaps `..data` atomically.
fn mount_secret(dir: &Path, secret: &str, key: &str, value: &str, version: u32) {
    mount_secret_keys(dir, secret, &[(key, value)], version);
}

fn mount_secret_keys(dir: &Path, secret: &str, data: &[(&str, &str)], version: u32) {
    let secret_dir = dir.join(secret);
    let versioned = secret_dir.join(format!("..v{version}"));
    std::fs::create_dir_all(&versioned).unwrap();
    for (key, value) in data {
        std::fs::write(versioned.join(key), value).unwrap();
    }
    let tmp = secret_dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..v{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, secret_dir.join("..data")).unwrap();
    for (key, _) in data {
        let link = secret_dir.join(key);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{key}"), &link).unwrap();
        }
    }
}

/// Starts `hookline worker` for the destination `orders` in `analytics` with `spec` (YAML,
/// indented four spaces), Secrets mounted from `dir/secrets`, its data in `dir/data`.
async fn start_worker(dir: &Path, spec: &str) -> Hookline {
    let port = free_port();
    let config = format!(
        "destination:\n  apiVersion: hookline.dev/v1alpha1\n  kind: WebhookDestination\n  metadata: {{ name: orders, namespace: analytics }}\n  spec:\n{spec}secretsDir: {}\ndataDir: {}\nlisten: 127.0.0.1:{port}\n",
        dir.join("secrets").display(),
        dir.join("data").display()
    );
    let config_file = manifest(dir, "worker.yaml", &config);
    Hookline::start_worker(&config_file, port, &dir.join("data")).await
}

#[tokio::test]
async fn delivers_with_mounted_secrets_and_picks_up_a_rotated_token_without_restarting() {
    let endpoint = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    mount_secret(&secrets, "crm", "token", "first-token\n", 1);
    mount_secret(&secrets, "src", "writeKey", "wk", 1);
    let spec = format!(
        r#"    endpoint: {{ url: "{}/in" }}
    auth:
      type: Bearer
      bearer: {{ tokenSecretRef: {{ name: crm, key: token }} }}
    mapping: {{ id: {{ "@path": "$.properties.id" }} }}
    source: {{ writeKeySecretRef: {{ name: src, key: writeKey }} }}
"#,
        endpoint.url
    );
    let worker = start_worker(dir.path(), &spec).await;
    let client = reqwest::Client::new();
    let send = |id: u32| {
        client
            .post(format!("{}/v1/track", worker.base))
            .basic_auth("wk", Some(""))
            .json(&track("u1", "E", serde_json::json!({"id": id})))
            .send()
    };

    assert_eq!(send(1).await.unwrap().status(), 200);
    let got = endpoint.wait_for("the first event", |r| r.len() == 1).await;
    assert_eq!(got[0].body, serde_json::json!({"id": 1}));
    assert_eq!(got[0].headers["authorization"], "Bearer first-token");
    let status: serde_json::Value = reqwest::get(format!("{}/status", worker.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let auth = &status["destinations"][0]["conditions"][1];
    assert_eq!(
        (&auth["type"], &auth["reason"]),
        (&"AuthReady".into(), &"BearerToken".into())
    );
    assert!(!status.to_string().contains("first-token"));

    mount_secret(&secrets, "crm", "token", "second-token", 2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut id = 2;
    loop {
        assert_eq!(send(id).await.unwrap().status(), 200);
        let got = endpoint
            .wait_for("the next event", |r| r.len() == id as usize)
            .await;
        if got.last().unwrap().headers["authorization"] == "Bearer second-token" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated token was never used"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        id += 1;
    }
}

#[test]
fn a_bad_config_file_is_named_with_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = manifest(
        dir.path(),
        "worker.yaml",
        "destination:\n  apiVersion: hookline.dev/v1alpha1\n  kind: WebhookDestination\n  metadata: {name: a}\n  spec: {endpoint: {url: 'http://x'}}\nsecretsDir: /s\ndataDir: /d\nlisten: nowhere\n",
    );
    let out = run_cli(&["worker", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("worker.yaml") && err.contains("listen"),
        "{err}"
    );
}

/// A token the test server issues, obtained as the operator would.
async fn issue_token(server: &oauth::OAuthServer) -> String {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/token", server.url))
        .basic_auth("hookline%20client", Some("s3cr%3Aet%2F%2Bvalue"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_code_worker_follows_the_token_secret_the_operator_keeps() {
    let server = oauth::OAuthServer::start(std::time::Duration::from_secs(3600), false).await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    mount_secret(
        &secrets,
        "crm-oauth",
        "clientSecret",
        oauth::CLIENT_SECRET,
        1,
    );
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let first = issue_token(&server).await;
    mount_secret_keys(
        &secrets,
        "orders-oauth-token",
        &[
            ("access_token", &first),
            ("expires_at", &expires),
            ("refresh_token", "rt-x"),
        ],
        1,
    );
    let spec = format!(
        r#"    endpoint: {{ url: "{url}/api/events" }}
    auth:
      type: OAuth2
      oauth2:
        grantType: AuthorizationCode
        clientId: "{id}"
        clientSecretRef: {{ name: crm-oauth, key: clientSecret }}
        authorizeUrl: {url}/authorize
        tokenUrl: {url}/token
"#,
        url = server.url,
        id = oauth::CLIENT_ID,
    );
    let worker = start_worker(dir.path(), &spec).await;
    let accepted_with = |token: String| {
        let server = server.clone();
        move || {
            server
                .api_calls()
                .iter()
                .any(|c| c.1.as_deref() == Some(&*token) && c.2 == 200)
        }
    };
    worker
        .post("/v1/track", track("u1", "E", serde_json::json!({})))
        .await;
    oauth::eventually(
        "delivery with the mounted token",
        accepted_with(first.clone()),
    )
    .await;

    // The operator rotated the token: the worker takes the new one, the old one is revoked.
    server.revoke_access_tokens();
    let second = issue_token(&server).await;
    mount_secret_keys(
        &secrets,
        "orders-oauth-token",
        &[
            ("access_token", &second),
            ("expires_at", &expires),
            ("refresh_token", "rt-y"),
        ],
        2,
    );
    worker
        .post("/v1/track", track("u1", "E", serde_json::json!({})))
        .await;
    oauth::eventually(
        "delivery with the rotated token",
        accepted_with(second.clone()),
    )
    .await;
    // The worker never asked the authorization server itself: the operator is the one refresher.
    assert_eq!(server.token_requests().len(), 2);
}

#[tokio::test]
async fn a_local_mode_worker_drains_its_queue_after_sigterm_and_takes_no_more_events() {
    let endpoint = Endpoint::start().await;
    endpoint.slow_down(std::time::Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    let port = free_port();
    let spec = format!(
        "    endpoint: {{ url: \"{}/in\" }}\n    mapping: {{ id: {{ \"@path\": \"$.properties.id\" }} }}\n",
        endpoint.url
    );
    let config = format!(
        "destination:\n  apiVersion: hookline.dev/v1alpha1\n  kind: WebhookDestination\n  metadata: {{ name: orders, namespace: analytics }}\n  spec:\n{spec}secretsDir: {}\ndataDir: {}\nlisten: 127.0.0.1:{port}\n",
        dir.path().join("secrets").display(),
        dir.path().join("data").display()
    );
    let config_file = manifest(dir.path(), "worker.yaml", &config);
    let path = config_file.to_str().unwrap();
    let mut h =
        Hookline::start_args(&["worker", "--config", path, "--drain-seconds", "25"], port).await;
    let batch: Vec<serde_json::Value> = (0..20)
        .map(|i| serde_json::json!({"type": "track", "userId": "u", "event": "E", "properties": {"id": i}}))
        .collect();
    assert_eq!(
        h.post("/v1/batch", serde_json::json!({"batch": batch}))
            .await
            .status(),
        200
    );
    endpoint
        .wait_for("the first delivery", |r| !r.is_empty())
        .await;
    h.sigterm();
    // Unready and not ingesting at once: the Service sends elsewhere.
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while client
        .get(format!("{}/readyz", h.base))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "still ready after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let status = h.wait_exit(std::time::Duration::from_secs(20)).await;
    assert!(status.success());
    let got = endpoint.received();
    let ids: std::collections::HashSet<i64> =
        got.iter().filter_map(|r| r.body["id"].as_i64()).collect();
    assert_eq!(
        ids.len(),
        20,
        "the whole backlog was delivered before exiting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_ca_is_picked_up_without_a_restart() {
    use support::tls::{Ca, TlsEndpoint, server_config};
    let (old, new) = (Ca::new("old root"), Ca::new("new root"));
    let endpoint = TlsEndpoint::start(server_config(&old.issue(&["127.0.0.1"]), None)).await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    mount_secret(&secrets, "crm-ca", "ca.crt", &old.pem(), 1);
    let spec = format!(
        "    endpoint:\n      url: \"{}\"\n      tls: {{ caSecretRef: {{ name: crm-ca, key: ca.crt }} }}\n",
        endpoint.url
    );
    let h = start_worker(dir.path(), &spec).await;
    let track = serde_json::json!({"userId": "u", "event": "E"});
    assert_eq!(h.post("/v1/track", track.clone()).await.status(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while endpoint.served() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first event was not delivered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The endpoint moves to a certificate from another CA: refused until the Secret follows.
    endpoint.set_config(server_config(&new.issue(&["127.0.0.1"]), None));
    assert_eq!(h.post("/v1/track", track).await.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        endpoint.served(),
        1,
        "delivered to a certificate nobody trusts"
    );
    mount_secret(&secrets, "crm-ca", "ca.crt", &new.pem(), 2);
    while endpoint.served() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated CA was not picked up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Local mode in a cluster: a worker whose destination reads a WebhookSource accepts the key
/// the operator rendered (as a digest) on its own Service, with the source's origins.
#[tokio::test]
async fn a_worker_reading_a_source_takes_its_key_and_origins_from_the_config() {
    let endpoint = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let route = hookline::pipeline::source::RouteSpec::of_source(
        &hookline::jetstream::names::SourceNames::new("shop", "website"),
        &serde_json::from_value(serde_json::json!({"allowedOrigins": ["https://shop.example"]}))
            .unwrap(),
        &hookline::jetstream::names::KeyDigest::of("wk-site"),
        String::new(),
    );
    let port = free_port();
    let config = format!(
        "destination:\n  apiVersion: hookline.dev/v1alpha1\n  kind: WebhookDestination\n  metadata: {{ name: orders, namespace: analytics }}\n  spec:\n    endpoint: {{ url: \"{}\" }}\n    source: {{ sourceRef: {{ name: website, namespace: shop }} }}\nsecretsDir: {}\ndataDir: {}\nlisten: 127.0.0.1:{port}\nsource: {}\n",
        endpoint.url,
        dir.path().join("secrets").display(),
        dir.path().join("data").display(),
        serde_json::to_string(&route).unwrap(),
    );
    let worker = Hookline::start_worker(
        &manifest(dir.path(), "w.yaml", &config),
        port,
        &dir.path().join("data"),
    )
    .await;
    let client = reqwest::Client::new();
    let send = |key: &'static str, origin: &'static str| {
        client
            .post(format!("{}/v1/track", worker.base))
            .basic_auth(key, Some(""))
            .header("origin", origin)
            .json(&track("u1", "E", serde_json::json!({})))
            .send()
    };
    assert_eq!(
        send("wk-other", "https://shop.example")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        send("wk-site", "https://evil.example")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        send("wk-site", "https://shop.example")
            .await
            .unwrap()
            .status(),
        200
    );
    endpoint.wait_for("the one event", |r| r.len() == 1).await;
}
