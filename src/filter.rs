//! The security policy: which requests may reach Jenkins at all.
//!
//! The proxy adds valid credentials and a valid crumb to whatever reaches
//! it, so it switches Jenkins' CSRF protection off for every caller that can
//! reach its port, including web pages open in a browser on the same
//! machine. This module puts the door back: it refuses, before anything is
//! forwarded, requests without the configured client token, requests whose
//! `Host` is not the proxy's own (DNS rebinding), requests with browser
//! provenance (`Origin`, `Sec-Fetch-Site`, a foreign `Referer`), requests
//! with ambiguous framing, and requests to dangerous Jenkins endpoints or
//! outside the user's rules, matched on the canonical path (`canonical`).
//! It never touches the upstream and never decides about crumbs.

use std::fmt;

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode, Uri};
use subtle::ConstantTimeEq as _;

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
    fn applies(&self, method: &Method, path: &CanonicalPath) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method)) && self.pattern.matches(path)
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
            "host-not-allowed" => {
                "address the proxy as localhost, 127.0.0.1 or [::1], or add the name to listen.allowed_hosts"
            }
            "browser-request" => {
                "browsers are refused because the proxy would act for any web page; use curl or a script, or add the origin to policy.allowed_origins"
            }
            "ambiguous-framing" => "send either Content-Length or Transfer-Encoding, not both",
            _ => "allow it with a [[policy.rules]] entry (action = \"allow\") if this caller really needs it",
        }
    }
}

/// A built-in rule: a name for messages and config, and a matcher over the
/// method and canonical segments. Written as code rather than patterns so
/// that "a job named `script`" or "a folder named `credentials`" is never
/// mistaken for the endpoint (the exec-named-pod bug of kubectl proxy,
/// anchors.md §3.1).
struct Builtin {
    name: &'static str,
    what: &'static str,
    matches: fn(&Method, &[&str]) -> bool,
}

fn unsafe_method(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD)
}

/// Drops a leading `manage/`: Jenkins serves its management pages under
/// both `/x` and `/manage/x`.
fn without_manage<'a>(s: &'a [&'a str]) -> &'a [&'a str] {
    match s {
        ["manage", rest @ ..] => rest,
        _ => s,
    }
}

/// The part of the path below a user: `/user/NAME/…`, `/me/…`,
/// `/securityrealm/user/NAME/…`, `/people/NAME/…`.
fn below_user<'a>(s: &'a [&'a str]) -> Option<&'a [&'a str]> {
    match s {
        ["user" | "people", _, rest @ ..] => Some(rest),
        ["me", rest @ ..] => Some(rest),
        ["securityrealm", "user", _, rest @ ..] => Some(rest),
        _ => None,
    }
}

/// The part of the path below any chain of `job/NAME` and `view/NAME`
/// (folders, views, multibranch projects nest these freely).
fn below_items<'a>(mut s: &'a [&'a str]) -> &'a [&'a str] {
    while let ["job" | "view", _, rest @ ..] = s {
        s = rest;
    }
    s
}

/// Jenkins endpoints denied unless a user rule allows them.
const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "script-console",
        what: "the Groovy script console runs arbitrary code on the controller or an agent",
        matches: |_, s| {
            matches!(
                without_manage(s),
                ["script" | "scripttext", ..] | ["computer", _, "script" | "scripttext", ..]
            )
        },
    },
    Builtin {
        name: "cli",
        what: "the Jenkins CLI endpoint can run any CLI command",
        matches: |_, s| matches!(s, ["cli", ..]),
    },
    Builtin {
        name: "api-tokens",
        what: "API token generation and revocation hand out or destroy credentials",
        matches: |_, s| {
            below_user(s).is_some_and(|u| {
                matches!(
                    u,
                    ["descriptorbyname", "jenkins.security.apitokenproperty", ..]
                )
            })
        },
    },
    Builtin {
        name: "security-config",
        what: "user and security configuration changes who may do what",
        matches: |m, s| {
            let user_change = below_user(s).is_some_and(|u| {
                matches!(
                    u,
                    ["configsubmit" | "configure" | "delete" | "dodelete", ..]
                )
            });
            let global = matches!(
                without_manage(s),
                ["configuresecurity", ..] | ["securityrealm", ..] | ["authorizationstrategy", ..]
            );
            unsafe_method(m) && (user_change || global)
        },
    },
    Builtin {
        name: "credentials",
        what: "credentials stores hold secrets",
        matches: |_, s| {
            let s = without_manage(s);
            let in_user = below_user(s).is_some_and(|u| matches!(u, ["credentials", ..]));
            in_user || matches!(below_items(s), ["credentials" | "credentials-store", ..])
        },
    },
    Builtin {
        name: "plugins",
        what: "plugin and update-center changes install code on the controller",
        matches: |m, s| {
            unsafe_method(m) && matches!(without_manage(s), ["pluginmanager" | "updatecenter", ..])
        },
    },
    Builtin {
        name: "lifecycle",
        what: "restart, exit and quiet-down stop or disturb the controller",
        matches: |_, s| {
            matches!(
                without_manage(s),
                [
                    "restart"
                        | "saferestart"
                        | "exit"
                        | "safeexit"
                        | "quietdown"
                        | "cancelquietdown"
                        | "doquietdown",
                    ..
                ]
            )
        },
    },
];

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
    pub(crate) read_only: bool,
    pub(crate) rules: Vec<Rule>,
    /// Exact `Origin` values allowed (lower case, no trailing slash).
    pub(crate) allowed_origins: Vec<String>,
    /// Host names (port stripped, lower case) the proxy answers to.
    pub(crate) allowed_hosts: HostNames,
    pub(crate) client_token: Option<Secret>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("read_only", &self.read_only)
            .field("rules", &self.rules)
            .field("allowed_origins", &self.allowed_origins)
            .field("allowed_hosts", &self.allowed_hosts)
            .field(
                "client_token",
                &self.client_token.as_ref().map(|_| "[redacted]"),
            )
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
    ) -> Result<(), Rejection> {
        self.check_path(method, uri, headers, &CanonicalPath::new(uri.path()))
    }

    /// As `check`, with the request's canonical path already computed.
    pub(crate) fn check_path(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        path: &CanonicalPath,
    ) -> Result<(), Rejection> {
        self.check_client_token(headers)?;
        self.check_host(uri, headers)?;
        self.check_browser(method, headers)?;
        if headers.contains_key(header::CONTENT_LENGTH)
            && headers.contains_key(header::TRANSFER_ENCODING)
        {
            // RFC 9112 §6.3: a request smuggling shape; refuse rather than
            // rely on each hop settling it the same way.
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "ambiguous-framing",
                "the request has both Content-Length and Transfer-Encoding",
            ));
        }
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
        let from_header = match headers.get(header::HOST).map(|h| h.to_str()) {
            Some(Ok(host)) => Some(host_without_port(host)),
            Some(Err(_)) => {
                return Err(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "host-not-allowed",
                    "the Host header is not text",
                ))
            }
            None if from_target.is_none() => {
                return Err(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "host-not-allowed",
                    "the request has no Host header",
                ))
            }
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
        if let Some(origin) = headers.get(header::ORIGIN) {
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
        if let Some(site) = headers.get(SEC_FETCH_SITE) {
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
        if let Some(referer) = headers.get(header::REFERER) {
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

    fn check_rules(&self, method: &Method, path: &CanonicalPath) -> Result<(), Rejection> {
        if self.read_only && unsafe_method(method) {
            return Err(Rejection::denied(
                "read-only",
                format!("{method} {path} refused: policy.read_only allows only GET and HEAD"),
            ));
        }
        for rule in &self.rules {
            if rule.applies(method, path) {
                return match rule.action {
                    Action::Allow => Ok(()),
                    Action::Deny => Err(Rejection::denied(
                        rule.name.clone(),
                        format!(
                            "{method} {path} is denied by {} ({})",
                            rule.name,
                            rule.pattern.as_str()
                        ),
                    )),
                };
            }
        }
        let segments = path.segments();
        for builtin in BUILTINS {
            if (builtin.matches)(method, &segments) {
                return Err(Rejection::denied(
                    builtin.name,
                    format!(
                        "{method} {path} is denied by the built-in rule {}: {}",
                        builtin.name, builtin.what
                    ),
                ));
            }
        }
        Ok(())
    }
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
            read_only: false,
            rules: Vec::new(),
            allowed_origins: Vec::new(),
            allowed_hosts: ["localhost", "127.0.0.1", "[::1]"]
                .into_iter()
                .map(String::from)
                .collect(),
            client_token: None,
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
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        p.check(&method, &path.parse().unwrap(), &map)
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
            assert_eq!(
                p.check(&Method::GET, &"/".parse().unwrap(), &h),
                Ok(()),
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
        assert_eq!(r.kind, "host-not-allowed");
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
