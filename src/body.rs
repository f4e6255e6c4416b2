//! Body types and the few helpers that touch bodies.
//!
//! Bodies stream end to end as [`ProxyBody`]; the proxy reads a body into
//! memory only in three bounded places, all here: a request body of known
//! size up to the replay cap (so it can be re-sent once after a crumb
//! rejection), the first bytes of a 403 response (to tell a crumb
//! rejection from a permission error), and the crumb issuer's small JSON.
//! [`Prefixed`] puts bytes already read back in front of the rest of a
//! stream, so a peeked response is still forwarded whole.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

use crate::rate::{MinRate, Rated, RatedError};

/// Any error a streamed body can yield.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response the proxy produces.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub(crate) fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Wraps a streamed body (an `Incoming` from either side) unchanged.
pub(crate) fn stream<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A client's request body failed (a malformed chunk, a connection closed
/// mid-body, a client below the minimum rate) while it was being sent to
/// Jenkins. Request bodies are wrapped with [`from_client`] so that this
/// error can be told apart from a failure of the Jenkins connection: the
/// first is the client's fault (400, or 408 for a slow client), the second
/// Jenkins' (502).
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed: {0}")]
pub(crate) struct ClientBodyError(#[source] pub(crate) RatedError<hyper::Error>);

impl ClientBodyError {
    /// Whether the client was merely too slow.
    pub(crate) fn too_slow(&self) -> bool {
        matches!(self.0, RatedError::TooSlow(_))
    }
}

/// How much of a request body the proxy no longer needs it reads and
/// discards, and for how long, before it gives the connection up.
const DISCARD_MAX_BYTES: u64 = 64 << 20;
const DISCARD_MAX_TIME: Duration = Duration::from_secs(30);

/// A client's request body, held to the minimum rate.
///
/// When the proxy is done with the body before its end (a refusal, an
/// unreachable Jenkins, Jenkins answering before reading it), the rest is
/// read and thrown away in the background, as nginx discards a request
/// body it has no use for: the client can finish writing and read the
/// answer, and its connection stays usable. Closing instead would cut the
/// client off mid-write (a reset that can swallow the answer), or close a
/// connection whose answer already told the client to keep it, under the
/// client's next request. A client that sent `Expect: 100-continue` may
/// then be told `100 Continue` before the final answer (both legal); one
/// that sent its body at once (RFC 9110 §10.1.1 allows it) is drained too.
pub(crate) struct ClientBody {
    inner: Option<Rated<hyper::body::Incoming>>,
    /// Read to its end, or failed.
    ended: bool,
}

impl ClientBody {
    pub(crate) fn new(incoming: hyper::body::Incoming, rate: MinRate) -> Self {
        Self {
            inner: Some(Rated::new(incoming, rate)),
            ended: false,
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = RatedError<hyper::Error>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        let Some(rest) = self.inner.take() else {
            return;
        };
        if self.ended || rest.is_end_stream() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(discard(rest));
        }
    }
}

/// Reads `rest` to its end, up to [`DISCARD_MAX_BYTES`] and
/// [`DISCARD_MAX_TIME`] (and the minimum rate), throwing it away.
async fn discard(mut rest: Rated<hyper::body::Incoming>) {
    let mut left = DISCARD_MAX_BYTES;
    let _ = tokio::time::timeout(DISCARD_MAX_TIME, async {
        while let Some(Ok(frame)) = rest.frame().await {
            let n = frame.data_ref().map_or(0, Bytes::len) as u64;
            let Some(rest_of_budget) = left.checked_sub(n) else {
                break;
            };
            left = rest_of_budget;
        }
    })
    .await;
}

/// A client's request body, streamed to Jenkins; its errors become
/// [`ClientBodyError`]s.
pub(crate) fn from_client(body: ClientBody) -> ProxyBody {
    body.map_err(|e| -> BoxError { Box::new(ClientBodyError(e)) })
        .boxed_unsync()
}

/// The [`ClientBodyError`] in `err`'s source chain, if any.
pub(crate) fn client_body_error<'e>(
    err: &'e (dyn std::error::Error + 'static),
) -> Option<&'e ClientBodyError> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<ClientBodyError>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

/// The memory all bodies kept for a replay may take together
/// (`crumb.replay_budget_bytes`). A body gets a [`Reservation`] for its
/// declared length before it is read, or is streamed (and cannot be
/// replayed) when the budget is spent; the reservation is returned when the
/// request is done with the body.
#[derive(Debug)]
pub(crate) struct ReplayBudget {
    limit: u64,
    /// Bytes reserved now. One counter for all workers: only POSTs that
    /// keep a body touch it, twice each.
    used: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Bytes of a [`ReplayBudget`] held by one kept body.
#[derive(Debug)]
pub(crate) struct Reservation {
    len: u64,
    used: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl ReplayBudget {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            used: std::sync::Arc::default(),
        }
    }

    /// Reserves `len` bytes if they fit in what is left.
    pub(crate) fn try_reserve(&self, len: u64) -> Option<Reservation> {
        use std::sync::atomic::Ordering;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(len).filter(|total| *total <= self.limit)
            })
            .ok()
            .map(|_| Reservation {
                len,
                used: self.used.clone(),
            })
    }

    #[cfg(test)]
    fn used(&self) -> u64 {
        self.used.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.used
            .fetch_sub(self.len, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Reads a body of declared length `len` into one buffer of exactly that
/// size, each frame copied in and let go as it arrives: kept bodies then
/// take their length in memory once, not the frames plus a copy of them.
pub(crate) async fn read_declared(
    mut body: ClientBody,
    len: u64,
) -> Result<Bytes, ClientBodyError> {
    let mut out = BytesMut::with_capacity(usize::try_from(len).unwrap_or(0));
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(ClientBodyError)?.into_data() {
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// Reads `body` to the end if it ends within `cap` bytes.
///
/// Returns `Ok(Ok(bytes))` for a complete body, or `Ok(Err(prefixed))` with
/// the frames read so far put back in front of the rest when the body is
/// longer than `cap`. Used to peek at a 403 and to buffer replayable bodies.
pub(crate) async fn read_up_to<B>(
    mut body: B,
    cap: usize,
) -> Result<Result<Bytes, Prefixed<B>>, B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut frames = VecDeque::new();
    let mut seen = 0usize;
    loop {
        if seen > cap {
            return Ok(Err(Prefixed::new(frames, body)));
        }
        match body.frame().await {
            None => break,
            Some(frame) => {
                let frame = frame?;
                if let Some(data) = frame.data_ref() {
                    seen += data.len();
                }
                frames.push_back(frame);
            }
        }
    }
    if frames.iter().any(|f| f.is_trailers()) {
        // Trailers cannot be kept in a flat buffer; hand the frames back.
        return Ok(Err(Prefixed::new(frames, body)));
    }
    let mut out = BytesMut::with_capacity(seen);
    for frame in frames {
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
        }
    }
    Ok(Ok(out.freeze()))
}

pin_project_lite::pin_project! {
    /// Frames already read from `inner`, replayed before the rest of it.
    #[derive(Debug)]
    pub(crate) struct Prefixed<B> {
        frames: VecDeque<Frame<Bytes>>,
        prefix_len: u64,
        #[pin]
        inner: B,
    }
}

impl<B> Prefixed<B> {
    fn new(frames: VecDeque<Frame<Bytes>>, inner: B) -> Self {
        let prefix_len = frames
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        Self {
            frames,
            prefix_len,
            inner,
        }
    }
}

impl<B> Body for Prefixed<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if let Some(frame) = this.frames.pop_front() {
            if let Some(data) = frame.data_ref() {
                *this.prefix_len -= data.len() as u64;
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + self.prefix_len);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + self.prefix_len);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    /// A body that yields the given chunks, one frame each.
    #[derive(Debug)]
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn chunks(parts: &[&'static str]) -> Chunks {
        Chunks(
            parts
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
        )
    }

    #[test]
    fn replay_budget_is_shared_and_returned() {
        let budget = ReplayBudget::new(10);
        let a = budget.try_reserve(6).unwrap();
        assert!(budget.try_reserve(5).is_none(), "6 + 5 > 10");
        let b = budget.try_reserve(4).unwrap();
        assert_eq!(budget.used(), 10);
        assert!(budget.try_reserve(1).is_none());
        drop(a);
        assert_eq!(budget.used(), 4);
        assert!(budget.try_reserve(6).is_some());
        drop(b);
        assert_eq!(budget.used(), 0);
        assert!(budget.try_reserve(u64::MAX).is_none(), "no overflow");
    }

    #[tokio::test]
    async fn short_body_is_read_whole() {
        let got = read_up_to(chunks(&["ab", "cd"]), 4).await.unwrap();
        assert_eq!(got.unwrap(), "abcd");
    }

    #[tokio::test]
    async fn long_body_comes_back_whole_and_in_order() {
        let got = read_up_to(chunks(&["ab", "cd", "ef", "gh"]), 3)
            .await
            .unwrap();
        let prefixed = got.unwrap_err();
        let all = prefixed.collect().await.unwrap().to_bytes();
        assert_eq!(all, "abcdefgh");
    }
}
