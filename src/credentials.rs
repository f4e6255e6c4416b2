//! The Jenkins identity the proxy speaks as.
//!
//! This module owns [`Secret`], a string that never prints itself, and
//! [`Credentials`], which turns a user name and a password or API token into
//! the `Authorization: Basic …` header value once, at start-up, marked
//! sensitive so that `Debug` of a header map never shows it. Reading secrets
//! from files and environment variables is `config`'s job; deciding whether a
//! request gets a crumb is `proxy`'s.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::SystemTime;

use base64::Engine as _;
use http::HeaderValue;

use crate::worker::PerWorker;

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

    /// A copy whose `Authorization` value has memory of its own, for one
    /// worker (see `worker::own_copy`).
    fn own_copy(&self) -> Self {
        Self {
            username: self.username.clone(),
            kind: self.kind,
            authorization: crate::worker::own_copy(&self.authorization),
        }
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

/// The directory holding `path` ("." for a bare file name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether the watched directories saw anything since the last look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Changed {
    No,
    Maybe,
}

/// An inotify watch on the directory of the secret file, and on the
/// directory of the file it finally resolves to when it is a symlink (a
/// Kubernetes Secret volume swaps a `..data` symlink; systemd and Docker
/// secrets are plain files). It reports only completed writes, renames,
/// creations and deletions, so a file being written is read once it is
/// closed.
///
/// The inotify descriptor is registered with tokio's reactor, so asking
/// "anything new?" looks at readiness the reactor already recorded: no
/// system call while nothing happens. The kernel queues the event while the
/// file is written, so it is in the reactor's ready list before the bytes of
/// any request sent afterwards: the next request sees the new secret.
struct Watch {
    events: Mutex<inotify::EventStream<[u8; 1024]>>,
    /// The watch on the directory named in the configuration. A watch on a
    /// symlink's target directory may go away (Kubernetes deletes the old
    /// one); this one must not.
    primary: inotify::WatchDescriptor,
    /// The directory named in the configuration went away (deleted,
    /// unmounted): from now on the store falls back to a `stat` per
    /// request.
    lost: AtomicBool,
    /// The first look after set-up reports `Maybe`: the file may have
    /// changed between start-up and the watch.
    fresh: AtomicBool,
}

impl Watch {
    const MASK: inotify::WatchMask = inotify::WatchMask::CLOSE_WRITE
        .union(inotify::WatchMask::MOVED_TO)
        .union(inotify::WatchMask::MOVED_FROM)
        .union(inotify::WatchMask::CREATE)
        .union(inotify::WatchMask::DELETE)
        .union(inotify::WatchMask::DELETE_SELF)
        .union(inotify::WatchMask::MOVE_SELF)
        .union(inotify::WatchMask::ONLYDIR);

    fn new(path: &Path) -> std::io::Result<Self> {
        let events = inotify::Inotify::init()?.into_event_stream([0; 1024])?;
        let primary = events.watches().add(parent(path), Self::MASK)?;
        let watch = Self {
            events: Mutex::new(events),
            primary,
            lost: AtomicBool::new(false),
            fresh: AtomicBool::new(true),
        };
        watch.follow_symlink(path);
        Ok(watch)
    }

    /// Also watches the directory holding the file `path` resolves to, when
    /// that is another one (adding an existing watch again is a no-op).
    fn follow_symlink(&self, path: &Path) {
        if let Ok(target) = std::fs::canonicalize(path) {
            let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(e) = events.watches().add(parent(&target), Self::MASK) {
                tracing::debug!(error = %e, "cannot watch the secret file's target directory");
            }
        }
    }

    /// Drains what the reactor has seen, without waiting.
    fn changed(&self) -> Changed {
        use futures_core::Stream as _;
        let mut changed = if self.fresh.swap(false, Ordering::Relaxed) {
            Changed::Maybe
        } else {
            Changed::No
        };
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            match std::pin::Pin::new(&mut *events).poll_next(&mut cx) {
                std::task::Poll::Pending => break,
                std::task::Poll::Ready(Some(Ok(event))) => {
                    if event.mask.contains(inotify::EventMask::IGNORED) && event.wd == self.primary
                    {
                        self.lost.store(true, Ordering::Relaxed);
                    }
                    changed = Changed::Maybe;
                }
                // The reactor is gone or the descriptor failed: stat from
                // now on.
                std::task::Poll::Ready(_) => {
                    self.lost.store(true, Ordering::Relaxed);
                    return Changed::Maybe;
                }
            }
        }
        changed
    }
}

/// A worker's copy of the credentials and the generation it is of.
type WorkerCopy = (u64, Arc<Credentials>);

/// The current credentials, re-read when their secret file changes, so a
/// rotated password or token is used from the next request on without a
/// restart (the lesson of proxies that copied a token once at start-up,
/// anchors.md §3.4).
pub(crate) struct CredentialStore {
    /// The secret file, when the secret came from one (an environment
    /// variable cannot change under a running process).
    file: Option<PathBuf>,
    state: RwLock<(Option<Fingerprint>, Arc<Credentials>)>,
    /// Bumped (under `state`'s write lock) whenever the secret changes.
    generation: AtomicU64,
    /// Each worker's own copy of the credentials and the generation it was
    /// taken at: a request then reads only the shared generation and
    /// writes only to its own worker's memory.
    copies: PerWorker<Mutex<Option<WorkerCopy>>>,
    /// Each worker's inotify watch on the file's directories, registered
    /// with that worker's reactor by its first call; `None` inside means
    /// "not available here", and every call then `stat`s the file instead.
    watches: PerWorker<OnceLock<Option<Watch>>>,
    /// How often the file was looked at (`stat` or read), for tests.
    looks: AtomicU64,
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
            generation: AtomicU64::new(0),
            copies: PerWorker::new(Mutex::default),
            watches: PerWorker::new(OnceLock::new),
            looks: AtomicU64::new(0),
        }
    }

    /// The credentials to use now, and whether they just changed.
    ///
    /// Inside a tokio runtime on Linux the file's directory is watched with
    /// inotify and the file is read again only after something happened
    /// there, so a request costs no system call; elsewhere (or when the
    /// watch is lost) every call `stat`s the file and reads it when its
    /// size, mtime or inode changed. A file that cannot be read or is empty
    /// (half-way through a rotation) keeps the previous secret in use, with
    /// a warning.
    pub(crate) fn current(&self) -> (Arc<Credentials>, bool) {
        let rotated = match &self.file {
            None => false,
            Some(path) => match self.watch(path) {
                Some(watch) => match watch.changed() {
                    Changed::No => false,
                    Changed::Maybe => {
                        watch.follow_symlink(path);
                        self.reload(path, None)
                    }
                },
                None => {
                    self.looks.fetch_add(1, Ordering::Relaxed);
                    let now = fingerprint(path);
                    let seen = self.state.read().unwrap_or_else(PoisonError::into_inner).0 == now;
                    !seen && self.reload(path, Some(now))
                }
            },
        };
        (self.worker_copy(), rotated)
    }

    /// This worker's copy of the current credentials, taken again after
    /// every change.
    fn worker_copy(&self) -> Arc<Credentials> {
        let generation = self.generation.load(Ordering::Acquire);
        let mut copy = self
            .copies
            .local()
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*copy {
            Some((taken, credentials)) if *taken == generation => credentials.clone(),
            _ => {
                let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
                let credentials = Arc::new(state.1.own_copy());
                *copy = Some((self.generation.load(Ordering::Acquire), credentials.clone()));
                credentials
            }
        }
    }

    /// The live watch, set up on the first call inside a runtime.
    fn watch(&self, path: &Path) -> Option<&Watch> {
        let slot = self.watches.local();
        let watch = match slot.get() {
            Some(watch) => watch,
            // Registering with the reactor needs a runtime; outside one
            // (the sync unit tests) the stat fallback is used and set-up is
            // tried again next time.
            None => {
                tokio::runtime::Handle::try_current().ok()?;
                slot.get_or_init(|| match Watch::new(path) {
                    Ok(watch) => Some(watch),
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "cannot watch the secret file for changes; checking it on every request instead");
                        None
                    }
                })
            }
        };
        watch.as_ref().filter(|w| !w.lost.load(Ordering::Relaxed))
    }

    /// Reads the file again and switches to its secret if it differs.
    /// `seen` is the fingerprint that prompted this, if any.
    fn reload(&self, path: &Path, seen: Option<Option<Fingerprint>>) -> bool {
        self.looks.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        match seen {
            // Another caller reloaded this version meanwhile.
            Some(now) if state.0 == now => return false,
            Some(now) => state.0 = now,
            None => state.0 = fingerprint(path),
        }
        let old = &state.1;
        match crate::config::read_secret_file(path) {
            Ok(secret) => match Credentials::new(old.username.clone(), old.kind, &secret) {
                Ok(new) if new.authorization != old.authorization => {
                    tracing::info!(file = %path.display(), "secret file changed; using the new secret, dropping the cached crumb and session");
                    state.1 = Arc::new(new);
                    self.generation.fetch_add(1, Ordering::Release);
                    true
                }
                _ => false,
            },
            Err(problem) => {
                tracing::warn!(file = %path.display(), %problem, "secret file changed but cannot be used; keeping the previous secret");
                false
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

    /// Each worker uses its own copy of the credentials (see `worker`), and
    /// a rotation that one worker notices reaches the others' next calls.
    #[test]
    fn workers_use_own_copies_and_all_see_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "first-secret\n").unwrap();
        let store = Arc::new(CredentialStore::new(
            token("first-secret"),
            Some(file.clone()),
        ));
        let on_worker = |index: usize| {
            let store = store.clone();
            std::thread::spawn(move || {
                crate::worker::set_current(index, Box::new(|_| {}));
                store.current().0
            })
            .join()
            .unwrap()
        };
        let (zero, one) = (on_worker(0), on_worker(1));
        assert_eq!(zero.authorization(), one.authorization());
        assert_ne!(
            zero.authorization().as_bytes().as_ptr(),
            one.authorization().as_bytes().as_ptr(),
            "each worker has memory of its own"
        );
        assert!(zero.authorization().is_sensitive());

        std::fs::write(&file, "second-secret-longer\n").unwrap();
        let (rotated, changed) = store.current();
        assert!(changed);
        assert_eq!(
            rotated.authorization(),
            token("second-secret-longer").authorization()
        );
        for index in 0..2 {
            assert_eq!(
                on_worker(index).authorization(),
                rotated.authorization(),
                "worker {index} still uses the old secret"
            );
        }
    }

    fn token(secret: &str) -> Credentials {
        Credentials::new(
            "alice".into(),
            SecretKind::ApiToken,
            &Secret::new(secret.into()),
        )
        .unwrap()
    }

    fn looks(store: &CredentialStore) -> u64 {
        store.looks.load(Ordering::Relaxed)
    }

    /// Inside a runtime the file is not looked at while nothing changes,
    /// and every kind of rotation is seen by the next call. (In the server
    /// a request's own bytes come through the reactor, after the inotify
    /// event; here `yield_now` lets the reactor run.)
    #[tokio::test]
    async fn watched_secret_file_costs_nothing_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "first-secret\n").unwrap();
        let store = CredentialStore::new(token("first-secret"), Some(file.clone()));
        let (first, changed) = store.current();
        assert!(!changed);
        let idle = looks(&store);
        for _ in 0..1000 {
            tokio::task::yield_now().await;
            assert!(!store.current().1);
        }
        assert_eq!(looks(&store), idle, "no stat or read while nothing changes");

        // In place, same length: a size-and-mtime check can miss this.
        std::fs::write(&file, "other-secret\n").unwrap();
        tokio::task::yield_now().await;
        let (second, changed) = store.current();
        assert!(changed, "in-place write");
        assert_ne!(first.authorization(), second.authorization());
        assert!(!store.current().1, "reported once");

        // Written aside and renamed over, as most secret tools do.
        std::fs::write(dir.path().join(".token.tmp"), "third-secret\n").unwrap();
        std::fs::rename(dir.path().join(".token.tmp"), &file).unwrap();
        tokio::task::yield_now().await;
        let (third, changed) = store.current();
        assert!(changed, "rename over");
        assert_eq!(third.authorization(), token("third-secret").authorization());
        let idle = looks(&store);
        tokio::task::yield_now().await;
        store.current();
        assert_eq!(looks(&store), idle);
    }

    /// A Kubernetes Secret volume: `token` -> `..data/token`, `..data` ->
    /// `..v1`; an update makes `..v2`, swaps `..data` by rename and deletes
    /// `..v1`. Losing the watch on `..v1` must not matter.
    #[cfg(unix)]
    #[tokio::test]
    async fn kubernetes_style_symlink_swap_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("..v1")).unwrap();
        std::fs::write(root.join("..v1/token"), "first-secret").unwrap();
        std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/token", root.join("token")).unwrap();
        let store = CredentialStore::new(token("first-secret"), Some(root.join("token")));
        assert!(!store.current().1);

        std::fs::create_dir(root.join("..v2")).unwrap();
        std::fs::write(root.join("..v2/token"), "second-secret").unwrap();
        std::os::unix::fs::symlink("..v2", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        std::fs::remove_dir_all(root.join("..v1")).unwrap();
        tokio::task::yield_now().await;
        let (now, changed) = store.current();
        assert!(changed);
        assert_eq!(now.authorization(), token("second-secret").authorization());
        // Still watched: no look while nothing changes.
        tokio::task::yield_now().await;
        store.current();
        let idle = looks(&store);
        for _ in 0..10 {
            tokio::task::yield_now().await;
            assert!(!store.current().1);
        }
        assert_eq!(looks(&store), idle, "the watch survived the swap");
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
