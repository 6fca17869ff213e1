//! One reconcile of one WebhookDestination:
//! dereference (its Secrets) → validate (pure) → build (pure) → apply (SSA) → status.

use super::backoff::ReconcileBackoff;
use super::build::{self, BuildOptions};
use super::children::{self, ChildCaches};
use super::conditions::{self, WorkerState};
use super::dereference::SecretCache;
use super::events::Events;
use super::jetstream::{self, JetStreamObjects};
use super::test_event;
use super::tokens::TokenManagers;
use super::worker_status::WorkerStatus;
use super::{Error, apply, dereference, validate};
use crate::api::{AuthStatus, AuthType, WebhookDestination, WebhookDestinationStatus};
use crate::config::destination::{Credentials, token_secret_name};
use crate::config::manifests::LoadedDestination;
use crate::metrics::OPERATOR_METRICS;
use crate::oauth::manager::TokenSource;
use crate::oauth::store::rfc3339;
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
    pub statuses: WrittenStatuses,
    /// When what is kept for deleted destinations was last dropped.
    pub swept: Mutex<Instant>,
    /// The controller's cache of destinations: token managers of deleted ones are stopped.
    pub destinations: Store<WebhookDestination>,
    /// JetStream mode; `None` is local mode.
    pub jetstream: Option<JetStreamObjects>,
    /// Where workers' delivery state is read; `None`: not read (no `Delivering` condition).
    pub workers: Option<WorkerStatus>,
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
    let verdict = validate::validate(dest, &deref);
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
    let old = ctx.statuses.last(dest);
    let last_test_event = match test_event::requested(dest) {
        Some((id, event)) => {
            let send = {
                let (dest, deref, verdict) = (dest.clone(), deref.clone(), verdict.clone());
                let (tokens, request_id) = (tokens.clone(), id.clone());
                move || async move {
                    let tokens = tokens.as_ref();
                    test_event::send(&dest, request_id, &event, &deref, &verdict, tokens).await
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
    if let (Some(js), true) = (&ctx.jetstream, verdict.can_deploy()) {
        // The consumer and route exist before any worker starts.
        js.hold(&ctx.client, dest).await?;
        js.ensure(dest, write_key(dest, &deref).as_deref()).await?;
    }
    let deployment = if verdict.can_deploy() {
        let mut desired = build::build(dest, &ctx.build);
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
            apply_unless_current(ctx, cached.as_ref(), secret).await?;
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
        ingest_url: Some(build::ingest_url(dest, &ctx.build)),
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
    Ok(match worker {
        WorkerState::Progressing { .. } => Action::requeue(Duration::from_secs(30)),
        _ if ctx.jetstream.is_some() => Action::requeue(jetstream::BACKLOG_EVERY),
        WorkerState::Available { .. } if let Some(workers) = &ctx.workers => {
            Action::requeue(workers.every())
        }
        _ => Action::requeue(RESYNC),
    })
}

/// The destination's write key, when it has one and its Secret resolves.
fn write_key(dest: &WebhookDestination, deref: &dereference::Dereferenced) -> Option<String> {
    let loaded = LoadedDestination::from_resource(dest.clone());
    Credentials::resolve(&loaded, &deref.secrets)
        .ok()?
        .write_key
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
    if let Some(workers) = &ctx.workers {
        workers.retain(exists);
    }
}

/// The statuses this operator wrote: the destination cache can lag behind them, and comparing
/// with a stale status would write (and announce) the same thing again.
#[derive(Default)]
pub struct WrittenStatuses(Mutex<HashMap<ObjectRef<WebhookDestination>, WebhookDestinationStatus>>);

impl WrittenStatuses {
    fn last(&self, dest: &WebhookDestination) -> WebhookDestinationStatus {
        let key = ObjectRef::from_obj(dest);
        let mut written = self.0.lock().expect("statuses lock");
        if let (Some(w), Some(cached)) = (written.get(&key), dest.status.as_ref())
            && !conditions::differs(w, cached)
        {
            // The cache has caught up with the write: nothing to keep.
            written.remove(&key);
        }
        written
            .get(&key)
            .or(dest.status.as_ref())
            .cloned()
            .unwrap_or_default()
    }

    fn written(&self, dest: &WebhookDestination, status: WebhookDestinationStatus) {
        let mut written = self.0.lock().expect("statuses lock");
        written.insert(ObjectRef::from_obj(dest), status);
    }

    fn retain(&self, exists: impl Fn(&ObjectRef<WebhookDestination>) -> bool) {
        self.0
            .lock()
            .expect("statuses lock")
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
