//! Secret hygiene for the whole suite: every in-process proxy logs at TRACE
//! into one process-wide buffer, every binary at TRACE into its own; when a
//! proxy stops, and whenever a response made by the proxy itself arrives,
//! nothing in them may contain a secret (configured passwords, tokens and
//! client tokens, their Basic encodings, and every crumb and session id a
//! Jenkins double has handed out).

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::sync::{Mutex, OnceLock, PoisonError};

use base64::Engine as _;
use tracing_subscriber::fmt::MakeWriter;

use crate::support::jenkins::issued_secrets;

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static INSTALLED: OnceLock<()> = OnceLock::new();

#[derive(Debug, Clone, Copy)]
struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = Sink;
    fn make_writer(&'a self) -> Sink {
        Sink
    }
}

/// Installs the process-wide TRACE subscriber (once).
pub fn install() {
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(Sink)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// Registers a configured secret and its Basic encodings.
pub fn register(user: &str, secret: &str) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
    let mut secrets = SECRETS.lock().unwrap_or_else(PoisonError::into_inner);
    secrets.push(secret.to_owned());
    secrets.push(b64);
}

fn all_secrets() -> Vec<String> {
    let mut all = SECRETS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    all.extend(issued_secrets());
    all
}

/// Panics if `text` contains any known secret; `what` says where it was.
pub fn assert_clean(what: &str, text: &str) {
    for secret in all_secrets() {
        if let Some(at) = text.find(&secret) {
            let line = text[..at].rsplit('\n').next().unwrap_or_default();
            panic!(
                "a secret ({}…) leaked into {what}, after: {line:?}",
                &secret[..secret.len().min(4)]
            );
        }
    }
}

/// Checks the process-wide log.
pub fn assert_log_clean() {
    let log =
        String::from_utf8_lossy(&LOG.lock().unwrap_or_else(PoisonError::into_inner)).into_owned();
    assert_clean("the TRACE log", &log);
}

/// Everything logged in this process so far.
pub fn contents() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
}
