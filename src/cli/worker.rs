//! `hookline worker --config FILE`: one destination's delivery worker, as the operator's
//! Deployments run it.

use crate::config::worker::WorkerConfig;
use crate::engine::{self, Backend, EngineOptions, TokenKeeping};
use crate::jetstream::NatsArgs;
use crate::shutdown;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The worker configuration the operator renders (its ConfigMap, mounted as a file)
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Local mode: after SIGTERM, how long to keep delivering what is queued (stop ingesting,
    /// turn unready); a little less than the pod's termination grace period
    #[arg(long, env = "HOOKLINE_DRAIN_SECONDS", default_value_t = 0)]
    drain_seconds: u64,
    #[command(flatten)]
    admin: super::AdminListen,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    egress: super::egress::WorkerEgress,
}

pub async fn worker(args: Args) -> anyhow::Result<i32> {
    let config = WorkerConfig::load(&args.config)?;
    let secrets = config.read_secrets()?;
    let dest = config.resolve(&secrets)?;
    let (publish, live) = tokio::sync::watch::channel(Arc::new(dest));
    let backend = match args.nats.connect("hookline worker").await? {
        // The operator owns the streams and this destination's consumer.
        Some(nats) => Backend::JetStream {
            nats,
            objects: None,
        },
        None => Backend::Local {
            drain: (args.drain_seconds > 0).then(|| Duration::from_secs(args.drain_seconds)),
        },
    };
    let shutdown = shutdown::on_signal("stopping: finishing requests in flight");
    let options = EngineOptions {
        listen: config.listen,
        admin_listen: args.admin.addr,
        data_dir: config.data_dir.clone(),
        tokens: TokenKeeping::Cluster {
            secrets_dir: config.secrets_dir.clone(),
        },
        backend,
        egress: args.egress.egress()?,
    };
    tokio::spawn(config.reload_secrets(secrets, publish, shutdown.clone()));
    engine::run(vec![live], options, shutdown).await?;
    Ok(0)
}
