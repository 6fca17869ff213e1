//! One event to one request, outside the queue: what `render` shows, what `test` sends, and the
//! test event a worker sends for `hookline test NAME -n NS`. Same stages as the worker:
//! insert function → mapping → request (batched as one, signed, authorized).

use super::batch::{Batch, Item};
use super::deliver::request::{OutgoingRequest, request_id};
use super::deliver::{Attempt, HttpSender};
use super::envelope;
use super::mapping::MappingError;
use super::transform::Outcome;
use crate::config::destination::Destination;
use crate::egress::Egress;
use crate::oauth::AccessToken;
use crate::oauth::manager::TokenSource;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum SingleError {
    #[error("the insert function dropped the event ({0})")]
    Dropped(String),
    #[error("the insert function asked for a retry: {0}")]
    Retry(String),
    #[error("the insert function failed: {0}")]
    Failed(String),
    #[error("the mapping failed: {0}")]
    Mapping(#[from] MappingError),
    #[error("no OAuth access token within 30 s ({0})")]
    NoToken(String),
    #[error(transparent)]
    Client(#[from] crate::pipeline::deliver::ClientError),
}

/// How long a test waits for an OAuth token (the manager may be refreshing an expired one).
pub const TOKEN_WAIT: Duration = Duration::from_secs(30);

/// The event after the insert function (the event itself when there is none).
pub fn through_function(dest: &Destination, event: &Value) -> Result<Value, SingleError> {
    let Some(function) = &dest.transform else {
        return Ok(event.clone());
    };
    match function.run(event, &dest.settings) {
        Outcome::Continue(event) => Ok(event),
        Outcome::Drop { reason, message } if message.is_empty() => {
            Err(SingleError::Dropped(reason))
        }
        Outcome::Drop { reason, message } => {
            Err(SingleError::Dropped(format!("{reason}: {message}")))
        }
        Outcome::Retry(message) => Err(SingleError::Retry(message)),
        Outcome::Fail(message) => Err(SingleError::Failed(message)),
    }
}

/// The request an (already transformed) event becomes; an OAuth 2.0 destination's
/// `Authorization` header carries `access_token`, or shows redacted when there is none.
pub fn build_request(
    dest: &Destination,
    event: &Value,
    access_token: Option<&str>,
) -> Result<OutgoingRequest, SingleError> {
    let json = serde_json::to_vec(event).expect("JSON values serialize");
    let record = envelope::encode(None, None, &json);
    let batch = Batch {
        items: vec![Item::mapped(0, &record, event, &dest.mapping)?],
        as_array: dest.batching.size > 1,
    };
    let mut request = dest.request.build(
        &request_id(&batch.message_ids()),
        batch.body(),
        chrono::Utc::now().timestamp(),
    );
    if dest.oauth.is_some() {
        request.authorize(access_token.unwrap_or_default());
    }
    Ok(request)
}

/// What a test event came to: the request as sent (secrets redacted when shown) and the answer.
pub struct TestSend {
    pub request: OutgoingRequest,
    pub attempt: Attempt,
}

/// Sends `event` once with the destination's real credentials; an OAuth token is taken valid
/// (refreshed first when it expired), and a 401 gets one refresh and one retry, as in delivery.
pub async fn send_test(
    dest: &Destination,
    event: &Value,
    tokens: Option<&TokenSource>,
    egress: &Egress,
) -> Result<TestSend, SingleError> {
    let event = through_function(dest, event)?;
    let sender = HttpSender::new(1, dest.request.timeout, dest.request.tls.as_deref(), egress)?;
    let token = match tokens {
        Some(t) => Some(usable_token(t, None).await?),
        None => None,
    };
    let request = build_request(dest, &event, token.as_ref().map(|t| &*t.secret))?;
    let attempt = sender.send(&request).await;
    if let (Some(401), Some(tokens), Some(token)) = (attempt.status, tokens, &token) {
        tokens.rejected(token, false);
        let fresh = usable_token(tokens, Some(token)).await?;
        let request = build_request(dest, &event, Some(&fresh.secret))?;
        let attempt = sender.send(&request).await;
        return Ok(TestSend { request, attempt });
    }
    Ok(TestSend { request, attempt })
}

/// A usable token, giving up with the manager's reason after [`TOKEN_WAIT`], or at once when
/// a person has to consent first.
async fn usable_token(
    tokens: &TokenSource,
    rejected: Option<&AccessToken>,
) -> Result<AccessToken, SingleError> {
    let (_keep, mut never) = watch::channel(false);
    let mut state = tokens.watch();
    let deadline = tokio::time::Instant::now() + TOKEN_WAIT;
    loop {
        tokio::select! {
            t = tokens.usable(rejected, &mut never) => {
                return t.ok_or_else(|| SingleError::NoToken("stopped".into()));
            }
            _ = tokio::time::sleep_until(deadline) => {
                let (_, reason, message) = tokens.state().condition();
                return Err(SingleError::NoToken(format!("{reason}: {message}")));
            }
            _ = state.changed() => {
                if let Some(p) = state.borrow_and_update().problem.clone()
                    && p.reason == "ConsentRequired"
                {
                    return Err(SingleError::NoToken(format!("{}: {}", p.reason, p.message)));
                }
            }
        }
    }
}

impl TestSend {
    /// The answer in a line or two for `status.lastTestEvent`: the error, or for a non-2xx
    /// answer the start of its body — with every secret the request carried cut out, in case
    /// the endpoint echoes it back.
    pub fn summary(&self, limit: usize) -> String {
        let a = &self.attempt;
        let text = match (&a.error, a.status) {
            (Some(e), _) => e.clone(),
            (None, Some(s)) if (200..300).contains(&s) => String::new(),
            (None, _) => a.body_excerpt.clone(),
        };
        let mut text = text;
        for h in self.request.headers().filter(|h| h.secret) {
            let value = h.value.strip_prefix("Bearer ").unwrap_or(&h.value);
            if !value.is_empty() {
                text = text.replace(value, super::deliver::request::REDACTED);
            }
        }
        text.chars().take(limit).collect()
    }

    pub fn report(&self) -> TestReport {
        TestReport {
            request: Some(self.request.to_redacted_text()),
            status_code: self.attempt.status,
            latency_millis: Some(self.attempt.latency.as_millis() as u64),
            summary: self.summary(SUMMARY_LIMIT),
        }
    }
}

/// Enough of an error or answer to act on, short enough for a status field.
pub const SUMMARY_LIMIT: usize = 300;

/// A test event as the worker that sent it reports it to the operator (its admin listener's
/// `POST /test`), for `status.lastTestEvent`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestReport {
    /// The request as sent, secrets redacted; none when it was not sent.
    pub request: Option<String>,
    pub status_code: Option<u16>,
    pub latency_millis: Option<u64>,
    /// The error, or the start of a non-2xx answer; why it was not sent, when it was not.
    pub summary: String,
}

impl TestReport {
    pub fn not_sent(why: impl std::fmt::Display) -> TestReport {
        TestReport {
            request: None,
            status_code: None,
            latency_millis: None,
            summary: format!("not sent: {why}"),
        }
    }
}
