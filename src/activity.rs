//! Which client connections are idle, and closing the oldest idle ones to
//! make room for new clients.
//!
//! At `limits.max_connections` a new client would otherwise wait until some
//! connection ends on its own: 512 kept-alive clients that went quiet (or
//! sockets that never sent a byte) would hold every slot for up to
//! `limits.idle_timeout_secs`. nginx reuses such "reusable" connections
//! instead (`ngx_drain_connections`): it closes idle ones, least recently
//! used first, to admit new clients. So does this module. A connection with a
//! request in flight is never closed: RFC 9112 §9.6 lets a server close an
//! idle persistent connection at any time, and a client whose request never
//! reached the proxy may safely send it again.
//!
//! A connection turns busy as soon as bytes arrive on it (`listener`), as
//! nginx stops counting a connection reusable once its first bytes are
//! read: a client half-way through sending a request head is not idle.
//! `proxy` marks the request's start, and the connection idle again when
//! its response body is done ([`Tracked`]); `server` registers connections
//! ([`Connections`]) and, at the cap, asks the one idle longest to close. It
//! knows nothing about HTTP or Jenkins.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::body::{BoxError, ProxyBody};

/// One client connection's state, shared by its service (which marks
/// requests), its task (which closes it when asked) and the registry.
#[derive(Debug)]
pub(crate) struct Activity {
    /// Bit 0: a request is in flight. The bits above: nanoseconds from
    /// `epoch` to when the last request started (or the connection was
    /// accepted), the order in which idle connections are reclaimed. One
    /// word, written twice per request by the connection's own worker.
    state: AtomicU64,
    epoch: Instant,
    /// Set by the acceptor to ask the connection to close if it is idle.
    reclaim: AtomicBool,
    /// The connection task's waker, to be woken when asked.
    waker: Mutex<Option<Waker>>,
}

impl Activity {
    fn new(epoch: Instant) -> Self {
        Self {
            state: AtomicU64::new(stamp(epoch, Instant::now()) << 1),
            epoch,
            reclaim: AtomicBool::new(false),
            waker: Mutex::new(None),
        }
    }

    /// A request arrived at `at`.
    pub(crate) fn begin(&self, at: Instant) {
        self.state
            .store((stamp(self.epoch, at) << 1) | 1, Ordering::Release);
    }

    /// Bytes arrived: a request is on its way (cheap when already busy).
    pub(crate) fn receiving(&self) {
        if self.state.load(Ordering::Relaxed) & 1 == 0 {
            self.state.fetch_or(1, Ordering::Release);
        }
    }

    /// The request's response is done (or dropped).
    fn end(&self) {
        self.state.fetch_and(!1, Ordering::Release);
    }

    /// Whether no request is in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.state.load(Ordering::Acquire) & 1 == 0
    }

    /// When the connection's last request started, if it is idle.
    fn idle_since(&self) -> Option<u64> {
        let state = self.state.load(Ordering::Acquire);
        (state & 1 == 0).then_some(state >> 1)
    }

    /// Whether the acceptor asked this connection to close; clears the
    /// request. Costs one load when it did not.
    pub(crate) fn take_reclaim(&self) -> bool {
        self.reclaim.load(Ordering::Acquire) && self.reclaim.swap(false, Ordering::AcqRel)
    }

    /// The connection task's waker changed; a reclaim request wakes it.
    pub(crate) fn set_waker(&self, waker: &Waker) {
        *self.waker.lock().unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
    }

    fn ask_to_close(&self) {
        self.reclaim.store(true, Ordering::SeqCst);
        if let Some(waker) = &*self.waker.lock().unwrap_or_else(PoisonError::into_inner) {
            waker.wake_by_ref();
        }
    }
}

/// Nanoseconds from `epoch` to `at` (saturating: 2^63 ns is 292 years).
fn stamp(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_nanos())
        .unwrap_or(u64::MAX >> 1)
        .min(u64::MAX >> 1)
}

/// Every open client connection.
#[derive(Debug)]
pub(crate) struct Connections {
    epoch: Instant,
    open: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    next: u64,
    by_id: HashMap<u64, Arc<Activity>>,
}

/// A connection's place in [`Connections`], given up when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    id: u64,
    /// How many other connections were open when this one was accepted.
    open_before: usize,
    connections: Arc<Connections>,
}

impl Registration {
    /// How many other connections were open when this one was accepted.
    pub(crate) fn open_before(&self) -> usize {
        self.open_before
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.lock().by_id.remove(&self.id);
    }
}

impl Connections {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            open: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A newly accepted connection: idle (no request yet) since now.
    pub(crate) fn register(self: &Arc<Self>) -> (Arc<Activity>, Registration) {
        let activity = Arc::new(Activity::new(self.epoch));
        let mut registry = self.lock();
        let id = registry.next;
        registry.next += 1;
        let open_before = registry.by_id.len();
        registry.by_id.insert(id, activity.clone());
        drop(registry);
        (
            activity,
            Registration {
                id,
                open_before,
                connections: self.clone(),
            },
        )
    }

    /// Asks the connection that has been idle longest (least recently
    /// started request first, then oldest accept) to close. `false` when
    /// every connection has a request in flight.
    pub(crate) fn reclaim_oldest_idle(&self) -> bool {
        let victim = self
            .lock()
            .by_id
            .values()
            .filter(|a| !a.reclaim.load(Ordering::Acquire))
            .filter_map(|a| a.idle_since().map(|since| (since, a.clone())))
            .min_by_key(|(since, _)| *since)
            .map(|(_, a)| a);
        match victim {
            Some(activity) => {
                activity.ask_to_close();
                true
            }
            None => false,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_id.len()
    }
}

/// A response body that marks its connection idle when it ends or is
/// dropped (hyper writes the body after the service has answered, so the
/// request is in flight until then).
#[derive(Debug)]
pub(crate) struct Tracked {
    inner: ProxyBody,
    activity: Option<Arc<Activity>>,
}

impl Tracked {
    pub(crate) fn new(inner: ProxyBody, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity: Some(activity),
        }
    }

    fn finish(&mut self) {
        if let Some(activity) = self.activity.take() {
            activity.end();
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The idle connection whose last request started earliest goes first;
    /// busy ones never do; a connection asked once is not asked again.
    #[test]
    fn oldest_idle_is_reclaimed_first() {
        let connections = Connections::new();
        let (a, _ra) = connections.register();
        let (b, _rb) = connections.register();
        let (c, rc) = connections.register();
        assert_eq!(rc.open_before(), 2);
        let t0 = connections.epoch;
        a.begin(t0 + Duration::from_secs(3));
        a.end();
        b.begin(t0 + Duration::from_secs(2));
        // b is busy: not a candidate, though it started before a.
        c.begin(t0 + Duration::from_secs(1));
        c.end();
        assert!(connections.reclaim_oldest_idle());
        assert!(c.take_reclaim(), "c was idle longest");
        assert!(!c.take_reclaim(), "asked once");
        assert!(!a.take_reclaim() && !b.take_reclaim());
        drop(rc);
        assert_eq!(connections.len(), 2);
        assert!(connections.reclaim_oldest_idle());
        assert!(a.take_reclaim());
        a.begin(t0 + Duration::from_secs(4));
        assert!(!connections.reclaim_oldest_idle(), "both busy");
    }

    /// The body marks the connection idle at its end, or when dropped
    /// unfinished (a client that went away).
    #[tokio::test]
    async fn tracked_body_ends_the_request() {
        use http_body_util::BodyExt as _;
        let connections = Connections::new();
        let (activity, _r) = connections.register();
        activity.begin(Instant::now());
        let body = Tracked::new(crate::body::full("abc"), activity.clone());
        assert!(!activity.is_idle());
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "abc");
        assert!(activity.is_idle());
        activity.begin(Instant::now());
        drop(Tracked::new(crate::body::full("abc"), activity.clone()));
        assert!(activity.is_idle());
    }

    /// A reclaim request wakes the registered waker.
    #[test]
    fn asking_wakes_the_connection() {
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let connections = Connections::new();
        let (activity, _r) = connections.register();
        activity.set_waker(&waker);
        assert!(connections.reclaim_oldest_idle());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(activity.take_reclaim());
    }
}
