//! The JetStream queue backend (API §8): accepted events, retries and dead letters live in a
//! NATS JetStream that every Hookline process shares, so pods keep no state that matters and a
//! destination scales out by adding workers to its one durable consumer.
//!
//! [`names`] says where things live, [`objects`] creates them, [`publish`] stores accepted
//! events, [`inbox`] is a worker's side of its consumer, [`dead_letters`] the dead-letter
//! stream, [`routes`] the gateway's view of the routes bucket.

pub mod backlog;
pub mod bundle;
mod creds;
pub mod dead_letters;
pub mod identity;
pub mod inbox;
pub mod keys;
pub mod names;
pub mod objects;
pub mod progress;
pub mod publish;
pub mod routes;

use async_nats::jetstream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long a JetStream request (a publish acknowledgement, an API call) may take before the
/// caller treats JetStream as unavailable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("--nats: {0:?} is not a NATS URL (nats://host:4222, several comma-separated)")]
    BadUrl(String),
    #[error("cannot read {}: {source}", file.display())]
    Creds {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("JetStream {what}: {message}")]
    Api { what: String, message: String },
}

impl NatsError {
    pub fn api(what: impl Into<String>, error: impl std::fmt::Display) -> NatsError {
        NatsError::Api {
            what: what.into(),
            message: error.to_string(),
        }
    }
}

/// The flags every process that can use JetStream takes (`run`, `controller`, `worker`,
/// `gateway`). Token and user/password come from the environment only, so a Secret can hold
/// them (the chart's `nats.auth`); a URL never needs to.
#[derive(clap::Args, Debug, Clone)]
pub struct NatsArgs {
    /// NATS servers (nats://host:4222, several comma-separated); empty = local mode, with each
    /// process's own disk queue
    #[arg(
        long = "nats",
        env = "HOOKLINE_NATS_URL",
        value_name = "URL",
        default_value = ""
    )]
    pub url: String,
    /// A NATS .creds file (JWT and NKey seed); read again on every connect, and a changed file
    /// (a renewed identity) reconnects at once
    #[arg(long = "nats-creds", env = "HOOKLINE_NATS_CREDS", value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// The subject prefix of this process's reply inboxes (default `_INBOX`); an identity per
    /// role may subscribe to its own prefix only
    #[arg(
        long = "nats-inbox",
        env = "HOOKLINE_NATS_INBOX",
        value_name = "PREFIX"
    )]
    pub inbox: Option<String>,
    /// A PEM bundle of CAs that sign the NATS servers' certificates
    #[arg(long = "nats-ca", env = "HOOKLINE_NATS_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Replicas of Hookline's streams and routes bucket (default: 3 on a NATS cluster, 1 on a
    /// single server)
    #[arg(long = "nats-replicas", env = "HOOKLINE_NATS_REPLICAS")]
    pub replicas: Option<usize>,
    /// How long undelivered events are kept in JetStream (a number with s, m, h or d)
    #[arg(long = "nats-max-age", env = "HOOKLINE_NATS_MAX_AGE", default_value = "7d", value_parser = parse_age)]
    pub max_age: Duration,
    /// A `.creds` held in memory instead of a file: the operator's own, derived from the NATS
    /// keys it keeps (`--nats-keys-secret`).
    #[arg(skip)]
    pub own_creds: Option<String>,
}

impl NatsArgs {
    /// `None` in local mode.
    pub fn servers(&self) -> Result<Option<Vec<async_nats::ServerAddr>>, NatsError> {
        let urls: Vec<&str> = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Ok(None);
        }
        urls.into_iter()
            .map(|u| u.parse().map_err(|_| NatsError::BadUrl(u.to_string())))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub fn retention(&self) -> objects::Retention {
        objects::Retention {
            replicas: self.replicas.map(|r| r.max(1)),
            max_age: self.max_age,
        }
    }

    /// Connects (`None` in local mode). The connection is made in the background and kept up
    /// for the life of the process: a process starts while NATS is down, and is simply not
    /// ready until it is reachable.
    pub async fn connect(&self, client_name: &str) -> Result<Option<Nats>, NatsError> {
        let Some(servers) = self.servers()? else {
            return Ok(None);
        };
        let mut options = match (&self.creds, &self.own_creds) {
            (Some(file), _) => creds::options(file).await?,
            (None, Some(text)) => {
                async_nats::ConnectOptions::with_credentials(text).map_err(|e| {
                    NatsError::Connect {
                        url: self.url.clone(),
                        message: format!("the operator's own NATS identity: {e}"),
                    }
                })?
            }
            (None, None) => async_nats::ConnectOptions::new(),
        }
        .name(client_name)
        .retry_on_initial_connect()
        .connection_timeout(REQUEST_TIMEOUT)
        .max_reconnects(None);
        if let Some(prefix) = &self.inbox {
            options = options.custom_inbox_prefix(prefix);
        }
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Ok(token) = std::env::var("HOOKLINE_NATS_TOKEN")
            && !token.is_empty()
        {
            options = options.token(token);
        }
        if let (Ok(user), Ok(password)) = (
            std::env::var("HOOKLINE_NATS_USER"),
            std::env::var("HOOKLINE_NATS_PASSWORD"),
        ) && !user.is_empty()
        {
            options = options.user_and_password(user, password);
        }
        let client = options
            .connect(servers)
            .await
            .map_err(|e| NatsError::Connect {
                url: self.url.clone(),
                message: e.to_string(),
            })?;
        if let Some(file) = &self.creds {
            tokio::spawn(creds::reconnect_on_change(client.clone(), file.clone()));
        }
        let mut context = jetstream::new(client.clone());
        context.set_timeout(REQUEST_TIMEOUT);
        Ok(Some(Nats(Arc::new(Connection {
            client,
            context,
            url: self.url.clone(),
        }))))
    }
}

impl NatsArgs {
    /// What this process authenticates and verifies NATS with, as Secret keys: `token`,
    /// `user`/`password` (from the environment), `creds` and `ca.crt` (file contents).
    pub fn credentials(&self) -> Result<std::collections::BTreeMap<String, String>, NatsError> {
        let mut out = std::collections::BTreeMap::new();
        for (var, key) in [
            ("HOOKLINE_NATS_TOKEN", "token"),
            ("HOOKLINE_NATS_USER", "user"),
            ("HOOKLINE_NATS_PASSWORD", "password"),
        ] {
            if let Ok(v) = std::env::var(var)
                && !v.is_empty()
            {
                out.insert(key.to_string(), v);
            }
        }
        for (file, key) in [(&self.creds, "creds"), (&self.ca, "ca.crt")] {
            if let Some(file) = file {
                let text = std::fs::read_to_string(file).map_err(|source| NatsError::Creds {
                    file: file.clone(),
                    source,
                })?;
                out.insert(key.to_string(), text);
            }
        }
        Ok(out)
    }
}

/// `90s`, `30m`, `12h`, `7d`.
pub(crate) fn parse_age(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as 90s, 30m, 12h or 7d");
    let (number, unit) = text.trim().split_at(text.trim().len().saturating_sub(1));
    let n: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(seconds))
}

/// A connection to NATS and its JetStream, cheap to clone.
#[derive(Clone, Debug)]
pub struct Nats(Arc<Connection>);

#[derive(Debug)]
pub struct Connection {
    pub client: async_nats::Client,
    pub context: jetstream::Context,
    pub url: String,
}

impl std::ops::Deref for Nats {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl Nats {
    /// Returns once the client is connected (it connects in the background, retrying), or
    /// when `shutdown` turns true.
    pub async fn connected(&self, shutdown: &mut tokio::sync::watch::Receiver<bool>) {
        let mut waited = false;
        while self.client.connection_state() != async_nats::connection::State::Connected {
            if !waited {
                tracing::info!(url = %self.url, "waiting for NATS");
                waited = true;
            }
            tokio::select! {
                _ = crate::shutdown::stopped(shutdown) => return,
                _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
        }
    }

    /// Whether JetStream answers right now (what `/readyz` reports).
    pub async fn reachable(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
            && tokio::time::timeout(REQUEST_TIMEOUT, self.context.query_account())
                .await
                .is_ok_and(|r| r.is_ok())
    }
}
