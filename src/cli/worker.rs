//! `hookline worker --config FILE`: one destination's delivery worker, as the operator's
//! Deployments run it.

use crate::config::worker::WorkerConfig;
use crate::engine::{self, EngineOptions, TokenKeeping};
use crate::shutdown;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The worker configuration the operator renders (its ConfigMap, mounted as a file)
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

pub async fn worker(args: Args) -> anyhow::Result<i32> {
    let config = WorkerConfig::load(&args.config)?;
    let secrets = config.read_secrets()?;
    let dest = config.resolve(&secrets)?;
    let (publish, live) = tokio::sync::watch::channel(Arc::new(dest));
    let shutdown = shutdown::on_signal("stopping: finishing requests in flight");
    let options = EngineOptions {
        listen: config.listen,
        data_dir: config.data_dir.clone(),
        tokens: TokenKeeping::Cluster {
            secrets_dir: config.secrets_dir.clone(),
        },
    };
    tokio::spawn(config.reload_secrets(secrets, publish, shutdown.clone()));
    engine::run(vec![live], options, shutdown).await?;
    Ok(0)
}
