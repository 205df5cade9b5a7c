//! WebSocket URL parsing: `ws://` and `wss://` only.
//!
//! A deliberately small parser (no `url` crate): scheme, host (DNS name, IPv4
//! or bracketed IPv6 literal), optional port, path and query. Things a
//! WebSocket client must not send are rejected with
//! [`Error::InvalidUrl`]: other schemes,
//! userinfo (`user:pass@host` — put credentials in a header instead),
//! fragments (RFC 6455 §3 forbids them), whitespace and control characters.
//! Non-ASCII characters in the path or query are percent-encoded; non-ASCII
//! host names must be given in their punycode (`xn--`) form.
//!
//! Secrets: a query string often carries a token (`?token=…`), so
//! [`Target`]'s `Display` and `Debug` show scheme, host, port and path only
//! (a query shows as `?<redacted>`), and [`redact`] does the same for a raw
//! string that did not even parse (userinfo dropped too). Only the upgrade
//! request itself carries [`Target::path_and_query`].

use core::fmt;
use std::net::Ipv6Addr;

use zenws_core::Error;

/// A parsed `ws://` or `wss://` URL: where to connect and what to ask for.
///
/// `Display` and `Debug` redact the query (see the [module docs](self)).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// `true` for `wss://` (TLS).
    pub secure: bool,
    /// Host name or IP literal, lower-cased, without the IPv6 brackets.
    pub host: String,
    /// Port, the scheme's default (80 / 443) when the URL gives none.
    pub port: u16,
    /// Request target: path (at least `/`) and the `?query` if any.
    pub path_and_query: String,
}

impl Target {
    /// Parse a `ws://` or `wss://` URL. Never panics; anything else is
    /// [`Error::InvalidUrl`] (example: the test `parse_example`).
    pub fn parse(url: &str) -> Result<Target, Error> {
        parse(url).ok_or(Error::InvalidUrl)
    }

    /// The scheme's default port: 443 for `wss`, 80 for `ws`.
    pub fn default_port(&self) -> u16 {
        if self.secure {
            443
        } else {
            80
        }
    }

    /// `true` if the host is an IP literal rather than a name to resolve.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn host_is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }

    /// The authority as sent in the `Host` header: `host` or `host:port`
    /// (port omitted when it is the default), IPv6 in brackets.
    pub fn authority(&self) -> String {
        let mut s = String::with_capacity(self.host.len() + 8);
        if self.host.contains(':') {
            s.push('[');
            s.push_str(&self.host);
            s.push(']');
        } else {
            s.push_str(&self.host);
        }
        if self.port != self.default_port() {
            s.push(':');
            s.push_str(&self.port.to_string());
        }
        s
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query.as_str(), |(p, _)| p)
    }

    /// The whole URL, query included: for the handshake only, never for
    /// logs or messages.
    fn full_url(&self) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.authority(), self.path_and_query)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.secure { "wss" } else { "ws" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path())?;
        if self.path_and_query.len() > self.path().len() {
            f.write_str("?<redacted>")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({self})")
    }
}

/// A URL as it may be shown in logs, errors and events, whether or not it
/// parses: scheme, host, port and path; userinfo (`user:pass@`) dropped, a
/// query or fragment replaced by `?<redacted>` / `#<redacted>`.
///
/// ```
/// use zenws_mio::redact_url as redact;
/// assert_eq!(redact("wss://u:pw@h:1/p?token=s3cr3t#f"), "wss://h:1/p?<redacted>");
/// assert_eq!(redact("not a url"), "not a url");
/// ```
pub fn redact(url: &str) -> String {
    // A scheme only if what precedes `://` can be one (RFC 3986 §3.1): a
    // `://` inside the query or the userinfo is not a scheme separator
    // (found by the `url` fuzz target: `x?token=s3cr3t://h` was shown whole).
    let scheme_end = url.find("://").filter(|&i| {
        let s = &url.as_bytes()[..i];
        s.first().is_some_and(u8::is_ascii_alphabetic)
            && s.iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    });
    let (scheme, rest) = match scheme_end {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let (before, secret) = rest.split_at(end);
    let auth_end = before.find('/').unwrap_or(before.len());
    let (authority, path) = before.split_at(auth_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    if !authority.contains('@') && rest.contains('@') && Target::parse(url).is_err() {
        // Not a URL we accept, with an `@`: a raw `/` or `?` in a password
        // (`user:pa/ss@host`) would show part of it as a "path" or keep it
        // before the query, so neither host nor path is shown. (A URL we
        // accept has no userinfo: an `@` there is in its path or query.)
        out.push_str("<redacted>");
    } else {
        out.push_str(host);
        out.push_str(path);
    }
    match secret.as_bytes().first() {
        Some(b'?') => out.push_str("?<redacted>"),
        Some(b'#') => out.push_str("#<redacted>"),
        _ => {}
    }
    out
}

impl core::str::FromStr for Target {
    type Err = Error;
    fn from_str(s: &str) -> Result<Target, Error> {
        Target::parse(s)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

fn parse(url: &str) -> Option<Target> {
    if url.is_empty()
        || url.len() > 8192
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
        || url.contains('#')
    {
        return None;
    }
    let (secure, rest) = if let Some(r) = strip_prefix_ci(url, "wss://") {
        (true, r)
    } else if let Some(r) = strip_prefix_ci(url, "ws://") {
        (false, r)
    } else {
        return None;
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    if authority.is_empty() || authority.contains('@') || authority.contains('\\') {
        return None;
    }

    let (host, port_str) = if let Some(inner) = authority.strip_prefix('[') {
        let close = inner.find(']')?;
        let literal = &inner[..close];
        let ip: Ipv6Addr = literal.parse().ok()?;
        let after = &inner[close + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (ip.to_string(), port)
    } else {
        let (h, p) = match authority.find(':') {
            Some(i) => (&authority[..i], Some(&authority[i + 1..])),
            None => (authority, None),
        };
        if !valid_host(h) {
            return None;
        }
        (h.to_ascii_lowercase(), p)
    };

    let default_port = if secure { 443 } else { 80 };
    let port = match port_str {
        None | Some("") => default_port,
        Some(p) => {
            if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            }
        }
    };

    let mut path_and_query = String::with_capacity(tail.len() + 1);
    if !tail.starts_with('/') {
        path_and_query.push('/');
    }
    for c in tail.chars() {
        if c.is_ascii() && !needs_escape(c as u8) {
            path_and_query.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                path_and_query.push_str(&format!("%{b:02X}"));
            }
        }
    }

    let target = Target {
        secure,
        host,
        port,
        path_and_query,
    };
    // Whatever we accept must be accepted by the handshake's URI parser too.
    tungstenite::http::Uri::try_from(target.full_url()).ok()?;
    Some(target)
}

/// Characters browsers percent-encode in a path or query.
fn needs_escape(b: u8) -> bool {
    matches!(b, b'"' | b'<' | b'>' | b'`' | b'{' | b'}' | b'|' | b'^')
}

/// DNS name or IPv4 literal: ASCII letters, digits, `-`, `_`, `.`.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253 + 1
        && !h.starts_with('.')
        && !h.contains("..")
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_example() {
        let t = Target::parse("wss://Example.com/ws/api/v2?x=1").unwrap();
        assert!(t.secure);
        assert_eq!((t.host.as_str(), t.port), ("example.com", 443));
        assert_eq!(t.path_and_query, "/ws/api/v2?x=1");
        // The query may hold a token: never displayed.
        assert_eq!(t.to_string(), "wss://example.com/ws/api/v2?<redacted>");
    }

    fn ok(url: &str) -> Target {
        Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn basics_and_defaults() {
        let t = ok("ws://example.com");
        assert_eq!(
            t,
            Target {
                secure: false,
                host: "example.com".into(),
                port: 80,
                path_and_query: "/".into()
            }
        );
        assert_eq!(t.to_string(), "ws://example.com/");
        let t = ok("wss://example.com");
        assert_eq!((t.secure, t.port), (true, 443));
        let t = ok("WSS://EXAMPLE.com:8443/a/b?c=d&e=%20f");
        assert_eq!(t.host, "example.com");
        assert_eq!(t.port, 8443);
        assert_eq!(t.path_and_query, "/a/b?c=d&e=%20f");
        assert_eq!(t.full_url(), "wss://example.com:8443/a/b?c=d&e=%20f");
        assert_eq!(t.to_string(), "wss://example.com:8443/a/b?<redacted>");
        assert_eq!(t.authority(), "example.com:8443");
        // explicit default port is normalised away
        assert_eq!(ok("ws://h:80/x").to_string(), "ws://h/x");
        assert_eq!(ok("ws://h:/x").port, 80);
    }

    #[test]
    fn query_without_path() {
        let t = ok("ws://h?token=abc");
        assert_eq!(t.path_and_query, "/?token=abc");
        assert_eq!(t.full_url(), "ws://h/?token=abc");
        assert_eq!(t.to_string(), "ws://h/?<redacted>");
    }

    #[test]
    fn ip_literals() {
        let t = ok("ws://127.0.0.1:9001/");
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 9001));
        assert!(t.host_is_ip());
        let t = ok("wss://[::1]:8443/p");
        assert_eq!(t.host, "::1");
        assert_eq!(t.port, 8443);
        assert!(t.host_is_ip());
        assert_eq!(t.to_string(), "wss://[::1]:8443/p");
        let t = ok("ws://[2001:DB8::1]");
        assert_eq!(t.host, "2001:db8::1");
        assert_eq!(t.authority(), "[2001:db8::1]");
        assert!(!ok("ws://localhost").host_is_ip());
    }

    #[test]
    fn non_ascii_path_is_escaped() {
        let t = ok("ws://h/caf\u{e9}?q={x}");
        assert_eq!(t.path_and_query, "/caf%C3%A9?q=%7Bx%7D");
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "ws://",
            "ws:///path",
            "wss://:443/",
            "http://example.com",
            "https://example.com",
            "example.com",
            "ws:/example.com",
            "ws://user:pass@example.com/",
            "ws://@example.com/",
            "ws://example.com/#frag",
            "ws://example.com#",
            "ws://exa mple.com/",
            "ws://example.com/a b",
            "ws://example.com:0/",
            "ws://example.com:65536/",
            "ws://example.com:99999999999999999999/",
            "ws://example.com:-1/",
            "ws://example.com:+80/",
            "ws://example.com:8o/",
            "ws://[::1/",
            "ws://[::1]x/",
            "ws://[zz::1]/",
            "ws://[127.0.0.1]/",
            "ws://::1/",
            "ws://ex\u{e4}mple.com/",
            "ws://a..b/",
            "ws://.a/",
            "ws://a\\b/",
            "ws://h/\u{0}",
            "ws://h/\n",
            "wss\u{e9}://h",
            "w",
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
        ] {
            assert_eq!(Target::parse(bad), Err(Error::InvalidUrl), "{bad:?}");
        }
    }

    #[test]
    fn display_debug_and_redact_hide_query_and_userinfo() {
        let t = ok("wss://h.example:8443/ws/v2?token=s3cr3t&x=1");
        assert_eq!(t.to_string(), "wss://h.example:8443/ws/v2?<redacted>");
        assert_eq!(
            format!("{t:?}"),
            "Target(wss://h.example:8443/ws/v2?<redacted>)"
        );
        assert_eq!(t.path(), "/ws/v2");
        assert_eq!(ok("ws://h/p").to_string(), "ws://h/p");
        for (raw, shown) in [
            ("ws://user:pw@h/p?token=s3cr3t", "ws://h/p?<redacted>"),
            ("wss://h:1/a#frag", "wss://h:1/a#<redacted>"),
            ("ws://a@b@h?k", "ws://h?<redacted>"),
            ("wss://user:pa/ss@host/", "wss://<redacted>"),
            ("wss://u:p/a?b@h/x?t", "wss://<redacted>?<redacted>"),
            ("http://h/x?y", "http://h/x?<redacted>"),
            ("garbage?secret", "garbage?<redacted>"),
            // A `://` after the query or inside the userinfo is no scheme.
            ("x?token=s3cr3t://h", "x?<redacted>"),
            ("ws://h/p#frag://h", "ws://h/p#<redacted>"),
            ("a+b.c-d://u:pw@h/p", "a+b.c-d://h/p"),
            ("://h/p?q", "://h/p?<redacted>"),
            ("", ""),
        ] {
            assert_eq!(redact(raw), shown, "{raw:?}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        // A small deterministic fuzz: random byte strings and mutations of valid URLs.
        let seeds = ["ws://a.b:1/c?d", "wss://[::1]:2/", "ws://h"];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"ws:/[]@?#%.:0123456789abcxyzAB\\ \x7f\xc3\xa9-_";
        for i in 0..20_000 {
            let mut bytes: Vec<u8> = seeds[i % seeds.len()].as_bytes().to_vec();
            for _ in 0..(next() % 6) {
                let pos = (next() as usize) % (bytes.len() + 1);
                let b = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => bytes.insert(pos, b),
                    1 if pos < bytes.len() => {
                        bytes.remove(pos);
                    }
                    _ if pos < bytes.len() => bytes[pos] = b,
                    _ => {}
                }
            }
            let s = String::from_utf8_lossy(&bytes);
            if let Ok(t) = Target::parse(&s) {
                // The full URL round-trips to the same target.
                assert_eq!(Target::parse(&t.full_url()), Ok(t.clone()), "{s:?}");
                // Display and Debug never show the query.
                if t.path_and_query.contains('?') {
                    let scheme = if t.secure { "wss" } else { "ws" };
                    let shown = format!("{scheme}://{}{}?<redacted>", t.authority(), t.path());
                    assert_eq!(t.to_string(), shown, "{s:?}");
                    assert_eq!(format!("{t:?}"), format!("Target({shown})"), "{s:?}");
                }
            }
        }
    }
}
