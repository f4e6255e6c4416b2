//! One integration test binary (ripgrep's layout).

// Test helpers outside `#[test]` functions fail loudly on a broken set-up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod binary;
mod browser;
mod clients;
mod configs;
mod crumbs;
mod deploy;
mod faults;
mod forwarding;
mod framing;
mod fuzz;
mod guard;
mod hygiene;
mod identity;
mod mock;
mod operations;
mod resources;
mod security;
mod soak;
mod streaming;
