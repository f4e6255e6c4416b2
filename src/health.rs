//! Liveness, readiness and metrics, on a listener of their own.
//!
//! This module owns the readiness state (ready once the credentials were
//! checked against Jenkins, not ready while Jenkins rejects them or after a
//! shutdown signal), liveness (lost for good once a worker task panicked),
//! the Prometheus metrics, the background credential
//! check, and the small HTTP server for `/livez`, `/readyz` and `/metrics`.
//! It is never reachable on the proxied path space: a health path there
//! would shadow a Jenkins path (anchors.md §3.2, aws-sigv4-proxy#201).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::worker::PerWorker;

/// How often the credentials are checked while they are not known good,
/// and while they are.
const CHECK_RETRY: Duration = Duration::from_secs(3);
const CHECK_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum CredentialState {
    /// Not checked yet, or Jenkins could not be asked.
    Unknown = 0,
    Accepted = 1,
    /// Jenkins answered 401, or treated the proxy as anonymous.
    Rejected = 2,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    // Static strings: counting a request allocates nothing.
    method: &'static str,
    status_class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartLabels {
    part: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// The `method` and `status_class` label values of `requests_total`.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "other",
];
const CLASSES: [&str; 6] = ["0xx", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// `requests_total`, counted per worker and added up when scraped: a
/// `Family` would take a lock and bump a counter that every core shares on
/// every request (see `worker`). Series appear once they count something.
#[derive(Debug, Clone)]
struct RequestCounts(Arc<PerWorker<[[AtomicU64; CLASSES.len()]; METHODS.len()]>>);

impl Default for RequestCounts {
    fn default() -> Self {
        Self(Arc::new(PerWorker::new(Default::default)))
    }
}

impl EncodeMetric for RequestCounts {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (m, method) in METHODS.into_iter().enumerate() {
            for (c, status_class) in CLASSES.into_iter().enumerate() {
                let total = self.0.sum(|counts| &counts[m][c]);
                if total > 0 {
                    encoder
                        .encode_family(&RequestLabels {
                            method,
                            status_class,
                        })?
                        .encode_counter::<NoLabelSet, _, u64>(&total, None)?;
                }
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// Upper bounds of the `upstream_latency_seconds` buckets (and `+Inf`).
const LATENCY_BOUNDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// `upstream_latency_seconds`, a histogram kept per worker and added up
/// when scraped, for the same reason as [`RequestCounts`].
#[derive(Debug, Clone)]
struct Latency(Arc<PerWorker<LatencyCounts>>);

#[derive(Debug, Default)]
struct LatencyCounts {
    /// Observations per bucket (not cumulative); the last is `+Inf`. Their
    /// sum is the count, so a scrape never shows a count that disagrees
    /// with the buckets.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Self(Arc::new(PerWorker::new(LatencyCounts::default)))
    }
}

impl Latency {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BOUNDS.len());
        let counts = self.0.local();
        counts.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        counts.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
            .into_iter()
            .chain([f64::INFINITY])
            .enumerate()
            .map(|(i, bound)| (bound, self.0.sum(|counts| &counts.buckets[i])))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum(|counts| &counts.sum_nanos) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The metrics; cheap to update from any task.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: RequestCounts,
    upstream_latency: Latency,
    crumb_fetches: Counter,
    crumb_retries: Counter,
    jenkins_denials: Family<StatusLabels, Counter>,
    refusals: Family<KindLabels, Counter>,
    open_connections: Gauge,
    too_slow: Family<PartLabels, Counter>,
    at_connection_cap: Counter,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("crumb_proxy");
        let requests = RequestCounts::default();
        registry.register(
            "requests",
            "Requests answered, by method and status class",
            requests.clone(),
        );
        let upstream_latency = Latency::default();
        registry.register(
            "upstream_latency_seconds",
            "Time from sending a request to Jenkins to its response headers",
            upstream_latency.clone(),
        );
        let crumb_fetches = Counter::default();
        registry.register(
            "crumb_fetches",
            "Crumb issuer requests made",
            crumb_fetches.clone(),
        );
        let crumb_retries = Counter::default();
        registry.register(
            "crumb_retries",
            "Requests replayed after Jenkins rejected their crumb",
            crumb_retries.clone(),
        );
        let jenkins_denials = Family::<StatusLabels, Counter>::default();
        registry.register(
            "jenkins_denials",
            "401 and 403 answers from Jenkins, by status",
            jenkins_denials.clone(),
        );
        let refusals = Family::<KindLabels, Counter>::default();
        registry.register(
            "refusals",
            "Requests refused by the proxy's policy, by kind",
            refusals.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections open now",
            open_connections.clone(),
        );
        let too_slow = Family::<PartLabels, Counter>::default();
        registry.register(
            "clients_too_slow",
            "Clients cut off below limits.min_rate_bytes_per_sec, by what they were slow to move",
            too_slow.clone(),
        );
        let at_connection_cap = Counter::default();
        registry.register(
            "connection_cap_reached",
            "Clients that arrived with limits.max_connections connections open",
            at_connection_cap.clone(),
        );
        Self {
            registry,
            requests,
            upstream_latency,
            crumb_fetches,
            crumb_retries,
            jenkins_denials,
            refusals,
            open_connections,
            too_slow,
            at_connection_cap,
        }
    }

    pub(crate) fn request(&self, method: &Method, status: StatusCode) {
        // Extension methods are one label, not one series each.
        let method = match *method {
            Method::GET => 0,
            Method::HEAD => 1,
            Method::POST => 2,
            Method::PUT => 3,
            Method::DELETE => 4,
            Method::OPTIONS => 5,
            Method::PATCH => 6,
            Method::TRACE => 7,
            Method::CONNECT => 8,
            _ => 9,
        };
        let class = usize::from(status.as_u16() / 100).min(CLASSES.len() - 1);
        self.requests.0.local()[method][class].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn upstream_latency(&self, elapsed: Duration) {
        self.upstream_latency.observe(elapsed);
    }

    pub(crate) fn crumb_fetch(&self) {
        self.crumb_fetches.inc();
    }

    pub(crate) fn crumb_retry(&self) {
        self.crumb_retries.inc();
    }

    pub(crate) fn jenkins_status(&self, status: StatusCode) {
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            self.jenkins_denials
                .get_or_create(&StatusLabels {
                    status: status.as_u16().to_string(),
                })
                .inc();
        }
    }

    pub(crate) fn refused(&self, kind: &str) {
        self.refusals
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// A client was cut off for moving its request body (`part` =
    /// "request-body") or the response ("response") too slowly.
    pub(crate) fn too_slow(&self, part: &'static str) {
        self.too_slow
            .get_or_create(&PartLabels {
                part: part.to_owned(),
            })
            .inc();
    }

    /// A client arrived with every connection slot taken.
    pub(crate) fn connection_cap_reached(&self) {
        self.at_connection_cap.inc();
    }

    /// Counts a client connection as open until the guard is dropped.
    pub(crate) fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.open_connections.inc();
        ConnectionGuard(self.clone())
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements the open-connection gauge when the connection ends.
#[derive(Debug)]
pub(crate) struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open_connections.dec();
    }
}

/// Readiness and metrics, shared by the proxy, the server and the health
/// listener.
#[derive(Debug)]
pub(crate) struct Health {
    shutting_down: AtomicBool,
    credentials: AtomicU8,
    /// Why the proxy is broken (a worker task panicked), once it is.
    broken: std::sync::OnceLock<String>,
    /// Wakes the server when `broken` is set.
    broke: tokio::sync::Notify,
    pub(crate) metrics: Arc<Metrics>,
}

impl Health {
    pub(crate) fn new() -> Self {
        Self {
            shutting_down: AtomicBool::new(false),
            credentials: AtomicU8::new(CredentialState::Unknown as u8),
            broken: std::sync::OnceLock::new(),
            broke: tokio::sync::Notify::new(),
            metrics: Arc::new(Metrics::new()),
        }
    }

    pub(crate) fn set_credentials(&self, state: CredentialState) {
        let old = self.credentials.swap(state as u8, Ordering::AcqRel);
        if old != state as u8 {
            tracing::info!(state = ?state, "credential check");
        }
    }

    pub(crate) fn credentials(&self) -> CredentialState {
        match self.credentials.load(Ordering::Acquire) {
            1 => CredentialState::Accepted,
            2 => CredentialState::Rejected,
            _ => CredentialState::Unknown,
        }
    }

    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Marks the proxy broken for good: a task on a worker panicked, so
    /// that worker's state (and whatever the panic left half done) can no
    /// longer be trusted. Liveness and readiness fail from now on and the
    /// server shuts down and exits non-zero, so that a supervisor restarts
    /// it, rather than a process that answers health checks while its
    /// connections fail. Called from the panic hook: only atomics, a
    /// notification and a log line.
    pub(crate) fn break_down(&self, why: String) {
        if self.broken.set(why).is_ok() {
            tracing::error!(
                reason = self.broken.get().map_or("", String::as_str),
                "the proxy is broken: no longer live or ready; shutting down to be restarted"
            );
            self.broke.notify_one();
        }
    }

    /// Why the proxy is broken, if it is.
    pub(crate) fn broken(&self) -> Option<&str> {
        self.broken.get().map(String::as_str)
    }

    /// Completes once the proxy is broken.
    pub(crate) async fn broke(&self) {
        if self.broken().is_none() {
            self.broke.notified().await;
        }
    }

    /// `Err(reason)` when not live.
    pub(crate) fn liveness(&self) -> Result<(), &str> {
        match self.broken() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// `Err(reason)` when not ready.
    pub(crate) fn readiness(&self) -> Result<(), &str> {
        self.liveness()?;
        if self.shutting_down.load(Ordering::Acquire) {
            return Err("shutting down");
        }
        match self.credentials() {
            CredentialState::Accepted => Ok(()),
            CredentialState::Unknown => Err("credentials not yet checked against Jenkins"),
            CredentialState::Rejected => Err("Jenkins rejects the configured credentials"),
        }
    }
}

/// Checks the credentials against Jenkins now and then, for readiness:
/// often until they are accepted, rarely after.
pub(crate) async fn watch_credentials<F, Fut>(health: Arc<Health>, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = CredentialState>,
{
    loop {
        let state = check().await;
        health.set_credentials(state);
        let pause = if state == CredentialState::Accepted {
            CHECK_INTERVAL
        } else {
            CHECK_RETRY
        };
        tokio::time::sleep(pause).await;
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

fn route(health: &Health, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n".into());
    }
    match req.uri().path() {
        "/livez" => match health.liveness() {
            Ok(()) => text(StatusCode::OK, PLAIN, "ok\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                format!("not live: {why}\n"),
            ),
        },
        "/readyz" => match health.readiness() {
            Ok(()) => text(StatusCode::OK, PLAIN, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            health.metrics.encode(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "try /livez, /readyz or /metrics\n".into(),
        ),
    }
}

/// Serves `/livez`, `/readyz` and `/metrics` until the process ends (so
/// readiness reports 503 throughout a drain).
pub(crate) async fn serve(listener: TcpListener, health: Arc<Health>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "health listener accept failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let health = health.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let resp = route(&health, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// GETs `url` (plain HTTP) and returns the status: what the `health`
/// sub-command runs, since container images have no curl.
///
/// # Errors
/// An invalid URL, a refused connection or no answer within `timeout`.
pub async fn probe(url: &str, timeout: Duration) -> Result<u16, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    match tokio::time::timeout(timeout, client.get(uri)).await {
        Ok(Ok(resp)) => Ok(resp.status().as_u16()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", timeout.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts from different workers add up in one series each; a series
    /// appears once it counts something; the histogram's buckets are
    /// cumulative up to `+Inf`.
    #[test]
    fn per_worker_counts_add_up_when_scraped() {
        let metrics = Arc::new(Metrics::new());
        let threads: Vec<_> = (0..2)
            .map(|index| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    crate::worker::set_current(index, Box::new(|_| {}));
                    metrics.request(&Method::GET, StatusCode::OK);
                    metrics.upstream_latency(Duration::from_millis(if index == 0 {
                        3
                    } else {
                        40
                    }));
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        metrics.request(
            &Method::from_bytes(b"PROPFIND").unwrap(),
            StatusCode::NOT_FOUND,
        );
        let text = metrics.encode();
        for line in [
            "crumb_proxy_requests_total{method=\"GET\",status_class=\"2xx\"} 2\n",
            "crumb_proxy_requests_total{method=\"other\",status_class=\"4xx\"} 1\n",
            "crumb_proxy_upstream_latency_seconds_bucket{le=\"0.005\"} 1\n",
            "crumb_proxy_upstream_latency_seconds_bucket{le=\"0.025\"} 1\n",
            "crumb_proxy_upstream_latency_seconds_bucket{le=\"0.05\"} 2\n",
            "crumb_proxy_upstream_latency_seconds_bucket{le=\"+Inf\"} 2\n",
            "crumb_proxy_upstream_latency_seconds_count 2\n",
            "crumb_proxy_upstream_latency_seconds_sum 0.043\n",
        ] {
            assert!(text.contains(line), "no {line:?} in:\n{text}");
        }
        assert_eq!(
            text.matches("crumb_proxy_requests_total{").count(),
            2,
            "{text}"
        );
    }
}
