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
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

pub const DESIRED_HASH_ANNOTATION: &str = "hookline.dev/desired-hash";

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

/// Whether a cached child already holds `desired` (stamped): same digest, and no other manager
/// has written the object since.
pub fn up_to_date(cached: &ObjectMeta, desired: &ObjectMeta) -> bool {
    let digest = |m: &ObjectMeta| {
        m.annotations
            .as_ref()
            .and_then(|a| a.get(DESIRED_HASH_ANNOTATION).cloned())
    };
    digest(cached).is_some() && digest(cached) == digest(desired) && !edited_by_others(cached)
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
}

/// What a cached Deployment needs to keep: its metadata (without field sets), replicas and
/// status. The pod template, the bulk of it, is dropped.
pub fn slim_deployment(d: &mut Deployment) {
    slim_meta(&mut d.metadata);
    if let Some(spec) = d.spec.as_mut() {
        spec.template = Default::default();
    }
}

/// Managed fields without their field sets: who wrote the object is all the cache needs.
pub fn slim_meta(meta: &mut ObjectMeta) {
    for entry in meta.managed_fields.iter_mut().flatten() {
        entry.fields_v1 = None;
    }
}

/// Keeps only the watch events that can change what a reconcile writes: a child's digest, who
/// wrote it, and for a Deployment its availability. Deletions always pass.
pub fn relevant<K, F>(signature: F) -> impl FnMut(watcher::Event<K>) -> Option<K> + Send + 'static
where
    K: Resource + Send + 'static,
    F: Fn(&K) -> u64 + Send + 'static,
{
    let mut seen: HashMap<(Option<String>, String), u64> = HashMap::new();
    move |event| match event {
        watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
            let key = (obj.meta().namespace.clone(), obj.name_any());
            let sig = signature(&obj);
            (seen.insert(key, sig) != Some(sig)).then_some(obj)
        }
        watcher::Event::Delete(obj) => {
            seen.remove(&(obj.meta().namespace.clone(), obj.name_any()));
            Some(obj)
        }
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
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
        let desired = config_map("a");
        let mut cached = desired.metadata.clone();
        assert!(up_to_date(&cached, &config_map("a").metadata));
        assert!(
            !up_to_date(&cached, &config_map("b").metadata),
            "a new spec"
        );
        written_by(&mut cached, FIELD_MANAGER, None);
        written_by(&mut cached, "kube-controller-manager", Some("status"));
        assert!(up_to_date(&cached, &desired.metadata));
        written_by(&mut cached, "kubectl-edit", None);
        assert!(!up_to_date(&cached, &desired.metadata), "a hand edit");
        assert!(!up_to_date(&ObjectMeta::default(), &desired.metadata));
    }

    #[test]
    fn the_stamp_is_a_digest_of_the_rest() {
        let mut again = config_map("a");
        stamp(&mut again);
        assert_eq!(again, config_map("a"), "stamping twice changes nothing");
    }

    #[test]
    fn only_relevant_changes_pass() {
        let mut filter = relevant(|cm: &ConfigMap| signature_of(&cm.metadata, ()));
        let cm = config_map("a");
        assert!(filter(watcher::Event::Apply(cm.clone())).is_some());
        let mut touched = cm.clone();
        touched.metadata.resource_version = Some("9".into());
        assert!(filter(watcher::Event::Apply(touched)).is_none());
        assert!(filter(watcher::Event::Delete(cm.clone())).is_some());
        assert!(filter(watcher::Event::Apply(cm)).is_some(), "recreated");
    }
}
