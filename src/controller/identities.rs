//! The operator's side of NATS identities per role (API §10): each destination's workers, and
//! the gateway, hold an identity issued for them alone, in a Secret the operator keeps and
//! renews halfway through its life — the same discipline as OAuth tokens: renewed before it
//! expires, never after a refusal.

use super::Error;
use super::apply;
use super::build::{IDENTITY_KEY, MANAGED_BY};
use super::children::{self, Applied};
use crate::api::WebhookDestination;
use crate::jetstream::identity::{Identities, IdentityError, Issued};
use crate::jetstream::names::DestinationNames;
use crate::shutdown::stopped;
use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// On an identity's Secret: when the operator issues the next one (RFC 3339). Read after a
/// restart, so an operator that restarts issues nothing while the identities are fresh.
pub const RENEW_AT_ANNOTATION: &str = "hookline.dev/nats-identity-renew-at";

impl From<IdentityError> for Error {
    fn from(e: IdentityError) -> Error {
        Error::JetStream(crate::jetstream::NatsError::api("identity", e))
    }
}

fn renew_at_of(meta: Option<&ObjectMeta>) -> Option<DateTime<Utc>> {
    let text = meta?.annotations.as_ref()?.get(RENEW_AT_ANNOTATION)?;
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.to_utc())
}

/// Puts an issued identity into a (stamped) Secret.
fn carry(secret: &mut Secret, issued: &Issued, renew_at: DateTime<Utc>) {
    secret.data.get_or_insert_with(BTreeMap::new).insert(
        IDENTITY_KEY.into(),
        ByteString(issued.creds.clone().into_bytes()),
    );
    secret
        .annotations_mut()
        .insert(RENEW_AT_ANNOTATION.into(), renew_at.to_rfc3339());
}

/// When each destination's workers' identity is renewed next, as this operator last issued it
/// (its cache of the Secret may not have caught up yet).
#[derive(Default)]
pub struct WorkerIdentities {
    renew_at: Mutex<HashMap<ObjectRef<WebhookDestination>, DateTime<Utc>>>,
}

impl WorkerIdentities {
    /// Applies the workers' NATS Secret with a fresh identity unless the one it holds is still
    /// fresh and the rest of the Secret is current.
    pub async fn keep(
        &self,
        client: &Client,
        applied: &Applied,
        identities: &Identities,
        dest: &WebhookDestination,
        cached: Option<&ObjectMeta>,
        secret: &mut Secret,
    ) -> Result<(), Error> {
        children::stamp(secret);
        let key = ObjectRef::from_obj(dest);
        let now = Utc::now();
        let known = self
            .renew_at
            .lock()
            .expect("identities lock")
            .get(&key)
            .copied();
        let renew_at = known.max(renew_at_of(cached));
        if renew_at.is_some_and(|t| t > now) && children::up_to_date(cached, secret, applied) {
            self.renew_at
                .lock()
                .expect("identities lock")
                .insert(key, renew_at.expect("checked above"));
            return Ok(());
        }
        let names = DestinationNames::new(&dest.namespace().unwrap_or_default(), &dest.name_any());
        let issued = identities.worker(&names, now)?;
        let renew_at = identities.renew_at(&issued);
        carry(secret, &issued, renew_at);
        apply::apply(client, secret).await?;
        applied.record(secret);
        tracing::info!(destination = %names.consumer(), expires = %issued.expires, "issued the workers' NATS identity");
        self.renew_at
            .lock()
            .expect("identities lock")
            .insert(key, renew_at);
        Ok(())
    }

    /// How long until the destination's identity is renewed, when it has one.
    pub fn until_renewal(&self, dest: &WebhookDestination) -> Option<Duration> {
        let at = *self
            .renew_at
            .lock()
            .expect("identities lock")
            .get(&ObjectRef::from_obj(dest))?;
        Some((at - Utc::now()).to_std().unwrap_or_default())
    }

    pub fn retain(&self, exists: impl Fn(&ObjectRef<WebhookDestination>) -> bool) {
        self.renew_at
            .lock()
            .expect("identities lock")
            .retain(|k, _| exists(k));
    }
}

/// The gateway's identity, kept in a Secret of the operator's namespace that the chart's
/// gateway mounts.
#[derive(Debug, Clone)]
pub struct GatewayIdentity {
    pub identities: Arc<Identities>,
    pub namespace: String,
    pub name: String,
    /// The CA the NATS servers' certificates chain to, beside the identity.
    pub ca: Option<String>,
}

/// How soon a failed renewal is tried again.
const RETRY: Duration = Duration::from_secs(5);

impl GatewayIdentity {
    /// Issues the gateway's identity whenever it is due, until shutdown.
    pub async fn keep(self, client: Client, mut shutdown: watch::Receiver<bool>) {
        let api: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        loop {
            let wait = match self.renew_if_due(&client, &api).await {
                Ok(renew_at) => (renew_at - Utc::now()).to_std().unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(secret = %self.name, error = %e, "cannot renew the gateway's NATS identity; trying again");
                    RETRY
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stopped(&mut shutdown) => return,
            }
        }
    }

    /// When the identity is renewed next.
    async fn renew_if_due(
        &self,
        client: &Client,
        api: &Api<Secret>,
    ) -> Result<DateTime<Utc>, Error> {
        let now = Utc::now();
        let current = api.get_metadata_opt(&self.name).await?;
        if let Some(at) = renew_at_of(current.as_ref().map(|m| &m.metadata))
            && at > now
        {
            return Ok(at);
        }
        let issued = self.identities.gateway(now)?;
        let renew_at = self.identities.renew_at(&issued);
        let mut secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(MANAGED_BY.0.into(), MANAGED_BY.1.into())])),
                ..ObjectMeta::default()
            },
            data: self
                .ca
                .as_ref()
                .map(|ca| BTreeMap::from([("ca.crt".into(), ByteString(ca.clone().into_bytes()))])),
            ..Secret::default()
        };
        carry(&mut secret, &issued, renew_at);
        apply::apply(client, &secret).await?;
        tracing::info!(secret = %self.name, expires = %issued.expires, "issued the gateway's NATS identity");
        Ok(renew_at)
    }
}
