//! What of an event a destination reads, so that the worker parses only that: a Segment event's
//! `context` (page, user agent, campaign, library…) is most of its bytes, and unless the
//! subscription or the mapping looks into it, it never needs to become values. Parsing the
//! whole event was half of what a worker spent per event.

use super::envelope::Envelope;
use super::mapping::Mapping;
use super::subscription::Subscription;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, Error, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// What of an event a destination reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Reads {
    Everything,
    Only(Fields),
}

/// Fields of an object that are read: each whole (`None`), or only the fields of it given.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fields(Vec<(String, Option<Fields>)>);

impl Fields {
    /// Adds the field at `path` (keys from here down).
    fn add(&mut self, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let under = |rest: &[String]| {
            (!rest.is_empty()).then(|| {
                let mut fields = Fields::default();
                fields.add(rest);
                fields
            })
        };
        match self.0.iter_mut().find(|(key, _)| key == first) {
            None => self.0.push((first.clone(), under(rest))),
            Some((_, None)) => {}
            Some((_, part @ Some(_))) if rest.is_empty() => *part = None,
            Some((_, Some(fields))) => fields.add(rest),
        }
    }

    fn get(&self, key: &str) -> Option<&Option<Fields>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, read)| read)
    }
}

impl Reads {
    /// What the subscription and the mapping read, and the `messageId` every request carries.
    /// An insert function gets the whole event.
    pub fn of(subscription: &Subscription, mapping: &Mapping, has_function: bool) -> Reads {
        let Some(paths) = mapping.read_paths().filter(|_| !has_function) else {
            return Reads::Everything;
        };
        let mut fields = Fields::default();
        let message_id = vec!["messageId".to_string()];
        for path in paths
            .iter()
            .chain(&subscription.paths())
            .chain([&message_id])
        {
            fields.add(path);
        }
        Reads::Only(fields)
    }

    /// A queue record, its event parsed without what nobody reads, in one pass.
    pub fn record(&self, bytes: &[u8]) -> serde_json::Result<Envelope> {
        // UTF-8 checked once for the whole record: parsing bytes checks string by string.
        let Ok(text) = std::str::from_utf8(bytes) else {
            return serde_json::from_slice(bytes);
        };
        let mut parser = serde_json::Deserializer::from_str(text);
        let record = parser.deserialize_map(Record(self))?;
        parser.end()?;
        Ok(record)
    }
}

/// The keys of a queue record ([`Envelope`]).
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Key {
    To,
    Trace,
    Event,
    #[serde(other)]
    Other,
}

struct Record<'a>(&'a Reads);

impl<'de> Visitor<'de> for Record<'_> {
    type Value = Envelope;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a queue record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut record: A) -> Result<Envelope, A::Error> {
        let (mut to, mut trace, mut event) = (None, None, None);
        while let Some(key) = record.next_key()? {
            match key {
                Key::To => to = record.next_value()?,
                Key::Trace => trace = record.next_value()?,
                Key::Event => {
                    event = Some(match self.0 {
                        Reads::Everything => record.next_value()?,
                        Reads::Only(fields) => record.next_value_seed(Part(fields))?,
                    })
                }
                Key::Other => {
                    record.next_value::<IgnoredAny>()?;
                }
            }
        }
        let event = event.ok_or_else(|| A::Error::missing_field("event"))?;
        Ok(Envelope { to, trace, event })
    }
}

/// A value of which, when it is an object, only the fields given are kept (the others are
/// skipped as text); any other value is kept whole.
struct Part<'a>(&'a Fields);

impl<'de> DeserializeSeed<'de> for Part<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, value: D) -> Result<Value, D::Error> {
        value.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Part<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut object: A) -> Result<Value, A::Error> {
        let mut kept = Map::with_capacity(self.0.0.len());
        while let Some(key) = object.next_key_seed(Wanted(self.0))? {
            match key {
                Some((key, None)) => {
                    kept.insert(key, object.next_value()?);
                }
                Some((key, Some(fields))) => {
                    kept.insert(key, object.next_value_seed(Part(fields))?);
                }
                None => {
                    object.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut all = Vec::new();
        while let Some(item) = items.next_element()? {
            all.push(item);
        }
        Ok(Value::Array(all))
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<Value, E> {
        Ok(Value::String(text.to_owned()))
    }

    fn visit_bool<E: Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: Error>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_u64<E: Error>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_f64<E: Error>(self, n: f64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_unit<E: Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// A key, owned (with what of its value is read) only when it is one of the fields.
struct Wanted<'a>(&'a Fields);

impl<'de, 'a> DeserializeSeed<'de> for Wanted<'a> {
    type Value = Option<(String, &'a Option<Fields>)>;

    fn deserialize<D: Deserializer<'de>>(self, key: D) -> Result<Self::Value, D::Error> {
        key.deserialize_str(self)
    }
}

impl<'de, 'a> Visitor<'de> for Wanted<'a> {
    type Value = Option<(String, &'a Option<Fields>)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.get(key).map(|read| (key.to_owned(), read)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::envelope;
    use serde_json::json;

    /// `event` queued (for `to`, when given) and read back as `reads` reads it.
    fn read(reads: &Reads, event: &str, to: Option<&[String]>) -> Envelope {
        reads
            .record(&envelope::encode(to, Some("00-trace"), event.as_bytes()))
            .unwrap()
    }

    fn reads(subscription: &str, mapping: Value) -> Reads {
        let subscription = Subscription::parse(subscription).unwrap();
        Reads::of(
            &subscription,
            &Mapping::compile(Some(&mapping)).unwrap(),
            false,
        )
    }

    #[test]
    fn only_what_the_subscription_and_the_mapping_read_is_parsed() {
        let reads = reads(
            r#"type = "track" and context.page.path != null"#,
            json!({"user": {"@path": "$.userId"}, "total": {"@path": "$.properties.total"},
                   "all": {"@path": "$.properties.items"}, "items": {"@path": "$.properties.items.0"}}),
        );
        let event = json!({"type": "track", "userId": "u", "messageId": "m", "timestamp": "t",
            "properties": {"total": 1.5, "items": [{"a": 1}, {"b": 2}], "big": "x"},
            "context": {"ip": "1", "page": {"path": "/", "title": "T"}, "page2": {}}});
        let to = ["a".to_string()];
        let record = read(&reads, &event.to_string(), Some(&to));
        assert_eq!(
            record.event,
            json!({"type": "track", "userId": "u", "messageId": "m",
                   "properties": {"total": 1.5, "items": [{"a": 1}, {"b": 2}]},
                   "context": {"page": {"path": "/"}}})
        );
        assert_eq!(record.to.as_deref(), Some(&to[..]));
        assert_eq!(record.trace.as_deref(), Some("00-trace"));
    }

    #[test]
    fn values_off_the_objects_read_are_kept_whole_and_keys_read_as_a_full_parse_reads_them() {
        let reads = reads(
            "userId != null",
            json!({"x": {"@path": "$.a.b.c"}, "u": {"@path": "$.userId"}}),
        );
        for (event, kept) in [
            // Not objects where the path expects them: kept as they are.
            (r#"{"a": [{"b": 1}], "z": 0}"#, json!({"a": [{"b": 1}]})),
            (r#"{"a": "text", "z": 0}"#, json!({"a": "text"})),
            (r#"{"a": {"b": null, "z": 0}}"#, json!({"a": {"b": null}})),
            (
                r#"{"a": {"b": 12345678901234567890, "z": 0}}"#,
                json!({"a": {"b": 12345678901234567890u64}}),
            ),
            (
                r#"{"a": {"b": {"c": -1.5e300, "z": true}}}"#,
                json!({"a": {"b": {"c": -1.5e300}}}),
            ),
            // Escaped keys, and a repeated key whose last value wins, as in a full parse.
            (
                r#"{"user\u0049d": "a", "userId": "b", "skip": {"x": "\""}}"#,
                json!({"userId": "b"}),
            ),
            // Not an object at all.
            ("[1]", json!([1])),
            ("\"text\"", json!("text")),
        ] {
            assert_eq!(read(&reads, event, None).event, kept, "{event}");
        }
        assert!(reads.record(b"{\"event\": {\"userId\": ").is_err());
        assert!(reads.record(b"{\"to\": []}").is_err());
        assert!(
            reads
                .record(b"{\"event\": {\"userId\": \"\xff\"}}")
                .is_err()
        );
    }

    #[test]
    fn an_insert_function_or_an_unbounded_mapping_reads_everything() {
        let all = Subscription::all();
        let bounded = Mapping::compile(Some(&json!({"e": {"@path": "$.event"}}))).unwrap();
        assert_eq!(Reads::of(&all, &bounded, true), Reads::Everything);
        assert_eq!(
            Reads::of(&all, &Mapping::compile(None).unwrap(), false),
            Reads::Everything
        );
        let event = json!({"a": 1, "b": {"c": 2}});
        assert_eq!(
            read(&Reads::Everything, &event.to_string(), None).event,
            event
        );
    }

    #[test]
    fn a_field_read_whole_and_in_part_is_read_whole() {
        let mut fields = Fields::default();
        for path in [
            &["a", "b"][..],
            &["a"],
            &["a", "c"],
            &["d", "e"],
            &["d", "f"],
        ] {
            fields.add(&path.iter().map(|k| k.to_string()).collect::<Vec<_>>());
        }
        let d = Fields(vec![("e".into(), None), ("f".into(), None)]);
        assert_eq!(
            fields,
            Fields(vec![("a".into(), None), ("d".into(), Some(d))])
        );
    }
}
