//! The circuit breaker of one destination: after `consecutive failures` failed requests the
//! endpoint is taken to be down, and instead of every event spending its attempts on it, the
//! destination holds its queue and sends one probe after a pause that doubles while the probes
//! fail. The first healthy answer closes it again. An endpoint that stays down for
//! `disableAfterSeconds` is no longer probed: a person resumes it (by restarting the worker).
//!
//! Health is judged by time too: an endpoint that has answered nothing but failures for
//! `unhealthyAfterSeconds` is reported unhealthy even when too few requests were made to open
//! the breaker (one event retried with a growing backoff makes few); whether traffic is held
//! still follows the count. An endpoint that is up but refuses every request (a 4xx for each:
//! a wrong mapping, a changed API) holds nothing — retrying cannot help — yet delivers nothing
//! either: refusals with no delivery in between for `unhealthyAfterSeconds` are reported as
//! `EventsRejected`. The state machine is pure, tested without sleeping; waiting is layered on
//! top.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

/// The `Delivering` reason of an endpoint no longer probed: a person has to resume it, so the
/// destination is not `Ready` either.
pub const PAUSED: &str = "DeliveryPaused";

/// The `Delivering` reason of an endpoint that refuses every request.
pub const REJECTED: &str = "EventsRejected";

/// The longest pause between two probes.
pub const MAX_PROBE_PAUSE: Duration = Duration::from_secs(300);

/// `spec.delivery.circuitBreaker` and `disableAfterSeconds`, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    pub consecutive_failures: u32,
    pub first_pause: Duration,
    /// Failing this long with no success in between is unhealthy, however few the requests.
    pub unhealthy_after: Duration,
    pub disable_after: Option<Duration>,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            consecutive_failures: 10,
            first_pause: Duration::from_secs(5),
            unhealthy_after: Duration::from_secs(30),
            disable_after: None,
        }
    }
}

/// What the endpoint's answer says about its health.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Health {
    /// It took the request (2xx), or asked for patience (429).
    Up,
    /// It answered as a live server does, and refused the request for good (any other 4xx, or
    /// a 3xx): the events are dead-lettered, not retried.
    Refused,
    /// Connection error, timeout, 408 or 5xx.
    Down,
}

/// May a request go now?
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Yes, as usual: its failure counts as an attempt.
    Send,
    /// Yes, as the one probe: its failure does not count as an attempt.
    Probe,
    /// Not before this instant (or a change of state); `None`: not until a person acts.
    Wait(Option<Instant>),
}

/// When an endpoint started failing with no success since: by the clock, and by the wall
/// clock for the message.
type FailingSince = Option<(Instant, SystemTime)>;

#[derive(Debug, Clone, PartialEq)]
enum State {
    Closed {
        failures: u32,
        failing_since: FailingSince,
    },
    Open {
        since: Instant,
        since_wall: SystemTime,
        probe_at: Instant,
        pause: Duration,
        probing: bool,
    },
    Paused {
        since_wall: SystemTime,
    },
}

#[derive(Debug)]
struct Machine {
    policy: BreakerPolicy,
    state: State,
    last_error: String,
    /// Since when every answer was a refusal (no delivery in between), and the last one.
    refusing_since: FailingSince,
    last_refusal: String,
}

impl Machine {
    fn admit(&mut self, now: Instant) -> Admission {
        match &mut self.state {
            State::Closed { .. } => Admission::Send,
            State::Open {
                probe_at, probing, ..
            } => {
                if *probing || now < *probe_at {
                    Admission::Wait((!*probing).then_some(*probe_at))
                } else {
                    *probing = true;
                    Admission::Probe
                }
            }
            State::Paused { .. } => Admission::Wait(None),
        }
    }

    /// Records an answer; `true` when the health it reports changed (healthy, unhealthy,
    /// paused).
    fn record(
        &mut self,
        health: Health,
        probe: bool,
        error: impl FnOnce() -> String,
        now: Instant,
    ) -> bool {
        let before = std::mem::discriminant(&self.view(now));
        match health {
            Health::Up => self.refusing_since = None,
            Health::Refused => {
                self.refusing_since.get_or_insert((now, SystemTime::now()));
                self.last_refusal = error();
                return self.close(before, now);
            }
            Health::Down => {}
        }
        match (health, &mut self.state) {
            (Health::Up | Health::Refused, _) => return self.close(before, now),
            (
                Health::Down,
                State::Closed {
                    failures,
                    failing_since,
                },
            ) => {
                *failures += 1;
                failing_since.get_or_insert((now, SystemTime::now()));
                self.last_error = error();
                if *failures >= self.policy.consecutive_failures {
                    self.state = State::Open {
                        since: now,
                        since_wall: SystemTime::now(),
                        probe_at: now + self.policy.first_pause,
                        pause: self.policy.first_pause,
                        probing: false,
                    };
                }
            }
            (
                Health::Down,
                State::Open {
                    since,
                    since_wall,
                    probe_at,
                    pause,
                    probing,
                },
            ) => {
                self.last_error = error();
                // Requests sent before the breaker opened only tell what is known already.
                if probe {
                    if self
                        .policy
                        .disable_after
                        .is_some_and(|d| now.saturating_duration_since(*since) >= d)
                    {
                        self.state = State::Paused {
                            since_wall: *since_wall,
                        };
                    } else {
                        *pause = (*pause * 2).min(MAX_PROBE_PAUSE);
                        *probe_at = now + *pause;
                        *probing = false;
                    }
                }
            }
            (Health::Down, State::Paused { .. }) => {}
        }
        before != std::mem::discriminant(&self.view(now))
    }

    /// A live answer: the breaker closes (a paused destination stays paused: a person resumes
    /// it).
    fn close(&mut self, before: std::mem::Discriminant<BreakerView>, now: Instant) -> bool {
        if !matches!(self.state, State::Paused { .. }) {
            self.state = State::Closed {
                failures: 0,
                failing_since: None,
            };
        }
        before != std::mem::discriminant(&self.view(now))
    }

    fn view(&self, now: Instant) -> BreakerView {
        match &self.state {
            State::Closed {
                failing_since: Some((since, since_wall)),
                ..
            } if now.saturating_duration_since(*since) >= self.policy.unhealthy_after => {
                BreakerView::Unhealthy {
                    since: *since_wall,
                    last_error: self.last_error.clone(),
                    held: false,
                }
            }
            State::Closed { .. } => match self.refusing_since {
                Some((since, since_wall))
                    if now.saturating_duration_since(since) >= self.policy.unhealthy_after =>
                {
                    BreakerView::Rejecting {
                        since: since_wall,
                        last_refusal: self.last_refusal.clone(),
                    }
                }
                _ => BreakerView::Healthy,
            },
            State::Open { since_wall, .. } => BreakerView::Unhealthy {
                since: *since_wall,
                last_error: self.last_error.clone(),
                held: true,
            },
            State::Paused { since_wall } => BreakerView::Paused {
                since: *since_wall,
                last_error: self.last_error.clone(),
            },
        }
    }
}

/// The breaker's state for `/status` and the resource's `Delivering` condition.
#[derive(Debug, Clone, PartialEq)]
pub enum BreakerView {
    Healthy,
    Unhealthy {
        since: SystemTime,
        last_error: String,
        /// The breaker is open: events are held and the endpoint probed. Otherwise it has
        /// failed for `unhealthyAfterSeconds` without yet failing enough requests in a row.
        held: bool,
    },
    Paused {
        since: SystemTime,
        last_error: String,
    },
    /// Up, but it has refused every request for `unhealthyAfterSeconds`, delivering none.
    Rejecting {
        since: SystemTime,
        last_refusal: String,
    },
}

impl BreakerView {
    /// `hookline_endpoint_healthy` and `hookline_delivery_paused` of destination `name`, set to
    /// this view.
    pub fn set_gauges(&self, name: &str) {
        crate::metrics::METRICS
            .endpoint_healthy
            .with_label_values(&[name])
            .set(i64::from(matches!(
                self,
                BreakerView::Healthy | BreakerView::Rejecting { .. }
            )));
        crate::metrics::METRICS
            .delivery_paused
            .with_label_values(&[name])
            .set(i64::from(matches!(self, BreakerView::Paused { .. })));
    }

    /// `(ok, reason, message)` of the `Delivering` condition of destination `name`.
    pub fn condition(&self, name: &str) -> (bool, &'static str, String) {
        let since = |t: &SystemTime| {
            chrono::DateTime::<chrono::Utc>::from(*t)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        match self {
            BreakerView::Healthy => (true, "Delivering", String::new()),
            // No countdown in the message: the resource's status is rewritten only when the
            // condition says something new.
            BreakerView::Unhealthy {
                since: t,
                last_error,
                held: true,
            } => (
                false,
                "EndpointUnhealthy",
                format!(
                    "the endpoint keeps failing since {}: {last_error}; its events are held (no attempts used) and it is probed with one request after a pause that doubles up to 5 minutes",
                    since(t),
                ),
            ),
            BreakerView::Unhealthy {
                since: t,
                last_error,
                held: false,
            } => (
                false,
                "EndpointUnhealthy",
                format!(
                    "the endpoint has answered nothing but failures since {}: {last_error}; its events are retried with backoff (spec.delivery.circuitBreaker: unhealthy after unhealthyAfterSeconds, held after consecutiveFailures failed requests in a row)",
                    since(t),
                ),
            ),
            BreakerView::Rejecting {
                since: t,
                last_refusal,
            } => (
                false,
                REJECTED,
                format!(
                    "the endpoint has refused every request since {} (last: {last_refusal}); refused events are dead-lettered, not retried: fix the mapping or the endpoint, and see what was refused with `hookline dlq list` ({name} -n NAMESPACE in the cluster)",
                    since(t),
                ),
            ),
            BreakerView::Paused {
                since: t,
                last_error,
            } => (
                false,
                PAUSED,
                format!(
                    "the endpoint has failed since {} (longer than spec.delivery.disableAfterSeconds): {last_error}; events are held and delivery is paused until the worker is restarted (kubectl rollout restart deployment/{name}-hookline, or restart hookline run)",
                    since(t)
                ),
            ),
        }
    }
}

/// The breaker shared by all requests of one destination.
#[derive(Debug)]
pub struct Breaker {
    machine: Mutex<Machine>,
    changed: Notify,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Breaker {
        Breaker {
            machine: Mutex::new(Machine {
                policy,
                state: State::Closed {
                    failures: 0,
                    failing_since: None,
                },
                last_error: String::new(),
                refusing_since: None,
                last_refusal: String::new(),
            }),
            changed: Notify::new(),
        }
    }

    /// Waits until a request may go; `true` when it is the probe.
    pub async fn admit(&self) -> bool {
        loop {
            let notified = self.changed.notified();
            let admission = self
                .machine
                .lock()
                .expect("breaker lock")
                .admit(Instant::now());
            match admission {
                Admission::Send => return false,
                Admission::Probe => return true,
                Admission::Wait(Some(until)) => tokio::select! {
                    _ = tokio::time::sleep_until(until.into()) => {}
                    _ = notified => {}
                },
                Admission::Wait(None) => notified.await,
            }
        }
    }

    /// Records an answer (`error` is asked for only when it failed); the new state when it
    /// changed with it.
    pub fn record(
        &self,
        health: Health,
        probe: bool,
        error: impl FnOnce() -> String,
    ) -> Option<BreakerView> {
        let mut machine = self.machine.lock().expect("breaker lock");
        let now = Instant::now();
        let changed = machine.record(health, probe, error, now);
        let view = changed.then(|| machine.view(now));
        drop(machine);
        if changed || probe {
            // Waiters re-check: the breaker closed, or the probe is over and the next is due.
            self.changed.notify_waiters();
        }
        view
    }

    pub fn view(&self) -> BreakerView {
        self.machine
            .lock()
            .expect("breaker lock")
            .view(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(failures: u32, disable_after: Option<u64>) -> Machine {
        Machine {
            policy: BreakerPolicy {
                consecutive_failures: failures,
                disable_after: disable_after.map(Duration::from_secs),
                ..BreakerPolicy::default()
            },
            state: State::Closed {
                failures: 0,
                failing_since: None,
            },
            last_error: String::new(),
            refusing_since: None,
            last_refusal: String::new(),
        }
    }

    #[test]
    fn refusing_every_request_for_unhealthy_after_is_events_rejected_until_one_is_delivered() {
        let t0 = Instant::now();
        let mut m = machine(10, None);
        let at = |s: u64| t0 + Duration::from_secs(s);
        for s in [0, 5, 29] {
            m.record(
                Health::Refused,
                false,
                || "HTTP 400: bad total".into(),
                at(s),
            );
            assert_eq!(m.view(at(s)), BreakerView::Healthy, "{s} s");
            assert_eq!(m.admit(at(s)), Admission::Send, "refusals hold nothing");
        }
        let view = m.view(at(30));
        let (ok, reason, message) = view.condition("crm");
        assert!(!ok);
        assert_eq!(reason, REJECTED);
        assert!(
            message.contains("HTTP 400: bad total") && message.contains("hookline dlq list"),
            "{message}"
        );
        // A failure in between changes nothing; one delivery clears it.
        m.record(Health::Down, false, || "HTTP 503".into(), at(30));
        assert!(matches!(m.view(at(30)), BreakerView::Rejecting { .. }));
        m.record(Health::Up, false, String::new, at(31));
        assert_eq!(m.view(at(31)), BreakerView::Healthy);
        m.record(Health::Refused, false, || "HTTP 422".into(), at(40));
        assert_eq!(m.view(at(69)), BreakerView::Healthy);
        assert!(matches!(m.view(at(70)), BreakerView::Rejecting { .. }));
    }

    #[test]
    fn failing_for_unhealthy_after_is_unhealthy_with_few_requests_and_traffic_still_flows() {
        // The defaults: one event retried with a growing backoff, every answer a 503.
        let t0 = Instant::now();
        let mut m = Machine {
            policy: BreakerPolicy::default(),
            ..machine(10, None)
        };
        let at = |s: u64| t0 + Duration::from_secs(s);
        for s in [0, 1, 3, 7, 15, 29] {
            assert!(!m.record(Health::Down, false, || "HTTP 503".into(), at(s)));
            assert_eq!(m.view(at(s)), BreakerView::Healthy, "{s} s");
        }
        // 30 s after the first failure, with no success: unhealthy, though the breaker is
        // still closed (six failures, not ten) and requests still go.
        let view = m.view(at(30));
        assert!(
            matches!(view, BreakerView::Unhealthy { held: false, .. }),
            "{view:?}"
        );
        let (ok, reason, message) = view.condition("crm");
        assert!(!ok);
        assert_eq!(reason, "EndpointUnhealthy");
        assert!(
            message.contains("HTTP 503") && message.contains("retried"),
            "{message}"
        );
        assert_eq!(m.admit(at(30)), Admission::Send);
        // A later failure reports no new change; a success is healthy at once.
        assert!(!m.record(Health::Down, false, || "HTTP 503".into(), at(31)));
        assert!(m.record(Health::Up, false, || "".into(), at(45)));
        assert_eq!(m.view(at(45)), BreakerView::Healthy);
        // The clock starts again with the next failure.
        m.record(Health::Down, false, || "HTTP 503".into(), at(50));
        assert_eq!(m.view(at(79)), BreakerView::Healthy);
        assert!(matches!(m.view(at(80)), BreakerView::Unhealthy { .. }));
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut m = machine(3, None);
        m.record(Health::Down, false, || "503".into(), t0);
        m.record(Health::Down, false, || "503".into(), t0);
        m.record(Health::Up, false, || "".into(), t0);
        m.record(Health::Down, false, || "503".into(), t0);
        assert!(!m.record(Health::Down, false, || "503".into(), t0));
        assert_eq!(m.admit(t0), Admission::Send);
        assert!(m.record(Health::Down, false, || "refused".into(), t0));
        assert_eq!(
            m.admit(t0),
            Admission::Wait(Some(t0 + Duration::from_secs(5)))
        );
    }

    #[test]
    fn one_probe_per_pause_and_the_pause_doubles_up_to_its_cap() {
        let t0 = Instant::now();
        let mut m = machine(1, None);
        m.record(Health::Down, false, || "refused".into(), t0);
        let mut now = t0;
        let mut pause = Duration::from_secs(5);
        for _ in 0..10 {
            now += pause;
            assert_eq!(m.admit(now), Admission::Probe);
            // While the probe is out, nobody else goes, and nobody waits on a clock.
            assert_eq!(m.admit(now), Admission::Wait(None));
            // A request that was already on its way when the breaker opened changes nothing.
            m.record(Health::Down, false, || "refused".into(), now);
            assert_eq!(m.admit(now), Admission::Wait(None));
            m.record(Health::Down, true, || "refused".into(), now);
            pause = (pause * 2).min(MAX_PROBE_PAUSE);
            assert_eq!(m.admit(now), Admission::Wait(Some(now + pause)));
        }
        assert_eq!(pause, MAX_PROBE_PAUSE);
        now += pause;
        assert_eq!(m.admit(now), Admission::Probe);
        assert!(m.record(Health::Up, true, || "".into(), now));
        assert_eq!(m.admit(now), Admission::Send);
        assert_eq!(m.view(now), BreakerView::Healthy);
    }

    #[test]
    fn an_endpoint_down_longer_than_disable_after_is_paused_for_good() {
        let t0 = Instant::now();
        let mut m = machine(1, Some(60));
        m.record(Health::Down, false, || "HTTP 503".into(), t0);
        let later = t0 + Duration::from_secs(61);
        assert_eq!(m.admit(later), Admission::Probe);
        m.record(Health::Down, true, || "HTTP 503".into(), later);
        assert_eq!(m.admit(later + MAX_PROBE_PAUSE), Admission::Wait(None));
        // Only a person (a restart) resumes it; a late answer does not.
        m.record(Health::Up, false, || "".into(), later);
        let view = m.view(later);
        assert!(matches!(view, BreakerView::Paused { .. }));
        let (ok, reason, message) = view.condition("crm");
        assert!(!ok);
        assert_eq!(reason, "DeliveryPaused");
        assert!(message.contains("HTTP 503"), "{message}");
    }

    #[test]
    fn the_unhealthy_condition_names_the_last_error() {
        let t0 = Instant::now();
        let mut m = machine(2, None);
        m.record(Health::Down, false, || "HTTP 500".into(), t0);
        m.record(
            Health::Down,
            false,
            || "127.0.0.1:9: cannot connect".into(),
            t0,
        );
        let (ok, reason, message) = m.view(t0).condition("crm");
        assert!(!ok);
        assert_eq!(reason, "EndpointUnhealthy");
        assert!(message.contains("cannot connect"), "{message}");
    }
}
