//! Secret values by namespace, name and key, as `kubectl apply -f` would have created them.

use crate::api::SecretKeyRef;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct SecretStore {
    secrets: HashMap<(String, String), HashMap<String, Vec<u8>>>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SecretError {
    #[error("Secret {namespace}/{name} not found")]
    MissingSecret { namespace: String, name: String },
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    MissingKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("Secret {namespace}/{name} key {key:?} is not UTF-8 text")]
    NotText {
        namespace: String,
        name: String,
        key: String,
    },
}

/// A Secret's keys and values as the API server stores them: `stringData` folded into `data`,
/// winning over it (a manifest or an object that skipped the API server may have both).
pub fn secret_data(secret: &k8s_openapi::api::core::v1::Secret) -> HashMap<String, Vec<u8>> {
    let mut data: HashMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    data
}

impl SecretStore {
    /// Secrets mounted as volumes, as a worker pod sees them: `dir/<secret name>/<key>`. The
    /// kubelet's own entries (`..data`, `..2026_…`) are skipped; a missing `dir` holds nothing.
    pub fn from_dir(dir: &Path, namespace: &str) -> std::io::Result<SecretStore> {
        let mut store = SecretStore::default();
        let secrets = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(store),
            Err(e) => return Err(e),
        };
        for secret in secrets {
            let secret = secret?;
            let name = secret.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !secret.path().is_dir() {
                continue;
            }
            let mut data = HashMap::new();
            for key in std::fs::read_dir(secret.path())? {
                let key = key?;
                let key_name = key.file_name().to_string_lossy().into_owned();
                // `is_file` follows the kubelet's symlinks to the current version.
                if key_name.starts_with("..") || !key.path().is_file() {
                    continue;
                }
                data.insert(key_name, std::fs::read(key.path())?);
            }
            store.insert(namespace, &name, data);
        }
        Ok(store)
    }

    pub fn insert(&mut self, namespace: &str, name: &str, data: HashMap<String, Vec<u8>>) {
        self.secrets
            .entry((namespace.to_string(), name.to_string()))
            .or_default()
            .extend(data);
    }

    /// Every key of one Secret, if it exists.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<&HashMap<String, Vec<u8>>> {
        self.secrets.get(&(namespace.to_string(), name.to_string()))
    }

    pub fn get(&self, namespace: &str, r: &SecretKeyRef) -> Result<&[u8], SecretError> {
        let secret = self
            .secrets
            .get(&(namespace.to_string(), r.name.clone()))
            .ok_or_else(|| SecretError::MissingSecret {
                namespace: namespace.to_string(),
                name: r.name.clone(),
            })?;
        secret
            .get(&r.key)
            .map(Vec::as_slice)
            .ok_or_else(|| SecretError::MissingKey {
                namespace: namespace.to_string(),
                name: r.name.clone(),
                key: r.key.clone(),
            })
    }

    /// A secret value as text, with surrounding whitespace (a trailing newline from `echo`) removed.
    pub fn get_text(&self, namespace: &str, r: &SecretKeyRef) -> Result<String, SecretError> {
        let bytes = self.get(namespace, r)?;
        let text = std::str::from_utf8(bytes).map_err(|_| SecretError::NotText {
            namespace: namespace.to_string(),
            name: r.name.clone(),
            key: r.key.clone(),
        })?;
        Ok(text.trim().to_string())
    }
}
