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
pub(crate) const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Client connections served at once; more wait in the listen backlog.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Time a client has to send a complete request head (slowloris).
pub(crate) const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 30;
/// Time an idle keep-alive client connection is kept open.
pub(crate) const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 120;
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
        let policy = policy_from_raw(raw.policy, hosts, client_token)?;
        let limits = limits_from_raw(raw.limits)?;
        let health = health_from_raw(raw.health)?;
        let shutdown = ShutdownConfig {
            grace: Duration::from_secs(raw.shutdown.grace_secs.unwrap_or(DEFAULT_GRACE_SECS)),
            drain: Duration::from_secs(raw.shutdown.drain_secs.unwrap_or(DEFAULT_DRAIN_SECS)),
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

fn parse(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
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

/// The names every listener answers to (the DNS-rebinding allow-list
/// starts here).
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

fn listen_from_raw(
    raw: RawListen,
    warnings: &mut Vec<String>,
) -> Result<(ListenConfig, HashSet<String>, Option<Secret>), ConfigError> {
    let text = raw.address.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let addr = parse_listen_addr(&text)?;

    let token_source = match (raw.client_token_file, raw.client_token_env) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid {
                key: "listen.client_token_file",
                value: String::new(),
                problem: "set either listen.client_token_file or listen.client_token_env, not both"
                    .into(),
            })
        }
        (Some(path), None) => Some(("client_token_file", SecretSource::File(path))),
        (None, Some(var)) => Some(("client_token_env", SecretSource::Env(var))),
        (None, None) => None,
    };
    let client_token = match token_source {
        Some((key, source)) => Some(source.load("listen", key, "client token", warnings)?),
        None => None,
    };

    let mut hosts: HashSet<String> = LOOPBACK_NAMES.iter().map(|s| (*s).to_owned()).collect();
    if let ListenAddr::Tcp(sock) = &addr {
        if !sock.ip().is_loopback() {
            if raw.allow_remote != Some(true) {
                return Err(ConfigError::Invalid {
                    key: "listen.address",
                    value: text,
                    problem: "not a loopback address; anyone who can reach the port acts as the \
                              configured Jenkins user, so listen on 127.0.0.1 or [::1] (or a unix: \
                              socket), or set `listen.allow_remote = true` and a client token"
                        .into(),
                });
            }
            if client_token.is_none() {
                return Err(ConfigError::Invalid {
                    key: "listen.address",
                    value: text,
                    problem: "a non-loopback address also needs a client token that callers must \
                              present; set listen.client_token_file or listen.client_token_env"
                        .into(),
                });
            }
        }
        hosts.insert(match sock.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        });
    }
    for name in raw.allowed_hosts {
        let lower = name.to_ascii_lowercase();
        let bad = lower.is_empty()
            || lower.contains(['/', ' ', '@'])
            || (lower.contains(':') && !(lower.starts_with('[') && lower.ends_with(']')));
        if bad {
            return Err(ConfigError::Invalid {
                key: "listen.allowed_hosts",
                value: name,
                problem: "must be a bare host name or address as clients put it in Host, without \
                          scheme or port (e.g. \"crumb-proxy\" or \"[fd00::1]\")"
                    .into(),
            });
        }
        hosts.insert(lower);
    }

    let socket_mode = match raw.socket_mode {
        None => DEFAULT_SOCKET_MODE,
        Some(mode) => match u32::from_str_radix(mode.trim_start_matches("0o"), 8) {
            Ok(m) if m <= 0o777 => m,
            _ => {
                return Err(ConfigError::Invalid {
                    key: "listen.socket_mode",
                    value: mode,
                    problem: "must be an octal permission string such as \"0600\" or \"0660\""
                        .into(),
                })
            }
        },
    };
    Ok((ListenConfig { addr, socket_mode }, hosts, client_token))
}

fn parse_listen_addr(text: &str) -> Result<ListenAddr, ConfigError> {
    let invalid = |problem: &str| ConfigError::Invalid {
        key: "listen.address",
        value: text.to_owned(),
        problem: problem.to_owned(),
    };
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(invalid(
                "name the socket file, e.g. \"unix:/run/crumb-proxy/proxy.sock\"",
            ));
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    if text.parse::<u16>().is_ok() || text.starts_with(':') {
        return Err(invalid(
            "a bare port is not enough; name the host, e.g. \"127.0.0.1:8181\"",
        ));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(ListenAddr::Tcp(addr));
    }
    // `localhost:PORT` is common in scripts; it means IPv4 loopback here so
    // that the proxy never depends on a resolver at start-up.
    if let Some(port) = text.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(ListenAddr::Tcp(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
            )));
        }
    }
    Err(invalid(
        "expected HOST:PORT with an IP address, e.g. \"127.0.0.1:8181\" or \"[::1]:8181\", \
         or unix:/path/to.sock",
    ))
}

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
        pool_idle_timeout: Duration::from_secs(
            raw.pool_idle_timeout_secs.unwrap_or(DEFAULT_POOL_IDLE_SECS),
        ),
    })
}

fn millis(key: &'static str, value: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(ConfigError::Invalid {
            key,
            value: "0".into(),
            problem: format!("must be at least 1 (milliseconds); the default is {default}"),
        }),
        ms => Ok(Duration::from_millis(ms)),
    }
}

fn credentials_from_raw(
    raw: RawCredentials,
    warnings: &mut Vec<String>,
) -> Result<CredentialStore, ConfigError> {
    if raw.password.is_some() {
        return Err(ConfigError::InlineSecret { key: "password" });
    }
    if raw.api_token.is_some() || raw.token.is_some() {
        return Err(ConfigError::InlineSecret { key: "api_token" });
    }
    let username = raw.username.ok_or(ConfigError::Missing {
        key: "credentials.username",
        fix: "set it to the Jenkins user the proxy acts as (or pass --user / CRUMB_PROXY_USER)",
    })?;
    if username.is_empty() || username.contains(':') || username.chars().any(char::is_control) {
        return Err(ConfigError::Invalid {
            key: "credentials.username",
            value: username,
            problem: "must be a non-empty Jenkins user id without ':' or control characters \
                      (HTTP Basic cannot carry them)"
                .into(),
        });
    }

    let mut sources: Vec<(&'static str, SecretSource)> = Vec::new();
    if let Some(p) = raw.password_file {
        sources.push(("password_file", SecretSource::File(p)));
    }
    if let Some(v) = raw.password_env {
        sources.push(("password_env", SecretSource::Env(v)));
    }
    if let Some(p) = raw.api_token_file {
        sources.push(("api_token_file", SecretSource::File(p)));
    }
    if let Some(v) = raw.api_token_env {
        sources.push(("api_token_env", SecretSource::Env(v)));
    }
    let (key, source) = match sources.len() {
        0 => {
            return Err(ConfigError::Missing {
                key: "credentials.password_file",
                fix: "set one of credentials.password_file, password_env, api_token_file or \
                      api_token_env (an API token is recommended: Jenkins needs no crumb for it)",
            })
        }
        1 => sources.remove(0),
        _ => {
            return Err(ConfigError::TwoSecrets {
                first: sources[0].0,
                second: sources[1].0,
            })
        }
    };
    let kind = if key.starts_with("password") {
        SecretKind::Password
    } else {
        SecretKind::ApiToken
    };
    let file = match &source {
        SecretSource::File(path) => Some(path.clone()),
        SecretSource::Env(_) => None,
    };
    let secret = source.load("credentials", key, kind.as_str(), warnings)?;
    let credentials =
        Credentials::new(username, kind, &secret).map_err(|_| ConfigError::Invalid {
            key: "credentials.username",
            value: String::new(),
            problem: "cannot be encoded into an Authorization header".into(),
        })?;
    Ok(CredentialStore::new(credentials, file))
}

/// Where a secret comes from. Never from the TOML itself.
enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    /// Reads the secret. `section` and `key` name it in errors.
    fn load(
        self,
        section: &'static str,
        key: &'static str,
        what: &'static str,
        warnings: &mut Vec<String>,
    ) -> Result<Secret, ConfigError> {
        let raw = match self {
            SecretSource::File(path) => match fs::read_to_string(&path) {
                Ok(text) => {
                    if let Some(warning) = loose_permissions(&path, section, key) {
                        warnings.push(warning);
                    }
                    text
                }
                Err(source) => {
                    return Err(ConfigError::SecretFile {
                        section,
                        key,
                        path,
                        source,
                    })
                }
            },
            SecretSource::Env(name) => match std::env::var(&name) {
                Ok(text) => text,
                Err(std::env::VarError::NotPresent) => {
                    return Err(ConfigError::SecretEnv {
                        section,
                        key,
                        name,
                        problem: "that environment variable is not set; export it or use a file",
                    })
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(ConfigError::SecretEnv {
                        section,
                        key,
                        name,
                        problem: "that environment variable is not valid UTF-8",
                    })
                }
            },
        };
        secret_from_text(&raw).ok_or(ConfigError::EmptySecret { section, key, what })
    }
}

/// The secret in a file's or variable's text: `echo secret > file` and
/// Docker/Kubernetes secrets often end with a newline that is not part of
/// the secret. `None` when nothing is left.
fn secret_from_text(text: &str) -> Option<Secret> {
    let value = text.trim_end_matches(['\n', '\r']);
    (!value.is_empty()).then(|| Secret::new(value.to_owned()))
}

/// Reads and trims a secret file; the problem in words when it cannot be
/// used. For re-reading a rotated secret.
pub(crate) fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    secret_from_text(&text).ok_or_else(|| "the file is empty".to_owned())
}

/// A warning if a secret file can be read by its group or by others.
#[cfg(unix)]
fn loose_permissions(path: &Path, section: &str, key: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "secret file {} (`{section}.{key}`) is readable by group or others (mode {:o}); \
             run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

#[cfg(not(unix))]
fn loose_permissions(_: &Path, _: &str, _: &str) -> Option<String> {
    None
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
    let max_idle_secs = raw.max_idle_secs.unwrap_or(DEFAULT_CRUMB_MAX_IDLE_SECS);
    if max_idle_secs == 0 {
        return Err(ConfigError::Invalid {
            key: "crumb.max_idle_secs",
            value: "0".into(),
            problem: format!(
                "must be at least 1; keep it below Jenkins' session timeout (30 minutes by \
                 default); the default is {DEFAULT_CRUMB_MAX_IDLE_SECS}"
            ),
        });
    }
    Ok(CrumbConfig {
        mode,
        max_idle: Duration::from_secs(max_idle_secs),
        replay_body_max_bytes: raw
            .replay_body_max_bytes
            .unwrap_or(DEFAULT_REPLAY_BODY_MAX_BYTES),
    })
}

fn policy_from_raw(
    raw: RawPolicy,
    allowed_hosts: HashSet<String>,
    client_token: Option<Secret>,
) -> Result<Policy, ConfigError> {
    let read_only = raw.read_only.unwrap_or(false);
    let mut rules: Vec<Rule> = Vec::new();
    for (index, r) in raw.rules.into_iter().enumerate() {
        let fail = |problem: String| ConfigError::Rule {
            index,
            path: r.path.clone(),
            problem,
        };
        let action = match r.action.as_str() {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            other => {
                return Err(fail(format!(
                    "action {other:?} must be \"allow\" or \"deny\""
                )))
            }
        };
        let methods = match &r.methods {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(fail(
                    "methods = [] can never match; leave `methods` out to match every method"
                        .into(),
                ))
            }
            Some(list) => {
                let mut methods = Vec::new();
                for m in list {
                    let method = http::Method::from_bytes(m.as_bytes())
                        .ok()
                        .filter(|_| m.chars().all(|c| c.is_ascii_uppercase()))
                        .ok_or_else(|| {
                            fail(format!(
                                "method {m:?} is not an upper-case HTTP method such as \"POST\""
                            ))
                        })?;
                    if method == http::Method::CONNECT {
                        return Err(fail(
                            "CONNECT never reaches the policy (the proxy refuses it)".into(),
                        ));
                    }
                    methods.push(method);
                }
                Some(methods)
            }
        };
        let pattern = Pattern::parse(&r.path).map_err(|p| fail(format!("can never match: {p}")))?;
        if read_only && action == Action::Allow {
            let writes_only = methods.as_ref().is_some_and(|ms| {
                ms.iter()
                    .all(|m| *m != http::Method::GET && *m != http::Method::HEAD)
            });
            if writes_only {
                return Err(fail(
                    "allows only writes, which policy.read_only = true refuses first; \
                     drop the rule or read_only"
                        .into(),
                ));
            }
        }
        if let Some(earlier) = rules
            .iter()
            .find(|e| shadows(e, methods.as_deref(), &pattern))
        {
            return Err(fail(format!(
                "can never match: {} ({}) comes first and matches every request this one would",
                earlier.name,
                earlier.pattern.as_str()
            )));
        }
        rules.push(Rule {
            name: format!("policy.rules[{index}]"),
            action,
            methods,
            pattern,
        });
    }
    let mut allowed_origins = Vec::new();
    for origin in raw.allowed_origins {
        let normalized = origin.trim_end_matches('/').to_ascii_lowercase();
        let ok = normalized
            .parse::<http::Uri>()
            .ok()
            .is_some_and(|u| u.scheme().is_some() && u.authority().is_some() && u.path() == "/");
        if !ok {
            return Err(ConfigError::Invalid {
                key: "policy.allowed_origins",
                value: origin,
                problem: "must be an origin as browsers send it: scheme://host[:port], \
                          e.g. \"http://localhost:3000\""
                    .into(),
            });
        }
        allowed_origins.push(normalized);
    }
    Ok(Policy {
        read_only,
        rules,
        allowed_origins,
        allowed_hosts: allowed_hosts.into_iter().collect(),
        client_token,
    })
}

/// Whether `earlier` matches every request a rule with `methods` and
/// `pattern` would (so the later rule is dead).
fn shadows(earlier: &Rule, methods: Option<&[http::Method]>, pattern: &Pattern) -> bool {
    let methods_covered = match (&earlier.methods, methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(m)) => m.iter().all(|x| e.contains(x)),
    };
    methods_covered && (earlier.pattern.is_everything() || earlier.pattern == *pattern)
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
    let max_header_bytes = raw.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES);
    if max_header_bytes < 8192 {
        return Err(ConfigError::Invalid {
            key: "limits.max_header_bytes",
            value: max_header_bytes.to_string(),
            problem: format!("must be at least 8192 (ordinary clients' request heads must fit); the default is {DEFAULT_MAX_HEADER_BYTES}"),
        });
    }
    let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err(ConfigError::Invalid {
            key: "limits.max_connections",
            value: "0".into(),
            problem: format!("must be at least 1; the default is {DEFAULT_MAX_CONNECTIONS}"),
        });
    }
    let secs = |key: &'static str, value: Option<u64>, default: u64| match value.unwrap_or(default)
    {
        0 => Err(ConfigError::Invalid {
            key,
            value: "0".into(),
            problem: format!("must be at least 1 (seconds); the default is {default}"),
        }),
        n => Ok(Duration::from_secs(n)),
    };
    Ok(LimitsConfig {
        max_header_bytes,
        max_connections,
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("crumb-proxy-config-{name}-{}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("pw"), "s3cr3t-pw\n").unwrap();
            fs::write(dir.join("token"), "11aa22bb33cc\r\n").unwrap();
            fs::write(dir.join("empty"), "\n").unwrap();
            Self(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const BASE: &str = r#"
        [upstream]
        url = "http://127.0.0.1:8080/jenkins/"
        [credentials]
        username = "alice"
    "#;

    fn load(dir: &Dir, extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(&format!("{BASE}\n{extra}"), &dir.0)
    }

    #[test]
    fn defaults_and_secret_file_relative_to_config() {
        let dir = Dir::new("defaults");
        let c = load(&dir, "password_file = \"pw\"").unwrap();
        assert_eq!(
            c.listen.addr,
            ListenAddr::Tcp("127.0.0.1:8181".parse().unwrap())
        );
        assert_eq!(c.listen.socket_mode, 0o600);
        assert!(c.policy.allowed_hosts.contains("localhost"));
        assert!(!c.policy.read_only);
        assert_eq!(c.crumb.mode, CrumbMode::Auto);
        assert_eq!(c.crumb.max_idle, Duration::from_secs(1500));
        assert_eq!(c.crumb.replay_body_max_bytes, 1 << 20);
        assert_eq!(c.credentials.kind(), SecretKind::Password);
        // base64("alice:s3cr3t-pw"): the trailing newline is not part of it.
        assert_eq!(
            c.credentials.current().0.authorization().clone(),
            "Basic YWxpY2U6czNjcjN0LXB3"
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cr3t-pw") && !debug.contains("YWxpY2U6czNjcjN0LXB3"));
    }

    #[test]
    fn token_with_crlf_is_trimmed() {
        let dir = Dir::new("token");
        let c = load(&dir, "api_token_file = \"token\"").unwrap();
        assert_eq!(c.credentials.kind(), SecretKind::ApiToken);
        assert_eq!(
            c.credentials.current().0.authorization().clone(),
            "Basic YWxpY2U6MTFhYTIyYmIzM2Nj"
        );
    }

    /// Each refused configuration names the key (and the value where there
    /// is one) in its message.
    #[test]
    fn errors_name_key_and_fix() {
        let dir = Dir::new("errors");
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "",
                "password = \"x\"",
                &["credentials.password", "password_file"],
            ),
            (
                "",
                "api_token = \"x\"",
                &["credentials.api_token", "api_token_env"],
            ),
            ("", "", &["credentials.password_file", "api_token_file"]),
            (
                "",
                "password_file = \"pw\"\napi_token_env = \"X\"",
                &["password_file and api_token_env"],
            ),
            (
                "",
                "password_file = \"missing\"",
                &["credentials.password_file", "missing", "create it"],
            ),
            (
                "",
                "password_file = \"empty\"",
                &["credentials.password_file", "empty"],
            ),
            (
                "",
                "password_env = \"CRUMB_PROXY_TEST_SURELY_UNSET\"",
                &["CRUMB_PROXY_TEST_SURELY_UNSET", "not set"],
            ),
            (
                "[listen]\naddress = \"8181\"",
                "password_file = \"pw\"",
                &["listen.address", "\"8181\"", "bare port"],
            ),
            (
                "[listen]\naddress = \"0.0.0.0:8181\"",
                "password_file = \"pw\"",
                &["listen.address", "0.0.0.0:8181", "allow_remote"],
            ),
            (
                "[listen]\naddress = \"nowhere\"",
                "password_file = \"pw\"",
                &["listen.address", "HOST:PORT"],
            ),
            (
                "[crumb]\nmode = \"sometimes\"",
                "password_file = \"pw\"",
                &["crumb.mode", "sometimes", "always"],
            ),
            (
                "[crumb]\nmax_idle_secs = 0",
                "password_file = \"pw\"",
                &["crumb.max_idle_secs", "at least 1"],
            ),
            (
                "[listen]\nadress = \"x\"",
                "password_file = \"pw\"",
                &["adress"],
            ),
        ];
        for (before, creds, needles) in cases {
            let text = format!("{before}\n{BASE}\n{creds}");
            let err = Config::from_toml_str(&text, &dir.0)
                .unwrap_err()
                .to_string();
            for needle in *needles {
                assert!(err.contains(needle), "{creds:?}: {err:?} lacks {needle:?}");
            }
            assert!(!err.contains("s3cr3t"), "{err}");
        }
    }

    /// A rule that could never match, or never take effect, is refused
    /// with the rule's index and why (a filter that silently does nothing
    /// is how kubectl's `--reject-methods` failed, anchors.md §3.1).
    #[test]
    fn rules_that_can_never_match_are_config_errors() {
        let dir = Dir::new("rules");
        let rule = |body: &str| format!("password_file = \"pw\"\n[[policy.rules]]\n{body}");
        for (body, needles) in [
            ("action = \"allow\"\npath = \"job/x\"", &["policy.rules[0]", "start with /"][..]),
            ("action = \"deny\"\npath = \"/Job/x\"", &["lower case", "/job/x"]),
            ("action = \"deny\"\npath = \"/job/x*\"", &["whole segments"]),
            ("action = \"deny\"\npath = \"/job/%78\"", &["decoded"]),
            ("action = \"deny\"\npath = \"/job/../x\"", &["`..`"]),
            ("action = \"deny\"\npath = \"/a//b\"", &["empty segment"]),
            ("action = \"deny\"\nmethods = []\npath = \"/x\"", &["methods = []"]),
            ("action = \"deny\"\nmethods = [\"post\"]\npath = \"/x\"", &["upper-case"]),
            ("action = \"deny\"\nmethods = [\"CONNECT\"]\npath = \"/x\"", &["CONNECT"]),
            ("action = \"block\"\npath = \"/x\"", &["\"allow\" or \"deny\""]),
            (
                "action = \"deny\"\npath = \"/**\"\n[[policy.rules]]\naction = \"allow\"\npath = \"/x\"",
                &["policy.rules[1]", "policy.rules[0]", "never match"],
            ),
            (
                "action = \"deny\"\nmethods = [\"POST\", \"PUT\"]\npath = \"/x\"\n[[policy.rules]]\naction = \"allow\"\nmethods = [\"POST\"]\npath = \"/x\"",
                &["policy.rules[1]", "comes first"],
            ),
        ] {
            let err = load(&dir, &rule(body)).unwrap_err().to_string();
            for needle in needles {
                assert!(err.contains(needle), "{body:?}: {err:?} lacks {needle:?}");
            }
        }
        let err = load(&dir, "password_file = \"pw\"\n[policy]\nread_only = true\n[[policy.rules]]\naction = \"allow\"\nmethods = [\"POST\"]\npath = \"/x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("read_only"), "{err}");
        // Sound rules load, in order.
        let c = load(&dir, &rule("action = \"allow\"\nmethods = [\"POST\"]\npath = \"/scripttext\"\n[[policy.rules]]\naction = \"deny\"\npath = \"/job/*/build/\"")).unwrap();
        assert_eq!(c.policy.rules.len(), 2);
        assert_eq!(c.policy.rules[1].name, "policy.rules[1]");
    }

    #[test]
    fn tls_health_and_shutdown_keys_are_checked() {
        let dir = Dir::new("tls-keys");
        let with = |upstream: &str, rest: &str| {
            format!("[upstream]\nurl = \"{upstream}\"\n[credentials]\nusername = \"a\"\npassword_file = \"pw\"\n{rest}")
        };
        for (text, needles) in [
            (with("http://ci/", ""), &[][..]),
            (
                String::from("[upstream]\nurl = \"http://ci/\"\nca_file = \"ca.pem\"\n[credentials]\nusername = \"a\"\npassword_file = \"pw\""),
                &["only apply to an https:// upstream"][..],
            ),
            (
                String::from("[upstream]\nurl = \"https://ci/\"\nclient_cert_file = \"c.pem\"\n[credentials]\nusername = \"a\"\npassword_file = \"pw\""),
                &["upstream.client_key_file", "needs its private key"],
            ),
            (
                String::from("[upstream]\nurl = \"https://ci/\"\nca_file = \"c.pem\"\ndanger_accept_invalid_certs = true\n[credentials]\nusername = \"a\"\npassword_file = \"pw\""),
                &["danger_accept_invalid_certs", "never used"],
            ),
            (with("http://ci/", "[health]\naddress = \"8182\""), &["health.address"]),
        ] {
            match Config::from_toml_str(&text, &dir.0) {
                Ok(_) => assert!(needles.is_empty(), "{text} loaded"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(!needles.is_empty(), "{text}: {e}");
                    for needle in needles {
                        assert!(e.contains(needle), "{e} lacks {needle}");
                    }
                }
            }
        }
        let c = Config::from_toml_str(
            &with(
                "http://ci/",
                "[health]\naddress = \"\"\n[shutdown]\ngrace_secs = 5",
            ),
            &dir.0,
        )
        .unwrap();
        assert_eq!(c.health_addr(), None);
        assert_eq!(c.shutdown.grace, Duration::from_secs(5));
        assert_eq!(c.shutdown.drain, Duration::from_secs(30));
        let c = Config::from_toml_str(&with("http://ci/", ""), &dir.0).unwrap();
        assert_eq!(c.health_addr(), Some("127.0.0.1:8182".parse().unwrap()));
    }

    #[test]
    fn listen_extras_are_checked() {
        let dir = Dir::new("listen-extras");
        for (listen, needle) in [
            ("allowed_hosts = [\"http://x\"]", "listen.allowed_hosts"),
            ("allowed_hosts = [\"x:80\"]", "without scheme or port"),
            ("socket_mode = \"rw\"", "listen.socket_mode"),
            ("address = \"unix:\"", "name the socket file"),
            (
                "client_token_file = \"token\"\nclient_token_env = \"X\"",
                "not both",
            ),
        ] {
            let err = load(&dir, &format!("password_file = \"pw\"\n[listen]\n{listen}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{listen}: {err}");
        }
        let err = load(
            &dir,
            "password_file = \"pw\"\n[policy]\nallowed_origins = [\"localhost:3000\"]",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("policy.allowed_origins"), "{err}");
        let err = load(
            &dir,
            "password_file = \"pw\"\n[limits]\nmax_header_bytes = 100",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("limits.max_header_bytes") && err.contains("8192"),
            "{err}"
        );
    }

    #[test]
    fn loose_secret_file_gives_a_warning() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = Dir::new("loose");
        let pw = dir.0.join("pw");
        fs::set_permissions(&pw, fs::Permissions::from_mode(0o640)).unwrap();
        let c = load(&dir, "password_file = \"pw\"").unwrap();
        assert_eq!(c.warnings().len(), 1);
        assert!(c.warnings()[0].contains("chmod 600") && c.warnings()[0].contains("pw"));
        fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load(&dir, "password_file = \"pw\"")
            .unwrap()
            .warnings()
            .is_empty());
    }

    #[test]
    fn upstream_url_is_checked() {
        let dir = Dir::new("upstream");
        for (url, needle) in [
            ("ftp://x/", "http"),
            ("http://u:p@ci/", "credentials"),
            ("http://ci/?a=b", "query"),
            ("/jenkins", "absolute"),
        ] {
            let text = format!(
                "[upstream]\nurl = \"{url}\"\n[credentials]\nusername = \"a\"\npassword_file = \"pw\""
            );
            let err = Config::from_toml_str(&text, &dir.0)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("upstream.url") && err.contains(needle),
                "{err}"
            );
        }
    }

    #[test]
    fn remote_allowed_explicitly_and_localhost_accepted() {
        let dir = Dir::new("remote");
        let err = load(
            &dir,
            "password_file = \"pw\"\n[listen]\naddress = \"0.0.0.0:9\"\nallow_remote = true",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("client token"), "{err}");
        let c = load(
            &dir,
            "password_file = \"pw\"\n[listen]\naddress = \"0.0.0.0:9\"\nallow_remote = true\nclient_token_file = \"token\"",
        )
        .unwrap();
        assert_eq!(c.listen.addr, ListenAddr::Tcp("0.0.0.0:9".parse().unwrap()));
        assert!(c.policy.client_token.is_some());
        assert!(c.policy.allowed_hosts.contains("0.0.0.0"));
        let c = load(
            &dir,
            "password_file = \"pw\"\n[listen]\naddress = \"localhost:0\"",
        )
        .unwrap();
        assert_eq!(
            c.listen.addr,
            ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())
        );
        let c = load(&dir, "password_file = \"pw\"\n[listen]\naddress = \"unix:proxy.sock\"\nsocket_mode = \"0660\"").unwrap();
        assert_eq!(c.listen.addr, ListenAddr::Unix(dir.0.join("proxy.sock")));
        assert_eq!(c.listen.socket_mode, 0o660);
    }

    #[test]
    fn overrides_win_and_replace_the_secret_source() {
        let dir = Dir::new("overrides");
        let file = dir.0.join("c.toml");
        fs::write(
            &file,
            format!("{BASE}\npassword_file = \"pw\"\n[crumb]\nmode = \"always\""),
        )
        .unwrap();
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".into()),
            api_token_file: Some(dir.0.join("token")),
            crumb_mode: Some("never".into()),
            user: Some("bob".into()),
            ..Overrides::default()
        };
        let c = Config::load(Some(&file), &overrides).unwrap();
        assert_eq!(
            c.listen.addr,
            ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(c.credentials.kind(), SecretKind::ApiToken);
        assert_eq!(c.credentials.username(), "bob");
        assert_eq!(c.crumb.mode, CrumbMode::Never);
    }
}
