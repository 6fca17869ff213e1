//! The operator's side of JetStream mode (API §8): the streams once, each destination's
//! consumer and route before its workers start, its backlog for the status, and their removal
//! behind a finalizer when the resource is deleted.

use super::Error;
use crate::api::WebhookDestination;
use crate::config::destination::DEFAULT_CONCURRENCY;
use crate::jetstream::names::{DestinationNames, SourceNames};
use crate::jetstream::objects::{self, ConsumerPlan, Retention};
use crate::jetstream::{Nats, NatsError, backlog};
use crate::pipeline::batch::BatchPolicy;
use crate::pipeline::source::RouteSpec;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, ResourceExt};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const FINALIZER: &str = "hookline.dev/jetstream";
/// Set to `"true"` on a destination being deleted while NATS is unreachable for good: the
/// finalizer is removed without the cleanup (the consumer and route are left behind).
pub const SKIP_CLEANUP_ANNOTATION: &str = "hookline.dev/skip-jetstream-cleanup";
/// `status.backlog` is refreshed at most this often.
pub const BACKLOG_EVERY: Duration = Duration::from_secs(30);

/// A destination's consumer, and the route of its private key.
type Ensured = (ConsumerPlan, Option<RouteSpec>);

pub struct JetStreamObjects {
    nats: Nats,
    retention: Retention,
    streams_ready: AtomicBool,
    /// What each destination's consumer and route were last made to be.
    ensured: Mutex<HashMap<ObjectRef<WebhookDestination>, Ensured>>,
    /// What each source's route was last made to be (by its `src.<token>`).
    routed: Mutex<HashMap<String, Option<RouteSpec>>>,
    backlogs: Mutex<HashMap<ObjectRef<WebhookDestination>, (Instant, backlog::Counted)>>,
}

fn names(dest: &WebhookDestination) -> DestinationNames {
    DestinationNames::new(&dest.namespace().unwrap_or_default(), &dest.name_any())
}

impl JetStreamObjects {
    pub fn new(nats: Nats, retention: Retention) -> JetStreamObjects {
        JetStreamObjects {
            nats,
            retention,
            streams_ready: AtomicBool::new(false),
            ensured: Mutex::default(),
            routed: Mutex::default(),
            backlogs: Mutex::default(),
        }
    }

    async fn ensure_streams(&self) -> Result<(), Error> {
        if !self.streams_ready.load(Ordering::Acquire) {
            objects::ensure_streams(&self.nats, self.retention).await?;
            self.streams_ready.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// The source's route as the gateway should know it: `Some` while the source is accepted.
    pub async fn ensure_source_route(
        &self,
        names: &SourceNames,
        route: Option<&RouteSpec>,
    ) -> Result<(), Error> {
        let owner = names.route().to_string();
        if self.routed.lock().expect("routed lock").get(&owner) == Some(&route.cloned()) {
            return Ok(());
        }
        self.ensure_streams().await?;
        objects::ensure_route(&self.nats, &owner, route).await?;
        self.routed
            .lock()
            .expect("routed lock")
            .insert(owner, route.cloned());
        Ok(())
    }

    /// Removes the routes of sources no longer in `live` (their `src.<token>`s).
    pub async fn sweep_source_routes(
        &self,
        live: &std::collections::HashSet<String>,
    ) -> Result<(), Error> {
        self.ensure_streams().await?;
        objects::sweep_source_routes(&self.nats, live).await?;
        self.routed
            .lock()
            .expect("routed lock")
            .retain(|owner, _| live.contains(owner));
        Ok(())
    }

    /// The streams (once per operator start), then the destination's consumer — reading the
    /// subject of the route it reads, or its own — and the route of its private key.
    pub async fn ensure(
        &self,
        dest: &WebhookDestination,
        reading: Option<&RouteSpec>,
    ) -> Result<(), Error> {
        self.ensure_streams().await?;
        let spec = &dest.spec;
        let plan = ConsumerPlan::reading(
            names(dest),
            reading,
            spec.delivery
                .as_ref()
                .and_then(|d| d.concurrency)
                .map_or(DEFAULT_CONCURRENCY, |c| c as usize),
            spec.batching
                .as_ref()
                .and_then(|b| b.size)
                .map_or(BatchPolicy::default().size, |s| s as usize),
        );
        // A WebhookSource's route is the source's to publish; a private key's is the destination's.
        let own_route = reading.filter(|r| r.is_private_of(&plan.names)).cloned();
        let key = ObjectRef::from_obj(dest);
        let wanted = (plan, own_route);
        if self.ensured.lock().expect("ensured lock").get(&key) == Some(&wanted) {
            return Ok(());
        }
        let (plan, own_route) = &wanted;
        objects::ensure_consumer(&self.nats, plan).await?;
        objects::ensure_route(&self.nats, plan.names.consumer(), own_route.as_ref()).await?;
        self.ensured
            .lock()
            .expect("ensured lock")
            .insert(key, wanted);
        Ok(())
    }

    /// The destination's backlog, read from JetStream at most every [`BACKLOG_EVERY`];
    /// `None` while it cannot be read.
    pub async fn backlog(&self, dest: &WebhookDestination) -> Option<u64> {
        let key = ObjectRef::from_obj(dest);
        let last = self
            .backlogs
            .lock()
            .expect("backlog lock")
            .get(&key)
            .copied();
        if let Some((at, counted)) = last
            && at.elapsed() < BACKLOG_EVERY
        {
            return Some(counted.events);
        }
        match backlog::events(&self.nats, &names(dest), last.map(|(_, c)| c)).await {
            Ok(counted) => {
                self.backlogs
                    .lock()
                    .expect("backlog lock")
                    .insert(key, (Instant::now(), counted));
                Some(counted.events)
            }
            Err(e) => {
                // The consumer may be gone (removed by hand, or with a lost NATS store): the
                // next reconcile creates it again.
                self.ensured.lock().expect("ensured lock").remove(&key);
                tracing::warn!(destination = %dest.name_any(), error = %e, "cannot read the backlog");
                None
            }
        }
    }

    /// A destination being deleted: its consumer and route are removed (unless the user said
    /// to skip that), then the finalizer.
    pub async fn finalize(&self, client: &Client, dest: &WebhookDestination) -> Result<(), Error> {
        if !dest.finalizers().iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        let skip = dest
            .annotations()
            .get(SKIP_CLEANUP_ANNOTATION)
            .is_some_and(|v| v == "true");
        if skip {
            tracing::warn!(destination = %dest.name_any(), "deleted without removing its JetStream consumer and route ({SKIP_CLEANUP_ANNOTATION})");
        } else {
            objects::remove_destination(&self.nats, &names(dest)).await?;
        }
        let key = ObjectRef::from_obj(dest);
        self.ensured.lock().expect("ensured lock").remove(&key);
        self.backlogs.lock().expect("backlog lock").remove(&key);
        let kept: Vec<String> = dest
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        set_finalizers(client, dest, kept).await
    }

    /// Adds the finalizer before anything exists in JetStream for the destination.
    pub async fn hold(&self, client: &Client, dest: &WebhookDestination) -> Result<(), Error> {
        if dest.finalizers().iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        let mut all = dest.finalizers().to_vec();
        all.push(FINALIZER.to_string());
        set_finalizers(client, dest, all).await
    }
}

/// A merge patch carrying the resourceVersion it was computed from: a concurrent change to the
/// finalizers makes it fail with a conflict (and the reconcile is retried), never lost.
async fn set_finalizers(
    client: &Client,
    dest: &WebhookDestination,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let api: Api<WebhookDestination> =
        Api::namespaced(client.clone(), &dest.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": dest.resource_version(),
        }
    });
    api.patch(
        &dest.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

impl From<NatsError> for Error {
    fn from(e: NatsError) -> Error {
        Error::JetStream(e)
    }
}
