//! Dead letters in JetStream: one message per event given up on, on the destination's subject
//! of the dead-letter stream, in the same shape as the local store's entries. Replay publishes
//! the original events again, addressed to the destination alone, then removes the dead
//! letters.

use super::names::{DEAD_LETTER_STREAM, DestinationNames};
use super::publish::{Outgoing, Publisher};
use super::{Nats, NatsError};
use crate::pipeline::deliver::dlq::DeadLetter;
use crate::pipeline::envelope::Envelope;
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};

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
        })
        .collect();
    Publisher::new(nats.clone())
        .publish_all(messages)
        .await
        .map_err(|e| NatsError::api(format!("stream {DEAD_LETTER_STREAM}"), e))
}

/// The destination's dead letters, oldest first, with their sequence in the stream.
pub async fn list(
    nats: &Nats,
    names: &DestinationNames,
) -> Result<Vec<(u64, DeadLetter)>, NatsError> {
    let stream = dead_letter_stream(nats).await?;
    let subject = names.dead_letter_subject();
    let mut letters = Vec::new();
    let mut from = 1;
    loop {
        let message = match stream
            .raw_message_builder()
            .sequence(from)
            .next_by_subject(subject.clone())
            .send()
            .await
        {
            Ok(m) => m,
            Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => break,
            Err(e) => return Err(NatsError::api(format!("stream {DEAD_LETTER_STREAM}"), e)),
        };
        from = message.sequence + 1;
        match serde_json::from_slice::<DeadLetter>(&message.payload) {
            Ok(letter) => letters.push((message.sequence, letter)),
            Err(e) => {
                tracing::warn!(seq = message.sequence, error = %e, "skipping a dead letter that is not Hookline's")
            }
        }
    }
    Ok(letters)
}

/// Sends every dead letter of the destination to it again; returns how many.
pub async fn replay(nats: &Nats, names: &DestinationNames) -> Result<usize, NatsError> {
    let letters = list(nats, names).await?;
    if letters.is_empty() {
        return Ok(0);
    }
    // The destination's own subject, or its write key's, which the other destinations holding
    // that key read too: the recipient says whose it is.
    let subject = super::objects::consumer_subject(nats, names).await?;
    let messages = letters
        .iter()
        .map(|(seq, l)| Outgoing {
            subject: subject.clone(),
            // Replaying the same dead letter twice within the duplicate window stores it once.
            id: format!("replay:{}:{seq}", names.consumer()),
            payload: Envelope {
                to: Some(vec![names.recipient().to_string()]),
                trace: None,
                event: l.event.clone(),
            }
            .encode()
            .into(),
        })
        .collect();
    Publisher::new(nats.clone())
        .publish_all(messages)
        .await
        .map_err(|e| NatsError::api("replay", e))?;
    let stream = dead_letter_stream(nats).await?;
    for (seq, _) in &letters {
        stream
            .delete_message(*seq)
            .await
            .map_err(|e| NatsError::api(format!("stream {DEAD_LETTER_STREAM}"), e))?;
    }
    Ok(letters.len())
}

async fn dead_letter_stream(nats: &Nats) -> Result<Stream<()>, NatsError> {
    nats.context
        .get_stream_no_info(DEAD_LETTER_STREAM)
        .await
        .map_err(|e| NatsError::api(format!("stream {DEAD_LETTER_STREAM}"), e))
}
