//! `hookline-bench`: throughput, end-to-end latency and memory of `hookline run`, measured
//! against a local endpoint, beside the request rate a bare load generator gets from that same
//! endpoint. Build with `cargo build --release`, then run `target/release/hookline-bench`.

use axum::body::Bytes;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EVENTS_PER_REQUEST: usize = 100;
const INGEST_CONNECTIONS: usize = 4;

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// Counts delivered payloads and their end-to-end latency (each carries the time it was sent).
#[derive(Default)]
struct Sink {
    delivered: AtomicU64,
    requests: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

impl Sink {
    fn record(&self, body: &[u8]) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let now = now_micros();
        let payloads = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) => items,
            Ok(one) => vec![one],
            Err(_) => return,
        };
        let mut lat = self.latencies_us.lock().expect("sink lock");
        for p in &payloads {
            if let Some(sent) = p["sent"].as_u64() {
                lat.push(now.saturating_sub(sent));
            }
        }
        self.delivered
            .fetch_add(payloads.len() as u64, Ordering::Relaxed);
    }

    fn reset(&self) {
        self.delivered.store(0, Ordering::Relaxed);
        self.requests.store(0, Ordering::Relaxed);
        self.latencies_us.lock().expect("sink lock").clear();
    }
}

async fn start_endpoint(sink: Arc<Sink>) -> String {
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let sink = sink.clone();
        async move {
            sink.record(&body);
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind endpoint");
    let url = format!(
        "http://{}/events",
        listener.local_addr().expect("local addr")
    );
    tokio::spawn(async move { axum::serve(listener, app).await.expect("endpoint serves") });
    url
}

/// The request rate the endpoint sustains from a plain keep-alive client with `concurrency`
/// requests in flight, each a one-event body like hookline's unbatched requests.
async fn bare_rate(url: &str, concurrency: usize, duration: Duration) -> f64 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let body = json!({"user": "u", "event": "Order Completed", "order_id": "o-1", "total": 10.5, "sent": 0}).to_string();
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, body, count) =
                (client.clone(), url.to_string(), body.clone(), count.clone());
            tokio::spawn(async move {
                while started.elapsed() < duration {
                    if client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .is_ok()
                    {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn hookline_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.with_file_name("hookline");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build --release`",
        bin.display()
    );
    bin
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mb(child: &Child) -> f64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

struct Run {
    ingested_per_s: f64,
    delivered_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Peak RSS per process role ("run", "gateway", "worker").
    rss_mb: Vec<(&'static str, f64)>,
    /// CPU seconds per role, summed over its processes, and of nats-server.
    cpu_s: Vec<(&'static str, f64)>,
}

/// Where the queue is: each `hookline run`'s data dir, or a shared JetStream with a gateway in
/// front and `workers` `hookline run --nats` processes delivering.
#[derive(Clone, Copy)]
enum Mode<'a> {
    Local,
    JetStream { nats: &'a str, workers: usize },
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn spawn(args: &[&str], extra: &[std::ffi::OsString]) -> Child {
    Command::new(hookline_binary())
        .args(args)
        .args(extra)
        .env("HOOKLINE_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start hookline")
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let ready_by = Instant::now() + Duration::from_secs(30);
    while !client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < ready_by, "{base} did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the processes of `mode`; where to ingest, and every process with its role.
async fn start(
    mode: Mode<'_>,
    dir: &std::path::Path,
    manifest: &std::path::Path,
    client: &reqwest::Client,
) -> (String, Vec<(&'static str, Child)>) {
    let run = |name: &str, nats: Option<&str>| {
        let port = free_port();
        let mut extra: Vec<std::ffi::OsString> = vec![
            "--data-dir".into(),
            dir.join(name).into(),
            "-f".into(),
            manifest.into(),
        ];
        if let Some(url) = nats {
            extra.extend(["--nats".into(), url.into()]);
        }
        let child = spawn(&["run", "--listen", &format!("127.0.0.1:{port}")], &extra);
        (format!("http://127.0.0.1:{port}"), child)
    };
    match mode {
        Mode::Local => {
            let (base, child) = run("local", None);
            wait_ready(client, &base).await;
            (base, vec![("run", child)])
        }
        Mode::JetStream { nats, workers } => {
            let mut processes = Vec::new();
            for i in 0..workers {
                let (base, child) = run(&format!("worker-{i}"), Some(nats));
                wait_ready(client, &base).await;
                processes.push(("worker", child));
            }
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let gateway = spawn(&["gateway", "--listen", &listen, "--nats", nats], &[]);
            let base = format!("http://{listen}");
            wait_ready(client, &base).await;
            processes.push(("gateway", gateway));
            (base, processes)
        }
    }
}

async fn run_scenario(
    endpoint: &str,
    sink: &Arc<Sink>,
    nats_pid: Option<u32>,
    mode: Mode<'_>,
    batch_size: usize,
    concurrency: usize,
    total: usize,
) -> Run {
    sink.reset();
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("bench.yaml");
    // A fresh name and write key per scenario: a JetStream consumer starts with the events sent
    // from now on, and the consumers of earlier scenarios (their workers gone) do not hold on to
    // this one's events.
    let name = format!("bench-{}", now_micros());
    let write_key = format!("key-{name}");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: hookline.dev/v1alpha1\nkind: WebhookDestination\nmetadata: {{name: {name}}}\nspec:\n  endpoint: {{url: '{endpoint}'}}\n  subscription: 'type = \"track\"'\n  mapping:\n    user: {{\"@path\": \"$.userId\"}}\n    event: {{\"@path\": \"$.event\"}}\n    order_id: {{\"@path\": \"$.properties.order_id\"}}\n    total: {{\"@path\": \"$.properties.total\"}}\n    sent: {{\"@path\": \"$.properties.sent\"}}\n  batching: {{size: {batch_size}, maxWaitMillis: 50}}\n  delivery: {{concurrency: {concurrency}}}\n  source:\n    writeKeySecretRef: {{name: bench-key, key: key}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: bench-key}}\nstringData: {{key: {write_key}}}\n"
        ),
    )
    .expect("write manifest");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(INGEST_CONNECTIONS)
        .build()
        .expect("client");
    let (base, mut processes) = start(mode, dir.path(), &manifest, &client).await;

    let requests = total / EVENTS_PER_REQUEST;
    let next = Arc::new(AtomicU64::new(0));
    let nats_cpu_before = nats_pid.map(cpu_seconds);
    let started = Instant::now();
    let senders: Vec<_> = (0..INGEST_CONNECTIONS)
        .map(|_| {
            let (client, base, next, key) = (client.clone(), base.clone(), next.clone(), write_key.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if n >= requests {
                        return;
                    }
                    let sent = now_micros();
                    let batch: Vec<Value> = (0..EVENTS_PER_REQUEST)
                        .map(|i| json!({"type": "track", "userId": format!("user-{i}"), "event": "Order Completed", "properties": {"order_id": format!("o-{n}-{i}"), "total": 10.5, "sent": sent}}))
                        .collect();
                    let resp = client.post(format!("{base}/v1/batch")).basic_auth(&key, Some("")).json(&json!({"batch": batch})).send().await.expect("ingest request");
                    assert!(resp.status().is_success(), "ingest answered {}", resp.status());
                }
            })
        })
        .collect();
    for s in senders {
        s.await.expect("sender task");
    }
    let ingest_time = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    while sink.delivered.load(Ordering::Relaxed) < total as u64 {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} delivered",
            sink.delivered.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let deliver_time = started.elapsed();
    let mut rss_mb: Vec<(&'static str, f64)> = Vec::new();
    let mut cpu_s: Vec<(&'static str, f64)> = Vec::new();
    for (role, child) in &mut processes {
        let rss = peak_rss_mb(child);
        match rss_mb.iter_mut().find(|(r, _)| r == role) {
            Some((_, max)) => *max = max.max(rss),
            None => rss_mb.push((role, rss)),
        }
        let cpu = cpu_seconds(child.id());
        match cpu_s.iter_mut().find(|(r, _)| r == role) {
            Some((_, sum)) => *sum += cpu,
            None => cpu_s.push((role, cpu)),
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    if let (Some(pid), Some(before)) = (nats_pid, nats_cpu_before) {
        cpu_s.push(("nats-server", cpu_seconds(pid) - before));
    }

    let mut lat = sink.latencies_us.lock().expect("sink lock").clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(f64::NAN, |us| *us as f64 / 1000.0)
    };
    Run {
        ingested_per_s: total as f64 / ingest_time.as_secs_f64(),
        delivered_per_s: total as f64 / deliver_time.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        rss_mb,
        cpu_s,
    }
}

/// A nats-server with JetStream for the JetStream scenarios: the one `scripts/tools.sh`
/// installs, or `HOOKLINE_NATS_SERVER`. `None` when there is none.
fn start_nats(dir: &std::path::Path) -> Option<(Child, String)> {
    let binary = std::env::var("HOOKLINE_NATS_SERVER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from("target/tools/venv/bin/nats-server"));
    if !binary.exists() {
        return None;
    }
    let port = free_port();
    let child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some((child, format!("nats://127.0.0.1:{port}")))
}

fn print_run(name: &str, r: &Run) {
    let rss: Vec<String> = r
        .rss_mb
        .iter()
        .map(|(role, mb)| format!("{role} {mb:.0}MB"))
        .collect();
    println!(
        "{name:<44} {:>11.0} {:>12.0} {:>8.1} {:>8.1}  {}",
        r.ingested_per_s,
        r.delivered_per_s,
        r.p50_ms,
        r.p99_ms,
        rss.join(", ")
    );
    let cpu: Vec<String> = r
        .cpu_s
        .iter()
        .map(|(role, s)| format!("{role} {s:.1}s"))
        .collect();
    println!("  CPU: {}", cpu.join(", "));
}

fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let sink = Arc::new(Sink::default());
        let endpoint = start_endpoint(sink.clone()).await;
        let unbatched_concurrency = 8;
        let bare = bare_rate(&endpoint, unbatched_concurrency, Duration::from_secs(3)).await;
        println!("hookline-bench: {total} events per scenario, ingested through /v1/batch ({EVENTS_PER_REQUEST} events a request, {INGEST_CONNECTIONS} connections), {} cores", std::thread::available_parallelism().map_or(0, |n| n.get()));
        println!("bare load generator -> endpoint: {bare:.0} requests/s ({unbatched_concurrency} in flight)");
        println!("{:<44} {:>11} {:>12} {:>8} {:>8}  peak RSS", "scenario", "ingested/s", "delivered/s", "p50 ms", "p99 ms");
        let mut local_batched = None;
        for (name, batch, concurrency) in [("local: batch size 1, concurrency 8", 1, unbatched_concurrency), ("local: batch size 1, concurrency 32", 1, 32), ("local: batch size 100, concurrency 4", 100, 4)] {
            let r = run_scenario(&endpoint, &sink, None, Mode::Local, batch, concurrency, total).await;
            print_run(name, &r);
            if batch == 1 {
                println!("  unbatched delivery / bare request rate: {:.0}%", 100.0 * r.delivered_per_s / bare);
            } else {
                local_batched = Some(r.delivered_per_s);
            }
        }
        let store = tempfile::tempdir().expect("temp dir");
        let Some((mut nats, url)) = start_nats(store.path()) else {
            println!("JetStream scenarios skipped: no nats-server (run scripts/tools.sh, or set HOOKLINE_NATS_SERVER)");
            return;
        };
        for (workers, batch, concurrency) in [(1, 100, 4), (2, 100, 4), (1, 1, 8), (2, 1, 8)] {
            let mode = Mode::JetStream { nats: &url, workers };
            let r = run_scenario(&endpoint, &sink, Some(nats.id()), mode, batch, concurrency, total).await;
            let name = format!("jetstream: {workers} worker(s), batch {batch}, conc. {concurrency}");
            print_run(&name, &r);
            if let (100, Some(local)) = (batch, local_batched) {
                println!("  batched delivery / local mode's: {:.0}%", 100.0 * r.delivered_per_s / local);
            }
        }
        let _ = nats.kill();
        let _ = nats.wait();
    });
}
