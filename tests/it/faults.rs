//! Faults and what the proxy does about them: a kept-alive Jenkins
//! connection that Jenkins cuts as a request arrives (a GET or HEAD is sent
//! again, a POST never), idle Jenkins connections closed on a timer,
//! clients below the minimum rate, the connection cap, a body the proxy
//! never needed (read and discarded, so the connection survives), and
//! values that once crashed the proxy.
//!
//! The rest of the fault suite sits beside what it concerns:
//! - `soak.rs`: the soak, with session expiries and a Jenkins killed and
//!   started again; `fuzz.rs`: request heads and chunked bodies;
//! - `framing.rs`: a malformed chunked body is the client's fault (400),
//!   never completed towards Jenkins;
//! - `identity.rs`: half-closed clients get their answer; two `Host`
//!   headers, or one with user information, get 400;
//! - `operations.rs`: SIGHUP is logged and ignored, a second stop signal
//!   exits at once;
//! - unit tests: config ranges, type errors and the loader fuzzer
//!   and secret files (`config/tests.rs`), the path
//!   canonicaliser's properties (`canonical.rs`), saturating deadlines
//!   (`timer.rs`), a panicking worker failing `/livez` (`worker.rs`,
//!   `server.rs`).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::jenkins::MockJenkins;
use crate::support::proxy::{client_requests, request, Binary, Extra, Http, Proxy, Secret};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";

async fn jenkins() -> MockJenkins {
    MockJenkins::builder().user(USER, PASSWORD).start().await
}

/// How many requests for `path` Jenkins received on a client's behalf.
fn received(jenkins: &MockJenkins, method: &Method, path: &str) -> usize {
    client_requests(jenkins)
        .iter()
        .filter(|r| r.method == *method && r.path == path)
        .count()
}

/// Jenkins receives a GET (or HEAD) on a reused connection and closes it
/// without answering: the proxy sends it once more on a new connection,
/// and the client gets Jenkins' answer, whether the connection was the
/// client's own or one parked by an earlier client.
#[tokio::test]
async fn a_get_cut_on_a_reused_connection_is_sent_again() {
    let jenkins = jenkins().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let kept = Http::new();
    assert_eq!(
        kept.get(&proxy.url("/api/json")).await.status,
        StatusCode::OK
    );
    let opened = jenkins.connections();

    jenkins.cut_next_reused(1);
    let reply = kept.get(&proxy.url("/api/json")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        received(&jenkins, &Method::GET, "/api/json"),
        3,
        "once, then cut and sent again"
    );
    assert_eq!(jenkins.connections(), opened + 1, "on one new connection");

    jenkins.cut_next_reused(1);
    let head = kept
        .send(request(
            Method::HEAD,
            &proxy.url("/api/json"),
            &[],
            Bytes::new(),
        ))
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(received(&jenkins, &Method::HEAD, "/api/json"), 2);

    // New clients, on connections that earlier ones parked (each worker
    // keeps its own, so it may take a few clients to reach one).
    drop(kept);
    jenkins.cut_next_reused(1);
    let mut cut = false;
    for clients in 1..=8 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let reply = Http::new()
            .get(&proxy.url("/job/sample-job/api/json"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let sent = received(&jenkins, &Method::GET, "/job/sample-job/api/json");
        if sent > clients {
            assert_eq!(sent, clients + 1, "the cut one sent twice, the others once");
            cut = true;
            break;
        }
    }
    assert!(cut, "no client of 8 reached a parked connection");
    jenkins.cut_next_reused(0);

    // Only once: when the new connection is cut too, the client gets 502.
    let kept = Http::new();
    assert_eq!(
        kept.get(&proxy.url("/view/all/api/json")).await.status,
        StatusCode::OK
    );
    jenkins.cut_next(2);
    let reply = kept.get(&proxy.url("/view/all/api/json")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(reply.header("x-crumb-proxy-error"), Some("upstream-failed"));
    assert_eq!(
        received(&jenkins, &Method::GET, "/view/all/api/json"),
        3,
        "sent twice, not more"
    );
    proxy.stop().await;
    jenkins.finish().await;
}

/// A POST that Jenkins received (and acted on) before cutting the
/// connection is never sent again: the client gets 502 and the build was
/// triggered exactly once. So is a GET carrying a build `token`, which
/// Jenkins may act on.
#[tokio::test]
async fn a_post_cut_after_it_was_written_is_never_sent_again() {
    let jenkins = jenkins().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let kept = Http::new();
    // A crumb in the cache and a connection to reuse.
    assert_eq!(
        kept.post(&proxy.url("/job/sample-job/build")).await.status,
        StatusCode::CREATED
    );
    let fetches = jenkins.crumb_fetches();

    jenkins.cut_next_reused(1);
    let reply = kept.post(&proxy.url("/job/sample-job/build")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(reply.header("x-crumb-proxy-error"), Some("upstream-failed"));
    assert_eq!(
        jenkins.accepted_triggers("sample-job"),
        2,
        "Jenkins acted once"
    );
    assert_eq!(
        received(&jenkins, &Method::POST, "/job/sample-job/build"),
        2
    );
    assert_eq!(
        jenkins.crumb_fetches(),
        fetches,
        "no crumb fetched and nothing replayed"
    );

    // The cut connection is gone: a request to have a reused one again.
    assert_eq!(
        kept.get(&proxy.url("/api/json")).await.status,
        StatusCode::OK
    );
    jenkins.cut_next_reused(1);
    let reply = kept
        .get(&proxy.url("/job/sample-job/build?token=remote-trigger"))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(received(&jenkins, &Method::GET, "/job/sample-job/build"), 1);

    // The client's next request works, on a new connection.
    assert_eq!(
        kept.post(&proxy.url("/job/sample-job/build")).await.status,
        StatusCode::CREATED
    );
    assert_eq!(jenkins.accepted_triggers("sample-job"), 3);
    proxy.stop().await;
    jenkins.finish().await;
}

/// Waits up to 10 s for Jenkins to have no open connection.
async fn all_closed(jenkins: &MockJenkins) -> bool {
    for _ in 0..500 {
        if jenkins.open_connections() == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Idle Jenkins connections are closed after
/// `upstream.pool_idle_timeout_secs` on a timer: those parked by clients
/// that left, and a kept-alive client's own, while the client stays; the
/// client's next request then opens a new one.
#[tokio::test]
async fn idle_jenkins_connections_are_closed_on_a_timer() {
    let jenkins = jenkins().await;
    let extra = Extra {
        upstream: "pool_idle_timeout_secs = 1".into(),
        ..Extra::default()
    };
    let proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
    )
    .await;
    // Several clients at once, each leaving a parked connection.
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let url = proxy.url("/api/json");
            tokio::spawn(async move { Http::new().get(&url).await.status })
        })
        .collect();
    for client in clients {
        assert_eq!(client.await.unwrap(), StatusCode::OK);
    }
    assert!(jenkins.open_connections() > 0);
    assert!(
        all_closed(&jenkins).await,
        "{} still open",
        jenkins.open_connections()
    );

    let kept = Http::new();
    assert_eq!(
        kept.get(&proxy.url("/api/json")).await.status,
        StatusCode::OK
    );
    assert!(
        all_closed(&jenkins).await,
        "the kept client's idle Jenkins connection closed"
    );
    let before = jenkins.connections();
    assert_eq!(
        kept.get(&proxy.url("/api/json")).await.status,
        StatusCode::OK
    );
    assert_eq!(jenkins.connections(), before + 1);
    proxy.stop().await;
    jenkins.finish().await;
}

/// A proxy that wants at least 1000 bytes a second, 1 s behind at most.
fn strict_rate() -> Extra {
    Extra {
        tail: "[limits]\nmin_rate_bytes_per_sec = 1000\nmin_rate_grace_secs = 1".into(),
        health: true,
        ..Extra::default()
    }
}

/// Reads what the proxy sends until it closes, for at most 20 s.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out))
        .await
        .expect("the proxy closed within 20 s");
    out
}

/// Trickles `body` ten bytes at a time, every 300 ms (33 bytes a second),
/// until the proxy answers or `body` is sent.
async fn trickle(stream: &mut TcpStream, body: &[u8]) {
    for piece in body.chunks(10) {
        if stream.write_all(piece).await.is_err() {
            return;
        }
        let mut byte = [0u8; 1];
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(300), stream.peek(&mut byte)).await
        {
            return;
        }
    }
}

/// A body trickled slower than `limits.min_rate_bytes_per_sec` gets 408
/// `client-too-slow` within the grace period, well before the idle timeout
/// would: one kept for a replay before Jenkins saw anything, one streamed
/// with Jenkins' request cut off before its end. No build is triggered.
#[tokio::test]
async fn a_trickled_body_gets_408() {
    let jenkins = jenkins().await;
    let proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &strict_rate(),
    )
    .await;
    let body = vec![b'x'; 600];
    for (head, reached_jenkins) in [
        // Declared and small: kept for a replay, read before sending.
        (
            "POST /job/sample-job/build HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 600\r\n\r\n",
            false,
        ),
        // Chunked: streamed to Jenkins as it comes.
        (
            "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            true,
        ),
    ] {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let started = tokio::time::Instant::now();
        if reached_jenkins {
            let chunked: Vec<u8> = body
                .chunks(10)
                .flat_map(|c| {
                    [
                        format!("{:x}\r\n", c.len()).into_bytes(),
                        c.to_vec(),
                        b"\r\n".to_vec(),
                    ]
                    .concat()
                })
                .collect();
            trickle(&mut stream, &chunked).await;
        } else {
            trickle(&mut stream, &body).await;
        }
        let response = String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned();
        assert!(response.starts_with("HTTP/1.1 408"), "{head}: {response}");
        assert!(
            response.contains("x-crumb-proxy-error: client-too-slow"),
            "{response}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        if reached_jenkins {
            // Recorded once the double sees the request end, cut off.
            let mut uploads = Vec::new();
            for _ in 0..250 {
                uploads = jenkins.requests_to("/upload");
                if !uploads.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(uploads.len(), 1);
            assert!(
                uploads[0].body_len < 600,
                "Jenkins never saw the whole body"
            );
            assert_eq!(
                uploads[0].status,
                StatusCode::BAD_REQUEST,
                "an incomplete request"
            );
        }
    }
    assert_eq!(jenkins.accepted_triggers("sample-job"), 0);
    assert!(jenkins.requests_to("/job/sample-job/build").is_empty());
    let metrics = Http::new().get(&proxy.health_url("/metrics")).await.text();
    assert!(
        metrics.contains("crumb_proxy_clients_too_slow_total{part=\"request-body\"} 2"),
        "{metrics}"
    );
    proxy.stop().await;
    jenkins.finish().await;
}

/// A client that asks for a large artifact and then does not read it is
/// cut off once it falls `min_rate_grace_secs` behind, not after the idle
/// timeout (its socket stays open, and it could send a byte now and then
/// to look busy); a client reading at the rate gets the whole artifact.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    const SIZE: u64 = 64 << 20;
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .artifact("sample-job", 1, "big.bin", SIZE)
        .start()
        .await;
    let proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &strict_rate(),
    )
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /job/sample-job/1/artifact/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    // Not reading; a byte every half second in the other direction.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = stream.write_all(b" ").await;
    }
    let got = read_to_close(&mut stream).await;
    assert!(
        (got.len() as u64) < SIZE,
        "cut off, not served whole ({} bytes)",
        got.len()
    );
    let metrics = Http::new().get(&proxy.health_url("/metrics")).await.text();
    assert!(
        metrics.contains("crumb_proxy_clients_too_slow_total{part=\"response\"} 1"),
        "{metrics}"
    );

    // Reading steadily, if slowly compared with loopback: all of it.
    let out = crate::support::proxy::curl_async(&[
        "--fail",
        "--limit-rate",
        "20M",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        &proxy.url("/job/sample-job/1/artifact/big.bin"),
    ])
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), SIZE.to_string());
    proxy.stop().await;
    jenkins.finish().await;
}

/// At `limits.max_connections`, every client that arrives to find every
/// slot taken is counted in a metric, and the log says so once, not once
/// per client; each is served, once the busy connection is done or by
/// closing an idle kept-alive one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaching_the_connection_cap_is_logged_once_and_counted() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .response_delay("/job/sample-job/build", Duration::from_millis(1000))
        .start()
        .await;
    let extra = Extra {
        tail: "[limits]\nmax_connections = 1".into(),
        ..Extra::default()
    };
    let (proxy, _dir, _) = Binary::start_for(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
        &[],
    );
    let busy = {
        let url = proxy.url("/job/sample-job/build");
        tokio::spawn(async move { Http::new().post(&url).await.status })
    };
    while jenkins.requests_to("/job/sample-job/build").is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Each keeps its connection open: the next one finds the cap reached.
    let mut kept = Vec::new();
    for _ in 0..3 {
        let http = Http::new();
        assert_eq!(
            http.get(&proxy.url("/api/json")).await.status,
            StatusCode::OK
        );
        kept.push(http);
    }
    assert_eq!(busy.await.unwrap(), StatusCode::CREATED);
    drop(kept);
    let metrics = Http::new().get(&proxy.health_url("/metrics")).await.text();
    let reached: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("crumb_proxy_connection_cap_reached_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(reached >= 3, "{reached}: {metrics}");
    let lines = proxy
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("limits.max_connections reached"))
        .count();
    assert_eq!(lines, 1, "{:?}", proxy.log_lines());
    assert_eq!(proxy.terminate().code(), Some(0));
    jenkins.finish().await;
}

/// Clients that queue at the cap while every slot is busy are all served
/// when slots free up: a connection whose request is already waiting in
/// its socket (handed to a worker a moment before the next client asked
/// for room) is busy, not idle, and is never closed under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_clients_are_served_not_reset() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .response_delay("/job/sample-job/build", Duration::from_millis(500))
        .start()
        .await;
    let extra = Extra {
        tail: "[limits]\nmax_connections = 2".into(),
        ..Extra::default()
    };
    let proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
    )
    .await;
    for round in 0..3 {
        let seen = jenkins.requests_to("/job/sample-job/build").len();
        let busy: Vec<_> = (0..2)
            .map(|_| {
                let url = proxy.url("/job/sample-job/build");
                tokio::spawn(async move { Http::new().post(&url).await.status })
            })
            .collect();
        while jenkins.requests_to("/job/sample-job/build").len() < seen + 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let queued: Vec<_> = (0..6)
            .map(|_| {
                let url = proxy.url("/api/json");
                tokio::spawn(async move { Http::new().get(&url).await.status })
            })
            .collect();
        for b in busy {
            assert_eq!(b.await.unwrap(), StatusCode::CREATED, "round {round}");
        }
        for q in queued {
            assert_eq!(q.await.unwrap(), StatusCode::OK, "round {round}");
        }
    }
    proxy.stop().await;
    jenkins.finish().await;
}

/// While Jenkins is down, a client that sends a body the proxy never
/// needed (too large to keep for a replay, its crumb already cached) gets
/// the proxy's 502, and its next request on the same kept-alive connection
/// is answered too: the proxy reads and discards the rest of the body, as
/// nginx does, instead of closing the connection under the client. So
/// does a refusal.
#[tokio::test]
async fn an_unread_body_never_costs_the_client_its_connection() {
    let mut jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .upload_sink()
        .start()
        .await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let http = Http::new();
    let url = proxy.url("/job/sample-job/buildWithParameters");
    let post = |size: usize| {
        request(
            Method::POST,
            &url,
            &[("content-type", "application/octet-stream")],
            Bytes::from(vec![b'x'; size]),
        )
    };
    // The crumb is cached; then Jenkins goes away.
    assert_eq!(http.send(post(0)).await.status, StatusCode::CREATED);
    jenkins.kill().await;
    for round in 0..30 {
        for size in [2 << 20, 16 << 10, 0] {
            let reply = http
                .try_send(post(size))
                .await
                .unwrap_or_else(|e| panic!("round {round}, {size} bytes: no answer: {e}"));
            assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
        }
        // Refused before anything was read.
        let refused = http
            .try_send(request(
                Method::POST,
                &proxy.url("/scriptText"),
                &[],
                Bytes::from(vec![b'x'; 2 << 20]),
            ))
            .await
            .unwrap_or_else(|e| panic!("round {round}, refused: no answer: {e}"));
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
    }
    proxy.stop().await;
    jenkins.finish().await;
}

/// Values that once passed `--check-config` and then crashed the proxy
/// (a panic at start, or workers that panicked on the first connection
/// while the health checks answered 200) are refused before anything
/// starts, with status 78 and the key named, by `--check-config` and by a
/// real start alike.
#[test]
fn values_that_crashed_the_proxy_are_refused_before_it_starts() {
    for (section, key, value) in [
        ("limits", "max_connections", "2305843009213693952"),
        ("limits", "idle_timeout_secs", "9223372036854775807"),
        ("limits", "header_read_timeout_secs", "9223372036854775807"),
        ("upstream", "pool_idle_timeout_secs", "18446744073709551615"),
        ("limits", "min_rate_grace_secs", "9223372036854775807"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let extra = Extra {
            upstream: if section == "upstream" {
                format!("{key} = {value}")
            } else {
                String::new()
            },
            tail: if section == "limits" {
                format!("[limits]\n{key} = {value}")
            } else {
                String::new()
            },
            ..Extra::default()
        };
        let config = crate::support::proxy::write_config(
            dir.path(),
            "http://127.0.0.1:9/",
            USER,
            Secret::Password(PASSWORD),
            &extra,
        );
        for check in [true, false] {
            let mut cmd = Binary::command();
            cmd.arg("--config").arg(&config);
            if check {
                cmd.arg("--check-config");
            }
            let out = cmd.env_remove("RUST_LOG").output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{key} = {value}: {err}");
            assert!(err.contains(&format!("{section}.{key}")), "{err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}

/// A GET that starts a build with its token in a header (the Generic
/// Webhook Trigger reads `token` and `X-Gitlab-Token`; the double's own
/// route stands in for its `invoke`), cut on a reused
/// Jenkins connection after Jenkins received it, is not sent again: the
/// client gets 502 `upstream-failed`, Jenkins saw it once. (Found by an
/// attacker's review.)
#[tokio::test]
async fn a_get_with_a_token_header_is_never_sent_twice() {
    let jenkins = jenkins().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let kept = Http::new();
    assert_eq!(
        kept.get(&proxy.url("/api/json")).await.status,
        StatusCode::OK
    );
    jenkins.cut_next_reused(1);
    let reply = kept
        .send(request(
            Method::GET,
            &proxy.url("/job/sample-job/api/json"),
            &[("x-gitlab-token", "s3cret")],
            Bytes::new(),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.header("x-crumb-proxy-error"), Some("upstream-failed"));
    assert_eq!(
        received(&jenkins, &Method::GET, "/job/sample-job/api/json"),
        1,
        "a GET with a token header reached Jenkins twice"
    );
    proxy.stop().await;
    jenkins.finish().await;
}

/// A client that sends `Expect: 100-continue` and its body at once (RFC
/// 9110 §10.1.1 allows it) to a refused endpoint gets its 403, not a
/// reset: the unread body is discarded as any other. (Found by an
/// attacker's review.)
#[tokio::test]
async fn an_expect_body_sent_at_once_to_a_refused_endpoint_gets_its_answer() {
    let jenkins = jenkins().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let http = Http::new();
    for round in 0..40 {
        let refused = http
            .try_send(request(
                Method::POST,
                &proxy.url("/scriptText"),
                &[("expect", "100-continue")],
                Bytes::from(vec![b'x'; 2 << 20]),
            ))
            .await
            .unwrap_or_else(|e| panic!("round {round}: no answer: {e}"));
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
    }
    proxy.stop().await;
    jenkins.finish().await;
}

/// A Jenkins stand-in that answers every request with a WebSocket upgrade
/// and echoes what the tunnel carries.
async fn upgrade_echo_upstream() -> std::net::SocketAddr {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(|mut req: http::Request<hyper::body::Incoming>| {
                    let on_upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(upgraded) = on_upgrade.await {
                            let mut io = TokioIo::new(upgraded);
                            let mut buf = [0u8; 64];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    });
                    async {
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(StatusCode::SWITCHING_PROTOCOLS)
                                .header("connection", "upgrade")
                                .header("upgrade", "websocket")
                                .body(http_body_util::Empty::<Bytes>::new())
                                .unwrap(),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A WebSocket tunnel keeps its connection's slot under
/// `limits.max_connections` (busy, not reclaimable) until it ends: with a
/// cap of 1, a second upgrade waits until the first tunnel closes. (Found
/// by an attacker's review: tunnels once escaped the cap.)
#[tokio::test]
async fn websocket_tunnels_count_against_max_connections() {
    let upstream = upgrade_echo_upstream().await;
    let extra = Extra {
        tail: "[limits]\nmax_connections = 1".into(),
        ..Extra::default()
    };
    let proxy = Proxy::start_with(
        &format!("http://{upstream}/"),
        USER,
        Secret::Password(PASSWORD),
        &extra,
    )
    .await;
    let upgrade =
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let open = || async {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(upgrade).await.unwrap();
        let mut head = [0u8; 12];
        let answered =
            tokio::time::timeout(Duration::from_millis(1500), stream.read_exact(&mut head))
                .await
                .is_ok();
        (stream, answered.then_some(head))
    };
    let (mut first, head) = open().await;
    assert_eq!(&head.unwrap(), b"HTTP/1.1 101");
    let (second, head) = open().await;
    assert!(head.is_none(), "a second tunnel with max_connections = 1");
    drop(second);
    // The first tunnel still works, then ends; the slot is free again.
    let mut rest = vec![0u8; 256];
    let _ = tokio::time::timeout(Duration::from_millis(300), first.read(&mut rest)).await;
    first.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    first.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    drop(first);
    let (third, head) = open().await;
    assert_eq!(
        &head.expect("served once the tunnel ended"),
        b"HTTP/1.1 101"
    );
    drop(third);
    proxy.stop().await;
}
