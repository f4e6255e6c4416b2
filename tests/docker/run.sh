#!/usr/bin/env bash
# End-to-end test of the container image: builds it from the repository's
# Dockerfile, runs it with the config and secret mounted read-only in front
# of the Jenkins test double, and checks what a deployment relies on: a
# request through the container reaches Jenkins, the HEALTHCHECK turns
# healthy, the process runs as the numeric non-root user, secrets stay in
# their read-only mounts, `crumb-proxy check` works in the image, and
# `docker stop` drains in-flight requests and exits 0.
#
# Self-contained, and FAILS (never skips) when something is missing:
# - installs Debian's docker.io (and curl) if they are not there;
# - starts its own Docker engine (vfs storage, no bridge, no iptables) in a
#   temporary directory, and stops it by its PID on exit, whatever happens;
# - no image registry is needed: the runtime base image (RUNTIME_IMAGE) is a
#   local stand-in for distroless/cc made `FROM scratch` out of this host's
#   glibc, libgcc_s and CA bundle, and the binary comes from a host release
#   build (BINARY_SOURCE=prebuilt), so BuildKit skips the Rust compile stage;
# - everything listens on 127.0.0.1 only (the container uses --network host),
#   on free ports below the ephemeral range.
#
# Needs root (or sudo) for dockerd. Prints `docker: N passed, M failed`.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

# The package's client, not whatever `docker` comes first on PATH: its
# version matches the engine started below.
DOCKER=/usr/bin/docker
DOCKERD=/usr/sbin/dockerd
IMAGE=crumb-proxy:docker-test
BASE_IMAGE=crumb-proxy-test/runtime-base:local
USER_ID=65532

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

passed=0
failed=0
report() {
  echo "docker: $passed passed, $failed failed${1:+ ($1)}"
}
# A set-up step failed: there is nothing left to test.
die() {
  echo "docker: setup failed: $*" >&2
  failed=$((failed + 1))
  report "setup failed"
  exit 1
}
check() {
  local name=$1
  shift
  echo "--- $name"
  if "$@"; then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    failed=$((failed + 1))
  fi
}
# `expect WHAT ACTUAL EXPECTED`: prints and returns 1 on a mismatch.
expect() {
  if [ "$2" != "$3" ]; then
    echo "  $1: got '$2', expected '$3'"
    return 1
  fi
}

# --- tools -------------------------------------------------------------------
missing=()
[ -x "$DOCKER" ] && [ -x "$DOCKERD" ] || missing+=(docker.io)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || die "cannot install ${missing[*]}"
fi
for tool in "$DOCKER" "$DOCKERD" curl cargo ldd; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"
done

# The image's HEALTHCHECK asks the default health address, so the health
# listener must be on it; with --network host that is the host's port 8182.
health_port=8182
if (exec 3<>"/dev/tcp/127.0.0.1/$health_port") 2>/dev/null; then
  die "127.0.0.1:$health_port is in use; the container's health listener needs it"
fi

# --- scratch space and clean-up ------------------------------------------------
# Short path: the engine's unix sockets live below it.
work=$(mktemp -d /tmp/crumb-docker.XXXXXX)
chmod 0755 "$work"
export DOCKER_HOST="unix://$work/docker.sock"
dockerd_pid=""
had_run_containerd=no
[ -e /run/containerd ] && had_run_containerd=yes
mock_pid=""
container=""
bg_pids=()

cleanup() {
  local status=$?
  set +e
  for pid in "${bg_pids[@]}"; do
    kill "$pid" 2>/dev/null
  done
  if [ -n "$container" ]; then
    $sudo "$DOCKER" rm -f "$container" >/dev/null 2>&1
  fi
  if [ -n "$mock_pid" ]; then
    kill "$mock_pid" 2>/dev/null
    wait "$mock_pid" 2>/dev/null
  fi
  # The engine by the PID it wrote (or the one started here, if it never
  # got that far); it stops its containerd itself.
  local pid
  pid=$(cat "$work/docker.pid" 2>/dev/null || true)
  pid=${pid:-$dockerd_pid}
  if [ -n "$pid" ]; then
    $sudo kill "$pid" 2>/dev/null
    for _ in $(seq 100); do
      $sudo kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    $sudo kill -KILL "$pid" 2>/dev/null
  fi
  # Anything the engine left mounted below the work directory (a container's
  # /dev/shm) must go before the directory can.
  grep -o " $work/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do
    $sudo umount -l "$m" 2>/dev/null
  done
  $sudo rm -rf "$work"
  # containerd's shims put their sockets below a fixed /run/containerd/s;
  # remove what this run created there (rmdir: only if empty).
  if [ "$had_run_containerd" = no ]; then
    $sudo rmdir /run/containerd/s /run/containerd 2>/dev/null
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free TCP port on 127.0.0.1 below Linux's ephemeral range (32768+), so
# neither a listener nor an outgoing connection of the host is in the way.
used_ports=" "
free_port() {
  local port
  for _ in $(seq 200); do
    port=$((20000 + RANDOM % 12000))
    case "$used_ports" in *" $port "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      used_ports="$used_ports$port "
      echo "$port"
      return 0
    fi
  done
  return 1
}

# `wait_for SECONDS COMMAND...`: retries COMMAND every 0.2 s.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# --- build the binaries on the host --------------------------------------------
started=$SECONDS
echo "building crumb-proxy and the Jenkins test double (release)"
cargo build --release --locked --bin crumb-proxy --example mock_jenkins \
  || die "cargo build failed"
binary="$repo/target/release/crumb-proxy"

# --- a private Docker engine ---------------------------------------------------
echo '{}' >"$work/daemon.json"
$sudo "$DOCKERD" \
  --config-file "$work/daemon.json" \
  --storage-driver vfs --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
  --data-root "$work/data" --exec-root "$work/exec" \
  --host "$DOCKER_HOST" --pidfile "$work/docker.pid" \
  >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
docker_() { $sudo env DOCKER_HOST="$DOCKER_HOST" DOCKER_BUILDKIT=1 "$DOCKER" "$@"; }
if ! wait_for 60 docker_ info >/dev/null 2>&1; then
  tail -n 30 "$work/dockerd.log" >&2
  die "the Docker engine did not come up within 60 s (log above)"
fi
echo "engine: $(docker_ version --format '{{.Server.Version}}')"

# --- the runtime base image, stand-in for gcr.io/distroless/cc-debian12:nonroot
# What distroless/cc's nonroot variant holds that the binary uses: the
# dynamic loader and the libraries ldd lists, the CA bundle, and passwd and
# group entries for the numeric user. No shell, no package manager.
rootfs="$work/rootfs"
mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/home/nonroot"
chmod 1777 "$rootfs/tmp"
libs=$(ldd "$binary" 2>&1) || case "$libs" in
  *"not a dynamic executable"*) libs="" ;;
  *) die "ldd $binary: $libs" ;;
esac
while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done < <(grep -o '/[^ ]*' <<<"$libs")
cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/" \
  || die "no CA bundle at /etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n' \
  "$USER_ID" "$USER_ID" >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:%s:\n' "$USER_ID" >"$rootfs/etc/group"
$sudo chown "$USER_ID:$USER_ID" "$rootfs/home/nonroot"
tar -C "$rootfs" --numeric-owner -c . | docker_ import - "$BASE_IMAGE" >/dev/null \
  || die "docker import of the runtime base failed"

# --- the image, from the repository's Dockerfile ------------------------------
echo "building $IMAGE"
if ! docker_ build --progress plain \
  --build-arg RUNTIME_IMAGE="$BASE_IMAGE" \
  --build-arg BINARY_SOURCE=prebuilt \
  -t "$IMAGE" . >"$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log" >&2
  die "docker build failed (log above)"
fi

# --- the Jenkins test double on the host ---------------------------------------
password="docker-test-$RANDOM$RANDOM$RANDOM"
printf '%s\n' "$password" >"$work/mock-password"
cargo run --quiet --release --locked --example mock_jenkins -- \
  --listen 127.0.0.1:0 --password-file "$work/mock-password" \
  >"$work/mock.out" 2>"$work/mock.log" &
mock_pid=$!
mock_ready() { grep -q '^mock-jenkins listening on ' "$work/mock.out"; }
wait_for 60 mock_ready || die "the Jenkins double did not start: $(cat "$work/mock.log")"
jenkins_url=$(sed -n 's/^mock-jenkins listening on //p' "$work/mock.out")
echo "jenkins double: $jenkins_url"

# --- config and secret, mounted read-only -----------------------------------------
proxy_port=$(free_port) || die "no free port"
mkdir -p "$work/etc" "$work/secrets"
cat >"$work/etc/config.toml" <<EOF
[listen]
address = "127.0.0.1:$proxy_port"

[upstream]
url = "$jenkins_url"

[credentials]
username = "alice"
password_file = "/run/secrets/jenkins-password"

[health]
address = "127.0.0.1:$health_port"

[shutdown]
grace_secs = 2
drain_secs = 30
EOF
printf '%s\n' "$password" >"$work/secrets/jenkins-password"
# As a secret mount would: readable by the container's user only.
$sudo chown "$USER_ID:$USER_ID" "$work/secrets/jenkins-password"
$sudo chmod 0400 "$work/secrets/jenkins-password"

# --- run it ------------------------------------------------------------------------
container="crumb-proxy-test-$$"
docker_ run -d --name "$container" \
  --network host --read-only --cap-drop ALL --security-opt no-new-privileges \
  -v "$work/etc/config.toml:/etc/crumb-proxy/config.toml:ro" \
  -v "$work/secrets/jenkins-password:/run/secrets/jenkins-password:ro" \
  --health-interval 1s --health-timeout 3s --health-start-period 1s --health-retries 3 \
  "$IMAGE" >/dev/null || die "docker run failed"
# (Output captured before matching: with pipefail, `docker logs | grep -q`
# can fail when grep stops reading early.)
proxy_listening() {
  local log
  log=$(docker_ logs "$container" 2>&1)
  grep -q "listening addr=127.0.0.1:$proxy_port" <<<"$log"
}
if ! wait_for 30 proxy_listening; then
  docker_ logs "$container" >&2 || true
  die "the container did not log 'listening addr=127.0.0.1:$proxy_port' within 30 s"
fi
proxy="http://127.0.0.1:$proxy_port"
health="http://127.0.0.1:$health_port"
echo "proxy in container: $proxy, health: $health (ready after $((SECONDS - started)) s)"

# --- checks --------------------------------------------------------------------------
image_metadata() {
  local ok=0
  expect "User" "$(docker_ image inspect --format '{{.Config.User}}' "$IMAGE")" "$USER_ID:$USER_ID" || ok=1
  expect "Healthcheck" "$(docker_ image inspect --format '{{json .Config.Healthcheck.Test}}' "$IMAGE")" \
    '["CMD","/usr/local/bin/crumb-proxy","health"]' || ok=1
  expect "ExposedPorts" "$(docker_ image inspect --format '{{json .Config.ExposedPorts}}' "$IMAGE")" \
    '{"8181/tcp":{},"8182/tcp":{}}' || ok=1
  expect "Entrypoint" "$(docker_ image inspect --format '{{json .Config.Entrypoint}}' "$IMAGE")" \
    '["/usr/local/bin/crumb-proxy"]' || ok=1
  expect "Cmd" "$(docker_ image inspect --format '{{json .Config.Cmd}}' "$IMAGE")" \
    '["--config","/etc/crumb-proxy/config.toml"]' || ok=1
  # The prebuilt path must not have touched the compile stage (no registry here).
  if grep -q -e '\[builder' -e 'library/rust' "$work/build.log"; then
    echo "  the compile stage ran although BINARY_SOURCE=prebuilt"
    ok=1
  fi
  return $ok
}

post_reaches_jenkins() {
  local code location
  code=$(curl -sS -o "$work/post.body" -D "$work/post.headers" -w '%{http_code}' \
    -X POST "$proxy/job/sample-job/build") || return 1
  expect "POST /job/sample-job/build status" "$code" 201 || return 1
  location=$(tr -d '\r' <"$work/post.headers" | sed -n 's/^[Ll]ocation: //p')
  case "$location" in
    "$proxy/queue/item/"*) ;;
    *) echo "  Location '$location' does not point back at the proxy"; return 1 ;;
  esac
  # From the double's side: the crumb was fetched and the POST arrived as alice.
  grep -q 'method=GET path="/crumbIssuer/api/json" status=200 user="alice"' "$work/mock.log" \
    || { echo "  the double saw no crumb fetch by alice"; return 1; }
  grep -q 'method=POST path="/job/sample-job/build" status=201 user="alice"' "$work/mock.log" \
    || { echo "  the double did not record the POST as alice with 201"; tail -n 5 "$work/mock.log"; return 1; }
}

health_status() { docker_ inspect --format '{{.State.Health.Status}}' "$container"; }
container_healthy() { [ "$(health_status)" = healthy ]; }
healthcheck_healthy() {
  if ! wait_for 30 container_healthy; then
    echo "  Health.Status is '$(health_status)' after 30 s; last probes:"
    docker_ inspect --format '{{json .State.Health.Log}}' "$container"
    return 1
  fi
  # The same endpoints from outside the container.
  expect "/livez" "$(curl -s -o /dev/null -w '%{http_code}' "$health/livez")" 200 || return 1
  expect "/readyz" "$(curl -s -o /dev/null -w '%{http_code}' "$health/readyz")" 200 || return 1
  local metrics
  metrics=$(curl -sf "$health/metrics") || { echo "  /metrics failed"; return 1; }
  grep -q '^# TYPE ' <<<"$metrics" || { echo "  /metrics is not Prometheus text"; return 1; }
}

runs_as_non_root() {
  local pid ok=0
  pid=$(docker_ inspect --format '{{.State.Pid}}' "$container")
  [ "$pid" -gt 0 ] || { echo "  container not running"; return 1; }
  # Real, effective, saved and filesystem ids, from the kernel's view.
  expect "Uid" "$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")" \
    "$USER_ID $USER_ID $USER_ID $USER_ID" || ok=1
  expect "Gid" "$(awk '/^Gid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")" \
    "$USER_ID $USER_ID $USER_ID $USER_ID" || ok=1
  expect "CapEff" "$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")" 0000000000000000 || ok=1
  expect "NoNewPrivs" "$(awk '/^NoNewPrivs:/ {print $2}' "/proc/$pid/status")" 1 || ok=1
  expect "comm" "$(cat "/proc/$pid/comm")" crumb-proxy || ok=1
  # docker exec runs as the image's user too.
  docker_ exec "$container" /usr/local/bin/crumb-proxy --version >/dev/null \
    || { echo "  docker exec crumb-proxy --version failed"; ok=1; }
  return $ok
}

secrets_read_only() {
  local ok=0
  expect "mounts (destination, RW)" \
    "$(docker_ inspect --format '{{range .Mounts}}{{.Destination}}={{.RW}} {{end}}' "$container" | tr ' ' '\n' | sort | xargs)" \
    "/etc/crumb-proxy/config.toml=false /run/secrets/jenkins-password=false" || ok=1
  expect "ReadonlyRootfs" "$(docker_ inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$container")" true || ok=1
  # The secret is in the mounted file only: not in the container's config
  # (environment, command line) and not in anything it logged.
  local inspected logged
  inspected=$(docker_ inspect "$container")
  logged=$(docker_ logs "$container" 2>&1)
  if grep -qF "$password" <<<"$inspected"; then
    echo "  the password appears in docker inspect"
    ok=1
  fi
  if grep -qF "$password" <<<"$logged"; then
    echo "  the password appears in the container's log"
    ok=1
  fi
  return $ok
}

check_subcommand_reaches_jenkins() {
  local out line status=0
  # A second container from the image, with the same mounts and
  # restrictions: `check` reads the mounted config and secret and asks
  # Jenkins who it is.
  out=$(docker_ run --rm --network host --read-only --cap-drop ALL --security-opt no-new-privileges \
    -v "$work/etc/config.toml:/etc/crumb-proxy/config.toml:ro" \
    -v "$work/secrets/jenkins-password:/run/secrets/jenkins-password:ro" \
    "$IMAGE" check --config /etc/crumb-proxy/config.toml 2>&1) || status=$?
  while IFS= read -r line; do echo "  | $line"; done <<<"$out"
  expect "crumb-proxy check exit status" "$status" 0 || return 1
  grep -q 'authenticated as "alice"' <<<"$out" || { echo "  check did not report alice"; return 1; }
}

# curl -v shows `> POST` once the request head is on the wire.
upload_started() { grep -q '^> POST' "$work/upload.err"; }
ready_is_503() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$health/readyz")" = 503 ]; }
stop_drains_and_exits_0() {
  local ok=0 code curl_status stop_status triggers
  # A 2 MiB build trigger body (over the 1 MiB replay cap, so it streams
  # through) uploaded at 256 KiB/s: the request is in flight inside the
  # proxy for about 8 s, because the double answers only after the whole
  # body (socket buffers cannot absorb an upload the client has not sent).
  head -c $((2 * 1024 * 1024)) /dev/zero >"$work/upload.bin"
  curl -sS -v --limit-rate 256K -o /dev/null -w '%{http_code}' \
    -H 'Content-Type: application/octet-stream' --data-binary @"$work/upload.bin" \
    "$proxy/job/sample-job/build" >"$work/upload.code" 2>"$work/upload.err" &
  local curl_pid=$!
  bg_pids+=("$curl_pid")
  wait_for 10 upload_started || { echo "  the upload did not start"; return 1; }
  local stop_started=$SECONDS
  docker_ stop -t 60 "$container" >/dev/null 2>"$work/stop.err" &
  local stop_pid=$!
  bg_pids+=("$stop_pid")
  # Readiness goes 503 at SIGTERM (grace_secs = 2 keeps the listeners up).
  if ! wait_for 5 ready_is_503; then
    echo "  /readyz did not answer 503 after SIGTERM"
    ok=1
  fi
  curl_status=0
  wait "$curl_pid" || curl_status=$?
  code=$(cat "$work/upload.code")
  expect "in-flight upload: curl exit status" "$curl_status" 0 || { tail -n 5 "$work/upload.err"; ok=1; }
  expect "in-flight upload: status" "$code" 201 || ok=1
  stop_status=0
  wait "$stop_pid" || stop_status=$?
  echo "  stopped $((SECONDS - stop_started)) s after SIGTERM"
  expect "docker stop exit status" "$stop_status" 0 || { cat "$work/stop.err"; ok=1; }
  expect "container exit code" "$(docker_ inspect --format '{{.State.ExitCode}}' "$container")" 0 || ok=1
  expect "container still running" "$(docker_ inspect --format '{{.State.Running}}' "$container")" false || ok=1
  # Jenkins got the whole upload: both triggers (this one and the first check's).
  triggers=$(grep -c 'method=POST path="/job/sample-job/build" status=201 user="alice"' "$work/mock.log")
  expect "triggers the double answered 201" "$triggers" 2 || ok=1
  if [ "$ok" != 0 ]; then
    docker_ logs --tail 20 "$container" 2>&1 | sed 's/^/  | /'
  fi
  return $ok
}

check "image: numeric non-root USER, HEALTHCHECK, ports, entrypoint; no compile stage" image_metadata
check "a POST from the host through the container gets Jenkins' 201" post_reaches_jenkins
check "HEALTHCHECK turns healthy; /livez, /readyz, /metrics answer" healthcheck_healthy
check "runs as uid/gid $USER_ID with no capabilities" runs_as_non_root
check "config and secret mounted read-only; the secret is in no log or inspect" secrets_read_only
check "crumb-proxy check in the image talks to Jenkins with the mounted config" check_subcommand_reaches_jenkins
check "docker stop: readiness 503, an in-flight upload completes, exit code 0" stop_drains_and_exits_0

echo "docker test took $((SECONDS - started)) s"
if [ "$failed" -gt 0 ]; then
  report
  exit 1
fi
report
