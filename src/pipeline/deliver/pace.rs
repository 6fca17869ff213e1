//! Pacing one destination's requests: its rate limit, a token bucket shared by all of them, and
//! a `429` with `Retry-After`, which holds every request of the destination rather than only
//! the one that got it. The bucket's arithmetic is pure, tested without sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `spec.delivery.rateLimit`, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitPolicy {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    held_until: Option<Instant>,
}

impl Bucket {
    /// Takes one request's token at `now`, or says how long until one is there.
    fn take(&mut self, limit: Option<RateLimitPolicy>, now: Instant) -> Result<(), Duration> {
        if let Some(until) = self.held_until {
            if until > now {
                return Err(until - now);
            }
            self.held_until = None;
        }
        let Some(limit) = limit else {
            return Ok(());
        };
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_second).min(f64::from(limit.burst));
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / limit.per_second,
            ))
        }
    }
}

#[derive(Debug)]
pub struct Pace {
    limit: Option<RateLimitPolicy>,
    bucket: Mutex<Bucket>,
}

impl Pace {
    pub fn new(limit: Option<RateLimitPolicy>) -> Pace {
        Pace {
            limit,
            bucket: Mutex::new(Bucket {
                tokens: limit.map_or(0.0, |l| f64::from(l.burst)),
                refilled: Instant::now(),
                held_until: None,
            }),
        }
    }

    /// Waits until the destination may send one more request.
    pub async fn ready(&self) {
        while let Err(wait) = self.try_take() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes one request's token now, or says how long until one is there (a source's
    /// ingestion answers 429 with that as `Retry-After` instead of waiting).
    pub fn try_take(&self) -> Result<(), Duration> {
        self.bucket
            .lock()
            .expect("pace lock")
            .take(self.limit, Instant::now())
    }

    /// No request of the destination goes out before `until` (a `429`'s `Retry-After`).
    pub fn hold_until(&self, until: Instant) {
        let mut bucket = self.bucket.lock().expect("pace lock");
        bucket.held_until = Some(bucket.held_until.map_or(until, |h| h.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(now: Instant, tokens: f64) -> Bucket {
        Bucket {
            tokens,
            refilled: now,
            held_until: None,
        }
    }

    #[test]
    fn a_burst_then_the_steady_rate() {
        let limit = Some(RateLimitPolicy {
            per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        let mut b = bucket(t0, 3.0);
        for _ in 0..3 {
            assert_eq!(b.take(limit, t0), Ok(()));
        }
        assert_eq!(b.take(limit, t0), Err(Duration::from_millis(500)));
        let later = t0 + Duration::from_millis(500);
        assert_eq!(b.take(limit, later), Ok(()));
        // A long quiet spell refills only up to the burst.
        let quiet = later + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.take(limit, quiet), Ok(()));
        }
        assert!(b.take(limit, quiet).is_err());
    }

    #[test]
    fn a_hold_stops_everything_until_it_ends_even_without_a_limit() {
        let t0 = Instant::now();
        let mut b = bucket(t0, 0.0);
        b.held_until = Some(t0 + Duration::from_secs(2));
        assert_eq!(b.take(None, t0), Err(Duration::from_secs(2)));
        assert_eq!(b.take(None, t0 + Duration::from_secs(2)), Ok(()));
        assert_eq!(b.held_until, None);
    }
}
