//! Running destinations on this machine: the data dir (lock, durable queue, cursors, dead
//! letters), one worker per enabled destination, and the ingestion server. This is what
//! `hookline run` (and a cluster worker) is.

use crate::api::GrantType;
use crate::config::destination::token_secret_name;
use crate::config::destination::{Destination, LiveDestination};
use crate::oauth::endpoint::TokenEndpoint;
use crate::oauth::manager::{self, InMemory, TokenSource};
use crate::oauth::store::{MountedToken, TokenFile, rfc3339};
use crate::pipeline::deliver::dlq::{self, DeadLetterStore};
use crate::pipeline::envelope::Envelope;
use crate::pipeline::ingest::{self, IngestState, Route};
use crate::pipeline::queue::{Cursor, Queue};
use crate::pipeline::worker::Worker;
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
    pub data_dir: PathBuf,
    pub tokens: TokenKeeping,
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
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<TokenSource>> {
    let Some(oauth) = &dest.oauth else {
        return Ok(None);
    };
    let endpoint = TokenEndpoint::new(oauth.settings.clone())
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

pub async fn run(
    destinations: Vec<LiveDestination>,
    opts: EngineOptions,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let _lock = lock_data_dir(&opts.data_dir)?;
    let queue = Queue::open(&opts.data_dir.join("queue"))?;
    let dlq = DeadLetterStore::new(&opts.data_dir);
    let cursor_dir = opts.data_dir.join("cursors");
    std::fs::create_dir_all(&cursor_dir)
        .with_context(|| format!("cannot create {}", cursor_dir.display()))?;

    let mut workers = Vec::new();
    let mut cursors = Vec::new();
    let mut auth = Vec::new();
    for live in &destinations {
        let dest = live.borrow().clone();
        if !dest.enabled {
            tracing::info!(destination = %dest.name, "spec.enabled is false: nothing will be delivered to it");
            continue;
        }
        let cursor = Cursor::open(&cursor_dir.join(&dest.name), queue.head())?;
        cursors.push(cursor.clone());
        let tokens = token_source(&dest, &opts.tokens, &opts.data_dir, shutdown.clone())?;
        auth.push((dest.name.clone(), tokens.clone()));
        let worker = Worker::new(live.clone(), queue.clone(), cursor, dlq.clone(), tokens)
            .with_context(|| format!("destination {}: cannot build its HTTP client", dest.name))?;
        workers.push(tokio::spawn(worker.run(shutdown.clone())));
    }
    requeue_spooled(&queue, &opts.data_dir).await;

    let status_view: Vec<StatusView> = destinations
        .iter()
        .map(|d| {
            let d = d.borrow();
            let tokens = auth
                .iter()
                .find(|(n, _)| *n == d.name)
                .and_then(|(_, t)| t.clone());
            StatusView {
                name: d.name.clone(),
                enabled: d.enabled,
                bearer: d.request.bearer_token.is_some(),
                tokens,
            }
        })
        .collect();
    let status_view_len = status_view.len();
    let state = Arc::new(IngestState {
        queue: queue.clone(),
        routes: Box::new(move || routes(&destinations)),
        ready: false.into(),
        status: Box::new(move || status_json(&status_view)),
    });
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    tracing::info!(listen = %listener.local_addr()?, data_dir = %opts.data_dir.display(), destinations = status_view_len, "hookline is running");
    state.ready.store(true, Ordering::Release);

    let housekeeping = tokio::spawn(housekeeping(
        queue.clone(),
        cursors,
        opts.data_dir.clone(),
        shutdown.clone(),
    ));
    let mut server_shutdown = shutdown.clone();
    axum::serve(listener, ingest::router(state))
        .with_graceful_shutdown(async move {
            stopped(&mut server_shutdown).await;
        })
        .await
        .context("the ingestion server failed")?;
    for w in workers {
        let _ = w.await;
    }
    let _ = housekeeping.await;
    Ok(())
}

fn routes(destinations: &[LiveDestination]) -> Vec<Route> {
    destinations
        .iter()
        .map(|live| live.borrow())
        .filter(|d| d.enabled)
        .map(|d| Route {
            name: d.name.clone(),
            write_key: d.write_key.clone(),
        })
        .collect()
}

/// What `GET /status` reports on, per destination.
struct StatusView {
    name: String,
    enabled: bool,
    bearer: bool,
    tokens: Option<TokenSource>,
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
            let (ready, ready_reason, ready_message) = if !d.enabled {
                (true, "Disabled", "spec.enabled is false: nothing is delivered".to_string())
            } else if !auth_ok {
                (false, auth_reason, auth_message.clone())
            } else {
                (true, "Delivering", String::new())
            };
            let mut entry = json!({
                "name": d.name,
                "conditions": [
                    condition("Accepted", true, "Valid", ""),
                    condition("AuthReady", auth_ok, auth_reason, &auth_message),
                    condition("Ready", ready, ready_reason, &ready_message),
                ],
            });
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

async fn housekeeping(
    queue: Queue,
    cursors: Vec<Arc<Cursor>>,
    data_dir: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut rounds = 0u64;
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = tick.tick() => {}
        }
        requeue_spooled(&queue, &data_dir).await;
        rounds += 1;
        if rounds.is_multiple_of(20) {
            let min = cursors
                .iter()
                .map(|c| c.committed())
                .min()
                .unwrap_or_else(|| queue.head());
            if let Err(e) = queue.remove_consumed(min) {
                tracing::warn!(error = %e, "cannot remove delivered queue segments");
            }
        }
    }
}
