//! `hookline crd`: the CustomResourceDefinition generated from the Rust types (what `crds/` holds).

use crate::api::WebhookDestination;
use kube::CustomResourceExt;

/// The CRD as YAML, exactly as committed under `crds/`.
pub fn crd_yaml() -> anyhow::Result<String> {
    Ok(serde_saphyr::to_string(&WebhookDestination::crd())?)
}

pub fn crd() -> anyhow::Result<i32> {
    print!("{}", crd_yaml()?);
    Ok(0)
}
