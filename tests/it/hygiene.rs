//! Secret hygiene, proven: every kind of exchange the suite covers runs
//! once more with logging at TRACE (hyper's and rustls' included), and no
//! log line and no proxy-made response body may contain the password, the
//! API token, the client token, the Basic credentials, any crumb or any
//! session id.

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use tracing_subscriber::fmt::MakeWriter;

use crate::support::jenkins::MockJenkins;
use crate::support::proxy::{request, set_mode, Extra, Http, Proxy, Reply, Secret};

const USER: &str = "alice";
const PASSWORD: &str = "pw-6c1d-secret";
const TOKEN: &str = "11f0e1d2c3b4a5968778695a4b3c2d1e0f";
const CLIENT_TOKEN: &str = "client-token-93b7";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// Remembers the bodies the proxy made itself.
#[derive(Default)]
struct Seen {
    proxy_bodies: Vec<String>,
    sessions: Vec<String>,
}

impl Seen {
    fn note(&mut self, reply: &Reply) {
        let kind = reply.header("x-crumb-proxy-error");
        // The one header the proxy adds to Jenkins' own answer.
        if kind.is_some() && kind != Some("crumb-rejected-not-replayable") {
            self.proxy_bodies.push(reply.text());
        }
    }
}

async fn send(
    seen: &mut Seen,
    http: &Http,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Reply {
    let reply = http
        .send(request(
            method,
            url,
            headers,
            Bytes::from_static(body.as_bytes()),
        ))
        .await;
    seen.note(&reply);
    reply
}

// The runtime is single-threaded on purpose: the TRACE subscriber is set
// for this thread, and every task of the proxy, the client and the double
// runs on it.
#[tokio::test(flavor = "current_thread")]
async fn no_secret_in_any_log_line_or_proxy_made_body() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .api_token(USER, TOKEN)
        .artifact("sample-job", 1, "a.bin", 200_000)
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("client-token");
    std::fs::write(&token_file, format!("{CLIENT_TOKEN}\n")).unwrap();
    set_mode(&token_file, 0o600);
    let extra = Extra {
        listen: format!("client_token_file = \"{}\"", token_file.display()),
        crumb: "replay_body_max_bytes = 8".into(),
        ..Extra::default()
    };
    let http = Http::new();
    let mut seen = Seen::default();
    let auth = format!("Bearer {CLIENT_TOKEN}");
    let ok = [("proxy-authorization", auth.as_str())];

    // Password proxy: reads, a crumb fetch, a replayed POST after expiry, a
    // body too large to replay, CSRF off and on, policy refusals.
    let proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
    )
    .await;
    let url = |p: &str| proxy.url(p);
    assert_eq!(
        send(
            &mut seen,
            &http,
            Method::GET,
            &url("/api/json?pretty=true"),
            &ok,
            ""
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        send(
            &mut seen,
            &http,
            Method::GET,
            &url("/job/sample-job/1/artifact/a.bin"),
            &ok,
            ""
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        send(
            &mut seen,
            &http,
            Method::POST,
            &url("/job/sample-job/build"),
            &ok,
            ""
        )
        .await
        .status,
        StatusCode::CREATED
    );
    seen.sessions.extend(jenkins.valid_session_ids());
    jenkins.expire_sessions();
    assert_eq!(
        send(
            &mut seen,
            &http,
            Method::POST,
            &url("/job/sample-job/build"),
            &ok,
            "a=1"
        )
        .await
        .status,
        StatusCode::CREATED
    );
    seen.sessions.extend(jenkins.valid_session_ids());
    jenkins.expire_sessions();
    let reply = send(
        &mut seen,
        &http,
        Method::POST,
        &url("/job/sample-job/build"),
        &ok,
        "too-long-to-keep",
    )
    .await;
    assert_eq!(
        reply.header("x-crumb-proxy-error"),
        Some("crumb-rejected-not-replayable")
    );
    let client_crumb = [
        ("proxy-authorization", auth.as_str()),
        ("jenkins-crumb", "client-own-crumb"),
        ("cookie", "JSESSIONID.x=y"),
    ];
    send(
        &mut seen,
        &http,
        Method::POST,
        &url("/job/sample-job/build"),
        &client_crumb,
        "",
    )
    .await;
    jenkins.set_csrf(false);
    seen.sessions.extend(jenkins.valid_session_ids());
    jenkins.expire_sessions();
    send(
        &mut seen,
        &http,
        Method::POST,
        &url("/job/sample-job/build"),
        &ok,
        "",
    )
    .await;
    jenkins.set_csrf(true);
    send(
        &mut seen,
        &http,
        Method::POST,
        &url("/job/sample-job/build"),
        &ok,
        "",
    )
    .await;
    for refused in [
        &[
            ("origin", "http://evil.example"),
            ("proxy-authorization", auth.as_str()),
        ][..],
        &[
            ("host", "evil.example"),
            ("proxy-authorization", auth.as_str()),
        ],
        &[("proxy-authorization", "Bearer wrong")],
        &[],
    ] {
        let reply = send(
            &mut seen,
            &http,
            Method::POST,
            &url("/job/sample-job/build"),
            refused,
            "",
        )
        .await;
        assert!(
            reply.headers.contains_key("x-crumb-proxy-error"),
            "{refused:?}"
        );
    }
    let reply = send(
        &mut seen,
        &http,
        Method::POST,
        &url("/scriptText"),
        &ok,
        "script=1",
    )
    .await;
    assert_eq!(
        reply.header("x-crumb-proxy-error"),
        Some("denied-by-policy")
    );
    proxy.stop().await;

    // Token proxy, wrong-password proxy, and one whose Jenkins is gone.
    let proxy = Proxy::start_with(&jenkins.root_url(), USER, Secret::Token(TOKEN), &extra).await;
    assert_eq!(
        send(
            &mut seen,
            &http,
            Method::POST,
            &proxy.url("/job/sample-job/build"),
            &ok,
            ""
        )
        .await
        .status,
        StatusCode::CREATED
    );
    proxy.stop().await;
    let proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password("wrong-pw-8e2f"),
        &extra,
    )
    .await;
    assert_eq!(
        send(
            &mut seen,
            &http,
            Method::GET,
            &proxy.url("/api/json"),
            &ok,
            ""
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(
            &mut seen,
            &http,
            Method::POST,
            &proxy.url("/job/sample-job/build"),
            &ok,
            ""
        )
        .await
        .status,
        StatusCode::BAD_GATEWAY
    );
    proxy.stop().await;
    seen.sessions.extend(jenkins.valid_session_ids());
    let crumbs = jenkins.issued_crumbs();
    let root = jenkins.root_url();
    jenkins.finish().await;
    let proxy = Proxy::start_with(&root, USER, Secret::Password(PASSWORD), &extra).await;
    assert_eq!(
        send(
            &mut seen,
            &http,
            Method::POST,
            &proxy.url("/job/sample-job/build"),
            &ok,
            ""
        )
        .await
        .status,
        StatusCode::BAD_GATEWAY
    );
    proxy.stop().await;

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut secrets = vec![
        PASSWORD.to_owned(),
        TOKEN.to_owned(),
        CLIENT_TOKEN.to_owned(),
        "wrong-pw-8e2f".to_owned(),
        b64(&format!("{USER}:{PASSWORD}")),
        b64(&format!("{USER}:{TOKEN}")),
        b64(&format!("{USER}:wrong-pw-8e2f")),
    ];
    assert!(
        crumbs.len() >= 4,
        "the scenarios fetched crumbs: {crumbs:?}"
    );
    assert!(
        seen.sessions.len() >= 3,
        "the scenarios made sessions: {:?}",
        seen.sessions
    );
    secrets.extend(crumbs);
    secrets.extend(seen.sessions.iter().cloned());

    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.lines().count() > 100,
        "TRACE logging was on: {} lines",
        log.lines().count()
    );
    assert!(
        log.contains("crumb_proxy::proxy") && log.contains("TRACE"),
        "{log}"
    );
    assert!(seen.proxy_bodies.len() >= 7, "{:?}", seen.proxy_bodies);
    for secret in &secrets {
        for line in log.lines() {
            assert!(
                !line.contains(secret.as_str()),
                "a secret ({}…) is in the log: {line}",
                &secret[..4]
            );
        }
        for body in &seen.proxy_bodies {
            assert!(
                !body.contains(secret.as_str()),
                "a secret is in a proxy-made body: {body}"
            );
        }
    }
}

/// Client-controlled values cannot forge log lines or lines of a refusal's
/// body: a path whose decoded form holds a line break, a carriage return or
/// a Unicode line separator is written with those percent-encoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_values_cannot_forge_log_lines() {
    let jenkins = MockJenkins::builder().user(USER, PASSWORD).start().await;
    let (proxy, _dir, _config) = crate::support::proxy::Binary::start_for(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &Extra::default(),
        &[],
    );
    let http = Http::new();
    for path in [
        "/script/%0aFORGED%20line",
        "/manage/%0d%0aFORGED/scriptText",
        "/%E2%80%A8FORGED/eval",
        "/job/x/%0a%1b%5B31mFORGED/../../../cli",
    ] {
        let reply = http.get(&proxy.url(path)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
        let text = reply.text();
        assert_eq!(text.lines().count(), 2, "{path}: {text:?}");
        assert!(
            !text.contains(['\r', '\u{1b}', '\u{2028}']),
            "{path}: {text:?}"
        );
        if !path.contains("/../") {
            assert!(
                text.contains("%0A") || text.contains("%E2%80%A8"),
                "{path}: {text:?}"
            );
        }
    }
    proxy.wait_for_log(|l| l.contains("/cli") && l.contains("denied-by-policy"));
    let lines = proxy.log_lines();
    for line in &lines {
        assert!(
            !line.trim_start().to_lowercase().starts_with("forged"),
            "a forged line: {line:?}"
        );
        assert!(!line.contains(['\r', '\u{1b}', '\u{2028}']), "{line:?}");
    }
    assert!(crate::support::proxy::client_requests(&jenkins).is_empty());
    proxy.terminate();
    jenkins.finish().await;
}
