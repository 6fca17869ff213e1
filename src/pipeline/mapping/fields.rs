//! Which paths into an event a mapping can read: the worker parses only what lies on them.

use super::resolve::{directive_name, from_root};
use super::template::placeholder_paths;
use crate::pipeline::jsvalue::path_keys;
use serde_json::Value;

/// The paths (keys from the event down) resolving `mapping` can read, or `None` when it can
/// read anything (the whole event, a path computed per event, a Liquid template). Errs on the
/// side of more: what a relative mapping reads (`@arrayPath`'s shape, `@transform`'s mapping)
/// is counted as if it read the event.
pub fn read_paths(mapping: &Value) -> Option<Vec<Vec<String>>> {
    let mut paths = Vec::new();
    collect(mapping, &mut paths).then_some(paths)
}

/// Adds what `mapping` reads to `paths`; `false` when that cannot be bounded.
fn collect(mapping: &Value, paths: &mut Vec<Vec<String>>) -> bool {
    match mapping {
        Value::Array(items) => items.iter().all(|item| collect(item, paths)),
        Value::Object(object) => {
            let bounded = match directive_name(object).map(|name| (name, &object[name])) {
                Some(("@path", Value::String(path))) => add(&from_root(path), paths),
                Some(("@template", Value::String(text))) => placeholder_paths(text)
                    .is_some_and(|found| found.into_iter().all(|path| add(path, paths))),
                Some(("@arrayPath", Value::Array(items))) => match items.first() {
                    Some(Value::String(path)) => add(&from_root(path), paths),
                    _ => true,
                },
                Some(("@path" | "@template" | "@liquid", _)) => false,
                _ => true,
            };
            bounded && object.values().all(|value| collect(value, paths))
        }
        _ => true,
    }
}

/// `false` for the event itself.
fn add(path: &str, paths: &mut Vec<Vec<String>>) -> bool {
    let keys = path_keys(path);
    let bounded = !keys.is_empty();
    paths.push(keys);
    bounded
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(mapping: Value) -> Option<Vec<String>> {
        let mut found: Vec<String> = read_paths(&mapping)?
            .into_iter()
            .map(|keys| keys.join("/"))
            .collect();
        found.sort();
        Some(found)
    }

    #[test]
    fn paths_and_placeholders_are_split_as_resolving_splits_them() {
        assert_eq!(
            paths(json!({
                "user": {"@path": "$.userId"},
                "total": {"@path": "$.properties['total']"},
                "greeting": {"@template": "Hi {{ traits.name }} from {{context.ip}}"},
                "items": {"@arrayPath": ["$.products", {"id": {"@path": "$.sku"}}]},
                "when": {"@if": {"exists": {"@path": "$.sentAt"}, "then": "yes", "else": "no"}},
                "fixed": {"@literal": {"a": [1, "b"]}}
            })),
            Some(
                [
                    "context/ip",
                    "products",
                    "properties/total",
                    "sentAt",
                    "sku",
                    "traits/name",
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
            assert_eq!(paths(mapping.clone()), None, "{mapping}");
        }
    }
}
