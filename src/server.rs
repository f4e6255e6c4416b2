//! Connections.
//!
//! This module owns the accept loop with its connection cap, the worker
//! threads that serve connections (one single-threaded runtime per core),
//! the HTTP/1.1 connection settings (timer, header size cap, header-read
//! timeout, idle timeout, keep-alive, upgrades), graceful shutdown with a
//! drain deadline, and waiting for SIGINT/SIGTERM. Binding sockets is
//! `listener`'s job; it knows nothing about Jenkins: each connection gets a
//! `proxy::Proxy` service and that is all.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::activity::{Activity, Connections, Registration};
use crate::config::{Config, LimitsConfig, ShutdownConfig};
use crate::listener::{Accepted, IdleTimeout, Listener, Peer};
use crate::proxy::{Proxy, Shared};
use crate::upstream::UpstreamInitError;

/// A proxy ready to serve: configuration validated and the upstream client
/// built (for HTTPS, root certificates loaded), but no socket touched yet.
#[derive(Debug)]
pub struct App {
    shared: Arc<Shared>,
    limits: LimitsConfig,
    shutdown: ShutdownConfig,
}

impl App {
    /// Builds the upstream client and crumb cache from a validated config.
    ///
    /// # Errors
    /// When the upstream client cannot be built (TLS files or roots).
    pub fn new(config: Config) -> Result<Self, UpstreamInitError> {
        let limits = config.limits.clone();
        let shutdown = config.shutdown.clone();
        Ok(Self {
            shared: Arc::new(Shared::new(config)?),
            limits,
            shutdown,
        })
    }

    /// One line for the start-up log: where requests go and how.
    pub fn describe(&self) -> String {
        format!(
            "{} (crumbs {})",
            self.shared.upstream().base(),
            if self.shared.crumbs_enabled() {
                "on POST"
            } else {
                "off"
            }
        )
    }

    /// Serves connections from `listener` until `shutdown` completes; see
    /// [`App::serve_with_health`].
    ///
    /// # Errors
    /// Only if the listener's own address cannot be read.
    pub async fn serve(
        self,
        listener: impl Into<Listener>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        self.serve_with_health(listener, None, shutdown).await
    }

    /// Serves connections from `listener`, and `/livez`, `/readyz` and
    /// `/metrics` on `health` if given, until `shutdown` completes. Then:
    /// readiness turns 503 at once, new connections are still accepted for
    /// `shutdown.grace_secs`, the listener closes (later connections are
    /// refused, never cut), and requests in flight get `shutdown.drain_secs`
    /// to finish (hyper-util's graceful example; linkerd's `main.rs`).
    ///
    /// A task that panics on a worker breaks the proxy: `/livez` and
    /// `/readyz` answer 503 at once, the same shutdown runs (without the
    /// grace period), and this returns an error.
    ///
    /// # Errors
    /// If the listener's own address cannot be read, or the proxy broke.
    pub async fn serve_with_health(
        self,
        listener: impl Into<Listener>,
        health: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let listener = listener.into();
        let authority: Arc<str> = listener.authority()?.into();
        if let Some(health_listener) = health {
            tracing::info!(addr = %health_listener.local_addr()?, "health listening");
            let state = self.shared.health().clone();
            let checker = self.shared.clone();
            tokio::spawn(crate::health::watch_credentials(state.clone(), move || {
                let checker = checker.clone();
                async move { checker.check_credentials().await }
            }));
            tokio::spawn(crate::health::serve(health_listener, state));
        }
        // Parked Jenkins connections are closed on a timer, not only when
        // a request next reaches their worker.
        let sweeper = {
            let shared = Arc::downgrade(&self.shared);
            let every = self.shared.upstream().idle().sweep_every();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    match shared.upgrade() {
                        Some(shared) => shared.upstream().idle().sweep(),
                        None => break,
                    }
                }
            })
            .abort_handle()
        };
        tracing::info!(addr = %listener.local_addr()?, upstream = %self.describe(), "listening");
        // Connections watch this channel for the shutdown signal; once all
        // of them have dropped their receiver, the drain is complete. (hyper-
        // util's `GracefulShutdown` works the same way but does not accept
        // connections with upgrades enabled.)
        let (drain, _) = watch::channel(false);
        // At most `max_connections` are served at once (mini-redis's
        // semaphore); at the cap, idle connections make room (`activity`).
        let permits = Arc::new(Semaphore::new(self.limits.max_connections));
        let health_state = self.shared.health().clone();
        let workers = Workers::start(crate::worker::count(), &health_state)?;
        let acceptor = Acceptor {
            app: &self,
            workers: &workers,
            listener: &listener,
            authority,
            drain: &drain,
            permits,
            connections: Connections::new(),
            cap_logged: std::sync::Mutex::new(None),
        };
        acceptor
            .run(async {
                tokio::select! {
                    () = shutdown => {}
                    () = health_state.broke() => {}
                }
            })
            .await;
        self.shared.health().begin_shutdown();
        // A broken proxy takes no new connections at all.
        let broken = health_state.broken().map(str::to_owned);
        if !self.shutdown.grace.is_zero() && broken.is_none() {
            tracing::info!(
                grace_secs = self.shutdown.grace.as_secs(),
                "shutdown requested: not ready, still accepting new connections"
            );
            acceptor.run(tokio::time::sleep(self.shutdown.grace)).await;
        }
        drop(listener);
        tracing::info!(
            drain_secs = self.shutdown.drain.as_secs(),
            "shutting down: no new connections, draining open ones"
        );
        let _ = drain.send(true);
        match tokio::time::timeout(self.shutdown.drain, drain.closed()).await {
            Ok(()) => tracing::info!("all connections closed"),
            Err(_) => tracing::warn!(
                drain_secs = self.shutdown.drain.as_secs(),
                "drain deadline passed; closing the remaining connections"
            ),
        }
        workers.stop().await;
        sweeper.abort();
        match broken {
            None => Ok(()),
            Some(why) => Err(io::Error::other(format!(
                "{why}; exiting so that a supervisor restarts the proxy"
            ))),
        }
    }
}

/// The accept loop's state, so the loop can run again during the grace
/// period.
struct Acceptor<'a> {
    app: &'a App,
    workers: &'a Workers,
    listener: &'a Listener,
    authority: Arc<str>,
    drain: &'a watch::Sender<bool>,
    permits: Arc<Semaphore>,
    connections: Arc<Connections>,
    /// When reaching `limits.max_connections` was last logged.
    cap_logged: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// How long a connection asked to make room waits for bytes the reactor
/// may not have reported yet before it closes.
const RECLAIM_SETTLE: Duration = Duration::from_millis(2);

/// Reaching the connection cap is logged at most this often.
const CAP_LOG_EVERY: Duration = Duration::from_secs(300);

/// How often the acceptor, at the connection cap with every connection
/// busy, looks again for one that has become idle.
const RECLAIM_RETRY: Duration = Duration::from_millis(100);

impl Acceptor<'_> {
    /// Accepts connections until `until` completes.
    async fn run(&self, until: impl Future<Output = ()>) {
        let mut until = std::pin::pin!(until);
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = &mut until => return,
            };
            let accepted = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    handle_accept_error(e).await;
                    continue;
                }
            };
            // Accepted first, so that the new client is known to be
            // waiting; then a slot, made free by closing an idle
            // connection if need be.
            let Some(permit) = self.slot(until.as_mut()).await else {
                return;
            };
            let (activity, registration) = self.connections.register();
            let shared = &self.app.shared;
            match accepted {
                Accepted::Tcp(stream, addr) => {
                    let _ = stream.set_nodelay(true);
                    let service = Proxy::new(
                        shared.clone(),
                        Peer::Tcp(addr),
                        self.authority.clone(),
                        activity,
                    );
                    self.hand_over(
                        stream.into_std(),
                        tokio::net::TcpStream::from_std,
                        service,
                        (permit, registration),
                    );
                }
                Accepted::Unix(stream, peer) => {
                    let service =
                        Proxy::new(shared.clone(), peer, self.authority.clone(), activity);
                    self.hand_over(
                        stream.into_std(),
                        tokio::net::UnixStream::from_std,
                        service,
                        (permit, registration),
                    );
                }
            }
        }
    }

    /// A connection slot: at once if one is free; at the cap, the
    /// connection idle longest is asked to close (nginx's reuse of
    /// keep-alive connections), and if every one is busy, the first to
    /// become idle or end. `None` when `until` completes first.
    async fn slot(
        &self,
        mut until: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Some(permit);
        }
        self.at_cap();
        loop {
            let asked = self.connections.reclaim_oldest_idle();
            tokio::select! {
                permit = tokio::time::timeout(RECLAIM_RETRY, self.permits.clone().acquire_owned()) => match permit {
                    Ok(Ok(permit)) => return Some(permit),
                    Ok(Err(_)) => return None,
                    Err(_) => {
                        if !asked {
                            tracing::debug!("at limits.max_connections with every connection busy; waiting");
                        }
                    }
                },
                () = &mut until => return None,
            }
        }
    }

    /// A client arrived with every slot taken: counted, and logged once
    /// (again only after [`CAP_LOG_EVERY`]), so that a proxy that is
    /// regularly full says so without a line per client.
    fn at_cap(&self) {
        self.app.shared.health().metrics.connection_cap_reached();
        let now = tokio::time::Instant::now();
        let mut logged = self
            .cap_logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if logged.is_none_or(|at| now.duration_since(at) >= CAP_LOG_EVERY) {
            *logged = Some(now);
            tracing::warn!(
                max_connections = self.app.limits.max_connections,
                "limits.max_connections reached: new clients wait until an idle connection is \
                 closed or a busy one ends; raise the limit if this is the normal load \
                 (crumb_proxy_connection_cap_reached_total counts each time)"
            );
        }
    }

    /// Gives an accepted connection to the next worker, as a plain socket
    /// (`detached`) that `attach` registers with the worker's own reactor.
    fn hand_over<S, I>(
        &self,
        detached: io::Result<S>,
        attach: fn(S) -> io::Result<I>,
        service: Proxy,
        held: Held,
    ) where
        S: Send + 'static,
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match detached {
            Ok(socket) => self.workers.spawn(serve_connection(
                self.drain.subscribe(),
                self.app.limits.clone(),
                move || attach(socket),
                service,
                held,
            )),
            Err(e) => tracing::debug!(error = %e, "cannot hand over a connection"),
        }
    }
}

/// What a connection holds while it is open: its slot under
/// `limits.max_connections` and its place among the reclaimable.
type Held = (tokio::sync::OwnedSemaphorePermit, Registration);

/// Convenience for tests and embedders: [`App::new`] then [`App::serve`].
///
/// # Errors
/// As [`App::new`] and [`App::serve`].
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    App::new(config)?.serve(listener, shutdown).await?;
    Ok(())
}

/// Why [`serve`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Init(#[from] UpstreamInitError),
    #[error("listener failed: {0}")]
    Io(#[from] io::Error),
}

/// Serves one client connection on the current (worker) runtime: the
/// socket is registered with it by `open`, and the connection's Jenkins
/// lane is driven on the same worker.
async fn serve_connection<I>(
    stop: watch::Receiver<bool>,
    limits: LimitsConfig,
    open: impl FnOnce() -> io::Result<I>,
    service: Proxy,
    held: Held,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = service.peer();
    let io = match open() {
        Ok(io) => io,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "cannot register the connection");
            return;
        }
    };
    let counted = service.metrics().connection();
    // The client's Jenkins connection is polled by a task of its own on
    // this worker (see `lane`).
    let driving = service.lane().start(service.upstream().idle().timeout());
    let proxy = service.clone();
    let conn = http1::Builder::new()
        // The header-read timeout on one timer per connection, not a new
        // one per request (see `timer::HeadTimer`).
        .timer(crate::timer::HeadTimer::new())
        // Counted from when the proxy starts waiting for a request head, so
        // it also bounds a keep-alive connection's wait for the next one.
        .header_read_timeout(limits.header_read_timeout)
        // A head larger than this is answered 431 (RFC 6585 §5).
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(read_buffer_cap(&limits, held.1.open_before()))
        // A client that shuts its sending side after a complete request
        // (`nc -N`, some HTTP/1.0 tools) still gets its answer: the request
        // may already have reached Jenkins.
        .half_close(true)
        .keep_alive(true)
        .serve_connection(
            TokioIo::new(
                IdleTimeout::new(io, limits.idle_timeout, limits.min_rate)
                    .marking(service.activity().clone()),
            ),
            service,
        )
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let activity = proxy.activity().clone();
    let served = async {
        let mut interrupt = std::pin::pin!(Stop::new(stop.clone(), activity.clone()));
        loop {
            tokio::select! {
                result = conn.as_mut() => break result,
                why = interrupt.as_mut() => match why {
                    Interrupt::Shutdown => {
                        // Finish the request in flight, then close (no keep-alive).
                        conn.as_mut().graceful_shutdown();
                        break conn.await;
                    }
                    // Asked to make room at the connection cap: closed if
                    // still idle (a request may have arrived since).
                    Interrupt::Reclaim if activity.is_idle() => {
                        // A request's bytes may already wait in the socket
                        // with the reactor yet to report them (a connection
                        // handed over a moment ago): let it turn, and hyper
                        // read them, before deciding. A timer, because only
                        // a timer is sure to outlast a turn of the reactor
                        // (`yield_now` documents that it may not).
                        tokio::select! {
                            biased;
                            result = conn.as_mut() => break result,
                            () = tokio::time::sleep(RECLAIM_SETTLE) => {}
                        }
                        if activity.is_idle() {
                            tracing::debug!(%peer, "idle connection closed to admit a new client");
                            break Ok(());
                        }
                    }
                    Interrupt::Reclaim => {}
                },
            }
        }
    };
    let result = served.await;
    driving.park(proxy.upstream());
    // A WebSocket tunnel keeps the connection's slot, busy, until it ends.
    if let Some(tunnel) = proxy.take_tunnel() {
        activity.begin(tokio::time::Instant::now());
        let _ = tunnel.await;
    }
    if let Err(e) = result {
        if crate::listener::is_too_slow(&e) {
            tracing::info!(%peer, error = %e, "client closed: it took the response too slowly");
            proxy.metrics().too_slow("response");
        } else {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
    drop(stop);
    drop(held);
    drop(counted);
}

/// Connections accepted while fewer than this many were open may grow
/// their read buffer to [`LARGE_READ_BUFFER`]; later ones to
/// [`SMALL_READ_BUFFER`]. At most this many hold a large one at a time.
const LARGE_READ_BUFFERS: usize = 32;
/// A read buffer for fast uploads: 256 MiB uploads went through 1.5 times
/// as fast as nginx's (64 KiB buffers) with hyper's own cap of about 400
/// KiB, and 1.0 times with 48 KiB.
const LARGE_READ_BUFFER: usize = 256 * 1024;
/// A read buffer when many clients are connected.
const SMALL_READ_BUFFER: usize = 48 * 1024;

/// The largest read buffer of a client connection. hyper grows a
/// connection's read buffer while a body streams in (up to about 400 KiB by
/// default) and keeps it for the connection's life, and a connection
/// streaming a body holds about twice it: 300 clients each POSTing 1 MiB at
/// once peaked above 150 MiB with hyper's cap, 119–122 MiB at 64 KiB, 94–98
/// MiB at 48 KiB (`bench/storm.sh`, release build; above 48 KiB the
/// allocator's next size class is much larger), while large reads make
/// uploads fast. So the first [`LARGE_READ_BUFFERS`] connections open at
/// once get large buffers and the rest small ones, and a buffer always
/// holds a whole request head.
fn read_buffer_cap(limits: &LimitsConfig, open_before: usize) -> usize {
    let cap = if open_before < LARGE_READ_BUFFERS {
        LARGE_READ_BUFFER
    } else {
        SMALL_READ_BUFFER
    };
    cap.max(limits.max_header_bytes + 8192)
}

/// Why a connection's [`Stop`] completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    /// Shutdown began.
    Shutdown,
    /// The acceptor asked the connection to close if it is idle.
    Reclaim,
}

pin_project_lite::pin_project! {
    /// Completes when shutdown begins (`drain` sends `true`, or is gone),
    /// or when the acceptor asks the connection to close ([`Activity`]).
    /// It can be polled again after a reclaim request.
    ///
    /// It is polled on every wake-up of its connection's task, several
    /// times per request, and the channel behind it is shared by every
    /// connection on every worker: polling the channel's `Notified` each
    /// time takes the channel's mutex, a cache line that both cores would
    /// keep taking from each other. So a poll with the waker that is
    /// already registered, while the channel's version is unchanged, is
    /// answered from one atomic load that writes nothing; only the first
    /// poll, a new waker, or a change reaches the channel.
    struct Stop<F> {
        seen: watch::Receiver<bool>,
        registered: Option<std::task::Waker>,
        activity: Arc<Activity>,
        #[pin]
        wait: F,
    }
}

impl Stop<()> {
    fn new(stop: watch::Receiver<bool>, activity: Arc<Activity>) -> Stop<impl Future<Output = ()>> {
        let seen = stop.clone();
        let wait = async move {
            let mut stop = stop;
            let _ = stop.wait_for(|stop| *stop).await;
        };
        Stop::with(seen, activity, wait)
    }
}

impl<F: Future<Output = ()>> Stop<F> {
    /// `wait` completes when `seen`'s channel says stop, and is woken only
    /// by a change to that channel.
    fn with(seen: watch::Receiver<bool>, activity: Arc<Activity>, wait: F) -> Self {
        Self {
            seen,
            registered: None,
            activity,
            wait,
        }
    }
}

impl<F: Future<Output = ()>> Future for Stop<F> {
    type Output = Interrupt;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Interrupt> {
        let this = self.project();
        if this.activity.take_reclaim() {
            return std::task::Poll::Ready(Interrupt::Reclaim);
        }
        let unchanged = matches!(this.seen.has_changed(), Ok(false));
        if unchanged
            && this
                .registered
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return std::task::Poll::Pending;
        }
        *this.registered = Some(cx.waker().clone());
        this.activity.set_waker(cx.waker());
        // Looked at again after the waker is in place: a request made
        // before it was is not missed.
        if this.activity.take_reclaim() {
            return std::task::Poll::Ready(Interrupt::Reclaim);
        }
        // Seen before `wait` looks, so a change after this is never missed.
        this.seen.mark_unchanged();
        this.wait.poll(cx).map(|()| Interrupt::Shutdown)
    }
}

/// The threads that serve client connections: one single-threaded tokio
/// runtime per core, each with its own reactor and timers, the way nginx
/// runs one worker process per core. A connection stays on the worker it
/// was handed to, together with its Jenkins connection (`lane`), so a
/// request never wakes another thread. The accept loop, signals and the
/// health listener stay on the caller's runtime. (One multi-threaded
/// runtime cost 30% more CPU per request: its work stealing and
/// cross-thread wake-ups; see bench/README.md.)
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    /// Dropping a sender lets its worker return; its runtime then cancels
    /// what is left on it.
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Workers {
    /// `count` workers; a panic on any of them breaks `health`.
    fn start(count: usize, health: &Arc<crate::health::Health>) -> io::Result<Self> {
        let mut workers = Self {
            handles: Vec::with_capacity(count),
            stops: Vec::with_capacity(count),
            threads: Vec::with_capacity(count),
            next: std::sync::atomic::AtomicUsize::new(0),
        };
        // Workers log where their creator logs, even to a scoped
        // (thread-local) subscriber.
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        for index in 0..count {
            let dispatch = dispatch.clone();
            let health = Arc::downgrade(health);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            workers.handles.push(runtime.handle().clone());
            workers.stops.push(stop);
            workers.threads.push(
                std::thread::Builder::new()
                    .name(format!("crumb-proxy-worker-{index}"))
                    .spawn(move || {
                        let _logging = tracing::dispatcher::set_default(&dispatch);
                        crate::worker::set_current(
                            index,
                            Box::new(move |why| {
                                if let Some(health) = health.upgrade() {
                                    health.break_down(why);
                                }
                            }),
                        );
                        runtime.block_on(async {
                            let _ = stopped.await;
                        });
                    })?,
            );
        }
        Ok(workers)
    }

    /// Runs `task` on the next worker, round robin.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let next = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.handles[next % self.handles.len()].spawn(task);
    }

    /// Ends the workers (cancelling any connection still open) and waits
    /// for their threads.
    async fn stop(mut self) {
        self.stops.clear();
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// Accept errors never end the loop (axum `serve/listener.rs`): errors of
/// one connection are skipped; resource exhaustion (EMFILE) is logged and
/// retried after a second, so the proxy recovers when descriptors free up.
async fn handle_accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The binary's signal handling, set up at once (so that no signal that
/// arrives before serving starts has its default effect):
///
/// - the returned future completes on the first SIGTERM or SIGINT, which
///   begins the graceful shutdown;
/// - a second SIGTERM or SIGINT, during the grace period or the drain,
///   exits at once with status 128 + the signal's number, as if the signal
///   had killed the process (connections still open are cut; a Unix socket
///   file left behind is replaced at the next start);
/// - SIGHUP is logged and ignored. The configuration is read once, at
///   start: a reload that half applies (new policy, old listener) is worse
///   than a restart, which the graceful shutdown makes cheap, and secret
///   files, the one thing that changes under a running proxy, are re-read
///   by themselves when they change.
///
/// Must be called within a tokio runtime.
#[cfg(unix)]
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::error!(error = %e, signal = name, "cannot listen for the signal");
            None
        }
    };
    let mut stops = [
        (
            listen(SignalKind::terminate(), "SIGTERM"),
            "SIGTERM",
            libc::SIGTERM,
        ),
        (
            listen(SignalKind::interrupt(), "SIGINT"),
            "SIGINT",
            libc::SIGINT,
        ),
    ];
    if let Some(mut hangup) = listen(SignalKind::hangup(), "SIGHUP") {
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::warn!(
                    signal = "SIGHUP",
                    "ignored: the configuration is read only at start, so restart the proxy to \
                     change it; secret files are re-read by themselves when they change"
                );
            }
        });
    }
    async move {
        let (name, _) = next_stop(&mut stops).await;
        tracing::info!(
            signal = name,
            "shutdown requested; the same signal again exits at once"
        );
        tokio::spawn(async move {
            let (name, number) = next_stop(&mut stops).await;
            tracing::warn!(
                signal = name,
                "second stop signal: exiting at once, cutting the connections still open"
            );
            std::process::exit(128 + number);
        });
    }
}

/// The next SIGTERM or SIGINT: its name and number.
#[cfg(unix)]
async fn next_stop(
    stops: &mut [(Option<tokio::signal::unix::Signal>, &'static str, i32); 2],
) -> (&'static str, i32) {
    async fn recv(stream: &mut Option<tokio::signal::unix::Signal>) {
        // `None` only if the runtime is going away.
        let got = match stream {
            Some(stream) => stream.recv().await,
            None => None,
        };
        if got.is_none() {
            std::future::pending::<()>().await;
        }
    }
    let [(term, term_name, term_number), (int, int_name, int_number)] = stops;
    tokio::select! {
        () = recv(term) => (*term_name, *term_number),
        () = recv(int) => (*int_name, *int_number),
    }
}

/// Completes on the first Ctrl-C.
#[cfg(not(unix))]
pub fn shutdown_signal() -> impl Future<Output = ()> {
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!(signal = "SIGINT", "shutdown requested");
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    use tokio::sync::watch;

    use super::{Interrupt, Stop, Workers};
    use crate::activity::Connections;
    use crate::health::{CredentialState, Health};

    /// A task that panics on a worker takes liveness and readiness with
    /// it (and wakes the server, which then shuts down and exits
    /// non-zero); the other workers' tasks are untouched.
    #[tokio::test]
    async fn a_panicking_worker_task_breaks_the_proxy() {
        let health = Arc::new(Health::new());
        health.set_credentials(CredentialState::Accepted);
        let workers = Workers::start(2, &health).unwrap();
        let (done, fine) = tokio::sync::oneshot::channel();
        workers.spawn(async move {
            let _ = done.send(());
        });
        fine.await.unwrap();
        assert!(health.liveness().is_ok() && health.readiness().is_ok());
        workers.spawn(async { panic!("a bug") });
        tokio::time::timeout(std::time::Duration::from_secs(10), health.broke())
            .await
            .unwrap();
        let why = health.liveness().unwrap_err().to_owned();
        assert!(
            why.starts_with("a worker task panicked at src/server.rs:") && why.ends_with(": a bug"),
            "{why}"
        );
        assert_eq!(health.readiness(), Err(why.as_str()));
        workers.stop().await;
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes::default());
        (wakes.clone(), Waker::from(wakes))
    }

    fn poll(
        f: std::pin::Pin<&mut impl Future<Output = Interrupt>>,
        waker: &Waker,
    ) -> Poll<Interrupt> {
        f.poll(&mut Context::from_waker(waker))
    }

    fn activity() -> Arc<crate::activity::Activity> {
        // The registration is dropped: these tests never reclaim.
        Connections::new().register().0
    }

    #[test]
    fn stop_completes_when_shutdown_begins_and_wakes_the_latest_waker() {
        let (tx, rx) = watch::channel(false);
        let mut stop = pin!(Stop::new(rx, activity()));
        let (first, first_waker) = waker();
        let (latest, latest_waker) = waker();
        assert!(poll(stop.as_mut(), &first_waker).is_pending());
        tx.send(false).unwrap();
        assert!(
            poll(stop.as_mut(), &first_waker).is_pending(),
            "false is not a stop"
        );
        assert!(poll(stop.as_mut(), &first_waker).is_pending());
        // The task's waker changed: the new one must be the one woken.
        assert!(poll(stop.as_mut(), &latest_waker).is_pending());
        let before = (
            first.0.load(Ordering::SeqCst),
            latest.0.load(Ordering::SeqCst),
        );
        tx.send(true).unwrap();
        assert_eq!(latest.0.load(Ordering::SeqCst), before.1 + 1);
        assert_eq!(first.0.load(Ordering::SeqCst), before.0);
        assert_eq!(
            poll(stop.as_mut(), &latest_waker),
            Poll::Ready(Interrupt::Shutdown)
        );
    }

    /// A reclaim request completes the future, wakes the task, and the
    /// future can be polled again afterwards.
    #[test]
    fn stop_completes_on_a_reclaim_request_and_goes_on() {
        let (tx, rx) = watch::channel(false);
        let connections = Connections::new();
        let (activity, _registration) = connections.register();
        let mut stop = pin!(Stop::new(rx, activity));
        let (wakes, w) = waker();
        assert!(poll(stop.as_mut(), &w).is_pending());
        assert!(connections.reclaim_oldest_idle());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(stop.as_mut(), &w), Poll::Ready(Interrupt::Reclaim));
        assert!(poll(stop.as_mut(), &w).is_pending());
        tx.send(true).unwrap();
        assert_eq!(poll(stop.as_mut(), &w), Poll::Ready(Interrupt::Shutdown));
    }

    #[test]
    fn stop_completes_when_the_sender_is_gone() {
        let (tx, rx) = watch::channel(false);
        let mut stop = pin!(Stop::new(rx, activity()));
        let (wakes, w) = waker();
        assert!(poll(stop.as_mut(), &w).is_pending());
        assert!(poll(stop.as_mut(), &w).is_pending());
        drop(tx);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(poll(stop.as_mut(), &w).is_ready());
    }

    #[test]
    fn stop_reaches_the_channel_only_when_it_may_have_changed() {
        let (tx, rx) = watch::channel(false);
        let polls = AtomicUsize::new(0);
        let wait = std::future::poll_fn(|_| {
            polls.fetch_add(1, Ordering::SeqCst);
            Poll::<()>::Pending
        });
        let mut stop = pin!(Stop::with(rx, activity(), wait));
        let (_, a) = waker();
        let (_, b) = waker();
        for _ in 0..100 {
            assert!(poll(stop.as_mut(), &a).is_pending());
        }
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "one registration for 100 polls"
        );
        assert!(poll(stop.as_mut(), &b).is_pending());
        assert!(poll(stop.as_mut(), &b).is_pending());
        assert_eq!(
            polls.load(Ordering::SeqCst),
            2,
            "a new waker registers again"
        );
        tx.send(false).unwrap();
        assert!(poll(stop.as_mut(), &b).is_pending());
        assert!(poll(stop.as_mut(), &b).is_pending());
        assert_eq!(
            polls.load(Ordering::SeqCst),
            3,
            "a change is looked at once"
        );
        drop(tx);
        assert!(poll(stop.as_mut(), &b).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 4, "so is the sender leaving");
    }
}
