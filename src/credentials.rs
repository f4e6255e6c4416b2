//! The Jenkins identity the proxy speaks as.
//!
//! This module owns [`Secret`], a string that never prints itself, and
//! [`Credentials`], which turns a user name and a password or API token into
//! the `Authorization: Basic …` header value once, at start-up, marked
//! sensitive so that `Debug` of a header map never shows it. Reading secrets
//! from files and environment variables is `config`'s job; deciding whether a
//! request gets a crumb is `proxy`'s.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use base64::Engine as _;
use http::HeaderValue;

/// A secret string: `Debug` and `Display` print a marker, never the value.
///
/// The only way to the value is [`Secret::expose`], so every use is easy to
/// find with grep. There is no `Clone` and no `Serialize` on purpose.
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself. Call sites must not log or format the result.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Which kind of secret the user configured. It matters because Jenkins
/// exempts requests authenticated with an API token from CSRF checks
/// (`ApiCrumbExclusion`, Jenkins 2.96+), so `crumb.mode = "auto"` sends no
/// crumb with a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretKind {
    Password,
    ApiToken,
}

impl SecretKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SecretKind::Password => "password",
            SecretKind::ApiToken => "api token",
        }
    }
}

/// The configured Jenkins user, with the `Authorization` header value
/// precomputed (tower-http's `AddAuthorization` does the same, but leaves
/// `set_sensitive` opt-in; here it is always on).
pub(crate) struct Credentials {
    username: String,
    kind: SecretKind,
    authorization: HeaderValue,
}

impl Credentials {
    /// Builds the `Basic` header value for `username:secret` (RFC 7617).
    ///
    /// # Errors
    /// Fails only if the encoded value is not a valid header value, which
    /// base64 output never is; the error is kept rather than a panic so that
    /// the request path has none.
    pub(crate) fn new(
        username: String,
        kind: SecretKind,
        secret: &Secret,
    ) -> Result<Self, http::header::InvalidHeaderValue> {
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{username}:{}", secret.expose()));
        let mut authorization = HeaderValue::try_from(format!("Basic {encoded}"))?;
        authorization.set_sensitive(true);
        Ok(Self {
            username,
            kind,
            authorization,
        })
    }

    pub(crate) fn username(&self) -> &str {
        &self.username
    }

    pub(crate) fn kind(&self) -> SecretKind {
        self.kind
    }

    /// The `Authorization` value, already marked sensitive.
    pub(crate) fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("kind", &self.kind)
            .field("authorization", &"[redacted]")
            .finish()
    }
}

/// What identifies one version of a secret file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn fingerprint(path: &std::path::Path) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Fingerprint {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    })
}

/// The current credentials, re-read when their secret file changes, so a
/// rotated password or token is used from the next request on without a
/// restart (the lesson of proxies that copied a token once at start-up,
/// anchors.md §3.4).
pub(crate) struct CredentialStore {
    /// The secret file, when the secret came from one (an environment
    /// variable cannot change under a running process).
    file: Option<PathBuf>,
    state: RwLock<(Option<Fingerprint>, Arc<Credentials>)>,
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (_, creds) = &*self.state.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("CredentialStore")
            .field("file", &self.file)
            .field("credentials", creds)
            .finish()
    }
}

impl CredentialStore {
    pub(crate) fn new(credentials: Credentials, file: Option<PathBuf>) -> Self {
        let print = file.as_deref().and_then(fingerprint);
        Self {
            file,
            state: RwLock::new((print, Arc::new(credentials))),
        }
    }

    /// The credentials to use now, and whether they just changed. One
    /// `stat` per call; the file is read only when it changed. A file that
    /// cannot be read or is empty (half-way through a rotation) keeps the
    /// previous secret in use, with a warning.
    pub(crate) fn current(&self) -> (Arc<Credentials>, bool) {
        let Some(path) = &self.file else {
            return (self.snapshot(), false);
        };
        let now = fingerprint(path);
        {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if state.0 == now {
                return (state.1.clone(), false);
            }
        }
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.0 == now {
            return (state.1.clone(), false);
        }
        state.0 = now;
        let old = state.1.clone();
        match crate::config::read_secret_file(path) {
            Ok(secret) => match Credentials::new(old.username.clone(), old.kind, &secret) {
                Ok(new) if new.authorization != old.authorization => {
                    tracing::info!(file = %path.display(), "secret file changed; using the new secret, dropping the cached crumb and session");
                    state.1 = Arc::new(new);
                    (state.1.clone(), true)
                }
                _ => (old, false),
            },
            Err(problem) => {
                tracing::warn!(file = %path.display(), %problem, "secret file changed but cannot be used; keeping the previous secret");
                (old, false)
            }
        }
    }

    fn snapshot(&self) -> Arc<Credentials> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }

    pub(crate) fn username(&self) -> String {
        self.snapshot().username.clone()
    }

    pub(crate) fn kind(&self) -> SecretKind {
        self.snapshot().kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_value_is_rfc7617_and_sensitive() {
        let secret = Secret::new("s3cr3t-pw".into());
        let creds = Credentials::new("alice".into(), SecretKind::Password, &secret).unwrap();
        // base64("alice:s3cr3t-pw")
        assert_eq!(creds.authorization(), "Basic YWxpY2U6czNjcjN0LXB3");
        assert!(creds.authorization().is_sensitive());
    }

    #[test]
    fn rotated_secret_file_is_picked_up() {
        let dir = std::env::temp_dir().join(format!("crumb-proxy-rotate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "first-secret\n").unwrap();
        let creds = Credentials::new(
            "alice".into(),
            SecretKind::ApiToken,
            &Secret::new("first-secret".into()),
        )
        .unwrap();
        let store = CredentialStore::new(creds, Some(file.clone()));
        let (first, changed) = store.current();
        assert!(!changed);
        // A different length makes the change visible even within one
        // mtime tick.
        std::fs::write(&file, "second-secret-longer\n").unwrap();
        let (second, changed) = store.current();
        assert!(changed);
        assert_ne!(first.authorization(), second.authorization());
        assert!(!store.current().1, "reported once");
        // Half-way through a rotation: keep the last good secret.
        std::fs::write(&file, "").unwrap();
        let (kept, changed) = store.current();
        assert!(!changed);
        assert_eq!(kept.authorization(), second.authorization());
        assert!(!format!("{store:?}").contains("second-secret"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn debug_and_display_redact() {
        let secret = Secret::new("s3cr3t-pw".into());
        let creds = Credentials::new("alice".into(), SecretKind::ApiToken, &secret).unwrap();
        for text in [
            format!("{secret:?}"),
            format!("{secret}"),
            format!("{creds:?}"),
        ] {
            assert!(!text.contains("s3cr3t-pw"), "{text}");
            assert!(!text.contains("YWxpY2U6czNjcjN0LXB3"), "{text}");
        }
        assert!(format!("{creds:?}").contains("alice"));
    }
}
