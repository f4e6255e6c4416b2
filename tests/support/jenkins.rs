//! `MockJenkins`: a test double of a Jenkins controller, as seen by remote-API clients.
//!
//! It reproduces what `/work/shared/jenkins-behavior.md` (cited below as "behaviour §N")
//! describes: Basic authentication with passwords and API tokens (§2), HTTP sessions and their
//! idle timeout (§3), the crumb issuer (§4) with session-bound crumbs (§5), the CSRF filter and
//! Jetty's exact rejection page (§6), and the endpoints a proxy test exercises (§7): build
//! triggers with queue folding, queue items, the root and job APIs, streamed artifacts,
//! progressive console text and `config.xml`.
//!
//! For the real client libraries of behaviour §8 (python-jenkins, jenkinsapi, api4jenkins,
//! jenkins-job-builder, the npm `jenkins` client) it also keeps jobs as Jenkins does: created
//! from XML (`createItem`, §7.6), reconfigured (`config.xml`), deleted (`doDelete`); queue items
//! that leave the queue after their quiet period start a build that runs for
//! [`Builder::build_duration`] and writes a console log (`consoleText`, `logText/progressiveText`,
//! §7.4); parameters come from the query, an urlencoded body or, for file parameters, a
//! multipart body (§7.2); and the remote API answers in JSON and in Stapler's Python flavour,
//! honouring `tree=` (§7.7).
//!
//! It records every request it receives ([`Recorded`]) so that tests assert on what Jenkins
//! saw, not only on what the client got, and it fails loudly: a request to a route it does not
//! know is answered with a 404 *and* remembered, and [`MockJenkins::finish`] panics listing
//! such requests and re-raises panics of the server tasks (linkerd's `integration/src/server.rs`).
//!
//! What it leaves out: HTML pages are small stand-ins for the Jelly pages (only the parts
//! that matter to a client are kept); there is no login form, no views, no folders, no
//! `depth=` (every object is written at depth 0), no `api/xml` but the crumb issuer's, and a
//! build runs no command: it prints its parameters and, for each `echo` line of the job's shell
//! steps, what `echo` would print. Request bodies are read streaming; only the first
//! [`RECORD_CAP`] bytes are kept.
//!
//! The file is self-contained (only external crates are used) because both the integration
//! tests (`tests/support/mod.rs`) and `examples/mock_jenkins.rs` include it with `#[path]`.

// Test-support code shared by two crates: items unused by one of them are expected, and the
// `pub` items are the API of this module even though the module itself is private there.
#![allow(dead_code, unreachable_pub)]
// A failure inside the double is a bug in the double or in the test that configured it; such
// panics surface through `MockJenkins::finish` (or at configuration time), which is the point.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Version reported in `X-Jenkins` by default: the first whose crumbs no longer hash the
/// client IP (behaviour §1, 2.543), which is how the double computes them unless
/// [`Builder::version`] names an older one.
pub const JENKINS_VERSION: &str = "2.543";
/// The last LTS line whose crumbs hash the client IP (the version the third-party captures of
/// behaviour §2 used).
pub const PRE_2543_VERSION: &str = "2.541.3";
/// How much of each request body [`Recorded::body`] keeps.
pub const RECORD_CAP: usize = 1 << 20;
/// The message of the CSRF rejection (behaviour §6); clients match on it.
pub const CRUMB_REJECTION: &str = "No valid crumb was included in the request";
/// Default crumb field since Jenkins 2.0 (behaviour §1, §4).
pub const DEFAULT_CRUMB_FIELD: &str = "Jenkins-Crumb";
/// Jetty's default session idle timeout (`webdefault-ee9.xml`, behaviour §3.2).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default quiet period of a job (behaviour §7.1).
pub const DEFAULT_QUIET_PERIOD: Duration = Duration::from_secs(5);
/// The job every double has.
pub const SAMPLE_JOB: &str = "sample-job";
/// The build whose console log [`ProgressiveControl`] feeds.
pub const PROGRESSIVE_BUILD: u32 = 1;
/// What the console of a finished build ends with (`Run.execute`).
pub const FINISHED_SUCCESS: &str = "Finished: SUCCESS";

/// Artifact bytes are `(i % PATTERN_MODULUS) as u8`: a prime, so chunk boundaries never line
/// up with the pattern and a dropped or repeated chunk changes the digest.
const PATTERN_MODULUS: u64 = 251;
/// Size of the body frames an artifact is streamed in.
const ARTIFACT_CHUNK: usize = 64 * 1024;
/// The Jetty footer of behaviour §6.
const JETTY_FOOTER: &str =
    "<hr/><a href=\"https://jetty.org/\">Powered by Jetty:// 12.1.8</a><hr/>";
/// `X-You-Are-In-Group-Disabled` value of `AccessDeniedException3.reportAsHeaders` (behaviour §2).
const GROUP_HEADERS_DISABLED: &str = "JENKINS-39402: use -Dhudson.security.AccessDeniedException2.REPORT_GROUP_HEADERS=true or use /whoAmI to diagnose";
/// `Last-Modified` of every artifact (a fixed date keeps `If-Modified-Since` tests simple).
const ARTIFACT_LAST_MODIFIED: &str = "Tue, 25 Nov 2025 20:00:00 GMT";

/// Every crumb and session id any double in this process has handed out.
/// The secret-hygiene checks of the tests look for them in logs and in
/// proxy-made response bodies.
static ISSUED_SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A copy of [`ISSUED_SECRETS`].
pub fn issued_secrets() -> Vec<String> {
    ISSUED_SECRETS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

fn register_secret(secret: &str) {
    ISSUED_SECRETS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(secret.to_owned());
}

/// The artifact/upload pattern: `len` bytes starting at stream offset `offset`.
pub fn pattern_bytes(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|i| (i % PATTERN_MODULUS) as u8)
        .collect()
}

/// FNV-1a (64 bit) of `data`: the digest [`Recorded::body_digest`] holds. Chosen over SHA-256
/// because it is order-sensitive yet fast enough in unoptimised test builds for 100 MiB bodies.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut digest = Fnv1a64::new();
    digest.update(data);
    digest.finish()
}

/// Streaming form of [`fnv1a64`].
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a64(u64);

impl Fnv1a64 {
    pub fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv1a64 {
    fn default() -> Self {
        Self::new()
    }
}

/// One request as the double received it, and what it answered.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// As received, including the context path.
    pub path: String,
    pub query: Option<String>,
    /// Exactly as received.
    pub headers: HeaderMap,
    /// The first [`RECORD_CAP`] bytes of the body.
    pub body: Bytes,
    /// Full length of the body received.
    pub body_len: u64,
    /// [`fnv1a64`] over the full body.
    pub body_digest: u64,
    /// What the double answered.
    pub status: StatusCode,
    /// Authenticated user; `None` for anonymous (and for rejected credentials).
    pub user: Option<String>,
    /// The secret was an API token (behaviour §2); such requests are exempt from CSRF checks.
    pub via_api_token: bool,
    /// Index of the TCP connection it arrived on (0 for the first accepted connection).
    pub connection: usize,
    /// The HTTP session the request presented (still valid) or created, if any (behaviour
    /// §3.3); with [`MockJenkins::crumb_for`] it tells which crumb a crumb fetch handed out.
    pub session: Option<String>,
}

// === impl Builder ===

/// Configures a [`MockJenkins`]; see [`MockJenkins::builder`].
pub struct Builder {
    context_path: String,
    passwords: HashMap<String, String>,
    api_tokens: HashMap<String, Vec<String>>,
    csrf: bool,
    crumb_field: String,
    session_timeout: Duration,
    quiet_period: Duration,
    jobs: BTreeSet<String>,
    denied: HashSet<(String, String)>,
    artifacts: HashMap<(String, u32, String), u64>,
    upload_sink: bool,
    delays: HashMap<String, Duration>,
    extra_headers: HashMap<String, Vec<(HeaderName, HeaderValue)>>,
    configured_root: Option<String>,
    build_duration: Duration,
    plugins: Vec<(String, String)>,
    version: String,
    trusted_user_header: Option<HeaderName>,
    folders: BTreeSet<String>,
    views: BTreeSet<String>,
    agents: BTreeSet<String>,
}

impl Builder {
    /// A folder (an item group, behaviour §13): `job/F/job/J` reaches its job `F/J`, added with
    /// [`Builder::job`]; `job/F/view/V` its views; `job/F/credentials` its credentials store.
    pub fn folder(mut self, full_name: &str) -> Self {
        self.folders.insert(full_name.to_owned());
        self
    }

    /// A view besides `all` (behaviour §13: a view hands out every item of its owner's group).
    pub fn view(mut self, name: &str) -> Self {
        self.views.insert(name.to_owned());
        self
    }

    /// An agent besides the built-in node (`computer/NAME`).
    pub fn agent(mut self, name: &str) -> Self {
        self.agents.insert(name.to_owned());
        self
    }

    /// The version announced in `X-Jenkins`; the double behaves like it where versions differ:
    /// before 2.543 crumbs hash the client IP (behaviour §5, §13: the first `X-Forwarded-For`
    /// element, else the peer address), and before 2.219 (LTS 2.204.2) the `/whoAmI/` page
    /// prints every request header, `Authorization` included (SECURITY-1695, §13).
    ///
    /// # Panics
    /// If `version` is not dot-separated numbers.
    pub fn version(mut self, version: &str) -> Self {
        assert!(parse_version(version).is_some(), "version {version:?}");
        self.version = version.to_owned();
        self
    }

    /// Trust `name` as a header-based security realm does (the reverse-proxy-auth plugin's
    /// `X-Forwarded-User`, behaviour §13): a request carrying it is authenticated as the user it
    /// names, whatever its `Authorization`. A double that a client could fool this way shows
    /// that a proxy never lets such a header through.
    pub fn trust_user_header(mut self, name: &str) -> Self {
        self.trusted_user_header = Some(HeaderName::try_from(name).expect("header name"));
        self
    }

    /// Serve everything under `p` (`""` for the root, or e.g. `"/jenkins"`; behaviour §3.1
    /// `Path=<context path>`).
    pub fn context_path(mut self, p: &str) -> Self {
        let trimmed = p.trim_end_matches('/');
        self.context_path = if trimmed.is_empty() || trimmed.starts_with('/') {
            trimmed.to_owned()
        } else {
            format!("/{trimmed}")
        };
        self
    }

    /// A user with a real password (behaviour §2: a password-authenticated POST needs a crumb).
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.passwords.insert(name.to_owned(), password.to_owned());
        self
    }

    /// An API token of `user` (behaviour §2: token requests need no crumb, §6).
    pub fn api_token(mut self, user: &str, token: &str) -> Self {
        self.api_tokens
            .entry(user.to_owned())
            .or_default()
            .push(token.to_owned());
        self
    }

    /// CSRF protection at start (default on; behaviour §4 for "off").
    pub fn csrf(mut self, enabled: bool) -> Self {
        self.csrf = enabled;
        self
    }

    /// The crumb request field (default `Jenkins-Crumb`; `.crumb` before Jenkins 2.0).
    pub fn crumb_field(mut self, name: &str) -> Self {
        self.crumb_field = name.to_owned();
        self
    }

    /// Session idle timeout (default 30 min, behaviour §3.2).
    pub fn session_timeout(mut self, d: Duration) -> Self {
        self.session_timeout = d;
        self
    }

    /// Quiet period of new queue items (default 5 s); items leave the queue after it and queue
    /// folding (behaviour §7.1) only reuses items still waiting. `?delay=Nsec` overrides it.
    pub fn quiet_period(mut self, d: Duration) -> Self {
        self.quiet_period = d;
        self
    }

    /// Another freestyle job (`sample-job` always exists).
    pub fn job(mut self, name: &str) -> Self {
        self.jobs.insert(name.to_owned());
        self
    }

    /// `user` lacks Item/Build on `job`: build triggers get `AccessDeniedHandlerImpl`'s 403.
    pub fn deny_job(mut self, job: &str, user: &str) -> Self {
        self.jobs.insert(job.to_owned());
        self.denied.insert((job.to_owned(), user.to_owned()));
        self
    }

    /// `GET <ctx>/job/JOB/BUILD/artifact/PATH` streams `size` pattern bytes ([`pattern_bytes`]).
    pub fn artifact(mut self, job: &str, build: u32, path: &str, size: u64) -> Self {
        self.jobs.insert(job.to_owned());
        self.artifacts
            .insert((job.to_owned(), build, path.to_owned()), size);
        self
    }

    /// Accept request bodies larger than [`RECORD_CAP`]. They are always read streaming and
    /// only counted and digested beyond the cap; without this switch such a body is recorded
    /// as unexpected, so a test that did not plan for a large upload notices one.
    pub fn upload_sink(mut self) -> Self {
        self.upload_sink = true;
        self
    }

    /// Wait `d` before answering requests to exactly this full path (the request is handled
    /// and recorded first, as a slow Jenkins would have acted on it).
    pub fn response_delay(mut self, path: &str, d: Duration) -> Self {
        self.delays.insert(path.to_owned(), d);
        self
    }

    /// Headers appended to every response to exactly this full path (for transparency tests:
    /// hop-by-hop headers, `Connection: X-Foo` with `X-Foo`, extra `Set-Cookie`). hyper owns
    /// the framing of its own hop, so `Content-Length`/`Transfer-Encoding` given here may be
    /// replaced.
    ///
    /// # Panics
    /// If a name or value is not a valid header.
    pub fn extra_response_headers(mut self, path: &str, headers: Vec<(String, String)>) -> Self {
        let converted = headers.into_iter().map(|(name, value)| {
            (
                HeaderName::try_from(name).expect("extra header name"),
                HeaderValue::try_from(value).expect("extra header value"),
            )
        });
        self.extra_headers
            .entry(path.to_owned())
            .or_default()
            .extend(converted);
        self
    }

    /// A configured root URL ("Jenkins URL" in the global configuration,
    /// ending in `/`): the root object's `url` and every absolute URL use it
    /// instead of the request's address (behaviour §7.7).
    pub fn configured_root_url(mut self, url: &str) -> Self {
        self.configured_root = Some(url.to_owned());
        self
    }

    /// How long a build runs once its queue item has left the queue (default 0: it is complete
    /// as soon as it starts). While it runs, its API says `building`, its console lacks the
    /// final `Finished: SUCCESS` and `progressiveText` sends `X-More-Data: true`.
    pub fn build_duration(mut self, d: Duration) -> Self {
        self.build_duration = d;
        self
    }

    /// An installed plugin, listed by `pluginManager/api/json` (what jenkins-job-builder asks
    /// for). Without any, the double has no plugin manager: the route stays unknown.
    pub fn plugin(mut self, short_name: &str, version: &str) -> Self {
        self.plugins
            .push((short_name.to_owned(), version.to_owned()));
        self
    }

    /// Bind `127.0.0.1:0` and serve.
    ///
    /// # Panics
    /// If the loopback socket cannot be bound.
    pub async fn start(self) -> MockJenkins {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        self.start_on(addr).await.expect("bind the mock Jenkins")
    }

    /// Bind `addr` and serve. The socket is bound before this returns, so clients may connect
    /// at once (no readiness wait needed).
    ///
    /// # Errors
    /// If `addr` cannot be bound.
    pub async fn start_on(self, addr: SocketAddr) -> std::io::Result<MockJenkins> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mut next_build = HashMap::new();
        for job in &self.jobs {
            // Build numbers continue after the builds that already exist (artifacts, the log).
            let existing = self
                .artifacts
                .keys()
                .filter(|(j, _, _)| j == job)
                .map(|(_, b, _)| *b)
                .chain((job == SAMPLE_JOB).then_some(PROGRESSIVE_BUILD))
                .max()
                .unwrap_or(0);
            next_build.insert(job.clone(), existing + 1);
        }
        let jobs = self
            .jobs
            .iter()
            .map(|name| (name.clone(), JobState::default()))
            .collect();
        let config = Config {
            context: self.context_path,
            passwords: self.passwords,
            api_tokens: self.api_tokens,
            crumb_field: self.crumb_field,
            session_timeout: self.session_timeout,
            quiet_period: self.quiet_period,
            build_duration: self.build_duration,
            plugins: self.plugins,
            client_ip_crumbs: parse_version(&self.version) < parse_version("2.543"),
            echoes_headers: echoes_headers(&self.version),
            version: HeaderValue::try_from(self.version).expect("version header"),
            trusted_user_header: self.trusted_user_header,
            folders: self.folders,
            views: self.views,
            agents: self.agents,
            jobs: self.jobs,
            denied: self.denied,
            artifacts: self.artifacts,
            upload_sink: self.upload_sink,
            delays: self.delays,
            configured_root: self.configured_root,
            extra_headers: self.extra_headers,
            cookie_name: format!("JSESSIONID.{:08x}", rand::random::<u32>()),
            salt: format!("{:016x}", rand::random::<u64>()),
            instance_hash: format!("{:08x}", rand::random::<u32>()),
        };
        let shared = Arc::new(Shared {
            config,
            addr,
            csrf: AtomicBool::new(self.csrf),
            connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            close_idle: watch::channel(0).0,
            cut_reused: AtomicUsize::new(0),
            cut_any: AtomicUsize::new(0),
            received_bytes: watch::channel(0).0,
            state: Mutex::new(State {
                next_queue_id: 1,
                next_build,
                jobs,
                ..State::default()
            }),
            log: Arc::new(Mutex::new(LogState {
                text: Vec::new(),
                running: true,
                watchers: Vec::new(),
            })),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let server = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stop_rx));
        Ok(MockJenkins {
            shared,
            addr,
            server: Some(server),
            stop: Some(stop_tx),
        })
    }
}

// === impl MockJenkins ===

/// Handle to a running double. Dropping it aborts the server and every connection.
pub struct MockJenkins {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Option<JoinHandle<Vec<String>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl MockJenkins {
    pub fn builder() -> Builder {
        Builder {
            context_path: String::new(),
            passwords: HashMap::new(),
            api_tokens: HashMap::new(),
            csrf: true,
            crumb_field: DEFAULT_CRUMB_FIELD.to_owned(),
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            quiet_period: DEFAULT_QUIET_PERIOD,
            jobs: BTreeSet::from([SAMPLE_JOB.to_owned()]),
            denied: HashSet::new(),
            artifacts: HashMap::new(),
            upload_sink: false,
            delays: HashMap::new(),
            configured_root: None,
            extra_headers: HashMap::new(),
            build_duration: Duration::ZERO,
            plugins: Vec::new(),
            version: JENKINS_VERSION.to_owned(),
            trusted_user_header: None,
            folders: BTreeSet::new(),
            views: BTreeSet::from(["all".to_owned()]),
            agents: BTreeSet::new(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT<context>/`.
    pub fn root_url(&self) -> String {
        format!("http://{}{}/", self.addr, self.shared.config.context)
    }

    /// The context path (`""` or e.g. `"/jenkins"`).
    pub fn context_path(&self) -> &str {
        &self.shared.config.context
    }

    /// Name of the session cookie (`JSESSIONID.<8 hex>`, random per double like per Jenkins
    /// start, behaviour §3.1).
    pub fn cookie_name(&self) -> &str {
        &self.shared.config.cookie_name
    }

    /// The configured crumb field.
    pub fn crumb_field(&self) -> &str {
        &self.shared.config.crumb_field
    }

    /// Every request received, in the order they were answered.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Requests whose full path (context prefix included) equals `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// GETs of `crumbIssuer/api/{json,xml,python}` that reached the double, whatever the answer.
    pub fn crumb_fetches(&self) -> usize {
        self.shared.lock().crumb_fetches
    }

    /// Build triggers of `job` that passed authentication, CSRF and permission checks. Queue
    /// folding does not reduce this count.
    pub fn accepted_triggers(&self, job: &str) -> usize {
        self.shared.lock().triggers.get(job).copied().unwrap_or(0)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// The next `n` requests that arrive on a kept-alive connection which already served one
    /// are received and acted on in full (recorded, a build triggered), and then, instead of
    /// an answer, the connection is closed: Jenkins restarting, or its idle timeout closing
    /// the connection as a request arrives. The client cannot tell whether Jenkins acted.
    pub fn cut_next_reused(&self, n: usize) {
        self.shared.cut_reused.store(n, Ordering::SeqCst);
    }

    /// As [`MockJenkins::cut_next_reused`], for the next `n` requests on any connection, new
    /// ones included.
    pub fn cut_next(&self, n: usize) {
        self.shared.cut_any.store(n, Ordering::SeqCst);
    }

    /// Closes every idle kept-alive connection the way Jetty's idle timeout does (a FIN, no
    /// `Connection: close` before it), and waits until no connection is open. Call it when no
    /// request is in flight.
    pub async fn close_idle_connections(&self) {
        self.shared.close_idle.send_modify(|n| *n += 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.shared.open.load(Ordering::SeqCst) > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} connections still open 5 s after closing idle ones",
                self.shared.open.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Request body bytes received so far, over all requests (including bodies still arriving).
    pub fn received_body_bytes(&self) -> u64 {
        *self.shared.received_bytes.borrow()
    }

    /// Wait until at least `n` request body bytes have arrived in total; lets a test prove
    /// that a proxy forwards the start of a body before the client has sent the rest.
    pub async fn wait_received_body_bytes(&self, n: u64) {
        let mut rx = self.shared.received_bytes.subscribe();
        // The sender lives in `self.shared`, so `wait_for` cannot fail while `self` exists.
        let _ = rx.wait_for(|received| *received >= n).await;
    }

    /// Invalidate every existing session, as after an idle timeout (behaviour §3.2).
    pub fn expire_sessions(&self) {
        self.shared.lock().sessions.clear();
    }

    /// Switch CSRF protection at run time (behaviour §4: 404 issuer, no crumb needed).
    pub fn set_csrf(&self, enabled: bool) {
        self.shared.csrf.store(enabled, Ordering::SeqCst);
    }

    /// Ids of the sessions that are valid now (the cookie value minus `.node0`).
    pub fn valid_session_ids(&self) -> Vec<String> {
        let now = Instant::now();
        let timeout = self.shared.config.session_timeout;
        let mut ids: Vec<String> = self
            .shared
            .lock()
            .sessions
            .iter()
            .filter(|(_, last)| now.duration_since(**last) < timeout)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Every crumb handed out so far, in order, without repeats: by the crumb issuer and
    /// embedded in HTML pages (`data-crumb-value`, behaviour §3.3).
    pub fn issued_crumbs(&self) -> Vec<String> {
        self.shared.lock().issued_crumbs.clone()
    }

    /// The crumb the double expects from `user` in session `session_id` (behaviour §5), for
    /// a version that does not hash the client IP.
    pub fn crumb_for(&self, user: &str, session_id: &str) -> String {
        assert!(
            !self.shared.config.client_ip_crumbs,
            "this double hashes the client IP; use crumb_for_ip"
        );
        self.shared.crumb_for(user, session_id)
    }

    /// The crumb a pre-2.543 double expects from `user` at `ip` in session `session_id`.
    pub fn crumb_for_ip(&self, user: &str, ip: &str, session_id: &str) -> String {
        self.shared.crumb_for_ip(user, ip, session_id)
    }

    /// The jobs that exist now, by name.
    pub fn job_names(&self) -> Vec<String> {
        self.shared.lock().jobs.keys().cloned().collect()
    }

    /// The `config.xml` last posted for `job` (by `createItem` or `config.xml`), if any.
    pub fn job_config(&self, job: &str) -> Option<Bytes> {
        self.shared
            .lock()
            .jobs
            .get(job)
            .and_then(|j| j.config.clone())
    }

    /// The builds of `job` that started from the queue so far, oldest first (queue items
    /// whose quiet period is over are started by this call, as by any request).
    pub fn builds(&self, job: &str) -> Vec<BuildInfo> {
        let now = Instant::now();
        let mut state = self.shared.lock();
        advance_queue(&mut state, now, self.shared.config.build_duration);
        state
            .builds
            .iter()
            .filter(|b| b.job == job)
            .map(|b| BuildInfo {
                job: b.job.clone(),
                number: b.number,
                queue_id: b.queue_id,
                user: b.user.clone(),
                params: b.params.clone(),
                building: b.building(now),
            })
            .collect()
    }

    /// The dangerous actions the double carried out, as `METHOD what` (the script console ran,
    /// a heap dump was handed out, an API token generated …; behaviour §13). A proxy's guard
    /// is tested against a double that answers these, so a refusal is a refusal of something
    /// that would have happened.
    pub fn dangerous(&self) -> Vec<String> {
        self.shared.lock().dangerous.clone()
    }

    /// Requests recorded as unexpected so far (see [`MockJenkins::finish`]).
    pub fn unexpected(&self) -> Vec<String> {
        self.shared.lock().unexpected.clone()
    }

    /// Control of the console log of `sample-job` #1.
    pub fn progressive(&self) -> ProgressiveControl {
        ProgressiveControl {
            log: Arc::clone(&self.shared.log),
        }
    }

    /// Stop at once, as a killed Jenkins does: the listener closes and every connection is
    /// cut, in flight or not. What it recorded stays readable; a new double may be started on
    /// the same address ([`Builder::start_on`]).
    ///
    /// # Panics
    /// If the server or a connection task panicked.
    pub async fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let panics = server.await.expect("the accept loop ends");
            assert!(panics.is_empty(), "mock Jenkins panicked: {panics:?}");
        }
    }

    /// Stop serving and check the run.
    ///
    /// # Panics
    /// If any request was unexpected (unknown route, path outside the context, unplanned
    /// large body), or if the server or a connection task panicked.
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let mut problems = Vec::new();
        if let Some(server) = self.server.take() {
            match server.await {
                Ok(panics) => problems.extend(panics.into_iter().map(|p| format!("panic: {p}"))),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => problems.push(format!("server task: {e}")),
            }
        }
        problems.extend(self.unexpected());
        assert!(
            problems.is_empty(),
            "mock Jenkins saw problems:\n  {}",
            problems.join("\n  ")
        );
    }
}

impl Drop for MockJenkins {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            // Dropping the accept loop's `JoinSet` aborts the connection tasks too.
            server.abort();
        }
    }
}

/// Secrets stay out of `Debug` (STYLE anti-pattern 3), even test ones.
impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("context_path", &self.context_path)
            .field("users", &self.passwords.keys().collect::<Vec<_>>())
            .field("csrf", &self.csrf)
            .field("crumb_field", &self.crumb_field)
            .field("jobs", &self.jobs)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for MockJenkins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockJenkins")
            .field("addr", &self.addr)
            .field("context_path", &self.shared.config.context)
            .finish_non_exhaustive()
    }
}

// === impl ProgressiveControl ===

/// Feeds the running build `sample-job` #1 whose log `logText/progressiveText` serves.
///
/// The build starts running with an empty log. A request made while it runs gets the log from
/// `start` and then every later [`push`](Self::push) as its own body frame, until
/// [`finish`](Self::finish) ends the build and with it every such response.
#[derive(Clone, Debug)]
pub struct ProgressiveControl {
    log: Arc<Mutex<LogState>>,
}

impl ProgressiveControl {
    /// Append `chunk` to the log and send it to every open progressive response.
    pub fn push(&self, chunk: &str) {
        if chunk.is_empty() {
            return;
        }
        let bytes = Bytes::copy_from_slice(chunk.as_bytes());
        let mut log = lock(&self.log);
        log.text.extend_from_slice(&bytes);
        log.watchers.retain(|tx| tx.send(bytes.clone()).is_ok());
    }

    /// The build is complete: open responses end, later ones lack `X-More-Data`.
    pub fn finish(&self) {
        let mut log = lock(&self.log);
        log.running = false;
        log.watchers.clear();
    }

    /// Open progressive responses still waiting for chunks.
    pub fn watchers(&self) -> usize {
        let mut log = lock(&self.log);
        log.watchers.retain(|tx| !tx.is_closed());
        log.watchers.len()
    }

    /// Log size in bytes (what `X-Text-Size` reports).
    pub fn len(&self) -> usize {
        lock(&self.log).text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// === shared state ===

/// What the builder fixed; never changes while serving. No `Debug`: it holds the secrets.
struct Config {
    context: String,
    passwords: HashMap<String, String>,
    api_tokens: HashMap<String, Vec<String>>,
    crumb_field: String,
    session_timeout: Duration,
    quiet_period: Duration,
    build_duration: Duration,
    plugins: Vec<(String, String)>,
    /// `X-Jenkins`.
    version: HeaderValue,
    /// Crumbs hash the client IP (before 2.543).
    client_ip_crumbs: bool,
    /// The `/whoAmI/` page prints the request headers (before 2.219 / 2.204.2).
    echoes_headers: bool,
    trusted_user_header: Option<HeaderName>,
    folders: BTreeSet<String>,
    views: BTreeSet<String>,
    agents: BTreeSet<String>,
    /// The jobs the builder declared. They take any parameters on `buildWithParameters`
    /// (the double's tests rely on that), while jobs created from XML take exactly those
    /// their configuration defines (behaviour §7.2).
    jobs: BTreeSet<String>,
    denied: HashSet<(String, String)>,
    artifacts: HashMap<(String, u32, String), u64>,
    upload_sink: bool,
    delays: HashMap<String, Duration>,
    extra_headers: HashMap<String, Vec<(HeaderName, HeaderValue)>>,
    configured_root: Option<String>,
    cookie_name: String,
    salt: String,
    instance_hash: String,
}

/// State shared by the handle and the connection tasks.
///
/// A std `Mutex` is enough: every critical section is short and synchronous (the request
/// handler computes the whole response under one lock and awaits only afterwards), which
/// is the case mini-redis' `db.rs` gives for preferring it to tokio's.
struct Shared {
    config: Config,
    addr: SocketAddr,
    csrf: AtomicBool,
    connections: AtomicUsize,
    /// Connections open now.
    open: AtomicUsize,
    /// Bumped to make every idle connection close, as Jetty's idle timeout does.
    close_idle: watch::Sender<u64>,
    /// How many of the next requests that arrive on a reused connection are
    /// handled, then answered by closing the connection.
    cut_reused: AtomicUsize,
    /// The same for requests on any connection.
    cut_any: AtomicUsize,
    received_bytes: watch::Sender<u64>,
    state: Mutex<State>,
    log: Arc<Mutex<LogState>>,
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    unexpected: Vec<String>,
    /// Dangerous actions the double carried out ([`MockJenkins::dangerous`]).
    dangerous: Vec<String>,
    /// Session id -> last access (behaviour §3.2: idle timeout refreshed by every request).
    sessions: HashMap<String, Instant>,
    issued_crumbs: Vec<String>,
    crumb_fetches: usize,
    triggers: HashMap<String, usize>,
    queue: Vec<QueueItem>,
    next_queue_id: u64,
    next_build: HashMap<String, u32>,
    /// Every job that exists now: the builder's, and those created since (minus deleted ones).
    jobs: BTreeMap<String, JobState>,
    /// Builds started from the queue, in start order.
    builds: Vec<BuildRecord>,
}

/// A job as it is now.
#[derive(Debug, Default, Clone)]
struct JobState {
    /// The posted `config.xml`; `None` until one is (the default configuration is served).
    config: Option<Bytes>,
}

/// One parameter value of a queue item or build (behaviour §7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    /// A string (or text, or choice) parameter.
    Str { name: String, value: String },
    /// A boolean parameter.
    Bool { name: String, value: bool },
    /// A file parameter: the uploaded part's file name, length and SHA-256 (lowercase hex).
    File {
        name: String,
        file_name: String,
        len: u64,
        sha256: String,
    },
}

impl ParamValue {
    pub fn name(&self) -> &str {
        match self {
            ParamValue::Str { name, .. }
            | ParamValue::Bool { name, .. }
            | ParamValue::File { name, .. } => name,
        }
    }

    /// What the build's console prints for it, and what `$NAME` expands to in an `echo`.
    fn display(&self) -> String {
        match self {
            ParamValue::Str { value, .. } => value.clone(),
            ParamValue::Bool { value, .. } => value.to_string(),
            ParamValue::File {
                file_name,
                len,
                sha256,
                ..
            } => format!("{file_name} ({len} bytes, sha256 {sha256})"),
        }
    }
}

/// A build that left the queue (behaviour §7.3: the queue item's `executable`).
#[derive(Debug, Clone)]
struct BuildRecord {
    job: String,
    number: u32,
    queue_id: u64,
    user: String,
    params: Vec<ParamValue>,
    started: Instant,
    started_ms: u64,
    duration: Duration,
    /// The raw console log as it is once the build is complete, hidden console notes
    /// included; while it runs the last line is missing.
    log: Vec<u8>,
    /// Its job was deleted (and with it the build); kept for [`MockJenkins::builds`].
    deleted: bool,
}

impl BuildRecord {
    fn building(&self, now: Instant) -> bool {
        now < self.started + self.duration
    }

    /// The raw log at `now` (what `X-Text-Size` counts).
    fn raw_log(&self, now: Instant) -> &[u8] {
        if self.building(now) {
            let last = format!("{FINISHED_SUCCESS}\n");
            &self.log[..self.log.len() - last.len()]
        } else {
            &self.log
        }
    }
}

/// What a test can see of a build: [`MockJenkins::builds`].
#[derive(Debug, Clone)]
pub struct BuildInfo {
    pub job: String,
    pub number: u32,
    pub queue_id: u64,
    pub user: String,
    pub params: Vec<ParamValue>,
    pub building: bool,
}

#[derive(Debug)]
struct QueueItem {
    id: u64,
    job: String,
    /// Parameters that make two triggers equivalent; `None` for `/build`, a never-equal key
    /// for multipart uploads (file parameters).
    params: Option<String>,
    user: String,
    since_ms: u64,
    due: Instant,
    /// Build number once the item has left the queue.
    started: Option<u32>,
    /// The parameter values the build will get.
    values: Vec<ParamValue>,
}

#[derive(Debug)]
struct LogState {
    text: Vec<u8>,
    running: bool,
    /// One sender per open progressive response. Unbounded because `push` is synchronous;
    /// the test that calls `push` bounds what goes through.
    watchers: Vec<mpsc::UnboundedSender<Bytes>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere is reported by `finish`; keep serving so that it can be.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Behaviour §5: `lowercase_hex(SHA-256("<user>;<sessionId>" || salt))` since 2.543.
    fn crumb_for(&self, user: &str, session_id: &str) -> String {
        self.crumb_with(&format!("{user};{session_id}"))
    }

    /// Behaviour §5, 2.190 to 2.542: `"<user>;<clientIP>;<sessionId>"`.
    fn crumb_for_ip(&self, user: &str, ip: &str, session_id: &str) -> String {
        self.crumb_with(&format!("{user};{ip};{session_id}"))
    }

    fn crumb_with(&self, hashed: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(hashed.as_bytes());
        hasher.update(self.config.salt.as_bytes());
        hex(&hasher.finalize())
    }

    fn cookie_path(&self) -> &str {
        if self.config.context.is_empty() {
            "/"
        } else {
            &self.config.context
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

// === server ===

/// Accept loop: one task per connection, all in a `JoinSet` so that aborting this task (on
/// drop) aborts them. Returns the panic messages of connection tasks.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) -> Vec<String> {
    let mut connections = JoinSet::new();
    let mut panics = Vec::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let index = shared.connections.fetch_add(1, Ordering::SeqCst);
                    connections.spawn(serve_connection(stream, peer, Arc::clone(&shared), index));
                }
                Err(error) => {
                    // As axum's listener does: never leave the loop; back off on e.g. EMFILE.
                    tracing::warn!(%error, "mock jenkins accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = connections.join_next() => collect_panic(done, &mut panics),
        }
    }
    connections.abort_all();
    while let Some(done) = connections.join_next().await {
        collect_panic(done, &mut panics);
    }
    panics
}

fn collect_panic(done: Result<(), tokio::task::JoinError>, panics: &mut Vec<String>) {
    if let Err(e) = done {
        if e.is_panic() {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            panics.push(message);
        }
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    index: usize,
) {
    shared.open.fetch_add(1, Ordering::SeqCst);
    let mut close_idle = shared.close_idle.subscribe();
    let cut = Arc::new(tokio::sync::Notify::new());
    let service = {
        let shared = Arc::clone(&shared);
        let cut = Arc::clone(&cut);
        let served = Arc::new(AtomicUsize::new(0));
        service_fn(move |req| {
            let reused = served.fetch_add(1, Ordering::SeqCst) > 0;
            let take = |count: &AtomicUsize| {
                count
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            };
            let cutting = (reused && take(&shared.cut_reused)) || take(&shared.cut_any);
            let answer = serve_request(Arc::clone(&shared), index, peer, req);
            let cut = Arc::clone(&cut);
            async move {
                let resp = answer.await;
                if cutting {
                    drop(resp);
                    cut.notify_one();
                    return std::future::pending().await;
                }
                resp
            }
        })
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = cut.notified() => Ok(()),
        _ = close_idle.changed() => {
            // Closes at once when idle, after the response otherwise.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    shared.open.fetch_sub(1, Ordering::SeqCst);
    if let Err(error) = result {
        tracing::debug!(%error, connection = index, "mock jenkins connection ended with error");
    }
}

/// A request body as received: counted and digested in full, kept up to [`RECORD_CAP`].
#[derive(Debug)]
struct Received {
    head: Bytes,
    len: u64,
    digest: u64,
    complete: bool,
}

async fn receive(mut body: Incoming, shared: &Shared) -> Received {
    let mut head = BytesMut::new();
    let mut len = 0u64;
    let mut digest = Fnv1a64::new();
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            complete = false;
            break;
        };
        if let Ok(data) = frame.into_data() {
            let room = RECORD_CAP.saturating_sub(head.len());
            head.extend_from_slice(&data[..room.min(data.len())]);
            digest.update(&data);
            len += data.len() as u64;
            shared
                .received_bytes
                .send_modify(|n| *n += data.len() as u64);
        }
    }
    Received {
        head: head.freeze(),
        len,
        digest: digest.finish(),
        complete,
    }
}

async fn serve_request(
    shared: Arc<Shared>,
    connection: usize,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let received = receive(body, &shared).await;
    let mut ex = Exchange::new(&shared, &parts, &received, peer);
    let mut response = ex.respond();
    let path = parts.uri.path();
    if let Some(extra) = shared.config.extra_headers.get(path) {
        for (name, value) in extra {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    tracing::info!(
        method = %parts.method,
        path,
        status = response.status().as_u16(),
        user = ex.user.as_deref().unwrap_or("anonymous"),
        via_api_token = ex.via_api_token,
        "mock jenkins request"
    );
    let record = Recorded {
        method: parts.method.clone(),
        path: path.to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: received.head.clone(),
        body_len: received.len,
        body_digest: received.digest,
        status: response.status(),
        user: ex.user.take(),
        via_api_token: ex.via_api_token,
        connection,
        session: ex.session.clone(),
    };
    {
        let mut state = shared.lock();
        if let Some(reason) = ex.unexpected.take() {
            state
                .unexpected
                .push(format!("{} {}: {reason}", parts.method, parts.uri));
        }
        state.requests.push(record);
    }
    if let Some(delay) = shared.config.delays.get(path) {
        tokio::time::sleep(*delay).await;
    }
    Ok(response)
}

// === request handling ===

/// One request on its way through the emulated filter chain (behaviour §6: authentication,
/// then the CSRF filter, then Stapler dispatch).
struct Exchange<'a> {
    shared: &'a Shared,
    parts: &'a Parts,
    body: &'a Received,
    /// The TCP peer.
    peer: SocketAddr,
    now: Instant,
    /// Valid session presented by the client, or created while answering.
    session: Option<String>,
    /// The session was created by this request: the response carries `Set-Cookie`.
    new_session: bool,
    user: Option<String>,
    via_api_token: bool,
    unexpected: Option<String>,
}

impl<'a> Exchange<'a> {
    fn new(shared: &'a Shared, parts: &'a Parts, body: &'a Received, peer: SocketAddr) -> Self {
        Self {
            shared,
            parts,
            body,
            peer,
            now: Instant::now(),
            session: None,
            new_session: false,
            user: None,
            via_api_token: false,
            unexpected: None,
        }
    }

    fn respond(&mut self) -> Response<MockBody> {
        let mut response = self.respond_inner();
        let headers = response.headers_mut();
        // Behaviour §2: `HudsonFilter` sets it on every response.
        headers.insert(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        );
        if self.new_session {
            if let Some(id) = &self.session {
                // Behaviour §3.1.
                let cookie = format!(
                    "{}={id}.node0; Path={}; HttpOnly",
                    self.shared.config.cookie_name,
                    self.shared.cookie_path()
                );
                headers.append(header::SET_COOKIE, value(cookie));
                headers.insert(
                    header::EXPIRES,
                    HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
                );
            }
        }
        response
    }

    fn respond_inner(&mut self) -> Response<MockBody> {
        let config = &self.shared.config;
        if !self.body.complete {
            return jetty_error(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                self.parts.uri.path(),
            );
        }
        if self.body.len > RECORD_CAP as u64 && !config.upload_sink {
            self.unexpected = Some(format!(
                "request body of {} bytes exceeds the record cap; call Builder::upload_sink() if intended",
                self.body.len
            ));
        }
        let full_path = self.parts.uri.path();
        let Some(rel) = strip_context(full_path, &config.context) else {
            self.unexpected = Some("outside the context path".to_owned());
            return jetty_error(StatusCode::NOT_FOUND, "Not Found", full_path);
        };
        let segments = jetty_segments(rel);
        let route = self.bind(&segments);
        if self.parts.method == Method::GET && matches!(route, Route::CrumbIssuer(_)) {
            // Counted whatever the answer (401, 403, 404): it reached Jenkins.
            self.shared.lock().crumb_fetches += 1;
        }

        // Jetty looks up (and so refreshes) the requested session first (behaviour §3.2).
        self.session = self.find_session();

        // Authentication filter (behaviour §2).
        match self.authenticate() {
            Ok(()) => {}
            Err(()) => return self.unauthorized(),
        }

        // CSRF filter (behaviour §6): before dispatch, so even unknown URLs get the crumb 403.
        if self.parts.method == Method::POST
            && self.shared.csrf.load(Ordering::SeqCst)
            && !self.via_api_token
            && !matches!(segments.first().map(String::as_str), Some("cli"))
            && !self.crumb_is_valid()
        {
            let mut response = jetty_error(
                StatusCode::FORBIDDEN,
                CRUMB_REJECTION,
                self.parts.uri.path(),
            );
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("must-revalidate,no-cache,no-store"),
            );
            return response;
        }

        // Overall/Read is needed for everything but `whoAmI` (behaviour §2).
        if self.user.is_none() && !matches!(route, Route::WhoAmI | Route::WhoAmIPage) {
            return self.anonymous_denied();
        }
        // Bound again now that the user is known (`/me`).
        let route = self.bind(&segments);
        self.dispatch(route)
    }

    fn find_session(&self) -> Option<String> {
        let name = &self.shared.config.cookie_name;
        let timeout = self.shared.config.session_timeout;
        let mut state = self.shared.lock();
        let now = self.now;
        state
            .sessions
            .retain(|_, last| now.duration_since(*last) < timeout);
        let ids: Vec<String> = self
            .parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.split('.').next().unwrap_or(v).to_owned())
            .collect();
        let id = ids.into_iter().find(|id| state.sessions.contains_key(id))?;
        state.sessions.insert(id.clone(), now);
        Some(id)
    }

    /// `request.getSession()`: the current session, or a new one.
    fn ensure_session(&mut self) -> String {
        if let Some(id) = &self.session {
            return id.clone();
        }
        let id = new_session_id();
        self.shared.lock().sessions.insert(id.clone(), self.now);
        self.session = Some(id.clone());
        self.new_session = true;
        id
    }

    /// Behaviour §2: only `Basic`; token first, then password. `Err` means 401. A header the
    /// double was told to trust (a header-based realm, behaviour §13) wins over all of it.
    fn authenticate(&mut self) -> Result<(), ()> {
        if let Some(name) = &self.shared.config.trusted_user_header {
            if let Some(user) = self.parts.headers.get(name).and_then(|v| v.to_str().ok()) {
                self.user = Some(user.to_owned());
                return Ok(());
            }
        }
        let Some(value) = self.parts.headers.get(header::AUTHORIZATION) else {
            return Ok(());
        };
        let Ok(value) = value.to_str() else {
            return Err(());
        };
        let value = value.trim();
        let is_basic = value.len() >= 6 && value[..6].eq_ignore_ascii_case("basic ");
        if !is_basic {
            // Other schemes are ignored: the request stays anonymous.
            return Ok(());
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value[6..].trim())
            .map_err(|_| ())?;
        let decoded = String::from_utf8(decoded).map_err(|_| ())?;
        let (name, secret) = decoded.split_once(':').ok_or(())?;
        let config = &self.shared.config;
        let token_ok = config
            .api_tokens
            .get(name)
            .is_some_and(|tokens| tokens.iter().any(|t| t == secret));
        if token_ok {
            self.user = Some(name.to_owned());
            self.via_api_token = true;
            return Ok(());
        }
        if config.passwords.get(name).is_some_and(|p| p == secret) {
            self.user = Some(name.to_owned());
            return Ok(());
        }
        Err(())
    }

    /// `BasicAuthenticationEntryPoint` plus remember-me `loginFail` (behaviour §2).
    fn unauthorized(&self) -> Response<MockBody> {
        let mut response = jetty_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            self.parts.uri.path(),
        );
        let headers = response.headers_mut();
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Jenkins\""),
        );
        headers.append(
            header::SET_COOKIE,
            value(format!(
                "remember-me=; Max-Age=0; Expires=Thu, 01-Jan-1970 00:00:00 GMT; Path={}; HttpOnly",
                self.shared.cookie_path()
            )),
        );
        response
    }

    /// Behaviour §6: header (case-insensitive name), else query parameter, else urlencoded
    /// form parameter; never multipart. A presented crumb is validated against the current
    /// session, creating one if there is none (behaviour §3.3 item 2).
    fn crumb_is_valid(&mut self) -> bool {
        let field = self.shared.config.crumb_field.clone();
        let from_header = HeaderName::try_from(field.as_str())
            .ok()
            .and_then(|name| self.parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let presented = from_header
            .or_else(|| param(self.parts.uri.query().unwrap_or(""), &field))
            .or_else(|| {
                is_form(&self.parts.headers)
                    .then(|| param(&String::from_utf8_lossy(&self.body.head), &field))
                    .flatten()
            });
        // The legacy `.crumb` lookup's result is discarded by `CrumbFilter` (behaviour §6),
        // so it is not looked up here at all.
        let Some(presented) = presented else {
            return false;
        };
        let session = self.ensure_session();
        let user = self.user.clone().unwrap_or_else(|| "anonymous".to_owned());
        presented == self.expected_crumb(&user, &session)
    }

    /// The crumb of `user` in `session` for this request: before 2.543 it also hashes the
    /// client IP, the first element of `X-Forwarded-For` split on `,` and not trimmed, else
    /// the peer address (`DefaultCrumbIssuer.getClientIP`, behaviour §5).
    fn expected_crumb(&self, user: &str, session: &str) -> String {
        if !self.shared.config.client_ip_crumbs {
            return self.shared.crumb_for(user, session);
        }
        let ip = self
            .parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or(v).to_owned())
            .unwrap_or_else(|| self.peer.ip().to_string());
        self.shared.crumb_for_ip(user, &ip, session)
    }

    /// `HudsonAuthenticationEntryPoint` (behaviour §2), with its request-cache session.
    fn anonymous_denied(&mut self) -> Response<MockBody> {
        self.ensure_session();
        let xhr = self
            .parts
            .headers
            .get("x-requested-with")
            .is_some_and(|v| v == "XMLHttpRequest");
        if xhr {
            return jetty_error(StatusCode::FORBIDDEN, "Forbidden", self.parts.uri.path());
        }
        let mut from = self.parts.uri.path().to_owned();
        if let Some(q) = self.parts.uri.query().filter(|q| !q.is_empty()) {
            from.push('?');
            from.push_str(q);
        }
        let login = format!(
            "{}/login?from={}",
            self.shared.config.context,
            url_encode(&from)
        );
        let mut body = format!(
            "<html><head><meta http-equiv='refresh' content='1;url={login}'/>\
             <script>window.location.replace('{login}');</script></head>\
             <body style='background-color:white; color:white;'>\n\n\n\
             Authentication required\n<!--\n"
        );
        body.push_str(&permission_report("anonymous", &["anonymous"], READ_CHAIN));
        body.push_str("-->\n\n</body></html>");
        body.push_str(&" ".repeat(300));
        let mut response = html(StatusCode::FORBIDDEN, "text/html;charset=UTF-8", body);
        self.advertise(response.headers_mut());
        report_as_headers(response.headers_mut(), "anonymous", READ_CHAIN);
        response
    }

    /// `Functions.advertiseHeaders`.
    fn advertise(&self, headers: &mut HeaderMap) {
        headers.insert("x-hudson", HeaderValue::from_static("1.395"));
        headers.insert("x-jenkins", self.shared.config.version.clone());
        headers.insert(
            "x-jenkins-session",
            value(self.shared.config.instance_hash.clone()),
        );
    }

    /// `Api.setHeaders` (behaviour §4).
    fn api_headers(&self, headers: &mut HeaderMap) {
        self.advertise(headers);
        headers.insert("x-frame-options", HeaderValue::from_static("deny"));
    }

    /// `scheme://host[:port]` as Jetty sees the request, honouring `X-Forwarded-*`
    /// (behaviour §7.1, §7.7).
    fn request_base(&self) -> String {
        let headers = &self.parts.headers;
        let first = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let scheme = first("x-forwarded-proto").unwrap_or_else(|| "http".to_owned());
        let mut host = first("x-forwarded-host")
            .or_else(|| first("host"))
            .unwrap_or_else(|| self.shared.addr.to_string());
        if let Some(port) = first("x-forwarded-port") {
            let bare = match host.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h.to_owned(),
                _ => host.clone(),
            };
            let default =
                (scheme == "http" && port == "80") || (scheme == "https" && port == "443");
            host = if default {
                bare
            } else {
                format!("{bare}:{port}")
            };
        }
        format!("{scheme}://{host}")
    }

    /// `Jenkins.getRootUrl()` derived from the request (no configured root URL).
    fn root_url(&self) -> String {
        match &self.shared.config.configured_root {
            Some(root) => root.clone(),
            None => format!("{}{}/", self.request_base(), self.shared.config.context),
        }
    }

    fn query(&self) -> &str {
        self.parts.uri.query().unwrap_or("")
    }

    fn pretty(&self) -> bool {
        param(self.query(), "pretty").as_deref() == Some("true")
    }

    fn is_read(&self) -> bool {
        self.parts.method == Method::GET || self.parts.method == Method::HEAD
    }

    fn json(&self, value: &Json) -> Response<MockBody> {
        self.api(value, ApiFlavour::Json)
    }

    /// An exported object as `api/json` or `api/python` writes it: `tree=` applied
    /// (behaviour §7.7), compact or `pretty=true`, `None`/`True`/`False` in Python.
    fn api(&self, value: &Json, flavour: ApiFlavour) -> Response<MockBody> {
        let pruned;
        let value = match param(self.query(), "tree") {
            Some(tree) => {
                pruned = value.prune(&parse_tree(&tree));
                &pruned
            }
            None => value,
        };
        let python = flavour == ApiFlavour::Python;
        let text = value.write(self.pretty(), python);
        let content_type = if python {
            "text/x-python;charset=UTF-8"
        } else {
            "application/json;charset=UTF-8"
        };
        let mut response = full(StatusCode::OK, content_type, text);
        self.api_headers(response.headers_mut());
        response
    }

    /// A request parameter as the servlet sees it: the query string, then an urlencoded body
    /// (never a multipart one, behaviour §6).
    fn request_param(&self, name: &str) -> Option<String> {
        param(self.query(), name).or_else(|| {
            is_form(&self.parts.headers)
                .then(|| param(&String::from_utf8_lossy(&self.body.head), name))
                .flatten()
        })
    }

    fn job_exists(&self, name: &str) -> bool {
        self.shared.lock().jobs.contains_key(name)
    }

    fn dispatch(&mut self, route: Route) -> Response<MockBody> {
        match route {
            Route::Dashboard => self.dashboard(),
            Route::RootApi(flavour) => self.root_api(flavour),
            Route::CreateItem => self.create_item(),
            Route::CrumbIssuer(flavour) => self.crumb_issuer(flavour),
            Route::WhoAmI => self.who_am_i(),
            Route::WhoAmIPage => self.who_am_i_page(),
            Route::Me(flavour) => self.me(flavour),
            Route::PluginManager(flavour) => {
                if self.shared.config.plugins.is_empty() {
                    self.unexpected = Some("no plugins configured in the mock".to_owned());
                    return self.not_found();
                }
                self.plugin_manager(flavour)
            }
            Route::QueueItem(id, flavour) => self.queue_item(id, flavour),
            Route::QueueItemPage(_) | Route::NotFound => self.not_found(),
            Route::Dangerous(what) => self.dangerous(&what),
            Route::Page(title) => self.layout_page(StatusCode::OK, title, "<h1>Jenkins</h1>"),
            Route::UserApi(name) => self.user_api(&name),
            Route::ComputerApi(name) => self.computer_api(&name),
            // Unknown views are a normal answer, like unknown jobs.
            Route::ViewApi { name, flavour } if name == "all" => self.all_view(flavour),
            Route::ViewApi { .. } => self.not_found(),
            Route::Job { name, rest } => {
                if !self.job_exists(&name) {
                    // Unknown jobs are a normal answer, not a test failure.
                    return self.not_found();
                }
                self.job(&name, rest)
            }
            Route::Unknown => {
                self.unexpected = Some("no such route in the mock".to_owned());
                self.not_found()
            }
        }
    }

    fn job(&mut self, name: &str, rest: JobRoute) -> Response<MockBody> {
        match rest {
            JobRoute::Api(flavour) => self.job_api(name, flavour),
            JobRoute::Build => self.trigger(name, false),
            JobRoute::BuildWithParameters => self.trigger(name, true),
            JobRoute::ConfigXml => self.config_xml(name),
            JobRoute::DoDelete => self.do_delete(name),
            JobRoute::Artifact { build, path } => self.artifact(name, build, &path),
            JobRoute::ProgressiveText {
                build: BuildRef::Number(PROGRESSIVE_BUILD),
            } if name == SAMPLE_JOB => self.progressive_text(name, PROGRESSIVE_BUILD),
            JobRoute::ProgressiveText { build } => self.build_progressive_text(name, &build),
            JobRoute::BuildApi { build, flavour } => self.build_api(name, &build, flavour),
            JobRoute::ConsoleText { build } => self.console_text(name, &build),
            JobRoute::Unknown => {
                self.unexpected = Some("no such job route in the mock".to_owned());
                self.not_found()
            }
        }
    }

    // --- pages ---

    /// A full Jelly layout page: it forces a session and embeds the crumb (behaviour §3.3).
    fn layout_page(&mut self, status: StatusCode, title: &str, main: &str) -> Response<MockBody> {
        let session = self.ensure_session();
        let crumb_attrs = if self.shared.csrf.load(Ordering::SeqCst) {
            let user = self.user.clone().unwrap_or_else(|| "anonymous".to_owned());
            let crumb = self.expected_crumb(&user, &session);
            self.remember_crumb(&crumb);
            format!(
                " data-crumb-header=\"{}\" data-crumb-value=\"{crumb}\"",
                self.shared.config.crumb_field
            )
        } else {
            String::new()
        };
        let ctx = &self.shared.config.context;
        let body = format!(
            "<!DOCTYPE html><html><head data-rooturl=\"{ctx}\"{crumb_attrs}>\
             <title>{title} - Jenkins</title></head>\
             <body id=\"jenkins\"><div id=\"main-panel\">{main}</div></body></html>"
        );
        let mut response = html(status, "text/html;charset=utf-8", body);
        self.advertise(response.headers_mut());
        response
    }

    /// Jenkins' `_404.jelly`.
    fn not_found(&mut self) -> Response<MockBody> {
        self.layout_page(
            StatusCode::NOT_FOUND,
            "Not Found",
            "<h1>Oops!</h1><p>This page may not exist, or you may not have permission to see it.</p>",
        )
    }

    /// `requirePOST.jelly` (behaviour §7.1).
    fn require_post(&mut self) -> Response<MockBody> {
        let uri = escape_html(&self.parts.uri.to_string());
        let mut response = self.layout_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "This URL requires POST",
            &format!(
                "<h1>This URL requires POST</h1><p>The URL you're trying to access requires that \
                 requests be sent using POST (like a form submission). The button below allows \
                 you to retry accessing this URL using POST.</p><p>URL being accessed: \
                 <code>{uri}</code></p><form method=\"POST\"><input type=\"submit\" \
                 value=\"Retry using POST\"/></form>"
            ),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        response
    }

    /// `AccessDeniedHandlerImpl` for Item/Build (behaviour §2). Kept free of any crumb so
    /// that a proxy cannot mistake it for a crumb rejection.
    fn access_denied(&self, user: &str) -> Response<MockBody> {
        let report = permission_report(user, &["authenticated"], BUILD_CHAIN);
        let body = format!(
            "<!DOCTYPE html><html><head><title>Access Denied - Jenkins</title></head>\
             <body id=\"jenkins\"><div id=\"main-panel\"><h1>Access Denied</h1>\
             <p>{} is missing the Job/Build permission</p><!--\n{}--></div></body></html>",
            escape_html(user),
            escape_html(&report)
        );
        let mut response = html(StatusCode::FORBIDDEN, "text/html;charset=utf-8", body);
        self.advertise(response.headers_mut());
        report_as_headers(response.headers_mut(), user, BUILD_CHAIN);
        response
    }

    fn remember_crumb(&self, crumb: &str) {
        register_secret(crumb);
        let mut state = self.shared.lock();
        if !state.issued_crumbs.iter().any(|c| c == crumb) {
            state.issued_crumbs.push(crumb.to_owned());
        }
    }

    // --- routes ---

    /// Behaviour §4 and §5.
    fn crumb_issuer(&mut self, flavour: ApiFlavour) -> Response<MockBody> {
        if !self.shared.csrf.load(Ordering::SeqCst) {
            return self.not_found();
        }
        let session = self.ensure_session();
        let user = self.user.clone().unwrap_or_else(|| "anonymous".to_owned());
        let crumb = self.expected_crumb(&user, &session);
        self.remember_crumb(&crumb);
        let field = self.shared.config.crumb_field.clone();
        let object = Json::Obj(vec![
            (
                "_class",
                Json::str("hudson.security.csrf.DefaultCrumbIssuer"),
            ),
            ("crumb", Json::str(&crumb)),
            ("crumbRequestField", Json::str(&field)),
        ]);
        let mut response = match flavour {
            ApiFlavour::Json => return self.json(&object),
            // Stapler's Python writer prints this object exactly like compact JSON.
            ApiFlavour::Python => full(
                StatusCode::OK,
                "text/x-python;charset=UTF-8",
                object.compact(),
            ),
            ApiFlavour::Xml => self.crumb_xml(&crumb, &field),
        };
        self.api_headers(response.headers_mut());
        response
    }

    /// `api/xml`, with the four special-cased `xpath=` expressions of behaviour §4.
    fn crumb_xml(&self, crumb: &str, field: &str) -> Response<MockBody> {
        let Some(xpath) = param(self.parts.uri.query().unwrap_or(""), "xpath") else {
            let xml = format!(
                "<defaultCrumbIssuer _class='hudson.security.csrf.DefaultCrumbIssuer'>\
                 <crumb>{crumb}</crumb><crumbRequestField>{}</crumbRequestField>\
                 </defaultCrumbIssuer>",
                escape_html(field)
            );
            return full(StatusCode::OK, "application/xml;charset=UTF-8", xml);
        };
        let text = match xpath.as_str() {
            "/*/crumbRequestField/text()" => field.to_owned(),
            "/*/crumb/text()" => crumb.to_owned(),
            "concat(//crumbRequestField,\":\",//crumb)" => format!("{field}:{crumb}"),
            "concat(//crumbRequestField,'=',//crumb)"
                if field.starts_with('.') || field.contains('-') =>
            {
                format!("{field}={crumb}")
            }
            // Simplification: every other expression is treated as a primitive result.
            _ => return full(
                StatusCode::FORBIDDEN,
                "text/plain;charset=UTF-8",
                "primitive XPath result sets forbidden; implement jenkins.security.SecureRequester"
                    .to_owned(),
            ),
        };
        full(StatusCode::OK, "text/plain;charset=UTF-8", text)
    }

    /// Jenkins' dashboard: a full layout page (behaviour §3.3).
    fn dashboard(&mut self) -> Response<MockBody> {
        self.layout_page(StatusCode::OK, "Dashboard", "<h1>Welcome to Jenkins!</h1>")
    }

    /// Behaviour §7.7.
    fn root_api(&mut self, flavour: ApiFlavour) -> Response<MockBody> {
        let root = self.root_url();
        let all_view = || {
            Json::Obj(vec![
                ("_class", Json::str("hudson.model.AllView")),
                ("name", Json::str("all")),
                ("url", Json::str(&root)),
            ])
        };
        let names = self.shared.lock().jobs.keys().cloned().collect::<Vec<_>>();
        let jobs = names
            .iter()
            .filter_map(|name| self.job_view(name))
            .map(|view| self.job_summary(&view))
            .collect();
        let object = Json::Obj(vec![
            ("_class", Json::str("hudson.model.Hudson")),
            (
                "assignedLabels",
                Json::Arr(vec![Json::Obj(vec![("name", Json::str("built-in"))])]),
            ),
            ("mode", Json::str("NORMAL")),
            (
                "nodeDescription",
                Json::str("the Jenkins controller's built-in node"),
            ),
            ("nodeName", Json::str("")),
            ("numExecutors", Json::Num(2)),
            ("description", Json::Null),
            ("jobs", Json::Arr(jobs)),
            ("overallLoad", Json::Obj(vec![])),
            ("primaryView", all_view()),
            ("quietDownReason", Json::Null),
            ("quietingDown", Json::Bool(false)),
            ("slaveAgentPort", Json::Num(-1)),
            (
                "unlabeledLoad",
                Json::Obj(vec![(
                    "_class",
                    Json::str("jenkins.model.UnlabeledLoadStatistics"),
                )]),
            ),
            // The configured root URL, null when none is (behaviour §7.7).
            (
                "url",
                self.shared
                    .config
                    .configured_root
                    .as_deref()
                    .map_or(Json::Null, Json::str),
            ),
            (
                "useCrumbs",
                Json::Bool(self.shared.csrf.load(Ordering::SeqCst)),
            ),
            ("useSecurity", Json::Bool(true)),
            ("views", Json::Arr(vec![all_view()])),
        ]);
        self.api(&object, flavour)
    }

    /// `view/all/api/json`: the `AllView`, every job in it.
    fn all_view(&mut self, flavour: ApiFlavour) -> Response<MockBody> {
        let names = self.shared.lock().jobs.keys().cloned().collect::<Vec<_>>();
        let jobs = names
            .iter()
            .filter_map(|name| self.job_view(name))
            .map(|view| self.job_summary(&view))
            .collect();
        let object = Json::Obj(vec![
            ("_class", Json::str("hudson.model.AllView")),
            ("description", Json::Null),
            ("jobs", Json::Arr(jobs)),
            ("name", Json::str("all")),
            ("property", Json::Arr(vec![])),
            ("url", Json::str(&self.root_url())),
        ]);
        self.api(&object, flavour)
    }

    /// Everything the API shows of one job, read under one lock.
    fn job_view(&self, name: &str) -> Option<JobView> {
        let mut state = self.shared.lock();
        advance_queue(&mut state, self.now, self.shared.config.build_duration);
        let job = state.jobs.get(name)?;
        let config = job.config.as_ref().map_or_else(
            || DEFAULT_CONFIG.to_owned(),
            |c| String::from_utf8_lossy(c).into_owned(),
        );
        let mut builds: Vec<(u32, bool)> = state
            .builds
            .iter()
            .filter(|b| b.job == name && !b.deleted)
            .map(|b| (b.number, b.building(self.now)))
            .collect();
        builds.sort_by_key(|b| std::cmp::Reverse(b.0));
        let waiting = state
            .queue
            .iter()
            .find(|i| i.job == name && i.started.is_none())
            .map(|i| (i.id, i.since_ms, i.due));
        let next_build = state.next_build.get(name).copied().unwrap_or(1);
        Some(JobView {
            name: name.to_owned(),
            declared: self.shared.config.jobs.contains(name),
            config,
            builds,
            waiting,
            next_build,
        })
    }

    fn job_summary(&self, view: &JobView) -> Json {
        Json::Obj(vec![
            ("_class", Json::str("hudson.model.FreeStyleProject")),
            ("name", Json::str(&view.name)),
            ("url", Json::str(&self.job_url(&view.name))),
            ("color", Json::str(view.color())),
        ])
    }

    /// `…/job/F/job/J/` for the job `F/J` in folder `F`.
    fn job_url(&self, name: &str) -> String {
        let mut url = self.root_url();
        for part in name.split('/') {
            let _ = write!(url, "job/{}/", url_encode(part));
        }
        url
    }

    fn build_url(&self, job: &str, number: u32) -> String {
        format!("{}{number}/", self.job_url(job))
    }

    /// `{_class, number, url}`: a build as other objects show it at depth 0.
    fn build_summary(&self, job: &str, number: u32) -> Json {
        Json::Obj(vec![
            ("_class", Json::str("hudson.model.FreeStyleBuild")),
            ("number", Json::Num(i64::from(number))),
            ("url", Json::str(&self.build_url(job, number))),
        ])
    }

    /// A `FreeStyleProject` as `job/NAME/api/json` writes it at depth 0.
    fn job_api(&mut self, name: &str, flavour: ApiFlavour) -> Response<MockBody> {
        let Some(view) = self.job_view(name) else {
            return self.not_found();
        };
        let defs = param_defs(&view.config);
        let disabled = view.disabled();
        let summary = |n: Option<u32>| n.map_or(Json::Null, |n| self.build_summary(name, n));
        let completed = || {
            view.builds
                .iter()
                .find(|(_, building)| !building)
                .map(|b| b.0)
        };
        let definitions = (!defs.is_empty()).then(|| parameters_definition_property(&defs));
        let mut actions: Vec<Json> = definitions.iter().cloned().collect();
        actions.push(Json::Obj(vec![]));
        let queue_item = view.waiting.map_or(Json::Null, |(id, since_ms, due)| {
            Json::Obj(vec![
                ("_class", Json::str("hudson.model.Queue$WaitingItem")),
                ("blocked", Json::Bool(false)),
                ("buildable", Json::Bool(false)),
                ("id", Json::Num(id as i64)),
                ("inQueueSince", Json::Num(since_ms as i64)),
                ("params", Json::str("")),
                ("stuck", Json::Bool(false)),
                ("url", Json::str(&format!("queue/item/{id}/"))),
                ("why", Json::str(&quiet_period_why(due, self.now))),
                ("timestamp", Json::Num(since_ms as i64)),
            ])
        });
        let description = xml_texts(&view.config, "description")
            .into_iter()
            .next()
            .unwrap_or_default();
        let object = Json::Obj(vec![
            ("_class", Json::str("hudson.model.FreeStyleProject")),
            ("actions", Json::Arr(actions)),
            ("description", Json::Str(description)),
            ("displayName", Json::str(name)),
            ("displayNameOrNull", Json::Null),
            ("fullDisplayName", Json::str(name)),
            ("fullName", Json::str(name)),
            ("name", Json::str(name)),
            ("url", Json::str(&self.job_url(name))),
            ("buildable", Json::Bool(!disabled)),
            (
                "builds",
                Json::Arr(
                    view.builds
                        .iter()
                        .map(|(n, _)| self.build_summary(name, *n))
                        .collect(),
                ),
            ),
            ("color", Json::str(view.color())),
            ("firstBuild", summary(view.builds.last().map(|b| b.0))),
            ("healthReport", Json::Arr(vec![])),
            ("inQueue", Json::Bool(view.waiting.is_some())),
            ("keepDependencies", Json::Bool(false)),
            ("lastBuild", summary(view.builds.first().map(|b| b.0))),
            ("lastCompletedBuild", summary(completed())),
            ("lastFailedBuild", Json::Null),
            ("lastStableBuild", summary(completed())),
            ("lastSuccessfulBuild", summary(completed())),
            ("lastUnstableBuild", Json::Null),
            ("lastUnsuccessfulBuild", Json::Null),
            ("nextBuildNumber", Json::Num(i64::from(view.next_build))),
            ("property", Json::Arr(definitions.into_iter().collect())),
            ("queueItem", queue_item),
            ("concurrentBuild", Json::Bool(false)),
            ("disabled", Json::Bool(disabled)),
            ("downstreamProjects", Json::Arr(vec![])),
            ("labelExpression", Json::Null),
            (
                "scm",
                Json::Obj(vec![("_class", Json::str("hudson.scm.NullSCM"))]),
            ),
            ("upstreamProjects", Json::Arr(vec![])),
        ]);
        self.api(&object, flavour)
    }

    fn who_am_i(&mut self) -> Response<MockBody> {
        let (name, anonymous) = match &self.user {
            Some(user) => (user.clone(), false),
            None => ("anonymous".to_owned(), true),
        };
        let authority = if anonymous {
            "anonymous"
        } else {
            "authenticated"
        };
        let object = Json::Obj(vec![
            ("_class", Json::str("hudson.security.WhoAmI")),
            ("anonymous", Json::Bool(anonymous)),
            // Spring's anonymous token also reports itself as authenticated.
            ("authenticated", Json::Bool(true)),
            ("authorities", Json::Arr(vec![Json::str(authority)])),
            ("name", Json::str(&name)),
        ]);
        self.json(&object)
    }

    /// An endpoint that runs code, hands out a secret, or stops the controller (behaviour §13),
    /// answered as if it had done so, and remembered ([`MockJenkins::dangerous`]).
    fn dangerous(&mut self, what: &str) -> Response<MockBody> {
        self.shared
            .lock()
            .dangerous
            .push(format!("{} {what}", self.parts.method));
        full(
            StatusCode::OK,
            "text/plain;charset=UTF-8",
            format!("done: {what}\n"),
        )
    }

    /// `user/NAME/api/json` of another user than the caller.
    fn user_api(&mut self, name: &str) -> Response<MockBody> {
        let object = Json::Obj(vec![
            ("_class", Json::str("hudson.model.User")),
            ("fullName", Json::str(name)),
            ("id", Json::str(name)),
        ]);
        self.json(&object)
    }

    /// `computer/NAME/api/json`.
    fn computer_api(&mut self, name: &str) -> Response<MockBody> {
        let class = if name == BUILT_IN {
            "hudson.model.Hudson$MasterComputer"
        } else {
            "hudson.slaves.SlaveComputer"
        };
        let object = Json::Obj(vec![
            ("_class", Json::str(class)),
            (
                "displayName",
                Json::str(if name == BUILT_IN {
                    "Built-In Node"
                } else {
                    name
                }),
            ),
            ("offline", Json::Bool(false)),
        ]);
        self.json(&object)
    }

    /// `whoAmI/` (`hudson/security/WhoAmI/index.jelly`): the caller's name and authorities,
    /// and before 2.219 / LTS 2.204.2 every request header, `Authorization` included
    /// (SECURITY-1695, behaviour §13).
    fn who_am_i_page(&mut self) -> Response<MockBody> {
        let name = self.user.clone().unwrap_or_else(|| "anonymous".to_owned());
        let mut main = format!(
            "<h1>Who Am I?</h1><table><tr><td>Name:</td><td>{}</td></tr></table>",
            escape_html(&name)
        );
        if self.shared.config.echoes_headers {
            main.push_str("<h2>Request Headers</h2><table>");
            for (header, value) in &self.parts.headers {
                let _ = write!(
                    main,
                    "<tr><td>{}</td><td>{}</td></tr>",
                    escape_html(header.as_str()),
                    escape_html(value.to_str().unwrap_or(""))
                );
            }
            main.push_str("</table>");
        }
        self.layout_page(StatusCode::OK, "Who Am I", &main)
    }

    /// `me/api/json`: the `User` object of the caller (python-jenkins' `get_whoami`).
    fn me(&mut self, flavour: ApiFlavour) -> Response<MockBody> {
        let user = self.user.clone().unwrap_or_default();
        let object = Json::Obj(vec![
            ("_class", Json::str("hudson.model.User")),
            (
                "absoluteUrl",
                Json::str(&format!("{}user/{}", self.root_url(), url_encode(&user))),
            ),
            ("description", Json::Null),
            ("fullName", Json::str(&user)),
            ("id", Json::str(&user)),
            (
                "property",
                Json::Arr(vec![
                    Json::Obj(vec![(
                        "_class",
                        Json::str("jenkins.security.ApiTokenProperty"),
                    )]),
                    Json::Obj(vec![("_class", Json::str("hudson.model.MyViewsProperty"))]),
                    Json::Obj(vec![
                        ("_class", Json::str("hudson.tasks.Mailer$UserProperty")),
                        ("address", Json::Null),
                    ]),
                ]),
            ),
        ]);
        self.api(&object, flavour)
    }

    /// `pluginManager/api/json` (`LocalPluginManager`, read-only here).
    fn plugin_manager(&mut self, flavour: ApiFlavour) -> Response<MockBody> {
        if !self.is_read() {
            self.unexpected = Some("the plugin manager is only read".to_owned());
            return self.not_found();
        }
        let plugins = self
            .shared
            .config
            .plugins
            .iter()
            .map(|(short, version)| {
                Json::Obj(vec![
                    ("active", Json::Bool(true)),
                    ("backupVersion", Json::Null),
                    ("bundled", Json::Bool(false)),
                    ("deleted", Json::Bool(false)),
                    ("dependencies", Json::Arr(vec![])),
                    ("detached", Json::Bool(false)),
                    ("downgradable", Json::Bool(false)),
                    ("enabled", Json::Bool(true)),
                    ("hasUpdate", Json::Bool(false)),
                    ("longName", Json::str(short)),
                    ("pinned", Json::Bool(false)),
                    ("requiredCoreVersion", Json::str("2.479.3")),
                    ("shortName", Json::str(short)),
                    ("supportsDynamicLoad", Json::str("MAYBE")),
                    (
                        "url",
                        Json::str(&format!("https://plugins.jenkins.io/{short}")),
                    ),
                    ("version", Json::str(version)),
                ])
            })
            .collect();
        let object = Json::Obj(vec![
            ("_class", Json::str("hudson.LocalPluginManager")),
            ("plugins", Json::Arr(plugins)),
        ]);
        self.api(&object, flavour)
    }

    /// `Failure.generateResponse`: `error.jelly` (a layout page) with status 400 and the
    /// message in `X-Error`, where characters beyond Latin-1 become `?` (behaviour §7.6).
    fn failure(&mut self, message: &str) -> Response<MockBody> {
        let mut response = self.layout_page(
            StatusCode::BAD_REQUEST,
            "Error",
            &format!("<h1>Error</h1><p>{}</p>", escape_html(message)),
        );
        let latin1: Vec<u8> = message
            .chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
            .collect();
        let value = HeaderValue::from_bytes(&latin1).expect("a Latin-1 header value");
        response.headers_mut().insert("x-error", value);
        response
    }

    /// `POST createItem?name=X` with an XML body (behaviour §7.6,
    /// `ItemGroupMixIn.createTopLevelItem`, `Jenkins.checkGoodName`).
    fn create_item(&mut self) -> Response<MockBody> {
        if self.parts.method != Method::POST {
            return self.require_post();
        }
        let content_type = self
            .parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        let mode = self.request_param("mode");
        if content_type.is_none() && mode.as_deref() != Some("copy") {
            return self.failure("No Content-Type header set");
        }
        let is_xml = content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/xml") || c.starts_with("text/xml"));
        let Some(name) = self.request_param("name") else {
            return self.failure("Query parameter 'name' is required");
        };
        let name = name.trim().to_owned();
        if name.is_empty() {
            return self.failure("No name is specified");
        }
        if let Some(c) = name.chars().find(|c| "?*/\\%!@#$^&|<>[]:;".contains(*c)) {
            return self.failure(&format!("\u{2018}{c}\u{2019} is an unsafe character"));
        }
        if self.job_exists(&name) {
            return self.failure(&format!(
                "A job already exists with the name \u{2018}{name}\u{2019}"
            ));
        }
        if mode.is_some() && !is_xml {
            self.unexpected = Some(format!("createItem mode {mode:?} is not emulated"));
            return self.failure("This mode is not emulated by the mock");
        }
        if !is_xml {
            return self.failure("No mode given");
        }
        let xml = String::from_utf8_lossy(&self.body.head).into_owned();
        if root_element(&xml) != Some("project") {
            self.unexpected = Some("the mock creates freestyle jobs (<project>) only".to_owned());
            return self.failure("Unsupported job type");
        }
        {
            let mut state = self.shared.lock();
            state.jobs.insert(
                name.clone(),
                JobState {
                    config: Some(self.body.head.clone()),
                },
            );
            state.next_build.insert(name, 1);
        }
        let mut response = empty(StatusCode::OK);
        self.advertise(response.headers_mut());
        response
    }

    /// `POST job/NAME/doDelete` (`AbstractItem.doDoDelete`): the job, its builds and its
    /// waiting queue items are gone; 302 to the parent, here the root.
    fn do_delete(&mut self, name: &str) -> Response<MockBody> {
        if self.parts.method != Method::POST {
            return self.require_post();
        }
        {
            let mut state = self.shared.lock();
            state.jobs.remove(name);
            state.next_build.remove(name);
            state.queue.retain(|i| i.job != name || i.started.is_some());
            for build in state.builds.iter_mut().filter(|b| b.job == name) {
                build.deleted = true;
            }
        }
        let location = format!("{}{}/", self.request_base(), self.shared.config.context);
        let mut response = empty(StatusCode::FOUND);
        response
            .headers_mut()
            .insert(header::LOCATION, value(location));
        self.advertise(response.headers_mut());
        response
    }

    /// Behaviour §7.1 (`/build`) and §7.2 (`/buildWithParameters`).
    fn trigger(&mut self, job: &str, with_parameters: bool) -> Response<MockBody> {
        let user = self.user.clone().unwrap_or_default();
        let denied = self
            .shared
            .config
            .denied
            .contains(&(job.to_owned(), user.clone()));
        if denied {
            return self.access_denied(&user);
        }
        if self.parts.method != Method::POST {
            return self.require_post();
        }
        let Some(view) = self.job_view(job) else {
            return self.not_found();
        };
        let defs = param_defs(&view.config);
        let (params, values) = if !defs.is_empty() {
            let values = if with_parameters {
                self.values_from_request(&defs)
            } else {
                // `/build` of a parameterized job wants a structured form (behaviour §7.1).
                match self.request_param("json") {
                    Some(json) => self.values_from_json(&defs, &json),
                    None => {
                        let other = params(self.query())
                            .iter()
                            .any(|(k, _)| !matches!(k.as_str(), "delay" | "token"));
                        let message = if other {
                            "This page expects a form submission"
                        } else {
                            "Nothing is submitted"
                        };
                        return jetty_error(
                            StatusCode::BAD_REQUEST,
                            message,
                            self.parts.uri.path(),
                        );
                    }
                }
            };
            (Some(values_key(&values)), values)
        } else if with_parameters {
            if !view.declared {
                return jetty_error(
                    StatusCode::BAD_REQUEST,
                    &format!("{job} is not parameterized"),
                    self.parts.uri.path(),
                );
            }
            // A job the builder declared takes whatever it is sent.
            (Some(self.parameter_key()), self.undeclared_values())
        } else {
            (None, Vec::new())
        };
        let query = self.query();
        let delay = param(query, "delay")
            .and_then(|d| parse_delay(&d))
            .unwrap_or(self.shared.config.quiet_period);
        let (id, existed) = {
            let mut state = self.shared.lock();
            *state.triggers.entry(job.to_owned()).or_default() += 1;
            advance_queue(&mut state, self.now, self.shared.config.build_duration);
            let due = self.now + delay;
            let waiting = state
                .queue
                .iter_mut()
                .find(|i| i.job == job && i.started.is_none() && i.params == params);
            match waiting {
                Some(item) => {
                    item.due = item.due.min(due);
                    (item.id, true)
                }
                None => {
                    let id = state.next_queue_id;
                    state.next_queue_id += 1;
                    state.queue.push(QueueItem {
                        id,
                        job: job.to_owned(),
                        params,
                        user,
                        since_ms: epoch_ms(),
                        due,
                        started: None,
                        values,
                    });
                    (id, false)
                }
            }
        };
        let location = format!(
            "{}{}/queue/item/{id}/",
            self.request_base(),
            self.shared.config.context
        );
        // `/build` answers 201 even when folded (JENKINS-66105); parameterized triggers 303.
        let status = if existed && with_parameters {
            StatusCode::SEE_OTHER
        } else {
            StatusCode::CREATED
        };
        let mut response = empty(status);
        response
            .headers_mut()
            .insert(header::LOCATION, value(location));
        self.advertise(response.headers_mut());
        response
    }

    /// `ParameterDefinition.createValue(StaplerRequest)` for each definition: string-like
    /// values from request parameters (query or urlencoded body, never multipart fields),
    /// files from the multipart part of that name; defaults for the rest.
    fn values_from_request(&self, defs: &[ParamDef]) -> Vec<ParamValue> {
        let files = self.multipart_files();
        defs.iter()
            .filter_map(|d| {
                if d.kind == "FileParameterDefinition" {
                    return files.iter().find(|f| f.name() == d.name).cloned();
                }
                match self.request_param(&d.name) {
                    Some(v) if d.kind == "BooleanParameterDefinition" => Some(ParamValue::Bool {
                        name: d.name.clone(),
                        value: v == "true" || v == "on",
                    }),
                    Some(v) => Some(ParamValue::Str {
                        name: d.name.clone(),
                        value: v,
                    }),
                    None => d.default_value(),
                }
            })
            .collect()
    }

    /// The `json` form field of a structured `/build` submission:
    /// `{"parameter": [{"name": …, "value": …}]}`; defaults for the rest.
    fn values_from_json(&self, defs: &[ParamDef], json: &str) -> Vec<ParamValue> {
        let parsed: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        let given = match &parsed["parameter"] {
            serde_json::Value::Array(a) => a.clone(),
            serde_json::Value::Object(_) => vec![parsed["parameter"].clone()],
            _ => Vec::new(),
        };
        defs.iter()
            .filter_map(|d| {
                let found = given.iter().find(|p| p["name"] == d.name.as_str());
                match found.map(|p| &p["value"]) {
                    Some(serde_json::Value::Bool(b)) => Some(ParamValue::Bool {
                        name: d.name.clone(),
                        value: *b,
                    }),
                    Some(serde_json::Value::String(s)) => Some(ParamValue::Str {
                        name: d.name.clone(),
                        value: s.clone(),
                    }),
                    _ => d.default_value(),
                }
            })
            .collect()
    }

    /// Values of a builder-declared job: every request parameter but `delay`, `token` and the
    /// crumb, plus the files of a multipart body.
    fn undeclared_values(&self) -> Vec<ParamValue> {
        let ignored = ["delay", "token", self.shared.config.crumb_field.as_str()];
        let mut pairs: Vec<(String, String)> = params(self.query());
        if is_form(&self.parts.headers) {
            pairs.extend(params(&String::from_utf8_lossy(&self.body.head)));
        }
        pairs
            .into_iter()
            .filter(|(k, _)| !ignored.contains(&k.as_str()))
            .map(|(name, value)| ParamValue::Str { name, value })
            .chain(self.multipart_files())
            .collect()
    }

    /// The file parts of a `multipart/form-data` body (Stapler parses these itself).
    fn multipart_files(&self) -> Vec<ParamValue> {
        let content_type = self
            .parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        multipart_parts(content_type, &self.body.head)
            .into_iter()
            .filter_map(|part| {
                let file_name = part.file_name?;
                Some(ParamValue::File {
                    name: part.name,
                    file_name,
                    len: part.data.len() as u64,
                    sha256: hex(&Sha256::digest(&part.data)),
                })
            })
            .collect()
    }

    /// What makes two `buildWithParameters` triggers equivalent: the parameter values. File
    /// parameters (multipart) never compare equal.
    fn parameter_key(&self) -> String {
        let content_type = self
            .parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type
            .to_ascii_lowercase()
            .starts_with("multipart/form-data")
        {
            return format!("multipart:{}", rand::random::<u64>());
        }
        let ignored = ["delay", "token", self.shared.config.crumb_field.as_str()];
        let mut pairs: Vec<(String, String)> = params(self.parts.uri.query().unwrap_or(""))
            .into_iter()
            .chain(if is_form(&self.parts.headers) {
                params(&String::from_utf8_lossy(&self.body.head))
            } else {
                Vec::new()
            })
            .filter(|(k, _)| !ignored.contains(&k.as_str()))
            .collect();
        pairs.sort();
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// Behaviour §7.3.
    fn queue_item(&mut self, id: u64, flavour: ApiFlavour) -> Response<MockBody> {
        let snapshot = {
            let mut state = self.shared.lock();
            advance_queue(&mut state, self.now, self.shared.config.build_duration);
            state.queue.iter().find(|i| i.id == id).map(|i| {
                (
                    i.job.clone(),
                    i.user.clone(),
                    i.since_ms,
                    i.due,
                    i.started,
                    i.values.clone(),
                )
            })
        };
        let Some((job, user, since_ms, due, started, values)) = snapshot else {
            return self.not_found();
        };
        let cause = Json::Obj(vec![
            ("_class", Json::str("hudson.model.CauseAction")),
            (
                "causes",
                Json::Arr(vec![Json::Obj(vec![
                    ("_class", Json::str("hudson.model.Cause$UserIdCause")),
                    (
                        "shortDescription",
                        Json::str(&format!("Started by user {user}")),
                    ),
                    ("userId", Json::str(&user)),
                    ("userName", Json::str(&user)),
                ])]),
            ),
        ]);
        let mut actions = Vec::new();
        if !values.is_empty() {
            actions.push(parameters_action(&values));
        }
        actions.push(cause);
        let task = Json::Obj(vec![
            ("_class", Json::str("hudson.model.FreeStyleProject")),
            ("name", Json::str(&job)),
            ("url", Json::str(&self.job_url(&job))),
            ("color", Json::str("notbuilt")),
        ]);
        let params_text: String = values
            .iter()
            .map(|v| format!("\n{}='{}'", v.name(), v.display()))
            .collect();
        let mut fields = vec![
            (
                "_class",
                Json::str(if started.is_some() {
                    "hudson.model.Queue$LeftItem"
                } else {
                    "hudson.model.Queue$WaitingItem"
                }),
            ),
            ("actions", Json::Arr(actions)),
            ("blocked", Json::Bool(false)),
            ("buildable", Json::Bool(false)),
            ("id", Json::Num(id as i64)),
            ("inQueueSince", Json::Num(since_ms as i64)),
            ("params", Json::Str(params_text)),
            ("stuck", Json::Bool(false)),
            ("task", task),
            ("url", Json::str(&format!("queue/item/{id}/"))),
        ];
        match started {
            None => {
                fields.push(("why", Json::str(&quiet_period_why(due, self.now))));
                fields.push(("timestamp", Json::Num(since_ms as i64)));
            }
            Some(number) => {
                fields.push(("why", Json::Null));
                fields.push(("cancelled", Json::Bool(false)));
                fields.push(("executable", self.build_summary(&job, number)));
            }
        }
        self.api(&Json::Obj(fields), flavour)
    }

    /// Behaviour §7.6.
    fn config_xml(&mut self, job: &str) -> Response<MockBody> {
        if self.is_read() {
            let stored = self
                .shared
                .lock()
                .jobs
                .get(job)
                .and_then(|j| j.config.clone());
            let body = stored.unwrap_or_else(|| Bytes::from_static(DEFAULT_CONFIG.as_bytes()));
            let mut response = full_bytes(StatusCode::OK, "application/xml", body);
            self.advertise(response.headers_mut());
            return response;
        }
        if self.parts.method == Method::POST {
            if let Some(state) = self.shared.lock().jobs.get_mut(job) {
                state.config = Some(self.body.head.clone());
            }
            let mut response = empty(StatusCode::OK);
            self.advertise(response.headers_mut());
            return response;
        }
        html(
            StatusCode::BAD_REQUEST,
            "text/html;charset=utf-8",
            "<html><body>Bad Request</body></html>".to_owned(),
        )
    }

    /// The build a URL names, if it exists (permalinks resolved as `PermalinkProjectAction`).
    fn find_build(&self, job: &str, build: &BuildRef) -> Option<BuildRecord> {
        let mut state = self.shared.lock();
        advance_queue(&mut state, self.now, self.shared.config.build_duration);
        let mut builds: Vec<&BuildRecord> = state
            .builds
            .iter()
            .filter(|b| b.job == job && !b.deleted)
            .collect();
        builds.sort_by_key(|b| b.number);
        let found = match build {
            BuildRef::Number(n) => builds.into_iter().find(|b| b.number == *n),
            BuildRef::Permalink("lastBuild") => builds.into_iter().last(),
            BuildRef::Permalink("firstBuild") => builds.into_iter().next(),
            // Every build of the double succeeds: completed, successful and stable coincide.
            BuildRef::Permalink(_) => builds.into_iter().rfind(|b| !b.building(self.now)),
        };
        found.cloned()
    }

    /// `job/NAME/N/api/json`: a `FreeStyleBuild` at depth 0.
    fn build_api(
        &mut self,
        job: &str,
        build: &BuildRef,
        flavour: ApiFlavour,
    ) -> Response<MockBody> {
        let Some(b) = self.find_build(job, build) else {
            return self.not_found();
        };
        let building = b.building(self.now);
        let (previous, next) = {
            let state = self.shared.lock();
            let numbers: Vec<u32> = state
                .builds
                .iter()
                .filter(|o| o.job == job && !o.deleted)
                .map(|o| o.number)
                .collect();
            (
                numbers.iter().filter(|n| **n < b.number).max().copied(),
                numbers.iter().filter(|n| **n > b.number).min().copied(),
            )
        };
        let mut actions = Vec::new();
        if !b.params.is_empty() {
            actions.push(parameters_action(&b.params));
        }
        actions.push(Json::Obj(vec![
            ("_class", Json::str("hudson.model.CauseAction")),
            (
                "causes",
                Json::Arr(vec![Json::Obj(vec![
                    ("_class", Json::str("hudson.model.Cause$UserIdCause")),
                    (
                        "shortDescription",
                        Json::str(&format!("Started by user {}", b.user)),
                    ),
                    ("userId", Json::str(&b.user)),
                    ("userName", Json::str(&b.user)),
                ])]),
            ),
        ]));
        actions.push(Json::Obj(vec![]));
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let object = Json::Obj(vec![
            ("_class", Json::str("hudson.model.FreeStyleBuild")),
            ("actions", Json::Arr(actions)),
            ("artifacts", Json::Arr(vec![])),
            ("building", Json::Bool(building)),
            ("description", Json::Null),
            ("displayName", Json::str(&format!("#{}", b.number))),
            (
                "duration",
                Json::Num(if building { 0 } else { millis(b.duration) }),
            ),
            ("estimatedDuration", Json::Num(millis(b.duration))),
            (
                "executor",
                if building {
                    Json::Obj(vec![("_class", Json::str("hudson.model.Executor"))])
                } else {
                    Json::Null
                },
            ),
            (
                "fullDisplayName",
                Json::str(&format!("{job} #{}", b.number)),
            ),
            ("id", Json::str(&b.number.to_string())),
            ("keepLog", Json::Bool(false)),
            ("number", Json::Num(i64::from(b.number))),
            ("queueId", Json::Num(b.queue_id as i64)),
            (
                "result",
                if building {
                    Json::Null
                } else {
                    Json::str("SUCCESS")
                },
            ),
            ("timestamp", Json::Num(b.started_ms as i64)),
            ("url", Json::str(&self.build_url(job, b.number))),
            ("builtOn", Json::str("")),
            (
                "changeSet",
                Json::Obj(vec![
                    ("_class", Json::str("hudson.scm.EmptyChangeLogSet")),
                    ("items", Json::Arr(vec![])),
                    ("kind", Json::Null),
                ]),
            ),
            ("culprits", Json::Arr(vec![])),
            (
                "nextBuild",
                next.map_or(Json::Null, |n| self.build_summary(job, n)),
            ),
            (
                "previousBuild",
                previous.map_or(Json::Null, |n| self.build_summary(job, n)),
            ),
        ]);
        self.api(&object, flavour)
    }

    /// `Run.doConsoleText`: the log so far, console notes removed.
    fn console_text(&mut self, job: &str, build: &BuildRef) -> Response<MockBody> {
        let Some(b) = self.find_build(job, build) else {
            return self.not_found();
        };
        let text = strip_console_notes(b.raw_log(self.now));
        let mut response = full_bytes(
            StatusCode::OK,
            "text/plain;charset=UTF-8",
            Bytes::from(text),
        );
        self.advertise(response.headers_mut());
        response
    }

    /// Behaviour §7.4 for builds the double ran: `start` from the query or an urlencoded
    /// body (the npm client POSTs it), `X-Text-Size` of the raw log, `X-More-Data` while the
    /// build runs, console notes removed from the body.
    fn build_progressive_text(&mut self, job: &str, build: &BuildRef) -> Response<MockBody> {
        let Some(b) = self.find_build(job, build) else {
            return self.not_found();
        };
        let raw = b.raw_log(self.now);
        let start = self
            .request_param("start")
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(0);
        let from = if start > raw.len() { 0 } else { start };
        let mut response = full_bytes(
            StatusCode::OK,
            "text/plain;charset=UTF-8",
            Bytes::from(strip_console_notes(&raw[from..])),
        );
        let h = response.headers_mut();
        h.insert("x-text-size", value(raw.len().to_string()));
        if b.building(self.now) {
            h.insert("x-more-data", HeaderValue::from_static("true"));
        }
        self.advertise(response.headers_mut());
        response
    }

    /// Behaviour §7.5: streamed, never held in memory; `bytes=a-b` and `bytes=a-` ranges.
    fn artifact(&mut self, job: &str, build: u32, path: &str) -> Response<MockBody> {
        let size = self
            .shared
            .config
            .artifacts
            .get(&(job.to_owned(), build, path.to_owned()))
            .copied();
        let Some(size) = size else {
            return self.not_found();
        };
        if !self.is_read() {
            self.unexpected = Some("artifacts are only read".to_owned());
            return self.not_found();
        }
        let headers = &self.parts.headers;
        let not_modified = headers
            .get(header::IF_MODIFIED_SINCE)
            .is_some_and(|v| v == ARTIFACT_LAST_MODIFIED);
        let range = headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_range(v, size));
        let mut response = if not_modified {
            empty(StatusCode::NOT_MODIFIED)
        } else {
            let (status, start, end) = match range {
                Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end),
                None => (StatusCode::OK, 0, size),
            };
            let mut response = Response::new(MockBody::pattern(start, end));
            *response.status_mut() = status;
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(header::CONTENT_LENGTH, value((end - start).to_string()));
            if status == StatusCode::PARTIAL_CONTENT {
                h.insert(
                    header::CONTENT_RANGE,
                    value(format!("bytes {start}-{}/{size}", end - 1)),
                );
            }
            response
        };
        let h = response.headers_mut();
        h.insert(
            "content-security-policy",
            HeaderValue::from_static(
                "sandbox allow-same-origin; default-src 'none'; img-src 'self'; style-src 'self';",
            ),
        );
        h.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static(ARTIFACT_LAST_MODIFIED),
        );
        h.insert(
            header::EXPIRES,
            HeaderValue::from_static(ARTIFACT_LAST_MODIFIED),
        );
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        self.advertise(response.headers_mut());
        response
    }

    /// Behaviour §7.4, streaming variant: while the build runs, the response stays open and
    /// every pushed chunk is written as its own body frame.
    fn progressive_text(&mut self, job: &str, build: u32) -> Response<MockBody> {
        if job != SAMPLE_JOB || build != PROGRESSIVE_BUILD {
            return self.not_found();
        }
        let start = param(self.parts.uri.query().unwrap_or(""), "start")
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(0);
        let (size, running, body) = {
            let mut log = lock(&self.shared.log);
            let size = log.text.len();
            // `start > L` restarts at 0 (behaviour §7.4).
            let from = if start > size { 0 } else { start };
            let already = Bytes::copy_from_slice(&log.text[from..]);
            let body = if log.running {
                let (tx, rx) = mpsc::unbounded_channel();
                log.watchers.push(tx);
                MockBody::stream(already, rx)
            } else {
                MockBody::full(already)
            };
            (size, log.running, body)
        };
        let mut response = Response::new(body);
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain;charset=UTF-8"),
        );
        h.insert("x-text-size", value(size.to_string()));
        if running {
            h.insert("x-more-data", HeaderValue::from_static("true"));
        }
        self.advertise(response.headers_mut());
        response
    }
}

/// Items whose quiet period is over leave the queue, get a build number and start a build
/// that runs for `duration` (behaviour §7.3). Items of a job deleted meanwhile are dropped,
/// as Jenkins cancels them.
fn advance_queue(state: &mut State, now: Instant, duration: Duration) {
    let State {
        queue,
        next_build,
        jobs,
        builds,
        ..
    } = state;
    queue.retain(|item| item.started.is_some() || jobs.contains_key(&item.job));
    for item in queue.iter_mut() {
        if item.started.is_none() && item.due <= now {
            let number = next_build.entry(item.job.clone()).or_insert(1);
            item.started = Some(*number);
            let config = jobs.get(&item.job).and_then(|j| j.config.clone());
            builds.push(BuildRecord {
                job: item.job.clone(),
                number: *number,
                queue_id: item.id,
                user: item.user.clone(),
                params: item.values.clone(),
                // It started when it was due, even if nobody looked until now.
                started: item.due,
                started_ms: epoch_ms().saturating_sub(
                    u64::try_from(now.duration_since(item.due).as_millis()).unwrap_or(0),
                ),
                duration,
                log: console_log(
                    &item.job,
                    *number,
                    &item.user,
                    &item.values,
                    config.as_deref(),
                ),
                deleted: false,
            });
            *number += 1;
        }
    }
}

/// The console log of a build of `job` (behaviour §7.4): a hidden console note before
/// "Started by user", the workspace line, the parameters, each shell step with what its
/// `echo` lines print, and the final `Finished: SUCCESS`.
fn console_log(
    job: &str,
    number: u32,
    user: &str,
    params: &[ParamValue],
    config: Option<&[u8]>,
) -> Vec<u8> {
    let mut log = String::new();
    // `ConsoleNote.encode`: ESC[8m ha: base64 ESC[0m, stripped from what clients are sent.
    let note = base64::engine::general_purpose::STANDARD
        .encode(format!("{job}#{number} started by {user}"));
    let _ = writeln!(log, "\u{1b}[8mha:////{note}\u{1b}[0mStarted by user {user}");
    log.push_str("Running as SYSTEM\n");
    let _ = writeln!(
        log,
        "Building in workspace /var/jenkins_home/workspace/{job}"
    );
    for p in params {
        let _ = writeln!(log, "{}={}", p.name(), p.display());
    }
    let xml = config.map(String::from_utf8_lossy).unwrap_or_default();
    for (i, command) in xml_texts(&xml, "command").into_iter().enumerate() {
        let _ = writeln!(
            log,
            "[{job}] $ /bin/sh -xe /tmp/jenkins{}{i}.sh",
            1000 + number
        );
        for line in command.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let _ = writeln!(log, "+ {line}");
            if let Some(args) = line.strip_prefix("echo ") {
                let _ = writeln!(log, "{}", shell_echo(args, params));
            }
        }
    }
    let _ = writeln!(log, "{FINISHED_SUCCESS}");
    log.into_bytes()
}

/// What `echo ARGS` prints: quotes removed, `$NAME` and `${NAME}` replaced by the
/// parameter's value (empty when there is none).
fn shell_echo(args: &str, params: &[ParamValue]) -> String {
    let mut out = String::new();
    let mut chars = args.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' if quote.is_none() => quote = Some(c),
            '\'' | '"' if quote == Some(c) => quote = None,
            '$' if quote != Some('\'') => {
                let braced = chars.peek() == Some(&'{');
                if braced {
                    chars.next();
                }
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        name.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if braced && chars.peek() == Some(&'}') {
                    chars.next();
                }
                if let Some(p) = params.iter().find(|p| p.name() == name) {
                    out.push_str(&p.display());
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The unescaped text of every `<tag>…</tag>` element in `xml` (no nesting inside).
fn xml_texts(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(xml_unescape(&after[..end]));
        rest = &after[end + close.len()..];
    }
    out
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// A parameter definition of a job's configuration (`ParametersDefinitionProperty`).
#[derive(Debug, Clone)]
struct ParamDef {
    /// `StringParameterDefinition`, `TextParameterDefinition`, `BooleanParameterDefinition`,
    /// `ChoiceParameterDefinition`, `FileParameterDefinition`.
    kind: &'static str,
    name: String,
    default: Option<String>,
    description: String,
}

impl ParamDef {
    fn default_value(&self) -> Option<ParamValue> {
        let name = self.name.clone();
        match self.kind {
            "FileParameterDefinition" => None,
            "BooleanParameterDefinition" => Some(ParamValue::Bool {
                name,
                value: self.default.as_deref() == Some("true"),
            }),
            _ => Some(ParamValue::Str {
                name,
                value: self.default.clone().unwrap_or_default(),
            }),
        }
    }

    fn value_class(&self) -> &'static str {
        match self.kind {
            "FileParameterDefinition" => "hudson.model.FileParameterValue",
            "BooleanParameterDefinition" => "hudson.model.BooleanParameterValue",
            "TextParameterDefinition" => "hudson.model.TextParameterValue",
            _ => "hudson.model.StringParameterValue",
        }
    }
}

/// The parameter definitions in a job's `config.xml` (the elements Jenkins' XStream writes
/// for the core parameter types; jenkins-job-builder writes the same).
fn param_defs(xml: &str) -> Vec<ParamDef> {
    const KINDS: &[&str] = &[
        "StringParameterDefinition",
        "TextParameterDefinition",
        "BooleanParameterDefinition",
        "ChoiceParameterDefinition",
        "FileParameterDefinition",
    ];
    let mut defs = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find("<hudson.model.") {
        let tail = &rest[at + "<hudson.model.".len()..];
        let kind = KINDS
            .iter()
            .find(|k| tail.starts_with(&format!("{k}>")) || tail.starts_with(&format!("{k} ")));
        let Some(kind) = kind else {
            rest = tail;
            continue;
        };
        let close = format!("</hudson.model.{kind}>");
        let Some(end) = tail.find(&close) else { break };
        let body = &tail[..end];
        let first = |tag: &str| xml_texts(body, tag).into_iter().next();
        let default = match *kind {
            // The first choice is the default.
            "ChoiceParameterDefinition" => first("string"),
            _ => first("defaultValue"),
        };
        if let Some(name) = first("name") {
            defs.push(ParamDef {
                kind,
                name,
                default,
                description: first("description").unwrap_or_default(),
            });
        }
        rest = &tail[end..];
    }
    defs
}

/// `AccessDeniedException3`'s permission chains (ids from `Permission.java`, behaviour §2).
const READ_CHAIN: &[&str] = &[
    "hudson.model.Hudson.Read",
    "hudson.security.Permission.GenericRead",
    "hudson.model.Hudson.Administer",
];
const BUILD_CHAIN: &[&str] = &[
    "hudson.model.Item.Build",
    "hudson.security.Permission.GenericUpdate",
    "hudson.security.Permission.GenericWrite",
    "hudson.model.Hudson.Administer",
];

/// `AccessDeniedException3.reportAsHeaders`.
fn report_as_headers(headers: &mut HeaderMap, user: &str, chain: &[&str]) {
    headers.append("x-you-are-authenticated-as", value(user.to_owned()));
    headers.append(
        "x-you-are-in-group-disabled",
        HeaderValue::from_static(GROUP_HEADERS_DISABLED),
    );
    if let Some((required, implied)) = chain.split_first() {
        headers.append("x-required-permission", value((*required).to_owned()));
        for p in implied {
            headers.append("x-permission-implied-by", value((*p).to_owned()));
        }
    }
}

/// `AccessDeniedException3.report`.
fn permission_report(user: &str, groups: &[&str], chain: &[&str]) -> String {
    let mut out = format!("You are authenticated as: {user}\nGroups that you are in:\n");
    for g in groups {
        let _ = writeln!(out, "  {g}");
    }
    if let Some((required, implied)) = chain.split_first() {
        let _ = writeln!(out, "Permission you need to have (but didn't): {required}");
        for p in implied {
            let _ = writeln!(out, " ... which is implied by: {p}");
        }
    }
    out
}

// === routing ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ApiFlavour {
    Json,
    Xml,
    Python,
}

impl ApiFlavour {
    fn parse(s: &str) -> Option<ApiFlavour> {
        match s {
            "json" => Some(ApiFlavour::Json),
            "xml" => Some(ApiFlavour::Xml),
            "python" => Some(ApiFlavour::Python),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum Route {
    /// `/`: the dashboard page.
    Dashboard,
    RootApi(ApiFlavour),
    CreateItem,
    CrumbIssuer(ApiFlavour),
    WhoAmI,
    /// `whoAmI/`: the HTML page (behaviour §13).
    WhoAmIPage,
    /// Something Jenkins would answer 404 to (an unknown job, view, user or agent).
    NotFound,
    /// A dangerous endpoint (behaviour §13), described for [`MockJenkins::dangerous`].
    Dangerous(String),
    /// A plain page (`/manage`).
    Page(&'static str),
    /// `user/NAME/api/json` of another user.
    UserApi(String),
    /// `computer/NAME/api/json`.
    ComputerApi(String),
    /// `me/api/…`: the current user.
    Me(ApiFlavour),
    PluginManager(ApiFlavour),
    QueueItem(u64, ApiFlavour),
    /// `queue/item/N/` itself: a queue item has no index view, so Stapler answers 404.
    QueueItemPage(u64),
    Job {
        name: String,
        rest: JobRoute,
    },
    /// `view/NAME/api/…`: the double has only the `all` view.
    ViewApi {
        name: String,
        flavour: ApiFlavour,
    },
    Unknown,
}

/// A build as a URL names it: its number or a permalink (`lastBuild`, …).
#[derive(Debug, Clone)]
enum BuildRef {
    Number(u32),
    Permalink(&'static str),
}

impl BuildRef {
    fn parse(s: &str) -> Option<BuildRef> {
        const PERMALINKS: &[&str] = &[
            "lastBuild",
            "lastCompletedBuild",
            "lastSuccessfulBuild",
            "lastStableBuild",
            "firstBuild",
        ];
        if let Ok(n) = s.parse() {
            return Some(BuildRef::Number(n));
        }
        PERMALINKS
            .iter()
            .find(|p| **p == s)
            .map(|p| BuildRef::Permalink(p))
    }
}

#[derive(Debug)]
enum JobRoute {
    Api(ApiFlavour),
    Build,
    BuildWithParameters,
    ConfigXml,
    DoDelete,
    Artifact {
        build: u32,
        path: String,
    },
    ProgressiveText {
        build: BuildRef,
    },
    BuildApi {
        build: BuildRef,
        flavour: ApiFlavour,
    },
    ConsoleText {
        build: BuildRef,
    },
    Unknown,
}

impl Route {
    /// The root object's own routes; `segments` are decoded ([`jetty_segments`]).
    fn root(segments: &[&str]) -> Route {
        let flavour = ApiFlavour::parse;
        match segments {
            [] => Route::Dashboard,
            ["api", f] => match flavour(f) {
                Some(f @ (ApiFlavour::Json | ApiFlavour::Python)) => Route::RootApi(f),
                _ => Route::Unknown,
            },
            ["createItem"] => Route::CreateItem,
            ["crumbIssuer", "api", f] => flavour(f).map_or(Route::Unknown, Route::CrumbIssuer),
            ["whoAmI", "api", "json"] => Route::WhoAmI,
            ["whoAmI"] => Route::WhoAmIPage,
            ["manage"] => Route::Page("Manage Jenkins"),
            ["pluginManager", "api", f] => match flavour(f) {
                Some(f @ (ApiFlavour::Json | ApiFlavour::Python)) => Route::PluginManager(f),
                _ => Route::Unknown,
            },
            ["queue", "item", id, "api", f] => match (id.parse(), flavour(f)) {
                (Ok(id), Some(f @ (ApiFlavour::Json | ApiFlavour::Python))) => {
                    Route::QueueItem(id, f)
                }
                _ => Route::Unknown,
            },
            ["queue", "item", id] => match id.parse() {
                Ok(id) => Route::QueueItemPage(id),
                Err(_) => Route::Unknown,
            },
            [action, rest @ ..] => match root_danger(action, rest) {
                Some(what) => Route::Dangerous(what),
                None => Route::Unknown,
            },
        }
    }
}

/// The built-in node's name in URLs (`computer/(built-in)`; `(master)` and `""` also work).
const BUILT_IN: &str = "(built-in)";

/// What a dangerous action of the root object does (behaviour §13), when `action` is one.
fn root_danger(action: &str, rest: &[&str]) -> Option<String> {
    let what = match action {
        "script" | "scriptText" => "script console on the controller",
        "eval" => "Jelly script from the request body",
        "cli" if rest == ["ws"] => "CLI over WebSocket",
        "cli" => "CLI",
        "heapDump" => "heap dump of the controller",
        "scriptApproval" => "script approval",
        "credentials" => "system credentials store",
        "configureSecurity" => "global security configuration",
        "pluginManager" => "plugin manager",
        "updateCenter" => "update center",
        "systemInfo" => "system information of the controller",
        "threadDump" => "thread dump of the controller",
        "administrativeMonitor" => "an administrative monitor's action",
        "log" => "system log",
        "restart"
        | "safeRestart"
        | "exit"
        | "safeExit"
        | "quietDown"
        | "cancelQuietDown"
        | "reload"
        | "gc"
        | "simulateOutOfMemory"
        | "prepareShutdown" => action,
        _ => return None,
    };
    Some(what.to_owned())
}

/// An object of the double's model that a URL reaches (behaviour §13).
#[derive(Debug, Clone)]
enum Obj {
    Root,
    /// A job or folder by full name (`folder/job`).
    Item(String),
    /// A view; its items belong to `group` (`""` for the root, else a folder).
    View {
        group: String,
    },
    /// A user's views (`MyViewsProperty`).
    MyViews(String),
    User(String),
    Computer(String),
}

impl Exchange<'_> {
    /// Walks `segments` the way Stapler's URL binding does for the objects the double has
    /// (behaviour §13), independently of how the proxy models it: `manage` falls back to the
    /// root, views hand out the items of their owner's group and (for top-level views) the
    /// root's actions, `me` is the caller, users have `my-views`, the built-in node's `node`
    /// and a build's `builtOn` are the root. Tokens are matched case-sensitively, as Stapler
    /// does.
    fn bind(&self, segments: &[String]) -> Route {
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let mut object = Obj::Root;
        let mut rest: &[&str] = &segs;
        loop {
            let step = match (&object, rest) {
                (_, []) => None,
                (Obj::Root, ["manage", more @ ..]) if !more.is_empty() => Some((Obj::Root, more)),
                // `Jenkins.getItemGroup()` is the root; `getPrimaryView()` is `all`.
                (Obj::Root, ["itemGroup", more @ ..]) => Some((Obj::Root, more)),
                (Obj::Root, ["primaryView", more @ ..]) => Some((
                    Obj::View {
                        group: String::new(),
                    },
                    more,
                )),
                (Obj::Root, ["job" | "item", name, more @ ..]) => {
                    Some((Obj::Item((*name).to_owned()), more))
                }
                (Obj::Root, ["view", name, more @ ..])
                    if self.shared.config.views.contains(*name) =>
                {
                    Some((
                        Obj::View {
                            group: String::new(),
                        },
                        more,
                    ))
                }
                (Obj::Root, ["user", name, more @ ..])
                | (Obj::Root, ["securityRealm", "user", name, more @ ..]) => {
                    Some((Obj::User((*name).to_owned()), more))
                }
                (Obj::Root, ["me", more @ ..]) => match &self.user {
                    Some(me) => Some((Obj::User(me.clone()), more)),
                    None => return Route::NotFound,
                },
                // `Jenkins.getComputers()` and `ComputerSet.get_all()`:
                // arrays, the built-in node first, then the agents.
                (Obj::Root, ["computers", index, more @ ..])
                | (Obj::Root, ["computer", "_all", index, more @ ..]) => {
                    let computers: Vec<String> = std::iter::once(BUILT_IN.to_owned())
                        .chain(self.shared.config.agents.iter().cloned())
                        .collect();
                    match index.parse::<usize>().ok().and_then(|i| computers.get(i)) {
                        Some(name) => Some((Obj::Computer(name.clone()), more)),
                        None => return Route::NotFound,
                    }
                }
                (Obj::Root, ["computer" | "node", name, more @ ..]) => {
                    let name = match *name {
                        "" | "(master)" | BUILT_IN => BUILT_IN,
                        other => other,
                    };
                    if name != BUILT_IN && !self.shared.config.agents.contains(name) {
                        return Route::NotFound;
                    }
                    Some((Obj::Computer(name.to_owned()), more))
                }
                (Obj::Item(full), ["job" | "item", name, more @ ..])
                    if self.shared.config.folders.contains(full) =>
                {
                    Some((Obj::Item(format!("{full}/{name}")), more))
                }
                (Obj::Item(full), ["view", name, more @ ..])
                    if self.shared.config.folders.contains(full)
                        && self.shared.config.views.contains(*name) =>
                {
                    Some((
                        Obj::View {
                            group: full.clone(),
                        },
                        more,
                    ))
                }
                // Every build of the double runs on the built-in node.
                (Obj::Item(_), ["lastBuiltOn", more @ ..])
                | (Obj::Item(_), [_, "builtOn", more @ ..])
                | (Obj::Item(_), [_, "previousBuild" | "nextBuild", "builtOn", more @ ..]) => {
                    Some((Obj::Root, more))
                }
                (Obj::View { group }, ["job" | "item", name, more @ ..]) => {
                    let full = if group.is_empty() {
                        (*name).to_owned()
                    } else {
                        format!("{group}/{name}")
                    };
                    Some((Obj::Item(full), more))
                }
                (Obj::View { .. }, ["view", name, more @ ..])
                    if self.shared.config.views.contains(*name) =>
                {
                    Some((object.clone(), more))
                }
                // `View.getDynamic`: a top-level view's unknown tokens are the root's actions.
                (Obj::View { group }, [token, ..])
                    if group.is_empty() && !matches!(*token, "api" | "configSubmit") =>
                {
                    Some((Obj::Root, rest))
                }
                (Obj::User(name), ["my-views", more @ ..]) => {
                    Some((Obj::MyViews(name.clone()), more))
                }
                (Obj::MyViews(_), ["view", name, more @ ..])
                    if self.shared.config.views.contains(*name) =>
                {
                    Some((
                        Obj::View {
                            group: String::new(),
                        },
                        more,
                    ))
                }
                (Obj::MyViews(name), ["user", more @ ..]) => Some((Obj::User(name.clone()), more)),
                // Its fallback is its primary view, `all`.
                (Obj::MyViews(_), _) => Some((
                    Obj::View {
                        group: String::new(),
                    },
                    rest,
                )),
                (Obj::Computer(name), ["node", more @ ..]) if name == BUILT_IN => {
                    Some((Obj::Root, more))
                }
                // An executor's owner is its computer.
                (
                    Obj::Computer(_),
                    ["executors" | "oneOffExecutors", index, "owner", more @ ..],
                ) if index.parse::<u32>().is_ok() => Some((object.clone(), more)),
                // An agent's node and its computer (`Slave.getComputer`).
                (Obj::Computer(_), ["node" | "computer", more @ ..]) => {
                    Some((object.clone(), more))
                }
                // Unknown views are a normal answer, like unknown jobs.
                (_, ["view", _, ..]) => return Route::NotFound,
                _ => None,
            };
            match step {
                Some((next, more)) => {
                    object = next;
                    rest = more;
                }
                None => break,
            }
        }
        match object {
            Obj::Root => Route::root(rest),
            Obj::Item(full) => self.item_route(&full, rest),
            Obj::View { group } => match rest {
                ["api", f] if group.is_empty() => match ApiFlavour::parse(f) {
                    Some(f @ (ApiFlavour::Json | ApiFlavour::Python)) => Route::ViewApi {
                        name: "all".to_owned(),
                        flavour: f,
                    },
                    _ => Route::Unknown,
                },
                _ => Route::Unknown,
            },
            Obj::MyViews(_) => Route::Unknown,
            Obj::User(name) => match rest {
                ["api", f] if self.user.as_deref() == Some(name.as_str()) => {
                    match ApiFlavour::parse(f) {
                        Some(f @ (ApiFlavour::Json | ApiFlavour::Python)) => Route::Me(f),
                        _ => Route::Unknown,
                    }
                }
                ["api", "json"] => Route::UserApi(name),
                ["descriptorByName" | "descriptor", "jenkins.security.ApiTokenProperty" | "ApiTokenProperty", method] => {
                    Route::Dangerous(format!("API token {method} for user {name}"))
                }
                ["descriptorByName" | "descriptor", "jenkins.security.seed.UserSeedProperty", "renewSessionSeed"] => {
                    Route::Dangerous(format!("session seed of user {name} renewed"))
                }
                ["credentials", ..] => {
                    Route::Dangerous(format!("credentials store of user {name}"))
                }
                ["configSubmit" | "doDelete"] => {
                    Route::Dangerous(format!("configuration of user {name}"))
                }
                _ => Route::Unknown,
            },
            Obj::Computer(name) => {
                let what = match rest {
                    ["api", "json"] => return Route::ComputerApi(name),
                    [] | ["index"] if name == BUILT_IN => return Route::Page("Built-In Node"),
                    // An inbound agent's page shows its launch command, `-secret` included.
                    [] | ["index"] => "launch command and secret",
                    ["script" | "scriptText"] => "script console",
                    ["heapDump", ..] => "heap dump",
                    ["jenkins-agent.jnlp" | "slave-agent.jnlp"] => "agent secret",
                    ["systemInfo"] => "system information",
                    ["threadDump"] => "thread dump",
                    ["log"] => "log",
                    _ => return Route::Unknown,
                };
                Route::Dangerous(format!("{what} of {name}"))
            }
        }
    }

    /// A job's (or folder's) routes.
    fn item_route(&self, full: &str, rest: &[&str]) -> Route {
        if self.shared.config.folders.contains(full) {
            return match rest {
                ["credentials", ..] => {
                    Route::Dangerous(format!("credentials store of folder {full}"))
                }
                _ => Route::Unknown,
            };
        }
        Route::Job {
            name: full.to_owned(),
            rest: JobRoute::parse(rest),
        }
    }
}

/// The path below the context as Jetty hands it to Stapler: split at `/`, each segment
/// decoded once with its `;` parameters cut, `.` and `..` resolved, empty segments dropped.
fn jetty_segments(rel: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for raw in rel.split('/') {
        let raw = raw.split(';').next().unwrap_or_default();
        match percent_decode(raw, false).as_str() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            segment => out.push(segment.to_owned()),
        }
    }
    out
}

impl JobRoute {
    fn parse(rest: &[&str]) -> JobRoute {
        let api = |f: &str| match ApiFlavour::parse(f) {
            Some(f @ (ApiFlavour::Json | ApiFlavour::Python)) => Some(f),
            _ => None,
        };
        match rest {
            ["api", f] => api(f).map_or(JobRoute::Unknown, JobRoute::Api),
            ["build"] => JobRoute::Build,
            ["buildWithParameters"] => JobRoute::BuildWithParameters,
            ["config.xml"] => JobRoute::ConfigXml,
            ["doDelete"] => JobRoute::DoDelete,
            [build, "artifact", path @ ..] if !path.is_empty() => match build.parse() {
                Ok(build) => JobRoute::Artifact {
                    build,
                    path: path.join("/"),
                },
                Err(_) => JobRoute::Unknown,
            },
            [build, "logText", "progressiveText"] => match BuildRef::parse(build) {
                Some(build) => JobRoute::ProgressiveText { build },
                None => JobRoute::Unknown,
            },
            [build, "api", f] => match (BuildRef::parse(build), api(f)) {
                (Some(build), Some(flavour)) => JobRoute::BuildApi { build, flavour },
                _ => JobRoute::Unknown,
            },
            [build, "consoleText"] => match BuildRef::parse(build) {
                Some(build) => JobRoute::ConsoleText { build },
                None => JobRoute::Unknown,
            },
            _ => JobRoute::Unknown,
        }
    }
}

fn strip_context<'p>(path: &'p str, context: &str) -> Option<&'p str> {
    let rel = path.strip_prefix(context)?;
    if rel.is_empty() {
        Some("/")
    } else if rel.starts_with('/') {
        Some(rel)
    } else {
        None
    }
}

// === small helpers ===

/// `2.541.3` as numbers, for comparing versions.
fn parse_version(v: &str) -> Option<Vec<u32>> {
    v.split('.').map(|p| p.parse().ok()).collect()
}

/// Whether the `/whoAmI/` page of `version` prints the request headers: fixed in weekly 2.219
/// and in LTS 2.204.2 (SECURITY-1695, behaviour §13).
fn echoes_headers(version: &str) -> bool {
    let v = parse_version(version);
    let lts_2204_fixed = v >= parse_version("2.204.2") && v < parse_version("2.205");
    v < parse_version("2.219") && !lts_2204_fixed
}

fn value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).expect("header value built by the mock")
}

fn new_session_id() -> String {
    // Jetty ids look like `node01meqi2web3nlgtha9ucsc023x34` (behaviour §3.1).
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = rand::random::<u128>();
    let mut id = String::from("node0");
    for _ in 0..24 {
        id.push(char::from(ALPHABET[(n % 36) as usize]));
        n /= 36;
    }
    register_secret(&id);
    id
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
}

/// `key=value` pairs of a query string or urlencoded form, decoded as Jetty does.
fn params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

fn param(query: &str, name: &str) -> Option<String> {
    params(query)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `java.net.URLEncoder.encode(s, "UTF-8")`.
fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `?delay=<n>sec` (also `<n>` seconds or `<n>ms`, as `TimeDuration` accepts).
fn parse_delay(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.trim().parse().ok().map(Duration::from_millis);
    }
    let secs = s.strip_suffix("sec").unwrap_or(s);
    secs.trim().parse().ok().map(Duration::from_secs)
}

/// `bytes=a-b` or `bytes=a-` within `size`, as `[start, end)`; anything else is ignored.
fn parse_range(v: &str, size: u64) -> Option<(u64, u64)> {
    let spec = v.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = if b.trim().is_empty() {
        size
    } else {
        b.trim().parse::<u64>().ok()?.saturating_add(1).min(size)
    };
    (start < end).then_some((start, end))
}

/// Jetty 12's ee9 `ErrorHandler.writeErrorPage` (behaviour §6), byte for byte.
fn jetty_error(status: StatusCode, message: &str, uri: &str) -> Response<MockBody> {
    let code = status.as_u16();
    let message = escape_html(message);
    let uri = escape_html(uri);
    let body = format!(
        "<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html;charset=ISO-8859-1\"/>\n\
         <title>Error {code} {message}</title>\n</head>\n\
         <body><h2>HTTP ERROR {code} {message}</h2>\n<table>\n\
         <tr><th>URI:</th><td>{uri}</td></tr>\n\
         <tr><th>STATUS:</th><td>{code}</td></tr>\n\
         <tr><th>MESSAGE:</th><td>{message}</td></tr>\n\
         <tr><th>SERVLET:</th><td>Stapler</td></tr>\n\
         </table>\n{JETTY_FOOTER}\n\n</body>\n</html>\n"
    );
    html(status, "text/html;charset=iso-8859-1", body)
}

fn html(status: StatusCode, content_type: &'static str, body: String) -> Response<MockBody> {
    full(status, content_type, body)
}

fn full(status: StatusCode, content_type: &'static str, body: String) -> Response<MockBody> {
    full_bytes(status, content_type, Bytes::from(body))
}

fn full_bytes(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn empty(status: StatusCode) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(Bytes::new()));
    *response.status_mut() = status;
    response
}

// === jobs, builds, parameters ===

/// The configuration of a job that has none posted (a freestyle project without steps).
const DEFAULT_CONFIG: &str = "<?xml version='1.1' encoding='UTF-8'?>\n<project>\n  <description></description>\n  <keepDependencies>false</keepDependencies>\n  <builders/>\n</project>";

/// A job's state as its API shows it (see `Exchange::job_view`).
#[derive(Debug)]
struct JobView {
    name: String,
    /// Declared by the builder (takes any parameters).
    declared: bool,
    config: String,
    /// Build numbers, newest first, and whether each is still running.
    builds: Vec<(u32, bool)>,
    /// The job's waiting queue item: id, since (epoch ms), due.
    waiting: Option<(u64, u64, Instant)>,
    next_build: u32,
}

impl JobView {
    fn disabled(&self) -> bool {
        xml_texts(&self.config, "disabled")
            .first()
            .map(String::as_str)
            == Some("true")
    }

    /// `BallColor`: grey before any build, blue after a successful one, `_anime` while the
    /// last build runs (every build of the double succeeds).
    fn color(&self) -> &'static str {
        if self.disabled() {
            return "disabled";
        }
        let completed = self.builds.iter().any(|(_, building)| !building);
        let running = self.builds.first().is_some_and(|(_, building)| *building);
        match (completed, running) {
            (false, false) => "notbuilt",
            (false, true) => "notbuilt_anime",
            (true, false) => "blue",
            (true, true) => "blue_anime",
        }
    }
}

/// `ParametersDefinitionProperty` as the job API shows it (in `property` and `actions`).
fn parameters_definition_property(defs: &[ParamDef]) -> Json {
    let definitions = defs
        .iter()
        .map(|d| {
            let default = match d.default_value() {
                Some(v) => Json::Obj(vec![
                    ("_class", Json::str(d.value_class())),
                    ("name", Json::str(&d.name)),
                    ("value", param_json_value(&v)),
                ]),
                None => Json::Null,
            };
            Json::Obj(vec![
                ("_class", Json::Str(format!("hudson.model.{}", d.kind))),
                ("defaultParameterValue", default),
                ("description", Json::str(&d.description)),
                ("name", Json::str(&d.name)),
                ("type", Json::str(d.kind)),
            ])
        })
        .collect();
    Json::Obj(vec![
        (
            "_class",
            Json::str("hudson.model.ParametersDefinitionProperty"),
        ),
        ("parameterDefinitions", Json::Arr(definitions)),
    ])
}

fn param_json_value(v: &ParamValue) -> Json {
    match v {
        ParamValue::Str { value, .. } => Json::str(value),
        ParamValue::Bool { value, .. } => Json::Bool(*value),
        ParamValue::File { .. } => Json::Null,
    }
}

/// `ParametersAction` of a queue item or build.
fn parameters_action(values: &[ParamValue]) -> Json {
    let parameters = values
        .iter()
        .map(|v| {
            let class = match v {
                ParamValue::Str { .. } => "hudson.model.StringParameterValue",
                ParamValue::Bool { .. } => "hudson.model.BooleanParameterValue",
                ParamValue::File { .. } => "hudson.model.FileParameterValue",
            };
            let mut fields = vec![("_class", Json::str(class)), ("name", Json::str(v.name()))];
            if !matches!(v, ParamValue::File { .. }) {
                fields.push(("value", param_json_value(v)));
            }
            Json::Obj(fields)
        })
        .collect();
    Json::Obj(vec![
        ("_class", Json::str("hudson.model.ParametersAction")),
        ("parameters", Json::Arr(parameters)),
    ])
}

/// Queue folding key of defined parameter values: equal values fold, file uploads never do.
fn values_key(values: &[ParamValue]) -> String {
    if values.iter().any(|v| matches!(v, ParamValue::File { .. })) {
        return format!("multipart:{}", rand::random::<u64>());
    }
    values
        .iter()
        .map(|v| format!("{}={}", v.name(), v.display()))
        .collect::<Vec<_>>()
        .join("&")
}

fn quiet_period_why(due: Instant, now: Instant) -> String {
    let left = due.saturating_duration_since(now).as_secs_f64();
    format!("In the quiet period. Expires in {left:.1} sec")
}

/// The name of the document element of `xml` (after the prolog and comments).
fn root_element(xml: &str) -> Option<&str> {
    let mut rest = xml.trim_start_matches('\u{feff}');
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("<?") {
            rest = &r[r.find("?>")? + 2..];
        } else if let Some(r) = rest.strip_prefix("<!--") {
            rest = &r[r.find("-->")? + 3..];
        } else {
            let r = rest.strip_prefix('<')?;
            let end = r.find(|c: char| c.is_whitespace() || c == '>' || c == '/')?;
            return Some(&r[..end]);
        }
    }
}

/// Console notes (`ESC[8mha:…ESC[0m`) removed, as `PlainTextConsoleOutputStream` does.
fn strip_console_notes(raw: &[u8]) -> Vec<u8> {
    const START: &[u8] = b"\x1b[8mha:";
    const END: &[u8] = b"\x1b[0m";
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i..].starts_with(START) {
            if let Some(end) = raw[i..].windows(END.len()).position(|w| w == END) {
                i += end + END.len();
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// One part of a `multipart/form-data` body.
#[derive(Debug)]
struct Part {
    name: String,
    file_name: Option<String>,
    data: Vec<u8>,
}

/// The parts of a `multipart/form-data` body (RFC 7578), empty for any other content type.
fn multipart_parts(content_type: &str, body: &[u8]) -> Vec<Part> {
    let lower = content_type.to_ascii_lowercase();
    if !lower.starts_with("multipart/form-data") {
        return Vec::new();
    }
    let Some(boundary) = content_type
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim_matches('"').to_owned())
    else {
        return Vec::new();
    };
    let delimiter = format!("--{boundary}").into_bytes();
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let mut parts = Vec::new();
    let Some(first) = find(body, &delimiter) else {
        return parts;
    };
    let mut rest = &body[first + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        let Some(rest_after_crlf) = rest.strip_prefix(b"\r\n") else {
            break;
        };
        let Some(head_end) = find(rest_after_crlf, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&rest_after_crlf[..head_end]).into_owned();
        let content = &rest_after_crlf[head_end + 4..];
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(&delimiter);
        let Some(end) = find(content, &closing) else {
            break;
        };
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .unwrap_or("");
        let attribute = |key: &str| {
            disposition.split(';').find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                k.eq_ignore_ascii_case(key)
                    .then(|| v.trim().trim_matches('"').to_owned())
            })
        };
        if let Some(name) = attribute("name") {
            parts.push(Part {
                name,
                file_name: attribute("filename"),
                data: content[..end].to_vec(),
            });
        }
        rest = &content[end + closing.len()..];
    }
    parts
}

// === JSON as Stapler writes it ===

/// A JSON value with ordered object keys (Stapler keeps model order, behaviour §7.7).
#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    Num(i64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    fn str(s: &str) -> Json {
        Json::Str(s.to_owned())
    }

    fn compact(&self) -> String {
        self.write(false, false)
    }

    /// `?pretty=true`.
    fn pretty(&self) -> String {
        self.write(true, false)
    }

    /// JSON, or Stapler's `PythonDataWriter` (the same but `None`, `True`, `False`).
    fn write(&self, pretty: bool, python: bool) -> String {
        let mut w = JsonWriter::new(pretty);
        w.python = python;
        w.write(self);
        w.out
    }

    /// `tree=` (stapler `NamedPathPruner`): only the named properties, recursively; `_class`
    /// is always kept, model order is kept, a property named without `[…]` keeps only the
    /// `_class` of an object value, `{a,b}` slices an array.
    fn prune(&self, tree: &[TreeNode]) -> Json {
        match self {
            Json::Obj(fields) => Json::Obj(
                fields
                    .iter()
                    .filter_map(|(name, v)| {
                        if *name == "_class" {
                            return Some((*name, v.clone()));
                        }
                        let node = tree.iter().find(|n| n.name == *name)?;
                        let v = match (v, node.range) {
                            (Json::Arr(items), Some((from, to))) => {
                                let to = to.unwrap_or(items.len()).min(items.len());
                                let from = from.unwrap_or(0).min(to);
                                Json::Arr(items[from..to].to_vec())
                            }
                            _ => v.clone(),
                        };
                        Some((*name, v.prune(&node.children)))
                    })
                    .collect(),
            ),
            Json::Arr(items) => Json::Arr(items.iter().map(|i| i.prune(tree)).collect()),
            other => other.clone(),
        }
    }
}

/// One property of a `tree=` expression: `name[children]{from,to}`.
#[derive(Debug)]
struct TreeNode {
    name: String,
    children: Vec<TreeNode>,
    range: Option<(Option<usize>, Option<usize>)>,
}

/// Parses `a,b[c,d[e]]{0,10}`.
fn parse_tree(s: &str) -> Vec<TreeNode> {
    fn list(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Vec<TreeNode> {
        let mut nodes = Vec::new();
        loop {
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if matches!(c, ',' | '[' | ']' | '{') {
                    break;
                }
                name.push(c);
                chars.next();
            }
            let mut node = TreeNode {
                name: name.trim().to_owned(),
                children: Vec::new(),
                range: None,
            };
            if chars.peek() == Some(&'[') {
                chars.next();
                node.children = list(chars);
                if chars.peek() == Some(&']') {
                    chars.next();
                }
            }
            if chars.peek() == Some(&'{') {
                chars.next();
                let mut spec = String::new();
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                    spec.push(c);
                }
                node.range = Some(match spec.split_once(',') {
                    Some((a, b)) => (a.trim().parse().ok(), b.trim().parse().ok()),
                    None => {
                        let n: Option<usize> = spec.trim().parse().ok();
                        (n, n.map(|n| n + 1))
                    }
                });
            }
            if !node.name.is_empty() {
                nodes.push(node);
            }
            match chars.peek() {
                Some(',') => {
                    chars.next();
                }
                _ => return nodes,
            }
        }
    }
    list(&mut s.chars().peekable())
}

/// A port of stapler's `export/JSONDataWriter.java` state machine.
struct JsonWriter {
    out: String,
    need_comma: bool,
    /// `None` when not pretty-printing.
    indent: Option<usize>,
    /// Stapler's `PythonDataWriter`.
    python: bool,
}

impl JsonWriter {
    fn new(pretty: bool) -> Self {
        Self {
            out: String::new(),
            need_comma: false,
            indent: pretty.then_some(0),
            python: false,
        }
    }

    fn write(&mut self, v: &Json) {
        match v {
            Json::Null => self.data(if self.python { "None" } else { "null" }),
            Json::Bool(b) => self.data(match (*b, self.python) {
                (true, false) => "true",
                (false, false) => "false",
                (true, true) => "True",
                (false, true) => "False",
            }),
            Json::Num(n) => self.data(&n.to_string()),
            Json::Str(s) => {
                let mut buf = String::from('"');
                for c in s.chars() {
                    match c {
                        '"' => buf.push_str("\\\""),
                        '\\' => buf.push_str("\\\\"),
                        '\n' => buf.push_str("\\n"),
                        '\r' => buf.push_str("\\r"),
                        '\t' => buf.push_str("\\t"),
                        c => buf.push(c),
                    }
                }
                buf.push('"');
                self.data(&buf);
            }
            Json::Arr(items) => {
                self.open('[');
                for item in items {
                    self.write(item);
                }
                self.close(']');
            }
            Json::Obj(fields) => {
                self.open('{');
                for (name, value) in fields {
                    self.name(name);
                    self.write(value);
                }
                self.close('}');
            }
        }
    }

    fn name(&mut self, name: &str) {
        self.comma();
        if self.indent.is_some() {
            let _ = write!(self.out, "\"{name}\" : ");
        } else {
            let _ = write!(self.out, "\"{name}\":");
        }
        self.need_comma = false;
    }

    fn data(&mut self, v: &str) {
        self.comma();
        self.out.push_str(v);
    }

    fn comma(&mut self) {
        if self.need_comma {
            self.out.push(',');
            self.newline();
        }
        self.need_comma = true;
    }

    fn newline(&mut self) {
        if let Some(level) = self.indent {
            self.out.push('\n');
            self.out.push_str(&" ".repeat(level * 2));
        }
    }

    fn open(&mut self, symbol: char) {
        self.comma();
        self.out.push(symbol);
        self.need_comma = false;
        if let Some(level) = &mut self.indent {
            *level += 1;
        }
        self.newline();
    }

    fn close(&mut self, symbol: char) {
        if let Some(level) = &mut self.indent {
            *level -= 1;
        }
        self.newline();
        self.need_comma = true;
        self.out.push(symbol);
    }
}

// === response body ===

/// Response body of the double: a buffer, a generated artifact stream, or a progressive log.
#[derive(Debug)]
pub struct MockBody {
    kind: BodyKind,
}

#[derive(Debug)]
enum BodyKind {
    Full(Option<Bytes>),
    /// Pattern bytes `[next, end)`, sliced from `block` so that no byte is copied.
    Pattern {
        block: Bytes,
        next: u64,
        end: u64,
    },
    /// A first frame, then whatever arrives until every sender is gone.
    Stream {
        first: Option<Bytes>,
        rx: mpsc::UnboundedReceiver<Bytes>,
    },
}

impl MockBody {
    fn full(bytes: Bytes) -> Self {
        Self {
            kind: BodyKind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    fn pattern(start: u64, end: u64) -> Self {
        // Long enough for any chunk starting at any phase of the pattern.
        let block_len = ARTIFACT_CHUNK + PATTERN_MODULUS as usize;
        Self {
            kind: BodyKind::Pattern {
                block: Bytes::from(pattern_bytes(0, block_len)),
                next: start,
                end,
            },
        }
    }

    fn stream(first: Bytes, rx: mpsc::UnboundedReceiver<Bytes>) -> Self {
        Self {
            kind: BodyKind::Stream {
                first: (!first.is_empty()).then_some(first),
                rx,
            },
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().kind {
            BodyKind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            BodyKind::Pattern { block, next, end } => {
                if *next >= *end {
                    return Poll::Ready(None);
                }
                let len = (*end - *next).min(ARTIFACT_CHUNK as u64) as usize;
                let phase = (*next % PATTERN_MODULUS) as usize;
                *next += len as u64;
                Poll::Ready(Some(Ok(Frame::data(block.slice(phase..phase + len)))))
            }
            BodyKind::Stream { first, rx } => {
                if let Some(first) = first.take() {
                    return Poll::Ready(Some(Ok(Frame::data(first))));
                }
                rx.poll_recv(cx)
                    .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full(bytes) => bytes.is_none(),
            BodyKind::Pattern { next, end, .. } => next >= end,
            BodyKind::Stream { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            BodyKind::Pattern { next, end, .. } => SizeHint::with_exact(end - next),
            BodyKind::Stream { .. } => SizeHint::default(),
        }
    }
}
