//! JavaScript value semantics that Segment's mapping-kit and trigger language rely on, so that
//! Hookline gives byte-for-byte the hosted product's results on the same input.

use serde_json::Value;
use std::borrow::Cow;
use std::io::Write;

/// mapping-kit's `get(obj, path)` (`@path`, `@arrayPath`, `@template` placeholders): the path is
/// split on `.`, on `[` before a quote or digit and on `]`s after one, then quotes are removed —
/// so `a["b"]` and `a.b` are the same key while `[txt] name` stays one key.
pub fn get<'a>(root: Option<&'a Value>, path: &str) -> Option<Cow<'a, Value>> {
    if path.contains(['[', ']', '"', '\'']) {
        walk(root, mapping_kit_keys(path))
    } else {
        // The usual `a.b.c`: nothing to unquote, no allocation per call.
        walk(root, path.split('.').filter(|k| !k.is_empty()))
    }
}

/// The keys [`get`] walks for `path`, split once for a path used on every event.
pub fn path_keys(path: &str) -> Vec<String> {
    if path.contains(['[', ']', '"', '\'']) {
        mapping_kit_keys(path)
    } else {
        path.split('.')
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// [`get`] with the path split beforehand ([`path_keys`]).
pub fn get_keys<'a>(root: Option<&'a Value>, keys: &[String]) -> Option<Cow<'a, Value>> {
    walk(root, keys)
}

/// destination-subscriptions' `get`: the path is split on every `.`, `[` and `]`.
pub fn get_split<'a>(root: Option<&'a Value>, path: &str) -> Option<Cow<'a, Value>> {
    walk(root, split_keys(path))
}

/// The keys [`get_split`] walks for `path`.
pub fn split_keys(path: &str) -> impl Iterator<Item = &str> {
    path.split(['.', '[', ']']).filter(|k| !k.is_empty())
}

/// Walks `keys` with `acc && acc[key]`, so a falsy intermediate (null, 0, "", false) is returned
/// as it is instead of `undefined`; no keys is the root itself.
fn walk<'a, K: AsRef<str>>(
    root: Option<&'a Value>,
    keys: impl IntoIterator<Item = K>,
) -> Option<Cow<'a, Value>> {
    let mut current = Cow::Borrowed(root?);
    for key in keys {
        if !is_truthy(&current) {
            return Some(current);
        }
        current = match current {
            Cow::Borrowed(v) => index(v, key.as_ref())?,
            Cow::Owned(v) => Cow::Owned(index(&v, key.as_ref())?.into_owned()),
        };
    }
    Some(current)
}

/// The keys of a mapping-kit path, as `path.split(/\[(?="|'|\d)|\.|(?<="|'|\d)]+/)` gives them,
/// empty pieces dropped and quotes removed.
fn mapping_kit_keys(path: &str) -> Vec<String> {
    let quote_or_digit = |c: Option<&char>| c.is_some_and(|c| matches!(c, '"' | '\'' | '0'..='9'));
    let chars: Vec<char> = path.chars().collect();
    let mut pieces = vec![String::new()];
    let mut i = 0;
    while i < chars.len() {
        let separator = match chars[i] {
            '.' => 1,
            '[' if quote_or_digit(chars.get(i + 1)) => 1,
            ']' if i > 0 && quote_or_digit(chars.get(i - 1)) => {
                chars[i..].iter().take_while(|c| **c == ']').count()
            }
            _ => 0,
        };
        if separator == 0 {
            pieces.last_mut().expect("never empty").push(chars[i]);
            i += 1;
        } else {
            pieces.push(String::new());
            i += separator;
        }
    }
    pieces
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| p.replace(['"', '\''], ""))
        .collect()
}

/// `value[key]` for JSON values, including what JS gives for strings and arrays (`length`, indices).
fn index<'a>(value: &'a Value, key: &str) -> Option<Cow<'a, Value>> {
    match value {
        Value::Object(map) => field(map, key).map(Cow::Borrowed),
        Value::Array(items) if key == "length" => Some(Cow::Owned(Value::from(items.len()))),
        Value::Array(items) => array_index(key)
            .and_then(|i| items.get(i))
            .map(Cow::Borrowed),
        Value::String(s) if key == "length" => {
            Some(Cow::Owned(Value::from(s.encode_utf16().count())))
        }
        Value::String(s) => {
            let i = array_index(key)?;
            let unit = s.encode_utf16().nth(i)?;
            Some(Cow::Owned(Value::String(String::from_utf16_lossy(&[unit]))))
        }
        _ => None,
    }
}

/// `value[key]` when `value` is an object (`Value::get`, through [`field`]).
pub fn member<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.as_object().and_then(|map| field(map, key))
}

/// `map[key]`. An event's objects are small, and comparing a few short keys costs less than
/// hashing one with SipHash (serde_json's maps use it, and do not let us choose).
pub fn field<'a>(map: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    const SCANNED_UP_TO: usize = 16;
    if map.len() <= SCANNED_UP_TO {
        map.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    } else {
        map.get(key)
    }
}

fn array_index(key: &str) -> Option<usize> {
    if key.len() > 1 && key.starts_with('0') {
        return None;
    }
    key.parse().ok()
}

pub fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// JavaScript's `String(value)`.
pub fn to_js_string(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => js_number(n),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::Null => String::new(),
                other => to_js_string(other),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".into(),
    }
}

fn js_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{f:.0}")
    } else if f.abs() >= 1e21 || f.abs() < 1e-6 {
        // JS switches to exponent form outside [1e-6, 1e21) and always signs the exponent.
        let e = format!("{f:e}");
        match e.split_once('e') {
            Some((m, x)) if !x.starts_with('-') => format!("{m}e+{x}"),
            _ => e,
        }
    } else {
        format!("{f}")
    }
}

/// `JSON.stringify(value)`: compact, with numbers written as JavaScript writes them (`1`, not `1.0`).
pub fn stringify(value: &Value) -> String {
    String::from_utf8(to_json(value)).expect("JSON text is UTF-8")
}

/// [`stringify`] as bytes, for a request body.
pub fn to_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_json(value, &mut out);
    out
}

/// Written straight into `out`: a string or number formatted on its own first cost an
/// allocation each, for every field of every delivered event.
pub fn write_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => match n.as_i64() {
            Some(i) => write!(out, "{i}").expect("writing to memory cannot fail"),
            None => out.extend_from_slice(js_number(n).as_bytes()),
        },
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_json(v, out);
            }
            out.push(b'}');
        }
    }
}

/// A JSON string. Most need no escaping and are copied in one piece: serde_json's writer
/// looks each byte up and writes piece by piece, which showed for every key of every event.
pub fn write_string(s: &str, out: &mut Vec<u8>) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        serde_json::to_writer(out, s).expect("strings always serialize");
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// The name JS code in mapping-kit uses for a value's type in its messages (`realTypeOf`).
pub fn type_name(value: Option<&Value>) -> &'static str {
    match value {
        None => "undefined",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn get_walks_dots_and_brackets() {
        let v = json!({"a": {"b": [{"c": 1}, {"c": 2}]}});
        assert_eq!(get(Some(&v), "a.b[1].c").unwrap().into_owned(), json!(2));
        assert_eq!(get(Some(&v), "a.b.length").unwrap().into_owned(), json!(2));
        assert!(get(Some(&v), "a.x.y").is_none());
        assert_eq!(get(Some(&v), "a.b[1]['c']").unwrap().into_owned(), json!(2));
        assert_eq!(
            get(Some(&v), "[\"a\"].b[0].c").unwrap().into_owned(),
            json!(1)
        );
        assert_eq!(get(Some(&v), "").unwrap().into_owned(), v);
        assert_eq!(get(Some(&v), ".").unwrap().into_owned(), v);
    }

    #[test]
    fn mapping_kit_brackets_without_quote_or_digit_are_part_of_the_key() {
        let v = json!({"[txt] non": true, "[txt] nest": {"inner": 3}, "a": {"b": 1}});
        assert_eq!(
            get(Some(&v), "[txt] non").unwrap().into_owned(),
            json!(true)
        );
        assert_eq!(
            get(Some(&v), "[txt] nest.inner").unwrap().into_owned(),
            json!(3)
        );
        assert!(get(Some(&v), "a[b]").is_none());
        assert_eq!(get_split(Some(&v), "a[b]").unwrap().into_owned(), json!(1));
    }

    #[test]
    fn get_returns_falsy_intermediate() {
        let v = json!({"z": 0, "s": "", "n": null});
        assert_eq!(get(Some(&v), "z.b").unwrap().into_owned(), json!(0));
        assert_eq!(get(Some(&v), "s.b").unwrap().into_owned(), json!(""));
        assert_eq!(get(Some(&v), "n.b").unwrap().into_owned(), json!(null));
    }

    #[test]
    fn js_strings() {
        assert_eq!(to_js_string(&json!(1.0)), "1");
        assert_eq!(to_js_string(&json!(1.5)), "1.5");
        assert_eq!(to_js_string(&json!([1, null, "a"])), "1,,a");
        assert_eq!(to_js_string(&json!({"a": 1})), "[object Object]");
    }

    #[test]
    fn fields_are_found_in_small_and_large_objects_alike() {
        for size in [1, 16, 17, 40] {
            let map: serde_json::Map<String, Value> =
                (0..size).map(|i| (format!("k{i}"), json!(i))).collect();
            let object = Value::Object(map);
            for i in 0..size {
                assert_eq!(member(&object, &format!("k{i}")), Some(&json!(i)));
            }
            assert_eq!(member(&object, "missing"), None);
        }
        assert_eq!(member(&json!([1]), "0"), None);
    }

    #[test]
    fn stringify_writes_what_json_stringify_writes() {
        let v = json!({
            "quote\"d": "line\nbreak \u{1} é \\",
            "numbers": [1, -7, 1.0, 2.5, 18446744073709551615u64, 1e21, 1e-7],
            "nested": {"t": true, "f": false, "n": null, "empty": [], "obj": {}},
        });
        let expected = r#"{"quote\"d":"line\nbreak \u0001 é \\","numbers":[1,-7,1,2.5,18446744073709551615,1e+21,1e-7],"nested":{"t":true,"f":false,"n":null,"empty":[],"obj":{}}}"#;
        assert_eq!(stringify(&v), expected);
        assert_eq!(to_json(&v), expected.as_bytes());
    }
}
