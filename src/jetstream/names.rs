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

    /// Events sent to a destination without a write key (its own worker Service).
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

    /// What this destination's consumer reads: its write key's subject, or its own without
    /// one — always exactly one. Events for this destination alone on a shared key subject
    /// (replays) name it as their recipient (see [`Self::recipient`]).
    pub fn filter_subject(&self, key: Option<&KeyDigest>) -> String {
        key.map_or_else(|| self.subject(), KeyDigest::subject)
    }

    /// How a queued event addresses this destination alone.
    pub fn recipient(&self) -> &str {
        &self.token
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
        assert_eq!(a.filter_subject(None), a.subject());
        assert_eq!(a.filter_subject(Some(&key)), key.subject());
        assert_eq!(route_digest(&a.route_key(&key)), Some(key));
    }
}
