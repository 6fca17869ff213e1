//! `hookline test NAME -n NS`: the CLI annotates the destination with a request id (and the
//! event); the operator sends that event once with the destination's real credentials and
//! answers in `status.lastTestEvent`, which carries the same request id.

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
use serde_json::Value;

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
