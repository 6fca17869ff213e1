//! What a queue record holds: the event, and which destinations it is for when not all
//! (a write key that only some accept, or a dead letter replayed to its own destination).

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
    pub event: Value,
}

impl Envelope {
    pub fn is_for(&self, destination: &str) -> bool {
        self.to
            .as_ref()
            .is_none_or(|to| to.iter().any(|d| d == destination))
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("envelopes serialize")
    }
}
