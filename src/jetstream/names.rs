//! Where things live in JetStream (the guide, `docs/src/jetstream.md`): stream, bucket, subject and
//! consumer names, all derived from a source's or destination's namespace and name or from a
//! write key's digest — never from the key itself.

use sha2::{Digest, Sha256};

/// Accepted events, interest retention: removed once every interested consumer is done.
pub const EVENTS_STREAM: &str = "HOOKLINE_EVENTS";
pub const EVENTS_SUBJECTS: &str = "hookline.events.>";
/// Dead letters, limits retention.
pub const DEAD_LETTER_STREAM: &str = "HOOKLINE_DEAD_LETTERS";
pub const DEAD_LETTER_SUBJECTS: &str = "hookline.dlq.>";
/// How far each destination got through the bundles it holds: `<consumer>.<stream sequence>`.
pub const PROGRESS_BUCKET: &str = "hookline-progress";
/// Routes: which write-key digests the gateway accepts, and the source each belongs to.
pub const ROUTES_BUCKET: &str = "hookline-routes";

/// A write key as JetStream and the gateway know it: its SHA-256, hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyDigest(pub String);

impl KeyDigest {
    pub fn of(write_key: &str) -> KeyDigest {
        KeyDigest(hex::encode(Sha256::digest(write_key.as_bytes())))
    }
}

/// Where events sent with a write key were stored before sources existed (one subject per key).
/// A destination with a private key still reads it: what a gateway or worker of the earlier
/// version accepts during an upgrade is delivered, not dropped by interest retention.
pub fn legacy_key_subject(key: &KeyDigest) -> String {
    format!("hookline.events.key.{}", key.0)
}

/// `<namespace>_<name>` with the dots of the name as `_`: unique, because Kubernetes names
/// never hold `_` and namespaces never hold `.`; valid as a consumer name and a subject token.
fn token(namespace: &str, name: &str) -> String {
    format!("{namespace}_{}", name.replace('.', "_"))
}

/// One WebhookSource's names in JetStream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceNames {
    token: String,
    route: String,
}

impl SourceNames {
    pub fn new(namespace: &str, name: &str) -> SourceNames {
        let token = token(namespace, name);
        SourceNames {
            route: format!("src.{token}"),
            token,
        }
    }

    /// Its events: every destination the source admits consumes this subject.
    pub fn subject(&self) -> String {
        format!("hookline.events.src.{}", self.token)
    }

    /// How its entries in the routes bucket and its events' ids name it.
    pub fn route(&self) -> &str {
        &self.route
    }

    pub fn route_key(&self, key: &KeyDigest) -> String {
        format!("{}.{}", key.0, self.route)
    }
}

/// One destination's names in JetStream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DestinationNames {
    pub namespace: String,
    pub name: String,
    token: String,
}

impl DestinationNames {
    pub fn new(namespace: &str, name: &str) -> DestinationNames {
        DestinationNames {
            namespace: namespace.to_string(),
            name: name.to_string(),
            token: token(namespace, name),
        }
    }

    /// The durable consumer all of this destination's workers share.
    pub fn consumer(&self) -> &str {
        &self.token
    }

    /// Events for this destination alone: sent to its own worker Service, or with its private
    /// write key.
    pub fn subject(&self) -> String {
        format!("hookline.events.dest.{}", self.token)
    }

    pub fn dead_letter_subject(&self) -> String {
        format!("hookline.dlq.{}", self.token)
    }

    /// The routes-bucket entry of its private write key.
    pub fn route_key(&self, key: &KeyDigest) -> String {
        format!("{}.{}", key.0, self.token)
    }

    /// How a queued event addresses this destination alone.
    pub fn recipient(&self) -> &str {
        &self.token
    }
}

/// A routes-bucket key's digest and whose route it is (a source's `src.<token>`, a
/// destination's `<token>`).
pub fn route_parts(route_key: &str) -> Option<(KeyDigest, &str)> {
    let (digest, owner) = route_key.split_once('.')?;
    Some((KeyDigest(digest.to_string()), owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_valid_subject_tokens() {
        let a = DestinationNames::new("shop", "crm.eu");
        let b = DestinationNames::new("shop", "crm-eu");
        assert_ne!(a.consumer(), b.consumer());
        assert_eq!(a.consumer(), "shop_crm_eu");
        assert_eq!(a.subject(), "hookline.events.dest.shop_crm_eu");
        let key = KeyDigest::of("wk");
        assert_eq!(key.0.len(), 64);
        assert_eq!(
            route_parts(&a.route_key(&key)),
            Some((key.clone(), "shop_crm_eu"))
        );
        let source = SourceNames::new("shop", "crm.eu");
        assert_eq!(source.subject(), "hookline.events.src.shop_crm_eu");
        assert_ne!(source.subject(), a.subject());
        assert_eq!(
            route_parts(&source.route_key(&key)),
            Some((key, "src.shop_crm_eu"))
        );
    }
}
