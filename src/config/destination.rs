//! A WebhookDestination resolved against its Secrets and validated: everything the data path
//! needs, compiled once (subscription parsed, mapping validated, secrets read).

use super::ConfigError;
use super::manifests::LoadedDestination;
use super::secrets::SecretStore;
use crate::api::{AuthType, GrantType, OAuth2, SigningScheme};
use crate::jetstream::names::{DestinationNames, KeyDigest};
use crate::oauth::store::from_fields;
use crate::oauth::{OAuthSettings, TokenSet};
use crate::pipeline::batch::BatchPolicy;
use crate::pipeline::deliver::breaker::{BreakerPolicy, MAX_PROBE_PAUSE};
use crate::pipeline::deliver::pace::RateLimitPolicy;
use crate::pipeline::deliver::request::{FixedHeaders, HeaderEntry, RequestTemplate};
use crate::pipeline::deliver::retry::RetryPolicy;
use crate::pipeline::deliver::signing::Signer;
use crate::pipeline::deliver::tls::TlsSettings;
use crate::pipeline::mapping::Mapping;
use crate::pipeline::reads::Reads;
use crate::pipeline::source::{RouteSpec, SourceRoute};
use crate::pipeline::subscription::Subscription;
use crate::pipeline::transform::InsertFunction;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A destination whose credentials may be swapped while it runs (rotated Secrets, new tokens).
pub type LiveDestination = watch::Receiver<Arc<Destination>>;

/// A destination that never changes, for `hookline run`.
pub fn fixed(dest: Destination) -> LiveDestination {
    watch::channel(Arc::new(dest)).1
}

/// `spec.delivery.concurrency` when it is not set.
pub const DEFAULT_CONCURRENCY: usize = 1;

#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    pub namespace: String,
    pub enabled: bool,
    pub subscription: Subscription,
    pub transform: Option<InsertFunction>,
    /// What an insert function gets as `settings`: the destination's non-secret settings.
    pub settings: serde_json::Value,
    pub mapping: Mapping,
    /// The fields of an event that the subscription, the mapping or the insert function read.
    pub reads: Reads,
    /// Shared, so a delivery in flight keeps the template it started with while a reload swaps it.
    pub request: Arc<RequestTemplate>,
    pub batching: BatchPolicy,
    pub retry: RetryPolicy,
    pub concurrency: usize,
    pub rate_limit: Option<RateLimitPolicy>,
    pub breaker: BreakerPolicy,
    /// The source whose events it reads: its private write key's, or the WebhookSource its
    /// `sourceRef` names once bound ([`Destination::reading`]); none: it takes requests with
    /// or without a key.
    pub source: Option<Arc<SourceRoute>>,
    pub oauth: Option<OAuth>,
}

/// How a destination gets its OAuth 2.0 tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuth {
    pub settings: OAuthSettings,
    pub seed: Option<TokenSet>,
}

/// The part of a destination that needs no Secret: checked when a resource is applied, before
/// its Secrets are even looked at.
#[derive(Debug, Clone)]
pub struct CompiledSpec {
    pub url: reqwest::Url,
    /// `url` as hyper takes it.
    pub uri: http::Uri,
    pub subscription: Subscription,
    pub mapping: Mapping,
    pub transform: Option<InsertFunction>,
    pub batching: BatchPolicy,
    pub retry: RetryPolicy,
    pub concurrency: usize,
    pub rate_limit: Option<RateLimitPolicy>,
    pub breaker: BreakerPolicy,
}

/// The part that comes from Secrets: what a rotation changes.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The endpoint's headers, with a static bearer token.
    pub headers: Arc<FixedHeaders>,
    pub tls: Option<Arc<TlsSettings>>,
    pub signer: Option<Signer>,
    pub write_key: Option<String>,
    pub oauth: Option<OAuth>,
}

impl Destination {
    pub fn resolve(
        loaded: &LoadedDestination,
        secrets: &SecretStore,
    ) -> Result<Destination, ConfigError> {
        let compiled = CompiledSpec::compile(loaded)?;
        let credentials = Credentials::resolve(loaded, secrets)?;
        let spec = &loaded.resource.spec;
        let reads = Reads::of(
            &compiled.subscription,
            &compiled.mapping,
            compiled.transform.is_some(),
        );
        Ok(Destination {
            name: loaded.name().to_string(),
            namespace: loaded.namespace().to_string(),
            enabled: spec.is_enabled(),
            transform: compiled.transform,
            settings: settings(loaded),
            reads,
            subscription: compiled.subscription,
            mapping: compiled.mapping,
            request: Arc::new(RequestTemplate {
                method: spec.endpoint.method(),
                url: compiled.url,
                uri: compiled.uri,
                headers: credentials.headers,
                signer: credentials.signer,
                timeout: spec.endpoint.timeout(),
                tls: credentials.tls,
            }),
            batching: compiled.batching,
            retry: compiled.retry,
            concurrency: compiled.concurrency,
            rate_limit: compiled.rate_limit,
            breaker: compiled.breaker,
            source: credentials.write_key.map(|key| {
                let names = DestinationNames::new(loaded.namespace(), loaded.name());
                SourceRoute::new(RouteSpec::private(
                    &names,
                    &KeyDigest::of(&key),
                    String::new(),
                ))
            }),
            oauth: credentials.oauth,
        })
    }

    /// The destination reading `source` (the WebhookSource its `sourceRef` names).
    pub fn reading(self, source: Arc<SourceRoute>) -> Destination {
        Destination {
            source: Some(source),
            ..self
        }
    }

    pub fn names(&self) -> DestinationNames {
        DestinationNames::new(&self.namespace, &self.name)
    }
}

impl CompiledSpec {
    pub fn compile(loaded: &LoadedDestination) -> Result<CompiledSpec, ConfigError> {
        let origin = loaded.origin.as_str();
        let spec = &loaded.resource.spec;
        let bad = |field: &str, message: String| ConfigError::field(origin, field, message);

        let url = reqwest::Url::parse(&spec.endpoint.url).map_err(|e| {
            bad(
                "spec.endpoint.url",
                format!("{:?} is not a valid URL: {e}", spec.endpoint.url),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad(
                "spec.endpoint.url",
                format!(
                    "{:?} must be an http:// or https:// URL with a host",
                    spec.endpoint.url
                ),
            ));
        }
        let uri = url.as_str().parse::<http::Uri>().map_err(|e| {
            bad(
                "spec.endpoint.url",
                format!("{:?} cannot be sent to: {e}", spec.endpoint.url),
            )
        })?;
        for (i, h) in spec.endpoint.headers.iter().enumerate() {
            let field = format!("spec.endpoint.headers[{i}]");
            reqwest::header::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                bad(
                    &format!("{field}.name"),
                    format!("{:?} is not a valid HTTP header name", h.name),
                )
            })?;
            if h.value.is_some() == h.value_from.is_some() {
                return Err(bad(&field, "set exactly one of value and valueFrom".into()));
            }
        }
        let auth = spec.auth.clone().unwrap_or_default();
        match auth.kind {
            AuthType::None => {}
            AuthType::Bearer if auth.bearer.is_none() => {
                return Err(bad(
                    "spec.auth.bearer",
                    "required when spec.auth.type is Bearer".into(),
                ));
            }
            AuthType::Bearer => {}
            AuthType::OAuth2 => check_oauth2(auth.oauth2.as_ref(), &bad)?,
        }

        let subscription = match spec.subscription.as_deref().map(str::trim) {
            None | Some("") => Subscription::all(),
            Some(text) => {
                Subscription::parse(text).map_err(|e| bad("spec.subscription", e.to_string()))?
            }
        };
        let mapping = Mapping::compile(spec.mapping.as_ref())
            .map_err(|e| bad("spec.mapping", e.to_string()))?;
        let transform = match &spec.transform {
            None => None,
            Some(t) => Some(
                InsertFunction::compile(&t.javascript, loaded.name())
                    .map_err(|e| bad("spec.transform.javascript", e.message))?,
            ),
        };

        let b = spec.batching.clone().unwrap_or_default();
        let defaults = BatchPolicy::default();
        let batching = BatchPolicy {
            size: positive(b.size.map(u64::from), "spec.batching.size", origin)?
                .map_or(defaults.size, |v| v as usize),
            max_bytes: positive(b.max_bytes, "spec.batching.maxBytes", origin)?
                .map_or(defaults.max_bytes, |v| v as usize),
            max_wait: b
                .max_wait_millis
                .map_or(defaults.max_wait, Duration::from_millis),
        };
        let d = spec.delivery.clone().unwrap_or_default();
        let retry_defaults = RetryPolicy::default();
        let retry = RetryPolicy {
            max_attempts: positive(
                d.max_attempts.map(u64::from),
                "spec.delivery.maxAttempts",
                origin,
            )?
            .map_or(retry_defaults.max_attempts, |v| v as u32),
            max_duration: d
                .max_retry_duration_seconds
                .map_or(retry_defaults.max_duration, Duration::from_secs),
            ..retry_defaults
        };
        let concurrency = positive(
            d.concurrency.map(u64::from),
            "spec.delivery.concurrency",
            origin,
        )?
        .map_or(DEFAULT_CONCURRENCY, |v| v as usize);
        let rate_limit = match &d.rate_limit {
            None => None,
            Some(r) if !(r.requests_per_second.is_finite() && r.requests_per_second > 0.0) => {
                return Err(bad(
                    "spec.delivery.rateLimit.requestsPerSecond",
                    format!("must be a number above 0, not {}", r.requests_per_second),
                ));
            }
            Some(r) => Some(RateLimitPolicy {
                per_second: r.requests_per_second,
                burst: positive(
                    r.burst.map(u64::from),
                    "spec.delivery.rateLimit.burst",
                    origin,
                )?
                .map_or(1, |b| b as u32),
            }),
        };
        let breaker_defaults = BreakerPolicy::default();
        let breaker = d.circuit_breaker.clone().unwrap_or_default();
        let breaker = BreakerPolicy {
            consecutive_failures: positive(
                breaker.consecutive_failures.map(u64::from),
                "spec.delivery.circuitBreaker.consecutiveFailures",
                origin,
            )?
            .map_or(breaker_defaults.consecutive_failures, |v| v as u32),
            first_pause: match breaker.probe_interval_seconds {
                Some(s) if !(1..=MAX_PROBE_PAUSE.as_secs()).contains(&s) => {
                    return Err(bad(
                        "spec.delivery.circuitBreaker.probeIntervalSeconds",
                        format!(
                            "must be between 1 and {}, not {s}",
                            MAX_PROBE_PAUSE.as_secs()
                        ),
                    ));
                }
                other => other.map_or(breaker_defaults.first_pause, Duration::from_secs),
            },
            unhealthy_after: positive(
                breaker.unhealthy_after_seconds,
                "spec.delivery.circuitBreaker.unhealthyAfterSeconds",
                origin,
            )?
            .map_or(breaker_defaults.unhealthy_after, Duration::from_secs),
            disable_after: positive(
                d.disable_after_seconds,
                "spec.delivery.disableAfterSeconds",
                origin,
            )?
            .map(Duration::from_secs),
        };
        Ok(CompiledSpec {
            url,
            uri,
            subscription,
            mapping,
            transform,
            batching,
            retry,
            concurrency,
            rate_limit,
            breaker,
        })
    }
}

impl Credentials {
    /// Reads every Secret the spec refers to; assumes [`CompiledSpec::compile`] accepted it.
    pub fn resolve(
        loaded: &LoadedDestination,
        secrets: &SecretStore,
    ) -> Result<Credentials, ConfigError> {
        let origin = loaded.origin.as_str();
        let namespace = loaded.namespace();
        let spec = &loaded.resource.spec;
        let bad = |field: &str, message: String| ConfigError::field(origin, field, message);
        let secret = |field: &str, r: &crate::api::SecretKeyRef| {
            secrets.get_text(namespace, r).map_err(|e| {
                bad(field, format!("{e} (pass a Secret manifest with -f, or create it with kubectl create secret generic {} --from-literal={}=...)", r.name, r.key))
            })
        };

        let mut headers = Vec::new();
        for (i, h) in spec.endpoint.headers.iter().enumerate() {
            let field = format!("spec.endpoint.headers[{i}]");
            let (value, is_secret) = match (&h.value, &h.value_from) {
                (Some(v), _) => (v.clone(), false),
                (None, Some(from)) => (
                    secret(
                        &format!("{field}.valueFrom.secretKeyRef"),
                        &from.secret_key_ref,
                    )?,
                    true,
                ),
                (None, None) => {
                    return Err(bad(&field, "set exactly one of value and valueFrom".into()));
                }
            };
            reqwest::header::HeaderValue::from_str(&value)
                .map_err(|_| bad(&field, "the value is not a valid HTTP header value".into()))?;
            headers.push(HeaderEntry {
                name: h.name.clone(),
                value,
                secret: is_secret,
            });
        }

        let tls = match &spec.endpoint.tls {
            None => None,
            Some(t) => {
                let field = "spec.endpoint.tls.clientCertSecretRef";
                let key_of = |name: &str, key: &str| crate::api::SecretKeyRef {
                    name: name.into(),
                    key: key.into(),
                };
                let client_pem = match &t.client_cert_secret_ref {
                    None => None,
                    Some(c) => Some((
                        secret(field, &key_of(&c.name, "tls.crt"))?,
                        secret(field, &key_of(&c.name, "tls.key"))?,
                    )),
                };
                let settings = TlsSettings {
                    ca_pem: match &t.ca_secret_ref {
                        None => None,
                        Some(r) => Some(secret("spec.endpoint.tls.caSecretRef", r)?),
                    },
                    client_pem,
                    server_name: t.server_name.clone(),
                };
                settings
                    .validate()
                    .map_err(|e| bad(e.field(), e.to_string()))?;
                Some(Arc::new(settings))
            }
        };

        let bearer_token = match spec.auth.as_ref() {
            Some(a) if a.kind == AuthType::Bearer => match &a.bearer {
                Some(b) => Some(secret(
                    "spec.auth.bearer.tokenSecretRef",
                    &b.token_secret_ref,
                )?),
                None => None,
            },
            _ => None,
        };

        if let Some(token) = &bearer_token {
            reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                bad(
                    "spec.auth.bearer.tokenSecretRef",
                    "the token is not a valid HTTP header value (a line break or another control character?)".into(),
                )
            })?;
        }
        let headers = FixedHeaders::new(headers, bearer_token.as_deref())
            .map_err(|e| bad("spec.endpoint.headers", e.to_string()))?;
        let headers = Arc::new(headers);

        let signer = match &spec.signing {
            None => None,
            Some(s) => {
                let key = secret("spec.signing.secretRef", &s.secret_ref)?;
                Some(match s.scheme {
                    SigningScheme::StandardWebhooks => Signer::standard_webhooks(&key)
                        .map_err(|e| bad("spec.signing.secretRef", e))?,
                    SigningScheme::SegmentHmacSha1 => Signer::SegmentHmacSha1 {
                        key: key.into_bytes(),
                    },
                })
            }
        };

        let write_key = match spec
            .source
            .as_ref()
            .and_then(|s| s.write_key_secret_ref.as_ref())
        {
            Some(r) => Some(secret("spec.source.writeKeySecretRef", r)?),
            None => None,
        };
        let oauth = match spec.auth.as_ref() {
            Some(a) if a.kind == AuthType::OAuth2 => match &a.oauth2 {
                Some(o) => Some(resolve_oauth2(loaded, o, secrets, &secret)?),
                None => None,
            },
            _ => None,
        };
        Ok(Credentials {
            headers,
            tls,
            signer,
            write_key,
            oauth,
        })
    }
}

/// Name, namespace and endpoint without anything read from a Secret.
fn settings(loaded: &LoadedDestination) -> serde_json::Value {
    let endpoint = &loaded.resource.spec.endpoint;
    let headers: serde_json::Map<String, serde_json::Value> = endpoint
        .headers
        .iter()
        .filter_map(|h| Some((h.name.clone(), h.value.clone()?.into())))
        .collect();
    serde_json::json!({
        "destination": loaded.name(),
        "namespace": loaded.namespace(),
        "url": endpoint.url,
        "method": endpoint.method().as_str(),
        "headers": headers,
    })
}

fn check_oauth2(
    oauth2: Option<&OAuth2>,
    bad: &impl Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let Some(o) = oauth2 else {
        return Err(bad(
            "spec.auth.oauth2",
            "required when spec.auth.type is OAuth2".into(),
        ));
    };
    http_url(&o.token_url, "spec.auth.oauth2.tokenUrl", bad)?;
    if let Some(u) = &o.refresh_token_url {
        http_url(u, "spec.auth.oauth2.refreshTokenUrl", bad)?;
    }
    match (&o.authorize_url, o.grant_type) {
        (Some(u), _) => {
            http_url(u, "spec.auth.oauth2.authorizeUrl", bad)?;
        }
        (None, GrantType::AuthorizationCode) => {
            return Err(bad(
                "spec.auth.oauth2.authorizeUrl",
                "required when grantType is AuthorizationCode".into(),
            ));
        }
        (None, GrantType::ClientCredentials) => {}
    }
    if o.client_id.is_some() == o.client_id_secret_ref.is_some() {
        return Err(bad(
            "spec.auth.oauth2",
            "set exactly one of clientId and clientIdSecretRef".into(),
        ));
    }
    if o.grant_type == GrantType::ClientCredentials && o.client_secret_ref.is_none() {
        return Err(bad(
            "spec.auth.oauth2.clientSecretRef",
            "required when grantType is ClientCredentials".into(),
        ));
    }
    Ok(())
}

fn http_url(
    text: &str,
    field: &str,
    bad: &impl Fn(&str, String) -> ConfigError,
) -> Result<reqwest::Url, ConfigError> {
    match reqwest::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(u),
        Ok(_) => Err(bad(
            field,
            format!("{text:?} must be an http:// or https:// URL with a host"),
        )),
        Err(e) => Err(bad(field, format!("{text:?} is not a valid URL: {e}"))),
    }
}

/// The OAuth settings with client credentials read, and a token seeded by hand in the
/// `<name>-oauth-token` Secret, if any.
fn resolve_oauth2(
    loaded: &LoadedDestination,
    o: &OAuth2,
    secrets: &SecretStore,
    secret: &impl Fn(&str, &crate::api::SecretKeyRef) -> Result<String, ConfigError>,
) -> Result<OAuth, ConfigError> {
    let bad = |field: &str, message: String| ConfigError::field(&loaded.origin, field, message);
    let client_id = match (&o.client_id, &o.client_id_secret_ref) {
        (Some(id), _) => id.clone(),
        (None, Some(r)) => secret("spec.auth.oauth2.clientIdSecretRef", r)?,
        (None, None) => {
            return Err(bad(
                "spec.auth.oauth2",
                "set exactly one of clientId and clientIdSecretRef".into(),
            ));
        }
    };
    let client_secret = match &o.client_secret_ref {
        Some(r) => Some(secret("spec.auth.oauth2.clientSecretRef", r)?),
        None => None,
    };
    let url = |text: &str, field: &str| http_url(text, field, &bad);
    let settings = OAuthSettings {
        grant: o.grant_type,
        client_id,
        client_secret,
        authorize_url: o
            .authorize_url
            .as_deref()
            .map(|u| url(u, "spec.auth.oauth2.authorizeUrl"))
            .transpose()?,
        token_url: url(&o.token_url, "spec.auth.oauth2.tokenUrl")?,
        refresh_token_url: o
            .refresh_token_url
            .as_deref()
            .map(|u| url(u, "spec.auth.oauth2.refreshTokenUrl"))
            .transpose()?,
        scopes: o.scopes.clone(),
        auth_method: o.client_auth_method,
        token_params: o.token_params.clone(),
    };
    let seed_name = token_secret_name(loaded.name());
    let seed = match secrets.secret(loaded.namespace(), &seed_name) {
        None => None,
        Some(data) => from_fields(
            |k| data.get(k).map(|v| String::from_utf8_lossy(v).into_owned()),
            &format!("Secret {seed_name}"),
        )
        .map_err(|e| bad("spec.auth.oauth2", e.to_string()))?,
    };
    Ok(OAuth { settings, seed })
}

/// The Secret that holds a destination's OAuth tokens (API.md §5).
pub fn token_secret_name(destination: &str) -> String {
    format!("{destination}-oauth-token")
}

fn positive(v: Option<u64>, field: &str, origin: &str) -> Result<Option<u64>, ConfigError> {
    match v {
        Some(0) => Err(ConfigError::field(origin, field, "must be at least 1")),
        other => Ok(other),
    }
}
