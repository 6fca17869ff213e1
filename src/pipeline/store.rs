//! The queue backend seam, on ingestion's side: who a request may reach (its write key against
//! the destinations' routes) and storing its events durably before the `200` — appended to
//! the local disk queue, or published to JetStream.

use super::envelope;
use super::ingest::Message;
use super::queue::Queue;
use crate::jetstream::Nats;
use crate::jetstream::names::{DestinationNames, KeyDigest};
use crate::jetstream::publish::{Outgoing, PublishError, Publisher};
use crate::jetstream::routes::RouteTable;

/// A destination as ingestion sees it: its names, and the digest of the write key it
/// requires, if any.
#[derive(Clone)]
pub struct Route {
    pub names: DestinationNames,
    pub key: Option<KeyDigest>,
}

/// Where a request's routes come from.
pub enum Routes {
    /// The destinations this process runs, read per request so rotated write keys apply at once.
    Fixed(Box<dyn Fn() -> Vec<Route> + Send + Sync>),
    /// The gateway: every write key in the routes bucket.
    Gateway(RouteTable),
}

/// Who a request's events go to.
#[derive(Debug, PartialEq)]
pub struct Admitted {
    /// Local queue: the destinations, when not all of them.
    pub to: Option<Vec<String>>,
    /// The write key the request carried, when a destination holds it.
    pub keyed: Option<KeyDigest>,
    /// Destinations that need no write key.
    pub open: Vec<DestinationNames>,
}

#[derive(Debug, PartialEq)]
pub enum Refused {
    InvalidKey,
    KeyRequired,
}

impl Routes {
    /// Whether the routes are known yet (the gateway reads the bucket first).
    pub fn loaded(&self) -> bool {
        match self {
            Routes::Fixed(_) => true,
            Routes::Gateway(table) => table.loaded(),
        }
    }

    /// Those that need no write key, and those whose key the request carries.
    pub fn admit(&self, key: Option<&str>) -> Result<Admitted, Refused> {
        let digest = key.map(KeyDigest::of);
        let refused = || {
            if key.is_some() {
                Refused::InvalidKey
            } else {
                Refused::KeyRequired
            }
        };
        match self {
            Routes::Gateway(table) => match digest {
                Some(d) if table.accepts(&d) => Ok(Admitted {
                    to: None,
                    keyed: Some(d),
                    open: Vec::new(),
                }),
                _ => Err(refused()),
            },
            Routes::Fixed(routes) => {
                let routes = routes();
                let allowed: Vec<&Route> = routes
                    .iter()
                    .filter(|r| r.key.is_none() || r.key == digest)
                    .collect();
                if allowed.is_empty() {
                    return Err(refused());
                }
                let keyed = digest.filter(|d| allowed.iter().any(|r| r.key.as_ref() == Some(d)));
                let to = (allowed.len() != routes.len())
                    .then(|| allowed.iter().map(|r| r.names.name.clone()).collect());
                let open = allowed
                    .into_iter()
                    .filter(|r| r.key.is_none())
                    .map(|r| r.names.clone())
                    .collect();
                Ok(Admitted { to, keyed, open })
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Queue(#[from] super::queue::QueueError),
    #[error(transparent)]
    Stream(#[from] PublishError),
}

#[derive(Clone)]
pub enum EventStore {
    Local(Queue),
    Stream(Publisher),
}

impl EventStore {
    pub fn stream(nats: Nats) -> EventStore {
        EventStore::Stream(Publisher::new(nats))
    }

    /// Returns once every event is durably stored for every destination admitted.
    /// `trace`: the request's `traceparent`, stored with each event.
    pub async fn store(
        &self,
        admitted: &Admitted,
        events: Vec<Message>,
        trace: Option<&str>,
    ) -> Result<(), StoreError> {
        match self {
            EventStore::Local(queue) => {
                let records = events
                    .iter()
                    .map(|m| envelope::encode(admitted.to.as_deref(), trace, &m.json))
                    .collect();
                Ok(queue.append(records).await?)
            }
            EventStore::Stream(publisher) => {
                // One message per event and subject: the key's subject (every destination
                // holding the key reads it), and each open destination's own.
                let subjects: Vec<(String, String)> = admitted
                    .keyed
                    .iter()
                    .map(|k| (k.subject(), k.0.clone()))
                    .chain(
                        admitted
                            .open
                            .iter()
                            .map(|n| (n.subject(), n.consumer().to_string())),
                    )
                    .collect();
                let mut messages = Vec::with_capacity(events.len() * subjects.len());
                for event in events {
                    let payload: bytes::Bytes = envelope::encode(None, trace, &event.json).into();
                    for (subject, route) in &subjects {
                        messages.push(Outgoing {
                            subject: subject.clone(),
                            id: format!("{route}:{}", event.id),
                            payload: payload.clone(),
                        });
                    }
                }
                Ok(publisher.publish_all(messages).await?)
            }
        }
    }

    /// Whether events can be stored right now (`/readyz`).
    pub async fn can_store(&self) -> bool {
        match self {
            EventStore::Local(queue) => queue.can_store().await,
            EventStore::Stream(publisher) => publisher.nats().reachable().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_by_write_key() {
        let route = |name: &str, key: Option<&str>| Route {
            names: DestinationNames::new("default", name),
            key: key.map(KeyDigest::of),
        };
        let routes = Routes::Fixed(Box::new(move || {
            vec![route("a", Some("ka")), route("b", None)]
        }));
        let all = routes.admit(Some("ka")).unwrap();
        assert_eq!(all.to, None);
        assert_eq!(all.keyed, Some(KeyDigest::of("ka")));
        assert_eq!(all.open, vec![DestinationNames::new("default", "b")]);
        let open = routes.admit(None).unwrap();
        assert_eq!(open.to, Some(vec!["b".to_string()]));
        assert_eq!(open.keyed, None);
        let other = routes.admit(Some("nope")).unwrap();
        assert_eq!(
            other.keyed, None,
            "an unknown key reaches only the open destinations"
        );
        let only_keyed = Routes::Fixed(Box::new(move || vec![route("a", Some("ka"))]));
        assert_eq!(only_keyed.admit(Some("nope")), Err(Refused::InvalidKey));
        assert_eq!(only_keyed.admit(None), Err(Refused::KeyRequired));
        let gateway = Routes::Gateway(RouteTable::default());
        assert_eq!(gateway.admit(Some("ka")), Err(Refused::InvalidKey));
    }
}
