//! The least rate at which a client must send its request body and take
//! its response.
//!
//! The idle timeout closes a connection on which nothing moves; a client
//! that moves a byte now and then (a "slowloris" trickle) or reads a large
//! response a byte at a time would still hold one of the
//! `limits.max_connections` slots, and a Jenkins request, for as long as it
//! likes. This module owns the rule that stops it, the one Apache's
//! `mod_reqtimeout` (`MinRate`) and Kestrel's `MinRequestBodyDataRate` use:
//! time the proxy spends waiting on the client is a debt, every byte the
//! client moves pays `1 / limits.min_rate_bytes_per_sec` seconds of it, and
//! once the debt exceeds `limits.min_rate_grace_secs` the transfer fails.
//! The debt never goes below zero, so a client cannot bank a fast start
//! (or, for a response, the bytes that merely filled its socket buffer)
//! against a later stall. Only waiting on the client counts: a request
//! body is charged while Jenkins wants more of it and the client has sent
//! nothing ([`Rated`]), a response while the client's socket will not take
//! more (`listener::IdleTimeout`), never while the proxy waits for Jenkins.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::timer::LazyDeadline;

/// `limits.min_rate_bytes_per_sec` and `limits.min_rate_grace_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MinRate {
    /// 0: no minimum.
    pub(crate) bytes_per_sec: u64,
    pub(crate) grace: Duration,
}

impl MinRate {
    pub(crate) fn debt(self) -> Debt {
        Debt {
            rate: self,
            owed: Duration::ZERO,
            since: None,
            timer: None,
        }
    }
}

/// Time spent waiting on one client, less what its bytes paid off.
#[derive(Debug)]
pub(crate) struct Debt {
    rate: MinRate,
    owed: Duration,
    /// When the current wait began.
    since: Option<Instant>,
    timer: Option<LazyDeadline>,
}

impl Debt {
    /// The client moved `bytes`: a wait (if one was running) ends, and the
    /// bytes pay it off. Without a wait or a debt this reads no clock.
    pub(crate) fn moved(&mut self, bytes: usize) {
        if let Some(since) = self.since.take() {
            self.owed += since.elapsed();
        }
        if !self.owed.is_zero() && self.rate.bytes_per_sec > 0 {
            let paid = Duration::from_secs_f64(bytes as f64 / self.rate.bytes_per_sec as f64);
            self.owed = self.owed.saturating_sub(paid);
        }
    }

    /// The error for a client that fell behind.
    pub(crate) fn too_slow(&self) -> TooSlow {
        self.rate.into()
    }

    /// The proxy waits on the client: ready once the debt is beyond the
    /// grace period (the transfer should fail), pending until then.
    ///
    /// Deadlines only move later, as [`LazyDeadline`] needs: the next
    /// wait starts no earlier than this one ended, and its deadline is
    /// that start plus the grace left, which the wait in between used up
    /// at most one for one.
    pub(crate) fn waiting(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.rate.bytes_per_sec == 0 {
            return Poll::Pending;
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        let deadline = crate::timer::later(since, self.rate.grace.saturating_sub(self.owed));
        self.timer
            .get_or_insert_with(|| LazyDeadline::new(deadline))
            .poll_passed(deadline, cx)
    }
}

/// Why a client's transfer was stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "the client moved less than {bytes_per_sec} bytes a second for more than {grace_secs} s \
     (limits.min_rate_bytes_per_sec, limits.min_rate_grace_secs)"
)]
pub(crate) struct TooSlow {
    pub(crate) bytes_per_sec: u64,
    pub(crate) grace_secs: u64,
}

impl From<MinRate> for TooSlow {
    fn from(rate: MinRate) -> Self {
        Self {
            bytes_per_sec: rate.bytes_per_sec,
            grace_secs: rate.grace.as_secs(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A client's request body, failed with [`TooSlow`] (inside its
    /// error) when the client falls below the minimum rate.
    pub(crate) struct Rated<B> {
        #[pin]
        inner: B,
        debt: Debt,
        failed: bool,
    }
}

impl<B> Rated<B> {
    pub(crate) fn new(inner: B, rate: MinRate) -> Self {
        Self {
            inner,
            debt: rate.debt(),
            failed: false,
        }
    }
}

/// A [`Rated`] body's error: the client's own, or [`TooSlow`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum RatedError<E> {
    #[error(transparent)]
    Body(E),
    #[error(transparent)]
    TooSlow(TooSlow),
}

impl<B> Body for Rated<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = RatedError<B::Error>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.debt.moved(frame.data_ref().map_or(0, Bytes::len));
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(RatedError::Body(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.debt.waiting(cx) {
                Poll::Ready(()) => {
                    *this.failed = true;
                    Poll::Ready(Some(Err(RatedError::TooSlow(this.debt.rate.into()))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(bytes_per_sec: u64, grace_secs: u64) -> MinRate {
        MinRate {
            bytes_per_sec,
            grace: Duration::from_secs(grace_secs),
        }
    }

    /// Polls `debt.waiting` once, as a stalled transfer would.
    fn wait(debt: &mut Debt) -> Poll<()> {
        debt.waiting(&mut Context::from_waker(std::task::Waker::noop()))
    }

    /// A trickle (a byte every few seconds) runs out of grace; a client at
    /// the minimum rate never does; a fast start cannot be banked.
    #[tokio::test(start_paused = true)]
    async fn debt_grows_with_waiting_and_is_paid_by_bytes() {
        let step = Duration::from_secs(5);
        // A byte every 5 s against 256 B/s and 30 s of grace: out after
        // about 30 s of waiting.
        let mut debt = rate(256, 30).debt();
        let mut waited = Duration::ZERO;
        loop {
            if wait(&mut debt).is_ready() {
                break;
            }
            tokio::time::advance(step).await;
            waited += step;
            if wait(&mut debt).is_ready() {
                break;
            }
            debt.moved(1);
            assert!(waited < Duration::from_secs(60), "never ran out");
        }
        assert!(
            waited >= Duration::from_secs(30) && waited <= Duration::from_secs(35),
            "{waited:?}"
        );

        // 1280 bytes every 5 s is exactly 256 B/s: waits forever.
        let mut debt = rate(256, 30).debt();
        for _ in 0..100 {
            assert!(wait(&mut debt).is_pending());
            tokio::time::advance(step).await;
            assert!(wait(&mut debt).is_pending());
            debt.moved(1280);
        }

        // A megabyte at once, then nothing: no credit, out after the grace.
        let mut debt = rate(256, 30).debt();
        debt.moved(1 << 20);
        assert!(wait(&mut debt).is_pending());
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(wait(&mut debt).is_pending());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(wait(&mut debt).is_ready());

        // No minimum: never.
        let mut debt = rate(0, 1).debt();
        assert!(wait(&mut debt).is_pending());
        tokio::time::advance(Duration::from_secs(86_400)).await;
        assert!(wait(&mut debt).is_pending());
    }
}
