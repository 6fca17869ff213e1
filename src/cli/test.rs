//! `hookline test -f FILE [--event EVENT.json]`: one real request per destination, with the answer.

use super::ManifestFiles;
use super::render::{build_request, read_event};
use super::samples;
use crate::pipeline::deliver::{HttpSender, Verdict};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    manifests: ManifestFiles,
    /// The event to send (a JSON object); a built-in sample when not given
    #[arg(long, value_name = "EVENT.json")]
    event: Option<PathBuf>,
    /// Which built-in sample to send when --event is not given
    #[arg(long = "type", value_name = "TYPE", default_value = "track", value_parser = samples::TYPES)]
    event_type: String,
    /// The data dir of `hookline run`, where OAuth tokens are kept
    #[arg(long, default_value = "./.hookline")]
    data_dir: PathBuf,
}

pub async fn test(args: Args) -> anyhow::Result<i32> {
    let destinations = args.manifests.destinations()?;
    let event = match &args.event {
        Some(path) => read_event(path)?,
        None => samples::sample(&args.event_type),
    };
    let mut all_ok = true;
    for dest in &destinations {
        let request = build_request(dest, &event)?;
        println!("--- {} ---\n{}", dest.name, request.to_redacted_text());
        let sender = HttpSender::new(1, dest.request.timeout)?;
        let attempt = sender.send(&request).await;
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
