//! The `crumb-proxy` binary: arguments, configuration, logging, bind, serve.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use crumb_proxy::{App, Config, Listener, Overrides};

/// Exit status for a configuration error (sysexits.h `EX_CONFIG`).
const EX_CONFIG: u8 = 78;
/// Exit status when the listen socket cannot be bound (`EX_UNAVAILABLE`).
const EX_UNAVAILABLE: u8 = 69;

/// A local proxy that adds Jenkins credentials and session-bound CSRF crumbs
/// to plain HTTP requests.
///
/// Point curl, scripts or tools at the proxy instead of Jenkins; it adds
/// HTTP Basic credentials to every request and a crumb (with the session
/// cookie it belongs to) to every POST, re-fetching the crumb once when
/// Jenkins rejects it.
///
/// Settings come from the config file, then CRUMB_PROXY_* environment
/// variables, then flags; each later source wins. Secrets are read only from
/// a file or an environment variable, never from the command line or the
/// config file itself.
#[derive(Debug, Parser)]
#[command(name = "crumb-proxy", version, about, long_about)]
struct Cli {
    /// TOML config file (see config/crumb-proxy.example.toml).
    #[arg(long, short = 'c', env = "CRUMB_PROXY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address to listen on, HOST:PORT with an IP (`listen.address`,
    /// default 127.0.0.1:8181).
    #[arg(long, env = "CRUMB_PROXY_LISTEN", value_name = "HOST:PORT")]
    listen: Option<String>,

    /// Allow a non-loopback listen address (`listen.allow_remote`).
    #[arg(long, env = "CRUMB_PROXY_ALLOW_REMOTE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    allow_remote: Option<bool>,

    /// Jenkins' root URL, e.g. https://ci.example.com/jenkins/ (`upstream.url`).
    #[arg(long, env = "CRUMB_PROXY_UPSTREAM", value_name = "URL")]
    upstream: Option<String>,

    /// Jenkins user name (`credentials.username`).
    #[arg(long, env = "CRUMB_PROXY_USER", value_name = "NAME")]
    user: Option<String>,

    /// File holding the user's password (`credentials.password_file`).
    #[arg(long, env = "CRUMB_PROXY_PASSWORD_FILE", value_name = "FILE")]
    password_file: Option<PathBuf>,

    /// Environment variable holding the password (`credentials.password_env`).
    #[arg(long, env = "CRUMB_PROXY_PASSWORD_ENV", value_name = "VAR")]
    password_env: Option<String>,

    /// File holding an API token (`credentials.api_token_file`).
    #[arg(long, env = "CRUMB_PROXY_API_TOKEN_FILE", value_name = "FILE")]
    api_token_file: Option<PathBuf>,

    /// Environment variable holding an API token (`credentials.api_token_env`).
    #[arg(long, env = "CRUMB_PROXY_API_TOKEN_ENV", value_name = "VAR")]
    api_token_env: Option<String>,

    /// When POSTs carry a crumb: auto (with a password, not with an API
    /// token), always, never (`crumb.mode`).
    #[arg(long, env = "CRUMB_PROXY_CRUMB_MODE", value_name = "MODE", value_parser = ["auto", "always", "never"])]
    crumb_mode: Option<String>,

    /// Validate the configuration, print a summary and exit.
    #[arg(long)]
    check_config: bool,
}

impl Cli {
    fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            allow_remote: self.allow_remote,
            upstream: self.upstream.clone(),
            user: self.user.clone(),
            password_file: self.password_file.clone(),
            password_env: self.password_env.clone(),
            api_token_file: self.api_token_file.clone(),
            api_token_env: self.api_token_env.clone(),
            crumb_mode: self.crumb_mode.clone(),
        }
    }
}

/// Prints an error and its sources, one per line (ripgrep prints `{:#}`).
fn report(err: &dyn std::error::Error) {
    eprintln!("crumb-proxy: {err}");
    let mut source = err.source();
    while let Some(e) = source {
        eprintln!("  caused by: {e}");
        source = e.source();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), &cli.overrides()) {
        Ok(config) => config,
        Err(e) => {
            report(&e);
            return ExitCode::from(EX_CONFIG);
        }
    };
    if cli.check_config {
        println!("config ok: {}", config.summary());
        return ExitCode::SUCCESS;
    }
    crumb_proxy::init_telemetry();
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let addr = config.listen_addr().clone();
    let socket_mode = config.socket_mode();
    let app = match App::new(config) {
        Ok(app) => app,
        Err(e) => {
            report(&e);
            return ExitCode::from(EX_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(&e);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match Listener::bind(&addr, socket_mode).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("crumb-proxy: cannot listen on {addr}: {e}; is another process using it? change listen.address or --listen");
                return ExitCode::from(EX_UNAVAILABLE);
            }
        };
        match app.serve(listener, crumb_proxy::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                report(&e);
                ExitCode::FAILURE
            }
        }
    })
}
