//! The `[listen]` section: the listening address, the host names the proxy
//! answers to (the DNS-rebinding allow-list) and the client token.

use super::*;

/// The names every listener answers to (the DNS-rebinding allow-list
/// starts here).
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

pub(super) fn listen_from_raw(
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

pub(super) fn parse_listen_addr(text: &str) -> Result<ListenAddr, ConfigError> {
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
