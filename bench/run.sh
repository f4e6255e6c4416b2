#!/usr/bin/env bash
# crumb-proxy against nginx as the same kind of reverse proxy, on loopback.
#
# Run as root on Debian (it installs nginx, wrk, curl and python3 with apt
# when they are missing): `sudo bench/run.sh`. Everything listens on
# 127.0.0.1 only, on ports PORT_BASE+1..+32 (default 47311..47342). Every
# process it starts is stopped again, by PID, when it exits. See
# bench/README.md for what it measures and how to read the table.
#
# Knobs (environment): ROUNDS (5), DURATION (seconds per wrk run, 5),
# WARMUP (seconds of unrecorded load per proxy, 4), UPLOAD_REPEAT (3 uploads
# of each kind per round), POSTS (1000), POST_DELAY_MS (the double holds its
# answers to the POSTs back this long, 500), PORT_BASE (47310), NGINX_BUFFER
# (nginx proxy_buffer_size and client_body_buffer_size, 64k; "default" =
# nginx's own 4k/8k/16k), JSON_PATH (/api/json; /plain/json is the same file
# where crumb-proxy rewrites nothing), QUIET_WAIT (seconds to wait for an
# idle machine before each measurement, 60), FOREIGN_LIMIT (a wrk run during
# which other processes used more than this % of a core is repeated, 15),
# KEEP_TMP=1 (keep the temp dir with logs and raw results), REPO (the
# crumb-proxy checkout to build, default: the one holding this script), REV
# (the label printed for it, default: its git HEAD), PROFILE=1 (instead of
# the comparison: perf profiles of crumb-proxy under wrk -c64, a download
# and an upload; installs linux-perf).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${REPO:-$(cd "$HERE/.." && pwd)}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-4}
UPLOAD_REPEAT=${UPLOAD_REPEAT:-3}
POSTS=${POSTS:-1000}
POST_DELAY_MS=${POST_DELAY_MS:-500}
PORT_BASE=${PORT_BASE:-47310}
NGINX_BUFFER=${NGINX_BUFFER:-64k}
PROFILE=${PROFILE:-0}
KEEP_TMP=${KEEP_TMP:-0}
JSON_PATH=${JSON_PATH:-/api/json}
QUIET_WAIT=${QUIET_WAIT:-60}
FOREIGN_LIMIT=${FOREIGN_LIMIT:-15}

SCRIPT_START=$(date +%s)
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

[[ $EUID -eq 0 ]] || die "run as root: it installs Debian packages and resets /proc/PID/clear_refs"
[[ -r /etc/debian_version ]] || die "this script expects Debian (apt, dpkg)"

# --- 0. packages -------------------------------------------------------------

install_packages() {
    local need=() pkg
    local pkgs=(nginx wrk curl python3)
    [[ $PROFILE == 1 ]] && pkgs+=(linux-perf)
    for pkg in "${pkgs[@]}"; do
        if [[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null) != installed ]]; then
            need+=("$pkg")
        fi
    done
    ((${#need[@]})) || { log "packages: ${pkgs[*]} already installed"; return 0; }
    log "packages: installing ${need[*]}"
    # (apt-cache output is captured first: `| grep -q` under pipefail
    # fails when grep exits before apt-cache has written everything.)
    has_candidate() { [[ $(apt-cache policy "$1" 2>/dev/null) == *"Candidate: "[0-9]* ]]; }
    for pkg in "${need[@]}"; do
        if ! has_candidate "$pkg"; then
            log "packages: no candidate for $pkg; apt-get update"
            apt-get update -qq
            break
        fi
    done
    for pkg in "${need[@]}"; do
        has_candidate "$pkg" || die "Debian has no package $pkg here"
    done
    # The nginx package would start the system nginx on 0.0.0.0:80; a
    # policy-rc.d that says 101 keeps every service from being started.
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 || {
        ((made_policy)) && rm -f /usr/sbin/policy-rc.d
        die "apt-get install ${need[*]} failed"
    }
    ((made_policy)) && rm -f /usr/sbin/policy-rc.d
    return 0
}
install_packages
command -v cargo >/dev/null || die "cargo not found; install Rust (rustup) first"
command -v rustc >/dev/null || die "rustc not found"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "nginx binary not found"

# --- 1. temp dir, cleanup ----------------------------------------------------

TMP=$(mktemp -d /tmp/crumb-bench.XXXXXX)
chmod 755 "$TMP" # nginx workers run as nobody and read the docroot
PIDS=()
cleanup() {
    local rc=$? pid i
    set +e
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            log "PID $pid did not stop on SIGTERM; SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
        wait "$pid" 2>/dev/null
    done
    if [[ $KEEP_TMP == 1 || $rc != 0 ]]; then
        rm -f "$TMP/www/big.bin" "$TMP/upload.bin"
        log "kept $TMP (logs, configs, raw results)"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every crumb-proxy setting comes from the config files below.
unset RUST_LOG
while read -r v; do unset "$v"; done < <(compgen -e | grep '^CRUMB_PROXY_' || true)
# 1000 client connections plus 1000 upstream ones in one process.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# --- 2. build ------------------------------------------------------------------

TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
# Two invocations: built together with the example, the binary would get the
# dev-dependencies' extra tokio features. Copies, so that a rebuild by
# someone else during the run changes nothing.
log "building crumb-proxy (cargo build --release --locked) in $REPO"
(cd "$REPO" && cargo build --release --locked) >&2
cp "$TARGET_DIR/release/crumb-proxy" "$TMP/crumb-proxy"
log "building the Jenkins double (cargo build --release --locked --example mock_jenkins)"
(cd "$REPO" && cargo build --release --locked --example mock_jenkins) >&2
cp "$TARGET_DIR/release/examples/mock_jenkins" "$TMP/mock_jenkins"
log "building the upload sink (rustc -O bench/sink.rs)"
rustc -O --edition 2021 -o "$TMP/sink" "$HERE/sink.rs"
GIT_REV=${REV:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [[ -n $(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
    GIT_REV="$GIT_REV+uncommitted-changes-in-src"
fi

# --- 3. ports, files, secrets ----------------------------------------------------

P_UP=$((PORT_BASE + 1))      # nginx upstream (static JSON, 1 GiB file)
P_SINK=$((PORT_BASE + 2))    # upload sink
P_NGX=$((PORT_BASE + 11))    # nginx proxy -> upstream
P_NGX_UP=$((PORT_BASE + 12)) # nginx proxy -> sink
P_NGX_LOG=$((PORT_BASE + 13)) # nginx proxy -> upstream, access_log on
P_CP=$((PORT_BASE + 21))     # crumb-proxy -> upstream, --log-level warn
P_CP_UP=$((PORT_BASE + 22))  # crumb-proxy -> sink, --log-level warn
P_CP_LOG=$((PORT_BASE + 23)) # crumb-proxy -> upstream, default log level
P_MOCK=$((PORT_BASE + 31))   # Jenkins test double
P_CP_MOCK=$((PORT_BASE + 32)) # crumb-proxy with a password -> double
for p in $P_UP $P_SINK $P_NGX $P_NGX_UP $P_NGX_LOG $P_CP $P_CP_UP $P_CP_LOG $P_MOCK $P_CP_MOCK; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        die "127.0.0.1:$p is already in use; choose another PORT_BASE"
    fi
done

mkdir -p "$TMP/www/api" "$TMP/www/plain" "$TMP/nginx-tmp"
# A 1 KiB Jenkins-like API answer with absolute URLs into the upstream, as
# Jenkins writes them: crumb-proxy rewrites them to its own address
# (upstream.rewrite_api_urls) and nginx gets sub_filter to do the same.
# The same bytes at /plain/json are not an API path: no rewriting there.
python3 "$HERE/api_json.py" "$TMP/www/api/json" "$P_UP"
BIG=$((1024 * 1024 * 1024))
UP=$((256 * 1024 * 1024))
truncate -s "$BIG" "$TMP/www/big.bin"
truncate -s "$UP" "$TMP/upload.bin"
chmod -R a+rX "$TMP/www"
cp "$TMP/www/api/json" "$TMP/www/plain/json"
cat "$TMP/www/big.bin" >/dev/null # page cache
cat "$TMP/upload.bin" >/dev/null

USER_NAME=bench
head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$TMP/token"
head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$TMP/password"
chmod 600 "$TMP/token" "$TMP/password"
BASIC=$(printf '%s:%s' "$USER_NAME" "$(cat "$TMP/token")" | base64 -w0)

# --- 4. configs --------------------------------------------------------------------

NGINX_TEMP_PATHS="client_body_temp_path $TMP/nginx-tmp/body; proxy_temp_path $TMP/nginx-tmp/proxy; fastcgi_temp_path $TMP/nginx-tmp/fastcgi; uwsgi_temp_path $TMP/nginx-tmp/uwsgi; scgi_temp_path $TMP/nginx-tmp/scgi;"
cat >"$TMP/upstream.conf" <<EOF
# The fast upstream: static files, sendfile, keep-alive forever.
user nobody nogroup;
worker_processes 2;
pid $TMP/upstream.pid;
error_log $TMP/upstream-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    $NGINX_TEMP_PATHS
    server {
        listen 127.0.0.1:$P_UP;
        root $TMP/www;
        location = /api/json { default_type application/json; }
        location = /plain/json { default_type application/json; }
        location = /big.bin { default_type application/octet-stream; }
    }
}
EOF

if [[ $NGINX_BUFFER == default ]]; then
    NGX_BUF_LINES="# proxy_buffer_size and client_body_buffer_size: nginx defaults (one page / 16k)"
else
    NGX_BUF_LINES="proxy_buffer_size $NGINX_BUFFER; proxy_buffers 4 $NGINX_BUFFER; proxy_busy_buffers_size $NGINX_BUFFER; client_body_buffer_size $NGINX_BUFFER;"
fi
API_LOCATION="location ~ /api/(json|xml|python)\$ {
            proxy_pass http://jenkins;
            sub_filter_types application/json;
            sub_filter_once off;
            sub_filter_last_modified off;
            sub_filter \"http://127.0.0.1:$P_UP/\" \"http://\$http_host/\";
        }"
cat >"$TMP/proxy.conf" <<EOF
# nginx doing what crumb-proxy does for an API-token user: add Authorization
# (and a fixed Jenkins-Crumb, which crumb-proxy would add with a password),
# forward and return X-Request-Id, stream both ways unbuffered, keep a pool
# of kept-alive connections upstream.
user nobody nogroup;
worker_processes 2;
pid $TMP/proxy.pid;
error_log $TMP/proxy-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    client_max_body_size 0;
    $NGINX_TEMP_PATHS
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host \$proxy_host;
    proxy_set_header Authorization "Basic $BASIC";
    proxy_set_header Jenkins-Crumb "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    proxy_set_header X-Request-Id \$request_id;
    add_header X-Request-Id \$request_id always;
    # What else crumb-proxy does: X-Forwarded-*, no compressed answers
    # from upstream, and (API_LOCATION below) Jenkins' absolute URLs in API
    # answers rewritten to the proxy's address (the length changes: the
    # answer goes out chunked, as crumb-proxy's does).
    proxy_set_header X-Forwarded-Host \$http_host;
    proxy_set_header X-Forwarded-Proto http;
    proxy_set_header X-Forwarded-Port \$server_port;
    proxy_set_header Accept-Encoding "";

    proxy_buffering off;
    proxy_request_buffering off;
    $NGX_BUF_LINES
    upstream jenkins {
        server 127.0.0.1:$P_UP;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    upstream sink {
        server 127.0.0.1:$P_SINK;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$P_NGX;
        location / { proxy_pass http://jenkins; }
        $API_LOCATION
    }
    server {
        listen 127.0.0.1:$P_NGX_UP;
        location / { proxy_pass http://sink; }
    }
    server {
        listen 127.0.0.1:$P_NGX_LOG;
        access_log $TMP/nginx-access.log combined;
        location / { proxy_pass http://jenkins; }
        $API_LOCATION
    }
}
EOF

cp_config() { # file listen upstream secret-line [extra]
    cat >"$1" <<EOF
[listen]
address = "127.0.0.1:$2"

[upstream]
url = "http://127.0.0.1:$3/"

[credentials]
username = "$USER_NAME"
$4

[crumb]
mode = "auto"

[health]
address = ""
${5:-}
EOF
}
cp_config "$TMP/cp.toml" "$P_CP" "$P_UP" "api_token_file = \"token\""
cp_config "$TMP/cp-up.toml" "$P_CP_UP" "$P_SINK" "api_token_file = \"token\""
cp_config "$TMP/cp-log.toml" "$P_CP_LOG" "$P_UP" "api_token_file = \"token\""
cp_config "$TMP/cp-mock.toml" "$P_CP_MOCK" "$P_MOCK" "password_file = \"password\"" \
    $'\n[limits]\n# all 1000 POSTs inside the proxy at once (default 512: the rest would wait in the backlog)\nmax_connections = 1100'

# --- 5. start everything -----------------------------------------------------------

wait_port() { # port pid logfile
    local i
    for i in $(seq 200); do
        kill -0 "$2" 2>/dev/null || { tail -n 20 "$3" >&2; die "process $2 for port $1 exited"; }
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    tail -n 20 "$3" >&2
    die "nothing listens on 127.0.0.1:$1 after 10s"
}
start() { # name port logfile command...
    local name=$1 port=$2 logf=$3
    shift 3
    "$@" >"$logf.out" 2>"$logf" &
    local pid=$!
    PIDS+=("$pid")
    wait_port "$port" "$pid" "$logf"
    log "started $name (PID $pid) on 127.0.0.1:$port"
    printf -v "PID_$name" '%s' "$pid"
}

"$NGINX" -t -q -e "$TMP/upstream-error.log" -c "$TMP/upstream.conf" >&2 || die "upstream.conf invalid"
"$NGINX" -t -q -e "$TMP/proxy-error.log" -c "$TMP/proxy.conf" >&2 || die "proxy.conf invalid"
start upstream "$P_UP" "$TMP/upstream.log" "$NGINX" -e "$TMP/upstream-error.log" -c "$TMP/upstream.conf" -g 'daemon off;'
start sink "$P_SINK" "$TMP/sink.log" "$TMP/sink" "127.0.0.1:$P_SINK"
start nginx "$P_NGX" "$TMP/nginx.log" "$NGINX" -e "$TMP/proxy-error.log" -c "$TMP/proxy.conf" -g 'daemon off;'
start cp "$P_CP" "$TMP/cp.log" "$TMP/crumb-proxy" --config "$TMP/cp.toml" --log-level warn
start cp_up "$P_CP_UP" "$TMP/cp-up.log" "$TMP/crumb-proxy" --config "$TMP/cp-up.toml" --log-level warn
start cp_log "$P_CP_LOG" "$TMP/cp-log.log" "$TMP/crumb-proxy" --config "$TMP/cp-log.toml"
start mock "$P_MOCK" "$TMP/mock.log" "$TMP/mock_jenkins" --listen "127.0.0.1:$P_MOCK" --user "$USER_NAME" --password-file "$TMP/password" \
    --response-delay "/job/sample-job/build=$POST_DELAY_MS"
start cp_mock "$P_CP_MOCK" "$TMP/cp-mock.log" "$TMP/crumb-proxy" --config "$TMP/cp-mock.toml"

# --- 6. measurement helpers --------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK)
NPROC=$(nproc)
RESULTS=$TMP/results.tsv
: >"$RESULTS"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; } # round metric contender value

children() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }
pids_of() { # contender -> PIDs whose CPU counts for it
    case $1 in
    nginx | nginx_up | nginx_log) echo "$PID_nginx" $(children "$PID_nginx") ;;
    crumb-proxy) echo "$PID_cp" ;;
    crumb-proxy_up) echo "$PID_cp_up" ;;
    crumb-proxy_log) echo "$PID_cp_log" ;;
    upstream) echo "$PID_upstream" $(children "$PID_upstream") "$PID_sink" ;;
    esac
}
cpu_ticks() { # PIDs... -> utime+stime summed
    local t=0 pid s a
    for pid in "$@"; do
        read -r s <"/proc/$pid/stat" || continue
        s=${s##*) }
        read -ra a <<<"$s"
        t=$((t + a[11] + a[12]))
    done
    echo "$t"
}
user_ticks() { # PIDs... -> utime summed
    local t=0 pid s a
    for pid in "$@"; do
        read -r s <"/proc/$pid/stat" || continue
        s=${s##*) }
        read -ra a <<<"$s"
        t=$((t + a[11]))
    done
    echo "$t"
}
host_ticks() { # -> "busy total" jiffies over all CPUs
    local _c u n s i w q sq st
    read -r _c u n s i w q sq st _ </proc/stat
    echo "$((u + n + s + q + sq + st)) $((u + n + s + i + w + q + sq + st))"
}
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; } # pid field
max_status_kib() { # field pids...
    local f=$1 m=0 v pid
    shift
    for pid in "$@"; do v=$(status_kib "$pid" "$f"); ((v > m)) && m=$v; done
    echo "$m"
}
reset_hwm() { local pid; for pid in "$@"; do echo 5 >"/proc/$pid/clear_refs"; done; }

# Waits (at most QUIET_WAIT s) until the machine is idle apart from us, so
# that a build or test run of someone else does not land in a measurement.
FOREIGN_MAX=0
RETRIES=0
wait_quiet() {
    local start=$SECONDS b1 t1 b2 t2 pct
    while :; do
        read -r b1 t1 < <(host_ticks)
        sleep 0.5
        read -r b2 t2 < <(host_ticks)
        pct=$(((b2 - b1) * 100 / (t2 - t1 > 0 ? t2 - t1 : 1)))
        ((pct < 8)) && return 0
        if ((SECONDS - start > QUIET_WAIT)); then
            log "machine still ${pct}% busy after ${QUIET_WAIT}s; measuring anyway"
            return 0
        fi
    done
}

lat_ms() { # wrk latency like 812.00us / 1.23ms / 2.00s -> ms
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.4f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.4f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.4f", v * 60000 }
        else { sub(/s$/, "", v); printf "%.4f", v * 1000 } }'
}

# One wrk run against one proxy; records req/s, p50, p99, CPU per request
# and the CPU that neither the proxy, the upstream nor wrk used.
run_wrk() { # round contender port conns metric-suffix
    local round=$1 who=$2 port=$3 conns=$4 sfx=$5 threads=2 out=$TMP/wrk.out attempt
    ((conns < 2)) && threads=1
    local ppids upids p0 pu0 u0 h0 t0 p1 pu1 u1 h1 t1 reqs rps p50 p99 wrkcpu bad errs cpu_us user_us foreign
    # A run during which other processes used more than FOREIGN_LIMIT % of
    # a core is done again (at most twice more).
    for attempt in 1 2 3; do
        wait_quiet
        ppids=$(pids_of "$who")
        upids=$(pids_of upstream)
        p0=$(cpu_ticks $ppids)
        pu0=$(user_ticks $ppids)
        u0=$(cpu_ticks $upids)
        read -r h0 t0 < <(host_ticks)
        bash -c 'wrk "$@"; read -r s < /proc/$$/stat; s=${s##*) }; a=($s); echo "WRK_CPU $((a[13] + a[14]))"' _ \
            -t"$threads" -c"$conns" -d"${DURATION}s" --latency "http://127.0.0.1:$port$JSON_PATH" >"$out" 2>&1 ||
            { cat "$out" >&2; die "wrk failed"; }
        p1=$(cpu_ticks $ppids)
        pu1=$(user_ticks $ppids)
        u1=$(cpu_ticks $upids)
        read -r h1 t1 < <(host_ticks)
        reqs=$(awk '/requests in/ { print $1 }' "$out")
        rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
        p50=$(lat_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
        p99=$(lat_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
        wrkcpu=$(awk '/^WRK_CPU/ { print $2 }' "$out")
        bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
        errs=$(awk '/Socket errors:/ { print }' "$out")
        [[ -n $reqs && $reqs -gt 0 ]] || { cat "$out" >&2; die "wrk reported no requests"; }
        [[ -z $bad ]] || { cat "$out" >&2; die "$who answered $bad non-2xx responses"; }
        [[ -z $errs ]] || log "$who c=$conns: $errs"
        cpu_us=$(awk -v d=$((p1 - p0)) -v r="$reqs" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d * 1e6 / hz / r }')
        user_us=$(awk -v d=$((pu1 - pu0)) -v r="$reqs" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d * 1e6 / hz / r }')
        foreign=$(awk -v b=$((h1 - h0)) -v t=$((t1 - t0)) -v ours=$((p1 - p0 + u1 - u0 + wrkcpu)) -v n="$NPROC" \
            'BEGIN { f = (b - ours) / (t > 0 ? t : 1) * n * 100; if (f < 0) f = 0; printf "%.0f", f }')
        ((foreign <= FOREIGN_LIMIT)) && break
        if ((attempt < 3)); then
            log "round $round $who c=$conns: other processes used ${foreign}% of a core; measuring again"
            RETRIES=$((RETRIES + 1))
        fi
    done
    ((foreign > FOREIGN_MAX)) && FOREIGN_MAX=$foreign
    record "$round" "rps_$sfx" "$who" "$rps"
    record "$round" "p50_$sfx" "$who" "$p50"
    record "$round" "p99_$sfx" "$who" "$p99"
    record "$round" "cpu_$sfx" "$who" "$cpu_us"
    record "$round" "user_$sfx" "$who" "$user_us"
    record "$round" "foreign_$sfx" "$who" "$foreign"
    log "round $round $who c=$conns${sfx#c$conns}: ${rps} req/s, p50 ${p50} ms, p99 ${p99} ms, ${cpu_us} µs CPU/req, other load ${foreign}% of a core"
}

# A 1 GiB download; records MB/s, CPU seconds per GiB, RSS before and peak.
run_download() { # round contender port
    local round=$1 who=$2 port=$3 ppids
    wait_quiet
    ppids=$(pids_of "$who")
    local before c0 c1 out code size speed peak
    if [[ $who == crumb-proxy ]]; then before=$(status_kib "$PID_cp" VmRSS); reset_hwm "$PID_cp"; else reset_hwm $ppids; fi
    c0=$(cpu_ticks $ppids)
    out=$(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{speed_download}' "http://127.0.0.1:$port/big.bin")
    c1=$(cpu_ticks $ppids)
    read -r code size speed <<<"$out"
    [[ $code == 200 && $size == "$BIG" ]] || die "$who download: status $code, $size bytes (expected 200, $BIG)"
    if [[ $who == crumb-proxy ]]; then
        peak=$(status_kib "$PID_cp" VmHWM)
        record "$round" rss_before_dl "$who" "$before"
    else
        peak=$(max_status_kib VmHWM $ppids)
    fi
    record "$round" dl_mbps "$who" "$(awk -v s="$speed" 'BEGIN { printf "%.1f", s / 1e6 }')"
    record "$round" dl_cpu "$who" "$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", d / hz }')"
    record "$round" rss_peak_dl "$who" "$peak"
    log "round $round $who download: $(awk -v s="$speed" 'BEGIN { printf "%.0f", s / 1e6 }') MB/s, $(((c1 - c0) * 1000 / CLK_TCK)) ms CPU, peak RSS ${peak} KiB${before:+ (before: $before KiB)}"
}

# UPLOAD_REPEAT 256 MiB uploads, Content-Length or chunked, back to back
# (one takes a fifth of a second); records their median MB/s and CPU. The
# sink's answer must say it received every byte with the same framing.
run_upload() { # round contender port framing
    local round=$1 who=$2 port=$3 framing=$4 ppids pid_rss i
    wait_quiet
    if [[ $who == crumb-proxy ]]; then ppids=$(pids_of crumb-proxy_up); else ppids=$(pids_of "$who"); fi
    local before c0 c1 out code size speed peak body speeds=() cpus=()
    if [[ $who == crumb-proxy ]]; then pid_rss=$PID_cp_up; else pid_rss=""; fi
    if [[ -n $pid_rss ]]; then before=$(status_kib "$pid_rss" VmRSS); reset_hwm "$pid_rss"; else reset_hwm $ppids; fi
    for i in $(seq "$UPLOAD_REPEAT"); do
        c0=$(cpu_ticks $ppids)
        if [[ $framing == length ]]; then
            out=$(curl -sS -H 'Expect:' -T "$TMP/upload.bin" -o "$TMP/upload.answer" \
                -w '%{http_code} %{size_upload} %{speed_upload}' "http://127.0.0.1:$port/upload")
        else
            out=$(curl -sS -H 'Expect:' -T - -o "$TMP/upload.answer" \
                -w '%{http_code} %{size_upload} %{speed_upload}' "http://127.0.0.1:$port/upload" <"$TMP/upload.bin")
        fi
        c1=$(cpu_ticks $ppids)
        read -r code size speed <<<"$out"
        body=$(cat "$TMP/upload.answer")
        [[ $code == 201 && $body == "{\"received\":$UP,\"framing\":\"$framing\"}" ]] ||
            die "$who $framing upload: status $code, sink said $body (expected 201 and $UP bytes $framing)"
        speeds+=("$(awk -v s="$speed" 'BEGIN { printf "%.1f", s / 1e6 }')")
        cpus+=("$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", d / hz }')")
    done
    if [[ -n $pid_rss ]]; then
        peak=$(status_kib "$pid_rss" VmHWM)
        record "$round" "rss_before_up" "$who" "$before"
    else
        peak=$(max_status_kib VmHWM $ppids)
    fi
    local mbps cpu
    mbps=$(printf '%s\n' "${speeds[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
    cpu=$(printf '%s\n' "${cpus[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
    record "$round" "up_${framing}_mbps" "$who" "$mbps"
    record "$round" "up_${framing}_cpu" "$who" "$cpu"
    record "$round" rss_peak_up "$who" "$peak"
    log "round $round $who upload ($framing) x$UPLOAD_REPEAT: ${speeds[*]} MB/s (median $mbps), CPU s ${cpus[*]}, peak RSS ${peak} KiB${before:+ (before: $before KiB)}"
}

# --- 7. measure ------------------------------------------------------------------

# One request each, then the idle RSS of a fresh crumb-proxy.
for p in $P_CP $P_CP_LOG $P_NGX $P_NGX_LOG; do
    curl -sf -o /dev/null "http://127.0.0.1:$p/api/json" || die "GET /api/json through 127.0.0.1:$p failed"
done
for p in $P_CP_UP $P_NGX_UP; do
    [[ $(curl -sf -H 'Expect:' -T "$TMP/www/api/json" "http://127.0.0.1:$p/upload") == '{"received":1024,"framing":"length"}' ]] ||
        die "PUT /upload through 127.0.0.1:$p failed"
done
sleep 0.5
record 0 rss_idle crumb-proxy "$(status_kib "$PID_cp" VmRSS)"
record 0 rss_idle_up crumb-proxy "$(status_kib "$PID_cp_up" VmRSS)"
record 0 rss_idle nginx "$(max_status_kib VmRSS $(children "$PID_nginx"))"
log "idle RSS: crumb-proxy $(status_kib "$PID_cp" VmRSS) KiB; nginx worker $(max_status_kib VmRSS $(children "$PID_nginx")) KiB"
# Both must answer the same (ports aside), URLs rewritten or not alike.
curl -sf -D "$TMP/headers.crumb-proxy" -o "$TMP/body.crumb-proxy" "http://127.0.0.1:$P_CP$JSON_PATH"
curl -sf -D "$TMP/headers.nginx" -o "$TMP/body.nginx" "http://127.0.0.1:$P_NGX$JSON_PATH"
body_cp=$(<"$TMP/body.crumb-proxy")
body_ng=$(<"$TMP/body.nginx")
if [[ ${body_cp//127.0.0.1:$P_CP\//PROXY/} == "${body_ng//127.0.0.1:$P_NGX\//PROXY/}" ]]; then
    PARITY="same $JSON_PATH body from both"
else
    PARITY="DIFFERENT $JSON_PATH bodies (see $TMP/body.*)"
    log "WARNING: $PARITY"
fi
if [[ $body_cp == *"127.0.0.1:$P_CP/job/"* ]]; then
    PARITY="$PARITY, Jenkins URLs rewritten to the proxy by both"
else
    PARITY="$PARITY, no URL rewriting"
fi
log "$PARITY"

# The first seconds of load on this VM run slower for everyone; the warm-up
# keeps that out of round 1.
log "warm-up: ${WARMUP}s of wrk -c64 through each proxy, twice (not recorded)"
for p in $P_CP $P_NGX $P_CP_LOG $P_NGX_LOG $P_CP $P_NGX; do
    wrk -t2 -c64 -d"${WARMUP}s" "http://127.0.0.1:$p$JSON_PATH" >/dev/null
done
curl -sS -o /dev/null "http://127.0.0.1:$P_CP/big.bin"
curl -sS -o /dev/null "http://127.0.0.1:$P_NGX/big.bin"

# --- 7b. PROFILE=1: where crumb-proxy spends its CPU -------------------------------

perf_report() { # name
    local data=$TMP/perf-$1.data
    echo
    echo "=== $1: self time by function (top 30) ==="
    perf report -i "$data" --no-children --sort dso,symbol --stdio -g none --percent-limit 0.4 2>/dev/null |
        grep -v '^#' | grep -v '^$' | cut -c1-150 | sed 's/ *- *- *$//; s/ *$//' | head -n 30
    echo
    echo "=== $1: share of samples by binary ==="
    perf report -i "$data" --no-children --sort dso --stdio -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | sed 's/ *$//' | head -n 5
    echo
    echo "=== $1: inclusive time of crumb-proxy's own functions and the big blocks ==="
    perf report -i "$data" --children --sort symbol --stdio -g none --percent-limit 0.3 2>/dev/null |
        grep -v '^#' | grep -v '^$' | cut -c1-150 | sed 's/ *- *- *$//; s/ *$//' |
        grep -E '\[[.k]\] (<?crumb_proxy::|hyper::proto::h1::role::(Client|Server)|__GI___writev$|__sys_recvfrom$|epoll_wait$|futex_w|_rjem_malloc$|_rjem_sdallocx$|schedule$|tokio::runtime::scheduler::current_thread::Context::park$|tracing_core::event::Event::dispatch$)' |
        awk '!seen[$0]++' | head -n 40
}
if [[ $PROFILE == 1 ]]; then
    KEEP_TMP=1
    prof() { # name seconds -- load command...
        local name=$1 secs=$2
        shift 3
        perf record -q -F 999 -e cpu-clock --call-graph dwarf,16384 -p "$PERF_PID" -o "$TMP/perf-$name.data" -- sleep "$secs" 2>/dev/null &
        local perf_pid=$!
        sleep 0.3
        "$@" >/dev/null
        wait "$perf_pid" || true
    }
    log "profiling crumb-proxy (PID $PID_cp): wrk -c64 for 6 s, perf for the middle 5 s"
    PERF_PID=$PID_cp
    { sleep 0.5; wrk -t2 -c64 -d6s "http://127.0.0.1:$P_CP$JSON_PATH"; } >"$TMP/wrk-profile.out" &
    wrk_job=$!
    perf record -q -F 999 -e cpu-clock --call-graph dwarf,16384 -p "$PID_cp" -o "$TMP/perf-rps.data" -- sleep 5 2>/dev/null
    wait "$wrk_job"
    grep -E 'Requests/sec' "$TMP/wrk-profile.out" >&2
    log "profiling crumb-proxy: a 1 GiB download"
    prof download 4 -- curl -sS -o /dev/null "http://127.0.0.1:$P_CP/big.bin"
    PERF_PID=$PID_cp_up
    log "profiling crumb-proxy: a 256 MiB Content-Length upload"
    prof upload 2 -- curl -sS -H 'Expect:' -T "$TMP/upload.bin" -o /dev/null "http://127.0.0.1:$P_CP_UP/upload"
    for name in rps download upload; do perf_report "$name"; done
    echo
    echo "perf data kept in $TMP/perf-*.data (perf report -i FILE)"
    exit 0
fi

for round in $(seq "$ROUNDS"); do
    # A/B in odd rounds, B/A in even ones, metric by metric.
    if ((round % 2)); then order="crumb-proxy nginx"; else order="nginx crumb-proxy"; fi
    for metric in download up_length up_chunked c1 c16 c64 c64log; do
        for who in $order; do
            case $who/$metric in
            crumb-proxy/download) run_download "$round" crumb-proxy "$P_CP" ;;
            nginx/download) run_download "$round" nginx "$P_NGX" ;;
            crumb-proxy/up_*) run_upload "$round" crumb-proxy "$P_CP_UP" "${metric#up_}" ;;
            nginx/up_*) run_upload "$round" nginx "$P_NGX_UP" "${metric#up_}" ;;
            crumb-proxy/c64log) run_wrk "$round" crumb-proxy_log "$P_CP_LOG" 64 c64log ;;
            nginx/c64log) run_wrk "$round" nginx_log "$P_NGX_LOG" 64 c64log ;;
            crumb-proxy/c*) run_wrk "$round" crumb-proxy "$P_CP" "${metric#c}" "$metric" ;;
            nginx/c*) run_wrk "$round" nginx "$P_NGX" "${metric#c}" "$metric" ;;
            esac
        done
    done
done

# --- 8. 1000 concurrent POSTs after a session expiry ---------------------------------

# Issue 5: "1000 concurrent POSTs after a session expiry: exactly one crumb
# fetch, 1000 triggers accepted by Jenkins, none doubled". One POST first, so
# that the proxy caches a crumb and its session; then SIGUSR1 makes the double
# expire every session (examples/mock_jenkins.rs), and the burst's POSTs go
# out with a crumb Jenkins now rejects (403): the proxy must fetch one new
# crumb for all of them and replay each rejected POST once. The double holds
# its answers to these POSTs back for POST_DELAY_MS after judging them, so
# that all of them are out with the stale crumb before the first 403 comes
# back (without it, only those sent in the first round trip were: 39 to 251
# of 1000 in trial runs), and the double should see 2 x POSTS. Counted from the
# double's request log (one line per request, written before it answers) and
# the proxy's (crumb="cached|fetched|retried"), from byte offsets taken
# just before the burst.
log_since() { tail -c +"$(($2 + 1))" "$1"; } # file byte-offset
mock_posts() { grep 'method=POST path="\?/job/sample-job/build"\? ' || true; } # on stdin
count() { grep -c -- "$1" || true; } # pattern, on stdin

log "$POSTS concurrent POSTs /job/sample-job/build through crumb-proxy (password, crumb.mode auto) to the Jenkins double, after a session expiry"
wait_quiet
prime_from=$(stat -c %s "$TMP/mock.log")
prime_code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$P_CP_MOCK/job/sample-job/build")
[[ $prime_code == 201 ]] || die "the first POST through crumb-proxy to the double got $prime_code (expected 201)"
prime_fetches=$(log_since "$TMP/mock.log" "$prime_from" | count 'path="\?/crumbIssuer/api/json')
expired_before=$(count 'mock-jenkins: sessions expired' <"$TMP/mock.log")
kill -USR1 "$PID_mock"
for i in $(seq 100); do
    (($(count 'mock-jenkins: sessions expired' <"$TMP/mock.log") > expired_before)) && break
    ((i < 100)) || die "the double did not log 'sessions expired' within 5 s of SIGUSR1"
    sleep 0.05
done
expired=$(grep -o 'mock-jenkins: sessions expired ([0-9]*)' "$TMP/mock.log" | tail -n1 | tr -dc 0-9)
log "first POST: $prime_code, $prime_fetches crumb fetch(es); SIGUSR1: the double expired $expired session(s)"
mock_from=$(stat -c %s "$TMP/mock.log")
proxy_from=$(stat -c %s "$TMP/cp-mock.log")
python3 "$HERE/posts.py" "$P_CP_MOCK" "$POSTS" /job/sample-job/build >"$TMP/posts.json"
sleep 0.5 # let the log lines land
log_since "$TMP/mock.log" "$mock_from" >"$TMP/mock-burst.log"
log_since "$TMP/cp-mock.log" "$proxy_from" >"$TMP/cp-mock-burst.log"
fetches=$(count 'path="\?/crumbIssuer/api/json' <"$TMP/mock-burst.log")
posts_seen=$(mock_posts <"$TMP/mock-burst.log" | count .)
rejected=$(mock_posts <"$TMP/mock-burst.log" | count ' status=403 ')
accepted=$(mock_posts <"$TMP/mock-burst.log" | count ' status=201 ')
proxy_cached=$(count 'crumb="\?cached' <"$TMP/cp-mock-burst.log")
proxy_fetched=$(count 'crumb="\?fetched' <"$TMP/cp-mock-burst.log")
proxy_retried=$(count 'crumb="\?retried' <"$TMP/cp-mock-burst.log")
log "posts: $(cat "$TMP/posts.json"); the double saw $fetches crumb fetch(es) and $posts_seen POSTs ($rejected rejected with 403, $accepted accepted); proxy log: $proxy_cached cached, $proxy_fetched fetched, $proxy_retried retried"

# --- 9. report -----------------------------------------------------------------------

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
cat >"$TMP/meta.env" <<EOF
date=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
nproc=$NPROC
cpu=$cpu_model
kernel=$(uname -r)
os=$(. /etc/os-release && echo "$PRETTY_NAME")
nginx=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
wrk=$(wrk -v 2>&1 | head -n1 | awk '{print $2}')
curl=$(curl --version | head -n1 | awk '{print $2}')
rustc=$(rustc --version)
rev=$GIT_REV
rounds=$ROUNDS
duration=$DURATION
nginx_buffer=$NGINX_BUFFER
posts=$POSTS
parity=$PARITY
json_path=$JSON_PATH
posts_result=$(cat "$TMP/posts.json")
posts_prime_fetches=$prime_fetches
posts_expired_sessions=$expired
posts_fetches=$fetches
posts_seen=$posts_seen
posts_rejected=$rejected
posts_accepted=$accepted
posts_proxy_cached=$proxy_cached
posts_proxy_fetched=$proxy_fetched
posts_proxy_retried=$proxy_retried
foreign_max=$FOREIGN_MAX
foreign_limit=$FOREIGN_LIMIT
retries=$RETRIES
elapsed=$(($(date +%s) - SCRIPT_START))
EOF
python3 "$HERE/report.py" "$RESULTS" "$TMP/meta.env"
