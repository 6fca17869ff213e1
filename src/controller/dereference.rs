//! Reading what a WebhookDestination refers to: its Secrets. Values stay in memory, only to
//! check that they resolve; nothing secret is written anywhere.

use crate::api::WebhookDestinationSpec;
use crate::config::secrets::{SecretStore, secret_data};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use std::collections::BTreeSet;

/// The referenced Secrets that exist, by the names the spec uses.
#[derive(Debug, Default, Clone)]
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
            Some(secret) => out.secrets.insert(namespace, &name, secret_data(&secret)),
            None => {
                out.missing.insert(name);
            }
        }
    }
    Ok(out)
}
