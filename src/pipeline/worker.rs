//! One destination's delivery loop, reading its [`Inbox`] (the local queue from its cursor, or
//! its JetStream consumer): route → subscription → insert function → mapping → batch → send
//! (with `concurrency` senders, one request in flight each) → retry or dead-letter → tell the
//! inbox. Batches pass through a channel bounded by the concurrency, so a slow endpoint holds
//! events in the queue, not in memory. It runs on a thread of its own
//! ([`crate::runtimes::on_own_thread`]), so an insert function computes inline, holding up only
//! this destination.

use super::batch::{Batch, Batcher, Item};
use super::deliver::breaker::{Breaker, BreakerView, Health};
use super::deliver::dlq::DeadLetter;
use super::deliver::pace::Pace;
use super::deliver::request::RequestTemplate;
use super::deliver::request::request_id;
use super::deliver::tls::TlsSettings;
use super::deliver::{Attempt, ClientError, HttpSender, Verdict};
use super::envelope::Envelope;
use super::inbox::{Inbox, TEND_INTERVAL};
use crate::config::destination::{Destination, LiveDestination};
use crate::egress::Egress;
use crate::metrics::METRICS;
use crate::oauth::AccessToken;
use crate::oauth::manager::TokenSource;
use crate::pipeline::transform::Outcome;
use crate::shutdown::stopped;
use crate::telemetry;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

/// Everything the delivery tasks of one destination share.
struct Shared {
    /// The destination as it was when the worker started: only its credentials may change later.
    dest: Arc<Destination>,
    live: LiveDestination,
    inbox: Inbox,
    /// The HTTP client, and the TLS settings it was built with: a rotated CA or client
    /// certificate builds a new one.
    sender: std::sync::Mutex<(Option<Arc<TlsSettings>>, HttpSender)>,
    /// What a new HTTP client is built with.
    egress: Egress,
    /// The rate limit, and a `429`'s hold on every request.
    pace: Pace,
    /// Holds every request while the endpoint keeps failing; shared with `/status`.
    breaker: Arc<Breaker>,
    /// OAuth 2.0 destinations: where each attempt gets its access token.
    tokens: Option<TokenSource>,
    metrics: DestinationMetrics,
}

/// This destination's metric series, resolved once rather than per request.
struct DestinationMetrics {
    name: String,
    delivered: prometheus::IntCounter,
    dead_lettered: prometheus::IntCounter,
    request_duration: prometheus::Histogram,
    batch_size: prometheus::Histogram,
    queue_depth: prometheus::IntGauge,
    damaged: prometheus::IntCounter,
    oldest_event_age: prometheus::Gauge,
    /// Most events a destination does not deliver are filtered out by its subscription.
    filtered_by_subscription: prometheus::IntCounter,
}

const BY_SUBSCRIPTION: &str = "subscription";

impl DestinationMetrics {
    /// `reason`: `subscription`, or why the insert function dropped the event (its error
    /// class, `ReturnedNull`, `NoHandler`) — a small fixed set.
    fn filtered(&self, reason: &str) {
        if reason == BY_SUBSCRIPTION {
            self.filtered_by_subscription.inc();
        } else {
            METRICS
                .events_filtered
                .with_label_values(&[&self.name, reason])
                .inc();
        }
    }

    fn new(name: &str) -> Self {
        DestinationMetrics {
            name: name.to_string(),
            delivered: METRICS.events_delivered.with_label_values(&[name]),
            dead_lettered: METRICS.events_dead_lettered.with_label_values(&[name]),
            request_duration: METRICS.request_duration.with_label_values(&[name]),
            batch_size: METRICS.batch_size.with_label_values(&[name]),
            queue_depth: METRICS.queue_depth.with_label_values(&[name]),
            damaged: METRICS.damaged_records.with_label_values(&[name]),
            oldest_event_age: METRICS.oldest_event_age.with_label_values(&[name]),
            filtered_by_subscription: METRICS
                .events_filtered
                .with_label_values(&[name, BY_SUBSCRIPTION]),
        }
    }
}

pub struct Worker {
    shared: Arc<Shared>,
}

/// What becomes of one queue record before batching.
enum Prepared {
    NotForUs,
    /// Dropped by the subscription or the insert function, with the reason counted.
    Filtered(Cow<'static, str>),
    Ready(Item),
    Failed(DeadLetter),
    /// The insert function threw `RetryError`.
    Retry(String),
    /// Waits for `onBatch` with the events around it; with its queue record.
    ForBatchFunction(serde_json::Value, Vec<u8>),
}

/// Events waiting for the insert function's `onBatch`, collected like a batch: each with its
/// queue position and record.
#[derive(Default)]
struct FunctionBatch {
    events: Vec<(u64, serde_json::Value, Vec<u8>)>,
    opened: Option<Instant>,
}

impl Worker {
    pub fn new(
        live: LiveDestination,
        inbox: Inbox,
        tokens: Option<TokenSource>,
        egress: Egress,
    ) -> Result<Worker, ClientError> {
        let dest = live.borrow().clone();
        let tls = dest.request.tls.clone();
        let sender = HttpSender::new(
            dest.concurrency,
            dest.request.timeout,
            tls.as_deref(),
            &egress,
        )?;
        let sender = std::sync::Mutex::new((tls, sender));
        let pace = Pace::new(dest.rate_limit);
        let breaker = Arc::new(Breaker::new(dest.breaker));
        let metrics = DestinationMetrics::new(&dest.name);
        BreakerView::Healthy.set_gauges(&dest.name);
        Ok(Worker {
            shared: Arc::new(Shared {
                dest,
                live,
                inbox,
                sender,
                egress,
                pace,
                breaker,
                tokens,
                metrics,
            }),
        })
    }

    /// The destination's circuit breaker, for `/status`.
    pub fn breaker(&self) -> Arc<Breaker> {
        self.shared.breaker.clone()
    }

    /// Runs until `shutdown` turns true; in-flight requests finish, waiting retries are abandoned
    /// (their events stay in the queue and are delivered after a restart, or by another
    /// worker).
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let concurrency = self.shared.dest.concurrency;
        let (batches, rx) = mpsc::channel::<Batch>(concurrency);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let senders: Vec<_> = (0..concurrency)
            .map(|_| tokio::spawn(send(self.shared.clone(), rx.clone(), shutdown.clone())))
            .collect();
        let tending = tokio::spawn(tend(self.shared.clone(), shutdown.clone()));
        self.read(batches, shutdown).await;
        for sender in senders {
            let _ = sender.await;
        }
        let _ = tending.await;
        if let Err(e) = self.shared.inbox.close().await {
            tracing::error!(destination = %self.shared.dest.name, error = %e, "could not save the queue position");
        }
    }

    async fn read(&self, batches: mpsc::Sender<Batch>, mut shutdown: watch::Receiver<bool>) {
        let dest = &self.shared.dest;
        let mut reader = self.shared.inbox.reader().await;
        let mut batcher = Batcher::new(dest.batching.clone());
        let mut waiting = FunctionBatch::default();
        loop {
            let deadline = [
                batcher.deadline(),
                waiting.opened.map(|t| t + dest.batching.max_wait),
            ]
            .into_iter()
            .flatten()
            .min();
            let record = tokio::select! {
                _ = stopped(&mut shutdown) => return,
                _ = sleep_until_opt(deadline) => None,
                record = reader.next() => Some(record),
            };
            let Some(record) = record else {
                let now = Instant::now();
                if waiting
                    .opened
                    .is_some_and(|t| t + dest.batching.max_wait <= now)
                    && !self
                        .flush_function_batch(&mut waiting, &mut batcher, &batches, &mut shutdown)
                        .await
                {
                    return;
                }
                if batcher.deadline().is_some_and(|d| d <= now)
                    && let Some(batch) = batcher.take()
                    && batches.send(batch).await.is_err()
                {
                    return;
                }
                continue;
            };
            let received = match record {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(destination = %dest.name, error = %e, "queue read failed; stopping this destination");
                    return;
                }
            };
            let (seq, bytes) = (received.seq, received.bytes);
            if received.damaged_before > 0 {
                tracing::error!(destination = %dest.name, lost = received.damaged_before, before = seq, "events lost to queue damage");
                self.shared.metrics.damaged.inc_by(received.damaged_before);
            }
            let Some(prepared) = self.prepare_retrying(seq, &bytes, &mut shutdown).await else {
                return;
            };
            match prepared {
                Prepared::ForBatchFunction(event, record) => {
                    waiting.opened.get_or_insert_with(Instant::now);
                    waiting.events.push((seq, event, record));
                    if waiting.events.len() >= dest.batching.size
                        && !self
                            .flush_function_batch(
                                &mut waiting,
                                &mut batcher,
                                &batches,
                                &mut shutdown,
                            )
                            .await
                    {
                        return;
                    }
                }
                other => {
                    if !self
                        .push_all(vec![(seq, other)], &mut batcher, &batches, &mut shutdown)
                        .await
                    {
                        return;
                    }
                }
            }
        }
    }

    /// Acts on prepared records in order: completes what is not delivered, dead-letters
    /// failures, batches the rest. `false` when the worker is stopping.
    async fn push_all(
        &self,
        prepared: Vec<(u64, Prepared)>,
        batcher: &mut Batcher,
        batches: &mpsc::Sender<Batch>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        for (seq, p) in prepared {
            match p {
                Prepared::NotForUs => self.shared.inbox.complete([seq]).await,
                Prepared::Filtered(reason) => {
                    self.shared.metrics.filtered(&reason);
                    self.shared.inbox.complete([seq]).await;
                }
                Prepared::Failed(letter) => {
                    if self.shared.dead_letter(vec![letter], shutdown).await {
                        self.shared.inbox.complete([seq]).await;
                    }
                }
                Prepared::Ready(item) => {
                    for batch in batcher.push(item, Instant::now()) {
                        if batches.send(batch).await.is_err() {
                            return false;
                        }
                    }
                }
                Prepared::Retry(_) | Prepared::ForBatchFunction(..) => {
                    unreachable!("resolved before batching")
                }
            }
        }
        true
    }

    /// `onBatch` over the waiting events; what it returns goes out as one request batch (even
    /// when it dropped some). `false` when the worker is stopping.
    async fn flush_function_batch(
        &self,
        waiting: &mut FunctionBatch,
        batcher: &mut Batcher,
        batches: &mpsc::Sender<Batch>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let ready = self.through_batch_function(waiting, shutdown).await;
        if !self.push_all(ready, batcher, batches, shutdown).await {
            return false;
        }
        match batcher.take() {
            Some(batch) => batches.send(batch).await.is_ok(),
            None => true,
        }
    }

    /// Prepares a record; a `RetryError` from the insert function is retried on the
    /// destination's retry policy, then dead-lettered. `None` when the worker stops.
    async fn prepare_retrying(
        &self,
        seq: u64,
        bytes: &[u8],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Prepared> {
        let first = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.prepare(seq, bytes) {
                Prepared::Retry(message) => {
                    let event = queued_event(bytes);
                    match self.retry_delay(attempts, first) {
                        None => {
                            return Some(Prepared::Failed(dead_letter(
                                &self.shared.dest,
                                event,
                                attempts,
                                None,
                                format!("the insert function kept asking for a retry: {message}"),
                            )));
                        }
                        Some(delay) => {
                            tokio::select! {
                                _ = tokio::time::sleep(delay) => {}
                                _ = stopped(shutdown) => return None,
                            }
                        }
                    }
                }
                other => return Some(other),
            }
        }
    }

    fn retry_delay(&self, attempts: u32, first: Instant) -> Option<Duration> {
        self.shared
            .dest
            .retry
            .next_delay(attempts, first.elapsed(), None, rand::random())
    }

    /// Runs `onBatch` over the waiting events (retrying a `RetryError` like a 5xx) and maps
    /// what it returns; the waiting batch is emptied.
    async fn through_batch_function(
        &self,
        waiting: &mut FunctionBatch,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Vec<(u64, Prepared)> {
        let events = std::mem::take(waiting).events;
        let dest = &self.shared.dest;
        let function = dest
            .transform
            .as_ref()
            .expect("only with an insert function");
        let inputs: Vec<serde_json::Value> = events.iter().map(|(_, e, _)| e.clone()).collect();
        let first = Instant::now();
        let mut attempts = 0;
        let outcomes = loop {
            attempts += 1;
            match function.run_batch(&inputs, &dest.settings) {
                Ok(outcomes) => break Ok(outcomes),
                Err(Outcome::Retry(message)) => match self.retry_delay(attempts, first) {
                    Some(delay) => {
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = stopped(shutdown) => return Vec::new(),
                        }
                    }
                    None => {
                        break Err(format!(
                            "the insert function kept asking for a retry: {message}"
                        ));
                    }
                },
                Err(Outcome::Fail(message)) => break Err(message),
                Err(other) => break Err(format!("onBatch: {other:?}")),
            }
        };
        match outcomes {
            Ok(outcomes) => events
                .into_iter()
                .zip(outcomes)
                .map(|((seq, _, record), outcome)| {
                    (seq, self.after_function(seq, &record, outcome))
                })
                .collect(),
            Err(message) => events
                .into_iter()
                .map(|(seq, event, _)| {
                    let letter = dead_letter(dest, event, attempts, None, message.clone());
                    (seq, Prepared::Failed(letter))
                })
                .collect(),
        }
    }

    /// An insert function's verdict on the event of `record`, mapped when it continues.
    fn after_function(&self, seq: u64, record: &[u8], outcome: Outcome) -> Prepared {
        let dest = &self.shared.dest;
        match outcome {
            Outcome::Continue(event) => self.mapped(seq, record, &event),
            Outcome::Drop { reason, .. } => Prepared::Filtered(reason.into()),
            Outcome::Retry(message) => Prepared::Retry(message),
            Outcome::Fail(message) => Prepared::Failed(dead_letter(
                dest,
                queued_event(record),
                0,
                None,
                format!("insert function: {message}"),
            )),
        }
    }

    /// The event mapped, or dead-lettered when its mapping fails; `record`: the queue record
    /// it came from.
    fn mapped(&self, seq: u64, record: &[u8], event: &serde_json::Value) -> Prepared {
        let dest = &self.shared.dest;
        match Item::mapped(seq, record, event, &dest.mapping) {
            Ok(item) => Prepared::Ready(item),
            Err(e) => {
                let queued = queued_event(record);
                Prepared::Failed(dead_letter(dest, queued, 0, None, e.to_string()))
            }
        }
    }

    fn prepare(&self, seq: u64, bytes: &[u8]) -> Prepared {
        let dest = &self.shared.dest;
        let envelope = match dest.reads.record(bytes) {
            Ok(e) => e,
            Err(e) => {
                return Prepared::Failed(dead_letter(
                    dest,
                    record_as_text(bytes),
                    0,
                    None,
                    format!("queue record {seq} is not valid JSON: {e}"),
                ));
            }
        };
        if !envelope.is_for(self.shared.inbox.recipient(dest)) {
            return Prepared::NotForUs;
        }
        if !dest.subscription.matches(&envelope.event) {
            return Prepared::Filtered(BY_SUBSCRIPTION.into());
        }
        let event = envelope.event;
        let mut prepared = match &dest.transform {
            None => self.mapped(seq, bytes, &event),
            Some(f) if f.has_batch_handler() && dest.batching.size > 1 => {
                Prepared::ForBatchFunction(event, bytes.to_vec())
            }
            Some(f) => {
                let outcome = f.run(&event, &dest.settings);
                self.after_function(seq, bytes, outcome)
            }
        };
        if let Prepared::Ready(item) = &mut prepared {
            item.trace = envelope.trace;
        }
        prepared
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// One of the destination's `concurrency` senders: delivers one batch at a time, until the
/// reader is gone and the channel empty. Long-lived, not a task per batch: spawning one per
/// event showed in the profile.
async fn send(
    shared: Arc<Shared>,
    batches: Arc<tokio::sync::Mutex<mpsc::Receiver<Batch>>>,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        let next = batches.lock().await.recv().await;
        let Some(batch) = next else {
            return;
        };
        if *shutdown.borrow() {
            // Stopping: a batch not yet started stays in the queue, as every one behind it
            // does — sending it would let it overtake those.
            continue;
        }
        shared.deliver(batch, shutdown.clone()).await;
    }
}

async fn tend(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TEND_INTERVAL);
    for round in 0u64.. {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = tick.tick() => {}
        }
        if round.is_multiple_of(10) {
            let age = match shared.inbox.oldest_waiting().await {
                Some(t) => t.elapsed().unwrap_or_default().as_secs_f64(),
                None => 0.0,
            };
            shared.metrics.oldest_event_age.set(age);
        }
        match shared.inbox.tend(round).await {
            Ok(Some(depth)) => shared.metrics.queue_depth.set(depth as i64),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(destination = %shared.dest.name, error = %e, "could not save the queue position")
            }
        }
    }
}

/// The event of a queue record, whole, for the dead-letter store.
fn queued_event(record: &[u8]) -> serde_json::Value {
    match serde_json::from_slice::<Envelope>(record) {
        Ok(envelope) => envelope.event,
        Err(_) => record_as_text(record),
    }
}

/// A queue record that is not valid JSON, kept as text in its dead letter.
fn record_as_text(record: &[u8]) -> serde_json::Value {
    serde_json::Value::String(String::from_utf8_lossy(record).into_owned())
}

fn dead_letter(
    dest: &Destination,
    event: serde_json::Value,
    attempts: u32,
    status: Option<u16>,
    error: String,
) -> DeadLetter {
    DeadLetter {
        destination: dest.name.clone(),
        event,
        attempts,
        last_status: status,
        last_error: error,
        failed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }
}

impl Shared {
    /// The HTTP client for `template`'s TLS settings, built anew when a rotation changed them
    /// (connections made with the old ones are not reused).
    fn sender_for(&self, template: &RequestTemplate) -> HttpSender {
        let mut current = self.sender.lock().expect("sender lock");
        let same_arc = match (&current.0, &template.tls) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if !same_arc && current.0 == template.tls {
            // Other credentials rotated: the same TLS settings, kept with their connections.
            current.0 = template.tls.clone();
        } else if !same_arc {
            match HttpSender::new(
                self.dest.concurrency,
                template.timeout,
                template.tls.as_deref(),
                &self.egress,
            ) {
                Ok(sender) => {
                    tracing::info!(destination = %self.dest.name, "TLS settings changed; new requests use them");
                    *current = (template.tls.clone(), sender);
                }
                Err(e) => {
                    tracing::error!(destination = %self.dest.name, error = %e, "cannot build an HTTP client with the new TLS settings; keeping the old one")
                }
            }
        }
        current.1.clone()
    }

    async fn deliver(&self, batch: Batch, mut shutdown: watch::Receiver<bool>) {
        let dest = &self.dest;
        let id = request_id(&batch.message_ids());
        let body = batch.body();
        let first = Instant::now();
        // JetStream remembers attempts and age across workers; locally they start here.
        let (mut attempts, stored_at) = self.inbox.history(batch.seqs());
        let waited = || match stored_at {
            Some(t) => t.elapsed().unwrap_or_default(),
            None => first.elapsed(),
        };
        self.metrics.batch_size.observe(batch.items.len() as f64);
        let mut rejected: Option<AccessToken> = None;
        loop {
            // Held and paced before the token and the signature's timestamp are taken: a long
            // hold must not send a stale one.
            let probe = tokio::select! {
                probe = self.breaker.admit() => probe,
                _ = stopped(&mut shutdown) => return,
            };
            tokio::select! {
                _ = self.pace.ready() => {}
                _ = stopped(&mut shutdown) => return,
            }
            let token = match &self.tokens {
                None => None,
                Some(tokens) => match tokens.usable(rejected.as_ref(), &mut shutdown).await {
                    Some(t) => Some(t),
                    None => return,
                },
            };
            attempts += 1;
            let template = self.live.borrow().request.clone();
            let mut request = template.build(&id, body.clone(), chrono::Utc::now().timestamp());
            if let Some(t) = &token {
                request.authorize(&t.secret);
            }
            let span = self.attempt_span(&batch, attempts);
            let traceparent = match telemetry::on() {
                true => telemetry::traceparent_of(&span),
                false => batch.trace().map(str::to_string),
            };
            if let Some(traceparent) = traceparent {
                request.continue_trace(traceparent);
            }
            let attempt = self
                .sender_for(&template)
                .send(&request)
                .instrument(span.clone())
                .await;
            if !span.is_disabled() {
                match attempt.status {
                    Some(status) => span.record("http.response.status_code", i64::from(status)),
                    None => span.record("error", attempt.describe()),
                };
            }
            self.observe_health(&attempt, probe);
            if probe && attempt.health() == Health::Down {
                // The endpoint is still down: the events wait for the next probe without
                // using up an attempt.
                attempts -= 1;
                continue;
            }
            if let (Some(429), Some(wait)) = (attempt.status, attempt.retry_after) {
                // The endpoint is overloaded, not just this request: everything waits.
                self.pace.hold_until(Instant::now() + wait);
            }
            self.metrics
                .request_duration
                .observe(attempt.latency.as_secs_f64());
            if let (Some(401), Some(tokens), Some(t)) = (attempt.status, &self.tokens, token) {
                // A refresh and one retry with the new token; a second 401 holds the events
                // until the manager has a token again. Neither uses up an attempt.
                tracing::info!(destination = %dest.name, again = rejected.is_some(), "the endpoint answered 401; refreshing the token");
                tokens.rejected(&t, rejected.is_some());
                rejected = Some(t);
                attempts -= 1;
                continue;
            }
            let give_up = match attempt.verdict() {
                Verdict::Delivered => {
                    self.metrics.delivered.inc_by(batch.items.len() as u64);
                    self.inbox.complete(batch.seqs()).await;
                    return;
                }
                Verdict::GiveUp => true,
                Verdict::Retry => match dest.retry.next_delay(
                    attempts,
                    waited(),
                    attempt.retry_after,
                    rand::random(),
                ) {
                    None => true,
                    Some(delay) => {
                        let cause = attempt
                            .status
                            .map_or_else(|| "connection".to_string(), |s| s.to_string());
                        METRICS
                            .retries
                            .with_label_values(&[&dest.name, &cause])
                            .inc();
                        tracing::debug!(destination = %dest.name, attempt = attempts, ?delay, error = %attempt.describe(), "retrying");
                        if self.inbox.retry_later(batch.seqs(), delay).await {
                            return;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => false,
                            _ = stopped(&mut shutdown) => return,
                        }
                    }
                },
            };
            if give_up {
                self.give_up(batch, attempts, &attempt, &mut shutdown).await;
                return;
            }
        }
    }

    /// The span of one delivery attempt, a child of the trace the events came with; disabled
    /// when tracing is off. Never a secret or a payload.
    fn attempt_span(&self, batch: &Batch, attempt: u32) -> tracing::Span {
        if !telemetry::on() {
            return tracing::Span::none();
        }
        let span = tracing::info_span!(
            "deliver",
            otel.kind = "client",
            destination = %self.dest.name,
            // Signed: OpenTelemetry exports unsigned integers as strings.
            attempt = i64::from(attempt),
            batch.size = batch.items.len() as i64,
            http.response.status_code = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        telemetry::continue_trace(&span, batch.trace());
        span
    }

    /// Feeds the answer to the breaker, and says when the endpoint's health changed.
    fn observe_health(&self, attempt: &Attempt, probe: bool) {
        let Some(view) = self
            .breaker
            .record(attempt.health(), probe, || attempt.describe())
        else {
            return;
        };
        view.set_gauges(&self.dest.name);
        let (_, reason, message) = view.condition(&self.dest.name);
        match view {
            BreakerView::Healthy => {
                tracing::info!(destination = %self.dest.name, "the endpoint answers again; delivery resumes")
            }
            _ => tracing::warn!(destination = %self.dest.name, reason, "{message}"),
        }
    }

    async fn give_up(
        &self,
        batch: Batch,
        attempts: u32,
        attempt: &Attempt,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let error = attempt.describe();
        tracing::warn!(destination = %self.dest.name, attempts, error = %error, events = batch.items.len(), "giving up; events dead-lettered");
        let seqs: Vec<u64> = batch.seqs().collect();
        let letters = batch
            .items
            .into_iter()
            .map(|i| {
                let event = queued_event(&i.record);
                dead_letter(&self.dest, event, attempts, attempt.status, error.clone())
            })
            .collect();
        if self.dead_letter(letters, shutdown).await {
            self.inbox.complete(seqs).await;
        }
    }

    /// Stores dead letters, retrying a failing disk (or JetStream) until it works or the worker
    /// stops; `true` once they are stored (only then may their events be completed).
    async fn dead_letter(
        &self,
        letters: Vec<DeadLetter>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let n = letters.len() as u64;
        loop {
            match self.inbox.dead_letter(&letters).await {
                Ok(()) => {
                    self.metrics.dead_lettered.inc_by(n);
                    return true;
                }
                Err(e) => {
                    tracing::error!(destination = %self.dest.name, error = %e, "cannot write dead letters; will try again");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stopped(shutdown) => return false,
                    }
                }
            }
        }
    }
}
