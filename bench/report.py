#!/usr/bin/env python3
"""Prints bench/run.sh's one table from its raw results.

usage: report.py RESULTS.tsv META.env

RESULTS.tsv lines: round, metric, contender, value. Each cell is the median
over the rounds, followed by the spread between rounds: (max - min) / median.
"""

import json
import statistics
import sys
from collections import defaultdict

results_path, meta_path = sys.argv[1], sys.argv[2]
values = defaultdict(list)
by_round = defaultdict(dict)  # (metric, who) -> {round: value}
for line in open(results_path):
    rnd, metric, who, value = line.rstrip("\n").split("\t")
    values[(metric, who)].append(float(value))
    by_round[(metric, who)][rnd] = float(value)
meta = {}
for line in open(meta_path):
    key, _, value = line.rstrip("\n").partition("=")
    meta[key] = value


def med(metric, who):
    v = values.get((metric, who))
    return statistics.median(v) if v else None


def spread(metric, who):
    v = values.get((metric, who))
    if not v or len(v) < 2:
        return None
    m = statistics.median(v)
    return (max(v) - min(v)) / m * 100 if m else None


def fmt(x, digits):
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def cell(metric, who, digits, how="median"):
    v = values.get((metric, who))
    if not v:
        return "-", None
    x = {"median": statistics.median, "max": max, "min": min}[how](v)
    s = spread(metric, who) if how == "median" else None
    text = fmt(x, digits) + (f" ±{s / 2:.0f}%" if s is not None else "")
    return text, x


rows = []  # metric, crumb cell, nginx cell, ratio, target
verdicts = []


def paired_ratios(metric, cp, ng):
    """crumb-proxy / nginx of each round: the two ran back to back."""
    a, b = by_round.get((metric, cp), {}), by_round.get((metric, ng), {})
    return [a[r] / b[r] for r in a if r in b and b[r]]


def row(label, metric, digits, target=None, cp="crumb-proxy", ng="nginx", how="median"):
    ctext, c = cell(metric, cp, digits, how)
    ntext, n = cell(metric, ng, digits, how)
    ratios = paired_ratios(metric, cp, ng)
    if how == "median" and ratios:
        ratio = statistics.median(ratios)
        rtext = fmt(ratio, 2) + (f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else "")
    else:
        ratio = c / n if (c is not None and n) else None
        rtext = fmt(ratio, 2) if ratio is not None else "-"
    verdict = ""
    if target and ratio is not None:
        op, limit = target
        ok = ratio >= limit if op == ">=" else ratio <= limit
        verdict = f"{'MET' if ok else 'MISSED'} (ratio {op} {limit})"
        verdicts.append((label, ok))
    rows.append((label, ctext, ntext, rtext, verdict))


for c in ("1", "16", "64"):
    row(f"requests/s, {c} connection{'s' if c != '1' else ''}", f"rps_c{c}", 0,
        (">=", 1.0) if c != "1" else None)
for c in ("1", "16", "64"):
    row(f"latency p50 ms, c={c}", f"p50_c{c}", 3)
    row(f"latency p99 ms, c={c}", f"p99_c{c}", 3)
for c in ("1", "16", "64"):
    row(f"CPU µs per request, c={c}", f"cpu_c{c}", 1, ("<=", 1.0))
row("  of which user space (rest: kernel), c=64", "user_c64", 1)
row("requests/s, c=64, per-request logging on", "rps_c64log", 0, None, "crumb-proxy_log", "nginx_log")
row("CPU µs per request, c=64, logging on", "cpu_c64log", 1, None, "crumb-proxy_log", "nginx_log")
row("latency p99 ms, c=64, logging on", "p99_c64log", 3, None, "crumb-proxy_log", "nginx_log")
row("download 1 GiB, MB/s", "dl_mbps", 0, (">=", 0.9))
row("upload 256 MiB Content-Length, MB/s (median of 3)", "up_length_mbps", 0, (">=", 0.9))
row("upload 256 MiB chunked, MB/s (median of 3)", "up_chunked_mbps", 0, (">=", 0.9))
row("CPU s per 1 GiB download", "dl_cpu", 2)
row("CPU s per 256 MiB upload (length)", "up_length_cpu", 2)
row("CPU s per 256 MiB upload (chunked)", "up_chunked_cpu", 2)

MIB = 1024.0
idle = med("rss_idle", "crumb-proxy")
rows.append(("RSS idle, fresh, MiB (nginx: one worker)",
             fmt(idle / MIB, 1) if idle else "-",
             fmt(med("rss_idle", "nginx") / MIB, 1) if med("rss_idle", "nginx") else "-", "-", ""))
peak_dl = max(values.get(("rss_peak_dl", "crumb-proxy"), [0]))
before_dl = max(values.get(("rss_before_dl", "crumb-proxy"), [0]))
ng_peak_dl = max(values.get(("rss_peak_dl", "nginx"), [0]))
rows.append(("RSS just before a download, MiB (max over rounds)", fmt(before_dl / MIB, 1), "-", "-", ""))
growth = [by_round[("rss_peak_dl", "crumb-proxy")][r] - v
          for r, v in by_round.get(("rss_before_dl", "crumb-proxy"), {}).items()
          if r in by_round.get(("rss_peak_dl", "crumb-proxy"), {})]
if growth:
    rows.append(("RSS growth during a download (peak - just before), MiB, max", fmt(max(growth) / MIB, 1),
                 "-", "-", ""))
ok = peak_dl <= idle + 16 * MIB
verdicts.append(("peak RSS during 1 GiB download <= idle + 16 MiB", ok))
rows.append(("RSS peak during 1 GiB download, MiB (max over rounds)", fmt(peak_dl / MIB, 1),
             fmt(ng_peak_dl / MIB, 1), fmt(peak_dl / ng_peak_dl, 2) if ng_peak_dl else "-",
             f"{'MET' if ok else 'MISSED'} (peak {(peak_dl - idle) / MIB:+.1f} MiB over idle; <= +16)"))
idle_up = med("rss_idle_up", "crumb-proxy")
peak_up = max(values.get(("rss_peak_up", "crumb-proxy"), [0]))
ng_peak_up = max(values.get(("rss_peak_up", "nginx"), [0]))
rows.append(("RSS peak during 256 MiB uploads, MiB (max)", fmt(peak_up / MIB, 1), fmt(ng_peak_up / MIB, 1),
             fmt(peak_up / ng_peak_up, 2) if ng_peak_up else "-",
             f"(upload instance idle {idle_up / MIB:.1f} MiB, {(peak_up - idle_up) / MIB:+.1f})" if idle_up else ""))

posts = int(meta.get("posts", "0"))
try:
    pr = json.loads(meta.get("posts_result", "{}"))
except ValueError:
    pr = {}
got201 = pr.get("statuses", {}).get("201", 0)


def num(key):
    try:
        return int(meta.get(key, ""))
    except ValueError:
        return -1


fetches = num("posts_fetches")
seen = num("posts_seen")
rejected = num("posts_rejected")
accepted = num("posts_accepted")
retried = num("posts_proxy_retried")
# Issue 5: "1000 concurrent POSTs after a session expiry: exactly one crumb fetch, 1000 triggers
# accepted by Jenkins, none doubled". The burst only tests that if some of its POSTs went out with
# the expired session's crumb (403) and each of those was sent again once.
ok_expiry = rejected >= 1 and retried == rejected and seen == accepted + rejected
ok_fetch = fetches == 1
ok_acc = got201 == posts and accepted == posts
verdicts.append((f"{posts} concurrent POSTs after a session expiry: the burst met the expired session", ok_expiry))
verdicts.append((f"{posts} concurrent POSTs after a session expiry: one crumb fetch", ok_fetch))
verdicts.append((f"{posts} concurrent POSTs after a session expiry: all accepted, none doubled", ok_acc))
rows.append((f"{posts} POSTs after a session expiry: crumb fetches seen by the double", str(fetches), "n/a", "-",
             f"{'MET' if ok_fetch else 'MISSED'} (exactly 1)"))
rows.append((f"{posts} POSTs after a session expiry: 201s to clients / triggers the double accepted",
             f"{got201} / {accepted}", "n/a", "-",
             f"{'MET' if ok_acc else 'MISSED'} ({posts} / {posts}: none doubled)"))
rows.append((f"{posts} POSTs after a session expiry: POSTs the double got (403 expired crumb + accepted)",
             f"{seen} ({rejected} + {accepted})", "n/a", "-",
             f"{'MET' if ok_expiry else 'MISSED'} (>= 1 rejected, each replayed once: {retried} retried)"))
rows.append((f"{posts} POSTs after a session expiry: burst duration, s", str(pr.get("seconds", "-")), "n/a", "-",
             f"statuses {pr.get('statuses')}"))

headers = ("metric", "crumb-proxy", "nginx", "crumb/nginx", "target")
widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(5)]


def line(r):
    return "| " + " | ".join(str(r[i]).ljust(widths[i]) for i in range(5)) + " |"


print()
print(f"crumb-proxy vs nginx — {meta['date']}")
print(f"machine: {meta['nproc']} CPUs, {meta['cpu']}, Linux {meta['kernel']}, {meta['os']}")
print(f"versions: crumb-proxy {meta['rev']} ({meta['rustc']}), nginx {meta['nginx']}, "
      f"wrk {meta['wrk']}, curl {meta['curl']}")
print(f"{meta['rounds']} rounds, interleaved A/B then B/A, wrk runs of {meta['duration']} s. Each value: median over")
print("rounds, ±half the range between rounds in % of the median; crumb/nginx: median of the rounds'")
print("ratios (each round runs the two back to back), with the lowest and highest round in brackets")
print()
print(line(headers))
print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
for r in rows:
    print(line(r))
print()
met = sum(1 for _, ok in verdicts if ok)
print(f"targets met: {met} of {len(verdicts)}")
for label, ok in verdicts:
    if not ok:
        print(f"  MISSED: {label}")
print()
print("setup:")
print(f"  - all on 127.0.0.1; upstream = nginx (static 1 KiB JSON at {meta['json_path']} with absolute Jenkins URLs,")
print("    1 GiB /big.bin via sendfile); requests/s, latency and CPU rows GET the 1 KiB JSON;")
print(f"    {meta['parity']}")
print("    uploads go to bench/sink.rs, which reads every byte and answers 201 with the byte count,")
print("    checked for every upload (framing kept: Content-Length stays Content-Length, chunked stays chunked)")
print("  - nginx proxy: worker_processes 2 (= cores = crumb-proxy's worker threads: both may use the whole")
print("    machine), proxy_buffering off, proxy_request_buffering off, upstream keepalive 64, HTTP/1.1")
print("    upstream, sets Authorization, Jenkins-Crumb, X-Request-Id (both ways), X-Forwarded-Host/Proto/Port,")
print("    Accept-Encoding \"\", sub_filter for the URLs in JSON, access_log off;")
print(f"    proxy_buffer_size/client_body_buffer_size: {meta['nginx_buffer']}")
print("  - crumb-proxy: release build, API token, crumb.mode auto (no crumb), --log-level warn (no line per")
print("    request, like nginx's access_log off); the 'logging on' rows run crumb-proxy at its default level")
print("    (one info line per request to a file) against nginx with access_log to a file")
print("  - wrk -t2 (-t1 for 1 connection) on the same 2 cores as both proxies and the upstream: req/s is the")
print("    throughput of the whole chain, CPU/request is the proxy's own utime+stime (nginx: master+workers)")
print("    from /proc/PID/stat divided by the requests wrk completed")
print(f"  - other processes on the machine: a wrk run during which they used more than {meta['foreign_limit']}% of one")
print(f"    core was repeated ({meta['retries']} repeats); the most they used in a kept run: {meta['foreign_max']}% of one core")
print(f"  - the {posts} POSTs: to a crumb-proxy with a password (crumbs on) in front of examples/mock_jenkins,")
print("    limits.max_connections = 1100. First one POST, so that the proxy holds a crumb and its session")
print(f"    ({meta.get('posts_prime_fetches', '?')} crumb fetch(es)), then SIGUSR1 to the double, which expired "
      f"{meta.get('posts_expired_sessions', '?')} session(s); then")
print("    one connection per POST, all connected first, then all sent at once. Counted during the burst:")
print("    the double's request log (crumb fetches, POSTs and their statuses) and the proxy's")
print(f"    ({meta.get('posts_proxy_cached', '?')} 'cached', {meta.get('posts_proxy_fetched', '?')} 'fetched', "
      f"{meta.get('posts_proxy_retried', '?')} 'retried': rejected, then sent again with the new crumb)")
print(f"script run time: {meta['elapsed']} s")
