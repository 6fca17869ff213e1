//! Turning manifests into running configuration with no cluster: read `-f` files
//! ([`manifests`]), hold the Secrets they define ([`secrets`]), and resolve each
//! WebhookDestination into a validated, compiled [`destination::Destination`].

pub mod destination;
pub mod manifests;
pub mod secrets;
pub mod sources;
pub mod worker;

use std::path::PathBuf;

/// Bad input, always naming the file and the field (or document) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause is in the message, not a `source`: printed as a chain it would appear twice.
    #[error("{}: cannot read: {error}", file.display())]
    Read {
        file: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: not valid YAML: {message}", file.display())]
    Yaml { file: PathBuf, message: String },
    #[error("{}: document {index}{what}: {message}", file.display())]
    Document {
        file: PathBuf,
        index: usize,
        what: String,
        message: String,
    },
    #[error("{origin}: {field}: {message}")]
    Field {
        origin: String,
        field: String,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

impl ConfigError {
    pub fn field(origin: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Field {
            origin: origin.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}
