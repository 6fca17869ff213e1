//! What a queue record holds: the event, and which destinations it is for when not all
//! (a write key that only some accept, or a dead letter replayed to its own destination).

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub struct Envelope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
    /// The W3C `traceparent` of the request that brought the event, when there is a trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
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
        encode(self.to.as_deref(), self.trace.as_deref(), &event)
    }
}

/// An envelope around an event already serialized (`event`: one JSON value), without parsing
/// or serializing it again; decodes as an [`Envelope`].
pub fn encode(to: Option<&[String]>, trace: Option<&str>, event: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(event.len() + 16);
    encode_into(&mut out, to, trace, event);
    out
}

/// [`encode`], appended to `out` (a bundle being written).
pub fn encode_into(out: &mut Vec<u8>, to: Option<&[String]>, trace: Option<&str>, event: &[u8]) {
    out.push(b'{');
    if let Some(to) = to {
        out.extend_from_slice(b"\"to\":");
        serde_json::to_writer(&mut *out, to).expect("names serialize");
        out.push(b',');
    }
    if let Some(trace) = trace {
        out.extend_from_slice(b"\"trace\":");
        serde_json::to_writer(&mut *out, trace).expect("strings serialize");
        out.push(b',');
    }
    out.extend_from_slice(b"\"event\":");
    out.extend_from_slice(event);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_is_encoded_decodes_the_same() {
        let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string();
        for (to, trace) in [
            (None, None),
            (Some(vec!["a".to_string(), "b\"c".to_string()]), Some(trace)),
        ] {
            let event = json!({"type": "track", "properties": {"x": [1, "é"]}});
            let bytes = Envelope {
                to: to.clone(),
                trace: trace.clone(),
                event: event.clone(),
            }
            .encode();
            let back: Envelope = serde_json::from_slice(&bytes).unwrap();
            assert_eq!((back.to, back.trace, back.event), (to, trace, event));
        }
    }
}
