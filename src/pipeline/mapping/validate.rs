//! Mapping validation with mapping-kit's messages: `/<path> <problem>.`, all errors collected.

use serde_json::{Map, Value};

type Stack<'a> = &'a [&'a str];

pub fn validate(mapping: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    validate_value(mapping, &[], &mut errors);
    errors
}

fn message(stack: Stack, text: impl std::fmt::Display) -> String {
    format!("/{} {text}.", stack.join("/"))
}

fn is_directive(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|o| o.keys().any(|k| k.starts_with('@')))
}

fn kind(v: &Value) -> &'static str {
    if is_directive(v) {
        "directive"
    } else {
        super::super::jsvalue::type_name(Some(v))
    }
}

fn article(kind: &str) -> &'static str {
    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn validate_value(v: &Value, stack: Stack, errors: &mut Vec<String>) {
    match v {
        _ if is_directive(v) => validate_directive(v, stack, errors),
        Value::Object(obj) => validate_plain_object(obj, stack, errors),
        _ => {}
    }
}

fn validate_plain_object(obj: &Map<String, Value>, stack: Stack, errors: &mut Vec<String>) {
    for (key, value) in obj {
        let child: Vec<&str> = stack.iter().copied().chain([key.as_str()]).collect();
        validate_value(value, &child, errors);
    }
}

fn validate_directive(v: &Value, stack: Stack, errors: &mut Vec<String>) {
    let Some(obj) = v.as_object() else {
        let k = kind(v);
        errors.push(message(
            stack,
            format!("should be a directive object but it is {} {k}", article(k)),
        ));
        return;
    };
    let directive_keys: Vec<&String> = obj.keys().filter(|k| k.starts_with('@')).collect();
    if directive_keys.len() > 1 {
        errors.push(message(
            stack,
            format!(
                "should only have one @-prefixed key but it has {} keys",
                directive_keys.len()
            ),
        ));
        return;
    }
    if obj.keys().any(|k| !k.starts_with('@') && k != "_metadata") {
        errors.push(message(
            stack,
            format!(
                "should only have one @-prefixed key but it has {} keys",
                obj.len()
            ),
        ));
        return;
    }
    let name = directive_keys[0].as_str();
    let value = &obj[name];
    let inner: Vec<&str> = stack.iter().copied().chain([name]).collect();
    let inner = inner.as_slice();
    match name {
        "@if" => fields(
            value,
            inner,
            errors,
            &[
                ("exists", Need::Optional, directive_or_raw),
                ("then", Need::Optional, directive_or_raw),
                ("else", Need::Optional, directive_or_raw),
            ],
        ),
        "@case" => fields(
            value,
            inner,
            errors,
            &[
                ("operator", Need::Optional, string),
                ("value", Need::Optional, directive_or_string),
            ],
        ),
        "@replace" => fields(
            value,
            inner,
            errors,
            &[
                ("pattern", Need::Required, pattern),
                ("replacement", Need::Optional, replacement),
                ("value", Need::Required, directive_or_string),
                ("ignorecase", Need::Optional, boolean),
                ("global", Need::Optional, boolean),
            ],
        ),
        "@arrayPath" => match value.as_array() {
            Some(items) => {
                match items.first() {
                    Some(path) => directive_or_string(path, inner, errors),
                    None => errors.push(message(
                        inner,
                        "should be a string or a mapping directive but it is an undefined",
                    )),
                }
                if let Some(shape) = items.get(1) {
                    validate_value(shape, inner, errors);
                }
            }
            None => array(value, inner, errors),
        },
        "@path" | "@template" => directive_or_string(value, inner, errors),
        "@literal" | "@excludeWhenNull" => directive_or_raw(value, inner, errors),
        "@json" => fields(
            value,
            inner,
            errors,
            &[
                ("value", Need::Required, directive_or_raw),
                ("mode", Need::Required, json_mode),
            ],
        ),
        "@flatten" => fields(
            value,
            inner,
            errors,
            &[
                ("separator", Need::Optional, string),
                ("value", Need::Required, directive_or_raw),
            ],
        ),
        "@merge" => {
            let before = errors.len();
            fields(
                value,
                inner,
                errors,
                &[
                    ("direction", Need::Optional, merge_direction),
                    ("objects", Need::Required, array),
                ],
            );
            if errors.len() == before {
                merge_objects(&value["objects"], errors);
            }
        }
        "@transform" => fields(
            value,
            inner,
            errors,
            &[
                ("apply", Need::Required, directive_or_object),
                ("mapping", Need::Required, directive_or_object),
            ],
        ),
        "@liquid" => string(value, inner, errors),
        _ => errors.push(message(stack, format!("has an invalid directive: {name}"))),
    }
}

#[derive(Clone, Copy)]
enum Need {
    Required,
    Optional,
}

type FieldCheck = fn(&Value, Stack, &mut Vec<String>);

fn fields(v: &Value, stack: Stack, errors: &mut Vec<String>, spec: &[(&str, Need, FieldCheck)]) {
    let Some(obj) = v.as_object().filter(|_| !is_directive(v)) else {
        let k = kind(v);
        errors.push(message(
            stack,
            format!("should be an object but it is {} {k}", article(k)),
        ));
        return;
    };
    // As mapping-kit's validateObject: every option is first validated as a mapping of its own,
    // and the field rules apply only when that passes.
    let before = errors.len();
    validate_plain_object(obj, stack, errors);
    if errors.len() > before {
        return;
    }
    for (name, need, check) in spec {
        match (obj.get(*name), need) {
            (None, Need::Required) => errors.push(message(
                stack,
                format!("should have field {:?} but it doesn't", name),
            )),
            (None, Need::Optional) => {}
            (Some(value), _) => {
                let child: Vec<&str> = stack.iter().copied().chain([*name]).collect();
                check(value, &child, errors);
            }
        }
    }
}

fn directive_or_raw(v: &Value, stack: Stack, errors: &mut Vec<String>) {
    if is_directive(v) {
        validate_directive(v, stack, errors);
    }
}

fn directive_or_string(v: &Value, stack: Stack, errors: &mut Vec<String>) {
    match v {
        _ if is_directive(v) => validate_directive(v, stack, errors),
        Value::String(_) => {}
        _ => {
            let k = kind(v);
            errors.push(message(
                stack,
                format!(
                    "should be a string or a mapping directive but it is {} {k}",
                    article(k)
                ),
            ));
        }
    }
}

fn string(v: &Value, stack: Stack, errors: &mut Vec<String>) {
    if !v.is_string() {
        let k = kind(v);
        errors.push(message(
            stack,
            format!("should be a string but it is {} {k}", article(k)),
        ));
    }
}

fn boolean(v: &Value, stack: Stack, errors: &mut Vec<String>) {
    if !v.is_boolean() {
        let k = kind(v);
        errors.push(message(
            stack,
            format!("should be a boolean but it is {} {k}", article(k)),
        ));
    }
}

fn array(v: &Value, stack: Stack, errors: &mut Vec<String>) {
    if !v.is_array() {
        let k = kind(v);
        errors.push(message(
            stack,
            format!("should be an array but it is {} {k}", article(k)),
        ));
    }
}

fn string_of_length(v: &Value, stack: Stack, errors: &mut Vec<String>, min: usize, max: usize) {
    string(v, stack, errors);
    if let Some(s) = v.as_str() {
        let len = s.encode_utf16().count();
        if len < min {
            errors.push(message(
                stack,
                format!("should be a string of length {min} or greater"),
            ));
        } else if len > max {
            errors.push(message(
                stack,
                format!("should be a string of length {max} or less"),
            ));
        }
    }
}

pub const MAX_PATTERN_LENGTH: usize = 10;

fn pattern(v: &Value, stack: Stack, errors: &mut Vec<String>) {
    string_of_length(v, stack, errors, 1, MAX_PATTERN_LENGTH);
}

fn replacement(v: &Value, stack: Stack, errors: &mut Vec<String>) {
    string_of_length(v, stack, errors, 0, MAX_PATTERN_LENGTH);
}

/// mapping-kit's `validateAllowedStrings`: a string, compared case-insensitively.
fn one_of(v: &Value, stack: Stack, errors: &mut Vec<String>, allowed: &[&str]) {
    let Some(text) = v.as_str() else {
        return string(v, stack, errors);
    };
    if !allowed.contains(&text.to_lowercase().as_str()) {
        errors.push(message(
            stack,
            format!("should be one of {} but it is {v}", allowed.join(", ")),
        ));
    }
}

fn json_mode(v: &Value, stack: Stack, errors: &mut Vec<String>) {
    one_of(v, stack, errors, &["encode", "decode"]);
}

fn merge_direction(v: &Value, stack: Stack, errors: &mut Vec<String>) {
    one_of(v, stack, errors, &["left", "right"]);
}

fn directive_or_object(v: &Value, stack: Stack, errors: &mut Vec<String>) {
    match v {
        _ if is_directive(v) => validate_directive(v, stack, errors),
        Value::Object(obj) => validate_plain_object(obj, stack, errors),
        _ => {
            let k = kind(v);
            errors.push(message(
                stack,
                format!(
                    "should be a object or a mapping directive but it is {} {k}",
                    article(k)
                ),
            ));
        }
    }
}

/// `@merge`'s objects are checked after its fields, from the mapping's root (mapping-kit passes
/// no path there, so messages start with `/ `), stopping at the first object that fails.
fn merge_objects(objects: &Value, errors: &mut Vec<String>) {
    for item in objects.as_array().into_iter().flatten() {
        let before = errors.len();
        directive_or_object(item, &[], errors);
        if errors.len() > before {
            return;
        }
    }
}

pub const MAX_LIQUID_LENGTH: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_every_error_with_its_path() {
        let errors = validate(&json!({
            "hash": {"@template": 1},
            "x": {"@replace": {"value": "a"}},
            "ok": {"@path": "$.a"},
            "y": {"@path": "$.a", "other": 1}
        }));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("/hash/@template should be a string"),
            "{errors:?}"
        );
        assert_eq!(
            errors[1],
            "/x/@replace should have field \"pattern\" but it doesn't."
        );
        assert!(errors[2].starts_with("/y should only have one @-prefixed key"));
    }
}
