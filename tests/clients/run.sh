#!/usr/bin/env bash
# The real-client suite alone: installs the pinned clients (install.sh,
# idempotent) and runs tests/it/clients.rs, which drives curl, wget,
# python-jenkins, jenkinsapi, api4jenkins, jenkins-job-builder and the npm
# `jenkins` client through the real crumb-proxy binary in front of the
# Jenkins test double. Plain `cargo test` runs the same tests (they call
# install.sh themselves); this script is for running only them. Extra
# arguments go to cargo test, e.g. `tests/clients/run.sh -- --nocapture`.
set -euo pipefail
cd "$(dirname "$0")/../.."
tests/clients/install.sh
cargo test --locked --test it clients:: "$@"
