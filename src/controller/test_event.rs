//! `hookline test NAME -n NS`: the CLI annotates the destination with a request id (and the
//! event); the operator has one of the destination's ready worker pods send that event once —
//! from the tenant's side: its pod, NetworkPolicy, egress address and guard, never the
//! operator's (API §11) — and answers in `status.lastTestEvent`, with the same request id. The
//! operator reaches the worker's loopback admin listener through the API server's
//! port-forward, as `hookline dlq` does: no Service port serves it.
//!
//! The event is sent in a task of its own, never inside a reconcile: a slow endpoint (up to its
//! timeout, plus a token request) must not hold back reconciling the destination's spec. When the
//! answer is in, the destination is queued for a reconcile, which writes it into the status.

use super::port_forward;
use super::validate::Verdict;
use crate::api::{TestEventStatus, WebhookDestination};
use crate::oauth::store::rfc3339;
use crate::pipeline::single::TestReport;
use crate::pipeline::{admin, samples};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

pub const REQUEST_ANNOTATION: &str = "hookline.dev/test-event";
pub const EVENT_ANNOTATION: &str = "hookline.dev/test-event-payload";

/// The test event asked for and not answered yet: its request id and the event (the built-in
/// track sample when the annotation holds none).
pub fn requested(dest: &WebhookDestination) -> Option<(String, Value)> {
    let annotations = dest.annotations();
    let id = annotations.get(REQUEST_ANNOTATION)?;
    let answered = dest
        .status
        .as_ref()
        .and_then(|s| s.last_test_event.as_ref())
        .and_then(|t| t.request_id.as_ref());
    if answered == Some(id) {
        return None;
    }
    let event = annotations
        .get(EVENT_ANNOTATION)
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| samples::sample("track"));
    Some((id.clone(), event))
}

type Key = ObjectRef<WebhookDestination>;

struct InFlight {
    request_id: String,
    /// The answer, once the endpoint gave one; kept until the status carries it.
    answer: Option<TestEventStatus>,
    task: AbortHandle,
}

/// The operator's test events being sent, one per destination at most.
pub struct TestEvents {
    sending: Arc<Mutex<HashMap<Key, InFlight>>>,
    answered: mpsc::UnboundedSender<Key>,
}

impl TestEvents {
    /// The receiver yields destinations whose test event has been answered.
    pub fn new() -> (TestEvents, mpsc::UnboundedReceiver<Key>) {
        let (answered, rx) = mpsc::unbounded_channel();
        let sending = Arc::default();
        (TestEvents { sending, answered }, rx)
    }

    /// The answer to the test event `request_id` of `dest` when it is in; otherwise the event is
    /// sent (by `send`, in a task of its own) unless it already is, and `None` is returned.
    pub fn answer<F>(
        &self,
        dest: &WebhookDestination,
        request_id: &str,
        send: impl FnOnce() -> F,
    ) -> Option<TestEventStatus>
    where
        F: Future<Output = TestEventStatus> + Send + 'static,
    {
        let key = ObjectRef::from_obj(dest);
        let mut sending = self.sending.lock().expect("test events lock");
        if let Some(flight) = sending.get(&key).filter(|f| f.request_id == request_id) {
            return flight.answer.clone();
        }
        let task = tokio::spawn({
            let (sending, answered) = (self.sending.clone(), self.answered.clone());
            let (key, request_id, sent) = (key.clone(), request_id.to_string(), send());
            async move {
                let answer = sent.await;
                if let Some(flight) = sending
                    .lock()
                    .expect("test events lock")
                    .get_mut(&key)
                    .filter(|f| f.request_id == request_id)
                {
                    flight.answer = Some(answer);
                }
                let _ = answered.send(key);
            }
        });
        let flight = InFlight {
            request_id: request_id.to_string(),
            answer: None,
            task: task.abort_handle(),
        };
        if let Some(replaced) = sending.insert(key, flight) {
            replaced.task.abort();
        }
        None
    }

    /// `dest` asks for no test event (any more): what was kept for it goes.
    pub fn forget(&self, dest: &WebhookDestination) {
        let removed = self
            .sending
            .lock()
            .expect("test events lock")
            .remove(&ObjectRef::from_obj(dest));
        if let Some(flight) = removed {
            flight.task.abort();
        }
    }
}

impl Drop for TestEvents {
    /// A replica that stops leading sends nothing more; the next leader sends what is unanswered.
    fn drop(&mut self) {
        for flight in self.sending.lock().expect("test events lock").values() {
            flight.task.abort();
        }
    }
}

/// Has a ready worker pod of `dest` send `event`, and turns its report into the status.
pub async fn send(
    client: &kube::Client,
    dest: &WebhookDestination,
    request_id: String,
    event: &Value,
    verdict: &Verdict,
) -> TestEventStatus {
    // An auth problem the operator sees is not checked here: the worker has its own way to a
    // token (client credentials fetched from its side), and reports when it has none.
    let report = match &verdict.accepted {
        Err(problem) => TestReport::not_sent(format!("{}: {}", problem.reason, problem.message)),
        Ok(_) => through_worker(client, dest, event)
            .await
            .unwrap_or_else(|e| TestReport::not_sent(format!("{e:#}"))),
    };
    TestEventStatus {
        request_id: Some(request_id),
        at: rfc3339(chrono::Utc::now()),
        status_code: report.status_code,
        latency_millis: report.latency_millis,
        error: Some(report.summary).filter(|e| !e.is_empty()),
    }
}

async fn through_worker(
    client: &kube::Client,
    dest: &WebhookDestination,
    event: &Value,
) -> anyhow::Result<TestReport> {
    let (namespace, name) = (dest.namespace().unwrap_or_default(), dest.name_any());
    let answer = port_forward::request(
        client,
        &namespace,
        &name,
        admin::DEFAULT_PORT,
        (http::Method::POST, &format!("/test?destination={name}")),
        Some(serde_json::to_vec(event)?),
    )
    .await?;
    serde_json::from_str(&answer).map_err(|e| {
        anyhow::anyhow!("the worker's answer to the test event is not a test report: {e}")
    })
}
