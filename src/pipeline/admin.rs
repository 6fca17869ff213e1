//! The admin listener (API §10, §11): dead letters hold whole events, so they are served only
//! here, on a loopback address that no Service exposes; and a test event is sent from here, so
//! that it leaves from the destination's own side (its pod, its NetworkPolicy, its egress
//! guard). People reach it on their own machine, or in the cluster through the API server's
//! port-forward to a worker pod, which RBAC governs; the operator reaches it the same way.

use super::dead_letters::DeadLetters;
use super::ingest::Rejection;
use super::samples;
use super::single::{TestReport, send_test};
use crate::config::destination::LiveDestination;
use crate::egress::Egress;
use crate::oauth::manager::TokenSource;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;

/// Where `hookline run` and `hookline worker` listen for it unless told otherwise; the port
/// `hookline dlq NAME -n NS` forwards to.
pub const DEFAULT_PORT: u16 = 9091;

/// A running destination a test event can be sent to, with its own tokens.
pub struct TestTarget {
    pub live: LiveDestination,
    pub tokens: Option<TokenSource>,
}

struct Admin {
    dead_letters: DeadLetters,
    targets: Vec<TestTarget>,
    egress: Egress,
}

pub fn router(dead_letters: DeadLetters, targets: Vec<TestTarget>, egress: Egress) -> Router {
    Router::new()
        .route("/dlq", get(list))
        .route("/dlq/replay", post(replay))
        .route("/test", post(test))
        .with_state(Arc::new(Admin {
            dead_letters,
            targets,
            egress,
        }))
}

async fn list(State(admin): State<Arc<Admin>>) -> Response {
    match admin.dead_letters.list().await {
        Ok(letters) => axum::Json(letters).into_response(),
        Err(e) => Rejection(StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

async fn replay(State(admin): State<Arc<Admin>>) -> Response {
    match admin.dead_letters.replay().await {
        Ok(n) => axum::Json(json!({"replayed": n})).into_response(),
        Err(e) => Rejection(StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct TestQuery {
    destination: Option<String>,
}

/// `POST /test[?destination=NAME]` with the event (the track sample when the body is empty):
/// sends it once, as delivery would, and answers with a [`TestReport`].
async fn test(
    State(admin): State<Arc<Admin>>,
    Query(query): Query<TestQuery>,
    body: Bytes,
) -> Response {
    let event = if body.is_empty() {
        samples::sample("track")
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(event) if event.is_object() => event,
            _ => {
                let problem = "the test event must be a JSON object".to_string();
                return Rejection(StatusCode::BAD_REQUEST, problem).into_response();
            }
        }
    };
    let target = match pick(&admin.targets, query.destination.as_deref()) {
        Ok(target) => target,
        Err(problem) => return Rejection(StatusCode::NOT_FOUND, problem).into_response(),
    };
    let dest = target.live.borrow().clone();
    let report = match send_test(&dest, &event, target.tokens.as_ref(), &admin.egress).await {
        Ok(sent) => sent.report(),
        Err(e) => TestReport::not_sent(e),
    };
    axum::Json(report).into_response()
}

fn pick<'a>(targets: &'a [TestTarget], name: Option<&str>) -> Result<&'a TestTarget, String> {
    let names = || {
        targets
            .iter()
            .map(|t| t.live.borrow().name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (name, targets) {
        (None, [only]) => Ok(only),
        (None, _) => Err(format!(
            "name the destination with ?destination=NAME; running here: {}",
            names()
        )),
        (Some(name), _) => targets
            .iter()
            .find(|t| t.live.borrow().name == name)
            .ok_or_else(|| {
                format!(
                    "no running destination {name} here (running: {}); a disabled one sends nothing",
                    names()
                )
            }),
    }
}
