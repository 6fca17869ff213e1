//! The worker's configuration file: what the operator renders into a ConfigMap and what
//! `hookline worker --config FILE` runs. It holds no secret values — only the resource and
//! where its Secrets are mounted — so it can live in a ConfigMap.

use super::ConfigError;
use super::destination::Destination;
use super::manifests::LoadedDestination;
use super::secrets::SecretStore;
use crate::api::WebhookDestination;
use crate::pipeline::source::{RouteSpec, SourceRoute};
use crate::shutdown::stopped;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often mounted Secrets are re-read; the kubelet itself only refreshes them about once a
/// minute, so this adds little delay.
pub const SECRET_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerConfig {
    /// The WebhookDestination this worker delivers for (apiVersion, kind, metadata, spec).
    pub destination: WebhookDestination,
    /// Secret `NAME` key `KEY` is read from the file `secretsDir/NAME/KEY`.
    pub secrets_dir: PathBuf,
    /// Durable queue, cursors and dead letters.
    pub data_dir: PathBuf,
    /// Ingestion API, health, metrics and status.
    pub listen: SocketAddr,
    /// The route of the WebhookSource the destination reads (`spec.source.sourceRef`), as the
    /// operator admitted it: its key's digest, never the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RouteSpec>,
}

impl WorkerConfig {
    pub fn load(file: &Path) -> Result<WorkerConfig, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|error| ConfigError::Read {
            file: file.to_path_buf(),
            error,
        })?;
        let de =
            serde_saphyr::from_str::<serde_json::Value>(&text).map_err(|e| ConfigError::Yaml {
                file: file.to_path_buf(),
                message: e.to_string(),
            })?;
        serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Document {
            file: file.to_path_buf(),
            index: 1,
            what: String::new(),
            message: format!("{}: {}", e.path(), e.inner()),
        })
    }

    fn loaded(&self) -> LoadedDestination {
        LoadedDestination::from_resource(self.destination.clone())
    }

    fn namespace(&self) -> &str {
        self.destination
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(super::manifests::DEFAULT_NAMESPACE)
    }

    pub fn read_secrets(&self) -> Result<SecretStore, ConfigError> {
        SecretStore::from_dir(&self.secrets_dir, self.namespace()).map_err(|e| {
            ConfigError::Other(format!(
                "cannot read the mounted Secrets in {}: {e}",
                self.secrets_dir.display()
            ))
        })
    }

    pub fn resolve(&self, secrets: &SecretStore) -> Result<Destination, ConfigError> {
        let dest = Destination::resolve(&self.loaded(), secrets)?;
        Ok(match &self.source {
            Some(route) => dest.reading(SourceRoute::new(route.clone())),
            None => dest,
        })
    }

    /// Re-reads the mounted Secrets every [`SECRET_RELOAD_INTERVAL`] and publishes the
    /// destination with its new credentials when they changed. A change that does not resolve
    /// (a key removed, say) is logged and the running credentials are kept.
    pub async fn reload_secrets(
        self,
        mut current: SecretStore,
        live: watch::Sender<Arc<Destination>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(SECRET_RELOAD_INTERVAL);
        loop {
            tokio::select! {
                _ = stopped(&mut shutdown) => return,
                _ = tick.tick() => {}
            }
            let secrets = match self.read_secrets() {
                Ok(s) if s != current => s,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "keeping the current credentials");
                    continue;
                }
            };
            match self.resolve(&secrets) {
                Ok(dest) => {
                    tracing::info!(destination = %dest.name, "mounted Secrets changed; new credentials in use");
                    live.send_replace(Arc::new(dest));
                }
                Err(e) => {
                    tracing::error!(error = %e, "mounted Secrets changed but do not resolve; keeping the current credentials")
                }
            }
            current = secrets;
        }
    }
}
