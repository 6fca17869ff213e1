//! `hookline controller`: the operator, against the cluster it runs in (or `KUBECONFIG`).

use crate::controller::build::{BuildOptions, JetStreamOptions};
use crate::controller::identities::GatewayIdentity;
use crate::controller::nats_keys::KeysSecrets;
use crate::controller::operator::{self, OperatorOptions};
use crate::controller::worker_status::{DEFAULT_URL, WorkerStatusOptions};
use crate::jetstream::NatsArgs;
use crate::jetstream::identity::{Identities, Issuer};
use crate::shutdown;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only reconcile WebhookDestinations in this namespace (default: all namespaces)
    #[arg(long, env = "HOOKLINE_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Run only while holding the Lease `hookline-controller` (for several replicas)
    #[arg(long, env = "HOOKLINE_LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the leader-election Lease (default: the client's namespace)
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease and in Events (default: the host name)
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Address of /healthz, /readyz and /metrics
    #[arg(long, default_value = "0.0.0.0:8080", env = "HOOKLINE_LISTEN")]
    listen: SocketAddr,
    /// Image the workers run when a destination sets no `spec.worker.image` (the operator's own)
    #[arg(long, env = "HOOKLINE_WORKER_IMAGE", default_value = concat!("ghcr.io/hookline/hookline:", env!("CARGO_PKG_VERSION")))]
    worker_image: String,
    #[command(flatten)]
    nats: NatsArgs,
    /// JetStream mode, identities per role: the seed (SA…) of a signing key of the NATS account
    /// Hookline uses; the operator issues each destination's workers and the gateway their own
    /// short-lived identity with it, instead of a copy of its own credentials
    #[arg(
        long,
        env = "HOOKLINE_NATS_SIGNING_KEY",
        value_name = "FILE",
        requires = "nats_account"
    )]
    nats_signing_key: Option<std::path::PathBuf>,
    /// The public key (A…) of the account that signing key belongs to
    #[arg(long, env = "HOOKLINE_NATS_ACCOUNT", value_name = "KEY")]
    nats_account: Option<String>,
    /// JetStream mode, identities per role: the Secret (in the operator's namespace) with
    /// Hookline's NATS keys, as `hookline nats setup --apply` makes it; the operator issues
    /// identities with them, and its own
    #[arg(
        long,
        env = "HOOKLINE_NATS_KEYS_SECRET",
        value_name = "NAME",
        conflicts_with = "nats_signing_key"
    )]
    nats_keys_secret: Option<String>,
    /// With --nats-keys-secret: make the keys when that Secret does not exist yet, and keep
    /// the NATS servers' configuration (`auth.conf`) in this Secret (the chart's nats.install)
    #[arg(
        long,
        env = "HOOKLINE_NATS_SERVER_SECRET",
        value_name = "NAME",
        requires = "nats_keys_secret"
    )]
    nats_server_secret: Option<String>,
    /// How long an issued identity is valid; it is renewed halfway (s, m, h or d)
    #[arg(long, env = "HOOKLINE_NATS_IDENTITY_LIFETIME", default_value = "1h", value_parser = crate::jetstream::parse_age)]
    nats_identity_lifetime: Duration,
    /// The Secret, in the operator's namespace, that the operator keeps the gateway's identity
    /// in (with --nats-signing-key)
    #[arg(long, env = "HOOKLINE_GATEWAY_NATS_SECRET", value_name = "NAME")]
    gateway_nats_secret: Option<String>,
    /// JetStream mode: the gateway's URL, reported as `status.ingestUrl` of destinations with a
    /// write key
    #[arg(long, env = "HOOKLINE_GATEWAY_URL")]
    gateway_url: Option<String>,
    /// Where a destination's worker answers /status, read for the resource's `Delivering`
    /// condition (the endpoint's health); `{name}` and `{namespace}` are the destination's.
    /// Empty: not read
    #[arg(long, env = "HOOKLINE_WORKER_STATUS_URL", default_value = DEFAULT_URL)]
    worker_status_url: String,
    /// How often each destination's worker is read, in seconds
    #[arg(long, env = "HOOKLINE_WORKER_STATUS_EVERY", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    worker_status_every: u64,
    #[command(flatten)]
    egress: super::egress::OperatorEgress,
}

/// What the workers get from the operator's environment: JSON logs (only when asked: `text` is
/// their default, and passing it would roll every worker) and the OpenTelemetry settings.
fn passed_env() -> std::collections::BTreeMap<String, String> {
    std::env::vars()
        .filter(|(name, value)| {
            (name == "HOOKLINE_LOG_FORMAT" && value == "json") || name.starts_with("OTEL_")
        })
        .collect()
}

pub async fn controller(args: Args) -> anyhow::Result<i32> {
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let leader_election = args.leader_election.then(|| {
        args.lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string())
    });
    let identity = args
        .identity
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let own_namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let mut nats_args = args.nats.clone();
    let issuer = match (
        &args.nats_signing_key,
        &args.nats_account,
        &args.nats_keys_secret,
    ) {
        (Some(file), Some(account), _) => {
            let seed = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read --nats-signing-key {}", file.display()))?;
            let what = format!("--nats-signing-key {}", file.display());
            Some(Issuer::new(&seed, account, &what)?)
        }
        (_, _, Some(keys)) => {
            let keys = KeysSecrets {
                namespace: &own_namespace,
                keys,
                make: args.nats_server_secret.is_some(),
                server: args.nats_server_secret.as_deref(),
            }
            .ensure(&client)
            .await?;
            nats_args.own_creds = Some(keys.operator_creds()?);
            Some(keys.issuer()?)
        }
        _ => None,
    };
    let identities = issuer.map(|issuer| {
        Arc::new(Identities {
            issuer,
            lifetime: args.nats_identity_lifetime,
        })
    });
    let nats = nats_args.connect("hookline controller").await?;
    let jetstream = match &nats {
        Some(_) => Some(JetStreamOptions {
            url: nats_args.url.clone(),
            credentials: nats_args.credentials()?,
            gateway_url: args.gateway_url.clone(),
            identities: identities.clone(),
        }),
        None => None,
    };
    let gateway_identity = match (identities, args.gateway_nats_secret, &jetstream) {
        (Some(identities), Some(name), Some(js)) => Some(GatewayIdentity {
            identities,
            namespace: own_namespace.clone(),
            name,
            ca: js.credentials.get("ca.crt").cloned(),
        }),
        _ => None,
    };
    let egress = args.egress.egress()?;
    let shutdown = shutdown::on_signal("stopping: finishing reconciles in flight");
    operator::run(
        client,
        OperatorOptions {
            watch_namespace: args.watch_namespace,
            leader_election,
            identity,
            listen: args.listen,
            build: BuildOptions {
                default_image: args.worker_image,
                jetstream,
                passed_env: passed_env(),
                egress_args: args.egress.workers().args(),
            },
            jetstream: nats.map(|n| (n, nats_args.retention())),
            gateway_identity,
            worker_status: (!args.worker_status_url.is_empty()).then(|| WorkerStatusOptions {
                url: args.worker_status_url,
                every: Duration::from_secs(args.worker_status_every),
            }),
            egress,
        },
        shutdown,
    )
    .await?;
    Ok(0)
}
