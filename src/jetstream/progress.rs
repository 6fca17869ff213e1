//! How far a destination got through each bundle it holds (API §8: a worker killed mid-bundle
//! must not make the next one deliver again what was delivered). A bundle is acknowledged only
//! once every event in it is done; until then, each delivery that leaves it partly done is
//! recorded — which of its events are done — in the progress bucket, and a redelivered bundle
//! skips them.
//!
//! A record lives in one of [`SLOTS`] keys per destination, chosen by the bundle's sequence
//! and holding that sequence: the bucket keeps one value per key, so it never grows past
//! `SLOTS` records a destination and nothing needs removing. Two bundles held at once in the
//! same slot — thousands of sequences apart — cost the older one its record: after a crash its
//! done events are delivered again, never lost.

use super::names::{DestinationNames, PROGRESS_BUCKET};
use super::{Nats, NatsError};
use crate::metrics::METRICS;
use async_nats::jetstream::kv;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

pub struct Progress {
    bucket: kv::Store,
    consumer: String,
    /// The latest record of each bundle not yet published, for the task that publishes them.
    unsent: Arc<Unsent>,
    /// Counts records the bucket refused.
    failures: prometheus::IntCounter,
}

#[derive(Default)]
struct Unsent {
    records: Mutex<HashMap<u64, Bytes, foldhash::fast::RandomState>>,
    /// Woken when the first record of a round arrives.
    wake: Notify,
    /// When a record was last written and its acknowledgement waited for.
    last_check: Mutex<Option<Instant>>,
}

/// How often one record of a round is written with its acknowledgement awaited: plain
/// publishes say nothing when the bucket refuses them (a NATS server with no memory storage
/// answers "insufficient resources"), and a refusal must show.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Keys a destination's records use at most.
const SLOTS: u64 = 65_536;

/// Bit `i` set: event `i` is done.
pub fn bits(done: impl ExactSizeIterator<Item = bool>) -> Bytes {
    let mut out = vec![0u8; done.len().div_ceil(8)];
    for (i, _) in done.enumerate().filter(|(_, d)| *d) {
        out[i / 8] |= 1 << (i % 8);
    }
    out.into()
}

fn is_set(bits: &[u8], i: usize) -> bool {
    bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

impl Progress {
    /// The destination's records; `None` (with a warning) where the bucket does not exist yet,
    /// an operator of an earlier version having made the streams: a killed worker's bundle is
    /// then delivered again whole.
    pub async fn open(nats: &Nats, names: &DestinationNames) -> Option<Arc<Progress>> {
        let bucket = match nats.context.get_key_value(PROGRESS_BUCKET).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(bucket = PROGRESS_BUCKET, error = %e, "no progress bucket: a bundle a killed worker was part-way through is delivered again whole");
                return None;
            }
        };
        let progress = Arc::new(Progress {
            bucket,
            consumer: names.consumer().to_string(),
            unsent: Arc::default(),
            failures: METRICS
                .progress_write_failures
                .with_label_values(&[&names.name]),
        });
        tokio::spawn(publish(nats.client.clone(), progress.clone()));
        Some(progress)
    }

    /// Records which events of a bundle are done. Made under the lock that decided them, so
    /// a bundle's latest record is its most complete.
    pub fn record(&self, seq: u64, done: Bytes) {
        let first = {
            let mut records = self.unsent.records.lock().expect("progress lock");
            records.insert(seq, done);
            records.len() == 1
        };
        if first {
            self.unsent.wake.notify_one();
        }
    }

    /// Publishes what is not yet, now (the worker is stopping).
    pub async fn flush(&self, client: &async_nats::Client) {
        self.publish_round(client).await;
        let _ = client.flush().await;
    }

    /// Publishes the latest record of every bundle that moved since the last round; once a
    /// [`CHECK_EVERY`], a round's last record is written through the bucket, its
    /// acknowledgement awaited.
    async fn publish_round(&self, client: &async_nats::Client) {
        let latest = std::mem::take(&mut *self.unsent.records.lock().expect("progress lock"));
        let check = {
            let mut last = self.unsent.last_check.lock().expect("progress lock");
            let due = last.is_none_or(|t| t.elapsed() >= CHECK_EVERY);
            if due && !latest.is_empty() {
                *last = Some(Instant::now());
            }
            due
        };
        let count = latest.len();
        for (i, (seq, done)) in latest.into_iter().enumerate() {
            let mut record = seq.to_be_bytes().to_vec();
            record.extend_from_slice(&done);
            let key = key(&self.consumer, seq);
            // The round's last record: the one a full bucket refuses first.
            let written = if check && i + 1 == count {
                self.bucket
                    .put(&key, record.into())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else {
                let subject = format!("$KV.{PROGRESS_BUCKET}.{key}");
                client
                    .publish(subject, record.into())
                    .await
                    .map_err(|e| e.to_string())
            };
            if let Err(e) = written {
                self.failures.inc();
                tracing::warn!(bucket = PROGRESS_BUCKET, destination = %self.consumer, error = %e, "cannot record a bundle's progress: a worker killed now would deliver that bundle's done events again (hookline_progress_write_failures_total)");
            }
        }
    }

    /// Which events of a redelivered bundle were done.
    pub async fn load(&self, seq: u64, events: usize) -> Result<Vec<bool>, NatsError> {
        let entry = self
            .bucket
            .get(key(&self.consumer, seq))
            .await
            .map_err(|e| NatsError::api(format!("bucket {PROGRESS_BUCKET}"), e))?;
        Ok(match entry {
            Some(record) if record.len() >= 8 && record[..8] == seq.to_be_bytes() => {
                (0..events).map(|i| is_set(&record[8..], i)).collect()
            }
            // None, or another bundle's in the same slot.
            _ => vec![false; events],
        })
    }
}

fn key(consumer: &str, seq: u64) -> String {
    format!("{consumer}.{}", seq % SLOTS)
}

/// At most one round of records this often: at full speed a round carries the latest record
/// of every bundle that moved meanwhile, instead of one record per delivery.
const ROUND: Duration = Duration::from_millis(1);

/// Publishes records as plain messages on the bucket's subjects, as a worker's acknowledgements
/// are: not waited for (a round trip per delivery held unbatched delivery to a third of its
/// rate). A record waits at most one [`ROUND`] — none when deliveries are further apart — so a
/// worker killed at full speed delivers again what it finished in its last millisecond, besides
/// what it had in flight.
async fn publish(client: async_nats::Client, progress: Arc<Progress>) {
    let mut last_round = Instant::now() - ROUND;
    loop {
        progress.unsent.wake.notified().await;
        let gather = (last_round + ROUND).saturating_duration_since(Instant::now());
        if !gather.is_zero() {
            tokio::time::sleep(gather).await;
        }
        last_round = Instant::now();
        progress.publish_round(&client).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_bits_round_trip() {
        let done = [
            true, false, false, true, false, false, false, false, true, true,
        ];
        let b = bits(done.iter().copied());
        assert_eq!(b.len(), 2);
        let back: Vec<bool> = (0..done.len()).map(|i| is_set(&b, i)).collect();
        assert_eq!(back, done);
    }
}
