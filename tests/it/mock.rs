//! Tests of `MockJenkins` itself, talking to it directly (no proxy in between).
//!
//! The proxy tests are only as good as the double they run against, so these pin the double to
//! `/work/shared/jenkins-behavior.md` ("behaviour §N"): the four tutorial flows of §12 first,
//! then the rules they rest on. Expected bodies are written out literally here rather than
//! taken from the mock's own templates, so a drifting template fails a test.

// `allow-unwrap-in-tests` covers `#[test]` functions only, not the helpers below; in test
// code a failed unwrap is simply a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::support::jenkins::{
    fnv1a64, pattern_bytes, MockJenkins, CRUMB_REJECTION, JENKINS_VERSION, RECORD_CAP,
};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery";
const TOKEN: &str = "11d1c0ffee0123456789abcdef012345";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn start() -> MockJenkins {
    MockJenkins::builder()
        .user(USER, PASSWORD)
        .api_token(USER, TOKEN)
        .start()
        .await
}

fn basic(user: &str, secret: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
    format!("Basic {encoded}")
}

/// A request to `path` below the double's root URL (`path` has no leading slash).
fn req(jenkins: &MockJenkins, method: Method, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("{}{path}", jenkins.root_url()))
}

fn with_password(b: http::request::Builder) -> http::request::Builder {
    b.header(AUTHORIZATION, basic(USER, PASSWORD))
}

fn with_token(b: http::request::Builder) -> http::request::Builder {
    b.header(AUTHORIZATION, basic(USER, TOKEN))
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    /// `name=value` of the session cookie this response sets, if any.
    fn session_cookie(&self, jenkins: &MockJenkins) -> Option<String> {
        self.all("set-cookie")
            .into_iter()
            .find(|c| c.starts_with(&format!("{}=", jenkins.cookie_name())))
            .map(|c| c.split(';').next().unwrap().to_owned())
    }
}

/// Upper bound for any single wait on the double, so that a broken double fails a test
/// instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

async fn call(client: &HttpClient, b: http::request::Builder, body: &'static str) -> Reply {
    let request = b
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let exchange = async {
        let (parts, body) = client.request(request).await.unwrap().into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    };
    timeout(PATIENCE, exchange)
        .await
        .expect("the double answers")
}

async fn send(client: &HttpClient, b: http::request::Builder) -> Reply {
    call(client, b, "").await
}

async fn open(client: &HttpClient, b: http::request::Builder) -> Response<Incoming> {
    let request = b.body(Full::new(Bytes::new())).unwrap();
    timeout(PATIENCE, client.request(request))
        .await
        .expect("the double answers")
        .unwrap()
}

/// The next data frame of a streamed body; `None` at its end.
async fn next_data(body: &mut Incoming) -> Option<Bytes> {
    let frame = timeout(PATIENCE, body.frame())
        .await
        .expect("a frame or the end");
    frame.map(|f| f.unwrap().into_data().unwrap())
}

/// Behaviour §6, byte for byte, for a request to `uri`.
fn crumb_rejection_page(uri: &str) -> String {
    format!(
        r#"<html>
<head>
<meta http-equiv="Content-Type" content="text/html;charset=ISO-8859-1"/>
<title>Error 403 No valid crumb was included in the request</title>
</head>
<body><h2>HTTP ERROR 403 No valid crumb was included in the request</h2>
<table>
<tr><th>URI:</th><td>{uri}</td></tr>
<tr><th>STATUS:</th><td>403</td></tr>
<tr><th>MESSAGE:</th><td>No valid crumb was included in the request</td></tr>
<tr><th>SERVLET:</th><td>Stapler</td></tr>
</table>
<hr/><a href="https://jetty.org/">Powered by Jetty:// 12.1.8</a><hr/>

</body>
</html>
"#
    )
}

fn assert_crumb_rejection(reply: &Reply, uri: &str) {
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    assert_eq!(reply.text(), crumb_rejection_page(uri));
    assert_eq!(
        reply.header("content-type"),
        Some("text/html;charset=iso-8859-1")
    );
    assert_eq!(
        reply.header("cache-control"),
        Some("must-revalidate,no-cache,no-store")
    );
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
}

/// Fetch a crumb with the password; returns (crumb, `name=value` session cookie).
async fn fetch_crumb(jenkins: &MockJenkins, client: &HttpClient) -> (String, String) {
    let reply = send(
        client,
        with_password(req(jenkins, Method::GET, "crumbIssuer/api/json")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let cookie = reply
        .session_cookie(jenkins)
        .expect("crumb issuing sets a session");
    (json["crumb"].as_str().unwrap().to_owned(), cookie)
}

fn session_id(cookie: &str) -> String {
    let value = cookie.split_once('=').unwrap().1;
    value.strip_suffix(".node0").unwrap().to_owned()
}

// --- behaviour §12: the four tutorial flows ---

#[tokio::test]
async fn flow1_read_the_instance_with_an_api_token() {
    let jenkins = start().await;
    let client = client();
    let reply = send(
        &client,
        with_token(req(&jenkins, Method::GET, "api/json?pretty=true")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        Some("application/json;charset=UTF-8")
    );
    assert_eq!(reply.header("x-jenkins"), Some(JENKINS_VERSION));
    assert_eq!(reply.header("x-jenkins-session").map(str::len), Some(8));
    assert_eq!(reply.header("x-frame-options"), Some("deny"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert!(
        reply.header("set-cookie").is_none(),
        "Basic authentication alone creates no session (behaviour §3.3)"
    );
    // Stapler's pretty printer (behaviour §7.7): "name" : value, two-space indentation, empty
    // containers as bracket, indented empty line, bracket.
    let text = reply.text();
    let prefix = "{\n  \"_class\" : \"hudson.model.Hudson\",\n  \"assignedLabels\" : [\n    {\n      \"name\" : \"built-in\"\n    }\n  ],\n  \"mode\" : \"NORMAL\",";
    assert!(text.starts_with(prefix), "{text}");
    assert!(text.contains("\"overallLoad\" : {\n    \n  },"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["numExecutors"], 2);
    assert_eq!(json["useCrumbs"], true);
    assert_eq!(
        json["jobs"],
        serde_json::json!([{
            "_class": "hudson.model.FreeStyleProject",
            "name": "sample-job",
            "url": format!("http://{}/job/sample-job/", jenkins.addr()),
            "color": "notbuilt",
        }])
    );

    let compact = send(&client, with_token(req(&jenkins, Method::GET, "api/json"))).await;
    assert!(compact.text().starts_with(
        r#"{"_class":"hudson.model.Hudson","assignedLabels":[{"name":"built-in"}],"mode":"NORMAL","#
    ));

    let seen = jenkins.requests_to("/api/json");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].query.as_deref(), Some("pretty=true"));
    assert_eq!(seen[0].user.as_deref(), Some(USER));
    assert!(seen[0].via_api_token);
    assert_eq!(seen[0].status, StatusCode::OK);
    jenkins.finish().await;
}

#[tokio::test]
async fn flow2_password_without_crumb_is_rejected() {
    let jenkins = start().await;
    let reply = send(
        &client(),
        with_password(req(&jenkins, Method::POST, "job/sample-job/build")),
    )
    .await;
    assert_crumb_rejection(&reply, "/job/sample-job/build");
    assert!(
        reply.header("set-cookie").is_none(),
        "no crumb was presented, so none was validated and no session created"
    );
    assert!(reply.header("x-jenkins").is_none(), "a Jetty error page");
    assert_eq!(jenkins.accepted_triggers("sample-job"), 0);
    let seen = jenkins.requests_to("/job/sample-job/build");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].status, StatusCode::FORBIDDEN);
    assert_eq!(seen[0].user.as_deref(), Some(USER));
    assert!(!seen[0].via_api_token);
    jenkins.finish().await;
}

#[tokio::test]
async fn flow3_crumb_works_only_with_its_session_cookie() {
    let jenkins = start().await;
    let client = client();
    let reply = send(
        &client,
        with_password(req(&jenkins, Method::GET, "crumbIssuer/api/json")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        Some("application/json;charset=UTF-8")
    );
    assert_eq!(reply.header("x-frame-options"), Some("deny"));
    assert_eq!(
        reply.header("expires"),
        Some("Thu, 01 Jan 1970 00:00:00 GMT")
    );
    let set_cookie = reply.all("set-cookie");
    assert_eq!(set_cookie.len(), 1, "{set_cookie:?}");
    let name = jenkins.cookie_name();
    assert!(name.starts_with("JSESSIONID.") && name.len() == "JSESSIONID.".len() + 8);
    assert!(set_cookie[0].starts_with(&format!("{name}=node0")));
    assert!(
        set_cookie[0].ends_with(".node0; Path=/; HttpOnly"),
        "{}",
        set_cookie[0]
    );
    let cookie = reply.session_cookie(&jenkins).unwrap();
    let session = session_id(&cookie);
    assert_eq!(jenkins.valid_session_ids(), vec![session.clone()]);

    let crumb = jenkins.crumb_for(USER, &session);
    assert_eq!(crumb.len(), 64);
    assert!(crumb
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(
        reply.text(),
        format!(
            r#"{{"_class":"hudson.security.csrf.DefaultCrumbIssuer","crumb":"{crumb}","crumbRequestField":"Jenkins-Crumb"}}"#
        )
    );
    assert_eq!(jenkins.issued_crumbs(), vec![crumb.clone()]);
    assert_eq!(jenkins.crumb_fetches(), 1);

    // With the cookie: accepted.
    let ok = send(
        &client,
        with_password(req(&jenkins, Method::POST, "job/sample-job/build"))
            .header("Jenkins-Crumb", &crumb)
            .header(COOKIE, &cookie),
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text());
    assert!(ok.body.is_empty());
    assert_eq!(
        ok.header("location"),
        Some(format!("http://{}/queue/item/1/", jenkins.addr()).as_str())
    );
    assert_eq!(jenkins.accepted_triggers("sample-job"), 1);

    // Without the cookie the same crumb hashes against a new session: rejected, and that
    // new session comes back on the 403 (behaviour §3.3 item 2).
    let rejected = send(
        &client,
        with_password(req(&jenkins, Method::POST, "job/sample-job/build"))
            .header("jenkins-crumb", &crumb),
    )
    .await;
    assert_crumb_rejection(&rejected, "/job/sample-job/build");
    let new_cookie = rejected
        .session_cookie(&jenkins)
        .expect("validation creates a session");
    assert_ne!(new_cookie, cookie);
    assert_eq!(jenkins.accepted_triggers("sample-job"), 1);
    assert_eq!(jenkins.valid_session_ids().len(), 2);
    jenkins.finish().await;
}

#[tokio::test]
async fn flow4_api_token_needs_no_crumb_and_no_cookie() {
    let jenkins = start().await;
    let reply = send(
        &client(),
        with_token(req(&jenkins, Method::POST, "job/sample-job/build")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert!(reply
        .header("location")
        .unwrap()
        .ends_with("/queue/item/1/"));
    assert!(reply.header("set-cookie").is_none());
    assert!(jenkins.valid_session_ids().is_empty());
    assert_eq!(jenkins.accepted_triggers("sample-job"), 1);
    let seen = jenkins.requests_to("/job/sample-job/build");
    assert!(seen[0].via_api_token);
    assert_eq!(jenkins.crumb_fetches(), 0);
    jenkins.finish().await;
}

// --- behaviour §2: authentication ---

#[tokio::test]
async fn anonymous_read_gets_the_authentication_required_page() {
    let jenkins = start().await;
    let client = client();
    let reply = send(&client, req(&jenkins, Method::GET, "api/json?depth=1")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html;charset=UTF-8")
    );
    assert_eq!(
        reply.header("x-you-are-authenticated-as"),
        Some("anonymous")
    );
    assert_eq!(
        reply.header("x-required-permission"),
        Some("hudson.model.Hudson.Read")
    );
    assert_eq!(
        reply.all("x-permission-implied-by"),
        vec![
            "hudson.security.Permission.GenericRead",
            "hudson.model.Hudson.Administer"
        ]
    );
    assert!(reply
        .header("x-you-are-in-group-disabled")
        .unwrap()
        .starts_with("JENKINS-39402"));
    assert_eq!(reply.header("x-hudson"), Some("1.395"));
    assert_eq!(reply.header("x-jenkins"), Some(JENKINS_VERSION));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert!(
        reply.session_cookie(&jenkins).is_some(),
        "the request cache creates a session"
    );
    let text = reply.text();
    assert!(
        text.contains(
            "<meta http-equiv='refresh' content='1;url=/login?from=%2Fapi%2Fjson%3Fdepth%3D1'/>"
        ),
        "{text}"
    );
    assert!(text.contains("\nAuthentication required\n<!--\nYou are authenticated as: anonymous\n"));
    assert!(text.contains("Permission you need to have (but didn't): hudson.model.Hudson.Read\n"));
    assert!(text.ends_with(&format!("</body></html>{}", " ".repeat(300))));
    assert!(!text.contains(CRUMB_REJECTION));

    // The crumb issuer needs Overall/Read too (behaviour §4); the fetch still counts.
    let issuer = send(&client, req(&jenkins, Method::GET, "crumbIssuer/api/json")).await;
    assert_eq!(issuer.status, StatusCode::FORBIDDEN);
    assert_eq!(
        issuer.header("x-you-are-authenticated-as"),
        Some("anonymous")
    );
    assert_eq!(jenkins.crumb_fetches(), 1);
    assert!(jenkins.issued_crumbs().is_empty());

    // whoAmI is readable anonymously.
    let who = send(&client, req(&jenkins, Method::GET, "whoAmI/api/json")).await;
    assert_eq!(who.status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&who.body).unwrap();
    assert_eq!(json["name"], "anonymous");
    assert_eq!(json["anonymous"], true);

    // Other schemes are ignored: still anonymous, 403 rather than 401.
    let bearer = send(
        &client,
        req(&jenkins, Method::GET, "api/json").header(AUTHORIZATION, "Bearer abc"),
    )
    .await;
    assert_eq!(bearer.status, StatusCode::FORBIDDEN);
    assert_eq!(
        bearer.header("x-you-are-authenticated-as"),
        Some("anonymous")
    );

    // An anonymous POST without crumb meets the CSRF filter first (behaviour §6).
    let post = send(&client, req(&jenkins, Method::POST, "job/sample-job/build")).await;
    assert_crumb_rejection(&post, "/job/sample-job/build");
    assert!(jenkins.requests().iter().all(|r| r.user.is_none()));
    jenkins.finish().await;
}

#[tokio::test]
async fn bad_or_malformed_credentials_get_401() {
    let jenkins = start().await;
    let client = client();
    let malformed = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice-without-colon")
    );
    for auth in [basic(USER, "wrong"), basic("mallory", PASSWORD), malformed] {
        let reply = send(
            &client,
            req(&jenkins, Method::GET, "api/json").header(AUTHORIZATION, &auth),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{auth}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Basic realm=\"Jenkins\"")
        );
        assert_eq!(
            reply.all("set-cookie"),
            vec![
                "remember-me=; Max-Age=0; Expires=Thu, 01-Jan-1970 00:00:00 GMT; Path=/; HttpOnly"
            ]
        );
        assert!(reply.header("x-jenkins").is_none());
        let text = reply.text();
        assert!(
            text.contains("<title>Error 401 Unauthorized</title>"),
            "{text}"
        );
        assert!(text.contains("<tr><th>MESSAGE:</th><td>Unauthorized</td></tr>"));
    }
    // Wrong credentials fail even on a POST with no crumb: authentication comes first.
    let post = send(
        &client,
        req(&jenkins, Method::POST, "job/sample-job/build")
            .header(AUTHORIZATION, basic(USER, "wrong")),
    )
    .await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED);

    // The scheme is matched case-insensitively.
    let lower = send(
        &client,
        req(&jenkins, Method::GET, "api/json").header(
            AUTHORIZATION,
            basic(USER, PASSWORD).replacen("Basic", "basic", 1),
        ),
    )
    .await;
    assert_eq!(lower.status, StatusCode::OK);
    let users: Vec<_> = jenkins.requests().into_iter().map(|r| r.user).collect();
    assert_eq!(users, vec![None, None, None, None, Some(USER.to_owned())]);
    jenkins.finish().await;
}

// --- behaviour §4 and §6: crumb issuer and CSRF filter ---

#[tokio::test]
async fn csrf_off_means_no_issuer_and_no_crumb_needed() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .csrf(false)
        .start()
        .await;
    let client = client();
    let issuer = send(
        &client,
        with_password(req(&jenkins, Method::GET, "crumbIssuer/api/json")),
    )
    .await;
    assert_eq!(issuer.status, StatusCode::NOT_FOUND);
    assert!(issuer
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(
        issuer.session_cookie(&jenkins).is_some(),
        "the 404 page is a layout page"
    );
    assert_eq!(jenkins.crumb_fetches(), 1);

    let root = send(
        &client,
        with_password(req(&jenkins, Method::GET, "api/json")),
    )
    .await;
    let json: serde_json::Value = serde_json::from_slice(&root.body).unwrap();
    assert_eq!(json["useCrumbs"], false);

    let post = send(
        &client,
        with_password(req(&jenkins, Method::POST, "job/sample-job/build")),
    )
    .await;
    assert_eq!(post.status, StatusCode::CREATED);

    // Switched on at run time: the same POST is rejected again.
    jenkins.set_csrf(true);
    let post = send(
        &client,
        with_password(req(&jenkins, Method::POST, "job/sample-job/build")),
    )
    .await;
    assert_crumb_rejection(&post, "/job/sample-job/build");
    assert_eq!(jenkins.accepted_triggers("sample-job"), 1);
    jenkins.finish().await;
}

#[tokio::test]
async fn legacy_dot_crumb_field_works_only_when_configured() {
    let legacy = MockJenkins::builder()
        .user(USER, PASSWORD)
        .crumb_field(".crumb")
        .start()
        .await;
    let client = client();
    let reply = send(
        &client,
        with_password(req(&legacy, Method::GET, "crumbIssuer/api/json")),
    )
    .await;
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(json["crumbRequestField"], ".crumb");
    let crumb = json["crumb"].as_str().unwrap().to_owned();
    let cookie = reply.session_cookie(&legacy).unwrap();
    let post = |field: &'static str| {
        with_password(req(&legacy, Method::POST, "job/sample-job/build"))
            .header(field, &crumb)
            .header(COOKIE, &cookie)
    };
    assert_crumb_rejection(
        &send(&client, post("Jenkins-Crumb")).await,
        "/job/sample-job/build",
    );
    assert_eq!(
        send(&client, post(".crumb")).await.status,
        StatusCode::CREATED
    );
    legacy.finish().await;

    // On a default double, `.crumb` is looked up but its value discarded (behaviour §6).
    let jenkins = start().await;
    let (crumb, cookie) = fetch_crumb(&jenkins, &client).await;
    let reply = send(
        &client,
        with_password(req(&jenkins, Method::POST, "job/sample-job/build"))
            .header(".crumb", &crumb)
            .header(COOKIE, &cookie),
    )
    .await;
    assert_crumb_rejection(&reply, "/job/sample-job/build");
    jenkins.finish().await;
}

#[tokio::test]
async fn crumb_is_found_in_query_and_form_but_not_multipart() {
    let jenkins = start().await;
    let client = client();
    let (crumb, cookie) = fetch_crumb(&jenkins, &client).await;
    let in_query = send(
        &client,
        with_password(req(
            &jenkins,
            Method::POST,
            &format!("job/sample-job/buildWithParameters?X=1&Jenkins-Crumb={crumb}"),
        ))
        .header(COOKIE, &cookie),
    )
    .await;
    assert_eq!(in_query.status, StatusCode::CREATED, "{}", in_query.text());

    let form: &'static str = format!("X=2&Jenkins-Crumb={crumb}").leak();
    let in_form = call(
        &client,
        with_password(req(
            &jenkins,
            Method::POST,
            "job/sample-job/buildWithParameters",
        ))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(COOKIE, &cookie),
        form,
    )
    .await;
    assert_eq!(in_form.status, StatusCode::CREATED, "{}", in_form.text());

    let multipart: &'static str = format!(
        "--b\r\nContent-Disposition: form-data; name=\"Jenkins-Crumb\"\r\n\r\n{crumb}\r\n--b--\r\n"
    )
    .leak();
    let in_multipart = call(
        &client,
        with_password(req(
            &jenkins,
            Method::POST,
            "job/sample-job/buildWithParameters",
        ))
        .header(CONTENT_TYPE, "multipart/form-data; boundary=b")
        .header(COOKIE, &cookie),
        multipart,
    )
    .await;
    assert_crumb_rejection(&in_multipart, "/job/sample-job/buildWithParameters");
    assert_eq!(jenkins.accepted_triggers("sample-job"), 2);
    jenkins.finish().await;
}

#[tokio::test]
async fn crumb_xml_xpath_special_case() {
    let jenkins = start().await;
    let client = client();
    let reply = send(
        &client,
        with_password(req(
            &jenkins,
            Method::GET,
            "crumbIssuer/api/xml?xpath=concat(//crumbRequestField,%22:%22,//crumb)",
        )),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain;charset=UTF-8")
    );
    let cookie = reply.session_cookie(&jenkins).unwrap();
    let crumb = jenkins.crumb_for(USER, &session_id(&cookie));
    assert_eq!(reply.text(), format!("Jenkins-Crumb:{crumb}"));
    assert_eq!(jenkins.crumb_fetches(), 1);
    jenkins.finish().await;
}

// --- behaviour §3: sessions ---

#[tokio::test]
async fn expired_session_makes_the_old_crumb_fail() {
    let jenkins = start().await;
    let client = client();
    let (crumb, cookie) = fetch_crumb(&jenkins, &client).await;
    let post = |crumb: &str, cookie: &str| {
        with_password(req(&jenkins, Method::POST, "job/sample-job/build"))
            .header("Jenkins-Crumb", crumb)
            .header(COOKIE, cookie)
    };
    assert_eq!(
        send(&client, post(&crumb, &cookie)).await.status,
        StatusCode::CREATED
    );

    jenkins.expire_sessions();
    assert!(jenkins.valid_session_ids().is_empty());
    let stale = send(&client, post(&crumb, &cookie)).await;
    assert_crumb_rejection(&stale, "/job/sample-job/build");
    let fresh_cookie = stale
        .session_cookie(&jenkins)
        .expect("a new session on the 403");
    assert_ne!(fresh_cookie, cookie);
    assert_eq!(jenkins.valid_session_ids(), vec![session_id(&fresh_cookie)]);

    // Recovery as a client (or the proxy) does it: a new crumb with the jar's cookie.
    let refetch = send(
        &client,
        with_password(req(&jenkins, Method::GET, "crumbIssuer/api/json"))
            .header(COOKIE, &fresh_cookie),
    )
    .await;
    assert!(
        refetch.header("set-cookie").is_none(),
        "the session is reused"
    );
    let json: serde_json::Value = serde_json::from_slice(&refetch.body).unwrap();
    let new_crumb = json["crumb"].as_str().unwrap();
    assert_ne!(new_crumb, crumb);
    assert_eq!(
        send(&client, post(new_crumb, &fresh_cookie)).await.status,
        StatusCode::CREATED
    );
    assert_eq!(jenkins.accepted_triggers("sample-job"), 2);
    assert_eq!(jenkins.crumb_fetches(), 2);
    jenkins.finish().await;
}

#[tokio::test]
async fn session_idle_timeout_is_refreshed_by_use() {
    // Real time: a real socket is involved, so the clock cannot be paused (STYLE 2.10).
    let idle = Duration::from_millis(800);
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .session_timeout(idle)
        .start()
        .await;
    let client = client();
    let (crumb, cookie) = fetch_crumb(&jenkins, &client).await;
    for _ in 0..3 {
        // Any request with the cookie, even a GET that does not use the session, refreshes it.
        tokio::time::sleep(idle / 2).await;
        let read = send(
            &client,
            with_password(req(&jenkins, Method::GET, "api/json")).header(COOKIE, &cookie),
        )
        .await;
        assert_eq!(read.status, StatusCode::OK);
    }
    assert_eq!(jenkins.valid_session_ids(), vec![session_id(&cookie)]);
    tokio::time::sleep(idle + idle / 4).await;
    assert!(jenkins.valid_session_ids().is_empty());
    let reply = send(
        &client,
        with_password(req(&jenkins, Method::POST, "job/sample-job/build"))
            .header("Jenkins-Crumb", &crumb)
            .header(COOKIE, &cookie),
    )
    .await;
    assert_crumb_rejection(&reply, "/job/sample-job/build");
    jenkins.finish().await;
}

// --- behaviour §7: endpoints ---

#[tokio::test]
async fn queue_folds_equivalent_triggers() {
    let jenkins = start().await;
    let client = client();
    let trigger = |path: &str| with_token(req(&jenkins, Method::POST, path));
    let location = |r: &Reply| r.header("location").unwrap().to_owned();

    let first = send(&client, trigger("job/sample-job/build")).await;
    let second = send(&client, trigger("job/sample-job/build")).await;
    assert_eq!(
        (first.status, second.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert_eq!(
        location(&first),
        location(&second),
        "folded into the waiting item"
    );
    assert!(location(&first).ends_with("/queue/item/1/"));

    let waiting = send(
        &client,
        with_token(req(&jenkins, Method::GET, "queue/item/1/api/json")),
    )
    .await;
    let json: serde_json::Value = serde_json::from_slice(&waiting.body).unwrap();
    assert_eq!(json["_class"], "hudson.model.Queue$WaitingItem");
    assert_eq!(json["url"], "queue/item/1/");
    assert!(json["why"]
        .as_str()
        .unwrap()
        .starts_with("In the quiet period."));

    let p1 = send(&client, trigger("job/sample-job/buildWithParameters?X=1")).await;
    let p1_again = send(&client, trigger("job/sample-job/buildWithParameters?X=1")).await;
    let p2 = send(&client, trigger("job/sample-job/buildWithParameters?X=2")).await;
    assert_eq!(p1.status, StatusCode::CREATED);
    assert_eq!(p1_again.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&p1), location(&p1_again));
    assert_eq!(p2.status, StatusCode::CREATED);
    assert!(location(&p2).ends_with("/queue/item/3/"));

    // `delay=0sec` pulls the folded item's due time to now; it then leaves the queue.
    let now = send(&client, trigger("job/sample-job/build?delay=0sec")).await;
    assert!(location(&now).ends_with("/queue/item/1/"));
    let left = send(
        &client,
        with_token(req(&jenkins, Method::GET, "queue/item/1/api/json")),
    )
    .await;
    let json: serde_json::Value = serde_json::from_slice(&left.body).unwrap();
    assert_eq!(json["_class"], "hudson.model.Queue$LeftItem");
    assert_eq!(
        json["executable"]["number"], 2,
        "sample-job #1 already exists"
    );
    let after = send(&client, trigger("job/sample-job/build")).await;
    assert!(location(&after).ends_with("/queue/item/4/"));

    assert_eq!(jenkins.accepted_triggers("sample-job"), 7);
    jenkins.finish().await;
}

#[tokio::test]
async fn get_on_build_is_405_and_unknown_job_is_404() {
    let jenkins = start().await;
    let client = client();
    let reply = send(
        &client,
        with_token(req(&jenkins, Method::GET, "job/sample-job/build")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("POST"));
    assert!(reply.text().contains("This URL requires POST"));
    // A layout page: it creates a session and embeds that session's crumb (behaviour §3.3).
    let cookie = reply.session_cookie(&jenkins).unwrap();
    let crumb = jenkins.crumb_for(USER, &session_id(&cookie));
    assert!(reply
        .text()
        .contains(&format!("data-crumb-value=\"{crumb}\"")));
    assert_eq!(jenkins.issued_crumbs(), vec![crumb]);

    let missing = send(
        &client,
        with_token(req(&jenkins, Method::POST, "job/nope/build")),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(jenkins.accepted_triggers("sample-job"), 0);
    assert_eq!(jenkins.accepted_triggers("nope"), 0);
    assert!(
        jenkins.unexpected().is_empty(),
        "an unknown job is a normal answer"
    );
    jenkins.finish().await;
}

#[tokio::test]
async fn denied_job_answers_access_denied_without_crumb_text() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .api_token(USER, TOKEN)
        .deny_job("secret-job", USER)
        .start()
        .await;
    let client = client();
    let (crumb, cookie) = fetch_crumb(&jenkins, &client).await;
    let by_token = send(
        &client,
        with_token(req(&jenkins, Method::POST, "job/secret-job/build")),
    )
    .await;
    let by_password = send(
        &client,
        with_password(req(&jenkins, Method::POST, "job/secret-job/build"))
            .header("Jenkins-Crumb", &crumb)
            .header(COOKIE, &cookie),
    )
    .await;
    for reply in [&by_token, &by_password] {
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(reply.header("x-you-are-authenticated-as"), Some(USER));
        assert_eq!(
            reply.header("x-required-permission"),
            Some("hudson.model.Item.Build")
        );
        let text = reply.text();
        assert!(text.contains("Access Denied"));
        assert!(!text.contains(CRUMB_REJECTION));
        assert!(!text.contains(&crumb));
    }
    // The CSRF filter still runs before the permission check.
    let no_crumb = send(
        &client,
        with_password(req(&jenkins, Method::POST, "job/secret-job/build")).header(COOKIE, &cookie),
    )
    .await;
    assert_crumb_rejection(&no_crumb, "/job/secret-job/build");
    assert_eq!(jenkins.accepted_triggers("secret-job"), 0);
    jenkins.finish().await;
}

#[tokio::test]
async fn config_xml_round_trip() {
    let jenkins = start().await;
    let client = client();
    let path = "job/sample-job/config.xml";
    let initial = send(&client, with_token(req(&jenkins, Method::GET, path))).await;
    assert_eq!(initial.status, StatusCode::OK);
    assert_eq!(initial.header("content-type"), Some("application/xml"));
    assert!(initial.text().contains("<project>"));
    let xml = "<project><description>changed</description></project>";
    let post = call(
        &client,
        with_token(req(&jenkins, Method::POST, path)).header(CONTENT_TYPE, "application/xml"),
        xml,
    )
    .await;
    assert_eq!(post.status, StatusCode::OK);
    assert!(post.body.is_empty());
    let after = send(&client, with_token(req(&jenkins, Method::GET, path))).await;
    assert_eq!(after.text(), xml);
    let recorded = &jenkins.requests_to("/job/sample-job/config.xml")[1];
    assert_eq!(recorded.body, xml.as_bytes());
    assert_eq!(recorded.body_len, xml.len() as u64);
    jenkins.finish().await;
}

#[tokio::test]
async fn progressive_text_streams_each_pushed_chunk() {
    let jenkins = start().await;
    let log = jenkins.progressive();
    log.push("Started by user alice\n");
    let client = client();
    let path = "job/sample-job/1/logText/progressiveText?start=0";
    let response = open(&client, with_token(req(&jenkins, Method::GET, path))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/plain;charset=UTF-8");
    assert_eq!(headers["x-text-size"], "22");
    assert_eq!(headers["x-more-data"], "true");
    assert!(headers.get("content-length").is_none());
    assert_eq!(headers["transfer-encoding"], "chunked");
    let mut body = response.into_body();
    assert_eq!(
        next_data(&mut body).await.unwrap(),
        "Started by user alice\n"
    );
    // Nothing more until something is pushed (a short negative check).
    assert!(timeout(Duration::from_millis(100), body.frame())
        .await
        .is_err());
    assert_eq!(log.watchers(), 1);
    log.push("step 1\n");
    assert_eq!(next_data(&mut body).await.unwrap(), "step 1\n");
    log.push("step 2\n");
    assert_eq!(next_data(&mut body).await.unwrap(), "step 2\n");
    log.finish();
    assert!(
        next_data(&mut body).await.is_none(),
        "finish ends the response"
    );

    // Complete: resume from X-Text-Size, no X-More-Data; start beyond the end restarts at 0.
    let resumed = send(
        &client,
        with_token(req(
            &jenkins,
            Method::GET,
            "job/sample-job/1/logText/progressiveText?start=22",
        )),
    )
    .await;
    assert_eq!(resumed.text(), "step 1\nstep 2\n");
    assert_eq!(resumed.header("x-text-size"), Some("36"));
    assert!(resumed.header("x-more-data").is_none());
    let beyond = send(
        &client,
        with_token(req(
            &jenkins,
            Method::GET,
            "job/sample-job/1/logText/progressiveText?start=999",
        )),
    )
    .await;
    assert_eq!(beyond.text(), "Started by user alice\nstep 1\nstep 2\n");
    jenkins.finish().await;
}

#[tokio::test]
async fn large_artifact_is_streamed_with_ranges() {
    const SIZE: u64 = 8 * 1024 * 1024 + 3;
    let jenkins = MockJenkins::builder()
        .api_token(USER, TOKEN)
        .artifact("sample-job", 1, "out/big.bin", SIZE)
        .start()
        .await;
    let client = client();
    let path = "job/sample-job/1/artifact/out/big.bin";
    let response = open(&client, with_token(req(&jenkins, Method::GET, path))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers["content-length"], SIZE.to_string().as_str());
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("sandbox"));
    let mut body = response.into_body();
    let mut digest = crate::support::jenkins::Fnv1a64::new();
    let (mut received, mut frames) = (0u64, 0usize);
    while let Some(data) = next_data(&mut body).await {
        digest.update(&data);
        received += data.len() as u64;
        frames += 1;
    }
    assert_eq!(received, SIZE);
    assert!(frames > 1);
    assert_eq!(digest.finish(), fnv1a64(&pattern_bytes(0, SIZE as usize)));

    let range = send(
        &client,
        with_token(req(&jenkins, Method::GET, path)).header("range", "bytes=251-501"),
    )
    .await;
    assert_eq!(range.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        range.header("content-range"),
        Some(format!("bytes 251-501/{SIZE}").as_str())
    );
    assert_eq!(range.body, pattern_bytes(251, 251));

    let cached = send(
        &client,
        with_token(req(&jenkins, Method::GET, path))
            .header("if-modified-since", "Tue, 25 Nov 2025 20:00:00 GMT"),
    )
    .await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    jenkins.finish().await;
}

// --- the double's own instruments ---

#[tokio::test]
async fn streamed_upload_is_counted_beyond_the_record_cap() {
    let jenkins = MockJenkins::builder()
        .api_token(USER, TOKEN)
        .upload_sink()
        .start()
        .await;
    let part = RECORD_CAP + 17;
    let first = pattern_bytes(0, part);
    let second = pattern_bytes(part as u64, part);
    let mut stream = TcpStream::connect(jenkins.addr()).await.unwrap();
    let head = format!(
        "POST /job/sample-job/buildWithParameters HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        jenkins.addr(),
        basic(USER, TOKEN)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(format!("{part:x}\r\n").as_bytes())
        .await
        .unwrap();
    stream.write_all(&first).await.unwrap();
    stream.write_all(b"\r\n").await.unwrap();
    // The double sees the first chunk while the second has not been sent.
    timeout(
        Duration::from_secs(5),
        jenkins.wait_received_body_bytes(part as u64),
    )
    .await
    .expect("first chunk arrives before the body is complete");
    assert!(jenkins.requests().is_empty());
    stream
        .write_all(format!("{part:x}\r\n").as_bytes())
        .await
        .unwrap();
    stream.write_all(&second).await.unwrap();
    stream.write_all(b"\r\n0\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("a response")
            .unwrap();
        assert!(n > 0, "connection closed early");
        response.extend_from_slice(&buf[..n]);
    }
    assert!(response.starts_with(b"HTTP/1.1 201 Created\r\n"));

    let recorded = &jenkins.requests_to("/job/sample-job/buildWithParameters")[0];
    assert_eq!(recorded.body_len, 2 * part as u64);
    assert_eq!(recorded.body.len(), RECORD_CAP);
    assert_eq!(recorded.body, first[..RECORD_CAP]);
    let whole = [first, second].concat();
    assert_eq!(recorded.body_digest, fnv1a64(&whole));
    assert_eq!(jenkins.accepted_triggers("sample-job"), 1);
    jenkins.finish().await;
}

#[tokio::test]
async fn unplanned_large_body_and_unknown_routes_are_unexpected() {
    let jenkins = start().await;
    let client = client();
    let big: &'static str = "x".repeat(RECORD_CAP + 1).leak();
    let reply = call(
        &client,
        with_token(req(
            &jenkins,
            Method::POST,
            "job/sample-job/buildWithParameters",
        )),
        big,
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let unknown = send(
        &client,
        with_token(req(&jenkins, Method::GET, "pluginManager/api/json")),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let unexpected = jenkins.unexpected();
    assert_eq!(unexpected.len(), 2, "{unexpected:?}");
    assert!(unexpected[0].contains("upload_sink"));
    assert!(unexpected[1].contains("/pluginManager/api/json"));
}

#[tokio::test]
#[should_panic(expected = "no such route")]
async fn finish_panics_on_unknown_route() {
    let jenkins = start().await;
    send(
        &client(),
        with_token(req(&jenkins, Method::GET, "no/such/thing")),
    )
    .await;
    jenkins.finish().await;
}

#[tokio::test]
async fn context_path_and_host_shape_urls() {
    let jenkins = MockJenkins::builder()
        .context_path("/jenkins")
        .user(USER, PASSWORD)
        .api_token(USER, TOKEN)
        .start()
        .await;
    assert_eq!(
        jenkins.root_url(),
        format!("http://{}/jenkins/", jenkins.addr())
    );
    let client = client();
    let (_crumb, _cookie) = fetch_crumb(&jenkins, &client).await;
    let issued = &jenkins.requests_to("/jenkins/crumbIssuer/api/json")[0];
    assert_eq!(issued.status, StatusCode::OK);
    let reply = send(
        &client,
        with_password(req(&jenkins, Method::GET, "crumbIssuer/api/json")),
    )
    .await;
    assert!(reply.all("set-cookie")[0].ends_with("; Path=/jenkins; HttpOnly"));

    // Location follows the Host header the request carried (behaviour §7.1) ...
    let by_host = send(
        &client,
        with_token(req(&jenkins, Method::POST, "job/sample-job/build"))
            .header(HOST, "ci.example.org:8443"),
    )
    .await;
    assert_eq!(
        by_host.header("location"),
        Some("http://ci.example.org:8443/jenkins/queue/item/1/")
    );
    // ... and X-Forwarded-* when present.
    let forwarded = send(
        &client,
        with_token(req(&jenkins, Method::GET, "api/json"))
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "ci.example.org")
            .header("x-forwarded-port", "443"),
    )
    .await;
    let json: serde_json::Value = serde_json::from_slice(&forwarded.body).unwrap();
    assert_eq!(
        json["jobs"][0]["url"],
        "https://ci.example.org/jenkins/job/sample-job/"
    );

    // Outside the context: Jetty's 404, recorded as unexpected.
    let outside = send(
        &client,
        Request::builder()
            .uri(format!("http://{}/api/json", jenkins.addr()))
            .header(AUTHORIZATION, basic(USER, TOKEN)),
    )
    .await;
    assert_eq!(outside.status, StatusCode::NOT_FOUND);
    assert_eq!(jenkins.unexpected().len(), 1);
    assert!(jenkins.unexpected()[0].contains("outside the context path"));
}

#[tokio::test]
async fn keep_alive_connections_are_counted_and_tagged() {
    let jenkins = start().await;
    let client = client();
    for _ in 0..3 {
        send(&client, with_token(req(&jenkins, Method::GET, "api/json"))).await;
    }
    assert_eq!(jenkins.connections(), 1, "one pooled keep-alive connection");
    send(
        &self::client(),
        with_token(req(&jenkins, Method::GET, "api/json")),
    )
    .await;
    assert_eq!(jenkins.connections(), 2);
    let tags: Vec<usize> = jenkins.requests().iter().map(|r| r.connection).collect();
    assert_eq!(tags, vec![0, 0, 0, 1]);
    jenkins.finish().await;
}

#[tokio::test]
async fn response_delay_and_extra_headers_apply_to_their_path() {
    let delay = Duration::from_millis(300);
    let jenkins = MockJenkins::builder()
        .api_token(USER, TOKEN)
        .response_delay("/whoAmI/api/json", delay)
        .extra_response_headers(
            "/api/json",
            vec![
                ("Connection".to_owned(), "X-Foo".to_owned()),
                ("X-Foo".to_owned(), "bar".to_owned()),
                ("Set-Cookie".to_owned(), "upstream=1; Path=/".to_owned()),
            ],
        )
        .start()
        .await;
    let client = client();
    let started = Instant::now();
    let who = send(
        &client,
        with_token(req(&jenkins, Method::GET, "whoAmI/api/json")),
    )
    .await;
    assert_eq!(who.status, StatusCode::OK);
    assert!(started.elapsed() >= delay);
    let quick = Instant::now();
    let root = send(&client, with_token(req(&jenkins, Method::GET, "api/json"))).await;
    assert!(quick.elapsed() < delay);
    assert_eq!(root.header("x-foo"), Some("bar"));
    assert_eq!(root.header("connection"), Some("X-Foo"));
    assert_eq!(root.all("set-cookie"), vec!["upstream=1; Path=/"]);
    assert!(who.header("x-foo").is_none());
    jenkins.finish().await;
}
