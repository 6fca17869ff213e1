//! `hookline test -f FILE [--event EVENT.json]`: one real request per destination, with the answer.

use super::ManifestFiles;
use super::render::{build_request, read_event, through_function};
use super::samples;
use crate::engine::{TokenKeeping, token_source};
use crate::oauth::AccessToken;
use crate::oauth::manager::TokenSource;
use crate::pipeline::deliver::{HttpSender, Verdict};
use anyhow::Context;
use std::path::PathBuf;
use tokio::sync::watch;

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
    let (_stop, shutdown) = watch::channel(false);
    for dest in &destinations {
        let Some(event) = through_function(dest, &event)? else {
            println!(
                "--- {} ---\nnot sent: the insert function dropped the test event\n",
                dest.name
            );
            all_ok = false;
            continue;
        };
        let sender = HttpSender::new(1, dest.request.timeout)?;
        let tokens = token_source(
            dest,
            &TokenKeeping::DataDir,
            &args.data_dir,
            shutdown.clone(),
        )?;
        let token = match &tokens {
            Some(tokens) => Some(first_token(&dest.name, tokens, None).await?),
            None => None,
        };
        let request = build_request(dest, &event, token.as_ref().map(|t| &*t.secret))?;
        println!("--- {} ---\n{}", dest.name, request.to_redacted_text());
        let mut attempt = sender.send(&request).await;
        if let (Some(401), Some(tokens), Some(token)) = (attempt.status, &tokens, &token) {
            // Like delivery: one refresh and one retry.
            println!("401 with the stored token; refreshing it and trying once more");
            tokens.rejected(token, false);
            let fresh = first_token(&dest.name, tokens, Some(token)).await?;
            let request = build_request(dest, &event, Some(&fresh.secret))?;
            attempt = sender.send(&request).await;
        }
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

/// Waits for a usable token; gives up with the reason when the token manager reports a problem
/// it cannot get past alone, or after a while.
async fn first_token(
    name: &str,
    tokens: &TokenSource,
    rejected: Option<&AccessToken>,
) -> anyhow::Result<AccessToken> {
    let (_stop, mut never) = watch::channel(false);
    let mut state = tokens.watch();
    let deadline = tokio::time::Instant::now() + TOKEN_WAIT;
    loop {
        tokio::select! {
            t = tokens.usable(rejected, &mut never) => return t.context("stopped"),
            _ = tokio::time::sleep_until(deadline) => {
                let (_, reason, message) = tokens.state().condition();
                anyhow::bail!("destination {name}: no OAuth access token after {}s ({reason}: {message})", TOKEN_WAIT.as_secs());
            }
            _ = state.changed() => {
                let s = state.borrow_and_update().clone();
                if let Some(p) = s.problem && p.reason == "ConsentRequired" {
                    anyhow::bail!("destination {name}: {} ({})", p.message, p.reason);
                }
            }
        }
    }
}

const TOKEN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
