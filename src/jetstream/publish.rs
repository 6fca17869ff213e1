//! Storing accepted events in the events stream: every message sent before any acknowledgement
//! is awaited, and the caller hears "stored" only once JetStream acknowledged them all.

use super::Nats;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("NATS is not connected")]
    NotConnected,
    #[error("JetStream did not store an event on {subject}: {message}")]
    NotStored { subject: String, message: String },
}

/// One event on its way into the stream.
pub struct Outgoing {
    pub subject: String,
    /// `Nats-Msg-Id`: a client's retry of the same message within the stream's duplicate
    /// window is stored once.
    pub id: String,
    pub payload: Bytes,
    /// A bundle's event count, a retry's history ([`super::bundle`]).
    pub headers: Option<async_nats::HeaderMap>,
}

#[derive(Clone)]
pub struct Publisher {
    nats: Nats,
}

impl Publisher {
    pub fn new(nats: Nats) -> Publisher {
        Publisher { nats }
    }

    pub fn nats(&self) -> &Nats {
        &self.nats
    }

    pub async fn publish_all(&self, messages: Vec<Outgoing>) -> Result<(), PublishError> {
        if self.nats.client.connection_state() != async_nats::connection::State::Connected {
            // Fail at once rather than after the acknowledgement timeout: the client retries.
            return Err(PublishError::NotConnected);
        }
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            let not_stored = |e: &dyn std::fmt::Display| PublishError::NotStored {
                subject: m.subject.clone(),
                message: e.to_string(),
            };
            let mut publish = PublishMessage::build().payload(m.payload);
            if let Some(headers) = m.headers {
                publish = publish.headers(headers);
            }
            let publish = publish.message_id(&m.id);
            let ack = self
                .nats
                .context
                .send_publish(m.subject.clone(), publish)
                .await
                .map_err(|e| not_stored(&e))?;
            pending.push((m.subject, ack));
        }
        for (subject, ack) in pending {
            ack.await.map_err(|e| PublishError::NotStored {
                subject,
                message: e.to_string(),
            })?;
        }
        Ok(())
    }
}
