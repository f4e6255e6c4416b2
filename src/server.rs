//! Connections.
//!
//! This module owns the accept loop with its connection cap, the HTTP/1.1
//! connection settings (timer, header size cap, header-read timeout, idle
//! timeout, keep-alive, upgrades), graceful shutdown with a drain deadline,
//! and waiting for SIGINT/SIGTERM. Binding sockets is `listener`'s job; it
//! knows nothing about Jenkins: each connection gets a `proxy::Proxy`
//! service and that is all.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::{Config, LimitsConfig};
use crate::listener::{Accepted, IdleTimeout, Listener, Peer};
use crate::proxy::{Proxy, Shared};
use crate::upstream::UpstreamInitError;

/// How long open connections may take to finish after a shutdown signal.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// A proxy ready to serve: configuration validated and the upstream client
/// built (for HTTPS, root certificates loaded), but no socket touched yet.
#[derive(Debug)]
pub struct App {
    shared: Arc<Shared>,
    limits: LimitsConfig,
}

impl App {
    /// Builds the upstream client and crumb cache from a validated config.
    ///
    /// # Errors
    /// When the upstream client cannot be built (no root certificates for an
    /// `https` upstream).
    pub fn new(config: Config) -> Result<Self, UpstreamInitError> {
        let limits = config.limits.clone();
        Ok(Self {
            shared: Arc::new(Shared::new(config)?),
            limits,
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
        listener: impl Into<Listener>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let listener = listener.into();
        let authority: Arc<str> = listener.authority()?.into();
        tracing::info!(addr = %listener.local_addr()?, upstream = %self.describe(), "listening");
        // Connections watch this channel for the shutdown signal; once all
        // of them have dropped their receiver, the drain is complete. (hyper-
        // util's `GracefulShutdown` works the same way but does not accept
        // connections with upgrades enabled.)
        let (drain, _) = watch::channel(false);
        // At most `max_connections` are served at once: the loop takes a
        // permit before accepting, so further clients wait in the kernel's
        // backlog instead of costing memory here (mini-redis).
        let permits = Arc::new(Semaphore::new(self.limits.max_connections));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(Accepted::Tcp(stream, addr)) => {
                        let _ = stream.set_nodelay(true);
                        let service = Proxy::new(self.shared.clone(), Peer::Tcp(addr), authority.clone());
                        serve_connection(&drain, &self.limits, stream, service, permit);
                    }
                    Ok(Accepted::Unix(stream, peer)) => {
                        let service = Proxy::new(self.shared.clone(), peer, authority.clone());
                        serve_connection(&drain, &self.limits, stream, service, permit);
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

fn serve_connection<I>(
    drain: &watch::Sender<bool>,
    limits: &LimitsConfig,
    io: I,
    service: Proxy,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = service.peer();
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // Counted from when the proxy starts waiting for a request head, so
        // it also bounds a keep-alive connection's wait for the next one.
        .header_read_timeout(limits.header_read_timeout)
        // A head larger than this is answered 431 (RFC 6585 §5).
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true)
        .serve_connection(
            TokioIo::new(IdleTimeout::new(io, limits.idle_timeout)),
            service,
        )
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
        drop(permit);
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
