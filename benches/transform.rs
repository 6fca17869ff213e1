//! Insert-function throughput on one core: events per second through `InsertFunction::run`
//! for a trivial function and for a typical one (a few property rewrites). Target: ≥ 20,000
//! events/s for the trivial one. Run with `cargo bench --bench transform [-- EVENTS]`.

use hookline::pipeline::transform::{InsertFunction, Outcome};
use serde_json::json;
use std::time::Instant;

const TRIVIAL: &str = "async function onTrack(event) { return event; }";
const TYPICAL: &str = r#"
async function onTrack(event, settings) {
  const p = event.properties;
  p.total_cents = Math.round(p.total * 100);
  p.currency = (p.currency || "usd").toUpperCase();
  p.email = (event.context.traits.email || "").toLowerCase();
  p.source = settings.destination;
  delete p.internal_note;
  if (p.total_cents <= 0) throw new DropEvent("free order");
  return event;
}
"#;

fn main() {
    let events: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50_000);
    let event = json!({
        "type": "track", "event": "Order Completed", "userId": "u-42",
        "messageId": "m-1", "timestamp": "2026-11-28T10:00:00.000Z",
        "context": {"traits": {"email": "Ada@Example.com"}, "library": {"name": "analytics.js"}},
        "properties": {"order_id": "o-1001", "total": 99.5, "currency": "eur", "internal_note": "x"},
    });
    let settings = json!({"destination": "crm"});
    for (name, source) in [("trivial", TRIVIAL), ("typical", TYPICAL)] {
        let function = InsertFunction::compile(source, "bench").expect("the function compiles");
        let started = Instant::now();
        for _ in 0..events {
            let outcome = function.run(&event, &settings);
            assert!(matches!(outcome, Outcome::Continue(_)), "{outcome:?}");
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "{name:8} function: {events} events in {elapsed:.2} s = {:.0} events/s ({:.1} µs/event)",
            events as f64 / elapsed,
            elapsed * 1e6 / events as f64
        );
    }
}
