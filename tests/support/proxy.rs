//! Running crumb-proxy in tests: in-process (`Proxy::start`, through the
//! library's `serve`) or as the real binary (`Binary::spawn`), plus a small
//! HTTP client that records what came back.

#![allow(dead_code, unreachable_pub)]
// Test support: a failed set-up step should fail the test loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::logs;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = BoxBody<Bytes, BoxError>;

/// The secret the proxy is configured with.
#[derive(Debug, Clone, Copy)]
pub enum Secret<'a> {
    Password(&'a str),
    Token(&'a str),
}

/// Extra lines for the config's sections.
#[derive(Debug, Default, Clone)]
pub struct Extra {
    pub listen: String,
    pub upstream: String,
    pub crumb: String,
    /// Whole sections appended at the end (`[policy]`, `[[policy.rules]]`,
    /// `[limits]`, `[shutdown]`).
    pub tail: String,
    /// In-process proxies: serve `/livez`, `/readyz`, `/metrics` too (this
    /// also starts the readiness probe's `whoAmI` requests).
    pub health: bool,
}

/// Writes a config for `upstream` (and its secret file) into `dir`.
pub fn write_config(
    dir: &Path,
    upstream: &str,
    user: &str,
    secret: Secret<'_>,
    extra: &Extra,
) -> PathBuf {
    let (key, value) = match secret {
        Secret::Password(p) => ("password_file", p),
        Secret::Token(t) => ("api_token_file", t),
    };
    logs::register(user, value);
    // A trailing newline, as `echo` writes it: not part of the secret.
    let secret = dir.join("secret");
    std::fs::write(&secret, format!("{value}\n")).unwrap();
    set_mode(&secret, 0o600);
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n{}\n\
         [upstream]\nurl = \"{upstream}\"\n{}\n\
         [credentials]\nusername = \"{user}\"\n{key} = \"secret\"\n\
         [crumb]\n{}\n\
         [health]\naddress = \"127.0.0.1:0\"\n{}\n",
        extra.listen, extra.upstream, extra.crumb, extra.tail
    );
    let path = dir.join("crumb-proxy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The proxy running in this process on 127.0.0.1:0.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    pub health_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), crumb_proxy::ServeError>>>,
    _dir: tempfile::TempDir,
}

impl Proxy {
    pub async fn start(upstream: &str, user: &str, secret: Secret<'_>) -> Self {
        Self::start_with(upstream, user, secret, &Extra::default()).await
    }

    pub async fn start_with(upstream: &str, user: &str, secret: Secret<'_>, extra: &Extra) -> Self {
        logs::install();
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), upstream, user, secret, extra);
        let config = crumb_proxy::Config::load(Some(&path), &crumb_proxy::Overrides::default())
            .expect("test config is valid");
        // Bound before the spawn: clients may connect at once.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (health, health_addr) = if extra.health {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            (Some(l), Some(a))
        } else {
            (None, None)
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let app = crumb_proxy::App::new(config).expect("the upstream client builds");
        let task = tokio::spawn(async move {
            app.serve_with_health(listener, health, async move {
                let _ = stopped.await;
            })
            .await?;
            Ok::<(), crumb_proxy::ServeError>(())
        });
        Self {
            addr,
            health_addr,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn health_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.health_addr.expect("started with health")
        )
    }

    /// The directory holding this proxy's config and secret file.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Signals shutdown without waiting for the drain.
    pub fn signal_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Signals shutdown, waits for the server to finish draining, and
    /// checks that nothing logged so far contains a secret.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        logs::assert_log_clean();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A response read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// A plain HTTP/1.1 client without credentials, as a legacy script is.
#[derive(Debug, Clone)]
pub struct Http {
    client: Client<HttpConnector, TestBody>,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    pub fn new() -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build_http();
        Self { client }
    }

    pub async fn send(&self, req: Request<TestBody>) -> Reply {
        self.try_send(req).await.expect("request reached the proxy")
    }

    /// As [`Http::send`], with a broken connection as an error.
    pub async fn try_send(&self, req: Request<TestBody>) -> Result<Reply, String> {
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .expect("response within 30 s")
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e:?}"))?
            .to_bytes();
        let kind = parts.headers.get("x-crumb-proxy-error");
        if kind.is_some_and(|k| k != "crumb-rejected-not-replayable") {
            logs::assert_clean(
                "a proxy-made response body",
                &String::from_utf8_lossy(&body),
            );
        }
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// The response head, with the body left to stream.
    pub async fn start(&self, req: Request<TestBody>) -> http::Response<hyper::body::Incoming> {
        self.client
            .request(req)
            .await
            .expect("request reached the proxy")
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send(request(Method::GET, url, &[], Bytes::new()))
            .await
    }

    pub async fn post(&self, url: &str) -> Reply {
        self.send(request(Method::POST, url, &[], Bytes::new()))
            .await
    }
}

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A request with extra headers and a fixed body.
pub fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<TestBody> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(full(body)).unwrap()
}

/// The real `crumb-proxy` binary, started with `args`, its stderr collected.
#[derive(Debug)]
pub struct Binary {
    pub child: Child,
    /// What the binary logged as its listening address: `127.0.0.1:PORT`
    /// or `unix:/path`.
    pub listen: String,
    /// The health listener's address, once logged.
    pub health: Arc<Mutex<Option<String>>>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    pub fn command() -> Command {
        Command::new(env!("CARGO_BIN_EXE_crumb-proxy"))
    }

    /// Writes a config for `upstream` into a new temporary directory and
    /// starts the binary with it (plus `args`).
    pub fn start_for(
        upstream: &str,
        user: &str,
        secret: Secret<'_>,
        extra: &Extra,
        args: &[&str],
    ) -> (Self, tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), upstream, user, secret, extra);
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        (Self::spawn(&all), dir, config)
    }

    /// Starts the binary and waits for its `listening addr=…` line.
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_env(args, &[])
    }

    /// Starts the binary with logging at TRACE (unless `env` sets
    /// `RUST_LOG`); its log is checked for secrets when it is terminated.
    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Self::command();
        cmd.args(args)
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start crumb-proxy");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        let health = Arc::new(Mutex::new(None));
        let health_sink = health.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Text (`listening addr=…`) or JSON (`"message":"listening",
                // "addr":"…"`) log lines.
                let json_addr = || {
                    line.split("\"addr\":\"")
                        .nth(1)
                        .and_then(|r| r.split('"').next())
                        .map(str::to_owned)
                };
                if line.contains("\"message\":\"health listening\"") {
                    *health_sink.lock().unwrap() = json_addr();
                } else if line.contains("\"message\":\"listening\"") {
                    if let (Some(tx), Some(addr)) = (tx.take(), json_addr()) {
                        let _ = tx.send(addr);
                    }
                } else if let Some(rest) = line.split(" health listening addr=").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    *health_sink.lock().unwrap() = Some(addr);
                } else if let Some(rest) = line.split(" listening addr=").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let listen = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "crumb-proxy did not report listening; log: {:?}",
                    log.lock().unwrap()
                );
            }
        };
        Self {
            child,
            listen,
            health,
            log,
        }
    }

    /// The health listener's address, when it logged one.
    pub fn health_url(&self, path: &str) -> String {
        let addr = self
            .health
            .lock()
            .unwrap()
            .clone()
            .expect("a health listener");
        format!("http://{addr}{path}")
    }

    /// The TCP address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.listen.parse().expect("a TCP listener")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// Peak resident memory of the process so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// The first log line matching `pred`, waiting up to 10 s for it (the
    /// line is written before the response, but read by another thread).
    pub fn wait_for_log(&self, pred: impl Fn(&str) -> bool) -> String {
        for _ in 0..500 {
            if let Some(line) = self.log_lines().into_iter().find(|l| pred(l)) {
                return line;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no such log line: {:?}", self.log_lines());
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, wait for the exit status, then check its log for secrets.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().unwrap();
        // The reader thread may still be draining the pipe; give it a moment.
        for _ in 0..50 {
            if self
                .log_lines()
                .iter()
                .any(|l| l.contains("all connections closed") || l.contains("drain deadline"))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        logs::assert_clean("the binary's TRACE log", &self.log_lines().join("\n"));
        status
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What Jenkins received on behalf of clients: everything but the proxy's
/// own questions (the readiness probe's `whoAmI`, and `api/json?tree=url`
/// that learns Jenkins' configured root URL once).
pub fn client_requests(
    jenkins: &crate::support::jenkins::MockJenkins,
) -> Vec<crate::support::jenkins::Recorded> {
    jenkins
        .requests()
        .into_iter()
        .filter(|r| !r.path.ends_with("/whoAmI/api/json") && r.query.as_deref() != Some("tree=url"))
        .collect()
}

/// Runs the real `curl` off the async runtime.
pub async fn curl_async(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args)
    })
    .await
    .unwrap()
}

/// Runs curl with `args` and returns only the HTTP status it got.
pub async fn curl_status(args: &[&str]) -> String {
    let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    all.extend_from_slice(args);
    let out = curl_async(&all).await;
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the real `curl`; fails the test (never skips) when curl is missing.
pub fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "60"])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("curl is required for this test (tests/run-all.sh installs it): {e}")
        })
}
