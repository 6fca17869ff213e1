//! `hookline render -f FILE --event EVENT.json`: what an event would become, sending nothing.

use super::{ManifestFiles, Output};
use crate::pipeline::deliver::request::OutgoingRequest;
use crate::pipeline::single::{SingleError, build_request, through_function};
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
        match through_function(dest, &event) {
            Ok(event) => requests.push(
                build_request(dest, &event, None)
                    .with_context(|| format!("destination {}", dest.name))?,
            ),
            Err(e @ SingleError::Dropped(_)) => eprintln!("{}: {e}", dest.name),
            Err(e) => return Err(e).with_context(|| format!("destination {}", dest.name)),
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
