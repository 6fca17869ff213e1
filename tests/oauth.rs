//! OAuth 2.0 end to end: the real `hookline` binary against a strict authorization server and a
//! protected API on 127.0.0.1, with tokens that live a couple of seconds.

mod support;

use serde_json::{Value, json};
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::oauth::{CLIENT_SECRET, OAuthServer, eventually};
use support::*;

/// The destination `crm` in `sales`, with its client-secret Secret in the same file.
fn oauth_destination(server: &OAuthServer, grant: &str, extra_oauth: &str) -> String {
    format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{ name: crm-oauth, namespace: sales }}\nstringData: {{ clientSecret: \"{CLIENT_SECRET}\" }}\n",
        server.destination("crm", "sales", grant, extra_oauth)
    )
}

async fn wait_auth(h: &Hookline, ok: &str, reason: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = h.status().await;
        let c = condition(&s, "AuthReady");
        if c["status"] == ok && c["reason"] == reason {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "AuthReady never became {ok}/{reason}: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `n` events spread over `over`, then waits until the API accepted all of them.
async fn deliver_over(h: &Hookline, server: &OAuthServer, n: usize, over: Duration) {
    let before = accepted(server);
    for i in 0..n {
        let r = h
            .post(
                "/v1/track",
                track("u-1", "Order Completed", json!({"i": i})),
            )
            .await;
        assert_eq!(r.status(), 200);
        tokio::time::sleep(over / n as u32).await;
    }
    eventually("every event accepted by the API", || {
        accepted(server) >= before + n
    })
    .await;
}

fn accepted(server: &OAuthServer) -> usize {
    server.api_calls().iter().filter(|c| c.2 == 200).count()
}

fn rejected(server: &OAuthServer) -> usize {
    server.api_calls().iter().filter(|c| c.2 == 401).count()
}

/// Each token was replaced while it was still valid, and not before 70% of its lifetime.
fn assert_refreshed_ahead(server: &OAuthServer, lifetime: Duration) {
    let issued = server.issued();
    assert!(issued.len() >= 3, "only {} tokens issued", issued.len());
    for pair in issued.windows(2) {
        assert!(
            pair[1].issued < pair[0].expires,
            "a token expired before the next was fetched"
        );
        assert!(
            pair[1].issued - pair[0].issued >= lifetime.mul_f64(0.7),
            "refreshed after {:?} of a {lifetime:?} token",
            pair[1].issued - pair[0].issued
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_tokens_are_refreshed_before_they_expire() {
    let lifetime = Duration::from_secs(2);
    let server = OAuthServer::start(lifetime, false).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "      scopes: [events.write, events.read]\n      tokenParams: { audience: \"https://api.example.com\" }\n";
    let file = manifest(
        dir.path(),
        "crm.yaml",
        &oauth_destination(&server, "ClientCredentials", extra),
    );
    let h = Hookline::start(&[file], &dir.path().join("data")).await;
    wait_auth(&h, "True", "TokenAvailable").await;

    deliver_over(&h, &server, 40, Duration::from_millis(5200)).await;
    assert_eq!(
        rejected(&server),
        0,
        "every request carried a token the server accepts"
    );
    assert_refreshed_ahead(&server, lifetime);
    let first = &server.token_requests()[0];
    assert!(first.basic);
    assert_eq!(first.params["grant_type"], "client_credentials");
    assert_eq!(first.params["scope"], "events.write events.read");
    assert_eq!(first.params["audience"], "https://api.example.com");
    assert!(!first.params.contains_key("client_secret"));

    let s = h.status().await;
    assert!(
        s["destinations"][0]["auth"]["expiresAt"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let text = s.to_string();
    for t in server.issued() {
        assert!(!text.contains(&t.token), "a token leaked into /status");
    }
    let metrics = h.metrics().await;
    assert!(!metrics.contains("at-"), "a token leaked into metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_holds_the_queue_and_says_why() {
    let server = OAuthServer::start(Duration::from_secs(3600), false).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = oauth_destination(&server, "ClientCredentials", "").replace(CLIENT_SECRET, "wrong");
    let file = manifest(dir.path(), "crm.yaml", &yaml);
    let data = dir.path().join("data");
    let h = Hookline::start(&[file], &data).await;
    let s = wait_auth(&h, "False", "InvalidClient").await;
    let message = condition(&s, "AuthReady")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("invalid_client"), "{message}");
    assert_eq!(condition(&s, "Ready")["reason"], "InvalidClient");

    let r = h
        .post("/v1/track", track("u-1", "Order Completed", json!({})))
        .await;
    assert_eq!(r.status(), 200);
    // Held, not spent: the manager keeps asking (backing off), nothing reaches the API or the DLQ.
    eventually("a retried token request", || {
        server.token_requests().len() >= 3
    })
    .await;
    assert!(server.api_calls().is_empty());
    drop(h);
    assert_eq!(dead_letters(&data), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_post_is_used_when_asked_and_tried_once_when_basic_is_refused() {
    let server = OAuthServer::start(Duration::from_secs(3600), true).await;
    let dir = tempfile::tempdir().unwrap();
    let configured = oauth_destination(
        &server,
        "ClientCredentials",
        "      clientAuthMethod: ClientSecretPost\n",
    );
    let file = manifest(dir.path(), "post.yaml", &configured);
    let data = dir.path().join("data");
    let out = test_with(&file, &data);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Authorization: [redacted]") && !text.contains("at-"),
        "{text}"
    );
    assert_eq!(server.token_requests().len(), 1);
    assert!(!server.token_requests()[0].basic);

    // Unset: Basic first; the server answers invalid_client; the body form once.
    let unset = manifest(
        dir.path(),
        "unset.yaml",
        &oauth_destination(&server, "ClientCredentials", ""),
    );
    let data2 = dir.path().join("data2");
    let out = test_with(&unset, &data2);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcomes: Vec<_> = server.token_requests()[1..]
        .iter()
        .map(|r| (r.basic, r.outcome.clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (true, "invalid_client".to_string()),
            (false, "ok".to_string())
        ]
    );

    // `test` reuses the token `run` (or an earlier `test`) stored: no new request.
    let out = test_with(&file, &data);
    assert!(out.status.success());
    assert_eq!(server.token_requests().len(), 3);
    let token_file = data.join("oauth/sales/crm.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_leads_to_exactly_one_refresh_and_one_retry() {
    let server = OAuthServer::start(Duration::from_secs(3600), false).await;
    let dir = tempfile::tempdir().unwrap();
    let file = manifest(
        dir.path(),
        "crm.yaml",
        &oauth_destination(&server, "ClientCredentials", ""),
    );
    let h = Hookline::start(&[file], &dir.path().join("data")).await;
    deliver_over(&h, &server, 1, Duration::ZERO).await;
    assert_eq!(server.token_requests().len(), 1);

    server.revoke_access_tokens();
    deliver_over(&h, &server, 1, Duration::ZERO).await;
    assert_eq!(rejected(&server), 1);
    assert_eq!(server.token_requests().len(), 2);
    let calls = server.api_calls();
    assert_ne!(calls[1].1, calls[2].1, "the retry carried the new token");
    assert_eq!(accepted(&server), 2);
}

fn test_with(file: &Path, data: &Path) -> std::process::Output {
    run_cli(&[
        "test",
        "-f",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ])
}

/// Plays the person: follows the authorize URL `hookline connect --no-browser` printed, as a
/// browser would, up to the loopback redirect.
async fn consent_as_a_browser(url: &str) {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = browser.get(url).send().await.unwrap();
    assert_eq!(answer.status(), 302, "{}", answer.text().await.unwrap());
    let callback = answer.headers()["location"].to_str().unwrap().to_string();
    assert!(callback.starts_with("http://127.0.0.1:"), "{callback}");
    let page = browser.get(&callback).send().await.unwrap();
    assert_eq!(page.status(), 200);
}

/// Starts `hookline connect --no-browser -f FILE` and reads the authorize URL it prints; the
/// reader must outlive the process, which prints once more when it is done.
fn connect(
    file: &Path,
    data: &Path,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
    String,
) {
    let mut child = Command::new(bin())
        .args(["connect", "--no-browser", "-f"])
        .arg(file)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut url = String::new();
    stdout.read_line(&mut url).unwrap();
    (child, stdout, url.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_code_end_to_end_with_rotating_refresh_tokens() {
    let lifetime = Duration::from_secs(2);
    let server = OAuthServer::start(lifetime, false).await;
    let dir = tempfile::tempdir().unwrap();
    let file = manifest(
        dir.path(),
        "crm.yaml",
        &oauth_destination(
            &server,
            "AuthorizationCode",
            "      scopes: [offline_access]\n",
        ),
    );
    let data = dir.path().join("data");

    let (mut child, _stdout, url) = connect(&file, &data);
    assert!(
        url.starts_with(&format!("{}/authorize?", server.url)),
        "{url}"
    );
    assert!(
        url.contains("code_challenge_method=S256") && url.contains("state="),
        "{url}"
    );
    consent_as_a_browser(&url).await;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("oauth/sales/crm.json")).unwrap())
            .unwrap();
    assert!(stored["refresh_token"].as_str().unwrap().starts_with("rt-"));

    let h = Hookline::start(std::slice::from_ref(&file), &data).await;
    deliver_over(&h, &server, 30, Duration::from_millis(4500)).await;
    assert_eq!(rejected(&server), 0);
    assert_refreshed_ahead(&server, lifetime);
    let refreshes = server
        .token_requests()
        .iter()
        .filter(|r| r.params["grant_type"] == "refresh_token")
        .all(|r| r.outcome == "ok");
    assert!(
        refreshes,
        "a rotated refresh token was reused: {:#?}",
        server.token_requests()
    );

    server.revoke_grants();
    let s = wait_auth(&h, "False", "ConsentRequired").await;
    let message = condition(&s, "AuthReady")["message"].as_str().unwrap();
    assert!(message.contains("hookline connect"), "{message}");
    assert_eq!(
        s["destinations"][0]["auth"]["authorizationUrl"],
        format!("{}/authorize", server.url)
    );

    // Consent again while `run` is running: it picks the new grant up by itself.
    let (mut child, _stdout, url) = connect(&file, &data);
    consent_as_a_browser(&url).await;
    assert!(
        tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap()
            .success()
    );
    wait_auth(&h, "True", "TokenAvailable").await;
    deliver_over(&h, &server, 1, Duration::ZERO).await;
}
