//! A destination's backlog in events (API §8 `status.backlog`, `hookline_queue_depth`). Its
//! consumer counts stored messages, and a message holds one event or a bundle of them
//! (`Hookline-Events`), so the messages waiting are only the start.

use super::bundle::{EVENTS, header_u64};
use super::names::DestinationNames;
use super::{Nats, NatsError, REQUEST_TIMEOUT, objects};
use async_nats::jetstream::consumer::{self, AckPolicy, Consumer, DeliverPolicy, pull};
use futures::StreamExt;
use std::sync::Mutex;
use std::time::Duration;

/// Messages whose events are counted one by one: the count is exact up to this many waiting,
/// and scaled from the first this many above (a backlog that large moves anyway).
const COUNTED: u64 = 1_000;

/// Messages waiting for the destination (not yet delivered, or delivered and not yet done
/// with), from its consumer's info alone: all a worker's own identity may read.
pub async fn messages(nats: &Nats, names: &DestinationNames) -> Result<u64, NatsError> {
    Ok(waiting(&objects::consumer_info(nats, names).await?))
}

/// Not yet handed out, plus handed out and not yet acknowledged.
fn waiting(info: &consumer::Info) -> u64 {
    info.num_pending + info.num_ack_pending as u64
}

/// A count of the events waiting for a destination, and the state of its consumer then.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counted {
    pub events: u64,
    /// Waiting, unacknowledged, the acknowledgement floor and the last delivered sequence:
    /// while none moves (a disabled destination, an endpoint that is down), neither does the
    /// count, and it is not made again.
    state: (u64, usize, u64, u64),
}

/// Events waiting for the destination: the headers of the messages past its consumer's
/// acknowledgement floor are read through a short-lived consumer with the same filter, and
/// each counts the events it holds — unless the consumer is as it was at the `last` count.
/// Needs an identity that may create consumers on the events stream (the operator's).
pub async fn events(
    nats: &Nats,
    names: &DestinationNames,
    last: Option<Counted>,
) -> Result<Counted, NatsError> {
    let info = objects::consumer_info(nats, names).await?;
    let waiting = waiting(&info);
    let state = (
        info.num_pending,
        info.num_ack_pending,
        info.ack_floor.stream_sequence,
        info.delivered.stream_sequence,
    );
    if let Some(last) = last.filter(|l| l.state == state) {
        return Ok(last);
    }
    let counted = |events| Counted { events, state };
    if waiting == 0 {
        return Ok(counted(0));
    }
    let failed = |e: &dyn std::fmt::Display| {
        NatsError::api(format!("counting the backlog of {}", names.consumer()), e)
    };
    let stream = objects::events_stream(nats).await?;
    let name = format!(
        "backlog-{}-{}",
        names.consumer(),
        uuid::Uuid::new_v4().simple()
    );
    let counter = stream
        .create_consumer(pull::Config {
            name: Some(name.clone()),
            filter_subjects: info.config.filter_subjects.clone(),
            filter_subject: info.config.filter_subject.clone(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: info.ack_floor.stream_sequence + 1,
            },
            // Each message counts as done once handed over: this consumer holds nothing back
            // from the stream's interest retention.
            ack_policy: AckPolicy::None,
            headers_only: true,
            // Gone soon after even if deleting it below fails.
            inactive_threshold: Duration::from_secs(5),
            ..Default::default()
        })
        .await
        .map_err(|e| failed(&e))?;
    let read_back = count(&counter, waiting.min(COUNTED) as usize).await;
    if let Err(e) = stream.delete_consumer(&name).await {
        tracing::debug!(consumer = %name, error = %e, "counting consumer left to expire");
    }
    let (read, events) = read_back.map_err(|e| failed(&e))?;
    // Read all of them, none acknowledged meanwhile: `read == waiting`, the exact count.
    // Otherwise the messages above the floor already done with, or those past `COUNTED`,
    // are assumed to hold as many events as the ones read.
    Ok(counted(match read {
        0 => waiting,
        _ => (waiting as f64 * events as f64 / read as f64).round() as u64,
    }))
}

/// Messages read (up to `at_most`, those there are now) and the events they hold.
async fn count(
    counter: &Consumer<pull::Config>,
    at_most: usize,
) -> Result<(u64, u64), Box<dyn std::error::Error + Send + Sync>> {
    let mut batch = counter
        .fetch()
        .max_messages(at_most)
        .expires(REQUEST_TIMEOUT)
        .messages()
        .await?;
    let (mut read, mut events) = (0, 0);
    while let Some(message) = batch.next().await {
        read += 1;
        let message = message?;
        events += events_in(&message);
    }
    Ok((read, events))
}

/// The events a stored message holds: a bundle says how many; anything else is one.
pub fn events_in(message: &async_nats::Message) -> u64 {
    header_u64(message, EVENTS).unwrap_or(1)
}

/// Events per message over the messages a worker took in lately: an average that forgets, as
/// what waits changes (bundles of up to 1,000 events, retries published on their own with one).
#[derive(Debug, Default)]
pub struct EventsPerMessage(Mutex<Option<f64>>);

impl EventsPerMessage {
    /// The newest message's weight: the average follows a change within a few dozen messages.
    const WEIGHT: f64 = 1.0 / 16.0;

    pub fn taken(&self, events: usize) {
        let mut average = self.0.lock().expect("average lock");
        let events = events as f64;
        *average = Some(average.map_or(events, |a| a + (events - a) * Self::WEIGHT));
    }

    /// `messages` in events; one each before any message was taken in.
    pub fn of(&self, messages: u64) -> u64 {
        let average = *self.0.lock().expect("average lock");
        average.map_or(messages, |a| (messages as f64 * a).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_per_message_follows_what_is_taken_in_lately() {
        let average = EventsPerMessage::default();
        assert_eq!(average.of(3), 3, "nothing taken in yet: one each");
        (0..5).for_each(|_| average.taken(100));
        assert_eq!(average.of(3), 300);
        // An endpoint down: the bundles' events come back as retries of one event each.
        (0..100).for_each(|_| average.taken(1));
        assert!(average.of(3) <= 4, "{}", average.of(3));
    }
}
