//! How events sit in the events stream: a request's events for one subject are stored as one
//! message, a *bundle* (a JSON array of envelopes, marked by a header), so the broker's work —
//! publish, acknowledgement, store write, delivery, ack, interest removal — is paid once per
//! request instead of once per event. A message without the header holds one envelope: a
//! request of one event, a retry published on its own, a replay, or an earlier version's.
//!
//! A retry of one event of a bundle is published on its own to the destination's subject, with
//! the attempts made so far, when the event was first stored, and when it may be tried again.

use crate::pipeline::envelope;
use bytes::Bytes;
use serde_json::value::RawValue;
use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// On a bundle: how many events it holds.
pub const EVENTS: &str = "Hookline-Events";
/// On a retry: attempts already made.
pub const ATTEMPTS: &str = "Hookline-Attempts";
/// On a retry: when its event was first stored (ms since the epoch); `maxRetryDurationSeconds`
/// counts from there.
pub const STORED_AT: &str = "Hookline-Stored-At";
/// On a retry: not to be tried before this (ms since the epoch): the backoff delay.
pub const NOT_BEFORE: &str = "Hookline-Not-Before";

/// One of the numeric headers above, where the message has it.
pub fn header_u64(message: &async_nats::Message, name: &str) -> Option<u64> {
    message.headers.as_ref()?.get(name)?.as_str().parse().ok()
}

/// A bundle is cut at this many events or bytes, well inside NATS's default 1 MiB payload.
const MAX_EVENTS: usize = 1000;
const MAX_BYTES: usize = 512 * 1024;

/// Events (each one JSON value, as received) in their envelopes, grouped into bundles:
/// `(payload, how many events)`, each envelope written once, straight into its bundle. A lone
/// event is stored in its envelope as it is; otherwise every part is an array (of one event,
/// at worst).
pub fn bundles(events: &[&[u8]], trace: Option<&str>) -> Vec<(Bytes, usize)> {
    if let [one] = events {
        return vec![(envelope::encode(None, trace, one).into(), 1)];
    }
    // What an envelope adds to its event, at most.
    let wrapping = trace.map_or(0, str::len) + 32;
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut count = 0;
    for event in events {
        if count > 0 && (count == MAX_EVENTS || current.len() + event.len() + wrapping > MAX_BYTES)
        {
            current.push(b']');
            out.push((Bytes::from(std::mem::take(&mut current)), count));
            count = 0;
        }
        current.push(if count == 0 { b'[' } else { b',' });
        envelope::encode_into(&mut current, None, trace, event);
        count += 1;
    }
    if count > 0 {
        current.push(b']');
        out.push((Bytes::from(current), count));
    }
    out
}

/// Where each envelope of a bundle is in its payload.
pub fn split(payload: &[u8]) -> Result<Vec<Range<usize>>, serde_json::Error> {
    let items: Vec<&RawValue> = serde_json::from_slice(payload)?;
    let start = payload.as_ptr() as usize;
    Ok(items
        .iter()
        .map(|item| {
            let at = item.get().as_ptr() as usize - start;
            at..at + item.get().len()
        })
        .collect())
}

pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

pub fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::envelope::Envelope;

    #[test]
    fn a_bundle_splits_back_into_its_envelopes() {
        let events: [&[u8]; 2] = [br#"{"a":1}"#, br#"[1, "],"]"#];
        let made = bundles(&events, Some("00-trace"));
        assert_eq!(made.len(), 1);
        let (payload, count) = &made[0];
        assert_eq!(*count, 2);
        let back: Vec<Envelope> = split(payload)
            .unwrap()
            .into_iter()
            .map(|r| serde_json::from_slice(&payload[r]).unwrap())
            .collect();
        assert_eq!(back[0].event, serde_json::json!({"a": 1}));
        assert_eq!(back[1].event, serde_json::json!([1, "],"]));
        assert!(
            back.iter()
                .all(|e| e.trace.as_deref() == Some("00-trace") && e.to.is_none())
        );
    }

    #[test]
    fn one_event_is_stored_in_its_envelope_and_large_requests_are_cut() {
        let one: [&[u8]; 1] = [b"1"];
        assert_eq!(
            bundles(&one, None),
            [(Bytes::from_static(br#"{"event":1}"#), 1)]
        );
        let texts: Vec<String> = (0..2500).map(|i| i.to_string()).collect();
        let many: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
        let made = bundles(&many, None);
        assert_eq!(
            made.iter().map(|(_, n)| n).collect::<Vec<_>>(),
            [&1000, &1000, &500]
        );
        let big = vec![b'1'; 300 * 1024];
        assert_eq!(bundles(&[&big, &big, &big], None).len(), 3, "cut by bytes");
        for (payload, n) in made {
            assert_eq!(split(&payload).unwrap().len(), n);
        }
    }
}
