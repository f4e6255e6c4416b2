//! Configuration: the file format, defaults, overrides and validation.
//!
//! Parsing happens in two stages (ripgrep's low/high args, rpxy's
//! `TryInto<ProxyConfig>`): the TOML text goes into private `Raw*` structs that
//! reject unknown keys, command-line and environment overrides are laid over
//! them, and [`Config::from_raw`] turns the result into typed values (socket
//! address, upstream base URL, loaded secret, durations). Every error names
//! the key, the value and what to do. Nothing here touches the network or
//! logs a value; the caller binds sockets only after this succeeds.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use std::{fmt, fs, io};

use serde::Deserialize;

use crate::canonical::Pattern;
use crate::credentials::{CredentialStore, Credentials, Secret, SecretKind};
use crate::filter::{Action, Policy, Rule};
use crate::tls::TlsConfig;
use crate::upstream::BaseUrl;

// The `[listen]`, `[policy]` and secret-loading parts of validation live in
// `config/`; the rest is below.
mod listen;
mod policy;
mod secrets;

use listen::{listen_from_raw, parse_listen_addr};
use policy::policy_from_raw;
pub(crate) use secrets::read_secret_file;
use secrets::{credentials_from_raw, SecretSource};

/// Where the proxy listens when nothing else is configured: loopback only.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8181";
/// How long to wait for a TCP connection to Jenkins.
pub(crate) const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long to wait for Jenkins' response headers once the request is sent.
/// Bodies (console logs, artifacts) may stream for longer.
pub(crate) const DEFAULT_RESPONSE_TIMEOUT_MS: u64 = 60_000;
/// How long an idle pooled connection to Jenkins is kept.
pub(crate) const DEFAULT_POOL_IDLE_SECS: u64 = 60;
/// Mode of a Unix socket listener: owner only.
pub(crate) const DEFAULT_SOCKET_MODE: u32 = 0o600;
/// Largest request head (request line plus headers) accepted; larger gets 431.
/// Jenkins' Jetty accepts 8 KiB by default (`requestHeaderSize`), so a head
/// much larger would not get through anyway; the read buffer of every client
/// connection must hold one (`server`), so this also bounds memory.
pub(crate) const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Client connections served at once; at the cap, idle ones make room
/// (`activity`), and with every one busy, more wait in the listen backlog.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Time a client has to send a complete request head (slowloris).
pub(crate) const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 30;
/// Time an idle keep-alive client connection is kept open.
pub(crate) const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 120;
/// The least rate at which a client must send a request body and take a
/// response, while the proxy waits on it (`rate`): Kestrel's default is
/// 240 bytes a second; a person on a bad mobile link manages far more.
pub(crate) const DEFAULT_MIN_RATE_BYTES_PER_SEC: u64 = 256;
/// How far a client may fall behind that rate before it is cut off.
pub(crate) const DEFAULT_MIN_RATE_GRACE_SECS: u64 = 30;
/// Where health, readiness and metrics are served.
pub(crate) const DEFAULT_HEALTH_ADDRESS: &str = "127.0.0.1:8182";
/// After SIGTERM, how long new connections are still accepted.
pub(crate) const DEFAULT_GRACE_SECS: u64 = 0;
/// After the grace period, how long in-flight requests may take to finish.
pub(crate) const DEFAULT_DRAIN_SECS: u64 = 30;
/// A crumb whose session has been idle this long is refreshed before use.
/// Jenkins' (Jetty's) default session timeout is 30 minutes; 25 leaves a
/// margin for clock skew and for the time a large body takes to arrive.
pub(crate) const DEFAULT_CRUMB_MAX_IDLE_SECS: u64 = 1_500;
/// Request bodies up to this size are kept so the request can be replayed
/// once after a crumb rejection.
pub(crate) const DEFAULT_REPLAY_BODY_MAX_BYTES: u64 = 1024 * 1024;
/// All kept bodies together, at once: beyond this, bodies stream (and
/// cannot be replayed), so a storm of POSTs cannot make the proxy hold
/// `max_connections × replay_body_max_bytes` in memory.
pub(crate) const DEFAULT_REPLAY_BUDGET_BYTES: u64 = 64 * 1024 * 1024;

/// A validated configuration. Build it with [`Config::load`] or
/// [`Config::from_toml_str`].
#[derive(Debug)]
pub struct Config {
    pub(crate) listen: ListenConfig,
    pub(crate) upstream: UpstreamConfig,
    pub(crate) credentials: CredentialStore,
    pub(crate) crumb: CrumbConfig,
    pub(crate) policy: Policy,
    pub(crate) limits: LimitsConfig,
    pub(crate) health: HealthConfig,
    pub(crate) shutdown: ShutdownConfig,
    /// Problems worth a warning that do not stop the proxy (a secret file
    /// others can read); `main` logs them once logging is up.
    pub(crate) warnings: Vec<String>,
}

/// `[listen]`.
#[derive(Debug, Clone)]
pub(crate) struct ListenConfig {
    pub(crate) addr: ListenAddr,
    /// Permissions of a Unix socket.
    pub(crate) socket_mode: u32,
}

/// Where the proxy listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    /// `unix:/path/to.sock`.
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// `[health]`.
#[derive(Debug, Clone)]
pub(crate) struct HealthConfig {
    /// `None`: no health listener (`address = ""`).
    pub(crate) addr: Option<SocketAddr>,
}

/// `[shutdown]`.
#[derive(Debug, Clone)]
pub(crate) struct ShutdownConfig {
    pub(crate) grace: Duration,
    pub(crate) drain: Duration,
}

/// `[limits]`: resources one client may hold.
#[derive(Debug, Clone)]
pub(crate) struct LimitsConfig {
    pub(crate) max_header_bytes: usize,
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) min_rate: crate::rate::MinRate,
}

/// `[upstream]`.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamConfig {
    pub(crate) base: BaseUrl,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) pool_idle_timeout: Duration,
    pub(crate) tls: TlsConfig,
    /// Jenkins' configured root URL, when it differs from `url` (ends in
    /// `/`); discovered from `/api/json` when not set.
    pub(crate) public_url: Option<String>,
    /// Replace Jenkins' root URLs in API bodies with the proxy's.
    pub(crate) rewrite_api_urls: bool,
}

/// `[crumb]`.
#[derive(Debug, Clone)]
pub(crate) struct CrumbConfig {
    pub(crate) mode: CrumbMode,
    pub(crate) max_idle: Duration,
    pub(crate) replay_body_max_bytes: u64,
    pub(crate) replay_budget_bytes: u64,
}

/// `crumb.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrumbMode {
    /// Crumbs on POST with a password; none with an API token.
    Auto,
    Always,
    Never,
}

/// Values from the command line or `CRUMB_PROXY_*` environment variables.
/// Each one, when set, replaces the file's value (flags win over
/// environment variables; clap settles that before this is built).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub allow_remote: Option<bool>,
    pub upstream: Option<String>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    pub api_token_file: Option<PathBuf>,
    pub api_token_env: Option<String>,
    pub crumb_mode: Option<String>,
}

/// Why a configuration was refused. Each message names the key, the value
/// and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("`{key}` is missing: {fix}")]
    Missing {
        key: &'static str,
        fix: &'static str,
    },
    #[error("`{key}` = {value:?}: {problem}")]
    Invalid {
        key: &'static str,
        value: String,
        problem: String,
    },
    #[error(
        "`credentials.{key}` is not allowed: secrets never go inline in the config file \
         (configs get committed); put it in a file and set `credentials.{key}_file`, \
         or in an environment variable and set `credentials.{key}_env`"
    )]
    InlineSecret { key: &'static str },
    #[error(
        "`credentials` sets {first} and {second}: set exactly one of password_file, \
         password_env, api_token_file, api_token_env"
    )]
    TwoSecrets {
        first: &'static str,
        second: &'static str,
    },
    #[error("`{section}.{key}` = {path:?}: cannot read the secret file: {source}; create it or fix the path")]
    SecretFile {
        section: &'static str,
        key: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{section}.{key}` = {path:?}: {problem}")]
    SecretFileUnfit {
        section: &'static str,
        key: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("`{section}.{key}` = {name:?}: {problem}")]
    SecretEnv {
        section: &'static str,
        key: &'static str,
        name: String,
        problem: &'static str,
    },
    #[error("`{section}.{key}`: the secret is empty; put the {what} in it")]
    EmptySecret {
        section: &'static str,
        key: &'static str,
        what: &'static str,
    },
    #[error("`policy.rules[{index}]` ({path:?}): {problem}")]
    Rule {
        index: usize,
        path: String,
        problem: String,
    },
}

// === raw, file-shaped structs ===

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    credentials: RawCredentials,
    #[serde(default)]
    crumb: RawCrumb,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    shutdown: RawShutdown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShutdown {
    grace_secs: Option<u64>,
    drain_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    address: Option<String>,
    allow_remote: Option<bool>,
    socket_mode: Option<String>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    client_token_file: Option<PathBuf>,
    client_token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    read_only: Option<bool>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    identity_headers: Vec<String>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    action: String,
    methods: Option<Vec<String>>,
    path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_header_bytes: Option<usize>,
    max_connections: Option<usize>,
    header_read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    min_rate_bytes_per_sec: Option<u64>,
    min_rate_grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Option<String>,
    connect_timeout_ms: Option<u64>,
    response_timeout_ms: Option<u64>,
    pool_idle_timeout_secs: Option<u64>,
    ca_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
    tls_server_name: Option<String>,
    danger_accept_invalid_certs: Option<bool>,
    public_url: Option<String>,
    rewrite_api_urls: Option<bool>,
}

/// Inline `password`/`api_token`/`token` are accepted by the parser only so
/// that they can be refused with a targeted message instead of "unknown
/// field" (rpxy's renamed-key errors).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    username: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    api_token_file: Option<PathBuf>,
    api_token_env: Option<String>,
    password: Option<toml::Value>,
    api_token: Option<toml::Value>,
    token: Option<toml::Value>,
}

// Hand-written: an inline secret must not reach a debug print either.
impl fmt::Debug for RawCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawCredentials")
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .field("api_token_file", &self.api_token_file)
            .field("api_token_env", &self.api_token_env)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCrumb {
    mode: Option<String>,
    max_idle_secs: Option<u64>,
    replay_body_max_bytes: Option<u64>,
    replay_budget_bytes: Option<u64>,
}

// === loading ===

impl Config {
    /// Reads `path` (if any), lays `overrides` over it and validates the
    /// result. Relative secret paths in the file are taken relative to the
    /// file's directory; those from overrides relative to the working
    /// directory.
    ///
    /// # Errors
    /// Any unreadable file, TOML error, missing or invalid key, or unreadable
    /// secret, as a [`ConfigError`] that names the key and the fix.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let (mut raw, base_dir) = match path {
            Some(path) => {
                let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let raw = parse(&text, &path.display().to_string())?;
                let dir = path.parent().map(Path::to_owned).unwrap_or_default();
                (raw, dir)
            }
            None => (RawConfig::default(), PathBuf::new()),
        };
        resolve_relative(&mut raw, &base_dir);
        apply(&mut raw, overrides);
        Self::from_raw(raw)
    }

    /// Parses and validates TOML text, as if it were a file in `base_dir`.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let mut raw = parse(text, "config")?;
        resolve_relative(&mut raw, base_dir);
        Self::from_raw(raw)
    }

    /// The address the proxy is configured to listen on.
    pub fn listen_addr(&self) -> &ListenAddr {
        &self.listen.addr
    }

    /// The mode a Unix socket listener is given.
    pub fn socket_mode(&self) -> u32 {
        self.listen.socket_mode
    }

    /// Where health, readiness and metrics are served, if anywhere.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health.addr
    }

    /// Warnings found while loading (e.g. a secret file others can read),
    /// for the caller to log.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// A one-line, secret-free summary for `--check-config`.
    pub fn summary(&self) -> String {
        format!(
            "listen {} -> {} as {} ({}), crumb mode {:?}",
            self.listen.addr,
            self.upstream.base,
            self.credentials.username(),
            self.credentials.kind().as_str(),
            self.crumb.mode,
        )
    }

    fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let mut warnings = Vec::new();
        let (listen, hosts, client_token) = listen_from_raw(raw.listen, &mut warnings)?;
        let upstream = upstream_from_raw(raw.upstream)?;
        let credentials = credentials_from_raw(raw.credentials, &mut warnings)?;
        let crumb = crumb_from_raw(raw.crumb)?;
        let policy = policy_from_raw(raw.policy, hosts, client_token, &credentials.username())?;
        let limits = limits_from_raw(raw.limits)?;
        let health = health_from_raw(raw.health)?;
        let shutdown = ShutdownConfig {
            grace: secs(
                "shutdown.grace_secs",
                raw.shutdown.grace_secs,
                DEFAULT_GRACE_SECS,
            )?,
            drain: secs(
                "shutdown.drain_secs",
                raw.shutdown.drain_secs,
                DEFAULT_DRAIN_SECS,
            )?,
        };
        Ok(Self {
            listen,
            upstream,
            credentials,
            crumb,
            policy,
            limits,
            health,
            shutdown,
            warnings,
        })
    }
}

/// Parses the TOML text into the raw structs. Every error is one line: a
/// type error names the full key, what it expected and what it got, and
/// the fix (`serde_path_to_error` tracks the key); a syntax error its line.
fn parse(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
    let fail = |message: String| ConfigError::Parse {
        path: origin.to_owned(),
        message,
    };
    let deserializer = toml::Deserializer::parse(text).map_err(|e| fail(syntax_error(&e, text)))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .span()
            .map(|span| format!("line {}: ", line_of(text, span.start)))
            .unwrap_or_default();
        fail(format!(
            "{line}{}",
            describe_type_error(&key, inner.message())
        ))
    })
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A TOML syntax error in one line: where, and what.
fn syntax_error(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim_end().replace('\n', "; ");
    match e.span() {
        Some(span) => format!("line {}: {message}", line_of(text, span.start)),
        None => message,
    }
}

/// serde's `invalid type: string "x", expected usize` as
/// `` `limits.max_connections`: expected a whole number, got the string "x";
/// write …``.
fn describe_type_error(key: &str, message: &str) -> String {
    let found_expected = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
        .and_then(|rest| rest.rsplit_once(", expected "));
    let Some((found, expected)) = found_expected else {
        return if key.is_empty() || key == "." {
            message.to_owned()
        } else {
            format!("`{key}`: {message}")
        };
    };
    let found = found.replace('`', "");
    let (wanted, fix) = match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => {
            let (unit, example) = if key.ends_with("_ms") {
                (" of milliseconds", " (5 s is `5000`)")
            } else if key.ends_with("_secs") {
                (" of seconds", " (5 minutes is `300`)")
            } else if key.ends_with("_bytes") {
                (" of bytes", " (1 MiB is `1048576`)")
            } else {
                ("", "")
            };
            (
                format!("a whole number{unit}"),
                format!("write the number without quotes or units{example}"),
            )
        }
        "a boolean" => (
            "true or false".to_owned(),
            format!("write `{key} = true` or `{key} = false`, without quotes"),
        ),
        "a string" => (
            "a string".to_owned(),
            format!("put the value in double quotes, e.g. `{key} = \"…\"`"),
        ),
        "a sequence" => (
            "a list".to_owned(),
            format!("write a list in brackets, e.g. `{key} = [\"…\"]`"),
        ),
        other => (
            other.to_owned(),
            "see config/crumb-proxy.example.toml".to_owned(),
        ),
    };
    format!("`{key}`: expected {wanted}, got {found}; {fix}")
}

fn resolve_relative(raw: &mut RawConfig, base_dir: &Path) {
    let creds = &mut raw.credentials;
    for path in [
        &mut creds.password_file,
        &mut creds.api_token_file,
        &mut raw.listen.client_token_file,
        &mut raw.upstream.ca_file,
        &mut raw.upstream.client_cert_file,
        &mut raw.upstream.client_key_file,
    ]
    .into_iter()
    .flatten()
    {
        if path.is_relative() {
            *path = base_dir.join(&*path);
        }
    }
    if let Some(address) = &mut raw.listen.address {
        if let Some(path) = address.strip_prefix("unix:") {
            if Path::new(path).is_relative() && !path.is_empty() {
                *address = format!("unix:{}", base_dir.join(path).display());
            }
        }
    }
}

fn apply(raw: &mut RawConfig, o: &Overrides) {
    if let Some(v) = &o.listen {
        raw.listen.address = Some(v.clone());
    }
    if let Some(v) = o.allow_remote {
        raw.listen.allow_remote = Some(v);
    }
    if let Some(v) = &o.upstream {
        raw.upstream.url = Some(v.clone());
    }
    if let Some(v) = &o.user {
        raw.credentials.username = Some(v.clone());
    }
    // A secret source given as an override replaces the file's source
    // entirely: mixing a file's password with a flag's token would be a
    // "two secrets" error the user did not write.
    let secret_override = o.password_file.is_some()
        || o.password_env.is_some()
        || o.api_token_file.is_some()
        || o.api_token_env.is_some();
    if secret_override {
        let c = &mut raw.credentials;
        c.password_file.clone_from(&o.password_file);
        c.password_env.clone_from(&o.password_env);
        c.api_token_file.clone_from(&o.api_token_file);
        c.api_token_env.clone_from(&o.api_token_env);
    }
    if let Some(v) = &o.crumb_mode {
        raw.crumb.mode = Some(v.clone());
    }
}

// === validation, one function per section ===

fn upstream_from_raw(raw: RawUpstream) -> Result<UpstreamConfig, ConfigError> {
    let url = raw.url.ok_or(ConfigError::Missing {
        key: "upstream.url",
        fix: "set it to Jenkins' root URL, e.g. \"https://ci.example.com/jenkins/\" \
              (or pass --upstream / CRUMB_PROXY_UPSTREAM)",
    })?;
    let base = BaseUrl::parse(&url).map_err(|problem| ConfigError::Invalid {
        key: "upstream.url",
        value: url.clone(),
        problem,
    })?;
    let tls = TlsConfig {
        ca_file: raw.ca_file,
        client_cert: match (raw.client_cert_file, raw.client_key_file) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(cert), None) => {
                return Err(ConfigError::Invalid {
                    key: "upstream.client_key_file",
                    value: String::new(),
                    problem: format!(
                        "upstream.client_cert_file = {:?} needs its private key; set upstream.client_key_file",
                        cert.display().to_string()
                    ),
                })
            }
            (None, Some(key)) => {
                return Err(ConfigError::Invalid {
                    key: "upstream.client_cert_file",
                    value: String::new(),
                    problem: format!(
                        "upstream.client_key_file = {:?} needs its certificate; set upstream.client_cert_file",
                        key.display().to_string()
                    ),
                })
            }
        },
        server_name: raw.tls_server_name,
        accept_invalid_certs: raw.danger_accept_invalid_certs.unwrap_or(false),
    };
    let uses_tls_keys = tls.ca_file.is_some()
        || tls.client_cert.is_some()
        || tls.server_name.is_some()
        || tls.accept_invalid_certs;
    if uses_tls_keys && !base.is_https() {
        return Err(ConfigError::Invalid {
            key: "upstream.url",
            value: url,
            problem: "the TLS settings (ca_file, client_cert_file, tls_server_name, \
                      danger_accept_invalid_certs) only apply to an https:// upstream; \
                      use https or remove them"
                .into(),
        });
    }
    if tls.accept_invalid_certs && tls.ca_file.is_some() {
        return Err(ConfigError::Invalid {
            key: "upstream.danger_accept_invalid_certs",
            value: "true".into(),
            problem: "with it, upstream.ca_file is never used; remove one of them".into(),
        });
    }
    let public_url = match raw.public_url {
        None => None,
        Some(text) => {
            let parsed = BaseUrl::parse(&text).map_err(|problem| ConfigError::Invalid {
                key: "upstream.public_url",
                value: text.clone(),
                problem,
            })?;
            Some(parsed.to_string())
        }
    };
    Ok(UpstreamConfig {
        public_url,
        rewrite_api_urls: raw.rewrite_api_urls.unwrap_or(true),
        tls,
        base,
        connect_timeout: millis(
            "upstream.connect_timeout_ms",
            raw.connect_timeout_ms,
            DEFAULT_CONNECT_TIMEOUT_MS,
        )?,
        response_timeout: millis(
            "upstream.response_timeout_ms",
            raw.response_timeout_ms,
            DEFAULT_RESPONSE_TIMEOUT_MS,
        )?,
        pool_idle_timeout: secs(
            "upstream.pool_idle_timeout_secs",
            raw.pool_idle_timeout_secs,
            DEFAULT_POOL_IDLE_SECS,
        )?,
    })
}

/// The range of every numeric key: `(key, least, most, unit)`. The bounds
/// keep every value within what the proxy can act on (a semaphore of
/// connections, a deadline `now + timeout`) and within reason; README.md
/// lists them.
pub(crate) const RANGES: [(&str, u64, u64, &str); 14] = [
    (
        "upstream.connect_timeout_ms",
        1,
        600_000,
        "milliseconds (10 minutes)",
    ),
    (
        "upstream.response_timeout_ms",
        1,
        86_400_000,
        "milliseconds (a day)",
    ),
    (
        "upstream.pool_idle_timeout_secs",
        0,
        86_400,
        "seconds (a day)",
    ),
    ("crumb.max_idle_secs", 1, 86_400, "seconds (a day)"),
    ("crumb.replay_body_max_bytes", 0, 1 << 30, "bytes (1 GiB)"),
    ("crumb.replay_budget_bytes", 0, 1 << 36, "bytes (64 GiB)"),
    ("limits.max_header_bytes", 8192, 1 << 20, "bytes (1 MiB)"),
    ("limits.max_connections", 1, 1_000_000, "connections"),
    (
        "limits.header_read_timeout_secs",
        1,
        86_400,
        "seconds (a day)",
    ),
    ("limits.idle_timeout_secs", 1, 86_400, "seconds (a day)"),
    (
        "limits.min_rate_bytes_per_sec",
        0,
        1 << 30,
        "bytes a second (1 GiB)",
    ),
    ("limits.min_rate_grace_secs", 1, 86_400, "seconds (a day)"),
    ("shutdown.grace_secs", 0, 86_400, "seconds (a day)"),
    ("shutdown.drain_secs", 0, 86_400, "seconds (a day)"),
];

/// `value` (or `default` when the key is not set), checked against the
/// key's range in [`RANGES`].
fn ranged<T>(key: &'static str, value: Option<T>, default: T) -> Result<T, ConfigError>
where
    T: Copy + TryInto<u64> + fmt::Display,
{
    let value = value.unwrap_or(default);
    let (_, least, most, unit) =
        RANGES
            .iter()
            .find(|(k, ..)| *k == key)
            .copied()
            .unwrap_or((key, 0, u64::MAX, ""));
    if value
        .try_into()
        .is_ok_and(|v: u64| (least..=most).contains(&v))
    {
        return Ok(value);
    }
    Err(ConfigError::Invalid {
        key,
        value: value.to_string(),
        problem: format!("must be between {least} and {most} {unit}; the default is {default}"),
    })
}

fn millis(key: &'static str, value: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    ranged(key, value, default).map(Duration::from_millis)
}

fn secs(key: &'static str, value: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    ranged(key, value, default).map(Duration::from_secs)
}

fn crumb_from_raw(raw: RawCrumb) -> Result<CrumbConfig, ConfigError> {
    let mode = match raw.mode.as_deref() {
        None | Some("auto") => CrumbMode::Auto,
        Some("always") => CrumbMode::Always,
        Some("never") => CrumbMode::Never,
        Some(other) => {
            return Err(ConfigError::Invalid {
                key: "crumb.mode",
                value: other.to_owned(),
                problem: "must be \"auto\", \"always\" or \"never\"".into(),
            })
        }
    };
    let max_idle = secs(
        "crumb.max_idle_secs",
        raw.max_idle_secs,
        DEFAULT_CRUMB_MAX_IDLE_SECS,
    )?;
    let replay_body_max_bytes = ranged(
        "crumb.replay_body_max_bytes",
        raw.replay_body_max_bytes,
        DEFAULT_REPLAY_BODY_MAX_BYTES,
    )?;
    let replay_budget_bytes = ranged(
        "crumb.replay_budget_bytes",
        raw.replay_budget_bytes,
        DEFAULT_REPLAY_BUDGET_BYTES,
    )?;
    if replay_budget_bytes < replay_body_max_bytes {
        return Err(ConfigError::Invalid {
            key: "crumb.replay_budget_bytes",
            value: replay_budget_bytes.to_string(),
            problem: format!(
                "is smaller than crumb.replay_body_max_bytes ({replay_body_max_bytes}), so no body \
                 that large could ever be kept; raise it or lower crumb.replay_body_max_bytes; \
                 the default is {DEFAULT_REPLAY_BUDGET_BYTES}"
            ),
        });
    }
    Ok(CrumbConfig {
        mode,
        max_idle,
        replay_body_max_bytes,
        replay_budget_bytes,
    })
}

fn health_from_raw(raw: RawHealth) -> Result<HealthConfig, ConfigError> {
    let text = raw
        .address
        .unwrap_or_else(|| DEFAULT_HEALTH_ADDRESS.to_owned());
    if text.is_empty() {
        return Ok(HealthConfig { addr: None });
    }
    match parse_listen_addr(&text) {
        Ok(ListenAddr::Tcp(addr)) => Ok(HealthConfig { addr: Some(addr) }),
        _ => Err(ConfigError::Invalid {
            key: "health.address",
            value: text,
            problem:
                "expected HOST:PORT with an IP address, e.g. \"127.0.0.1:8182\", or \"\" for none"
                    .into(),
        }),
    }
}

fn limits_from_raw(raw: RawLimits) -> Result<LimitsConfig, ConfigError> {
    Ok(LimitsConfig {
        max_header_bytes: ranged(
            "limits.max_header_bytes",
            raw.max_header_bytes,
            DEFAULT_MAX_HEADER_BYTES,
        )?,
        max_connections: ranged(
            "limits.max_connections",
            raw.max_connections,
            DEFAULT_MAX_CONNECTIONS,
        )?,
        header_read_timeout: secs(
            "limits.header_read_timeout_secs",
            raw.header_read_timeout_secs,
            DEFAULT_HEADER_READ_TIMEOUT_SECS,
        )?,
        idle_timeout: secs(
            "limits.idle_timeout_secs",
            raw.idle_timeout_secs,
            DEFAULT_IDLE_TIMEOUT_SECS,
        )?,
        min_rate: crate::rate::MinRate {
            bytes_per_sec: ranged(
                "limits.min_rate_bytes_per_sec",
                raw.min_rate_bytes_per_sec,
                DEFAULT_MIN_RATE_BYTES_PER_SEC,
            )?,
            grace: secs(
                "limits.min_rate_grace_secs",
                raw.min_rate_grace_secs,
                DEFAULT_MIN_RATE_GRACE_SECS,
            )?,
        },
    })
}

#[cfg(test)]
mod tests;
