//! `hookline test`: one real request with the destination's real credentials, and the answer.
//! `-f FILE...` sends from this machine; `NAME -n NS` asks the operator to send it from the
//! cluster (an annotation carrying a request id) and waits for `status.lastTestEvent`.

use super::render::read_event;
use super::{DestinationTarget, Target};
use crate::api::WebhookDestination;
use crate::controller::test_event::{EVENT_ANNOTATION, REQUEST_ANNOTATION};
use crate::engine::{TokenKeeping, token_source};
use crate::pipeline::deliver::Verdict;
use crate::pipeline::samples;
use crate::pipeline::single::send_test;
use anyhow::{Context, bail};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: DestinationTarget,
    /// The event to send (a JSON object); a built-in sample when not given
    #[arg(long, value_name = "EVENT.json")]
    event: Option<PathBuf>,
    /// Which built-in sample to send when --event is not given
    #[arg(long = "type", value_name = "TYPE", default_value = "track", value_parser = samples::TYPES)]
    event_type: String,
    /// The data dir of `hookline run`, where OAuth tokens are kept (with -f)
    #[arg(long, default_value = "./.hookline")]
    data_dir: PathBuf,
    #[command(flatten)]
    egress: super::egress::RunEgress,
    /// How long to wait for the operator's answer, in seconds (with NAME)
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

pub async fn test(args: Args) -> anyhow::Result<i32> {
    let event = match &args.event {
        Some(path) => read_event(path)?,
        None => samples::sample(&args.event_type),
    };
    match args.target.target().await? {
        Target::Files(files) => test_local(&args, files, &event).await,
        Target::Cluster {
            api,
            namespace,
            name,
        } => test_in_cluster(&args, *api, &namespace, name, &event).await,
    }
}

async fn test_local(args: &Args, files: &[PathBuf], event: &Value) -> anyhow::Result<i32> {
    let destinations = super::load_destinations(files)?;
    let egress = args.egress.egress()?;
    let (_keep, shutdown) = watch::channel(false);
    let mut all_ok = true;
    for dest in &destinations {
        let tokens = token_source(
            dest,
            &TokenKeeping::DataDir,
            &args.data_dir,
            &egress,
            shutdown.clone(),
        )?;
        println!("--- {} ---", dest.name);
        let sent = match send_test(dest, event, tokens.as_ref(), &egress).await {
            Ok(sent) => sent,
            Err(e) => {
                println!("not sent: {e}\n");
                all_ok = false;
                continue;
            }
        };
        println!("{}", sent.request.to_redacted_text());
        let attempt = sent.attempt;
        let latency = attempt.latency.as_millis();
        match (attempt.status, &attempt.error) {
            (Some(status), _) => {
                println!("response: {status} in {latency} ms");
                if !attempt.body_excerpt.is_empty() {
                    println!("{}", attempt.body_excerpt);
                }
                all_ok &= attempt.verdict() == Verdict::Delivered;
            }
            (None, error) => {
                println!(
                    "no response after {latency} ms: {}",
                    error.as_deref().unwrap_or("unknown error")
                );
                all_ok = false;
            }
        }
        println!();
    }
    Ok(if all_ok { 0 } else { 1 })
}

async fn test_in_cluster(
    args: &Args,
    api: kube::Api<WebhookDestination>,
    namespace: &str,
    name: &str,
    event: &Value,
) -> anyhow::Result<i32> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let patch = json!({"metadata": {"annotations": {
        REQUEST_ANNOTATION: request_id,
        EVENT_ANNOTATION: serde_json::to_string(event)?,
    }}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| {
            format!("cannot ask for a test event on WebhookDestination {namespace}/{name}")
        })?;
    eprintln!("{namespace}/{name}: test event {request_id} requested; waiting for the operator");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let dest = api
            .get(name)
            .await
            .with_context(|| format!("cannot read WebhookDestination {namespace}/{name}"))?;
        let result = dest
            .status
            .and_then(|s| s.last_test_event)
            .filter(|t| t.request_id.as_deref() == Some(&request_id));
        if let Some(t) = result {
            println!("at: {}", t.at);
            match t.status_code {
                Some(code) => println!("response: {code} in {} ms", t.latency_millis.unwrap_or(0)),
                None => println!("no response"),
            }
            if let Some(error) = t.error.filter(|e| !e.is_empty()) {
                println!("{error}");
            }
            return Ok(if t.status_code.is_some_and(|c| (200..300).contains(&c)) {
                0
            } else {
                1
            });
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{namespace}/{name}: no answer from the operator within {} s; is it running? (kubectl get pods -l app.kubernetes.io/name=hookline)",
                args.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
