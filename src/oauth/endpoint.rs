//! Talking to the authorization server with the `oauth2` crate: the client-credentials,
//! refresh-token and authorization-code grants, and the authorize URL (PKCE S256 + `state`).
//! Every failure is classified so the user sees the server's own error (`invalid_client`, …).

use super::{OAuthSettings, TokenSet};
use crate::api::{ClientAuthMethod, GrantType};
use crate::egress::Egress;
use crate::egress::client::{GuardedClient, SendError};
use crate::egress::policy::Refused;
use chrono::{DateTime, Utc};
use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenResponse};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    Scope, TokenResponse, TokenUrl,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// What the server answers when it does not say how long a token lasts (API.md §5).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenError {
    /// The server refused the request with an OAuth error code (`invalid_client`, …).
    #[error("the token endpoint {url} answered {code}{}", description.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Refused {
        url: String,
        code: String,
        description: Option<String>,
    },
    /// The egress guard refused the endpoint's address; nothing was sent.
    #[error("the token endpoint {url} resolves to {}, {}; {}", refused.address, refused.rule, refused.remedy)]
    EgressRefused { url: String, refused: Refused },
    #[error("cannot reach the token endpoint {url}: {message}")]
    Unreachable { url: String, message: String },
    /// An answer that is neither a token nor an OAuth 2.0 error. What it said is not repeated:
    /// the answer of a request the operator sent never reaches a status (API §11).
    #[error("the token endpoint {url} answered HTTP {status} {what}")]
    BadResponse {
        url: String,
        status: u16,
        what: String,
    },
    /// AuthorizationCode before anyone consented: there is no refresh token to use.
    #[error("no refresh token is stored yet")]
    NotConnected,
}

impl TokenError {
    pub fn code(&self) -> Option<&str> {
        match self {
            TokenError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// One authorization server, as a destination's `spec.auth.oauth2` describes it.
pub struct TokenEndpoint {
    settings: OAuthSettings,
    http: GuardedClient,
}

/// The longest an OAuth 2.0 error code or description shown on a resource may be.
const ERROR_TEXT_LIMIT: usize = 200;

/// A started authorization-code flow: send the person to `url`, keep the rest for the callback.
pub struct Authorization {
    pub url: reqwest::Url,
    pub state: String,
    pub verifier: PkceCodeVerifier,
}

impl TokenEndpoint {
    /// Token requests go through `egress`, the guard of the process that sends them.
    pub fn new(settings: OAuthSettings, egress: &Egress) -> Result<TokenEndpoint, reqwest::Error> {
        let http = GuardedClient::new(egress, |b| b.timeout(Duration::from_secs(30)))?;
        Ok(TokenEndpoint { settings, http })
    }

    fn sender(&self) -> Sender {
        Sender {
            http: self.http.clone(),
            status: Arc::default(),
        }
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    fn client(&self, token_url: &str, auth: ClientAuthMethod) -> Client {
        let s = &self.settings;
        let mut client = BasicClient::new(ClientId::new(s.client_id.clone()))
            .set_auth_uri(AuthUrl::from_url(
                s.authorize_url
                    .clone()
                    .unwrap_or_else(|| s.token_url.clone()),
            ))
            .set_token_uri(TokenUrl::from_url(
                reqwest::Url::parse(token_url).expect("token URLs are checked when loaded"),
            ))
            .set_auth_type(match auth {
                ClientAuthMethod::ClientSecretBasic => AuthType::BasicAuth,
                ClientAuthMethod::ClientSecretPost => AuthType::RequestBody,
            });
        if let Some(secret) = &s.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.clone()));
        }
        client
    }

    /// A token for the destination's grant: client credentials, or the refresh token.
    pub async fn fetch(&self, refresh_token: Option<&str>) -> Result<TokenSet, TokenError> {
        match (self.settings.grant, refresh_token) {
            (_, Some(rt)) => self.refresh(rt).await,
            (GrantType::ClientCredentials, None) => self.client_credentials().await,
            (GrantType::AuthorizationCode, None) => Err(TokenError::NotConnected),
        }
    }

    async fn client_credentials(&self) -> Result<TokenSet, TokenError> {
        let url = self.settings.token_url.as_str();
        self.with_auth_fallback(url, |client, sender| async move {
            let mut request = client
                .exchange_client_credentials()
                .add_scopes(self.scopes());
            for (name, value) in &self.settings.token_params {
                request = request.add_extra_param(name.as_str(), value.as_str());
            }
            request.request_async(&sender).await
        })
        .await
        .map(|r| token_set(&r, None))
    }

    async fn refresh(&self, refresh_token: &str) -> Result<TokenSet, TokenError> {
        let url = self.settings.refresh_url().to_string();
        let rt = RefreshToken::new(refresh_token.to_string());
        self.with_auth_fallback(&url, |client, sender| {
            let rt = &rt;
            async move {
                let mut request = client.exchange_refresh_token(rt);
                for (name, value) in &self.settings.token_params {
                    request = request.add_extra_param(name.as_str(), value.as_str());
                }
                request.request_async(&sender).await
            }
        })
        .await
        .map(|r| token_set(&r, Some(refresh_token)))
    }

    pub fn authorize(&self, redirect: &str) -> Authorization {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let client = self
            .client(self.settings.token_url.as_str(), self.auth_method())
            .set_redirect_uri(RedirectUrl::new(redirect.to_string()).expect("a loopback URL"));
        let (url, state) = client
            .authorize_url(CsrfToken::new_random)
            .add_scopes(self.scopes())
            .set_pkce_challenge(challenge)
            .url();
        Authorization {
            url,
            state: state.secret().clone(),
            verifier,
        }
    }

    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: PkceCodeVerifier,
        redirect: &str,
    ) -> Result<TokenSet, TokenError> {
        let url = self.settings.token_url.to_string();
        let client = self
            .client(&url, self.auth_method())
            .set_redirect_uri(RedirectUrl::new(redirect.to_string()).expect("a loopback URL"));
        let sender = self.sender();
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(verifier)
            .request_async(&sender)
            .await
            .map_err(|e| sender.classify(&url, e))?;
        Ok(token_set(&response, None))
    }

    fn scopes(&self) -> Vec<Scope> {
        self.settings
            .scopes
            .iter()
            .map(|s| Scope::new(s.clone()))
            .collect()
    }

    fn auth_method(&self) -> ClientAuthMethod {
        self.settings.auth_method.unwrap_or_default()
    }

    /// Runs a token request; when no method was configured and the server refuses Basic with
    /// `invalid_client`, the body form is tried once (API.md §5).
    async fn with_auth_fallback<F, Fut>(
        &self,
        url: &str,
        request: F,
    ) -> Result<BasicTokenResponse, TokenError>
    where
        F: Fn(Client, Sender) -> Fut,
        Fut: std::future::Future<Output = Result<BasicTokenResponse, OAuthError>>,
    {
        let attempt = |auth| {
            let sender = self.sender();
            let sent = request(self.client(url, auth), sender.clone());
            async move { sent.await.map_err(|e| sender.classify(url, e)) }
        };
        match attempt(self.auth_method()).await {
            Err(e) if self.settings.auth_method.is_none() && e.code() == Some("invalid_client") => {
                attempt(ClientAuthMethod::ClientSecretPost).await
            }
            other => other,
        }
    }
}

type OAuthError = RequestTokenError<SendError, oauth2::basic::BasicErrorResponse>;

/// The `oauth2` crate's HTTP client: the guard's, keeping the answer's status for the errors.
#[derive(Clone)]
pub struct Sender {
    http: GuardedClient,
    status: Arc<AtomicU16>,
}

impl Sender {
    fn classify(&self, url: &str, e: OAuthError) -> TokenError {
        classify(url, e, self.status.load(Ordering::Relaxed))
    }
}

impl<'c> oauth2::AsyncHttpClient<'c> for Sender {
    type Error = SendError;
    type Future =
        Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, SendError>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.http.oauth(request, &self.status))
    }
}

fn token_set(response: &BasicTokenResponse, previous_refresh: Option<&str>) -> TokenSet {
    let lifetime = response.expires_in().unwrap_or(DEFAULT_LIFETIME);
    let obtained_at = Utc::now();
    TokenSet {
        access_token: response.access_token().secret().clone(),
        obtained_at,
        expires_at: obtained_at
            + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(1)),
        // A server that does not rotate refresh tokens keeps the old one valid.
        refresh_token: response
            .refresh_token()
            .map(|r| r.secret().clone())
            .or_else(|| previous_refresh.map(str::to_string)),
    }
}

/// What a failed token request comes to. `status`: the answer's HTTP status (0: none came).
fn classify(url: &str, e: OAuthError, status: u16) -> TokenError {
    let url = url.to_string();
    let bad = |what: &str| TokenError::BadResponse {
        url: url.clone(),
        status,
        what: what.to_string(),
    };
    match e {
        RequestTokenError::ServerResponse(r) => TokenError::Refused {
            code: limited(match r.error() {
                BasicErrorResponseType::Extension(code) => code.as_str(),
                other => other.as_ref(),
            }),
            description: r.error_description().map(|d| limited(d.as_str())),
            url,
        },
        RequestTokenError::Request(e) => match e.refused() {
            Some(refused) => TokenError::EgressRefused {
                url,
                refused: refused.clone(),
            },
            None => TokenError::Unreachable {
                url,
                message: e.to_string(),
            },
        },
        RequestTokenError::Parse(..) if status != 200 => {
            bad("with a body that is not an OAuth 2.0 error response")
        }
        RequestTokenError::Parse(e, _) => bad(&format!(
            "with a body that is not an OAuth 2.0 token response ({})",
            parse_problem(&e)
        )),
        RequestTokenError::Other(message) if message.contains("Content-Type") => {
            bad("with a Content-Type other than application/json")
        }
        RequestTokenError::Other(_) => bad("with an empty body"),
    }
}

/// What is wrong with a token response, in words that repeat none of its values.
fn parse_problem(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = e.inner().to_string();
    match e.inner().classify() {
        serde_json::error::Category::Data if inner.starts_with("missing field") => inner
            .split(" at line")
            .next()
            .unwrap_or_default()
            .to_string(),
        serde_json::error::Category::Data => format!("{} has the wrong type or value", e.path()),
        serde_json::error::Category::Eof => "it ends early".into(),
        _ => "it is not JSON".into(),
    }
}

/// An OAuth 2.0 error code or description, cut to a length a condition message can carry.
fn limited(text: &str) -> String {
    let mut cut: String = text.chars().take(ERROR_TEXT_LIMIT).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

/// When a token set should be refreshed: at a random point between 75% and 90% of its
/// lifetime, so that many destinations (or replicas) never refresh in lockstep.
pub fn refresh_at(token: &TokenSet, random: f64) -> DateTime<Utc> {
    let lifetime = (token.expires_at - token.obtained_at).max(chrono::Duration::zero());
    let fraction = 0.75 + 0.15 * random.clamp(0.0, 1.0);
    token.obtained_at
        + chrono::Duration::milliseconds((lifetime.num_milliseconds() as f64 * fraction) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(lifetime_secs: i64) -> TokenSet {
        let obtained_at = Utc::now();
        TokenSet {
            access_token: "a".into(),
            obtained_at,
            expires_at: obtained_at + chrono::Duration::seconds(lifetime_secs),
            refresh_token: None,
        }
    }

    #[test]
    fn refreshes_between_75_and_90_percent_of_the_lifetime() {
        for (lifetime, low, high) in [(15, 11_250, 13_500), (3600, 2_700_000, 3_240_000)] {
            let t = token(lifetime);
            let at = |r| (refresh_at(&t, r) - t.obtained_at).num_milliseconds();
            assert_eq!(at(0.0), low);
            assert_eq!(at(1.0), high);
            assert!((low..=high).contains(&at(0.5)));
            assert_eq!(at(7.0), high, "random input is clamped");
        }
    }

    #[test]
    fn a_token_is_not_handed_out_in_its_last_tenth_or_last_five_seconds() {
        let short = token(10);
        assert!(short.usable_at(short.obtained_at + chrono::Duration::milliseconds(8_900)));
        assert!(!short.usable_at(short.obtained_at + chrono::Duration::milliseconds(9_100)));
        let long = token(3600);
        assert!(long.usable_at(long.expires_at - chrono::Duration::seconds(6)));
        assert!(!long.usable_at(long.expires_at - chrono::Duration::seconds(4)));
    }
}
