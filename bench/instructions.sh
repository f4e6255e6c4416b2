#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: unlike
# time on a shared VM, the count repeats from run to run, so it shows what a
# change to crumb-proxy's own code is worth (kernel work is not counted).
#
#   sudo bench/instructions.sh              # the checkout holding this script
#   sudo REPO=/tmp/other-checkout bench/instructions.sh
#
# Builds the release binary, starts nginx on 127.0.0.1 serving the same
# 1 KiB Jenkins-like JSON as run.sh, runs crumb-proxy (API token, no
# crumb, --log-level warn) under callgrind in front of it, drives
# `wrk -t1 -c8 -d15s` at /api/json (URL rewriting on, as in run.sh), and
# prints the instructions per request (the whole process, start-up
# included, divided by the requests served) and the inclusive cost per
# request of the largest blocks. Ports PORT_BASE+1 and +2 (default
# 47371-47372). Needs root to install valgrind, nginx and wrk from Debian
# when missing; stops only the processes it started.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${REPO:-$(cd "$HERE/.." && pwd)}
PORT_BASE=${PORT_BASE:-47370}
DURATION=${DURATION:-15}
P_UP=$((PORT_BASE + 1))
P_CP=$((PORT_BASE + 2))

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

need=()
for tool in valgrind:valgrind nginx:nginx wrk:wrk callgrind_annotate:valgrind python3:python3; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if ((${#need[@]})); then
    [[ $(id -u) == 0 ]] || die "missing ${need[*]}; run as root to install them"
    log "installing ${need[*]}"
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; }
fi
NGINX=$(command -v nginx)

for p in $P_UP $P_CP; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        die "127.0.0.1:$p is already in use; choose another PORT_BASE"
    fi
done

TMP=$(mktemp -d /tmp/crumb-instr.XXXXXX)
chmod 755 "$TMP"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ ${KEEP_TMP:-0} == 1 ]] && log "kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT

log "building crumb-proxy (cargo build --release --locked) in $REPO"
(cd "$REPO" && cargo build --release --locked -q)
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/crumb-proxy
cp "$BIN" "$TMP/crumb-proxy"

mkdir -p "$TMP/www/api"
python3 "$HERE/api_json.py" "$TMP/www/api/json" "$P_UP"
chmod -R a+rX "$TMP/www"
cat >"$TMP/upstream.conf" <<EOF
worker_processes 1;
pid $TMP/upstream.pid;
error_log $TMP/upstream-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $TMP/body; proxy_temp_path $TMP/proxy; fastcgi_temp_path $TMP/fastcgi;
    uwsgi_temp_path $TMP/uwsgi; scgi_temp_path $TMP/scgi;
    server {
        listen 127.0.0.1:$P_UP;
        root $TMP/www;
        location = /api/json { default_type application/json; }
    }
}
EOF
head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$TMP/token"
chmod 600 "$TMP/token"
cat >"$TMP/cp.toml" <<EOF
[listen]
address = "127.0.0.1:$P_CP"
[upstream]
url = "http://127.0.0.1:$P_UP/"
[credentials]
username = "bench"
api_token_file = "token"
[health]
address = ""
EOF

wait_port() { # port pid
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || die "process $2 exited before listening on $1"
        sleep 0.1
    done
    die "nothing listens on $1 after 20 s"
}

"$NGINX" -e "$TMP/upstream-error.log" -c "$TMP/upstream.conf" -g 'daemon off;' &
PIDS+=($!)
wait_port "$P_UP" "${PIDS[-1]}"
(cd "$TMP" && exec valgrind --tool=callgrind --callgrind-out-file="$TMP/callgrind.out" \
    --dump-instr=no ./crumb-proxy --config cp.toml --log-level warn) >"$TMP/cp.log" 2>&1 &
CP=$!
PIDS+=("$CP")
wait_port "$P_CP" "$CP"
log "crumb-proxy under callgrind (PID $CP); wrk -t1 -c8 -d${DURATION}s"
wrk -t1 -c8 -d"${DURATION}s" "http://127.0.0.1:$P_CP/api/json" >"$TMP/wrk.txt"
kill -TERM "$CP"
wait "$CP" || true
requests=$(awk '/requests in/ {print $1}' "$TMP/wrk.txt")
[[ -n $requests && $requests -gt 0 ]] || die "wrk completed no request: $(cat "$TMP/wrk.txt")"
grep -q "Non-2xx" "$TMP/wrk.txt" && die "some answers were not 2xx: $(cat "$TMP/wrk.txt")"

callgrind_annotate --inclusive=yes --auto=no "$TMP/callgrind.out" 2>/dev/null >"$TMP/inclusive.txt"
total=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' "$TMP/inclusive.txt")
echo
echo "crumb-proxy at $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo '?'): $requests requests"
awk -v t="$total" -v n="$requests" 'BEGIN { printf "instructions per request: %.0f\n\n", t / n }'
echo "inclusive instructions per request of the largest blocks:"
grep -E '^ *[0-9,]+ \( *[0-9.]+%\)  ' "$TMP/inclusive.txt" |
    grep -E 'serve_connection::\{\{closure\}\} |Lane::drive::\{\{closure\}\} |Service<http::request::Request<hyper::body::incoming::Incoming>>>::call::\{\{closure\}\} |proxy::forward::\{\{closure\}\} |Rewrite<B> as http_body::Body>::poll_frame |Client as hyper::proto::h1::Http1Transaction>::parse |Server as hyper::proto::h1::Http1Transaction>::parse |Http1Transaction>::encode |Policy::check_path |CanonicalPath::new |headers::[a-z_]+ |__rust_alloc |__rust_dealloc |IdleTimeout<I> as tokio::io::async_read::AsyncRead>::poll_read ' |
    sed -E 's|/root/.cargo/registry/src/[^/]+/||; s|/rustc/[0-9a-f]+/library/||; s| \[[^]]*\]$||' |
    awk -v n="$requests" '!seen[$0]++ { x = $1; gsub(",", "", x); sub(/^ *[0-9,]+ \( *[0-9.]+%\) +/, ""); printf "%8.0f  %s\n", x / n, $0 }' |
    head -n 24
