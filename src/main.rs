//! The `crumb-proxy` binary: arguments, configuration, logging, bind, serve;
//! and the `check` and `health` sub-commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use crumb_proxy::{App, Config, Listener, LogFormat, Overrides};

/// jemalloc instead of glibc malloc: per request the proxy allocates and
/// frees many small buffers across threads, where glibc spent 14% of the
/// CPU (bench/README.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit status for a configuration error (sysexits.h `EX_CONFIG`).
const EX_CONFIG: u8 = 78;
/// Exit status when a socket cannot be bound (`EX_UNAVAILABLE`).
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
    #[command(subcommand)]
    command: Option<Command>,

    /// TOML config file (see config/crumb-proxy.example.toml).
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "CRUMB_PROXY_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,

    /// Address to listen on, HOST:PORT with an IP, or unix:/path/to.sock
    /// (`listen.address`, default 127.0.0.1:8181).
    #[arg(
        long,
        global = true,
        env = "CRUMB_PROXY_LISTEN",
        value_name = "ADDRESS"
    )]
    listen: Option<String>,

    /// Allow a non-loopback listen address (`listen.allow_remote`).
    #[arg(long, global = true, env = "CRUMB_PROXY_ALLOW_REMOTE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    allow_remote: Option<bool>,

    /// Jenkins' root URL, e.g. https://ci.example.com/jenkins/ (`upstream.url`).
    #[arg(long, global = true, env = "CRUMB_PROXY_UPSTREAM", value_name = "URL")]
    upstream: Option<String>,

    /// Jenkins user name (`credentials.username`).
    #[arg(long, global = true, env = "CRUMB_PROXY_USER", value_name = "NAME")]
    user: Option<String>,

    /// File holding the user's password (`credentials.password_file`).
    #[arg(
        long,
        global = true,
        env = "CRUMB_PROXY_PASSWORD_FILE",
        value_name = "FILE"
    )]
    password_file: Option<PathBuf>,

    /// Environment variable holding the password (`credentials.password_env`).
    #[arg(
        long,
        global = true,
        env = "CRUMB_PROXY_PASSWORD_ENV",
        value_name = "VAR"
    )]
    password_env: Option<String>,

    /// File holding an API token (`credentials.api_token_file`).
    #[arg(
        long,
        global = true,
        env = "CRUMB_PROXY_API_TOKEN_FILE",
        value_name = "FILE"
    )]
    api_token_file: Option<PathBuf>,

    /// Environment variable holding an API token (`credentials.api_token_env`).
    #[arg(
        long,
        global = true,
        env = "CRUMB_PROXY_API_TOKEN_ENV",
        value_name = "VAR"
    )]
    api_token_env: Option<String>,

    /// When POSTs carry a crumb: auto (with a password, not with an API
    /// token), always, never (`crumb.mode`).
    #[arg(long, global = true, env = "CRUMB_PROXY_CRUMB_MODE", value_name = "MODE", value_parser = ["auto", "always", "never"])]
    crumb_mode: Option<String>,

    /// Log lines as text or as one JSON object per line.
    #[arg(long, global = true, env = "CRUMB_PROXY_LOG_FORMAT", value_enum, default_value_t = Format::Text)]
    log_format: Format,

    /// Log level (error, warn, info, debug, trace) or a filter such as
    /// "warn,crumb_proxy=debug"; default: RUST_LOG, else info.
    #[arg(
        long,
        global = true,
        env = "CRUMB_PROXY_LOG_LEVEL",
        value_name = "LEVEL"
    )]
    log_level: Option<String>,

    /// Validate the configuration, print a summary and exit.
    #[arg(long)]
    check_config: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the config, ask Jenkins who we are, its version, whether
    /// CSRF protection is on and whether a crumb can be fetched; exit 0 only
    /// when all is well.
    Check,
    /// Ask a running proxy's health listener whether it is ready (for
    /// container health checks); exit 0 only on 200.
    Health {
        /// The readiness URL.
        #[arg(
            long,
            env = "CRUMB_PROXY_HEALTH_URL",
            default_value = "http://127.0.0.1:8182/readyz"
        )]
        url: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
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

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            report(&e);
            ExitCode::FAILURE
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Health { url }) = &cli.command {
        return health(url);
    }
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
    let format = match cli.log_format {
        Format::Text => LogFormat::Text,
        Format::Json => LogFormat::Json,
    };
    if let Err(e) = crumb_proxy::init_telemetry(format, cli.log_level.as_deref()) {
        eprintln!("crumb-proxy: {e}");
        return ExitCode::from(EX_CONFIG);
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    if let Some(Command::Check) = cli.command {
        return runtime.block_on(check(config));
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let addr = config.listen_addr().clone();
    let socket_mode = config.socket_mode();
    let health_addr = config.health_addr();
    let app = match App::new(config) {
        Ok(app) => app,
        Err(e) => {
            report(&e);
            return ExitCode::from(EX_CONFIG);
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
        let health = match health_addr {
            None => None,
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) => {
                    eprintln!("crumb-proxy: cannot listen on {addr} for health: {e}; change health.address (\"\" turns it off)");
                    return ExitCode::from(EX_UNAVAILABLE);
                }
            },
        };
        match app
            .serve_with_health(listener, health, crumb_proxy::shutdown_signal())
            .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                report(&e);
                ExitCode::FAILURE
            }
        }
    })
}

async fn check(config: Config) -> ExitCode {
    match crumb_proxy::check(config).await {
        Ok(report) => {
            for line in &report.lines {
                println!("{line}");
            }
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            report(&e);
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// `crumb-proxy health`: GET the readiness URL, exit 0 on 200.
fn health(url: &str) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        match crumb_proxy::probe(url, Duration::from_secs(5)).await {
            Ok(200) => {
                println!("ready");
                ExitCode::SUCCESS
            }
            Ok(status) => {
                println!("not ready: {url} answered {status}");
                ExitCode::FAILURE
            }
            Err(e) => {
                println!("not ready: {url}: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
