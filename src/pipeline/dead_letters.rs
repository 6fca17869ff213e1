//! The dead letters of the destinations a process runs, as its admin listener offers them
//! (`GET /dlq`, `POST /dlq/replay`, [`super::admin`]). The same for both queue backends.

use super::deliver::dlq::{DeadLetter, DeadLetterStore};
use crate::jetstream::names::DestinationNames;
use crate::jetstream::{Nats, dead_letters};
use std::path::PathBuf;

pub enum DeadLetters {
    /// The data dir's dead-letter files; replays go through its spool.
    Local { data_dir: PathBuf },
    /// The dead-letter stream, for these destinations.
    Stream {
        nats: Nats,
        destinations: Vec<DestinationNames>,
    },
}

impl DeadLetters {
    pub async fn list(&self) -> Result<Vec<DeadLetter>, String> {
        match self {
            DeadLetters::Local { data_dir } => DeadLetterStore::new(data_dir)
                .list()
                .map_err(|e| e.to_string()),
            DeadLetters::Stream { nats, destinations } => {
                let mut all = Vec::new();
                for names in destinations {
                    let letters = dead_letters::list(nats, names)
                        .await
                        .map_err(|e| e.to_string())?;
                    all.extend(letters.into_iter().map(|(_, l)| l));
                }
                Ok(all)
            }
        }
    }

    /// Queues every dead letter again for its destination; how many.
    pub async fn replay(&self) -> Result<usize, String> {
        match self {
            DeadLetters::Local { data_dir } => DeadLetterStore::new(data_dir)
                .replay(data_dir, None)
                .map_err(|e| e.to_string()),
            DeadLetters::Stream { nats, destinations } => {
                let mut n = 0;
                for names in destinations {
                    n += dead_letters::replay(nats, names)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(n)
            }
        }
    }
}
