//! Logging set-up.
//!
//! This module owns the tracing subscriber: lines on stderr, human-readable
//! (`text`) or one JSON object per line (`json`, with the stable top-level
//! fields `timestamp`, `level`, `target`, `message` and the event's own
//! fields), level from `--log-level`, else `RUST_LOG`, else `info` for
//! crumb-proxy and `warn` for the libraries. What gets logged is decided
//! where it happens; the rule everywhere is structured fields, and never a
//! header value, a query string, a password, token, crumb or session id.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter used when neither `--log-level` nor `RUST_LOG` is set.
pub(crate) const DEFAULT_FILTER: &str = "warn,crumb_proxy=info";

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. Call once, from `main`. `level` is a
/// level (`debug`) or a full filter (`warn,crumb_proxy=debug`).
///
/// # Errors
/// When `level` is not a valid filter.
pub fn init(format: LogFormat, level: Option<&str>) -> Result<(), String> {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level)
            .map_err(|e| format!("--log-level {level:?} is not a level or filter: {e}"))?,
        None => {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}
