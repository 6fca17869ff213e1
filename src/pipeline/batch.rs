//! Batching mapped payloads: a batch closes at `size` events, at `maxBytes`, or `maxWaitMillis`
//! after its first event, whichever comes first.

use super::jsvalue;
use super::mapping::{Mapping, MappingError};
use bytes::Bytes;
use serde_json::Value;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct BatchPolicy {
    pub size: usize,
    pub max_bytes: usize,
    pub max_wait: Duration,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy {
            size: 1,
            max_bytes: 1024 * 1024,
            max_wait: Duration::from_millis(1000),
        }
    }
}

/// One event on its way out: its queue position, id, the queue record it came from (for the
/// dead-letter store: the worker parses only the fields it reads) and its mapped payload,
/// already serialized.
#[derive(Debug, Clone)]
pub struct Item {
    pub seq: u64,
    pub message_id: String,
    pub record: Vec<u8>,
    pub payload: Bytes,
    /// The `traceparent` stored with the event, when it came with a trace.
    pub trace: Option<String>,
}

impl Item {
    /// `event` mapped for delivery: what both the worker sends and `render` shows. `record`:
    /// the queue record it came from; `event`: what the mapping reads of it (the messageId is
    /// taken from it too).
    pub fn mapped(
        seq: u64,
        record: &[u8],
        event: &Value,
        mapping: &Mapping,
    ) -> Result<Item, MappingError> {
        let mut payload = Vec::with_capacity(128);
        mapping.write(event, &mut payload)?;
        let message_id = jsvalue::member(event, "messageId")
            .map(jsvalue::to_js_string)
            .unwrap_or_default();
        Ok(Item {
            seq,
            message_id,
            record: record.to_vec(),
            payload: payload.into(),
            trace: None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Batch {
    pub items: Vec<Item>,
    /// With `batching.size` > 1 the body is always a JSON array, even of one payload.
    pub as_array: bool,
}

impl Batch {
    /// The trace the batch continues: its first event's.
    pub fn trace(&self) -> Option<&str> {
        self.items.first().and_then(|i| i.trace.as_deref())
    }

    pub fn body(&self) -> Bytes {
        if !self.as_array {
            return self
                .items
                .first()
                .map(|i| i.payload.clone())
                .unwrap_or_default();
        }
        let mut body = Vec::with_capacity(
            2 + self
                .items
                .iter()
                .map(|i| i.payload.len() + 1)
                .sum::<usize>(),
        );
        body.push(b'[');
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&item.payload);
        }
        body.push(b']');
        body.into()
    }

    pub fn message_ids(&self) -> Vec<&str> {
        self.items.iter().map(|i| i.message_id.as_str()).collect()
    }

    pub fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.items.iter().map(|i| i.seq)
    }
}

pub struct Batcher {
    policy: BatchPolicy,
    pending: Vec<Item>,
    bytes: usize,
    opened: Option<Instant>,
}

impl Batcher {
    pub fn new(policy: BatchPolicy) -> Self {
        Batcher {
            policy,
            pending: Vec::new(),
            bytes: 2,
            opened: None,
        }
    }

    /// Adds an item; returns the batches it closed (the pending one if this item would overflow
    /// `maxBytes`, and the new one if it is now full).
    pub fn push(&mut self, item: Item, now: Instant) -> Vec<Batch> {
        let mut closed = Vec::new();
        let added = item.payload.len() + 1;
        if !self.pending.is_empty() && self.bytes + added > self.policy.max_bytes {
            closed.extend(self.take());
        }
        if self.pending.is_empty() {
            self.opened = Some(now);
        }
        self.bytes += added;
        self.pending.push(item);
        if self.pending.len() >= self.policy.size || self.bytes >= self.policy.max_bytes {
            closed.extend(self.take());
        }
        closed
    }

    /// When the pending batch must be sent even if not full.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened.map(|t| t + self.policy.max_wait)
    }

    pub fn take(&mut self) -> Option<Batch> {
        if self.pending.is_empty() {
            return None;
        }
        self.opened = None;
        self.bytes = 2;
        Some(Batch {
            items: std::mem::take(&mut self.pending),
            as_array: self.policy.size > 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::envelope;

    fn item(seq: u64, payload: &str) -> Item {
        Item {
            seq,
            message_id: format!("m{seq}"),
            record: envelope::encode(None, None, b"null"),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            trace: None,
        }
    }

    #[test]
    fn closes_on_size_and_bytes() {
        let now = Instant::now();
        let mut b = Batcher::new(BatchPolicy {
            size: 2,
            max_bytes: 100,
            max_wait: Duration::from_secs(1),
        });
        assert!(b.push(item(0, "1"), now).is_empty());
        assert_eq!(b.deadline(), Some(now + Duration::from_secs(1)));
        let closed = b.push(item(1, "2"), now);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].body(), &b"[1,2]"[..]);
        assert_eq!(b.deadline(), None);

        let mut b = Batcher::new(BatchPolicy {
            size: 10,
            max_bytes: 8,
            max_wait: Duration::from_secs(1),
        });
        assert!(b.push(item(0, "111"), now).is_empty());
        let closed = b.push(item(1, "2222"), now);
        assert_eq!(
            closed.iter().map(|b| b.body()).collect::<Vec<_>>(),
            vec![b"[111]".to_vec()]
        );
    }

    #[test]
    fn size_one_sends_the_payload_itself() {
        let mut b = Batcher::new(BatchPolicy::default());
        let closed = b.push(item(0, r#"{"a":1}"#), Instant::now());
        assert_eq!(closed[0].body(), &br#"{"a":1}"#[..]);
    }
}
