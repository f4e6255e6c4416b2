//! Deadlines that only move later, kept in one timer.
//!
//! Resetting a tokio timer is a timer-wheel update. A deadline that moves
//! on every read or write (idleness) or every request (the response
//! timeout) would pay that each time; [`LazyDeadline`] keeps its timer where
//! it was and moves it only when it fires before the current deadline,
//! which is correct as long as deadlines never move earlier.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

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
