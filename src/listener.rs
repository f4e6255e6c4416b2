//! Listening sockets and who is on the other end.
//!
//! This module owns binding a TCP or Unix socket listener (a Unix socket is
//! created with a chosen mode, replaces a stale socket file, refuses to
//! replace a live one or a non-socket file, and is removed on exit), telling
//! who a peer is (TCP address, or `SO_PEERCRED` uid and pid on a Unix
//! socket), and the idle timeout wrapper for client connections. It knows
//! nothing about HTTP; `server` drives connections.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::time::Instant;

use crate::config::ListenAddr;
use crate::timer::LazyDeadline;

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixSocket),
}

/// A Unix socket listener that removes its socket file when dropped, if
/// the file at its path is still this socket.
#[derive(Debug)]
pub struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file as bound: another process may
    /// have replaced it since (a second proxy that found it stale, an
    /// operator), and that file is not ours to remove.
    identity: (u64, u64),
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        if file_identity(&self.path).is_some_and(|id| id == self.identity) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Device and inode of the file at `path` itself (not a symlink's target).
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|meta| (meta.dev(), meta.ino()))
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Listener::Tcp(l)
    }
}

/// Who sent a request, for the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    Tcp(SocketAddr),
    /// `SO_PEERCRED` of the connecting process.
    Unix {
        uid: u32,
        pid: Option<i32>,
    },
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(addr) => write!(f, "{addr}"),
            Peer::Unix {
                uid,
                pid: Some(pid),
            } => write!(f, "uid={uid},pid={pid}"),
            Peer::Unix { uid, pid: None } => write!(f, "uid={uid}"),
        }
    }
}

/// An accepted connection.
pub(crate) enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream, Peer),
}

impl Listener {
    /// Binds `addr`. A Unix socket gets `socket_mode` before it becomes
    /// reachable under its name: it is bound under an unpredictable
    /// temporary name, its mode set, then renamed into place.
    ///
    /// # Errors
    /// The address is in use (for a Unix socket: another process answers on
    /// it, or the path is not a socket), the socket's directory lets other
    /// users replace it (writable by others, no sticky bit), or binding
    /// fails otherwise.
    pub async fn bind(addr: &ListenAddr, socket_mode: u32) -> io::Result<Self> {
        match addr {
            ListenAddr::Tcp(sock) => Ok(Listener::Tcp(TcpListener::bind(sock).await?)),
            ListenAddr::Unix(path) => Ok(Listener::Unix(bind_unix(path, socket_mode).await?)),
        }
    }

    /// What to log as the listening address.
    pub fn local_addr(&self) -> io::Result<String> {
        match self {
            Listener::Tcp(l) => Ok(l.local_addr()?.to_string()),
            Listener::Unix(u) => Ok(format!("unix:{}", u.path.display())),
        }
    }

    /// The authority clients use to reach the proxy, when they send no
    /// usable `Host` (for `Location` rewriting).
    pub(crate) fn authority(&self) -> io::Result<String> {
        match self {
            Listener::Tcp(l) => Ok(l.local_addr()?.to_string()),
            Listener::Unix(_) => Ok("localhost".to_owned()),
        }
    }

    pub(crate) async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(l) => {
                let (stream, addr) = l.accept().await?;
                Ok(Accepted::Tcp(stream, addr))
            }
            Listener::Unix(u) => {
                let (stream, _) = u.listener.accept().await?;
                let peer = match stream.peer_cred() {
                    Ok(cred) => Peer::Unix {
                        uid: cred.uid(),
                        pid: cred.pid(),
                    },
                    Err(_) => Peer::Unix {
                        uid: u32::MAX,
                        pid: None,
                    },
                };
                Ok(Accepted::Unix(stream, peer))
            }
        }
    }
}

async fn bind_unix(path: &Path, mode: u32) -> io::Result<UnixSocket> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    check_directory(path)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // Live or stale? Only a socket nobody answers on is replaced.
            match UnixStream::connect(path).await {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("another process is listening on {}", path.display()),
                    ))
                }
                Err(_) => std::fs::remove_file(path)?,
            }
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; remove it or choose another path",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    // An unpredictable name, and `bind` never opens an existing file: no
    // other user can have placed something there to be renamed into place.
    let (listener, temp) = loop {
        let mut temp_name = file_name.to_owned();
        temp_name.push(format!(".{:016x}.tmp", random_u64()));
        let temp = path.with_file_name(temp_name);
        match UnixListener::bind(&temp) {
            Ok(listener) => break (listener, temp),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    };
    let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    let identity = file_identity(path).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} vanished right after it was bound", path.display()),
        )
    })?;
    Ok(UnixSocket {
        listener,
        path: path.to_owned(),
        identity,
    })
}

/// Refuses a socket directory in which other users may delete or rename
/// files (writable by them, without the sticky bit): any of them could put
/// their own socket in the proxy's place, and clients would talk to it.
/// `/tmp` (sticky) and a private `RuntimeDirectory=` pass.
fn check_directory(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mode = std::fs::metadata(dir)?.permissions().mode();
    let writable_by_others = mode & 0o002 != 0;
    let sticky = mode & 0o1000 != 0;
    if writable_by_others && !sticky {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is writable by every user and has no sticky bit, so anyone could replace \
                 the proxy's socket with their own; use a directory only the proxy's user can \
                 write (e.g. a systemd RuntimeDirectory=), or `chmod +t {}`",
                dir.display(),
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// 64 unpredictable bits from the standard library's per-process random
/// keys (`RandomState`, seeded by the OS), without another dependency.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

pin_project_lite::pin_project! {
    /// Closes a client connection on which no bytes moved in either
    /// direction for `idle` while the server was waiting on it: between
    /// requests, or a client that stalls mid-body or stops reading. Waiting
    /// for Jenkins is not the client's idleness and is bounded elsewhere.
    /// Also fails writes once the client takes the response slower than
    /// the minimum rate (`rate`): the socket would not take more for longer
    /// than the bytes it did take pay for.
    #[derive(Debug)]
    pub(crate) struct IdleTimeout<I> {
        #[pin]
        inner: I,
        clock: IdleClock,
        writes: crate::rate::Debt,
        // Told when bytes arrive, so that the connection is not reclaimed
        // half-way through a request head.
        activity: Option<std::sync::Arc<crate::activity::Activity>>,
    }
}

/// When bytes last moved, and a timer that is moved only when it fires
/// (reading the clock per read or write is cheaper than moving a timer).
#[derive(Debug)]
struct IdleClock {
    idle: Duration,
    last: Instant,
    timer: LazyDeadline,
}

impl IdleClock {
    /// Notes the outcome of an I/O call; when the socket is not ready,
    /// fails the operation once nothing moved for `idle`.
    fn track<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
        moved: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(Ok(value)) => {
                if moved(&value) {
                    self.last = Instant::now();
                }
                Poll::Ready(Ok(value))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self
                .timer
                .poll_passed(crate::timer::later(self.last, self.idle), cx)
                .map(|()| Err(timed_out())),
        }
    }
}

impl<I> IdleTimeout<I> {
    pub(crate) fn new(inner: I, idle: Duration, min_rate: crate::rate::MinRate) -> Self {
        Self {
            inner,
            writes: min_rate.debt(),
            activity: None,
            clock: IdleClock {
                idle,
                last: Instant::now(),
                timer: LazyDeadline::new(crate::timer::later(Instant::now(), idle)),
            },
        }
    }
}

impl<I> IdleTimeout<I> {
    /// Marks `activity` busy whenever bytes arrive.
    pub(crate) fn marking(mut self, activity: std::sync::Arc<crate::activity::Activity>) -> Self {
        self.activity = Some(activity);
        self
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "client connection idle")
}

/// Charges a write the socket would not take to the client's debt; the
/// error to fail it with once the client is too slow.
fn charge(
    writes: &mut crate::rate::Debt,
    cx: &mut Context<'_>,
    result: &Poll<io::Result<usize>>,
) -> Option<io::Error> {
    match result {
        Poll::Ready(Ok(n)) => {
            writes.moved(*n);
            None
        }
        Poll::Pending => writes.waiting(cx).is_ready().then(|| too_slow(writes)),
        Poll::Ready(Err(_)) => None,
    }
}

/// The error a write fails with when the client reads too slowly; the
/// server tells it apart with [`is_too_slow`].
fn too_slow(writes: &crate::rate::Debt) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, writes.too_slow())
}

/// Whether `err` (or its source chain) says the client read too slowly.
pub(crate) fn is_too_slow(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<crate::rate::TooSlow>() {
            return true;
        }
        // `io::Error` hides its custom error from `source()`.
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<crate::rate::TooSlow>())
            {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

impl<I: AsyncRead> AsyncRead for IdleTimeout<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        let after = buf.filled().len();
        if after > before {
            if let Some(activity) = this.activity {
                activity.receiving();
            }
        }
        this.clock.track(cx, result, |()| after > before)
    }
}

impl<I: AsyncWrite> AsyncWrite for IdleTimeout<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write(cx, data);
        if let Some(e) = charge(this.writes, cx, &result) {
            return Poll::Ready(Err(e));
        }
        this.clock.track(cx, result, |n| *n > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write_vectored(cx, bufs);
        if let Some(e) = charge(this.writes, cx, &result) {
            return Poll::Ready(Err(e));
        }
        this.clock.track(cx, result, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A directory others may write without the sticky bit is refused with
    /// the fix; with the sticky bit (as `/tmp`) it is fine.
    #[tokio::test]
    async fn socket_directory_writable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let sock = shared.join("proxy.sock");
        let err = bind_unix(&sock, 0o600).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("chmod +t"), "{err}");
        assert!(!sock.exists());
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let bound = bind_unix(&sock, 0o600).await.unwrap();
        drop(bound);
        assert!(!sock.exists(), "removed on drop");
    }

    /// On exit the socket file is removed only if it is still the one this
    /// listener bound; a file put in its place stays.
    #[tokio::test]
    async fn only_its_own_socket_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("proxy.sock");
        let bound = bind_unix(&sock, 0o600).await.unwrap();
        assert_eq!(
            std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Someone replaced it (a second proxy that took over the path).
        std::fs::remove_file(&sock).unwrap();
        std::fs::write(&sock, "not ours").unwrap();
        drop(bound);
        assert_eq!(std::fs::read_to_string(&sock).unwrap(), "not ours");
        // No temporary names are left behind either.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["proxy.sock"]);
    }

    /// Bytes that keep moving keep the connection open past `idle`; once
    /// they stop, reads fail after `idle`, measured from the last byte.
    #[tokio::test(start_paused = true)]
    async fn idle_is_counted_from_the_last_byte() {
        let (client, server) = tokio::io::duplex(64);
        let off = crate::rate::MinRate {
            bytes_per_sec: 0,
            grace: Duration::from_secs(1),
        };
        let mut server = IdleTimeout::new(server, Duration::from_secs(1), off);
        let mut client = client;
        let started = Instant::now();
        let writer = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(600)).await;
                client.write_all(b"x").await.unwrap();
            }
            client
        });
        let mut buf = [0u8; 8];
        for _ in 0..5 {
            assert_eq!(server.read(&mut buf).await.unwrap(), 1);
        }
        let last_byte = Instant::now();
        assert!(last_byte - started >= Duration::from_millis(3000));
        let _client = writer.await.unwrap();
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = Instant::now() - last_byte;
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_millis(1100),
            "timed out {waited:?} after the last byte"
        );
    }

    /// A client that takes the response a byte every few seconds keeps the
    /// connection from being idle, but not above the minimum rate: the
    /// write fails once it is `grace` behind, with an error the server
    /// recognises. One that reads at the rate is never cut off.
    #[tokio::test(start_paused = true)]
    async fn a_reader_below_the_minimum_rate_is_cut_off() {
        let rate = crate::rate::MinRate {
            bytes_per_sec: 256,
            grace: Duration::from_secs(10),
        };
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = IdleTimeout::new(server, Duration::from_secs(120), rate);
        let reader = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if client.read(&mut byte).await.unwrap_or(0) == 0 {
                    break;
                }
            }
        });
        let started = Instant::now();
        let err = server.write_all(&[b'x'; 4096]).await.unwrap_err();
        let after = Instant::now() - started;
        assert!(is_too_slow(&err), "{err}");
        assert!(
            after >= Duration::from_secs(10) && after <= Duration::from_secs(13),
            "{after:?}"
        );
        drop(server);
        reader.await.unwrap();

        let (mut client, server) = tokio::io::duplex(64);
        let mut server = IdleTimeout::new(server, Duration::from_secs(120), rate);
        let reader = tokio::spawn(async move {
            let mut chunk = [0u8; 64];
            let mut total = 0;
            while total < 64 * 1024 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                total += client.read(&mut chunk).await.unwrap();
            }
        });
        // 64 bytes every 200 ms is 320 B/s: 64 KiB in about 200 s.
        server.write_all(&[b'x'; 64 * 1024]).await.unwrap();
        reader.await.unwrap();
    }
}
