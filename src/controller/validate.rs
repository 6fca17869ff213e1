//! Deciding, purely, whether a WebhookDestination can run: is the spec valid (`Accepted`) and do
//! its credentials resolve (`AuthReady`)? Every problem comes with a one-word reason and a
//! message that tells a person what to fix.

use super::build::child_name;
use super::dereference::Dereferenced;
use crate::api::{AuthType, WebhookDestination};
use crate::config::ConfigError;
use crate::config::destination::{CompiledSpec, Credentials};
use crate::config::manifests::LoadedDestination;
use crate::oauth::AuthState;
use kube::ResourceExt;

#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub accepted: Result<(), Problem>,
    /// On success, the reason shown for `AuthReady=True` (e.g. `BearerToken`).
    pub auth: Result<&'static str, Problem>,
}

impl Verdict {
    pub fn can_deploy(&self) -> bool {
        self.accepted.is_ok() && self.auth.is_ok()
    }

    /// For OAuth 2.0: `AuthReady` as the token manager sees it. The worker is deployed either
    /// way — it holds events until a token can be had.
    pub fn with_token_state(self, state: &AuthState) -> Verdict {
        let (ok, reason, message) = state.condition();
        Verdict {
            auth: if ok {
                Ok(reason)
            } else {
                Err(Problem { reason, message })
            },
            ..self
        }
    }
}

pub fn validate(dest: &WebhookDestination, deref: &Dereferenced) -> Verdict {
    let loaded = LoadedDestination {
        resource: dest.clone(),
        origin: String::new(),
    };
    let accepted = check_name(dest).and_then(|()| {
        CompiledSpec::compile(&loaded)
            .map(|_| ())
            .map_err(|e| spec_problem(&e))
    });
    let auth = check_auth(dest, deref, &loaded);
    Verdict { accepted, auth }
}

/// Children are named `<name>-hookline`, and the Service's name must be a DNS-1035 label.
fn check_name(dest: &WebhookDestination) -> Result<(), Problem> {
    let name = dest.name_any();
    let child = child_name(dest);
    if child.len() > 63 || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(Problem {
            reason: "InvalidName",
            message: format!(
                "metadata.name {name:?} must start with a letter and be at most 54 characters, because the Service {child:?} must be a valid DNS label; recreate the destination under a shorter name"
            ),
        });
    }
    Ok(())
}

fn field_and_message(e: &ConfigError) -> (String, String) {
    match e {
        ConfigError::Field { field, message, .. } => (field.clone(), message.clone()),
        other => ("spec".into(), other.to_string()),
    }
}

fn spec_problem(e: &ConfigError) -> Problem {
    let (field, message) = field_and_message(e);
    let reason = if field.starts_with("spec.endpoint") {
        "InvalidEndpoint"
    } else if field == "spec.subscription" {
        "InvalidSubscription"
    } else if field == "spec.mapping" {
        "InvalidMapping"
    } else if field.starts_with("spec.transform") {
        "InvalidTransform"
    } else if field.starts_with("spec.auth") {
        "InvalidAuth"
    } else {
        "InvalidSpec"
    };
    Problem {
        reason,
        message: format!("{field}: {message}; fix it and apply the resource again"),
    }
}

fn check_auth(
    dest: &WebhookDestination,
    deref: &Dereferenced,
    loaded: &LoadedDestination,
) -> Result<&'static str, Problem> {
    let namespace = dest.namespace().unwrap_or_default();
    let mut missing_secrets = Vec::new();
    let mut missing_keys = Vec::new();
    for (field, r) in dest.spec.secret_refs() {
        if deref.missing.contains(&r.name) {
            missing_secrets.push(format!("{} (for {field})", r.name));
        } else if deref.secrets.get(&namespace, &r).is_err() {
            missing_keys.push(format!("{} has no key {:?} (for {field})", r.name, r.key));
        }
    }
    if !missing_secrets.is_empty() {
        return Err(Problem {
            reason: "SecretNotFound",
            message: format!(
                "Secret {} not found in namespace {namespace}; create it (kubectl create secret generic NAME -n {namespace} --from-literal=KEY=...)",
                missing_secrets.join(", ")
            ),
        });
    }
    if !missing_keys.is_empty() {
        return Err(Problem {
            reason: "SecretKeyNotFound",
            message: format!(
                "Secret {}; add the key to the Secret",
                missing_keys.join(", ")
            ),
        });
    }
    Credentials::resolve(loaded, &deref.secrets).map_err(|e| {
        let (field, message) = field_and_message(&e);
        Problem {
            reason: "InvalidSecret",
            message: format!(
                "{field}: {message}; fix the Secret, the destination picks it up by itself"
            ),
        }
    })?;
    Ok(match dest.spec.auth_type() {
        AuthType::None => "NotRequired",
        AuthType::Bearer => "BearerToken",
        AuthType::OAuth2 => "TokenAvailable",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::tests::{fixture, secrets};
    use std::collections::HashMap;

    fn deref(namespace: &str) -> Dereferenced {
        Dereferenced {
            secrets: secrets(namespace),
            missing: Default::default(),
        }
    }

    #[test]
    fn a_good_spec_with_its_secrets_is_accepted_and_authorized() {
        let v = validate(&fixture("full"), &deref("analytics"));
        assert_eq!(v.accepted, Ok(()));
        assert_eq!(v.auth, Ok("BearerToken"));
        assert!(v.can_deploy());
        let v = validate(&fixture("minimal"), &Dereferenced::default());
        assert_eq!(v.auth, Ok("NotRequired"));
    }

    #[test]
    fn spec_problems_have_a_reason_per_field() {
        let cases = [
            ("endpoint", "InvalidEndpoint", "spec.endpoint.url"),
            ("subscription", "InvalidSubscription", "spec.subscription"),
            ("mapping", "InvalidMapping", "/x/@path"),
            ("batching", "InvalidSpec", "spec.batching.size"),
            ("transform", "InvalidTransform", "SyntaxError"),
        ];
        for (what, reason, mentions) in cases {
            let mut d = fixture("full");
            match what {
                "endpoint" => d.spec.endpoint.url = "ftp://files".into(),
                "subscription" => d.spec.subscription = Some("event = ".into()),
                "mapping" => d.spec.mapping = Some(serde_json::json!({"x": {"@path": 1}})),
                "transform" => {
                    d.spec.transform = Some(crate::api::Transform {
                        javascript: "function onTrack(e) {\n  return e +;\n}".into(),
                    })
                }
                _ => {
                    d.spec.batching = Some(crate::api::Batching {
                        size: Some(0),
                        ..Default::default()
                    })
                }
            }
            let problem = validate(&d, &deref("analytics")).accepted.unwrap_err();
            assert_eq!(problem.reason, reason, "{what}: {problem:?}");
            assert!(
                problem.message.contains(mentions),
                "{what}: {}",
                problem.message
            );
        }
    }

    #[test]
    fn a_name_too_long_for_the_service_is_refused() {
        let mut d = fixture("minimal");
        d.metadata.name = Some("a".repeat(55));
        assert_eq!(
            validate(&d, &Dereferenced::default())
                .accepted
                .unwrap_err()
                .reason,
            "InvalidName"
        );
        d.metadata.name = Some("a".repeat(54));
        assert!(validate(&d, &Dereferenced::default()).accepted.is_ok());
    }

    #[test]
    fn secret_problems_say_which_secret_key_and_field() {
        let d = fixture("full");
        let mut missing = deref("analytics");
        missing.missing.insert("crm-signing".into());
        let p = validate(&d, &missing).auth.unwrap_err();
        assert_eq!(p.reason, "SecretNotFound");
        assert!(
            p.message
                .contains("crm-signing (for spec.signing.secretRef)"),
            "{}",
            p.message
        );

        let mut d2 = d.clone();
        d2.spec
            .source
            .as_mut()
            .unwrap()
            .write_key_secret_ref
            .as_mut()
            .unwrap()
            .key = "nope".into();
        let p = validate(&d2, &deref("analytics")).auth.unwrap_err();
        assert_eq!(p.reason, "SecretKeyNotFound");
        assert!(
            p.message.contains("orders-source has no key \"nope\""),
            "{}",
            p.message
        );

        let mut bad_signing = deref("analytics");
        bad_signing.secrets.insert(
            "analytics",
            "crm-signing",
            HashMap::from([("secret".to_string(), b"not base64 !".to_vec())]),
        );
        let p = validate(&d, &bad_signing).auth.unwrap_err();
        assert_eq!(p.reason, "InvalidSecret");
        assert!(
            p.message.starts_with("spec.signing.secretRef"),
            "{}",
            p.message
        );
    }
}
