//! crumb-proxy: a local HTTP proxy that lets any tool drive a Jenkins
//! controller without knowing Jenkins authentication.
//!
//! It accepts plain, unauthenticated HTTP on a loopback address, adds the
//! configured Jenkins credentials (HTTP Basic) to every request and, for
//! POSTs, a CSRF crumb together with the session cookie Jenkins bound it to.
//! When Jenkins answers 403 "No valid crumb was included in the request" it
//! fetches a fresh crumb and sends the request once more. Everything else
//! streams through untouched.
//!
//! # Layout
//!
//! - `activity`: which client connections are idle; closing the oldest
//!   idle ones at the connection cap.
//! - `config`: file format, overrides, validation ([`Config`], [`ConfigError`]);
//!   `config/` holds the `[listen]` and `[policy]` sections and secret loading.
//! - `canonical`: canonical request paths (and their literal reading) and
//!   rule patterns.
//! - `binding`: the model of Jenkins' URL binding: which object a path
//!   reaches, names and actions, the dangerous actions.
//! - `check`: asking Jenkins who we are (`crumb-proxy check`, readiness).
//! - `filter`: the security policy (client token, Host, browsers, rules).
//! - `listener`: TCP and Unix socket listeners, peers, idle timeouts.
//! - `credentials`: `Secret`, the precomputed `Authorization` value, and
//!   re-reading a rotated secret file.
//! - `crumb`: fetching, caching and invalidating crumbs with their session.
//! - `headers`: hop-by-hop removal, client credential removal, `Location`.
//! - `health`: readiness, Prometheus metrics, the health listener.
//! - `tls`: the rustls client configuration for an `https` upstream.
//! - `upstream`: opening connections to Jenkins, the pooled client (crumb
//!   fetches, checks, upgrades) and the timeouts.
//! - `lane`: each client connection's own Jenkins connection, driven on
//!   the client's worker, and the idle connections left between clients.
//! - `proxy`: the request pipeline below.
//! - `rate`: the least rate at which a client must send and take bytes.
//! - `body`: body types, the client's request body (held to the least
//!   rate, discarded when not needed) and the few bounded reads.
//! - `rewrite`: replacing Jenkins' root URLs in API bodies while streaming.
//! - `error`: the one error type and its responses.
//! - `server`: the accept loop, one single-threaded worker runtime per
//!   core, connections, graceful shutdown ([`App`], [`serve`]).
//! - `telemetry`: the tracing subscriber.
//! - `timer`: deadlines that only move later, kept in one timer.
//! - `worker`: which worker a thread is; values kept once per worker, so
//!   that requests on different cores write to no common memory.
//!
//! # Life of a request
//!
//! 1. `server` accepts a TCP or Unix socket connection (at most
//!    `limits.max_connections` at once; at the cap the connection idle
//!    longest is closed to make room), hands it to one of its workers
//!    (round robin), and serves HTTP/1.1 on it there with a
//!    header size cap, a header-read timeout and an idle timeout; each
//!    request goes to `proxy::Proxy`.
//! 2. `filter` refuses, before anything is forwarded: a missing or wrong
//!    client token, a `Host` the proxy does not answer to, a method that is
//!    not a standard upper-case one (or `TRACE`), browser provenance, and
//!    anything a policy rule denies on what Jenkins would bind the path to
//!    (`binding`: read-only mode, user rules, built-in dangerous actions,
//!    on every reading of the canonical path). The `/whoAmI/` page of an
//!    old Jenkins, which echoes request headers, is refused after asking
//!    Jenkins' version.
//! 3. `proxy` refuses CONNECT and non-path targets, maps the path and query
//!    beneath the upstream's context path, strips hop-by-hop headers (RFC
//!    9110 §7.6.1), any upgrade but WebSocket, the client's `Authorization`,
//!    `Cookie` and crumb headers and every forwarding and identity header,
//!    sets Jenkins' `Host`, the proxy's `Authorization` and its own
//!    `X-Forwarded-*`.
//! 4. A POST (when crumbs are on) keeps its body if its declared length is
//!    within the replay cap and the memory all kept bodies share has room
//!    for it, takes the cached crumb or fetches one (one fetch
//!    at a time, shared by all waiting requests), and goes out with the crumb
//!    header and its session cookie. Other requests stream straight out.
//! 5. If Jenkins answers a crumb-carrying POST with 403 and the crumb
//!    rejection text, the crumb is dropped, a fresh one fetched and the kept
//!    body sent once more; a streamed body cannot be, and the 403 goes back
//!    with `X-Crumb-Proxy-Error: crumb-rejected-not-replayable`.
//! 6. The response loses hop-by-hop, CORS and `Set-Cookie` headers; a `Location`
//!    into Jenkins is rewritten to the proxy; the body streams back as it
//!    arrives. Failures of the proxy itself become a response in `error`.
//!    A request body the proxy no longer needs (refused, or answered
//!    before it was read) is read and discarded in the background
//!    (`body::ClientBody`), so the client's connection survives.
//! 7. One log line records peer, method, path (never the query), status,
//!    duration, request id and what happened about the crumb; the metrics
//!    count it.

mod activity;
mod binding;
mod body;
mod canonical;
mod check;
mod config;
mod credentials;
mod crumb;
mod error;
mod filter;
mod headers;
mod health;
mod lane;
mod listener;
mod proxy;
mod rate;
mod rewrite;
mod server;
mod telemetry;
mod timer;
mod tls;
mod upstream;
mod worker;

pub use check::{check, CheckReport};
pub use config::{Config, ConfigError, ListenAddr, Overrides};
pub use health::probe;
pub use listener::Listener;
pub use server::{serve, shutdown_signal, App, ServeError};
pub use telemetry::{init as init_telemetry, LogFormat};
pub use tls::TlsInitError;
pub use upstream::UpstreamInitError;
