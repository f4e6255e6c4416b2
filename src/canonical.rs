//! Canonical request paths, and the path patterns policy rules are written in.
//!
//! Security rules must not be bypassable by spelling (the oauth2-proxy and
//! kubectl-proxy regex bypasses), so rules never look at the raw path. They
//! look at its canonical form: percent-decoded until it stops changing, `\`
//! read as `/`, `;` path parameters cut from every segment
//! (`/script;jsessionid=x`, `..;/`), empty and `.` segments dropped, `..`
//! resolved, letters case-folded the way Java's
//! `String.CASE_INSENSITIVE_ORDER` compares Jenkins' item names (so `ſ` is
//! `s` and `ı` is `i`, as they are to Jenkins). Whatever Jenkins (Jetty and
//! Stapler) would route to `/script`, this turns into `/script` too; it may
//! also turn into `/script` some spellings Jenkins would answer 404 to,
//! which errs on the side of refusing.
//!
//! Where servlet containers differ (whether `..` is resolved after
//! decoding, whether an empty segment is dropped or is an empty name, and
//! `/computer//script` would be the built-in node's script console if it
//! were a name), a path also has a *literal* reading: dot segments kept as
//! tokens, an empty segment after a naming getter kept as an empty name.
//! The policy decides on every reading and refuses if any is refused.
//!
//! The request itself is forwarded as the client wrote it. This module
//! knows nothing about Jenkins objects (`binding`) or which paths are
//! dangerous (`filter`).

use std::fmt;

use percent_encoding::percent_decode_str;

/// The name `binding` gives an object the path reaches without naming it
/// (the agent of `computers/0`). No Jenkins name can be `*`
/// (`Jenkins.checkGoodName` refuses it), so it stands for none.
pub(crate) const UNKNOWN: &str = "*";

/// How many rounds of percent-decoding: `%252e` needs two; more rounds
/// than that only make a spelling refused, never allowed.
const DECODE_ROUNDS: usize = 4;

/// A path in canonical form, as segments, in each way Jenkins could read
/// it: `/Job/x/../../SCRIPT;x=1/` is `["script"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CanonicalPath {
    /// Every reading, Stapler's first, without repeats.
    readings: Vec<Vec<String>>,
    /// Why the path is refused before any reading is weighed.
    refused: Option<&'static str>,
}

/// Tokens after which an empty segment is an empty name, not nothing: the
/// built-in node is `computer/` + `""` as well as `(built-in)`
/// (`Jenkins.getComputer`), and `node/` + `""` is the root
/// (`Jenkins.getNode`). Elsewhere an empty name finds nothing.
const EMPTY_NAME_AFTER: [&str; 2] = ["computer", "node"];

/// Paths with more segments than this are refused: Jenkins' own are a few
/// dozen long, and matching a rule's `**` against thousands costs time.
const MAX_SEGMENTS: usize = 256;

impl CanonicalPath {
    pub(crate) fn new(raw_path: &str) -> Self {
        let refused = if !escapes_are_valid(raw_path) {
            Some("the path has a `%` not followed by two hex digits; escape a literal % as %25")
        } else if raw_path.bytes().filter(|b| *b == b'/').count() > MAX_SEGMENTS {
            Some("the path has more segments than any Jenkins URL")
        } else {
            None
        };
        // Nearly every path has nothing that readers could disagree on:
        // one reading, and no copy of the path beyond its segments.
        if is_plain(raw_path) {
            let segments = raw_path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(fold_case)
                .collect();
            return Self {
                readings: vec![segments],
                refused,
            };
        }
        let deep = decode_deep(raw_path);
        let mut readings: Vec<Vec<String>> = Vec::with_capacity(4);
        for reading in [
            stapler_reading(raw_path),
            resolved(&percent_decode_str(raw_path).decode_utf8_lossy()),
            resolved(&deep),
            literal_reading(&deep),
        ] {
            if !readings.contains(&reading) {
                readings.push(reading);
            }
        }
        Self { readings, refused }
    }

    /// Why the path is refused whatever it reads as: a `%` that starts no
    /// escape (decoders disagree on those: Stapler's reads `%6p`), or too
    /// many segments.
    pub(crate) fn refusal(&self) -> Option<&'static str> {
        self.refused
    }

    /// Every reading of the path, Stapler's first.
    pub(crate) fn readings(&self) -> impl Iterator<Item = &[String]> {
        self.readings.iter().map(Vec::as_slice)
    }

    fn segments(&self) -> &[String] {
        self.readings.first().map_or(&[], Vec::as_slice)
    }

    /// The last two segments of Stapler's reading, if there are two.
    pub(crate) fn last_two(&self) -> Option<(&str, &str)> {
        match self.segments() {
            [.., a, b] => Some((a, b)),
            _ => None,
        }
    }
}

/// Whether every reader reads `raw` the same way: no `%`, `\\` or `;`, no
/// empty segment but a trailing one, no `.` or `..` segment. One pass over
/// the bytes, as every request makes it.
fn is_plain(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' | b'\\' | b';' => return false,
            b'/' => {
                // What follows this slash, up to the next one (or the end).
                let rest = &bytes[i + 1..];
                let segment = rest
                    .iter()
                    .position(|&c| c == b'/')
                    .map_or(rest, |end| &rest[..end]);
                let last = segment.len() == rest.len();
                if (segment.is_empty() && !last) || segment == b"." || segment == b".." {
                    return false;
                }
            }
            _ => {}
        }
    }
    true
}

/// How Jenkins reads the path: Stapler resolves `.` and `..` on the raw
/// path (`%2e%2e` is no dot segment to it), splits it, and decodes each
/// segment once, so `feature%252Ffoo` is the one name `feature%2Ffoo` (a
/// multibranch branch `feature/foo`). `;` parameters are cut (Jenkins
/// refuses paths with `;` anyway, `SuspiciousRequestFilter`).
fn stapler_reading(raw: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for segment in raw.split('/') {
        match segment.split(';').next().unwrap_or_default() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(fold_case(&percent_decode_str(s).decode_utf8_lossy())),
        }
    }
    out
}

/// A decoded path split into segments: `;` parameters cut, empty and `.`
/// segments dropped, `..` resolved, case folded.
fn resolved(decoded: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for segment in decoded.split('/') {
        match segment.split(';').next().unwrap_or_default() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(fold_case(s)),
        }
    }
    out
}

/// The path percent-decoded until it stops changing (at most
/// [`DECODE_ROUNDS`] times), with `\` read as `/`: the most a container
/// chain could decode it.
fn decode_deep(raw: &str) -> String {
    let mut decoded = raw.to_owned();
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
        decoded = next;
    }
    decoded.replace('\\', "/")
}

/// The literal reading of a decoded path: dot segments kept as tokens, an
/// empty segment kept where it would be an empty name, a trailing `/`
/// dropped.
fn literal_reading(decoded: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let body = decoded.strip_prefix('/').unwrap_or(decoded);
    let body = body.strip_suffix('/').unwrap_or(body);
    for segment in body.split('/') {
        let segment = segment.split(';').next().unwrap_or_default();
        let empty_name = out
            .last()
            .is_some_and(|prev| EMPTY_NAME_AFTER.contains(&prev.as_str()));
        if segment.is_empty() && !empty_name {
            continue;
        }
        out.push(fold_case(segment));
    }
    out
}

impl fmt::Display for CanonicalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments().is_empty() {
            return f.write_str("/");
        }
        for s in self.segments() {
            f.write_str("/")?;
            crate::binding::write_escaped(f, s)?;
        }
        Ok(())
    }
}

/// Case-folds as Java's `String.CASE_INSENSITIVE_ORDER` compares, which is
/// how Jenkins looks up items (`Jenkins.items`), users and views: each
/// character to upper case and back to lower case, one character for one,
/// so `ſ`, `ı`, `İ` and the Kelvin sign fold to `s`, `i`, `i` and `k` (Rust's
/// `to_lowercase` leaves `ſ` and `ı` alone).
pub(crate) fn fold_case(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    text.chars()
        .map(|c| {
            let mut upper = c.to_uppercase();
            let upper = match (upper.next(), upper.next()) {
                (Some(u), None) => u,
                _ => c,
            };
            upper.to_lowercase().next().unwrap_or(upper)
        })
        .collect()
}

/// Whether every `%` of `raw` starts an escape of two hex digits (RFC 3986
/// §2.1).
fn escapes_are_valid(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while let Some(offset) = memchr::memchr(b'%', &bytes[i..]) {
        let at = i + offset;
        let hex = |k: usize| bytes.get(at + k).is_some_and(u8::is_ascii_hexdigit);
        if !(hex(1) && hex(2)) {
            return false;
        }
        i = at + 3;
    }
    true
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
                s if s.contains([';', '\\']) => {
                    return Err(format!(
                        "segment {s:?}: canonical paths have no `;` parameters or backslashes; write the plain text"
                    ))
                }
                s if fold_case(s) != s => {
                    return Err(format!(
                        "segment {s:?}: paths are compared in lower case; write {:?}",
                        fold_case(text)
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

    /// Whether the resolved path `path` (`binding::Binding::path`)
    /// matches.
    pub(crate) fn matches(&self, path: &[&str]) -> bool {
        matches(&self.pieces, path, false)
    }

    /// As [`Pattern::matches`], with a name the path does not give
    /// ([`UNKNOWN`]: the agent of `computers/0`, a build's earlier build)
    /// matching any literal: for deny rules, which must hold for whatever
    /// object that is.
    pub(crate) fn may_match(&self, path: &[&str]) -> bool {
        matches(&self.pieces, path, true)
    }

    /// Whether the pattern matches `path` with segment `index` matched by
    /// one of its literal segments (not by `*` or `**`): whether the rule
    /// names that segment.
    pub(crate) fn names(&self, path: &[&str], index: usize) -> bool {
        aligned(&self.pieces, path, 0, index, false, false)
    }

    /// Whether the pattern matches `path` and names the segment at
    /// `index` (the action Jenkins applies to the object), or covers it
    /// with a final `**`. Stapler dispatches on that segment and a web
    /// method ignores what follows it, so an allow rule `/job/**/build`
    /// must not match `/job/x/config.xml/build` through its `**`.
    pub(crate) fn opens(&self, path: &[&str], index: Option<usize>) -> bool {
        match index {
            Some(index) if index < path.len() => aligned(&self.pieces, path, 0, index, false, true),
            _ => self.matches(path),
        }
    }

    /// The pattern's segments, `*` and `**` as written.
    pub(crate) fn segments(&self) -> Vec<String> {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Literal(l) => l.clone(),
                Piece::One => "*".to_owned(),
                Piece::Any => "**".to_owned(),
            })
            .collect()
    }

    pub(crate) fn is_everything(&self) -> bool {
        self.pieces == [Piece::Any]
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }
}

fn matches(pieces: &[Piece], segments: &[&str], unknown_matches: bool) -> bool {
    match pieces.split_first() {
        None => segments.is_empty(),
        Some((Piece::Any, rest)) => {
            (0..=segments.len()).any(|skip| matches(rest, &segments[skip..], unknown_matches))
        }
        Some((piece, rest)) => match segments.split_first() {
            None => false,
            Some((segment, more)) => {
                let ok = match piece {
                    Piece::One => true,
                    Piece::Literal(l) => l == segment || (unknown_matches && *segment == UNKNOWN),
                    Piece::Any => false,
                };
                ok && matches(rest, more, unknown_matches)
            }
        },
    }
}

/// `matches`, requiring segment `want` (counted from the start of the
/// whole path; `at` is where `segments` begins) to meet a literal, or, with
/// `trailing_any`, a `**` that ends the pattern.
fn aligned(
    pieces: &[Piece],
    segments: &[&str],
    at: usize,
    want: usize,
    hit: bool,
    trailing_any: bool,
) -> bool {
    match pieces.split_first() {
        None => segments.is_empty() && hit,
        Some((Piece::Any, [])) if trailing_any => hit || (at..at + segments.len()).contains(&want),
        Some((Piece::Any, rest)) => (0..=segments.len())
            .any(|skip| aligned(rest, &segments[skip..], at + skip, want, hit, trailing_any)),
        Some((piece, rest)) => match segments.split_first() {
            None => false,
            Some((segment, more)) => match piece {
                Piece::One => aligned(rest, more, at + 1, want, hit, trailing_any),
                Piece::Literal(l) => {
                    l == segment
                        && aligned(rest, more, at + 1, want, hit || at == want, trailing_any)
                }
                Piece::Any => false,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        // Stapler's reading (the first), and whether another reading is
        // `/script` too, so that the policy refuses it either way.
        for (raw, stapler) in [
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
            ("/%2573cript", "/%73cript"),
            ("/job/a/..%2f..%2fscript", "/job/a/../../script"),
            ("/job/a/%2e%2e/%2E%2E/SCRIPT", "/job/a/../../script"),
            ("/job/a\\..\\..\\script", "/job/a\\..\\..\\script"),
            ("/job/My%20Job/build", "/job/my job/build"),
        ] {
            let path = CanonicalPath::new(raw);
            assert_eq!(path.to_string(), stapler, "{raw}");
            assert!(
                !raw.to_lowercase().contains("script")
                    || raw.contains("%2573")
                    || path.readings().any(|r| r == ["script"]),
                "{raw}: {:?}",
                path.readings
            );
        }
    }

    /// Where readers differ, every reading is kept: Stapler resolves dots
    /// on the raw path and decodes each segment once; a container may
    /// decode first, or more than once; an empty name may be kept.
    #[test]
    fn every_reading_is_kept() {
        let readings = |raw: &str| -> Vec<String> {
            CanonicalPath::new(raw)
                .readings()
                .map(|r| format!("/{}", r.join("/")))
                .collect()
        };
        assert_eq!(readings("/job/x/build"), ["/job/x/build"]);
        assert_eq!(readings("/job/x/build/"), ["/job/x/build"]);
        assert_eq!(
            readings("//job//x/build"),
            ["/job/x/build"],
            "no empty name"
        );
        assert_eq!(
            readings("/computer//script"),
            ["/computer/script", "/computer//script"]
        );
        // A multibranch branch `feature/foo`: the job `feature%2Ffoo`.
        assert_eq!(
            readings("/job/repo/job/feature%252Ffoo/build"),
            [
                "/job/repo/job/feature%2ffoo/build",
                "/job/repo/job/feature/foo/build"
            ]
        );
        // Stapler keeps `%2e%2e` as a name; a decoding container resolves it.
        assert_eq!(
            readings("/./job/p/build/%252e%252e/%252e%252e/%252e%252e"),
            [
                "/job/p/build/%2e%2e/%2e%2e/%2e%2e",
                "/",
                "/./job/p/build/../../.."
            ]
        );
    }

    #[test]
    fn display_escapes_decoded_controls() {
        assert_eq!(
            CanonicalPath::new("/script/%0aFORGED").to_string(),
            "/script/%0Aforged"
        );
    }

    #[test]
    fn patterns_match_segments() {
        let p = |t: &str| Pattern::parse(t).unwrap();
        let owned = |raw: &str| CanonicalPath::new(raw).segments().to_vec();
        fn c(segments: &[String]) -> Vec<&str> {
            segments.iter().map(String::as_str).collect()
        }
        assert!(p("/job/*/build").matches(&c(&owned("/job/x/build"))));
        assert!(!p("/job/*/build").matches(&c(&owned("/job/x/y/build"))));
        assert!(p("/job/**/build").matches(&c(&owned("/job/x/job/y/build"))));
        assert!(p("/job/**").matches(&c(&owned("/job"))));
        assert!(p("/**").matches(&c(&owned("/"))));
        assert!(p("/").matches(&c(&owned("/"))));
        assert!(!p("/").matches(&c(&owned("/x"))));
        assert!(p("/**/config.xml").matches(&c(&owned("/job/a/config.xml"))));
        // An unknown name matches any literal, but only where asked.
        let unknown = ["computer", "*", "scripttext"];
        assert!(!p("/computer/agent-1/**").matches(&unknown));
        assert!(p("/computer/agent-1/**").may_match(&unknown));
    }

    #[test]
    fn patterns_name_segments_only_literally() {
        let p = |t: &str| Pattern::parse(t).unwrap();
        let path = ["job", "apps", "credentials", "api", "json"];
        assert!(p("/job/**/api/json").matches(&path));
        assert!(!p("/job/**/api/json").names(&path, 2), "`**` names nothing");
        assert!(p("/job/*/credentials/**").names(&path, 2));
        assert!(
            !p("/job/*/credentials/**").names(&path, 1),
            "`*` names nothing"
        );
        assert!(p("/**/credentials/**").names(&path, 2));
        assert!(!p("/job/apps/x/**").names(&path, 2), "no match at all");
    }

    #[test]
    fn allow_patterns_open_only_the_action_they_name() {
        let p = |t: &str| Pattern::parse(t).unwrap();
        let build = ["job", "apps", "job", "x", "build"];
        let sneaky = ["job", "apps", "job", "x", "config.xml", "build"];
        // The action is the first segment after the object (index 4).
        assert!(p("/job/apps/**/build").opens(&build, Some(4)));
        assert!(!p("/job/apps/**/build").opens(&sneaky, Some(4)));
        assert!(
            p("/job/apps/**").opens(&sneaky, Some(4)),
            "a final ** covers it"
        );
        assert!(!p("/job/apps/job/*/*/build").opens(&sneaky, Some(4)));
        assert!(p("/job/apps/job/x/config.xml/**").opens(&sneaky, Some(4)));
        let queue = ["queue", "item", "5", "api", "json"];
        assert!(p("/queue/item/*/api/json").opens(&queue, Some(0)));
        assert!(!p("/*/item/*/api/json").opens(&queue, Some(0)));
    }

    #[test]
    fn plain_paths_are_told_apart() {
        for raw in ["/", "/job/x/build", "/job/x/build/", "/a.b/c..d/.e"] {
            assert!(is_plain(raw), "{raw}");
        }
        for raw in [
            "//x", "/a//b", "/a/./b", "/a/../b", "/a/.", "/a/..", "/%41", "/a;b", "/a\\b",
        ] {
            assert!(!is_plain(raw), "{raw}");
        }
    }

    #[test]
    fn case_folds_as_jenkins_compares_names() {
        assert_eq!(fold_case("Job"), "job");
        assert_eq!(fold_case("\u{17f}ecret"), "secret");
        assert_eq!(fold_case("\u{131}nternal"), "internal");
        assert_eq!(fold_case("\u{130}nternal"), "internal");
        assert_eq!(fold_case("\u{212a}ey"), "key");
        assert_eq!(fold_case("stra\u{df}e"), "stra\u{df}e");
        assert_eq!(
            CanonicalPath::new("/job/%C5%BFecret/build").to_string(),
            "/job/secret/build"
        );
    }

    #[test]
    fn stray_percent_signs_and_endless_paths_are_refused() {
        assert!(CanonicalPath::new("/job/a%20b/%2e%2E").refusal().is_none());
        for raw in ["/scr%6pptText", "/x%", "/x%4", "/%%41"] {
            assert!(CanonicalPath::new(raw).refusal().is_some(), "{raw}");
        }
        assert!(CanonicalPath::new(&"/x".repeat(256)).refusal().is_none());
        assert!(CanonicalPath::new(&"/x".repeat(257)).refusal().is_some());
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
            "/x;y",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    /// Paths from the pieces readers disagree on.
    fn raw_path() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop::sample::select(vec![
            "/", "/", "/", ".", "..", "%", "%2e", "%2E", "%2f", "%2F", "%25", "%5c", ";", ";x=1",
            "\\", "job", "Script", "computer", "node", "x", "ſ", "ı", "%c5%bf", "%0a", "%zz", "%2",
            "build", "%252e", "%252f", "a b", "é",
        ]);
        prop::collection::vec(piece, 0..24).prop_map(|pieces| format!("/{}", pieces.concat()))
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(3000))]

        /// Whatever the text, a path has one to four readings, and a `%`
        /// that starts no escape refuses it.
        #[test]
        fn any_text_reads_as_one_to_four_paths(raw in raw_path()) {
            let path = CanonicalPath::new(&raw);
            let n = path.readings().count();
            proptest::prop_assert!((1..=4).contains(&n), "{raw}: {n}");
            proptest::prop_assert_eq!(path.refusal().is_some(), !escapes_are_valid(&raw));
        }

        /// Upper-casing the ASCII letters changes no reading (escapes
        /// decode the same in either case; names fold).
        #[test]
        fn ascii_case_changes_no_reading(raw in raw_path()) {
            let lower = CanonicalPath::new(&raw);
            let upper = CanonicalPath::new(&raw.to_ascii_uppercase());
            proptest::prop_assert_eq!(lower.readings, upper.readings, "{}", raw);
        }

        /// Percent-encoding letters that cannot be part of an escape
        /// (g–z) changes no reading, whether the path took the one-reading
        /// fast path or not.
        #[test]
        fn encoding_a_letter_changes_no_reading(raw in raw_path(), every in 1usize..4) {
            let mut encoded = String::new();
            for (i, c) in raw.chars().enumerate() {
                if i % every == 0 && matches!(c.to_ascii_lowercase(), 'g'..='z') {
                    encoded.push_str(&format!("%{:02X}", c as u32));
                } else {
                    encoded.push(c);
                }
            }
            let plain = CanonicalPath::new(&raw);
            let spelled = CanonicalPath::new(&encoded);
            proptest::prop_assert_eq!(plain.readings, spelled.readings, "{} vs {}", raw, encoded);
        }

        /// A detour through a name and back (`/x/..`) changes nothing in
        /// Stapler's reading.
        #[test]
        fn a_detour_changes_no_stapler_reading(raw in raw_path()) {
            let plain = CanonicalPath::new(&raw);
            let detour = CanonicalPath::new(&format!("/x/..{raw}"));
            proptest::prop_assert_eq!(plain.segments(), detour.segments(), "{}", raw);
        }
    }
}
