//! Jenkins connections for proxied requests, driven on the worker thread
//! that serves the client.
//!
//! hyper-util's pooled client runs every upstream connection as a task on
//! any thread, so a request, its response head and every body chunk may
//! cross threads, and each request takes and returns a connection under
//! the pool's lock. Here each client connection has a [`Lane`]: the Jenkins
//! connection it uses, driven by a task of its own on the client
//! connection's worker ([`Lane::start`]), so a request and its answer never
//! leave that thread. A task of its own rather than a branch of the client
//! connection's task: a task is polled only when something woke it, where
//! two branches of one task are both polled on every wake-up of either, and
//! each of hyper's connection state machines tries to read, write and
//! flush when polled (one task: 49.4k instructions per request; two:
//! 44.6k). When the client connection ends, its
//! idle Jenkins connection is parked in the [`IdlePool`] for the next
//! client, so clients that connect once per request (a `curl` each) still
//! reuse kept-alive connections and TLS sessions.
//!
//! This module owns that life cycle, the idle timeout of Jenkins
//! connections (a lane's own and parked ones, each closed on a timer), and
//! the two cases in which a request is sent again, once, on a fresh
//! connection, after a reused one failed: any request when the connection
//! turned out to be closed before a byte of it was written (hyper hands
//! such a request back untouched), and a GET or HEAD without a body even
//! after it was written ([`resendable`]), since Jenkins may close a
//! kept-alive connection just as a request arrives (its idle timeout, a
//! restart). Any other request that was written is never re-sent, so a POST
//! cannot arrive twice. Opening connections is `upstream`'s job; crumb
//! fetches, checks and upgrade tunnels use `upstream`'s pooled client
//! instead.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::timer::LazyDeadline;
use crate::upstream::{Upstream, UpstreamError};
use crate::worker::PerWorker;

/// The future that does a connection's I/O; it ends when the connection
/// closes.
pub(crate) type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An open HTTP/1.1 connection to Jenkins: the handle requests go through
/// and the future that must be polled for anything to move.
pub(crate) struct Conn {
    pub(crate) sender: SendRequest<ProxyBody>,
    pub(crate) driver: Driver,
}

/// Idle Jenkins connections left by client connections that ended, newest
/// last, one list per server worker: a connection's socket is registered
/// with the reactor of the worker that opened it. They are not polled while
/// parked; one that Jenkins closed meanwhile is noticed (and dropped) when
/// it is taken, or by [`IdlePool::sweep`], which also closes those parked
/// longer than the timeout.
pub(crate) struct IdlePool {
    shards: PerWorker<Mutex<Parked>>,
    timeout: Duration,
}

/// One worker's parked connections, each with the time it was parked.
type Parked = Vec<(Instant, Conn)>;

/// At most this many connections are parked; the oldest goes first.
const MAX_IDLE: usize = 64;

impl IdlePool {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            shards: PerWorker::new(Mutex::default),
            timeout,
        }
    }

    /// How long a Jenkins connection may stay idle.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    fn shard(&self) -> std::sync::MutexGuard<'_, Parked> {
        self.shards
            .local()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn put(&self, conn: Conn) {
        if self.timeout.is_zero() {
            return;
        }
        let mut idle = self.shard();
        self.evict(&mut idle);
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push((Instant::now(), conn));
    }

    fn take(&self) -> Option<Conn> {
        let mut idle = self.shard();
        self.evict(&mut idle);
        idle.pop().map(|(_, conn)| conn)
    }

    fn evict(&self, idle: &mut Parked) {
        let now = Instant::now();
        idle.retain(|(since, _)| now.duration_since(*since) < self.timeout);
    }

    /// Closes every parked connection older than the timeout, and those
    /// Jenkins has closed (each is polled once, with no one to wake: they
    /// are polled for real when taken). Without this, connections parked
    /// on a worker that no request reaches again would stay open for good.
    pub(crate) fn sweep(&self) {
        let mut cx = Context::from_waker(Waker::noop());
        for shard in self.shards.iter() {
            let mut idle = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let mut gone: Parked = Vec::new();
            let mut i = 0;
            while i < idle.len() {
                let (since, conn) = &mut idle[i];
                if now.duration_since(*since) >= self.timeout
                    || conn.driver.as_mut().poll(&mut cx).is_ready()
                    || !conn.sender.is_ready()
                {
                    gone.push(idle.remove(i));
                } else {
                    i += 1;
                }
            }
            drop(idle);
            // Closed outside the lock.
            drop(gone);
        }
    }

    /// How often [`IdlePool::sweep`] should run: half the timeout, at
    /// least a second, so that a connection is closed at most one and a
    /// half timeouts after it was parked.
    pub(crate) fn sweep_every(&self) -> Duration {
        (self.timeout / 2).max(Duration::from_secs(1))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shard().len()
    }
}

impl std::fmt::Debug for IdlePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdlePool")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The task driving a [`Lane`]; dropping it stops the task.
pub(crate) struct Driving {
    lane: Arc<Lane>,
    task: tokio::task::AbortHandle,
}

impl Driving {
    /// The client connection ended: the task stops (its future holds
    /// nothing but the lane, so when it is dropped does not matter), and
    /// an idle Jenkins connection is parked for the next client; anything
    /// else is closed.
    pub(crate) fn park(self, upstream: &Upstream) {
        self.task.abort();
        self.lane.park(upstream);
    }
}

impl Drop for Driving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One client connection's way to Jenkins.
#[derive(Default)]
pub(crate) struct Lane {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The handle of `current`, here while no request is using it.
    sender: Option<SendRequest<ProxyBody>>,
    /// The connection requests go to.
    current: Option<Driver>,
    /// Connections replaced while not idle (rare), polled until they end.
    retired: Vec<Driver>,
    /// The task running [`Lane::drive`], woken when a connection is added.
    waker: Option<Waker>,
    /// Bounds the wait for a response head (see [`Lane::send_by`]).
    timer: Option<LazyDeadline>,
    /// How long `current` may stay idle (`upstream.pool_idle_timeout_secs`).
    idle: Duration,
    /// When the last request was sent (or `current` was last seen busy).
    used: Option<Instant>,
    /// Closes `current` once it has been idle for `idle`.
    idle_timer: Option<LazyDeadline>,
}

impl Inner {
    /// Closes `current` once no request has used it for `idle`. The timer
    /// is set from the last response head; when it fires on a connection
    /// still busy (a long download), the connection counts as used then,
    /// so it is never cut mid-response and is closed within `idle` after
    /// the response ends.
    fn close_if_idle(&mut self, cx: &mut Context<'_>) {
        let Some(used) = self.used.filter(|_| self.current.is_some()) else {
            return;
        };
        let deadline = crate::timer::later(used, self.idle);
        let timer = self
            .idle_timer
            .get_or_insert_with(|| LazyDeadline::new(deadline));
        if timer.poll_passed(deadline, cx).is_pending() {
            return;
        }
        if self.sender.as_ref().is_some_and(SendRequest::is_ready) {
            tracing::debug!(
                idle_secs = self.idle.as_secs(),
                "closing a connection to jenkins idle for upstream.pool_idle_timeout_secs"
            );
            self.current = None;
            self.sender = None;
            self.used = None;
        } else {
            let now = Instant::now();
            self.used = Some(now);
            let _ = timer.poll_passed(crate::timer::later(now, self.idle), cx);
        }
    }

    fn install(&mut self, driver: Driver) {
        self.sender = None;
        // Counted as used from now, so that the idle timer is set when the
        // drive task is woken below.
        self.used = Some(Instant::now());
        if let Some(old) = self.current.replace(driver) {
            self.retired.push(old);
        }
        if let Some(waker) = &self.waker {
            waker.wake_by_ref();
        }
    }
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Lane")
            .field("connected", &inner.current.is_some())
            .field("retired", &inner.retired.len())
            .finish()
    }
}

impl Lane {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts driving this lane's connections in a task of its own on the
    /// current runtime (the client connection's worker), until
    /// [`Driving::park`] or drop. A connection left idle for `idle` is
    /// closed.
    pub(crate) fn start(self: &Arc<Self>, idle: Duration) -> Driving {
        self.lock().idle = idle;
        let lane = self.clone();
        let task = tokio::spawn(async move { match lane.drive().await {} });
        Driving {
            lane: self.clone(),
            task: task.abort_handle(),
        }
    }

    /// Polls this lane's connections; never finishes.
    fn drive(&self) -> impl Future<Output = Infallible> + '_ {
        poll_fn(move |cx| {
            let mut inner = self.lock();
            if !inner
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                inner.waker = Some(cx.waker().clone());
            }
            if let Some(driver) = &mut inner.current {
                if driver.as_mut().poll(cx).is_ready() {
                    inner.current = None;
                    inner.sender = None;
                }
            }
            inner.close_if_idle(cx);
            inner
                .retired
                .retain_mut(|driver| driver.as_mut().poll(cx).is_pending());
            Poll::Pending
        })
    }

    fn park(&self, upstream: &Upstream) {
        let mut inner = self.lock();
        let retired = std::mem::take(&mut inner.retired);
        if let (Some(sender), Some(driver)) = (inner.sender.take(), inner.current.take()) {
            if sender.is_ready() {
                upstream.idle().put(Conn { sender, driver });
            }
        }
        inner.waker = None;
        drop(inner);
        drop(retired);
    }

    /// [`Lane::send`], given up at `deadline` with
    /// [`UpstreamError::ResponseTimeout`].
    ///
    /// `tokio::time::timeout` would insert a timer into the wheel and take
    /// it out again for every request; this lane keeps one
    /// [`LazyDeadline`] instead. Deadlines only grow, as the timeout is the
    /// same for every request.
    pub(crate) async fn send_by(
        &self,
        upstream: &Upstream,
        req: Request<ProxyBody>,
        deadline: Instant,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sending = std::pin::pin!(self.send(upstream, req));
        poll_fn(|cx| {
            if let Poll::Ready(result) = sending.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            self.lock()
                .timer
                .get_or_insert_with(|| LazyDeadline::new(deadline))
                .poll_passed(deadline, cx)
                .map(|()| Err(UpstreamError::ResponseTimeout))
        })
        .await
    }

    /// Sends `req` (absolute URI) to Jenkins and returns the response head;
    /// the body streams while the lane is driven.
    async fn send(
        &self,
        upstream: &Upstream,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        // On a connection of its own, HTTP/1.1 wants the origin form.
        if let Some(target) = req.uri().path_and_query().cloned() {
            *req.uri_mut() = Uri::from(target);
        }
        let mut may_reuse = true;
        loop {
            let reused = if may_reuse {
                poll_fn(|cx| Poll::Ready(self.reusable(upstream, cx))).await
            } else {
                None
            };
            let (mut sender, was_reused) = match reused {
                Some(sender) => (sender, true),
                None => {
                    // Boxed: once per connection, not in every request's state.
                    let conn = Box::pin(upstream.connect()).await?;
                    self.lock().install(conn.driver);
                    (conn.sender, false)
                }
            };
            // What to send again if Jenkins closes a reused connection even
            // after the request was written.
            let spare = if was_reused && resendable(&req) {
                Some(copy(&req))
            } else {
                None
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let mut inner = self.lock();
                    inner.sender = Some(sender);
                    inner.used = Some(Instant::now());
                    return Ok(resp);
                }
                Err(mut e) => match (e.take_message(), spare) {
                    // Closed before a byte was written: nothing reached
                    // Jenkins, so sending it on a new connection is safe.
                    (Some(back), _) if was_reused => {
                        tracing::debug!(error = %e.error(), "kept-alive connection to jenkins was closed; sending on a new one");
                        req = back;
                        may_reuse = false;
                    }
                    // Written, then the connection failed: a GET or HEAD
                    // may be sent again (RFC 9110 §9.2.2).
                    (None, Some(spare)) => {
                        tracing::debug!(error = %e.error(), method = %spare.method(), "kept-alive connection to jenkins failed after the request was written; sending it again on a new one");
                        req = spare;
                        may_reuse = false;
                    }
                    _ => return Err(UpstreamError::from_send(&e.into_error())),
                },
            }
        }
    }

    /// This lane's connection if it is idle, else a parked one that is
    /// still open (polled once here, with this task's waker, to notice a
    /// close that happened while it was parked).
    fn reusable(
        &self,
        upstream: &Upstream,
        cx: &mut Context<'_>,
    ) -> Option<SendRequest<ProxyBody>> {
        let mut inner = self.lock();
        if let Some(sender) = inner.sender.take() {
            if sender.is_ready() {
                return Some(sender);
            }
            // Busy or closed: let it finish on its own.
            if let Some(old) = inner.current.take() {
                inner.retired.push(old);
            }
        }
        while let Some(mut conn) = upstream.idle().take() {
            if conn.driver.as_mut().poll(cx).is_ready() || !conn.sender.is_ready() {
                continue;
            }
            inner.install(conn.driver);
            return Some(conn.sender);
        }
        None
    }
}

/// Whether `req` may be sent again after it was written to a connection
/// that then failed without an answer: a GET or HEAD (safe methods, RFC
/// 9110 §9.2.1, so idempotent), without a body (one streamed from the
/// client cannot be read twice), without a `token` query parameter or a
/// header whose name ends in `token` (`token`, `x-gitlab-token`), and not to a path that triggers
/// builds. Jenkins acts on some GETs: a job's remote trigger
/// (`/job/NAME/build?token=…`, `buildWithParameters`, `polling`), the
/// Build Token Root plugin's `/buildByToken/…`, the Generic (and
/// Multibranch) Webhook Trigger's `invoke` (its token may come in a
/// `token` or `X-Gitlab-Token` header, or not at all), and the Git
/// plugin's `notifyCommit` each start a build on a GET, and a build must
/// never be started twice. Names are compared as Jetty would read them
/// (percent-decoded) and without regard to case, erring towards not
/// sending again.
pub(crate) fn resendable<B: http_body::Body>(req: &Request<B>) -> bool {
    const TRIGGERS: [&str; 8] = [
        "build",
        "buildwithparameters",
        "polling",
        "buildbytoken",
        "generic-webhook-trigger",
        "multibranch-webhook-trigger",
        "invoke",
        "notifycommit",
    ];
    let decoded = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .trim()
            .to_ascii_lowercase()
    };
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && req.body().is_end_stream()
        && !req.uri().query().is_some_and(|query| {
            query
                .split('&')
                .any(|pair| decoded(pair.split('=').next().unwrap_or_default()) == "token")
        })
        && !req
            .headers()
            .keys()
            .any(|name| name.as_str().ends_with("token"))
        && !req.uri().path().split(['/', ';']).any(|segment| {
            // Decoded (an allocation) only when it holds an escape.
            if segment.contains('%') {
                TRIGGERS.contains(&decoded(segment).as_str())
            } else {
                TRIGGERS
                    .iter()
                    .any(|t| segment.trim().eq_ignore_ascii_case(t))
            }
        })
}

/// A copy of a request without a body, to send again.
fn copy(req: &Request<ProxyBody>) -> Request<ProxyBody> {
    let mut copy = Request::new(crate::body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The driving task ends with its `Driving`, and lets go of the lane
    /// (and so of its Jenkins connections).
    #[tokio::test]
    async fn driving_stops_when_dropped() {
        let lane = Arc::new(Lane::default());
        let driving = lane.start(Duration::from_secs(60));
        tokio::task::yield_now().await;
        assert_eq!(
            Arc::strong_count(&lane),
            3,
            "the task and the guard hold it"
        );
        assert!(lane.lock().waker.is_some(), "the task has polled the lane");
        drop(driving);
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        assert_eq!(Arc::strong_count(&lane), 1, "the task is gone");
    }

    /// Only bodiless GETs and HEADs without a `token` parameter, however
    /// spelled, are sent again.
    #[test]
    fn what_may_be_sent_again() {
        let req = |method: Method, uri: &str, body: &'static str| {
            let mut req = Request::new(crate::body::full(body));
            *req.method_mut() = method;
            *req.uri_mut() = uri.parse().unwrap();
            req
        };
        for (method, uri, body, again) in [
            (Method::GET, "/api/json?tree=jobs[name]", "", true),
            (Method::HEAD, "/job/a/", "", true),
            (Method::GET, "/job/a/api/json?depth=1&tokens=2", "", true),
            (Method::GET, "/job/a/api/json", "x", false),
            (Method::POST, "/job/a/build", "", false),
            (Method::PUT, "/x", "", false),
            (Method::DELETE, "/x", "", false),
            (Method::GET, "/job/a/build?token=s3cret", "", false),
            (
                Method::GET,
                "/job/a/buildWithParameters?x=1&Token=s",
                "",
                false,
            ),
            (
                Method::GET,
                "/buildByToken/build?job=a&%74oken=s",
                "",
                false,
            ),
            (
                Method::GET,
                "/generic-webhook-trigger/invoke?TOKEN",
                "",
                false,
            ),
            (Method::GET, "/generic-webhook-trigger/invoke", "", false),
            (Method::GET, "/job/a/%62uild", "", false),
            (Method::GET, "/job/a/Polling", "", false),
            (Method::GET, "/git/notifyCommit?url=x", "", false),
            (Method::GET, "/job/build-tools/api/json", "", true),
        ] {
            assert_eq!(
                resendable(&req(method.clone(), uri, body)),
                again,
                "{method} {uri} {body:?}"
            );
        }
        // A token in a header (the Generic Webhook Trigger reads `token`
        // and `X-Gitlab-Token`).
        for name in ["token", "x-gitlab-token"] {
            let mut with_header = req(Method::GET, "/api/json", "");
            with_header
                .headers_mut()
                .insert(name, "s3cret".parse().unwrap());
            assert!(!resendable(&with_header), "{name}");
        }
        let mut original = req(Method::GET, "/api/json?x=1", "");
        original
            .headers_mut()
            .insert("authorization", "Basic eA==".parse().unwrap());
        let again = copy(&original);
        assert_eq!(again.uri(), original.uri());
        assert_eq!(again.headers(), original.headers());
        assert!(http_body::Body::is_end_stream(again.body()));
    }

    /// A parked connection older than the idle timeout is never handed
    /// out, and a zero timeout parks nothing.
    #[tokio::test]
    async fn parked_connections_expire() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..2 {
                held.push(listener.accept().await.unwrap().0);
            }
            held
        });
        let conn = || async {
            let io =
                hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            Conn {
                sender,
                driver: Box::pin(async move {
                    let _ = conn.await;
                }),
            }
        };
        let pool = IdlePool::new(Duration::from_secs(30));
        pool.put(conn().await);
        assert_eq!(pool.len(), 1);
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(pool.take().is_none(), "expired");
        let none = IdlePool::new(Duration::ZERO);
        none.put(conn().await);
        assert_eq!(none.len(), 0);
        drop(accept.await.unwrap());
    }
}
