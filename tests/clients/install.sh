#!/usr/bin/env bash
# Installs the real Jenkins clients that tests/it/clients.rs drives through
# crumb-proxy, at the versions pinned in this directory, idempotently:
#   - python-jenkins, jenkinsapi, api4jenkins, jenkins-job-builder and their
#     dependencies (requirements.txt) into a throwaway virtualenv,
#     target/clients-venv, with the machine's python3;
#   - the npm `jenkins` client (node/package.json, node/package-lock.json)
#     into tests/clients/node/node_modules with `npm ci`;
#   - curl, wget, python3 (with venv), node and npm from Debian's packages
#     when they are missing.
# A second run with nothing changed installs nothing (a stamp holds the hash
# of what was installed). Any failure exits non-zero: the client tests then
# fail, they never skip. Concurrent runs wait for each other (flock).
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/clients-venv
node_dir=tests/clients/node
requirements=tests/clients/requirements.txt

mkdir -p target
exec 9>target/clients-install.lock
flock 9

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v wget >/dev/null 2>&1 || missing+=(wget)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# Debian's python3 builds a virtualenv only with python3-venv (ensurepip).
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip' 2>/dev/null; then
  missing+=(python3-venv)
fi
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "clients: installing ${missing[*]} from Debian"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

for tool in python3 node npm; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "clients: $tool is required to install the client libraries" >&2
    exit 1
  }
done
python3 - <<'PY'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"clients: python3 >= 3.10 is required, this is {sys.version.split()[0]}")
PY

stamp() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

want=$(stamp "$requirements")
# Rebuilt when the pins changed, or when the venv no longer works (its base
# interpreter moved or went away).
if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$want" ] ||
  ! "$venv/bin/python" -c 'import jenkins, jenkinsapi, api4jenkins, jenkins_jobs' 2>/dev/null; then
  echo "clients: creating $venv from $requirements"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --requirement "$requirements"
  echo "$want" >"$venv/.installed"
fi

want=$(stamp "$node_dir/package.json" "$node_dir/package-lock.json")
if [ "$(cat "$node_dir/node_modules/.installed" 2>/dev/null)" != "$want" ]; then
  echo "clients: npm ci in $node_dir"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$node_dir/node_modules/.installed"
fi

echo "clients: installed python-jenkins $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("python-jenkins"))')," \
  "jenkinsapi $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("jenkinsapi"))')," \
  "api4jenkins $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("api4jenkins"))')," \
  "jenkins-job-builder $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("jenkins-job-builder"))')," \
  "npm jenkins $(node -p 'require("./'"$node_dir"'/node_modules/jenkins/package.json").version')"
