//! One write key, one source, across the cluster (API §9): which key every WebhookSource and
//! every destination's private key presents (by digest), and who owns each — the oldest. Kept
//! up to date from the caches, reading a key Secret again only when it moved; a holder that
//! may have gained or lost its key is woken to be reconciled.

use super::dereference::SecretCache;
use crate::api::{
    GENERATED_KEY, SecretKeyRef, WebhookDestination, WebhookSource, generated_key_secret,
};
use crate::jetstream::names::KeyDigest;
use crate::tenancy::{self, Claimant, ClaimantKind};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use tokio::sync::mpsc::UnboundedSender;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Holder {
    Source(ObjectRef<WebhookSource>),
    Destination(ObjectRef<WebhookDestination>),
}

/// Where holders are sent to be reconciled.
#[derive(Clone)]
pub struct Wake {
    pub sources: UnboundedSender<ObjectRef<WebhookSource>>,
    pub destinations: UnboundedSender<ObjectRef<WebhookDestination>>,
}

impl Wake {
    fn send(&self, holder: &Holder) {
        // A closed channel means the controller is stopping: nothing left to wake.
        let _ = match holder {
            Holder::Source(r) => self.sources.send(r.clone()).map_err(drop),
            Holder::Destination(r) => self.destinations.send(r.clone()).map_err(drop),
        };
    }
}

/// Where a holder's key was read from, and that Secret's version then.
#[derive(Debug, Clone, PartialEq)]
struct Stamp {
    secret: SecretKeyRef,
    secret_version: Option<String>,
}

#[derive(Debug, Clone)]
struct Held {
    claimant: Claimant,
    stamp: Stamp,
    digest: Option<KeyDigest>,
}

pub struct KeyRegistry {
    held: Mutex<HashMap<Holder, Held>>,
    /// One look at the caches at a time: concurrent reconciles would read the same Secrets.
    learning: tokio::sync::Mutex<()>,
    wake: Wake,
}

/// A holder in the caches and the Secret key it presents (in the holder's namespace).
struct Presented {
    holder: Holder,
    claimant: Claimant,
    stamp: Stamp,
}

impl KeyRegistry {
    pub fn new(wake: Wake) -> KeyRegistry {
        KeyRegistry {
            held: Mutex::default(),
            learning: tokio::sync::Mutex::new(()),
            wake,
        }
    }

    /// Brings the registry up to date with every source and every destination with a private
    /// key in the caches: a key Secret is read only when it (or its holder) changed, and those
    /// sharing a key that changed hands are woken.
    pub async fn learn(
        &self,
        client: &Client,
        secrets: &SecretCache,
        sources: &Store<WebhookSource>,
        destinations: &Store<WebhookDestination>,
    ) -> Result<(), kube::Error> {
        let _one = self.learning.lock().await;
        let present = presented(secrets, sources, destinations);
        let mut moved: HashSet<KeyDigest> = HashSet::new();
        let alive: HashSet<&Holder> = present.iter().map(|p| &p.holder).collect();
        {
            let mut held = self.held.lock().expect("keys lock");
            held.retain(|holder, h| {
                let keep = alive.contains(holder);
                if !keep {
                    moved.extend(h.digest.clone());
                }
                keep
            });
        }
        for p in &present {
            let known = self.held.lock().expect("keys lock").get(&p.holder).cloned();
            if let Some(k) = known.as_ref().filter(|k| k.stamp == p.stamp) {
                if k.claimant != p.claimant {
                    // Deleted and created again under the same name: younger now.
                    moved.extend(k.digest.clone());
                    let mut held = self.held.lock().expect("keys lock");
                    if let Some(h) = held.get_mut(&p.holder) {
                        h.claimant = p.claimant.clone();
                    }
                }
                continue;
            }
            let key = secrets
                .read_key(client, &p.claimant.namespace, &p.stamp.secret)
                .await?;
            let digest = key.filter(|k| !k.is_empty()).map(|k| KeyDigest::of(&k));
            if let Some(before) = known.as_ref().and_then(|k| k.digest.clone())
                && Some(&before) != digest.as_ref()
            {
                moved.insert(before);
            }
            moved.extend(digest.clone());
            self.held.lock().expect("keys lock").insert(
                p.holder.clone(),
                Held {
                    claimant: p.claimant.clone(),
                    stamp: p.stamp.clone(),
                    digest,
                },
            );
        }
        let held = self.held.lock().expect("keys lock");
        for (holder, h) in held.iter() {
            if h.digest.as_ref().is_some_and(|d| moved.contains(d)) {
                self.wake.send(holder);
            }
        }
        Ok(())
    }

    /// A holder is gone (deleted): those that shared its key are woken, the next oldest to take
    /// the key over.
    pub fn wake_sharers(&self, holder: &Holder) {
        let mut held = self.held.lock().expect("keys lock");
        let Some(gone) = held.remove(holder) else {
            return;
        };
        for (other, h) in held.iter() {
            if gone.digest.is_some() && h.digest == gone.digest {
                self.wake.send(other);
            }
        }
    }

    /// The key `holder` presents, as last learnt.
    pub fn digest(&self, holder: &Holder) -> Option<KeyDigest> {
        self.held
            .lock()
            .expect("keys lock")
            .get(holder)
            .and_then(|h| h.digest.clone())
    }

    /// Whether `holder` owns the key it presents (no older holder presents it), and its rank.
    pub fn owns(&self, holder: &Holder) -> Option<String> {
        let held = self.held.lock().expect("keys lock");
        let mine = held.get(holder)?;
        let digest = mine.digest.as_ref()?;
        let owner = tenancy::owner(
            held.values()
                .filter(|h| h.digest.as_ref() == Some(digest))
                .map(|h| &h.claimant),
        )?;
        (owner == &mine.claimant).then(|| owner.rank())
    }
}

/// Every holder in the caches, with the Secret key it presents.
fn presented(
    secrets: &SecretCache,
    sources: &Store<WebhookSource>,
    destinations: &Store<WebhookDestination>,
) -> Vec<Presented> {
    let sources = sources.state().into_iter().map(|s| {
        let secret = source_key_ref(&s);
        (
            Holder::Source(ObjectRef::from_obj(s.as_ref())),
            claimant(s.as_ref(), ClaimantKind::Source),
            secret,
        )
    });
    let destinations = destinations.state().into_iter().filter_map(|d| {
        let secret = d.spec.source.as_ref()?.write_key_secret_ref.clone()?;
        Some((
            Holder::Destination(ObjectRef::from_obj(d.as_ref())),
            claimant(d.as_ref(), ClaimantKind::Destination),
            secret,
        ))
    });
    sources
        .chain(destinations)
        .map(|(holder, claimant, secret)| Presented {
            stamp: Stamp {
                secret_version: secrets.version(&claimant.namespace, &secret.name),
                secret,
            },
            holder,
            claimant,
        })
        .collect()
}

/// The Secret key a source's write key is in: the one it names, or the generated one.
pub fn source_key_ref(source: &WebhookSource) -> SecretKeyRef {
    source
        .spec
        .write_key_secret_ref
        .clone()
        .unwrap_or_else(|| SecretKeyRef {
            name: generated_key_secret(&source.name_any()),
            key: GENERATED_KEY.into(),
        })
}

fn claimant<K: Resource>(obj: &K, kind: ClaimantKind) -> Claimant {
    let meta = obj.meta();
    Claimant {
        // Not created yet as far as the cache knows: the newest of all.
        created: meta
            .creation_timestamp
            .as_ref()
            .map_or(i64::MAX, |t| t.0.as_second()),
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        kind,
    }
}
