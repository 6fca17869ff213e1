//! `hookline crd`: the CustomResourceDefinitions generated from the Rust types (what `crds/`
//! holds, one file each).

use crate::api::{WebhookDestination, WebhookSource};
use kube::CustomResourceExt;

/// Each CRD as YAML with the file name it is committed under in `crds/`.
pub fn crd_files() -> anyhow::Result<Vec<(String, String)>> {
    [WebhookDestination::crd(), WebhookSource::crd()]
        .into_iter()
        .map(|crd| {
            let file = format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default());
            Ok((file, serde_saphyr::to_string(&crd)?))
        })
        .collect()
}

pub fn crd() -> anyhow::Result<i32> {
    let docs: Vec<String> = crd_files()?.into_iter().map(|(_, yaml)| yaml).collect();
    print!("{}", docs.join("---\n"));
    Ok(0)
}
