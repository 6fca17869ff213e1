//! The custom resources, exactly as API.md names their fields: `WebhookDestination` (§1) and
//! `WebhookSource` (§9).
//!
//! Optional fields stay `Option` with no schema defaults (but `spec.enabled`, which a printer
//! column shows): the API server stores the spec as the user wrote it (GitOps tools diff it),
//! so defaults live in the accessor methods.

mod destination;
mod source;

pub use destination::*;
pub use source::*;

/// schemars writes `uint16`/`uint32`/`uint64` for unsigned fields, formats a real API server warns
/// about on every apply; these become the signed formats Kubernetes knows, wide enough for the
/// value (`minimum: 0` stays).
fn kubernetes_formats(schema: &mut schemars::Schema) {
    let format = match schema.get("format").and_then(serde_json::Value::as_str) {
        Some("uint8" | "uint16" | "int8" | "int16") => Some("int32"),
        Some("uint32" | "uint64" | "uint") => Some("int64"),
        _ => None,
    };
    if let Some(format) = format {
        schema.insert("format".into(), format.into());
    }
    schemars::transform::transform_subschemas(&mut kubernetes_formats, schema);
}
