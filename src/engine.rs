//! Running destinations on this machine: the data dir (lock, durable queue, cursors, dead
//! letters), one worker per enabled destination, and the ingestion server. This is what
//! `hookline run` (and a cluster worker) is.

use crate::api::GrantType;
use crate::config::destination::token_secret_name;
use crate::config::destination::{Destination, LiveDestination};
use crate::egress::Egress;
use crate::jetstream::names::DestinationNames;
use crate::jetstream::objects::{ConsumerPlan, Retention};
use crate::jetstream::{self, Nats};
use crate::metrics::METRICS;
use crate::oauth::endpoint::TokenEndpoint;
use crate::oauth::manager::{self, InMemory, TokenSource};
use crate::oauth::store::{MountedToken, TokenFile, rfc3339};
use crate::pipeline::admin;
use crate::pipeline::dead_letters::DeadLetters;
use crate::pipeline::deliver::breaker::{Breaker, PAUSED};
use crate::pipeline::deliver::dlq::{self, DeadLetterStore};
use crate::pipeline::envelope::Envelope;
use crate::pipeline::inbox::Inbox;
use crate::pipeline::ingest::{self, IngestState};
use crate::pipeline::queue::{Cursor, Queue};
use crate::pipeline::store::{EventStore, Route, Routes};
use crate::pipeline::worker::Worker;
use crate::runtimes;
use crate::shutdown::stopped;
use anyhow::{Context, bail};
use serde_json::json;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

pub struct EngineOptions {
    pub listen: SocketAddr,
    /// The loopback listener for dead letters (API §10).
    pub admin_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tokens: TokenKeeping,
    pub backend: Backend,
    /// Where deliveries and token requests may go (API §11).
    pub egress: Egress,
}

/// Where OAuth 2.0 destinations keep their tokens.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenKeeping {
    /// `hookline run`: a 0600 file per destination in the data dir, shared with `test` and
    /// `connect`.
    DataDir,
    /// A cluster worker: with client credentials it fetches its own tokens (in memory, no
    /// Secret propagation delay); with an authorization code it follows the token Secret the
    /// operator keeps, mounted under `secrets_dir`.
    Cluster { secrets_dir: PathBuf },
}

/// Starts the token lifecycle of each OAuth 2.0 destination.
pub fn token_source(
    dest: &Destination,
    keeping: &TokenKeeping,
    data_dir: &Path,
    egress: &Egress,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<TokenSource>> {
    let Some(oauth) = &dest.oauth else {
        return Ok(None);
    };
    let endpoint = TokenEndpoint::new(oauth.settings.clone(), egress)
        .with_context(|| format!("destination {}: cannot build its OAuth client", dest.name))?;
    Ok(Some(match keeping {
        TokenKeeping::DataDir => manager::spawn(
            &dest.name,
            endpoint,
            TokenFile::new(data_dir, &dest.namespace, &dest.name, oauth.seed.clone()),
            shutdown,
        ),
        TokenKeeping::Cluster { .. } if oauth.settings.grant == GrantType::ClientCredentials => {
            manager::spawn(&dest.name, endpoint, InMemory, shutdown)
        }
        TokenKeeping::Cluster { secrets_dir } => manager::spawn(
            &dest.name,
            endpoint,
            MountedToken {
                dir: secrets_dir.join(token_secret_name(&dest.name)),
            },
            shutdown,
        ),
    }))
}

/// Holds the data dir's lock for as long as it lives: two processes never share a queue.
pub struct DataDirLock(#[allow(dead_code)] File);

pub fn lock_data_dir(dir: &Path) -> anyhow::Result<DataDirLock> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    let path = dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock(file)),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!(
                "the data dir {} is in use by another `hookline run`; stop it or pass a different --data-dir",
                dir.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Where accepted events wait (API §8).
#[derive(Clone)]
pub enum Backend {
    /// The data dir's own disk queue.
    Local {
        /// A cluster worker's drain on SIGTERM: how long it may keep delivering its backlog
        /// after it stopped ingesting (a little less than the pod's grace period). `None`
        /// stops at once (`hookline run`, stopped by a person).
        drain: Option<Duration>,
    },
    /// A shared JetStream. `objects`: this process creates the streams and its destinations'
    /// consumers (`run --nats`); in the cluster the operator does.
    JetStream {
        nats: Nats,
        objects: Option<Retention>,
    },
}

pub async fn run(
    destinations: Vec<LiveDestination>,
    opts: EngineOptions,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let _lock = lock_data_dir(&opts.data_dir)?;
    let enabled: Vec<&LiveDestination> = destinations
        .iter()
        .filter(|live| {
            let dest = live.borrow();
            if !dest.enabled {
                tracing::info!(destination = %dest.name, "spec.enabled is false: nothing will be delivered to it");
            }
            dest.enabled
        })
        .collect();
    let (store, inboxes, local) = match &opts.backend {
        Backend::Local { .. } => {
            let mut local = LocalQueue::open(&opts.data_dir)?;
            let inboxes = enabled
                .iter()
                .map(|live| local.inbox(&live.borrow().name))
                .collect::<anyhow::Result<Vec<_>>>()?;
            (EventStore::Local(local.queue.clone()), inboxes, Some(local))
        }
        Backend::JetStream { nats, objects } => {
            // Disabled destinations keep their consumers: what is accepted meanwhile waits.
            if let Some(retention) = objects {
                let streams = until_ready("the streams", &shutdown, || {
                    jetstream::objects::ensure_streams(nats, *retention)
                });
                if streams.await.is_none() {
                    return Ok(());
                }
                for live in &destinations {
                    let dest = live.borrow().clone();
                    let ensured =
                        until_ready(&dest.name, &shutdown, || ensure_destination(nats, &dest));
                    if ensured.await.is_none() {
                        return Ok(());
                    }
                }
            }
            let mut inboxes = Vec::new();
            for live in &enabled {
                let dest = live.borrow().clone();
                let names = DestinationNames::new(&dest.namespace, &dest.name);
                let inbox = until_ready(&dest.name, &shutdown, || {
                    Inbox::stream(
                        nats.clone(),
                        names.clone(),
                        dest.concurrency,
                        dest.batching.size,
                    )
                });
                let Some(inbox) = inbox.await else {
                    return Ok(());
                };
                inboxes.push(inbox);
            }
            (EventStore::stream(nats.clone()), inboxes, None)
        }
    };

    // Delivery stops on the signal, or after the drain when there is one.
    let delivery_stop = match (&opts.backend, &local) {
        (Backend::Local { drain: Some(drain) }, Some(local)) => {
            drained(local.clone(), *drain, shutdown.clone())
        }
        _ => shutdown.clone(),
    };
    let mut workers = Vec::new();
    let mut running = Vec::new();
    let mut test_targets = Vec::new();
    for (live, inbox) in enabled.into_iter().zip(inboxes) {
        let dest = live.borrow().clone();
        let tokens = token_source(
            &dest,
            &opts.tokens,
            &opts.data_dir,
            &opts.egress,
            delivery_stop.clone(),
        )?;
        let worker = Worker::new(live.clone(), inbox, tokens.clone(), opts.egress.clone())
            .with_context(|| format!("destination {}: cannot build its HTTP client", dest.name))?;
        running.push((dest.name.clone(), tokens.clone(), worker.breaker()));
        test_targets.push(admin::TestTarget {
            live: live.clone(),
            tokens,
        });
        let delivering = runtimes::on_own_thread(
            format!("deliver-{}", dest.name),
            worker.run(delivery_stop.clone()),
        )
        .with_context(|| {
            format!(
                "destination {}: cannot start its delivery thread",
                dest.name
            )
        })?;
        workers.push(delivering);
    }

    let status_view: Vec<StatusView> = destinations
        .iter()
        .map(|d| {
            let d = d.borrow();
            let (tokens, breaker) = running
                .iter()
                .find(|(n, ..)| *n == d.name)
                .map(|(_, t, b)| (t.clone(), Some(b.clone())))
                .unwrap_or_default();
            StatusView {
                name: d.name.clone(),
                enabled: d.enabled,
                bearer: d.request.headers.has_bearer(),
                tokens,
                breaker,
            }
        })
        .collect();
    let status_view = Arc::new(status_view);
    let status_view_len = status_view.len();
    tokio::spawn(condition_metrics(status_view.clone(), shutdown.clone()));
    let dead_letters = match &opts.backend {
        Backend::Local { .. } => DeadLetters::Local {
            data_dir: opts.data_dir.clone(),
        },
        Backend::JetStream { nats, .. } => DeadLetters::Stream {
            nats: nats.clone(),
            destinations: destinations
                .iter()
                .map(|d| {
                    let d = d.borrow();
                    DestinationNames::new(&d.namespace, &d.name)
                })
                .collect(),
        },
    };
    let state = Arc::new(IngestState {
        store,
        routes: Routes::Fixed(Box::new(move || routes(&destinations))),
        ready: false.into(),
        status: Box::new({
            let view = status_view.clone();
            move || status_json(&view)
        }),
    });
    let ingestion =
        runtimes::IngestionRuntime::new().context("cannot start the ingestion threads")?;
    // Bound from within the ingestion runtime, so that its connections are served there.
    let listener = ingestion
        .handle()
        .spawn(tokio::net::TcpListener::bind(opts.listen))
        .await?
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let admin = tokio::net::TcpListener::bind(opts.admin_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (the admin listener for dead letters; choose another with --admin-listen)",
                opts.admin_listen
            )
        })?;
    tracing::info!(listen = %listener.local_addr()?, admin = %admin.local_addr()?, data_dir = %opts.data_dir.display(), destinations = status_view_len, "hookline is running");
    state.ready.store(true, Ordering::Release);

    let housekeeping = local.map(|local| {
        tokio::spawn(housekeeping(
            local,
            opts.data_dir.clone(),
            delivery_stop.clone(),
        ))
    });
    let mut server_shutdown = shutdown.clone();
    let unready = state.clone();
    let served = ingestion.handle().spawn(async move {
        axum::serve(listener, ingest::router(state))
            .with_graceful_shutdown(async move {
                stopped(&mut server_shutdown).await;
                unready.ready.store(false, Ordering::Release);
            })
            .await
    });
    let mut admin_shutdown = shutdown.clone();
    let egress = opts.egress.clone();
    let admin_served = tokio::spawn(async move {
        axum::serve(admin, admin::router(dead_letters, test_targets, egress))
            .with_graceful_shutdown(async move { stopped(&mut admin_shutdown).await })
            .await
    });
    served.await?.context("the ingestion server failed")?;
    admin_served.await?.context("the admin listener failed")?;
    for w in workers {
        let _ = w.await;
    }
    if let Some(h) = housekeeping {
        let _ = h.await;
    }
    Ok(())
}

/// The local disk queue, its dead-letter store and the destinations' cursors.
#[derive(Clone)]
struct LocalQueue {
    queue: Queue,
    dlq: DeadLetterStore,
    cursor_dir: PathBuf,
    /// Every destination's, all opened before the queue is shared with the tasks that read them.
    cursors: Vec<Arc<Cursor>>,
}

impl LocalQueue {
    fn open(data_dir: &Path) -> anyhow::Result<LocalQueue> {
        let queue = Queue::open(&data_dir.join("queue"))?;
        let cursor_dir = data_dir.join("cursors");
        std::fs::create_dir_all(&cursor_dir)
            .with_context(|| format!("cannot create {}", cursor_dir.display()))?;
        Ok(LocalQueue {
            queue,
            dlq: DeadLetterStore::new(data_dir),
            cursor_dir,
            cursors: Vec::new(),
        })
    }

    fn inbox(&mut self, destination: &str) -> anyhow::Result<Inbox> {
        let cursor = Cursor::open(&self.cursor_dir.join(destination), self.queue.head())?;
        self.cursors.push(cursor.clone());
        Ok(Inbox::local(self.queue.clone(), cursor, self.dlq.clone()))
    }

    /// The lowest position any destination still needs.
    fn min_cursor(&self) -> u64 {
        self.cursors
            .iter()
            .map(|c| c.committed())
            .min()
            .unwrap_or_else(|| self.queue.head())
    }
}

/// The destination's consumer, reading the subject of its source or its own, and the route of
/// the source it reads (`run --nats`).
async fn ensure_destination(nats: &Nats, dest: &Destination) -> Result<(), jetstream::NatsError> {
    let route = dest.source.as_ref().map(|s| &s.spec);
    let plan = ConsumerPlan::reading(dest.names(), route, dest.concurrency, dest.batching.size);
    jetstream::objects::ensure_consumer(nats, &plan).await?;
    if let Some(route) = route {
        jetstream::objects::ensure_route(nats, &route.route, Some(route)).await?;
    }
    if !route.is_some_and(|r| r.is_private_of(&plan.names)) {
        jetstream::objects::ensure_route(nats, plan.names.consumer(), None).await?;
    }
    Ok(())
}

/// Tries `attempt` (for `what`: the streams, or a destination) every second until JetStream
/// answers; `None` when stopped first.
async fn until_ready<T, Fut>(
    what: &str,
    shutdown: &watch::Receiver<bool>,
    attempt: impl Fn() -> Fut,
) -> Option<T>
where
    Fut: std::future::Future<Output = Result<T, jetstream::NatsError>>,
{
    let mut shutdown = shutdown.clone();
    loop {
        match attempt().await {
            Ok(done) => return Some(done),
            Err(e) => {
                tracing::warn!(for_ = what, error = %e, "JetStream is not ready yet; trying again");
            }
        }
        tokio::select! {
            _ = stopped(&mut shutdown) => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// After `shutdown`: turns true once every destination has delivered what was queued, or
/// when `drain` has passed, whichever comes first.
fn drained(
    local: LocalQueue,
    drain: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> watch::Receiver<bool> {
    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        stopped(&mut shutdown).await;
        let deadline = tokio::time::Instant::now() + drain;
        tracing::info!(
            ?drain,
            "not ready and not ingesting; delivering what is queued"
        );
        loop {
            let waiting = local.queue.head().saturating_sub(local.min_cursor());
            if waiting == 0 {
                tracing::info!("the queue is drained");
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    waiting,
                    "the grace period is nearly over; stopping with events still queued (they wait on this pod's disk)"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = stop.send(true);
    });
    stopping
}

fn routes(destinations: &[LiveDestination]) -> Vec<Route> {
    destinations
        .iter()
        .map(|live| live.borrow())
        .filter(|d| d.enabled)
        .map(|d| Route {
            names: d.names(),
            source: d.source.clone(),
        })
        .collect()
}

/// What `GET /status` reports on, per destination.
struct StatusView {
    name: String,
    enabled: bool,
    bearer: bool,
    tokens: Option<TokenSource>,
    /// Enabled destinations: the endpoint's health as their worker sees it.
    breaker: Option<Arc<Breaker>>,
}

/// `GET /status`: each destination's conditions, with the same types and reasons as the
/// resource's status, and `auth.expiresAt` for OAuth 2.0 destinations. Never a token.
fn status_json(destinations: &[StatusView]) -> serde_json::Value {
    let list: Vec<_> = destinations
        .iter()
        .map(|d| {
            let auth_state = d.tokens.as_ref().map(TokenSource::state);
            let (auth_ok, auth_reason, auth_message) = match &auth_state {
                Some(state) => state.condition(),
                None if d.bearer => (true, "BearerToken", String::new()),
                None => (true, "NotRequired", String::new()),
            };
            let delivering = d.breaker.as_ref().map(|b| b.view().condition(&d.name));
            let (ready, ready_reason, ready_message) = match &delivering {
                _ if !d.enabled => (
                    true,
                    "Disabled",
                    "spec.enabled is false: nothing is delivered".to_string(),
                ),
                _ if !auth_ok => (false, auth_reason, auth_message.clone()),
                // Only a person can resume a paused destination; an unhealthy endpoint is
                // probed, and delivery resumes by itself.
                Some((false, reason, message)) if *reason == PAUSED => {
                    (false, *reason, message.clone())
                }
                _ => (true, "Delivering", String::new()),
            };
            let mut conditions = vec![
                condition("Accepted", true, "Valid", ""),
                condition("AuthReady", auth_ok, auth_reason, &auth_message),
                condition("Ready", ready, ready_reason, &ready_message),
            ];
            if let Some((ok, reason, message)) = &delivering {
                conditions.push(condition("Delivering", *ok, reason, message));
            }
            let mut entry = json!({"name": d.name, "conditions": conditions});
            if let Some(state) = &auth_state {
                entry["auth"] = json!({
                    "expiresAt": state.expires_at().map(rfc3339),
                    "authorizationUrl": state.problem.as_ref().and_then(|p| p.authorization_url.clone()),
                });
            }
            entry
        })
        .collect();
    json!({"destinations": list})
}

/// `/status` as gauges, for alerts: `hookline_condition{destination, type}` and the OAuth
/// token's expiry, refreshed every second.
async fn condition_metrics(view: Arc<Vec<StatusView>>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut shutdown) => return,
        }
        // Health is judged by time too: an endpoint failing long enough turns unhealthy with
        // no answer to mark the moment.
        for d in view.iter() {
            if let Some(breaker) = &d.breaker {
                breaker.view().set_gauges(&d.name);
            }
        }
        let status = status_json(&view);
        for d in status["destinations"].as_array().into_iter().flatten() {
            let name = d["name"].as_str().unwrap_or_default();
            for c in d["conditions"].as_array().into_iter().flatten() {
                let kind = c["type"].as_str().unwrap_or_default();
                METRICS
                    .condition
                    .with_label_values(&[name, kind])
                    .set(i64::from(c["status"] == "True"));
            }
            let expires = d["auth"]["expiresAt"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            if let Some(at) = expires {
                METRICS
                    .token_expiry
                    .with_label_values(&[name])
                    .set(at.timestamp());
            }
        }
    }
}

fn condition(kind: &str, ok: bool, reason: &str, message: &str) -> serde_json::Value {
    json!({"type": kind, "status": if ok { "True" } else { "False" }, "reason": reason, "message": message})
}

/// Moves replayed dead letters from the spool into the queue, each addressed to its destination.
async fn requeue_spooled(queue: &Queue, data_dir: &Path) {
    for path in dlq::spooled_files(data_dir) {
        let letters = match dlq::read_spooled(&path) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot read replayed dead letters");
                continue;
            }
        };
        let records = letters
            .into_iter()
            .map(|l| {
                Envelope {
                    to: Some(vec![l.destination]),
                    trace: None,
                    event: l.event,
                }
                .encode()
            })
            .collect::<Vec<_>>();
        let n = records.len();
        match queue.append(records).await {
            Ok(()) => {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::error!(file = %path.display(), error = %e, "replayed events are queued but the spool file could not be removed; they may be delivered twice");
                }
                tracing::info!(events = n, "re-queued replayed dead letters");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot queue replayed dead letters; will try again")
            }
        }
    }
}

async fn housekeeping(local: LocalQueue, data_dir: PathBuf, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut rounds = 0u64;
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = tick.tick() => {}
        }
        requeue_spooled(&local.queue, &data_dir).await;
        rounds += 1;
        if rounds.is_multiple_of(20)
            && let Err(e) = local.queue.remove_consumed(local.min_cursor())
        {
            tracing::warn!(error = %e, "cannot remove delivered queue segments");
        }
    }
}
