//! Secret values by namespace, name and key, as `kubectl apply -f` would have created them.

use crate::api::SecretKeyRef;
use std::collections::HashMap;

#[derive(Debug, Default, Clone)]
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

impl SecretStore {
    pub fn insert(&mut self, namespace: &str, name: &str, data: HashMap<String, Vec<u8>>) {
        self.secrets
            .entry((namespace.to_string(), name.to_string()))
            .or_default()
            .extend(data);
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
