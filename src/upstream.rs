//! The connection to Jenkins.
//!
//! This module owns the upstream root URL ([`BaseUrl`]), the pooled,
//! kept-alive hyper-util client (plain HTTP or TLS with the system's root
//! certificates), mapping a client's request target onto the upstream, and
//! the connect and response-header timeouts. It knows nothing about crumbs
//! or credentials; `proxy` decides what to send and `crumb` what a crumb
//! fetch looks like.

use std::fmt;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::ProxyBody;
use crate::config::UpstreamConfig;
use crate::lane::{Conn, IdlePool};
use crate::tls;
use crate::worker::PerWorker;

/// Jenkins' root URL, split once at start-up so the request path never
/// parses it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    scheme: Scheme,
    authority: Authority,
    /// The context path without its trailing slash: "" or "/jenkins".
    prefix: String,
}

impl BaseUrl {
    /// Parses an absolute `http(s)://host[:port][/prefix/]` URL. The problem
    /// text is used in a `ConfigError`, so it says what to change.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("not a URL ({e}); expected e.g. \"https://ci.example.com/\""))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| {
            "must be an absolute URL with http:// or https://, e.g. \"https://ci.example.com/\""
                .to_owned()
        })?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(format!(
                "scheme {scheme} is not supported; use http or https"
            ));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| "has no host; expected e.g. \"https://ci.example.com/\"".to_owned())?;
        if authority.as_str().contains('@') {
            return Err(
                "must not carry credentials; put the user in [credentials] and the secret in a \
                 file or environment variable"
                    .to_owned(),
            );
        }
        if uri.query().is_some() || text.contains('#') {
            return Err("must not have a query or fragment; give Jenkins' root URL".to_owned());
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            scheme,
            authority,
            prefix,
        })
    }

    pub(crate) fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    pub(crate) fn authority(&self) -> &Authority {
        &self.authority
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The port requests go to, with the scheme's default filled in.
    fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.is_https() { 443 } else { 80 })
    }

    /// The upstream URI for a client's origin-form target `/a/b?c`: the
    /// same path and query beneath the prefix.
    pub(crate) fn join(&self, target: &PathAndQuery) -> Result<Uri, http::Error> {
        let path_and_query = if self.prefix.is_empty() {
            target.clone()
        } else {
            PathAndQuery::try_from(format!("{}{}", self.prefix, target.as_str()))?
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }

    /// If `uri` is absolute and points at or below this root, the part
    /// after the prefix (starting with `/`, query included). Hosts compare
    /// case-insensitively and default ports are filled in.
    pub(crate) fn strip_absolute(&self, uri: &Uri) -> Option<String> {
        // Same host and port is the same server, whatever the scheme: a
        // Jenkins behind a TLS terminator that sends no X-Forwarded-Proto
        // builds `http://` URLs for its `https://` address.
        let scheme = uri.scheme()?;
        let authority = uri.authority()?;
        let port = authority
            .port_u16()
            .unwrap_or(if *scheme == Scheme::HTTPS { 443 } else { 80 });
        if !authority.host().eq_ignore_ascii_case(self.authority.host()) || port != self.port() {
            return None;
        }
        self.strip_path(uri.path_and_query().map_or("/", PathAndQuery::as_str))
    }

    /// If the absolute path `path` lies below the prefix, the rest of it
    /// (always starting with `/`).
    pub(crate) fn strip_path(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix(self.prefix.as_str())?;
        if rest.is_empty() {
            Some("/".to_owned())
        } else if rest.starts_with('/') {
            Some(rest.to_owned())
        } else if rest.starts_with('?') {
            Some(format!("/{rest}"))
        } else {
            None
        }
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}/", self.scheme, self.authority, self.prefix)
    }
}

/// Why a request to Jenkins produced no response. Cloneable so a failed
/// crumb fetch can be handed to every request that waited for it.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("cannot connect to jenkins: {reason}")]
    Unreachable { reason: String },
    #[error("no connection to jenkins within the connect timeout")]
    ConnectTimeout,
    #[error("jenkins sent no response headers within the response timeout")]
    ResponseTimeout,
    #[error("the connection to jenkins failed: {reason}")]
    Failed { reason: String },
    #[error("{reason}")]
    Tls { reason: String },
    /// Not Jenkins' failure: the client's body broke while it was being
    /// sent, and the request to Jenkins was cut off before its end.
    #[error("the client's request body failed while it was sent to jenkins: {reason}")]
    ClientBody { reason: String },
    /// Not Jenkins' failure either: the client sent its body too slowly
    /// (`rate`), and the request to Jenkins was cut off before its end.
    #[error("{reason}; the request to jenkins was cut off before its end")]
    ClientTooSlow { reason: String },
}

impl UpstreamError {
    /// A connection to Jenkins could not be opened (TCP or TLS).
    pub(crate) fn from_connect(err: &(dyn std::error::Error + 'static)) -> Self {
        if let Some(reason) = tls::describe_failure(err) {
            return UpstreamError::Tls { reason };
        }
        let reason = root_cause(err);
        if reason.contains("timed out") || reason.contains("timeout") {
            UpstreamError::ConnectTimeout
        } else {
            UpstreamError::Unreachable { reason }
        }
    }

    /// An open connection failed while sending or receiving.
    pub(crate) fn from_send(err: &hyper::Error) -> Self {
        if let Some(client) = crate::body::client_body_error(err) {
            return Self::from_client_body(client);
        }
        UpstreamError::Failed {
            reason: root_cause(err),
        }
    }

    /// The client's body failed: broken, or too slow.
    fn from_client_body(err: &crate::body::ClientBodyError) -> Self {
        if err.too_slow() {
            UpstreamError::ClientTooSlow {
                reason: err.0.to_string(),
            }
        } else {
            UpstreamError::ClientBody {
                reason: root_cause(err),
            }
        }
    }

    fn from_client(err: &hyper_util::client::legacy::Error) -> Self {
        if err.is_connect() {
            return Self::from_connect(err);
        }
        if let Some(client) = crate::body::client_body_error(err) {
            return Self::from_client_body(client);
        }
        match tls::describe_failure(err) {
            Some(reason) => UpstreamError::Tls { reason },
            None => UpstreamError::Failed {
                reason: root_cause(err),
            },
        }
    }
}

/// The innermost error's text, which is the useful one ("Connection
/// refused (os error 111)") and never contains header values or bodies.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

type Connector = HttpsConnector<HttpConnector>;

/// The pooled client plus what every request to Jenkins needs.
#[derive(Debug)]
pub(crate) struct Upstream {
    client: Client<Connector, ProxyBody>,
    /// For the connections of client lanes (`lane`), which are not in
    /// `client`'s pool.
    connector: Connector,
    /// Where those connect to: the scheme and authority of the base URL.
    connect_uri: Uri,
    idle: IdlePool,
    base: BaseUrl,
    /// A copy per worker: cloning it for every request bumps a reference
    /// count, which then stays on the worker's own core.
    host: PerWorker<HeaderValue>,
    response_timeout: Duration,
}

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamInitError {
    #[error(transparent)]
    Tls(#[from] tls::TlsInitError),
    #[error("the upstream host {0:?} cannot be used as a Host header")]
    Host(String),
    #[error("`upstream.tls_server_name` = {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
}

impl Upstream {
    /// Builds the client. For an `https` upstream the system's root
    /// certificates are loaded here, at start-up, so a missing CA bundle is
    /// reported before any socket is bound.
    pub(crate) fn new(config: &UpstreamConfig) -> Result<Self, UpstreamInitError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));

        // For a plain-HTTP upstream TLS is never negotiated; the default
        // (empty) settings then need no roots, so a machine without a CA
        // bundle still works.
        let tls_config = if config.base.is_https() {
            tls::client_config(&config.tls)?
        } else {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config)
            .https_or_http();
        let builder = match &config.tls.server_name {
            Some(name) => {
                let name = rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|_| UpstreamInitError::ServerName(name.clone()))?;
                builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let connector = builder.enable_http1().wrap_connector(http);

        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .build(connector.clone());
        let host = HeaderValue::from_str(config.base.authority().as_str())
            .map_err(|_| UpstreamInitError::Host(config.base.authority().to_string()))?;
        let connect_uri = Uri::builder()
            .scheme(config.base.scheme.clone())
            .authority(config.base.authority().clone())
            .path_and_query("/")
            .build()
            .map_err(|_| UpstreamInitError::Host(config.base.authority().to_string()))?;
        Ok(Self {
            client,
            connector,
            connect_uri,
            idle: IdlePool::new(config.pool_idle_timeout),
            base: config.base.clone(),
            host: PerWorker::new(|| crate::worker::own_copy(&host)),
            response_timeout: config.response_timeout,
        })
    }

    pub(crate) fn base(&self) -> &BaseUrl {
        &self.base
    }

    /// How long Jenkins may take to answer (also bounds a whole crumb fetch).
    pub(crate) fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The `Host` header value for Jenkins: the upstream's authority, never
    /// the one the local client used.
    pub(crate) fn host(&self) -> &HeaderValue {
        self.host.local()
    }

    /// Parked idle connections of client lanes.
    pub(crate) fn idle(&self) -> &IdlePool {
        &self.idle
    }

    /// Opens a new HTTP/1.1 connection (TCP, and TLS for https) for a
    /// client lane. The connect timeout applies to the TCP part.
    pub(crate) async fn connect(&self) -> Result<Conn, UpstreamError> {
        use tower::ServiceExt as _;
        let io = self
            .connector
            .clone()
            .oneshot(self.connect_uri.clone())
            .await
            .map_err(|e| UpstreamError::from_connect(&*e))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| UpstreamError::from_send(&e))?;
        Ok(Conn {
            sender,
            driver: Box::pin(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection to jenkins ended with an error");
                }
            }),
        })
    }

    /// Sends `req` and waits for the response headers, up to the response
    /// timeout. The request body streams while this runs; the response body
    /// is returned unread.
    ///
    /// The legacy client re-sends a request only when the pooled connection
    /// closed before any of it was written, so a POST is never delivered
    /// twice by this layer.
    pub(crate) async fn send(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(err)) => Err(UpstreamError::from_client(&err)),
            Err(_) => Err(UpstreamError::ResponseTimeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(text: &str) -> BaseUrl {
        BaseUrl::parse(text).unwrap()
    }

    #[test]
    fn join_keeps_path_and_query_below_prefix() {
        let b = base("https://ci.example.com/jenkins/");
        let pq = PathAndQuery::from_static("/job/x/build?delay=0sec");
        assert_eq!(
            b.join(&pq).unwrap(),
            "https://ci.example.com/jenkins/job/x/build?delay=0sec"
        );
        let b = base("http://127.0.0.1:8080");
        assert_eq!(
            b.join(&pq).unwrap(),
            "http://127.0.0.1:8080/job/x/build?delay=0sec"
        );
        assert_eq!(b.to_string(), "http://127.0.0.1:8080/");
    }

    #[test]
    fn strip_absolute_matches_only_this_root() {
        let b = base("https://CI.example.com/jenkins/");
        let strip = |s: &str| b.strip_absolute(&s.parse::<Uri>().unwrap());
        assert_eq!(
            strip("https://ci.example.com/jenkins/queue/item/7/").as_deref(),
            Some("/queue/item/7/")
        );
        assert_eq!(
            strip("https://ci.example.com:443/jenkins").as_deref(),
            Some("/")
        );
        assert_eq!(
            strip("https://ci.example.com/jenkins?x=1").as_deref(),
            Some("/?x=1")
        );
        assert_eq!(
            strip("http://ci.example.com/jenkins/x"),
            None,
            "port 80, not 443"
        );
        assert_eq!(
            strip("http://ci.example.com:443/jenkins/x").as_deref(),
            Some("/x"),
            "same host and port"
        );
        assert_eq!(strip("https://ci.example.com:8443/jenkins/x"), None);
        assert_eq!(strip("https://ci.example.com/jenkinsfoo/x"), None);
        assert_eq!(strip("https://other.example.com/jenkins/x"), None);
    }
}
