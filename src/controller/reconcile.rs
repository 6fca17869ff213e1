//! One reconcile of one WebhookDestination:
//! dereference (its Secrets) → validate (pure) → build (pure) → apply (SSA) → status.

use super::backoff::ReconcileBackoff;
use super::build::{self, BuildOptions};
use super::conditions::{self, WorkerState};
use super::tokens::TokenManagers;
use super::{Error, apply, dereference, validate};
use super::{test_event, token_secret};
use crate::api::{
    AuthStatus, AuthType, TestEventStatus, WebhookDestination, WebhookDestinationStatus,
};
use crate::config::destination::{Credentials, token_secret_name};
use crate::config::manifests::LoadedDestination;
use crate::metrics::OPERATOR_METRICS;
use crate::oauth::manager::TokenSource;
use crate::oauth::store::rfc3339;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub build: BuildOptions,
    pub tokens: TokenManagers,
    pub test_events: test_event::TestEvents,
    pub backoff: ReconcileBackoff,
    /// The controller's cache of destinations: token managers of deleted ones are stopped.
    pub destinations: Store<WebhookDestination>,
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
        // Owner references let the garbage collector remove the children.
        return Ok(Action::await_change());
    }
    let deref = dereference::secrets(&ctx.client, &namespace, &dest.spec).await?;
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
        && token_secret::missing(&ctx.client, dest).await?
    {
        source.restore();
    }
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
                .or_else(|| old_test_event(dest))
        }
        None => {
            ctx.test_events.forget(dest);
            old_test_event(dest)
        }
    };
    let deployment = if verdict.can_deploy() {
        let children = build::build(dest, &ctx.build);
        apply::apply(&ctx.client, &children.config_map).await?;
        apply::apply(&ctx.client, &children.service_account).await?;
        apply::apply(&ctx.client, &children.service).await?;
        Some(apply::apply(&ctx.client, &children.deployment).await?)
    } else {
        // A spec that stops being valid leaves the last good worker running: nothing accepted
        // is lost, and the status says what to fix.
        Api::<Deployment>::namespaced(ctx.client.clone(), &namespace)
            .get_opt(&build::child_name(dest))
            .await?
    };

    let old = dest.status.clone().unwrap_or_default();
    let worker = WorkerState::of(deployment.as_ref());
    let status = WebhookDestinationStatus {
        observed_generation: dest.meta().generation,
        conditions: conditions::conditions(
            &match &token_state {
                Some(state) => verdict.with_token_state(state),
                None => verdict,
            },
            dest.spec.is_enabled(),
            &worker,
            dest.meta().generation,
            &old.conditions,
            &Time(jiff_now()),
        ),
        ingest_url: Some(build::ingest_url(dest)),
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
        publish_transitions(dest, ctx, &old, &status).await;
    }
    Ok(match worker {
        WorkerState::Progressing { .. } => Action::requeue(Duration::from_secs(30)),
        _ => Action::requeue(RESYNC),
    })
}

fn old_test_event(dest: &WebhookDestination) -> Option<TestEventStatus> {
    dest.status.as_ref().and_then(|s| s.last_test_event.clone())
}

/// An OAuth 2.0 destination's tokens, its manager started as needed; `None` for other
/// destinations, and while the spec or its client credentials are not usable.
fn token_source(
    dest: &WebhookDestination,
    ctx: &Context,
    deref: &dereference::Dereferenced,
    verdict: &validate::Verdict,
) -> Option<TokenSource> {
    ctx.tokens.retain(|key| ctx.destinations.get(key).is_some());
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

/// A Kubernetes Event for each condition that changed: Normal when it became True, Warning
/// when it became False. Failing to publish one is logged, never fatal.
async fn publish_transitions(
    dest: &WebhookDestination,
    ctx: &Context,
    old: &WebhookDestinationStatus,
    new: &WebhookDestinationStatus,
) {
    let reference = dest.object_ref(&());
    for c in conditions::transitions(&old.conditions, &new.conditions) {
        if c.type_ == conditions::READY && c.status == "False" {
            continue; // the condition that caused it has its own event
        }
        let event = Event {
            type_: if c.status == "True" {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: c.reason.clone(),
            note: Some(
                format!("{} is {}: {}", c.type_, c.status, c.message)
                    .chars()
                    .take(1000)
                    .collect(),
            ),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
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
