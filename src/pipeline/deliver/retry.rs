//! When to try again: exponential backoff with jitter, `Retry-After`, attempt and time limits.
//! Pure data, tested without sleeping.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub max_duration: Duration,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            max_duration: Duration::from_secs(3600),
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait before the next attempt after `attempts` failed ones, `elapsed` since the first;
    /// `None` means give up. `jitter` is a random number in [0, 1): the wait is drawn from
    /// [backoff/2, backoff) so that many failing workers do not retry in lockstep. A server's
    /// `Retry-After` replaces the backoff: the server knows when it will be ready.
    pub fn next_delay(
        &self,
        attempts: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let exp = self
            .base
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
            .min(self.cap);
        let jittered = exp.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        let delay = retry_after.unwrap_or(jittered);
        (elapsed + delay <= self.max_duration).then_some(delay)
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_stops_at_the_limits() {
        let p = RetryPolicy {
            max_attempts: 4,
            ..Default::default()
        };
        assert_eq!(
            p.next_delay(1, Duration::ZERO, None, 0.0),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            p.next_delay(2, Duration::ZERO, None, 0.0),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            p.next_delay(3, Duration::ZERO, None, 0.999),
            Some(Duration::from_secs(4).mul_f64(0.9995))
        );
        assert_eq!(p.next_delay(4, Duration::ZERO, None, 0.0), None);
        assert_eq!(p.next_delay(1, Duration::from_secs(3600), None, 0.0), None);
    }

    #[test]
    fn retry_after_is_honoured() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.next_delay(1, Duration::ZERO, Some(Duration::from_secs(7)), 0.0),
            Some(Duration::from_secs(7))
        );
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-28T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after("Sat, 28 Nov 2026 10:00:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
    }
}
