//! The URL parser and `url::redact`: never panic; an accepted URL
//! round-trips and displays without its query; and what is shown (by
//! `redact` for any string, by `Display`/`Debug` for a parsed target) does
//! not depend on the query or the userinfo at all: planting a canary in
//! either leaves the output unchanged (so it can contain neither).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zenws_mio::url::{redact, Target};

const CANARY: &str = "Zc4nary";

/// Byte offset of the first `?` or `#` (the query or fragment), if any.
fn secret_start(s: &str) -> Option<usize> {
    s.find(['?', '#'])
}

/// Where the authority starts: after `scheme://` (RFC 3986 §3.1 scheme
/// characters), else at 0.
fn authority_start(s: &str) -> usize {
    match s.find("://") {
        Some(i)
            if s.as_bytes()[0].is_ascii_alphabetic()
                && s[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) =>
        {
            i + 3
        }
        _ => 0,
    }
}

/// Where userinfo ends in `s`: at the last `@` of the authority (up to the
/// first `/`, `?` or `#`).
fn userinfo_end(s: &str) -> Option<usize> {
    let start = authority_start(s);
    let rest = &s[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest[..end].rfind('@').map(|i| start + i)
}

fn insert(s: &str, at: usize, what: &str) -> String {
    let mut t = String::with_capacity(s.len() + what.len());
    t.push_str(&s[..at]);
    t.push_str(what);
    t.push_str(&s[at..]);
    t
}

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let s: &str = &s;

    let shown = redact(s);
    // Planting a canary in the query or the userinfo changes nothing.
    if let Some(q) = secret_start(s) {
        let with = insert(s, q + 1, CANARY);
        assert_eq!(redact(&with), shown, "redact shows the query of {with:?}");
    }
    if let Some(at) = userinfo_end(s) {
        let with = insert(s, at, CANARY);
        assert_eq!(
            redact(&with),
            shown,
            "redact shows the userinfo of {with:?}"
        );
        assert!(Target::parse(&with).is_err(), "userinfo accepted: {with:?}");
    }
    // At most one '?'/'#', and only as the marker at the end.
    let body = shown
        .strip_suffix("?<redacted>")
        .or_else(|| shown.strip_suffix("#<redacted>"))
        .unwrap_or(&shown);
    assert!(!body.contains(['?', '#']), "{s:?} → {shown:?}");

    if let Ok(t) = Target::parse(s) {
        let scheme = if t.secure { "wss" } else { "ws" };
        let full = format!("{scheme}://{}{}", t.authority(), t.path_and_query);
        // (The 8192-byte limit applies to what the user gave: percent-encoding
        // may take the full URL over it.)
        if full.len() <= 8192 {
            assert_eq!(
                Target::parse(&full).as_ref(),
                Ok(&t),
                "{s:?} does not round-trip"
            );
        }
        assert!(t.path_and_query.starts_with('/'));
        assert!(!t.host.is_empty());
        assert!(t.port != 0);
        let expect = if t.path_and_query.contains('?') {
            format!("{scheme}://{}{}?<redacted>", t.authority(), t.path())
        } else {
            full.clone()
        };
        assert_eq!(t.to_string(), expect);
        assert_eq!(format!("{t:?}"), format!("Target({expect})"));
        // The same, shown by `redact` from the raw string.
        if let Some(q) = secret_start(s) {
            let with = insert(s, q + 1, CANARY);
            if let Ok(t2) = Target::parse(&with) {
                assert_eq!(t2.to_string(), t.to_string());
                assert_eq!(format!("{t2:?}"), format!("{t:?}"));
            }
        }
    }
});
