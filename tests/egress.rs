//! Nobody's proxy (API §11): what a tenant's resource makes the operator send passes the egress
//! guard, nothing an endpoint answers the operator reaches a status, and a test event leaves
//! from the destination's own worker.

mod support;

use hookline::api::{ClientAuthMethod, GrantType};
use hookline::egress::policy::EgressPolicy;
use hookline::egress::{Egress, Lookup};
use hookline::oauth::OAuthSettings;
use hookline::oauth::endpoint::{TokenEndpoint, TokenError};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::operator::{NS, Operator, condition, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server on `addr` that counts connections and answers each with `answer`, then closes.
async fn counting_server(addr: SocketAddr, answer: String) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (addr, connections)
}

fn http_answer(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

const TOKEN: &str = r#"{"access_token":"a-token","token_type":"bearer","expires_in":3600}"#;
/// What a cloud metadata service answers: nothing of it may reach a status.
const METADATA: &str =
    r#"{"SecretAccessKey": "INTERNAL-ONLY-abc", "Token": "node-role-credentials"}"#;

fn settings(token_url: &str) -> OAuthSettings {
    OAuthSettings {
        grant: GrantType::ClientCredentials,
        client_id: "client".into(),
        client_secret: Some("secret".into()),
        authorize_url: None,
        token_url: token_url.parse().unwrap(),
        refresh_token_url: None,
        scopes: vec![],
        auth_method: Some(ClientAuthMethod::ClientSecretBasic),
        token_params: Default::default(),
    }
}

fn operator_egress(allowed: &[&str]) -> Egress {
    let allowed = allowed.iter().map(|n| n.parse().unwrap()).collect();
    Egress::new(EgressPolicy::operator(allowed, Vec::new()), None).unwrap()
}

/// A resolver stub: the n-th lookup (of any name) answers `answers[n]`, the last one after.
fn stub(answers: &[&[&str]], lookups: Arc<AtomicUsize>) -> Lookup {
    let answers: Vec<Vec<IpAddr>> = answers
        .iter()
        .map(|a| a.iter().map(|ip| ip.parse().unwrap()).collect())
        .collect();
    Arc::new(move |_host: String| {
        let n = lookups.fetch_add(1, Ordering::SeqCst);
        let answer = answers[n.min(answers.len() - 1)].clone();
        Box::pin(async move { Ok(answer) })
    })
}

async fn fetch(url: &str, egress: &Egress) -> Result<hookline::oauth::TokenSet, TokenError> {
    TokenEndpoint::new(settings(url), egress)
        .unwrap()
        .fetch(None)
        .await
}

#[tokio::test]
async fn token_requests_to_internal_addresses_are_refused_in_every_spelling() {
    let (addr, connections) =
        counting_server("127.0.0.1:0".parse().unwrap(), http_answer("200 OK", TOKEN)).await;
    let port = addr.port();
    let lookups = Arc::new(AtomicUsize::new(0));
    let egress = operator_egress(&[]).with_lookup(stub(&[&["127.0.0.1"]], lookups.clone()));
    for url in [
        format!("http://127.0.0.1:{port}/token"),
        // Decimal, hexadecimal and short forms: the URL parser normalises them to 127.0.0.1.
        format!("http://2130706433:{port}/token"),
        format!("http://0x7f.1:{port}/token"),
        format!("http://[::ffff:127.0.0.1]:{port}/token"),
        format!("http://[::ffff:7f00:1]:{port}/token"),
        format!("http://0.0.0.0:{port}/token"),
        format!("http://metadata.internal.test:{port}/token"),
    ] {
        match fetch(&url, &egress).await {
            Err(e @ TokenError::EgressRefused { .. }) => {
                let message = e.to_string();
                assert!(
                    message.contains("the cluster admin can allow it with egress.allowedCIDRs"),
                    "{message}"
                );
                assert!(message.contains("resolves to"), "{message}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
    assert_eq!(
        lookups.load(Ordering::SeqCst),
        1,
        "only the name was looked up"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "nothing reached the server"
    );
    let refused = fetch(&format!("http://127.0.0.1:{port}/token"), &egress)
        .await
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        format!(
            "the token endpoint http://127.0.0.1:{port}/token resolves to 127.0.0.1, a loopback address; the cluster admin can allow it with egress.allowedCIDRs"
        )
    );

    // The admin's exception lets it through.
    let allowed = operator_egress(&["127.0.0.0/8"]);
    let token = fetch(&format!("http://127.0.0.1:{port}/token"), &allowed)
        .await
        .unwrap();
    assert_eq!(token.access_token, "a-token");
}

/// Token servers on one port of 127.0.0.2 (allowed in these tests) and of 127.0.0.1 (refused):
/// the port, and how many connections each took.
async fn token_servers_on_two_loopback_addresses() -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (allowed, allowed_hits) =
        counting_server("127.0.0.2:0".parse().unwrap(), http_answer("200 OK", TOKEN)).await;
    let (_, refused_hits) = counting_server(
        SocketAddr::new("127.0.0.1".parse().unwrap(), allowed.port()),
        http_answer("200 OK", TOKEN),
    )
    .await;
    (allowed.port(), allowed_hits, refused_hits)
}

#[tokio::test]
async fn a_name_with_one_internal_address_among_others_is_refused_whole() {
    let (port, first, second) = token_servers_on_two_loopback_addresses().await;
    let lookups = Arc::new(AtomicUsize::new(0));
    let egress = operator_egress(&["127.0.0.2/32"])
        .with_lookup(stub(&[&["127.0.0.2", "127.0.0.1"]], lookups));
    let url = format!("http://auth.example.test:{port}/token");
    let refused = fetch(&url, &egress).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("resolves to 127.0.0.1, a loopback address"),
        "{refused}"
    );
    assert_eq!(
        first.load(Ordering::SeqCst) + second.load(Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn dns_rebinding_cannot_swap_the_vetted_address() {
    // The name first resolves to an allowed address (127.0.0.2), then to a refused one
    // (127.0.0.1), where a second server waits on the same port.
    let (port, allowed_hits, internal_hits) = token_servers_on_two_loopback_addresses().await;
    let lookups = Arc::new(AtomicUsize::new(0));
    let egress = operator_egress(&["127.0.0.2/32"])
        .with_lookup(stub(&[&["127.0.0.2"], &["127.0.0.1"]], lookups.clone()));
    let endpoint = TokenEndpoint::new(
        settings(&format!("http://rebind.example.test:{port}/token")),
        &egress,
    )
    .unwrap();
    assert_eq!(endpoint.fetch(None).await.unwrap().access_token, "a-token");
    // The server closed the connection: the next request connects, and so resolves, again.
    match endpoint.fetch(None).await {
        Err(TokenError::EgressRefused { refused, .. }) => {
            assert_eq!(refused.address, "127.0.0.1".parse::<IpAddr>().unwrap())
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(allowed_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        internal_hits.load(Ordering::SeqCst),
        0,
        "the rebound address was never dialled"
    );
    assert_eq!(
        lookups.load(Ordering::SeqCst),
        2,
        "one lookup per connection"
    );
}

#[tokio::test]
async fn what_a_token_endpoint_answers_is_described_never_repeated() {
    let egress = operator_egress(&["127.0.0.0/8"]);
    let cases = [
        (
            http_answer("403 Forbidden", METADATA),
            "answered HTTP 403 with a body that is not an OAuth 2.0 error response",
        ),
        (
            http_answer("200 OK", METADATA),
            "answered HTTP 200 with a body that is not an OAuth 2.0 token response (missing field `access_token`)",
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\nconnection: close\r\ncontent-length: 17\r\n\r\n<b>INTERNAL-ONLY</b>".into(),
            "answered HTTP 200 with a Content-Type other than application/json",
        ),
        (
            "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:9/INTERNAL-ONLY\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into(),
            "answered HTTP 302 with an empty body",
        ),
    ];
    for (answer, expected) in cases {
        let (addr, _) = counting_server("127.0.0.1:0".parse().unwrap(), answer).await;
        let error = fetch(&format!("http://{addr}/token"), &egress)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{error}");
        assert!(!error.contains("INTERNAL-ONLY"), "{error}");
    }
    // A real OAuth 2.0 error is what may be shown: its code and description.
    let oauth_error = r#"{"error":"invalid_client","error_description":"unknown client"}"#;
    let (addr, _) = counting_server(
        "127.0.0.1:0".parse().unwrap(),
        http_answer("401 Unauthorized", oauth_error),
    )
    .await;
    let error = fetch(&format!("http://{addr}/token"), &egress)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("invalid_client"));
    assert!(
        error
            .to_string()
            .ends_with("answered invalid_client: unknown client"),
        "{error}"
    );
}

#[tokio::test]
async fn a_guarded_delivery_never_dials_a_refused_address() {
    let endpoint = support::Endpoint::start().await;
    let egress = Egress::new(EgressPolicy::laptop(true, Vec::new()), None).unwrap();
    let sender =
        hookline::pipeline::deliver::HttpSender::new(1, Duration::from_secs(5), None, &egress)
            .unwrap();
    let dest = support::destination("crm", &format!("{}/in", endpoint.url), "");
    let dir = tempfile::tempdir().unwrap();
    let file = support::manifest(dir.path(), "d.yaml", &dest);
    let loaded = hookline::cli::load_destinations(&[file]).unwrap();
    let request =
        hookline::pipeline::single::build_request(&loaded[0], &json!({"type": "track"}), None)
            .unwrap();
    let attempt = sender.send(&request).await;
    let error = attempt.error.unwrap();
    assert!(
        error.contains("127.0.0.1 is a loopback address, which the egress guard refuses"),
        "{error}"
    );
    assert!(endpoint.received().is_empty());
}

/// An operator with its default guard: a token server on loopback is never contacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_refuses_an_internal_token_endpoint_and_says_so_plainly() {
    let server = support::oauth::OAuthServer::start(Duration::from_secs(3600), false).await;
    let mut opts = support::operator::options(None, "op-1", support::free_port());
    opts.egress = Egress::new(
        EgressPolicy::operator(Vec::new(), Vec::new())
            .counted(hookline::metrics::OPERATOR_METRICS.egress_refused.clone()),
        None,
    )
    .unwrap();
    let op = Operator::launch(support::apiserver::ApiServer::new(), opts);
    op.create_secret(
        "crm-oauth",
        json!({"clientSecret": support::oauth::CLIENT_SECRET}),
    )
    .await;
    op.create_destination(&server.destination("probe", NS, "ClientCredentials", ""))
        .await;
    let (_, message) = eventually("AuthReady=False EgressRefused", || async {
        let d = op.destination("probe").await;
        condition(&d, "AuthReady")
            .filter(|c| c.0 == "False" && c.1 == "EgressRefused")
            .map(|c| (c.1, c.2))
    })
    .await;
    assert!(
        message.contains(
            "a loopback address; the cluster admin can allow it with egress.allowedCIDRs"
        ),
        "{message}"
    );
    op.warning_event("EgressRefused").await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", op.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"hookline_egress_refused_total{class="loopback"}"#),
        "{metrics}"
    );
    assert!(
        server.token_requests().is_empty(),
        "the token endpoint was contacted"
    );
    op.stop().await;
}

/// A token endpoint the admin allowed that answers like a metadata service: the status and the
/// Events say what happened, and carry nothing of what it said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_body_of_the_operators_requests_reaches_a_status_or_an_event() {
    let (addr, _) = counting_server(
        "127.0.0.1:0".parse().unwrap(),
        http_answer("403 Forbidden", METADATA),
    )
    .await;
    let op = Operator::start().await;
    op.create_secret("crm-oauth", json!({"clientSecret": "s"}))
        .await;
    let yaml = format!(
        r#"apiVersion: hookline.dev/v1alpha1
kind: WebhookDestination
metadata: {{ name: probe, namespace: {NS} }}
spec:
  endpoint: {{ url: "https://crm.example.com/api/events" }}
  auth:
    type: OAuth2
    oauth2:
      grantType: ClientCredentials
      clientId: c
      clientSecretRef: {{ name: crm-oauth, key: clientSecret }}
      tokenUrl: http://{addr}/latest/meta-data/iam/security-credentials/node-role
"#
    );
    op.create_destination(&yaml).await;
    let (_, message) = eventually("AuthReady=False TokenRequestFailed", || async {
        let d = op.destination("probe").await;
        condition(&d, "AuthReady")
            .filter(|c| c.1 == "TokenRequestFailed")
            .map(|c| (c.1, c.2))
    })
    .await;
    assert!(
        message.contains("answered HTTP 403 with a body that is not an OAuth 2.0 error response"),
        "{message}"
    );
    let status = serde_json::to_string(&op.destination("probe").await.status).unwrap();
    let events = serde_json::to_string(&op.server.objects("events.k8s.io/v1/events")).unwrap();
    for text in [status, events] {
        assert!(
            !text.contains("INTERNAL-ONLY") && !text.contains("node-role-credentials"),
            "{text}"
        );
    }
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_event_leaves_from_the_destinations_worker_never_the_operator() {
    let endpoint = support::Endpoint::start().await;
    let op = Operator::start_over_http().await;
    let yaml = op.bearer_destination_to(&endpoint, "tenant-token").await;

    // No worker pod yet: a plain error, nothing sent.
    let (ok, text) = support::outcome(&op.hookline_test("orders", &[]).await);
    assert!(!ok);
    assert!(
        text.contains("no worker pod of WebhookDestination analytics/orders is ready"),
        "{text}"
    );

    // The worker's own guard refuses private addresses: the test event is refused with the
    // worker's words (its flag), though the operator may reach 127.0.0.1 — so the worker sent it.
    let worker = op
        .worker_pod(
            &yaml,
            json!({"token": "tenant-token"}),
            &["--egress-deny-private"],
        )
        .await;
    let (ok, text) = support::outcome(&op.hookline_test("orders", &[]).await);
    assert!(!ok);
    assert!(
        text.contains("127.0.0.1 is a loopback address, which the egress guard refuses; allow it with --egress-allow CIDR"),
        "{text}"
    );
    assert!(endpoint.received().is_empty());
    drop(worker);
    op.stop().await;
}

#[tokio::test]
async fn an_egress_proxy_resolves_the_target_and_its_own_address_is_vetted() {
    // A proxy on loopback that answers every request itself, keeping the request line.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let lines_tx = lines_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = lines_tx.send(head);
                let _ = socket
                    .write_all(http_answer("200 OK", TOKEN).as_bytes())
                    .await;
            });
        }
    });
    let proxy_url = format!("http://{proxy}");

    // Not allowed by the admin, a proxy on loopback is refused before anything is sent.
    let refused = Egress::new(
        EgressPolicy::operator(Vec::new(), Vec::new()),
        Some(&proxy_url),
    )
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("127.0.0.1 is a loopback address"),
        "{refused}"
    );

    // Allowed, it takes the request for a name nobody here can resolve: the proxy resolves it.
    let lookups = Arc::new(AtomicUsize::new(0));
    let egress = Egress::new(
        EgressPolicy::operator(vec!["127.0.0.1/32".parse().unwrap()], Vec::new()),
        Some(&proxy_url),
    )
    .unwrap()
    .with_lookup(stub(&[&["127.0.0.9"]], lookups.clone()));
    let token = fetch("http://auth.example.test/token", &egress)
        .await
        .unwrap();
    assert_eq!(token.access_token, "a-token");
    assert_eq!(
        lines.recv().await.unwrap(),
        "POST http://auth.example.test/token HTTP/1.1"
    );
    assert_eq!(
        lookups.load(Ordering::SeqCst),
        0,
        "the target was not resolved here"
    );
}

/// A keep-alive server that counts the connections it accepts and answers every request 200.
async fn keep_alive_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = vec![0u8; 65536];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    // One whole request (headers, then content-length bytes) per answer.
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&pending[..end]).to_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse().unwrap())
                            .unwrap_or(0);
                        if pending.len() < end + 4 + length {
                            break;
                        }
                        pending.drain(..end + 4 + length);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn guarded_deliveries_keep_their_connection() {
    let (addr, connections) = keep_alive_server().await;
    // The guard at its strictest, with the endpoint's address allowed: every connection is vetted.
    let egress = Egress::new(
        EgressPolicy::laptop(true, vec!["127.0.0.1/32".parse().unwrap()]),
        None,
    )
    .unwrap();
    let sender =
        hookline::pipeline::deliver::HttpSender::new(1, Duration::from_secs(5), None, &egress)
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = support::manifest(
        dir.path(),
        "d.yaml",
        &support::destination("crm", &format!("http://{addr}/in"), ""),
    );
    let dest = &hookline::cli::load_destinations(&[file]).unwrap()[0];
    for i in 0..20 {
        let request = hookline::pipeline::single::build_request(
            dest,
            &json!({"type": "track", "i": i}),
            None,
        )
        .unwrap();
        assert_eq!(sender.send(&request).await.status, Some(200));
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one connection for every request"
    );
}
