//! `hookline test NAME -n NS`: the CLI annotates the destination with a request id (and the
//! event); the operator sends that event once with the destination's real credentials and
//! answers in `status.lastTestEvent`, which carries the same request id.
//!
//! The event is sent in a task of its own, never inside a reconcile: a slow endpoint (up to its
//! timeout, plus a token request) must not hold back reconciling the destination's spec. When the
//! answer is in, the destination is queued for a reconcile, which writes it into the status.

use super::dereference::Dereferenced;
use super::validate::Verdict;
use crate::api::{TestEventStatus, WebhookDestination};
use crate::config::destination::Destination;
use crate::config::manifests::LoadedDestination;
use crate::oauth::manager::TokenSource;
use crate::oauth::store::rfc3339;
use crate::pipeline::samples;
use crate::pipeline::single::send_test;
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
/// Enough of an error or answer to act on, short enough for a status field.
const SUMMARY_LIMIT: usize = 300;

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

pub async fn send(
    dest: &WebhookDestination,
    request_id: String,
    event: &Value,
    deref: &Dereferenced,
    verdict: &Verdict,
    tokens: Option<&TokenSource>,
) -> TestEventStatus {
    let answer = |status_code, latency_millis, error: String| TestEventStatus {
        request_id: Some(request_id.clone()),
        at: rfc3339(chrono::Utc::now()),
        status_code,
        latency_millis,
        error: Some(error).filter(|e| !e.is_empty()),
    };
    if let Some(problem) = [verdict.accepted.as_ref().err(), verdict.auth.as_ref().err()]
        .into_iter()
        .flatten()
        .next()
    {
        return answer(
            None,
            None,
            format!("not sent: {}: {}", problem.reason, problem.message),
        );
    }
    let loaded = LoadedDestination::from_resource(dest.clone());
    let resolved = match Destination::resolve(&loaded, &deref.secrets) {
        Ok(d) => d,
        Err(e) => return answer(None, None, format!("not sent: {e}")),
    };
    match send_test(&resolved, event, tokens).await {
        Err(e) => answer(None, None, format!("not sent: {e}")),
        Ok(sent) => answer(
            sent.attempt.status,
            Some(sent.attempt.latency.as_millis() as u64),
            sent.summary(SUMMARY_LIMIT),
        ),
    }
}
