//! The gateway's live view of the routes bucket: which write-key digests it accepts, and the
//! source each belongs to. Followed with a watch, so a new source's key works within moments
//! and a deleted one's stops.

use super::names::KeyDigest;
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
            // Entries of an earlier version (no route spec) are not routes: the operator
            // replaces them.
            let spec = serde_json::from_slice::<RouteSpec>(&entry.value).ok();
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
