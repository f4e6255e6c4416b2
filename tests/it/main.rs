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
mod forwarding;
mod hygiene;
mod mock;
mod operations;
mod security;
mod streaming;
