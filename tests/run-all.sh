#!/usr/bin/env bash
# Runs every test of crumb-proxy. First installs, idempotently and only if
# missing, what the tests need beyond cargo: the real `curl` (Debian's
# package), which the black-box tests run against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo test --locked "$@"
