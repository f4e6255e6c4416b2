//! A real browser cannot use the proxy: headless Chromium (Debian's
//! `chromium`) loads a page from another loopback origin that tries a form
//! POST, a `no-cors` fetch POST, an `<img>` GET and a CORS fetch against the
//! proxy. The proxy refuses each of them, and the Jenkins double records
//! none. The test fails, never skips, when Chromium is missing.

use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::support::jenkins::MockJenkins;
use crate::support::proxy::{Binary, Extra, Secret};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";

fn attack_page(proxy: &str) -> String {
    format!(
        r#"<!doctype html>
<html><body>
<form id="f" method="POST" action="{proxy}/job/sample-job/buildWithParameters">
  <input name="BRANCH" value="evil">
</form>
<img src="{proxy}/job/sample-job/api/json">
<script>
async function attack() {{
  const tries = [
    fetch("{proxy}/job/sample-job/build", {{method: "POST", mode: "no-cors"}}),
    fetch("{proxy}/api/json", {{mode: "cors"}}),
  ];
  await Promise.allSettled(tries);
  await fetch("/done");
  document.getElementById("f").submit();
}}
attack();
</script>
</body></html>"#
    )
}

/// Serves the attack page and records which paths the browser asked for.
async fn serve_attack_page(page: String) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let page = page.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    record.lock().unwrap().push(req.uri().path().to_owned());
                    let body = if req.uri().path() == "/attack.html" {
                        page.clone()
                    } else {
                        String::new()
                    };
                    async move {
                        let resp = http::Response::builder()
                            .header("content-type", "text/html; charset=utf-8")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_cannot_drive_jenkins_through_the_proxy() {
    let jenkins = MockJenkins::builder().user(USER, PASSWORD).start().await;
    let (proxy, dir, _) = Binary::start_for(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &Extra::default(),
        &[],
    );
    let proxy_origin = format!("http://{}", proxy.listen);
    let (page_addr, page_seen) = serve_attack_page(attack_page(&proxy_origin)).await;

    let profile = dir.path().join("chromium-profile");
    let url = format!("http://{page_addr}/attack.html");
    let mut chromium = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("Chromium is required for this test (tests/run-all.sh installs Debian's chromium): {e}"));

    // The form POST is the page's last act; wait for the proxy to refuse it.
    let refused = |path: &'static str| {
        move |l: &str| {
            l.contains(&format!("path=\"{path}\"")) && l.contains("kind=\"browser-request\"")
        }
    };
    let wait = tokio::task::spawn_blocking({
        let log = proxy.log.clone();
        move || {
            for _ in 0..3000 {
                let done = log
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| refused("/job/sample-job/buildWithParameters")(l));
                if done {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        }
    });
    let form_refused = wait.await.unwrap();
    let _ = chromium.kill();
    let _ = chromium.wait();

    assert!(
        page_seen.lock().unwrap().contains(&"/done".to_owned()),
        "the page's script ran: {:?}",
        page_seen.lock().unwrap()
    );
    assert!(
        form_refused,
        "the form POST was refused: {:?}",
        proxy.log_lines()
    );
    for path in [
        "/job/sample-job/api/json",
        "/job/sample-job/build",
        "/api/json",
        "/job/sample-job/buildWithParameters",
    ] {
        let line = proxy.wait_for_log(refused(path));
        assert!(line.contains("status=403"), "{line}");
    }
    // The readiness probe's `whoAmI` is the proxy's own request; nothing
    // else may have reached Jenkins.
    let reached: Vec<String> = jenkins
        .requests()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .filter(|r| r != "GET /whoAmI/api/json")
        .collect();
    assert!(reached.is_empty(), "Jenkins saw {reached:?}");
    assert_eq!(jenkins.accepted_triggers("sample-job"), 0);
    proxy.terminate();
    jenkins.finish().await;
}
