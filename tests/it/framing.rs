//! Request framing as it really is: hyper settles a request that carries
//! both `Content-Length` and `Transfer-Encoding` (chunked wins, RFC 9112
//! §6.1) and the proxy re-frames what it forwards, so no smuggled request
//! reaches Jenkins; a client's broken chunked body is the client's fault
//! (400 `client-body-failed`), never reported as Jenkins' (502), and Jenkins
//! never sees a complete request.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::jenkins::MockJenkins;
use crate::support::proxy::{Proxy, Secret};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";

async fn exchange(proxy: &Proxy, bytes: &[u8]) -> String {
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out))
        .await
        .expect("the proxy answered and closed in time")
        .unwrap_or_default();
    String::from_utf8_lossy(&out).into_owned()
}

/// Both `Content-Length` and `Transfer-Encoding: chunked`: the chunked
/// framing is the one used (RFC 9112 §6.1), Jenkins gets the chunked body
/// without the `Content-Length`, and the bytes after the chunked body,
/// shaped as a second request, are never sent to Jenkins as one: hyper
/// closes such a connection after the answer.
#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle() {
    let jenkins = MockJenkins::builder().user(USER, PASSWORD).start().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let answer = exchange(
        &proxy,
        b"POST /job/sample-job/build HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
          POST /scriptText HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert_eq!(
        answer.matches("HTTP/1.1").count(),
        1,
        "one answer, then the connection closed: {answer}"
    );
    let posts: Vec<_> = jenkins
        .requests()
        .into_iter()
        .filter(|r| r.method == http::Method::POST)
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].path, "/job/sample-job/build");
    assert_eq!(&posts[0].body[..], b"hello");
    assert!(!posts[0].headers.contains_key("content-length"));
    assert!(jenkins.requests_to("/scriptText").is_empty());
    proxy.stop().await;
    jenkins.finish().await;
}

/// A malformed chunked body (`5\r\nhelloXX…`) that has started streaming to
/// Jenkins: the client gets 400 `client-body-failed`, Jenkins gets a request
/// cut off before its end (it can see no complete request), and the 5xx
/// count of the metrics does not move.
#[tokio::test]
async fn malformed_chunked_body_is_the_clients_failure() {
    let jenkins = MockJenkins::builder().user(USER, PASSWORD).start().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    for path in ["/job/sample-job/build", "/job/sample-job/config.xml"] {
        // POST takes the crumb path with a streamed (chunked) body; PUT
        // the plain one.
        for method in ["POST", "PUT"] {
            let answer = exchange(
                &proxy,
                format!(
                    "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                     5\r\nhelloXX\r\n0\r\n\r\n"
                )
                .as_bytes(),
            )
            .await;
            assert!(
                answer.starts_with("HTTP/1.1 400"),
                "{method} {path}: {answer}"
            );
            assert!(
                answer
                    .to_ascii_lowercase()
                    .contains("x-crumb-proxy-error: client-body-failed"),
                "{answer}"
            );
            assert!(answer.contains("client"), "{answer}");
        }
    }
    assert_eq!(jenkins.accepted_triggers("sample-job"), 0);
    // Whatever of them reached Jenkins, it saw no complete body (the double
    // answers an incomplete one with Jetty's 400).
    for r in jenkins.requests() {
        if r.method != http::Method::GET {
            assert_eq!(r.status, http::StatusCode::BAD_REQUEST, "{r:?}");
        }
    }
    proxy.stop().await;
    jenkins.finish().await;
}
