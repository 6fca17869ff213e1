//! How far a destination got through each bundle it holds (API §8: a worker killed mid-bundle
//! must not make the next one deliver again what was delivered). A bundle is acknowledged only
//! once every event in it is done; until then, each delivery that leaves it partly done is
//! recorded — which of its events are done — in the progress bucket before the worker moves
//! on, and a redelivered bundle skips them. Records are written together (one round of puts
//! for every bundle that changed meanwhile).
//!
//! A record lives in one of [`SLOTS`] keys per destination, chosen by the bundle's sequence
//! and holding that sequence: the bucket keeps one value per key, so it never grows past
//! `SLOTS` records a destination and nothing needs removing. Two bundles held at once in the
//! same slot — thousands of sequences apart — cost the older one its record: after a crash its
//! done events are delivered again, never lost.

use super::names::{DestinationNames, PROGRESS_BUCKET};
use super::{Nats, NatsError};
use async_nats::jetstream::kv;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, watch};

pub struct Progress {
    bucket: kv::Store,
    consumer: String,
    pending: Mutex<Pending>,
    wake: Notify,
    /// The last round written.
    written: watch::Sender<u64>,
}

/// Keys a destination's records use at most.
pub const SLOTS: u64 = 65_536;

#[derive(Default)]
struct Pending {
    round: u64,
    /// By the bundle's stream sequence: its done bits.
    changes: HashMap<u64, Bytes>,
}

/// Bit `i` set: event `i` is done.
pub fn bits(done: &[bool]) -> Bytes {
    let mut out = vec![0u8; done.len().div_ceil(8)];
    for (i, _) in done.iter().enumerate().filter(|(_, d)| **d) {
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
            pending: Mutex::default(),
            wake: Notify::new(),
            written: watch::channel(0).0,
        });
        tokio::spawn(progress.clone().write_rounds());
        Some(progress)
    }

    fn key(&self, seq: u64) -> String {
        format!("{}.{}", self.consumer, seq % SLOTS)
    }

    /// Records which events of these bundles are done; returns once it is stored.
    pub async fn record(&self, bundles: Vec<(u64, Bytes)>) {
        let round = {
            let mut pending = self.pending.lock().expect("progress lock");
            pending.changes.extend(bundles);
            pending.round + 1
        };
        self.wake.notify_one();
        let mut written = self.written.subscribe();
        let _ = written.wait_for(|w| *w >= round).await;
    }

    /// Which events of a redelivered bundle were done.
    pub async fn load(&self, seq: u64, events: usize) -> Result<Vec<bool>, NatsError> {
        let entry = self
            .bucket
            .get(self.key(seq))
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

    async fn write_rounds(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            let (round, changes) = {
                let mut pending = self.pending.lock().expect("progress lock");
                pending.round += 1;
                (pending.round, std::mem::take(&mut pending.changes))
            };
            let bucket = &self.bucket;
            let writes = changes.into_iter().map(|(seq, bits)| {
                let key = self.key(seq);
                let mut record = seq.to_be_bytes().to_vec();
                record.extend_from_slice(&bits);
                async move { bucket.put(key, record.into()).await }
            });
            for result in futures::future::join_all(writes).await {
                if let Err(e) = result {
                    // A worker killed now delivers that bundle's done events again: at least
                    // once, never lost.
                    tracing::warn!(bucket = PROGRESS_BUCKET, error = %e, "cannot record a bundle's progress");
                }
            }
            self.written.send_replace(round);
        }
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
        let b = bits(&done);
        assert_eq!(b.len(), 2);
        let back: Vec<bool> = (0..done.len()).map(|i| is_set(&b, i)).collect();
        assert_eq!(back, done);
    }
}
