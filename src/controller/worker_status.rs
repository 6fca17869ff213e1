//! The endpoint's health as a destination's workers see it (their circuit breaker), for the
//! resource's `Delivering` condition. Read from a worker's `GET /status` over the cluster network
//! rather than through the API server, so it costs no API calls, at most every
//! [`WorkerStatusOptions::every`].

use crate::api::WebhookDestination;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where a destination's worker answers `/status` in the cluster; `{name}` and `{namespace}`
/// are the destination's.
pub const DEFAULT_URL: &str = "http://{name}-hookline.{namespace}.svc:8080/status";

#[derive(Debug, Clone)]
pub struct WorkerStatusOptions {
    /// [`DEFAULT_URL`] in the cluster.
    pub url: String,
    /// A worker is read at most this often.
    pub every: Duration,
}

/// The `Delivering` condition a worker reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivering {
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

pub struct WorkerStatus {
    options: WorkerStatusOptions,
    client: reqwest::Client,
    read: Mutex<HashMap<ObjectRef<WebhookDestination>, Reading>>,
}

/// When a destination's worker was last read, and what it said (`None`: no answer).
type Reading = (Instant, Option<Delivering>);

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("its /status does not list the destination with a Delivering condition")]
    NotListed,
}

impl WorkerStatus {
    pub fn new(options: WorkerStatusOptions) -> WorkerStatus {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("a plain HTTP client builds");
        WorkerStatus {
            options,
            client,
            read: Mutex::default(),
        }
    }

    /// What the destination's worker says, read again once `every` has passed; `None`
    /// while it cannot be read (the last known condition then stands).
    pub async fn delivering(&self, dest: &WebhookDestination) -> Option<Delivering> {
        let key = ObjectRef::from_obj(dest);
        if let Some((at, known)) = self.read.lock().expect("read lock").get(&key)
            && at.elapsed() < self.options.every
        {
            return known.clone();
        }
        let known = match self.read_worker(dest).await {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::debug!(destination = %dest.name_any(), error = %e, "cannot read the worker's delivery state");
                None
            }
        };
        self.read
            .lock()
            .expect("read lock")
            .insert(key, (Instant::now(), known.clone()));
        known
    }

    /// Readings of deleted destinations are dropped.
    pub fn every(&self) -> Duration {
        self.options.every
    }

    pub fn retain(&self, exists: impl Fn(&ObjectRef<WebhookDestination>) -> bool) {
        self.read
            .lock()
            .expect("read lock")
            .retain(|k, _| exists(k));
    }

    async fn read_worker(&self, dest: &WebhookDestination) -> Result<Delivering, ReadError> {
        let name = dest.name_any();
        let url = self
            .options
            .url
            .replace("{name}", &name)
            .replace("{namespace}", &dest.namespace().unwrap_or_default());
        let status: serde_json::Value = self
            .client
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let destination = status["destinations"]
            .as_array()
            .and_then(|list| list.iter().find(|d| d["name"] == name.as_str()))
            .ok_or(ReadError::NotListed)?;
        let condition = destination["conditions"]
            .as_array()
            .and_then(|list| list.iter().find(|c| c["type"] == "Delivering"))
            .ok_or(ReadError::NotListed)?;
        let text = |field: &str| condition[field].as_str().unwrap_or_default().to_string();
        Ok(Delivering {
            ok: condition["status"] == "True",
            reason: text("reason"),
            message: text("message"),
        })
    }
}
