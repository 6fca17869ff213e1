//! A worker's side of its destination's durable consumer: messages are pulled in batches and
//! held until the worker says what became of them — acknowledged once delivered, filtered or
//! dead-lettered, negatively acknowledged with the backoff delay to be retried (by whichever
//! worker pulls it next), marked in progress while a slow request runs, and handed back at
//! once when the worker stops.

use super::backlog::EventsPerMessage;
use super::bundle::{self, ATTEMPTS, EVENTS, NOT_BEFORE, STORED_AT, header_u64};
use super::names::DestinationNames;
use super::progress::{self, Progress};
use super::publish::{Outgoing, Publisher};
use super::{Nats, NatsError, objects};
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// One event as JetStream handed it over.
pub struct Pulled {
    /// The worker's handle on it: its message's sequence in the events stream and its place in
    /// that message ([`handle`]).
    pub seq: u64,
    pub payload: Bytes,
    /// Delivery attempts already made (JetStream's delivery count, less this one).
    pub attempts_before: u32,
    /// When JetStream stored it: `maxRetryDurationSeconds` counts from here.
    pub stored_at: SystemTime,
}

/// Bits of a handle that say which event of its message it is (a bundle holds at most 1,000).
const INDEX_BITS: u32 = 16;

fn handle(seq: u64, index: usize) -> u64 {
    (seq << INDEX_BITS) | index as u64
}

fn parts(handle: u64) -> (u64, usize) {
    (
        handle >> INDEX_BITS,
        (handle & ((1 << INDEX_BITS) - 1)) as usize,
    )
}

struct Held {
    /// Where JetStream takes this message's acknowledgements.
    reply: async_nats::Subject,
    attempts_before: u32,
    stored_at: SystemTime,
    /// A bundle's events; `None` for a message of one event.
    bundle: Option<Bundle>,
}

/// The events of a bundle, and which of them the worker has not finished with.
struct Bundle {
    payload: Bytes,
    events: Vec<Range<usize>>,
    open: Vec<bool>,
    remaining: usize,
}

impl Bundle {
    fn done(&self) -> Bytes {
        progress::bits(self.open.iter().map(|o| !o))
    }
}

impl Held {
    /// Marks the event done; `true` once every event of the message is.
    fn resolve(&mut self, index: usize) -> bool {
        match &mut self.bundle {
            None => true,
            Some(b) => {
                if b.open.get(index).copied().unwrap_or(false) {
                    b.open[index] = false;
                    b.remaining -= 1;
                }
                b.remaining == 0
            }
        }
    }
}

/// What the worker holds: shared by the reader and the delivery tasks.
#[derive(Clone)]
pub struct StreamAcks {
    nats: Nats,
    names: DestinationNames,
    /// By the message's stream sequence (server-assigned, so the fast hash is safe: it is
    /// looked up once per event delivered).
    held: Arc<Mutex<HashMap<u64, Held, foldhash::fast::RandomState>>>,
    progress: Option<Arc<Progress>>,
    /// Of the messages taken in lately, for the backlog in events.
    events_per_message: Arc<EventsPerMessage>,
}

pub struct StreamReader {
    consumer: PullConsumer,
    names: DestinationNames,
    messages: Option<async_nats::jetstream::consumer::pull::Stream>,
    acks: StreamAcks,
    prefetch: usize,
    /// The events of a bundle pulled and not yet handed over.
    ready: VecDeque<Pulled>,
    /// Retries pulled before they are due: held (kept alive like any other) until then, so
    /// each delivery of a retry is one attempt.
    waiting: Vec<(SystemTime, Pulled)>,
}

/// A pull is cut at this many bytes as well as at `prefetch` messages: bundles are large.
const PULL_BYTES: usize = 4 * 1024 * 1024;

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
        nats: nats.clone(),
        names: names.clone(),
        held: Arc::default(),
        progress: Progress::open(nats, names).await,
        events_per_message: Arc::default(),
    };
    Ok((
        StreamReader {
            consumer,
            names: names.clone(),
            messages: None,
            acks: acks.clone(),
            prefetch: prefetch.max(1),
            ready: VecDeque::new(),
            waiting: Vec::new(),
        },
        acks,
    ))
}

impl StreamReader {
    /// The next event; waits for one, riding out NATS outages (logged, retried).
    pub async fn next(&mut self) -> Pulled {
        loop {
            if let Some(pulled) = self.ready.pop_front() {
                return pulled;
            }
            let now = SystemTime::now();
            if let Some(i) = self.waiting.iter().position(|(due, _)| *due <= now) {
                return self.waiting.swap_remove(i).1;
            }
            let next_due = self.waiting.iter().map(|(due, _)| *due).min();
            if self.messages.is_none() {
                match self
                    .consumer
                    .stream()
                    .max_messages_per_batch(self.prefetch)
                    .max_bytes_per_batch(PULL_BYTES)
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
            let messages = self.messages.as_mut().expect("set above");
            let next = match next_due {
                None => messages.next().await,
                Some(due) => {
                    let wait = due.duration_since(now).unwrap_or_default();
                    tokio::select! {
                        next = messages.next() => next,
                        () = tokio::time::sleep(wait) => continue,
                    }
                }
            };
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
            self.take_in(message).await;
        }
    }

    /// A pulled message's events, ready to hand out (or waiting until due); nothing when it
    /// is held already, was done with before, or is not Hookline's.
    async fn take_in(&mut self, message: async_nats::jetstream::Message) {
        let Ok(info) = message.info() else {
            tracing::warn!(subject = %message.subject, "a message without JetStream metadata; ignored");
            return;
        };
        let seq = info.stream_sequence;
        let delivered = u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX);
        let Some(reply) = message.reply.clone() else {
            return;
        };
        let attempts_before = match header_u64(&message, ATTEMPTS) {
            Some(made) => (made as u32).saturating_add(delivered - 1),
            None => delivered - 1,
        };
        let not_before = header_u64(&message, NOT_BEFORE).map(bundle::from_millis);
        let stored_at = header_u64(&message, STORED_AT)
            .map_or_else(|| SystemTime::from(info.published), bundle::from_millis);
        if self.acks.refresh(seq, &reply) {
            // Redelivered while this worker still works on it (it outlived the ack wait):
            // the newer handle acknowledges it; it is not handed out twice.
            return;
        }
        let payload = message.payload.clone();
        let events = match header_u64(&message, EVENTS) {
            None => None,
            Some(_) => match bundle::split(&payload) {
                Ok(events) if !events.is_empty() => Some(events),
                Ok(_) | Err(_) => {
                    tracing::error!(seq, subject = %message.subject, "a bundle that is not an array of events; removed");
                    self.acks.send(vec![reply], AckKind::Term).await;
                    return;
                }
            },
        };
        let bundle = match events {
            None => None,
            Some(events) => Some(
                self.acks
                    .bundle(seq, delivered, payload.clone(), events)
                    .await,
            ),
        };
        self.acks
            .events_per_message
            .taken(bundle.as_ref().map_or(1, |b| b.events.len()));
        let open: Vec<(usize, Range<usize>)> = match &bundle {
            None => vec![(0, 0..payload.len())],
            Some(b) => (0..b.events.len())
                .filter(|i| b.open[*i])
                .map(|i| (i, b.events[i].clone()))
                .collect(),
        };
        if open.is_empty() {
            // Every event was done before it came back: only the acknowledgement was lost.
            self.acks.send(vec![reply], AckKind::Ack).await;
            return;
        }
        let held = Held {
            reply,
            attempts_before,
            stored_at,
            bundle,
        };
        self.acks.hold(seq, held);
        let pulled = open.into_iter().map(|(i, range)| Pulled {
            seq: handle(seq, i),
            payload: payload.slice(range),
            attempts_before,
            stored_at,
        });
        match not_before.filter(|t| *t > SystemTime::now()) {
            // A retry published on its own, pulled before its backoff delay is over.
            Some(due) => self.waiting.extend(pulled.map(|p| (due, p))),
            None => self.ready.extend(pulled),
        }
    }
}

impl StreamAcks {
    /// `messages` waiting, in events, as many a message as those taken in lately held. A
    /// worker's identity may not read the headers of messages it has not pulled; the operator
    /// counts them exactly for `status.backlog`.
    pub fn in_events(&self, messages: u64) -> u64 {
        self.events_per_message.of(messages)
    }

    fn hold(&self, seq: u64, held: Held) {
        self.held.lock().expect("held lock").insert(seq, held);
    }

    /// `true` when `seq` is held already: then only its reply changes, and what was done of a
    /// bundle stays done.
    fn refresh(&self, seq: u64, reply: &async_nats::Subject) -> bool {
        match self.held.lock().expect("held lock").get_mut(&seq) {
            Some(existing) => {
                existing.reply = reply.clone();
                true
            }
            None => false,
        }
    }

    /// A bundle as pulled; one delivered before may have events done already (its record).
    async fn bundle(
        &self,
        seq: u64,
        delivered: u32,
        payload: Bytes,
        events: Vec<Range<usize>>,
    ) -> Bundle {
        let mut done = vec![false; events.len()];
        if let (Some(p), true) = (&self.progress, delivered > 1) {
            match p.load(seq, events.len()).await {
                Ok(d) => done = d,
                Err(e) => {
                    tracing::warn!(seq, error = %e, "cannot read a redelivered bundle's progress; delivering it whole")
                }
            }
        }
        let open: Vec<bool> = done.iter().map(|d| !d).collect();
        Bundle {
            payload,
            remaining: open.iter().filter(|o| **o).count(),
            open,
            events,
        }
    }

    /// Marks the events done, records the progress of bundles left partly done; the replies
    /// of the messages now done with entirely.
    fn resolve(&self, handles: impl IntoIterator<Item = u64>) -> Vec<async_nats::Subject> {
        let mut held = self.held.lock().expect("held lock");
        let mut out = Vec::new();
        let mut touched = Vec::new();
        for h in handles {
            let (seq, index) = parts(h);
            let Some(m) = held.get_mut(&seq) else {
                continue;
            };
            if m.resolve(index) {
                out.extend(held.remove(&seq).map(|m| m.reply));
                touched.retain(|s| *s != seq);
            } else if !touched.contains(&seq) {
                touched.push(seq);
            }
        }
        if let Some(p) = &self.progress {
            for seq in touched {
                if let Some(b) = held.get(&seq).and_then(|m| m.bundle.as_ref()) {
                    p.record(seq, b.done());
                }
            }
        }
        out
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
            if let Err(e) = self.nats.client.publish(reply, kind.into()).await {
                // JetStream hands the event out again after the ack wait: delivered twice at
                // worst, never lost.
                tracing::warn!(error = %e, ?kind, "could not answer JetStream for an event");
            }
        }
    }

    /// Done with them: delivered, filtered or dead-lettered. A bundle left partly done has
    /// that recorded.
    pub async fn ack(&self, handles: impl IntoIterator<Item = u64>) {
        let done = self.resolve(handles);
        self.send(done, AckKind::Ack).await;
    }

    /// Back to JetStream, to be handed out again after `delay` (to any worker): a message of
    /// one event is handed back itself; an event of a bundle is published on its own to the
    /// destination's subject, with its history, and then counts as done in the bundle.
    pub async fn retry_after(&self, handles: impl IntoIterator<Item = u64>, delay: Duration) {
        let not_before = bundle::millis(SystemTime::now() + delay);
        let (singles, retries) = self.split_off(handles, not_before);
        self.send(self.take(singles), AckKind::Nak(Some(delay)))
            .await;
        self.republish(retries, delay).await;
    }

    /// Handles of messages of one event, and bundled events to publish on their own.
    fn split_off(
        &self,
        handles: impl IntoIterator<Item = u64>,
        not_before: u64,
    ) -> (Vec<u64>, Vec<(u64, Outgoing)>) {
        let held = self.held.lock().expect("held lock");
        let mut singles = Vec::new();
        let mut retries = Vec::new();
        for h in handles {
            let (seq, index) = parts(h);
            let Some(m) = held.get(&seq) else { continue };
            match &m.bundle {
                None => singles.push(seq),
                Some(b) if b.open.get(index).copied().unwrap_or(false) => {
                    retries.push((h, self.on_its_own(seq, index, m, b, not_before)));
                }
                Some(_) => {}
            }
        }
        (singles, retries)
    }

    /// One event of a bundle, whose attempt just failed, as a message of its own on the
    /// destination's subject, due at `not_before`.
    fn on_its_own(
        &self,
        seq: u64,
        index: usize,
        m: &Held,
        b: &Bundle,
        not_before: u64,
    ) -> Outgoing {
        let attempts = m.attempts_before + 1;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(ATTEMPTS, attempts.to_string().as_str());
        headers.insert(STORED_AT, bundle::millis(m.stored_at).to_string().as_str());
        headers.insert(NOT_BEFORE, not_before.to_string().as_str());
        Outgoing {
            subject: self.names.subject(),
            // Published twice (a lost acknowledgement), it is stored once.
            id: format!("retry:{}:{seq}:{index}:{attempts}", self.names.consumer()),
            payload: b.payload.slice(b.events[index].clone()),
            headers: Some(headers),
        }
    }

    /// Publishes bundled events on their own, then counts them done. If JetStream does not
    /// store them, their bundles go back whole (`delay` later), the done events skipped by
    /// their progress record.
    async fn republish(&self, retries: Vec<(u64, Outgoing)>, delay: Duration) {
        if retries.is_empty() {
            return;
        }
        let (handles, messages): (Vec<u64>, Vec<Outgoing>) = retries.into_iter().unzip();
        match Publisher::new(self.nats.clone())
            .publish_all(messages)
            .await
        {
            Ok(()) => self.ack(handles).await,
            Err(e) => {
                tracing::warn!(consumer = %self.names.consumer(), error = %e, "cannot publish events to retry on their own; handing their messages back whole");
                let seqs: Vec<u64> = handles.iter().map(|h| parts(*h).0).collect();
                self.send(self.take(seqs), AckKind::Nak(Some(delay))).await;
            }
        }
    }

    /// The most attempts any of them has had, and the earliest time one was stored.
    pub fn history(&self, handles: impl IntoIterator<Item = u64>) -> (u32, Option<SystemTime>) {
        let held = self.held.lock().expect("held lock");
        handles
            .into_iter()
            .filter_map(|h| held.get(&parts(h).0))
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

    /// Tells JetStream the worker is still on everything it holds, so a slow request (or a
    /// retry waiting in the worker) is not handed to another worker meanwhile.
    pub async fn keep_alive(&self) {
        let replies: Vec<async_nats::Subject> = {
            let held = self.held.lock().expect("held lock");
            held.values().map(|h| h.reply.clone()).collect()
        };
        self.send(replies, AckKind::Progress).await;
    }

    /// Hands everything still held back for immediate redelivery (the worker is stopping),
    /// once the progress of partly done bundles is published: the next worker skips what this
    /// one delivered, and the events keep their place in the stream (and their order).
    pub async fn release_all(&self) {
        if let Some(p) = &self.progress {
            p.flush(&self.nats.client).await;
        }
        let all: Vec<u64> = self
            .held
            .lock()
            .expect("held lock")
            .keys()
            .copied()
            .collect();
        self.send(self.take(all), AckKind::Nak(None)).await;
        let _ = self.nats.client.flush().await;
    }
}

/// How often held events are marked in progress: well inside the consumer's ack wait.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(objects::ACK_WAIT.as_secs() / 3);
