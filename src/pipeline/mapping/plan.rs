//! A mapping compiled once for writing payloads: its plain objects and arrays kept as lists,
//! each literal `@path` split into its keys; every other directive is resolved per event.
//! Writes what resolving gives, as `JSON.stringify` writes it, without building it first:
//! telling directives from objects, hashing `@path` out of its object, splitting the path,
//! building the payload's maps and copying each value out of the event cost more per event
//! than the lookups themselves.

use super::MappingError;
use super::resolve::{Resolver, directive_name, from_root};
use crate::pipeline::jsvalue;
use serde_json::Value;

#[derive(Debug, Clone)]
pub enum Plan {
    /// A plain object: its members in order; those resolving to `undefined` are left out.
    Object(Vec<(String, Plan)>),
    Array(Vec<Plan>),
    /// `@path` with a literal path: the keys it walks.
    Path(Vec<String>),
    /// Any other directive (or a computed path): resolved per event.
    Directive(Value),
    Literal(Value),
}

impl Plan {
    pub fn compile(mapping: &Value) -> Plan {
        match mapping {
            Value::Object(object) => match directive_name(object).map(|name| (name, &object[name]))
            {
                Some(("@path", Value::String(path))) => {
                    Plan::Path(jsvalue::path_keys(&from_root(path)))
                }
                Some(_) => Plan::Directive(mapping.clone()),
                None => Plan::Object(
                    object
                        .iter()
                        .map(|(key, value)| (key.clone(), Plan::compile(value)))
                        .collect(),
                ),
            },
            Value::Array(items) => Plan::Array(items.iter().map(Plan::compile).collect()),
            scalar => Plan::Literal(scalar.clone()),
        }
    }

    /// `false`: `undefined`, nothing written.
    pub fn write(
        &self,
        resolver: &Resolver,
        payload: &Value,
        out: &mut Vec<u8>,
    ) -> Result<bool, MappingError> {
        match self {
            Plan::Object(members) => {
                out.push(b'{');
                let mut empty = true;
                for (key, plan) in members {
                    let start = out.len();
                    if !empty {
                        out.push(b',');
                    }
                    jsvalue::write_string(key, out);
                    out.push(b':');
                    if plan.write(resolver, payload, out)? {
                        empty = false;
                    } else {
                        out.truncate(start);
                    }
                }
                out.push(b'}');
            }
            Plan::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    // JSON has no `undefined`: inside arrays it serializes as null.
                    if !item.write(resolver, payload, out)? {
                        out.extend_from_slice(b"null");
                    }
                }
                out.push(b']');
            }
            Plan::Path(keys) => match jsvalue::get_keys(Some(payload), keys) {
                Some(value) => jsvalue::write_json(&value, out),
                None => return Ok(false),
            },
            Plan::Directive(directive) => match resolver.resolve(directive, payload)? {
                Some(value) => jsvalue::write_json(&value, out),
                None => return Ok(false),
            },
            Plan::Literal(value) => jsvalue::write_json(value, out),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use crate::pipeline::mapping::Mapping;
    use serde_json::json;

    #[test]
    fn undefined_members_are_left_out_and_undefined_items_are_null() {
        let mapping = Mapping::compile(Some(&json!({
            "missing": {"@path": "$.nope"},
            "first": {"@path": "$.a"},
            "list": [{"@path": "$.nope"}, {"@path": "$.b['c']"}, 1.0, "x"],
            "nested": {"gone": {"@path": "$.nope"}},
            "chosen": {"@if": {"exists": {"@path": "$.a"}, "then": {"@path": "$.b"}}},
            "last": {"@path": "$.nope"}
        })))
        .unwrap();
        let mut body = Vec::new();
        mapping
            .write(&json!({"a": "é\"", "b": {"c": 2.50}}), &mut body)
            .unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"first":"é\"","list":[null,2.5,1,"x"],"nested":{},"chosen":{"c":2.5}}"#
        );
    }
}
