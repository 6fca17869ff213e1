//! The `WebhookDestination` custom resource, exactly as API.md §1 names its fields.
//!
//! Optional fields stay `Option` with no schema defaults: the API server must store the spec as
//! the user wrote it (GitOps tools diff it), so defaults live in the accessor methods below.

use super::kubernetes_formats;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hookline.dev",
    version = "v1alpha1",
    kind = "WebhookDestination",
    plural = "webhookdestinations",
    shortname = "whd",
    namespaced,
    status = "WebhookDestinationStatus",
    printcolumn = r#"{"name":"Enabled","type":"boolean","jsonPath":".spec.enabled"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Auth","type":"string","jsonPath":".status.conditions[?(@.type==\"AuthReady\")].reason"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpoint.url"}"#,
    printcolumn = r#"{"name":"Backlog","type":"integer","jsonPath":".status.backlog"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = kubernetes_formats)]
pub struct WebhookDestinationSpec {
    /// `false`: nothing is delivered and the worker is scaled to zero. Default `true`.
    // The one schema default: the `Enabled` printer column and `kubectl get -o yaml` show it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = true))]
    pub enabled: Option<bool>,
    /// Where events are sent.
    pub endpoint: Endpoint,
    /// How requests authenticate; none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// Segment trigger (FQL) expression; every event matches when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    /// Segment mapping-kit object; `{"@path": "$."}` (the whole event) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_json")]
    pub mapping: Option<serde_json::Value>,
    /// Insert function run on each event after the subscription and before the mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Transform>,
    /// How events are grouped into requests; one event per request when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<Batching>,
    /// Retries and concurrency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    /// Request signatures; unsigned when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<Signing>,
    /// Ingestion: the write key Segment libraries must send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// The worker Deployment the operator runs for this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<Worker>,
}

fn free_form_json(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Segment mapping-kit object (free-form JSON).",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// The http:// or https:// URL events are sent to.
    // The length bound keeps the CEL rule's estimated cost within the API server's budget.
    #[schemars(length(max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^https?://[^/?#]+')",
        "message": "must be an http:// or https:// URL with a host"
    }]))]
    pub url: String,
    /// POST (default), PUT or PATCH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    /// Extra request headers; Content-Type defaults to application/json.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    /// Per-request timeout in seconds. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<u32>,
    /// TLS beyond the public roots: a private CA, a client certificate, another server name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EndpointTls>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointTls {
    /// A PEM bundle of CAs trusted in addition to the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// A kubernetes.io/tls Secret (`tls.crt`, `tls.key`): the client certificate for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_ref: Option<SecretName>,
    /// The name the endpoint's certificate must be valid for, when not the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretName {
    /// Name of a Secret in the destination's namespace.
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Post,
    Put,
    Patch,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.value) != has(self.valueFrom)",
    "message": "set exactly one of value and valueFrom"
}]))]
pub struct Header {
    /// Header name.
    pub name: String,
    /// A literal value; set exactly one of value and valueFrom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueFrom>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueFrom {
    /// A key of a Secret in the destination's namespace.
    pub secret_key_ref: SecretKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Name of a Secret in the resource's own namespace.
    pub name: String,
    /// Key in that Secret.
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type != 'Bearer' || has(self.bearer)", "message": "bearer is required when type is Bearer"},
    {"rule": "self.type != 'OAuth2' || has(self.oauth2)", "message": "oauth2 is required when type is OAuth2"}
]))]
pub struct Auth {
    /// None, Bearer or OAuth2.
    #[serde(rename = "type")]
    pub kind: AuthType,
    /// Required when type is Bearer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<BearerAuth>,
    /// Required when type is OAuth2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum AuthType {
    #[default]
    None,
    Bearer,
    OAuth2,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BearerAuth {
    /// The static token, sent as `Authorization: Bearer <token>`.
    pub token_secret_ref: SecretKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.clientId) != has(self.clientIdSecretRef)", "message": "set exactly one of clientId and clientIdSecretRef"},
    {"rule": "self.grantType != 'AuthorizationCode' || has(self.authorizeUrl)", "message": "authorizeUrl is required when grantType is AuthorizationCode"}
]))]
pub struct OAuth2 {
    /// ClientCredentials or AuthorizationCode (consent with `hookline connect`).
    pub grant_type: GrantType,
    /// The client id; set exactly one of clientId and clientIdSecretRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The client id from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_secret_ref: Option<SecretKeyRef>,
    /// The client secret. Required for ClientCredentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,
    /// Where a person consents. Required for AuthorizationCode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorize_url: Option<String>,
    /// The token endpoint.
    pub token_url: String,
    /// The endpoint for refresh-token grants. Default tokenUrl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_url: Option<String>,
    /// Requested scopes, sent space-joined exactly as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// ClientSecretBasic (default) or ClientSecretPost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth_method: Option<ClientAuthMethod>,
    /// Extra parameters of every token request, e.g. `audience` or `resource`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub token_params: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GrantType {
    ClientCredentials,
    AuthorizationCode,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ClientAuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Transform {
    /// Segment-style handlers (onTrack, onIdentify, …, onBatch), run in QuickJS.
    pub javascript: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Batching {
    /// Events per request; above 1 the body is a JSON array. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub size: Option<u32>,
    /// A batch is sent before its body grows past this many bytes. Default 1048576.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_bytes: Option<u64>,
    /// A partial batch is sent after this many milliseconds. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_millis: Option<u64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delivery {
    /// Attempts before an event is dead-lettered. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_attempts: Option<u32>,
    /// Retrying stops after this many seconds. Default 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry_duration_seconds: Option<u64>,
    /// Requests in flight per worker; 1 (the default) keeps event order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub concurrency: Option<u32>,
    /// At most this many requests per second to the endpoint (per worker pod in the cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Stops sending to an endpoint that keeps failing, holding the queue, and probes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// An endpoint failing (the breaker open) this long is no longer probed: delivery is paused
    /// until a person restarts the worker (see the guide). Unset: probed for ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub disable_after_seconds: Option<u64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Consecutive failed requests (connection errors, timeouts, 408, 5xx) that open the
    /// breaker. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub consecutive_failures: Option<u32>,
    /// The first pause before a probe; it doubles after each failed probe, up to 300 seconds.
    /// Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub probe_interval_seconds: Option<u64>,
    /// An endpoint that has answered nothing but failures (connection errors, timeouts, 408,
    /// 5xx) this long is reported unhealthy (Delivering=False EndpointUnhealthy) even before
    /// consecutiveFailures requests were made; traffic is held only by the breaker. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub unhealthy_after_seconds: Option<u64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second, shared by all of the destination's requests (fractions allowed:
    /// 0.5 is one request every two seconds).
    #[schemars(range(min = 0.001))]
    pub requests_per_second: f64,
    /// Requests that may go out at once after a quiet spell, above the steady rate. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub burst: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Signing {
    /// StandardWebhooks or SegmentHmacSha1 (X-Signature, as Segment).
    pub scheme: SigningScheme,
    /// The signing secret (whsec_… base64 for StandardWebhooks).
    pub secret_ref: SecretKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SigningScheme {
    StandardWebhooks,
    SegmentHmacSha1,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.sourceRef) && has(self.writeKeySecretRef))",
    "message": "set at most one of sourceRef and writeKeySecretRef"
}]))]
pub struct Source {
    /// A write key of this destination alone (a private source); none required when unset.
    /// Another source holding the same key value wins if it is older (WriteKeyConflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_key_secret_ref: Option<SecretKeyRef>,
    /// The WebhookSource whose events this destination reads; the source must admit this
    /// destination's namespace (spec.destinations.namespaces on the source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<SourceRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceRef {
    /// Name of the WebhookSource.
    pub name: String,
    /// Its namespace; the destination's own when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Worker {
    /// Worker pods. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Worker image; the operator's --worker-image when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Worker container resources. Default 100m/64Mi requested, 256Mi limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_formats)]
pub struct WebhookDestinationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_url: Option<String>,
    /// JetStream mode: events waiting for this destination, including those being retried
    /// (refreshed at most every 30 s; above 1,000 stored requests waiting, estimated from the
    /// first 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_test_event: Option<TestEventStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_url: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestEventStatus {
    /// The id `hookline test NAME` asked with (annotation `hookline.dev/test-event`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_millis: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl WebhookDestinationSpec {
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }

    /// Every Secret key the spec refers to, with the field that refers to it.
    pub fn secret_refs(&self) -> Vec<(String, SecretKeyRef)> {
        let mut refs: Vec<(String, &SecretKeyRef)> = Vec::new();
        for (i, h) in self.endpoint.headers.iter().enumerate() {
            if let Some(from) = &h.value_from {
                refs.push((
                    format!("spec.endpoint.headers[{i}].valueFrom.secretKeyRef"),
                    &from.secret_key_ref,
                ));
            }
        }
        let tls = self.endpoint.tls.as_ref();
        if let Some(r) = tls.and_then(|t| t.ca_secret_ref.as_ref()) {
            refs.push(("spec.endpoint.tls.caSecretRef".into(), r));
        }
        if let Some(auth) = &self.auth {
            if let (AuthType::Bearer, Some(b)) = (auth.kind, &auth.bearer) {
                refs.push((
                    "spec.auth.bearer.tokenSecretRef".into(),
                    &b.token_secret_ref,
                ));
            }
            if let (AuthType::OAuth2, Some(o)) = (auth.kind, &auth.oauth2) {
                if let Some(r) = &o.client_id_secret_ref {
                    refs.push(("spec.auth.oauth2.clientIdSecretRef".into(), r));
                }
                if let Some(r) = &o.client_secret_ref {
                    refs.push(("spec.auth.oauth2.clientSecretRef".into(), r));
                }
            }
        }
        if let Some(s) = &self.signing {
            refs.push(("spec.signing.secretRef".into(), &s.secret_ref));
        }
        if let Some(r) = self
            .source
            .as_ref()
            .and_then(|s| s.write_key_secret_ref.as_ref())
        {
            refs.push(("spec.source.writeKeySecretRef".into(), r));
        }
        let mut refs: Vec<(String, SecretKeyRef)> =
            refs.into_iter().map(|(f, r)| (f, r.clone())).collect();
        if let Some(client) = tls.and_then(|t| t.client_cert_secret_ref.as_ref()) {
            for key in ["tls.crt", "tls.key"] {
                refs.push((
                    "spec.endpoint.tls.clientCertSecretRef".into(),
                    SecretKeyRef {
                        name: client.name.clone(),
                        key: key.into(),
                    },
                ));
            }
        }
        refs
    }

    /// Whether it reads a WebhookSource (`spec.source.sourceRef`) rather than a key of its own.
    pub fn names_a_source(&self) -> bool {
        self.source.as_ref().is_some_and(|s| s.source_ref.is_some())
    }

    /// The WebhookSource this destination reads, as `(namespace, name)`; `namespace` is the
    /// destination's own unless the reference names another.
    pub fn source_ref(&self, own_namespace: &str) -> Option<(String, String)> {
        let r = self.source.as_ref()?.source_ref.as_ref()?;
        let namespace = r
            .namespace
            .clone()
            .unwrap_or_else(|| own_namespace.to_string());
        Some((namespace, r.name.clone()))
    }

    pub fn auth_type(&self) -> AuthType {
        self.auth.as_ref().map(|a| a.kind).unwrap_or_default()
    }
}

impl Endpoint {
    pub fn method(&self) -> HttpMethod {
        self.method.unwrap_or_default()
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.timeout_seconds.unwrap_or(10).max(1)))
    }
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
        }
    }
}
