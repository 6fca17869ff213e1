//! A source as ingestion enforces it (API §9): the digest of its write key, where its events
//! are stored in JetStream, which browser origins may send with it, and how fast. The operator
//! writes the same [`RouteSpec`] into the gateway's routes bucket and into a worker's
//! configuration; `hookline run` builds it from the manifests.

use super::deliver::pace::{Pace, RateLimitPolicy};
use crate::api::WebhookSourceSpec;
use crate::jetstream::names::{DestinationNames, KeyDigest, SourceNames};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// SHA-256 of the write key, hex: the key itself never leaves its Secret.
    pub key: String,
    /// Where its events are stored: every destination reading the source consumes it.
    pub subject: String,
    /// The `Nats-Msg-Id` prefix of its events: a client's retry is stored once, and two sources
    /// reusing a `messageId` are not merged.
    pub route: String,
    /// Who presents the key, in the order that decides conflicts (`<created> <namespace>/<name>`):
    /// should two routes of one key meet for a moment, the lowest is the owner's.
    #[serde(default)]
    pub rank: String,
    /// Empty: any origin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RouteRateLimit>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteRateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl RouteSpec {
    /// A WebhookSource's route.
    pub fn of_source(
        names: &SourceNames,
        spec: &WebhookSourceSpec,
        key: &KeyDigest,
        rank: String,
    ) -> RouteSpec {
        RouteSpec {
            key: key.0.clone(),
            subject: names.subject(),
            route: names.route().to_string(),
            rank,
            allowed_origins: spec.allowed_origins.clone(),
            rate_limit: spec.rate_limit.as_ref().map(|r| RouteRateLimit {
                per_second: r.requests_per_second,
                burst: r
                    .burst
                    .unwrap_or_else(|| r.requests_per_second.ceil().max(1.0) as u32),
            }),
        }
    }

    /// A destination's private write key (`spec.source.writeKeySecretRef`): its events go to
    /// that destination alone, from any origin, unlimited.
    pub fn private(names: &DestinationNames, key: &KeyDigest, rank: String) -> RouteSpec {
        RouteSpec {
            key: key.0.clone(),
            subject: names.subject(),
            route: names.consumer().to_string(),
            rank,
            allowed_origins: Vec::new(),
            rate_limit: None,
        }
    }
}

impl RouteSpec {
    /// Whether this is the private key's route of the destination `names`.
    pub fn is_private_of(&self, names: &DestinationNames) -> bool {
        self.route == names.consumer()
    }
}

/// A route in use: its spec, and the rate limit's bucket shared by all of its requests.
#[derive(Debug)]
pub struct SourceRoute {
    pub spec: RouteSpec,
    pub digest: KeyDigest,
    pace: Option<Pace>,
}

impl SourceRoute {
    pub fn new(spec: RouteSpec) -> Arc<SourceRoute> {
        let pace = spec.rate_limit.map(|r| {
            Pace::new(Some(RateLimitPolicy {
                per_second: r.per_second,
                burst: r.burst.max(1),
            }))
        });
        Arc::new(SourceRoute {
            digest: KeyDigest(spec.key.clone()),
            spec,
            pace,
        })
    }

    /// Whether a page of `origin` may send with this key.
    pub fn allows_origin(&self, origin: &str) -> bool {
        origin_allowed(&self.spec.allowed_origins, origin)
    }

    /// One request's share of the rate limit, or how long until there is one.
    pub fn take_request(&self) -> Result<(), Duration> {
        self.pace.as_ref().map_or(Ok(()), Pace::try_take)
    }
}

/// What `allowedOrigins` may hold (the CRD's rule, for manifests no API server checked): each
/// `scheme://host[:port]` with no path, `null`, or `*`. The message names the first bad one.
pub fn check_origins(origins: &[String]) -> Result<(), String> {
    for (i, o) in origins.iter().enumerate() {
        let bare = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"));
        let valid = o == "*"
            || o == "null"
            || bare.is_some_and(|h| !h.is_empty() && !h.contains(['/', '?', '#']));
        if !valid {
            return Err(format!(
                "allowedOrigins[{i}] {o:?} must be scheme://host[:port] with no path (as browsers send Origin), null, or *"
            ));
        }
    }
    Ok(())
}

/// An empty list or `*` allows any origin; otherwise scheme, host and port must be one of the
/// list's (case-insensitive, with a default port or a trailing slash written or not).
pub fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|a| a == "*" || normalize_origin(a) == normalize_origin(origin))
}

fn normalize_origin(origin: &str) -> String {
    let o = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        if o.starts_with(scheme)
            && let Some(bare) = o.strip_suffix(port)
        {
            return bare.to_string();
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SourceRateLimit;

    #[test]
    fn origins_are_checked_as_browsers_send_them() {
        let ok = ["https://shop.example", "http://localhost:3000", "null", "*"];
        assert!(check_origins(&ok.map(String::from)).is_ok());
        for bad in [
            "https://shop.example/",
            "shop.example",
            "https://",
            "ftp://x",
        ] {
            let err = check_origins(&[bad.to_string()]).unwrap_err();
            assert!(err.starts_with("allowedOrigins[0]"), "{err}");
        }
    }

    #[test]
    fn origins_match_by_scheme_host_and_port() {
        let allowed = vec!["https://Shop.example.com/".to_string()];
        assert!(origin_allowed(&allowed, "https://shop.example.com"));
        assert!(origin_allowed(&allowed, "https://shop.example.com:443"));
        assert!(!origin_allowed(&allowed, "http://shop.example.com"));
        assert!(!origin_allowed(&allowed, "https://shop.example.com:8443"));
        assert!(!origin_allowed(
            &allowed,
            "https://shop.example.com.evil.io"
        ));
        assert!(!origin_allowed(&allowed, "null"));
        assert!(origin_allowed(&[], "null"));
        assert!(origin_allowed(&["*".to_string()], "https://any.io"));
    }

    #[test]
    fn a_source_route_names_its_subject_and_limits_by_its_rate() {
        let spec = WebhookSourceSpec {
            rate_limit: Some(SourceRateLimit {
                requests_per_second: 0.5,
                burst: None,
            }),
            ..Default::default()
        };
        let names = SourceNames::new("shop", "web.site");
        let route = SourceRoute::new(RouteSpec::of_source(
            &names,
            &spec,
            &KeyDigest::of("wk"),
            "r".into(),
        ));
        assert_eq!(route.digest, KeyDigest::of("wk"));
        assert_eq!(route.spec.subject, "hookline.events.src.shop_web_site");
        assert_eq!(route.spec.rate_limit.unwrap().burst, 1);
        assert_eq!(route.take_request(), Ok(()));
        let wait = route.take_request().unwrap_err();
        assert!(wait > Duration::from_millis(1900) && wait <= Duration::from_secs(2));
        let private = RouteSpec::private(
            &DestinationNames::new("shop", "crm"),
            &KeyDigest::of("wk"),
            "r".into(),
        );
        assert_eq!(private.subject, "hookline.events.dest.shop_crm");
        assert_eq!(SourceRoute::new(private).take_request(), Ok(()));
    }
}
