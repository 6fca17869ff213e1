//! Every vector in `../shared/conformance/`, loaded as it is; a missing file fails the suite.

use hookline::pipeline::envelope;
use hookline::pipeline::jsvalue;
use hookline::pipeline::mapping::Mapping;
use hookline::pipeline::reads::Reads;
use hookline::pipeline::subscription::Subscription;
use serde_json::{Value, json};
use std::path::PathBuf;

fn vectors(file: &str) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance")
        .join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let vectors: Vec<Value> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(!vectors.is_empty(), "{} holds no vectors", path.display());
    vectors
}

/// `event` as a worker reads it from the queue for a destination that reads `reads`.
fn as_read(reads: &Reads, event: &Value) -> Value {
    let json = serde_json::to_vec(event).expect("events serialize");
    let record = envelope::encode(None, None, &json);
    reads.record(&record).expect("what was queued reads").event
}

fn name(v: &Value) -> &str {
    v["name"].as_str().unwrap_or("<unnamed>")
}

#[test]
fn mapping_vectors() {
    let mut failures = Vec::new();
    for v in vectors("mapping.json") {
        let outcome = Mapping::compile(Some(&v["mapping"]))
            .map_err(|e| e.0)
            .and_then(|m| {
                let full = m.apply(&v["event"]).map_err(|e| e.to_string());
                // The worker parses only the fields the mapping reads: the same result.
                let reads = Reads::of(&Subscription::all(), &m, false);
                let read = m
                    .apply(&as_read(&reads, &v["event"]))
                    .map_err(|e| e.to_string());
                if read != full {
                    return Err(vec![format!("with only {reads:?} parsed: {read:?}")]);
                }
                // Written as a request body as it is resolved: the same as the value, stringified.
                let mut body = Vec::new();
                let written = m
                    .write(&v["event"], &mut body)
                    .map(|()| String::from_utf8_lossy(&body).into_owned())
                    .map_err(|e| e.to_string());
                if written != full.as_ref().map(jsvalue::stringify).map_err(String::clone) {
                    return Err(vec![format!("written: {written:?}")]);
                }
                full.map_err(|e| vec![e])
            });
        let ok = match (
            &outcome,
            v.get("expected"),
            v.get("expected_error"),
            v.get("expected_errors"),
        ) {
            (Ok(got), Some(expected), _, _) => got == expected,
            (Err(errors), _, Some(Value::String(text)), _) => {
                errors.iter().any(|e| e.contains(text.as_str()))
            }
            (Err(errors), _, _, Some(Value::Array(expected))) => {
                errors.len() == expected.len()
                    && expected.iter().all(|x| {
                        let path = x
                            .as_str()
                            .unwrap_or_default()
                            .split(' ')
                            .next()
                            .unwrap_or_default();
                        errors.iter().any(|e| e.starts_with(path))
                    })
            }
            _ => false,
        };
        if !ok {
            failures.push(format!("{}: got {outcome:?}", name(&v)));
        }
    }
    assert!(
        failures.is_empty(),
        "mapping vectors failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn subscription_vectors() {
    let mut failures = Vec::new();
    for v in vectors("subscription.json") {
        let text = v["subscription"]
            .as_str()
            .expect("subscription is a string");
        let outcome = Subscription::parse(text).map(|s| {
            let full = s.matches(&v["event"]);
            let bounded = Mapping::compile(Some(&json!({}))).expect("an empty mapping is valid");
            let reads = Reads::of(&s, &bounded, false);
            let read = s.matches(&as_read(&reads, &v["event"]));
            assert_eq!(read, full, "{}: with only {reads:?} parsed", name(&v));
            full
        });
        let ok = match (&outcome, v.get("expected"), v.get("expected_error")) {
            (Ok(got), Some(Value::Bool(expected)), _) => got == expected,
            (Err(e), _, Some(Value::String(needle))) => e.to_string().contains(needle.as_str()),
            _ => false,
        };
        if !ok {
            failures.push(format!("{}: got {outcome:?}", name(&v)));
        }
    }
    assert!(
        failures.is_empty(),
        "subscription vectors failed:\n{}",
        failures.join("\n")
    );
}
