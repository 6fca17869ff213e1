//! The CLI's contract: `render -o json`, and one clear error naming the file and field.

mod support;

use serde_json::{Value, json};
use support::*;

fn event_file(dir: &std::path::Path, event: Value) -> String {
    let p = dir.join("event.json");
    std::fs::write(&p, event.to_string()).unwrap();
    p.to_str().unwrap().to_string()
}

/// `hookline render -o json` of the shipped example destination.
fn render_example(event: &str) -> std::process::Output {
    let root = env!("CARGO_MANIFEST_DIR");
    let files = [
        format!("{root}/examples/orders-to-crm.yaml"),
        format!("{root}/examples/orders-secrets.yaml"),
    ];
    run_cli(&[
        "render", "-f", &files[0], "-f", &files[1], "--event", event, "-o", "json",
    ])
}

#[test]
fn render_prints_requests_as_json_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let ev = event_file(
        dir.path(),
        json!({"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "m-1", "properties": {"order_id": "o1", "total": 10}, "context": {"traits": {"email": "e@x.io"}}}),
    );
    let out = render_example(&ev);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &requests[0];
    assert_eq!(r["method"], "POST");
    assert_eq!(r["url"], "http://127.0.0.1:9000/api/events");
    assert_eq!(
        r["body"],
        json!({"order_id": "o1", "email": "e@x.io", "total": 10, "customer": "u1"})
    );
    assert_eq!(r["headers"]["Authorization"], "[redacted]");
    assert_eq!(r["headers"]["X-Api-Key"], "[redacted]");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("example-bearer-token") && !text.contains("example-api-key"),
        "secrets leaked: {text}"
    );

    let filtered = event_file(dir.path(), json!({"type": "identify", "userId": "u1"}));
    let out = render_example(&filtered);
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );
}

#[test]
fn bad_manifests_fail_with_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let ev = event_file(dir.path(), json!({"type": "track"}));
    let cases = [
        (
            "url.yaml",
            destination("d", "not a url", ""),
            "spec.endpoint.url",
        ),
        (
            "method.yaml",
            destination("d", "http://x", "    method: GET\n"),
            "spec.endpoint.method",
        ),
        (
            "field.yaml",
            destination("d", "http://x", "    timeoutSecs: 3\n"),
            "timeoutSecs",
        ),
        (
            "mapping.yaml",
            destination(
                "d",
                "http://x",
                "  mapping:\n    hash: { \"@template\": 1 }\n",
            ),
            "/hash/@template should be a string",
        ),
        (
            "sub.yaml",
            destination("d", "http://x", "  subscription: 'type = '\n"),
            "spec.subscription",
        ),
        (
            "secret.yaml",
            destination(
                "d",
                "http://x",
                "  auth: { type: Bearer, bearer: { tokenSecretRef: { name: nope, key: t } } }\n",
            ),
            "Secret default/nope not found",
        ),
        (
            "token.yaml",
            destination(
                "d",
                "http://x",
                "  auth: { type: Bearer, bearer: { tokenSecretRef: { name: creds, key: t } } }\n",
            ) + "---\napiVersion: v1\nkind: Secret\nmetadata: { name: creds }\nstringData: { t: \"a\\nb\" }\n",
            "spec.auth.bearer.tokenSecretRef",
        ),
    ];
    for (file, yaml, needle) in cases {
        let path = manifest(dir.path(), file, &yaml);
        let out = run_cli(&["render", "-f", path.to_str().unwrap(), "--event", &ev]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file} should fail");
        assert!(
            stderr.contains(file) && stderr.contains(needle),
            "{file}: expected {needle:?} in: {stderr}"
        );
    }
}

#[test]
fn mapping_errors_at_render_time_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = manifest(
        dir.path(),
        "d.yaml",
        &destination(
            "d",
            "http://x",
            "  mapping:\n    v: { \"@case\": { operator: snake, value: { \"@path\": \"$.s\" } } }\n",
        ),
    );
    let ev = event_file(dir.path(), json!({"s": "Some Text"}));
    let out = run_cli(&[
        "render",
        "-f",
        path.to_str().unwrap(),
        "--event",
        &ev,
        "-o",
        "json",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"lower\" or \"upper\""));
}

#[tokio::test]
async fn test_command_reports_the_answer_and_exit_status() {
    let endpoint = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ok = manifest(dir.path(), "ok.yaml", &destination("ok", &endpoint.url, ""));
    let out = tokio::task::spawn_blocking(move || run_cli(&["test", "-f", ok.to_str().unwrap()]))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("response: 200"), "{stdout}");
    assert_eq!(
        endpoint.received()[0].body["event"],
        "Order Completed",
        "the built-in sample"
    );

    endpoint.respond(|_| (422, vec![]));
    let bad = manifest(
        dir.path(),
        "bad.yaml",
        &destination("bad", &endpoint.url, ""),
    );
    let out = tokio::task::spawn_blocking(move || run_cli(&["test", "-f", bad.to_str().unwrap()]))
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("response: 422"));
}

/// The first line `hookline run` logs to stderr (a pipe, not a terminal), with `env` set.
fn first_log_line(env: &[(&str, &str)]) -> String {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let file = manifest(
        dir.path(),
        "d.yaml",
        &destination("d", "http://127.0.0.1:9/x", ""),
    );
    let mut child = std::process::Command::new(bin())
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("-f")
        .arg(&file)
        .env("HOOKLINE_LOG", "info")
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    line
}

#[test]
fn logs_written_to_a_file_or_pipe_carry_no_colour_codes() {
    let line = first_log_line(&[]);
    assert!(line.contains("hookline is running"), "{line}");
    assert!(!line.contains('\u{1b}'), "{line:?}");
}

#[test]
fn hookline_log_format_json_writes_one_json_object_per_line() {
    let line = first_log_line(&[("HOOKLINE_LOG_FORMAT", "json")]);
    let record: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(record["level"], "INFO", "{record}");
    assert!(record["message"].is_string(), "{record}");

    let refused = std::process::Command::new(bin())
        .arg("crd")
        .env("HOOKLINE_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("HOOKLINE_LOG_FORMAT"));
}
