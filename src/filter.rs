//! The security policy: which requests may reach Jenkins at all.
//!
//! The proxy adds valid credentials and a valid crumb to whatever reaches
//! it, so it switches Jenkins' CSRF protection off for every caller that can
//! reach its port, including web pages open in a browser on the same
//! machine. This module puts the door back: it refuses, before anything is
//! forwarded, requests without the configured client token, requests whose
//! `Host` is not the proxy's own (DNS rebinding), requests with browser
//! provenance (`Origin`, `Sec-Fetch-Site`, a foreign `Referer`), methods
//! that are not standard (a `post` would slip past every rule written for
//! `POST`) or would echo the proxy's credentials (`TRACE`), and requests
//! that reach a dangerous Jenkins action or fall outside the user's rules.
//!
//! Rules are decided on what Jenkins would bind the path to
//! (`binding::Binding`), resolved from the canonical path (`canonical`):
//! every reading of the path must be allowed, so no alias or spelling of a
//! refused action gets through. It never touches the upstream and never
//! decides about crumbs.

use std::fmt;

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode, Uri};
use subtle::ConstantTimeEq as _;

use crate::binding::{self, Binding, Printable};
use crate::canonical::{CanonicalPath, Pattern};
use crate::credentials::Secret;

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Allow,
    Deny,
}

/// A user rule from `[[policy.rules]]`: method set plus path pattern.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// `policy.rules[N]`, for messages and the rejection header.
    pub(crate) name: String,
    pub(crate) action: Action,
    /// `None`: every method.
    pub(crate) methods: Option<Vec<Method>>,
    pub(crate) pattern: Pattern,
}

impl Rule {
    /// Whether the rule is about `method` on the resolved `path`. A name
    /// the path does not give (`computers/0`) could be any: a deny rule
    /// takes it for its own, an allow rule never does.
    fn applies(&self, method: &Method, path: &[&str]) -> bool {
        let matched = match self.action {
            Action::Deny => self.pattern.may_match(path),
            Action::Allow => self.pattern.matches(path),
        };
        self.methods.as_ref().is_none_or(|m| m.contains(method)) && matched
    }
}

/// Why a request was refused. Becomes a response in `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) status: StatusCode,
    /// The `X-Crumb-Proxy-Error` value.
    pub(crate) kind: &'static str,
    /// For `denied-by-policy`: the rule's name.
    pub(crate) rule: Option<String>,
    pub(crate) detail: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl Rejection {
    fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            rule: None,
            detail: detail.into(),
        }
    }

    /// The `/whoAmI/` page on a Jenkins that prints request headers there.
    pub(crate) fn who_am_i(method: &Method, path: &CanonicalPath, version: Option<&str>) -> Self {
        let version = match version {
            Some(v) => format!("Jenkins {}", binding::escaped(v)),
            None => "a Jenkins that sent no version".to_owned(),
        };
        Self::denied(
            WHO_AM_I_RULE,
            format!(
                "{method} {path} is denied: on {version}, the whoAmI page prints every request \
                 header, the proxy's credentials among them"
            ),
        )
    }

    fn denied(rule: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            kind: "denied-by-policy",
            rule: Some(rule.into()),
            detail: detail.into(),
        }
    }

    /// What the operator can do about it.
    pub(crate) fn hint(&self) -> &'static str {
        match self.kind {
            "client-token-required" | "client-token-invalid" => {
                "send Proxy-Authorization: Bearer <token> with the token the proxy is configured with"
            }
            "bad-host" => "send exactly one Host header, host[:port] without user information",
            "host-not-allowed" => {
                "address the proxy as localhost, 127.0.0.1 or [::1], or add the name to listen.allowed_hosts"
            }
            "browser-request" => {
                "browsers are refused because the proxy would act for any web page; use curl or a script, or add the origin to policy.allowed_origins"
            }
            "bad-request-target" => "percent-encode the path as RFC 3986 says (%25 for a literal %)",
            "method-refused" => {
                "send a standard method in upper case (GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH)"
            }
            _ => match self.rule.as_deref() {
                Some(WHO_AM_I_RULE) => {
                    "upgrade Jenkins to 2.219 or LTS 2.204.2 or later; whoAmI/api/json works on every version"
                }
                Some(UNRESOLVABLE_RULE) => "use the object's own URL (/job/NAME/…, /view/NAME/…)",
                _ => "allow it with a [[policy.rules]] entry (action = \"allow\") if this caller really needs it",
            },
        }
    }
}

fn unsafe_method(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD)
}

/// The rule that refuses the `/whoAmI/` page on a Jenkins that prints
/// request headers there (`proxy` asks the version).
pub(crate) const WHO_AM_I_RULE: &str = "whoami-echoes-credentials";

/// The rule that refuses a path with more readings than the policy weighs.
const UNRESOLVABLE_RULE: &str = "unresolvable-path";

/// What the policy found out about an allowed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Access {
    /// Some reading is the `/whoAmI/` page, which old Jenkins versions
    /// print request headers on; `proxy` checks the version first.
    pub(crate) who_am_i_page: bool,
}

/// Host names the proxy answers to: a handful, so comparing each costs
/// less than hashing the one asked about (SipHash, on every request).
#[derive(Debug, Clone, Default)]
pub(crate) struct HostNames(Box<[String]>);

impl HostNames {
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|host| host == name)
    }
}

impl FromIterator<String> for HostNames {
    fn from_iter<I: IntoIterator<Item = String>>(names: I) -> Self {
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort_unstable();
        names.dedup();
        Self(names.into())
    }
}

/// Everything the policy needs, built once from the config.
pub(crate) struct Policy {
    /// The configured user, lower case: the one `/me` is.
    pub(crate) me: String,
    pub(crate) read_only: bool,
    pub(crate) rules: Vec<Rule>,
    /// Exact `Origin` values allowed (lower case, no trailing slash).
    pub(crate) allowed_origins: Vec<String>,
    /// Host names (port stripped, lower case) the proxy answers to.
    pub(crate) allowed_hosts: HostNames,
    pub(crate) client_token: Option<Secret>,
    /// `policy.identity_headers`: more request headers Jenkins takes an
    /// identity from, removed like the built-in ones (`headers`).
    pub(crate) identity_headers: Box<[HeaderName]>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("me", &self.me)
            .field("read_only", &self.read_only)
            .field("rules", &self.rules)
            .field("allowed_origins", &self.allowed_origins)
            .field("allowed_hosts", &self.allowed_hosts)
            .field(
                "client_token",
                &self.client_token.as_ref().map(|_| "[redacted]"),
            )
            .field("identity_headers", &self.identity_headers)
            .finish()
    }
}

impl Policy {
    /// Checks a request before anything is forwarded. `Ok(())` lets it
    /// through.
    #[cfg(test)]
    pub(crate) fn check(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Access, Rejection> {
        self.check_path(method, uri, headers, &CanonicalPath::new(uri.path()))
    }

    /// As `check`, with the request's canonical path already computed.
    pub(crate) fn check_path(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        path: &CanonicalPath,
    ) -> Result<Access, Rejection> {
        self.check_client_token(headers)?;
        self.check_host(uri, headers)?;
        check_method(method)?;
        if let Some(why) = path.refusal() {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "bad-request-target",
                why,
            ));
        }
        self.check_browser(method, headers)?;
        self.check_rules(method, path)
    }

    fn check_client_token(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let Some(expected) = &self.client_token else {
            return Ok(());
        };
        let presented = headers
            .get(header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        let Some(presented) = presented else {
            return Err(Rejection::new(
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "client-token-required",
                "this proxy requires a client token",
            ));
        };
        // Constant time: the comparison must not tell how much matched.
        if bool::from(presented.as_bytes().ct_eq(expected.expose().as_bytes())) {
            Ok(())
        } else {
            Err(Rejection::new(
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "client-token-invalid",
                "the client token is wrong",
            ))
        }
    }

    /// DNS rebinding: a page on `evil.example` that re-points its name at
    /// 127.0.0.1 still sends `Host: evil.example`. Only names the proxy is
    /// known by pass (kubectl proxy's `--accept-hosts`, anchored).
    fn check_host(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), Rejection> {
        let from_target = uri.authority().map(http::uri::Authority::host);
        // RFC 9112 §3.2: a request with more than one Host, or with a Host
        // that is not a valid `host[:port]`, gets 400; so does one with
        // none (HTTP/1.1 requires it; an absolute-form target names it).
        let bad = |why: &str| Err(Rejection::new(StatusCode::BAD_REQUEST, "bad-host", why));
        let mut hosts = headers.get_all(header::HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return bad("the request has more than one Host header");
        }
        let from_header = match host.map(|h| h.to_str()) {
            Some(Ok(host)) if valid_host(host) => Some(host_without_port(host)),
            Some(_) => return bad("the Host header is not a valid host[:port]"),
            None if from_target.is_none() => return bad("the request has no Host header"),
            None => None,
        };
        for name in from_target.into_iter().chain(from_header) {
            // Host names compare case-insensitively; the allow-list is
            // lower case, and so is nearly every Host sent.
            let allowed = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                self.allowed_hosts.contains(&name.to_ascii_lowercase())
            } else {
                self.allowed_hosts.contains(name)
            };
            if !allowed {
                return Err(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "host-not-allowed",
                    format!(
                        "the proxy does not answer to the host name {:?}",
                        name.to_ascii_lowercase()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Browser provenance. Tools do not send these headers; browsers send
    /// them on every request a page makes (Fetch Metadata, `Origin` on
    /// CORS and unsafe requests). Someone typing the proxy's address into
    /// the address bar sends `Sec-Fetch-Site: none` and may read.
    fn check_browser(&self, method: &Method, headers: &HeaderMap) -> Result<(), Rejection> {
        let refuse = |why: String| {
            Err(Rejection::new(
                StatusCode::FORBIDDEN,
                "browser-request",
                why,
            ))
        };
        // Every value counts: a browser sends one of each, and a second,
        // friendlier one must not hide it.
        for origin in headers.get_all(header::ORIGIN) {
            let origin = origin
                .to_str()
                .unwrap_or("")
                .trim_end_matches('/')
                .to_ascii_lowercase();
            if !self.allowed_origins.contains(&origin) {
                return refuse(format!(
                    "requests from the web origin {origin:?} are refused"
                ));
            }
        }
        const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
        for site in headers.get_all(SEC_FETCH_SITE) {
            let site = site.to_str().unwrap_or("");
            if !site.eq_ignore_ascii_case("none") {
                return refuse(format!(
                    "a browser request (Sec-Fetch-Site: {site}) is refused"
                ));
            }
            if unsafe_method(method) {
                return refuse("a browser may only read through the proxy (GET, HEAD)".into());
            }
        }
        for referer in headers.get_all(header::REFERER) {
            let from = referer.to_str().ok().and_then(|r| r.parse::<Uri>().ok());
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            let same_origin = match (&from, host) {
                (Some(from), Some(host)) => {
                    from.scheme_str() == Some("http")
                        && from
                            .authority()
                            .is_some_and(|a| a.as_str().eq_ignore_ascii_case(host))
                }
                _ => false,
            };
            let allowed_origin = from.as_ref().is_some_and(|from| {
                let origin = format!(
                    "{}://{}",
                    from.scheme_str().unwrap_or(""),
                    from.authority().map_or("", |a| a.as_str())
                )
                .to_ascii_lowercase();
                self.allowed_origins.contains(&origin)
            });
            if !same_origin && !allowed_origin {
                return refuse("a request referred by another web origin is refused".into());
            }
        }
        Ok(())
    }

    /// Read-only mode, then every reading of the path against the user's
    /// rules (first match wins) and the built-in dangers. A request passes
    /// only if every reading does: when Jenkins could bind the path two
    /// ways, the stricter decides.
    fn check_rules(&self, method: &Method, path: &CanonicalPath) -> Result<Access, Rejection> {
        if self.read_only && unsafe_method(method) {
            return Err(Rejection::denied(
                "read-only",
                format!("{method} {path} refused: policy.read_only allows only GET and HEAD"),
            ));
        }
        let mut access = Access {
            who_am_i_page: false,
        };
        for reading in path.readings() {
            let Some(bindings) = binding::resolve(reading, &self.me) else {
                return Err(Rejection::denied(
                    UNRESOLVABLE_RULE,
                    format!("{method} {path} can be read in too many ways to be checked"),
                ));
            };
            for binding in &bindings {
                self.check_binding(method, path, binding)?;
                access.who_am_i_page |= binding.is_who_am_i_page();
            }
        }
        Ok(access)
    }

    /// One reading: the first user rule that matches its resolved path
    /// decides (an allow only for the dangerous segment it names);
    /// without one, a built-in danger refuses it.
    fn check_binding(
        &self,
        method: &Method,
        requested: &CanonicalPath,
        binding: &Binding<'_>,
    ) -> Result<(), Rejection> {
        let danger = binding.danger(unsafe_method(method));
        // The resolved path is written out only where rules need it (an
        // empty `Vec` allocates nothing), and for a refusal's message.
        let resolved = if self.rules.is_empty() {
            Vec::new()
        } else {
            binding.path()
        };
        let reaches = || {
            let resolved = Printable(&binding.path()).to_string();
            if resolved == requested.to_string() {
                resolved
            } else {
                format!("{requested} (which Jenkins binds as {resolved})")
            }
        };
        let refuse = |(danger, _): (binding::Danger, usize)| {
            Err(Rejection::denied(
                danger.rule,
                format!(
                    "{method} {} is denied by the built-in rule {}: {}",
                    reaches(),
                    danger.rule,
                    danger.what
                ),
            ))
        };
        for rule in &self.rules {
            if !rule.applies(method, &resolved) {
                continue;
            }
            // An allow rule must name the action it opens (or cover it with
            // a final `**`): Stapler dispatches on that segment and a web
            // method ignores the rest, so `/job/**/build` is not
            // `/job/x/config.xml/build`. A rule that only spans it is not
            // this request's rule.
            if rule.action == Action::Allow
                && !rule.pattern.opens(&resolved, binding.action_index())
            {
                continue;
            }
            return match rule.action {
                // An allow rule opens a built-in danger only if it names
                // the dangerous segment: `/job/**/api/json` does not open
                // `/job/x/credentials/…/api/json`.
                Action::Allow => match danger {
                    Some(found @ (_, index)) if !rule.pattern.names(&resolved, index) => {
                        refuse(found)
                    }
                    _ => Ok(()),
                },
                Action::Deny => Err(Rejection::denied(
                    rule.name.clone(),
                    format!(
                        "{method} {} is denied by {} ({})",
                        reaches(),
                        rule.name,
                        rule.pattern.as_str()
                    ),
                )),
            };
        }
        match danger {
            Some(found) => refuse(found),
            None => Ok(()),
        }
    }
}

/// RFC 9110 §9.1: methods are case-sensitive, and only the standard ones
/// (and PATCH, RFC 5789) mean what rules and `read_only` expect. hyper
/// accepts any token, so `post` or `PROPFIND` would otherwise reach Jenkins
/// past every rule written for `POST`, and Stapler handlers without
/// `@RequirePOST` answer any method. `TRACE` would echo the request, the
/// proxy's `Authorization` included. (CONNECT is refused by `proxy`.)
fn check_method(method: &Method) -> Result<(), Rejection> {
    match *method {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::OPTIONS
        | Method::PATCH
        | Method::CONNECT => Ok(()),
        Method::TRACE => Err(Rejection::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-refused",
            "TRACE is refused: Jenkins would echo the request, the proxy's credentials included",
        )),
        _ => Err(Rejection::new(
            StatusCode::NOT_IMPLEMENTED,
            "method-refused",
            format!(
                "the method {:?} is not one the proxy forwards (methods are case-sensitive)",
                binding::escaped(method.as_str())
            ),
        )),
    }
}

/// Whether `host` is a `host[:port]` as RFC 9110 §7.2 allows it: an
/// authority without userinfo (`127.0.0.1:8181@evil.example` is refused).
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && !host.contains('@')
        && host
            .parse::<http::uri::Authority>()
            .is_ok_and(|a| a.as_str() == host)
}

/// `host:port`, `[v6]:port` or a bare host, without the port.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            me: "alice".into(),
            read_only: false,
            rules: Vec::new(),
            allowed_origins: Vec::new(),
            allowed_hosts: ["localhost", "127.0.0.1", "[::1]"]
                .into_iter()
                .map(String::from)
                .collect(),
            client_token: None,
            identity_headers: Box::default(),
        }
    }

    fn check(
        p: &Policy,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), Rejection> {
        let mut map = HeaderMap::new();
        map.insert(header::HOST, "127.0.0.1:8181".parse().unwrap());
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        p.check(&method, &path.parse().unwrap(), &map).map(|_| ())
    }

    #[test]
    fn host_without_port_forms() {
        assert_eq!(host_without_port("localhost:8181"), "localhost");
        assert_eq!(host_without_port("[::1]:8181"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
        assert_eq!(host_without_port("example.org"), "example.org");
    }

    /// Every built-in rule, with spellings that try to get around it. Each
    /// must be refused with that rule's name, on the methods it covers.
    #[test]
    fn builtin_rules_resist_bypass_spellings() {
        let corpus: &[(&str, &[&str], &[&str])] = &[
            ("script-console", &["GET", "POST"], &[
                "/script", "/scriptText", "/SCRIPT", "/Script/", "//script", "/./script", "/%73cript",
                "/%2573cript", "/script;jsessionid=1", "/..;/script", "/job/x/../../script",
                "/job/x/..%2f..%2fscriptText", "/manage/script", "/manage/scriptText",
                "/computer/(built-in)/script", "/computer/agent-1/scriptText",
                "/manage/computer/agent-1/script", "/%2e/script", "/job/a/%2e%2e/%2e%2e/scripttext",
            ]),
            ("cli", &["GET", "POST"], &["/cli", "/cli/ws", "/CLI?remoting=false", "/%63li", "/cli;x=y", "//cli/"]),
            ("api-tokens", &["POST"], &[
                "/user/alice/descriptorByName/jenkins.security.ApiTokenProperty/generateNewToken",
                "/me/descriptorByName/jenkins.security.ApiTokenProperty/revoke",
                "/user/bob/descriptorByName/jenkins.security.ApiTokenProperty/revokeAllExcept",
                "/securityRealm/user/alice/descriptorByName/jenkins.security.ApiTokenProperty/generateNewToken",
                "/user/alice/descriptorbyname/JENKINS.SECURITY.APITOKENPROPERTY/generateNewToken",
                "/user/alice/./descriptorByName/jenkins.security.ApiTokenProperty/%67enerateNewToken",
            ]),
            ("security-config", &["POST"], &[
                "/configureSecurity/configure", "/manage/configureSecurity/configure",
                "/user/alice/configSubmit", "/me/configSubmit", "/user/alice/doDelete",
                "/securityRealm/createAccountByAdmin", "/securityRealm/addUser", "/ConfigureSecurity/",
            ]),
            ("credentials", &["GET", "POST"], &[
                "/credentials", "/manage/credentials/store/system/domain/_/",
                "/credentials/store/system/domain/_/createCredentials",
                "/user/alice/credentials/", "/me/credentials/store/user/domain/_/",
                "/job/folder/credentials/store/folder/domain/_/",
                "/job/a/job/b/credentials/", "/view/all/job/folder/credentials/",
                "/Credentials;x=1/", "/x/..//credentials",
            ]),
            ("plugins", &["POST"], &[
                "/pluginManager/installNecessaryPlugins", "/pluginManager/uploadPlugin",
                "/manage/pluginManager/install", "/updateCenter/upgrade", "/PluginManager/%69nstall",
            ]),
            ("lifecycle", &["GET", "POST"], &[
                "/restart", "/safeRestart", "/exit", "/safeExit", "/quietDown", "/cancelQuietDown",
                "/manage/safeRestart", "/RESTART", "/job/x/../../restart", "/%72estart",
            ]),
        ];
        let p = policy();
        for (rule, methods, paths) in corpus {
            for method in *methods {
                for path in *paths {
                    let got = check(&p, method.parse().unwrap(), path, &[]);
                    let rejection = got.expect_err(&format!("{method} {path} passed"));
                    assert_eq!(
                        rejection.rule.as_deref(),
                        Some(*rule),
                        "{method} {path}: {rejection:?}"
                    );
                    assert_eq!(rejection.kind, "denied-by-policy");
                    assert_eq!(rejection.status, StatusCode::FORBIDDEN);
                }
            }
        }
    }

    /// What the rules must not catch: jobs, folders and views that merely
    /// share a name with an endpoint, and reads of what is only dangerous
    /// to change.
    #[test]
    fn builtin_rules_leave_ordinary_paths_alone() {
        let p = policy();
        for (method, path) in [
            ("POST", "/job/script/build"),
            ("POST", "/job/credentials/build"),
            ("POST", "/job/cli/buildWithParameters"),
            ("GET", "/job/restart/lastBuild/consoleText"),
            ("POST", "/view/credentials/job/restart/build"),
            ("GET", "/pluginManager/api/json"),
            ("GET", "/user/alice/api/json"),
            ("GET", "/me/api/json"),
            ("GET", "/whoAmI/api/json"),
            ("POST", "/job/a/job/b/config.xml"),
            ("POST", "/createItem"),
            ("GET", "/computer/agent-1/api/json"),
            ("POST", "/queue/cancelItem"),
        ] {
            assert_eq!(
                check(&p, method.parse().unwrap(), path, &[]),
                Ok(()),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn user_rules_in_order_then_builtins() {
        let mut p = policy();
        p.rules = vec![
            Rule {
                name: "policy.rules[0]".into(),
                action: Action::Allow,
                methods: Some(vec![Method::POST]),
                pattern: Pattern::parse("/scripttext").unwrap(),
            },
            Rule {
                name: "policy.rules[1]".into(),
                action: Action::Deny,
                methods: None,
                pattern: Pattern::parse("/job/secret/**").unwrap(),
            },
        ];
        assert_eq!(check(&p, Method::POST, "/scriptText", &[]), Ok(()));
        let denied = check(&p, Method::GET, "/scriptText", &[]).unwrap_err();
        assert_eq!(denied.rule.as_deref(), Some("script-console"));
        let denied = check(&p, Method::GET, "/job/Secret/api/json", &[]).unwrap_err();
        assert_eq!(denied.rule.as_deref(), Some("policy.rules[1]"));
        assert_eq!(check(&p, Method::GET, "/job/public/api/json", &[]), Ok(()));
    }

    /// An allow rule opens a built-in danger only where it names the
    /// dangerous segment; a wildcard that merely spans it does not.
    #[test]
    fn allow_rules_open_dangers_only_by_name() {
        let mut p = policy();
        let rule = |i: usize, path: &str| Rule {
            name: format!("policy.rules[{i}]"),
            action: Action::Allow,
            methods: None,
            pattern: Pattern::parse(path).unwrap(),
        };
        p.rules = vec![
            rule(0, "/job/**/api/json"),
            rule(1, "/computer/*/scripttext"),
            rule(2, "/user/alice/configsubmit"),
        ];
        let denied =
            |method: Method, path: &str| check(&p, method, path, &[]).err().and_then(|r| r.rule);
        assert_eq!(denied(Method::GET, "/job/a/job/b/api/json"), None);
        assert_eq!(
            denied(Method::GET, "/job/apps/credentials/store/folder/api/json").as_deref(),
            Some("credentials")
        );
        assert_eq!(
            denied(Method::GET, "/job/apps/x/script/api/json").as_deref(),
            Some("script-console")
        );
        assert_eq!(denied(Method::POST, "/computer/agent-1/scriptText"), None);
        assert_eq!(
            denied(Method::POST, "/manage/computer/(master)/scriptText"),
            None
        );
        assert_eq!(denied(Method::POST, "/me/configSubmit"), None);
        assert_eq!(
            denied(Method::POST, "/user/bob/configSubmit").as_deref(),
            Some("security-config")
        );
    }

    /// A deny rule for an agent holds where the path reaches an agent
    /// without naming it (`computers/1`), an allow rule does not.
    #[test]
    fn unnamed_objects_meet_deny_rules_not_allow_rules() {
        let mut p = policy();
        p.rules = vec![Rule {
            name: "policy.rules[0]".into(),
            action: Action::Deny,
            methods: None,
            pattern: Pattern::parse("/computer/agent-1/**").unwrap(),
        }];
        let r = check(&p, Method::GET, "/computers/1/api/json", &[]).unwrap_err();
        assert_eq!(r.rule.as_deref(), Some("policy.rules[0]"));
        p.rules[0].action = Action::Allow;
        p.rules.push(Rule {
            name: "policy.rules[1]".into(),
            action: Action::Deny,
            methods: None,
            pattern: Pattern::parse("/**").unwrap(),
        });
        let r = check(&p, Method::GET, "/computers/1/api/json", &[]).unwrap_err();
        assert_eq!(r.rule.as_deref(), Some("policy.rules[1]"));
        assert_eq!(
            check(&p, Method::GET, "/computer/agent-1/api/json", &[]),
            Ok(())
        );
    }

    #[test]
    fn read_only_allows_get_and_head_only() {
        let mut p = policy();
        p.read_only = true;
        assert_eq!(check(&p, Method::GET, "/api/json", &[]), Ok(()));
        assert_eq!(check(&p, Method::HEAD, "/api/json", &[]), Ok(()));
        for m in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ] {
            let r = check(&p, m.clone(), "/job/x/build", &[]).unwrap_err();
            assert_eq!(r.rule.as_deref(), Some("read-only"), "{m}");
        }
    }

    #[test]
    fn browser_provenance_is_refused() {
        let p = policy();
        for headers in [
            &[("origin", "http://evil.example")][..],
            &[("origin", "null")],
            &[("origin", "http://127.0.0.1:8181")],
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
            &[("sec-fetch-site", "same-origin")],
            &[("referer", "http://evil.example/page")],
            &[("referer", "http://127.0.0.1:9999/")],
            // A second, friendlier value hides nothing.
            &[("sec-fetch-site", "none"), ("sec-fetch-site", "cross-site")],
            &[
                ("referer", "http://127.0.0.1:8181/"),
                ("referer", "http://evil.example/"),
            ],
        ] {
            let r = check(&p, Method::GET, "/api/json", headers).unwrap_err();
            assert_eq!(r.kind, "browser-request", "{headers:?}");
        }
        // The address bar: reading is fine, changing is not.
        assert_eq!(
            check(&p, Method::GET, "/api/json", &[("sec-fetch-site", "none")]),
            Ok(())
        );
        let r = check(
            &p,
            Method::POST,
            "/job/x/build",
            &[("sec-fetch-site", "none")],
        )
        .unwrap_err();
        assert_eq!(r.kind, "browser-request");
        // A same-origin referer (a page the proxy itself served).
        assert_eq!(
            check(
                &p,
                Method::GET,
                "/api/json",
                &[("referer", "http://127.0.0.1:8181/job/x/")]
            ),
            Ok(())
        );
        let mut allowed = policy();
        allowed.allowed_origins = vec!["http://localhost:3000".into()];
        assert_eq!(
            check(
                &allowed,
                Method::GET,
                "/api/json",
                &[("origin", "http://localhost:3000")]
            ),
            Ok(())
        );
    }

    #[test]
    fn host_allow_list_is_exact() {
        let p = policy();
        for host in ["localhost:8181", "127.0.0.1", "[::1]:8181", "LOCALHOST:1"] {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, host.parse().unwrap());
            assert!(
                p.check(&Method::GET, &"/".parse().unwrap(), &h).is_ok(),
                "{host}"
            );
        }
        for host in [
            "localhost.evil.example",
            "evil.example",
            "127.0.0.1.nip.io:8181",
            "127.0.0.2",
            "0.0.0.0",
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, host.parse().unwrap());
            let r = p
                .check(&Method::GET, &"/".parse().unwrap(), &h)
                .unwrap_err();
            assert_eq!(r.kind, "host-not-allowed", "{host}");
        }
        let r = p
            .check(&Method::GET, &"/".parse().unwrap(), &HeaderMap::new())
            .unwrap_err();
        assert_eq!((r.status.as_u16(), r.kind), (400, "bad-host"));
        // RFC 9112 §3.2: two Host headers, or one with user information.
        for hosts in [
            &["127.0.0.1:8181", "127.0.0.1:8181"][..],
            &["127.0.0.1:8181", "evil.example"],
            &["127.0.0.1:8181@evil.example"],
            &["user:pw@127.0.0.1"],
            &[""],
            &["127.0.0.1:8181/x"],
        ] {
            let mut h = HeaderMap::new();
            for host in hosts {
                h.append(header::HOST, host.parse().unwrap());
            }
            let r = p
                .check(&Method::GET, &"/".parse().unwrap(), &h)
                .unwrap_err();
            assert_eq!((r.status.as_u16(), r.kind), (400, "bad-host"), "{hosts:?}");
        }
        // An absolute-form target names a host too, and must pass as well.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "localhost".parse().unwrap());
        let r = p
            .check(&Method::GET, &"http://evil.example/".parse().unwrap(), &h)
            .unwrap_err();
        assert_eq!(r.kind, "host-not-allowed");
    }

    #[test]
    fn client_token_compared_and_required() {
        let mut p = policy();
        p.client_token = Some(Secret::new("s3cret-client-token".into()));
        let r = check(&p, Method::GET, "/api/json", &[]).unwrap_err();
        assert_eq!((r.status.as_u16(), r.kind), (407, "client-token-required"));
        let r = check(
            &p,
            Method::GET,
            "/api/json",
            &[("proxy-authorization", "Bearer wrong")],
        )
        .unwrap_err();
        assert_eq!(r.kind, "client-token-invalid");
        let ok = check(
            &p,
            Method::GET,
            "/api/json",
            &[("proxy-authorization", "bearer s3cret-client-token")],
        );
        assert_eq!(ok, Ok(()));
        assert!(!format!("{p:?}").contains("s3cret"));
    }
}

/// Property tests over random paths built from a grammar of Jenkins URLs:
/// the policy's verdict does not depend on how a path names its object.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// The three policies the properties are checked under: the built-in
    /// rules alone, user rules in front of them, and default-deny.
    fn policies() -> Vec<Policy> {
        let rule = |index: usize, action: Action, methods: Option<Vec<Method>>, path: &str| Rule {
            name: format!("policy.rules[{index}]"),
            action,
            methods,
            pattern: Pattern::parse(path).unwrap(),
        };
        let base = || Policy {
            me: "alice".into(),
            read_only: false,
            rules: Vec::new(),
            allowed_origins: Vec::new(),
            allowed_hosts: ["127.0.0.1"].into_iter().map(String::from).collect(),
            client_token: None,
            identity_headers: Box::default(),
        };
        let mut rules = base();
        rules.rules = vec![
            rule(0, Action::Deny, Some(vec![Method::POST]), "/job/x/**"),
            rule(1, Action::Allow, Some(vec![Method::POST]), "/scripttext"),
            rule(2, Action::Deny, None, "/user/bob/**"),
        ];
        let mut recipe = base();
        recipe.rules = vec![
            rule(0, Action::Allow, Some(vec![Method::POST]), "/job/**/build"),
            rule(
                1,
                Action::Allow,
                Some(vec![Method::GET]),
                "/job/**/api/json",
            ),
            rule(
                2,
                Action::Allow,
                Some(vec![Method::GET]),
                "/queue/item/*/api/json",
            ),
            rule(3, Action::Deny, None, "/**"),
        ];
        vec![base(), rules, recipe]
    }

    fn allowed(policy: &Policy, method: &Method, path: &str) -> bool {
        let uri: Uri = path.parse().unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8181".parse().unwrap());
        policy.check(method, &uri, &headers).is_ok()
    }

    /// Names that look like actions, and plain ones.
    fn name() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "x",
            "sample",
            "script",
            "cli",
            "manage",
            "credentials",
            "eval",
            "heapdump",
            "restart",
            "me",
            "view",
            "job",
            "api",
            "alice",
            "bob",
        ])
    }

    fn action() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "build",
            "buildWithParameters",
            "api/json",
            "config.xml",
            "scriptText",
            "script",
            "eval",
            "cli",
            "heapDump",
            "credentials/store/system",
            "restart",
            "doDelete",
            "configSubmit",
            "descriptorByName/jenkins.security.ApiTokenProperty/generateNewToken",
            "systemInfo",
            "log",
            "jenkins-agent.jnlp",
            "lastBuild/api/json",
            "1/consoleText",
            "1/artifact/script",
            "ws/credentials",
        ])
    }

    /// An object, written canonically and in one of its other spellings.
    #[derive(Debug, Clone)]
    enum Object {
        Root,
        Item(Vec<&'static str>),
        User(&'static str),
        Computer(&'static str),
    }

    fn object() -> impl Strategy<Value = Object> {
        prop_oneof![
            Just(Object::Root),
            prop::collection::vec(name(), 1..4).prop_map(Object::Item),
            prop::sample::select(vec!["alice", "bob", "script"]).prop_map(Object::User),
            prop::sample::select(vec!["(built-in)", "agent-1", "cli"]).prop_map(Object::Computer),
        ]
    }

    fn canonical(object: &Object) -> String {
        match object {
            Object::Root => String::new(),
            Object::Item(names) => names.iter().map(|n| format!("/job/{n}")).collect(),
            Object::User(u) => format!("/user/{u}"),
            Object::Computer(c) => format!("/computer/{c}"),
        }
    }

    /// Another way Jenkins' URL binding reaches the same object (choice
    /// picks which, where there are several).
    fn alias(object: &Object, choice: usize) -> String {
        let manage = ["", "/manage", "/manage/manage/manage"][choice % 3];
        match object {
            Object::Root => manage.to_owned(),
            Object::Item(names) => {
                let views = [
                    "",
                    "/view/all",
                    "/view/all/view/v",
                    "/me/my-views/view/all",
                    "/user/alice/my-views/view/all",
                    "/user/bob/my-views",
                ];
                let getter = if choice % 2 == 0 { "job" } else { "item" };
                let mut out = format!(
                    "{manage}{}/{getter}/{}",
                    views[choice % views.len()],
                    names[0]
                );
                for (i, n) in names.iter().enumerate().skip(1) {
                    // A folder's own view hands out its items too.
                    if (choice + i) % 3 == 0 {
                        out.push_str("/view/all");
                    }
                    out.push_str(&format!("/job/{n}"));
                }
                out
            }
            Object::User(u) => {
                let forms = [
                    format!("/user/{u}"),
                    format!("/securityRealm/user/{u}"),
                    format!("/user/{u}/my-views/user"),
                ];
                let form = if *u == "alice" && choice % 4 == 3 {
                    "/me".to_owned()
                } else {
                    forms[choice % forms.len()].clone()
                };
                format!("{manage}{form}")
            }
            Object::Computer(c) => {
                let c = if *c == "(built-in)" && choice % 2 == 1 {
                    "(master)"
                } else {
                    c
                };
                format!("{manage}/computer/{c}")
            }
        }
    }

    /// Spellings every servlet container reads the same: a percent-encoded
    /// or upper-cased character, a `;` parameter on a segment. With
    /// `twice`, some characters are encoded twice, which Stapler reads as
    /// a literal escape (another name) and other decoders as the character.
    fn respell(path: &str, seed: &[u8], twice: bool) -> String {
        let mut out = String::new();
        for (i, c) in path.chars().enumerate() {
            let roll = seed[i % seed.len()].wrapping_add(i as u8);
            match roll % 11 {
                0 if c != '/' => out.push_str(&format!("%{:02X}", c as u32)),
                1 if c != '/' && twice => out.push_str(&format!("%25{:02x}", c as u32)),
                2 => out.push(c.to_ascii_uppercase()),
                3 if c == '/' && i > 0 => out.push_str(";jsessionid=0/"),
                _ => out.push(c),
            }
        }
        out
    }

    /// The first policy (by index) that refuses `plain` but allows
    /// `variant`, if any.
    fn more_permissive(method: &Method, plain: &str, variant: &str) -> Option<usize> {
        policies()
            .iter()
            .position(|policy| !allowed(policy, method, plain) && allowed(policy, method, variant))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Aliases and spellings of the same object and action get the
        /// same verdict from every policy.
        #[test]
        fn verdict_does_not_depend_on_the_spelling(
            object in object(),
            action in action(),
            choice in 0usize..1000,
            seed in prop::collection::vec(any::<u8>(), 1..16),
            post in any::<bool>(),
        ) {
            let method = if post { Method::POST } else { Method::GET };
            let plain = format!("{}/{action}", canonical(&object));
            let aliased = respell(&format!("{}/{action}", alias(&object, choice)), &seed, false);
            for (i, policy) in policies().iter().enumerate() {
                prop_assert_eq!(
                    allowed(policy, &method, &plain),
                    allowed(policy, &method, &aliased),
                    "policy {}: {} {} vs {}", i, method, plain, aliased
                );
            }
        }

        /// Double encoding, which readers decode differently, never turns
        /// a refusal into an allow.
        #[test]
        fn double_encoding_is_never_more_permissive(
            object in object(),
            action in action(),
            choice in 0usize..1000,
            seed in prop::collection::vec(any::<u8>(), 1..16),
            post in any::<bool>(),
        ) {
            let method = if post { Method::POST } else { Method::GET };
            let plain = format!("{}/{action}", canonical(&object));
            let twice = respell(&format!("{}/{action}", alias(&object, choice)), &seed, true);
            let found = more_permissive(&method, &plain, &twice);
            prop_assert!(found.is_none(), "policy {:?}: {} {} refused but {} allowed", found, method, plain, twice);
        }

        /// Spellings containers may read two ways (dot segments, doubled
        /// slashes, a root action behind a view) never turn a refusal into
        /// an allow.
        #[test]
        fn ambiguous_spellings_are_never_more_permissive(
            object in object(),
            action in action(),
            detour in prop::sample::select(vec![
                "/y/..", "/./", "/", "/job/y/../..", "/y/..;", "/y/%2e%2e", "/%2e",
                "/script/..", "/y;x=1/..;y=2", "/view/all",
            ]),
            post in any::<bool>(),
        ) {
            let method = if post { Method::POST } else { Method::GET };
            let plain = format!("{}/{action}", canonical(&object));
            // A view reaches the root's actions; elsewhere it is another object.
            let detour = if detour == "/view/all" && !matches!(object, Object::Root) { "/./" } else { detour };
            let detoured = format!("{}{detour}/{action}", canonical(&object));
            let found = more_permissive(&method, &plain, &detoured);
            prop_assert!(found.is_none(), "policy {:?}: {} {} refused but {} allowed", found, method, plain, detoured);
        }
    }
}
