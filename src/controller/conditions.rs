//! The status a WebhookDestination should have, computed purely from what reconcile observed.
//! `lastTransitionTime` moves only when a condition's status flips, and `differs` ignores
//! timestamps, so an unchanged status is never written (and never re-triggers a reconcile).

use super::validate::{Problem, Verdict};
use super::worker_status::Delivering;
use crate::api::WebhookDestinationStatus;
use crate::pipeline::deliver::breaker::PAUSED;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const ACCEPTED: &str = "Accepted";
pub const AUTH_READY: &str = "AuthReady";
pub const WORKER_AVAILABLE: &str = "WorkerAvailable";
pub const READY: &str = "Ready";
pub const DELIVERING: &str = "Delivering";

/// The worker's Deployment as reconcile last saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerState {
    NotDeployed,
    ScaledToZero,
    Available { desired: i32 },
    Progressing { available: i32, desired: i32 },
}

impl WorkerState {
    pub fn of(deployment: Option<&Deployment>) -> WorkerState {
        let Some(d) = deployment else {
            return WorkerState::NotDeployed;
        };
        let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        if desired == 0 {
            return WorkerState::ScaledToZero;
        }
        let status = d.status.clone().unwrap_or_default();
        let available = status.available_replicas.unwrap_or(0);
        let updated = status.updated_replicas.unwrap_or(0);
        let current = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
        // Pods of the previous template still running: the rollout is not done, though they
        // may make up the available count (a new pod Pending beside an old one still serving
        // the old spec).
        let old_pods_left = status.replicas.unwrap_or(0) > updated;
        if current && !old_pods_left && updated >= desired && available >= desired {
            WorkerState::Available { desired }
        } else {
            WorkerState::Progressing { available, desired }
        }
    }
}

/// One condition as it should be, before timestamps.
struct Want {
    kind: &'static str,
    ok: bool,
    reason: String,
    message: String,
}

impl Want {
    fn from(kind: &'static str, r: &Result<&str, Problem>, ok_message: &str) -> Want {
        match r {
            Ok(reason) => Want {
                kind,
                ok: true,
                reason: reason.to_string(),
                message: ok_message.into(),
            },
            Err(p) => Want {
                kind,
                ok: false,
                reason: p.reason.into(),
                message: p.message.clone(),
            },
        }
    }
}

/// `delivering`: what the worker says of the endpoint, when it could be read just now.
pub fn conditions(
    verdict: &Verdict,
    enabled: bool,
    worker: &WorkerState,
    delivering: Option<Delivering>,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Vec<Condition> {
    let accepted = Want::from(
        ACCEPTED,
        &verdict.accepted.clone().map(|()| "Valid"),
        "the spec is valid",
    );
    let auth = Want::from(AUTH_READY, &verdict.auth, "credentials resolve");
    let worker_want = match worker {
        WorkerState::Available { desired } => Want {
            kind: WORKER_AVAILABLE,
            ok: true,
            reason: "Available".into(),
            message: format!("{desired} of {desired} worker pods available"),
        },
        WorkerState::ScaledToZero => Want {
            kind: WORKER_AVAILABLE,
            ok: true,
            reason: "ScaledToZero".into(),
            message: "spec.enabled is false: the worker is scaled to zero".into(),
        },
        WorkerState::Progressing { available, desired } => Want {
            kind: WORKER_AVAILABLE,
            ok: false,
            reason: "Progressing".into(),
            message: format!(
                "{available} of {desired} worker pods available; if this lasts, look at the pods: kubectl get pods -l app.kubernetes.io/instance=NAME"
            ),
        },
        WorkerState::NotDeployed => Want {
            kind: WORKER_AVAILABLE,
            ok: false,
            reason: "NotDeployed".into(),
            message: "the worker is deployed once the spec is accepted and its credentials resolve"
                .into(),
        },
    };
    // Only running workers know the endpoint's health; an unanswered read keeps the last word.
    let delivering = match worker {
        WorkerState::Available { .. } if enabled => delivering
            .map(|d| Want {
                kind: DELIVERING,
                ok: d.ok,
                reason: d.reason,
                message: d.message,
            })
            .or_else(|| {
                previous
                    .iter()
                    .find(|c| c.type_ == DELIVERING)
                    .map(|c| Want {
                        kind: DELIVERING,
                        ok: c.status == "True",
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                    })
            }),
        _ => None,
    };
    let ready = if !accepted.ok {
        summary(false, &accepted)
    } else if !auth.ok {
        summary(false, &auth)
    } else if !enabled {
        Want {
            kind: READY,
            ok: true,
            reason: "Disabled".into(),
            message: "spec.enabled is false: nothing is delivered".into(),
        }
    } else if !worker_want.ok {
        summary(false, &worker_want)
    } else if let Some(paused) = delivering.as_ref().filter(|d| d.reason == PAUSED) {
        // A person has to act; an unhealthy endpoint is probed and recovers by itself.
        summary(false, paused)
    } else {
        Want {
            kind: READY,
            ok: true,
            reason: "Delivering".into(),
            message: String::new(),
        }
    };
    [
        Some(accepted),
        Some(auth),
        Some(worker_want),
        Some(ready),
        delivering,
    ]
    .into_iter()
    .flatten()
    .map(|w| stamp(w, generation, previous, now))
    .collect()
}

fn summary(ok: bool, cause: &Want) -> Want {
    Want {
        kind: READY,
        ok,
        reason: cause.reason.clone(),
        message: cause.message.clone(),
    }
}

fn stamp(want: Want, generation: Option<i64>, previous: &[Condition], now: &Time) -> Condition {
    let status = if want.ok { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == want.kind && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: want.kind.into(),
        status: status.into(),
        reason: want.reason,
        message: want.message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// One condition of another resource (a WebhookSource), stamped like a destination's.
pub fn condition(
    kind: &'static str,
    result: Result<&str, &Problem>,
    ok_message: &str,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let want = Want::from(kind, &result.map_err(Problem::clone), ok_message);
    stamp(want, generation, previous, now)
}

/// Whether `new` says anything `old` does not, ignoring timestamps.
pub fn differs(old: &WebhookDestinationStatus, new: &WebhookDestinationStatus) -> bool {
    let strip = |s: &WebhookDestinationStatus| WebhookDestinationStatus {
        conditions: without_times(&s.conditions),
        ..s.clone()
    };
    strip(old) != strip(new)
}

/// Conditions as compared: in type order, with no transition times.
pub fn without_times(conditions: &[Condition]) -> Vec<Condition> {
    let epoch = Time(Default::default());
    let mut out = conditions.to_vec();
    for c in &mut out {
        c.last_transition_time = epoch.clone();
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// What deserves a Kubernetes Event in a status change: a Warning for every move into a bad state
/// (the spec or credentials refused, worker pods lost), a Normal one only when the destination
/// becomes ready — the first time or after a rollout — or recovers. Starting up is not news.
#[derive(Debug, PartialEq)]
pub struct Notice {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

pub fn notices(old: &[Condition], new: &[Condition], worker: &WorkerState) -> Vec<Notice> {
    let find = |list: &[Condition], kind: &str| list.iter().find(|c| c.type_ == kind).cloned();
    let moved = |kind: &str| {
        let n = find(new, kind)?;
        let o = find(old, kind);
        let same = o
            .as_ref()
            .is_some_and(|o| o.status == n.status && o.reason == n.reason);
        (!same).then_some((o, n))
    };
    let notice = |warning: bool, reason: &str, c: &Condition| Notice {
        warning,
        reason: reason.into(),
        note: format!("{} is {}: {}", c.type_, c.status, c.message)
            .chars()
            .take(1000)
            .collect(),
    };
    let mut out = Vec::new();
    for kind in [ACCEPTED, AUTH_READY] {
        if let Some((_, n)) = moved(kind).filter(|(_, n)| n.status == "False") {
            out.push(notice(true, &n.reason, &n));
        }
    }
    if let Some((Some(o), n)) = moved(WORKER_AVAILABLE)
        && o.status == "True"
        && matches!(worker, WorkerState::Progressing { available, desired } if available < desired)
    {
        out.push(notice(true, "WorkerUnavailable", &n));
    }
    match moved(DELIVERING) {
        Some((_, n)) if n.status == "False" => out.push(notice(true, &n.reason, &n)),
        Some((Some(o), n)) if o.status == "False" => {
            out.push(notice(false, "EndpointRecovered", &n))
        }
        _ => {}
    }
    if let Some((o, n)) =
        moved(READY).filter(|(_, n)| n.status == "True" && n.reason == "Delivering")
    {
        let starting = o.as_ref().is_none_or(|o| {
            matches!(
                o.reason.as_str(),
                "Progressing" | "NotDeployed" | "Disabled"
            )
        });
        out.push(notice(
            false,
            if starting { "Ready" } else { "Recovered" },
            &n,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn ok() -> Verdict {
        Verdict {
            accepted: Ok(()),
            auth: Ok("BearerToken"),
        }
    }

    fn problem(reason: &'static str) -> Problem {
        Problem {
            reason,
            message: format!("{reason}: do something"),
        }
    }

    fn find<'a>(conditions: &'a [Condition], kind: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == kind).unwrap()
    }

    fn deployment(replicas: i32, available: i32, generation: i64, observed: i64) -> Deployment {
        let mut d = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                available_replicas: Some(available),
                updated_replicas: Some(available),
                observed_generation: Some(observed),
                ..Default::default()
            }),
            ..Default::default()
        };
        d.metadata.generation = Some(generation);
        d
    }

    #[test]
    fn the_worker_state_follows_the_deployment() {
        assert_eq!(WorkerState::of(None), WorkerState::NotDeployed);
        assert_eq!(
            WorkerState::of(Some(&deployment(0, 0, 1, 1))),
            WorkerState::ScaledToZero
        );
        assert_eq!(
            WorkerState::of(Some(&deployment(2, 2, 3, 3))),
            WorkerState::Available { desired: 2 }
        );
        assert_eq!(
            WorkerState::of(Some(&deployment(2, 1, 3, 3))),
            WorkerState::Progressing {
                available: 1,
                desired: 2
            }
        );
        // A rollout whose new pod is Pending while the old one still serves: not available.
        let mut rolling = deployment(1, 1, 3, 3);
        rolling.status.as_mut().unwrap().replicas = Some(2);
        assert_eq!(
            WorkerState::of(Some(&rolling)),
            WorkerState::Progressing {
                available: 1,
                desired: 1
            }
        );
        rolling.status.as_mut().unwrap().replicas = Some(1);
        assert_eq!(
            WorkerState::of(Some(&rolling)),
            WorkerState::Available { desired: 1 }
        );
        // The Deployment controller has not seen the latest spec yet: its counts are stale.
        assert_eq!(
            WorkerState::of(Some(&deployment(2, 2, 4, 3))),
            WorkerState::Progressing {
                available: 2,
                desired: 2
            }
        );
    }

    #[test]
    fn ready_names_the_first_thing_in_the_way() {
        let available = WorkerState::Available { desired: 1 };
        let cases = [
            (
                Verdict {
                    accepted: Err(problem("InvalidMapping")),
                    auth: Err(problem("SecretNotFound")),
                },
                true,
                WorkerState::NotDeployed,
                "False",
                "InvalidMapping",
            ),
            (
                Verdict {
                    accepted: Ok(()),
                    auth: Err(problem("SecretNotFound")),
                },
                true,
                WorkerState::NotDeployed,
                "False",
                "SecretNotFound",
            ),
            (ok(), false, WorkerState::ScaledToZero, "True", "Disabled"),
            (
                ok(),
                true,
                WorkerState::Progressing {
                    available: 0,
                    desired: 1,
                },
                "False",
                "Progressing",
            ),
            (ok(), true, available, "True", "Delivering"),
        ];
        for (verdict, enabled, worker, status, reason) in cases {
            let c = conditions(&verdict, enabled, &worker, None, Some(7), &[], &at(100));
            let ready = find(&c, READY);
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_str()),
                (status, reason)
            );
            assert!(c.iter().all(|c| c.observed_generation == Some(7)));
            let types: Vec<_> = c.iter().map(|c| c.type_.as_str()).collect();
            assert_eq!(types, [ACCEPTED, AUTH_READY, WORKER_AVAILABLE, READY]);
        }
        let c = conditions(
            &ok(),
            true,
            &WorkerState::NotDeployed,
            None,
            None,
            &[],
            &at(1),
        );
        assert!(find(&c, WORKER_AVAILABLE).message.contains("deployed once"));
    }

    #[test]
    fn last_transition_time_moves_only_when_the_status_flips() {
        let progressing = WorkerState::Progressing {
            available: 0,
            desired: 1,
        };
        let first = conditions(&ok(), true, &progressing, None, Some(1), &[], &at(100));
        let same = conditions(&ok(), true, &progressing, None, Some(2), &first, &at(200));
        assert!(same.iter().all(|c| c.last_transition_time == at(100)));

        let flipped = conditions(
            &ok(),
            true,
            &WorkerState::Available { desired: 1 },
            None,
            Some(2),
            &same,
            &at(300),
        );
        assert_eq!(find(&flipped, ACCEPTED).last_transition_time, at(100));
        assert_eq!(
            find(&flipped, WORKER_AVAILABLE).last_transition_time,
            at(300)
        );
        assert_eq!(find(&flipped, READY).last_transition_time, at(300));

        let available = WorkerState::Available { desired: 1 };
        let reasons = |old, new| -> Vec<(bool, String)> {
            notices(old, new, &available)
                .into_iter()
                .map(|n| (n.warning, n.reason))
                .collect()
        };
        assert!(reasons(&[], &first).is_empty(), "starting up is not news");
        assert_eq!(reasons(&same, &flipped), [(false, "Ready".to_string())]);
        assert!(reasons(&flipped, &flipped).is_empty());
    }

    #[test]
    fn warnings_for_bad_states_and_a_normal_event_on_recovery() {
        let available = WorkerState::Available { desired: 1 };
        let lost = WorkerState::Progressing {
            available: 0,
            desired: 1,
        };
        let ready = conditions(&ok(), true, &available, None, Some(1), &[], &at(1));
        let mut bad_auth = ok();
        bad_auth.auth = Err(Problem {
            reason: "SecretNotFound",
            message: "Secret crm not found".into(),
        });
        let refused = conditions(&bad_auth, true, &available, None, Some(1), &ready, &at(2));
        let n = notices(&ready, &refused, &available);
        assert_eq!(n.len(), 1);
        assert!(n[0].warning && n[0].reason == "SecretNotFound" && n[0].note.contains("crm"));
        let back = conditions(&ok(), true, &available, None, Some(1), &refused, &at(3));
        let n = notices(&refused, &back, &available);
        assert_eq!((n[0].warning, n[0].reason.as_str()), (false, "Recovered"));
        // Pods lost is bad; a rollout (all still available) is not.
        let down = conditions(&ok(), true, &lost, None, Some(1), &ready, &at(4));
        let n = notices(&ready, &down, &lost);
        assert_eq!(
            (n[0].warning, n[0].reason.as_str()),
            (true, "WorkerUnavailable")
        );
        let rolling = WorkerState::Progressing {
            available: 1,
            desired: 1,
        };
        let rollout = conditions(&ok(), true, &rolling, None, Some(2), &ready, &at(5));
        assert!(notices(&ready, &rollout, &rolling).is_empty());
    }

    #[test]
    fn the_workers_word_on_the_endpoint_becomes_delivering_and_its_events() {
        let available = WorkerState::Available { desired: 1 };
        let said = |ok: bool, reason: &str| {
            Some(Delivering {
                ok,
                reason: reason.into(),
                message: format!("{reason}: HTTP 503"),
            })
        };
        let healthy = conditions(
            &ok(),
            true,
            &available,
            said(true, "Delivering"),
            Some(1),
            &[],
            &at(1),
        );
        assert_eq!(find(&healthy, DELIVERING).status, "True");

        let down = said(false, "EndpointUnhealthy");
        let unhealthy = conditions(&ok(), true, &available, down, Some(1), &healthy, &at(2));
        let c = find(&unhealthy, DELIVERING);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "EndpointUnhealthy")
        );
        // Probed, it recovers by itself: the destination stays Ready.
        assert_eq!(find(&unhealthy, READY).status, "True");
        let n = notices(&healthy, &unhealthy, &available);
        assert_eq!(n.len(), 1);
        assert!(n[0].warning && n[0].reason == "EndpointUnhealthy" && n[0].note.contains("503"));

        // A worker that cannot be read just now leaves the last word standing.
        let unread = conditions(&ok(), true, &available, None, Some(1), &unhealthy, &at(3));
        assert!(!differs(&status_of(&unhealthy), &status_of(&unread)));

        let paused = said(false, PAUSED);
        let paused = conditions(&ok(), true, &available, paused, Some(1), &unhealthy, &at(4));
        assert_eq!(find(&paused, READY).reason, PAUSED);
        assert_eq!(find(&paused, READY).status, "False");

        let back = conditions(
            &ok(),
            true,
            &available,
            said(true, "Delivering"),
            Some(1),
            &paused,
            &at(5),
        );
        let n = notices(&paused, &back, &available);
        assert!(
            n.iter()
                .any(|n| !n.warning && n.reason == "EndpointRecovered"),
            "{n:?}"
        );

        // Scaled to zero, nobody knows: no condition.
        let off = conditions(
            &ok(),
            false,
            &WorkerState::ScaledToZero,
            None,
            Some(1),
            &back,
            &at(6),
        );
        assert!(off.iter().all(|c| c.type_ != DELIVERING));
    }

    fn status_of(conditions: &[Condition]) -> WebhookDestinationStatus {
        WebhookDestinationStatus {
            conditions: conditions.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn differs_ignores_timestamps_and_order_only() {
        let worker = WorkerState::Available { desired: 1 };
        let status = |conditions| WebhookDestinationStatus {
            observed_generation: Some(1),
            conditions,
            ..Default::default()
        };
        let old = status(conditions(&ok(), true, &worker, None, Some(1), &[], &at(1)));
        let mut reordered = conditions(&ok(), true, &worker, None, Some(1), &[], &at(2));
        reordered.reverse();
        assert!(!differs(&old, &status(reordered)));

        let disabled = status(conditions(
            &ok(),
            false,
            &WorkerState::ScaledToZero,
            None,
            Some(1),
            &[],
            &at(1),
        ));
        assert!(differs(&old, &disabled));
        let mut newer = old.clone();
        newer.observed_generation = Some(2);
        assert!(differs(&old, &newer));
    }
}
