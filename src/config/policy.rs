//! The `[policy]` section: read-only mode, the allowed origins, the extra
//! identity headers and the ordered allow/deny rules, with a check for rules
//! that can never match: shadowed by an earlier one, or written as an alias
//! (`/manage/…`, `/view/V/job/…`, `/me/…`) of the path Jenkins binds, which
//! is what patterns match.

use super::*;

pub(super) fn policy_from_raw(
    raw: RawPolicy,
    allowed_hosts: HashSet<String>,
    client_token: Option<Secret>,
    username: &str,
) -> Result<Policy, ConfigError> {
    let me = username.to_lowercase();
    let read_only = raw.read_only.unwrap_or(false);
    let mut rules: Vec<Rule> = Vec::new();
    for (index, r) in raw.rules.into_iter().enumerate() {
        let fail = |problem: String| ConfigError::Rule {
            index,
            path: r.path.clone(),
            problem,
        };
        let action = match r.action.as_str() {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            other => {
                return Err(fail(format!(
                    "action {other:?} must be \"allow\" or \"deny\""
                )))
            }
        };
        let methods = match &r.methods {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(fail(
                    "methods = [] can never match; leave `methods` out to match every method"
                        .into(),
                ))
            }
            Some(list) => {
                let mut methods = Vec::new();
                for m in list {
                    let method = FORWARDED_METHODS
                        .iter()
                        .find(|known| known.as_str() == m)
                        .cloned()
                        .ok_or_else(|| {
                            fail(format!(
                                "method {m:?} is not one the proxy forwards; use one of {} \
                                 (upper case: methods are case-sensitive)",
                                FORWARDED_METHODS.map(|m| m.to_string()).join(", ")
                            ))
                        })?;
                    methods.push(method);
                }
                Some(methods)
            }
        };
        let pattern = Pattern::parse(&r.path).map_err(|p| fail(format!("can never match: {p}")))?;
        if let Some(problem) = alias_problem(&pattern, &me) {
            return Err(fail(problem));
        }
        if read_only && action == Action::Allow {
            let writes_only = methods.as_ref().is_some_and(|ms| {
                ms.iter()
                    .all(|m| *m != http::Method::GET && *m != http::Method::HEAD)
            });
            if writes_only {
                return Err(fail(
                    "allows only writes, which policy.read_only = true refuses first; \
                     drop the rule or read_only"
                        .into(),
                ));
            }
        }
        if let Some(earlier) = rules
            .iter()
            .find(|e| shadows(e, methods.as_deref(), &pattern))
        {
            return Err(fail(format!(
                "can never match: {} ({}) comes first and matches every request this one would",
                earlier.name,
                earlier.pattern.as_str()
            )));
        }
        rules.push(Rule {
            name: format!("policy.rules[{index}]"),
            action,
            methods,
            pattern,
        });
    }
    let mut allowed_origins = Vec::new();
    for origin in raw.allowed_origins {
        let normalized = origin.trim_end_matches('/').to_ascii_lowercase();
        let ok = normalized
            .parse::<http::Uri>()
            .ok()
            .is_some_and(|u| u.scheme().is_some() && u.authority().is_some() && u.path() == "/");
        if !ok {
            return Err(ConfigError::Invalid {
                key: "policy.allowed_origins",
                value: origin,
                problem: "must be an origin as browsers send it: scheme://host[:port], \
                          e.g. \"http://localhost:3000\""
                    .into(),
            });
        }
        allowed_origins.push(normalized);
    }
    let mut identity_headers = Vec::new();
    for name in raw.identity_headers {
        let header =
            http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| ConfigError::Invalid {
                key: "policy.identity_headers",
                value: name.clone(),
                problem: "is not a header name; write it as sent, e.g. \"X-Auth-User\"".into(),
            })?;
        if FRAMING_HEADERS.contains(&header.as_str()) {
            return Err(ConfigError::Invalid {
                key: "policy.identity_headers",
                value: name,
                problem: "the proxy needs this header to forward requests; list only headers \
                          that carry a user or client identity"
                    .into(),
            });
        }
        identity_headers.push(header);
    }
    Ok(Policy {
        me,
        read_only,
        identity_headers: identity_headers.into(),
        rules,
        allowed_origins,
        allowed_hosts: allowed_hosts.into_iter().collect(),
        client_token,
    })
}

/// The methods rules can name: those the proxy forwards (`filter` refuses
/// the others, and `proxy` refuses CONNECT).
const FORWARDED_METHODS: [http::Method; 7] = [
    http::Method::GET,
    http::Method::HEAD,
    http::Method::POST,
    http::Method::PUT,
    http::Method::DELETE,
    http::Method::OPTIONS,
    http::Method::PATCH,
];

/// Patterns match the path Jenkins binds a request to (`binding`), so one
/// written as an alias (`/manage/x`, `/view/all/job/x`, `/me/x`) would
/// never match anything. Its literal part (up to a `**`, plus one more
/// segment when the pattern goes on) is resolved like a request; if no
/// reading of it is written the same, the pattern is refused with the form
/// to write instead.
fn alias_problem(pattern: &Pattern, me: &str) -> Option<String> {
    let segments = pattern.segments();
    let cut = segments
        .iter()
        .position(|s| s == "**")
        .unwrap_or(segments.len());
    let mut probe = segments[..cut].to_vec();
    if cut < segments.len() {
        probe.push("x".to_owned());
    }
    let written = format!("/{}", probe.join("/"));
    let readings: Vec<String> = crate::binding::resolve(&probe, me)?
        .iter()
        .map(|b| format!("/{}", b.path().join("/")))
        .collect();
    if readings.contains(&written) {
        return None;
    }
    Some(format!(
        "can never match as written: patterns match the path Jenkins binds a request to, \
         and it binds {written} as {}; write the pattern in that form (see \"Policy rules\" in README.md)",
        readings.join(" or ")
    ))
}

/// Headers that frame or route a request, which `policy.identity_headers`
/// must not remove.
const FRAMING_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
];

/// Whether `earlier` matches every request a rule with `methods` and
/// `pattern` would (so the later rule is dead).
fn shadows(earlier: &Rule, methods: Option<&[http::Method]>, pattern: &Pattern) -> bool {
    let methods_covered = match (&earlier.methods, methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(m)) => m.iter().all(|x| e.contains(x)),
    };
    methods_covered && (earlier.pattern.is_everything() || earlier.pattern == *pattern)
}
