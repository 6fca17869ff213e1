//! The subscription parser: any text a user writes is refused with an error or matched
//! against events, never a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(subscription) = hookline::pipeline::subscription::Subscription::parse(text) {
        let event = serde_json::json!({
            "type": "track", "event": "Order Completed", "userId": "u-1",
            "properties": {"total": 12.5, "n": 3, "tags": ["a", "b"], "none": null, "ok": true},
            "traits": {"email": "a@example.com"}, "context": {"ip": "1.2.3.4"}
        });
        let _ = subscription.matches(&event);
    }
});
