//! The `<name>-oauth-token` Secret (API.md §5): where the cluster keeps a destination's tokens,
//! owned by the WebhookDestination so deleting it cleans up. Written by the operator's token
//! manager and by `hookline connect NAME -n NS`, both under the operator's field manager.

use super::apply::apply;
use super::build::labels;
use super::dereference;
use crate::api::WebhookDestination;
use crate::config::destination::token_secret_name;
use crate::config::secrets::{SecretStore, secret_data};
use crate::oauth::TokenSet;
use crate::oauth::manager::TokenStore;
use crate::oauth::store::{StoreError, from_fields, to_fields};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Client, Resource, ResourceExt};

pub fn build(dest: &WebhookDestination, tokens: &TokenSet) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(token_secret_name(&dest.name_any())),
            namespace: dest.namespace(),
            labels: Some(labels(dest)),
            owner_references: dest.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            to_fields(tokens)
                .into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

pub async fn save(
    client: &Client,
    dest: &WebhookDestination,
    tokens: &TokenSet,
) -> Result<(), kube::Error> {
    apply(client, &build(dest, tokens)).await.map(|_| ())
}

pub async fn load(
    client: &Client,
    dest: &WebhookDestination,
) -> Result<Option<TokenSet>, StoreError> {
    let name = token_secret_name(&dest.name_any());
    let api: Api<Secret> = Api::namespaced(client.clone(), &dest.namespace().unwrap_or_default());
    let secret = api.get_opt(&name).await.map_err(|e| StoreError::Api {
        name: name.clone(),
        message: e.to_string(),
    })?;
    let Some(secret) = secret else {
        return Ok(None);
    };
    let data = secret_data(&secret);
    from_fields(
        |k| data.get(k).map(|v| String::from_utf8_lossy(v).into_owned()),
        &format!("Secret {name}"),
    )
}

/// The Secrets a destination refers to, for `hookline connect`: all of them must exist.
pub async fn read_referenced(
    client: &Client,
    namespace: &str,
    dest: &WebhookDestination,
) -> anyhow::Result<SecretStore> {
    let found = dereference::secrets(client, namespace, &dest.spec).await?;
    if let Some(missing) = found.missing.first() {
        anyhow::bail!(
            "Secret {namespace}/{missing}, which {} refers to, does not exist",
            dest.name_any()
        );
    }
    Ok(found.secrets)
}

/// The token manager's store in the cluster. The Lease makes this operator replica the only
/// writer, and there is one manager per destination, so no lock is needed beyond that.
pub struct SecretTokenStore {
    pub client: Client,
    pub dest: WebhookDestination,
}

impl TokenStore for SecretTokenStore {
    type Guard = ();
    async fn load(&self) -> Result<Option<TokenSet>, StoreError> {
        load(&self.client, &self.dest).await
    }
    async fn save(&self, tokens: &TokenSet) -> Result<(), StoreError> {
        save(&self.client, &self.dest, tokens)
            .await
            .map_err(|e| StoreError::Api {
                name: token_secret_name(&self.dest.name_any()),
                message: e.to_string(),
            })
    }
    async fn lock(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// One GET every few seconds per destination waiting for consent keeps the API server calm.
    fn poll_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(3)
    }
}
