//! The operator: each WebhookDestination becomes a running delivery worker.
//!
//! A reconcile ([`reconcile`]) reads the destination's Secrets ([`dereference`]), checks the
//! spec and credentials ([`validate`]), builds the desired children ([`build`]), applies them
//! with Server-Side Apply ([`apply`]) and writes the status ([`conditions`]), including the
//! endpoint's health as the workers see it ([`worker_status`]). [`operator`] runs
//! the controller loop with leader election, health and metrics.

pub mod apply;
pub mod backoff;
pub mod build;
pub mod children;
pub mod conditions;
pub mod dereference;
pub mod events;
pub mod identities;
pub mod jetstream;
pub mod keys;
pub mod nats_keys;
pub mod operator;
pub mod port_forward;
pub mod reconcile;
pub mod sources;
pub mod test_event;
pub mod token_secret;
pub mod tokens;
pub mod validate;
pub mod worker_status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the WebhookDestination has no namespace")]
    NotNamespaced,
    #[error(transparent)]
    JetStream(crate::jetstream::NatsError),
}

impl Error {
    /// A metric label for the failure: the API's reason (`Conflict`, `Forbidden`…) when known.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) => match status.code {
                401 => "Unauthorized",
                403 => "Forbidden",
                404 => "NotFound",
                409 => "Conflict",
                422 => "Invalid",
                429 => "TooManyRequests",
                _ => "ApiError",
            },
            Error::Kube(_) => "ApiUnreachable",
            Error::NotNamespaced => "NotNamespaced",
            Error::JetStream(_) => "JetStreamUnavailable",
        }
    }
}
