//! The status a WebhookDestination should have, computed purely from what reconcile observed.
//! `lastTransitionTime` moves only when a condition's status flips, and `differs` ignores
//! timestamps, so an unchanged status is never written (and never re-triggers a reconcile).

use super::validate::{Problem, Verdict};
use crate::api::WebhookDestinationStatus;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const ACCEPTED: &str = "Accepted";
pub const AUTH_READY: &str = "AuthReady";
pub const WORKER_AVAILABLE: &str = "WorkerAvailable";
pub const READY: &str = "Ready";

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
        if current && updated >= desired && available >= desired {
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

pub fn conditions(
    verdict: &Verdict,
    enabled: bool,
    worker: &WorkerState,
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
    } else {
        Want {
            kind: READY,
            ok: true,
            reason: "Delivering".into(),
            message: String::new(),
        }
    };
    [accepted, auth, worker_want, ready]
        .into_iter()
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

/// Whether `new` says anything `old` does not, ignoring timestamps.
pub fn differs(old: &WebhookDestinationStatus, new: &WebhookDestinationStatus) -> bool {
    let strip = |s: &WebhookDestinationStatus| {
        let mut s = s.clone();
        let epoch = Time(Default::default());
        for c in &mut s.conditions {
            c.last_transition_time = epoch.clone();
        }
        s.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        s
    };
    strip(old) != strip(new)
}

/// Conditions in `new` whose status differs from `old` (or that are new): what deserves an Event.
pub fn transitions<'a>(old: &[Condition], new: &'a [Condition]) -> Vec<&'a Condition> {
    new.iter()
        .filter(|n| {
            !old.iter()
                .any(|o| o.type_ == n.type_ && o.status == n.status && o.reason == n.reason)
        })
        .collect()
}
