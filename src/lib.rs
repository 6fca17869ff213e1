//! Hookline: a Kubernetes-native Extensible Webhooks destination.
//!
//! The data path lives in [`pipeline`], one module per stage in the order events flow; the
//! `WebhookDestination` resource is in [`api`]; loading manifests and secrets with no cluster is
//! [`config`]; the subcommands are in [`cli`].

pub mod api;
pub mod cli;
pub mod config;
pub mod controller;
pub mod egress;
pub mod engine;
pub mod jetstream;
pub mod metrics;
pub mod oauth;
pub mod pipeline;
pub mod runtimes;
pub mod shutdown;
pub mod telemetry;
pub mod tenancy;

/// The innermost error's message: what actually went wrong, without the wrappers' prefixes.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
