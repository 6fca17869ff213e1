//! One destination's token lifecycle, as a task: load what is stored, refresh at 75–90% of the
//! lifetime (or at once when the endpoint rejects the token), store every new token set before
//! anyone uses it, back off on failures, and publish the result. Delivery reads it through a
//! [`TokenSource`], which only ever hands out tokens that are still valid.

use super::endpoint::{TokenEndpoint, TokenError, refresh_at};
use super::store::{MountedToken, StoreError, TokenFile};
use super::{AccessToken, AuthProblem, AuthState, TokenSet};
use crate::shutdown::stopped;
use chrono::Utc;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Where the manager keeps token sets; `lock` spans a whole refresh so that, across processes,
/// only one refresh per destination is ever in flight.
pub trait TokenStore: Send + Sync + 'static {
    type Guard: Send;
    fn load(&self) -> impl Future<Output = Result<Option<TokenSet>, StoreError>> + Send;
    fn save(&self, token: &TokenSet) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn lock(&self) -> impl Future<Output = Result<Self::Guard, StoreError>> + Send;
    /// `false` for a store someone else keeps fresh: the manager only follows it.
    fn refreshes(&self) -> bool {
        true
    }
    /// How often the store is re-read while waiting for someone else (`hookline connect`, the
    /// operator) to put a usable token there.
    fn poll_interval(&self) -> Duration {
        Duration::from_secs(1)
    }
}

impl TokenStore for MountedToken {
    type Guard = ();
    async fn load(&self) -> Result<Option<TokenSet>, StoreError> {
        MountedToken::load(self)
    }
    async fn save(&self, _: &TokenSet) -> Result<(), StoreError> {
        Ok(())
    }
    async fn lock(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn refreshes(&self) -> bool {
        false
    }
}

impl TokenStore for TokenFile {
    type Guard = super::store::FileLock;
    async fn load(&self) -> Result<Option<TokenSet>, StoreError> {
        TokenFile::load(self)
    }
    async fn save(&self, token: &TokenSet) -> Result<(), StoreError> {
        TokenFile::save(self, token)
    }
    async fn lock(&self) -> Result<Self::Guard, StoreError> {
        TokenFile::lock(self).await
    }
}

/// Keeps nothing: a worker that holds client credentials fetches its own tokens.
pub struct InMemory;

impl TokenStore for InMemory {
    type Guard = ();
    async fn load(&self) -> Result<Option<TokenSet>, StoreError> {
        Ok(None)
    }
    async fn save(&self, _: &TokenSet) -> Result<(), StoreError> {
        Ok(())
    }
    async fn lock(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

enum Command {
    /// The endpoint answered 401 to this token; `again` when it was already a fresh one.
    Rejected { token: Arc<str>, again: bool },
    /// The stored copy went missing (someone deleted the token Secret): store it again.
    Restore,
}

/// Delivery's handle on a destination's tokens.
#[derive(Clone)]
pub struct TokenSource {
    state: watch::Receiver<AuthState>,
    commands: mpsc::Sender<Command>,
}

impl TokenSource {
    pub fn state(&self) -> AuthState {
        self.state.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<AuthState> {
        self.state.clone()
    }

    /// A token that is valid now and will still be when the request arrives, other than
    /// `rejected`; waits (holding the caller's events) as long as there is none. `None` once
    /// `shutdown` turns true.
    pub async fn usable(
        &self,
        rejected: Option<&AccessToken>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<AccessToken> {
        let mut state = self.state.clone();
        loop {
            let token = state
                .borrow_and_update()
                .token
                .clone()
                .filter(|t| t.set.usable_at(Utc::now()) && Some(t) != rejected);
            if token.is_some() {
                return token;
            }
            // Also wakes on time alone: a token can stop being usable without any change.
            tokio::select! {
                _ = stopped(shutdown) => return None,
                _ = state.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Stores the current token again, e.g. after someone deleted the token Secret.
    pub fn restore(&self) {
        let _ = self.commands.try_send(Command::Restore);
    }

    /// The endpoint answered 401 to `token`: refresh now. `again` when the token was already a
    /// fresh one, which makes it an auth failure reported on the destination.
    pub fn rejected(&self, token: &AccessToken, again: bool) {
        let _ = self.commands.try_send(Command::Rejected {
            token: token.secret.clone(),
            again,
        });
    }
}

pub struct TokenManager<S: TokenStore> {
    destination: String,
    endpoint: TokenEndpoint,
    store: S,
    state: watch::Sender<AuthState>,
    commands: mpsc::Receiver<Command>,
}

/// Starts the lifecycle task of one destination.
pub fn spawn<S: TokenStore>(
    destination: &str,
    endpoint: TokenEndpoint,
    store: S,
    shutdown: watch::Receiver<bool>,
) -> TokenSource {
    let (state, rx) = watch::channel(AuthState::default());
    let (commands_tx, commands) = mpsc::channel(16);
    let manager = TokenManager {
        destination: destination.to_string(),
        endpoint,
        store,
        state,
        commands,
    };
    tokio::spawn(manager.run(shutdown));
    TokenSource {
        state: rx,
        commands: commands_tx,
    }
}

/// What the manager waits for before its next token request.
enum Next {
    /// The scheduled refresh (75–90% of the lifetime) or the end of a back-off.
    At(tokio::time::Instant),
    /// Nothing the manager can do alone (no consent yet, a revoked grant): watch the store.
    StoreChange,
}

impl<S: TokenStore> TokenManager<S> {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut current = match self.store.load().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(destination = %self.destination, error = %e, "cannot read the stored token; requesting a new one");
                None
            }
        };
        let mut problem = None;
        // After a second 401 the current token is withheld from delivery until a new one comes.
        let mut withheld = false;
        let mut failures = 0u32;
        let mut next = match &current {
            Some(t) => self.scheduled(t),
            None => self.next_refresh(tokio::time::Instant::now()),
        };
        loop {
            self.publish(current.as_ref().filter(|_| !withheld), problem.clone());
            let again = tokio::select! {
                _ = stopped(&mut shutdown) => return,
                _ = wait(&next, self.store.poll_interval()) => false,
                Some(command) = self.commands.recv() => match command {
                    Command::Rejected { token, again } => {
                        // Only the token in use matters; a 401 to an older one is handled.
                        if current.as_ref().is_none_or(|c| c.access_token.as_str() != &*token) {
                            continue;
                        }
                        again
                    }
                    Command::Restore => {
                        // The manager is the only writer, so its copy is the newest.
                        if let Some(t) = &current
                            && let Err(e) = self.store.save(t).await
                        {
                            tracing::warn!(destination = %self.destination, error = %e, "cannot store the token again");
                        }
                        continue;
                    }
                }
            };
            if again {
                failures += 1;
                let delay = backoff(failures);
                problem = Some(AuthProblem {
                    reason: "TokenRejected",
                    message: format!(
                        "the endpoint answered 401 to a freshly issued token; check the client's scopes and permissions at the authorization server (events are held and retried in {}s)",
                        delay.as_secs().max(1)
                    ),
                    authorization_url: None,
                });
                tracing::warn!(destination = %self.destination, retry_in = ?delay, "the endpoint rejected a fresh token; holding delivery");
                withheld = true;
                next = self.next_refresh(tokio::time::Instant::now() + delay);
                continue;
            }

            if let Next::StoreChange = next {
                if let Ok(Some(stored)) = self.store.load().await
                    && !same_grant(Some(&stored), current.as_ref())
                {
                    tracing::info!(destination = %self.destination, "a new token was stored; using it");
                    next = self.scheduled(&stored);
                    current = Some(stored);
                    problem = None;
                    withheld = false;
                }
                continue;
            }
            match self.refresh(current.as_ref()).await {
                Ok(t) => {
                    failures = 0;
                    problem = None;
                    withheld = false;
                    next = self.scheduled(&t);
                    current = Some(t);
                }
                Err(e) => {
                    failures += 1;
                    let (p, retry) = self.problem(&e, failures);
                    tracing::warn!(destination = %self.destination, reason = p.reason, error = %p.message, "token request failed");
                    problem = Some(p);
                    next = retry;
                }
            }
        }
    }

    /// The next refresh of `token`, at 75–90% of its lifetime.
    fn scheduled(&self, token: &TokenSet) -> Next {
        let at = refresh_at(token, rand::random());
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        self.next_refresh(tokio::time::Instant::now() + wait)
    }

    /// A refresh at `at`; a follower, which never refreshes, watches its store instead.
    fn next_refresh(&self, at: tokio::time::Instant) -> Next {
        if self.store.refreshes() {
            Next::At(at)
        } else {
            Next::StoreChange
        }
    }

    /// One refresh under the store's lock: another process may have refreshed meanwhile, in
    /// which case its token set (and rotated refresh token) is taken instead.
    async fn refresh(&self, current: Option<&TokenSet>) -> Result<TokenSet, RefreshError> {
        let _guard = self.store.lock().await.map_err(RefreshError::Store)?;
        let stored = self.store.load().await.map_err(RefreshError::Store)?;
        if let Some(s) = &stored
            && !same_grant(Some(s), current)
            && !s.access_token.is_empty()
            && refresh_at(s, 0.0) > Utc::now()
        {
            return Ok(s.clone());
        }
        let refresh_token = stored
            .as_ref()
            .or(current)
            .and_then(|t| t.refresh_token.as_deref());
        let fresh = self
            .endpoint
            .fetch(refresh_token)
            .await
            .map_err(RefreshError::Token)?;
        // Stored before use: a rotated refresh token must never be lost.
        self.store.save(&fresh).await.map_err(RefreshError::Store)?;
        tracing::info!(destination = %self.destination, expires_at = %fresh.expires_at, "new access token");
        Ok(fresh)
    }

    fn problem(&self, e: &RefreshError, failures: u32) -> (AuthProblem, Next) {
        let retry = Next::At(tokio::time::Instant::now() + backoff(failures));
        let authorization_url = self
            .endpoint
            .settings()
            .authorize_url
            .as_ref()
            .map(|u| u.to_string());
        let connect = "run `hookline connect` for this destination to consent again";
        match e {
            RefreshError::Token(TokenError::NotConnected) => (
                AuthProblem {
                    reason: "ConsentRequired",
                    message: format!("no one has authorized this destination yet: {connect}"),
                    authorization_url,
                },
                Next::StoreChange,
            ),
            RefreshError::Token(t) if t.code() == Some("invalid_grant") => (
                AuthProblem {
                    reason: "ConsentRequired",
                    message: format!("{t}; the refresh token was revoked or expired: {connect}"),
                    authorization_url,
                },
                Next::StoreChange,
            ),
            RefreshError::Token(t @ TokenError::Refused { code, .. }) => (
                AuthProblem {
                    reason: match code.as_str() {
                        "invalid_client" | "unauthorized_client" => "InvalidClient",
                        "invalid_scope" => "InvalidScope",
                        _ => "TokenRequestFailed",
                    },
                    message: format!("{t}; check spec.auth.oauth2 and the client Secret"),
                    authorization_url: None,
                },
                retry,
            ),
            // Nothing changes by asking again soon: the admin's settings or the spec must.
            RefreshError::Token(t @ TokenError::EgressRefused { .. }) => (
                AuthProblem {
                    reason: "EgressRefused",
                    message: t.to_string(),
                    authorization_url: None,
                },
                Next::At(tokio::time::Instant::now() + backoff(u32::MAX)),
            ),
            // Reachable, and it said no in a way OAuth 2.0 does not define.
            RefreshError::Token(t @ TokenError::BadResponse { status, .. }) if *status < 500 => (
                AuthProblem {
                    reason: "TokenRequestFailed",
                    message: format!("{t}; check spec.auth.oauth2.tokenUrl"),
                    authorization_url: None,
                },
                retry,
            ),
            RefreshError::Token(t) => (
                AuthProblem {
                    reason: "TokenEndpointUnavailable",
                    message: format!("{t}; retrying"),
                    authorization_url: None,
                },
                retry,
            ),
            RefreshError::Store(s) => (
                AuthProblem {
                    reason: "TokenStoreFailed",
                    message: format!("cannot keep the token: {s}"),
                    authorization_url: None,
                },
                retry,
            ),
        }
    }

    fn publish(&self, current: Option<&TokenSet>, problem: Option<AuthProblem>) {
        let token = current
            .filter(|t| !t.access_token.is_empty())
            .map(|t| AccessToken {
                secret: t.access_token.as_str().into(),
                set: Arc::new(t.clone()),
            });
        self.state.send_if_modified(|s| {
            let new = AuthState { token, problem };
            let changed = *s != new;
            *s = new;
            changed
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum RefreshError {
    #[error(transparent)]
    Token(TokenError),
    #[error(transparent)]
    Store(StoreError),
}

/// Whether two token sets hold the same tokens (timestamps lose precision in storage).
fn same_grant(a: Option<&TokenSet>, b: Option<&TokenSet>) -> bool {
    a.map(|t| (&t.access_token, &t.refresh_token)) == b.map(|t| (&t.access_token, &t.refresh_token))
}

async fn wait(next: &Next, poll: Duration) {
    match next {
        Next::At(at) => tokio::time::sleep_until(*at).await,
        Next::StoreChange => tokio::time::sleep(poll).await,
    }
}

/// 1 s, 2 s, 4 s … up to a minute, with up to 20% jitter.
fn backoff(failures: u32) -> Duration {
    let base = FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(6));
    base.min(MAX_BACKOFF)
        .mul_f64(1.0 + 0.2 * rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_a_minute_with_some_jitter() {
        for (failures, base) in [(1, 1), (2, 2), (3, 4), (7, 60), (40, 60)] {
            let d = backoff(failures).as_secs_f64();
            let base = base as f64;
            assert!(d >= base && d <= base * 1.2, "{failures} failures: {d}s");
        }
    }
}
