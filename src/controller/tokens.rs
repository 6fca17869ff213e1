//! The operator's token managers: one per OAuth 2.0 destination, storing into the
//! `<name>-oauth-token` Secret. Every change of a manager's state (new token, failure) queues a
//! reconcile of its destination, which turns it into `AuthReady` and `status.auth`.

use super::token_secret::SecretTokenStore;
use crate::api::WebhookDestination;
use crate::egress::Egress;
use crate::oauth::OAuthSettings;
use crate::oauth::endpoint::TokenEndpoint;
use crate::oauth::manager::{self, TokenSource};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::{mpsc, watch};

struct Entry {
    uid: Option<String>,
    settings: OAuthSettings,
    source: TokenSource,
    /// Dropping it stops the manager.
    _stop: watch::Sender<bool>,
}

pub struct TokenManagers {
    client: Client,
    /// Every token request passes the operator's egress guard (API §11).
    egress: Egress,
    entries: Mutex<HashMap<ObjectRef<WebhookDestination>, Entry>>,
    changed: mpsc::UnboundedSender<ObjectRef<WebhookDestination>>,
}

impl TokenManagers {
    /// The receiver yields destinations whose token state changed.
    pub fn new(
        client: Client,
        egress: Egress,
    ) -> (
        TokenManagers,
        mpsc::UnboundedReceiver<ObjectRef<WebhookDestination>>,
    ) {
        let (changed, rx) = mpsc::unbounded_channel();
        (
            TokenManagers {
                client,
                egress,
                entries: Mutex::default(),
                changed,
            },
            rx,
        )
    }

    /// The running manager of `dest`, started (or restarted, when its settings or client
    /// credentials changed) as needed.
    pub fn ensure(
        &self,
        dest: &WebhookDestination,
        settings: OAuthSettings,
    ) -> Result<TokenSource, reqwest::Error> {
        let key = ObjectRef::from_obj(dest);
        let mut entries = self.entries.lock().expect("token managers lock");
        if let Some(e) = entries.get(&key)
            && e.settings == settings
            && e.uid == dest.uid()
        {
            return Ok(e.source.clone());
        }
        let endpoint = TokenEndpoint::new(settings.clone(), &self.egress)?;
        let (stop, shutdown) = watch::channel(false);
        let store = SecretTokenStore {
            client: self.client.clone(),
            dest: dest.clone(),
        };
        let source = manager::spawn(&dest.name_any(), endpoint, store, shutdown);
        tokio::spawn(forward_changes(
            source.watch(),
            key.clone(),
            self.changed.clone(),
        ));
        entries.insert(
            key,
            Entry {
                uid: dest.uid(),
                settings,
                source: source.clone(),
                _stop: stop,
            },
        );
        Ok(source)
    }

    pub fn forget(&self, dest: &WebhookDestination) {
        let key = ObjectRef::from_obj(dest);
        self.entries
            .lock()
            .expect("token managers lock")
            .remove(&key);
    }

    /// Stops the managers of destinations that no longer exist.
    pub fn retain(&self, exists: impl Fn(&ObjectRef<WebhookDestination>) -> bool) {
        self.entries
            .lock()
            .expect("token managers lock")
            .retain(|key, _| exists(key));
    }
}

async fn forward_changes(
    mut state: watch::Receiver<crate::oauth::AuthState>,
    key: ObjectRef<WebhookDestination>,
    changed: mpsc::UnboundedSender<ObjectRef<WebhookDestination>>,
) {
    while state.changed().await.is_ok() {
        if changed.send(key.clone()).is_err() {
            return;
        }
    }
}
