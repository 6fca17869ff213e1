//! Where a destination's tokens are kept between refreshes and restarts: a 0600 file in the
//! data dir (`hookline run`), the `<name>-oauth-token` Secret (the operator, see
//! `controller::token_secret`), or nowhere (a worker holding client credentials).

use super::TokenSet;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("the token Secret {name}: {message}")]
    Api { name: String, message: String },
}

/// The Secret keys of API.md §5, also the file's field names.
pub const ACCESS_TOKEN: &str = "access_token";
pub const EXPIRES_AT: &str = "expires_at";
pub const REFRESH_TOKEN: &str = "refresh_token";
/// Not in the contract's key list, but lets a restart keep the 75–90% refresh schedule.
pub const OBTAINED_AT: &str = "obtained_at";

/// A token set as string keys (the Secret's `data`, the file's JSON object).
pub fn to_fields(t: &TokenSet) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        (ACCESS_TOKEN, t.access_token.clone()),
        (EXPIRES_AT, rfc3339_millis(t.expires_at)),
        (OBTAINED_AT, rfc3339_millis(t.obtained_at)),
    ];
    if let Some(rt) = &t.refresh_token {
        fields.push((REFRESH_TOKEN, rt.clone()));
    }
    fields
}

/// Stored times keep milliseconds so a restart keeps the refresh schedule of short tokens.
fn rfc3339_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Reads a token set back. A hand-seeded store may hold only `refresh_token`: then the access
/// token is empty and already expired, so the first thing done is a refresh.
pub fn from_fields(
    get: impl Fn(&str) -> Option<String>,
    origin: &str,
) -> Result<Option<TokenSet>, StoreError> {
    let refresh_token = get(REFRESH_TOKEN).filter(|s| !s.is_empty());
    let access_token = get(ACCESS_TOKEN).unwrap_or_default();
    if access_token.is_empty() && refresh_token.is_none() {
        return Ok(None);
    }
    let time = |key: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        match get(key).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => DateTime::parse_from_rfc3339(s.trim())
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| StoreError::Invalid {
                    origin: origin.to_string(),
                    message: format!("{key} {s:?} is not an RFC 3339 time: {e}"),
                }),
        }
    };
    let now = Utc::now();
    let expires_at = if access_token.is_empty() {
        now - chrono::Duration::seconds(1)
    } else {
        time(EXPIRES_AT)?.unwrap_or(now)
    };
    let obtained_at = time(OBTAINED_AT)?
        .filter(|t| *t <= expires_at)
        .unwrap_or_else(|| now.min(expires_at));
    Ok(Some(TokenSet {
        access_token,
        obtained_at,
        expires_at,
        refresh_token,
    }))
}

/// `hookline run`'s token file, `<data dir>/oauth/<namespace>/<name>.json`, with a lock file
/// beside it so `run` and `test` on the same data dir never refresh at the same time.
#[derive(Debug, Clone)]
pub struct TokenFile {
    path: PathBuf,
    /// A token seeded in a `<name>-oauth-token` Secret manifest, used until the file exists.
    seed: Option<TokenSet>,
}

pub struct FileLock(#[allow(dead_code)] std::fs::File);

impl TokenFile {
    pub fn new(data_dir: &Path, namespace: &str, name: &str, seed: Option<TokenSet>) -> TokenFile {
        TokenFile {
            path: data_dir
                .join("oauth")
                .join(namespace)
                .join(format!("{name}.json")),
            seed,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> Result<Option<TokenSet>, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(self.seed.clone()),
            Err(e) => return Err(io_error(&self.path)(e)),
        };
        let origin = self.path.display().to_string();
        let fields: HashMap<String, String> =
            serde_json::from_str(&text).map_err(|e| StoreError::Invalid {
                origin: origin.clone(),
                message: e.to_string(),
            })?;
        from_fields(|k| fields.get(k).cloned(), &origin)
    }

    /// Replaces the file atomically; only its owner can read it.
    pub fn save(&self, token: &TokenSet) -> Result<(), StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.path.parent().expect("the token file has a directory");
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let fields: serde_json::Map<String, serde_json::Value> = to_fields(token)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        let tmp = self.path.with_extension("json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_error(&tmp))?;
        file.write_all(&serde_json::to_vec_pretty(&fields).expect("strings serialize"))
            .and_then(|()| file.sync_all())
            .map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io_error(&self.path))
    }

    /// Blocks until no other process is refreshing this destination's token.
    pub async fn lock(&self) -> Result<FileLock, StoreError> {
        let path = self.path.with_extension("lock");
        let dir = self.path.parent().expect("the token file has a directory");
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let io = io_error(&path);
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            file.lock()?;
            Ok(FileLock(file))
        })
        .await
        .expect("the lock task does not panic")
        .map_err(io)
    }
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> StoreError + use<> {
    let path = path.display().to_string();
    move |source| StoreError::Io {
        path: path.clone(),
        source,
    }
}

/// A cluster worker's view of the `<name>-oauth-token` Secret, mounted as files: it follows
/// what the operator stores and never refreshes itself (two refreshers would burn a rotating
/// refresh token).
#[derive(Debug, Clone)]
pub struct MountedToken {
    pub dir: PathBuf,
}

impl MountedToken {
    pub fn load(&self) -> Result<Option<TokenSet>, StoreError> {
        let read = |key: &str| std::fs::read_to_string(self.dir.join(key)).ok();
        from_fields(read, &self.dir.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(t: &TokenSet) -> HashMap<String, String> {
        to_fields(t)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    #[test]
    fn token_sets_survive_the_round_trip_to_millisecond_precision() {
        let obtained_at = DateTime::parse_from_rfc3339("2026-11-28T10:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let t = TokenSet {
            access_token: "at".into(),
            obtained_at,
            expires_at: obtained_at + chrono::Duration::seconds(2),
            refresh_token: Some("rt".into()),
        };
        let f = fields(&t);
        assert_eq!(f[EXPIRES_AT], "2026-11-28T10:00:02.123Z");
        let back = from_fields(|k| f.get(k).cloned(), "test").unwrap().unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn a_hand_seeded_refresh_token_alone_is_due_at_once() {
        let f = HashMap::from([(REFRESH_TOKEN.to_string(), "seeded".to_string())]);
        let t = from_fields(|k| f.get(k).cloned(), "test").unwrap().unwrap();
        assert!(t.access_token.is_empty());
        assert!(!t.usable_at(Utc::now()));
        assert!(from_fields(|_| None, "test").unwrap().is_none());
        let bad = HashMap::from([
            (ACCESS_TOKEN.to_string(), "a".to_string()),
            (EXPIRES_AT.to_string(), "tomorrow".to_string()),
        ]);
        let e = from_fields(|k| bad.get(k).cloned(), "Secret x").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Secret x: expires_at \"tomorrow\""),
            "{e}"
        );
    }

    #[test]
    fn the_token_file_is_private_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::new(dir.path(), "ns", "d", None);
        assert_eq!(file.load().unwrap(), None);
        let now = Utc::now();
        let t = TokenSet {
            access_token: "at".into(),
            obtained_at: now,
            expires_at: now + chrono::Duration::hours(1),
            refresh_token: None,
        };
        file.save(&t).unwrap();
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(file.load().unwrap().unwrap().access_token, "at");
        assert!(!file.path().with_extension("json.tmp").exists());
    }
}
