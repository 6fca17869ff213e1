//! The gateway's live view of the routes bucket: which write-key digests it accepts, and the
//! source each belongs to. Followed with a watch, so a new source's key works within moments
//! and a deleted one's stops.

use super::names::{DestinationNames, KeyDigest, route_parts};
use super::{Nats, objects};
use crate::pipeline::source::{RouteSpec, SourceRoute, origin_allowed};
use crate::shutdown::stopped;
use async_nats::jetstream::kv::Operation;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

type Table = HashMap<String, Arc<SourceRoute>>;

#[derive(Clone, Default)]
pub struct RouteTable {
    /// Route key (`<digest>.<owner>`) → its route.
    routes: Arc<RwLock<Table>>,
    loaded: Arc<AtomicBool>,
}

impl RouteTable {
    /// The source a key belongs to. Two routes of one key exist only for the moment between
    /// the operator publishing the owner's and removing the other: the lowest rank is the owner.
    pub fn source(&self, key: &KeyDigest) -> Option<Arc<SourceRoute>> {
        self.routes
            .read()
            .expect("routes lock")
            .values()
            .filter(|r| &r.digest == key)
            .min_by(|a, b| a.spec.rank.cmp(&b.spec.rank))
            .cloned()
    }

    /// Whether some source may be sent to from `origin` (a preflight names no key).
    pub fn any_allows_origin(&self, origin: &str) -> bool {
        self.routes
            .read()
            .expect("routes lock")
            .values()
            .any(|r| origin_allowed(&r.spec.allowed_origins, origin))
    }

    /// Whether the bucket has been read to its end at least once.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Follows the bucket until `shutdown`, starting over after any interruption.
    pub async fn follow(self, nats: Nats, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stopped(&mut shutdown) => return,
                result = self.watch_once(&nats) => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "cannot follow the routes bucket; trying again");
                    }
                }
            }
            tokio::select! {
                _ = stopped(&mut shutdown) => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn watch_once(
        &self,
        nats: &Nats,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let bucket = objects::routes(nats).await?;
        let mut entries = bucket.watch_with_history(">").await?;
        // A fresh watch replays every current entry first: the table is replaced only once the
        // replay is complete, so a key never seems unknown for a moment. An unchanged route
        // keeps its rate limit's bucket.
        let mut current: Table = self.routes.read().expect("routes lock").clone();
        let mut seen = std::collections::HashSet::new();
        let mut caught_up = bucket.status().await?.values() == 0;
        if caught_up {
            current.clear();
            self.replace(current.clone());
        }
        while let Some(entry) = entries.next().await {
            let entry = entry?;
            seen.insert(entry.key.clone());
            let spec = serde_json::from_slice::<RouteSpec>(&entry.value)
                .ok()
                .or_else(|| legacy_route(&entry.key, &entry.value));
            match (entry.operation, spec) {
                (Operation::Put, Some(spec)) => {
                    if current.get(&entry.key).is_none_or(|r| r.spec != spec) {
                        current.insert(entry.key, SourceRoute::new(spec));
                    }
                }
                _ => {
                    current.remove(&entry.key);
                }
            }
            if !caught_up && entry.delta == 0 {
                // Routes removed while no watch was running are not replayed.
                current.retain(|k, _| seen.contains(k));
                caught_up = true;
            }
            if caught_up {
                self.replace(current.clone());
            }
        }
        Err("the watch ended".into())
    }

    fn replace(&self, routes: Table) {
        *self.routes.write().expect("routes lock") = routes;
        self.loaded.store(true, Ordering::Release);
    }
}

/// An entry of the earlier version (`<digest>.<namespace>_<name>` → `{namespace, name}`: a
/// destination's private key), taken as that destination's private route until the operator
/// rewrites it, so keys keep working during an upgrade. It ranks after any current route.
fn legacy_route(key: &str, value: &[u8]) -> Option<RouteSpec> {
    #[derive(serde::Deserialize)]
    struct Legacy {
        namespace: String,
        name: String,
    }
    let legacy: Legacy = serde_json::from_slice(value).ok()?;
    let (digest, _) = route_parts(key)?;
    let names = DestinationNames::new(&legacy.namespace, &legacy.name);
    Some(RouteSpec::private(
        &names,
        &digest,
        "~ earlier version".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_versions_route_is_its_destinations_private_route() {
        let key = KeyDigest::of("wk");
        let names = DestinationNames::new("shop", "crm");
        let entry = names.route_key(&key);
        let spec = legacy_route(&entry, br#"{"namespace":"shop","name":"crm"}"#).unwrap();
        assert_eq!(spec.subject, "hookline.events.dest.shop_crm");
        assert_eq!(spec.key, key.0);
        assert!(
            spec.rank.as_str() > "99999999999999999999",
            "ranks after current routes"
        );
        assert!(legacy_route(&entry, b"{}").is_none());
    }
}
