//! Fuzzers over real sockets, for a fixed number of generated cases each:
//! request heads built from the pieces proxies get wrong (methods, request
//! targets, versions, `Host`, framing, browser and identity headers, line
//! endings), and chunked bodies, well-formed and broken.
//!
//! What must hold for every case: the proxy answers (or closes) in time
//! with a well-formed status line; what reaches the Jenkins double has one
//! `Host` (Jenkins'), one framing, the proxy's credentials and its own
//! `X-Forwarded-For`, no upgrade but WebSocket; a request with anything
//! the proxy refuses never
//! reaches Jenkins at all; no dangerous action is ever carried out; a
//! well-formed chunked body arrives byte for byte and is accepted once, a
//! broken one gets 400 and never triggers a build. The proxy stays healthy
//! throughout.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use http::StatusCode;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use crate::support::jenkins::{Fnv1a64, MockJenkins, Recorded};
use crate::support::proxy::{client_requests, Extra, Http, Proxy, Secret};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";
const HEAD_CASES: u32 = 2000;
const CHUNKED_CASES: u32 = 1000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

async fn start() -> (MockJenkins, Proxy) {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .upload_sink()
        .start()
        .await;
    let extra = Extra {
        health: true,
        ..Extra::default()
    };
    let proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
    )
    .await;
    (jenkins, proxy)
}

/// Sends `bytes`, half-closes, and reads until the proxy closes: `None`
/// when it neither answered nor closed within 10 s.
async fn exchange(proxy: &Proxy, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    // The proxy may answer (and close) before it has read everything.
    let _ = conn.write_all(bytes).await;
    let _ = conn.shutdown().await;
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out)).await {
        Ok(_) => Some(out),
        Err(_) => None,
    }
}

/// The status of the first answer, if the bytes start with one.
fn status_of(answer: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(answer.get(..12)?).ok()?;
    let code = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))?;
    code.parse().ok()
}

/// Requests the double received on a client's behalf since `before`.
fn new_client_requests(jenkins: &MockJenkins, before: usize) -> Vec<Recorded> {
    client_requests(jenkins)
        .into_iter()
        .skip(before)
        .filter(|r| !r.path.contains("/crumbIssuer/"))
        .collect()
}

fn client_request_count(jenkins: &MockJenkins) -> usize {
    client_requests(jenkins).len()
}

/// Each forwarded request looks like the proxy's own: Jenkins' `Host`,
/// one framing, the proxy's credentials, its `X-Forwarded-For`, and no
/// identity header from the client.
fn check_forwarded(jenkins: &MockJenkins, r: &Recorded) -> Result<(), TestCaseError> {
    let hosts: Vec<_> = r.headers.get_all("host").iter().collect();
    prop_assert_eq!(hosts.len(), 1, "{:?}", r.headers);
    prop_assert_eq!(
        hosts[0].to_str().unwrap(),
        jenkins.addr().to_string(),
        "{:?}",
        r.headers
    );
    prop_assert!(
        !(r.headers.contains_key("content-length") && r.headers.contains_key("transfer-encoding")),
        "two framings: {:?}",
        r.headers
    );
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let auth: Vec<_> = r.headers.get_all("authorization").iter().collect();
    prop_assert_eq!(auth.len(), 1);
    prop_assert_eq!(auth[0].to_str().unwrap(), basic.as_str());
    let xff: Vec<_> = r.headers.get_all("x-forwarded-for").iter().collect();
    prop_assert_eq!(xff.len(), 1);
    prop_assert_eq!(xff[0].to_str().unwrap(), "127.0.0.1");
    for name in ["origin", "cookie", "jenkins-crumb"] {
        if let Some(v) = r.headers.get(name) {
            prop_assert!(
                !v.to_str().unwrap_or_default().contains("evil")
                    && v != "JSESSIONID=abc"
                    && v != "forged",
                "{name}: {v:?}"
            );
        }
    }
    // Only WebSocket upgrades pass; another is answered as plain HTTP/1.1.
    if let Some(v) = r.headers.get("upgrade") {
        prop_assert_eq!(v, "websocket");
    }
    if let Some(v) = r.headers.get("x-forwarded-host") {
        prop_assert!(!v.to_str().unwrap_or_default().contains("evil"), "{v:?}");
    }
    prop_assert!(
        r.method.as_str().bytes().all(|b| b.is_ascii_uppercase()),
        "{}",
        r.method
    );
    Ok(())
}

/// A request head, and whether it carries something the proxy refuses
/// whatever else it holds.
#[derive(Clone)]
struct Head {
    bytes: Vec<u8>,
    refused: bool,
}

impl std::fmt::Debug for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} (refused: {})",
            String::from_utf8_lossy(&self.bytes),
            self.refused
        )
    }
}

/// One of `good` most of the time, else one of `wild`; each piece comes
/// with whether the proxy refuses it.
fn piece(
    good: &[&'static str],
    wild: &[(&'static str, bool)],
) -> impl Strategy<Value = (&'static str, bool)> {
    let good: Vec<_> = good.iter().map(|g| (*g, false)).collect();
    prop_oneof![3 => prop::sample::select(good), 1 => prop::sample::select(wild.to_vec())]
}

/// Heads built from the pieces proxies get wrong, most of them close
/// enough to a tool's request that they reach Jenkins.
fn head() -> impl Strategy<Value = Head> {
    let method = piece(
        &["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"],
        &[
            ("get", true),
            ("PROPFIND", true),
            ("TRACE", true),
            ("CONNECT", true),
            ("G\x01T", true),
            ("", true),
        ],
    );
    let target = piece(
        &[
            "/api/json",
            "/job/sample-job/build",
            "/job/sample-job/buildWithParameters?X=1",
            "/job/sample-job/api/json?tree=builds",
            "/job/sample-job/config.xml",
            "http://127.0.0.1/api/json",
        ],
        &[
            ("*", false),
            ("http://evil.example/api/json", true),
            ("127.0.0.1:80", true),
            ("/script", true),
            ("/scriptText", true),
            ("//scriptText", true),
            ("/%73criptText", true),
            ("/job/sample-job/../../scriptText", true),
            ("/manage/script", true),
            ("/computer/(built-in)/script", true),
            ("/%2e%2e/script", true),
            ("/a b", true),
            ("/%", true),
            ("/\x7f", true),
            ("", true),
        ],
    );
    let version = piece(
        &["HTTP/1.1", "HTTP/1.0"],
        &[
            ("HTTP/2.0", true),
            ("http/1.1", true),
            ("HTTP/9.9", true),
            ("", true),
        ],
    );
    let host = piece(
        &["Host: 127.0.0.1", "Host: localhost:8181", "Host: [::1]"],
        &[
            ("Host: 127.0.0.1:8181@evil.example", true),
            ("Host: evil.example", true),
            ("Host:", true),
            ("Host: 127.0.0.1 x", true),
        ],
    );
    let header = prop::sample::select(vec![
        ("Host: 127.0.0.1", false),
        ("Host: 127.0.0.1:8181@evil.example", true),
        ("Content-Length: 5", false),
        ("Content-Length: 0", false),
        ("Content-Length: -1", false),
        ("Content-Length: 99999999999999999999", false),
        ("Content-Length: 5, 6", false),
        ("Transfer-Encoding: chunked", false),
        ("Transfer-Encoding: gzip", false),
        ("Transfer-Encoding: chunked, gzip", false),
        ("Origin: http://evil.example", true),
        ("Sec-Fetch-Site: cross-site", true),
        ("Sec-Fetch-Site: none", false),
        ("Sec-Fetch-Mode: navigate", false),
        ("Referer: http://evil.example/page", true),
        ("X-Forwarded-For: 10.9.8.7", false),
        ("X-Forwarded-Host: evil.example", false),
        ("X-Real-IP: 10.9.8.7", false),
        ("Cookie: JSESSIONID=abc", false),
        ("Jenkins-Crumb: forged", false),
        ("Authorization: Basic Zm9vOmJhcg==", false),
        ("Connection: close", false),
        ("Connection: upgrade", false),
        ("Upgrade: h2c", false),
        ("Upgrade: websocket", false),
        ("Expect: 100-continue", false),
        (" folded continuation", true),
        ("Bad Header: x", true),
        ("X-Nul: a\0b", true),
    ]);
    let body = prop::sample::select(vec![
        "",
        "",
        "hello",
        "0\r\n\r\n",
        "5\r\nhello\r\n0\r\n\r\n",
    ]);
    (
        method,
        target,
        version,
        prop::option::weighted(0.9, host),
        prop::collection::vec(header, 0..4),
        any::<bool>(),
        body,
    )
        .prop_map(
            |(method, target, version, host, mut headers, bare_lf, body)| {
                headers.splice(0..0, host);
                let eol = if bare_lf { "\n" } else { "\r\n" };
                let mut text = format!("{} {} {}{eol}", method.0, target.0, version.0);
                for (line, _) in &headers {
                    text.push_str(line);
                    text.push_str(eol);
                }
                text.push_str(eol);
                text.push_str(body);
                let has = |line: &str| headers.iter().any(|(h, _)| *h == line);
                let two_hosts = headers
                    .iter()
                    .filter(|(h, _)| h.starts_with("Host"))
                    .count()
                    > 1;
                // A body whose last coding is not chunked has no length
                // (RFC 9112 §6.3); `gzip` then `chunked` is fine.
                let unframed = headers
                    .iter()
                    .rev()
                    .find(|(h, _)| h.starts_with("Transfer-Encoding"))
                    .is_some_and(|(h, _)| !h.ends_with(" chunked"));
                // A bad length, unless chunked framing overrides it (RFC 9112
                // §6.3: it is then dropped, never forwarded).
                let bad_length = !headers
                    .iter()
                    .any(|(h, _)| h.starts_with("Transfer-Encoding"))
                    && headers.iter().any(|(h, _)| {
                        h.strip_prefix("Content-Length: ")
                            .is_some_and(|n| n.parse::<u32>().is_err())
                    });
                // Reading from the address bar is fine, changing is not.
                let typed = has("Sec-Fetch-Site: none") && !matches!(method.0, "GET" | "HEAD");
                Head {
                    bytes: text.into_bytes(),
                    refused: method.1
                        || target.1
                        || version.1
                        || two_hosts
                        || unframed
                        || bad_length
                        || typed
                        || headers.iter().any(|(_, refused)| *refused),
                }
            },
        )
}

#[test]
fn fuzzed_request_heads_get_an_answer_and_never_reach_jenkins_wrongly() {
    let rt = runtime();
    let (jenkins, proxy) = rt.block_on(start());
    // The runner takes a `Fn`: counts live in cells.
    let statuses = RefCell::new(BTreeMap::<String, usize>::new());
    let reached = Cell::new(0usize);
    let result = runner(HEAD_CASES).run(&head(), |case| {
        let before = client_request_count(&jenkins);
        let answer = rt.block_on(exchange(&proxy, &case.bytes));
        let text = String::from_utf8_lossy(&case.bytes).into_owned();
        let Some(answer) = answer else {
            return Err(TestCaseError::fail(format!("no answer in 10 s: {text:?}")));
        };
        let status = status_of(&answer);
        prop_assert!(
            answer.is_empty() || status.is_some_and(|s| (100..600).contains(&s)),
            "{text:?} -> {:?}",
            String::from_utf8_lossy(&answer)
        );
        *statuses
            .borrow_mut()
            .entry(status.map_or("closed".into(), |s| s.to_string()))
            .or_default() += 1;
        let seen = new_client_requests(&jenkins, before);
        reached.set(reached.get() + usize::from(!seen.is_empty()));
        if case.refused {
            prop_assert!(
                seen.is_empty(),
                "{text:?} reached Jenkins: {:?}",
                seen.iter().map(|r| &r.path).collect::<Vec<_>>()
            );
        }
        for r in &seen {
            check_forwarded(&jenkins, r)?;
        }
        prop_assert!(
            jenkins.dangerous().is_empty(),
            "{text:?}: {:?}",
            jenkins.dangerous()
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (reached, statuses) = (reached.get(), statuses.into_inner());
    eprintln!("{HEAD_CASES} fuzzed heads: {reached} reached Jenkins; answers {statuses:?}");
    assert!(
        reached > HEAD_CASES as usize / 20,
        "the generator reaches Jenkins ({reached})"
    );
    rt.block_on(async {
        let http = Http::new();
        assert_eq!(
            http.get(&proxy.health_url("/livez")).await.status,
            StatusCode::OK
        );
        assert_eq!(
            http.get(&proxy.url("/api/json")).await.status,
            StatusCode::OK
        );
        proxy.stop().await;
    });
    drop(jenkins);
}

/// A chunked body: its chunks, how each size and the end are written, and
/// at most one fault.
#[derive(Debug, Clone)]
struct Chunked {
    chunks: Vec<(Vec<u8>, Spelling)>,
    trailer: bool,
    fault: Option<Fault>,
}

#[derive(Debug, Clone, Copy)]
enum Spelling {
    Lower,
    Upper,
    LeadingZeros,
    Extension,
    QuotedExtension,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The size of chunk `i` off by `delta` (never 0).
    WrongSize(usize, i64),
    /// Chunk `i`'s size is not hex.
    NotHex(usize),
    /// No CRLF after chunk `i`'s data.
    MissingCrlf(usize),
    /// The client closes inside chunk `i`'s data.
    CutInside(usize),
    /// The client closes before the last chunk.
    NoLastChunk,
}

impl Chunked {
    fn data(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|(d, _)| d.clone()).collect()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (data, spelling)) in self.chunks.iter().enumerate() {
            let mut size = data.len() as i64;
            if let Some(Fault::WrongSize(at, delta)) = self.fault {
                if at == i {
                    size = (size + delta).max(0);
                }
            }
            let size = match spelling {
                Spelling::Lower => format!("{size:x}"),
                Spelling::Upper => format!("{size:X}"),
                Spelling::LeadingZeros => format!("000{size:x}"),
                Spelling::Extension => format!("{size:x};name=value"),
                Spelling::QuotedExtension => format!("{size:x};name=\"a b\""),
            };
            match self.fault {
                Some(Fault::NotHex(at)) if at == i => out.extend_from_slice(b"zz"),
                _ => out.extend_from_slice(size.as_bytes()),
            }
            out.extend_from_slice(b"\r\n");
            match self.fault {
                Some(Fault::CutInside(at)) if at == i => {
                    out.extend_from_slice(&data[..data.len() / 2]);
                    return out;
                }
                _ => out.extend_from_slice(data),
            }
            match self.fault {
                Some(Fault::MissingCrlf(at)) if at == i => {}
                _ => out.extend_from_slice(b"\r\n"),
            }
        }
        if let Some(Fault::NoLastChunk) = self.fault {
            return out;
        }
        out.extend_from_slice(b"0\r\n");
        if self.trailer {
            out.extend_from_slice(b"X-Trailer: 1\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

fn chunked() -> impl Strategy<Value = Chunked> {
    // Data without hex digits, CR or LF: a wrong size can never land on
    // something that reads as the next chunk's size line.
    let data = prop_oneof![
        4 => prop::collection::vec(b'g'..=b'z', 1..64),
        1 => prop::collection::vec(b'g'..=b'z', 64..5000),
    ];
    let spelling = prop::sample::select(vec![
        Spelling::Lower,
        Spelling::Upper,
        Spelling::LeadingZeros,
        Spelling::Extension,
        Spelling::QuotedExtension,
    ]);
    (
        prop::collection::vec((data, spelling), 0..6),
        any::<bool>(),
        0usize..8,
        prop::sample::select(vec![-3i64, -1, 1, 2, 3, 1000]),
        0usize..6,
    )
        .prop_map(|(chunks, trailer, kind, delta, at)| {
            let n = chunks.len();
            let fault = match kind {
                _ if n == 0 => (kind == 7).then_some(Fault::NoLastChunk),
                3 => Some(Fault::WrongSize(at % n, delta)),
                4 => Some(Fault::NotHex(at % n)),
                5 => Some(Fault::MissingCrlf(at % n)),
                6 if chunks[at % n].0.len() > 1 => Some(Fault::CutInside(at % n)),
                7 => Some(Fault::NoLastChunk),
                _ => None,
            };
            Chunked {
                chunks,
                trailer,
                fault,
            }
        })
}

#[test]
fn fuzzed_chunked_bodies_arrive_whole_or_not_at_all() {
    let rt = runtime();
    let (jenkins, proxy) = rt.block_on(start());
    let (last_id, whole, refused) = (Cell::new(0u64), Cell::new(0usize), Cell::new(0usize));
    let result = runner(CHUNKED_CASES).run(&chunked(), |case| {
        let id = last_id.get() + 1;
        last_id.set(id);
        let mut request = format!(
            "POST /job/sample-job/buildWithParameters?ID={id} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n"
        )
        .into_bytes();
        request.extend_from_slice(&case.encode());
        let answer = rt
            .block_on(exchange(&proxy, &request))
            .ok_or_else(|| TestCaseError::fail(format!("no answer in 10 s: {case:?}")))?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let query = format!("ID={id}");
        let accepted: Vec<_> = jenkins
            .requests_to("/job/sample-job/buildWithParameters")
            .into_iter()
            .filter(|r| {
                r.query.as_deref() == Some(query.as_str()) && r.status == StatusCode::CREATED
            })
            .collect();
        if case.fault.is_none() {
            prop_assert_eq!(status_of(&answer), Some(201), "{:?}: {}", case, text);
            prop_assert_eq!(accepted.len(), 1, "accepted once: {:?}", case);
            let data = case.data();
            let mut digest = Fnv1a64::new();
            digest.update(&data);
            prop_assert_eq!(accepted[0].body_len, data.len() as u64);
            prop_assert_eq!(accepted[0].body_digest, digest.finish(), "{:?}", case);
            whole.set(whole.get() + 1);
        } else {
            prop_assert_eq!(status_of(&answer), Some(400), "{:?}: {}", case, text);
            prop_assert!(
                text.to_ascii_lowercase()
                    .contains("x-crumb-proxy-error: client-body-failed"),
                "{:?}: {}",
                case,
                text
            );
            prop_assert!(
                accepted.is_empty(),
                "a broken body triggered a build: {:?}",
                case
            );
            refused.set(refused.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (whole, refused) = (whole.get(), refused.get());
    eprintln!("{CHUNKED_CASES} fuzzed chunked bodies: {whole} arrived whole, {refused} broken ones got 400");
    assert!(
        whole > 30 && refused > 30,
        "{whole} whole, {refused} broken"
    );
    rt.block_on(async {
        let http = Http::new();
        assert_eq!(
            http.get(&proxy.health_url("/livez")).await.status,
            StatusCode::OK
        );
        proxy.stop().await;
    });
    drop(jenkins);
}
