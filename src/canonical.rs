//! Canonical request paths, and the path patterns policy rules are written in.
//!
//! Security rules must not be bypassable by spelling (the oauth2-proxy and
//! kubectl-proxy regex bypasses in `anchors.md`), so rules never look at the
//! raw path. They look at its canonical form: percent-decoded until it stops
//! changing, `\` read as `/`, `;` path parameters cut from every segment
//! (`/script;jsessionid=x`, `..;/`), empty and `.` segments dropped, `..`
//! resolved, every letter in lower case. Whatever Jenkins (Jetty and
//! Stapler) would route to `/script`, this turns into `/script` too; it may
//! also turn into `/script` some spellings Jenkins would answer 404 to,
//! which errs on the side of refusing. The request itself is forwarded as
//! the client wrote it. This module knows nothing about which paths are
//! dangerous; `filter` does.

use std::fmt;

use percent_encoding::percent_decode_str;

/// How many rounds of percent-decoding: `%252e` needs two; more rounds
/// than that only make a spelling refused, never allowed.
const DECODE_ROUNDS: usize = 4;

/// A path in canonical form, as segments: `/Job/x/../../SCRIPT;x=1/` is
/// `["script"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CanonicalPath {
    segments: Vec<String>,
}

impl CanonicalPath {
    pub(crate) fn new(raw_path: &str) -> Self {
        // Most paths have no escape and no backslash: nothing is copied
        // for them until the segments are.
        let mut decoded = std::borrow::Cow::Borrowed(raw_path);
        for _ in 0..DECODE_ROUNDS {
            if !decoded.contains('%') {
                break;
            }
            let next = percent_decode_str(&decoded)
                .decode_utf8_lossy()
                .into_owned();
            if next == decoded {
                break;
            }
            decoded = std::borrow::Cow::Owned(next);
        }
        if decoded.contains('\\') {
            decoded = std::borrow::Cow::Owned(decoded.replace('\\', "/"));
        }
        let mut segments: Vec<String> = Vec::new();
        for segment in decoded.split('/') {
            let segment = segment.split(';').next().unwrap_or_default();
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                s => segments.push(s.to_lowercase()),
            }
        }
        Self { segments }
    }

    pub(crate) fn segments(&self) -> Vec<&str> {
        self.segments.iter().map(String::as_str).collect()
    }

    /// The last two segments, if there are two.
    pub(crate) fn last_two(&self) -> Option<(&str, &str)> {
        match self.segments.as_slice() {
            [.., a, b] => Some((a, b)),
            _ => None,
        }
    }
}

impl fmt::Display for CanonicalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for s in &self.segments {
            write!(f, "/{s}")?;
        }
        Ok(())
    }
}

/// One piece of a [`Pattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: any number of segments, none included.
    Any,
}

/// A path pattern of a policy rule: `/job/*/build`, `/computer/**`.
/// Segments are literals (matched against canonical, lower-case segments),
/// `*` (one segment) or `**` (zero or more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    text: String,
    pieces: Vec<Piece>,
}

impl Pattern {
    /// Parses a pattern. A pattern that no canonical path could ever match
    /// is refused with the reason, so that a rule cannot silently do
    /// nothing (kubectl's `--reject-methods`, anchors.md §3.1).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err("must start with /".into());
        }
        let mut pieces = Vec::new();
        let trimmed = text.trim_end_matches('/');
        for segment in trimmed.split('/').skip(1) {
            let piece = match segment {
                "*" => Piece::One,
                "**" => Piece::Any,
                "" => return Err("has an empty segment (//), which canonical paths never have".into()),
                "." | ".." => return Err(format!("has a `{segment}` segment, which canonical paths never have")),
                s if s.contains('*') => {
                    return Err(format!("segment {s:?}: `*` and `**` must be whole segments"))
                }
                s if s.contains(['%', ';', '\\']) => {
                    return Err(format!(
                        "segment {s:?}: canonical paths are decoded and have no `;` parameters; write the plain text"
                    ))
                }
                s if s.chars().any(char::is_uppercase) => {
                    return Err(format!(
                        "segment {s:?}: paths are compared in lower case; write {:?}",
                        text.to_lowercase()
                    ))
                }
                s => Piece::Literal(s.to_owned()),
            };
            pieces.push(piece);
        }
        Ok(Self {
            text: text.to_owned(),
            pieces,
        })
    }

    pub(crate) fn matches(&self, path: &CanonicalPath) -> bool {
        matches(&self.pieces, &path.segments())
    }

    pub(crate) fn is_everything(&self) -> bool {
        self.pieces == [Piece::Any]
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }
}

fn matches(pieces: &[Piece], segments: &[&str]) -> bool {
    match pieces.split_first() {
        None => segments.is_empty(),
        Some((Piece::Any, rest)) => {
            (0..=segments.len()).any(|skip| matches(rest, &segments[skip..]))
        }
        Some((piece, rest)) => match segments.split_first() {
            None => false,
            Some((segment, more)) => {
                let ok = match piece {
                    Piece::One => true,
                    Piece::Literal(l) => l == segment,
                    Piece::Any => false,
                };
                ok && matches(rest, more)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for (raw, canonical) in [
            ("/", "/"),
            ("/script", "/script"),
            ("/Script/", "/script"),
            ("//script", "/script"),
            ("/./script", "/script"),
            ("/job/x/../../script", "/script"),
            ("/../../script", "/script"),
            ("/script;jsessionid=abc", "/script"),
            ("/..;/script", "/script"),
            ("/%73cript", "/script"),
            ("/%2573cript", "/script"),
            ("/job/a/..%2f..%2fscript", "/script"),
            ("/job/a/%2e%2e/%2E%2E/SCRIPT", "/script"),
            ("/job/a\\..\\..\\script", "/script"),
            ("/job/My%20Job/build", "/job/my job/build"),
        ] {
            assert_eq!(CanonicalPath::new(raw).to_string(), canonical, "{raw}");
        }
    }

    #[test]
    fn patterns_match_segments() {
        let p = |t: &str| Pattern::parse(t).unwrap();
        let c = CanonicalPath::new;
        assert!(p("/job/*/build").matches(&c("/job/x/build")));
        assert!(!p("/job/*/build").matches(&c("/job/x/y/build")));
        assert!(p("/job/**/build").matches(&c("/job/x/job/y/build")));
        assert!(p("/job/**").matches(&c("/job")));
        assert!(p("/**").matches(&c("/")));
        assert!(p("/").matches(&c("/")));
        assert!(!p("/").matches(&c("/x")));
        assert!(p("/**/config.xml").matches(&c("/job/a/config.xml")));
    }

    #[test]
    fn patterns_that_never_match_are_refused() {
        for bad in [
            "job/x",
            "/Job/x",
            "/job//x",
            "/job/./x",
            "/job/../x",
            "/job/x*",
            "/job/%41",
            "/x;y",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }
}
