//! Crumbs through the proxy, as Jenkins issues and checks them: the four
//! tutorial flows of jenkins-behavior.md §12 with no client credentials,
//! session expiry, concurrency, API tokens, CSRF off, the legacy field,
//! bad credentials and permission errors.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};

use crate::support::jenkins::{MockJenkins, CRUMB_REJECTION};
use crate::support::proxy::{client_requests, request, Extra, Http, Proxy, Secret};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";
const TOKEN: &str = "11c0ffee0ddba11deadbeef00112233";

fn basic(user: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
    )
}

async fn jenkins() -> MockJenkins {
    MockJenkins::builder()
        .user(USER, PASSWORD)
        .api_token(USER, TOKEN)
        .start()
        .await
}

/// Flow 1: reading the instance needs nothing from the client.
#[tokio::test]
async fn flow1_read_the_instance() {
    let jenkins = jenkins().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let reply = Http::new().get(&proxy.url("/api/json?pretty=true")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(
        reply.text().contains("\"numExecutors\" : "),
        "{}",
        reply.text()
    );
    assert!(reply.text().contains("\"name\" : \"sample-job\""));

    let seen = client_requests(&jenkins);
    assert_eq!(seen.len(), 1, "a GET needs no crumb fetch");
    assert_eq!(seen[0].path, "/api/json");
    assert_eq!(seen[0].query.as_deref(), Some("pretty=true"));
    assert_eq!(
        seen[0].headers["authorization"],
        basic(USER, PASSWORD).as_str()
    );
    assert_eq!(seen[0].headers["host"], jenkins.addr().to_string().as_str());
    assert!(!seen[0].headers.contains_key("jenkins-crumb"));
    assert!(!seen[0].headers.contains_key("cookie"));
    assert_eq!(seen[0].user.as_deref(), Some(USER));
    proxy.stop().await;
    jenkins.finish().await;
}

/// Flows 2 and 3: a password POST without anything on the client side is
/// what Jenkins rejects directly (403); through the proxy it gets the crumb
/// and the session cookie that crumb is bound to, and Jenkins' own 201.
#[tokio::test]
async fn flow2_and_3_password_post_gets_crumb_with_its_session() {
    let jenkins = jenkins().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let http = Http::new();
    let reply = http.post(&proxy.url("/job/sample-job/build")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert!(reply.body.is_empty());
    assert!(reply.headers.get("set-cookie").is_none());

    assert_eq!(jenkins.crumb_fetches(), 1);
    assert_eq!(jenkins.accepted_triggers("sample-job"), 1);
    let fetch = &jenkins.requests_to("/crumbIssuer/api/json")[0];
    assert_eq!(
        fetch.headers["authorization"],
        basic(USER, PASSWORD).as_str()
    );
    assert!(
        !fetch.headers.contains_key("cookie"),
        "a fresh session per fetch"
    );
    let post = &jenkins.requests_to("/job/sample-job/build")[0];
    let crumb = post.headers["jenkins-crumb"].to_str().unwrap();
    assert_eq!(jenkins.issued_crumbs(), [crumb]);
    let cookie = post.headers["cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with(&format!("{}=", jenkins.cookie_name())),
        "{cookie}"
    );
    let session = cookie.split_once('=').unwrap().1.trim_end_matches(".node0");
    assert_eq!(
        crumb,
        jenkins.crumb_for(USER, session),
        "crumb and cookie belong together"
    );

    // A client that fetches its own crumb (python-jenkins does) still works:
    // its crumb goes through the proxy, but the POST carries the proxy's.
    let own = http.get(&proxy.url("/crumbIssuer/api/json")).await;
    assert_eq!(own.status, StatusCode::OK);
    assert!(
        own.headers.get("set-cookie").is_none(),
        "session cookies never reach clients"
    );
    let own: serde_json::Value = serde_json::from_slice(&own.body).unwrap();
    let own_crumb = own["crumb"].as_str().unwrap().to_owned();
    let reply = http
        .send(request(
            Method::POST,
            &proxy.url("/job/sample-job/build"),
            &[("Jenkins-Crumb", &own_crumb)],
            Bytes::new(),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let posts = jenkins.requests_to("/job/sample-job/build");
    assert_eq!(posts.len(), 2);
    assert_eq!(
        posts[1].headers["jenkins-crumb"], crumb,
        "the proxy's cached crumb"
    );
    assert_eq!(posts[1].headers.get_all("jenkins-crumb").iter().count(), 1);
    assert_eq!(jenkins.accepted_triggers("sample-job"), 2);
    // The client's crumb fetch passed through; the proxy fetched only once.
    assert_eq!(jenkins.crumb_fetches(), 2);
    proxy.stop().await;
    jenkins.finish().await;
}

/// Flow 4: with an API token, `auto` sends no crumb and fetches none.
#[tokio::test]
async fn flow4_api_token_needs_no_crumb() {
    let jenkins = jenkins().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Token(TOKEN)).await;
    let http = Http::new();
    for _ in 0..3 {
        let reply = http.post(&proxy.url("/job/sample-job/build")).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    }
    assert_eq!(jenkins.crumb_fetches(), 0);
    assert_eq!(jenkins.accepted_triggers("sample-job"), 3);
    for post in jenkins.requests_to("/job/sample-job/build") {
        assert!(post.via_api_token);
        assert_eq!(post.headers["authorization"], basic(USER, TOKEN).as_str());
        assert!(!post.headers.contains_key("jenkins-crumb"));
        assert!(!post.headers.contains_key("cookie"));
    }
    proxy.stop().await;
    jenkins.finish().await;
}

/// `crumb.mode = "always"` sends a crumb even with a token; `never` sends
/// none even with a password (Jenkins then rejects, and that 403 is passed
/// through without a retry).
#[tokio::test]
async fn crumb_mode_forces() {
    let jenkins = jenkins().await;
    let always = Extra {
        crumb: "mode = \"always\"".into(),
        ..Extra::default()
    };
    let proxy = Proxy::start_with(&jenkins.root_url(), USER, Secret::Token(TOKEN), &always).await;
    let reply = Http::new().post(&proxy.url("/job/sample-job/build")).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(jenkins.crumb_fetches(), 1);
    proxy.stop().await;

    let never = Extra {
        crumb: "mode = \"never\"".into(),
        ..Extra::default()
    };
    let proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &never,
    )
    .await;
    let reply = Http::new().post(&proxy.url("/job/sample-job/build")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.text().contains(CRUMB_REJECTION));
    assert_eq!(jenkins.crumb_fetches(), 1, "never fetched");
    assert_eq!(
        jenkins.requests_to("/job/sample-job/build").len(),
        2,
        "no retry"
    );
    proxy.stop().await;
    jenkins.finish().await;
}

/// The crumb is cached across requests and connections: many POSTs, one fetch.
#[tokio::test]
async fn crumb_is_reused_across_connections() {
    let jenkins = jenkins().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    for _ in 0..5 {
        // A new client each time: a new connection to the proxy.
        let reply = Http::new().post(&proxy.url("/job/sample-job/build")).await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    assert_eq!(jenkins.crumb_fetches(), 1);
    assert_eq!(jenkins.accepted_triggers("sample-job"), 5);
    proxy.stop().await;
    jenkins.finish().await;
}

/// The session behind the cached crumb expires between two POSTs: the
/// second is rejected for its crumb, the proxy fetches once more and
/// replays it; each trigger is accepted exactly once.
#[tokio::test]
async fn session_expiry_between_posts_refetches_once() {
    let jenkins = jenkins().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let http = Http::new();
    let body = "json=%7B%7D&Submit=Build";
    let post = || {
        request(
            Method::POST,
            &proxy.url("/job/sample-job/build?delay=0sec"),
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
    };
    assert_eq!(http.send(post()).await.status, StatusCode::CREATED);
    jenkins.expire_sessions();
    let reply = http.send(post()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());

    assert_eq!(jenkins.crumb_fetches(), 2);
    assert_eq!(jenkins.accepted_triggers("sample-job"), 2);
    let posts = jenkins.requests_to("/job/sample-job/build");
    let statuses: Vec<u16> = posts.iter().map(|p| p.status.as_u16()).collect();
    assert_eq!(statuses, [201, 403, 201]);
    // The replay is the same request: same query, same body.
    assert_eq!(posts[2].query, posts[1].query);
    assert_eq!(posts[2].body, posts[1].body);
    assert_eq!(posts[2].body, body);
    assert_ne!(
        posts[2].headers["jenkins-crumb"],
        posts[1].headers["jenkins-crumb"]
    );
    proxy.stop().await;
    jenkins.finish().await;
}

/// 200 POSTs in flight at once after the session expired: exactly one crumb
/// fetch, and every POST accepted by Jenkins exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posts_after_expiry_share_one_fetch() {
    const N: usize = 200;
    let jenkins = jenkins().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let http = Http::new();
    assert_eq!(
        http.post(&proxy.url("/job/sample-job/build")).await.status,
        StatusCode::CREATED
    );
    jenkins.expire_sessions();

    let url = Arc::new(proxy.url("/job/sample-job/build"));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let (http, url) = (http.clone(), url.clone());
        tasks.spawn(async move {
            let req = request(Method::POST, &url, &[], format!("n={i}"));
            http.send(req).await.status
        });
    }
    let mut created = 0;
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::CREATED);
        created += 1;
    }
    assert_eq!(created, N);
    assert_eq!(
        jenkins.crumb_fetches(),
        2,
        "one initial fetch, one after expiry"
    );
    assert_eq!(jenkins.accepted_triggers("sample-job"), N + 1);
    // Each body was accepted exactly once: none lost, none doubled.
    let mut accepted: Vec<String> = jenkins
        .requests_to("/job/sample-job/build")
        .into_iter()
        .filter(|r| r.status == StatusCode::CREATED && !r.body.is_empty())
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect();
    accepted.sort();
    let mut expected: Vec<String> = (0..N).map(|i| format!("n={i}")).collect();
    expected.sort();
    assert_eq!(accepted, expected);
    proxy.stop().await;
    jenkins.finish().await;
}

/// CSRF protection off: the crumb issuer's 404 is remembered and POSTs go
/// without a crumb. When it is switched back on, the first rejected POST
/// makes the proxy fetch a crumb and replay.
#[tokio::test]
async fn csrf_off_then_on_again() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .csrf(false)
        .start()
        .await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let http = Http::new();
    for _ in 0..3 {
        assert_eq!(
            http.post(&proxy.url("/job/sample-job/build")).await.status,
            StatusCode::CREATED
        );
    }
    assert_eq!(jenkins.crumb_fetches(), 1, "404 remembered");
    for post in jenkins.requests_to("/job/sample-job/build") {
        assert!(!post.headers.contains_key("jenkins-crumb"));
    }

    jenkins.set_csrf(true);
    let reply = http.post(&proxy.url("/job/sample-job/build")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(jenkins.crumb_fetches(), 2);
    assert_eq!(jenkins.accepted_triggers("sample-job"), 4);
    proxy.stop().await;
    jenkins.finish().await;
}

/// Jenkins before 2.0 called the field `.crumb`; the proxy sends whatever
/// `crumbRequestField` names.
#[tokio::test]
async fn legacy_crumb_field() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .crumb_field(".crumb")
        .start()
        .await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let reply = Http::new().post(&proxy.url("/job/sample-job/build")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let post = &jenkins.requests_to("/job/sample-job/build")[0];
    assert!(post.headers.contains_key(".crumb"));
    assert!(!post.headers.contains_key("jenkins-crumb"));
    proxy.stop().await;
    jenkins.finish().await;
}

/// A wrong password: Jenkins' 401 reaches GET callers untouched; a POST
/// fails at the crumb fetch with a 502 that says why; nothing loops.
#[tokio::test]
async fn wrong_password() {
    let jenkins = jenkins().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password("wrong-pw-1f9c")).await;
    let http = Http::new();
    let reply = http.get(&proxy.url("/api/json")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Basic realm=\"Jenkins\"")
    );
    assert!(
        reply.headers.get("x-crumb-proxy-error").is_none(),
        "Jenkins' own answer"
    );
    assert!(reply.headers.get("set-cookie").is_none());

    let reply = http.post(&proxy.url("/job/sample-job/build")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        reply.header("x-crumb-proxy-error"),
        Some("crumb-fetch-failed")
    );
    assert!(reply.text().contains("401"), "{}", reply.text());
    assert!(reply.text().contains("credentials"), "{}", reply.text());
    assert!(!reply.text().contains("wrong-pw-1f9c"));
    let fetches = jenkins.requests_to("/crumbIssuer/api/json");
    assert_eq!(fetches.len(), 1, "no retry loop");
    assert_eq!(fetches[0].status, StatusCode::UNAUTHORIZED);
    assert!(
        jenkins.requests_to("/job/sample-job/build").is_empty(),
        "never sent"
    );
    proxy.stop().await;

    // With a wrong token no crumb is involved: Jenkins' 401 comes back once.
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Token("not-a-token-5b2e")).await;
    let reply = http.post(&proxy.url("/job/sample-job/build")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(jenkins.requests_to("/job/sample-job/build").len(), 1);
    assert_eq!(jenkins.requests_to("/crumbIssuer/api/json").len(), 1);
    proxy.stop().await;
    jenkins.finish().await;
}

/// A genuine permission 403 is Jenkins' answer, passed through and never
/// retried.
#[tokio::test]
async fn permission_403_is_not_retried() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .deny_job("locked", USER)
        .start()
        .await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let reply = Http::new().post(&proxy.url("/job/locked/build")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.header("x-you-are-authenticated-as"), Some(USER));
    assert!(reply.headers.get("x-crumb-proxy-error").is_none());
    assert_eq!(jenkins.requests_to("/job/locked/build").len(), 1);
    assert_eq!(jenkins.crumb_fetches(), 1);
    assert_eq!(jenkins.accepted_triggers("locked"), 0);
    proxy.stop().await;
    jenkins.finish().await;
}

/// A body larger than the replay cap streams; if its crumb is rejected the
/// client gets Jenkins' 403 plus a header saying it could not be replayed,
/// and the next request uses a fresh crumb.
#[tokio::test]
async fn body_over_replay_cap_is_not_replayed() {
    let jenkins = jenkins().await;
    let extra = Extra {
        crumb: "replay_body_max_bytes = 16".into(),
        ..Extra::default()
    };
    let proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
    )
    .await;
    let http = Http::new();
    let url = proxy.url("/job/sample-job/build");
    assert_eq!(http.post(&url).await.status, StatusCode::CREATED);
    jenkins.expire_sessions();

    let big = "x".repeat(17);
    let reply = http
        .send(request(Method::POST, &url, &[], big.clone()))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.text().contains(CRUMB_REJECTION), "Jenkins' own page");
    assert_eq!(
        reply.header("x-crumb-proxy-error"),
        Some("crumb-rejected-not-replayable")
    );
    let posts = jenkins.requests_to("/job/sample-job/build");
    assert_eq!(posts.len(), 2, "sent once, not replayed");
    assert_eq!(posts[1].body, big);

    let small = "y".repeat(16);
    let reply = http.send(request(Method::POST, &url, &[], small)).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(jenkins.crumb_fetches(), 2);
    assert_eq!(
        jenkins.requests_to("/job/sample-job/build").len(),
        3,
        "fresh crumb first time"
    );
    assert_eq!(jenkins.accepted_triggers("sample-job"), 2);
    proxy.stop().await;
    jenkins.finish().await;
}

/// A crumb idle longer than `crumb.max_idle_secs` is refreshed before use,
/// so even a body too large to replay goes out with a fresh crumb.
#[tokio::test]
async fn idle_crumb_is_refreshed_before_use() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .session_timeout(std::time::Duration::from_millis(1500))
        .start()
        .await;
    let extra = Extra {
        crumb: "max_idle_secs = 1\nreplay_body_max_bytes = 0".into(),
        ..Extra::default()
    };
    let proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
    )
    .await;
    let http = Http::new();
    let url = proxy.url("/job/sample-job/build");
    let post = || request(Method::POST, &url, &[], "streamed");
    assert_eq!(http.send(post()).await.status, StatusCode::CREATED);
    // A real pause: the proxy's idle limit (1 s) passes, Jenkins' session
    // (1.5 s) has not yet, so the refresh is the proxy's own decision.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let reply = http.send(post()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(
        jenkins.crumb_fetches(),
        2,
        "refreshed before the second POST"
    );
    let statuses: Vec<u16> = jenkins
        .requests_to("/job/sample-job/build")
        .iter()
        .map(|p| p.status.as_u16())
        .collect();
    assert_eq!(statuses, [201, 201], "no rejection, no replay needed");
    proxy.stop().await;
    jenkins.finish().await;
}
