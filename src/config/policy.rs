//! The `[policy]` section: read-only mode, the allowed origins and the
//! ordered allow/deny rules, with a check for rules an earlier one shadows.

use super::*;

pub(super) fn policy_from_raw(
    raw: RawPolicy,
    allowed_hosts: HashSet<String>,
    client_token: Option<Secret>,
) -> Result<Policy, ConfigError> {
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
                    let method = http::Method::from_bytes(m.as_bytes())
                        .ok()
                        .filter(|_| m.chars().all(|c| c.is_ascii_uppercase()))
                        .ok_or_else(|| {
                            fail(format!(
                                "method {m:?} is not an upper-case HTTP method such as \"POST\""
                            ))
                        })?;
                    if method == http::Method::CONNECT {
                        return Err(fail(
                            "CONNECT never reaches the policy (the proxy refuses it)".into(),
                        ));
                    }
                    methods.push(method);
                }
                Some(methods)
            }
        };
        let pattern = Pattern::parse(&r.path).map_err(|p| fail(format!("can never match: {p}")))?;
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
    Ok(Policy {
        read_only,
        rules,
        allowed_origins,
        allowed_hosts: allowed_hosts.into_iter().collect(),
        client_token,
    })
}

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
