//! Bodies stream end to end through the real binary: a 1 GiB download and a
//! 256 MiB upload pass while the proxy's peak resident memory stays under
//! 64 MiB, i.e. nothing is read whole into memory.

use std::io::Write as _;

use crate::support::jenkins::{pattern_bytes, Fnv1a64, MockJenkins};
use crate::support::proxy::{curl, Binary, Extra, Secret};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";
const GIB: u64 = 1 << 30;
const UPLOAD: u64 = 256 << 20;
const MEMORY_LIMIT: u64 = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_in_bounded_memory() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .artifact("sample-job", 1, "big.bin", GIB)
        .artifact("sample-job", 1, "small.bin", 3 << 20)
        .upload_sink()
        .start()
        .await;
    let (proxy, dir, _) = Binary::start_for(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &Extra::default(),
        &[],
    );

    // Content first, on a small artifact: byte for byte what Jenkins served.
    let small = dir.path().join("small.bin");
    let url = proxy.url("/job/sample-job/1/artifact/small.bin");
    let small_path = small.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || curl(&["--fail", "-o", &small_path, &url]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&small).unwrap() == pattern_bytes(0, 3 << 20),
        "artifact bytes differ"
    );

    // 1 GiB download.
    let url = proxy.url("/job/sample-job/1/artifact/big.bin");
    let out = tokio::task::spawn_blocking(move || {
        curl(&["--fail", "-o", "/dev/null", "-w", "%{size_download}", &url])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), GIB.to_string());
    let after_download = proxy.peak_rss();

    // 256 MiB upload from a file (Content-Length known, above the replay
    // cap, so it streams rather than being kept for a retry).
    let upload = dir.path().join("upload.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&upload).unwrap());
        let block = pattern_bytes(0, 251 * 4096);
        let mut left = UPLOAD;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n]).unwrap();
            left -= n as u64;
        }
    }
    let url = proxy.url("/job/sample-job/buildWithParameters");
    let upload_path = upload.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        curl(&[
            "-X",
            "POST",
            "-T",
            &upload_path,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ])
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "201",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = jenkins.requests_to("/job/sample-job/buildWithParameters");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body_len, UPLOAD);
    let mut digest = Fnv1a64::new();
    digest.update(&std::fs::read(&upload).unwrap());
    assert_eq!(
        seen[0].body_digest,
        digest.finish(),
        "uploaded bytes differ"
    );

    let peak = proxy.peak_rss();
    eprintln!(
        "peak RSS of crumb-proxy: {:.1} MiB after 1 GiB down, {:.1} MiB after 256 MiB up",
        after_download as f64 / 1048576.0,
        peak as f64 / 1048576.0
    );
    assert!(
        peak < MEMORY_LIMIT,
        "peak RSS {peak} bytes is not under 64 MiB"
    );
    proxy.terminate();
    jenkins.finish().await;
}
