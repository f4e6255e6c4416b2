//! One integration test binary (ripgrep's layout).
