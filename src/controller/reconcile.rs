//! One reconcile of one WebhookDestination:
//! dereference (its Secrets) → validate (pure) → build (pure) → apply (SSA) → status.

use super::backoff::ReconcileBackoff;
use super::build::{self, BuildOptions};
use super::children::{self, ChildCaches};
use super::conditions::{self, WorkerState};
use super::dereference::SecretCache;
use super::events::Events;
use super::identities::WorkerIdentities;
use super::jetstream::{self, JetStreamObjects};
use super::keys::{KeyRegistry, Wake};
use super::sources;
use super::test_event;
use super::tokens::TokenManagers;
use super::validate::Problem;
use super::worker_status::WorkerStatus;
use super::{Error, apply, dereference, validate};
use crate::api::{
    AuthStatus, AuthType, WebhookDestination, WebhookDestinationStatus, WebhookSource,
    WebhookSourceStatus,
};
use crate::config::destination::{Credentials, token_secret_name};
use crate::config::manifests::LoadedDestination;
use crate::metrics::OPERATOR_METRICS;
use crate::oauth::manager::TokenSource;
use crate::oauth::store::rfc3339;
use crate::pipeline::source::RouteSpec;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Context {
    pub client: Client,
    pub events: Events,
    pub build: BuildOptions,
    pub tokens: TokenManagers,
    pub test_events: test_event::TestEvents,
    pub backoff: ReconcileBackoff,
    pub children: ChildCaches,
    pub secrets: SecretCache,
    pub statuses: WrittenStatuses<WebhookDestination, WebhookDestinationStatus>,
    /// When what is kept for deleted destinations was last dropped.
    pub swept: Mutex<Instant>,
    /// The controller's cache of destinations: token managers of deleted ones are stopped.
    pub destinations: Store<WebhookDestination>,
    /// JetStream mode; `None` is local mode.
    pub jetstream: Option<JetStreamObjects>,
    /// Where workers' delivery state is read; `None`: not read (no `Delivering` condition).
    pub workers: Option<WorkerStatus>,
    /// The controller's cache of sources, and of namespaces (their labels admit destinations).
    pub sources: Store<WebhookSource>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Who owns each write key.
    pub keys: Arc<KeyRegistry>,
    pub source_statuses: WrittenStatuses<WebhookSource, WebhookSourceStatus>,
    /// What each destination was last found to read (the source, or why not): a change
    /// wakes the source, whose status counts its readers.
    pub readings: LastSeen<WebhookDestination>,
    /// What each source was last found to route (its route, or why not): a change wakes the
    /// destinations naming it.
    pub routings: LastSeen<WebhookSource>,
    pub wake: Wake,
    /// JetStream mode with identities per role: when each destination's is renewed.
    pub worker_identities: WorkerIdentities,
}

impl Context {
    /// The key registry brought up to date with the caches.
    pub async fn learn_keys(&self) -> Result<(), Error> {
        Ok(self
            .keys
            .learn(
                &self.client,
                &self.secrets,
                &self.sources,
                &self.destinations,
            )
            .await?)
    }

    /// Wakes the source a destination names when what the destination reads changed.
    fn note_reading(
        &self,
        dest: &WebhookDestination,
        reading: &Result<Option<RouteSpec>, Problem>,
    ) {
        let own = dest.namespace().unwrap_or_default();
        let Some((namespace, name)) = dest.spec.source_ref(&own) else {
            return;
        };
        let now = match reading {
            Ok(r) => format!("{namespace}/{name}: {:?}", r.as_ref().map(|r| &r.key)),
            Err(p) => format!("{namespace}/{name}: {}", p.reason),
        };
        if self.readings.changed(dest, now) {
            let _ = self
                .wake
                .sources
                .send(ObjectRef::new(&name).within(&namespace));
        }
    }
}

/// Drift and missed events are caught by this periodic pass even with no watch event.
const RESYNC: Duration = Duration::from_secs(600);

pub async fn reconcile(dest: Arc<WebhookDestination>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&dest, &ctx).await;
    if result.is_ok() {
        ctx.backoff.succeeded(&dest);
    }
    OPERATOR_METRICS
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "success" } else { "error" };
    OPERATOR_METRICS
        .reconciles
        .with_label_values(&[outcome])
        .inc();
    result
}

async fn reconcile_inner(dest: &WebhookDestination, ctx: &Context) -> Result<Action, Error> {
    let namespace = dest.namespace().ok_or(Error::NotNamespaced)?;
    if dest.meta().deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children; what lives in
        // JetStream is removed here, behind the finalizer.
        if let Some(js) = &ctx.jetstream {
            js.finalize(&ctx.client, dest).await?;
        }
        return Ok(Action::await_change());
    }
    sweep_deleted(ctx);
    let deref = ctx
        .secrets
        .dereference(&ctx.client, &namespace, &dest.spec)
        .await?;
    let mut verdict = validate::validate(dest, &deref);
    let reading = if dest.spec.source.is_some() {
        ctx.learn_keys().await?;
        sources::reading(dest, ctx)
    } else {
        Ok(None)
    };
    ctx.note_reading(dest, &reading);
    // Refused a source: it receives nothing, so the worker is not changed and, in JetStream
    // mode, its consumer stops reading the source.
    let source_refused = reading.is_err();
    if let (Ok(()), Err(problem)) = (&verdict.accepted, &reading) {
        verdict.accepted = Err(problem.clone());
    }
    let reading = reading.ok().flatten();
    for problem in [verdict.accepted.as_ref().err(), verdict.auth.as_ref().err()]
        .into_iter()
        .flatten()
    {
        OPERATOR_METRICS
            .reconcile_failures
            .with_label_values(&[problem.reason])
            .inc();
    }

    let tokens = token_source(dest, ctx, &deref, &verdict);
    let token_state = tokens.as_ref().map(TokenSource::state);
    if let (Some(source), Some(state)) = (&tokens, &token_state)
        && state.token.is_some()
        && !ctx
            .secrets
            .exists(&namespace, &token_secret_name(&dest.name_any()))
            .await
    {
        source.restore();
    }
    let old = ctx
        .statuses
        .last(dest, dest.status.as_ref(), conditions::differs);
    let last_test_event = match test_event::requested(dest) {
        Some((id, event)) => {
            let send = {
                let (dest, verdict) = (dest.clone(), verdict.clone());
                let (client, request_id) = (ctx.client.clone(), id.clone());
                move || async move {
                    test_event::send(&client, &dest, request_id, &event, &verdict).await
                }
            };
            ctx.test_events
                .answer(dest, &id, send)
                .or_else(|| old.last_test_event.clone())
        }
        None => {
            ctx.test_events.forget(dest);
            old.last_test_event.clone()
        }
    };
    ctx.children.ready.wait().await;
    let cached_deployment = ctx
        .children
        .deployments
        .get(&ObjectRef::new(&build::child_name(dest)).within(&namespace))
        .map(|d| d.as_ref().clone());
    if let (Some(js), true) = (&ctx.jetstream, verdict.can_deploy() || source_refused) {
        // The consumer and route exist before any worker starts.
        js.hold(&ctx.client, dest).await?;
        js.ensure(dest, reading.as_ref()).await?;
    }
    // A worker takes a WebhookSource's key on its own Service too (local mode: the only way
    // in); a private key it reads from its mounted Secret.
    let source = reading.as_ref().filter(|_| dest.spec.names_a_source());
    let deployment = if verdict.can_deploy() {
        let mut desired = build::build(dest, &ctx.build, source);
        let c = &ctx.children;
        let child = build::child_name(dest);
        let cached = cached_meta(&c.config_maps, &namespace, &child);
        apply_unless_current(ctx, cached.as_ref(), &mut desired.config_map).await?;
        let cached = cached_meta(&c.service_accounts, &namespace, &child);
        apply_unless_current(ctx, cached.as_ref(), &mut desired.service_account).await?;
        let cached = cached_meta(&c.services, &namespace, &child);
        apply_unless_current(ctx, cached.as_ref(), &mut desired.service).await?;
        if let Some(secret) = &mut desired.nats_secret {
            let cached = ctx.secrets.meta(&namespace, &build::nats_secret_name(dest));
            match ctx
                .build
                .jetstream
                .as_ref()
                .and_then(|j| j.identities.as_ref())
            {
                Some(identities) => {
                    ctx.worker_identities
                        .keep(
                            &ctx.client,
                            &c.applied,
                            identities,
                            dest,
                            cached.as_ref(),
                            secret,
                        )
                        .await?
                }
                None => {
                    apply_unless_current(ctx, cached.as_ref(), secret).await?;
                }
            }
        }
        let cached = cached_deployment.as_ref().map(|d| &d.metadata);
        match apply_unless_current(ctx, cached, &mut desired.deployment).await? {
            Some(answered) => {
                c.applied.record_deployment(&answered);
                Some(answered)
            }
            None => c.applied.freshest(cached_deployment, &desired.deployment),
        }
    } else {
        // A spec that stops being valid leaves the last good worker running: nothing accepted
        // is lost, and the status says what to fix.
        cached_deployment
    };

    let worker = WorkerState::of(deployment.as_ref());
    let delivering = match (&ctx.workers, &worker) {
        (Some(workers), WorkerState::Available { .. }) => workers.delivering(dest).await,
        _ => None,
    };
    let status = WebhookDestinationStatus {
        observed_generation: dest.meta().generation,
        conditions: conditions::conditions(
            &match &token_state {
                Some(state) => verdict.with_token_state(state),
                None => verdict,
            },
            dest.spec.is_enabled(),
            &worker,
            delivering,
            dest.meta().generation,
            &old.conditions,
            &Time(jiff_now()),
        ),
        ingest_url: Some(build::ingest_url(dest, &ctx.build, reading.is_some())),
        backlog: match &ctx.jetstream {
            Some(js) => js.backlog(dest).await,
            None => None,
        },
        auth: token_state.as_ref().map(|state| AuthStatus {
            token_secret_name: Some(token_secret_name(&dest.name_any())),
            expires_at: state.expires_at().map(rfc3339),
            authorization_url: state
                .problem
                .as_ref()
                .and_then(|p| p.authorization_url.clone()),
        }),
        last_test_event,
    };
    if conditions::differs(&old, &status) {
        let api: Api<WebhookDestination> = Api::namespaced(ctx.client.clone(), &namespace);
        apply::apply_status(&api, &dest.name_any(), &status).await?;
        publish_notices(dest, ctx, &old, &status, &worker).await;
        ctx.statuses.written(dest, status);
    }
    let again = match worker {
        WorkerState::Progressing { .. } => Duration::from_secs(30),
        _ if ctx.jetstream.is_some() => jetstream::BACKLOG_EVERY,
        WorkerState::Available { .. } if let Some(workers) = &ctx.workers => workers.every(),
        _ => RESYNC,
    };
    // Back when the workers' NATS identity is due for renewal, if that comes first.
    let again = ctx
        .worker_identities
        .until_renewal(dest)
        .map_or(again, |due| due.max(Duration::from_secs(1)).min(again));
    Ok(Action::requeue(again))
}

fn cached_meta<K: Resource<DynamicType = ()> + Clone>(
    store: &Store<PartialObjectMeta<K>>,
    namespace: &str,
    name: &str,
) -> Option<ObjectMeta> {
    let key = ObjectRef::new(name).within(namespace);
    store.get(&key).map(|m| m.metadata.clone())
}

/// Stamps a child and applies it unless its cached metadata shows it already holds exactly this
/// desired state; the API server's answer when it was applied.
async fn apply_unless_current<K>(
    ctx: &Context,
    cached: Option<&ObjectMeta>,
    desired: &mut K,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    children::stamp(desired);
    let applied = &ctx.children.applied;
    if children::up_to_date(cached, desired, applied) {
        return Ok(None);
    }
    let answered = apply::apply(&ctx.client, desired).await?;
    applied.record(desired);
    Ok(Some(answered))
}

/// How often what is kept per destination (token managers, written statuses) is checked
/// against the destinations that still exist: a full pass costs O(destinations).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

fn sweep_deleted(ctx: &Context) {
    {
        let mut swept = ctx.swept.lock().expect("sweep lock");
        if swept.elapsed() < SWEEP_EVERY {
            return;
        }
        *swept = Instant::now();
    }
    let exists = |key: &ObjectRef<WebhookDestination>| ctx.destinations.get(key).is_some();
    ctx.tokens.retain(exists);
    ctx.statuses.retain(exists);
    ctx.readings.retain(exists);
    ctx.worker_identities.retain(exists);
    let source_exists = |k: &ObjectRef<WebhookSource>| ctx.sources.get(k).is_some();
    ctx.source_statuses.retain(source_exists);
    ctx.routings.retain(source_exists);
    if let Some(workers) = &ctx.workers {
        workers.retain(exists);
    }
}

/// The statuses this operator wrote: the cache can lag behind them, and comparing with a stale
/// status would write (and announce) the same thing again.
pub struct WrittenStatuses<K: Resource, S>(Mutex<HashMap<ObjectRef<K>, S>>);

impl<K: Resource, S> Default for WrittenStatuses<K, S> {
    fn default() -> Self {
        WrittenStatuses(Mutex::default())
    }
}

impl<K, S> WrittenStatuses<K, S>
where
    K: Resource<DynamicType = ()>,
    S: Clone + Default,
{
    /// The status last written, or the cached one (`cached`) once the cache caught up with it
    /// (`differs` says whether two statuses say different things).
    pub fn last(&self, obj: &K, cached: Option<&S>, differs: impl Fn(&S, &S) -> bool) -> S {
        let key = ObjectRef::from_obj(obj);
        let mut written = self.0.lock().expect("statuses lock");
        if let (Some(w), Some(cached)) = (written.get(&key), cached)
            && !differs(w, cached)
        {
            // The cache has caught up with the write: nothing to keep.
            written.remove(&key);
        }
        written.get(&key).or(cached).cloned().unwrap_or_default()
    }

    pub fn written(&self, obj: &K, status: S) {
        let mut written = self.0.lock().expect("statuses lock");
        written.insert(ObjectRef::from_obj(obj), status);
    }

    pub fn retain(&self, exists: impl Fn(&ObjectRef<K>) -> bool) {
        self.0
            .lock()
            .expect("statuses lock")
            .retain(|k, _| exists(k));
    }
}

/// What was last found of each object, as a fingerprint: when it changes, others that depend
/// on it are woken.
pub struct LastSeen<K: Resource>(Mutex<HashMap<ObjectRef<K>, String>>);

impl<K: Resource> Default for LastSeen<K> {
    fn default() -> Self {
        LastSeen(Mutex::default())
    }
}

impl<K: Resource<DynamicType = ()>> LastSeen<K> {
    /// Records `now` for `obj`; whether it differs from what was recorded before.
    pub fn changed(&self, obj: &K, now: String) -> bool {
        let mut seen = self.0.lock().expect("last seen lock");
        seen.insert(ObjectRef::from_obj(obj), now.clone()).as_ref() != Some(&now)
    }

    pub fn retain(&self, exists: impl Fn(&ObjectRef<K>) -> bool) {
        self.0
            .lock()
            .expect("last seen lock")
            .retain(|k, _| exists(k));
    }
}

/// An OAuth 2.0 destination's tokens, its manager started as needed; `None` for other
/// destinations, and while the spec or its client credentials are not usable.
fn token_source(
    dest: &WebhookDestination,
    ctx: &Context,
    deref: &dereference::Dereferenced,
    verdict: &validate::Verdict,
) -> Option<TokenSource> {
    let is_oauth2 = dest
        .spec
        .auth
        .as_ref()
        .is_some_and(|a| a.kind == AuthType::OAuth2);
    if !is_oauth2 || !verdict.can_deploy() {
        ctx.tokens.forget(dest);
        return None;
    }
    let loaded = LoadedDestination::from_resource(dest.clone());
    let settings = Credentials::resolve(&loaded, &deref.secrets)
        .ok()?
        .oauth?
        .settings;
    match ctx.tokens.ensure(dest, settings) {
        Ok(source) => Some(source),
        Err(e) => {
            tracing::error!(destination = %dest.name_any(), error = %e, "cannot build the OAuth client");
            None
        }
    }
}

fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// The Kubernetes Events a status change deserves ([`conditions::notices`]). Failing to publish
/// one is logged, never fatal.
async fn publish_notices(
    dest: &WebhookDestination,
    ctx: &Context,
    old: &WebhookDestinationStatus,
    new: &WebhookDestinationStatus,
    worker: &WorkerState,
) {
    for notice in conditions::notices(&old.conditions, &new.conditions, worker) {
        if let Err(e) = ctx.events.publish(dest, notice).await {
            tracing::warn!(destination = %dest.name_any(), error = %e, "cannot publish an event");
        }
    }
}

/// Transient API errors are retried with a delay that grows per destination; everything else
/// about a bad spec is reported in status and waits for a change, so it never reaches here.
pub fn error_policy(dest: Arc<WebhookDestination>, error: &Error, ctx: Arc<Context>) -> Action {
    OPERATOR_METRICS
        .reconcile_failures
        .with_label_values(&[error.reason()])
        .inc();
    let delay = ctx.backoff.failed(&dest);
    tracing::warn!(destination = %dest.name_any(), namespace = %dest.namespace().unwrap_or_default(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}
