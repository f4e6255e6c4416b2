#!/usr/bin/env bash
# A storm of large POSTs: how much memory the proxy holds, with the replay
# budget and without it, in the same run.
#
# N (300) clients connect, then each POSTs BODY (1 MiB, with Content-Length)
# at once to the Jenkins double behind the proxy, which holds every answer
# back for DELAY_MS (1500), so that all of them are inside the proxy at the
# same time. Each body fits crumb.replay_body_max_bytes, so without a budget
# the proxy would keep every one of them for a possible replay. Two proxies
# take turns, ROUNDS (3) times, each a fresh process per round:
#
#   budget     crumb.replay_budget_bytes at its default, 64 MiB
#   unbounded  crumb.replay_budget_bytes = 4 GiB (every body kept)
#
# It prints each round's peak RSS (VmHWM) and idle RSS, and the medians, and
# fails unless every POST was answered 201 and the double saw each exactly
# once. Run it as root or not (it needs python3 and cargo); everything is on
# 127.0.0.1, ports PORT_BASE+1..+3 (default 47351..47353); every process it
# starts is stopped by PID. See bench/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${REPO:-$(cd "$HERE/.." && pwd)}
N=${N:-300}
BODY=${BODY:-1048576}
DELAY_MS=${DELAY_MS:-1500}
ROUNDS=${ROUNDS:-3}
PORT_BASE=${PORT_BASE:-47350}

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
command -v python3 >/dev/null || die "python3 is required"

TMP=$(mktemp -d /tmp/crumb-storm.XXXXXX)
PIDS=()
cleanup() {
    local rc=$? pid
    set +e
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    if [[ $rc == 0 ]]; then rm -rf "$TMP"; else log "kept $TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
unset RUST_LOG
while read -r v; do unset "$v"; done < <(compgen -e | grep '^CRUMB_PROXY_' || true)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
log "building crumb-proxy and the Jenkins double (release)"
(cd "$REPO" && cargo build --release --locked) >&2
cp "$TARGET_DIR/release/crumb-proxy" "$TMP/crumb-proxy"
(cd "$REPO" && cargo build --release --locked --example mock_jenkins) >&2
cp "$TARGET_DIR/release/examples/mock_jenkins" "$TMP/mock_jenkins"

P_MOCK=$((PORT_BASE + 1))
printf 'storm-password\n' >"$TMP/password"
chmod 600 "$TMP/password"
RUST_LOG=info "$TMP/mock_jenkins" --listen "127.0.0.1:$P_MOCK" --password-file "$TMP/password" \
    --response-delay "/job/sample-job/build=$DELAY_MS" >"$TMP/mock.out" 2>"$TMP/mock.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q 'listening on' "$TMP/mock.out" 2>/dev/null && break; sleep 0.1; done
grep -q 'listening on' "$TMP/mock.out" || die "the double did not start: $(cat "$TMP/mock.log")"

config() { # name port extra-crumb-line
    cat >"$TMP/$1.toml" <<EOF
[listen]
address = "127.0.0.1:$2"
[upstream]
url = "http://127.0.0.1:$P_MOCK/"
[credentials]
username = "alice"
password_file = "$TMP/password"
[crumb]
$3
[health]
address = ""
EOF
}
config budget $((PORT_BASE + 2)) ""
config unbounded $((PORT_BASE + 3)) "replay_budget_bytes = 4294967296"

kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
# POSTs the double has answered so far.
posts_seen() { grep -c 'method=POST path="/job/sample-job/build" status=201' "$TMP/mock.log" || true; }

declare -A PEAKS
run() { # round name port
    "$TMP/crumb-proxy" --config "$TMP/$2.toml" --log-level warn 2>"$TMP/$2.$1.log" &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$3/api/json" 2>/dev/null && break
        sleep 0.05
    done
    local idle before after result peak
    idle=$(kib "$pid" VmRSS)
    before=$(posts_seen)
    result=$(python3 "$HERE/posts.py" "$3" "$N" /job/sample-job/build "$BODY")
    sleep 0.2
    after=$(posts_seen)
    peak=$(kib "$pid" VmHWM)
    kill -TERM "$pid"
    wait "$pid" || true
    local ok
    ok=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["statuses"].get("201",0))' "$result")
    [[ $ok == "$N" ]] || die "$2 round $1: not every POST got 201: $result"
    [[ $((after - before)) == "$N" ]] || die "$2 round $1: the double saw $((after - before)) POSTs, not $N"
    log "round $1 $2: peak RSS $((peak / 1024)) MiB (idle $((idle / 1024)) MiB), $N/$N POSTs accepted once, $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["seconds"])' "$result") s"
    PEAKS[$2]+="$peak "
}

for round in $(seq "$ROUNDS"); do
    run "$round" budget $((PORT_BASE + 2))
    run "$round" unbounded $((PORT_BASE + 3))
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
b=$(median "${PEAKS[budget]}")
u=$(median "${PEAKS[unbounded]}")
printf '\n%s concurrent %s-byte POSTs, answers held %s ms, %s rounds (medians of peak RSS)\n' "$N" "$BODY" "$DELAY_MS" "$ROUNDS"
printf '| proxy | peak RSS | target |\n| --- | --- | --- |\n'
printf '| replay budget 64 MiB (default) | %d MiB | < 128 MiB |\n' $((b / 1024))
printf '| no budget (every body kept) | %d MiB | |\n' $((u / 1024))
((b < 128 * 1024)) || die "the budgeted proxy peaked at $((b / 1024)) MiB"
