//! The door stays shut: browsers, rebinding names, missing client tokens,
//! dangerous endpoints and oversized or slow clients are refused before
//! anything reaches Jenkins, and the Jenkins double records nothing of them.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::jenkins::MockJenkins;
use crate::support::proxy::{
    client_requests, request, set_mode, write_config, Binary, Extra, Http, Proxy, Secret,
};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";

async fn jenkins() -> MockJenkins {
    MockJenkins::builder().user(USER, PASSWORD).start().await
}

async fn proxy_with(jenkins: &MockJenkins, extra: Extra) -> Proxy {
    Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
    )
    .await
}

/// Requests with browser provenance are refused, whatever the method, and
/// Jenkins never hears of them (not even a crumb fetch). The proxy never
/// hands out CORS headers, even when Jenkins sends some.
#[tokio::test]
async fn browser_requests_never_reach_jenkins() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .extra_response_headers(
            "/api/json",
            vec![
                ("Access-Control-Allow-Origin".into(), "*".into()),
                ("Access-Control-Allow-Credentials".into(), "true".into()),
            ],
        )
        .start()
        .await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let http = Http::new();
    let provenances: [&[(&str, &str)]; 6] = [
        &[("origin", "http://evil.example")],
        &[("origin", "null")],
        &[
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "no-cors"),
        ],
        &[("sec-fetch-site", "same-site")],
        &[("referer", "http://evil.example/attack.html")],
        &[("referer", "http://127.0.0.1:1/")],
    ];
    for headers in provenances {
        for (method, path) in [
            (Method::POST, "/job/sample-job/build"),
            (Method::GET, "/api/json"),
        ] {
            let reply = http
                .send(request(
                    method.clone(),
                    &proxy.url(path),
                    headers,
                    Bytes::new(),
                ))
                .await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {headers:?}");
            assert_eq!(reply.header("x-crumb-proxy-error"), Some("browser-request"));
            assert!(reply
                .headers
                .keys()
                .all(|k| !k.as_str().starts_with("access-control-")));
        }
    }
    // Typed into the address bar: may read, may not write.
    let typed = [("sec-fetch-site", "none"), ("sec-fetch-mode", "navigate")];
    let reply = http
        .send(request(
            Method::POST,
            &proxy.url("/job/sample-job/build"),
            &typed,
            Bytes::new(),
        ))
        .await;
    assert_eq!(reply.header("x-crumb-proxy-error"), Some("browser-request"));
    assert!(
        jenkins.requests().is_empty(),
        "Jenkins saw {:?}",
        jenkins.requests()
    );

    let reply = http
        .send(request(
            Method::GET,
            &proxy.url("/api/json"),
            &typed,
            Bytes::new(),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .headers
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "{:?}",
        reply.headers
    );
    assert_eq!(client_requests(&jenkins).len(), 1);
    proxy.stop().await;

    // An origin the config allows passes.
    let extra = Extra {
        tail: "[policy]\nallowed_origins = [\"http://localhost:3000\"]".into(),
        ..Extra::default()
    };
    let proxy = proxy_with(&jenkins, extra).await;
    let reply = http
        .send(request(
            Method::GET,
            &proxy.url("/api/json"),
            &[("origin", "http://localhost:3000")],
            Bytes::new(),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    proxy.stop().await;
    jenkins.finish().await;
}

/// DNS rebinding: a name that merely resolves to 127.0.0.1 is not one the
/// proxy answers to; configured names are.
#[tokio::test]
async fn rebinding_host_names_are_refused() {
    let jenkins = jenkins().await;
    let extra = Extra {
        listen: "allowed_hosts = [\"crumb-proxy\"]".into(),
        ..Extra::default()
    };
    let proxy = proxy_with(&jenkins, extra).await;
    let http = Http::new();
    let port = proxy.addr.port();
    for host in [
        "evil.example",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "attacker:80",
    ] {
        let reply = http
            .send(request(
                Method::POST,
                &proxy.url("/job/sample-job/build"),
                &[("host", host)],
                Bytes::new(),
            ))
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{host}");
        assert_eq!(
            reply.header("x-crumb-proxy-error"),
            Some("host-not-allowed")
        );
    }
    assert!(jenkins.requests().is_empty());
    for host in [
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "crumb-proxy:8181".to_owned(),
        "127.0.0.1".to_owned(),
    ] {
        let reply = http
            .send(request(
                Method::GET,
                &proxy.url("/api/json"),
                &[("host", &host)],
                Bytes::new(),
            ))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{host}");
    }
    proxy.stop().await;
    jenkins.finish().await;
}

/// Each built-in rule refuses its endpoint before anything is sent, naming
/// the rule (the full bypass corpus is in `filter`'s unit tests).
#[tokio::test]
async fn dangerous_endpoints_are_denied_by_default() {
    let jenkins = jenkins().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let http = Http::new();
    for (method, path, rule) in [
        (Method::POST, "/scriptText", "script-console"),
        (Method::GET, "/%73cript", "script-console"),
        (
            Method::POST,
            "/computer/(built-in)/scriptText",
            "script-console",
        ),
        (Method::POST, "/cli?remoting=false", "cli"),
        (
            Method::POST,
            "/me/descriptorByName/jenkins.security.ApiTokenProperty/generateNewToken",
            "api-tokens",
        ),
        (
            Method::POST,
            "/user/alice/descriptorByName/jenkins.security.ApiTokenProperty/revoke",
            "api-tokens",
        ),
        (
            Method::POST,
            "/manage/configureSecurity/configure",
            "security-config",
        ),
        (Method::POST, "/user/alice/configSubmit", "security-config"),
        (
            Method::GET,
            "/credentials/store/system/domain/_/",
            "credentials",
        ),
        (
            Method::POST,
            "/pluginManager/installNecessaryPlugins",
            "plugins",
        ),
        (Method::POST, "/updateCenter/safeRestart", "plugins"),
        (Method::POST, "/safeRestart", "lifecycle"),
        (Method::POST, "/job/x/..;/..;/quietDown", "lifecycle"),
    ] {
        let reply = http
            .send(request(method.clone(), &proxy.url(path), &[], Bytes::new()))
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(
            reply.header("x-crumb-proxy-error"),
            Some("denied-by-policy"),
            "{path}"
        );
        assert_eq!(reply.header("x-crumb-proxy-rule"), Some(rule), "{path}");
        assert!(
            reply.text().contains(rule) && reply.text().contains("policy.rules"),
            "{}",
            reply.text()
        );
    }
    assert!(
        jenkins.requests().is_empty(),
        "Jenkins saw {:?}",
        jenkins.requests()
    );
    proxy.stop().await;
    jenkins.finish().await;
}

/// `read_only = true`: GET and HEAD pass, nothing else does.
#[tokio::test]
async fn read_only_mode() {
    let jenkins = jenkins().await;
    let extra = Extra {
        tail: "[policy]\nread_only = true".into(),
        ..Extra::default()
    };
    let proxy = proxy_with(&jenkins, extra).await;
    let http = Http::new();
    assert_eq!(
        http.get(&proxy.url("/api/json")).await.status,
        StatusCode::OK
    );
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let reply = http
            .send(request(
                method.clone(),
                &proxy.url("/job/sample-job/build"),
                &[],
                Bytes::new(),
            ))
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method}");
        assert_eq!(reply.header("x-crumb-proxy-rule"), Some("read-only"));
    }
    assert_eq!(client_requests(&jenkins).len(), 1);
    proxy.stop().await;
    jenkins.finish().await;
}

/// Ordered user rules: a deny rule, and an allow rule that opens a
/// built-in deny (here `/restart`, which then reaches Jenkins).
#[tokio::test]
async fn user_rules_deny_and_allow_in_order() {
    let jenkins = jenkins().await;
    let extra = Extra {
        tail:
            "[[policy.rules]]\naction = \"deny\"\nmethods = [\"POST\"]\npath = \"/job/*/build\"\n\
               [[policy.rules]]\naction = \"allow\"\nmethods = [\"GET\"]\npath = \"/restart\"\n"
                .into(),
        ..Extra::default()
    };
    let proxy = proxy_with(&jenkins, extra).await;
    let http = Http::new();
    let reply = http.post(&proxy.url("/job/sample-job/build")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.header("x-crumb-proxy-rule"), Some("policy.rules[0]"));
    let reply = http
        .post(&proxy.url("/job/sample-job/buildWithParameters"))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "not covered by the rule");
    let reply = http.get(&proxy.url("/Restart")).await;
    assert!(
        reply.headers.get("x-crumb-proxy-error").is_none(),
        "allowed through"
    );
    let reply = http.post(&proxy.url("/restart")).await;
    assert_eq!(
        reply.header("x-crumb-proxy-rule"),
        Some("lifecycle"),
        "POST is not allowed by the GET rule"
    );
    assert!(jenkins.requests_to("/job/sample-job/build").is_empty());
    assert_eq!(
        jenkins.requests_to("/Restart").len(),
        1,
        "the allowed GET reached Jenkins"
    );
    proxy.stop().await;
    // The double does not know /Restart and says so; that is the point.
    assert_eq!(jenkins.unexpected().len(), 1, "{:?}", jenkins.unexpected());
}

/// With a client token configured, callers must present it as
/// `Proxy-Authorization: Bearer …`; it never reaches Jenkins.
#[tokio::test]
async fn client_token_is_required_and_stripped() {
    let jenkins = jenkins().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("client-token");
    std::fs::write(&token_file, "let-me-in-7f3a\n").unwrap();
    set_mode(&token_file, 0o600);
    let extra = Extra {
        listen: format!("client_token_file = \"{}\"", token_file.display()),
        ..Extra::default()
    };
    let proxy = proxy_with(&jenkins, extra).await;
    let http = Http::new();
    let reply = http.get(&proxy.url("/api/json")).await;
    assert_eq!(reply.status, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    assert_eq!(
        reply.header("x-crumb-proxy-error"),
        Some("client-token-required")
    );
    assert!(reply
        .header("proxy-authenticate")
        .unwrap()
        .starts_with("Bearer"));
    let wrong = [("proxy-authorization", "Bearer let-me-in-7f3b")];
    let reply = http
        .send(request(
            Method::GET,
            &proxy.url("/api/json"),
            &wrong,
            Bytes::new(),
        ))
        .await;
    assert_eq!(
        reply.header("x-crumb-proxy-error"),
        Some("client-token-invalid")
    );
    assert!(jenkins.requests().is_empty());

    let right = [("proxy-authorization", "Bearer let-me-in-7f3a")];
    let reply = http
        .send(request(
            Method::POST,
            &proxy.url("/job/sample-job/build"),
            &right,
            Bytes::new(),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    for seen in jenkins.requests() {
        assert!(!seen.headers.contains_key("proxy-authorization"));
    }
    assert!(!reply.text().contains("let-me-in"));
    proxy.stop().await;
    jenkins.finish().await;
}

async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut out))
        .await
        .expect("the proxy closed the connection in time")
        .unwrap_or_default();
    String::from_utf8_lossy(&out).into_owned()
}

/// On a kept-alive connection the header-read timeout counts anew for each
/// request head, from when the proxy starts waiting for it (right after
/// the previous answer): heads that keep coming for longer than the timeout
/// in all are served, and a half head after them is cut off once the
/// timeout has passed since the last answer (the proxy keeps one timer per
/// connection and moves it; moved wrongly, this either cuts the connection
/// off during the requests or too late).
#[tokio::test]
async fn header_read_timeout_counts_per_head() {
    let jenkins = jenkins().await;
    let extra = Extra {
        tail: "[limits]\nheader_read_timeout_secs = 1\nidle_timeout_secs = 30".into(),
        ..Extra::default()
    };
    let proxy = proxy_with(&jenkins, extra).await;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    let mut answered = tokio::time::Instant::now();
    // HEAD: the answer ends with its head, so it can be read without
    // parsing a body.
    for round in 0..6 {
        conn.write_all(b"HEAD /api/json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut byte))
                .await
                .expect("an answer in time")
                .unwrap();
            assert_eq!(
                n,
                1,
                "closed in round {round}: {}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        answered = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    conn.write_all(b"GET /api/json HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let response = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    let waited = answered.elapsed();
    assert!(!response.starts_with("HTTP/1.1 2"), "{response}");
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(2500)).contains(&waited),
        "cut off {waited:?} after the last answer; the timeout is 1 s"
    );
    assert_eq!(jenkins.requests().len(), 6);
    proxy.stop().await;
    jenkins.finish().await;
}

/// A request head over `limits.max_header_bytes` gets 431.
#[tokio::test]
async fn oversized_headers_get_431() {
    let jenkins = jenkins().await;
    let extra = Extra {
        tail: "[limits]\nmax_header_bytes = 8192".into(),
        ..Extra::default()
    };
    let proxy = proxy_with(&jenkins, extra).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let big = "a".repeat(10_000);
    let req = format!("GET /api/json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {big}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let response = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    // Within the limit is fine.
    let reply = Http::new()
        .send(request(
            Method::GET,
            &proxy.url("/api/json"),
            &[("x-big", &"a".repeat(4000))],
            Bytes::new(),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(client_requests(&jenkins).len(), 1);
    proxy.stop().await;
    jenkins.finish().await;
}

/// A client that sends half a request head is cut off after
/// `limits.header_read_timeout_secs` (slowloris), and one that idles on a
/// keep-alive connection after `limits.idle_timeout_secs`.
#[tokio::test]
async fn slow_and_idle_clients_are_cut_off() {
    let jenkins = jenkins().await;
    let extra = Extra {
        tail: "[limits]\nheader_read_timeout_secs = 1\nidle_timeout_secs = 30".into(),
        ..Extra::default()
    };
    let proxy = proxy_with(&jenkins, extra).await;
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"GET /api/json HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let response = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(!response.starts_with("HTTP/1.1 2"), "{response}");
    assert!(jenkins.requests().is_empty());
    proxy.stop().await;

    let extra = Extra {
        tail: "[limits]\nheader_read_timeout_secs = 30\nidle_timeout_secs = 1".into(),
        ..Extra::default()
    };
    let proxy = proxy_with(&jenkins, extra).await;
    let mut idle = TcpStream::connect(proxy.addr).await.unwrap();
    idle.write_all(b"GET /api/json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let response = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "served first, then closed when idle: {response}"
    );
    // A body that stalls half-way is cut off the same way.
    let mut stalled = TcpStream::connect(proxy.addr).await.unwrap();
    stalled
        .write_all(b"POST /job/sample-job/build HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nhalf")
        .await
        .unwrap();
    let response = read_until_closed(&mut stalled, Duration::from_secs(5)).await;
    assert!(!response.contains(" 201 "), "{response}");
    assert_eq!(jenkins.accepted_triggers("sample-job"), 0);
    proxy.stop().await;
    jenkins.finish().await;
}

/// A Unix socket listener: created 0600 over a stale socket file, usable by
/// curl, the peer's uid and pid in the request log, removed on exit; a live
/// socket is never taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_listener() {
    use std::os::unix::fs::PermissionsExt as _;
    let jenkins = jenkins().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap()); // stale
    let config = write_config(
        dir.path(),
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &Extra::default(),
    );
    let listen = format!("unix:{}", socket.display());
    let proxy = Binary::spawn(&["--config", config.to_str().unwrap(), "--listen", &listen]);
    assert_eq!(proxy.listen, listen);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");

    let socket_arg = socket.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        crate::support::proxy::curl(&[
            "--unix-socket",
            &socket_arg,
            "-X",
            "POST",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://localhost/job/sample-job/build",
        ])
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "201");
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    let line = proxy.wait_for_log(|l| l.contains("path=\"/job/sample-job/build\""));
    assert!(line.contains(&format!("peer=uid={uid},pid=")), "{line}");

    // A second proxy must not steal a live socket.
    let (code, err) = {
        let out = Binary::command()
            .args(["--config", config.to_str().unwrap(), "--listen", &listen])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(69), "{err}");
    assert!(err.contains("another process is listening"), "{err}");

    assert!(proxy.terminate().success());
    assert!(!socket.exists(), "socket file removed on exit");
    jenkins.finish().await;
}

/// A secret file others can read gets a warning naming it and the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loose_secret_file_is_warned_about() {
    let jenkins = jenkins().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &Extra::default(),
    );
    let secret = dir.path().join("secret");
    set_mode(&secret, 0o644);
    let proxy = Binary::spawn(&["--config", config.to_str().unwrap()]);
    let line = proxy.wait_for_log(|l| l.contains("WARN"));
    assert!(
        line.contains(secret.to_str().unwrap()) && line.contains("chmod 600"),
        "{line}"
    );
    assert!(!line.contains(PASSWORD));
    proxy.terminate();
    set_mode(&secret, 0o600);
    let proxy = Binary::spawn(&["--config", config.to_str().unwrap()]);
    let _ = Http::new().get(&proxy.url("/api/json")).await;
    proxy.wait_for_log(|l| l.contains("path=\"/api/json\""));
    assert!(
        proxy.log_lines().iter().all(|l| !l.contains("WARN")),
        "{:?}",
        proxy.log_lines()
    );
    proxy.terminate();
    jenkins.finish().await;
}
