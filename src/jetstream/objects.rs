//! Creating and removing what lives in JetStream, idempotently: the two streams and the routes
//! bucket (once per installation), each destination's consumer, and each source's route.

use super::names::{
    DEAD_LETTER_STREAM, DEAD_LETTER_SUBJECTS, DestinationNames, EVENTS_STREAM, EVENTS_SUBJECTS,
    KeyDigest, PROGRESS_BUCKET, ROUTES_BUCKET, legacy_key_subject, route_parts,
};
use super::{Nats, NatsError};
use crate::pipeline::source::RouteSpec;
use async_nats::jetstream::{consumer, kv, stream};
use std::collections::HashSet;
use std::time::Duration;

/// Dead letters are kept this long (API §8: 14 days by default).
pub const DEAD_LETTER_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);
/// A message handed to a worker comes back to the consumer when it is neither acknowledged
/// nor marked in progress for this long (a worker that died).
pub const ACK_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    /// `None`: 3 on a NATS cluster, 1 on a single server.
    pub replicas: Option<usize>,
    /// How long undelivered events are kept.
    pub max_age: Duration,
}

/// How a destination reads its consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerPlan {
    pub names: DestinationNames,
    /// What it reads: the subject of the source it reads, or its own.
    pub subject: String,
    /// With a private key: the key's subject of the earlier version (see
    /// [`super::names::legacy_key_subject`]).
    pub legacy_subject: Option<String>,
    /// How many events its workers may hold unacknowledged at once.
    pub max_ack_pending: i64,
}

impl ConsumerPlan {
    /// With `concurrency` 1 and batches of one, a single event is out at a time: JetStream
    /// itself keeps the order, even across retries (a negatively acknowledged event blocks the
    /// next). Otherwise enough for every request slot to have a full batch and the next one
    /// waiting, and never fewer than four workers' pulls (see `Inbox::stream`): JetStream
    /// cuts a pull short at this limit.
    pub fn new(
        names: DestinationNames,
        subject: String,
        concurrency: usize,
        batch_size: usize,
    ) -> ConsumerPlan {
        let max_ack_pending = if concurrency == 1 && batch_size == 1 {
            1
        } else {
            (2 * concurrency * batch_size).clamp(1024, 20_000) as i64
        };
        ConsumerPlan {
            names,
            subject,
            legacy_subject: None,
            max_ack_pending,
        }
    }

    /// The consumer of a destination reading `route` (a WebhookSource's, or its private
    /// key's), or only its own subject without one. A private key's consumer also reads that
    /// key's subject of the earlier version.
    pub fn reading(
        names: DestinationNames,
        route: Option<&RouteSpec>,
        concurrency: usize,
        batch_size: usize,
    ) -> ConsumerPlan {
        let subject = route.map_or_else(|| names.subject(), |r| r.subject.clone());
        let mut plan = ConsumerPlan::new(names, subject, concurrency, batch_size);
        plan.legacy_subject = route
            .filter(|r| r.is_private_of(&plan.names))
            .map(|r| legacy_key_subject(&KeyDigest(r.key.clone())));
        plan
    }

    fn config(&self) -> consumer::pull::Config {
        let subjects = self.subjects();
        consumer::pull::Config {
            durable_name: Some(self.names.consumer().to_string()),
            description: Some(format!(
                "hookline destination {}/{}",
                self.names.namespace, self.names.name
            )),
            // A new destination starts with the events accepted from now on.
            deliver_policy: consumer::DeliverPolicy::New,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            // Hookline counts attempts itself (maxAttempts, maxRetryDurationSeconds) and
            // dead-letters; JetStream must never drop an event on its own.
            max_deliver: -1,
            max_ack_pending: self.max_ack_pending,
            filter_subject: match subjects.as_slice() {
                [one] => one.clone(),
                _ => String::new(),
            },
            filter_subjects: match subjects.len() {
                1 => Vec::new(),
                _ => subjects,
            },
            ..Default::default()
        }
    }

    /// What the consumer reads: the subject of the route it reads; its own, where events for
    /// it alone arrive (its Service's, replays of its dead letters — published there by a
    /// worker whose identity may publish nowhere else); and the earlier version's key subject.
    pub fn subjects(&self) -> Vec<String> {
        let mut all = vec![self.subject.clone()];
        let own = self.names.subject();
        if own != self.subject {
            all.push(own);
        }
        all.extend(self.legacy_subject.clone());
        all
    }
}

/// The events stream, the dead-letter stream, the routes bucket and the progress bucket,
/// created or brought up to date.
pub async fn ensure_streams(nats: &Nats, retention: Retention) -> Result<(), NatsError> {
    let js = &nats.context;
    if nats.client.connection_state() != async_nats::connection::State::Connected {
        // Whether NATS is a cluster is known only once connected.
        return Err(NatsError::api("streams", "NATS is not connected yet"));
    }
    let replicas = replicas(nats, retention.replicas);
    js.create_or_update_stream(stream::Config {
        name: EVENTS_STREAM.into(),
        description: Some("hookline: accepted events, until every destination is done".into()),
        subjects: vec![EVENTS_SUBJECTS.into()],
        retention: stream::RetentionPolicy::Interest,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_age: retention.max_age,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| NatsError::api(format!("stream {EVENTS_STREAM}"), e))?;
    js.create_or_update_stream(stream::Config {
        name: DEAD_LETTER_STREAM.into(),
        description: Some("hookline: events given up on".into()),
        subjects: vec![DEAD_LETTER_SUBJECTS.into()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_age: DEAD_LETTER_MAX_AGE,
        ..Default::default()
    })
    .await
    .map_err(|e| NatsError::api(format!("stream {DEAD_LETTER_STREAM}"), e))?;
    js.create_or_update_key_value(kv::Config {
        bucket: ROUTES_BUCKET.into(),
        description: "hookline: write-key digests the gateway accepts, and their sources".into(),
        history: 1,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| NatsError::api(format!("bucket {ROUTES_BUCKET}"), e))?;
    js.create_or_update_key_value(kv::Config {
        bucket: PROGRESS_BUCKET.into(),
        description: "hookline: which events of a bundle a destination is done with".into(),
        history: 1,
        // Lost only with a NATS server, whose loss a worker can outlive: then a bundle's done
        // events are delivered again (at least once), never lost; memory keeps each record a
        // fraction of a file write.
        storage: stream::StorageType::Memory,
        num_replicas: replicas,
        // A record outlives its bundle only if removing it failed.
        max_age: retention.max_age,
        ..Default::default()
    })
    .await
    .map_err(|e| NatsError::api(format!("bucket {PROGRESS_BUCKET}"), e))?;
    Ok(())
}

/// A single server holds one copy whatever was asked (it refuses more); a cluster holds what
/// was asked, 3 by default.
fn replicas(nats: &Nats, configured: Option<usize>) -> usize {
    let clustered = nats.client.server_info().cluster.is_some();
    match (clustered, configured) {
        (true, configured) => configured.unwrap_or(3),
        (false, Some(n)) if n > 1 => {
            tracing::warn!(
                replicas = n,
                "NATS is a single server: its streams keep one copy"
            );
            1
        }
        (false, _) => 1,
    }
}

/// The destination's durable consumer, created or updated to `plan`.
pub async fn ensure_consumer(nats: &Nats, plan: &ConsumerPlan) -> Result<(), NatsError> {
    let what = || format!("consumer {}", plan.names.consumer());
    let stream = events_stream(nats).await?;
    stream
        .create_consumer(plan.config())
        .await
        .map_err(|e| NatsError::api(what(), e))?;
    Ok(())
}

/// Makes `spec` the one route of `owner` (a source's `src.<token>`, a destination's
/// `<token>`), or removes its route when `None`. `spec` is given only to the key's owner
/// (the oldest claimant), so any other route of that key — a claimant that lost it, or one
/// deleted meanwhile — is removed with it.
pub async fn ensure_route(
    nats: &Nats,
    owner: &str,
    spec: Option<&RouteSpec>,
) -> Result<(), NatsError> {
    let bucket = routes(nats).await?;
    let wanted = spec.map(|s| format!("{}.{owner}", s.key));
    for key in route_keys(&bucket).await? {
        let Some((digest, by)) = route_parts(&key) else {
            continue;
        };
        let stale = if by == owner {
            Some(&key) != wanted.as_ref()
        } else {
            spec.is_some_and(|s| s.key == digest.0)
        };
        if stale {
            purge(&bucket, &key).await?;
        }
    }
    if let (Some(key), Some(spec)) = (wanted, spec) {
        let value = serde_json::to_vec(spec).expect("routes serialize");
        bucket
            .put(&key, value.into())
            .await
            .map_err(|e| NatsError::api(format!("route {key}"), e))?;
    }
    Ok(())
}

/// Removes the routes of sources that no longer exist (`live`: the routes of those that do).
pub async fn sweep_source_routes(nats: &Nats, live: &HashSet<String>) -> Result<(), NatsError> {
    let bucket = routes(nats).await?;
    for key in route_keys(&bucket).await? {
        if let Some((_, owner)) = route_parts(&key)
            && owner.starts_with("src.")
            && !live.contains(owner)
        {
            purge(&bucket, &key).await?;
        }
    }
    Ok(())
}

async fn purge(bucket: &kv::Store, key: &str) -> Result<(), NatsError> {
    bucket
        .purge(key)
        .await
        .map_err(|e| NatsError::api(format!("route {key}"), e))
}

/// Everything the destination has in JetStream except its dead letters (kept for their 14
/// days): its route, then its consumer. Removing the consumer lets interest retention drop the
/// events only it was waiting for.
pub async fn remove_destination(nats: &Nats, names: &DestinationNames) -> Result<(), NatsError> {
    ensure_route(nats, names.consumer(), None).await?;
    let stream = events_stream(nats).await?;
    match stream.delete_consumer(names.consumer()).await {
        Ok(_) => Ok(()),
        Err(e) if consumer_not_found(&e) => Ok(()),
        Err(e) => Err(NatsError::api(format!("consumer {}", names.consumer()), e)),
    }
}

/// Already gone: removing it again is done, not an error.
fn consumer_not_found(e: &async_nats::jetstream::stream::ConsumerError) -> bool {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::stream::ConsumerErrorKind;
    matches!(e.kind(), ConsumerErrorKind::JetStream(js) if js.error_code() == ErrorCode::CONSUMER_NOT_FOUND)
}

/// The destination's consumer as JetStream reports it.
pub async fn consumer_info(
    nats: &Nats,
    names: &DestinationNames,
) -> Result<consumer::Info, NatsError> {
    events_stream(nats)
        .await?
        .consumer_info(names.consumer())
        .await
        .map_err(|e| NatsError::api(format!("consumer {}", names.consumer()), e))
}

pub async fn events_stream(nats: &Nats) -> Result<stream::Stream<()>, NatsError> {
    nats.context
        .get_stream_no_info(EVENTS_STREAM)
        .await
        .map_err(|e| NatsError::api(format!("stream {EVENTS_STREAM}"), e))
}

pub async fn routes(nats: &Nats) -> Result<kv::Store, NatsError> {
    nats.context
        .get_key_value(ROUTES_BUCKET)
        .await
        .map_err(|e| NatsError::api(format!("bucket {ROUTES_BUCKET}"), e))
}

async fn route_keys(bucket: &kv::Store) -> Result<Vec<String>, NatsError> {
    use futures::TryStreamExt;
    let failed = |e: &dyn std::fmt::Display| NatsError::api(format!("bucket {ROUTES_BUCKET}"), e);
    let keys = bucket.keys().await.map_err(|e| failed(&e))?;
    keys.try_collect().await.map_err(|e| failed(&e))
}
