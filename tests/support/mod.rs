//! Test helpers: a recording HTTP endpoint on 127.0.0.1 and the real `hookline` binary.
#![allow(dead_code)]

pub mod apiserver;
pub mod nats;
pub mod oauth;
pub mod operator;
pub mod rbac;
pub mod tls;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
    pub raw: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

type Responder = dyn Fn(usize) -> (u16, Vec<(String, String)>) + Send + Sync;

/// An endpoint that records every request and answers as its responder says (by request number).
#[derive(Clone)]
pub struct Endpoint {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    responder: Arc<Mutex<Arc<Responder>>>,
    delay: Arc<Mutex<Duration>>,
}

/// The operator's options for a test: local mode, listening on 127.0.0.1:`port`, reading no
/// worker's status.
pub fn operator_options(port: u16) -> hookline::controller::operator::OperatorOptions {
    hookline::controller::operator::OperatorOptions {
        watch_namespace: None,
        leader_election: None,
        identity: "op-1".into(),
        listen: ([127, 0, 0, 1], port).into(),
        build: hookline::controller::build::BuildOptions {
            default_image: "hookline:test".into(),
            jetstream: None,
            passed_env: Default::default(),
            egress_args: Vec::new(),
        },
        jetstream: None,
        gateway_identity: None,
        worker_status: None,
        egress: loopback_allowed(),
    }
}

/// The operator's egress guard with the admin's exception for 127.0.0.0/8, where the tests'
/// token servers listen.
pub fn loopback_allowed() -> hookline::egress::Egress {
    let policy = hookline::egress::policy::EgressPolicy::operator(
        vec!["127.0.0.0/8".parse().unwrap()],
        Vec::new(),
    );
    hookline::egress::Egress::new(policy, None).expect("no proxy")
}

/// A command's exit status, and what it printed (stdout, then stderr).
pub fn outcome(out: &std::process::Output) -> (bool, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// An endpoint's outage ([`Endpoint::down`]).
#[derive(Clone)]
pub struct Outage(Arc<std::sync::atomic::AtomicBool>);

impl Outage {
    pub fn is_on(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The endpoint answers 200 from now on.
    pub fn end(&self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Endpoint {
    pub async fn start() -> Endpoint {
        let received = Arc::new(Mutex::new(Vec::new()));
        let responder: Arc<Mutex<Arc<Responder>>> =
            Arc::new(Mutex::new(Arc::new(|_| (200, vec![]))));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let (rec, resp, slow) = (received.clone(), responder.clone(), delay.clone());
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (rec, resp, slow) = (rec.clone(), resp.clone(), slow.clone());
                async move {
                    let n = {
                        let mut r = rec.lock().unwrap();
                        r.push(Received {
                            method: method.to_string(),
                            path: uri.path().to_string(),
                            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                            raw: body.to_vec(),
                            headers,
                            at: Instant::now(),
                        });
                        r.len() - 1
                    };
                    let pause = *slow.lock().unwrap();
                    tokio::time::sleep(pause).await;
                    let f = resp.lock().unwrap().clone();
                    let (status, headers) = f(n);
                    let mut builder = axum::http::Response::builder()
                        .status(StatusCode::from_u16(status).unwrap());
                    for (k, v) in headers {
                        builder = builder.header(k, v);
                    }
                    builder
                        .body(axum::body::Body::from("{\"ok\":true}"))
                        .unwrap()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Endpoint {
            url,
            received,
            responder,
            delay,
        }
    }

    /// Makes every answer wait this long (recorded on arrival, answered after).
    pub fn slow_down(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// The endpoint is down, answering `status` to everything, until the outage is ended.
    pub fn down(&self, status: u16) -> Outage {
        let outage = Outage(Arc::new(std::sync::atomic::AtomicBool::new(true)));
        let going_on = outage.clone();
        self.respond(move |_| (if going_on.is_on() { status } else { 200 }, vec![]));
        outage
    }

    pub fn respond(
        &self,
        f: impl Fn(usize) -> (u16, Vec<(String, String)>) + Send + Sync + 'static,
    ) {
        *self.responder.lock().unwrap() = Arc::new(f);
    }

    /// Answers by what each request carries: `f` gets its body, and what came before it.
    pub fn respond_by_body(
        &self,
        f: impl Fn(&serde_json::Value, &[Received]) -> (u16, Vec<(String, String)>)
        + Send
        + Sync
        + 'static,
    ) {
        let received = self.received.clone();
        self.respond(move |n| {
            let all = received.lock().unwrap().clone();
            f(&all[n].body, &all[..n])
        });
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (polling, with a deadline) until `pred` holds for what was received. The deadline
    /// is generous: thousands of events through a debug build on a busy 2-core machine.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; received {} request(s): {:#?}",
                got.len(),
                got.iter().map(|r| &r.body).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `GET url`, its body as JSON.
pub async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// A `/v1/batch` body of track events numbered `from..to`: `properties.n` and `messageId`
/// `m-{n}` say which one each is.
pub fn numbered(from: i64, to: i64) -> serde_json::Value {
    let batch: Vec<serde_json::Value> = (from..to)
        .map(|n| serde_json::json!({"type": "track", "userId": "u", "event": "E", "messageId": format!("m-{n}"), "properties": {"n": n}}))
        .collect();
    serde_json::json!({ "batch": batch })
}

/// `POST url` with no body, its answer as JSON.
pub async fn post_json(url: &str) -> serde_json::Value {
    reqwest::Client::new()
        .post(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hookline"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `hookline run` (or `hookline worker`) process, killed when dropped.
pub struct Hookline {
    pub child: Child,
    pub base: String,
    /// The admin listener's base URL (dead letters), for `run` and `worker`.
    pub admin: Option<String>,
    pub data_dir: PathBuf,
    args: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
}

impl Hookline {
    pub async fn start(files: &[PathBuf], data_dir: &Path) -> Hookline {
        Hookline::start_with(files, data_dir, &[]).await
    }

    /// `hookline run` with one destination, `crm`, sending to `url` (`spec`: more lines under
    /// `spec:`); the temporary directory holds its manifest and data dir.
    pub async fn crm(url: &str, spec: &str) -> (tempfile::TempDir, Hookline) {
        let dir = tempfile::tempdir().unwrap();
        let files = [manifest(
            dir.path(),
            "d.yaml",
            &destination("crm", url, spec),
        )];
        let h = Hookline::start(&files, &dir.path().join("data")).await;
        (dir, h)
    }

    /// `hookline run` with extra flags (`--nats URL`, say).
    pub async fn start_with(files: &[PathBuf], data_dir: &Path, extra: &[&str]) -> Hookline {
        Hookline::start_env(files, data_dir, extra, &[]).await
    }

    /// `hookline run` with extra flags and environment variables.
    pub async fn start_env(
        files: &[PathBuf],
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Hookline {
        let port = free_port();
        let mut args: Vec<std::ffi::OsString> = vec![
            "run".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}").into(),
            "--data-dir".into(),
            data_dir.into(),
        ];
        for f in files {
            args.push("-f".into());
            args.push(f.into());
        }
        args.extend(extra.iter().map(Into::into));
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Hookline::spawn_ready(args, env, port, data_dir).await
    }

    /// Any subcommand serving on `127.0.0.1:port` (`gateway --listen …`, say).
    pub async fn start_args(args: &[&str], port: u16) -> Hookline {
        let args = args.iter().map(Into::into).collect();
        Hookline::spawn_ready(args, Vec::new(), port, Path::new("")).await
    }

    /// Any subcommand serving on `127.0.0.1:port`, with environment variables.
    pub async fn start_args_env(args: &[&str], env: &[(&str, &str)], port: u16) -> Hookline {
        let args = args.iter().map(Into::into).collect();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Hookline::spawn_ready(args, env, port, Path::new("")).await
    }

    /// SIGTERM, as Kubernetes stops a pod; returns at once.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, and waits for a clean exit.
    pub async fn stop(&mut self) {
        self.sigterm();
        assert!(self.wait_exit(Duration::from_secs(10)).await.success());
    }

    /// Waits for the process to exit by itself (after a SIGTERM).
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "hookline did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `hookline worker --config FILE`; the config must listen on `127.0.0.1:port`.
    pub async fn start_worker(config: &Path, port: u16, data_dir: &Path) -> Hookline {
        Hookline::spawn_ready(
            vec!["worker".into(), "--config".into(), config.into()],
            Vec::new(),
            port,
            data_dir,
        )
        .await
    }

    async fn spawn_ready(
        args: Vec<std::ffi::OsString>,
        env: Vec<(String, String)>,
        port: u16,
        data_dir: &Path,
    ) -> Hookline {
        // Tests run side by side: each process gets its own admin port, not the default. A
        // port found free may be taken by another process before this one binds it (an
        // outgoing connection's, from the same range): then it starts again on another.
        let with_admin = args[0] == "run" || args[0] == "worker";
        let mut attempts = 0;
        loop {
            let admin = with_admin.then(|| format!("127.0.0.1:{}", free_port()));
            let mut all = args.clone();
            if let Some(addr) = &admin {
                all.extend(["--admin-listen".into(), addr.into()]);
            }
            let mut h = Hookline {
                child: spawn(&all, &env),
                base: format!("http://127.0.0.1:{port}"),
                admin: admin.map(|addr| format!("http://{addr}")),
                data_dir: data_dir.to_path_buf(),
                args: all,
                env: env.clone(),
            };
            match h.ready_or_exited().await {
                Ok(()) => return h,
                Err(_) if with_admin && attempts < 2 => attempts += 1,
                Err(status) => panic!("hookline {:?} exited early with {status}", args[0]),
            }
        }
    }

    async fn wait_ready(&mut self) {
        if let Err(status) = self.ready_or_exited().await {
            panic!("hookline {:?} exited early with {status}", self.args[0]);
        }
    }

    /// Ready, or the exit status of a process that stopped first.
    async fn ready_or_exited(&mut self) -> Result<(), std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(status);
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "hookline {:?} did not become ready",
                self.args[0]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub async fn restart(&mut self) {
        self.child = spawn(&self.args, &self.env);
        self.wait_ready().await;
    }

    pub async fn metrics(&self) -> String {
        reqwest::Client::new()
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `/metrics` once `holds` is true of it, polled with a deadline: a worker counts an event
    /// once it is done with it, which may be after what a test waited for has happened.
    pub async fn wait_for_metrics(&self, what: &str, holds: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let metrics = self.metrics().await;
            if holds(&metrics) {
                return metrics;
            }
            assert!(Instant::now() < deadline, "{what}: not in\n{metrics}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /status`.
    pub async fn status(&self) -> serde_json::Value {
        reqwest::get(format!("{}/status", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

fn spawn(args: &[std::ffi::OsString], env: &[(String, String)]) -> Child {
    Command::new(bin())
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("HOOKLINE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

impl Drop for Hookline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first destination's condition of type `kind` in a `/status` answer.
pub fn condition<'a>(status: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    status["destinations"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {status}"))
}

/// analytics.js's settings for `key` from the ingestion API at `base`, asked through a proxy
/// that says the page reached `https://events.shop.example`.
pub async fn settings_via_proxy(base: &str, key: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{base}/v1/projects/{key}/settings"))
        .header("x-forwarded-host", "events.shop.example")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `/status` until the destination's `Delivering` condition has `reason`.
pub async fn wait_delivering(h: &Hookline, reason: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = h.status().await;
        let c = condition(&status, "Delivering").clone();
        if c["reason"] == reason {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "Delivering never became {reason}: {c}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes a manifest into `dir` and returns its path.
pub fn manifest(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

/// A WebhookDestination manifest sending to `url`, with extra spec lines (indented two spaces).
pub fn destination(name: &str, url: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: hookline.dev/v1alpha1\nkind: WebhookDestination\nmetadata:\n  name: {name}\nspec:\n  endpoint:\n    url: {url}\n{extra_spec}"
    )
}

pub fn track(user: &str, event: &str, props: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"userId": user, "event": event, "properties": props})
}

/// `hookline dlq list -o json` for a data dir: the dead letters, as an array.
pub fn dead_letters(data_dir: &Path) -> serde_json::Value {
    let out = run_cli(&[
        "dlq",
        "list",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .env("HOOKLINE_LOG", "warn")
        .output()
        .unwrap()
}
