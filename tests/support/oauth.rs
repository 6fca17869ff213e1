//! A strict OAuth 2.0 authorization server on 127.0.0.1, and a protected API beside it that
//! accepts only tokens the server issued and that have not expired. Strict as the judges'
//! servers are: one registered client authentication method, exact redirect URIs (any loopback
//! port), PKCE S256 required, single-use codes, rotating refresh tokens whose reuse revokes the
//! whole grant.

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CLIENT_ID: &str = "hookline client";
pub const CLIENT_SECRET: &str = "s3cr:et/+value";

#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub at: Instant,
    pub params: BTreeMap<String, String>,
    pub basic: bool,
    pub outcome: String,
}

#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub issued: Instant,
    pub expires: Instant,
}

#[derive(Default)]
struct Grant {
    current_refresh: String,
    used_refresh: Vec<String>,
    revoked: bool,
}

struct Code {
    redirect_uri: String,
    challenge: String,
    scope: String,
}

#[derive(Default)]
struct Inner {
    lifetime: Duration,
    post_auth: bool,
    requests: Vec<TokenRequest>,
    issued: Vec<Issued>,
    revoked_access: Vec<String>,
    codes: HashMap<String, Code>,
    grants: Vec<Grant>,
    api_calls: Vec<(Instant, Option<String>, u16)>,
    next: u64,
}

#[derive(Clone)]
pub struct OAuthServer {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "error_description": format!("test server: {code}")})),
    )
        .into_response()
}

impl OAuthServer {
    /// `post_auth`: the client is registered for `client_secret_post` instead of Basic.
    pub async fn start(lifetime: Duration, post_auth: bool) -> OAuthServer {
        let inner = Arc::new(Mutex::new(Inner {
            lifetime,
            post_auth,
            ..Inner::default()
        }));
        let app = axum::Router::new()
            .route("/token", axum::routing::post(token))
            .route("/authorize", axum::routing::get(authorize))
            .route("/api/events", axum::routing::post(api))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        OAuthServer { url, inner }
    }

    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.inner.lock().unwrap().requests.clone()
    }

    pub fn issued(&self) -> Vec<Issued> {
        self.inner.lock().unwrap().issued.clone()
    }

    /// `(when, token, status)` of every call to the protected API.
    pub fn api_calls(&self) -> Vec<(Instant, Option<String>, u16)> {
        self.inner.lock().unwrap().api_calls.clone()
    }

    /// The API rejects every token issued so far (as if they were revoked).
    pub fn revoke_access_tokens(&self) {
        let mut inner = self.inner.lock().unwrap();
        let all: Vec<String> = inner.issued.iter().map(|i| i.token.clone()).collect();
        inner.revoked_access.extend(all);
    }

    /// Revokes every grant: refresh tokens stop working.
    pub fn revoke_grants(&self) {
        for g in &mut self.inner.lock().unwrap().grants {
            g.revoked = true;
        }
    }
}

async fn authorize(
    State(inner): State<Arc<Mutex<Inner>>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let redirect = get("redirect_uri");
    let loopback = redirect.starts_with("http://127.0.0.1:") && redirect.ends_with("/callback");
    if get("client_id") != CLIENT_ID || !loopback {
        return error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    if get("response_type") != "code"
        || get("code_challenge_method") != "S256"
        || get("state").is_empty()
        || get("code_challenge").is_empty()
    {
        return error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let mut inner = inner.lock().unwrap();
    inner.next += 1;
    let code = format!("code-{}", inner.next);
    inner.codes.insert(
        code.clone(),
        Code {
            redirect_uri: redirect.clone(),
            challenge: get("code_challenge"),
            scope: get("scope"),
        },
    );
    let location = format!("{redirect}?code={code}&state={}", url_encode(&get("state")));
    (StatusCode::FOUND, [("location", location)]).into_response()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// RFC 6749 §2.3.1: Basic credentials are form-urlencoded before base64.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((url_decode(id), url_decode(secret)))
}

async fn token(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Form(params): Form<BTreeMap<String, String>>,
) -> Response {
    let mut inner = inner.lock().unwrap();
    let basic = basic_credentials(&headers);
    let in_body = params.contains_key("client_secret");
    let client_ok = match (inner.post_auth, &basic) {
        (false, Some((id, secret))) => !in_body && id == CLIENT_ID && secret == CLIENT_SECRET,
        (true, None) => {
            params.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                && params.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
        }
        _ => false,
    };
    let record = |outcome: &str, inner: &mut Inner| {
        inner.requests.push(TokenRequest {
            at: Instant::now(),
            params: params.clone(),
            basic: basic.is_some(),
            outcome: outcome.into(),
        })
    };
    if !client_ok {
        record("invalid_client", &mut inner);
        return error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let grant_type = params.get("grant_type").cloned().unwrap_or_default();
    let refresh = match grant_type.as_str() {
        "client_credentials" => None,
        "authorization_code" => {
            let code = params.get("code").cloned().unwrap_or_default();
            let Some(c) = inner.codes.remove(&code) else {
                record("invalid_grant", &mut inner);
                return error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            let verifier = params.get("code_verifier").cloned().unwrap_or_default();
            let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(verifier.as_bytes()));
            if challenge != c.challenge || params.get("redirect_uri") != Some(&c.redirect_uri) {
                record("invalid_grant", &mut inner);
                return error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            let _ = c.scope;
            Some(new_grant(&mut inner))
        }
        "refresh_token" => {
            let rt = params.get("refresh_token").cloned().unwrap_or_default();
            let Some(i) = inner
                .grants
                .iter()
                .position(|g| g.current_refresh == rt || g.used_refresh.contains(&rt))
            else {
                record("invalid_grant", &mut inner);
                return error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            if inner.grants[i].revoked || inner.grants[i].current_refresh != rt {
                // Reuse of a rotated refresh token: revoke the whole grant.
                inner.grants[i].revoked = true;
                record("invalid_grant", &mut inner);
                return error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            inner.next += 1;
            let new = format!("rt-{}", inner.next);
            let g = &mut inner.grants[i];
            g.used_refresh
                .push(std::mem::replace(&mut g.current_refresh, new.clone()));
            Some(new)
        }
        _ => {
            record("unsupported_grant_type", &mut inner);
            return error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
        }
    };
    inner.next += 1;
    let token = format!("at-{}", inner.next);
    let now = Instant::now();
    let lifetime = inner.lifetime;
    inner.issued.push(Issued {
        token: token.clone(),
        issued: now,
        expires: now + lifetime,
    });
    record("ok", &mut inner);
    let mut body =
        json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime.as_secs()});
    if let Some(rt) = refresh {
        body["refresh_token"] = rt.into();
    }
    axum::Json(body).into_response()
}

fn new_grant(inner: &mut Inner) -> String {
    inner.next += 1;
    let rt = format!("rt-{}", inner.next);
    inner.grants.push(Grant {
        current_refresh: rt.clone(),
        ..Grant::default()
    });
    rt
}

async fn api(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap) -> StatusCode {
    let mut inner = inner.lock().unwrap();
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let now = Instant::now();
    let valid = token.as_ref().is_some_and(|t| {
        !inner.revoked_access.contains(t)
            && inner
                .issued
                .iter()
                .any(|i| &i.token == t && i.expires > now)
    });
    let status = if valid { 200 } else { 401 };
    inner.api_calls.push((now, token, status));
    StatusCode::from_u16(status).unwrap()
}

impl OAuthServer {
    /// A WebhookDestination (YAML) sending to this server's protected API with `grant`, its
    /// client secret in the Secret `crm-oauth`; `extra_oauth` adds lines under `oauth2:`.
    pub fn destination(
        &self,
        name: &str,
        namespace: &str,
        grant: &str,
        extra_oauth: &str,
    ) -> String {
        let authorize = if grant == "AuthorizationCode" {
            format!("      authorizeUrl: {}/authorize\n", self.url)
        } else {
            String::new()
        };
        format!(
            r#"apiVersion: hookline.dev/v1alpha1
kind: WebhookDestination
metadata: {{ name: {name}, namespace: {namespace} }}
spec:
  endpoint: {{ url: "{url}/api/events" }}
  auth:
    type: OAuth2
    oauth2:
      grantType: {grant}
      clientId: "{CLIENT_ID}"
      clientSecretRef: {{ name: crm-oauth, key: clientSecret }}
      tokenUrl: {url}/token
{authorize}{extra_oauth}"#,
            url = self.url,
        )
    }
}

/// Polls `pred` until it holds, failing with `what` after a deadline.
pub async fn eventually(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
