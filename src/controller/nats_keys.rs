//! The NATS keys the operator issues identities with (API §10, "Secure by default"), kept in a
//! Secret of its own namespace that only it reads. For the NATS the chart installs, the
//! operator makes them on first start, with the servers' configuration in a second Secret the
//! NATS pods mount (they wait for it). Neither is owned by anything: `helm upgrade`, a NATS
//! restart and an operator restart all find them as they were.

use crate::config::secrets::secret_data;
use crate::jetstream::keys::{ACCOUNT_KEY, KeysError, NatsKeys, SERVER_CONFIG_KEY};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum KeysSecretError {
    #[error("cannot read or write the Secret {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error(
        "the Secret {namespace}/{name} with Hookline's NATS keys does not exist; make it with `hookline nats setup --apply -n {namespace}`"
    )]
    Missing { namespace: String, name: String },
    #[error(
        "the NATS servers' configuration {namespace}/{server} exists but the keys it was made from ({namespace}/{keys}) do not: restore that Secret, or delete both and restart the NATS pods (every identity is issued again)"
    )]
    Orphaned {
        namespace: String,
        keys: String,
        server: String,
    },
}

/// Where the keys are, whether they may be made, and where the servers' configuration goes.
pub struct KeysSecrets<'a> {
    pub namespace: &'a str,
    pub keys: &'a str,
    /// Make the keys when there are none (`nats.install`, `hookline nats setup --apply`).
    pub make: bool,
    /// A Secret that keeps the servers' configuration (`auth.conf`), written when missing.
    pub server: Option<&'a str>,
}

impl KeysSecrets<'_> {
    fn error(&self, name: &str) -> impl Fn(kube::Error) -> KeysSecretError {
        let (namespace, name) = (self.namespace.to_string(), name.to_string());
        move |source| KeysSecretError::Api {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        }
    }

    /// The keys, made first when asked to and there are none; the servers' configuration is
    /// written when it is missing.
    pub async fn ensure(&self, client: &Client) -> Result<NatsKeys, KeysSecretError> {
        let api: Api<Secret> = Api::namespaced(client.clone(), self.namespace);
        let server_exists = match self.server {
            Some(server) => api
                .get_opt(server)
                .await
                .map_err(self.error(server))?
                .is_some(),
            None => false,
        };
        let keys = match api
            .get_opt(self.keys)
            .await
            .map_err(self.error(self.keys))?
        {
            Some(secret) => self.read(&secret)?,
            None => self.make(&api, server_exists).await?,
        };
        if let Some(server) = self.server.filter(|_| !server_exists) {
            let config = keys.server_config().map_err(KeysError::from)?;
            create(
                &api,
                secret(server, [(SERVER_CONFIG_KEY.to_string(), config)].into()),
            )
            .await
            .map_err(self.error(server))?;
            tracing::info!(secret = server, "wrote the NATS servers' configuration");
        }
        Ok(keys)
    }

    fn read(&self, secret: &Secret) -> Result<NatsKeys, KeysSecretError> {
        let seeds: BTreeMap<String, String> = secret_data(secret)
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let what = format!("the Secret {}/{}", self.namespace, self.keys);
        Ok(NatsKeys::from_seeds(&seeds, &what)?)
    }

    async fn make(
        &self,
        api: &Api<Secret>,
        server_exists: bool,
    ) -> Result<NatsKeys, KeysSecretError> {
        if !self.make {
            return Err(KeysSecretError::Missing {
                namespace: self.namespace.to_string(),
                name: self.keys.to_string(),
            });
        }
        // New keys beside an old configuration would lock every identity out: say so instead.
        if let Some(server) = self.server.filter(|_| server_exists) {
            return Err(KeysSecretError::Orphaned {
                namespace: self.namespace.to_string(),
                keys: self.keys.to_string(),
                server: server.to_string(),
            });
        }
        let keys = NatsKeys::generate();
        let mut data = keys.seeds();
        data.insert(ACCOUNT_KEY.into(), keys.account());
        match create(api, secret(self.keys, data)).await {
            Ok(()) => {
                tracing::info!(secret = self.keys, account = %keys.account(), "made Hookline's NATS keys");
                Ok(keys)
            }
            // Another replica made them first: theirs are the keys.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let secret = api.get(self.keys).await.map_err(self.error(self.keys))?;
                self.read(&secret)
            }
            Err(e) => Err(self.error(self.keys)(e)),
        }
    }
}

/// A Secret of Hookline's NATS setup, as it is created (and as `hookline nats setup` prints it).
pub fn secret(name: &str, data: BTreeMap<String, String>) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/managed-by": "hookline",
                "app.kubernetes.io/part-of": "hookline",
            },
        },
        "stringData": data,
    }))
    .expect("a valid Secret")
}

async fn create(api: &Api<Secret>, secret: Secret) -> Result<(), kube::Error> {
    api.create(&PostParams::default(), &secret)
        .await
        .map(|_| ())
}
