//! Reading `-f` files: multi-document YAML (or JSON) holding WebhookDestinations,
//! WebhookSources, Secrets and Namespaces (for their labels).

use super::ConfigError;
use super::secrets::SecretStore;
use crate::api::{WebhookDestination, WebhookSource};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const DEFAULT_NAMESPACE: &str = "default";

/// A resource and where it came from, so later errors can name the file.
#[derive(Debug, Clone)]
pub struct Loaded<K> {
    pub resource: K,
    pub origin: String,
}

pub type LoadedDestination = Loaded<WebhookDestination>;
pub type LoadedSource = Loaded<WebhookSource>;

impl<K: kube::Resource> Loaded<K> {
    pub fn name(&self) -> &str {
        self.resource.meta().name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> &str {
        self.resource
            .meta()
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE)
    }
}

impl LoadedDestination {
    /// A resource from the cluster (or a worker's config), named as `WebhookDestination ns/name`
    /// in errors.
    pub fn from_resource(resource: WebhookDestination) -> LoadedDestination {
        let mut loaded = Loaded {
            resource,
            origin: String::new(),
        };
        loaded.origin = format!(
            "WebhookDestination {}/{}",
            loaded.namespace(),
            loaded.name()
        );
        loaded
    }
}

#[derive(Debug, Default)]
pub struct Manifests {
    pub destinations: Vec<LoadedDestination>,
    pub sources: Vec<LoadedSource>,
    pub secrets: SecretStore,
    /// The labels of each Namespace document (a source's `Selector` admits by them).
    pub namespaces: HashMap<String, BTreeMap<String, String>>,
}

const KINDS: &str = "WebhookDestination, WebhookSource, Secret or Namespace";

impl Manifests {
    pub fn load(files: &[PathBuf]) -> Result<Self, ConfigError> {
        let mut out = Manifests::default();
        for file in files {
            out.load_file(file)?;
        }
        let mut seen = HashMap::new();
        for d in &out.destinations {
            if let Some(first) = seen.insert(d.name().to_string(), d.origin.clone()) {
                return Err(ConfigError::Other(format!(
                    "{}: WebhookDestination {:?} is also defined in {first}; destination names must be unique",
                    d.origin,
                    d.name()
                )));
            }
        }
        let mut seen = HashMap::new();
        for s in &out.sources {
            let key = (s.namespace().to_string(), s.name().to_string());
            if let Some(first) = seen.insert(key, s.origin.clone()) {
                return Err(ConfigError::Other(format!(
                    "{}: WebhookSource {}/{} is also defined in {first}",
                    s.origin,
                    s.namespace(),
                    s.name()
                )));
            }
        }
        Ok(out)
    }

    fn load_file(&mut self, file: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|error| ConfigError::Read {
            file: file.to_path_buf(),
            error,
        })?;
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| ConfigError::Yaml {
                file: file.to_path_buf(),
                message: e.to_string(),
            })?;
        for (i, doc) in docs.into_iter().enumerate().filter(|(_, d)| !d.is_null()) {
            let index = i + 1;
            let doc_err = |what: String, message: String| ConfigError::Document {
                file: file.to_path_buf(),
                index,
                what,
                message,
            };
            let kind = doc
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let name = doc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let what = format!(" ({kind} {name:?})");
            let hookline_kind = matches!(kind.as_str(), "WebhookDestination" | "WebhookSource");
            if hookline_kind {
                let api_version = doc
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if api_version != "hookline.dev/v1alpha1" {
                    return Err(doc_err(
                        what,
                        format!("apiVersion must be hookline.dev/v1alpha1, not {api_version:?}"),
                    ));
                }
                if name.is_empty() {
                    return Err(doc_err(what, "metadata.name is required".into()));
                }
            }
            match kind.as_str() {
                "WebhookDestination" => {
                    let resource: WebhookDestination = serde_path_to_error::deserialize(doc)
                        .map_err(|e| doc_err(what.clone(), describe(&e)))?;
                    let origin = format!("{}: WebhookDestination {name:?}", file.display());
                    self.destinations.push(Loaded { resource, origin });
                }
                "WebhookSource" => {
                    let resource: WebhookSource = serde_path_to_error::deserialize(doc)
                        .map_err(|e| doc_err(what.clone(), describe(&e)))?;
                    let origin = format!("{}: WebhookSource {name:?}", file.display());
                    self.sources.push(Loaded { resource, origin });
                }
                "Namespace" => {
                    let namespace: Namespace = serde_path_to_error::deserialize(doc)
                        .map_err(|e| doc_err(what.clone(), describe(&e)))?;
                    self.namespaces
                        .insert(name, namespace.metadata.labels.unwrap_or_default());
                }
                "Secret" => {
                    let secret: Secret = serde_path_to_error::deserialize(doc)
                        .map_err(|e| doc_err(what.clone(), describe(&e)))?;
                    let namespace = secret
                        .metadata
                        .namespace
                        .as_deref()
                        .unwrap_or(DEFAULT_NAMESPACE);
                    let data = super::secrets::secret_data(&secret);
                    self.secrets.insert(namespace, &name, data);
                }
                "" => {
                    return Err(doc_err(
                        String::new(),
                        format!("has no `kind` (expected {KINDS})"),
                    ));
                }
                other => {
                    return Err(doc_err(
                        what,
                        format!("kind {other:?} is not supported here (expected {KINDS})"),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn describe<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>) -> String {
    let path = e.path().to_string();
    if path == "." {
        e.inner().to_string()
    } else {
        format!("{path}: {}", e.inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Manifests, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.yaml");
        std::fs::write(&file, yaml).unwrap();
        Manifests::load(&[file])
    }

    #[test]
    fn unknown_field_names_the_path() {
        let err = load(
            "apiVersion: hookline.dev/v1alpha1\nkind: WebhookDestination\nmetadata: {name: a}\nspec:\n  endpoint: {url: 'http://x', methd: POST}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("m.yaml: document 1 (WebhookDestination \"a\")"),
            "{err}"
        );
        assert!(
            err.contains("spec.endpoint") && err.contains("methd"),
            "{err}"
        );
    }

    #[test]
    fn secrets_from_data_and_string_data() {
        let m = load("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: aGVsbG8=}\nstringData: {b: world}\n---\n").unwrap();
        let r = |key: &str| crate::api::SecretKeyRef {
            name: "s".into(),
            key: key.into(),
        };
        assert_eq!(m.secrets.get_text("default", &r("a")).unwrap(), "hello");
        assert_eq!(m.secrets.get_text("default", &r("b")).unwrap(), "world");
        assert!(m.secrets.get_text("other", &r("a")).is_err());
    }
}
