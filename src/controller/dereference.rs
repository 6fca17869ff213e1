//! Reading what a WebhookDestination refers to: its Secrets. Values stay in memory, only to
//! check that they resolve; nothing secret is written anywhere.

use super::children::CachesReady;
use crate::api::WebhookDestinationSpec;
use crate::config::secrets::{SecretStore, secret_data};
use futures::future::BoxFuture;
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
    let api = &api;
    collect(namespace, spec, |name| {
        Box::pin(async move { Ok(api.get_opt(&name).await?.map(|s| secret_data(&s))) })
    })
    .await
}

/// The referenced Secrets, each got once through `read` (`None`: it does not exist).
async fn collect<'a>(
    namespace: &str,
    spec: &WebhookDestinationSpec,
    read: impl Fn(String) -> BoxFuture<'a, Result<Option<SecretData>, kube::Error>>,
) -> Result<Dereferenced, kube::Error> {
    let mut out = Dereferenced::default();
    for name in referenced(spec) {
        match read(name.clone()).await? {
            Some(data) => out.secrets.insert(namespace, &name, data),
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
type SecretData = HashMap<String, Vec<u8>>;
/// A Secret as read: the resourceVersion it had, and its data.
type SecretRead = (String, SecretData);

/// The operator's Secret reads, kept while the Secret is unchanged: the metadata-only watch says
/// which resourceVersion each Secret has, and a Secret is read again only when it moved. A
/// Secret shared by a thousand destinations is read once, not once per reconcile.
pub struct SecretCache {
    watched: Store<PartialObjectMeta<Secret>>,
    ready: CachesReady,
    read: Mutex<HashMap<SecretKey, SecretRead>>,
}

impl SecretCache {
    pub fn new(watched: Store<PartialObjectMeta<Secret>>, ready: CachesReady) -> Self {
        SecretCache {
            watched,
            ready,
            read: Mutex::default(),
        }
    }

    /// The resourceVersion the watch has for a Secret; `None` when it does not exist.
    async fn watched_version(&self, namespace: &str, name: &str) -> Option<Option<String>> {
        // Until the watch has listed everything, its silence proves nothing.
        self.ready.wait().await;
        let key = ObjectRef::<PartialObjectMeta<Secret>>::new(name).within(namespace);
        self.watched
            .get(&key)
            .map(|s| s.metadata.resource_version.clone())
    }

    /// A Secret's metadata as the watch has it (for one the operator applies itself).
    pub fn meta(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta> {
        let key = ObjectRef::<PartialObjectMeta<Secret>>::new(name).within(namespace);
        self.watched.get(&key).map(|s| s.metadata.clone())
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
        let api = &api;
        collect(namespace, spec, |name| {
            Box::pin(async move { self.read(api, namespace, &name).await })
        })
        .await
    }

    /// One key of a Secret as text (a write key): `Ok(None)` when the Secret or the key is
    /// missing or the value is not UTF-8.
    pub async fn read_key(
        &self,
        client: &Client,
        namespace: &str,
        r: &crate::api::SecretKeyRef,
    ) -> Result<Option<String>, kube::Error> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let data = self.read(&api, namespace, &r.name).await?;
        Ok(data
            .and_then(|mut d| d.remove(&r.key))
            .and_then(|v| String::from_utf8(v).ok()))
    }

    /// The resourceVersion the watch has for a Secret, without waiting for the caches.
    pub fn version(&self, namespace: &str, name: &str) -> Option<String> {
        self.meta(namespace, name).and_then(|m| m.resource_version)
    }

    /// A Secret's data: kept from the last read while the watch shows the same version.
    async fn read(
        &self,
        api: &Api<Secret>,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SecretData>, kube::Error> {
        let key = (namespace.to_string(), name.to_string());
        let version = self.watched_version(namespace, name).await;
        let kept = self
            .read
            .lock()
            .expect("secret cache lock")
            .get(&key)
            .cloned();
        if let (Some(Some(v)), Some((read_at, data))) = (version, kept)
            && v == read_at
        {
            return Ok(Some(data));
        }
        let secret = api.get_opt(name).await?;
        let mut read = self.read.lock().expect("secret cache lock");
        Ok(match secret {
            Some(secret) => {
                let data = secret_data(&secret);
                let version = secret.metadata.resource_version.unwrap_or_default();
                read.insert(key, (version, data.clone()));
                Some(data)
            }
            None => {
                read.remove(&key);
                None
            }
        })
    }
}
