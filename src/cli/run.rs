//! `hookline run -f FILE...`: the whole engine on this machine.

use super::ManifestFiles;
use crate::config::destination;
use crate::engine::{self, Backend, EngineOptions, TokenKeeping};
use crate::jetstream::NatsArgs;
use crate::shutdown;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    manifests: ManifestFiles,
    /// Address of the ingestion API (Segment HTTP Tracking API), /metrics, /healthz and /status
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the durable queue, cursors and dead-letter store live (with --nats: only tokens)
    #[arg(long, default_value = "./.hookline")]
    data_dir: PathBuf,
    #[command(flatten)]
    admin: super::AdminListen,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    egress: super::egress::RunEgress,
}

pub async fn run(args: Args) -> anyhow::Result<i32> {
    let destinations = args
        .manifests
        .destinations_with_sources()?
        .into_iter()
        .map(destination::fixed)
        .collect();
    let backend = match args.nats.connect("hookline run").await? {
        Some(nats) => Backend::JetStream {
            nats,
            objects: Some(args.nats.retention()),
        },
        None => Backend::Local { drain: None },
    };
    let shutdown = shutdown::on_signal("stopping: finishing requests in flight");
    engine::run(
        destinations,
        EngineOptions {
            listen: args.listen,
            admin_listen: args.admin.addr,
            data_dir: args.data_dir,
            tokens: TokenKeeping::DataDir,
            backend,
            egress: args.egress.egress()?,
        },
        shutdown,
    )
    .await?;
    Ok(0)
}
