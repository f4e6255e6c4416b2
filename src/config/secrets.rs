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
            SecretSource::File(path) => match read_secret_text(&path) {
                Ok(text) => {
                    if let Some(warning) = loose_permissions(&path, section, key) {
                        warnings.push(warning);
                    }
                    text
                }
                Err(SecretFileError::Io(source)) => {
                    return Err(ConfigError::SecretFile {
                        section,
                        key,
                        path,
                        source,
                    })
                }
                Err(SecretFileError::Unfit(problem)) => {
                    return Err(ConfigError::SecretFileUnfit {
                        section,
                        key,
                        path,
                        problem,
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
    let text = read_secret_text(path).map_err(|e| match e {
        SecretFileError::Io(e) => e.to_string(),
        SecretFileError::Unfit(problem) => problem,
    })?;
    secret_from_text(&text).ok_or_else(|| "the file is empty".to_owned())
}

/// The most a secret file may hold: passwords and API tokens are tens of
/// bytes; a larger file is the wrong file.
pub(crate) const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Why a secret file could not be read.
enum SecretFileError {
    Io(io::Error),
    /// It could be read, but is not a secret file: the problem and the fix.
    Unfit(String),
}

/// The text of a secret file: a regular file (a symlink to one, as
/// Kubernetes Secret volumes have, is followed), at most
/// [`MAX_SECRET_FILE_BYTES`]. It is opened without blocking and checked on
/// the open file, so a FIFO cannot hang the proxy, `/dev/zero` is not read
/// until memory runs out, and a file swapped in between cannot slip past.
fn read_secret_text(path: &Path) -> Result<String, SecretFileError> {
    use std::io::Read as _;
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(SecretFileError::Io)?;
    let meta = file.metadata().map_err(SecretFileError::Io)?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(SecretFileError::Unfit(format!(
            "is {kind}; point the key at a regular file holding the secret (or a symlink to one)"
        )));
    }
    let too_large = || {
        SecretFileError::Unfit(format!(
            "is larger than {MAX_SECRET_FILE_BYTES} bytes, more than any password or token; \
             point the key at the file that holds only the secret"
        ))
    };
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(too_large());
    }
    let mut text = String::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(SecretFileError::Io)?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(too_large());
    }
    Ok(text)
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
