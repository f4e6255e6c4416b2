//! Asking Jenkins who we are: the operator's `crumb-proxy check` and the
//! readiness probe's credential check.
//!
//! This module owns `GET <root>/whoAmI/api/json` with the proxy's
//! credentials (readable even anonymously, so the answer tells a rejected
//! secret from an ignored one), and the `check` report: config, reachability
//! and TLS, Jenkins version (`X-Jenkins`), identity, CSRF protection and
//! whether a crumb can be fetched, each failure on one line with its fix.

use std::fmt::Write as _;
use std::sync::Arc;

use http::header;
use http::{Method, Request, StatusCode};

use crate::body;
use crate::config::Config;
use crate::credentials::{Credentials, SecretKind};
use crate::crumb::{self, CrumbError, Fetched};
use crate::health::CredentialState;
use crate::upstream::{Upstream, UpstreamError, UpstreamInitError};

/// What `whoAmI` said.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) name: String,
    pub(crate) anonymous: bool,
    /// The `X-Jenkins` header: Jenkins' version.
    pub(crate) version: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WhoAmIError {
    /// Jenkins could not be asked.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("Jenkins rejected the configured credentials (401)")]
    Unauthorized,
    #[error("unexpected status {0} from /whoAmI/api/json")]
    Status(u16),
    #[error("the answer of /whoAmI/api/json was not Jenkins' JSON")]
    NotJenkins,
}

/// GETs a small JSON document from Jenkins with the proxy's credentials;
/// returns the response headers and the parsed body.
async fn get_json<T: serde::de::DeserializeOwned>(
    upstream: &Upstream,
    credentials: &Credentials,
    path: &'static str,
) -> Result<(http::HeaderMap, T), WhoAmIError> {
    let uri = upstream
        .base()
        .join(&http::uri::PathAndQuery::from_static(path))
        .map_err(|_| WhoAmIError::NotJenkins)?;
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
        .map_err(|_| WhoAmIError::NotJenkins)?;
    let resp = upstream.send(req).await?;
    match resp.status() {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED => return Err(WhoAmIError::Unauthorized),
        other => return Err(WhoAmIError::Status(other.as_u16())),
    }
    let (parts, body) = resp.into_parts();
    let bytes = match body::read_up_to(body, 64 * 1024).await {
        Ok(Ok(bytes)) => bytes,
        _ => return Err(WhoAmIError::NotJenkins),
    };
    let value = serde_json::from_slice(&bytes).map_err(|_| WhoAmIError::NotJenkins)?;
    Ok((parts.headers, value))
}

/// Asks Jenkins who the configured credentials make us.
pub(crate) async fn who_am_i(
    upstream: &Upstream,
    credentials: &Credentials,
) -> Result<Identity, WhoAmIError> {
    #[derive(serde::Deserialize)]
    struct WhoAmI {
        name: String,
        anonymous: bool,
    }
    let (headers, who): (_, WhoAmI) = get_json(upstream, credentials, "/whoAmI/api/json").await?;
    let version = headers
        .get("x-jenkins")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(Identity {
        name: who.name,
        anonymous: who.anonymous,
        version,
    })
}

/// Jenkins' configured root URL: the root object's `url`
/// (`Jenkins.getConfiguredRootUrl`), `None` when none is configured.
///
/// # Errors
/// When Jenkins could not be asked or did not answer with its JSON.
pub(crate) async fn configured_root_url(
    upstream: &Upstream,
    credentials: &Credentials,
) -> Result<Option<String>, WhoAmIError> {
    #[derive(serde::Deserialize)]
    struct Root {
        url: Option<String>,
    }
    let (_, root): (_, Root) = get_json(upstream, credentials, "/api/json?tree=url").await?;
    Ok(root.url.filter(|u| !u.is_empty()).map(
        |u| {
            if u.ends_with('/') {
                u
            } else {
                format!("{u}/")
            }
        },
    ))
}

/// Whether Jenkins `version` (`X-Jenkins`) prints every request header on
/// its `/whoAmI/` page: releases before 2.219 and LTS releases before
/// 2.204.2 (SECURITY-1695; the page has redacted `Authorization`, `Cookie`
/// and the proxy headers since, `WhoAmI.dangerousHeaders`). A version that
/// does not parse is taken to.
pub(crate) fn echoes_request_headers(version: &str) -> bool {
    let parsed: Option<Vec<u32>> = version
        .trim()
        .split('.')
        .map(|part| part.parse().ok())
        .collect();
    let Some(v) = parsed else {
        return true;
    };
    let fixed_lts = v.as_slice() >= [2, 204, 2].as_slice() && v.as_slice() < [2, 205].as_slice();
    v.as_slice() < [2, 219].as_slice() && !fixed_lts
}

/// The readiness view of a `who_am_i` answer.
pub(crate) fn credential_state(result: &Result<Identity, WhoAmIError>) -> CredentialState {
    match result {
        Ok(id) if !id.anonymous => CredentialState::Accepted,
        Ok(_) | Err(WhoAmIError::Unauthorized) => CredentialState::Rejected,
        Err(_) => CredentialState::Unknown,
    }
}

/// The outcome of `crumb-proxy check`.
#[derive(Debug)]
pub struct CheckReport {
    /// One line per item: `ok   …` or `FAIL …; fix: …`.
    pub lines: Vec<String>,
    pub ok: bool,
}

impl CheckReport {
    fn pass(&mut self, text: String) {
        self.lines.push(format!("ok   {text}"));
    }

    fn fail(&mut self, text: String) {
        self.ok = false;
        self.lines.push(format!("FAIL {text}"));
    }
}

/// Runs every check against Jenkins and reports each.
///
/// # Errors
/// Only when the upstream client cannot be built (TLS files, roots).
pub async fn check(config: Config) -> Result<CheckReport, UpstreamInitError> {
    let mut report = CheckReport {
        lines: Vec::new(),
        ok: true,
    };
    report.pass(format!("config: {}", config.summary()));
    for warning in config.warnings() {
        report.fail(format!("secret file: {warning}"));
    }
    let upstream = Upstream::new(&config.upstream)?;
    let credentials: Arc<Credentials> = config.credentials.current().0;
    let base = upstream.base().to_string();

    match who_am_i(&upstream, &credentials).await {
        Err(WhoAmIError::Upstream(e)) => {
            report.fail(format!(
                "jenkins: cannot reach {base}: {e}; fix: check upstream.url, the network path, and for https upstream.ca_file"
            ));
            return Ok(report);
        }
        Err(WhoAmIError::Unauthorized) => {
            report.pass(format!("jenkins: reachable at {base}"));
            report.fail(format!(
                "identity: Jenkins rejected the {} of {:?} (401); fix: check credentials.username and the secret the proxy reads",
                credentials.kind().as_str(),
                credentials.username()
            ));
        }
        Err(e @ (WhoAmIError::Status(_) | WhoAmIError::NotJenkins)) => {
            report.fail(format!(
                "jenkins: {base} does not answer like Jenkins ({e}); fix: set upstream.url to Jenkins' root URL, with its context path"
            ));
            return Ok(report);
        }
        Ok(id) => {
            match &id.version {
                Some(v) => report.pass(format!("jenkins: reachable at {base}, version {v}")),
                None => report.fail(format!(
                    "jenkins: {base} sent no X-Jenkins header; fix: check that upstream.url is Jenkins itself, not a page in front of it"
                )),
            }
            if id.anonymous {
                report.fail(format!(
                    "identity: Jenkins treated the requests as anonymous, not as {:?}; fix: check that no proxy in front of Jenkins drops the Authorization header",
                    credentials.username()
                ));
            } else {
                let mut line = format!("identity: authenticated as {:?}", id.name);
                if id.name != credentials.username() {
                    let _ = write!(line, " (configured: {:?})", credentials.username());
                }
                report.pass(line);
            }
        }
    }

    match crumb::fetch(&upstream, &credentials).await {
        Ok(Fetched::Disabled) => report.pass(
            "csrf: protection is off in Jenkins (the crumb issuer answers 404); POSTs go without a crumb".into(),
        ),
        Ok(Fetched::Crumb { field, .. }) => {
            let use_note = match (config.crumb.mode, credentials.kind()) {
                (crate::config::CrumbMode::Never, _) => "but crumb.mode = \"never\" sends none",
                (crate::config::CrumbMode::Auto, SecretKind::ApiToken) => {
                    "not needed with an API token (crumb.mode = \"auto\")"
                }
                _ => "sent with every POST",
            };
            report.pass(format!(
                "csrf: protection is on; a crumb can be fetched (header {field}), {use_note}"
            ));
        }
        Err(CrumbError::Forbidden) => report.fail(
            "csrf: the crumb issuer refused (403); fix: give the user Overall/Read in Jenkins".into(),
        ),
        Err(e) => report.fail(format!("csrf: no crumb could be fetched: {e}; fix: check upstream.url and the credentials")),
    }
    Ok(report)
}
