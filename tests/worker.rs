//! `hookline worker --config FILE`: the configuration the operator renders, Secrets mounted as
//! files the way the kubelet mounts them, and credentials rotated on disk while it runs.

mod support;

use std::path::Path;
use support::*;

/// Writes `dir/<secret>/<key>` the way the kubelet does: the key is a symlink through `..data`,
/// and an update swaps `..data` atomically.
fn mount_secret(dir: &Path, secret: &str, key: &str, value: &str, version: u32) {
    let secret_dir = dir.join(secret);
    let versioned = secret_dir.join(format!("..v{version}"));
    std::fs::create_dir_all(&versioned).unwrap();
    std::fs::write(versioned.join(key), value).unwrap();
    let tmp = secret_dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..v{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, secret_dir.join("..data")).unwrap();
    let link = secret_dir.join(key);
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(format!("..data/{key}"), &link).unwrap();
    }
}

#[tokio::test]
async fn delivers_with_mounted_secrets_and_picks_up_a_rotated_token_without_restarting() {
    let endpoint = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    mount_secret(&secrets, "crm", "token", "first-token\n", 1);
    mount_secret(&secrets, "src", "writeKey", "wk", 1);
    let port = free_port();
    let config = format!(
        r#"destination:
  apiVersion: hookline.dev/v1alpha1
  kind: WebhookDestination
  metadata: {{ name: orders, namespace: analytics }}
  spec:
    endpoint: {{ url: "{}/in" }}
    auth:
      type: Bearer
      bearer: {{ tokenSecretRef: {{ name: crm, key: token }} }}
    mapping: {{ id: {{ "@path": "$.properties.id" }} }}
    source: {{ writeKeySecretRef: {{ name: src, key: writeKey }} }}
secretsDir: {}
dataDir: {}
listen: 127.0.0.1:{port}
"#,
        endpoint.url,
        secrets.display(),
        dir.path().join("data").display()
    );
    let config_file = manifest(dir.path(), "worker.yaml", &config);
    let worker = Hookline::start_worker(&config_file, port, &dir.path().join("data")).await;
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
