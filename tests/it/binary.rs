//! The real binary, driven the way users drive it: `--help`, config errors
//! before any socket is bound, flag/environment/file precedence, and the
//! real `curl` running the tutorial flows against it.

use std::process::Stdio;

use crate::support::jenkins::MockJenkins;
use crate::support::proxy::{curl_async, curl_status, write_config, Binary, Extra, Secret};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";
const TOKEN: &str = "11c0ffee0ddba11deadbeef00112233";

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Binary::command();
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_documents_flags_and_environment() {
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for needle in [
        "--config",
        "--listen",
        "--upstream",
        "--user",
        "--password-file",
        "--password-env",
        "--api-token-file",
        "--api-token-env",
        "--crumb-mode",
        "--allow-remote",
        "CRUMB_PROXY_LISTEN",
        "CRUMB_PROXY_UPSTREAM",
        "CRUMB_PROXY_USER",
        "CRUMB_PROXY_CONFIG",
        "credentials.password_file",
        "listen.address",
    ] {
        assert!(out.contains(needle), "--help lacks {needle}:\n{out}");
    }
}

/// A config error exits with 78 (EX_CONFIG) and names key, value and fix,
/// before any socket is bound: the port named in the config stays free.
#[test]
fn config_errors_exit_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cases = [
        (
            format!("[listen]\naddress = \"0.0.0.0:{port}\"\n[upstream]\nurl = \"http://127.0.0.1:9/\"\n[credentials]\nusername = \"a\"\napi_token_env = \"HOME\"\n"),
            vec!["listen.address", "0.0.0.0", "allow_remote"],
        ),
        (
            format!("[listen]\naddress = \"127.0.0.1:{port}\"\n[upstream]\nurl = \"http://127.0.0.1:9/\"\n[credentials]\nusername = \"a\"\npassword = \"hunter2\"\n"),
            vec!["credentials.password", "password_file", "password_env"],
        ),
        (
            format!("[listen]\naddress = \"127.0.0.1:{port}\"\n[upstream]\nurl = \"ci.example.com\"\n[credentials]\nusername = \"a\"\napi_token_env = \"HOME\"\n"),
            vec!["upstream.url", "ci.example.com", "http"],
        ),
        (
            format!("[listen]\naddress = \"127.0.0.1:{port}\"\n[upstream]\nurl = \"http://127.0.0.1:9/\"\n[credentials]\nusername = \"a\"\npassword_file = \"/nonexistent/pw\"\n"),
            vec!["credentials.password_file", "/nonexistent/pw", "create it"],
        ),
    ];
    for (text, needles) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, &text).unwrap();
        let (code, _, err) = run(&["--config", path.to_str().unwrap()], &[]);
        assert_eq!(code, 78, "{err}");
        for needle in needles {
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
        assert!(
            !err.contains("hunter2"),
            "the inline secret is not echoed: {err}"
        );
        // Nothing was bound: the port can still be taken.
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("port still free");
    }
    let (code, _, err) = run(&["--config", "/nonexistent/crumb-proxy.toml"], &[]);
    assert_eq!(code, 78);
    assert!(err.contains("/nonexistent/crumb-proxy.toml"), "{err}");
}

/// Flags override `CRUMB_PROXY_*` variables, which override the file.
#[test]
fn flags_beat_environment_beat_file() {
    let dir = tempfile::tempdir().unwrap();
    let extra = Extra {
        crumb: "mode = \"always\"".into(),
        ..Extra::default()
    };
    let path = write_config(
        dir.path(),
        "http://127.0.0.1:9/",
        USER,
        Secret::Password(PASSWORD),
        &extra,
    );
    let path = path.to_str().unwrap();
    let (code, out, err) = run(&["--config", path, "--check-config"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("crumb mode Always") && out.contains("as alice (password)"),
        "{out}"
    );
    let env = [
        ("CRUMB_PROXY_CRUMB_MODE", "never"),
        ("CRUMB_PROXY_USER", "bob"),
    ];
    let (_, out, _) = run(&["--config", path, "--check-config"], &env);
    assert!(
        out.contains("crumb mode Never") && out.contains("as bob"),
        "{out}"
    );
    let (_, out, _) = run(
        &[
            "--config",
            path,
            "--check-config",
            "--crumb-mode",
            "auto",
            "--user",
            "carol",
        ],
        &env,
    );
    assert!(
        out.contains("crumb mode Auto") && out.contains("as carol"),
        "{out}"
    );
    // A secret source from the environment replaces the file's.
    let env = [
        ("CRUMB_PROXY_API_TOKEN_ENV", "JENKINS_TOKEN"),
        ("JENKINS_TOKEN", TOKEN),
    ];
    let (code, out, err) = run(&["--config", path, "--check-config"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(api token)"), "{out}");
    assert!(!out.contains(TOKEN) && !out.contains(PASSWORD));
}

/// The four tutorial flows with the real curl against the real binary:
/// no credentials, no crumb, no cookie jar on the client side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_runs_the_tutorial_flows() {
    let jenkins = MockJenkins::builder()
        .context_path("/jenkins")
        .user(USER, PASSWORD)
        .api_token(USER, TOKEN)
        .start()
        .await;
    let (proxy, _dir, _) = Binary::start_for(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &Extra::default(),
        &[],
    );
    let base = proxy.url("");

    // Flow 1: read the instance.
    let out = curl_async(&["--fail", &format!("{base}/api/json?pretty=true")]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"numExecutors\" : "));

    // Flows 2+3: a bare POST gets Jenkins' 201 and a Location on the proxy.
    let out = curl_async(&[
        "-X",
        "POST",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("{base}/job/sample-job/build"),
    ])
    .await;
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 201"), "{head}");
    assert!(
        head.contains(&format!("location: {base}/queue/item/")),
        "{head}"
    );
    assert!(!head.contains("set-cookie"), "{head}");

    // Flow 3 the tutorial way: the client fetches its own crumb with the
    // xpath helper and sends it; the proxy replaces it with its own.
    let out = curl_async(&[
        "--fail",
        &format!("{base}/crumbIssuer/api/xml?xpath=concat(//crumbRequestField,%22:%22,//crumb)"),
    ])
    .await;
    let header = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(header.starts_with("Jenkins-Crumb:"), "{header}");
    let status = curl_status(&[
        "-X",
        "POST",
        "-H",
        &header,
        &format!("{base}/job/sample-job/build"),
    ])
    .await;
    assert_eq!(status, "201");

    // A form post with a body, as `curl -d` sends it.
    let status = curl_status(&["-d", "delay=0sec", &format!("{base}/job/sample-job/build")]).await;
    assert_eq!(status, "201");
    assert_eq!(jenkins.accepted_triggers("sample-job"), 3);
    assert_eq!(
        jenkins.crumb_fetches(),
        2,
        "the proxy's one fetch plus the client's own"
    );

    let status = proxy.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");

    // Flow 4: an API token, through a second proxy: no crumb at all.
    let (proxy, _dir, _) = Binary::start_for(
        &jenkins.root_url(),
        USER,
        Secret::Token(TOKEN),
        &Extra::default(),
        &[],
    );
    let status = curl_status(&["-X", "POST", &proxy.url("/job/sample-job/build")]).await;
    assert_eq!(status, "201");
    assert_eq!(jenkins.crumb_fetches(), 2, "no fetch with a token");

    // One log line per request: method, path without query, status, crumb.
    let line = proxy.wait_for_log(|l| l.contains("path=\"/job/sample-job/build\""));
    for needle in ["method=POST", "status=201", "elapsed_ms=", "crumb=\"none\""] {
        assert!(line.contains(needle), "{line}");
    }
    let log = proxy.log_lines().join("\n");
    assert!(log.contains("listening addr="), "{log}");
    assert!(!log.contains(TOKEN));
    proxy.terminate();
    jenkins.finish().await;
}
