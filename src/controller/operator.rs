//! The operator process: the controller loop over WebhookDestinations and their children,
//! gated on a Lease when leader election is on, beside a health and metrics server.

use super::build::{BuildOptions, MANAGED_BY};
use super::children::{self, Applied, CachesReady, ChildCaches};
use super::dereference::SecretCache;
use super::events::Events;
use super::keys::{Holder, KeyRegistry, Wake};
use super::reconcile::{Context, error_policy, reconcile};
use super::sources::{naming, reconcile_source, source_error_policy};
use super::test_event::{EVENT_ANNOTATION, REQUEST_ANNOTATION, TestEvents};
use super::tokens::TokenManagers;
use crate::api::{WebhookDestination, WebhookSource};
use crate::metrics::OPERATOR_METRICS;
use crate::shutdown::stopped;
use anyhow::Context as _;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

pub const LEASE_NAME: &str = "hookline-controller";
/// How often the routes of deleted sources are looked for (JetStream mode).
const SOURCE_ROUTE_SWEEP: std::time::Duration = std::time::Duration::from_secs(30);

/// Bounds the API requests in flight after a restart over thousands of destinations, which keeps
/// the API server's priority-and-fairness queues and the controller's memory flat.
const CONCURRENT_RECONCILES: u16 = 16;

#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// Only this namespace's destinations (and children, and Secrets) are watched.
    pub watch_namespace: Option<String>,
    /// The namespace of the Lease; `None` turns leader election off.
    pub leader_election: Option<String>,
    /// This replica's name in the Lease and in Events (the pod name in the cluster).
    pub identity: String,
    pub listen: SocketAddr,
    pub build: BuildOptions,
    /// JetStream mode: where NATS is and how long its streams keep events.
    pub jetstream: Option<(crate::jetstream::Nats, crate::jetstream::objects::Retention)>,
    /// JetStream mode with identities per role: the gateway's, kept in its Secret.
    pub gateway_identity: Option<super::identities::GatewayIdentity>,
    /// Where and how often a destination's worker is asked for its `Delivering` condition;
    /// `None`: not read.
    pub worker_status: Option<super::worker_status::WorkerStatusOptions>,
    /// The guard on every request the operator itself sends (API §11).
    pub egress: crate::egress::Egress,
}

pub async fn run(
    client: Client,
    opts: OperatorOptions,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "health and metrics");
    let nats = opts.jetstream.as_ref().map(|(nats, _)| nats.clone());
    let server = tokio::spawn(serve_health(
        listener,
        ready.clone(),
        nats,
        shutdown.clone(),
    ));

    match &opts.leader_election {
        None => run_controller(client, &opts, ready, shutdown).await,
        Some(lease_namespace) => {
            lead_then_run(client, &opts, lease_namespace, ready, shutdown).await?
        }
    }
    let _ = server.await;
    Ok(())
}

/// Runs the controller only while this replica holds the Lease, so two replicas never both
/// write; on losing it the controller stops and the replica waits to lead again.
async fn lead_then_run(
    client: Client,
    opts: &OperatorOptions,
    lease_namespace: &str,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(lease_namespace)
        .with_identity(&opts.identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .context("cannot set up leader election")?;
    // A standby replica is ready too: it serves health and metrics and takes over when the
    // leader goes; `hookline_leader` tells which one leads.
    ready.store(true, Ordering::Release);
    let (mut leading, task) = manager.watch().await;
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            r = leading.wait_for(|l| *l) => if r.is_err() { break },
        }
        tracing::info!(identity = %opts.identity, "leading: starting the controller");
        let (stop, controller_shutdown) = watch::channel(false);
        let mut lost = leading.clone();
        let mut outer = shutdown.clone();
        let watchdog = tokio::spawn(async move {
            tokio::select! {
                _ = lost.wait_for(|l| !*l) => {}
                _ = stopped(&mut outer) => {}
            }
            let _ = stop.send(true);
        });
        run_controller(client.clone(), opts, ready.clone(), controller_shutdown).await;
        watchdog.abort();
        if *shutdown.borrow() {
            break;
        }
        tracing::warn!(identity = %opts.identity, "lost the lease: controller stopped");
    }
    drop(leading);
    // Closing the channel makes the manager release the Lease for a fast hand-over.
    match task.await {
        Ok(Ok(manager)) => {
            let _ = manager.release().await;
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "leader election ended with an error"),
        Err(e) => tracing::warn!(error = %e, "leader election task failed"),
    }
    Ok(())
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn run_controller(
    client: Client,
    opts: &OperatorOptions,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Reconciles in JetStream mode need NATS: the first ones would only fail and wait 5 s.
    if let Some((nats, _)) = &opts.jetstream {
        nats.connected(&mut shutdown).await;
    }
    if let Some(gateway) = &opts.gateway_identity {
        tokio::spawn(gateway.clone().keep(client.clone(), shutdown.clone()));
    }
    let ns = &opts.watch_namespace;
    let children = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    // Reconciles asked for from outside the watches: a key changing hands, a source whose
    // readers changed.
    let (wake_sources, woken_sources) = tokio::sync::mpsc::unbounded_channel();
    let (wake_destinations, woken_destinations) = tokio::sync::mpsc::unbounded_channel();
    let wake = Wake {
        sources: wake_sources,
        destinations: wake_destinations,
    };
    let keys = Arc::new(KeyRegistry::new(wake.clone()));
    let (destinations, destinations_writer) = reflector::store();
    let destination_changes = relevant_changes(
        reflector(
            destinations_writer,
            watcher(
                api::<WebhookDestination>(&client, ns),
                watcher::Config::default().any_semantic(),
            )
            .modify(slim_destination),
        ),
        destination_signature,
        {
            let (keys, wake) = (keys.clone(), wake.clone());
            move |dest: &WebhookDestination| {
                keys.wake_sharers(&Holder::Destination(ObjectRef::from_obj(dest)));
                let own = dest.namespace().unwrap_or_default();
                if let Some((namespace, name)) = dest.spec.source_ref(&own) {
                    let _ = wake.sources.send(ObjectRef::new(&name).within(&namespace));
                }
            }
        },
        true,
    );
    let (sources, sources_writer) = reflector::store();
    // The source controller waits for this store itself; a second waiter on the same store can
    // miss its wake-up (kube's ready signal keeps one waker), so the caches learn that sources
    // were listed from the stream.
    let (sources_listed, sources_ready) = watch::channel(false);
    let source_changes = relevant_changes(
        reflector(
            sources_writer,
            watcher(
                api::<WebhookSource>(&client, ns),
                watcher::Config::default().any_semantic(),
            )
            .modify(|s: &mut WebhookSource| s.metadata.managed_fields = None),
        )
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                let _ = sources_listed.send(true);
            }
        }),
        |s: &WebhookSource| children::hash_of((s.metadata.generation, s.metadata.uid.as_deref())),
        {
            let keys = keys.clone();
            move |s: &WebhookSource| keys.wake_sharers(&Holder::Source(ObjectRef::from_obj(s)))
        },
        true,
    )
    .inspect({
        // Its readers look again: a grant given or taken back.
        let (destinations, wake) = (destinations.clone(), wake.clone());
        move |source| {
            if let Ok(source) = source {
                for d in naming(&destinations.state(), source) {
                    let _ = wake.destinations.send(ObjectRef::from_obj(d.as_ref()));
                }
            }
        }
    });
    let (namespaces, namespace_changes) = namespace_labels(&client, ns);
    let controller = Controller::for_stream(destination_changes, destinations.clone())
        .with_config(controller::Config::default().concurrency(CONCURRENT_RECONCILES));
    // Children and Secrets: metadata is all the controller takes from them (Deployments add
    // replicas and status), so Secret values never travel on a watch and a cluster full of
    // large Secrets (Helm releases) costs the controller no memory.
    let applied = Applied::default();
    let (config_maps, config_map_changes) =
        child_metadata::<ConfigMap>(&client, ns, &children, &applied);
    let (service_accounts, service_account_changes) =
        child_metadata::<ServiceAccount>(&client, ns, &children, &applied);
    let (services, service_changes) = child_metadata::<Service>(&client, ns, &children, &applied);
    let (deployments, deployments_writer) = reflector::store();
    let forget = applied.clone();
    let deployment_changes = relevant_changes(
        reflector(
            deployments_writer,
            watcher(api::<Deployment>(&client, ns), children.clone())
                .modify(children::slim_deployment),
        ),
        children::deployment_signature,
        move |d: &Deployment| forget.forget("Deployment", &d.metadata),
        false,
    );
    let (secrets, secrets_writer) = reflector::store();
    let secret_changes = reflector(
        secrets_writer,
        watcher(
            api::<PartialObjectMeta<Secret>>(&client, ns),
            watcher::Config::default(),
        )
        .modify(children::slim_partial),
    )
    .touched_objects()
    .inspect({
        // A source's key Secret, rotated or created.
        let (sources, wake) = (sources.clone(), wake.clone());
        move |secret| {
            if let Ok(secret) = secret {
                for s in keyed_by(&sources.state(), secret) {
                    let _ = wake.sources.send(s);
                }
            }
        }
    });

    // The workers' Services' EndpointSlices (labelled like the Services): which pods to ask
    // for the endpoint's health. A change of the ready pods looks again.
    let (endpoint_slices, slices_writer) = reflector::store();
    let slice_changes: std::pin::Pin<Box<dyn Stream<Item = _> + Send>> = match &opts.worker_status {
        Some(_) => Box::pin(relevant_changes(
            reflector(
                slices_writer,
                watcher(api::<EndpointSlice>(&client, ns), children.clone()),
            ),
            |s: &EndpointSlice| children::hash_of(format!("{:?}{:?}", s.endpoints, s.ports)),
            |_| {},
            false,
        )),
        None => Box::pin(futures::stream::pending()),
    };
    let (caches_listed, caches_ready) = watch::channel(false);
    tokio::spawn({
        let (c, a, s, d) = (
            config_maps.clone(),
            service_accounts.clone(),
            services.clone(),
            deployments.clone(),
        );
        let (secrets, namespaces) = (secrets.clone(), namespaces.clone());
        let mut sources_ready = sources_ready;
        let cluster_wide = ns.is_none();
        async move {
            let _ = c.wait_until_ready().await;
            let _ = a.wait_until_ready().await;
            let _ = s.wait_until_ready().await;
            let _ = d.wait_until_ready().await;
            let _ = secrets.wait_until_ready().await;
            let _ = sources_ready.wait_for(|listed| *listed).await;
            if cluster_wide {
                let _ = namespaces.wait_until_ready().await;
            }
            let _ = caches_listed.send(true);
        }
    });
    let caches_ready = CachesReady::new(caches_ready);
    let (tokens, token_changes) = TokenManagers::new(client.clone(), opts.egress.clone());
    let (test_events, test_answers) = TestEvents::new();
    // Token-state changes and answered test events are written into the status by a reconcile.
    let status_changes = futures::stream::select(
        receiver_stream(token_changes),
        receiver_stream(test_answers),
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        events: Events {
            client: client.clone(),
            instance: opts.identity.clone(),
        },
        build: opts.build.clone(),
        tokens,
        test_events,
        backoff: Default::default(),
        destinations: destinations.clone(),
        jetstream: opts
            .jetstream
            .clone()
            .map(|(nats, retention)| super::jetstream::JetStreamObjects::new(nats, retention)),
        children: ChildCaches {
            config_maps,
            service_accounts,
            services,
            deployments,
            applied,
            ready: caches_ready.clone(),
        },
        secrets: SecretCache::new(secrets, caches_ready),
        workers: opts
            .worker_status
            .clone()
            .map(|o| super::worker_status::WorkerStatus::new(o, endpoint_slices)),
        statuses: Default::default(),
        swept: std::sync::Mutex::new(std::time::Instant::now()),
        sources: sources.clone(),
        namespaces,
        keys,
        source_statuses: Default::default(),
        readings: Default::default(),
        routings: Default::default(),
        wake,
        worker_identities: Default::default(),
    });
    if ctx.jetstream.is_some() {
        tokio::spawn(sweep_source_routes(ctx.clone(), shutdown.clone()));
    }
    let source_controller = Controller::for_stream(driven(source_changes, &shutdown), sources)
        .with_config(controller::Config::default().concurrency(CONCURRENT_RECONCILES))
        .reconcile_on(receiver_stream(woken_sources))
        .graceful_shutdown_on({
            let mut shutdown = shutdown.clone();
            async move { stopped(&mut shutdown).await }
        })
        .run(reconcile_source, source_error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "source controller event");
            }
        });
    ready.store(true, Ordering::Release);
    OPERATOR_METRICS.leader.set(1);
    let destination_controller = controller
        .owns_stream(driven(config_map_changes, &shutdown))
        .owns_stream(driven(service_account_changes, &shutdown))
        .owns_stream(driven(service_changes, &shutdown))
        .owns_stream(driven(deployment_changes, &shutdown))
        .watches_stream(driven(secret_changes, &shutdown), move |secret| {
            referencing(&destinations.state(), &secret)
        })
        .watches_stream(driven(slice_changes, &shutdown), |slice: EndpointSlice| {
            let service = slice.labels().get("kubernetes.io/service-name")?;
            let name = service.strip_suffix("-hookline")?;
            Some(ObjectRef::new(name).within(&slice.namespace()?))
        })
        .watches_stream(driven(namespace_changes, &shutdown), {
            let destinations = ctx.destinations.clone();
            move |namespace| naming_a_source_in(&destinations.state(), &namespace.name_any())
        })
        .reconcile_on(futures::stream::select(
            status_changes,
            receiver_stream(woken_destinations),
        ))
        .graceful_shutdown_on(async move { stopped(&mut shutdown).await })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        });
    futures::join!(destination_controller, source_controller);
    OPERATOR_METRICS.leader.set(0);
}

/// What the operator keeps of a destination: not who wrote which field, nor `kubectl apply`'s
/// copy of the whole object (over thousands of destinations, most of the cache).
fn slim_destination(dest: &mut WebhookDestination) {
    dest.metadata.managed_fields = None;
    if let Some(a) = dest.metadata.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A destination is reconciled when its spec, a test-event request or its deletion changes —
/// not when its status does (that is the operator's own write).
fn destination_signature(dest: &WebhookDestination) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dest.metadata.generation.hash(&mut h);
    dest.metadata.deletion_timestamp.is_some().hash(&mut h);
    for key in [REQUEST_ANNOTATION, EVENT_ANNOTATION] {
        dest.annotations().get(key).hash(&mut h);
    }
    h.finish()
}

/// A metadata-only watch of one kind of child: its cache, and the changes that matter.
fn child_metadata<K>(
    client: &Client,
    namespace: &Option<String>,
    config: &watcher::Config,
    applied: &Applied,
) -> (
    Store<PartialObjectMeta<K>>,
    impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let applied = applied.clone();
    let changes = relevant_changes(
        reflector(
            writer,
            watcher(
                api::<PartialObjectMeta<K>>(client, namespace),
                config.clone(),
            )
            .modify(children::slim_partial),
        ),
        children::meta_signature,
        move |m: &PartialObjectMeta<K>| applied.forget(&K::kind(&()), &m.metadata),
        false,
    );
    (store, changes)
}

/// The objects of a watch whose `signature` changed (and every deletion).
fn relevant_changes<K, S>(
    events: S,
    signature: impl Fn(&K) -> u64 + Send + 'static,
    on_delete: impl Fn(&K) + Send + 'static,
    first_list_triggers: bool,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let mut keep = children::relevant(signature, on_delete, first_list_triggers);
    events.filter_map(move |event| {
        futures::future::ready(match event {
            Ok(event) => keep(event).map(Ok),
            Err(e) => Some(Err(e)),
        })
    })
}

/// Runs a watch in a task of its own, handing its items to the controller through a channel: the
/// caches it fills must keep up even while every reconcile slot is busy (reconciles wait for the
/// caches), so they cannot depend on the controller polling them.
fn driven<T: Send + 'static>(
    stream: impl Stream<Item = T> + Send + 'static,
    shutdown: &watch::Receiver<bool>,
) -> impl Stream<Item = T> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = stopped(&mut shutdown) => return,
                item = stream.next() => {
                    let Some(item) = item else { return };
                    if tx.send(item).is_err() {
                        return;
                    }
                }
            }
        }
    });
    receiver_stream(rx)
}

fn receiver_stream<T: Send + 'static>(
    rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
}

/// The destinations of `namespace` that name a source: its labels decide whether they may.
fn naming_a_source_in(
    destinations: &[Arc<WebhookDestination>],
    namespace: &str,
) -> Vec<ObjectRef<WebhookDestination>> {
    destinations
        .iter()
        .filter(|d| d.namespace().as_deref() == Some(namespace))
        .filter(|d| d.spec.names_a_source())
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

/// The sources whose write key is in `secret` (named, or generated).
fn keyed_by(
    sources: &[Arc<WebhookSource>],
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<WebhookSource>> {
    sources
        .iter()
        .filter(|s| s.namespace() == secret.namespace())
        .filter(|s| super::keys::source_key_ref(s).name == secret.name_any())
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// Namespaces' labels (metadata only), when the operator watches the whole cluster; with one
/// watched namespace there is nothing to admit but it, and namespaces cannot be read.
#[allow(clippy::type_complexity)]
fn namespace_labels(
    client: &Client,
    watch_namespace: &Option<String>,
) -> (
    Store<PartialObjectMeta<Namespace>>,
    std::pin::Pin<
        Box<dyn Stream<Item = Result<PartialObjectMeta<Namespace>, watcher::Error>> + Send>,
    >,
) {
    let (store, writer) = reflector::store();
    if watch_namespace.is_some() {
        return (store, Box::pin(futures::stream::pending()));
    }
    let changes = relevant_changes(
        reflector(
            writer,
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                watcher::Config::default(),
            )
            // The labels are what matters here; the rest of the metadata is not kept.
            .modify(|n| {
                n.types = None;
                n.metadata = kube::api::ObjectMeta {
                    name: n.metadata.name.take(),
                    labels: n.metadata.labels.take(),
                    resource_version: n.metadata.resource_version.take(),
                    ..Default::default()
                };
            }),
        ),
        |n: &PartialObjectMeta<Namespace>| children::hash_of(&n.metadata.labels),
        |_| {},
        false,
    );
    (store, Box::pin(changes))
}

/// JetStream mode: the routes of deleted sources are removed (a source has no finalizer; its
/// route goes within this period).
async fn sweep_source_routes(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SOURCE_ROUTE_SWEEP);
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = tick.tick() => {}
        }
        let Some(js) = &ctx.jetstream else { return };
        ctx.children.ready.wait().await;
        let live = ctx
            .sources
            .state()
            .iter()
            .map(|s| {
                crate::jetstream::names::SourceNames::new(
                    &s.namespace().unwrap_or_default(),
                    &s.name_any(),
                )
                .route()
                .to_string()
            })
            .collect();
        if let Err(e) = js.sweep_source_routes(&live).await {
            tracing::warn!(error = %e, "cannot remove the routes of deleted sources");
        }
    }
}

/// The destinations in the Secret's namespace that refer to it, or own it (a token Secret).
fn referencing(
    destinations: &[Arc<WebhookDestination>],
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<WebhookDestination>> {
    let name = secret.name_any();
    let owners: Vec<&str> = secret
        .owner_references()
        .iter()
        .filter(|o| o.kind == "WebhookDestination")
        .map(|o| o.uid.as_str())
        .collect();
    destinations
        .iter()
        .filter(|d| d.namespace() == secret.namespace())
        .filter(|d| {
            d.spec.secret_refs().iter().any(|(_, r)| r.name == name)
                || d.uid().is_some_and(|uid| owners.contains(&uid.as_str()))
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

/// `/readyz`: leading (or standing by, ready), and in JetStream mode JetStream reachable.
async fn serve_health(
    listener: tokio::net::TcpListener,
    ready: Arc<AtomicBool>,
    nats: Option<crate::jetstream::Nats>,
    mut shutdown: watch::Receiver<bool>,
) {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Acquire);
                let nats = nats.clone();
                async move {
                    if !ready {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not leading")
                    } else if let Some(nats) = nats
                        && !nats.reachable().await
                    {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "JetStream is unreachable",
                        )
                    } else {
                        (axum::http::StatusCode::OK, "ready")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    OPERATOR_METRICS.render(),
                )
            }),
        );
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stopped(&mut shutdown).await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the health server failed");
    }
}
