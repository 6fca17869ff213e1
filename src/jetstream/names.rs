//! Where things live in JetStream (README "JetStream objects"): stream, bucket, subject and
//! consumer names, all derived from a destination's namespace and name or from a write key's
//! digest — never from the key itself.

use sha2::{Digest, Sha256};

/// Accepted events, interest retention: removed once every interested consumer is done.
pub const EVENTS_STREAM: &str = "HOOKLINE_EVENTS";
pub const EVENTS_SUBJECTS: &str = "hookline.events.>";
/// Dead letters, limits retention.
pub const DEAD_LETTER_STREAM: &str = "HOOKLINE_DEAD_LETTERS";
pub const DEAD_LETTER_SUBJECTS: &str = "hookline.dlq.>";
/// Routes: which write-key digests the gateway accepts, and for which destinations.
pub const ROUTES_BUCKET: &str = "hookline-routes";

/// A write key as JetStream and the gateway know it: its SHA-256, hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyDigest(pub String);

impl KeyDigest {
    pub fn of(write_key: &str) -> KeyDigest {
        KeyDigest(hex::encode(Sha256::digest(write_key.as_bytes())))
    }

    /// Events sent with this key: every destination holding it consumes this subject.
    pub fn subject(&self) -> String {
        format!("hookline.events.key.{}", self.0)
    }
}

/// One destination's names in JetStream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DestinationNames {
    pub namespace: String,
    pub name: String,
    /// `<namespace>_<name>` with the dots of the name as `_`: unique, because Kubernetes names
    /// never hold `_` and namespaces never hold `.`; valid as a consumer name and a subject
    /// token.
    token: String,
}

impl DestinationNames {
    pub fn new(namespace: &str, name: &str) -> DestinationNames {
        DestinationNames {
            namespace: namespace.to_string(),
            name: name.to_string(),
            token: format!("{namespace}_{}", name.replace('.', "_")),
        }
    }

    /// The durable consumer all of this destination's workers share.
    pub fn consumer(&self) -> &str {
        &self.token
    }

    /// Events for this destination alone (its own ingestion without a write key, replays).
    pub fn subject(&self) -> String {
        format!("hookline.events.dest.{}", self.token)
    }

    pub fn dead_letter_subject(&self) -> String {
        format!("hookline.dlq.{}", self.token)
    }

    /// Its entry in the routes bucket.
    pub fn route_key(&self, key: &KeyDigest) -> String {
        format!("{}.{}", key.0, self.token)
    }

    /// What this destination's consumer reads: its own subject and its write key's.
    pub fn filter_subjects(&self, key: Option<&KeyDigest>) -> Vec<String> {
        let mut subjects = vec![self.subject()];
        subjects.extend(key.map(KeyDigest::subject));
        subjects
    }
}

/// The digest a routes-bucket key starts with.
pub fn route_digest(route_key: &str) -> Option<KeyDigest> {
    let (digest, _) = route_key.split_once('.')?;
    Some(KeyDigest(digest.to_string()))
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
        assert!(!key.subject().contains("wk."));
        assert_eq!(route_digest(&a.route_key(&key)), Some(key));
    }
}
