//! The OAuth 2.0 token lifecycle (API.md §5): tokens are fetched before they are needed,
//! refreshed at 75–90% of their lifetime, stored before use, and handed to delivery only while
//! they are still valid. Delivery waits (holding the queue) whenever no valid token can be had.

pub mod consent;
pub mod endpoint;
pub mod manager;
pub mod store;

use crate::api::{ClientAuthMethod, GrantType};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A destination's `spec.auth.oauth2`, with its client credentials read from Secrets.
#[derive(Clone, PartialEq)]
pub struct OAuthSettings {
    pub grant: GrantType,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub authorize_url: Option<reqwest::Url>,
    pub token_url: reqwest::Url,
    pub refresh_token_url: Option<reqwest::Url>,
    pub scopes: Vec<String>,
    pub auth_method: Option<ClientAuthMethod>,
    pub token_params: BTreeMap<String, String>,
}

impl OAuthSettings {
    pub fn refresh_url(&self) -> &reqwest::Url {
        self.refresh_token_url.as_ref().unwrap_or(&self.token_url)
    }
}

impl std::fmt::Debug for OAuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthSettings")
            .field("grant", &self.grant)
            .field("client_id", &self.client_id)
            .field("token_url", &self.token_url.as_str())
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// What a token request returned, as it is stored.
#[derive(Clone, PartialEq)]
pub struct TokenSet {
    pub access_token: String,
    pub obtained_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("obtained_at", &self.obtained_at)
            .field("expires_at", &self.expires_at)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .finish_non_exhaustive()
    }
}

impl TokenSet {
    /// Still worth sending: not within the last tenth of its lifetime (at most 5 s), so it is
    /// still valid when the request reaches the endpoint.
    pub fn usable_at(&self, now: DateTime<Utc>) -> bool {
        let lifetime = self.expires_at - self.obtained_at;
        let margin = (lifetime / 10).min(chrono::Duration::seconds(5));
        self.expires_at - margin > now
    }
}

/// The access token handed to delivery.
#[derive(Clone, PartialEq)]
pub struct AccessToken {
    pub secret: Arc<str>,
    pub set: Arc<TokenSet>,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessToken(expires {})", self.set.expires_at)
    }
}

/// Why no token can be had, for `AuthReady=False` and `GET /status`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthProblem {
    pub reason: &'static str,
    pub message: String,
    /// AuthorizationCode: where a person consents again.
    pub authorization_url: Option<String>,
}

/// The auth side of a destination as the token manager last published it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuthState {
    pub token: Option<AccessToken>,
    pub problem: Option<AuthProblem>,
}

impl AuthState {
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.token.as_ref().map(|t| t.set.expires_at)
    }

    /// `(ready, reason, message)` for the `AuthReady` condition.
    pub fn condition(&self) -> (bool, &'static str, String) {
        match (&self.problem, &self.token) {
            (Some(p), _) => (false, p.reason, p.message.clone()),
            (None, Some(_)) => (
                true,
                "TokenAvailable",
                "an access token is available".into(),
            ),
            (None, None) => (
                false,
                "TokenPending",
                "requesting the first access token".into(),
            ),
        }
    }
}
