//! Logging set-up.
//!
//! This module owns the tracing subscriber: human-readable lines on stderr,
//! level from `RUST_LOG` (default `info` for crumb-proxy, `warn` for the
//! libraries). What gets logged is decided where it happens; the rule
//! everywhere is structured fields, and never a header value, a query
//! string, a password, token, crumb or session id.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is not set.
pub(crate) const DEFAULT_FILTER: &str = "warn,crumb_proxy=info";

/// Installs the global subscriber. Call once, from `main`.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
