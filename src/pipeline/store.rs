//! The queue backend seam, on ingestion's side: who a request may reach (its write key against
//! the sources the routes know) and storing its events durably before the `200` — appended to
//! the local disk queue, or published to JetStream.

use super::envelope;
use super::ingest::Message;
use super::queue::Queue;
use super::source::SourceRoute;
use crate::jetstream::names::{DestinationNames, KeyDigest};
use crate::jetstream::publish::{Outgoing, PublishError, Publisher};
use crate::jetstream::routes::RouteTable;
use crate::jetstream::{Nats, bundle};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// A destination as ingestion sees it: its names, and the source it reads, if any (none: it
/// takes requests with or without a write key).
#[derive(Clone)]
pub struct Route {
    pub names: DestinationNames,
    pub source: Option<Arc<SourceRoute>>,
}

/// Where a request's routes come from.
pub enum Routes {
    /// The destinations this process runs, read per request so rotated write keys apply at once.
    Fixed(Box<dyn Fn() -> Vec<Route> + Send + Sync>),
    /// The gateway: every source in the routes bucket.
    Gateway(RouteTable),
}

/// Who a request's events go to.
#[derive(Debug)]
pub struct Admitted {
    /// Local queue: the destinations, when not all of them.
    pub to: Option<Vec<String>>,
    /// The source whose key the request carried, when one holds it.
    pub source: Option<Arc<SourceRoute>>,
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

    /// Those that need no write key, and those reading the source whose key the request carries.
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
            Routes::Gateway(table) => match digest.and_then(|d| table.source(&d)) {
                Some(source) => Ok(Admitted {
                    to: None,
                    source: Some(source),
                    open: Vec::new(),
                }),
                None => Err(refused()),
            },
            Routes::Fixed(routes) => {
                let routes = routes();
                let reads_key = |r: &Route| {
                    r.source
                        .as_ref()
                        .is_some_and(|s| Some(&s.digest) == digest.as_ref())
                };
                let allowed: Vec<&Route> = routes
                    .iter()
                    .filter(|r| r.source.is_none() || reads_key(r))
                    .collect();
                if allowed.is_empty() {
                    return Err(refused());
                }
                let source = allowed
                    .iter()
                    .find(|r| reads_key(r))
                    .and_then(|r| r.source.clone());
                let to = (allowed.len() != routes.len())
                    .then(|| allowed.iter().map(|r| r.names.name.clone()).collect());
                let open = allowed
                    .into_iter()
                    .filter(|r| r.source.is_none())
                    .map(|r| r.names.clone())
                    .collect();
                Ok(Admitted { to, source, open })
            }
        }
    }

    /// Whether a page of `origin` may send to some source here: a preflight carries no key.
    pub fn any_allows_origin(&self, origin: &str) -> bool {
        match self {
            Routes::Gateway(table) => table.any_allows_origin(origin),
            Routes::Fixed(routes) => routes()
                .iter()
                .any(|r| r.source.as_ref().is_none_or(|s| s.allows_origin(origin))),
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

/// What names a request's events in the stream's duplicate window: a lone event's `messageId`,
/// several events' together.
fn request_id(events: &[Message]) -> String {
    match events {
        [one] => one.id.clone(),
        _ => {
            let mut digest = Sha256::new();
            for e in events {
                digest.update(e.id.as_bytes());
                digest.update(b"\n");
            }
            format!("batch-{}", hex::encode(&digest.finalize()[..16]))
        }
    }
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
                // One message per subject, holding the request's events (a bundle): the
                // source's subject (every destination reading the source consumes it), and each
                // open destination's own.
                let subjects: Vec<(String, String)> = admitted
                    .source
                    .iter()
                    .map(|s| (s.spec.subject.clone(), s.spec.route.clone()))
                    .chain(
                        admitted
                            .open
                            .iter()
                            .map(|n| (n.subject(), n.consumer().to_string())),
                    )
                    .collect();
                let jsons: Vec<&[u8]> = events.iter().map(|m| m.json.as_ref()).collect();
                let request_id = request_id(&events);
                let bundles = bundle::bundles(&jsons, trace);
                let mut messages = Vec::with_capacity(bundles.len() * subjects.len());
                for (part, (payload, count)) in bundles.iter().enumerate() {
                    // Every part of a request of several events is an array, even of one.
                    let headers = (events.len() > 1).then(|| {
                        let mut h = async_nats::HeaderMap::new();
                        h.insert(bundle::EVENTS, count.to_string().as_str());
                        h
                    });
                    for (subject, route) in &subjects {
                        messages.push(Outgoing {
                            subject: subject.clone(),
                            // A client's retry of the same request is stored once.
                            id: match bundles.len() {
                                1 => format!("{route}:{request_id}"),
                                _ => format!("{route}:{request_id}:{part}"),
                            },
                            payload: payload.clone(),
                            headers: headers.clone(),
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
    use crate::pipeline::source::RouteSpec;

    /// The key `ka`, from `https://shop.example` only.
    fn website() -> Arc<SourceRoute> {
        SourceRoute::new(RouteSpec {
            allowed_origins: vec!["https://shop.example".into()],
            ..RouteSpec::private(
                &DestinationNames::new("default", "a"),
                &KeyDigest::of("ka"),
                String::new(),
            )
        })
    }

    #[test]
    fn admits_by_the_source_a_key_belongs_to() {
        let shop = website();
        let route = |name: &str, source: Option<&Arc<SourceRoute>>| Route {
            names: DestinationNames::new("default", name),
            source: source.cloned(),
        };
        let routes = Routes::Fixed(Box::new(move || {
            vec![route("a", Some(&shop)), route("b", None)]
        }));
        let all = routes.admit(Some("ka")).unwrap();
        assert_eq!(all.to, None);
        assert_eq!(all.source.unwrap().digest, KeyDigest::of("ka"));
        assert_eq!(all.open, vec![DestinationNames::new("default", "b")]);
        let open = routes.admit(None).unwrap();
        assert_eq!(open.to, Some(vec!["b".to_string()]));
        assert!(open.source.is_none());
        let other = routes.admit(Some("nope")).unwrap();
        assert!(
            other.source.is_none(),
            "an unknown key reaches only the open destinations"
        );
        assert!(
            routes.any_allows_origin("https://elsewhere.example"),
            "b takes any origin"
        );
        let only_keyed = Routes::Fixed(Box::new(move || vec![route("a", Some(&website()))]));
        assert_eq!(
            only_keyed.admit(Some("nope")).unwrap_err(),
            Refused::InvalidKey
        );
        assert_eq!(only_keyed.admit(None).unwrap_err(), Refused::KeyRequired);
        assert!(only_keyed.any_allows_origin("https://shop.example"));
        assert!(!only_keyed.any_allows_origin("https://elsewhere.example"));
        let gateway = Routes::Gateway(RouteTable::default());
        assert_eq!(gateway.admit(Some("ka")).unwrap_err(), Refused::InvalidKey);
    }
}
