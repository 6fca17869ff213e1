//! How events sit in the events stream: a request's events for one subject are stored as one
//! message, a *bundle* (a JSON array of envelopes, marked by a header), so the broker's work —
//! publish, acknowledgement, store write, delivery, ack, interest removal — is paid once per
//! request instead of once per event. A message without the header holds one envelope: a
//! request of one event, a retry published on its own, a replay, or an earlier version's.
//!
//! A retry of one event of a bundle is published on its own to the destination's subject, with
//! the attempts made so far, when the event was first stored, and when it may be tried again.

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

/// A bundle is cut at this many events or bytes, well inside NATS's default 1 MiB payload.
const MAX_EVENTS: usize = 1000;
const MAX_BYTES: usize = 512 * 1024;

/// Envelopes (each one JSON value) grouped into bundles: `(payload, how many events)`. A lone
/// envelope is stored as it is; otherwise every part is an array (of one event, at worst).
pub fn bundles(envelopes: &[Vec<u8>]) -> Vec<(Bytes, usize)> {
    if let [one] = envelopes {
        return vec![(Bytes::copy_from_slice(one), 1)];
    }
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut count = 0;
    for envelope in envelopes {
        if count > 0 && (count == MAX_EVENTS || current.len() + envelope.len() + 2 > MAX_BYTES) {
            current.push(b']');
            out.push((Bytes::from(std::mem::take(&mut current)), count));
            count = 0;
        }
        current.push(if count == 0 { b'[' } else { b',' });
        current.extend_from_slice(envelope);
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

    #[test]
    fn a_bundle_splits_back_into_its_envelopes() {
        let envelopes: Vec<Vec<u8>> = [r#"{"event":{"a":1}}"#, r#"{"to":["x"],"event":[1, "],"]}"#]
            .iter()
            .map(|e| e.as_bytes().to_vec())
            .collect();
        let made = bundles(&envelopes);
        assert_eq!(made.len(), 1);
        let (payload, count) = &made[0];
        assert_eq!(*count, 2);
        let ranges = split(payload).unwrap();
        let back: Vec<&[u8]> = ranges.iter().map(|r| &payload[r.clone()]).collect();
        assert_eq!(back, [envelopes[0].as_slice(), envelopes[1].as_slice()]);
    }

    #[test]
    fn one_envelope_is_stored_as_it_is_and_large_requests_are_cut() {
        let one = vec![br#"{"event":1}"#.to_vec()];
        assert_eq!(bundles(&one), [(Bytes::from_static(br#"{"event":1}"#), 1)]);
        let many: Vec<Vec<u8>> = (0..2500)
            .map(|i| format!(r#"{{"event":{i}}}"#).into_bytes())
            .collect();
        let made = bundles(&many);
        assert_eq!(
            made.iter().map(|(_, n)| n).collect::<Vec<_>>(),
            [&1000, &1000, &500]
        );
        let big: Vec<Vec<u8>> = (0..3).map(|_| vec![b'1'; 300 * 1024]).collect();
        assert_eq!(bundles(&big).len(), 3, "cut by bytes");
        for (payload, n) in made {
            assert_eq!(split(&payload).unwrap().len(), n);
        }
    }
}
