//! Sockets and connections.
//!
//! This module owns the accept loop, the HTTP/1.1 connection settings
//! (timer, header-read timeout, keep-alive, upgrades), graceful shutdown with
//! a drain deadline, and waiting for SIGINT/SIGTERM. It knows nothing about
//! Jenkins: each connection gets a `proxy::Proxy` service and that is all.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::Config;
use crate::proxy::{Proxy, Shared};
use crate::upstream::UpstreamInitError;

/// How long a client may take to send its request headers (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections may take to finish after a shutdown signal.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// A proxy ready to serve: configuration validated and the upstream client
/// built (for HTTPS, root certificates loaded), but no socket touched yet.
#[derive(Debug)]
pub struct App {
    shared: Arc<Shared>,
}

impl App {
    /// Builds the upstream client and crumb cache from a validated config.
    ///
    /// # Errors
    /// When the upstream client cannot be built (no root certificates for an
    /// `https` upstream).
    pub fn new(config: Config) -> Result<Self, UpstreamInitError> {
        Ok(Self {
            shared: Arc::new(Shared::new(config)?),
        })
    }

    /// One line for the start-up log: where requests go and how.
    pub fn describe(&self) -> String {
        format!(
            "{} (crumbs {})",
            self.shared.upstream().base(),
            if self.shared.crumbs_enabled() {
                "on POST"
            } else {
                "off"
            }
        )
    }

    /// Serves connections from `listener` until `shutdown` completes, then
    /// stops accepting and lets open connections finish for up to 30 s.
    ///
    /// # Errors
    /// Only if the listener's own address cannot be read.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let local_addr = listener.local_addr()?;
        tracing::info!(addr = %local_addr, upstream = %self.describe(), "listening");
        // Connections watch this channel for the shutdown signal; once all
        // of them have dropped their receiver, the drain is complete. (hyper-
        // util's `GracefulShutdown` works the same way but does not accept
        // connections with upgrades enabled.)
        let (drain, _) = watch::channel(false);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        serve_connection(&drain, stream, Proxy::new(self.shared.clone(), peer, local_addr));
                    }
                    Err(e) => handle_accept_error(e).await,
                },
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        tracing::info!("shutting down: no new connections, draining open ones");
        let _ = drain.send(true);
        match tokio::time::timeout(DRAIN_DEADLINE, drain.closed()).await {
            Ok(()) => tracing::info!("all connections closed"),
            Err(_) => tracing::warn!(
                deadline_secs = DRAIN_DEADLINE.as_secs(),
                "drain deadline passed; closing the remaining connections"
            ),
        }
        Ok(())
    }
}

/// Convenience for tests and embedders: [`App::new`] then [`App::serve`].
///
/// # Errors
/// As [`App::new`] and [`App::serve`].
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    App::new(config)?.serve(listener, shutdown).await?;
    Ok(())
}

/// Why [`serve`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Init(#[from] UpstreamInitError),
    #[error("listener failed: {0}")]
    Io(#[from] io::Error),
}

fn serve_connection(drain: &watch::Sender<bool>, stream: TcpStream, service: Proxy) {
    let peer = service.peer();
    let _ = stream.set_nodelay(true);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut stop = drain.subscribe();
    tokio::spawn(async move {
        let mut conn = std::pin::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                // Finish the request in flight, then close (no keep-alive).
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
        drop(stop);
    });
}

/// Accept errors never end the loop (axum `serve/listener.rs`): errors of
/// one connection are skipped; resource exhaustion (EMFILE) is logged and
/// retried after a second, so the proxy recovers when descriptors free up.
async fn handle_accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Completes on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutdown requested"),
        () = term => tracing::info!(signal = "SIGTERM", "shutdown requested"),
    }
}
