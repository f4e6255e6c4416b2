//! Header surgery that does not depend on policy.
//!
//! This module owns the list of hop-by-hop headers (RFC 9110 §7.6.1),
//! removing the client's own credentials, cookies and crumbs before a request
//! goes to Jenkins, removing Jenkins' `Set-Cookie` before a response goes back,
//! and rewriting a `Location` that points at Jenkins so that it points at the
//! proxy. Which headers to *add* (credentials, crumb, session) is `proxy`'s
//! decision.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Uri;

use crate::rewrite::Roots;
use crate::upstream::BaseUrl;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1:
/// "a proxy or gateway MUST remove any received connection options before
/// forwarding a message"), plus the pre-standard `Proxy-Connection` and
/// `Keep-Alive` that the RFC lists as commonly seen.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including every header named in `Connection`
/// (RFC 9110 §7.6.1). `Upgrade` is removed too; an upgrade is re-announced
/// explicitly by `proxy` when it forwards one.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present (a handful) instead of a hashed
    // lookup per name that might be: nearly always nothing goes.
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name) || *name == header::UPGRADE)
        .cloned()
        .collect();
    if !doomed.is_empty() {
        doomed.extend(
            connection_options(headers)
                // The usual options name no header, or one that goes anyway.
                .filter(|name| {
                    !["close", "keep-alive", "upgrade"]
                        .iter()
                        .any(|known| name.eq_ignore_ascii_case(known))
                })
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok()),
        );
    }
    remove_all(headers, doomed);
}

/// The comma-separated options of every `Connection` header, trimmed.
fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Removes every header in `names` (all values of each).
fn remove_all(headers: &mut HeaderMap, names: Vec<HeaderName>) {
    for name in names {
        headers.remove(name);
    }
}

/// The only protocol a client may upgrade to: Jenkins speaks WebSocket
/// (agents, the CLI's `/cli/ws`) and nothing else. `h2c` and any other
/// `Upgrade` would hand the connection to a protocol the proxy does not
/// look into, so it is dropped with the other hop-by-hop headers and the
/// request goes on as plain HTTP/1.1 (RFC 9110 §7.8: a server may ignore
/// an upgrade).
const WEBSOCKET: HeaderValue = HeaderValue::from_static("websocket");

/// `websocket` if the request asks for a WebSocket upgrade the proper way
/// (`Connection: upgrade` plus an `Upgrade` list naming `websocket`, RFC
/// 9110 §7.8); `None` for any other upgrade or none. Read before
/// [`strip_hop_by_hop`] runs.
pub(crate) fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = connection_options(headers).any(|token| token.eq_ignore_ascii_case("upgrade"));
    if !asks {
        return None;
    }
    let websocket = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|protocol| protocol.trim().eq_ignore_ascii_case("websocket"));
    websocket.then_some(WEBSOCKET)
}

/// The legacy (pre-2.0) and current default crumb field names. Jenkins can
/// be configured to use another one; `proxy` strips that one too once the
/// crumb issuer has named it.
pub(crate) const DEFAULT_CRUMB_FIELDS: [&str; 2] = ["jenkins-crumb", ".crumb"];

/// Request headers that tell a server who the client is, which only the
/// proxy may say to Jenkins. Jetty's `ForwardedRequestCustomizer` (which
/// Winstone installs) reads the address, scheme, host and client
/// certificate from `Forwarded`, `X-Forwarded-*`, `X-Proxied-Https`,
/// `Proxy-auth-cert` and `Proxy-ssl-id`; header-trusting security realms
/// (the reverse-proxy-auth plugin: `X-Forwarded-User`, `-Groups`, `-Mail`,
/// `-DisplayName`; Apache- and oauth2-proxy-style set-ups: `Remote-User`,
/// `X-Remote-User`, `X-Auth-Request-*`) take the *user* from them. A client
/// that sent one could choose its identity, or, before Jenkins 2.543, the
/// client IP hashed into crumbs. `X-Forwarded-Host`, `-Proto`, `-Port` and
/// `-For` are then set by [`set_forwarded`]; the rest are dropped. (A
/// `match` on the name: it compares lengths first, so the ordinary headers
/// of a request cost next to nothing.)
fn is_identity_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-forwarded-port"
            | "x-forwarded-server"
            | "x-forwarded-ssl"
            | "x-forwarded-prefix"
            | "x-forwarded-user"
            | "x-forwarded-groups"
            | "x-forwarded-mail"
            | "x-forwarded-email"
            | "x-forwarded-displayname"
            | "x-forwarded-preferred-username"
            | "x-real-ip"
            | "x-remote-user"
            | "x-remote-group"
            | "remote-user"
            | "x-auth-request-user"
            | "x-auth-request-email"
            | "x-auth-request-groups"
            | "x-proxied-https"
            | "proxy-auth-cert"
            | "proxy-ssl-id"
    )
}

/// Removes what would let a client choose or mix identities: its own
/// `Authorization`, `Cookie` and crumb headers, every forwarding and
/// identity header ([`is_identity_header`]) and the operator's own list
/// (`policy.identity_headers`, for a realm that reads another header). The
/// proxy adds its own credentials and forwarding headers.
/// `Expect` goes too: the proxy answers `100-continue` itself when it starts
/// reading the body, and hyper's client does not wait for one.
pub(crate) fn strip_client_credentials(
    headers: &mut HeaderMap,
    crumb_field: Option<&HeaderName>,
    identity: &[HeaderName],
) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            *name == header::AUTHORIZATION
                || *name == header::COOKIE
                || *name == header::EXPECT
                || DEFAULT_CRUMB_FIELDS.contains(&name.as_str())
                || crumb_field == Some(*name)
                || is_identity_header(name)
                || identity.contains(name)
        })
        .cloned()
        .collect();
    remove_all(headers, doomed);
}

/// What the proxy tells Jenkins the client's address is, on every request
/// and every crumb fetch alike: before Jenkins 2.543 `DefaultCrumbIssuer`
/// hashes the first `X-Forwarded-For` hop (else the peer address) into the
/// crumb, so a crumb fetched with one value is refused on a POST that
/// carries another. One constant value keeps every request on the crumb the
/// proxy fetched, whichever client (IPv4, IPv6, Unix socket) sent it. The
/// proxy's callers are local, so it is the loopback address.
pub(crate) const FORWARDED_FOR: HeaderValue = HeaderValue::from_static("127.0.0.1");

/// The `X-Forwarded-For` header name.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The proxy's own address as the client used it, for Jenkins to build
/// URLs with (`getRootUrlFromRequest`, Jetty's `ForwardedRequestCustomizer`),
/// and the client address of [`FORWARDED_FOR`]. Run after
/// [`strip_client_credentials`], which removed whatever the client sent in
/// these headers.
pub(crate) fn set_forwarded(headers: &mut HeaderMap, proxy_authority: &str) {
    const HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    const PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
    let port = proxy_authority
        .rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty())
        .map_or("80", |(_, p)| p);
    if let Ok(host) = HeaderValue::try_from(proxy_authority) {
        headers.insert(HOST, host);
    }
    headers.insert(PROTO, HeaderValue::from_static("http"));
    if let Ok(port) = HeaderValue::try_from(port) {
        headers.insert(PORT, port);
    }
    headers.insert(X_FORWARDED_FOR, FORWARDED_FOR);
}

/// Jenkins' session cookies are credentials of the proxy's user (and the
/// `remember-me` clearing cookie of a 401 is meaningless to callers): none
/// of them reaches a client.
pub(crate) fn strip_set_cookie(headers: &mut HeaderMap) {
    headers.remove(header::SET_COOKIE);
}

/// The proxy never emits CORS headers: a Jenkins plugin that grants
/// cross-origin access would otherwise hand every web page the proxy's
/// identity.
pub(crate) fn strip_cors(headers: &mut HeaderMap) {
    let cors: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in cors {
        headers.remove(name);
    }
}

/// Rewrites `Location` so that a redirect into Jenkins stays on the proxy:
/// an absolute URL below the upstream root becomes `http://<proxy>/<rest>`,
/// an absolute path below the context path loses the prefix. Anything else
/// (another host, a relative reference) is left alone.
pub(crate) fn rewrite_location(
    headers: &mut HeaderMap,
    base: &BaseUrl,
    proxy_authority: &str,
    roots: &Roots,
) {
    let Some(value) = headers.get(header::LOCATION) else {
        return;
    };
    let Ok(text) = value.to_str() else {
        return;
    };
    let rewritten = if let Some(new) = roots.rewrite_prefix(text) {
        Some(new)
    } else if text.starts_with('/') && !text.starts_with("//") {
        if base.prefix().is_empty() {
            return;
        }
        base.strip_path(text)
    } else if let Ok(uri) = text.parse::<Uri>() {
        base.strip_absolute(&uri)
            .map(|rest| format!("http://{proxy_authority}{rest}"))
    } else {
        None
    };
    if let Some(new) = rewritten.and_then(|s| HeaderValue::try_from(s).ok()) {
        headers.insert(header::LOCATION, new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "close, X-Trace"),
            ("connection", "x-other"),
            ("x-trace", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic eA=="),
            ("x-kept", "yes"),
            ("content-length", "3"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "x-kept"]);
    }

    #[test]
    fn client_credentials_go() {
        let mut h = map(&[
            ("authorization", "Basic bWFsbG9yeTp4"),
            ("cookie", "JSESSIONID.abc=node0x"),
            ("Jenkins-Crumb", "c"),
            (".crumb", "c"),
            ("x-custom-crumb", "c"),
            ("expect", "100-continue"),
            ("accept", "*/*"),
        ]);
        strip_client_credentials(
            &mut h,
            Some(&HeaderName::from_static("x-custom-crumb")),
            &[],
        );
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn upgrade_needs_connection_token() {
        let h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(requested_upgrade(&h).unwrap(), "websocket");
        let h = map(&[("upgrade", "websocket")]);
        assert!(requested_upgrade(&h).is_none());
    }

    /// Only WebSocket is ever upgraded to; `h2c` and other protocols are
    /// not, and a list naming WebSocket among others asks for WebSocket.
    #[test]
    fn only_websocket_is_upgraded_to() {
        for other in ["h2c", "HTTP/2.0", "TLS/1.2", "websocketx", "IRC/6.9"] {
            let h = map(&[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", other),
            ]);
            assert!(requested_upgrade(&h).is_none(), "{other}");
        }
        let h = map(&[("connection", "upgrade"), ("upgrade", "h2c, WebSocket")]);
        assert_eq!(requested_upgrade(&h).unwrap(), "websocket");
    }

    /// Whatever identity or forwarding header a client sends, Jenkins gets
    /// only the proxy's: the constant `X-Forwarded-For` (crumbs before
    /// 2.543 hash it) and the proxy's own address.
    #[test]
    fn identity_and_forwarding_headers_are_the_proxys() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
            ("x-forwarded-for", "198.51.100.7"),
            ("forwarded", "for=203.0.113.9;proto=https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-user", "admin"),
            ("X-Forwarded-Groups", "admins"),
            ("x-remote-user", "admin"),
            ("remote-user", "admin"),
            ("x-real-ip", "203.0.113.9"),
            ("x-auth-request-user", "admin"),
            ("proxy-auth-cert", "MII..."),
            ("x-my-realm-user", "admin"),
            ("x-request-id", "kept"),
            ("accept", "*/*"),
        ]);
        strip_client_credentials(&mut h, None, &[HeaderName::from_static("x-my-realm-user")]);
        set_forwarded(&mut h, "127.0.0.1:8181");
        let mut left: Vec<(String, String)> = h
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        left.sort();
        let expected = [
            ("accept", "*/*"),
            ("x-forwarded-for", "127.0.0.1"),
            ("x-forwarded-host", "127.0.0.1:8181"),
            ("x-forwarded-port", "8181"),
            ("x-forwarded-proto", "http"),
            ("x-request-id", "kept"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(left, expected);
    }

    #[test]
    fn location_rewrite() {
        let base = BaseUrl::parse("http://127.0.0.1:9000/jenkins/").unwrap();
        let cases = [
            (
                "http://127.0.0.1:9000/jenkins/queue/item/3/",
                "http://127.0.0.1:8181/queue/item/3/",
            ),
            (
                "http://localhost:9000/jenkins/x",
                "http://localhost:9000/jenkins/x",
            ),
            // Same host and port, other scheme: the same server.
            (
                "https://127.0.0.1:9000/jenkins/x",
                "http://127.0.0.1:8181/x",
            ),
            (
                "http://127.0.0.1:9001/jenkins/x",
                "http://127.0.0.1:9001/jenkins/x",
            ),
            ("/jenkins/job/a/", "/job/a/"),
            ("/other/", "/other/"),
            ("queue/item/3/", "queue/item/3/"),
            ("http://example.org/", "http://example.org/"),
        ];
        for (from, to) in cases {
            let mut h = map(&[("location", from)]);
            rewrite_location(
                &mut h,
                &base,
                "127.0.0.1:8181",
                &Roots::new([], "http://127.0.0.1:8181/"),
            );
            assert_eq!(h["location"], to, "{from}");
        }
    }
}
