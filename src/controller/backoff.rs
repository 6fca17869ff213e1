//! The delay before retrying a destination whose reconcile failed (an API error): it doubles with
//! each failure of that destination in a row, up to a ceiling, and starts over after a success,
//! so one broken destination backs off without slowing the others.

use crate::api::WebhookDestination;
use kube::runtime::reflector::ObjectRef;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const FIRST: Duration = Duration::from_secs(5);
const CEILING: Duration = Duration::from_secs(300);

#[derive(Default)]
pub struct ReconcileBackoff {
    failures: Mutex<HashMap<ObjectRef<WebhookDestination>, u32>>,
}

impl ReconcileBackoff {
    /// One more failure in a row for `dest`: how long to wait before the next try.
    pub fn failed(&self, dest: &WebhookDestination) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock");
        let count = failures.entry(ObjectRef::from_obj(dest)).or_insert(0);
        *count = count.saturating_add(1);
        delay(*count)
    }

    pub fn succeeded(&self, dest: &WebhookDestination) {
        self.failures
            .lock()
            .expect("backoff lock")
            .remove(&ObjectRef::from_obj(dest));
    }
}

/// 5 s, 10 s, 20 s … up to 5 minutes, for the `failures`-th failure in a row.
fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST.saturating_mul(1 << doublings).min(CEILING)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WebhookDestinationSpec;

    fn dest(name: &str) -> WebhookDestination {
        let spec: WebhookDestinationSpec =
            serde_json::from_value(serde_json::json!({"endpoint": {"url": "http://x"}})).unwrap();
        let mut d = WebhookDestination::new(name, spec);
        d.metadata.namespace = Some("ns".into());
        d
    }

    #[test]
    fn grows_per_destination_and_resets_on_success() {
        let backoff = ReconcileBackoff::default();
        let (a, b) = (dest("a"), dest("b"));
        let secs = |d| backoff.failed(d).as_secs();
        assert_eq!([secs(&a), secs(&a), secs(&a)], [5, 10, 20]);
        assert_eq!(secs(&b), 5, "another destination starts at the first delay");
        backoff.succeeded(&a);
        assert_eq!(secs(&a), 5, "a success starts over");
    }

    #[test]
    fn stops_growing_at_the_ceiling() {
        assert_eq!(delay(7), Duration::from_secs(300));
        assert_eq!(delay(u32::MAX), CEILING);
    }
}
