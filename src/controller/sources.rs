//! The operator's side of sources (API §9). A WebhookSource gets its key (generated into an
//! owned Secret when it names none), owns it unless an older holder presents the same key,
//! publishes its route for the gateway in JetStream mode, and reports how many destinations
//! read it. A destination reads a source only when the source admits its namespace.

use super::conditions::{self, without_times};
use super::keys::{Holder, source_key_ref};
use super::reconcile::Context;
use super::validate::Problem;
use super::{Error, apply};
use crate::api::{
    GENERATED_KEY, WebhookDestination, WebhookSource, WebhookSourceStatus, generated_key_secret,
};
use crate::jetstream::names::{DestinationNames, SourceNames};
use crate::metrics::OPERATOR_METRICS;
use crate::pipeline::source::{RouteSpec, check_origins};
use crate::tenancy;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const ACCEPTED: &str = "Accepted";
pub const READY: &str = "Ready";
/// Length of a generated write key (alphanumeric, like Segment's).
const GENERATED_KEY_LENGTH: usize = 40;
/// Sources are looked at again this often even with no change (drift, missed events).
const RESYNC: Duration = Duration::from_secs(600);

pub async fn reconcile_source(
    source: Arc<WebhookSource>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let namespace = source.namespace().ok_or(Error::NotNamespaced)?;
    if source.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    ctx.children.ready.wait().await;
    let key_ref = source_key_ref(&source);
    if source.spec.write_key_secret_ref.is_none()
        && !ctx.secrets.exists(&namespace, &key_ref.name).await
    {
        create_generated_key(&ctx, &source).await?;
    }
    ctx.learn_keys().await?;
    let holder = Holder::Source(ObjectRef::from_obj(source.as_ref()));
    let route = route(&source, &ctx, &holder);
    if let Some(js) = &ctx.jetstream {
        js.ensure_source_route(
            &SourceNames::new(&namespace, &source.name_any()),
            route.as_ref().ok(),
        )
        .await?;
    }
    note_routing(&ctx, &source, &route);
    let readers = match &route {
        Ok(_) => readers(&source, &ctx),
        Err(_) => 0,
    };
    let old = ctx
        .source_statuses
        .last(&source, source.status.as_ref(), differs);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let generation = source.meta().generation;
    let ingest_url = ctx
        .build
        .jetstream
        .as_ref()
        .and_then(|j| j.gateway_url.clone());
    let ready_message = match (&route, &ingest_url) {
        (Ok(_), Some(url)) => format!("the gateway ({url}) accepts this source's key"),
        (Ok(_), None) => "local mode (no NATS): each reading destination's own worker Service accepts this key (its status.ingestUrl); there is no fan-out across destinations".into(),
        (Err(p), _) => p.message.clone(),
    };
    let accepted = route.as_ref().map(|_| "Valid");
    let ready = route.as_ref().map(|_| "Ready");
    let status = WebhookSourceStatus {
        observed_generation: generation,
        conditions: vec![
            conditions::condition(
                ACCEPTED,
                accepted,
                "the write key is this source's",
                generation,
                &old.conditions,
                &now,
            ),
            conditions::condition(
                READY,
                ready,
                &ready_message,
                generation,
                &old.conditions,
                &now,
            ),
        ],
        write_key_secret_name: Some(key_ref.name.clone()),
        ingest_url: ingest_url.filter(|_| route.is_ok()),
        destinations: Some(readers),
    };
    if differs(&old, &status) {
        let api: Api<WebhookSource> = Api::namespaced(ctx.client.clone(), &namespace);
        apply::apply_status(&api, &source.name_any(), &status).await?;
        if let (Err(problem), true) = (&route, newly_refused(&old, problem_reason(&route))) {
            let notice = conditions::Notice {
                warning: true,
                reason: problem.reason.into(),
                note: format!("Accepted is False: {}", problem.message),
            };
            if let Err(e) = ctx.events.publish(source.as_ref(), notice).await {
                tracing::warn!(source = %source.name_any(), error = %e, "cannot publish an event");
            }
        }
        ctx.source_statuses.written(&source, status);
    }
    Ok(Action::requeue(RESYNC))
}

/// Wakes the destinations naming the source when what it routes changed: they may read it now,
/// or no longer.
fn note_routing(ctx: &Context, source: &WebhookSource, route: &Result<RouteSpec, Problem>) {
    let now = match route {
        Ok(r) => format!("{r:?}"),
        Err(p) => p.reason.to_string(),
    };
    if ctx.routings.changed(source, now) {
        for d in naming(&ctx.destinations.state(), source) {
            let _ = ctx.wake.destinations.send(ObjectRef::from_obj(d.as_ref()));
        }
    }
}

fn problem_reason(route: &Result<RouteSpec, Problem>) -> &str {
    route.as_ref().err().map_or("", |p| p.reason)
}

/// Whether the source moves into this refusal now (an Event is worth it once, not every pass).
fn newly_refused(old: &WebhookSourceStatus, reason: &str) -> bool {
    !old.conditions
        .iter()
        .any(|c| c.type_ == ACCEPTED && c.status == "False" && c.reason == reason)
}

pub fn source_error_policy(source: Arc<WebhookSource>, error: &Error, _: Arc<Context>) -> Action {
    OPERATOR_METRICS
        .reconcile_failures
        .with_label_values(&[error.reason()])
        .inc();
    tracing::warn!(source = %source.name_any(), namespace = %source.namespace().unwrap_or_default(), error = %error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

fn differs(old: &WebhookSourceStatus, new: &WebhookSourceStatus) -> bool {
    let strip = |s: &WebhookSourceStatus| WebhookSourceStatus {
        conditions: without_times(&s.conditions),
        ..s.clone()
    };
    strip(old) != strip(new)
}

/// The source's route, or why it routes nothing: its key missing, or held by an older holder.
fn route(source: &WebhookSource, ctx: &Context, holder: &Holder) -> Result<RouteSpec, Problem> {
    check_origins(&source.spec.allowed_origins).map_err(|e| Problem {
        reason: "Invalid",
        message: format!("spec.{e}"),
    })?;
    let namespace = source.namespace().unwrap_or_default();
    let key_ref = source_key_ref(source);
    let Some(digest) = ctx.keys.digest(holder) else {
        return Err(Problem {
            reason: "SecretMissing",
            message: format!(
                "Secret {} in namespace {namespace} has no key {:?} with a write key; create it (kubectl create secret generic {} -n {namespace} --from-literal={}=...), or remove spec.writeKeySecretRef to have one generated",
                key_ref.name, key_ref.key, key_ref.name, key_ref.key
            ),
        });
    };
    let Some(rank) = ctx.keys.owns(holder) else {
        // Never who holds it: that would tell one tenant about another.
        return Err(Problem {
            reason: "WriteKeyConflict",
            message: "another source created earlier already uses this write key, so nothing is routed through this one; give it a key of its own (or remove spec.writeKeySecretRef to have one generated)".into(),
        });
    };
    let names = SourceNames::new(&namespace, &source.name_any());
    Ok(RouteSpec::of_source(&names, &source.spec, &digest, rank))
}

/// The destinations that name `source` in their `sourceRef`.
pub fn naming<'a>(
    destinations: &'a [Arc<WebhookDestination>],
    source: &WebhookSource,
) -> impl Iterator<Item = &'a Arc<WebhookDestination>> {
    let wanted = Some((source.namespace().unwrap_or_default(), source.name_any()));
    destinations
        .iter()
        .filter(move |d| d.spec.source_ref(&d.namespace().unwrap_or_default()) == wanted)
}

/// Destinations reading the source now: those naming it that it admits.
fn readers(source: &WebhookSource, ctx: &Context) -> u32 {
    let namespace = source.namespace().unwrap_or_default();
    naming(&ctx.destinations.state(), source)
        .filter(|d| {
            let own = d.namespace().unwrap_or_default();
            tenancy::admits(&namespace, &source.spec, &own, &namespace_labels(ctx, &own))
        })
        .count() as u32
}

fn namespace_labels(ctx: &Context, namespace: &str) -> BTreeMap<String, String> {
    ctx.namespaces
        .get(&ObjectRef::<PartialObjectMeta<Namespace>>::new(namespace))
        .and_then(|n| n.metadata.labels.clone())
        .unwrap_or_default()
}

/// What a destination reads — the route of its private key or of the source it names — or why
/// it may not; `Ok(None)`: it takes requests without a key (or its key Secret is not there
/// yet, which the credentials check reports).
pub fn reading(dest: &WebhookDestination, ctx: &Context) -> Result<Option<RouteSpec>, Problem> {
    let own = dest.namespace().unwrap_or_default();
    if let Some((namespace, name)) = dest.spec.source_ref(&own) {
        let what = format!("WebhookSource {namespace}/{name}");
        let Some(source) = ctx
            .sources
            .get(&ObjectRef::<WebhookSource>::new(&name).within(&namespace))
        else {
            return Err(Problem {
                reason: "SourceNotFound",
                message: format!("{what} does not exist; create it, or fix spec.source.sourceRef"),
            });
        };
        if !tenancy::admits(&namespace, &source.spec, &own, &namespace_labels(ctx, &own)) {
            return Err(Problem {
                reason: "SourceNotPermitted",
                message: format!(
                    "{what} does not admit destinations of namespace {own}; its owner can add this namespace to its spec.destinations.namespaces"
                ),
            });
        }
        let holder = Holder::Source(ObjectRef::from_obj(source.as_ref()));
        return route(&source, ctx, &holder).map(Some).map_err(|p| Problem {
            reason: "SourceNotReady",
            message: format!("{what} is not accepted ({}); see its status", p.reason),
        });
    }
    let holder = Holder::Destination(ObjectRef::from_obj(dest));
    let Some(digest) = ctx.keys.digest(&holder) else {
        return Ok(None);
    };
    let Some(rank) = ctx.keys.owns(&holder) else {
        return Err(Problem {
            reason: "WriteKeyConflict",
            message: "another source created earlier already uses the write key of spec.source.writeKeySecretRef, so this destination receives nothing with it; give it a key of its own, or read that source with spec.source.sourceRef if its owner admits this namespace".into(),
        });
    };
    let names = DestinationNames::new(&own, &dest.name_any());
    Ok(Some(RouteSpec::private(&names, &digest, rank)))
}

/// The Secret `<name>-write-key` with a random key, owned by the source (deleted with it). An
/// existing one is never overwritten: that would change the key under every page using it.
async fn create_generated_key(ctx: &Context, source: &WebhookSource) -> Result<(), Error> {
    let key: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(GENERATED_KEY_LENGTH)
        .map(char::from)
        .collect();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(generated_key_secret(&source.name_any())),
            namespace: source.namespace(),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".into(), "hookline".into()),
                ("app.kubernetes.io/part-of".into(), "hookline".into()),
            ])),
            owner_references: source.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(GENERATED_KEY.to_string(), key)])),
        ..Secret::default()
    };
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &source.namespace().unwrap_or_default());
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
