//! Jenkins CSRF crumbs: fetching, caching, pairing with the session.
//!
//! Since Jenkins 2.176.2/2.186 (SECURITY-626) the default crumb issuer hashes
//! the HTTP session id into the crumb (`DefaultCrumbIssuer`), so a crumb is
//! only valid together with the `JSESSIONID.*` cookie Jenkins set when it was
//! issued, and only while that session lives (30 minutes idle by default).
//! This module owns: fetching `<root>/crumbIssuer/api/json` and parsing it
//! under a byte cap, remembering the crumb *with* its session cookie, deciding
//! when a cached crumb is too idle to trust, fetching only once at a time, and
//! dropping a crumb Jenkins rejected. It never decides which requests need a
//! crumb; `proxy` does.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use tokio::time::Instant;

use crate::body;
use crate::credentials::Credentials;
use crate::upstream::{Upstream, UpstreamError};
use crate::worker::PerWorker;

/// The crumb issuer's JSON is about 150 bytes; anything much larger is not
/// a crumb answer.
const MAX_CRUMB_RESPONSE_BYTES: usize = 16 * 1024;

/// A crumb and the session it is bound to.
pub(crate) struct Crumb {
    /// Distinguishes crumbs so a rejection invalidates only the crumb that
    /// was actually used, never a fresher one another request fetched.
    id: u64,
    /// The header name from `crumbRequestField` (`Jenkins-Crumb`, or `.crumb`
    /// before Jenkins 2.0, or whatever `hudson.security.csrf.requestfield`
    /// says).
    pub(crate) field: HeaderName,
    pub(crate) value: HeaderValue,
    /// `name=value` of the session cookie(s) Jenkins set with the crumb, as
    /// a `Cookie` header. `None` when Jenkins set none (session id excluded
    /// from crumbs, or an existing session was reused).
    pub(crate) cookie: Option<HeaderValue>,
}

impl fmt::Debug for Crumb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crumb")
            .field("id", &self.id)
            .field("field", &self.field)
            .field("value", &"[redacted]")
            .field("cookie", &self.cookie.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// What the crumb issuer said.
#[derive(Debug)]
pub(crate) enum Fetched {
    Crumb {
        field: HeaderName,
        value: HeaderValue,
        cookie: Option<HeaderValue>,
    },
    /// 404: CSRF protection is off (`Jenkins.getCrumbIssuer()` is null).
    Disabled,
}

/// Why no crumb could be had. Cloneable so that every request waiting on
/// one fetch gets the same answer.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CrumbError {
    #[error("jenkins rejected the configured credentials when asked for a crumb (401)")]
    BadCredentials,
    #[error("jenkins refused the crumb request (403): the configured user lacks Overall/Read or was not recognised")]
    Forbidden,
    #[error("the crumb issuer answered with unexpected status {status}")]
    UnexpectedStatus { status: u16 },
    #[error("the crumb issuer's answer was not a crumb: {reason}")]
    Malformed { reason: &'static str },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// How a request got its crumb, for the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The cached crumb was fresh.
    Cached,
    /// This request (or one it waited for) fetched it.
    Fetched,
}

/// The cached state of the crumb issuer.
enum Slot {
    Empty,
    /// CSRF protection was off at the last look.
    Disabled,
    Ready {
        crumb: Arc<Crumb>,
        /// When a request last used the crumb's session: Jetty refreshes a
        /// session's idle timer on every request presenting its cookie.
        last_used: Instant,
    },
}

struct State {
    slot: Slot,
    /// The last fetch's failure, handed to requests that waited for it.
    last_error: Option<CrumbError>,
}

/// The crumb cache: one crumb (with its session) shared by all requests
/// and connections, refreshed lazily (smithy-rs `ExpiringCache`).
pub(crate) struct CrumbCache {
    max_idle: Duration,
    /// A tokio mutex on purpose (mini-redis `db.rs` explains when each kind
    /// fits): the lock is held *across the fetch*, so concurrent requests
    /// that miss wait for the one fetch in flight instead of stampeding the
    /// crumb issuer. Every other critical section is a few field reads.
    state: tokio::sync::Mutex<State>,
    /// Completed fetch attempts; lets a waiter tell that the fetch it
    /// queued behind already failed, so it does not fetch again.
    attempts: AtomicU64,
    next_id: AtomicU64,
    /// The field name of the last crumb, readable without waiting for a
    /// fetch in flight (a std mutex: never held across an await).
    /// One copy per worker, so that reading it for every request stays on
    /// the worker's own core.
    field: PerWorker<std::sync::Mutex<Option<HeaderName>>>,
}

impl fmt::Debug for CrumbCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrumbCache")
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

impl CrumbCache {
    pub(crate) fn new(max_idle: Duration) -> Self {
        Self {
            max_idle,
            state: tokio::sync::Mutex::new(State {
                slot: Slot::Empty,
                last_error: None,
            }),
            attempts: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            field: PerWorker::new(std::sync::Mutex::default),
        }
    }

    /// A crumb is fresh while its session has been idle no longer than
    /// `max_idle`. Pure, so it is tested with explicit instants.
    fn is_fresh(max_idle: Duration, last_used: Instant, now: Instant) -> bool {
        now.saturating_duration_since(last_used) <= max_idle
    }

    /// The current crumb, fetching one with `fetch` if there is none or it
    /// is too idle. `Ok((None, _))` means CSRF protection is off.
    ///
    /// # Errors
    /// The fetch's error; requests that waited for a failed fetch get a copy
    /// of it instead of fetching again.
    pub(crate) async fn get<F, Fut>(
        &self,
        now: Instant,
        fetch: F,
    ) -> Result<(Option<Arc<Crumb>>, Lookup), CrumbError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Fetched, CrumbError>>,
    {
        let attempts_before = self.attempts.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        match &mut state.slot {
            Slot::Disabled => return Ok((None, Lookup::Cached)),
            Slot::Ready { crumb, last_used } if Self::is_fresh(self.max_idle, *last_used, now) => {
                *last_used = now;
                return Ok((Some(crumb.clone()), Lookup::Cached));
            }
            Slot::Ready { .. } | Slot::Empty => {}
        }
        if self.attempts.load(Ordering::Acquire) != attempts_before {
            if let Some(err) = &state.last_error {
                return Err(err.clone());
            }
        }
        let result = fetch().await;
        self.attempts.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok(Fetched::Crumb {
                field,
                value,
                cookie,
            }) => {
                for slot in self.field.iter() {
                    // A name parsed again is one with memory of its own.
                    let copy = HeaderName::from_bytes(field.as_str().as_bytes())
                        .unwrap_or_else(|_| field.clone());
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(copy);
                }
                let crumb = Arc::new(Crumb {
                    id: self.next_id.fetch_add(1, Ordering::Relaxed),
                    field,
                    value,
                    cookie,
                });
                state.slot = Slot::Ready {
                    crumb: crumb.clone(),
                    last_used: now,
                };
                state.last_error = None;
                Ok((Some(crumb), Lookup::Fetched))
            }
            Ok(Fetched::Disabled) => {
                state.slot = Slot::Disabled;
                state.last_error = None;
                Ok((None, Lookup::Fetched))
            }
            Err(err) => {
                state.slot = Slot::Empty;
                state.last_error = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Forgets the crumb Jenkins just rejected, if it is still the cached
    /// one (`None`: the request went without a crumb because CSRF looked
    /// off). A crumb another request already replaced is left alone.
    pub(crate) async fn invalidate(&self, used: Option<&Crumb>) {
        let mut state = self.state.lock().await;
        let stale = match (&state.slot, used) {
            (Slot::Ready { crumb, .. }, Some(used)) => crumb.id == used.id,
            (Slot::Disabled, None) => true,
            _ => false,
        };
        if stale {
            state.slot = Slot::Empty;
        }
    }

    /// Drops the cached crumb and its session (the secret changed; the
    /// session belonged to the old one).
    pub(crate) async fn clear(&self) {
        let mut state = self.state.lock().await;
        state.slot = Slot::Empty;
        state.last_error = None;
    }

    /// The field name Jenkins last asked for, so that a client's copy of a
    /// custom crumb header is stripped too. Never waits.
    pub(crate) fn known_field(&self) -> Option<HeaderName> {
        self.field
            .local()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Asks Jenkins for a crumb: `GET <root>/crumbIssuer/api/json` with the
/// proxy's credentials and *no* session cookie, so that Jenkins starts a
/// fresh session and binds the crumb to it (`DefaultCrumbIssuer.issueCrumb`
/// calls `getSession()`).
///
/// The whole exchange, body included, is bounded by the response timeout:
/// every POST waits on this fetch, so a Jenkins that stalls mid-answer must
/// not hold them forever.
pub(crate) async fn fetch(
    upstream: &Upstream,
    credentials: &Credentials,
) -> Result<Fetched, CrumbError> {
    match tokio::time::timeout(
        upstream.response_timeout(),
        fetch_inner(upstream, credentials),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(CrumbError::Upstream(UpstreamError::ResponseTimeout)),
    }
}

async fn fetch_inner(
    upstream: &Upstream,
    credentials: &Credentials,
) -> Result<Fetched, CrumbError> {
    let uri = upstream
        .base()
        .join(&http::uri::PathAndQuery::from_static(
            "/crumbIssuer/api/json",
        ))
        .map_err(|_| CrumbError::Malformed {
            reason: "the upstream URL cannot be joined with /crumbIssuer/api/json",
        })?;
    let req = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(header::HOST, upstream.host())
        .header(header::AUTHORIZATION, credentials.authorization())
        .header(header::ACCEPT, "application/json")
        // The same client address as every proxied request: crumbs before
        // Jenkins 2.543 hash it (see `headers::FORWARDED_FOR`).
        .header(
            crate::headers::X_FORWARDED_FOR,
            crate::headers::FORWARDED_FOR,
        )
        .body(body::empty())
        .map_err(|_| CrumbError::Malformed {
            reason: "the crumb request could not be built",
        })?;
    let resp = upstream.send(req).await?;
    match resp.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return Ok(Fetched::Disabled),
        StatusCode::UNAUTHORIZED => return Err(CrumbError::BadCredentials),
        StatusCode::FORBIDDEN => return Err(CrumbError::Forbidden),
        other => {
            return Err(CrumbError::UnexpectedStatus {
                status: other.as_u16(),
            })
        }
    }
    let cookie = session_cookie(resp.headers());
    let bytes = match body::read_up_to(resp.into_body(), MAX_CRUMB_RESPONSE_BYTES).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return Err(CrumbError::Malformed {
                reason: "the answer is larger than a crumb",
            })
        }
        Err(e) => {
            return Err(CrumbError::Upstream(UpstreamError::Failed {
                reason: e.to_string(),
            }))
        }
    };
    let (field, value) = parse(&bytes)?;
    Ok(Fetched::Crumb {
        field,
        value,
        cookie,
    })
}

/// Parses `{"crumb":"…","crumbRequestField":"…"}`; the value is marked
/// sensitive the moment it exists.
fn parse(bytes: &[u8]) -> Result<(HeaderName, HeaderValue), CrumbError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Issued {
        crumb: String,
        crumb_request_field: String,
    }
    let issued: Issued = serde_json::from_slice(bytes).map_err(|_| CrumbError::Malformed {
        reason: "not JSON with crumb and crumbRequestField",
    })?;
    let field = HeaderName::try_from(issued.crumb_request_field.as_str()).map_err(|_| {
        CrumbError::Malformed {
            reason: "crumbRequestField is not a valid header name",
        }
    })?;
    let mut value = HeaderValue::try_from(issued.crumb).map_err(|_| CrumbError::Malformed {
        reason: "the crumb is not a valid header value",
    })?;
    if value.is_empty() {
        return Err(CrumbError::Malformed {
            reason: "the crumb is empty",
        });
    }
    value.set_sensitive(true);
    Ok((field, value))
}

/// The `Cookie` header to send back: the `name=value` part of every cookie
/// Jenkins set, except ones being cleared (`remember-me=; Max-Age=0`).
fn session_cookie(headers: &http::HeaderMap) -> Option<HeaderValue> {
    let pairs: Vec<&str> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::trim)
        .filter(|pair| {
            pair.split_once('=')
                .is_some_and(|(n, v)| !n.is_empty() && !v.is_empty())
        })
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let mut value = HeaderValue::try_from(pairs.join("; ")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn crumb(value: &'static str) -> Result<Fetched, CrumbError> {
        Ok(Fetched::Crumb {
            field: HeaderName::from_static("jenkins-crumb"),
            value: HeaderValue::from_static(value),
            cookie: Some(HeaderValue::from_static("JSESSIONID.1=node0a")),
        })
    }

    #[tokio::test]
    async fn debug_of_crumb_and_cache_redacts() {
        let cache = CrumbCache::new(Duration::from_secs(10));
        let (c, _) = cache
            .get(Instant::now(), || async { crumb("c0ffee-crumb") })
            .await
            .unwrap();
        let c = c.unwrap();
        for text in [format!("{c:?}"), format!("{cache:?}")] {
            assert!(
                !text.contains("c0ffee-crumb") && !text.contains("node0a"),
                "{text}"
            );
        }
    }

    #[test]
    fn freshness_is_by_idle_time() {
        let t0 = Instant::now();
        let max = Duration::from_secs(1500);
        assert!(CrumbCache::is_fresh(max, t0, t0));
        assert!(CrumbCache::is_fresh(max, t0, t0 + max));
        assert!(!CrumbCache::is_fresh(
            max,
            t0,
            t0 + max + Duration::from_millis(1)
        ));
    }

    #[tokio::test]
    async fn cached_while_used_then_refreshed_after_idle() {
        let cache = CrumbCache::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let (c1, how) = cache.get(t0, || async { crumb("one") }).await.unwrap();
        assert_eq!(how, Lookup::Fetched);
        // Used every 8 s: each use refreshes the idle timer, so no refetch.
        let mut t = t0;
        for _ in 0..5 {
            t += Duration::from_secs(8);
            let (c, how) = cache
                .get(t, || async { panic!("must not fetch") })
                .await
                .unwrap();
            assert_eq!(how, Lookup::Cached);
            assert_eq!(c.unwrap().value, "one");
        }
        // Idle 11 s: refreshed before use.
        let (c2, how) = cache
            .get(t + Duration::from_secs(11), || async { crumb("two") })
            .await
            .unwrap();
        assert_eq!(how, Lookup::Fetched);
        assert_eq!(c2.unwrap().value, "two");
        assert_eq!(c1.unwrap().value, "one");
    }

    #[tokio::test]
    async fn invalidate_only_the_crumb_that_was_used() {
        let cache = CrumbCache::new(Duration::from_secs(10));
        let now = Instant::now();
        let (old, _) = cache.get(now, || async { crumb("old") }).await.unwrap();
        let old = old.unwrap();
        cache.invalidate(Some(&old)).await;
        let (new, how) = cache.get(now, || async { crumb("new") }).await.unwrap();
        assert_eq!(how, Lookup::Fetched);
        // A late rejection of the old crumb must not drop the new one.
        cache.invalidate(Some(&old)).await;
        let (again, how) = cache
            .get(now, || async { panic!("refetched") })
            .await
            .unwrap();
        assert_eq!(how, Lookup::Cached);
        assert_eq!(again.unwrap().id, new.unwrap().id);
    }

    #[tokio::test]
    async fn disabled_is_remembered_until_jenkins_asks_for_a_crumb() {
        let cache = CrumbCache::new(Duration::from_secs(10));
        let now = Instant::now();
        let (c, _) = cache
            .get(now, || async { Ok(Fetched::Disabled) })
            .await
            .unwrap();
        assert!(c.is_none());
        let (c, how) = cache
            .get(now, || async { panic!("refetched") })
            .await
            .unwrap();
        assert!(c.is_none() && how == Lookup::Cached);
        cache.invalidate(None).await;
        let (c, _) = cache.get(now, || async { crumb("on") }).await.unwrap();
        assert_eq!(c.unwrap().value, "on");
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_fetch_and_its_failure() {
        let cache = Arc::new(CrumbCache::new(Duration::from_secs(10)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let now = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (cache, fetches, gate) = (cache.clone(), fetches.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get(now, || async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        Err(CrumbError::BadCredentials)
                    })
                    .await
            }));
        }
        // On the current-thread test runtime, yielding lets every task start
        // and queue behind the first fetch; then the fetch is released.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        gate.notify_waiters();
        for t in tasks {
            let got = tokio::time::timeout(Duration::from_secs(5), t).await;
            assert!(matches!(
                got.unwrap().unwrap(),
                Err(CrumbError::BadCredentials)
            ));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn parses_current_and_legacy_answers() {
        let (f, v) = parse(br#"{"_class":"hudson.security.csrf.DefaultCrumbIssuer","crumb":"ab12","crumbRequestField":"Jenkins-Crumb"}"#).unwrap();
        assert_eq!((f.as_str(), v.to_str().unwrap()), ("jenkins-crumb", "ab12"));
        assert!(v.is_sensitive());
        let (f, _) = parse(br#"{"crumb":"x","crumbRequestField":".crumb"}"#).unwrap();
        assert_eq!(f.as_str(), ".crumb");
        assert!(parse(b"<html>").is_err());
        assert!(parse(br#"{"crumb":"","crumbRequestField":"Jenkins-Crumb"}"#).is_err());
    }

    #[test]
    fn session_cookie_keeps_pairs_and_drops_cleared_cookies() {
        let mut h = http::HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("JSESSIONID.3f2a=node0abc.node0; Path=/; HttpOnly"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("remember-me=; Max-Age=0; Path=/"),
        );
        let c = session_cookie(&h).unwrap();
        assert_eq!(c, "JSESSIONID.3f2a=node0abc.node0");
        assert!(c.is_sensitive());
        assert!(session_cookie(&http::HeaderMap::new()).is_none());
    }
}
