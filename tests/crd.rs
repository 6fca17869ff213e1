//! The committed CRD is what the types generate, it is a structural schema a real API server
//! accepts, its CEL rules are in place, and the examples are valid resources.

use serde_json::Value;
use std::path::PathBuf;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

const DESTINATIONS: &str = "webhookdestinations.hookline.dev.yaml";
const SOURCES: &str = "webhooksources.hookline.dev.yaml";

fn committed(file: &str) -> Value {
    let text = std::fs::read_to_string(repo(&format!("crds/{file}"))).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn committed_crd() -> Value {
    committed(DESTINATIONS)
}

#[test]
fn committed_crds_are_what_the_types_generate() {
    let generated = hookline::cli::crd::crd_files().unwrap();
    let names: Vec<&str> = generated.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(names, [DESTINATIONS, SOURCES]);
    for (file, yaml) in generated {
        let committed = std::fs::read_to_string(repo(&format!("crds/{file}"))).unwrap_or_default();
        assert!(
            committed == yaml,
            "crds/{file} is stale: run `scripts/crds.sh` (writes crds/ and charts/hookline/crds/)"
        );
    }
}

/// The rules apiextensions-apiserver applies to a structural schema: every node states its
/// `type` (unless it opts out with preserve-unknown-fields or int-or-string), and nothing
/// non-structural (`$ref`, `definitions`) is left in.
fn structural_errors(node: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        errors.push(format!("{path}: not a schema object"));
        return;
    };
    for banned in ["$ref", "definitions", "$defs", "$schema"] {
        if obj.contains_key(banned) {
            errors.push(format!("{path}: has {banned}"));
        }
    }
    let exempt = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if !exempt && obj.get("type").and_then(Value::as_str).is_none() {
        errors.push(format!("{path}: no type"));
    }
    for combinator in ["anyOf", "oneOf", "allOf"] {
        for (i, branch) in obj
            .get(combinator)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if branch.get("type").is_some() && !exempt {
                errors.push(format!(
                    "{path}.{combinator}[{i}]: a type inside {combinator}"
                ));
            }
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            structural_errors(child, &format!("{path}.{name}"), errors);
        }
    }
    if let Some(items) = obj.get("items") {
        structural_errors(items, &format!("{path}[]"), errors);
    }
    if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        structural_errors(extra, &format!("{path}{{}}"), errors);
    }
}

#[test]
fn schema_is_structural() {
    for file in [SOURCES, DESTINATIONS] {
        let crd = committed(file);
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut errors = Vec::new();
        structural_errors(schema, "openAPIV3Schema", &mut errors);
        assert!(
            errors.is_empty(),
            "{file} not structural:\n{}",
            errors.join("\n")
        );
    }
    let crd = committed_crd();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    assert_eq!(
        schema["properties"]["spec"]["properties"]["mapping"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
}

/// Every `format` outside the ones Kubernetes knows (each one draws an `unrecognized format`
/// warning on every `kubectl apply` and `helm install`).
fn unknown_formats(node: &Value, path: &str, out: &mut Vec<String>) {
    const KNOWN: &[&str] = &[
        "int32",
        "int64",
        "float",
        "double",
        "byte",
        "binary",
        "password",
        "date",
        "date-time",
        "datetime",
        "duration",
        "uri",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "cidr",
        "mac",
        "uuid",
        "uuid3",
        "uuid4",
        "uuid5",
        "isbn",
        "isbn10",
        "isbn13",
        "creditcard",
        "ssn",
        "hexcolor",
        "rgbcolor",
        "bsonobjectid",
    ];
    match node {
        Value::Object(obj) => {
            if let Some(format) = obj.get("format").and_then(Value::as_str)
                && !KNOWN.contains(&format)
            {
                out.push(format!("{path}: format {format:?}"));
            }
            for (key, child) in obj {
                unknown_formats(child, &format!("{path}.{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                unknown_formats(child, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn schema_uses_only_formats_kubernetes_knows() {
    let mut found = Vec::new();
    for file in [DESTINATIONS, SOURCES] {
        unknown_formats(&committed(file), file, &mut found);
    }
    assert!(
        found.is_empty(),
        "formats a real API server warns about:\n{}",
        found.join("\n")
    );
    let mut bad = Vec::new();
    unknown_formats(
        &serde_json::json!({"p": {"format": "uint32"}}),
        "s",
        &mut bad,
    );
    assert_eq!(bad, ["s.p: format \"uint32\""]);
}

#[test]
fn the_api_server_rejects_a_property_with_no_type() {
    let mut errors = Vec::new();
    let bad =
        serde_json::json!({"type": "object", "properties": {"x": {"description": "untyped"}}});
    structural_errors(&bad, "s", &mut errors);
    assert_eq!(errors, vec!["s.x: no type"]);
}

#[test]
fn names_columns_and_status_subresource_follow_the_contract() {
    let crd = committed_crd();
    assert_eq!(crd["metadata"]["name"], "webhookdestinations.hookline.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "whd");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns = printer_columns(version);
    // `Backlog` (API §8) is filled in JetStream mode.
    assert_eq!(
        columns,
        ["Enabled", "Ready", "Auth", "Endpoint", "Backlog", "Age"]
    );
    let conditions =
        &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"][0], "type");
}

fn printer_columns(version: &Value) -> Vec<&str> {
    version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

#[test]
fn the_source_crd_follows_the_contract() {
    let crd = committed(SOURCES);
    assert_eq!(crd["metadata"]["name"], "webhooksources.hookline.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "whs");
    let version = &crd["spec"]["versions"][0];
    assert!(version["subresources"]["status"].is_object());
    let columns = printer_columns(version);
    assert_eq!(columns, ["Ready", "Destinations", "Age"]);
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    for field in [
        "writeKeySecretRef",
        "allowedOrigins",
        "rateLimit",
        "destinations",
    ] {
        let description = spec["properties"][field]["description"].as_str();
        assert!(
            description.is_some_and(|d| d.len() > 20),
            "kubectl explain webhooksource.spec.{field} needs a description"
        );
    }
    let from =
        &spec["properties"]["destinations"]["properties"]["namespaces"]["properties"]["from"];
    let values: Vec<&Value> = from["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| !v.is_null())
        .collect();
    assert_eq!(values, ["Same", "All", "Selector"]);
    let destination_source = &committed_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        ["spec"]["properties"]["source"];
    assert_eq!(
        destination_source["x-kubernetes-validations"][0]["rule"],
        "!(has(self.sourceRef) && has(self.writeKeySecretRef))"
    );
}

#[test]
fn cel_rules_guard_what_the_types_cannot() {
    let crd = committed_crd();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let rules = |node: &Value| -> Vec<String> {
        node["x-kubernetes-validations"]
            .as_array()
            .unwrap_or_else(|| panic!("no x-kubernetes-validations on {node}"))
            .iter()
            .map(|r| r["rule"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        rules(&spec["properties"]["auth"])
            .contains(&"self.type != 'OAuth2' || has(self.oauth2)".to_string())
    );
    assert!(
        rules(&spec["properties"]["auth"])
            .contains(&"self.type != 'Bearer' || has(self.bearer)".to_string())
    );
    assert_eq!(
        rules(&spec["properties"]["endpoint"]["properties"]["headers"]["items"]),
        ["has(self.value) != has(self.valueFrom)"]
    );
    let methods: Vec<&Value> = spec["properties"]["endpoint"]["properties"]["method"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| !m.is_null())
        .collect();
    assert_eq!(methods, ["POST", "PUT", "PATCH"]);
}

#[test]
fn the_chart_ships_the_same_crds() {
    for file in [DESTINATIONS, SOURCES] {
        let committed = std::fs::read(repo(&format!("crds/{file}"))).unwrap();
        let charted =
            std::fs::read(repo(&format!("charts/hookline/crds/{file}"))).unwrap_or_default();
        assert!(
            committed == charted,
            "charts/hookline/crds/{file} differs from crds/: run `scripts/crds.sh`"
        );
    }
}

/// Every example loads and resolves as `hookline run -f` would: valid spec, its Secrets found.
#[test]
fn every_example_loads_and_resolves() {
    let files: Vec<PathBuf> = std::fs::read_dir(repo("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    let manifests = hookline::config::manifests::Manifests::load(&files).unwrap();
    // Bound to their sources as `hookline run` binds them.
    let mut names: Vec<String> = hookline::config::sources::bind(&manifests)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|d| d.name)
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "all-events",
            "events-to-warehouse",
            "marketing-to-ads",
            "orders-to-billing",
            "orders-to-crm",
            "orders-to-erp",
            "page-views-to-crm",
            "signups-to-crm"
        ]
    );
}

/// Fields under `node` without a description (what `kubectl explain` and the guide's
/// reference show); Kubernetes' own types inside (`worker.resources`, selectors) are theirs.
fn undescribed(node: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = node["properties"].as_object() {
        for (name, child) in props {
            let p = format!("{path}.{name}");
            if child["description"].as_str().is_none_or(str::is_empty) {
                out.push(p.clone());
            }
            if !matches!(name.as_str(), "resources" | "selector") {
                undescribed(child, &p, out);
            }
        }
    }
    if node["type"] == "array" {
        undescribed(&node["items"], &format!("{path}[]"), out);
    }
}

#[test]
fn every_spec_field_is_described() {
    for file in [DESTINATIONS, SOURCES] {
        let crd = committed(file);
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut missing = Vec::new();
        undescribed(spec, "spec", &mut missing);
        assert!(missing.is_empty(), "{file}: no description for {missing:?}");
    }
}

/// GitOps tools compare `spec` with what they applied: a schema default is drift, so the only
/// one is `spec.enabled: true`, which the `Enabled` printer column shows.
#[test]
fn the_only_schema_default_is_enabled_true() {
    fn defaults(node: &Value, path: &str, out: &mut Vec<(String, Value)>) {
        match node {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "default" {
                        out.push((path.to_string(), v.clone()));
                    }
                    defaults(v, &format!("{path}.{k}"), out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| defaults(v, path, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for file in [DESTINATIONS, SOURCES] {
        defaults(&committed(file)["spec"]["versions"], file, &mut found);
    }
    assert_eq!(
        found,
        [(
            format!("{DESTINATIONS}.schema.openAPIV3Schema.properties.spec.properties.enabled"),
            Value::Bool(true)
        )]
    );
}

/// The guide's reference pages are what the CRDs generate; `BLESS=1` writes them
/// (`scripts/crds.sh` does).
#[test]
fn the_guides_reference_is_what_the_crds_generate() {
    for (file, markdown) in hookline::cli::reference::reference_pages().unwrap() {
        let path = repo(&format!("docs/src/reference/{file}"));
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(&path, &markdown).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == markdown,
            "docs/src/reference/{file} is stale: run `scripts/crds.sh`"
        );
    }
}
