//! The gateway's live view of the routes bucket: which write-key digests it accepts. Followed
//! with a watch, so a new destination's key works within moments and a deleted one's stops.

use super::names::{KeyDigest, route_digest};
use super::{Nats, objects};
use crate::shutdown::stopped;
use async_nats::jetstream::kv::Operation;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Default)]
pub struct RouteTable {
    /// Route key (`<digest>.<destination>`) → its digest.
    routes: Arc<RwLock<HashMap<String, KeyDigest>>>,
    loaded: Arc<AtomicBool>,
}

impl RouteTable {
    pub fn accepts(&self, key: &KeyDigest) -> bool {
        self.routes
            .read()
            .expect("routes lock")
            .values()
            .any(|d| d == key)
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
        // replay is complete, so a key never seems unknown for a moment.
        let mut current: HashMap<String, KeyDigest> = HashMap::new();
        let mut caught_up = bucket.status().await?.values() == 0;
        if caught_up {
            self.replace(current.clone());
        }
        while let Some(entry) = entries.next().await {
            let entry = entry?;
            match (entry.operation, route_digest(&entry.key)) {
                (Operation::Put, Some(digest)) => {
                    current.insert(entry.key, digest);
                }
                _ => {
                    current.remove(&entry.key);
                }
            }
            caught_up |= entry.delta == 0;
            if caught_up {
                self.replace(current.clone());
            }
        }
        Err("the watch ended".into())
    }

    fn replace(&self, routes: HashMap<String, KeyDigest>) {
        *self.routes.write().expect("routes lock") = routes;
        self.loaded.store(true, Ordering::Release);
    }
}
