#!/usr/bin/env bash
# Runs every test of crumb-proxy. First installs, idempotently and only if
# missing, what the tests need beyond cargo, from Debian's packages: the real
# `curl`, which the black-box tests run against the real binary, `chromium`,
# which shows that a browser cannot use the proxy, and `docker.io`, whose
# engine runs the container image in tests/docker/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# The package's own client and engine, not any other `docker` on PATH.
[ -x /usr/bin/docker ] && [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo test --locked "$@"

# The image from the Dockerfile, run in a private Docker engine in front of
# the Jenkins test double.
tests/docker/run.sh
