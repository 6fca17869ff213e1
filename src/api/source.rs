//! The `WebhookSource` custom resource (API.md §9): where events come from — the write key
//! Segment libraries send, which browser origins may send it, how fast, and which namespaces'
//! destinations may read what arrives with it.

use super::destination::SecretKeyRef;
use super::kubernetes_formats;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "hookline.dev",
    version = "v1alpha1",
    kind = "WebhookSource",
    plural = "webhooksources",
    shortname = "whs",
    namespaced,
    status = "WebhookSourceStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Destinations","type":"integer","jsonPath":".status.destinations"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = kubernetes_formats)]
pub struct WebhookSourceSpec {
    /// The write key Segment libraries send (HTTP Basic username, or writeKey in the body).
    /// Unset: the operator generates a random key into the Secret <name>-write-key (key
    /// writeKey), owned by this source. A key value belongs to one source in the cluster: the
    /// oldest holding it wins, the others get Accepted=False WriteKeyConflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_key_secret_ref: Option<SecretKeyRef>,
    /// Web page origins (scheme://host[:port]) browsers may send from (CORS); absent or empty:
    /// any origin. A request from another origin is refused with 403 and nothing is stored.
    /// `null` is the origin of a page opened from a file; `*` allows any.
    // The bounds keep the CEL rule's estimated cost within the API server's budget.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(max = 253)))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(o, o == '*' || o == 'null' || o.matches('^https?://[^/?#]+$'))",
        "message": "each origin must be scheme://host[:port] (no path), null, or *"
    }]))]
    pub allowed_origins: Vec<String>,
    /// At most this many ingestion requests per second with this key, per ingesting process
    /// (each gateway replica); over it: 429 with Retry-After. Unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<SourceRateLimit>,
    /// Which destinations may read this source's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<SourceDestinations>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceRateLimit {
    /// Requests per second (fractions allowed).
    // Mirrors the value 1e-3 that the destination's rate limit takes.
    #[schemars(range(min = 0.001))]
    pub requests_per_second: f64,
    /// Requests that may arrive at once above the steady rate. Default: requestsPerSecond,
    /// rounded up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub burst: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceDestinations {
    /// The namespaces whose WebhookDestinations may name this source in spec.source.sourceRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<AllowedNamespaces>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.from) && self.from == 'Selector') == has(self.selector)",
    "message": "selector is required with from: Selector, and only then"
}]))]
pub struct AllowedNamespaces {
    /// Same (the source's own namespace, the default), All, or Selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<NamespacesFrom>,
    /// With from: Selector, the labels a namespace must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum NamespacesFrom {
    #[default]
    Same,
    All,
    Selector,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_formats)]
pub struct WebhookSourceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted (False: WriteKeyConflict, SecretMissing, Invalid) and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The Secret holding the write key (the one named, or the generated one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_key_secret_name: Option<String>,
    /// Where Segment libraries send this source's events (the gateway, in JetStream mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_url: Option<String>,
    /// Destinations reading this source now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<u32>,
}

impl WebhookSourceSpec {
    /// Who may read the source: `Same` when unset.
    pub fn allowed_namespaces(&self) -> (NamespacesFrom, Option<&LabelSelector>) {
        let allowed = self
            .destinations
            .as_ref()
            .and_then(|d| d.namespaces.as_ref());
        (
            allowed.and_then(|a| a.from).unwrap_or_default(),
            allowed.and_then(|a| a.selector.as_ref()),
        )
    }
}

/// The Secret a source without `writeKeySecretRef` gets its generated key in.
pub fn generated_key_secret(source_name: &str) -> String {
    format!("{source_name}-write-key")
}

/// The key of that Secret.
pub const GENERATED_KEY: &str = "writeKey";
