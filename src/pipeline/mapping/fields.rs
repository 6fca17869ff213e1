//! Which top-level fields of an event a mapping can read: the worker parses only those.

use super::resolve::directive_name;
use super::template::placeholder_paths;
use crate::pipeline::jsvalue::path_keys;
use serde_json::Value;
use std::collections::BTreeSet;

/// The top-level fields resolving `mapping` can read, or `None` when it can read any (the whole
/// event, a path computed per event, a Liquid template). Errs on the side of more: what a
/// relative mapping reads (`@arrayPath`'s shape, `@transform`'s mapping) is counted as if it
/// read the event.
pub fn read_fields(mapping: &Value) -> Option<BTreeSet<String>> {
    let mut fields = BTreeSet::new();
    collect(mapping, &mut fields).then_some(fields)
}

/// Adds what `mapping` reads to `fields`; `false` when that cannot be bounded.
fn collect(mapping: &Value, fields: &mut BTreeSet<String>) -> bool {
    match mapping {
        Value::Array(items) => items.iter().all(|item| collect(item, fields)),
        Value::Object(object) => {
            let bounded = match directive_name(object).map(|name| (name, &object[name])) {
                Some(("@path", Value::String(path))) => {
                    // As resolving does: JS's `path.replace('$.', '')`.
                    head(&path.replacen("$.", "", 1), fields)
                }
                Some(("@template", Value::String(text))) => placeholder_paths(text)
                    .is_some_and(|paths| paths.into_iter().all(|path| head(path, fields))),
                Some(("@arrayPath", Value::Array(items))) => match items.first() {
                    Some(Value::String(path)) => head(&path.replacen("$.", "", 1), fields),
                    _ => true,
                },
                Some(("@path" | "@template" | "@liquid", _)) => false,
                _ => true,
            };
            bounded && object.values().all(|value| collect(value, fields))
        }
        _ => true,
    }
}

fn head(path: &str, fields: &mut BTreeSet<String>) -> bool {
    let head = path_keys(path).into_iter().next();
    head.map(|key| fields.insert(key)).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(mapping: Value) -> Option<Vec<String>> {
        read_fields(&mapping).map(|f| f.into_iter().collect())
    }

    #[test]
    fn paths_and_placeholders_name_their_first_key() {
        assert_eq!(
            fields(json!({
                "user": {"@path": "$.userId"},
                "total": {"@path": "$.properties['total']"},
                "greeting": {"@template": "Hi {{ traits.name }} from {{context.ip}}"},
                "items": {"@arrayPath": ["$.products", {"id": {"@path": "$.sku"}}]},
                "when": {"@if": {"exists": {"@path": "$.sentAt"}, "then": "yes", "else": "no"}},
                "fixed": {"@literal": {"a": [1, "b"]}}
            })),
            Some(
                [
                    "context",
                    "products",
                    "properties",
                    "sentAt",
                    "sku",
                    "traits",
                    "userId"
                ]
                .map(String::from)
                .to_vec()
            )
        );
    }

    #[test]
    fn what_cannot_be_bounded_reads_everything() {
        for mapping in [
            json!({"@path": "$."}),
            json!({"all": {"@path": "$."}}),
            json!({"computed": {"@path": {"@template": "$.{{which}}"}}}),
            json!({"text": {"@liquid": "{{ event }}"}}),
            json!({"text": {"@template": "{{{properties.template}}}"}}),
            json!({"root": {"@template": "{{ . }}"}}),
        ] {
            assert_eq!(fields(mapping.clone()), None, "{mapping}");
        }
    }
}
