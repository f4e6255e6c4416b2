//! Transparency: paths, queries, statuses, headers and bodies pass through;
//! what must not pass (hop-by-hop headers, client credentials, session
//! cookies) does not; redirects stay on the proxy; failures are clear.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::jenkins::MockJenkins;
use crate::support::proxy::{client_requests, request, Extra, Http, Proxy, Secret};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";

async fn jenkins_at(context: &str) -> MockJenkins {
    MockJenkins::builder()
        .context_path(context)
        .user(USER, PASSWORD)
        .start()
        .await
}

/// Sends raw bytes and reads until the peer closes (the request says
/// `Connection: close`), so tests see exactly what went over the wire.
async fn raw_exchange(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("response within 10 s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Whatever identity the client claims is replaced by the proxy's: its
/// `Authorization`, `Cookie` and crumb headers never reach Jenkins, and
/// Jenkins' `Set-Cookie` never reaches the client.
#[tokio::test]
async fn client_credentials_are_replaced_and_cookies_stripped() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .user("mallory", "mallory-pw")
        .extra_response_headers(
            "/api/json",
            vec![(
                "Set-Cookie".into(),
                "remember-me=abc; Path=/; HttpOnly".into(),
            )],
        )
        .start()
        .await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let http = Http::new();
    let claims = [
        ("authorization", "Basic bWFsbG9yeTptYWxsb3J5LXB3"), // mallory:mallory-pw
        ("cookie", "JSESSIONID.deadbeef=node0stolen.node0"),
        ("jenkins-crumb", "0123456789abcdef"),
    ];
    for method in [Method::GET, Method::POST] {
        let path = if method == Method::GET {
            "/api/json"
        } else {
            "/job/sample-job/build"
        };
        let reply = http
            .send(request(
                method.clone(),
                &proxy.url(path),
                &claims,
                Bytes::new(),
            ))
            .await;
        assert!(reply.status.is_success(), "{method}: {}", reply.text());
        assert!(reply.headers.get("set-cookie").is_none(), "{method}");
        let seen = jenkins.requests_to(path).pop().unwrap();
        assert_eq!(seen.user.as_deref(), Some(USER), "{method}");
        assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
        for (name, value) in claims {
            for v in seen.headers.get_all(name) {
                assert_ne!(v, value, "{method}: client's {name} reached Jenkins");
            }
        }
    }
    // The crumb fetch and the anonymous-style responses set cookies too;
    // none arrived (checked above), and Jenkins did set them.
    let fetch = &jenkins.requests_to("/crumbIssuer/api/json")[0];
    assert_eq!(fetch.status, StatusCode::OK);
    proxy.stop().await;
    jenkins.finish().await;
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), including those a `Connection`
/// header names, are removed in both directions; end-to-end ones pass.
#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .extra_response_headers(
            "/api/json",
            vec![
                ("Connection".into(), "X-Upstream-Hop".into()),
                ("X-Upstream-Hop".into(), "1".into()),
                ("Keep-Alive".into(), "timeout=5".into()),
                ("Proxy-Authenticate".into(), "Basic".into()),
                ("X-End-To-End".into(), "kept".into()),
            ],
        )
        .start()
        .await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let response = raw_exchange(
        proxy.addr,
        "GET /api/json HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Connection: close, X-Client-Hop\r\nX-Client-Hop: 1\r\nKeep-Alive: timeout=9\r\n\
         TE: trailers\r\nProxy-Authorization: Basic eDp5\r\nProxy-Connection: keep-alive\r\n\
         X-Client-Kept: yes\r\n\r\n",
    )
    .await;
    let head = response
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-end-to-end: kept"), "{head}");
    assert!(
        head.contains("x-jenkins: "),
        "Jenkins' headers pass: {head}"
    );
    for gone in ["x-upstream-hop", "keep-alive", "proxy-authenticate"] {
        assert!(!head.contains(gone), "{gone} reached the client: {head}");
    }
    let seen = &jenkins.requests_to("/api/json")[0];
    for gone in [
        "x-client-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(!seen.headers.contains_key(gone), "{gone} reached Jenkins");
    }
    assert_eq!(seen.headers["x-client-kept"], "yes");
    assert_eq!(seen.headers["host"], jenkins.addr().to_string().as_str());
    proxy.stop().await;
    jenkins.finish().await;
}

/// With Jenkins under a context path, paths and queries map beneath it,
/// and a `Location` into Jenkins (the 201 of a build trigger) points back at
/// the proxy, so following it stays on the proxy.
#[tokio::test]
async fn path_prefix_and_location_rewrite() {
    let jenkins = jenkins_at("/jenkins").await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let http = Http::new();
    let reply = http
        .get(&proxy.url("/job/sample-job/api/json?tree=name,color&depth=1"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = &jenkins.requests_to("/jenkins/job/sample-job/api/json")[0];
    assert_eq!(seen.query.as_deref(), Some("tree=name,color&depth=1"));

    let reply = http.post(&proxy.url("/job/sample-job/build")).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let location = reply.header("location").unwrap().to_owned();
    let prefix = format!("http://{}/queue/item/", proxy.addr);
    assert!(location.starts_with(&prefix), "{location}");
    // What Jenkins sent pointed at itself.
    assert_eq!(
        jenkins.requests_to("/jenkins/crumbIssuer/api/json").len(),
        1
    );

    // Following the redirect (curl -L) stays on the proxy.
    let item = http.get(&format!("{location}api/json")).await;
    assert_eq!(item.status, StatusCode::OK, "{}", item.text());
    assert!(
        item.text().contains("hudson.model.Queue$"),
        "{}",
        item.text()
    );
    proxy.stop().await;
    jenkins.finish().await;
}

/// Jenkins' statuses, headers and bodies come back as they are, and
/// upstream connections are pooled and kept alive.
#[tokio::test]
async fn statuses_pass_and_connections_are_pooled() {
    let jenkins = jenkins_at("").await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let http = Http::new();
    let direct = direct_405(&jenkins).await;
    let reply = http.get(&proxy.url("/job/sample-job/build")).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("POST"));
    // Byte for byte what Jenkins sends directly, but for the page's
    // embedded crumb, which belongs to the fresh session each request makes.
    assert_eq!(mask_crumb(&reply.text()), mask_crumb(&direct.text()));
    let reply = http.get(&proxy.url("/job/no-such-job/api/json")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let head = http
        .send(request(
            Method::HEAD,
            &proxy.url("/api/json"),
            &[],
            Bytes::new(),
        ))
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());

    let before = jenkins.connections();
    for _ in 0..20 {
        assert_eq!(
            http.get(&proxy.url("/api/json")).await.status,
            StatusCode::OK
        );
    }
    assert!(
        jenkins.connections() - before <= 1,
        "20 sequential requests used {} new upstream connections",
        jenkins.connections() - before
    );
    proxy.stop().await;
    jenkins.finish().await;
}

/// A Jenkins connection outlives the client that opened it: clients that
/// connect once per request (a `curl` each) reuse it. The proxy keeps idle
/// connections per worker thread, one worker per core, so at most that
/// many are opened.
#[tokio::test]
async fn jenkins_connections_outlive_their_clients() {
    let jenkins = jenkins_at("").await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let clients = 4 * workers + 4;
    for _ in 0..clients {
        // Not an API path: no crumb, no root URL to learn, so every
        // Jenkins connection counted is a client's.
        let reply = Http::new().get(&proxy.url("/job/sample-job/build")).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    }
    assert!(
        jenkins.connections() <= workers,
        "{clients} clients one after another opened {} Jenkins connections ({workers} workers)",
        jenkins.connections()
    );
    proxy.stop().await;
    jenkins.finish().await;
}

/// Jenkins (Jetty) closes idle kept-alive connections after a few seconds,
/// without warning. Neither a client's own idle connection nor one left by
/// an earlier client may turn that into an error, and no POST may arrive
/// twice.
#[tokio::test]
async fn jenkins_closing_idle_connections_costs_no_request() {
    let jenkins = jenkins_at("").await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let kept = Http::new();
    assert_eq!(
        kept.get(&proxy.url("/api/json")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        kept.post(&proxy.url("/job/sample-job/build")).await.status,
        StatusCode::CREATED
    );
    let mut posts = 1;
    for round in 0..3 {
        // The same client connection, whose Jenkins connection just closed.
        jenkins.close_idle_connections().await;
        assert_eq!(
            kept.get(&proxy.url("/api/json")).await.status,
            StatusCode::OK,
            "round {round}: GET after Jenkins closed the connection"
        );
        jenkins.close_idle_connections().await;
        assert_eq!(
            kept.post(&proxy.url("/job/sample-job/build")).await.status,
            StatusCode::CREATED,
            "round {round}: POST after Jenkins closed the connection"
        );
        posts += 1;
        // New clients, each finding a parked connection that Jenkins closed.
        for _ in 0..2 {
            let fresh = Http::new();
            assert_eq!(
                fresh.post(&proxy.url("/job/sample-job/build")).await.status,
                StatusCode::CREATED
            );
            posts += 1;
            drop(fresh);
            tokio::time::sleep(Duration::from_millis(20)).await;
            jenkins.close_idle_connections().await;
        }
    }
    assert_eq!(jenkins.accepted_triggers("sample-job"), posts);
    let builds = client_requests(&jenkins)
        .iter()
        .filter(|r| r.method == Method::POST)
        .count();
    assert_eq!(builds, posts, "every POST reached Jenkins exactly once");
    proxy.stop().await;
    jenkins.finish().await;
}

fn mask_crumb(page: &str) -> String {
    let marker = "data-crumb-value=\"";
    match page.split_once(marker) {
        Some((before, after)) => {
            let rest = after.split_once('"').map_or("", |(_, rest)| rest);
            format!("{before}{marker}…\"{rest}")
        }
        None => page.to_owned(),
    }
}

/// The 405 page straight from the double, for comparison.
async fn direct_405(jenkins: &MockJenkins) -> crate::support::proxy::Reply {
    let auth = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{USER}:{PASSWORD}")
        )
    );
    Http::new()
        .send(request(
            Method::GET,
            &format!("{}job/sample-job/build", jenkins.root_url()),
            &[("authorization", &auth)],
            Bytes::new(),
        ))
        .await
}

/// A progressive console log reaches the client chunk by chunk, while the
/// build is still running: chunk 2 is produced only after the client has
/// read chunk 1 through the proxy.
#[tokio::test]
async fn progressive_text_streams_chunk_by_chunk() {
    let jenkins = jenkins_at("").await;
    let log = jenkins.progressive();
    log.push("Started by user alice\n");
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let resp = Http::new()
        .start(request(
            Method::GET,
            &proxy.url("/job/sample-job/1/logText/progressiveText?start=0"),
            &[],
            Bytes::new(),
        ))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-more-data"], "true");
    let mut body = resp.into_body();
    assert_eq!(next_chunk(&mut body).await, "Started by user alice\n");
    log.push("step 1\n");
    assert_eq!(next_chunk(&mut body).await, "step 1\n");
    log.push("Finished: SUCCESS\n");
    assert_eq!(next_chunk(&mut body).await, "Finished: SUCCESS\n");
    log.finish();
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert!(rest.is_empty());
    proxy.stop().await;
    jenkins.finish().await;
}

async fn next_chunk(body: &mut hyper::body::Incoming) -> String {
    let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("a chunk within 10 s")
        .expect("more body")
        .unwrap();
    String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
}

/// Jenkins down: 502 with a body naming the cause and what to check, for
/// GETs and for POSTs (whose crumb fetch fails the same way).
#[tokio::test]
async fn upstream_down_is_502() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let proxy = Proxy::start(
        &format!("http://127.0.0.1:{port}/"),
        USER,
        Secret::Password(PASSWORD),
    )
    .await;
    let http = Http::new();
    for reply in [
        http.get(&proxy.url("/api/json")).await,
        http.post(&proxy.url("/job/sample-job/build")).await,
    ] {
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
        assert_eq!(
            reply.header("x-crumb-proxy-error"),
            Some("upstream-unreachable")
        );
        let text = reply.text();
        assert!(text.contains("refused"), "{text}");
        assert!(text.contains("upstream.url"), "{text}");
        assert!(!text.contains(PASSWORD));
    }
    proxy.stop().await;
}

/// Jenkins too slow to answer: 504 after `upstream.response_timeout_ms`.
#[tokio::test]
async fn upstream_too_slow_is_504() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .response_delay("/api/json", Duration::from_secs(3))
        .start()
        .await;
    let extra = Extra {
        upstream: "response_timeout_ms = 300".into(),
        ..Extra::default()
    };
    let proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
    )
    .await;
    let reply = Http::new().get(&proxy.url("/api/json")).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        reply.header("x-crumb-proxy-error"),
        Some("upstream-timeout")
    );
    assert!(
        reply.text().contains("response_timeout_ms"),
        "{}",
        reply.text()
    );
    proxy.stop().await;
    jenkins.finish().await;
}

/// The response timeout counts from each request's own start, also on a
/// kept-alive connection whose earlier requests were fast.
#[tokio::test]
async fn response_timeout_counts_per_request() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .response_delay("/job/sample-job/api/json", Duration::from_millis(300))
        .response_delay("/api/json", Duration::from_secs(3))
        .start()
        .await;
    let extra = Extra {
        upstream: "response_timeout_ms = 450".into(),
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
    for _ in 0..3 {
        // Fast, then slow-but-in-time 250 ms later: the second would time
        // out if its deadline were the first one's.
        let fast = http.get(&proxy.url("/job/sample-job/build")).await;
        assert_eq!(fast.status, StatusCode::METHOD_NOT_ALLOWED);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let slow = http.get(&proxy.url("/job/sample-job/api/json")).await;
        assert_eq!(slow.status, StatusCode::OK, "{}", slow.text());
    }
    let started = tokio::time::Instant::now();
    let late = http.get(&proxy.url("/api/json")).await;
    let waited = started.elapsed();
    assert_eq!(late.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        waited >= Duration::from_millis(440) && waited < Duration::from_millis(2000),
        "timed out after {waited:?}"
    );
    proxy.stop().await;
    jenkins.finish().await;
}

/// The proxy is not a forward proxy: CONNECT is refused without touching
/// Jenkins.
#[tokio::test]
async fn connect_is_refused() {
    let jenkins = jenkins_at("").await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let response = raw_exchange(
        proxy.addr,
        "CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    assert!(response
        .to_ascii_lowercase()
        .contains("x-crumb-proxy-error: not-a-forward-proxy"));
    assert!(jenkins.requests().is_empty());
    proxy.stop().await;
    jenkins.finish().await;
}

/// An upgrade (WebSocket; the Jenkins CLI uses one once a rule allows it) is
/// forwarded with the proxy's credentials, and after Jenkins' 101 the bytes
/// flow both ways. The upstream here is a minimal echo server, since the
/// Jenkins double speaks no WebSocket.
#[tokio::test]
async fn upgrades_are_tunnelled_with_credentials() {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let seen_tx = std::sync::Mutex::new(Some(seen_tx));
        let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            if let Some(tx) = seen_tx.lock().unwrap().take() {
                let _ = tx.send(req.headers().clone());
            }
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let upgraded = on_upgrade.await.unwrap();
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 4];
                io.read_exact(&mut buf).await.unwrap();
                io.write_all(&buf).await.unwrap();
            });
            async {
                let resp = http::Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket")
                    .body(http_body_util::Empty::<Bytes>::new())
                    .unwrap();
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await
            .unwrap();
    });

    let proxy = Proxy::start(
        &format!("http://{upstream}/"),
        USER,
        Secret::Password(PASSWORD),
    )
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /websocket-echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut byte))
            .await
            .expect("101 within 10 s")
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    stream.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echo))
        .await
        .expect("echo within 10 s")
        .unwrap();
    assert_eq!(&echo, b"ping");

    let seen = seen_rx.await.unwrap();
    let auth = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{USER}:{PASSWORD}")
        )
    );
    assert_eq!(seen["authorization"], auth.as_str());
    assert_eq!(seen["upgrade"], "websocket");
    proxy.stop().await;
}

/// Absolute URLs in API answers lead back to the proxy: those Jenkins
/// builds from our `X-Forwarded-*` (with its context path) and those it
/// builds from its configured root URL. Streamed, chunked (the length
/// changed), and never applied to artifacts.
#[tokio::test]
async fn api_body_urls_point_at_the_proxy() {
    let jenkins = MockJenkins::builder()
        .context_path("/jenkins")
        .user(USER, PASSWORD)
        .artifact("sample-job", 1, "links.json", 64)
        .start()
        .await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let http = Http::new();
    let own = format!("http://{}/", proxy.addr);
    let reply = http
        .send(request(
            Method::GET,
            &proxy.url("/api/json?pretty=true"),
            &[("accept-encoding", "gzip")],
            Bytes::new(),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .text()
            .contains(&format!("\"url\" : \"{own}job/sample-job/\"")),
        "{}",
        reply.text()
    );
    assert!(!reply.text().contains("/jenkins/"), "{}", reply.text());
    assert!(
        reply.headers.get("content-length").is_none(),
        "chunked after rewriting"
    );
    let seen = client_requests(&jenkins).pop().unwrap();
    assert_eq!(
        seen.headers["x-forwarded-host"],
        proxy.addr.to_string().as_str()
    );
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(
        seen.headers["x-forwarded-port"],
        proxy.addr.port().to_string().as_str()
    );
    assert!(
        !seen.headers.contains_key("accept-encoding"),
        "asked uncompressed, to rewrite"
    );
    // Following such a URL works, through the proxy.
    let job = http.get(&format!("{own}job/sample-job/api/json")).await;
    assert_eq!(job.status, StatusCode::OK, "{}", job.text());

    // An artifact is passed byte for byte, length kept.
    let artifact = http
        .get(&proxy.url("/job/sample-job/1/artifact/links.json"))
        .await;
    assert_eq!(artifact.header("content-length"), Some("64"));
    proxy.stop().await;

    // Off with one key.
    let off = Extra {
        upstream: "rewrite_api_urls = false".into(),
        ..Extra::default()
    };
    let proxy =
        Proxy::start_with(&jenkins.root_url(), USER, Secret::Password(PASSWORD), &off).await;
    let reply = http.get(&proxy.url("/api/json")).await;
    assert!(
        reply
            .text()
            .contains(&format!("http://{}/jenkins/job/sample-job/", proxy.addr)),
        "{}",
        reply.text()
    );
    proxy.stop().await;
    jenkins.finish().await;
}

/// A Jenkins with a configured root URL puts that URL in its answers; the
/// proxy learns it once (the root object's `url`) and rewrites it too.
#[tokio::test]
async fn configured_root_url_is_learned_and_rewritten() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .configured_root_url("https://ci.example.com/jenkins/")
        .start()
        .await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let http = Http::new();
    for _ in 0..3 {
        let reply = http.get(&proxy.url("/api/json")).await;
        let own = format!("\"url\":\"http://{}/job/sample-job/\"", proxy.addr);
        assert!(reply.text().contains(&own), "{}", reply.text());
        assert!(!reply.text().contains("ci.example.com"), "{}", reply.text());
    }
    let probes: Vec<_> = jenkins
        .requests()
        .into_iter()
        .filter(|r| r.query.as_deref() == Some("tree=url"))
        .collect();
    assert_eq!(probes.len(), 1, "asked once");
    // The 201 of a trigger names the configured root too.
    let reply = http.post(&proxy.url("/job/sample-job/build")).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let location = reply.header("location").unwrap();
    assert!(
        location.starts_with(&format!("http://{}/queue/item/", proxy.addr)),
        "{location}"
    );
    proxy.stop().await;
    jenkins.finish().await;
}
