//! Built-in sample events for `hookline test`, one per Segment message type.

use serde_json::{Value, json};

pub const TYPES: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];

pub fn sample(kind: &str) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut event = json!({
        "type": kind,
        "messageId": format!("test-{}", uuid::Uuid::new_v4()),
        "userId": "test-user-1",
        "anonymousId": "test-anonymous-1",
        "timestamp": now,
        "receivedAt": now,
        "context": {
            "library": {"name": "hookline-test", "version": env!("CARGO_PKG_VERSION")},
            "traits": {"email": "test.user@example.com", "name": "Test User"}
        }
    });
    let extra = match kind {
        "track" => {
            json!({"event": "Order Completed", "properties": {"order_id": "test-order-1", "total": 42.5, "currency": "USD"}})
        }
        "identify" => {
            json!({"traits": {"email": "test.user@example.com", "name": "Test User", "plan": "pro"}})
        }
        "page" => {
            json!({"name": "Home", "properties": {"path": "/", "url": "https://example.com/", "title": "Home"}})
        }
        "screen" => json!({"name": "Home", "properties": {"variation": "test"}}),
        "group" => {
            json!({"groupId": "test-group-1", "traits": {"name": "Test Company", "plan": "enterprise"}})
        }
        _ => json!({"previousId": "test-anonymous-1"}),
    };
    if let (Some(target), Value::Object(extra)) = (event.as_object_mut(), extra) {
        target.extend(extra);
    }
    event
}
