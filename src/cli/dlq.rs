//! `hookline dlq list|replay --data-dir DIR`.

use super::Output;
use crate::pipeline::deliver::dlq::DeadLetterStore;
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
    /// The data dir of `hookline run`
    #[arg(long, default_value = "./.hookline")]
    data_dir: PathBuf,
    /// Only this destination's events
    #[arg(long)]
    destination: Option<String>,
}

pub fn dlq(args: Args) -> anyhow::Result<i32> {
    match args.action {
        Action::List { common, output } => {
            let store = DeadLetterStore::new(&common.data_dir);
            let entries: Vec<_> = store
                .list()?
                .into_iter()
                .filter(|e| {
                    common
                        .destination
                        .as_ref()
                        .is_none_or(|d| *d == e.destination)
                })
                .collect();
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
                Output::Text if entries.is_empty() => {
                    println!("no dead-lettered events in {}", common.data_dir.display())
                }
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
        Action::Replay { common } => {
            let store = DeadLetterStore::new(&common.data_dir);
            let n = store.replay(&common.data_dir, common.destination.as_deref())?;
            println!(
                "re-queued {n} event(s); `hookline run --data-dir {}` delivers them",
                common.data_dir.display()
            );
        }
    }
    Ok(0)
}
