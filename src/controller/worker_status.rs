//! The endpoint's health as a destination's workers see it (their circuit breaker), for the
//! resource's `Delivering` condition. Read from every ready worker pod's `GET /status` over the
//! cluster network — the pods the Service's EndpointSlices list, from a watch — rather than
//! through the API server, so it costs no API calls, at most every
//! [`WorkerStatusOptions::every`]. The worst answer is reported, with how many pods give it.

use super::build::{INGEST_PORT, child_name};
use crate::api::WebhookDestination;
use crate::egress::ranges::{Special, classify};
use crate::pipeline::deliver::breaker::PAUSED;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Special addresses read all the same: what pod IPs are (private and shared ranges, besides
/// global ones), and loopback, which reaches only the operator's own pod (and the tests'
/// workers). Link-local (cloud metadata) and the rest are never read.
const POD_RANGES: &[Special] = &[Special::Private, Special::Shared, Special::Loopback];

/// The label the EndpointSlice controller puts on a Service's slices.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Where a destination's worker answers `/status` in the cluster; `{name}` and `{namespace}`
/// are the destination's. Used when no EndpointSlice lists its pods (yet).
pub const DEFAULT_URL: &str = "http://{name}-hookline.{namespace}.svc:8080/status";

#[derive(Debug, Clone)]
pub struct WorkerStatusOptions {
    /// [`DEFAULT_URL`] in the cluster.
    pub url: String,
    /// A worker is read at most this often.
    pub every: Duration,
}

/// The `Delivering` condition a worker reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivering {
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

pub struct WorkerStatus {
    options: WorkerStatusOptions,
    client: reqwest::Client,
    read: Mutex<HashMap<ObjectRef<WebhookDestination>, Reading>>,
    /// The workers' Services' EndpointSlices: which pods are ready, and where.
    slices: Store<EndpointSlice>,
}

/// When a destination's worker was last read, and what it said (`None`: no answer).
type Reading = (Instant, Option<Delivering>);

/// The `/status` URLs of a slice's ready endpoints (an endpoint whose readiness is unknown counts
/// as ready, as the API documents) that are pods of the worker Deployment `deployment`. A slice
/// is only as trustworthy as whoever wrote it, and a tenant that may write EndpointSlices must
/// not point the operator at an address of its choosing (API §11): an endpoint that is not
/// such a pod, or whose address no pod has (link-local: cloud metadata, …), is not read.
fn pod_urls(slice: &EndpointSlice, deployment: &str) -> Vec<String> {
    let port = slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"))
        .and_then(|p| p.port)
        .unwrap_or(INGEST_PORT);
    let pod_of_deployment = |e: &&k8s_openapi::api::discovery::v1::Endpoint| {
        e.target_ref.as_ref().is_some_and(|r| {
            r.kind.as_deref() == Some("Pod")
                && r.name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(&format!("{deployment}-")))
        })
    };
    let pod_address = |address: &&String| {
        address
            .parse()
            .is_ok_and(|ip| !matches!(classify(ip), Some(s) if !POD_RANGES.contains(&s)))
    };
    slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .filter(pod_of_deployment)
        .flat_map(|e| e.addresses.iter())
        .filter(pod_address)
        .map(|address| {
            let host = if address.contains(':') {
                format!("[{address}]")
            } else {
                address.clone()
            };
            format!("http://{host}:{port}/status")
        })
        .collect()
}

/// What the pods say together: the worst answer (paused, then unhealthy, then delivering) with
/// how many of those that answered give it; `None` when none answered.
pub fn worst(answers: &[Delivering]) -> Option<Delivering> {
    let severity = |d: &Delivering| match (d.ok, d.reason.as_str()) {
        (false, PAUSED) => 2,
        (false, _) => 1,
        (true, _) => 0,
    };
    let worst = answers.iter().max_by_key(|d| severity(d))?;
    if worst.ok {
        return Some(worst.clone());
    }
    let alike = answers
        .iter()
        .filter(|d| d.ok == worst.ok && d.reason == worst.reason)
        .count();
    Some(Delivering {
        message: format!(
            "{alike} of {} worker pods report: {}",
            answers.len(),
            worst.message
        ),
        ..worst.clone()
    })
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("its /status does not list the destination with a Delivering condition")]
    NotListed,
}

impl WorkerStatus {
    pub fn new(options: WorkerStatusOptions, slices: Store<EndpointSlice>) -> WorkerStatus {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("a plain HTTP client builds");
        WorkerStatus {
            options,
            client,
            read: Mutex::default(),
            slices,
        }
    }

    /// What the destination's worker says, read again once `every` has passed; `None`
    /// while it cannot be read (the last known condition then stands).
    pub async fn delivering(&self, dest: &WebhookDestination) -> Option<Delivering> {
        let key = ObjectRef::from_obj(dest);
        if let Some((at, known)) = self.read.lock().expect("read lock").get(&key)
            && at.elapsed() < self.options.every
        {
            return known.clone();
        }
        let answers = futures::future::join_all(
            self.status_urls(dest)
                .into_iter()
                .map(|url| self.read_worker(dest, url)),
        )
        .await;
        let answers: Vec<Delivering> = answers
            .into_iter()
            .filter_map(|a| {
                a.map_err(|e| tracing::debug!(destination = %dest.name_any(), error = %e, "cannot read a worker's delivery state"))
                    .ok()
            })
            .collect();
        let known = worst(&answers);
        self.read
            .lock()
            .expect("read lock")
            .insert(key, (Instant::now(), known.clone()));
        known
    }

    /// Readings of deleted destinations are dropped.
    pub fn every(&self) -> Duration {
        self.options.every
    }

    pub fn retain(&self, exists: impl Fn(&ObjectRef<WebhookDestination>) -> bool) {
        self.read
            .lock()
            .expect("read lock")
            .retain(|k, _| exists(k));
    }

    /// Every ready worker pod's `/status`, as the Service's EndpointSlices list them; the
    /// Service's own URL while they list none.
    fn status_urls(&self, dest: &WebhookDestination) -> Vec<String> {
        let namespace = dest.namespace().unwrap_or_default();
        let service = child_name(dest);
        let pods: Vec<String> = self
            .slices
            .state()
            .iter()
            .filter(|s| s.namespace().as_deref() == Some(namespace.as_str()))
            .filter(|s| s.labels().get(SERVICE_NAME_LABEL) == Some(&service))
            .flat_map(|s| pod_urls(s, &service))
            .collect();
        if pods.is_empty() {
            let url = self
                .options
                .url
                .replace("{name}", &dest.name_any())
                .replace("{namespace}", &namespace);
            return vec![url];
        }
        pods
    }

    async fn read_worker(
        &self,
        dest: &WebhookDestination,
        url: String,
    ) -> Result<Delivering, ReadError> {
        let name = dest.name_any();
        let status: serde_json::Value = self
            .client
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let destination = status["destinations"]
            .as_array()
            .and_then(|list| list.iter().find(|d| d["name"] == name.as_str()))
            .ok_or(ReadError::NotListed)?;
        let condition = destination["conditions"]
            .as_array()
            .and_then(|list| list.iter().find(|c| c["type"] == "Delivering"))
            .ok_or(ReadError::NotListed)?;
        let text = |field: &str| condition[field].as_str().unwrap_or_default().to_string();
        Ok(Delivering {
            ok: condition["status"] == "True",
            reason: text("reason"),
            message: text("message"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(ok: bool, reason: &str, message: &str) -> Delivering {
        Delivering {
            ok,
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn the_worst_answer_is_reported_with_how_many_pods_give_it() {
        let delivering = said(true, "Delivering", "");
        let unhealthy = said(false, "EndpointUnhealthy", "HTTP 503");
        assert_eq!(worst(&[]), None);
        assert_eq!(
            worst(&[delivering.clone(), delivering.clone()]),
            Some(delivering.clone())
        );
        let one = worst(&[delivering.clone(), unhealthy.clone(), delivering.clone()]).unwrap();
        assert!(!one.ok);
        assert_eq!(one.reason, "EndpointUnhealthy");
        assert_eq!(one.message, "1 of 3 worker pods report: HTTP 503");
        let paused = said(false, PAUSED, "restart it");
        let both = worst(&[unhealthy.clone(), paused, unhealthy]).unwrap();
        assert_eq!(both.reason, PAUSED);
        assert_eq!(both.message, "1 of 3 worker pods report: restart it");
    }

    fn pod(name: &str) -> serde_json::Value {
        serde_json::json!({"kind": "Pod", "name": format!("orders-hookline-7f9c-{name}")})
    }

    #[test]
    fn ready_endpoints_of_a_slice_are_read_on_its_http_port() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "namespace": "ns"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "targetRef": pod("a")},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}, "targetRef": pod("b")},
                {"addresses": ["10.0.0.3"], "targetRef": pod("c")},
                {"addresses": ["fd00::4"], "conditions": {"ready": true}, "targetRef": pod("d")},
                // What a tenant could write: no pod, another Deployment's pod, cloud metadata.
                {"addresses": ["10.0.0.5"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.6"], "targetRef": {"kind": "Pod", "name": "other-7f9c-x"}},
                {"addresses": ["169.254.169.254"], "targetRef": pod("e")},
                {"addresses": ["fd00:ec2::254"], "targetRef": pod("f")},
            ],
        }))
        .unwrap();
        assert_eq!(
            pod_urls(&slice, "orders-hookline"),
            [
                "http://10.0.0.1:8080/status",
                "http://10.0.0.3:8080/status",
                "http://[fd00::4]:8080/status"
            ]
        );
    }
}
