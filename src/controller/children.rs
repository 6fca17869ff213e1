//! What the operator knows of its children without asking: watch caches of the owned ConfigMaps,
//! ServiceAccounts and Services (metadata only) and Deployments (metadata, replicas and status),
//! and the rule that decides whether a child needs an apply at all.
//!
//! Every child is applied with a `hookline.dev/desired-hash` annotation: a digest of what was
//! applied. A child whose cached copy carries the digest of today's desired object, and that no
//! other field manager has written since (the status subresource aside), is left alone — so a
//! reconcile caused by our own writes, by the controller-manager or by an operator restart makes
//! no apply. A deleted child, a spec change and a hand edit (`kubectl edit`, `kubectl scale`) all
//! still lead to an apply, which corrects the drift.

use super::apply::FIELD_MANAGER;
use super::conditions::WorkerState;
use super::identities::RENEW_AT_ANNOTATION;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

pub const DESIRED_HASH_ANNOTATION: &str = "hookline.dev/desired-hash";

/// How long a reconcile waits for a watch cache to have listed everything.
pub const CACHE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Stamps `obj` with the digest of itself (without the stamp), as it will be applied.
pub fn stamp<K: Resource + Serialize>(obj: &mut K) {
    let annotations = &mut obj.meta_mut().annotations;
    if let Some(a) = annotations.as_mut() {
        a.remove(DESIRED_HASH_ANNOTATION);
        if a.is_empty() {
            *annotations = None;
        }
    }
    let bytes = serde_json::to_vec(obj).expect("Kubernetes objects serialize");
    let digest = hex::encode(&Sha256::digest(&bytes)[..12]);
    obj.annotations_mut()
        .insert(DESIRED_HASH_ANNOTATION.into(), digest);
}

fn digest(meta: &ObjectMeta) -> Option<&String> {
    meta.annotations.as_ref()?.get(DESIRED_HASH_ANNOTATION)
}

/// Whether a child already holds `desired` (stamped): its cached copy has the same digest and no
/// other manager has written it since — or the cache has not caught up yet with this
/// operator's own apply of exactly that digest.
pub fn up_to_date<K: Resource<DynamicType = ()>>(
    cached: Option<&ObjectMeta>,
    desired: &K,
    applied: &Applied,
) -> bool {
    let wanted = digest(desired.meta());
    let kind = K::kind(&());
    match cached {
        Some(c) if edited_by_others(c) => false,
        Some(c) if wanted.is_some() && digest(c) == wanted => {
            // The cache has caught up: it alone decides from now on.
            applied.caught_up(&kind, desired.meta());
            true
        }
        _ => wanted.is_some_and(|d| applied.holds(&kind, desired.meta(), d)),
    }
}

type ChildKey = (String, String, String);

fn child_key(kind: &str, meta: &ObjectMeta) -> ChildKey {
    (
        kind.to_string(),
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The digests this operator applied since it started, by child, until the watch reports that
/// child deleted: the watch caches lag behind the operator's own writes, and a reconcile right
/// after an apply must not apply the same thing again. For Deployments it keeps what the apply
/// answered too, so the worker is judged by the newest copy.
#[derive(Clone, Default)]
pub struct Applied(Arc<Mutex<AppliedChildren>>);

#[derive(Default)]
struct AppliedChildren {
    digests: HashMap<ChildKey, String>,
    deployments: HashMap<ChildKey, Deployment>,
}

impl Applied {
    pub fn record<K: Resource<DynamicType = ()>>(&self, child: &K) {
        if let Some(d) = digest(child.meta()) {
            let key = child_key(&K::kind(&()), child.meta());
            self.0
                .lock()
                .expect("applied lock")
                .digests
                .insert(key, d.clone());
        }
    }

    /// A Deployment as its apply answered (slimmed like the cache's copies).
    pub fn record_deployment(&self, answered: &Deployment) {
        let mut slim = answered.clone();
        slim_deployment(&mut slim);
        let key = child_key("Deployment", &slim.metadata);
        self.0
            .lock()
            .expect("applied lock")
            .deployments
            .insert(key, slim);
    }

    pub fn forget(&self, kind: &str, meta: &ObjectMeta) {
        let key = child_key(kind, meta);
        let mut applied = self.0.lock().expect("applied lock");
        applied.digests.remove(&key);
        applied.deployments.remove(&key);
    }

    fn caught_up(&self, kind: &str, meta: &ObjectMeta) {
        let key = child_key(kind, meta);
        let mut applied = self.0.lock().expect("applied lock");
        applied.digests.remove(&key);
        applied.deployments.remove(&key);
    }

    fn holds(&self, kind: &str, meta: &ObjectMeta, digest: &str) -> bool {
        self.0
            .lock()
            .expect("applied lock")
            .digests
            .get(&child_key(kind, meta))
            .is_some_and(|d| d == digest)
    }

    /// The Deployment to judge the worker by: the cached one, unless the cache has not caught up
    /// with this operator's own last apply of it — then what that apply answered.
    pub fn freshest(&self, cached: Option<Deployment>, desired: &Deployment) -> Option<Deployment> {
        let key = child_key("Deployment", &desired.metadata);
        let applied = self.0.lock().expect("applied lock");
        let Some(answered) = applied.deployments.get(&key) else {
            return cached;
        };
        let caught_up = cached
            .as_ref()
            .is_some_and(|c| digest(&c.metadata) == digest(&answered.metadata));
        if caught_up {
            cached
        } else {
            Some(answered.clone())
        }
    }
}

/// Someone other than the operator wrote the object itself (status writes do not count).
fn edited_by_others(meta: &ObjectMeta) -> bool {
    meta.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() != Some(FIELD_MANAGER)
            && m.subresource.as_deref().unwrap_or("") != "status"
    })
}

/// Watch caches of the children, filled by the operator's watch streams.
#[derive(Clone)]
pub struct ChildCaches {
    pub config_maps: Store<PartialObjectMeta<k8s_openapi::api::core::v1::ConfigMap>>,
    pub service_accounts: Store<PartialObjectMeta<k8s_openapi::api::core::v1::ServiceAccount>>,
    pub services: Store<PartialObjectMeta<k8s_openapi::api::core::v1::Service>>,
    pub deployments: Store<Deployment>,
    pub applied: Applied,
    pub ready: CachesReady,
}

/// Whether the operator's watch caches have all listed what exists. kube's own readiness future
/// wakes only one of several waiters, so one task waits for it and many reconciles wait here.
#[derive(Clone)]
pub struct CachesReady(tokio::sync::watch::Receiver<bool>);

impl CachesReady {
    pub fn new(ready: tokio::sync::watch::Receiver<bool>) -> Self {
        CachesReady(ready)
    }

    /// Until the caches have listed everything, a missing object proves nothing. A watch that
    /// cannot list (the API server down) is not waited for long: an apply too many is harmless.
    pub async fn wait(&self) {
        let mut ready = self.0.clone();
        let _ = tokio::time::timeout(CACHE_WAIT, ready.wait_for(|r| *r)).await;
    }
}

/// What a cached Deployment needs to keep: its metadata (without field sets), replicas and
/// status. The pod template, the bulk of it, is dropped.
pub fn slim_deployment(d: &mut Deployment) {
    slim_meta(&mut d.metadata);
    if let Some(spec) = d.spec.as_mut() {
        *spec = k8s_openapi::api::apps::v1::DeploymentSpec {
            replicas: spec.replicas,
            ..Default::default()
        };
    }
    if let Some(status) = d.status.as_mut() {
        status.conditions = None;
    }
}

/// A metadata-only watch item as the caches keep it: slim metadata, and no repeated
/// `apiVersion`/`kind`.
pub fn slim_partial<K>(m: &mut PartialObjectMeta<K>) {
    m.types = None;
    slim_meta(&mut m.metadata);
}

/// What the caches keep of an object's metadata: its identity, owners, the desired-state digest
/// and who wrote it (managers, not their field sets). Over tens of thousands of children the
/// rest (labels, other annotations, timestamps) is most of the operator's memory.
pub fn slim_meta(meta: &mut ObjectMeta) {
    meta.labels = None;
    meta.creation_timestamp = None;
    if let Some(a) = meta.annotations.as_mut() {
        // The renewal time of a NATS identity is kept too: without it, a restarted operator
        // would take every identity for stale and issue them all again.
        a.retain(|k, _| k == DESIRED_HASH_ANNOTATION || k == RENEW_AT_ANNOTATION);
    }
    if meta.annotations.as_ref().is_some_and(|a| a.is_empty()) {
        meta.annotations = None;
    }
    for entry in meta.managed_fields.iter_mut().flatten() {
        *entry = ManagedFieldsEntry {
            manager: entry.manager.take(),
            subresource: entry.subresource.take(),
            ..ManagedFieldsEntry::default()
        };
    }
}

/// Keeps only the watch events that can change what a reconcile writes: a child's digest, who
/// wrote it, and for a Deployment its availability. Deletions always pass. An object first seen
/// in a list passes only when `first_list_triggers`: children need not wake their owners when the
/// operator starts (every destination is reconciled then anyway), which spares tens of thousands
/// of queued triggers on a restart.
pub fn relevant<K, F, D>(
    signature: F,
    on_delete: D,
    first_list_triggers: bool,
) -> impl FnMut(watcher::Event<K>) -> Option<K> + Send + 'static
where
    K: Resource + Send + 'static,
    F: Fn(&K) -> u64 + Send + 'static,
    D: Fn(&K) + Send + 'static,
{
    // Keyed by a digest of namespace and name: over tens of thousands of objects, owned key
    // strings would be most of this map.
    let key = |obj: &K| hash_of((obj.meta().namespace.as_deref(), obj.meta().name.as_deref()));
    let mut seen: HashMap<u64, u64> = HashMap::new();
    move |event| match event {
        watcher::Event::Apply(obj) => {
            let sig = signature(&obj);
            (seen.insert(key(&obj), sig) != Some(sig)).then_some(obj)
        }
        watcher::Event::InitApply(obj) => {
            let sig = signature(&obj);
            match seen.insert(key(&obj), sig) {
                None => first_list_triggers.then_some(obj),
                Some(before) => (before != sig).then_some(obj),
            }
        }
        watcher::Event::Delete(obj) => {
            seen.remove(&key(&obj));
            on_delete(&obj);
            Some(obj)
        }
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

/// A value's digest, for the signatures that tell a change worth a reconcile from one that is not.
pub fn hash_of(value: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

fn signature_of(meta: &ObjectMeta, extra: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(DESIRED_HASH_ANNOTATION))
        .hash(&mut h);
    edited_by_others(meta).hash(&mut h);
    meta.uid.hash(&mut h);
    extra.hash(&mut h);
    h.finish()
}

pub fn meta_signature<K>(obj: &PartialObjectMeta<K>) -> u64 {
    signature_of(&obj.metadata, ())
}

pub fn deployment_signature(d: &Deployment) -> u64 {
    signature_of(&d.metadata, format!("{:?}", WorkerState::of(Some(d))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    fn config_map(data: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("d-hookline".into());
        cm.data = Some([("worker.yaml".to_string(), data.to_string())].into());
        stamp(&mut cm);
        cm
    }

    fn written_by(meta: &mut ObjectMeta, manager: &str, subresource: Option<&str>) {
        meta.managed_fields
            .get_or_insert_with(Vec::new)
            .push(ManagedFieldsEntry {
                manager: Some(manager.into()),
                subresource: subresource.map(Into::into),
                ..ManagedFieldsEntry::default()
            });
    }

    #[test]
    fn the_same_desired_object_is_up_to_date_until_someone_else_writes_it() {
        let none = Applied::default();
        let desired = config_map("a");
        let mut cached = desired.metadata.clone();
        assert!(up_to_date(Some(&cached), &config_map("a"), &none));
        assert!(
            !up_to_date(Some(&cached), &config_map("b"), &none),
            "a new spec"
        );
        written_by(&mut cached, FIELD_MANAGER, None);
        written_by(&mut cached, "kube-controller-manager", Some("status"));
        assert!(up_to_date(Some(&cached), &desired, &none));
        written_by(&mut cached, "kubectl-edit", None);
        assert!(!up_to_date(Some(&cached), &desired, &none), "a hand edit");
        assert!(!up_to_date(Some(&ObjectMeta::default()), &desired, &none));
        assert!(!up_to_date(None, &desired, &none), "not there");
    }

    #[test]
    fn a_cache_behind_the_operators_own_apply_is_trusted_until_the_child_is_deleted() {
        let applied = Applied::default();
        let (old, new) = (config_map("a"), config_map("b"));
        applied.record(&new);
        assert!(up_to_date(None, &new, &applied), "not in the cache yet");
        assert!(
            up_to_date(Some(&old.metadata), &new, &applied),
            "cache still old"
        );
        assert!(!up_to_date(None, &old, &applied));
        applied.forget("ConfigMap", &new.metadata);
        assert!(!up_to_date(None, &new, &applied), "deleted since");
    }

    #[test]
    fn the_stamp_is_a_digest_of_the_rest() {
        let mut again = config_map("a");
        stamp(&mut again);
        assert_eq!(again, config_map("a"), "stamping twice changes nothing");
    }

    #[test]
    fn only_relevant_changes_pass() {
        let mut filter = relevant(
            |cm: &ConfigMap| signature_of(&cm.metadata, ()),
            |_| {},
            false,
        );
        assert!(
            filter(watcher::Event::InitApply(config_map("listed"))).is_none(),
            "first seen in the start-up list"
        );
        let cm = config_map("a");
        assert!(filter(watcher::Event::Apply(cm.clone())).is_some());
        let mut touched = cm.clone();
        touched.metadata.resource_version = Some("9".into());
        assert!(filter(watcher::Event::Apply(touched)).is_none());
        assert!(filter(watcher::Event::Delete(cm.clone())).is_some());
        assert!(filter(watcher::Event::Apply(cm)).is_some(), "recreated");
    }
}
