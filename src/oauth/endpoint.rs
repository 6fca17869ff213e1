//! Talking to the authorization server with the `oauth2` crate: the client-credentials,
//! refresh-token and authorization-code grants, and the authorize URL (PKCE S256 + `state`).
//! Every failure is classified so the user sees the server's own error (`invalid_client`, …).

use super::{OAuthSettings, TokenSet};
use crate::api::{ClientAuthMethod, GrantType};
use crate::root_cause;
use chrono::{DateTime, Utc};
use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenResponse};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    Scope, TokenResponse, TokenUrl,
};
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
    #[error("cannot reach the token endpoint {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error(
        "the token endpoint {url} gave an answer that is not an OAuth 2.0 token response: {message}"
    )]
    BadResponse { url: String, message: String },
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
    http: reqwest::Client,
}

/// A started authorization-code flow: send the person to `url`, keep the rest for the callback.
pub struct Authorization {
    pub url: reqwest::Url,
    pub state: String,
    pub verifier: PkceCodeVerifier,
}

impl TokenEndpoint {
    pub fn new(settings: OAuthSettings) -> Result<TokenEndpoint, reqwest::Error> {
        // Token requests carry credentials: never follow a redirect with them.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("hookline/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(TokenEndpoint { settings, http })
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
        self.with_auth_fallback(url, |client| async move {
            let mut request = client
                .exchange_client_credentials()
                .add_scopes(self.scopes());
            for (name, value) in &self.settings.token_params {
                request = request.add_extra_param(name.as_str(), value.as_str());
            }
            request.request_async(&self.http).await
        })
        .await
        .map(|r| token_set(&r, None))
    }

    async fn refresh(&self, refresh_token: &str) -> Result<TokenSet, TokenError> {
        let url = self.settings.refresh_url().to_string();
        let rt = RefreshToken::new(refresh_token.to_string());
        self.with_auth_fallback(&url, |client| {
            let rt = &rt;
            async move {
                let mut request = client.exchange_refresh_token(rt);
                for (name, value) in &self.settings.token_params {
                    request = request.add_extra_param(name.as_str(), value.as_str());
                }
                request.request_async(&self.http).await
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
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| classify(&url, e))?;
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
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<
                Output = Result<
                    BasicTokenResponse,
                    RequestTokenError<
                        oauth2::HttpClientError<reqwest::Error>,
                        oauth2::basic::BasicErrorResponse,
                    >,
                >,
            >,
    {
        let first = request(self.client(url, self.auth_method()))
            .await
            .map_err(|e| classify(url, e));
        match first {
            Err(e) if self.settings.auth_method.is_none() && e.code() == Some("invalid_client") => {
                request(self.client(url, ClientAuthMethod::ClientSecretPost))
                    .await
                    .map_err(|e| classify(url, e))
            }
            other => other,
        }
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

fn classify(
    url: &str,
    e: RequestTokenError<
        oauth2::HttpClientError<reqwest::Error>,
        oauth2::basic::BasicErrorResponse,
    >,
) -> TokenError {
    let url = url.to_string();
    match e {
        RequestTokenError::ServerResponse(r) => TokenError::Refused {
            url,
            code: match r.error() {
                BasicErrorResponseType::Extension(code) => code.clone(),
                other => other.as_ref().to_string(),
            },
            description: r.error_description().cloned(),
        },
        RequestTokenError::Request(e) => TokenError::Unreachable {
            url,
            message: root_cause(&e),
        },
        RequestTokenError::Parse(e, body) => TokenError::BadResponse {
            url,
            message: format!(
                "{e} (body starts {:?})",
                String::from_utf8_lossy(&body[..body.len().min(120)])
            ),
        },
        RequestTokenError::Other(message) => TokenError::BadResponse { url, message },
    }
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
