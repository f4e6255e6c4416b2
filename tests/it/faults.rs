//! Faults between the proxy and Jenkins, and what the proxy does about
//! them: a kept-alive Jenkins connection that Jenkins cuts as a request
//! arrives (a GET or HEAD is sent again, a POST never), and idle Jenkins
//! connections closed on a timer.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::support::jenkins::MockJenkins;
use crate::support::proxy::{client_requests, request, Extra, Http, Proxy, Secret};

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
