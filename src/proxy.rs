//! The request pipeline: one hand-written service that turns a plain local
//! request into an authenticated Jenkins request and streams the answer back.
//!
//! This module owns the order of the steps (see the crate docs, "Life of a
//! request"), which requests need a crumb, telling a crumb rejection from any
//! other 403, the single replay after a crumb rejection, the response
//! fix-ups, upgrade tunnels and the one log line per request. It builds no
//! error bodies (`error` does), parses no crumbs (`crumb` does) and opens no
//! sockets (`upstream` and `server` do).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::activity::{Activity, Tracked};
use crate::body::{self, ProxyBody};
use crate::canonical::CanonicalPath;
use crate::config::{Config, CrumbMode};
use crate::credentials::{CredentialStore, Credentials, SecretKind};
use crate::crumb::{self, Crumb, CrumbCache, Lookup};
use crate::error::{ProxyError, ERROR_HEADER};
use crate::filter::Policy;
use crate::headers;
use crate::health::{CredentialState, Health};
use crate::lane::Lane;
use crate::listener::Peer;
use crate::rewrite::Roots;
use crate::upstream::{Upstream, UpstreamError, UpstreamInitError};
use crate::worker::PerWorker;

/// The text of Jenkins' crumb rejection (`CrumbFilter`:
/// `sendError(403, "No valid crumb was included in the request")`). It is in
/// the HTML, JSON and plain-text variants of Jetty's error page alike.
const CRUMB_REJECTION: &[u8] = b"No valid crumb was included in the request";

/// How much of a 403 body is read to look for [`CRUMB_REJECTION`]. Jetty's
/// error page is about 500 bytes.
const MAX_PEEK_BYTES: usize = 64 * 1024;

/// The roots built for one proxy address (see [`Shared::roots`]).
type RootsFor = (String, Arc<Roots>);

/// State shared by every connection: built once; what changes (the crumb,
/// a rotated secret, the learned root URL, readiness) changes behind its
/// own lock or cell.
#[derive(Debug)]
pub(crate) struct Shared {
    upstream: Upstream,
    credentials: CredentialStore,
    health: Arc<Health>,
    crumbs: CrumbCache,
    policy: Policy,
    rewrite_api_urls: bool,
    /// Jenkins' configured root URL: `upstream.public_url`, or what the
    /// root object's `url` says (asked once, when first needed).
    public_url: tokio::sync::OnceCell<Option<String>>,
    /// The roots for the proxy address clients use (nearly always one),
    /// built once per worker rather than per response.
    roots: PerWorker<std::sync::Mutex<Option<RootsFor>>>,
    /// Whether POSTs carry a crumb at all (`crumb.mode`, resolved against
    /// the kind of secret once).
    crumbs_enabled: bool,
    replay_body_max_bytes: u64,
    /// What all kept bodies may take together (`crumb.replay_budget_bytes`).
    replay_budget: body::ReplayBudget,
    /// The least rate at which a client must send its body.
    min_rate: crate::rate::MinRate,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Result<Self, UpstreamInitError> {
        let crumbs_enabled = match config.crumb.mode {
            // Jenkins exempts API-token requests from CSRF checks
            // (`ApiCrumbExclusion`, 2.96+), so a token needs no crumb.
            CrumbMode::Auto => config.credentials.kind() == SecretKind::Password,
            CrumbMode::Always => true,
            CrumbMode::Never => false,
        };
        Ok(Self {
            upstream: Upstream::new(&config.upstream)?,
            credentials: config.credentials,
            health: Arc::new(Health::new()),
            crumbs: CrumbCache::new(config.crumb.max_idle),
            policy: config.policy,
            rewrite_api_urls: config.upstream.rewrite_api_urls,
            public_url: match &config.upstream.public_url {
                Some(url) => tokio::sync::OnceCell::new_with(Some(Some(url.clone()))),
                None => tokio::sync::OnceCell::new(),
            },
            roots: PerWorker::new(std::sync::Mutex::default),
            crumbs_enabled,
            replay_body_max_bytes: config.crumb.replay_body_max_bytes,
            replay_budget: body::ReplayBudget::new(config.crumb.replay_budget_bytes),
            min_rate: config.limits.min_rate,
        })
    }

    pub(crate) fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    pub(crate) fn crumbs_enabled(&self) -> bool {
        self.crumbs_enabled
    }

    pub(crate) fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The credentials for the next request. When the secret file has
    /// changed, the crumb and session of the old secret are dropped and
    /// readiness waits for the new secret to be checked.
    async fn credentials(&self) -> Arc<Credentials> {
        let (credentials, rotated) = self.credentials.current();
        if rotated {
            // Boxed, here and on the other rare paths of a request: an
            // inline future would make every request's state that large.
            Box::pin(self.crumbs.clear()).await;
            self.health.set_credentials(CredentialState::Unknown);
        }
        credentials
    }

    /// The roots that lead into Jenkins, each to be replaced by the
    /// proxy's own root for this client: the upstream URL, the proxy's
    /// address with Jenkins' context path (what Jenkins builds from our
    /// `X-Forwarded-*`), and Jenkins' configured root URL.
    async fn roots(&self, proxy_authority: &str) -> Arc<Roots> {
        let learned = !self.rewrite_api_urls || self.public_url.initialized();
        if learned {
            let cached = self
                .roots
                .local()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((authority, roots)) = &*cached {
                if authority == proxy_authority {
                    return roots.clone();
                }
            }
        }
        let base = self.upstream.base();
        let mut roots = vec![base.to_string()];
        if !base.prefix().is_empty() {
            roots.push(format!("http://{proxy_authority}{}/", base.prefix()));
        }
        if self.rewrite_api_urls {
            if let Some(Some(public)) = Box::pin(self.public_url()).await {
                roots.push(public.clone());
            }
        }
        let roots = Arc::new(Roots::new(roots, &format!("http://{proxy_authority}/")));
        // Cache only once the configured root URL is known for good.
        if !self.rewrite_api_urls || self.public_url.initialized() {
            *self
                .roots
                .local()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((proxy_authority.to_owned(), roots.clone()));
        }
        roots
    }

    /// Jenkins' configured root URL, asked once (`/api/json?tree=url`, the
    /// root object's `url`, which is null when none is configured). A
    /// failed attempt is tried again next time.
    async fn public_url(&self) -> Option<&Option<String>> {
        self.public_url
            .get_or_try_init(|| async {
                let credentials = self.credentials.current().0;
                crate::check::configured_root_url(&self.upstream, &credentials).await
            })
            .await
            .ok()
    }

    /// Before Jenkins 2.219 (LTS 2.204.2) the `/whoAmI/` page printed every
    /// request header, the proxy's `Authorization` among them. The version
    /// is asked right before (`X-Jenkins` of `whoAmI/api/json`, which never
    /// echoes), so an upgrade or downgrade is seen; a page whose version is
    /// old or unknown is refused.
    async fn check_who_am_i_page(
        &self,
        method: &Method,
        path: &CanonicalPath,
    ) -> Result<(), ProxyError> {
        let credentials = self.credentials().await;
        let identity = crate::check::who_am_i(&self.upstream, &credentials).await;
        let version = match &identity {
            Ok(identity) => identity.version.as_deref(),
            Err(crate::check::WhoAmIError::Upstream(e)) => return Err(e.clone().into()),
            Err(_) => None,
        };
        if version.is_some_and(|v| !crate::check::echoes_request_headers(v)) {
            return Ok(());
        }
        Err(ProxyError::Rejected(crate::filter::Rejection::who_am_i(
            method, path, version,
        )))
    }

    /// Asks Jenkins whether the current credentials work (readiness).
    pub(crate) async fn check_credentials(&self) -> CredentialState {
        let credentials = self.credentials().await;
        crate::check::credential_state(&crate::check::who_am_i(&self.upstream, &credentials).await)
    }

    /// Sends to Jenkins on the client's lane (or, for an upgrade, on the
    /// pooled client, whose connection task survives the client
    /// connection), timing it and counting Jenkins' statuses. A 401 means
    /// Jenkins rejects the configured secret: not ready.
    async fn send(
        &self,
        lane: Option<&Lane>,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let started = Instant::now();
        let resp = match lane {
            Some(lane) => {
                let deadline = crate::timer::later(started, self.upstream.response_timeout());
                lane.send_by(&self.upstream, req, deadline).await?
            }
            None => Box::pin(self.upstream.send(req)).await?,
        };
        self.health.metrics.upstream_latency(started.elapsed());
        self.health.metrics.jenkins_status(resp.status());
        if resp.status() == StatusCode::UNAUTHORIZED {
            self.health.set_credentials(CredentialState::Rejected);
        }
        Ok(resp)
    }
}

/// The per-connection service: shared state plus who is calling and where.
/// Cloned for every request, so it is one reference count of this
/// connection's own, not one each on the state all workers share.
#[derive(Debug, Clone)]
pub(crate) struct Proxy(Arc<Connection>);

#[derive(Debug)]
struct Connection {
    shared: Arc<Shared>,
    /// This client connection's way to Jenkins.
    lane: Arc<Lane>,
    /// Whether a request is in flight, for reclaiming idle connections.
    activity: Arc<Activity>,
    peer: Peer,
    /// How clients reach the listener (the bound address, port 0 resolved),
    /// used for `Location` rewriting when a client sent no usable `Host`.
    authority: Arc<str>,
    /// The WebSocket tunnel this connection became, if any: the connection
    /// keeps its slot under `limits.max_connections` until it ends.
    tunnel: TunnelSlot,
}

/// Where `forward` leaves the task of an upgraded connection's tunnel.
type TunnelSlot = std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>;

impl Proxy {
    pub(crate) fn new(
        shared: Arc<Shared>,
        peer: Peer,
        authority: Arc<str>,
        activity: Arc<Activity>,
    ) -> Self {
        Self(Arc::new(Connection {
            shared,
            lane: Arc::default(),
            activity,
            peer,
            authority,
            tunnel: TunnelSlot::default(),
        }))
    }

    /// The tunnel this connection became, once hyper has handed it over.
    pub(crate) fn take_tunnel(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.0
            .tunnel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Whether this connection has a request in flight.
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.0.activity
    }

    /// The connection's lane, to be started with it and parked after.
    pub(crate) fn lane(&self) -> &Arc<Lane> {
        &self.0.lane
    }

    pub(crate) fn upstream(&self) -> &Upstream {
        &self.0.shared.upstream
    }

    pub(crate) fn peer(&self) -> Peer {
        self.0.peer
    }

    pub(crate) fn metrics(&self) -> &Arc<crate::health::Metrics> {
        &self.0.shared.health.metrics
    }
}

impl hyper::service::Service<Request<Incoming>> for Proxy {
    // The body marks the connection idle again once it is written.
    type Response = Response<Tracked>;
    // Infallible on purpose: an `Err` would make hyper drop the connection
    // without a response (tower-http `timeout` explains the same choice).
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        let started = Instant::now();
        this.0.activity.begin(started);
        Box::pin(async move {
            let resp = handle(&this, req, started).await;
            Ok(resp.map(|body| Tracked::new(body, this.0.activity.clone())))
        })
    }
}

/// What happened about the crumb, for the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrumbNote {
    /// Not a request that carries a crumb.
    None,
    Cached,
    Fetched,
    /// CSRF protection is off in Jenkins.
    CsrfOff,
    /// Jenkins rejected the crumb; a fresh one was fetched and the request
    /// sent a second time.
    Retried,
    /// Jenkins rejected the crumb and the body was too large to keep.
    NotReplayed,
}

impl CrumbNote {
    fn as_str(self) -> &'static str {
        match self {
            CrumbNote::None => "none",
            CrumbNote::Cached => "cached",
            CrumbNote::Fetched => "fetched",
            CrumbNote::CsrfOff => "csrf-off",
            CrumbNote::Retried => "retried",
            CrumbNote::NotReplayed => "rejected-not-replayed",
        }
    }
}

/// The request id header: kept if the client sent a usable one, generated
/// otherwise, forwarded to Jenkins and returned to the client.
const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// A client's request id is kept if it is short, visible ASCII.
fn usable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic())
}

/// A new request id: 128 bits in hex, from a per-thread generator seeded
/// from the OS (`RandomState`) and stepped by SplitMix64, costing no system
/// call. Ids do not repeat within a thread and differ between threads and
/// runs; they are correlation ids, not secrets (one id gives away the next
/// ones of its thread), and nothing trusts them.
fn new_request_id() -> HeaderValue {
    use std::cell::Cell;
    use std::hash::{BuildHasher as _, Hasher as _};
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5eed);
            h.finish()
        });
    }
    fn next(state: &Cell<u64>) -> u64 {
        let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (a, b) = STATE.with(|state| (next(state), next(state)));
    let mut id = [0u8; 32];
    for (i, byte) in a.to_be_bytes().iter().chain(&b.to_be_bytes()).enumerate() {
        id[2 * i] = HEX[usize::from(byte >> 4)];
        id[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Runs [`forward`], turns its error into a response, counts and logs the
/// request in one line.
async fn handle(
    proxy: &Proxy,
    mut req: Request<Incoming>,
    started: Instant,
) -> Response<ProxyBody> {
    let (shared, peer) = (&*proxy.0.shared, proxy.0.peer);
    let method = req.method().clone();
    // For the log line, which shows the path only: Jenkins puts `token=`
    // in query strings of remote build triggers, so the query is never
    // logged. (Cloning a `Uri` copies no bytes.)
    let uri = req.uri().clone();
    let path = uri.path();
    let request_id = match req.headers().get(REQUEST_ID) {
        Some(id) if usable_request_id(id) => id.clone(),
        _ => new_request_id(),
    };
    req.headers_mut().insert(REQUEST_ID, request_id.clone());
    let req = req.map(|b| body::ClientBody::new(b, shared.min_rate));
    let mut note = CrumbNote::None;
    let result = forward(
        shared,
        &proxy.0.lane,
        &proxy.0.authority,
        &proxy.0.tunnel,
        req,
        &mut note,
    )
    .await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let id = request_id.to_str().unwrap_or_default();
    let mut resp = match result {
        Ok(resp) => {
            tracing::info!(
                %peer,
                %method,
                path,
                status = resp.status().as_u16(),
                elapsed_ms,
                crumb = note.as_str(),
                request_id = id,
                "request"
            );
            resp
        }
        Err(err) => {
            tracing::warn!(
                %peer,
                %method,
                path,
                status = err.status().as_u16(),
                elapsed_ms,
                crumb = note.as_str(),
                request_id = id,
                kind = err.kind(),
                error = %err,
                "request"
            );
            if let ProxyError::Rejected(r) = &err {
                shared.health.metrics.refused(r.kind);
            }
            if err.kind() == "client-too-slow" {
                shared.health.metrics.too_slow("request-body");
            }
            err.into_response()
        }
    };
    shared.health.metrics.request(&method, resp.status());
    if note == CrumbNote::Retried {
        shared.health.metrics.crumb_retry();
    }
    resp.headers_mut().insert(REQUEST_ID, request_id);
    resp
}

/// The request as it will go to Jenkins, minus its body, so that it can be
/// sent twice.
struct Outgoing {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Outgoing {
    /// The request, for a send that will not be repeated.
    fn into_request(self, body: ProxyBody) -> Request<ProxyBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.headers_mut() = self.headers;
        req
    }

    /// A copy of the request with `crumb`, for a send that may be repeated.
    fn request(&self, body: ProxyBody, crumb: Option<&Crumb>) -> Request<ProxyBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        if let Some(crumb) = crumb {
            let headers = req.headers_mut();
            headers.insert(crumb.field.clone(), crumb.value.clone());
            if let Some(cookie) = &crumb.cookie {
                headers.insert(header::COOKIE, cookie.clone());
            }
        }
        req
    }
}

/// The pipeline. Every failure is a `ProxyError`; nothing here panics.
async fn forward(
    shared: &Shared,
    lane: &Lane,
    local_authority: &str,
    tunnel_slot: &TunnelSlot,
    mut req: Request<body::ClientBody>,
    note: &mut CrumbNote,
) -> Result<Response<ProxyBody>, ProxyError> {
    // 0. CONNECT is not for us; everything else meets the policy first: a
    //    refused request never reaches Jenkins, not even for a crumb.
    if req.method() == Method::CONNECT {
        return Err(ProxyError::Connect);
    }
    let canonical = CanonicalPath::new(req.uri().path());
    let access = shared
        .policy
        .check_path(req.method(), req.uri(), req.headers(), &canonical)
        .map_err(ProxyError::Rejected)?;
    if access.who_am_i_page {
        Box::pin(shared.check_who_am_i_page(req.method(), &canonical)).await?;
    }

    // 1. Only origin-form targets ("/job/x/build?delay=0sec"). An
    //    absolute-form target from a client that treats us as an HTTP proxy
    //    is taken for its path; "*" is refused.
    let target = req
        .uri()
        .path_and_query()
        .filter(|pq| pq.as_str().starts_with('/'))
        .cloned()
        .ok_or(ProxyError::BadRequestTarget)?;
    let uri = shared
        .upstream
        .base()
        .join(&target)
        .map_err(|_| ProxyError::BadRequestTarget)?;
    let proxy_authority = client_authority(&req, local_authority);

    // 2. Headers: connection-level ones go (RFC 9110 §7.6.1), the client's
    //    credentials go, Jenkins' Host and our credentials come in. An
    //    upgrade (WebSocket) is re-announced explicitly.
    let upgrade = headers::requested_upgrade(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (parts, incoming) = req.into_parts();
    let mut headers = parts.headers;
    headers::strip_hop_by_hop(&mut headers);
    headers::strip_client_credentials(
        &mut headers,
        shared.crumbs.known_field().as_ref(),
        &shared.policy.identity_headers,
    );
    headers.insert(header::HOST, shared.upstream.host().clone());
    headers::set_forwarded(&mut headers, &proxy_authority);
    // API answers get their root URLs rewritten, which needs them
    // uncompressed (Stapler gzips API output when asked to).
    let rewrite_body =
        shared.rewrite_api_urls && parts.method != Method::HEAD && is_api_path(&canonical);
    if rewrite_body {
        headers.remove(header::ACCEPT_ENCODING);
    }
    let credentials = shared.credentials().await;
    headers.insert(header::AUTHORIZATION, credentials.authorization().clone());
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    let outgoing = Outgoing {
        method: parts.method,
        uri,
        headers,
    };

    // 3. Send: POSTs through the crumb path (Jenkins' `CrumbFilter` checks
    //    only POST), everything else streamed straight through.
    let mut resp = if outgoing.method == Method::POST && shared.crumbs_enabled {
        Box::pin(send_with_crumb(shared, lane, &outgoing, incoming, note)).await?
    } else {
        let lane = client_upgrade.is_none().then_some(lane);
        let mut resp = shared
            .send(lane, outgoing.into_request(body::from_client(incoming)))
            .await?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client) = client_upgrade {
                let task = tokio::spawn(tunnel(client, hyper::upgrade::on(&mut resp)));
                *tunnel_slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
            }
        }
        resp.map(body::stream)
    };

    // 4. Response fix-ups.
    let upgrade = (resp.status() == StatusCode::SWITCHING_PROTOCOLS)
        .then(|| resp.headers().get(header::UPGRADE).cloned())
        .flatten();
    let rewrite_body = rewrite_body
        && resp.status().is_success()
        && !resp.headers().contains_key(header::CONTENT_ENCODING);
    let roots = if rewrite_body || resp.headers().contains_key(header::LOCATION) {
        Some(shared.roots(&proxy_authority).await)
    } else {
        None
    };
    let headers = resp.headers_mut();
    headers::strip_hop_by_hop(headers);
    headers::strip_set_cookie(headers);
    headers::strip_cors(headers);
    if let Some(roots) = &roots {
        headers::rewrite_location(headers, shared.upstream.base(), &proxy_authority, roots);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    match roots {
        Some(roots) if rewrite_body => {
            // The length changes: the body goes out chunked.
            resp.headers_mut().remove(header::CONTENT_LENGTH);
            Ok(resp.map(|b| body::stream(roots.wrap(b))))
        }
        _ => Ok(resp),
    }
}

/// `…/api/json`, `…/api/xml`, `…/api/python`: Jenkins' remote API, whose
/// answers carry absolute URLs. Artifacts and logs never match.
fn is_api_path(path: &CanonicalPath) -> bool {
    matches!(path.last_two(), Some(("api", "json" | "xml" | "python")))
}

/// A POST that needs a crumb: keep the body if it is small enough to send
/// twice, add the cached (or a freshly fetched) crumb and its session
/// cookie, and if Jenkins rejects the crumb, fetch a new one and send the
/// request once more. Jenkins' `CrumbFilter` runs before any action, so a
/// crumb rejection guarantees the first attempt did nothing; no other
/// status is ever retried.
async fn send_with_crumb(
    shared: &Shared,
    lane: &Lane,
    outgoing: &Outgoing,
    incoming: body::ClientBody,
    note: &mut CrumbNote,
) -> Result<Response<ProxyBody>, ProxyError> {
    // A body whose declared length fits the cap is read now so it can be
    // replayed, if the memory all kept bodies share has room for it; a
    // larger or chunked (unbounded) body, or one beyond the budget, streams
    // as it comes. The reservation is held until the request is done.
    let reserved = incoming
        .size_hint()
        .exact()
        .filter(|len| *len <= shared.replay_body_max_bytes)
        .and_then(|len| Some((len, shared.replay_budget.try_reserve(len)?)));
    let (kept, first_body) = match reserved {
        Some((len, reservation)) => {
            let bytes = body::read_declared(incoming, len)
                .await
                .map_err(ProxyError::ClientBody)?;
            (Some((bytes.clone(), reservation)), body::full(bytes))
        }
        None => (None, body::from_client(incoming)),
    };

    let (crumb, lookup) = get_crumb(shared).await?;
    *note = match (&crumb, lookup) {
        (None, _) => CrumbNote::CsrfOff,
        (Some(_), Lookup::Cached) => CrumbNote::Cached,
        (Some(_), Lookup::Fetched) => CrumbNote::Fetched,
    };
    let resp = shared
        .send(Some(lane), outgoing.request(first_body, crumb.as_deref()))
        .await?;
    if resp.status() != StatusCode::FORBIDDEN {
        return Ok(resp.map(body::stream));
    }

    // A 403: a crumb rejection or a genuine permission error? Only the body
    // tells (a permission 403 has the same status and similar headers).
    let (parts, body) = resp.into_parts();
    let (rejected, body) = match body::read_up_to(body, MAX_PEEK_BYTES).await {
        Ok(Ok(bytes)) => (contains(&bytes, CRUMB_REJECTION), body::full(bytes)),
        Ok(Err(prefixed)) => (false, body::stream(prefixed)),
        Err(e) => {
            return Err(ProxyError::Upstream(UpstreamError::Failed {
                reason: e.to_string(),
            }))
        }
    };
    if !rejected {
        return Ok(Response::from_parts(parts, body));
    }
    shared.crumbs.invalidate(crumb.as_deref()).await;
    let Some((bytes, _reservation)) = kept else {
        *note = CrumbNote::NotReplayed;
        let mut resp = Response::from_parts(parts, body);
        resp.headers_mut().insert(
            ERROR_HEADER,
            HeaderValue::from_static("crumb-rejected-not-replayable"),
        );
        return Ok(resp);
    };
    let (crumb, _) = get_crumb(shared).await?;
    *note = CrumbNote::Retried;
    let resp = shared
        .send(
            Some(lane),
            outgoing.request(body::full(bytes), crumb.as_deref()),
        )
        .await?;
    Ok(resp.map(body::stream))
}

async fn get_crumb(shared: &Shared) -> Result<(Option<Arc<Crumb>>, Lookup), ProxyError> {
    let credentials = shared.credentials.current().0;
    let fetch = || async move {
        shared.health.metrics.crumb_fetch();
        crumb::fetch(&shared.upstream, &credentials).await
    };
    Ok(shared.crumbs.get(Instant::now(), fetch).await?)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The proxy's own address as the client used it (its `Host`), so that a
/// rewritten `Location` leads back the same way; the bound address when the
/// client sent none that parses.
fn client_authority<B>(req: &Request<B>, local_authority: &str) -> String {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<Authority>().ok())
        .or_else(|| req.uri().authority().cloned())
        .map_or_else(|| local_authority.to_owned(), |a| a.as_str().to_owned())
}

/// Copies bytes both ways between an upgraded client connection and the
/// upgraded Jenkins connection until either side closes.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}
