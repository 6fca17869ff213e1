//! NATS identities per role (API §10): user JWTs, signed with an account signing key the
//! operator holds, that allow a worker only its own consumer and dead letters, and the gateway
//! only publishing events and reading routes. Each is short-lived and renewed before it
//! expires; what it may do is decided here, and enforced by the NATS server.

use super::names::{
    DEAD_LETTER_STREAM, DestinationNames, EVENTS_STREAM, PROGRESS_BUCKET, ROUTES_BUCKET,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{what} is not an NKey seed of an account signing key (it starts with SA): {reason}")]
    BadSeed { what: String, reason: String },
    #[error("{0:?} is not an account's public NKey (it starts with A)")]
    BadAccount(String),
    #[error("cannot sign a NATS identity: {0}")]
    Sign(String),
}

/// What an identity may publish and subscribe to; anything else the server refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// Its replies arrive under `<inbox>.>`, which only it may subscribe to.
    pub inbox: String,
}

impl Permissions {
    /// One destination's workers: pull and acknowledge from its consumer, read that consumer's
    /// info, publish its dead letters and its own events (its Service's ingestion, retries,
    /// replays), read its own dead letters (a consumer filtered to their subject, which the
    /// server checks against the subject it is created on), and keep its own records in the
    /// progress bucket.
    pub fn worker(names: &DestinationNames) -> Permissions {
        let consumer = names.consumer();
        let inbox = format!("_INBOX_{consumer}");
        let dead_letters = names.dead_letter_subject();
        let progress = format!("$KV.{PROGRESS_BUCKET}.{consumer}");
        Permissions {
            publish: vec![
                "$JS.API.INFO".into(),
                format!("$JS.API.CONSUMER.INFO.{EVENTS_STREAM}.{consumer}"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.{consumer}"),
                format!("$JS.ACK.{EVENTS_STREAM}.{consumer}.>"),
                format!("$JS.API.CONSUMER.CREATE.{DEAD_LETTER_STREAM}.*.{dead_letters}"),
                dead_letters,
                names.subject(),
                format!("$JS.API.STREAM.INFO.KV_{PROGRESS_BUCKET}"),
                format!("{progress}.*"),
                format!("$JS.API.DIRECT.GET.KV_{PROGRESS_BUCKET}.{progress}.*"),
            ],
            subscribe: vec![format!("{inbox}.>")],
            inbox,
        }
    }

    /// The gateway: publish events, read the routes bucket (a watch is an ephemeral consumer of
    /// the bucket's stream).
    pub fn gateway() -> Permissions {
        let routes = format!("KV_{ROUTES_BUCKET}");
        let inbox = "_INBOX_hookline_gateway".to_string();
        Permissions {
            publish: vec![
                "$JS.API.INFO".into(),
                "hookline.events.>".into(),
                format!("$JS.API.STREAM.INFO.{routes}"),
                format!("$JS.API.CONSUMER.CREATE.{routes}"),
                format!("$JS.API.CONSUMER.CREATE.{routes}.>"),
                format!("$JS.API.CONSUMER.INFO.{routes}.*"),
                format!("$JS.API.CONSUMER.DELETE.{routes}.*"),
                format!("$JS.API.DIRECT.GET.{routes}.>"),
                format!("$JS.FC.{routes}.>"),
            ],
            subscribe: vec![format!("{inbox}.>")],
            inbox,
        }
    }
}

/// Issues user identities as the account's signing key.
pub struct Issuer {
    signing_key: nkeys::KeyPair,
    account: String,
}

/// The operator's issuing of identities: who signs, and for how long each identity lives.
pub struct Identities {
    pub issuer: Issuer,
    pub lifetime: Duration,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("account", &self.issuer.account)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl Identities {
    /// When an identity issued now is renewed: halfway through its life, which leaves the
    /// other half for the renewed file to reach every pod (the kubelet's Secret refresh takes
    /// up to a minute or two).
    pub fn renew_at(&self, issued: &Issued) -> DateTime<Utc> {
        issued.expires - self.lifetime / 2
    }

    pub fn worker(
        &self,
        names: &DestinationNames,
        now: DateTime<Utc>,
    ) -> Result<Issued, IdentityError> {
        let name = format!("hookline-worker {}/{}", names.namespace, names.name);
        self.issuer
            .issue(&name, Some(&Permissions::worker(names)), self.lifetime, now)
    }

    pub fn gateway(&self, now: DateTime<Utc>) -> Result<Issued, IdentityError> {
        self.issuer.issue(
            "hookline-gateway",
            Some(&Permissions::gateway()),
            self.lifetime,
            now,
        )
    }
}

/// A `.creds` file's contents, and until when the server accepts it.
#[derive(Debug, Clone)]
pub struct Issued {
    pub creds: String,
    pub expires: DateTime<Utc>,
}

impl Issuer {
    /// `seed`: the account signing key's seed (`SA…`); `account`: the account's public key
    /// (`A…`), which the server finds the signing key listed in.
    pub fn new(seed: &str, account: &str, what: &str) -> Result<Issuer, IdentityError> {
        let signing_key =
            nkeys::KeyPair::from_seed(seed.trim()).map_err(|e| IdentityError::BadSeed {
                what: what.to_string(),
                reason: e.to_string(),
            })?;
        if signing_key.key_pair_type() != nkeys::KeyPairType::Account {
            return Err(IdentityError::BadSeed {
                what: what.to_string(),
                reason: format!("it is a {:?} key", signing_key.key_pair_type()),
            });
        }
        let account = account.trim();
        if nkeys::KeyPair::from_public_key(account)
            .map(|k| k.key_pair_type() != nkeys::KeyPairType::Account)
            .unwrap_or(true)
        {
            return Err(IdentityError::BadAccount(account.to_string()));
        }
        Ok(Issuer {
            signing_key,
            account: account.to_string(),
        })
    }

    /// A new user (its own NKey) named `name`, allowed `permissions` (all when `None`: the
    /// operator's own), valid for `lifetime` from `now`.
    pub fn issue(
        &self,
        name: &str,
        permissions: Option<&Permissions>,
        lifetime: Duration,
        now: DateTime<Utc>,
    ) -> Result<Issued, IdentityError> {
        let user = nkeys::KeyPair::new_user();
        let expires = now + lifetime;
        let mut nats = json!({
            "subs": -1, "data": -1, "payload": -1,
            "issuer_account": self.account,
            "type": "user",
            "version": 2,
        });
        if let Some(p) = permissions {
            nats["pub"] = json!({"allow": p.publish});
            nats["sub"] = json!({"allow": p.subscribe});
        }
        let claims = json!({
            "jti": uuid::Uuid::new_v4().simple().to_string(),
            "iat": now.timestamp(),
            "exp": expires.timestamp(),
            "iss": self.signing_key.public_key(),
            "name": name,
            "sub": user.public_key(),
            "nats": nats,
        });
        let jwt = sign_jwt(&claims, &self.signing_key)?;
        let seed = user
            .seed()
            .map_err(|e| IdentityError::Sign(e.to_string()))?;
        Ok(Issued {
            creds: creds_file(&jwt, &seed),
            expires,
        })
    }
}

/// A JWT as NATS reads it: `ed25519-nkey` signatures over `header.claims`.
pub fn sign_jwt(claims: &Value, key: &nkeys::KeyPair) -> Result<String, IdentityError> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let signed = format!("{header}.{body}");
    let signature = key
        .sign(signed.as_bytes())
        .map_err(|e| IdentityError::Sign(e.to_string()))?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// The `.creds` layout every NATS client reads.
fn creds_file(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// The JWT and seed of a `.creds` file.
pub fn parse_creds(text: &str) -> Option<(String, String)> {
    let block = |begin: &str| {
        let start = text.find(begin)? + begin.len();
        let rest = &text[start..];
        let body = rest.split("------END").next()?;
        Some(body.trim().to_string())
    };
    Some((
        block("-----BEGIN NATS USER JWT-----")?,
        block("-----BEGIN USER NKEY SEED-----")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> (Issuer, nkeys::KeyPair) {
        let account = nkeys::KeyPair::new_account();
        let signing = nkeys::KeyPair::new_account();
        let issuer = Issuer::new(&signing.seed().unwrap(), &account.public_key(), "key").unwrap();
        (issuer, signing)
    }

    fn claims(jwt: &str) -> Value {
        let body = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
    }

    #[test]
    fn an_issued_identity_is_a_signed_user_of_the_account_with_only_its_permissions() {
        let (issuer, signing) = issuer();
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let permissions = Permissions::worker(&DestinationNames::new("shop", "crm"));
        let issued = issuer
            .issue(
                "shop/crm",
                Some(&permissions),
                Duration::from_secs(3600),
                now,
            )
            .unwrap();
        let (jwt, seed) = parse_creds(&issued.creds).unwrap();
        let c = claims(&jwt);
        assert_eq!(c["iss"], signing.public_key());
        assert_eq!(c["nats"]["issuer_account"], issuer.account);
        assert_eq!(c["exp"], 1_800_003_600);
        assert_eq!(c["nats"]["sub"]["allow"], json!(["_INBOX_shop_crm.>"]));
        assert!(
            c["nats"]["pub"]["allow"]
                .as_array()
                .unwrap()
                .contains(&json!("$JS.API.CONSUMER.MSG.NEXT.HOOKLINE_EVENTS.shop_crm"))
        );
        assert_eq!(
            c["sub"],
            nkeys::KeyPair::from_seed(&seed).unwrap().public_key()
        );
        // The signature verifies with the signing key over header.claims.
        let (signed, signature) = jwt.rsplit_once('.').unwrap();
        signing
            .verify(
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).unwrap(),
            )
            .unwrap();
        assert_eq!(issued.expires, now + Duration::from_secs(3600));
    }

    #[test]
    fn a_seed_that_is_not_an_account_signing_key_is_refused_by_name() {
        let user = nkeys::KeyPair::new_user();
        let account = nkeys::KeyPair::new_account().public_key();
        let err = Issuer::new(
            &user.seed().unwrap(),
            &account,
            "the Secret hookline-nats-signing",
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("hookline-nats-signing"), "{err}");
        let signing = nkeys::KeyPair::new_account().seed().unwrap();
        assert!(matches!(
            Issuer::new(&signing, &user.public_key(), "k"),
            Err(IdentityError::BadAccount(_))
        ));
    }

    #[test]
    fn a_worker_may_touch_nothing_of_another_destination() {
        let a = Permissions::worker(&DestinationNames::new("shop", "crm"));
        let b = Permissions::worker(&DestinationNames::new("shop", "crm2"));
        for subject in a.publish.iter().chain(&a.subscribe) {
            assert!(!subject.contains("crm2"));
            // Shared: reading the account's and the progress bucket's information.
            let info = subject == "$JS.API.INFO" || subject.starts_with("$JS.API.STREAM.INFO.");
            assert!(!b.publish.contains(subject) || info, "{subject}");
        }
        // Its dead letters only: a consumer on their own subject.
        let reading: Vec<_> = a
            .publish
            .iter()
            .filter(|s| s.contains(DEAD_LETTER_STREAM))
            .collect();
        assert_eq!(
            reading,
            ["$JS.API.CONSUMER.CREATE.HOOKLINE_DEAD_LETTERS.*.hookline.dlq.shop_crm"]
        );
    }
}
