//! A full or failing disk never loses an accepted event: `hookline run` on a real, small tmpfs
//! (mounted by the test; CI runs as root) and on a queue damaged between runs.

mod support;

use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{Endpoint, Hookline, free_port, manifest};

/// A tmpfs of a given size, unmounted when dropped.
struct TmpFs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl TmpFs {
    fn mount(size: &str) -> TmpFs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            &path,
        );
        TmpFs { _dir: dir, path }
    }

    /// Gives the same, mounted filesystem a new size (the running process keeps its files).
    fn resize(&self, size: &str) {
        mount(&["-o", &format!("remount,size={size}")], &self.path);
    }
}

fn mount(args: &[&str], path: &Path) {
    let out = Command::new("mount").args(args).arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "mount {args:?} {} failed (these tests need root, as CI has): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for TmpFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The destination, sending each event's id; it keeps retrying while its endpoint is down.
fn destination_file(dir: &Path, url: &str) -> PathBuf {
    let extra = "  delivery:\n    maxAttempts: 1000\n    maxRetryDurationSeconds: 36000\n  mapping:\n    id: { \"@path\": \"$.messageId\" }\n";
    manifest(dir, "dest.yaml", &support::destination("crm", url, extra))
}

fn down_url() -> String {
    format!("http://127.0.0.1:{}/in", free_port())
}

/// A `/v1/batch` body of `count` events with ids `m-<first>`…, each about 400 bytes.
fn batch(first: usize, count: usize) -> Value {
    let events: Vec<Value> = (first..first + count)
        .map(|n| {
            json!({"type": "track", "userId": "u", "event": "Filled",
                   "messageId": format!("m-{n}"), "properties": {"pad": "x".repeat(300)}})
        })
        .collect();
    json!({ "batch": events })
}

fn ids(first: usize, count: usize) -> impl Iterator<Item = String> {
    (first..first + count).map(|n| format!("m-{n}"))
}

/// Posts one batch; `true` for 200, `false` for 503 (with Retry-After), anything else fails.
async fn post_batch(h: &Hookline, first: usize, count: usize) -> bool {
    let r = h.post("/v1/batch", batch(first, count)).await;
    match r.status().as_u16() {
        200 => true,
        503 => {
            assert!(r.headers().contains_key("retry-after"));
            false
        }
        other => panic!("unexpected answer {other}: {}", r.text().await.unwrap()),
    }
}

/// `hookline run` with its data dir on a new tmpfs of `size`, its endpoint down.
async fn run_on_tmpfs(size: &str) -> (TmpFs, tempfile::TempDir, Hookline) {
    let fs = TmpFs::mount(size);
    let config = tempfile::tempdir().unwrap();
    let file = destination_file(config.path(), &down_url());
    let h = Hookline::start(&[file], &fs.path.join("data")).await;
    (fs, config, h)
}

/// Restarts on a working endpoint: every accepted event arrives, no refused one does.
async fn delivered_after_restart(
    h: &mut Hookline,
    config_dir: &Path,
    accepted: &HashSet<String>,
    refused: &HashSet<String>,
) {
    let endpoint = Endpoint::start().await;
    h.kill9();
    destination_file(config_dir, &format!("{}/in", endpoint.url));
    h.restart().await;
    let got = endpoint
        .wait_for("every accepted event", |got| {
            let ids: HashSet<&str> = got.iter().filter_map(|r| r.body["id"].as_str()).collect();
            accepted.iter().all(|id| ids.contains(id.as_str()))
        })
        .await;
    assert!(
        got.iter()
            .filter_map(|r| r.body["id"].as_str())
            .all(|id| !refused.contains(id)),
        "an event answered 503 was stored after all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_then_more_room_loses_nothing_accepted() {
    let (fs, config, mut h) = run_on_tmpfs("3m").await;

    let (mut accepted, mut refused) = (HashSet::new(), HashSet::new());
    let mut next = 0;
    // Fill the disk: go on until twenty requests in a row were refused.
    let mut refused_in_a_row = 0;
    while refused_in_a_row < 20 {
        assert!(next < 100_000, "the 3 MB disk never filled");
        if post_batch(&h, next, 10).await {
            accepted.extend(ids(next, 10));
            refused_in_a_row = 0;
        } else {
            refused.extend(ids(next, 10));
            refused_in_a_row += 1;
        }
        next += 10;
    }
    let readyz = reqwest::get(format!("{}/readyz", h.base)).await.unwrap();
    assert_eq!(
        readyz.status(),
        503,
        "not ready while nothing can be stored"
    );

    // More room for the same process: it takes everything again, by itself.
    fs.resize("20m");
    let readyz = reqwest::get(format!("{}/readyz", h.base)).await.unwrap();
    assert_eq!(
        readyz.status(),
        200,
        "ready again once the disk takes writes"
    );
    for _ in 0..200 {
        assert!(
            post_batch(&h, next, 10).await,
            "refused after the disk grew"
        );
        accepted.extend(ids(next, 10));
        next += 10;
    }

    delivered_after_restart(&mut h, config.path(), &accepted, &refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_during_a_group_commit_of_concurrent_requests_loses_nothing_accepted() {
    let (fs, config, mut h) = run_on_tmpfs("1m").await;
    let (mut accepted, mut refused) = (HashSet::new(), HashSet::new());
    let mut next = 0;
    while post_batch(&h, next, 10).await {
        accepted.extend(ids(next, 10));
        next += 10;
    }
    refused.extend(ids(next, 10));
    next += 10;
    // Room for a few more records: thirty requests at once, each a whole batch, race for it.
    fs.resize("1200k");
    let answers =
        futures::future::join_all((0..30).map(|i| post_batch(&h, next + i * 10, 10))).await;
    for (i, ok) in answers.into_iter().enumerate() {
        let batch_ids = ids(next + i * 10, 10);
        if ok {
            accepted.extend(batch_ids);
        } else {
            refused.extend(batch_ids);
        }
    }
    assert!(!refused.is_empty(), "the disk never ran out");

    delivered_after_restart(&mut h, config.path(), &accepted, &refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_the_queue_costs_only_its_event() {
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let file = destination_file(config.path(), &down_url());
    let mut h = Hookline::start(&[file], data.path()).await;
    for first in (0..100).step_by(10) {
        assert!(post_batch(&h, first, 10).await);
    }
    h.kill9();
    let segment = data.path().join("queue").join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&segment, bytes).unwrap();

    let endpoint = Endpoint::start().await;
    destination_file(config.path(), &format!("{}/in", endpoint.url));
    h.restart().await;
    let got = endpoint
        .wait_for("99 of the 100 events", |got| {
            got.iter()
                .filter_map(|r| r.body["id"].as_str())
                .collect::<HashSet<_>>()
                .len()
                == 99
        })
        .await;
    assert_eq!(got.len(), 99, "delivered once each");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("hookline_queue_damaged_records_total{destination=\"crm\"} 1"),
        "{metrics}"
    );
}
