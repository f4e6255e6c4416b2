//! The proxy owns who Jenkins thinks the caller is: the client address hashed
//! into crumbs before Jenkins 2.543, the user a header-trusting realm reads,
//! the protocol a connection is upgraded to, and the credentials an old
//! Jenkins' `/whoAmI/` page would echo. Each test first shows that the double
//! would be fooled by what a client sends, then that through the proxy it
//! is not.

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::jenkins::{MockJenkins, PRE_2543_VERSION};
use crate::support::proxy::{client_requests, request, Extra, Http, Proxy, Secret};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";
/// `alice:correct horse`, as the proxy sends it.
const ALICE_BASIC: &str = "Basic YWxpY2U6Y29ycmVjdCBob3JzZQ==";

/// Headers a client might send to pick its identity or address.
const CLIENT_IDENTITY: &[(&str, &str)] = &[
    ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
    ("forwarded", "for=203.0.113.9;proto=https;host=evil.example"),
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-port", "443"),
    ("x-forwarded-user", "admin"),
    ("x-forwarded-groups", "admins"),
    ("x-remote-user", "admin"),
    ("remote-user", "admin"),
    ("x-real-ip", "203.0.113.9"),
    ("x-auth-user", "admin"),
];

/// A pre-2.543 Jenkins hashes the first `X-Forwarded-For` hop into the
/// crumb, and a realm that trusts `X-Forwarded-User` takes the user from
/// it. Whatever a client sends, the proxy's POSTs keep working (one crumb
/// fetch, no 403), Jenkins sees the proxy's user and the proxy's constant
/// `X-Forwarded-For` on the crumb fetch and on every request alike, and no
/// client identity header at all (`policy.identity_headers` adds one).
#[tokio::test]
async fn client_identity_headers_never_reach_jenkins() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .version(PRE_2543_VERSION)
        .trust_user_header("x-forwarded-user")
        .start()
        .await;
    let http = Http::new();

    // The double would be fooled by a client talking to it directly.
    let direct = http
        .send(request(
            Method::GET,
            &format!("{}whoAmI/api/json", jenkins.root_url()),
            &[("x-forwarded-user", "admin")],
            Bytes::new(),
        ))
        .await;
    assert!(
        direct.text().contains("\"name\":\"admin\""),
        "{}",
        direct.text()
    );

    let extra = Extra {
        tail: "[policy]\nidentity_headers = [\"X-Auth-User\"]".into(),
        ..Extra::default()
    };
    let proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
    )
    .await;
    for hop in ["203.0.113.9", "198.51.100.1", "10.0.0.7, 203.0.113.9"] {
        let mut headers = CLIENT_IDENTITY.to_vec();
        headers[0] = ("x-forwarded-for", hop);
        let reply = http
            .send(request(
                Method::POST,
                &proxy.url("/job/sample-job/build"),
                &headers,
                Bytes::new(),
            ))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{hop}: {}", reply.text());
        assert!(
            reply
                .header("location")
                .unwrap()
                .starts_with("http://127.0.0.1:"),
            "Jenkins built its URL from the proxy's address, not the client's"
        );
    }
    let reply = http
        .send(request(
            Method::GET,
            &proxy.url("/whoAmI/api/json"),
            CLIENT_IDENTITY,
            Bytes::new(),
        ))
        .await;
    assert!(
        reply.text().contains("\"name\":\"alice\""),
        "{}",
        reply.text()
    );

    assert_eq!(jenkins.crumb_fetches(), 1, "one crumb served every POST");
    // Everything after the direct request came from the proxy: the crumb
    // fetch, the POSTs, the whoAmI (and the root-URL lookup for `Location`).
    let seen = &jenkins.requests()[1..];
    assert!(seen.len() >= 5, "{seen:?}");
    let set_by_proxy = [
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
    ];
    for r in seen {
        assert_eq!(r.user.as_deref(), Some(USER), "{} {}", r.method, r.path);
        let forwarded_for: Vec<_> = r.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(forwarded_for, ["127.0.0.1"], "{}", r.path);
        for (name, _) in CLIENT_IDENTITY {
            if !set_by_proxy.contains(name) {
                assert!(!r.headers.contains_key(*name), "{name} reached {}", r.path);
            }
        }
        if r.path != "/crumbIssuer/api/json" && r.query.as_deref() != Some("tree=url") {
            assert_eq!(r.headers["x-forwarded-proto"], "http");
            assert!(r.headers["x-forwarded-host"]
                .to_str()
                .unwrap()
                .starts_with("127.0.0.1:"));
        }
    }
    proxy.stop().await;
    jenkins.finish().await;
}

/// Only WebSocket is upgraded to. A client asking for `h2c` gets a plain
/// HTTP/1.1 answer, and Jenkins sees neither the `Upgrade` nor the
/// `HTTP2-Settings` it named in `Connection`.
#[tokio::test]
async fn upgrades_other_than_websocket_are_dropped() {
    let jenkins = MockJenkins::builder().user(USER, PASSWORD).start().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(
        b"GET /api/json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 12];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        conn.read_exact(&mut head),
    )
    .await
    .expect("an answer in time")
    .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));
    let seen = client_requests(&jenkins);
    assert_eq!(seen.len(), 1);
    for name in ["upgrade", "connection", "http2-settings"] {
        assert!(
            !seen[0].headers.contains_key(name),
            "{name}: {:?}",
            seen[0].headers
        );
    }
    drop(conn);
    proxy.stop().await;
    jenkins.finish().await;
}

/// Before Jenkins 2.219 (LTS 2.204.2) the `/whoAmI/` page prints every
/// request header, the proxy's `Authorization` among them. The proxy learns
/// the version from `X-Jenkins` and refuses the page on such a Jenkins;
/// on a fixed one it passes, and `whoAmI/api/json` always does.
#[tokio::test]
async fn old_jenkins_whoami_page_never_echoes_the_proxys_credentials() {
    let http = Http::new();
    for (version, refused) in [
        ("2.218", true),
        ("2.204.1", true),
        ("2.150.3", true),
        ("2.204.2", false),
        ("2.219", false),
        ("2.541.3", false),
    ] {
        let jenkins = MockJenkins::builder()
            .user(USER, PASSWORD)
            .version(version)
            .start()
            .await;
        // The double shows what would leak: its page echoes Authorization.
        let direct = http
            .send(request(
                Method::GET,
                &format!("{}whoAmI/", jenkins.root_url()),
                &[("authorization", ALICE_BASIC)],
                Bytes::new(),
            ))
            .await;
        assert_eq!(
            direct.text().contains(ALICE_BASIC),
            refused,
            "{version}: {}",
            direct.text()
        );
        let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
        for path in ["/whoAmI/", "/whoAmI", "/manage/whoAmI/", "/%77hoAmI/"] {
            let reply = http.get(&proxy.url(path)).await;
            if refused {
                assert_eq!(reply.status, StatusCode::FORBIDDEN, "{version} {path}");
                assert_eq!(
                    reply.header("x-crumb-proxy-rule"),
                    Some("whoami-echoes-credentials"),
                    "{version} {path}"
                );
            } else {
                assert_eq!(reply.status, StatusCode::OK, "{version} {path}");
            }
            assert!(!reply.text().contains("Basic "), "{version} {path}");
        }
        let reply = http.get(&proxy.url("/whoAmI/api/json")).await;
        assert_eq!(reply.status, StatusCode::OK, "{version}");
        // Past the direct request, the page reached Jenkins only where it
        // was allowed.
        let pages = jenkins.requests()[1..]
            .iter()
            .filter(|r| !r.path.ends_with("/api/json"))
            .count();
        assert_eq!(pages, if refused { 0 } else { 4 }, "{version}");
        proxy.stop().await;
        jenkins.finish().await;
    }
}

/// RFC 9112 §3.2: a request with two `Host` headers, or a `Host` with user
/// information, is answered 400, and Jenkins hears nothing of it.
#[tokio::test]
async fn host_headers_that_are_not_one_host_get_400() {
    let jenkins = MockJenkins::builder().user(USER, PASSWORD).start().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    for head in [
        "Host: 127.0.0.1\r\nHost: 127.0.0.1\r\n",
        "Host: 127.0.0.1\r\nHost: evil.example\r\n",
        "Host: 127.0.0.1:8181@evil.example\r\n",
        "Host: alice:pw@127.0.0.1\r\n",
    ] {
        let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
        conn.write_all(format!("POST /job/sample-job/build HTTP/1.1\r\n{head}Content-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            conn.read_to_end(&mut answer),
        )
        .await
        .expect("an answer in time")
        .unwrap();
        let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(answer.starts_with("http/1.1 400"), "{head:?}: {answer}");
        assert!(answer.contains("x-crumb-proxy-error: bad-host"), "{answer}");
    }
    assert!(jenkins.requests().is_empty(), "{:?}", jenkins.requests());
    proxy.stop().await;
    jenkins.finish().await;
}

/// A client that shuts its sending side right after a complete request
/// (`nc -N` does) still gets Jenkins' answer, with a body of known length
/// and with a chunked one.
#[tokio::test]
async fn half_closed_clients_get_their_answer() {
    let jenkins = MockJenkins::builder().user(USER, PASSWORD).start().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    for request in [
        "POST /job/sample-job/build HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello",
        "POST /job/sample-job/build HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "GET /api/json HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
    ] {
        let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
        conn.write_all(request.as_bytes()).await.unwrap();
        conn.shutdown().await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(10), conn.read_to_end(&mut answer))
            .await
            .expect("an answer in time")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        let expected = if request.starts_with("GET") { "200" } else { "201" };
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected}")) || answer.starts_with(&format!("HTTP/1.0 {expected}")),
            "{request:?}: {answer}"
        );
    }
    assert_eq!(jenkins.accepted_triggers("sample-job"), 2);
    proxy.stop().await;
    jenkins.finish().await;
}
