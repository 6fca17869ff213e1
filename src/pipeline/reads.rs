//! What of an event a destination reads, so that the worker parses only that: a Segment event's
//! `context` (page, user agent, campaign, library…) is most of its bytes, and unless the
//! subscription or the mapping looks into it, it never needs to become values. Parsing the
//! whole event was half of what a worker spent per event.

use super::envelope::Envelope;
use super::mapping::Mapping;
use super::subscription::Subscription;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, Error, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// The top-level fields of an event that a destination reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Reads {
    Everything,
    Only(Vec<String>),
}

impl Reads {
    /// What the subscription and the mapping read, and the `messageId` every request carries.
    /// An insert function gets the whole event.
    pub fn of(subscription: &Subscription, mapping: &Mapping, has_function: bool) -> Reads {
        let Some(mut fields) = mapping.read_fields().filter(|_| !has_function) else {
            return Reads::Everything;
        };
        fields.extend(subscription.fields().into_iter().map(String::from));
        fields.insert("messageId".into());
        Reads::Only(fields.into_iter().collect())
    }

    /// A queue record, its event parsed without the fields nobody reads, in one pass.
    pub fn record(&self, bytes: &[u8]) -> serde_json::Result<Envelope> {
        // UTF-8 checked once for the whole record: parsing bytes checks string by string.
        let Ok(text) = std::str::from_utf8(bytes) else {
            return serde_json::from_slice(bytes);
        };
        let mut parser = serde_json::Deserializer::from_str(text);
        match parser
            .deserialize_map(Record(self))
            .and_then(|r| parser.end().map(|()| r))
        {
            Ok(record) => Ok(record),
            // An event that is not an object (a dead letter of an unreadable record, replayed)
            // has no fields to leave out.
            Err(_) => serde_json::from_slice(bytes),
        }
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
                Key::Event => event = Some(record.next_value_seed(Event(self.0))?),
                Key::Other => {
                    record.next_value::<IgnoredAny>()?;
                }
            }
        }
        let event = event.ok_or_else(|| A::Error::missing_field("event"))?;
        Ok(Envelope { to, trace, event })
    }
}

struct Event<'a>(&'a Reads);

impl<'de> DeserializeSeed<'de> for Event<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, event: D) -> Result<Value, D::Error> {
        match self.0 {
            Reads::Everything => Value::deserialize(event),
            Reads::Only(fields) => event.deserialize_map(Fields(fields)),
        }
    }
}

/// An object of which only the fields named are kept; the others are skipped as text.
struct Fields<'a>(&'a [String]);

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut object: A) -> Result<Value, A::Error> {
        let mut kept = Map::with_capacity(self.0.len());
        while let Some(key) = object.next_key_seed(Wanted(self.0))? {
            match key {
                Some(key) => {
                    kept.insert(key, object.next_value()?);
                }
                None => {
                    object.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }
}

/// A key, owned only when it is one of the fields.
struct Wanted<'a>(&'a [String]);

impl<'de> DeserializeSeed<'de> for Wanted<'_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, key: D) -> Result<Self::Value, D::Error> {
        key.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Wanted<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().any(|f| f == key).then(|| key.to_owned()))
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

    #[test]
    fn only_the_fields_read_are_parsed() {
        let subscription = Subscription::parse(r#"type = "track" and context.ip != null"#).unwrap();
        let mapping = Mapping::compile(Some(&json!({"user": {"@path": "$.userId"}}))).unwrap();
        let reads = Reads::of(&subscription, &mapping, false);
        assert_eq!(
            reads,
            Reads::Only(
                ["context", "messageId", "type", "userId"]
                    .map(String::from)
                    .to_vec()
            )
        );
        let event = json!({"type": "track", "userId": "u", "messageId": "m",
            "properties": {"big": [1, 2, 3]}, "context": {"ip": "1"}, "timestamp": "t"});
        let to = ["a".to_string()];
        let record = read(&reads, &event.to_string(), Some(&to));
        assert_eq!(
            record.event,
            json!({"type": "track", "userId": "u", "messageId": "m", "context": {"ip": "1"}})
        );
        assert_eq!(record.to.as_deref(), Some(&to[..]));
        assert_eq!(record.trace.as_deref(), Some("00-trace"));
        // Keys with escapes, repeated keys (the last value wins, as in a full parse), and
        // what is not an object at all.
        let text = r#"{"user\u0049d": "a", "userId": "b", "skip": {"x": "\""}}"#;
        assert_eq!(read(&reads, text, None).event, json!({"userId": "b"}));
        assert_eq!(read(&reads, "[1]", None).event, json!([1]));
        assert!(reads.record(b"{\"event\": {\"userId\": ").is_err());
        assert!(reads.record(b"{\"to\": []}").is_err());
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
}
