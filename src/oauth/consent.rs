//! The authorization-code flow for a person (`hookline connect`): PKCE S256 and `state`, a
//! loopback redirect on 127.0.0.1 (RFC 8252), the code exchanged for tokens.

use super::TokenSet;
use super::endpoint::{TokenEndpoint, TokenError};
use axum::extract::{Query, State};
use axum::response::Html;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    #[error("cannot listen for the redirect on 127.0.0.1:{port}: {source}")]
    Listen { port: u16, source: std::io::Error },
    #[error("the authorization server refused: {error}{}", description.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Denied {
        error: String,
        description: Option<String>,
    },
    #[error("no authorization arrived within {} s", .0.as_secs())]
    TimedOut(Duration),
    #[error(transparent)]
    Token(#[from] TokenError),
}

type Callback = Result<String, ConsentError>;

struct Pending {
    state: String,
    done: Mutex<Option<oneshot::Sender<Callback>>>,
}

/// Runs the flow: `show` receives the URL to send the person to (printing it, opening a
/// browser); returns the tokens once the redirect came back with a valid `state`.
pub async fn consent(
    endpoint: &TokenEndpoint,
    port: u16,
    timeout: Duration,
    show: impl FnOnce(&reqwest::Url),
) -> Result<TokenSet, ConsentError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|source| ConsentError::Listen { port, source })?;
    let port = listener
        .local_addr()
        .map_err(|source| ConsentError::Listen { port, source })?
        .port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let authorization = endpoint.authorize(&redirect);
    let (tx, rx) = oneshot::channel();
    let pending = Arc::new(Pending {
        state: authorization.state.clone(),
        done: Mutex::new(Some(tx)),
    });
    let app = axum::Router::new()
        .route("/callback", axum::routing::get(callback))
        .with_state(pending);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    show(&authorization.url);
    let code = tokio::time::timeout(timeout, rx).await;
    server.abort();
    let code = match code {
        Err(_) => return Err(ConsentError::TimedOut(timeout)),
        Ok(Err(_)) => unreachable!("the sender lives as long as the server"),
        Ok(Ok(result)) => result?,
    };
    Ok(endpoint
        .exchange_code(&code, authorization.verifier, &redirect)
        .await?)
}

async fn callback(
    State(pending): State<Arc<Pending>>,
    Query(query): Query<HashMap<String, String>>,
) -> (axum::http::StatusCode, Html<String>) {
    use axum::http::StatusCode;
    // A request without the right `state` is not the answer to our request: ignore it, keep
    // waiting for the real one.
    if query.get("state") != Some(&pending.state) {
        return (
            StatusCode::BAD_REQUEST,
            Html("<p>This is not the answer to Hookline's authorization request (state does not match).</p>".into()),
        );
    }
    let result = match (query.get("code"), query.get("error")) {
        (_, Some(error)) => Err(ConsentError::Denied {
            error: error.clone(),
            description: query.get("error_description").cloned(),
        }),
        (Some(code), None) => Ok(code.clone()),
        (None, None) => Err(ConsentError::Denied {
            error: "no code in the redirect".into(),
            description: None,
        }),
    };
    let page = match &result {
        Ok(_) => "<p>Hookline is connected. You can close this tab.</p>".to_string(),
        Err(e) => format!("<p>Hookline was not connected: {e}</p>"),
    };
    if let Some(done) = pending.done.lock().expect("consent lock").take() {
        let _ = done.send(result);
    }
    (StatusCode::OK, Html(page))
}
