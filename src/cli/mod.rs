//! The `hookline` command line: one file per subcommand.

mod connect;
mod controller;
pub mod crd;
mod dlq;
mod egress;
mod gateway;
mod nats;
pub mod reference;
mod render;
mod run;
mod test;
mod worker;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "hookline",
    version,
    about = "Kubernetes-native Extensible Webhooks destination: Segment events in, mapped HTTP requests out"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run WebhookDestination manifests on this machine, with no Kubernetes, until stopped
    Run(run::Args),
    /// Print the HTTP request(s) an event would become; sends nothing
    Render(render::Args),
    /// Send one test event to each destination and print the request, answer and latency
    Test(test::Args),
    /// Authorize an OAuth 2.0 AuthorizationCode destination (PKCE, loopback redirect) and store its tokens
    Connect(connect::Args),
    /// List or replay dead-lettered events
    Dlq(dlq::Args),
    /// Run the operator: reconcile WebhookDestinations into delivery workers
    Controller(Box<controller::Args>),
    /// Run one destination's delivery worker from the configuration the operator renders
    Worker(worker::Args),
    /// Run the shared ingestion service of JetStream mode: the Segment API for every destination with a write key
    Gateway(gateway::Args),
    /// Set up a NATS of your own for identities per role: Hookline's NATS keys and the servers' configuration
    Nats(nats::Args),
    /// Print the WebhookDestination and WebhookSource CustomResourceDefinitions (YAML)
    Crd,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq)]
pub enum Output {
    #[default]
    Text,
    Json,
}

/// `--admin-listen`, as `run` and `worker` take it (API §10).
#[derive(clap::Args, Debug)]
pub struct AdminListen {
    /// Address of the admin listener, which alone serves the dead letters (GET /dlq, POST
    /// /dlq/replay); keep it on loopback: no Service exposes it
    #[arg(long = "admin-listen", value_name = "ADDR", default_value_t = std::net::SocketAddr::from(([127, 0, 0, 1], crate::pipeline::admin::DEFAULT_PORT)))]
    pub addr: std::net::SocketAddr,
}

/// `-f FILE...` as every subcommand that reads manifests takes it.
#[derive(clap::Args, Debug)]
pub struct ManifestFiles {
    /// WebhookDestination, WebhookSource, Secret and Namespace manifests (YAML or JSON; several
    /// documents per file allowed)
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
}

impl ManifestFiles {
    pub fn destinations(&self) -> anyhow::Result<Vec<crate::config::destination::Destination>> {
        load_destinations(&self.files)
    }

    /// The destinations as `hookline run` takes them: each reading the WebhookSource it names.
    pub fn destinations_with_sources(
        &self,
    ) -> anyhow::Result<Vec<crate::config::destination::Destination>> {
        let manifests = manifests_with_destinations(&self.files)?;
        Ok(crate::config::sources::bind(&manifests)?)
    }
}

/// `NAME -n NAMESPACE` (a destination in the cluster) or `-f FILE...` (manifests, as for
/// `hookline run`), as `test` and `connect` take them.
#[derive(clap::Args, Debug)]
pub struct DestinationTarget {
    /// A WebhookDestination in the cluster (with -n); omit it to use -f
    name: Option<String>,
    /// Namespace of NAME (default: the kubeconfig's)
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// WebhookDestination and Secret manifests, as for `hookline run`
    #[arg(short = 'f', long = "filename", value_name = "FILE", num_args = 1..)]
    files: Vec<PathBuf>,
}

pub enum Target<'a> {
    Cluster {
        api: Box<kube::Api<crate::api::WebhookDestination>>,
        namespace: String,
        name: &'a str,
    },
    Files(&'a [PathBuf]),
}

impl DestinationTarget {
    /// Which of the two was given; for the cluster, a client from the kubeconfig.
    pub async fn target(&self) -> anyhow::Result<Target<'_>> {
        match (&self.name, self.files.is_empty()) {
            (Some(_), false) => {
                anyhow::bail!(
                    "give either NAME (a destination in the cluster) or -f FILE, not both"
                )
            }
            (None, true) => anyhow::bail!(
                "give NAME -n NAMESPACE for a destination in the cluster, or -f FILE for one run on this machine"
            ),
            (None, false) => Ok(Target::Files(&self.files)),
            (Some(name), true) => {
                let client = kube::Client::try_default().await.map_err(|e| {
                    anyhow::anyhow!(
                        "cannot reach the Kubernetes API (KUBECONFIG or in-cluster config): {e}"
                    )
                })?;
                let namespace = self
                    .namespace
                    .clone()
                    .unwrap_or_else(|| client.default_namespace().to_string());
                Ok(Target::Cluster {
                    api: Box::new(kube::Api::namespaced(client, &namespace)),
                    namespace,
                    name,
                })
            }
        }
    }
}

/// Every WebhookDestination in `files`, resolved against the Secrets in them.
pub fn load_destinations(
    files: &[PathBuf],
) -> anyhow::Result<Vec<crate::config::destination::Destination>> {
    let manifests = manifests_with_destinations(files)?;
    manifests
        .destinations
        .iter()
        .map(|d| {
            crate::config::destination::Destination::resolve(d, &manifests.secrets)
                .map_err(Into::into)
        })
        .collect()
}

/// The manifests in `files`, which must hold at least one WebhookDestination.
fn manifests_with_destinations(
    files: &[PathBuf],
) -> anyhow::Result<crate::config::manifests::Manifests> {
    let manifests = crate::config::manifests::Manifests::load(files)?;
    if manifests.destinations.is_empty() {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        anyhow::bail!(
            "{}: no WebhookDestination found (kind: WebhookDestination, apiVersion: hookline.dev/v1alpha1)",
            names.join(", ")
        );
    }
    Ok(manifests)
}

/// Runs the parsed command; the exit status is the returned code.
pub fn main(cli: Cli) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Render(args) => render::render(args),
            Command::Test(args) => test::test(args).await,
            Command::Connect(args) => connect::connect(args).await,
            Command::Dlq(args) => dlq::dlq(args).await,
            Command::Crd => crd::crd(),
            Command::Controller(args) => controller::controller(*args).await,
            Command::Nats(args) => nats::nats(args).await,
            Command::Worker(args) => worker::worker(args).await,
            Command::Gateway(args) => gateway::gateway(args).await,
        }
    })
}
