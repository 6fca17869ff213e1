//! Resolving a validated mapping against one event, directive by directive, with mapping-kit's
//! results (JS truthiness checks, `undefined` keys dropped, the documented quirks).

use super::MappingError;
use super::template::{self, LiquidTemplates};
use crate::pipeline::jsvalue::{self, is_truthy, type_name};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// `None` is JavaScript's `undefined`: the key it lands on is left out of the payload.
type Resolved = Result<Option<Value>, MappingError>;

pub struct Resolver<'a> {
    pub liquid: &'a LiquidTemplates,
}

fn fail<T>(message: impl Into<String>) -> Result<T, MappingError> {
    Err(MappingError(message.into()))
}

/// A directive's option, as JS reads `opts.name` (absent is `undefined`).
fn opt<'v>(opts: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    opts.get(name)
}

fn truthy(v: Option<&Value>) -> bool {
    v.is_some_and(is_truthy)
}

impl Resolver<'_> {
    pub fn resolve(&self, mapping: &Value, payload: &Value) -> Resolved {
        match mapping {
            Value::Object(obj) => match directive_name(obj) {
                Some(name) => self.directive(name, &obj[name], payload),
                None => {
                    let mut out = Map::with_capacity(obj.len());
                    for (key, value) in obj {
                        if let Some(v) = self.resolve(value, payload)? {
                            out.insert(key.clone(), v);
                        }
                    }
                    Ok(Some(Value::Object(out)))
                }
            },
            // JSON has no `undefined`: inside arrays it serializes as null.
            Value::Array(items) => items
                .iter()
                .map(|v| Ok(self.resolve(v, payload)?.unwrap_or(Value::Null)))
                .collect::<Result<Vec<_>, _>>()
                .map(|v| Some(Value::Array(v))),
            scalar => Ok(Some(scalar.clone())),
        }
    }

    fn directive(&self, name: &str, value: &Value, payload: &Value) -> Resolved {
        match name {
            "@path" => {
                let path = self.string_arg(name, value, payload)?;
                Ok(jsvalue::get(Some(payload), &from_root(&path)).map(Cow::into_owned))
            }
            "@template" => {
                let text = self.string_arg(name, value, payload)?;
                Ok(Some(Value::String(template::render_placeholders(
                    &text, payload,
                ))))
            }
            "@literal" => self.resolve(value, payload),
            "@if" => self.if_(value, payload),
            "@case" => self.case(value, payload),
            "@replace" => self.replace(value, payload),
            "@arrayPath" => self.array_path(value, payload),
            "@flatten" => self.flatten(value, payload),
            "@json" => self.json(value, payload),
            "@merge" => self.merge(value, payload),
            "@transform" => self.transform(value, payload),
            "@excludeWhenNull" => Ok(match self.resolve(value, payload)? {
                Some(Value::Null) | None => None,
                Some(v) => Some(remove_null_keys(v)),
            }),
            // The template is taken as written, never resolved first.
            "@liquid" => match value {
                Value::String(text) => self
                    .liquid
                    .render(text, payload)
                    .map(|s| Some(Value::String(s))),
                _ => fail("liquid template value must be a string"),
            },
            other => fail(format!("{other} is not a valid directive, got undefined")),
        }
    }

    /// A directive's string argument; a literal one (the usual case) is borrowed, not copied.
    fn string_arg<'v>(
        &self,
        name: &str,
        value: &'v Value,
        payload: &Value,
    ) -> Result<Cow<'v, str>, MappingError> {
        if let Value::String(s) = value {
            return Ok(Cow::Borrowed(s));
        }
        match self.resolve(value, payload)? {
            Some(Value::String(s)) => Ok(Cow::Owned(s)),
            other => fail(format!(
                "{name}: expected string, got {}",
                type_name(other.as_ref())
            )),
        }
    }

    fn options<'v>(
        value: &'v Value,
        requirement: &str,
    ) -> Result<&'v Map<String, Value>, MappingError> {
        value
            .as_object()
            .ok_or_else(|| MappingError(requirement.to_string()))
    }

    fn if_(&self, value: &Value, payload: &Value) -> Resolved {
        let opts = Self::options(value, "@if requires an object with an \"exists\" key")?;
        let (exists, blank) = (opt(opts, "exists"), opt(opts, "blank"));
        if !truthy(exists) && !truthy(blank) {
            return fail("@if requires an \"exists\" key or a \"blank\" key");
        }
        let condition = match (exists, blank) {
            (Some(e), _) => !matches!(self.resolve(e, payload)?, None | Some(Value::Null)),
            (None, Some(b)) => match self.resolve(b, payload)? {
                None | Some(Value::Null) => false,
                Some(v) => !loosely_equals_empty_string(&v),
            },
            (None, None) => false,
        };
        match (condition, opt(opts, "then"), opt(opts, "else")) {
            (true, Some(then), _) => self.resolve(then, payload),
            (false, _, Some(otherwise)) if is_truthy(otherwise) => self.resolve(otherwise, payload),
            _ => Ok(None),
        }
    }

    fn case(&self, value: &Value, payload: &Value) -> Resolved {
        let opts = Self::options(value, "@case requires an object with a \"operator\" key")?;
        let Some(operator) = opt(opts, "operator").filter(|o| is_truthy(o)) else {
            return fail("@case requires a \"operator\" key");
        };
        let Some(input) = opt(opts, "value").filter(|v| is_truthy(v)) else {
            return Ok(None);
        };
        match self.resolve(input, payload)? {
            Some(Value::String(s)) => match operator.as_str() {
                Some("lower") => Ok(Some(Value::String(s.to_lowercase()))),
                Some("upper") => Ok(Some(Value::String(s.to_uppercase()))),
                _ => fail("operator key should have a value of \"lower\" or \"upper\""),
            },
            other => Ok(other),
        }
    }

    fn replace(&self, value: &Value, payload: &Value) -> Resolved {
        let opts = Self::options(value, "@replace requires an object with a \"pattern\" key")?;
        if !truthy(opt(opts, "pattern")) {
            return fail("@replace requires a \"pattern\" key");
        }
        let text_or = |name: &str| match opt(opts, name) {
            None | Some(Value::Null) => Some(String::new()),
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => None,
        };
        let bool_or = |name: &str, default: bool| match opt(opts, name) {
            None | Some(Value::Null) => Some(default),
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => None,
        };
        let Some(input) = opt(opts, "value").filter(|v| is_truthy(v)) else {
            return Ok(None);
        };
        let resolved = self.resolve(input, payload)?;
        let subject = match &resolved {
            Some(Value::String(s)) => Some(s.clone()),
            Some(v @ (Value::Bool(_) | Value::Number(_))) => Some(jsvalue::to_js_string(v)),
            _ => None,
        };
        let (
            Some(subject),
            Some(Value::String(pattern)),
            Some(replacement),
            Some(ignore_case),
            Some(global),
        ) = (
            subject,
            opt(opts, "pattern"),
            text_or("replacement"),
            bool_or("ignorecase", false),
            bool_or("global", true),
        )
        else {
            return Ok(Some(Value::String(String::new())));
        };
        let mut out =
            template::replace_literal(&subject, pattern, &replacement, ignore_case, global)?;
        if let (Some(Value::String(p2)), Some(r2)) = (
            opt(opts, "pattern2").filter(|p| is_truthy(p)),
            text_or("replacement2"),
        ) {
            out = template::replace_literal(&out, p2, &r2, ignore_case, global)?;
        }
        Ok(Some(Value::String(out)))
    }

    fn array_path(&self, value: &Value, payload: &Value) -> Resolved {
        let Some(items) = value.as_array() else {
            return fail(format!(
                "@arrayPath expected array, got {}",
                type_name(Some(value))
            ));
        };
        let root = match items.first() {
            Some(Value::String(path)) => {
                jsvalue::get(Some(payload), &from_root(path)).map(Cow::into_owned)
            }
            Some(other) => self.resolve(other, payload)?,
            None => None,
        };
        let shape = items
            .get(1)
            .and_then(Value::as_object)
            .filter(|s| !s.is_empty());
        match (root, shape) {
            (Some(root @ (Value::Array(_) | Value::Object(_))), Some(_)) => {
                let list = match root {
                    Value::Array(list) => list,
                    single => vec![single],
                };
                let shape = &items[1];
                let mapped = list
                    .iter()
                    .map(|item| Ok(self.resolve(shape, item)?.unwrap_or(Value::Null)))
                    .collect::<Result<Vec<_>, MappingError>>()?;
                Ok(Some(Value::Array(mapped)))
            }
            (root, _) => Ok(root),
        }
    }

    fn flatten(&self, value: &Value, payload: &Value) -> Resolved {
        let opts = Self::options(
            value,
            "@flatten requires an object with a \"separator\" key",
        )?;
        let Some(separator) = opt(opts, "separator").filter(|s| is_truthy(s)) else {
            return fail("@flatten requires a \"separator\" key");
        };
        let Some(Value::String(separator)) = self.resolve(separator, payload)? else {
            return fail("@flatten requires a string separator");
        };
        let input = match opt(opts, "value") {
            Some(v) => self.resolve(v, payload)?,
            None => None,
        };
        let mut out = Map::new();
        flatten_into(
            input,
            String::new(),
            &separator,
            truthy(opt(opts, "omitArrays")),
            &mut out,
        );
        Ok(Some(Value::Object(out)))
    }

    fn json(&self, value: &Value, payload: &Value) -> Resolved {
        let opts = Self::options(value, "@json requires an object with a \"value\" key")?;
        let Some(mode) = opt(opts, "mode").filter(|m| is_truthy(m)) else {
            return fail("@json requires a \"mode\" key");
        };
        let Some(input) = opt(opts, "value").filter(|v| is_truthy(v)) else {
            return fail("@json requires a \"value\" key");
        };
        let resolved = self.resolve(input, payload)?;
        match (mode.as_str(), resolved) {
            (Some("encode"), v) => Ok(v.map(|v| Value::String(jsvalue::stringify(&v)))),
            // A string that is not JSON passes through unchanged, as `JSON.parse` in a try/catch.
            (Some("decode"), Some(Value::String(s))) => {
                Ok(Some(serde_json::from_str(&s).unwrap_or(Value::String(s))))
            }
            (Some("decode"), v) => Ok(v),
            _ => Ok(None),
        }
    }

    fn merge(&self, value: &Value, payload: &Value) -> Resolved {
        let opts = Self::options(
            value,
            "@merge requires an object with an \"objects\" key and a \"direction\" key",
        )?;
        let Some(direction) = opt(opts, "direction").filter(|d| is_truthy(d)) else {
            return fail("@merge requires a \"direction\" key");
        };
        let direction = self.resolve(direction, payload)?;
        let Some(objects) = opt(opts, "objects").filter(|o| is_truthy(o)) else {
            return fail("@merge requires a \"objects\" key");
        };
        let Some(objects) = objects.as_array() else {
            return fail(format!(
                "@merge: expected opts.array, got {}",
                type_name(Some(objects))
            ));
        };
        let mut resolved = objects
            .iter()
            .map(|o| self.resolve(o, payload))
            .collect::<Result<Vec<_>, _>>()?;
        if direction.as_ref().and_then(Value::as_str) == Some("left") {
            resolved.reverse();
        }
        let mut out = Map::new();
        for source in resolved.into_iter().flatten() {
            object_assign(&mut out, source);
        }
        Ok(Some(Value::Object(out)))
    }

    fn transform(&self, value: &Value, payload: &Value) -> Resolved {
        let opts = Self::options(
            value,
            "@transform requires an object with an \"apply\" key and a \"mapping\" key",
        )?;
        let Some(mapping) = opt(opts, "mapping").filter(|m| is_truthy(m)) else {
            return fail("@transform requires a \"mapping\" key");
        };
        let Some(apply) = opt(opts, "apply").filter(|a| is_truthy(a)) else {
            return fail("@transform requires a \"apply\" key");
        };
        if !apply.is_object() {
            return fail("@transform \"apply\" key should be an object");
        }
        if !payload.is_object() {
            return fail(format!(
                "data must be an object, got {}",
                type_name(Some(payload))
            ));
        }
        let new_payload = self.resolve(apply, payload)?.unwrap_or(Value::Null);
        self.resolve(mapping, &new_payload)
    }
}

/// JavaScript's `value == ''` (loose equality): true for '', 0, false and every array whose
/// `String()` is empty (`[]`, `[null]`, `[[]]`), never for an object.
fn loosely_equals_empty_string(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Bool(b) => !b,
        Value::Array(_) => jsvalue::to_js_string(v).is_empty(),
        Value::Null | Value::Object(_) => false,
    }
}

/// The path an `@path` or `@arrayPath` walks: JS's `path.replace('$.', '')`, the first
/// occurrence, wherever it is.
pub(super) fn from_root(path: &str) -> Cow<'_, str> {
    match path.find("$.") {
        Some(0) => Cow::Borrowed(&path[2..]),
        Some(_) => Cow::Owned(path.replacen("$.", "", 1)),
        None => Cow::Borrowed(path),
    }
}

/// mapping-kit's `isDirective`: an object with an `@` key and no other keys but `@…` and
/// `_metadata` (anything else is a plain object); the first `@` key names the directive.
pub(super) fn directive_name(obj: &Map<String, Value>) -> Option<&str> {
    let name = obj.keys().find(|k| k.starts_with('@'))?;
    obj.keys()
        .all(|k| k.starts_with('@') || k == "_metadata")
        .then_some(name.as_str())
}

fn flatten_into(
    input: Option<Value>,
    prefix: String,
    sep: &str,
    omit_arrays: bool,
    out: &mut Map<String, Value>,
) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}{sep}{k}")
        }
    };
    match input {
        Some(Value::Object(obj)) => {
            for (k, v) in obj {
                flatten_into(Some(v), key(&k), sep, omit_arrays, out);
            }
        }
        Some(Value::Array(items)) if !omit_arrays => {
            for (i, v) in items.into_iter().enumerate() {
                flatten_into(Some(v), key(&i.to_string()), sep, omit_arrays, out);
            }
        }
        Some(v) => {
            out.insert(prefix, v);
        }
        None => {
            out.shift_remove(&prefix);
        }
    }
}

/// `Object.assign(target, source)` for one JSON source.
fn object_assign(target: &mut Map<String, Value>, source: Value) {
    match source {
        Value::Object(obj) => target.extend(obj),
        Value::Array(items) => target.extend(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v)),
        ),
        Value::String(s) => target.extend(
            s.chars()
                .enumerate()
                .map(|(i, c)| (i.to_string(), Value::String(c.to_string()))),
        ),
        _ => {}
    }
}

/// `@excludeWhenNull` on an object: null-valued keys removed at every object depth (not in arrays).
fn remove_null_keys(v: Value) -> Value {
    match v {
        Value::Object(obj) => Value::Object(
            obj.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, remove_null_keys(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use crate::pipeline::envelope;
    use crate::pipeline::jsvalue;
    use crate::pipeline::mapping::Mapping;
    use crate::pipeline::reads::Reads;
    use crate::pipeline::subscription::Subscription;
    use serde_json::{Value, json};

    /// Also checks that parsing only the fields the mapping reads gives the same result, and
    /// that the payload written as a body is that result, stringified.
    fn apply(mapping: Value, event: Value) -> Result<Value, String> {
        let mapping = Mapping::compile(Some(&mapping)).map_err(|e| e.to_string())?;
        let reads = Reads::of(&Subscription::all(), &mapping, false);
        let record = envelope::encode(None, None, &serde_json::to_vec(&event).unwrap());
        let read = mapping.apply(&reads.record(&record).unwrap().event);
        let full = mapping.apply(&event);
        assert_eq!(read, full, "with only {reads:?} parsed");
        let mut written = Vec::new();
        let write = mapping.write(&event, &mut written).map(|()| written);
        let stringified = full
            .as_ref()
            .map(jsvalue::to_json)
            .map_err(|e| e.to_string());
        assert_eq!(write.map_err(|e| e.to_string()), stringified, "written");
        full.map_err(|e| e.to_string())
    }

    #[test]
    fn options_mapping_kit_checks_only_when_used_fail_then_with_its_message() {
        let e = apply(
            json!({"f": {"@flatten": {"value": {"@path": "$.a"}}}}),
            json!({}),
        );
        assert!(
            e.unwrap_err()
                .contains("@flatten requires a \"separator\" key")
        );
        let e = apply(json!({"m": {"@merge": {"objects": [{"a": 1}]}}}), json!({}));
        assert!(
            e.unwrap_err()
                .contains("@merge requires a \"direction\" key")
        );
        let long = json!({"r": {"@replace": {"pattern": "a", "pattern2": "bbbbbbbbbbbb",
            "value": "abc"}}});
        assert!(
            apply(long, json!({}))
                .unwrap_err()
                .contains("@replace requires a \"pattern\" less than 10 characters")
        );
    }

    #[test]
    fn validation_matches_mapping_kit() {
        let invalid = |m: Value| Mapping::compile(Some(&m)).unwrap_err().0;
        assert_eq!(
            invalid(json!({"p": {"@path": ["a"]}})),
            ["/p/@path should be a string or a mapping directive but it is an array."]
        );
        assert_eq!(
            invalid(json!({"m": {"@merge": {"direction": "up", "objects": []}}})),
            ["/m/@merge/direction should be one of left, right but it is \"up\"."]
        );
        // The objects are checked from the root, as mapping-kit does.
        assert_eq!(
            invalid(json!({"m": {"@merge": {"direction": "left", "objects": ["x"]}}})),
            ["/ should be a object or a mapping directive but it is a string."]
        );
        assert_eq!(
            invalid(json!({"a": {"@arrayPath": []}})),
            ["/a/@arrayPath should be a string or a mapping directive but it is an undefined."]
        );
        assert!(
            Mapping::compile(Some(
                &json!({"j": {"@json": {"mode": "ENCODE", "value": 1}}})
            ))
            .is_ok()
        );
    }

    #[test]
    fn resolution_matches_mapping_kit() {
        let event = json!({"a": {"b": 1}, "zero": [0], "nul": [null], "s": "x"});
        // `[0] != ''` is true in JavaScript; `[null] != ''` is false.
        let got = apply(
            json!({
                "z": {"@if": {"blank": {"@path": "$.zero"}, "then": 1, "else": 2}},
                "n": {"@if": {"blank": {"@path": "$.nul"}, "then": 1, "else": 2}},
                "t": {"@transform": {"apply": {"@path": "$.a"}, "mapping": {"b": {"@path": "$.b"}}}},
                // Not a directive (another key beside `@path`; arrays are not validated): a plain
                // object, resolved key by key.
                "mixed": [{"@path": "$.s", "x": 1}],
            }),
            event.clone(),
        );
        assert_eq!(
            got.unwrap(),
            json!({"z": 1, "n": 2, "t": {"b": 1}, "mixed": [{"@path": "$.s", "x": 1}]})
        );
        let e = apply(
            json!({"x": {"@arrayPath": ["$.s", {"@transform": {"apply": {}, "mapping": {}}}]}}),
            json!({"s": ["str"]}),
        );
        assert!(
            e.unwrap_err()
                .contains("data must be an object, got string")
        );
    }
}
