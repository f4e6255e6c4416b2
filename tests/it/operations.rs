//! Running it in production: HTTPS upstreams (private CA, unknown CA,
//! mutual TLS, server-name override, the loud escape hatch), health,
//! readiness and metrics, secret rotation, request ids, JSON logs, the
//! `check` and `health` sub-commands, and SIGTERM with grace and drain.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::support::jenkins::{MockJenkins, JENKINS_VERSION};
use crate::support::proxy::{
    client_requests, curl_async, request, Binary, Extra, Http, Proxy, Reply, Secret,
};
use crate::support::{logs, tls};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";
const TOKEN: &str = "11c0ffee0ddba11deadbeef00112233";
const TOKEN_2: &str = "22c0ffee0ddba11deadbeef00112244";

fn upstream_tls(lines: &[String]) -> Extra {
    Extra {
        upstream: lines.join("\n"),
        ..Extra::default()
    }
}

/// Jenkins behind HTTPS with a private CA: trusted through `ca_file`,
/// refused with a 502 that says why without it, and a certificate for
/// another name accepted only with `tls_server_name`.
#[tokio::test]
async fn https_upstream_with_private_ca() {
    let jenkins = MockJenkins::builder().user(USER, PASSWORD).start().await;
    let pki = tls::pki(&["jenkins.internal", "127.0.0.1"]);
    let front = tls::front(&pki, jenkins.addr(), false).await;
    let url = format!("https://127.0.0.1:{}/", front.port());
    let http = Http::new();

    let trusted = upstream_tls(&[format!("ca_file = \"{}\"", pki.ca_file.display())]);
    let proxy = Proxy::start_with(&url, USER, Secret::Password(PASSWORD), &trusted).await;
    assert_eq!(
        http.get(&proxy.url("/api/json")).await.status,
        StatusCode::OK
    );
    let reply = http.post(&proxy.url("/job/sample-job/build")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert!(reply
        .header("location")
        .unwrap()
        .starts_with(&format!("http://{}/queue/item/", proxy.addr)));
    proxy.stop().await;

    // The system roots do not know the test CA.
    let proxy = Proxy::start(&url, USER, Secret::Password(PASSWORD)).await;
    for reply in [
        http.get(&proxy.url("/api/json")).await,
        http.post(&proxy.url("/job/sample-job/build")).await,
    ] {
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
        assert_eq!(reply.header("x-crumb-proxy-error"), Some("upstream-tls"));
        assert!(
            reply.text().contains("not trusted") && reply.text().contains("upstream.ca_file"),
            "{}",
            reply.text()
        );
    }
    proxy.stop().await;

    // A certificate only for jenkins.internal, reached by IP: refused unless
    // the name to check is given.
    let named = tls::pki(&["jenkins.internal"]);
    let front = tls::front(&named, jenkins.addr(), false).await;
    let url = format!("https://127.0.0.1:{}/", front.port());
    let ca = format!("ca_file = \"{}\"", named.ca_file.display());
    let proxy = Proxy::start_with(
        &url,
        USER,
        Secret::Password(PASSWORD),
        &upstream_tls(std::slice::from_ref(&ca)),
    )
    .await;
    let reply = http.get(&proxy.url("/api/json")).await;
    assert_eq!(reply.header("x-crumb-proxy-error"), Some("upstream-tls"));
    assert!(reply.text().contains("tls_server_name"), "{}", reply.text());
    proxy.stop().await;
    let with_name = upstream_tls(&[ca, "tls_server_name = \"jenkins.internal\"".into()]);
    let proxy = Proxy::start_with(&url, USER, Secret::Password(PASSWORD), &with_name).await;
    assert_eq!(
        http.get(&proxy.url("/api/json")).await.status,
        StatusCode::OK
    );
    proxy.stop().await;
    jenkins.finish().await;
}

/// Mutual TLS: a Jenkins that demands a client certificate refuses the
/// proxy without one and accepts it with `client_cert_file`/`client_key_file`.
#[tokio::test]
async fn https_upstream_with_mutual_tls() {
    let jenkins = MockJenkins::builder().user(USER, PASSWORD).start().await;
    let pki = tls::pki(&["127.0.0.1"]);
    let front = tls::front(&pki, jenkins.addr(), true).await;
    let url = format!("https://127.0.0.1:{}/", front.port());
    let ca = format!("ca_file = \"{}\"", pki.ca_file.display());
    let http = Http::new();

    let proxy = Proxy::start_with(
        &url,
        USER,
        Secret::Password(PASSWORD),
        &upstream_tls(std::slice::from_ref(&ca)),
    )
    .await;
    let reply = http.get(&proxy.url("/api/json")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(
        reply.text().contains("client_cert_file") || reply.text().contains("closed"),
        "{}",
        reply.text()
    );
    proxy.stop().await;

    let mtls = upstream_tls(&[
        ca,
        format!("client_cert_file = \"{}\"", pki.client_cert_file.display()),
        format!("client_key_file = \"{}\"", pki.client_key_file.display()),
    ]);
    let proxy = Proxy::start_with(&url, USER, Secret::Password(PASSWORD), &mtls).await;
    assert_eq!(
        http.get(&proxy.url("/api/json")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        http.post(&proxy.url("/job/sample-job/build")).await.status,
        StatusCode::CREATED
    );
    proxy.stop().await;
    jenkins.finish().await;
}

/// Skipping verification works only under its loud name, and says so.
#[tokio::test]
async fn accepting_invalid_certificates_is_loud() {
    let jenkins = MockJenkins::builder().user(USER, PASSWORD).start().await;
    let pki = tls::pki(&["127.0.0.1"]);
    let front = tls::front(&pki, jenkins.addr(), false).await;
    let url = format!("https://127.0.0.1:{}/", front.port());
    let extra = upstream_tls(&["danger_accept_invalid_certs = true".into()]);
    let proxy = Proxy::start_with(&url, USER, Secret::Password(PASSWORD), &extra).await;
    assert_eq!(
        Http::new().get(&proxy.url("/api/json")).await.status,
        StatusCode::OK
    );
    let log = logs::contents();
    assert!(
        log.contains("certificate of Jenkins is NOT checked"),
        "start-up warning"
    );
    assert!(
        log.contains("WITHOUT certificate verification"),
        "per-connection warning"
    );
    proxy.stop().await;
    jenkins.finish().await;
}

async fn get(url: &str) -> Reply {
    Http::new()
        .send(request(Method::GET, url, &[], Bytes::new()))
        .await
}

async fn wait_ready(proxy: &Proxy, status: StatusCode) -> Reply {
    for _ in 0..200 {
        let reply = get(&proxy.health_url("/readyz")).await;
        if reply.status == status {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("/readyz never answered {status}");
}

/// `/livez`, `/readyz` (credentials checked, not ready when Jenkins rejects
/// them or after a shutdown signal) and `/metrics` on the health listener.
#[tokio::test]
async fn health_readiness_and_metrics() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .deny_job("locked", USER)
        .start()
        .await;
    let extra = Extra {
        health: true,
        ..Extra::default()
    };
    let mut proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
    )
    .await;
    assert_eq!(
        get(&proxy.health_url("/livez")).await.status,
        StatusCode::OK
    );
    wait_ready(&proxy, StatusCode::OK).await;
    assert!(
        !jenkins.requests_to("/whoAmI/api/json").is_empty(),
        "readiness asked Jenkins"
    );

    let http = Http::new();
    assert_eq!(
        http.post(&proxy.url("/job/sample-job/build")).await.status,
        StatusCode::CREATED
    );
    jenkins.expire_sessions();
    assert_eq!(
        http.post(&proxy.url("/job/sample-job/build")).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        http.post(&proxy.url("/job/locked/build")).await.status,
        StatusCode::FORBIDDEN
    );
    let browser = [("origin", "http://evil.example")];
    http.send(request(
        Method::GET,
        &proxy.url("/api/json"),
        &browser,
        Bytes::new(),
    ))
    .await;
    assert_eq!(
        http.get(&proxy.url("/api/json")).await.status,
        StatusCode::OK
    );

    let metrics = get(&proxy.health_url("/metrics")).await.text();
    for line in [
        "crumb_proxy_requests_total{method=\"POST\",status_class=\"2xx\"} 2",
        "crumb_proxy_requests_total{method=\"POST\",status_class=\"4xx\"} 1",
        "crumb_proxy_requests_total{method=\"GET\",status_class=\"4xx\"} 1",
        "crumb_proxy_crumb_fetches_total 2",
        "crumb_proxy_crumb_retries_total 1",
        "crumb_proxy_jenkins_denials_total{status=\"403\"} 2",
        "crumb_proxy_refusals_total{kind=\"browser-request\"} 1",
        "crumb_proxy_upstream_latency_seconds_count",
        "crumb_proxy_open_connections",
    ] {
        assert!(metrics.contains(line), "metrics lack {line:?}:\n{metrics}");
    }
    // The health paths are not on the proxied path space.
    http.get(&proxy.url("/readyz")).await;
    assert_eq!(
        jenkins.requests_to("/readyz").len(),
        1,
        "/readyz on the proxy port is Jenkins'"
    );

    proxy.signal_shutdown();
    let reply = wait_ready(&proxy, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(reply.text().contains("shutting down"), "{}", reply.text());
    proxy.stop().await;
    let _ = jenkins.unexpected(); // /readyz above
}

/// A secret Jenkins rejects keeps the proxy not ready, and says why.
#[tokio::test]
async fn rejected_credentials_are_not_ready() {
    let jenkins = MockJenkins::builder().user(USER, PASSWORD).start().await;
    let extra = Extra {
        health: true,
        ..Extra::default()
    };
    let proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password("wrong-pw-77aa"),
        &extra,
    )
    .await;
    // Not ready from the start; once the check has run, it says why.
    let mut reply = wait_ready(&proxy, StatusCode::SERVICE_UNAVAILABLE).await;
    for _ in 0..200 {
        if reply.text().contains("rejects") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        reply = get(&proxy.health_url("/readyz")).await;
    }
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply
            .text()
            .contains("Jenkins rejects the configured credentials"),
        "{}",
        reply.text()
    );
    proxy.stop().await;
    jenkins.finish().await;
}

/// A rotated secret file is used from the next request on, and the crumb
/// and session of the old secret are dropped.
#[tokio::test]
async fn rotated_secret_is_used_at_once() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .api_token(USER, TOKEN)
        .api_token(USER, TOKEN_2)
        .start()
        .await;
    let extra = Extra {
        crumb: "mode = \"always\"".into(),
        ..Extra::default()
    };
    let proxy = Proxy::start_with(&jenkins.root_url(), USER, Secret::Token(TOKEN), &extra).await;
    let http = Http::new();
    assert_eq!(
        http.post(&proxy.url("/job/sample-job/build")).await.status,
        StatusCode::CREATED
    );
    let first = jenkins.requests_to("/job/sample-job/build").pop().unwrap();

    // The harness wrote the secret next to the config; rotate it in place
    // (a new length, so the change is visible within one mtime tick).
    let secret_file = first_secret_file(&proxy);
    std::fs::write(&secret_file, format!("{TOKEN_2}\n")).unwrap();
    logs::register(USER, TOKEN_2);
    assert_eq!(
        http.post(&proxy.url("/job/sample-job/build")).await.status,
        StatusCode::CREATED
    );
    let second = jenkins.requests_to("/job/sample-job/build").pop().unwrap();
    assert_ne!(
        first.headers["authorization"],
        second.headers["authorization"]
    );
    assert!(second.via_api_token);
    assert_eq!(
        jenkins.crumb_fetches(),
        2,
        "the old session's crumb was dropped"
    );
    assert_ne!(
        first.headers["jenkins-crumb"],
        second.headers["jenkins-crumb"]
    );
    let fetches = jenkins.requests_to("/crumbIssuer/api/json");
    assert_eq!(
        fetches[1].headers["authorization"],
        second.headers["authorization"]
    );
    proxy.stop().await;
    jenkins.finish().await;
}

fn first_secret_file(proxy: &Proxy) -> std::path::PathBuf {
    proxy.dir().join("secret")
}

/// `X-Request-Id`: kept when sent, generated otherwise; Jenkins and the
/// client see the same one.
#[tokio::test]
async fn request_ids_are_kept_or_made() {
    let jenkins = MockJenkins::builder().user(USER, PASSWORD).start().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let http = Http::new();
    let reply = http
        .send(request(
            Method::GET,
            &proxy.url("/api/json"),
            &[("x-request-id", "build-42-step-3")],
            Bytes::new(),
        ))
        .await;
    assert_eq!(reply.header("x-request-id"), Some("build-42-step-3"));
    assert_eq!(
        client_requests(&jenkins).pop().unwrap().headers["x-request-id"],
        "build-42-step-3"
    );
    let reply = http.get(&proxy.url("/api/json")).await;
    let made = reply.header("x-request-id").unwrap().to_owned();
    assert_eq!(made.len(), 32);
    assert!(made.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        client_requests(&jenkins).pop().unwrap().headers["x-request-id"],
        made.as_str()
    );
    let other = http.get(&proxy.url("/api/json")).await;
    assert_ne!(other.header("x-request-id").unwrap(), made);
    // Proxy-made answers carry it too.
    let refused = http
        .send(request(
            Method::GET,
            &proxy.url("/script"),
            &[("x-request-id", "r-1")],
            Bytes::new(),
        ))
        .await;
    assert_eq!(refused.header("x-request-id"), Some("r-1"));
    proxy.stop().await;
    jenkins.finish().await;
}

/// `crumb-proxy check`: all well (exit 0), and one line with the fix for
/// each kind of failure (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_subcommand_reports_each_failure() {
    let jenkins = MockJenkins::builder()
        .context_path("/jenkins")
        .user(USER, PASSWORD)
        .start()
        .await;
    let run_check = |url: String, secret: &'static str, extra: Extra| async move {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::support::proxy::write_config(
            dir.path(),
            &url,
            USER,
            Secret::Password(secret),
            &extra,
        );
        let out = tokio::task::spawn_blocking(move || {
            Binary::command()
                .args(["check", "--config", config.to_str().unwrap()])
                .env_remove("RUST_LOG")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    let (code, out) = run_check(jenkins.root_url(), PASSWORD, Extra::default()).await;
    assert_eq!(code, Some(0), "{out}");
    let version = format!("version {JENKINS_VERSION}");
    for needle in [
        "ok   jenkins: reachable",
        &version,
        "ok   identity: authenticated as \"alice\"",
        "ok   csrf: protection is on",
    ] {
        assert!(out.contains(needle), "{needle:?} in\n{out}");
    }
    assert!(!out.contains(PASSWORD));

    let (code, out) = run_check(jenkins.root_url(), "wrong-pw-33cd", Extra::default()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL identity: Jenkins rejected the password") && out.contains("fix:"),
        "{out}"
    );

    let wrong_root = format!("http://{}/", jenkins.addr());
    let (code, out) = run_check(wrong_root, PASSWORD, Extra::default()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("does not answer like Jenkins") && out.contains("context path"),
        "{out}"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, out) = run_check(
        format!("http://127.0.0.1:{port}/"),
        PASSWORD,
        Extra::default(),
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL jenkins: cannot reach") && out.contains("upstream.url"),
        "{out}"
    );

    let pki = tls::pki(&["127.0.0.1"]);
    let front = tls::front(&pki, jenkins.addr(), false).await;
    let (code, out) = run_check(
        format!("https://127.0.0.1:{}/jenkins/", front.port()),
        PASSWORD,
        Extra::default(),
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("not trusted") && out.contains("upstream.ca_file"),
        "{out}"
    );

    jenkins.set_csrf(false);
    let (code, out) = run_check(jenkins.root_url(), PASSWORD, Extra::default()).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ok   csrf: protection is off"), "{out}");
    let _ = jenkins.unexpected(); // the wrong root's requests
}

/// `--log-format json`: one JSON object per line with stable field names;
/// `--log-level` filters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_log_level() {
    let jenkins = MockJenkins::builder().user(USER, PASSWORD).start().await;
    let (proxy, _dir, _) = Binary::start_for(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &Extra::default(),
        &["--log-format", "json", "--log-level", "info"],
    );
    assert_eq!(
        Http::new()
            .post(&proxy.url("/job/sample-job/build"))
            .await
            .status,
        StatusCode::CREATED
    );
    let line = proxy.wait_for_log(|l| l.contains("\"path\":\"/job/sample-job/build\""));
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    for (key, value) in [
        ("level", "INFO"),
        ("message", "request"),
        ("method", "POST"),
        ("crumb", "fetched"),
        ("target", "crumb_proxy::proxy"),
    ] {
        assert_eq!(event[key], value, "{line}");
    }
    assert_eq!(event["status"], 201);
    assert!(
        event["timestamp"].is_string()
            && event["request_id"].is_string()
            && event["elapsed_ms"].is_u64(),
        "{line}"
    );
    for l in proxy.log_lines() {
        serde_json::from_str::<serde_json::Value>(&l)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(
            !l.contains("\"level\":\"TRACE\"") && !l.contains("\"level\":\"DEBUG\""),
            "{l}"
        );
    }
    proxy.terminate();
    jenkins.finish().await;
}

/// SIGTERM: readiness turns 503 at once, new connections are still taken
/// during `grace_secs`, a download started before completes whole, then new
/// connections are refused and the process exits 0; `crumb-proxy health`
/// follows readiness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_grace_then_drain() {
    const SIZE: u64 = 256 << 20;
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .artifact("sample-job", 1, "big.bin", SIZE)
        .start()
        .await;
    let extra = Extra {
        tail: "[shutdown]\ngrace_secs = 3\ndrain_secs = 60".into(),
        ..Extra::default()
    };
    let (proxy, _dir, _) = Binary::start_for(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
        &[],
    );
    let ready = proxy.health_url("/readyz");
    let health = |url: String| async move {
        let out = tokio::task::spawn_blocking(move || {
            Binary::command()
                .args(["health", "--url", &url])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        out.status.code()
    };
    for _ in 0..200 {
        if health(ready.clone()).await == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(health(ready.clone()).await, Some(0), "ready before SIGTERM");

    // A slow download in flight (about 5 s at 50 MB/s).
    let url = proxy.url("/job/sample-job/1/artifact/big.bin");
    let download = tokio::spawn(async move {
        curl_async(&[
            "--fail",
            "--limit-rate",
            "50M",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &url,
        ])
        .await
    });
    while jenkins
        .requests_to("/job/sample-job/1/artifact/big.bin")
        .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = proxy.child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    proxy.wait_for_log(|l| l.contains("shutdown requested"));
    assert_eq!(
        health(ready.clone()).await,
        Some(1),
        "not ready right after SIGTERM"
    );
    // Within the grace period a new client is still served.
    assert_eq!(
        Http::new().get(&proxy.url("/api/json")).await.status,
        StatusCode::OK
    );
    // After it, new connections are refused (not accepted and cut).
    proxy.wait_for_log(|l| l.contains("no new connections"));
    assert!(
        std::net::TcpStream::connect(proxy.addr()).is_err(),
        "refused after the grace period"
    );
    let out = download.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        SIZE.to_string(),
        "the download completed whole"
    );
    let status = proxy.terminate();
    assert_eq!(status.code(), Some(0));
    jenkins.finish().await;
}

/// SIGHUP is logged and ignored (the proxy goes on serving); after a
/// SIGTERM, with a long grace period ahead, a second stop signal exits at
/// once with 128 + its number, as a killed process would.
#[tokio::test]
async fn sighup_is_ignored_and_a_second_stop_signal_exits_at_once() {
    let jenkins = MockJenkins::builder().user(USER, PASSWORD).start().await;
    let extra = Extra {
        tail: "[shutdown]\ngrace_secs = 600\ndrain_secs = 600".into(),
        ..Extra::default()
    };
    let (mut proxy, _dir, _) = Binary::start_for(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
        &[],
    );
    let pid = proxy.child.id().to_string();
    let kill = |signal: &str| {
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    kill("-HUP");
    proxy.wait_for_log(|l| l.contains("SIGHUP") && l.contains("ignored"));
    let http = Http::new();
    assert_eq!(
        http.get(&proxy.url("/api/json")).await.status,
        StatusCode::OK
    );
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "alive after SIGHUP"
    );

    kill("-TERM");
    proxy.wait_for_log(|l| l.contains("shutdown requested"));
    // Ten minutes of grace ahead: still serving.
    assert_eq!(
        http.get(&proxy.url("/api/json")).await.status,
        StatusCode::OK
    );
    assert!(proxy.child.try_wait().unwrap().is_none());
    kill("-INT");
    let mut exited = None;
    for _ in 0..500 {
        exited = proxy.child.try_wait().unwrap();
        if exited.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = exited.expect("exited within 10 s of the second signal");
    assert_eq!(status.code(), Some(128 + 2), "{status}");
    proxy.wait_for_log(|l| l.contains("second stop signal"));
    logs::assert_clean("the binary's log", &proxy.log_lines().join("\n"));
    jenkins.finish().await;
}
