//! The queue backend seam, on the worker's side: where a destination's events come from, and
//! what the worker tells the queue about each — done (delivered, filtered, dead-lettered), to
//! be retried later, or given up on. Two backends: the local disk queue with this
//! destination's cursor and dead-letter file, and the destination's JetStream consumer with
//! the dead-letter stream. Everything between (mapping, batching, signing, OAuth, the retry
//! policy) is the same code for both.

use super::deliver::dlq::{DeadLetter, DeadLetterStore};
use super::queue::{Cursor, Queue, QueueError, Reader};
use crate::jetstream::inbox::{KEEP_ALIVE_INTERVAL, StreamAcks, StreamReader};
use crate::jetstream::names::DestinationNames;
use crate::jetstream::{Nats, backlog, dead_letters};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One queued event as the worker receives it.
pub struct Received {
    /// The worker's handle on it: a queue sequence number, or a stream sequence.
    pub seq: u64,
    pub bytes: Vec<u8>,
    /// Local queue only: records before this one that were lost to disk damage (already
    /// counted as done, so the cursor moves past them).
    pub damaged_before: u64,
}

pub enum Inbox {
    Local {
        queue: Queue,
        cursor: Arc<Cursor>,
        dlq: DeadLetterStore,
    },
    Stream(Box<StreamInbox>),
}

/// The destination's side of its JetStream consumer.
pub struct StreamInbox {
    nats: Nats,
    names: DestinationNames,
    acks: StreamAcks,
    reader: tokio::sync::Mutex<Option<StreamReader>>,
    /// With `concurrency` 1, a batch to be retried waits in the worker (marked in progress):
    /// handing it back — or publishing its events on their own, for a bundle — would let the
    /// events behind it overtake it.
    retries_in_place: bool,
}

pub enum InboxReader {
    Local {
        reader: Reader,
        expected: u64,
        cursor: Arc<Cursor>,
    },
    Stream(Box<StreamReader>),
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Dlq(#[from] super::deliver::dlq::DlqError),
    #[error(transparent)]
    Nats(#[from] crate::jetstream::NatsError),
}

impl Inbox {
    pub fn local(queue: Queue, cursor: Arc<Cursor>, dlq: DeadLetterStore) -> Inbox {
        Inbox::Local { queue, cursor, dlq }
    }

    /// Binds to the destination's consumer, which must exist.
    pub async fn stream(
        nats: Nats,
        names: DestinationNames,
        concurrency: usize,
        batch_size: usize,
    ) -> Result<Inbox, crate::jetstream::NatsError> {
        // Each pull is a round trip through nats-server: pulling 16 at a time held unbatched
        // delivery to 9–14 % of the endpoint's rate while ingesting, 256 gave 27–35 %.
        let prefetch = (concurrency * batch_size).clamp(256, 1000);
        let (reader, acks) = crate::jetstream::inbox::open(&nats, &names, prefetch).await?;
        Ok(Inbox::Stream(Box::new(StreamInbox {
            nats,
            names,
            acks,
            reader: tokio::sync::Mutex::new(Some(reader)),
            retries_in_place: concurrency == 1,
        })))
    }

    /// The reader; taken once, by the worker's read loop.
    pub async fn reader(&self) -> InboxReader {
        match self {
            Inbox::Local { queue, cursor, .. } => {
                let expected = cursor.committed();
                InboxReader::Local {
                    reader: queue.reader(expected),
                    expected,
                    cursor: cursor.clone(),
                }
            }
            Inbox::Stream(stream) => InboxReader::Stream(Box::new(
                stream
                    .reader
                    .lock()
                    .await
                    .take()
                    .expect("the reader is taken once"),
            )),
        }
    }

    /// Done with these events.
    pub async fn complete(&self, seqs: impl IntoIterator<Item = u64>) {
        match self {
            Inbox::Local { cursor, .. } => cursor.complete(seqs),
            Inbox::Stream(stream) => stream.acks.ack(seqs).await,
        }
    }

    /// Hands the events back to be retried after `delay`; `false` when the worker must retry
    /// them itself (the local queue, or where order requires it).
    pub async fn retry_later(&self, seqs: impl IntoIterator<Item = u64>, delay: Duration) -> bool {
        match self {
            Inbox::Stream(stream) if !stream.retries_in_place => {
                stream.acks.retry_after(seqs, delay).await;
                true
            }
            _ => false,
        }
    }

    /// How a queued event addressed to this destination alone names it: the destination's name
    /// in its own process's queue, its namespace and name in a JetStream every cluster shares.
    pub fn recipient<'a>(&'a self, dest: &'a crate::config::destination::Destination) -> &'a str {
        match self {
            Inbox::Local { .. } => &dest.name,
            Inbox::Stream(stream) => stream.names.recipient(),
        }
    }

    /// Attempts already made on these events before the worker got them, and since when they
    /// have been waiting (JetStream only: locally a restart starts the count again).
    pub fn history(&self, seqs: impl IntoIterator<Item = u64>) -> (u32, Option<SystemTime>) {
        match self {
            Inbox::Local { .. } => (0, None),
            Inbox::Stream(stream) => stream.acks.history(seqs),
        }
    }

    /// Stores dead letters; only then may their events be completed.
    pub async fn dead_letter(&self, letters: &[DeadLetter]) -> Result<(), InboxError> {
        match self {
            Inbox::Local { dlq, .. } => {
                let (dlq, letters) = (dlq.clone(), letters.to_vec());
                Ok(fsyncing(move || dlq.append(&letters)).await?)
            }
            Inbox::Stream(stream) => {
                Ok(dead_letters::append(&stream.nats, &stream.names, letters).await?)
            }
        }
    }

    /// Called every [`TEND_INTERVAL`]: saves the local cursor, keeps JetStream from handing
    /// held events to another worker; returns the destination's backlog when known.
    pub async fn tend(&self, round: u64) -> Result<Option<u64>, InboxError> {
        match self {
            Inbox::Local { queue, cursor, .. } => {
                let saving = cursor.clone();
                fsyncing(move || saving.persist()).await?;
                Ok(Some(queue.head().saturating_sub(cursor.committed())))
            }
            Inbox::Stream(stream) => {
                let every = |d: Duration| {
                    round.is_multiple_of((d.as_millis() / TEND_INTERVAL.as_millis()) as u64)
                };
                if every(KEEP_ALIVE_INTERVAL) {
                    stream.acks.keep_alive().await;
                }
                if every(Duration::from_secs(5)) {
                    let messages = backlog::messages(&stream.nats, &stream.names).await?;
                    return Ok(Some(stream.acks.in_events(messages)));
                }
                Ok(None)
            }
        }
    }

    /// When the oldest event not yet done was received: locally the record at the cursor; in
    /// JetStream the oldest this worker holds (JetStream hands out the oldest first).
    pub async fn oldest_waiting(&self) -> Option<SystemTime> {
        match self {
            Inbox::Local { queue, cursor, .. } => {
                let first = cursor.committed();
                if queue.head() <= first {
                    return None;
                }
                let mut reader = queue.reader(first);
                let read = tokio::time::timeout(Duration::from_millis(100), reader.next());
                let (_, bytes) = read.await.ok()?.ok()?;
                let envelope: super::envelope::Envelope = serde_json::from_slice(&bytes).ok()?;
                let received = envelope.event.get("receivedAt")?.as_str()?;
                chrono::DateTime::parse_from_rfc3339(received)
                    .ok()
                    .map(SystemTime::from)
            }
            Inbox::Stream(stream) => stream.acks.oldest_held(),
        }
    }

    /// The worker stopped: the local cursor is saved; what JetStream handed out and was not
    /// finished goes back at once, for the next worker.
    pub async fn close(&self) -> Result<(), InboxError> {
        match self {
            Inbox::Local { cursor, .. } => {
                let cursor = cursor.clone();
                Ok(fsyncing(move || cursor.persist()).await?)
            }
            Inbox::Stream(stream) => {
                stream.acks.release_all().await;
                Ok(())
            }
        }
    }
}

/// Runs file work that ends in an fsync on a blocking thread: an fsync can take milliseconds
/// (tens, on a busy disk), which the destination's delivery thread would otherwise spend
/// stalled, every request in flight with it.
async fn fsyncing<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("queue file work does not panic")
}

pub const TEND_INTERVAL: Duration = Duration::from_millis(100);

impl InboxReader {
    /// The next event, waiting for one.
    pub async fn next(&mut self) -> Result<Received, QueueError> {
        match self {
            InboxReader::Local {
                reader,
                expected,
                cursor,
            } => {
                let (seq, bytes) = reader.next().await?;
                let damaged_before = seq.saturating_sub(*expected);
                if damaged_before > 0 {
                    cursor.complete(*expected..seq);
                }
                *expected = seq + 1;
                Ok(Received {
                    seq,
                    bytes,
                    damaged_before,
                })
            }
            InboxReader::Stream(reader) => {
                let pulled = reader.next().await;
                Ok(Received {
                    seq: pulled.seq,
                    bytes: pulled.payload.to_vec(),
                    damaged_before: 0,
                })
            }
        }
    }
}
