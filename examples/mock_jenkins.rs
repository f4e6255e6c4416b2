//! A stand-in Jenkins for trying crumb-proxy without a Jenkins.
//!
//! Runs the test double of the integration tests (`tests/support/jenkins.rs`) as a program:
//!
//! ```text
//! cargo run --example mock_jenkins -- [--listen 127.0.0.1:8180] [--context-path /jenkins]
//!     [--user alice] [--password-file PATH] [--api-token-file PATH]
//!     [--response-delay PATH=MILLISECONDS]...
//! ```
//!
//! It behaves like a password-protected Jenkins with CSRF protection on: password POSTs need a
//! crumb bound to the session cookie, API-token requests do not. It has one job, `sample-job`,
//! with an 8 MiB artifact `job/sample-job/1/artifact/big.bin` and a build #1 whose console log
//! grows by one line a second for half a minute (`job/sample-job/1/logText/progressiveText`).
//! When ready it prints `mock-jenkins listening on <root URL>` to stdout; it logs one line per
//! request to stderr (`RUST_LOG` adjusts this) and runs until Ctrl-C.
//!
//! `kill -USR1 <pid>` expires every session, as Jetty's idle timeout would: crumbs issued so
//! far are rejected from then on (403 `No valid crumb was included in the request`). It then
//! prints `mock-jenkins: sessions expired (N)` to stderr, whatever `RUST_LOG` says, N being the
//! number of sessions that were valid (`bench/run.sh` uses this for its concurrent POSTs).

#[path = "../tests/support/jenkins.rs"]
mod jenkins;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use jenkins::{MockJenkins, ProgressiveControl, SAMPLE_JOB};

/// Used when no `--password-file` is given. Only for this demo double.
const DEMO_PASSWORD: &str = "demo-password";
/// Used when no `--api-token-file` is given.
const DEMO_API_TOKEN: &str = "demo-api-token";
/// Size of `job/sample-job/1/artifact/big.bin`.
const ARTIFACT_SIZE: u64 = 8 * 1024 * 1024;
/// Lines the demo build writes, one per second, before it finishes.
const BUILD_STEPS: u32 = 30;

/// A test double of Jenkins (password + API token auth, session-bound CSRF crumbs).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8180")]
    listen: SocketAddr,
    /// Serve under this context path, e.g. `/jenkins` (empty: the root).
    #[arg(long, default_value = "")]
    context_path: String,
    /// The one user of the double.
    #[arg(long, default_value = "alice")]
    user: String,
    /// File holding the user's password (trailing newline ignored) [default password: demo-password].
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// File holding the user's API token (trailing newline ignored) [default token: demo-api-token].
    #[arg(long)]
    api_token_file: Option<PathBuf>,
    /// Answers to requests for exactly PATH are held back this long, after the request was
    /// judged (so a 403 for a stale crumb is decided on arrival, and arrives late), e.g.
    /// `/job/sample-job/build=500`. Repeatable.
    #[arg(long = "response-delay", value_name = "PATH=MILLISECONDS", value_parser = parse_delay)]
    response_delays: Vec<(String, Duration)>,
}

/// `PATH=MILLISECONDS` of `--response-delay`.
fn parse_delay(text: &str) -> Result<(String, Duration), String> {
    let (path, ms) = text.rsplit_once('=').ok_or_else(|| {
        format!("{text:?}: expected PATH=MILLISECONDS, e.g. /job/sample-job/build=500")
    })?;
    if !path.starts_with('/') {
        return Err(format!("{path:?}: the path must start with '/'"));
    }
    let ms: u64 = ms
        .parse()
        .map_err(|_| format!("{ms:?}: expected a whole number of milliseconds"))?;
    Ok((path.to_owned(), Duration::from_millis(ms)))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let password = match read_secret(args.password_file.as_deref(), DEMO_PASSWORD) {
        Ok(p) => p,
        Err(message) => return fail(&message),
    };
    let token = match read_secret(args.api_token_file.as_deref(), DEMO_API_TOKEN) {
        Ok(t) => t,
        Err(message) => return fail(&message),
    };

    // Before the port opens: a SIGUSR1 sent as soon as it is open must not kill the process.
    let mut expiry = match ExpirySignal::new() {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot listen for SIGUSR1: {e}")),
    };
    let mut builder = MockJenkins::builder()
        .context_path(&args.context_path)
        .user(&args.user, &password)
        .api_token(&args.user, &token)
        .artifact(SAMPLE_JOB, 1, "big.bin", ARTIFACT_SIZE);
    for (path, delay) in &args.response_delays {
        builder = builder.response_delay(path, *delay);
    }
    let started = builder.start_on(args.listen).await;
    let jenkins = match started {
        Ok(j) => j,
        Err(e) => return fail(&format!("cannot listen on {}: {e}", args.listen)),
    };
    tokio::spawn(run_build(jenkins.progressive(), args.user.clone()));

    println!("mock-jenkins listening on {}", jenkins.root_url());
    tracing::info!(
        user = %args.user,
        password_from = %source(args.password_file.as_deref()),
        api_token_from = %source(args.api_token_file.as_deref()),
        "mock jenkins ready"
    );

    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            stopped = &mut ctrl_c => match stopped {
                Ok(()) => break,
                Err(e) => return fail(&format!("cannot wait for Ctrl-C: {e}")),
            },
            () = expiry.recv() => {
                let valid = jenkins.valid_session_ids().len();
                jenkins.expire_sessions();
                eprintln!("mock-jenkins: sessions expired ({valid})");
            }
        }
    }
    let unexpected = jenkins.unexpected();
    if !unexpected.is_empty() {
        // Not an error for a demo, but worth knowing: these URLs are not emulated.
        tracing::warn!(
            count = unexpected.len(),
            "requests to routes the double does not know"
        );
        for line in unexpected {
            eprintln!("  {line}");
        }
    }
    ExitCode::SUCCESS
}

/// SIGUSR1, the request to expire every session; never arrives where there are no Unix signals.
#[derive(Debug)]
struct ExpirySignal {
    #[cfg(unix)]
    usr1: tokio::signal::unix::Signal,
}

impl ExpirySignal {
    #[cfg(unix)]
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            usr1: signal(SignalKind::user_defined1())?,
        })
    }

    #[cfg(not(unix))]
    fn new() -> std::io::Result<Self> {
        Ok(Self {})
    }

    /// Waits for the next SIGUSR1.
    async fn recv(&mut self) {
        #[cfg(unix)]
        if self.usr1.recv().await.is_some() {
            return;
        }
        // No more signals can arrive: wait for Ctrl-C alone.
        std::future::pending::<()>().await;
    }
}

/// The console log of `sample-job` #1: one line a second, then the build finishes.
async fn run_build(log: ProgressiveControl, user: String) {
    log.push(&format!("Started by user {user}\n"));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    for step in 1..=BUILD_STEPS {
        tick.tick().await;
        log.push(&format!("[sample-job] step {step} of {BUILD_STEPS}\n"));
    }
    log.push("Finished: SUCCESS\n");
    log.finish();
}

/// Reads a one-line secret file, or falls back to the demo default.
fn read_secret(path: Option<&Path>, default: &str) -> Result<String, String> {
    let Some(path) = path else {
        return Ok(default.to_owned());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret.to_owned())
}

fn source(path: Option<&Path>) -> String {
    path.map_or_else(|| "demo default".to_owned(), |p| p.display().to_string())
}

fn fail(message: &str) -> ExitCode {
    eprintln!("mock-jenkins: {message}");
    ExitCode::FAILURE
}
