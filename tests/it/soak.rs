//! The soak, shortened for CI: the real binary in front of the Jenkins
//! double under a steady mix of clients (reads, build triggers, 1 MiB
//! downloads, small uploads kept for a replay, 2 MiB uploads streamed),
//! while Jenkins drops every session now and then and is killed and
//! started again on the same address midway.
//!
//! What must hold: every answer is whole and honest; no build is
//! triggered twice; a trigger answered 201 reached Jenkins, and one
//! answered with the proxy's own error either never reached it or is one
//! the proxy could not know about (`upstream-failed`: the connection broke
//! after the request was written); errors happen only while Jenkins is
//! down; the proxy recovers without a restart; its memory stays bounded.
//! It prints the figures: requests by kind, errors by kind, memory.
//!
//! `CRUMB_SOAK_SECS` lengthens it (20 s by default; the soak ran
//! 1,200 s).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::time::Instant;

use crate::support::jenkins::{fnv1a64, pattern_bytes, MockJenkins, CRUMB_REJECTION};
use crate::support::proxy::{request, Binary, Extra, Http, Secret};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";
const CLIENTS: usize = 8;
/// Each client sends at most one request per this long: about 400 a
/// second in all, what the soak ran at.
const PACE: Duration = Duration::from_millis(20);
const ARTIFACT: usize = 1 << 20;
const SMALL_UPLOAD: usize = 16 << 10;
const LARGE_UPLOAD: usize = 2 << 20;
const MAX_LARGE_UPLOADS: usize = 40;
const MEMORY_LIMIT: u64 = 64 << 20;

fn jenkins_builder() -> crate::support::jenkins::Builder {
    MockJenkins::builder()
        .user(USER, PASSWORD)
        .artifact("sample-job", 1, "blob.bin", ARTIFACT as u64)
        .upload_sink()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Read,
    Trigger,
    Download,
    SmallUpload,
    LargeUpload,
}

#[derive(Debug)]
struct Outcome {
    kind: Kind,
    /// The trigger's `ID` parameter.
    id: Option<u64>,
    status: StatusCode,
    error: Option<String>,
    /// When it was sent and answered, from the start of the soak.
    sent: Duration,
    answered: Duration,
    /// A body that was not what Jenkins serves.
    corrupt: bool,
    /// Jenkins' own crumb rejection.
    crumb_rejected: bool,
}

fn upload_bytes(id: u64, len: usize) -> Vec<u8> {
    pattern_bytes(id * 7, len)
}

async fn client(
    proxy: String,
    start: Instant,
    deadline: Instant,
    ids: Arc<AtomicU64>,
    large: Arc<AtomicUsize>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    seed: usize,
) {
    let http = Http::new();
    let artifact_digest = fnv1a64(&pattern_bytes(0, ARTIFACT));
    let mut n = seed;
    while Instant::now() < deadline {
        let next = Instant::now() + PACE;
        n += 1;
        let kind = match n % 100 {
            0..=59 => Kind::Read,
            60..=79 => Kind::Trigger,
            80..=89 => Kind::Download,
            90 if large.fetch_add(1, Ordering::SeqCst) < MAX_LARGE_UPLOADS => Kind::LargeUpload,
            _ => Kind::SmallUpload,
        };
        let mut id = None;
        let req = match kind {
            Kind::Read if n % 2 == 0 => request(Method::GET, &format!("{proxy}/api/json"), &[], ""),
            Kind::Read => request(
                Method::GET,
                &format!("{proxy}/job/sample-job/api/json"),
                &[],
                "",
            ),
            Kind::Download => request(
                Method::GET,
                &format!("{proxy}/job/sample-job/1/artifact/blob.bin"),
                &[],
                "",
            ),
            Kind::Trigger | Kind::SmallUpload | Kind::LargeUpload => {
                let this = ids.fetch_add(1, Ordering::SeqCst);
                id = Some(this);
                let body = match kind {
                    Kind::SmallUpload => Bytes::from(upload_bytes(this, SMALL_UPLOAD)),
                    Kind::LargeUpload => Bytes::from(upload_bytes(this, LARGE_UPLOAD)),
                    _ => Bytes::new(),
                };
                request(
                    Method::POST,
                    &format!("{proxy}/job/sample-job/buildWithParameters?ID={this}"),
                    &[("content-type", "application/octet-stream")],
                    body,
                )
            }
        };
        let sent = start.elapsed();
        let reply = match http.try_send(req).await {
            Ok(reply) => reply,
            Err(e) => {
                let before = outcomes
                    .lock()
                    .unwrap()
                    .iter()
                    .rev()
                    .take(3)
                    .map(|o| format!("{o:?}"))
                    .collect::<Vec<_>>();
                panic!("{kind:?} {id:?} sent at {sent:?}: no answer at {:?}: {e}; last answers: {before:#?}", start.elapsed())
            }
        };
        let answered = start.elapsed();
        let corrupt = kind == Kind::Download
            && reply.status == StatusCode::OK
            && (reply.body.len() != ARTIFACT || fnv1a64(&reply.body) != artifact_digest);
        outcomes.lock().unwrap().push(Outcome {
            kind,
            id,
            status: reply.status,
            error: reply.header("x-crumb-proxy-error").map(str::to_owned),
            sent,
            answered,
            corrupt,
            crumb_rejected: reply.text().contains(CRUMB_REJECTION),
        });
        tokio::time::sleep_until(next).await;
    }
}

/// Resident memory of the process now (`VmRSS`), in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

async fn restart_on(addr: SocketAddr) -> MockJenkins {
    // The old listener is closed; its port may take a moment to be free.
    for _ in 0..100 {
        if let Ok(j) = jenkins_builder().start_on(addr).await {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("could not bind {addr} again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_session_expiry_and_a_jenkins_restart() {
    let secs: u64 = std::env::var("CRUMB_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let length = Duration::from_secs(secs);
    let mut first = jenkins_builder().start().await;
    let addr = first.addr();
    let extra = Extra {
        // Short: the first request after the restart must not wait long
        // for Jenkins' old connections to be noticed as gone.
        upstream: "pool_idle_timeout_secs = 5".into(),
        ..Extra::default()
    };
    let (proxy, _dir, _) = Binary::start_for(
        &first.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
        &[],
    );
    let pid = proxy.child.id();
    let base = proxy.url("");

    let start = Instant::now();
    let deadline = start + length;
    let ids = Arc::new(AtomicU64::new(1));
    let large = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(client(
                base.clone(),
                start,
                deadline,
                ids.clone(),
                large.clone(),
                outcomes.clone(),
                i * 13,
            ))
        })
        .collect();

    // Sessions dropped every 2 s; memory sampled every 500 ms; Jenkins
    // killed at 40 % and started again 1 s later.
    let mut expiries = 0;
    let mut memory = Vec::new();
    let kill_at = start + length * 2 / 5;
    let mut outage: Option<(Duration, Duration)> = None;
    let mut second: Option<MockJenkins> = None;
    let mut next_expiry = start + Duration::from_secs(2);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        memory.push(rss(pid));
        if Instant::now() >= next_expiry {
            next_expiry += Duration::from_secs(2);
            second.as_ref().unwrap_or(&first).expire_sessions();
            expiries += 1;
        }
        if outage.is_none() && Instant::now() >= kill_at {
            let down = start.elapsed();
            first.kill().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            second = Some(restart_on(addr).await);
            outage = Some((down, start.elapsed()));
        }
    }
    for c in clients {
        c.await.unwrap();
    }
    let (down, up) = outage.expect("Jenkins was restarted");
    let second = second.unwrap();

    // After the soak: the proxy answers at once, as if nothing happened.
    let http = Http::new();
    assert_eq!(
        http.get(&proxy.url("/api/json")).await.status,
        StatusCode::OK
    );
    let trigger = http
        .post(&proxy.url("/job/sample-job/buildWithParameters?ID=0"))
        .await;
    assert_eq!(trigger.status, StatusCode::CREATED, "{}", trigger.text());

    // What Jenkins accepted, per trigger, over both lives.
    let mut accepted: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
    for j in [&first, &second] {
        for r in j.requests_to("/job/sample-job/buildWithParameters") {
            if r.status != StatusCode::CREATED {
                continue;
            }
            let id: u64 = r
                .query
                .as_deref()
                .and_then(|q| q.strip_prefix("ID="))
                .and_then(|n| n.parse().ok())
                .expect("an ID");
            accepted
                .entry(id)
                .or_default()
                .push((r.body_len, r.body_digest));
        }
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let mut by_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut ambiguous = 0;
    let mut ambiguous_acted = 0;
    let mut refused_for_crumb = 0;
    let mut rejected_twice = 0;
    let slack = Duration::from_secs(1);
    for o in &outcomes {
        *by_kind.entry(o.kind).or_default() += 1;
        assert!(!o.corrupt, "a download was not what Jenkins served: {o:?}");
        let during_outage = o.answered + slack >= down && o.sent <= up + slack;
        let fine = o.status.is_success();
        if !fine {
            let what = format!(
                "{} {}",
                o.status.as_u16(),
                o.error.as_deref().unwrap_or("(from Jenkins)")
            );
            *errors.entry(what).or_default() += 1;
        }
        if let Some(id) = o.id {
            let seen = accepted.get(&id).map_or(0, Vec::len);
            assert!(seen <= 1, "trigger {id} accepted {seen} times: {o:?}");
            match (o.status.as_u16(), o.error.as_deref()) {
                (201, _) => {
                    assert_eq!(seen, 1, "answered 201 but never reached Jenkins: {o:?}");
                    let (len, digest) = accepted[&id][0];
                    let size = match o.kind {
                        Kind::SmallUpload => SMALL_UPLOAD,
                        Kind::LargeUpload => LARGE_UPLOAD,
                        _ => 0,
                    };
                    assert_eq!(len, size as u64, "{o:?}");
                    assert_eq!(digest, fnv1a64(&upload_bytes(id, size)), "{o:?}");
                }
                // The connection broke after the request was written:
                // Jenkins may have acted, and the client is told so.
                (502, Some("upstream-failed")) => {
                    ambiguous += 1;
                    ambiguous_acted += seen;
                }
                // A body too large to keep for a replay, refused for a
                // stale crumb by Jenkins before it acted.
                (403, Some("crumb-rejected-not-replayable")) => {
                    assert_eq!(o.kind, Kind::LargeUpload, "{o:?}");
                    assert_eq!(seen, 0, "{o:?}");
                    refused_for_crumb += 1;
                    continue;
                }
                // Jenkins dropped the session again between the fresh
                // crumb and the replay (the soak drops them every 2 s):
                // its own 403 reaches the client; the proxy replays once.
                (403, None) if o.crumb_rejected => {
                    assert_eq!(seen, 0, "{o:?}");
                    rejected_twice += 1;
                    continue;
                }
                _ => assert_eq!(seen, 0, "reported as failed but accepted: {o:?}"),
            }
        }
        assert!(
            fine || during_outage,
            "an error while Jenkins was up ({down:?}..{up:?}): {o:?}"
        );
    }
    let metrics = http.get(&proxy.health_url("/metrics")).await.text();
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let (fetches, retries) = (
        metric("crumb_proxy_crumb_fetches_total"),
        metric("crumb_proxy_crumb_retries_total"),
    );
    assert!(retries >= 1.0, "stale crumbs were replayed: {metrics}");
    let peak = proxy.peak_rss();
    let warm = memory[memory.len() / 4..].iter().copied();
    let (low, high) = warm.fold((u64::MAX, 0), |(l, h), m| (l.min(m), h.max(m)));
    let mib = |b: u64| b as f64 / 1_048_576.0;
    eprintln!(
        "soak {secs} s: {} requests {by_kind:?}; errors {errors:?} (down {down:.1?}..{up:.1?}); \
         {ambiguous} triggers cut after being written ({ambiguous_acted} of them acted on), \
         {refused_for_crumb} large uploads refused for a stale crumb, {rejected_twice} \
         triggers whose replay met a session dropped again; {} triggers accepted \
         once, none twice; {expiries} session expiries, 1 restart, {fetches} crumb fetches, \
         {retries} replays; RSS {:.1}–{:.1} MiB after warm-up, peak {:.1} MiB",
        outcomes.len(),
        accepted.len(),
        mib(low),
        mib(high),
        mib(peak),
    );
    assert!(
        outcomes.len() > (secs as usize) * 100,
        "{} requests",
        outcomes.len()
    );
    assert!(peak < MEMORY_LIMIT, "peak RSS {peak} bytes");
    assert_eq!(proxy.terminate().code(), Some(0));
    second.finish().await;
    first.finish().await;
}
