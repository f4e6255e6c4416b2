//! Keeping clients on the proxy: URL rewriting in API response bodies.
//!
//! Jenkins puts absolute URLs in its API answers (`url` fields of jobs,
//! builds, queue items). They name Jenkins' configured root URL, or, when
//! none is configured, the address the request came to (here the proxy's,
//! through `X-Forwarded-*`, but with Jenkins' context path). A client that
//! follows them as they are (jenkinsapi does) would bypass the proxy and
//! fail for want of credentials. This module owns the list of roots to
//! replace and a body wrapper that replaces them while streaming: matches
//! may straddle chunk boundaries, no body is ever read whole, and since the
//! length changes the caller drops `Content-Length`. Which responses get it
//! (API content only, never artifacts or logs) is `proxy`'s decision.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use memchr::memmem::Finder;

/// Root URLs to replace, each with what replaces it; the searchers are
/// built once and shared by every body wrapped.
#[derive(Debug, Clone)]
pub(crate) struct Roots {
    pairs: Vec<(String, String)>,
    patterns: Arc<[Pattern]>,
    longest: usize,
}

impl Roots {
    /// `roots` (each ending in `/`) all become `replacement` (ending in `/`).
    /// Duplicates and roots equal to the replacement are dropped.
    pub(crate) fn new(roots: impl IntoIterator<Item = String>, replacement: &str) -> Self {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for root in roots {
            if root != replacement && !pairs.iter().any(|(r, _)| *r == root) && !root.is_empty() {
                pairs.push((root, replacement.to_owned()));
            }
        }
        let patterns: Arc<[Pattern]> = pairs
            .iter()
            .map(|(from, to)| Pattern {
                finder: Finder::new(from.as_bytes()).into_owned(),
                len: from.len(),
                to: Bytes::copy_from_slice(to.as_bytes()),
            })
            .collect();
        let longest = patterns.iter().map(|p| p.len).max().unwrap_or(1);
        Self {
            pairs,
            patterns,
            longest,
        }
    }

    /// Rewrites a single value (a `Location` header): the longest matching
    /// root prefix, if any.
    pub(crate) fn rewrite_prefix(&self, value: &str) -> Option<String> {
        self.pairs
            .iter()
            .filter(|(root, _)| value.starts_with(root.as_str()))
            .max_by_key(|(root, _)| root.len())
            .map(|(root, to)| format!("{to}{}", &value[root.len()..]))
    }

    /// Wraps `body` so that every root in it is replaced as it streams.
    pub(crate) fn wrap<B>(&self, body: B) -> Rewrite<B> {
        Rewrite {
            inner: body,
            patterns: self.patterns.clone(),
            longest: self.longest,
            carry: BytesMut::new(),
            next_at: vec![usize::MAX; self.patterns.len()],
            trailers: None,
            done: false,
        }
    }
}

#[derive(Debug)]
struct Pattern {
    finder: Finder<'static>,
    len: usize,
    to: Bytes,
}

pin_project_lite::pin_project! {
    /// A body with every root URL replaced, streamed: at most the longest
    /// root's length minus one byte is held back between chunks.
    #[derive(Debug)]
    pub(crate) struct Rewrite<B> {
        #[pin]
        inner: B,
        patterns: Arc<[Pattern]>,
        longest: usize,
        carry: BytesMut,
        next_at: Vec<usize>,
        // Trailers wait until the held-back bytes have gone out.
        trailers: Option<http::HeaderMap>,
        done: bool,
    }
}

/// Replaces matches in what `carry` held back followed by `data`, and
/// keeps back the tail that could still be the start of a match unless
/// `last`. Without anything held back the chunk is scanned where it lies,
/// and goes out uncopied when nothing in it matches. `next_at` is scratch
/// space, one slot per pattern.
fn replace(
    patterns: &[Pattern],
    longest: usize,
    next_at: &mut [usize],
    carry: &mut BytesMut,
    data: Bytes,
    last: bool,
) -> Bytes {
    let text = if carry.is_empty() {
        data
    } else {
        carry.extend_from_slice(&data);
        carry.split().freeze()
    };
    // Matches may only start where a whole pattern of any length still
    // fits, so a short root is never taken for the start of a longer one
    // that the next chunk would complete.
    let safe_end = if last {
        text.len()
    } else {
        text.len().saturating_sub(longest - 1)
    };
    // Where each pattern next occurs at or after `pos` (usize::MAX: not
    // again), so each is searched for once per occurrence, not once per
    // match of any pattern.
    let find = |p: &Pattern, from: usize| {
        p.finder
            .find(&text[from..])
            .map_or(usize::MAX, |at| from + at)
    };
    for (at, p) in next_at.iter_mut().zip(patterns) {
        *at = find(p, 0);
    }
    let mut out: Option<BytesMut> = None;
    let mut pos = 0;
    while pos < safe_end {
        let next = patterns
            .iter()
            .zip(&*next_at)
            .filter(|(p, at)| **at < safe_end && **at + p.len <= text.len())
            .min_by(|(p, a), (q, b)| a.cmp(b).then(q.len.cmp(&p.len)));
        let Some((p, &at)) = next else { break };
        let out = out.get_or_insert_with(|| BytesMut::with_capacity(text.len() + 64));
        out.extend_from_slice(&text[pos..at]);
        out.extend_from_slice(&p.to);
        pos = at + p.len;
        for (p, at) in patterns.iter().zip(&mut *next_at) {
            if *at < pos {
                *at = find(p, pos);
            }
        }
    }
    let emit_to = pos.max(safe_end);
    carry.extend_from_slice(&text[emit_to..]);
    match out {
        // Nothing matched, so nothing moved: `pos` is still 0.
        None => text.slice(..emit_to),
        Some(mut out) => {
            out.extend_from_slice(&text[pos..emit_to]);
            out.freeze()
        }
    }
}

impl<B> Body for Rewrite<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        loop {
            if *this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let (data, last) = match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    // A body that knows this was its last chunk (one with a
                    // length) ends here, in the same frame.
                    Ok(data) => (data, this.inner.is_end_stream()),
                    Err(frame) => {
                        *this.trailers = frame.into_trailers().ok();
                        (Bytes::new(), true)
                    }
                },
                Poll::Ready(None) => (Bytes::new(), true),
            };
            *this.done = last;
            let out = replace(
                this.patterns,
                *this.longest,
                this.next_at,
                this.carry,
                data,
                last,
            );
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        // The length changes; nothing can be promised.
        SizeHint::default()
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::collections::VecDeque;

    /// A body of the given chunks. With `knows_end` it says so after its
    /// last chunk, as a body with a `Content-Length` does; without, the end
    /// shows only when it is polled once more (chunked).
    #[derive(Debug)]
    struct Chunks(VecDeque<Bytes>, bool);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }

        fn is_end_stream(&self) -> bool {
            self.1 && self.0.is_empty()
        }
    }

    fn roots() -> Roots {
        Roots::new(
            [
                "http://ci.example.com/jenkins/".to_owned(),
                "http://127.0.0.1:8181/jenkins/".to_owned(),
                "http://127.0.0.1:9000/jenkins/".to_owned(),
            ],
            "http://127.0.0.1:8181/",
        )
    }

    fn chunks(chunks: &[&str], knows_end: bool) -> Chunks {
        Chunks(
            chunks
                .iter()
                .map(|c| Bytes::copy_from_slice(c.as_bytes()))
                .collect(),
            knows_end,
        )
    }

    /// The rewritten body, the same whether or not the body knows its end.
    async fn run(parts: &[&str]) -> String {
        let mut outs = Vec::new();
        for knows_end in [false, true] {
            let body = chunks(parts, knows_end);
            let out = roots().wrap(body).collect().await.unwrap().to_bytes();
            outs.push(String::from_utf8(out.to_vec()).unwrap());
        }
        assert_eq!(outs[0], outs[1], "with and without a known end");
        outs.pop().unwrap()
    }

    const DOC: &str = r#"{"jobs":[{"url":"http://ci.example.com/jenkins/job/a/"},{"url":"http://127.0.0.1:8181/jenkins/job/b/"}],"url":"http://127.0.0.1:9000/jenkins/","other":"http://example.org/jenkins/"}"#;
    const WANT: &str = r#"{"jobs":[{"url":"http://127.0.0.1:8181/job/a/"},{"url":"http://127.0.0.1:8181/job/b/"}],"url":"http://127.0.0.1:8181/","other":"http://example.org/jenkins/"}"#;

    #[tokio::test]
    async fn replaces_in_one_chunk() {
        assert_eq!(run(&[DOC]).await, WANT);
    }

    /// Every way of cutting the document into two and three chunks gives
    /// the same result: matches across chunk boundaries are found.
    #[tokio::test]
    async fn replaces_across_every_chunk_boundary() {
        for i in 0..=DOC.len() {
            assert_eq!(run(&[&DOC[..i], &DOC[i..]]).await, WANT, "split at {i}");
            for j in i..=DOC.len() {
                if j % 7 == 0 {
                    assert_eq!(
                        run(&[&DOC[..i], &DOC[i..j], &DOC[j..]]).await,
                        WANT,
                        "{i}/{j}"
                    );
                }
            }
        }
        // One byte at a time.
        let bytes: Vec<String> = DOC.chars().map(String::from).collect();
        let refs: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(run(&refs).await, WANT);
    }

    /// A body that knows its end goes out in as many frames as it came,
    /// ending with its last one; a chunk without a match is not copied.
    #[tokio::test]
    async fn known_end_costs_no_extra_frame_and_no_copy() {
        let mut body = roots().wrap(chunks(&[DOC], true));
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(frame, WANT);
        assert!(body.is_end_stream(), "ended with its one frame");
        assert!(body.frame().await.is_none());

        let plain = Bytes::from_static(b"{\"url\":\"http://example.org/\"}");
        let mut body = roots().wrap(Chunks([plain.clone()].into_iter().collect(), true));
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(frame.as_ptr(), plain.as_ptr(), "passed through uncopied");
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn holds_back_no_more_than_a_root() {
        let mut body = roots().wrap(Chunks(
            [Bytes::from(vec![b'x'; 10_000])].into_iter().collect(),
            false,
        ));
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(first.len() >= 10_000 - "http://ci.example.com/jenkins/".len());
    }

    #[test]
    fn prefix_rewrite_for_location() {
        let r = roots();
        assert_eq!(
            r.rewrite_prefix("http://127.0.0.1:8181/jenkins/queue/item/4/")
                .as_deref(),
            Some("http://127.0.0.1:8181/queue/item/4/")
        );
        assert_eq!(r.rewrite_prefix("http://example.org/x"), None);
    }
}
