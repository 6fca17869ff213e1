//! Dead letters in JetStream: one message per event given up on, on the destination's subject
//! of the dead-letter stream, in the same shape as the local store's entries. Replay publishes
//! the original events again to the destination's own subject, then marks them replayed with a
//! message of its own on the same subject (they age out with the stream's limits).
//!
//! Everything here stays on that one subject, so a worker's identity per role (API §10) can
//! do it all: NATS scopes creating a consumer by its filter subject, but not reading or
//! deleting stream messages by sequence.

use super::REQUEST_TIMEOUT;
use super::names::{DEAD_LETTER_STREAM, DestinationNames};
use super::publish::{Outgoing, Publisher};
use super::{Nats, NatsError};
use crate::pipeline::deliver::dlq::DeadLetter;
use crate::pipeline::envelope::Envelope;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, push};
use futures::StreamExt;
use std::time::Duration;

/// Stores the dead letters; only once this returns may their events be acknowledged.
pub async fn append(
    nats: &Nats,
    names: &DestinationNames,
    letters: &[DeadLetter],
) -> Result<(), NatsError> {
    let subject = names.dead_letter_subject();
    let messages = letters
        .iter()
        .map(|l| Outgoing {
            subject: subject.clone(),
            id: uuid::Uuid::new_v4().to_string(),
            payload: serde_json::to_vec(l)
                .expect("dead letters serialize")
                .into(),
            headers: None,
        })
        .collect();
    Publisher::new(nats.clone())
        .publish_all(messages)
        .await
        .map_err(api_error)
}

/// On the message that marks a destination's dead letters replayed: every dead letter of its
/// subject up to this stream sequence was.
const REPLAYED_THROUGH: &str = "Hookline-Replayed-Through";

fn api_error(e: impl std::fmt::Display) -> NatsError {
    NatsError::api(format!("stream {DEAD_LETTER_STREAM}"), e)
}

/// The destination's dead letters not yet replayed, oldest first, with their sequence in the
/// stream: read through a short-lived consumer filtered to its subject, delivered to this
/// process's own inbox.
pub async fn list(
    nats: &Nats,
    names: &DestinationNames,
) -> Result<Vec<(u64, DeadLetter)>, NatsError> {
    let stream = nats
        .context
        .get_stream_no_info(DEAD_LETTER_STREAM)
        .await
        .map_err(api_error)?;
    let consumer = stream
        .create_consumer(push::Config {
            name: Some(format!(
                "list-{}-{}",
                names.consumer(),
                uuid::Uuid::new_v4().simple()
            )),
            deliver_subject: nats.client.new_inbox(),
            filter_subject: names.dead_letter_subject(),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            // Gone soon after this read, with no call to delete it.
            inactive_threshold: Duration::from_secs(5),
            ..Default::default()
        })
        .await
        .map_err(api_error)?;
    let mut remaining = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await.map_err(api_error)?;
    let mut letters = Vec::new();
    let mut replayed_through = 0;
    while remaining > 0 {
        let message = tokio::time::timeout(REQUEST_TIMEOUT, messages.next())
            .await
            .map_err(|_| api_error("the dead letters stopped arriving"))?
            .ok_or_else(|| api_error("the dead letters stopped arriving"))?
            .map_err(api_error)?;
        let info = message.info().map_err(api_error)?;
        let seq = info.stream_sequence;
        remaining = info.pending;
        let marker = message
            .headers
            .as_ref()
            .and_then(|h| h.get(REPLAYED_THROUGH))
            .and_then(|v| v.as_str().parse::<u64>().ok());
        if let Some(through) = marker {
            replayed_through = replayed_through.max(through);
            continue;
        }
        match serde_json::from_slice::<DeadLetter>(&message.payload) {
            Ok(letter) => letters.push((seq, letter)),
            Err(e) => {
                tracing::warn!(seq, error = %e, "skipping a dead letter that is not Hookline's")
            }
        }
    }
    letters.retain(|(seq, _)| *seq > replayed_through);
    Ok(letters)
}

/// Sends every dead letter of the destination to it again; returns how many.
pub async fn replay(nats: &Nats, names: &DestinationNames) -> Result<usize, NatsError> {
    let letters = list(nats, names).await?;
    let Some(last) = letters.last().map(|(seq, _)| *seq) else {
        return Ok(0);
    };
    let messages = letters
        .iter()
        .map(|(seq, l)| Outgoing {
            subject: names.subject(),
            // Replaying the same dead letter twice within the duplicate window stores it once.
            id: format!("replay:{}:{seq}", names.consumer()),
            payload: Envelope {
                to: Some(vec![names.recipient().to_string()]),
                trace: None,
                event: l.event.clone(),
            }
            .encode()
            .into(),
            headers: None,
        })
        .collect();
    Publisher::new(nats.clone())
        .publish_all(messages)
        .await
        .map_err(|e| NatsError::api("replay", e))?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(REPLAYED_THROUGH, last.to_string().as_str());
    let marker = Outgoing {
        subject: names.dead_letter_subject(),
        id: format!("replayed:{}:{last}", names.consumer()),
        payload: bytes::Bytes::new(),
        headers: Some(headers),
    };
    Publisher::new(nats.clone())
        .publish_all(vec![marker])
        .await
        .map_err(api_error)?;
    Ok(letters.len())
}
