//! Helpers shared by the integration tests (hyper's `tests/support` layout).
//!
//! `jenkins` is the test double of Jenkins; the proxy harness lives next to it.

pub mod jenkins;
pub mod logs;
pub mod proxy;
pub mod tls;
