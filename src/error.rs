//! The one error type of the request path, and its responses.
//!
//! Every failure the proxy itself produces becomes a [`ProxyError`] and is
//! turned into a response here, in one place: an exhaustive `status()`
//! mapping (no wildcard arm, so a new variant cannot slip through with a
//! default), a stable `X-Crumb-Proxy-Error: <kind>` header and a short
//! plain-text body that names the cause and what to check. Bodies never
//! contain upstream bodies, header values or secrets. Jenkins' own errors
//! (its 401s and 403s) are not `ProxyError`s: they pass through untouched.
//! Logging is the caller's job, once.

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{self, ProxyBody};
use crate::crumb::CrumbError;
use crate::filter::Rejection;
use crate::upstream::UpstreamError;

/// The header naming the kind of a proxy-made error.
pub(crate) const ERROR_HEADER: HeaderName = HeaderName::from_static("x-crumb-proxy-error");
/// The header naming the policy rule that refused a request.
pub(crate) const RULE_HEADER: HeaderName = HeaderName::from_static("x-crumb-proxy-rule");

/// Why the proxy answered instead of Jenkins.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("could not get a crumb: {0}")]
    Crumb(#[from] CrumbError),
    #[error("the client's request body failed before it was complete: {}", .0.0)]
    ClientBody(#[source] body::ClientBodyError),
    #[error("the request target must be a path such as /job/NAME/build")]
    BadRequestTarget,
    #[error("crumb-proxy is not a forward proxy; point the client at it as if it were Jenkins")]
    Connect,
    #[error("refused: {0}")]
    Rejected(Rejection),
}

impl ProxyError {
    /// The status a client sees; unit-tested for every variant.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::Upstream(e) | ProxyError::Crumb(CrumbError::Upstream(e)) => match e {
                UpstreamError::Unreachable { .. }
                | UpstreamError::Failed { .. }
                | UpstreamError::Tls { .. } => StatusCode::BAD_GATEWAY,
                UpstreamError::ConnectTimeout | UpstreamError::ResponseTimeout => {
                    StatusCode::GATEWAY_TIMEOUT
                }
                UpstreamError::ClientBody { .. } => StatusCode::BAD_REQUEST,
                UpstreamError::ClientTooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
            },
            ProxyError::Crumb(
                CrumbError::BadCredentials
                | CrumbError::Forbidden
                | CrumbError::UnexpectedStatus { .. }
                | CrumbError::Malformed { .. },
            ) => StatusCode::BAD_GATEWAY,
            ProxyError::ClientBody(e) if e.too_slow() => StatusCode::REQUEST_TIMEOUT,
            ProxyError::ClientBody(_) | ProxyError::BadRequestTarget => StatusCode::BAD_REQUEST,
            ProxyError::Connect => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Rejected(r) => r.status,
        }
    }

    /// The stable value of `X-Crumb-Proxy-Error`, for scripts and alerts.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ProxyError::Upstream(e) | ProxyError::Crumb(CrumbError::Upstream(e)) => match e {
                UpstreamError::Unreachable { .. } => "upstream-unreachable",
                UpstreamError::Failed { .. } => "upstream-failed",
                UpstreamError::Tls { .. } => "upstream-tls",
                UpstreamError::ConnectTimeout | UpstreamError::ResponseTimeout => {
                    "upstream-timeout"
                }
                UpstreamError::ClientBody { .. } => "client-body-failed",
                UpstreamError::ClientTooSlow { .. } => "client-too-slow",
            },
            ProxyError::Crumb(_) => "crumb-fetch-failed",
            ProxyError::ClientBody(e) if e.too_slow() => "client-too-slow",
            ProxyError::ClientBody(_) => "client-body-failed",
            ProxyError::BadRequestTarget => "bad-request-target",
            ProxyError::Connect => "not-a-forward-proxy",
            ProxyError::Rejected(r) => r.kind,
        }
    }

    /// What the operator should look at.
    fn hint(&self) -> &'static str {
        match self {
            ProxyError::Upstream(e) | ProxyError::Crumb(CrumbError::Upstream(e)) => match e {
                UpstreamError::Unreachable { .. } => {
                    "check upstream.url and that Jenkins is running and reachable from here"
                }
                UpstreamError::ConnectTimeout => {
                    "check upstream.url, the network path to Jenkins and upstream.connect_timeout_ms"
                }
                UpstreamError::ResponseTimeout => {
                    "Jenkins is slow or stuck; check its load, or raise upstream.response_timeout_ms"
                }
                UpstreamError::Failed { .. } => {
                    "Jenkins closed the connection; check its logs and any proxy in front of it"
                }
                UpstreamError::Tls { .. } => {
                    "check upstream.ca_file, upstream.tls_server_name and the client certificate settings"
                }
                UpstreamError::ClientBody { .. } => {
                    "the client sent a malformed or incomplete body; the request to Jenkins was cut off before its end"
                }
                UpstreamError::ClientTooSlow { .. } => {
                    "send the body faster, or lower limits.min_rate_bytes_per_sec (0 turns the minimum off)"
                }
            },
            ProxyError::Crumb(CrumbError::BadCredentials) => {
                "check credentials.username and the password or API token the proxy reads"
            }
            ProxyError::Crumb(CrumbError::Forbidden) => {
                "check credentials.username and that the user has Overall/Read in Jenkins"
            }
            ProxyError::Crumb(CrumbError::UnexpectedStatus { .. }) => {
                "check that upstream.url is Jenkins' root URL (with its context path, if any)"
            }
            ProxyError::Crumb(CrumbError::Malformed { .. }) => {
                "check that upstream.url is Jenkins' root URL and not another service"
            }
            ProxyError::ClientBody(e) if e.too_slow() => {
                "send the body faster, or lower limits.min_rate_bytes_per_sec (0 turns the minimum off); nothing was sent to Jenkins"
            }
            ProxyError::ClientBody(_) => "the client stopped sending; nothing was sent to Jenkins",
            ProxyError::BadRequestTarget | ProxyError::Connect => {
                "send requests to http://<proxy address>/<Jenkins path>"
            }
            ProxyError::Rejected(r) => r.hint(),
        }
    }

    /// The synthetic response: status, kind header, a two-line text body.
    pub(crate) fn into_response(self) -> Response<ProxyBody> {
        let text = format!("crumb-proxy: {self}\n{}\n", self.hint());
        let mut resp = Response::new(body::full(text));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.kind()));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let ProxyError::Rejected(Rejection {
            rule: Some(rule), ..
        }) = &self
        {
            if let Ok(value) = HeaderValue::try_from(rule.as_str()) {
                headers.insert(RULE_HEADER, value);
            }
        }
        if self.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            headers.insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"crumb-proxy\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream_errors() -> Vec<UpstreamError> {
        vec![
            UpstreamError::Unreachable {
                reason: "Connection refused (os error 111)".into(),
            },
            UpstreamError::ConnectTimeout,
            UpstreamError::ResponseTimeout,
            UpstreamError::Failed {
                reason: "connection closed before message completed".into(),
            },
            UpstreamError::ClientBody {
                reason: "invalid chunk size line".into(),
            },
            UpstreamError::ClientTooSlow {
                reason: "the client moved less than 256 bytes a second".into(),
            },
        ]
    }

    #[test]
    fn status_and_kind_for_every_variant() {
        let mut cases: Vec<(ProxyError, u16, &str)> = Vec::new();
        let expected = [
            (502, "upstream-unreachable"),
            (504, "upstream-timeout"),
            (504, "upstream-timeout"),
            (502, "upstream-failed"),
            (400, "client-body-failed"),
            (408, "client-too-slow"),
        ];
        for (e, (status, kind)) in upstream_errors().into_iter().zip(expected) {
            cases.push((
                ProxyError::Crumb(CrumbError::Upstream(e.clone())),
                status,
                kind,
            ));
            cases.push((ProxyError::Upstream(e), status, kind));
        }
        for e in [
            CrumbError::BadCredentials,
            CrumbError::Forbidden,
            CrumbError::UnexpectedStatus { status: 500 },
            CrumbError::Malformed { reason: "x" },
        ] {
            cases.push((ProxyError::Crumb(e), 502, "crumb-fetch-failed"));
        }
        cases.push((ProxyError::BadRequestTarget, 400, "bad-request-target"));
        cases.push((ProxyError::Connect, 405, "not-a-forward-proxy"));
        for (err, status, kind) in cases {
            let text = err.to_string();
            let resp = err.into_response();
            assert_eq!(resp.status().as_u16(), status, "{text}");
            assert_eq!(resp.headers()[ERROR_HEADER], kind, "{text}");
        }
    }

    #[tokio::test]
    async fn body_names_cause_and_fix() {
        use http_body_util::BodyExt;
        let resp = ProxyError::Crumb(CrumbError::BadCredentials).into_response();
        let text = resp.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&text).unwrap();
        assert!(
            text.contains("401") && text.contains("credentials.username"),
            "{text}"
        );
    }
}
