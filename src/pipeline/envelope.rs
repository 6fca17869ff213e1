//! What a queue record holds: the event, and which destinations it is for when not all
//! (a write key that only some accept, or a dead letter replayed to its own destination).

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
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
        let event = serde_json::to_vec(&self.event).expect("JSON values serialize");
        encode(self.to.as_deref(), &event)
    }
}

/// An envelope around an event already serialized (`event`: one JSON value), without parsing
/// or serializing it again; decodes as an [`Envelope`].
pub fn encode(to: Option<&[String]>, event: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(event.len() + 16);
    out.push(b'{');
    if let Some(to) = to {
        out.extend_from_slice(b"\"to\":");
        serde_json::to_writer(&mut out, to).expect("names serialize");
        out.push(b',');
    }
    out.extend_from_slice(b"\"event\":");
    out.extend_from_slice(event);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_is_encoded_decodes_the_same() {
        for to in [None, Some(vec!["a".to_string(), "b\"c".to_string()])] {
            let event = json!({"type": "track", "properties": {"x": [1, "é"]}});
            let bytes = Envelope {
                to: to.clone(),
                event: event.clone(),
            }
            .encode();
            let back: Envelope = serde_json::from_slice(&bytes).unwrap();
            assert_eq!((back.to, back.event), (to, event));
        }
    }
}
