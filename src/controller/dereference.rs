//! Reading what a WebhookDestination refers to: its Secrets. Values stay in memory, only to
//! check that they resolve; nothing secret is written anywhere.

use crate::api::WebhookDestinationSpec;
use crate::config::secrets::SecretStore;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use std::collections::{BTreeSet, HashMap};

/// The referenced Secrets that exist, by the names the spec uses.
#[derive(Debug, Default)]
pub struct Dereferenced {
    pub secrets: SecretStore,
    /// Names of referenced Secrets that do not exist.
    pub missing: BTreeSet<String>,
}

pub async fn secrets(
    client: &Client,
    namespace: &str,
    spec: &WebhookDestinationSpec,
) -> Result<Dereferenced, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let names: BTreeSet<String> = spec
        .secret_refs()
        .into_iter()
        .map(|(_, r)| r.name.clone())
        .collect();
    let mut out = Dereferenced::default();
    for name in names {
        match api.get_opt(&name).await? {
            Some(secret) => out.secrets.insert(namespace, &name, secret_data(secret)),
            None => {
                out.missing.insert(name);
            }
        }
    }
    Ok(out)
}

pub(crate) fn secret_data(secret: Secret) -> HashMap<String, Vec<u8>> {
    let mut data: HashMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    // The API server folds stringData into data, but a mock or an old object may not have.
    for (k, v) in secret.string_data.unwrap_or_default() {
        data.entry(k).or_insert_with(|| v.into_bytes());
    }
    data
}
