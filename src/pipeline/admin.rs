//! The admin listener (API §10): dead letters hold whole events, so they are served only here,
//! on a loopback address that no Service exposes. People reach it on their own machine, or in
//! the cluster through the API server's port-forward to a worker pod, which RBAC governs.

use super::dead_letters::DeadLetters;
use super::ingest::Rejection;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::sync::Arc;

/// Where `hookline run` and `hookline worker` listen for it unless told otherwise; the port
/// `hookline dlq NAME -n NS` forwards to.
pub const DEFAULT_PORT: u16 = 9091;

pub fn router(dead_letters: DeadLetters) -> Router {
    Router::new()
        .route("/dlq", get(list))
        .route("/dlq/replay", post(replay))
        .with_state(Arc::new(dead_letters))
}

async fn list(State(dead_letters): State<Arc<DeadLetters>>) -> Response {
    match dead_letters.list().await {
        Ok(letters) => axum::Json(letters).into_response(),
        Err(e) => Rejection(StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

async fn replay(State(dead_letters): State<Arc<DeadLetters>>) -> Response {
    match dead_letters.replay().await {
        Ok(n) => axum::Json(json!({"replayed": n})).into_response(),
        Err(e) => Rejection(StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}
