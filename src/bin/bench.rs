//! `hookline-bench`: throughput, added latency and memory of `hookline run`, side by side with
//! what a bare load generator gets from the same endpoint, in one run. `scripts/bench.sh`
//! installs `wrk` (Debian), builds the release binaries and runs it.
//!
//! 1. `wrk` (1 thread, 32 connections) posts a one-event body to the bench's endpoint: the bare
//!    request rate.
//! 2. Per scenario, `hookline run` delivers to that endpoint while `wrk` (4 connections) feeds it
//!    through `/v1/batch` (100 events a request, write key) at full speed: events/s ingested
//!    (wrk's count) and delivered (the endpoint's count, after a warm-up second).
//! 3. Unbatched, at half the rate measured in 2: added latency, from each request's `200` to the
//!    endpoint receiving its events.
//! 4. The same feeding against JetStream mode: `nats-server`, `hookline gateway`, one or two
//!    `hookline run --nats` delivering.

use axum::body::Bytes;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EVENTS_PER_REQUEST: usize = 100;
const INGEST_CONNECTIONS: usize = 4;
const BARE_CONNECTIONS: usize = 32;
const WRITE_KEY: &str = "bench-key";

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// Counts delivered payloads; while `timing`, also when each request number (`req`) arrived.
#[derive(Default)]
struct Sink {
    delivered: AtomicU64,
    timing: AtomicBool,
    arrivals: Mutex<Vec<(u64, u64)>>,
}

impl Sink {
    fn record(&self, body: &[u8]) {
        if !self.timing.load(Ordering::Relaxed) {
            // Each mapped payload has exactly one `"user":`; counting them keeps the endpoint
            // as cheap for hookline as for the bare load generator.
            let n = body.windows(7).filter(|w| w == b"\"user\":").count();
            self.delivered.fetch_add(n as u64, Ordering::Relaxed);
            return;
        }
        // Scanned, not parsed, for the same reason: the latency measured is Hookline's.
        let now = now_micros();
        const KEY: &[u8] = b"\"req\":";
        let reqs = body
            .windows(KEY.len())
            .enumerate()
            .filter(|(_, w)| *w == KEY);
        let mut arrivals = self.arrivals.lock().expect("sink lock");
        let before = arrivals.len();
        for (at, _) in reqs {
            let digits = &body[at + KEY.len()..];
            let end = digits
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(digits.len());
            if let Some(req) = std::str::from_utf8(&digits[..end])
                .ok()
                .and_then(|d| d.parse().ok())
            {
                arrivals.push((req, now));
            }
        }
        let n = arrivals.len() - before;
        self.delivered.fetch_add(n as u64, Ordering::Relaxed);
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

fn sample_event(i: usize, req: u64) -> Value {
    json!({"type": "track", "userId": format!("user-{i}"), "event": "Order Completed",
           "properties": {"order_id": format!("o-{req}-{i}"), "total": 10.5, "req": req}})
}

/// A `wrk` run: requests/s, or why it failed.
fn wrk(url: &str, connections: usize, seconds: u64, body: &str, dir: &Path) -> f64 {
    let script = dir.join(format!("post-{}.lua", now_micros()));
    let auth = base64_basic(WRITE_KEY);
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = {body:?}\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Basic {auth}\"\n"
        ),
    )
    .expect("write wrk script");
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .expect("wrk runs (scripts/bench.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("Non-2xx"),
        "wrk got errors from {url}:\n{text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate in wrk's output:\n{text}"))
}

fn base64_basic(user: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:"))
}

fn hookline_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.with_file_name("hookline");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build --release`",
        bin.display()
    );
    bin
}

/// CPU seconds (user, system) a process has used so far.
fn cpu_seconds(pid: u32) -> (f64, f64) {
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
            / 100.0
    };
    (ticks(11), ticks(12))
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Where the queue is: `hookline run`'s data dir, or a shared JetStream with a gateway in front
/// and `workers` `hookline run --nats` processes delivering.
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

async fn wait_ready(base: &str) {
    let client = reqwest::Client::new();
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

/// The processes of one scenario, stopped (and measured) when dropped.
struct Processes {
    ingest: String,
    children: Vec<(&'static str, Child)>,
    _dir: tempfile::TempDir,
}

/// What the processes of a scenario used, per role.
struct Usage {
    rss_mb: Vec<(&'static str, f64)>,
    cpu: Vec<(&'static str, f64, f64)>,
}

impl Processes {
    async fn start(mode: Mode<'_>, endpoint: &str, batch_size: usize, concurrency: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let manifest = dir.path().join("bench.yaml");
        // A fresh name per scenario: a JetStream consumer starts with the events sent from now
        // on, and those of earlier scenarios (their workers gone) hold on to nothing.
        let name = format!("bench-{}", now_micros());
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: hookline.dev/v1alpha1\nkind: WebhookDestination\nmetadata: {{name: {name}}}\nspec:\n  endpoint: {{url: '{endpoint}'}}\n  subscription: 'type = \"track\"'\n  mapping:\n    user: {{\"@path\": \"$.userId\"}}\n    event: {{\"@path\": \"$.event\"}}\n    order_id: {{\"@path\": \"$.properties.order_id\"}}\n    total: {{\"@path\": \"$.properties.total\"}}\n    req: {{\"@path\": \"$.properties.req\"}}\n  batching: {{size: {batch_size}, maxWaitMillis: 50}}\n  delivery: {{concurrency: {concurrency}}}\n  source:\n    writeKeySecretRef: {{name: {name}-key, key: key}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-key}}\nstringData: {{key: {WRITE_KEY}}}\n"
            ),
        )
        .expect("write manifest");
        let run = |data: &str, nats: Option<&str>| {
            let port = free_port();
            let mut extra: Vec<std::ffi::OsString> = vec![
                "--data-dir".into(),
                dir.path().join(data).into(),
                "-f".into(),
                manifest.clone().into(),
            ];
            if let Some(url) = nats {
                extra.extend(["--nats".into(), url.into()]);
            }
            let admin = format!("127.0.0.1:{}", free_port());
            let child = spawn(
                &[
                    "run",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--admin-listen",
                    &admin,
                ],
                &extra,
            );
            (format!("http://127.0.0.1:{port}"), child)
        };
        let (ingest, children) = match mode {
            Mode::Local => {
                let (base, child) = run("local", None);
                wait_ready(&base).await;
                (base, vec![("run", child)])
            }
            Mode::JetStream { nats, workers } => {
                let mut children = Vec::new();
                for i in 0..workers {
                    let (base, child) = run(&format!("worker-{i}"), Some(nats));
                    wait_ready(&base).await;
                    children.push(("worker", child));
                }
                let listen = format!("127.0.0.1:{}", free_port());
                let gateway = spawn(&["gateway", "--listen", &listen, "--nats", nats], &[]);
                let base = format!("http://{listen}");
                wait_ready(&base).await;
                children.push(("gateway", gateway));
                (base, children)
            }
        };
        Processes {
            ingest,
            children,
            _dir: dir,
        }
    }

    fn stop(mut self) -> Usage {
        let mut usage = Usage {
            rss_mb: Vec::new(),
            cpu: Vec::new(),
        };
        for (role, child) in &mut self.children {
            let rss = peak_rss_mb(child.id());
            match usage.rss_mb.iter_mut().find(|(r, _)| r == role) {
                Some((_, max)) => *max = max.max(rss),
                None => usage.rss_mb.push((role, rss)),
            }
            let (user, sys) = cpu_seconds(child.id());
            match usage.cpu.iter_mut().find(|(r, ..)| r == role) {
                Some((_, u, s)) => {
                    *u += user;
                    *s += sys;
                }
                None => usage.cpu.push((role, user, sys)),
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        usage
    }
}

/// One scenario at full speed: events/s ingested (wrk) and delivered (the endpoint) meanwhile,
/// and delivered afterwards from the backlog with nothing else running, when one was left.
struct Throughput {
    ingested: f64,
    delivered: f64,
    drained: Option<f64>,
    usage: Usage,
    /// Events the endpoint received over the whole scenario, and the ingested ones.
    delivered_total: u64,
    ingested_total: f64,
}

/// Events/s the endpoint receives over `seconds`.
async fn delivery_rate(sink: &Sink, seconds: f64) -> f64 {
    let (from, started) = (sink.delivered.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    (sink.delivered.load(Ordering::Relaxed) - from) as f64 / started.elapsed().as_secs_f64()
}

async fn full_speed(
    sink: &Arc<Sink>,
    endpoint: &str,
    mode: Mode<'_>,
    nats_pids: &[u32],
    batch_size: usize,
    concurrency: usize,
    seconds: u64,
) -> Throughput {
    let processes = Processes::start(mode, endpoint, batch_size, concurrency).await;
    let nats_cpu = || {
        nats_pids
            .iter()
            .map(|pid| cpu_seconds(*pid))
            .fold((0.0, 0.0), |(u, s), (pu, ps)| (u + pu, s + ps))
    };
    let nats_before = nats_cpu();
    let delivered_before = sink.delivered.load(Ordering::Relaxed);
    let batch: Vec<Value> = (0..EVENTS_PER_REQUEST)
        .map(|i| sample_event(i, 0))
        .collect();
    let body = json!({ "batch": batch }).to_string();
    let url = format!("{}/v1/batch", processes.ingest);
    let dir = processes._dir.path().to_path_buf();
    let feeding =
        tokio::task::spawn_blocking(move || wrk(&url, INGEST_CONNECTIONS, seconds, &body, &dir));
    // Delivery is counted after a warm-up second, over the rest of wrk's run.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered = delivery_rate(sink, (seconds - 1) as f64).await;
    let requests_per_s = feeding.await.expect("wrk task");
    let ingested = requests_per_s * EVENTS_PER_REQUEST as f64;
    // A backlog of more than a few seconds' worth is left when ingestion outran delivery.
    let drained = if ingested > 1.5 * delivered {
        Some(delivery_rate(sink, 3.0).await)
    } else {
        None
    };
    let mut usage = processes.stop();
    if !nats_pids.is_empty() {
        let ((u0, s0), (u1, s1)) = (nats_before, nats_cpu());
        usage.cpu.push(("nats-server", u1 - u0, s1 - s0));
    }
    Throughput {
        ingested,
        delivered,
        drained,
        usage,
        delivered_total: sink.delivered.load(Ordering::Relaxed) - delivered_before,
        ingested_total: ingested * seconds as f64,
    }
}

/// Unbatched delivery fed at `rate` events/s (requests of 10 events): percentiles of the time
/// from each request's `200` to the endpoint receiving its events, in ms.
async fn added_latency(
    sink: &Arc<Sink>,
    endpoint: &str,
    rate: f64,
    seconds: u64,
) -> (f64, f64, f64) {
    const PER_REQUEST: u64 = 10;
    let processes = Processes::start(Mode::Local, endpoint, 1, 32).await;
    sink.arrivals.lock().expect("sink lock").clear();
    sink.timing.store(true, Ordering::Relaxed);
    let client = reqwest::Client::new();
    let answered: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let requests = (rate * seconds as f64 / PER_REQUEST as f64) as u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(PER_REQUEST as f64 / rate));
    let mut sent = Vec::new();
    for req in 0..requests {
        tick.tick().await;
        let batch: Vec<Value> = (0..PER_REQUEST as usize)
            .map(|i| sample_event(i, req))
            .collect();
        let request = client
            .post(format!("{}/v1/batch", processes.ingest))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&json!({ "batch": batch }));
        let answered = answered.clone();
        sent.push(tokio::spawn(async move {
            let resp = request.send().await.expect("ingest request");
            assert!(
                resp.status().is_success(),
                "ingest answered {}",
                resp.status()
            );
            answered.lock().expect("answers").push((req, now_micros()));
        }));
    }
    for s in sent {
        s.await.expect("sender");
    }
    let expected = (requests * PER_REQUEST) as usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink.arrivals.lock().expect("sink lock").len() < expected {
        assert!(Instant::now() < deadline, "not every event arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sink.timing.store(false, Ordering::Relaxed);
    processes.stop();
    let answered: std::collections::HashMap<u64, u64> =
        answered.lock().expect("answers").iter().copied().collect();
    let mut added: Vec<u64> = sink
        .arrivals
        .lock()
        .expect("sink lock")
        .iter()
        .map(|(req, at)| at.saturating_sub(answered[req]))
        .collect();
    added.sort_unstable();
    let pct =
        |p: f64| added[((added.len() as f64 * p) as usize).min(added.len() - 1)] as f64 / 1000.0;
    (pct(0.5), pct(0.99), pct(0.999))
}

/// A nats-server with JetStream for the JetStream scenarios: the one `scripts/tools.sh`
/// installs, or `HOOKLINE_NATS_SERVER`. `None` when there is none.
fn start_nats(dir: &Path) -> Option<(Child, String)> {
    let port = free_port();
    let child = nats_server(
        &["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"],
        dir,
    )?;
    Some((child, format!("nats://127.0.0.1:{port}")))
}

fn nats_server(args: &[&str], dir: &Path) -> Option<Child> {
    let binary = std::env::var("HOOKLINE_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("target/tools/venv/bin/nats-server"));
    if !binary.exists() {
        return None;
    }
    Command::new(binary)
        .args(args)
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// Three nats-servers routed on loopback: the streams get three replicas (R3).
fn start_nats_cluster(dir: &Path) -> Option<(Vec<Child>, String)> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, c)| format!("nats://127.0.0.1:{c}"))
        .collect();
    let mut servers = Vec::new();
    for (i, (client, cluster)) in ports.iter().enumerate() {
        let store = dir.join(format!("n{i}"));
        let (client, name, cluster) = (
            client.to_string(),
            format!("n{i}"),
            format!("nats://127.0.0.1:{cluster}"),
        );
        let routes = routes.join(",");
        let args = [
            "-a",
            "127.0.0.1",
            "-p",
            &client,
            "--server_name",
            &name,
            "--cluster_name",
            "bench",
            "--cluster",
            &cluster,
            "--routes",
            &routes,
            "-js",
            "-sd",
        ];
        servers.push(nats_server(&args, &store)?);
    }
    let url = ports
        .iter()
        .map(|(c, _)| format!("nats://127.0.0.1:{c}"))
        .collect::<Vec<_>>()
        .join(",");
    Some((servers, url))
}

fn print_throughput(name: &str, t: &Throughput, bare: f64) {
    let rss: Vec<String> = t
        .usage
        .rss_mb
        .iter()
        .map(|(role, mb)| format!("{role} {mb:.0} MB"))
        .collect();
    println!(
        "{name:<42} {:>10.0} {:>11.0} {:>6.0}%  {}",
        t.ingested,
        t.delivered,
        100.0 * t.delivered / bare,
        rss.join(", ")
    );
    let cpu: Vec<String> = t
        .usage
        .cpu
        .iter()
        .map(|(role, user, sys)| format!("{role} {user:.1} user + {sys:.1} sys"))
        .collect();
    println!("    CPU s: {}", cpu.join(", "));
    // Ingesting roles per event accepted, delivering ones per event delivered.
    let per_event: Vec<String> = t
        .usage
        .cpu
        .iter()
        .map(|(role, user, sys)| {
            let events = match *role {
                "gateway" | "nats-server" => t.ingested_total,
                _ => t.delivered_total as f64,
            };
            format!("{role} {:.1}", (user + sys) * 1e6 / events.max(1.0))
        })
        .collect();
    println!("    CPU µs per event: {}", per_event.join(", "));
    if let Some(drained) = t.drained {
        println!(
            "    then draining the backlog alone: {drained:.0} delivered/s ({:.0}% of bare)",
            100.0 * drained / bare
        );
    }
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(6)
        .max(2);
    // Only the scenarios whose name holds this text (to profile one with `perf record -a`).
    let only = std::env::args().nth(2);
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let sink = Arc::new(Sink::default());
        let endpoint = start_endpoint(sink.clone()).await;
        let scratch = tempfile::tempdir().expect("temp dir");
        let one = json!({"user": "u", "event": "Order Completed", "order_id": "o-1", "total": 10.5, "req": 0}).to_string();
        let bare = wrk(&endpoint, BARE_CONNECTIONS, seconds, &one, scratch.path());
        println!(
            "hookline-bench: {seconds} s per scenario, {} cores; feeding: wrk, {INGEST_CONNECTIONS} connections, /v1/batch with {EVENTS_PER_REQUEST} events a request",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!("bare wrk -> endpoint (1 thread, {BARE_CONNECTIONS} connections): {bare:.0} requests/s");
        println!("{:<42} {:>10} {:>11} {:>7}  peak RSS", "scenario (fed at full speed)", "ingested/s", "delivered/s", "of bare");
        let mut unbatched_max: f64 = 0.0;
        let mut local_batched = None;
        for (batch, concurrency) in [(1, 8), (1, 32), (100, 4)] {
            let name = format!("local: batch {batch}, concurrency {concurrency}");
            if !wanted(&name) {
                continue;
            }
            let t = full_speed(&sink, &endpoint, Mode::Local, &[], batch, concurrency, seconds).await;
            print_throughput(&name, &t, bare);
            if batch == 1 {
                unbatched_max = unbatched_max.max(t.delivered);
            } else {
                local_batched = Some(t.delivered);
            }
        }
        let half = unbatched_max / 2.0;
        if half > 0.0 && wanted("added latency") {
            let (p50, p99, p999) = added_latency(&sink, &endpoint, half, seconds).await;
            println!("added latency, batch 1, concurrency 32, fed at {half:.0} events/s (half the best unbatched rate): p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms");
        }

        let store = tempfile::tempdir().expect("temp dir");
        let Some((mut nats, url)) = start_nats(store.path()) else {
            println!("JetStream scenarios skipped: no nats-server (run scripts/tools.sh, or set HOOKLINE_NATS_SERVER)");
            return;
        };
        for (workers, batch, concurrency) in [(1, 100, 4), (2, 100, 4), (1, 1, 8), (2, 1, 8)] {
            let name = format!("jetstream: {workers} worker(s), batch {batch}, conc. {concurrency}");
            if !wanted(&name) {
                continue;
            }
            let mode = Mode::JetStream { nats: &url, workers };
            let t = full_speed(&sink, &endpoint, mode, &[nats.id()], batch, concurrency, seconds).await;
            print_throughput(&name, &t, bare);
            if let (100, Some(local)) = (batch, local_batched) {
                println!("    batched delivery / local mode's: {:.0}%", 100.0 * t.delivered / local);
            }
        }
        let _ = nats.kill();
        let _ = nats.wait();

        let cluster_store = tempfile::tempdir().expect("temp dir");
        let Some((mut servers, url)) = start_nats_cluster(cluster_store.path()) else {
            return;
        };
        // Routed and a JetStream leader elected before the first scenario makes the streams.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let pids: Vec<u32> = servers.iter().map(Child::id).collect();
        for (batch, concurrency) in [(100, 4), (1, 8)] {
            let name = format!("3 servers, R3: 1 worker, batch {batch}, c. {concurrency}");
            if !wanted(&name) {
                continue;
            }
            let mode = Mode::JetStream { nats: &url, workers: 1 };
            let t = full_speed(&sink, &endpoint, mode, &pids, batch, concurrency, seconds).await;
            print_throughput(&name, &t, bare);
        }
        for s in &mut servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    });
}
