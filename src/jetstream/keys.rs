//! The keys of a NATS server in operator mode, made by Hookline itself (API §10, "Secure by
//! default"): an operator, a system account, Hookline's account and its signing key. Only the
//! seeds are kept (in a Secret the operator alone reads); every JWT — the server's
//! configuration, the operator's own user — is derived from them, the same every time, so
//! nothing else needs keeping.

use super::identity::{IdentityError, Issuer, sign_jwt};
use nkeys::{KeyPair, KeyPairType};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// The keys in a Secret's data, by these names.
const ROLES: [(&str, KeyPairType); 4] = [
    ("operator.nk", KeyPairType::Operator),
    ("system-account.nk", KeyPairType::Account),
    ("account.nk", KeyPairType::Account),
    ("signing-key.nk", KeyPairType::Account),
];

/// Beside the seeds, for people: the account's public key.
pub const ACCOUNT_KEY: &str = "account.pub";

/// The key of the Secret entry that holds the server configuration.
pub const SERVER_CONFIG_KEY: &str = "auth.conf";

/// The operator's own identity: all of the account's permissions. It is derived anew at each
/// start, so a long life costs nothing; rotating the signing key ends it.
const OPERATOR_IDENTITY_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(
        "{what} has no {key:?} (the seeds are operator.nk, system-account.nk, account.nk and signing-key.nk)"
    )]
    Missing { what: String, key: &'static str },
    #[error("{what}: {key:?} is not the seed of an NKey of type {expected:?}")]
    Wrong {
        what: String,
        key: &'static str,
        expected: KeyPairType,
    },
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

pub struct NatsKeys {
    operator: KeyPair,
    system: KeyPair,
    account: KeyPair,
    signing_key: KeyPair,
}

impl std::fmt::Debug for NatsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsKeys")
            .field("operator", &self.operator.public_key())
            .field("account", &self.account())
            .finish_non_exhaustive()
    }
}

impl NatsKeys {
    pub fn generate() -> NatsKeys {
        NatsKeys {
            operator: KeyPair::new_operator(),
            system: KeyPair::new_account(),
            account: KeyPair::new_account(),
            signing_key: KeyPair::new_account(),
        }
    }

    /// The keys from their seeds, as [`NatsKeys::seeds`] gives them; `what` names their
    /// place in errors.
    pub fn from_seeds(seeds: &BTreeMap<String, String>, what: &str) -> Result<NatsKeys, KeysError> {
        let mut keys = ROLES.iter().map(|(key, expected)| {
            let seed = seeds.get(*key).ok_or(KeysError::Missing {
                what: what.to_string(),
                key,
            })?;
            KeyPair::from_seed(seed.trim())
                .ok()
                .filter(|k| k.key_pair_type() == *expected)
                .ok_or(KeysError::Wrong {
                    what: what.to_string(),
                    key,
                    expected: expected.clone(),
                })
        });
        let mut next = || keys.next().expect("four roles");
        Ok(NatsKeys {
            operator: next()?,
            system: next()?,
            account: next()?,
            signing_key: next()?,
        })
    }

    pub fn seeds(&self) -> BTreeMap<String, String> {
        [
            &self.operator,
            &self.system,
            &self.account,
            &self.signing_key,
        ]
        .into_iter()
        .zip(ROLES)
        .map(|(key, (name, _))| (name.to_string(), key.seed().expect("generated with a seed")))
        .collect()
    }

    /// Hookline's account (`A…`), which identities are issued in.
    pub fn account(&self) -> String {
        self.account.public_key()
    }

    /// The signing key's seed (`SA…`), as `--nats-signing-key` takes it.
    pub fn signing_seed(&self) -> String {
        self.signing_key.seed().expect("generated with a seed")
    }

    /// What issues the workers' and the gateway's identities.
    pub fn issuer(&self) -> Result<Issuer, IdentityError> {
        Issuer::new(
            &self.signing_seed(),
            &self.account(),
            "the generated signing key",
        )
    }

    /// The operator's own `.creds`: every permission of Hookline's account.
    pub fn operator_creds(&self) -> Result<String, IdentityError> {
        Ok(self
            .issuer()?
            .issue(
                "hookline-operator",
                None,
                OPERATOR_IDENTITY_LIFETIME,
                chrono::Utc::now(),
            )?
            .creds)
    }

    fn jwt(&self, subject: &KeyPair, name: &str, nats: Value) -> Result<String, IdentityError> {
        // A fixed issue time and id: the same keys always give the same configuration, so
        // writing it again changes nothing on the servers.
        let claims = json!({
            "jti": format!("hookline-{}", subject.public_key().to_lowercase()),
            "iat": 0,
            "iss": self.operator.public_key(),
            "name": name,
            "sub": subject.public_key(),
            "nats": nats,
        });
        sign_jwt(&claims, &self.operator)
    }

    /// The part of nats-server's configuration that puts it in operator mode with these keys:
    /// the operator, the system account, and Hookline's account (JetStream on, its signing
    /// key listed) in a memory resolver. Public keys and JWTs only: nothing secret.
    pub fn server_config(&self) -> Result<String, IdentityError> {
        let operator = self.jwt(
            &self.operator,
            "hookline",
            json!({"type": "operator", "version": 2,
                "system_account": self.system.public_key()}),
        )?;
        let system = self.jwt(
            &self.system,
            "SYS",
            json!({"type": "account", "version": 2}),
        )?;
        let unlimited = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
        });
        let hookline = self.jwt(
            &self.account,
            "hookline",
            json!({"type": "account", "version": 2, "limits": unlimited,
                "signing_keys": [self.signing_key.public_key()]}),
        )?;
        Ok(format!(
            "# Made by Hookline from its NATS keys: operator mode, Hookline's account with its signing key.\n\
             operator: {operator}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: {system}\n  {acc}: {hookline}\n}}\n",
            sys = self.system.public_key(),
            acc = self.account(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_back_from_their_seeds_and_give_the_same_configuration() {
        let keys = NatsKeys::generate();
        let again = NatsKeys::from_seeds(&keys.seeds(), "test").unwrap();
        assert_eq!(again.account(), keys.account());
        assert_eq!(
            again.server_config().unwrap(),
            keys.server_config().unwrap()
        );
        assert!(keys.server_config().unwrap().contains(&keys.account()));
        assert!(keys.signing_seed().starts_with("SA"));
        assert!(
            keys.operator_creds()
                .unwrap()
                .contains("BEGIN NATS USER JWT")
        );
    }

    #[test]
    fn a_missing_or_misplaced_seed_is_named() {
        let mut seeds = NatsKeys::generate().seeds();
        seeds.remove("signing-key.nk");
        let missing = NatsKeys::from_seeds(&seeds, "Secret x").unwrap_err();
        assert!(
            missing.to_string().contains("\"signing-key.nk\""),
            "{missing}"
        );
        let mut seeds = NatsKeys::generate().seeds();
        let operator = seeds["operator.nk"].clone();
        seeds.insert("account.nk".into(), operator);
        let wrong = NatsKeys::from_seeds(&seeds, "Secret x").unwrap_err();
        assert!(wrong.to_string().contains("\"account.nk\""), "{wrong}");
    }
}
