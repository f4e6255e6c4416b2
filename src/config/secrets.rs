//! Secrets in the configuration: where each comes from (inline, a file, an
//! environment variable), reading and trimming a secret file, and the
//! warning about a secret file that others can read.

use super::*;

pub(super) fn credentials_from_raw(
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
pub(super) enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    /// Reads the secret. `section` and `key` name it in errors.
    pub(super) fn load(
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
