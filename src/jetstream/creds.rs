//! A `.creds` file that changes under a running process: identities per role are short-lived
//! and renewed by the operator (API §10), so the file is read on every connect and a change
//! reconnects at once, while the old identity is still valid — no delivery waits for the
//! server to drop an expired one.

use super::NatsError;
use super::identity::parse_creds;
use async_nats::{Auth, AuthError, ConnectOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the file is compared with what the connection presented.
const CHECK_EVERY: Duration = Duration::from_secs(1);

async fn read(file: &Path) -> Result<String, NatsError> {
    tokio::fs::read_to_string(file)
        .await
        .map_err(|source| NatsError::Creds {
            file: file.to_path_buf(),
            source,
        })
}

/// Connect options that authenticate with the file as it is at each connect. A file that is
/// unreadable or malformed at start is an error naming it.
pub async fn options(file: &Path) -> Result<ConnectOptions, NatsError> {
    let text = read(file).await?;
    if parse_creds(&text).is_none() {
        return Err(NatsError::Creds {
            file: file.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a NATS .creds file (a user JWT and an NKey seed)",
            ),
        });
    }
    let file = file.to_path_buf();
    Ok(ConnectOptions::with_auth_callback(move |nonce| {
        let file = file.clone();
        async move {
            let text = read(&file).await.map_err(AuthError::new)?;
            let (jwt, seed) = parse_creds(&text).ok_or_else(|| {
                AuthError::new(format!("{} is not a .creds file", file.display()))
            })?;
            let key = nkeys::KeyPair::from_seed(&seed).map_err(AuthError::new)?;
            let mut auth = Auth::new();
            auth.jwt = Some(jwt);
            auth.signature = Some(key.sign(&nonce).map_err(AuthError::new)?);
            Ok(auth)
        }
    }))
}

/// Reconnects whenever the file's contents change, for the life of the client.
pub async fn reconnect_on_change(client: async_nats::Client, file: PathBuf) {
    let mut presented = read(&file).await.ok();
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let now = read(&file).await.ok();
        if now.is_some() && now != presented {
            tracing::info!(file = %file.display(), "NATS credentials changed; reconnecting with them");
            if let Err(e) = client.force_reconnect().await {
                tracing::warn!(error = %e, "cannot reconnect to NATS with the new credentials");
                continue;
            }
            presented = now;
        }
    }
}
