//! Real Jenkins clients, unchanged and with no credentials configured, through
//! the real `crumb-proxy` binary in front of the Jenkins double with password
//! authentication (so every POST needs a session-bound crumb, behaviour §5,
//! §6) under the context path `/jenkins`.
//!
//! Each test runs one client program from `tests/clients/` (behaviour §8 and
//! §12: curl and wget, python-jenkins, jenkinsapi, api4jenkins,
//! jenkins-job-builder, the npm `jenkins` client) against its own double and
//! proxy, and checks both sides:
//! - the client's: the program exits 0 only if every answer was the one
//!   Jenkins gives, and reports what it saw in a `@@result` line;
//! - Jenkins': every request carried the proxy's credentials and nothing of
//!   the client's (no cookie, no client-fetched crumb), every POST a crumb
//!   valid for the session it came with, each trigger made exactly one
//!   accepted trigger and the builds the client reported.
//!
//! Mid-run each program asks for a session expiry (`@@expire-sessions`, as
//! Jenkins' 30-minute idle timeout would do, behaviour §3.2); its next POST
//! then meets the stale crumb, and the proxy must fetch a new one and replay
//! the request, without the client noticing.
//!
//! The clients are installed at pinned versions by `tests/clients/install.sh`
//! (idempotent, run once per test process from here): missing tools or a
//! failed install fail these tests, they never skip. `tests/clients/run.sh`
//! installs and runs only these tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use http::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

use crate::support::jenkins::{MockJenkins, ParamValue, Recorded, PRE_2543_VERSION, SAMPLE_JOB};
use crate::support::proxy::{Binary, Extra, Secret};

const USER: &str = "alice";
const PASSWORD: &str = "clients' secret password";
/// The client address the proxy tells Jenkins on every request.
const PROXY_FORWARDED_FOR: &str = "127.0.0.1";
/// A client program that runs longer than this has hung.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(150);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn venv_python() -> PathBuf {
    repo().join("target/clients-venv/bin/python")
}

/// Runs `tests/clients/install.sh` once per test process; every client test
/// fails with its output when it fails.
fn install() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = INSTALLED.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(repo().join("tests/clients/install.sh"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run tests/clients/install.sh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "tests/clients/install.sh failed ({}); the client tests need it:\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(message) = outcome {
        panic!("{message}");
    }
}

/// The double every client meets: a password user, CSRF on, the context
/// path `/jenkins`, short quiet periods and builds so that runs stay quick,
/// and the plugin list jenkins-job-builder reads.
async fn jenkins() -> MockJenkins {
    MockJenkins::builder()
        .context_path("/jenkins")
        .user(USER, PASSWORD)
        // The LTS line whose crumbs hash the client address: every crumb
        // the clients' requests carry must be the one the proxy fetched
        // with its own `X-Forwarded-For`.
        .version(PRE_2543_VERSION)
        .quiet_period(Duration::from_millis(600))
        .build_duration(Duration::from_millis(600))
        .plugin("matrix-project", "1.20")
        .plugin("script-security", "1.78")
        .start()
        .await
}

/// The proxy's `Authorization` for every request it forwards.
fn proxy_authorization() -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    format!("Basic {encoded}")
}

/// A client program to run: an interpreter and a script of `tests/clients`.
#[derive(Debug)]
struct Program {
    name: &'static str,
    interpreter: PathBuf,
    script: PathBuf,
}

impl Program {
    /// A Python script, run with the virtualenv's python.
    fn python(name: &'static str) -> Self {
        Self {
            name,
            interpreter: venv_python(),
            script: repo().join("tests/clients").join(name),
        }
    }

    fn shell(name: &'static str) -> Self {
        Self {
            name,
            interpreter: PathBuf::from("bash"),
            script: repo().join("tests/clients").join(name),
        }
    }

    /// A script next to `node_modules`, where `require` finds the pinned client.
    fn node(name: &'static str) -> Self {
        Self {
            name,
            interpreter: PathBuf::from("node"),
            script: repo().join("tests/clients/node").join(name),
        }
    }
}

/// What a client run left: its `@@result`, and where its requests start in
/// the double's record.
#[derive(Debug)]
struct Run {
    result: Value,
    first_request: usize,
}

/// Runs `program` with the proxy's URL, answering its `@@expire-sessions`
/// by expiring every session of `jenkins`. Fails the test when the program
/// fails, hangs, or reports no result.
async fn run_client(jenkins: &MockJenkins, proxy_url: &str, program: &Program) -> Run {
    let first_request = jenkins.requests().len();
    let work = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(&program.interpreter)
        .arg(&program.script)
        .current_dir(work.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", work.path())
        .env("LANG", "C.UTF-8")
        .env("PYTHONPATH", repo().join("tests/clients"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("CRUMB_PROXY_URL", proxy_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.name));
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut output = Vec::new();
    let mut result = None;
    let mut expiries = 0;
    let conversation = async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            if line == "@@expire-sessions" {
                jenkins.expire_sessions();
                expiries += 1;
                stdin.write_all(b"expired\n").await.unwrap();
                stdin.flush().await.unwrap();
            } else if let Some(json) = line.strip_prefix("@@result ") {
                result =
                    Some(serde_json::from_str::<Value>(json).unwrap_or_else(|e| {
                        panic!("{}: bad @@result ({e}): {json}", program.name)
                    }));
            }
            output.push(line);
        }
        child.wait().await.unwrap()
    };
    let status = tokio::time::timeout(CLIENT_TIMEOUT, conversation).await;
    let stderr_text = stderr_task.await.unwrap_or_default();
    let transcript = format!(
        "{} output:\n{}\nstderr:\n{stderr_text}",
        program.name,
        output.join("\n")
    );
    let status = status.unwrap_or_else(|_| panic!("{} hung; {transcript}", program.name));
    assert!(
        status.success(),
        "{} exited {status}; {transcript}",
        program.name
    );
    assert_eq!(expiries, 1, "one forced expiry per client; {transcript}");
    println!("{transcript}");
    Run {
        result: result.unwrap_or_else(|| panic!("no @@result; {transcript}")),
        first_request,
    }
}

/// Which requests the proxy made on its own: its crumb fetches (no
/// `X-Forwarded-Host`, it is nobody's request), the readiness probe's
/// `whoAmI` and its root-URL question.
fn is_proxy_own(r: &Recorded) -> bool {
    !r.headers.contains_key("x-forwarded-host")
        || r.path.ends_with("/whoAmI/api/json")
        || r.query.as_deref() == Some("tree=url")
}

fn is_crumb_fetch(r: &Recorded) -> bool {
    r.method == Method::GET && r.path.ends_with("/crumbIssuer/api/json")
}

fn header<'a>(r: &'a Recorded, name: &str) -> Option<&'a str> {
    r.headers.get(name).map(|v| v.to_str().unwrap())
}

/// The session id in the `Cookie` of `r`, if it sent Jenkins' session cookie.
fn cookie_session(jenkins: &MockJenkins, r: &Recorded) -> Option<String> {
    let prefix = format!("{}=", jenkins.cookie_name());
    header(r, "cookie")?
        .split(';')
        .map(str::trim)
        .find_map(|c| c.strip_prefix(&prefix))
        .map(|v| v.strip_suffix(".node0").unwrap_or(v).to_owned())
}

/// What every client run must have left at Jenkins, whatever the client.
fn assert_jenkins_side(jenkins: &MockJenkins, run: &Run, client: &str) {
    let all = jenkins.requests();
    let seen = &all[run.first_request..];
    let context = |r: &Recorded| {
        format!(
            "{client}: {} {}{} -> {}",
            r.method,
            r.path,
            r.query
                .as_deref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default(),
            r.status
        )
    };
    let authorization = proxy_authorization();
    for r in seen {
        assert_eq!(r.user.as_deref(), Some(USER), "{}", context(r));
        assert!(!r.via_api_token, "{}", context(r));
        assert_eq!(
            header(r, "authorization"),
            Some(authorization.as_str()),
            "{}: the proxy's credentials, never a client's",
            context(r)
        );
        assert_ne!(r.status, StatusCode::UNAUTHORIZED, "{}", context(r));
        assert!(
            r.path.starts_with("/jenkins/"),
            "{}: below the context path",
            context(r)
        );
    }

    // Sessions of the proxy's own crumb fetches, and of those the client made.
    let proxy_sessions: Vec<String> = seen
        .iter()
        .filter(|r| is_crumb_fetch(r) && is_proxy_own(r))
        .filter_map(|r| r.session.clone())
        .collect();
    let client_sessions: Vec<String> = seen
        .iter()
        .filter(|r| is_crumb_fetch(r) && !is_proxy_own(r))
        .filter_map(|r| r.session.clone())
        .collect();
    let client_crumbs: Vec<String> = client_sessions
        .iter()
        .map(|s| jenkins.crumb_for_ip(USER, PROXY_FORWARDED_FOR, s))
        .chain(
            run.result["client_crumbs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_owned)),
        )
        .collect();
    assert_eq!(
        proxy_sessions.len(),
        2,
        "{client}: the proxy fetched a crumb for its first POST and once more after the expiry"
    );

    let field = jenkins.crumb_field().to_ascii_lowercase();
    let mut rejected = 0;
    for (i, r) in seen.iter().enumerate() {
        if is_proxy_own(r) {
            continue;
        }
        if r.method != Method::POST {
            assert!(
                header(r, "cookie").is_none() && header(r, &field).is_none(),
                "{}: a client's cookie or crumb reached Jenkins",
                context(r)
            );
            continue;
        }
        let crumb =
            header(r, &field).unwrap_or_else(|| panic!("{}: a POST without a crumb", context(r)));
        let session = cookie_session(jenkins, r)
            .unwrap_or_else(|| panic!("{}: a POST without the session cookie", context(r)));
        assert!(
            proxy_sessions.contains(&session),
            "{}: the session of one of the proxy's crumb fetches",
            context(r)
        );
        assert!(
            !client_sessions.contains(&session) && !client_crumbs.iter().any(|c| c == crumb),
            "{}: a crumb or session the client fetched reached Jenkins",
            context(r)
        );
        assert_eq!(
            crumb,
            jenkins.crumb_for_ip(USER, PROXY_FORWARDED_FOR, &session),
            "{}: the crumb belongs to the session it came with",
            context(r)
        );
        if r.status == StatusCode::FORBIDDEN {
            // The forced expiry: the proxy fetches a new crumb and replays once.
            rejected += 1;
            let fetch = &seen[i + 1];
            let retry = &seen[i + 2];
            assert!(
                is_crumb_fetch(fetch) && is_proxy_own(fetch),
                "{}: a crumb fetch follows the rejection, not {}",
                context(r),
                context(fetch)
            );
            assert_eq!(
                (&retry.method, &retry.path, &retry.query, retry.body_digest),
                (&r.method, &r.path, &r.query, r.body_digest),
                "{}: the same request is replayed",
                context(r)
            );
            assert_ne!(retry.status, StatusCode::FORBIDDEN, "{}", context(retry));
        }
    }
    assert_eq!(
        rejected, 1,
        "{client}: exactly one POST met the expired session"
    );

    // One accepted trigger per trigger the client made, and the builds it saw.
    if let Some(triggers) = run.result["triggers"].as_object() {
        for (job, count) in triggers {
            assert_eq!(
                jenkins.accepted_triggers(job) as u64,
                count.as_u64().unwrap(),
                "{client}: accepted triggers of {job}"
            );
        }
    }
    let reported = run.result["builds"].as_array().cloned().unwrap_or_default();
    let mut jobs: Vec<&str> = reported
        .iter()
        .map(|b| b["job"].as_str().unwrap())
        .collect();
    jobs.sort_unstable();
    jobs.dedup();
    for job in jobs {
        let builds = jenkins.builds(job);
        let mine: Vec<&Value> = reported.iter().filter(|b| b["job"] == job).collect();
        assert_eq!(
            builds.len(),
            mine.len(),
            "{client}: the builds of {job} are exactly those the client saw: {builds:?}"
        );
        for b in mine {
            let number = b["number"].as_u64().unwrap();
            let build = builds
                .iter()
                .find(|x| u64::from(x.number) == number)
                .unwrap_or_else(|| panic!("{client}: no build {job} #{number}"));
            assert_eq!(
                build.queue_id,
                b["queue_id"].as_u64().unwrap(),
                "{client}: {job} #{number}"
            );
            assert_eq!(build.user, USER);
            for (name, want) in b["params"].as_object().into_iter().flatten() {
                let got = build.params.iter().find(|p| p.name() == name);
                let matches = match (got, want) {
                    (Some(ParamValue::Str { value, .. }), Value::String(w)) => value == w,
                    (Some(ParamValue::Bool { value, .. }), Value::Bool(w)) => value == w,
                    (Some(ParamValue::File { len, sha256, .. }), Value::Object(w)) => {
                        Some(*len) == w["len"].as_u64()
                            && Some(sha256.as_str()) == w["sha256"].as_str()
                    }
                    _ => false,
                };
                assert!(
                    matches,
                    "{client}: {job} #{number} parameter {name}: Jenkins has {got:?}, the client sent {want}"
                );
            }
        }
    }

    // The configurations the client last posted are those Jenkins kept.
    for (job, xml) in run.result["configs"].as_object().into_iter().flatten() {
        let want = xml.as_str().unwrap();
        let posted = seen
            .iter()
            .filter(|r| r.method == Method::POST && r.status == StatusCode::OK)
            .filter(|r| {
                r.path == format!("/jenkins/job/{job}/config.xml")
                    || (r.path == "/jenkins/createItem"
                        && r.query.as_deref() == Some(&format!("name={job}")))
            })
            .last()
            .unwrap_or_else(|| panic!("{client}: no configuration of {job} was posted"));
        assert_eq!(
            String::from_utf8_lossy(&posted.body),
            want,
            "{client}: the configuration of {job}"
        );
        if let Some(kept) = jenkins.job_config(job) {
            assert_eq!(String::from_utf8_lossy(&kept), want, "{client}: {job}");
        }
    }
    let names = jenkins.job_names();
    for job in run.result["deleted"].as_array().into_iter().flatten() {
        let job = job.as_str().unwrap();
        assert!(
            !names.iter().any(|n| n == job),
            "{client}: {job} was deleted"
        );
    }
    assert!(names.iter().any(|n| n == SAMPLE_JOB));
}

/// Starts a double and the real proxy, runs the client, checks both sides,
/// then stops the proxy (which checks its TRACE log for secrets) and the
/// double (which fails on any request it did not expect).
async fn client_round(program: Program) -> Run {
    install();
    let jenkins = jenkins().await;
    let (proxy, _dir, _config) = Binary::start_for(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &Extra::default(),
        &[],
    );
    let url = proxy.url("/");
    let run = run_client(&jenkins, &url, &program).await;
    println!("{}: Jenkins saw", program.name);
    for r in &jenkins.requests()[run.first_request..] {
        println!(
            "  {} {} {}{}{}",
            r.status.as_u16(),
            r.method,
            r.path,
            r.query
                .as_deref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default(),
            if is_proxy_own(r) {
                "   (the proxy's own)"
            } else {
                ""
            }
        );
    }
    assert_jenkins_side(&jenkins, &run, program.name);
    let status = proxy.terminate();
    assert!(status.success(), "the proxy exited {status}");
    jenkins.finish().await;
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_jenkins() {
    client_round(Program::python("python_jenkins.py")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jenkinsapi() {
    client_round(Program::python("jenkinsapi_client.py")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api4jenkins() {
    client_round(Program::python("api4jenkins_client.py")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jenkins_job_builder() {
    client_round(Program::python("jjb_client.py")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_jenkins() {
    client_round(Program::node("npm_jenkins.js")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl() {
    client_round(Program::shell("curl.sh")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wget() {
    client_round(Program::shell("wget.sh")).await;
}

// --- The double's routes that the clients need, pinned to behaviour §7 ---
//
// Talking to the double directly, with an API token (no crumb needed).
// Expected bodies are written out literally, so a drifting template fails.

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

async fn direct() -> (MockJenkins, crate::support::proxy::Http) {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .api_token(USER, TOKEN)
        .quiet_period(Duration::from_millis(300))
        // Long enough to see it running even on a loaded machine.
        .build_duration(Duration::from_millis(1500))
        .start()
        .await;
    (jenkins, crate::support::proxy::Http::new())
}

async fn call(
    http: &crate::support::proxy::Http,
    jenkins: &MockJenkins,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> crate::support::proxy::Reply {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{TOKEN}"));
    let auth = format!("Basic {encoded}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    http.send(crate::support::proxy::request(
        method,
        &format!("{}{path}", jenkins.root_url()),
        &all,
        bytes::Bytes::from_static(body),
    ))
    .await
}

const XML: &[u8] = b"<?xml version='1.1' encoding='UTF-8'?>\n<project><properties>\
<hudson.model.ParametersDefinitionProperty><parameterDefinitions>\
<hudson.model.StringParameterDefinition><name>WHO</name><defaultValue>world</defaultValue>\
</hudson.model.StringParameterDefinition><hudson.model.FileParameterDefinition><name>f</name>\
</hudson.model.FileParameterDefinition></parameterDefinitions>\
</hudson.model.ParametersDefinitionProperty></properties><builders><hudson.tasks.Shell>\
<command>echo \"hello, $WHO\"</command></hudson.tasks.Shell></builders></project>";

/// Behaviour §7.6: `createItem` and its `Failure`s, `doDelete`.
#[tokio::test]
async fn double_creates_and_deletes_jobs() {
    let (jenkins, http) = direct().await;
    let xml = [("content-type", "application/xml")];
    let fails = [
        ("createItem?name=x", &[][..], "No Content-Type header set"),
        ("createItem", &xml[..], "Query parameter 'name' is required"),
        (
            "createItem?name=a%2Fb",
            &xml[..],
            "?/? is an unsafe character",
        ),
        (
            "createItem?name=sample-job",
            &xml[..],
            "A job already exists with the name ?sample-job?",
        ),
    ];
    for (path, headers, message) in fails {
        let reply = call(&http, &jenkins, Method::POST, path, headers, XML).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(reply.header("x-error"), Some(message), "{path}");
        assert!(
            reply.header("set-cookie").is_some(),
            "error.jelly is a layout page"
        );
    }
    let reply = call(
        &http,
        &jenkins,
        Method::POST,
        "createItem?name=x",
        &xml,
        XML,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.is_empty());
    assert_eq!(jenkins.job_config("x").as_deref(), Some(XML));
    let reply = call(&http, &jenkins, Method::GET, "job/x/config.xml", &[], b"").await;
    assert_eq!(reply.body.as_ref(), XML);
    let reply = call(&http, &jenkins, Method::GET, "job/x/doDelete", &[], b"").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    let reply = call(&http, &jenkins, Method::POST, "job/x/doDelete", &[], b"").await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.header("location"), Some(jenkins.root_url().as_str()));
    let reply = call(&http, &jenkins, Method::GET, "job/x/api/json", &[], b"").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(jenkins.job_names(), vec![SAMPLE_JOB.to_owned()]);
    jenkins.finish().await;
}

/// Behaviour §7.2-§7.4: parameters (a file in multipart, strings from the
/// query), the queue item's `executable`, the build API while it runs and
/// after, `consoleText` without console notes, `progressiveText` sizes.
#[tokio::test]
async fn double_runs_builds_with_parameters() {
    let (jenkins, http) = direct().await;
    let xml = [("content-type", "application/xml")];
    call(
        &http,
        &jenkins,
        Method::POST,
        "createItem?name=p",
        &xml,
        XML,
    )
    .await;
    let reply = call(&http, &jenkins, Method::POST, "job/p/build", &[], b"").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.text().contains("Nothing is submitted"),
        "{}",
        reply.text()
    );
    let multipart = [("content-type", "multipart/form-data; boundary=XyZ")];
    let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"WHO\"\r\n\r\nignored\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\
Content-Type: text/plain\r\n\r\nabc\r\n--XyZ--\r\n";
    let reply = call(
        &http,
        &jenkins,
        Method::POST,
        "job/p/buildWithParameters?WHO=you",
        &multipart,
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let location = format!("{}queue/item/1/", jenkins.root_url());
    assert_eq!(reply.header("location"), Some(location.as_str()));
    let reply = call(&http, &jenkins, Method::GET, "queue/item/1/", &[], b"").await;
    assert_eq!(
        reply.status,
        StatusCode::NOT_FOUND,
        "a queue item has no page"
    );

    let item = loop {
        let reply = call(
            &http,
            &jenkins,
            Method::GET,
            "queue/item/1/api/json",
            &[],
            b"",
        )
        .await;
        let json: Value = serde_json::from_slice(&reply.body).unwrap();
        if json["_class"] == "hudson.model.Queue$LeftItem" {
            break json;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        item["executable"],
        serde_json::json!({
            "_class": "hudson.model.FreeStyleBuild",
            "number": 1,
            "url": format!("{}job/p/1/", jenkins.root_url()),
        })
    );
    let running = call(
        &http,
        &jenkins,
        Method::GET,
        "job/p/1/api/json?tree=building,result,number",
        &[],
        b"",
    )
    .await;
    assert_eq!(
        running.text(),
        r#"{"_class":"hudson.model.FreeStyleBuild","building":true,"number":1,"result":null}"#
    );
    let progressive = call(
        &http,
        &jenkins,
        Method::GET,
        "job/p/1/logText/progressiveText",
        &[],
        b"",
    )
    .await;
    assert_eq!(progressive.header("x-more-data"), Some("true"));
    assert!(!progressive.text().contains("Finished"));

    while !call(
        &http,
        &jenkins,
        Method::GET,
        "job/p/1/api/json?tree=building",
        &[],
        b"",
    )
    .await
    .text()
    .contains("\"building\":false")
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = call(
        &http,
        &jenkins,
        Method::GET,
        "job/p/lastBuild/api/python?tree=building,result,actions[parameters[name,value]]",
        &[],
        b"",
    )
    .await;
    assert_eq!(
        done.header("content-type"),
        Some("text/x-python;charset=UTF-8")
    );
    assert_eq!(
        done.text(),
        r#"{"_class":"hudson.model.FreeStyleBuild","actions":[{"_class":"hudson.model.ParametersAction","parameters":[{"_class":"hudson.model.StringParameterValue","name":"WHO","value":"you"},{"_class":"hudson.model.FileParameterValue","name":"f"}]},{"_class":"hudson.model.CauseAction"},{}],"building":False,"result":"SUCCESS"}"#
    );
    let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let console = call(
        &http,
        &jenkins,
        Method::GET,
        "job/p/1/consoleText",
        &[],
        b"",
    )
    .await;
    assert_eq!(
        console.text(),
        format!(
            "Started by user alice\nRunning as SYSTEM\nBuilding in workspace /var/jenkins_home/workspace/p\n\
             WHO=you\nf=a.txt (3 bytes, sha256 {sha})\n[p] $ /bin/sh -xe /tmp/jenkins10010.sh\n\
             + echo \"hello, $WHO\"\nhello, you\nFinished: SUCCESS\n"
        )
    );
    let progressive = call(
        &http,
        &jenkins,
        Method::POST,
        "job/p/1/logText/progressiveText",
        &[("content-type", "application/x-www-form-urlencoded")],
        b"start=0",
    )
    .await;
    assert_eq!(progressive.text(), console.text());
    assert!(progressive.header("x-more-data").is_none());
    let size: usize = progressive.header("x-text-size").unwrap().parse().unwrap();
    assert!(
        size > console.body.len(),
        "the raw log has the console note"
    );

    let builds = jenkins.builds("p");
    assert_eq!(builds.len(), 1);
    assert_eq!(
        builds[0].params[1],
        ParamValue::File {
            name: "f".into(),
            file_name: "a.txt".into(),
            len: 3,
            sha256: sha.into(),
        }
    );
    let job = call(&http, &jenkins, Method::GET, "job/p/api/json?tree=color,builds[number],lastBuild[number],property[parameterDefinitions[name,type]]", &[], b"").await;
    assert_eq!(
        job.text(),
        r#"{"_class":"hudson.model.FreeStyleProject","builds":[{"_class":"hudson.model.FreeStyleBuild","number":1}],"color":"blue","lastBuild":{"_class":"hudson.model.FreeStyleBuild","number":1},"property":[{"_class":"hudson.model.ParametersDefinitionProperty","parameterDefinitions":[{"_class":"hudson.model.StringParameterDefinition","name":"WHO","type":"StringParameterDefinition"},{"_class":"hudson.model.FileParameterDefinition","name":"f","type":"FileParameterDefinition"}]}]}"#
    );
    let root = call(
        &http,
        &jenkins,
        Method::GET,
        "api/json?tree=jobs[name]{1,}",
        &[],
        b"",
    )
    .await;
    assert_eq!(
        root.text(),
        r#"{"_class":"hudson.model.Hudson","jobs":[{"_class":"hudson.model.FreeStyleProject","name":"sample-job"}]}"#
    );
    let sample = call(
        &http,
        &jenkins,
        Method::POST,
        "job/sample-job/buildWithParameters",
        &[],
        b"",
    )
    .await;
    assert_eq!(
        sample.status,
        StatusCode::CREATED,
        "declared jobs take any parameters"
    );
    call(
        &http,
        &jenkins,
        Method::POST,
        "createItem?name=plain",
        &xml,
        b"<project/>",
    )
    .await;
    let plain = call(
        &http,
        &jenkins,
        Method::POST,
        "job/plain/buildWithParameters",
        &[],
        b"",
    )
    .await;
    assert_eq!(plain.status, StatusCode::BAD_REQUEST);
    assert!(plain.text().contains("plain is not parameterized"));
    jenkins.finish().await;
}

// --- Proxy findings ---

/// The tutorial's crumb command (behaviour §12 flow 3; also quoted in
/// python-jenkins' `check_jenkinsfile_syntax`) writes the XPath's quotes raw:
///
/// ```text
/// curl 'http://127.0.0.1:8181/crumbIssuer/api/xml?xpath=concat(//crumbRequestField,":",//crumb)'
/// ```
///
/// Jenkins (Jetty) answers it. The proxy answers `400 Bad Request` with an
/// empty body and logs nothing: hyper's request-line parser (httparse)
/// refuses `"` (and `<`, `>`) in the request target before the proxy's code
/// runs. Fails until `src/` accepts such targets (e.g. by percent-encoding
/// those bytes before hyper parses the request line); the client suite
/// sends `%22` meanwhile. The double is hyper-based too, so the proxy must
/// forward the target percent-encoded for this test to pass.
#[tokio::test]
#[ignore = "proxy finding: a raw `\"` in the request target gets a bare 400 (see the doc comment)"]
async fn tutorial_xpath_with_raw_quotes() {
    use tokio::net::TcpStream;
    let jenkins = jenkins().await;
    let proxy =
        crate::support::proxy::Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD))
            .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"GET /crumbIssuer/api/xml?xpath=concat(//crumbRequestField,\":\",//crumb) HTTP/1.1\r\n\
              Host: 127.0.0.1\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("Jenkins-Crumb:"), "{response}");
    proxy.stop().await;
    jenkins.finish().await;
}
