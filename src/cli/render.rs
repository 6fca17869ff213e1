//! `hookline render -f FILE --event EVENT.json`: what an event would become, sending nothing.

use super::{ManifestFiles, Output};
use crate::config::destination::Destination;
use crate::pipeline::batch::{Batch, Item};
use crate::pipeline::deliver::request::{OutgoingRequest, request_id};
use crate::pipeline::transform::Outcome;
use anyhow::Context;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    manifests: ManifestFiles,
    /// The event, a JSON object, used as it is (no validation or enrichment)
    #[arg(long, value_name = "EVENT.json")]
    event: PathBuf,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

pub fn render(args: Args) -> anyhow::Result<i32> {
    let destinations = args.manifests.destinations()?;
    let event = read_event(&args.event)?;
    let mut requests = Vec::new();
    for dest in &destinations {
        if !dest.subscription.matches(&event) {
            continue;
        }
        if let Some(event) = through_function(dest, &event)? {
            requests.push(
                build_request(dest, &event, None)
                    .with_context(|| format!("destination {}", dest.name))?,
            );
        }
    }
    match args.output {
        Output::Json => {
            let list: Vec<Value> = requests
                .iter()
                .map(OutgoingRequest::to_redacted_json)
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Output::Text if requests.is_empty() => {
            eprintln!("no request: the event does not match any destination's subscription")
        }
        Output::Text => {
            for r in &requests {
                println!("{}", r.to_redacted_text());
            }
        }
    }
    Ok(0)
}

/// The event after the insert function: `None` when it drops the event; an error when it
/// fails, so `render` and `test` show why.
pub fn through_function(dest: &Destination, event: &Value) -> anyhow::Result<Option<Value>> {
    let Some(function) = &dest.transform else {
        return Ok(Some(event.clone()));
    };
    match function.run(event, &dest.settings) {
        Outcome::Continue(event) => Ok(Some(event)),
        Outcome::Drop { reason, message } => {
            eprintln!(
                "{}: the insert function dropped the event ({reason}{}{message})",
                dest.name,
                if message.is_empty() { "" } else { ": " }
            );
            Ok(None)
        }
        Outcome::Retry(message) => {
            anyhow::bail!(
                "destination {}: the insert function asked for a retry: {message}",
                dest.name
            )
        }
        Outcome::Fail(message) => {
            anyhow::bail!(
                "destination {}: the insert function failed: {message}",
                dest.name
            )
        }
    }
}

pub fn read_event(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let event: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    anyhow::ensure!(
        event.is_object(),
        "{}: the event must be a JSON object",
        path.display()
    );
    Ok(event)
}

/// The single request one event becomes at `dest` (mapped, batched as one, signed).
/// The request an event becomes; an OAuth 2.0 destination's `Authorization` header carries
/// `access_token`, or shows redacted when there is none (render fetches no token).
pub fn build_request(
    dest: &Destination,
    event: &Value,
    access_token: Option<&str>,
) -> anyhow::Result<OutgoingRequest> {
    let batch = Batch {
        items: vec![Item::mapped(0, event.clone(), &dest.mapping)?],
        as_array: dest.batching.size > 1,
    };
    let mut request = dest.request.build(
        &request_id(&batch.message_ids()),
        batch.body(),
        chrono::Utc::now().timestamp(),
    );
    if dest.oauth.is_some() {
        request.authorize(access_token.unwrap_or_default());
    }
    Ok(request)
}
