//! The guide's resource reference (`docs/src/reference/`), generated from the CRDs' schemas the
//! way `crds/` is, so the descriptions `kubectl explain` shows and the pages never drift apart.

use super::crd::crd_files;
use serde_json::Value;

/// Each reference page as `(file name, markdown)`.
pub fn reference_pages() -> anyhow::Result<Vec<(String, String)>> {
    crd_files()?
        .into_iter()
        .map(|(_, yaml)| {
            let crd: Value = serde_saphyr::from_str(&yaml)?;
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
            Ok((format!("{}.md", kind.to_lowercase()), page(&crd)))
        })
        .collect()
}

fn page(crd: &Value) -> String {
    let names = &crd["spec"]["names"];
    let kind = names["kind"].as_str().unwrap_or_default();
    let version = &crd["spec"]["versions"][0];
    let schema = &version["schema"]["openAPIV3Schema"];
    let mut out = format!(
        "# {kind} reference\n\n<!-- Generated from the CRD by `scripts/crds.sh`; edit the doc comments in `src/api/`, not this page. -->\n\n`apiVersion: {}/{}`, `kind: {kind}` (plural `{}`, short name `{}`, {}).\n\n",
        crd["spec"]["group"].as_str().unwrap_or_default(),
        version["name"].as_str().unwrap_or_default(),
        names["plural"].as_str().unwrap_or_default(),
        names["shortNames"][0].as_str().unwrap_or_default(),
        crd["spec"]["scope"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase(),
    );
    let columns: Vec<String> = version["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("`{}`", c["name"].as_str().unwrap_or_default()))
        .collect();
    out.push_str(&format!(
        "`kubectl get` columns: {}.\n\n",
        columns.join(", ")
    ));
    for part in ["spec", "status"] {
        out.push_str(&format!(
            "## {part}\n\n| field | type | what |\n|---|---|---|\n"
        ));
        let mut rows = Vec::new();
        fields(&schema["properties"][part], part, false, &mut rows);
        out.push_str(&rows.join(""));
        out.push('\n');
    }
    out
}

/// A row per field under `node` (depth first), except inside objects Kubernetes defines
/// (resources, label selectors, conditions), which are named but not unfolded.
fn fields(node: &Value, path: &str, foreign: bool, rows: &mut Vec<String>) {
    let required: Vec<&str> = node["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let Some(props) = node["properties"].as_object() else {
        return;
    };
    for (name, child) in props {
        let p = format!("{path}.{name}");
        let description = child["description"]
            .as_str()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace('|', "\\|")
            .replace('<', "&lt;");
        let mut kind = type_of(child);
        if required.contains(&name.as_str()) {
            kind.push_str(", required");
        }
        if let Some(default) = child.get("default") {
            kind.push_str(&format!(", default `{default}`"));
        }
        rows.push(format!("| `{p}` | {kind} | {description} |\n"));
        let kubernetes_type = matches!(name.as_str(), "resources" | "selector" | "conditions");
        if !foreign && !kubernetes_type {
            fields(child, &p, false, rows);
            if child["type"] == "array" {
                fields(&child["items"], &format!("{p}[]"), false, rows);
            }
        }
    }
}

fn type_of(node: &Value) -> String {
    if let Some(values) = node["enum"].as_array() {
        let values: Vec<String> = values
            .iter()
            .filter_map(Value::as_str)
            .map(|v| format!("`{v}`"))
            .collect();
        return values.join(" ");
    }
    match node["type"].as_str() {
        Some("array") => format!("list of {}", type_of(&node["items"])),
        Some(t) => t.to_string(),
        None if node["x-kubernetes-int-or-string"] == true => "int or string".into(),
        None => "any".into(),
    }
}
