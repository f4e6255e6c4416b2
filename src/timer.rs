//! Deadlines that only move later, kept in one timer.
//!
//! Resetting a tokio timer is a timer-wheel update. A deadline that moves
//! on every read or write (idleness) or every request (the response
//! timeout, the header-read timeout) would pay that each time;
//! [`LazyDeadline`] keeps its timer where it was and moves it only when it
//! fires before the current deadline, which is correct as long as deadlines
//! never move earlier. [`HeadTimer`] gives hyper's header-read timeout one.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// `at + by`, saturating about thirty years out (as tokio's own
/// `timeout` does) rather than panicking on an overflowing `Instant`.
/// Every deadline the proxy computes from a configured duration goes
/// through here.
pub(crate) fn later(at: Instant, by: std::time::Duration) -> Instant {
    at.checked_add(by)
        .or_else(|| at.checked_add(FAR_FUTURE))
        .unwrap_or(at)
}

/// Thirty years: a deadline this far out never passes in practice.
const FAR_FUTURE: std::time::Duration = std::time::Duration::from_secs(30 * 365 * 86_400);

/// One timer for a deadline that only moves later.
#[derive(Debug)]
pub(crate) struct LazyDeadline {
    // Boxed so that its owner stays `Unpin`.
    timer: Pin<Box<Sleep>>,
}

impl LazyDeadline {
    pub(crate) fn new(first: Instant) -> Self {
        Self {
            timer: Box::pin(tokio::time::sleep_until(first)),
        }
    }

    /// Ready once `deadline` has passed; `deadline` must not be earlier
    /// than any given before.
    pub(crate) fn poll_passed(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if deadline <= Instant::now() {
                return Poll::Ready(());
            }
            // Set for an earlier deadline: move it to this one.
            self.timer.as_mut().reset(deadline);
        }
    }
}

/// hyper's header-read timeout for one client connection, on one
/// [`LazyDeadline`].
///
/// hyper asks its timer for a new sleep for every request head it starts
/// to read and drops it once the head is in; with `hyper_util`'s
/// `TokioTimer` each one is an allocation of a tokio timer that goes into
/// the timer wheel and out again, per request. The deadlines of one
/// connection's heads only move later (each is "now + the timeout"), so
/// they can share one timer that is moved only when it fires early.
#[derive(Debug, Clone)]
pub(crate) struct HeadTimer {
    deadline: std::sync::Arc<std::sync::Mutex<Option<LazyDeadline>>>,
}

impl HeadTimer {
    pub(crate) fn new() -> Self {
        Self {
            deadline: std::sync::Arc::default(),
        }
    }
}

// hyper's `Timer` speaks `std::time::Instant`; the clock read is tokio's,
// so that tests that pause time see hyper's deadlines move with it.
#[allow(clippy::disallowed_types)]
impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: std::time::Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(later(Instant::now(), duration).into_std())
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadSleep {
            timer: self.clone(),
            deadline: Instant::from_std(deadline),
        })
    }

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

/// One head's deadline on its connection's shared timer.
struct HeadSleep {
    timer: HeadTimer,
    deadline: Instant,
}

impl std::future::Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut shared = self
            .timer
            .deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        shared
            .get_or_insert_with(|| LazyDeadline::new(self.deadline))
            .poll_passed(self.deadline, cx)
    }
}

impl hyper::rt::Sleep for HeadSleep {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A duration no `Instant` can add (u64::MAX seconds) gives a deadline
    /// far in the future, not a panic.
    #[test]
    fn deadlines_saturate() {
        let now = Instant::now();
        let huge = std::time::Duration::from_secs(u64::MAX);
        let at = later(now, huge);
        assert!(at >= now + FAR_FUTURE);
        assert_eq!(
            later(now, std::time::Duration::from_secs(5)),
            now + std::time::Duration::from_secs(5)
        );
        // hyper's path: a sleep of u64::MAX seconds.
        let _sleep = hyper::rt::Timer::sleep(&HeadTimer::new(), huge);
    }
}
