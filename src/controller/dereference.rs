//! Reading what a WebhookDestination refers to: its Secrets. Values stay in memory, only to
//! check that they resolve; nothing secret is written anywhere.

use crate::api::WebhookDestinationSpec;
use crate::config::secrets::{SecretStore, secret_data};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// The referenced Secrets that exist, by the names the spec uses.
#[derive(Debug, Default, Clone)]
pub struct Dereferenced {
    pub secrets: SecretStore,
    /// Names of referenced Secrets that do not exist.
    pub missing: BTreeSet<String>,
}

/// Each referenced Secret read once (a Secret named twice is read once).
pub async fn secrets(
    client: &Client,
    namespace: &str,
    spec: &WebhookDestinationSpec,
) -> Result<Dereferenced, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut out = Dereferenced::default();
    for name in referenced(spec) {
        match api.get_opt(&name).await? {
            Some(secret) => out.secrets.insert(namespace, &name, secret_data(&secret)),
            None => {
                out.missing.insert(name);
            }
        }
    }
    Ok(out)
}

fn referenced(spec: &WebhookDestinationSpec) -> BTreeSet<String> {
    spec.secret_refs()
        .into_iter()
        .map(|(_, r)| r.name.clone())
        .collect()
}

type SecretKey = (String, String);
/// A Secret as read: the resourceVersion it had, and its data.
type SecretRead = (String, HashMap<String, Vec<u8>>);

/// The operator's Secret reads, kept while the Secret is unchanged: the metadata-only watch says
/// which resourceVersion each Secret has, and a Secret is read again only when it moved. A
/// Secret shared by a thousand destinations is read once, not once per reconcile.
pub struct SecretCache {
    watched: Store<PartialObjectMeta<Secret>>,
    read: Mutex<HashMap<SecretKey, SecretRead>>,
}

impl SecretCache {
    pub fn new(watched: Store<PartialObjectMeta<Secret>>) -> Self {
        SecretCache {
            watched,
            read: Mutex::default(),
        }
    }

    /// The resourceVersion the watch has for a Secret; `None` when it does not exist.
    async fn watched_version(&self, namespace: &str, name: &str) -> Option<Option<String>> {
        // Until the watch has listed everything, its silence proves nothing.
        let _ = tokio::time::timeout(super::children::CACHE_WAIT, self.watched.wait_until_ready())
            .await;
        let key = ObjectRef::<PartialObjectMeta<Secret>>::new(name).within(namespace);
        self.watched
            .get(&key)
            .map(|s| s.metadata.resource_version.clone())
    }

    pub async fn exists(&self, namespace: &str, name: &str) -> bool {
        self.watched_version(namespace, name).await.is_some()
    }

    pub async fn dereference(
        &self,
        client: &Client,
        namespace: &str,
        spec: &WebhookDestinationSpec,
    ) -> Result<Dereferenced, kube::Error> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let mut out = Dereferenced::default();
        for name in referenced(spec) {
            let key = (namespace.to_string(), name.clone());
            let version = self.watched_version(namespace, &name).await;
            let cached = self
                .read
                .lock()
                .expect("secret cache lock")
                .get(&key)
                .cloned();
            let data = match (version, cached) {
                (Some(Some(v)), Some((read_at, data))) if v == read_at => Some(data),
                _ => match api.get_opt(&name).await? {
                    Some(secret) => {
                        let data = secret_data(&secret);
                        let version = secret.metadata.resource_version.unwrap_or_default();
                        self.read
                            .lock()
                            .expect("secret cache lock")
                            .insert(key, (version, data.clone()));
                        Some(data)
                    }
                    None => {
                        self.read.lock().expect("secret cache lock").remove(&key);
                        None
                    }
                },
            };
            match data {
                Some(data) => out.secrets.insert(namespace, &name, data),
                None => {
                    out.missing.insert(name);
                }
            }
        }
        Ok(out)
    }
}
