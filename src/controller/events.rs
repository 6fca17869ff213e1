//! Kubernetes Events about destinations and sources, created directly. They are rare by design (a move into
//! a bad state, ready, recovered: [`conditions::notices`](super::conditions::notices)), so kube's
//! recorder — which keeps every published Event for its series and scans that cache on each
//! publish — would cost memory and time over thousands of destinations for nothing.

use super::conditions::Notice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};

pub const REPORTING_CONTROLLER: &str = "hookline-controller";

pub struct Events {
    pub client: Client,
    /// This replica's name (`reportingInstance`).
    pub instance: String,
}

impl Events {
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        dest: &K,
        notice: Notice,
    ) -> Result<(), kube::Error> {
        let namespace = dest.namespace().unwrap_or_default();
        let now = k8s_openapi::jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                // As `kubectl` and kube's recorder name them: the object, then a unique suffix.
                name: Some(format!("{}.{:x}", dest.name_any(), now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            action: Some("Reconcile".into()),
            reason: Some(notice.reason),
            note: Some(notice.note),
            type_: Some(if notice.warning { "Warning" } else { "Normal" }.into()),
            regarding: Some(dest.object_ref(&())),
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(drop)
    }
}
