//! `hookline dlq list|replay --data-dir DIR` (the local store), `NAME -n NS` (a destination in
//! the cluster, through the API server's port-forward to a worker pod's admin listener, with the
//! kubeconfig alone), or `NAME --nats URL` (the dead-letter stream directly).

use super::Output;
use crate::controller::port_forward;
use crate::jetstream::NatsArgs;
use crate::jetstream::names::DestinationNames;
use crate::pipeline::admin;
use crate::pipeline::dead_letters::DeadLetters;
use crate::pipeline::deliver::dlq::{DeadLetter, DeadLetterStore};
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// List dead-lettered events
    List {
        #[command(flatten)]
        common: Common,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// Re-queue dead-lettered events: the running `hookline run` on this data dir (or the next one
    /// started on it) delivers them again, to their own destination only
    Replay {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Args, Debug)]
struct Common {
    /// A WebhookDestination in the cluster (with -n), or in JetStream (with --nats)
    name: Option<String>,
    /// Namespace of NAME (default: the kubeconfig's; with --nats: "default")
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// The data dir of `hookline run`
    #[arg(long, default_value = "./.hookline")]
    data_dir: PathBuf,
    /// Only this destination's events (with --data-dir)
    #[arg(long)]
    destination: Option<String>,
    #[command(flatten)]
    nats: NatsArgs,
}

/// Where the dead letters are.
enum Place {
    DataDir(PathBuf),
    Cluster {
        client: kube::Client,
        namespace: String,
        name: String,
    },
    JetStream(DeadLetters),
}

impl Common {
    async fn place(&self) -> anyhow::Result<Place> {
        let Some(name) = &self.name else {
            return Ok(Place::DataDir(self.data_dir.clone()));
        };
        if let Some(nats) = self.nats.connect("hookline dlq").await? {
            let namespace = self.namespace.as_deref().unwrap_or("default");
            return Ok(Place::JetStream(DeadLetters::Stream {
                nats,
                destinations: vec![DestinationNames::new(namespace, name)],
            }));
        }
        // A refusal is answered at once, not after kube's minutes of backoff.
        let mut config = kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the Kubernetes API (KUBECONFIG or in-cluster config): {e}"
            )
        })?;
        config.default_retry = false;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config)?;
        Ok(Place::Cluster {
            client,
            namespace,
            name: name.clone(),
        })
    }
}

/// `method path` on the admin listener of one of the destination's ready worker pods.
async fn on_a_worker(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    method: axum::http::Method,
    path: &str,
) -> anyhow::Result<String> {
    port_forward::request(
        client,
        namespace,
        name,
        admin::DEFAULT_PORT,
        (method, path),
        None,
    )
    .await
}

async fn list(place: &Place, destination: Option<&str>) -> anyhow::Result<Vec<DeadLetter>> {
    Ok(match place {
        Place::DataDir(dir) => DeadLetterStore::new(dir)
            .list()?
            .into_iter()
            .filter(|e| destination.is_none_or(|d| d == e.destination))
            .collect(),
        Place::Cluster {
            client,
            namespace,
            name,
        } => {
            let text =
                on_a_worker(client, namespace, name, axum::http::Method::GET, "/dlq").await?;
            serde_json::from_str(&text)
                .context("the worker's /dlq answer is not a list of dead letters")?
        }
        Place::JetStream(letters) => letters.list().await.map_err(anyhow::Error::msg)?,
    })
}

pub async fn dlq(args: Args) -> anyhow::Result<i32> {
    match args.action {
        Action::List { common, output } => {
            let place = common.place().await?;
            let entries = list(&place, common.destination.as_deref()).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
                Output::Text if entries.is_empty() => println!("no dead-lettered events"),
                Output::Text => {
                    println!(
                        "{:<24} {:<26} {:>8} {:>6}  LAST ERROR",
                        "DESTINATION", "FAILED AT", "ATTEMPTS", "STATUS"
                    );
                    for e in &entries {
                        let status = e.last_status.map_or("-".to_string(), |s| s.to_string());
                        println!(
                            "{:<24} {:<26} {:>8} {:>6}  {}",
                            e.destination, e.failed_at, e.attempts, status, e.last_error
                        );
                    }
                }
            }
        }
        Action::Replay { common } => match common.place().await? {
            Place::DataDir(dir) => {
                let n = DeadLetterStore::new(&dir).replay(&dir, common.destination.as_deref())?;
                println!(
                    "re-queued {n} event(s); `hookline run --data-dir {}` delivers them",
                    dir.display()
                );
            }
            Place::Cluster {
                client,
                namespace,
                name,
            } => {
                let text = on_a_worker(
                    &client,
                    &namespace,
                    &name,
                    axum::http::Method::POST,
                    "/dlq/replay",
                )
                .await?;
                let answer: serde_json::Value = serde_json::from_str(&text)?;
                println!(
                    "re-queued {} event(s) for {namespace}/{name}",
                    answer["replayed"]
                );
            }
            Place::JetStream(letters) => {
                let n = letters.replay().await.map_err(anyhow::Error::msg)?;
                println!("re-queued {n} event(s)");
            }
        },
    }
    Ok(0)
}
