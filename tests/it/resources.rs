//! What a storm of clients can make the proxy hold: memory for bodies kept
//! for a replay has one budget for all of them, and idle connections make
//! room for new clients at the connection cap.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::jenkins::MockJenkins;
use crate::support::proxy::{request, Binary, Extra, Http, Proxy, Secret};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";

/// 300 concurrent 1 MiB POSTs, all held by a slow Jenkins at once. Without
/// a budget each would be kept whole for a replay (about 400 MiB); with the
/// default 64 MiB budget the rest stream, the proxy (the real binary) stays
/// under 128 MiB at its peak, and Jenkins accepts every POST exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_buffers_share_one_memory_budget() {
    const POSTS: usize = 300;
    const BODY: usize = 1024 * 1024;
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        // Every POST is answered only after a pause, so that all of them
        // are in the proxy at the same time.
        .response_delay(
            "/job/sample-job/buildWithParameters",
            Duration::from_millis(1500),
        )
        .start()
        .await;
    let (proxy, _dir, _config) = Binary::start_for(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &Extra::default(),
        &[],
    );
    let http = Http::new();
    let body = Bytes::from(vec![b'x'; BODY]);
    let url = proxy.url("/job/sample-job/build");
    let mut posts = tokio::task::JoinSet::new();
    for _ in 0..POSTS {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        posts.spawn(async move {
            http.send(request(
                Method::POST,
                &url,
                &[("content-type", "application/octet-stream")],
                body,
            ))
            .await
            .status
        });
    }
    while let Some(status) = posts.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::CREATED);
    }
    let peak = proxy.peak_rss();
    assert!(
        peak < 128 * 1024 * 1024,
        "peak RSS {} MiB",
        peak / 1024 / 1024
    );
    assert_eq!(jenkins.accepted_triggers("sample-job"), POSTS);
    let posted: Vec<_> = jenkins
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::POST)
        .collect();
    assert_eq!(posted.len(), POSTS, "no POST sent twice");
    assert!(posted.iter().all(|r| r.body_len == BODY as u64));
    proxy.terminate();
    jenkins.finish().await;
}

/// At `limits.max_connections`, idle connections (kept-alive after a
/// request, or never sent a byte) are closed to admit a new client, least
/// recently used first, as nginx does; a connection with a request in
/// flight keeps its slot and gets its answer.
#[tokio::test]
async fn idle_connections_make_room_at_the_cap() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .response_delay("/job/sample-job/build", Duration::from_secs(2))
        .start()
        .await;
    let extra = Extra {
        tail:
            "[limits]\nmax_connections = 4\nidle_timeout_secs = 60\nheader_read_timeout_secs = 60"
                .into(),
        ..Extra::default()
    };
    let proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
    )
    .await;
    // One request in flight for two seconds.
    let busy = {
        let http = Http::new();
        let url = proxy.url("/job/sample-job/build");
        tokio::spawn(async move { http.post(&url).await })
    };
    jenkins_wait_for(&jenkins, "/job/sample-job/build").await;
    // A kept-alive client that made one request and went quiet.
    let mut kept = TcpStream::connect(proxy.addr).await.unwrap();
    kept.write_all(b"HEAD /api/json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(kept.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"));
    // More silent sockets than the cap.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    // A new client is served at once.
    let started = tokio::time::Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(1),
        Http::new().get(&proxy.url("/api/json")),
    )
    .await
    .expect("a new client served within a second behind idle connections");
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(1));
    // The request in flight was not disturbed.
    let reply = busy.await.unwrap();
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(jenkins.accepted_triggers("sample-job"), 1);
    // The oldest idle ones were closed: the kept-alive client first.
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut byte))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "the kept-alive connection was closed");
    let mut closed = 0;
    for mut s in silent {
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(200), s.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert!(
        closed >= 5,
        "only {closed} of the silent sockets were closed"
    );
    proxy.stop().await;
    jenkins.finish().await;
}

/// At the cap with every connection busy, a new client waits for one of
/// them to finish, then is served.
#[tokio::test]
async fn busy_connections_hold_their_slots() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .response_delay("/job/sample-job/build", Duration::from_millis(1500))
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
    let mut busy = Vec::new();
    for _ in 0..2 {
        let http = Http::new();
        let url = proxy.url("/job/sample-job/build");
        busy.push(tokio::spawn(async move { http.post(&url).await.status }));
    }
    while jenkins.requests_to("/job/sample-job/build").len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    third
        .write_all(b"GET /api/json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // A negative check: nothing is served while both are busy.
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await;
    assert!(early.is_err(), "served while every slot was busy");
    for b in busy {
        assert_eq!(b.await.unwrap(), StatusCode::CREATED);
    }
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut rest))
        .await
        .expect("served once a slot was free")
        .unwrap();
    let response = format!("{}{}", byte[0] as char, String::from_utf8_lossy(&rest));
    assert!(response.contains("200 OK"), "{response}");
    proxy.stop().await;
    jenkins.finish().await;
}

/// Waits until the double has recorded a request to `path`.
async fn jenkins_wait_for(jenkins: &MockJenkins, path: &str) {
    for _ in 0..500 {
        if !jenkins.requests_to(path).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no request to {path} reached Jenkins");
}
