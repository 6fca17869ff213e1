//! `hookline gateway`: the cluster's shared ingestion service in JetStream mode (API §8). It
//! serves the Segment API for every destination with a write key, knowing the keys only by
//! the digests in the routes bucket, and stores each event once; it keeps no state and needs no
//! Kubernetes permissions.

use crate::jetstream::NatsArgs;
use crate::jetstream::routes::RouteTable;
use crate::pipeline::ingest::{self, IngestState};
use crate::pipeline::store::{EventStore, Routes};
use crate::shutdown::{self, stopped};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address of the ingestion API, /metrics, /healthz and /readyz
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    nats: NatsArgs,
}

pub async fn gateway(args: Args) -> anyhow::Result<i32> {
    let Some(nats) = args.nats.connect("hookline gateway").await? else {
        anyhow::bail!(
            "hookline gateway needs JetStream: pass --nats nats://HOST:4222 (or set HOOKLINE_NATS_URL)"
        );
    };
    let shutdown = shutdown::on_signal("stopping: answering requests in flight");
    let table = RouteTable::default();
    tokio::spawn(table.clone().follow(nats.clone(), shutdown.clone()));
    let routes = table.clone();
    let state = Arc::new(IngestState {
        store: EventStore::stream(nats),
        routes: Routes::Gateway(table),
        ready: false.into(),
        status: Box::new(move || serde_json::json!({"routesLoaded": routes.loaded()})),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, nats = %args.nats.url, "hookline gateway is running");
    state.ready.store(true, Ordering::Release);
    let mut server_shutdown = shutdown.clone();
    axum::serve(listener, ingest::router(state))
        .with_graceful_shutdown(async move { stopped(&mut server_shutdown).await })
        .await
        .context("the gateway's server failed")?;
    Ok(0)
}
