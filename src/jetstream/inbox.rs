//! A worker's side of its destination's durable consumer: messages are pulled in batches and
//! held until the worker says what became of them — acknowledged once delivered, filtered or
//! dead-lettered, negatively acknowledged with the backoff delay to be retried (by whichever
//! worker pulls it next), marked in progress while a slow request runs, and handed back at
//! once when the worker stops.

use super::names::DestinationNames;
use super::{Nats, NatsError, objects};
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// One event as JetStream handed it over.
pub struct Pulled {
    /// Its sequence in the events stream: the worker's handle on it.
    pub seq: u64,
    pub payload: Bytes,
    /// Delivery attempts already made (JetStream's delivery count, less this one).
    pub attempts_before: u32,
    /// When JetStream stored it: `maxRetryDurationSeconds` counts from here.
    pub stored_at: SystemTime,
}

struct Held {
    /// Where JetStream takes this message's acknowledgements.
    reply: async_nats::Subject,
    attempts_before: u32,
    stored_at: SystemTime,
}

/// What the worker holds: shared by the reader and the delivery tasks.
#[derive(Clone)]
pub struct StreamAcks {
    client: async_nats::Client,
    held: Arc<Mutex<HashMap<u64, Held>>>,
}

pub struct StreamReader {
    consumer: PullConsumer,
    names: DestinationNames,
    messages: Option<async_nats::jetstream::consumer::pull::Stream>,
    acks: StreamAcks,
    prefetch: usize,
}

/// Binds to the destination's consumer (the operator, or `run --nats`, created it).
pub async fn open(
    nats: &Nats,
    names: &DestinationNames,
    prefetch: usize,
) -> Result<(StreamReader, StreamAcks), NatsError> {
    let stream = objects::events_stream(nats).await?;
    let consumer: PullConsumer = stream
        .get_consumer(names.consumer())
        .await
        .map_err(|e| NatsError::api(format!("consumer {}", names.consumer()), e))?;
    let acks = StreamAcks {
        client: nats.client.clone(),
        held: Arc::default(),
    };
    Ok((
        StreamReader {
            consumer,
            names: names.clone(),
            messages: None,
            acks: acks.clone(),
            prefetch: prefetch.max(1),
        },
        acks,
    ))
}

impl StreamReader {
    /// The next event; waits for one, riding out NATS outages (logged, retried).
    pub async fn next(&mut self) -> Pulled {
        loop {
            if self.messages.is_none() {
                match self
                    .consumer
                    .stream()
                    .max_messages_per_batch(self.prefetch)
                    .heartbeat(Duration::from_secs(5))
                    .expires(Duration::from_secs(30))
                    .messages()
                    .await
                {
                    Ok(m) => self.messages = Some(m),
                    Err(e) => {
                        tracing::warn!(consumer = %self.names.consumer(), error = %e, "cannot pull from JetStream; trying again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let next = self.messages.as_mut().expect("set above").next().await;
            let message = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(consumer = %self.names.consumer(), error = %e, "pulling from JetStream failed; pulling again");
                    self.messages = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                None => {
                    self.messages = None;
                    continue;
                }
            };
            let Ok(info) = message.info() else {
                tracing::warn!(subject = %message.subject, "a message without JetStream metadata; ignored");
                continue;
            };
            let seq = info.stream_sequence;
            let attempts_before = u32::try_from(info.delivered.max(1) - 1).unwrap_or(u32::MAX);
            let stored_at = SystemTime::from(info.published);
            let Some(reply) = message.reply.clone() else {
                continue;
            };
            let already = self.acks.hold(
                seq,
                Held {
                    reply,
                    attempts_before,
                    stored_at,
                },
            );
            if already {
                // Redelivered while this worker still works on it (it outlived the ack wait):
                // the newer handle acknowledges it; it is not handed out twice.
                continue;
            }
            return Pulled {
                seq,
                payload: message.payload.clone(),
                attempts_before,
                stored_at,
            };
        }
    }
}

impl StreamAcks {
    /// `true` when `seq` was held already.
    fn hold(&self, seq: u64, held: Held) -> bool {
        self.held
            .lock()
            .expect("held lock")
            .insert(seq, held)
            .is_some()
    }

    fn take(&self, seqs: impl IntoIterator<Item = u64>) -> Vec<async_nats::Subject> {
        let mut held = self.held.lock().expect("held lock");
        seqs.into_iter()
            .filter_map(|s| held.remove(&s))
            .map(|h| h.reply)
            .collect()
    }

    async fn send(&self, replies: Vec<async_nats::Subject>, kind: AckKind) {
        for reply in replies {
            if let Err(e) = self.client.publish(reply, kind.into()).await {
                // JetStream hands the event out again after the ack wait: delivered twice at
                // worst, never lost.
                tracing::warn!(error = %e, ?kind, "could not answer JetStream for an event");
            }
        }
    }

    /// Done with them: delivered, filtered or dead-lettered.
    pub async fn ack(&self, seqs: impl IntoIterator<Item = u64>) {
        self.send(self.take(seqs), AckKind::Ack).await;
    }

    /// Back to JetStream, to be handed out again after `delay` (to any worker).
    pub async fn retry_after(&self, seqs: impl IntoIterator<Item = u64>, delay: Duration) {
        self.send(self.take(seqs), AckKind::Nak(Some(delay))).await;
    }

    /// The most attempts any of them has had, and the earliest time one was stored.
    pub fn history(&self, seqs: impl IntoIterator<Item = u64>) -> (u32, Option<SystemTime>) {
        let held = self.held.lock().expect("held lock");
        seqs.into_iter()
            .filter_map(|s| held.get(&s))
            .fold((0, None), |(attempts, since), h| {
                (
                    attempts.max(h.attempts_before),
                    Some(since.map_or(h.stored_at, |s: SystemTime| s.min(h.stored_at))),
                )
            })
    }

    /// When the oldest message this worker holds was stored.
    pub fn oldest_held(&self) -> Option<SystemTime> {
        let held = self.held.lock().expect("held lock");
        held.values().map(|h| h.stored_at).min()
    }

    pub fn held(&self) -> usize {
        self.held.lock().expect("held lock").len()
    }

    /// Tells JetStream the worker is still on everything it holds, so a slow request (or a
    /// retry waiting in the worker) is not handed to another worker meanwhile.
    pub async fn keep_alive(&self) {
        let replies: Vec<async_nats::Subject> = {
            let held = self.held.lock().expect("held lock");
            held.values().map(|h| h.reply.clone()).collect()
        };
        self.send(replies, AckKind::Progress).await;
    }

    /// Hands everything still held back for immediate redelivery (the worker is stopping).
    pub async fn release_all(&self) {
        let all: Vec<u64> = self
            .held
            .lock()
            .expect("held lock")
            .keys()
            .copied()
            .collect();
        self.send(self.take(all), AckKind::Nak(None)).await;
        let _ = self.client.flush().await;
    }
}

/// How often held events are marked in progress: well inside the consumer's ack wait.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(objects::ACK_WAIT.as_secs() / 3);
