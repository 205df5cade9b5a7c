//! Allocation-free JSON-RPC scanner.
//!
//! The core must correlate JSON-RPC responses with requests and recognise
//! Deribit-style application heartbeats without a JSON library. [`scan`]
//! reads **one** top-level JSON object and extracts only the few members the
//! core cares about into a [`JsonRpcView`] that borrows from the input:
//!
//! | member            | field                          | extracted when                          |
//! |-------------------|--------------------------------|-----------------------------------------|
//! | `id`              | [`JsonRpcView::id`]            | a non-negative integer fitting `u64`    |
//! | `method`          | [`JsonRpcView::method`]        | a string                                |
//! | `params.type`     | [`JsonRpcView::params_type`]   | a string inside a `params` object       |
//! | `params.channel`  | [`JsonRpcView::params_channel`]| a string inside a `params` object       |
//! | `error.code`      | [`JsonRpcView::error_code`]    | an integer fitting `i64` inside `error` |
//! | `result`          | [`JsonRpcView::has_result`]    | the key is present (any value)          |
//! | `error`           | [`JsonRpcView::has_error`]     | the key is present (any value)          |
//!
//! Everything else is skipped: nested objects and arrays to any depth up to
//! [`MAX_DEPTH`], strings with escapes, numbers, `true`/`false`/`null`.
//!
//! # Rules worth knowing
//!
//! - **Duplicate keys: the last occurrence wins**, as in JavaScript's
//!   `JSON.parse` and most JSON libraries. A later `"id":"x"` therefore resets
//!   an earlier `"id":7` to `None`, and a later `params` object replaces both
//!   `params_type` and `params_channel`. `has_result` / `has_error` are true
//!   if the key occurs at all.
//! - **Escapes are not decoded.** Returned strings are the raw bytes between
//!   the quotes: `"a\"b"` yields `a\"b` (four characters). Escapes are
//!   checked for well-formedness (`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`,
//!   `\t`, `\uXXXX`) but not unescaped. Keys are compared as raw bytes too, so
//!   a key spelled with escapes (`"i\u0064"`) is treated as an unknown key.
//! - **Not a validator.** The members the scanner looks at (the top-level
//!   object, `params`, `error`) are parsed strictly; skipped values are only
//!   tokenised and bracket-matched (so `[1 2]` inside a skipped value passes).
//!   Leading and trailing whitespace is allowed; anything else after the
//!   object is [`ScanError::Invalid`].
//! - **Bounded work.** The scanner never recurses on input-controlled depth,
//!   runs in time linear in `input.len()`, never allocates and never panics.
//!
//! ```
//! use zenws_core::json::scan;
//!
//! let msg = br#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#;
//! let view = scan(msg).unwrap();
//! assert!(view.is_deribit_test_request());
//!
//! let resp = br#"{"jsonrpc":"2.0","id":42,"result":{"bids":[[1.5,2]]},"usIn":1}"#;
//! let view = scan(resp).unwrap();
//! assert_eq!(view.id, Some(42));
//! assert!(view.is_response());
//! ```

use core::fmt;

/// Maximum nesting depth of objects and arrays, counting the top-level
/// object as depth 1. Deeper input is rejected with [`ScanError::TooDeep`].
pub const MAX_DEPTH: usize = 64;

/// Why [`scan`] rejected its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScanError {
    /// The first non-whitespace byte is not `{` (this includes empty input).
    NotAnObject,
    /// The input ended inside the object (or inside a string in it).
    Unterminated,
    /// A byte that cannot appear here, at this offset into the input.
    /// Also used for bad escapes, control characters inside strings,
    /// mismatched brackets, trailing data after the object and extracted
    /// strings that are not valid UTF-8.
    Invalid {
        /// Byte offset of the offending byte.
        offset: usize,
    },
    /// Objects/arrays nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::NotAnObject => f.write_str("JSON input is not an object"),
            ScanError::Unterminated => f.write_str("JSON input ended unexpectedly"),
            ScanError::Invalid { offset } => write!(f, "invalid JSON at byte {offset}"),
            ScanError::TooDeep => write!(f, "JSON nested deeper than {MAX_DEPTH}"),
        }
    }
}

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
impl std::error::Error for ScanError {}

/// The JSON-RPC members of one message, borrowed from the scanned input.
///
/// Produced by [`scan`]; see the [module docs](self) for the extraction rules.
///
/// ```
/// use zenws_core::json::scan;
///
/// let msg = br#"{"jsonrpc":"2.0","id":7,"error":{"code":10028,"message":"too_many_requests"}}"#;
/// let view = scan(msg).unwrap();
/// assert_eq!(view.id, Some(7));
/// assert!(view.has_error && !view.has_result);
/// assert_eq!(view.error_code, Some(10028));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct JsonRpcView<'a> {
    /// `id`, when it is a non-negative integer that fits `u64`; `None` for
    /// a missing id, `null`, strings, negatives, fractions and exponents.
    pub id: Option<u64>,
    /// `method`, when it is a string: the raw (still escaped) text between
    /// the quotes.
    pub method: Option<&'a str>,
    /// `params.type`, when `params` is an object whose `type` is a string
    /// (raw, still escaped).
    pub params_type: Option<&'a str>,
    /// `params.channel`, when `params` is an object whose `channel` is a
    /// string (raw, still escaped).
    pub params_channel: Option<&'a str>,
    /// `error.code`, when `error` is an object whose `code` is an integer
    /// that fits `i64`.
    pub error_code: Option<i64>,
    /// `error.message`, when `error` is an object whose `message` is a
    /// string (raw, still escaped).
    pub error_message: Option<&'a str>,
    /// The raw text of the top-level `result` value (last occurrence), for
    /// [`member`], [`as_u64`], [`as_str`] and [`strings`].
    pub result: Option<&'a [u8]>,
    /// Whether a top-level `result` key is present (with any value, even `null`).
    pub has_result: bool,
    /// Whether a top-level `error` key is present (with any value).
    pub has_error: bool,
}

impl<'a> JsonRpcView<'a> {
    /// A response to one of our requests: it has an integer `id` and a
    /// `result` or an `error`.
    pub fn is_response(&self) -> bool {
        self.id.is_some() && (self.has_result || self.has_error)
    }

    /// A notification: it has a `method` and no `id` member we could read.
    pub fn is_notification(&self) -> bool {
        self.method.is_some() && self.id.is_none()
    }

    /// Deribit's `heartbeat` notification (either `params.type`).
    pub fn is_deribit_heartbeat(&self) -> bool {
        self.method == Some("heartbeat")
    }

    /// Deribit's `heartbeat` with `params.type == "test_request"`: the server
    /// asks the client to answer with `public/test`.
    ///
    /// ```
    /// let v = zenws_core::json::scan(
    ///     br#"{"method":"heartbeat","params":{"type":"test_request"},"jsonrpc":"2.0"}"#,
    /// ).unwrap();
    /// assert!(v.is_deribit_test_request());
    /// ```
    pub fn is_deribit_test_request(&self) -> bool {
        self.is_deribit_heartbeat() && self.params_type == Some("test_request")
    }

    /// A Deribit subscription notification (`method == "subscription"`);
    /// the channel is in [`params_channel`](Self::params_channel).
    pub fn is_deribit_subscription(&self) -> bool {
        self.method == Some("subscription")
    }
}

/// Free-function form of [`JsonRpcView::is_deribit_test_request`].
pub fn is_deribit_test_request(view: &JsonRpcView<'_>) -> bool {
    view.is_deribit_test_request()
}

/// Scan one top-level JSON object and extract its JSON-RPC members.
///
/// Linear time, no allocation, no recursion on input depth, never panics.
///
/// ```
/// use zenws_core::json::{scan, ScanError};
///
/// let v = scan(br#"{"method":"subscription","params":{"channel":"book.BTC-PERPETUAL.100ms","data":{"bids":[["new",1,2]]}}}"#).unwrap();
/// assert_eq!(v.params_channel, Some("book.BTC-PERPETUAL.100ms"));
/// assert_eq!(scan(b"[1,2]"), Err(ScanError::NotAnObject));
/// assert_eq!(scan(b"{\"id\":1"), Err(ScanError::Unterminated));
/// ```
pub fn scan(input: &[u8]) -> Result<JsonRpcView<'_>, ScanError> {
    let mut c = Cursor { buf: input, pos: 0 };
    c.skip_ws();
    match c.peek() {
        Some(b'{') => {}
        _ => return Err(ScanError::NotAnObject),
    }
    let mut view = JsonRpcView::default();
    c.object(1, |c, key| {
        match key {
            b"id" => view.id = c.value_u64(1)?,
            b"method" => view.method = c.value_str(1)?,
            b"params" => {
                view.params_type = None;
                view.params_channel = None;
                if c.peek() == Some(b'{') {
                    let (mut ty, mut ch) = (None, None);
                    c.object(2, |c, k| {
                        match k {
                            b"type" => ty = c.value_str(2)?,
                            b"channel" => ch = c.value_str(2)?,
                            _ => c.skip_value(2)?,
                        }
                        Ok(())
                    })?;
                    view.params_type = ty;
                    view.params_channel = ch;
                } else {
                    c.skip_value(1)?;
                }
            }
            b"result" => {
                view.has_result = true;
                let start = c.pos;
                c.skip_value(1)?;
                view.result = c.buf.get(start..c.pos);
            }
            b"error" => {
                view.has_error = true;
                view.error_code = None;
                view.error_message = None;
                if c.peek() == Some(b'{') {
                    let (mut code, mut message) = (None, None);
                    c.object(2, |c, k| {
                        match k {
                            b"code" => code = c.value_i64(2)?,
                            // Binance spells it `msg`.
                            b"message" | b"msg" => message = c.value_str(2)?,
                            _ => c.skip_value(2)?,
                        }
                        Ok(())
                    })?;
                    view.error_code = code;
                    view.error_message = message;
                } else {
                    c.skip_value(1)?;
                }
            }
            _ => c.skip_value(1)?,
        }
        Ok(())
    })?;
    c.skip_ws();
    if c.pos < input.len() {
        return Err(ScanError::Invalid { offset: c.pos });
    }
    Ok(view)
}

/// The raw value of member `key` of the JSON object `object` (raw text, as
/// in [`JsonRpcView::result`]); `None` if `object` is not a well-formed
/// object or has no such member. Last occurrence wins. Never panics.
///
/// ```
/// use zenws_core::json::{as_str, as_u64, member, scan};
/// let v = scan(br#"{"id":1,"result":{"access_token":"t","expires_in":900}}"#).unwrap();
/// let r = v.result.unwrap();
/// assert_eq!(member(r, "expires_in").and_then(as_u64), Some(900));
/// assert_eq!(member(r, "access_token").and_then(as_str), Some("t"));
/// assert_eq!(member(r, "nope"), None);
/// ```
pub fn member<'a>(object: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let mut c = Cursor {
        buf: object,
        pos: 0,
    };
    c.skip_ws();
    if c.peek() != Some(b'{') {
        return None;
    }
    let mut found = None;
    c.object(1, |c, k| {
        let start = c.pos;
        c.skip_value(1)?;
        if k == key.as_bytes() {
            found = c.buf.get(start..c.pos);
        }
        Ok(())
    })
    .ok()?;
    found
}

/// A raw value as a non-negative integer that fits `u64`.
pub fn as_u64(raw: &[u8]) -> Option<u64> {
    let mut c = Cursor { buf: raw, pos: 0 };
    c.skip_ws();
    c.value_u64(1).ok().flatten()
}

/// A raw value as string text (still escaped), if it is a string.
pub fn as_str(raw: &[u8]) -> Option<&str> {
    let mut c = Cursor { buf: raw, pos: 0 };
    c.skip_ws();
    c.value_str(1).ok().flatten()
}

/// Call `each` with every string element (raw, still escaped) of the raw
/// JSON array `array`; other elements are skipped. Returns `false` if
/// `array` is not a well-formed array (then `each` may have seen a prefix).
///
/// ```
/// let mut seen = Vec::new();
/// assert!(zenws_core::json::strings(br#"["a", 1, "b"]"#, |s| seen.push(s.to_string())));
/// assert_eq!(seen, ["a", "b"]);
/// assert!(!zenws_core::json::strings(b"null", |_| {}));
/// ```
pub fn strings<'a>(array: &'a [u8], mut each: impl FnMut(&'a str)) -> bool {
    let mut c = Cursor { buf: array, pos: 0 };
    c.skip_ws();
    if c.peek() != Some(b'[') {
        return false;
    }
    c.pos += 1;
    c.skip_ws();
    if c.peek() == Some(b']') {
        return true;
    }
    loop {
        c.skip_ws();
        match c.value_str(1) {
            Ok(Some(s)) => each(s),
            Ok(None) => {}
            Err(_) => return false,
        }
        c.skip_ws();
        match c.peek() {
            Some(b',') => c.pos += 1,
            Some(b']') => return true,
            _ => return false,
        }
    }
}

/// A read position in the input. Every access is bounds-checked via `get`.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_number_byte(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn invalid(&self) -> ScanError {
        ScanError::Invalid { offset: self.pos }
    }

    /// The next byte, or `Unterminated` at end of input.
    fn peek_some(&self) -> Result<u8, ScanError> {
        self.peek().ok_or(ScanError::Unterminated)
    }

    fn skip_ws(&mut self) {
        while let Some(b) = self.peek() {
            if !is_ws(b) {
                break;
            }
            self.pos += 1;
        }
    }

    /// Expect byte `want` (after whitespace) and consume it.
    fn expect(&mut self, want: u8) -> Result<(), ScanError> {
        self.skip_ws();
        if self.peek_some()? == want {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.invalid())
        }
    }

    /// Parse an object whose `{` is at the cursor, calling `member(cursor,
    /// raw_key)` for each member with the cursor on the value's first byte;
    /// `member` must consume the value. `depth` is this object's depth.
    fn object<F>(&mut self, depth: usize, mut member: F) -> Result<(), ScanError>
    where
        F: FnMut(&mut Self, &'a [u8]) -> Result<(), ScanError>,
    {
        if depth > MAX_DEPTH {
            return Err(ScanError::TooDeep);
        }
        self.expect(b'{')?;
        self.skip_ws();
        if self.peek_some()? == b'}' {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            if self.peek_some()? != b'"' {
                return Err(self.invalid());
            }
            let key = self.string()?;
            self.expect(b':')?;
            self.skip_ws();
            self.peek_some()?;
            member(self, key)?;
            self.skip_ws();
            match self.peek_some()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.invalid()),
            }
        }
    }

    /// Consume a string whose opening quote is at the cursor; return the raw
    /// bytes between the quotes.
    fn string(&mut self) -> Result<&'a [u8], ScanError> {
        self.pos += 1; // opening quote
        let start = self.pos;
        loop {
            match self.peek_some()? {
                b'"' => {
                    let raw = self.buf.get(start..self.pos).unwrap_or_default();
                    self.pos += 1;
                    return Ok(raw);
                }
                b'\\' => {
                    self.pos += 1;
                    match self.peek_some()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 1,
                        b'u' => {
                            self.pos += 1;
                            for _ in 0..4 {
                                if !self.peek_some()?.is_ascii_hexdigit() {
                                    return Err(self.invalid());
                                }
                                self.pos += 1;
                            }
                        }
                        _ => return Err(self.invalid()),
                    }
                }
                0x00..=0x1f => return Err(self.invalid()),
                _ => self.pos += 1,
            }
        }
    }

    /// Consume a scalar (number or literal) starting at the cursor.
    /// Returns the raw token.
    fn scalar(&mut self) -> Result<&'a [u8], ScanError> {
        let start = self.pos;
        let b = self.peek_some()?;
        let literal: &[u8] = match b {
            b't' => b"true",
            b'f' => b"false",
            b'n' => b"null",
            b'-' | b'0'..=b'9' => {
                while let Some(b) = self.peek() {
                    if !is_number_byte(b) {
                        break;
                    }
                    self.pos += 1;
                }
                return Ok(self.buf.get(start..self.pos).unwrap_or_default());
            }
            _ => return Err(self.invalid()),
        };
        for &want in literal {
            if self.peek_some()? != want {
                return Err(self.invalid());
            }
            self.pos += 1;
        }
        Ok(literal)
    }

    /// Skip one value of any kind starting at the cursor. `depth` is the
    /// depth of the enclosing container. Iterative: nesting is tracked in a
    /// bit stack (1 = object, 0 = array), never on the call stack.
    fn skip_value(&mut self, depth: usize) -> Result<(), ScanError> {
        // Bit i of `stack` = kind of the container at local level i+1.
        let mut stack: u64 = 0;
        let mut level: usize = 0;
        loop {
            self.skip_ws();
            let b = self.peek_some()?;
            match b {
                b'{' | b'[' => {
                    // `depth >= 1` for every caller, so `level < MAX_DEPTH <= 64`.
                    if depth + level + 1 > MAX_DEPTH || level >= 64 {
                        return Err(ScanError::TooDeep);
                    }
                    if b == b'{' {
                        stack |= 1u64 << level;
                    } else {
                        stack &= !(1u64 << level);
                    }
                    level += 1;
                    self.pos += 1;
                }
                b'}' | b']' => {
                    if level == 0 {
                        // A closing bracket where a value should start.
                        return Err(self.invalid());
                    }
                    level -= 1;
                    let is_object = (stack >> level) & 1 == 1;
                    if is_object != (b == b'}') {
                        return Err(self.invalid());
                    }
                    self.pos += 1;
                }
                b'"' => {
                    self.string()?;
                }
                b',' | b':' => {
                    if level == 0 {
                        return Err(self.invalid());
                    }
                    self.pos += 1;
                }
                _ => {
                    self.scalar()?;
                }
            }
            if level == 0 {
                return Ok(());
            }
        }
    }

    /// A value that is extracted as `u64` when it is a plain non-negative
    /// integer; any other value is skipped and yields `None`.
    fn value_u64(&mut self, depth: usize) -> Result<Option<u64>, ScanError> {
        match self.peek_some()? {
            b'0'..=b'9' => {
                let tok = self.scalar()?;
                let mut n: u64 = 0;
                for &d in tok {
                    if !d.is_ascii_digit() {
                        return Ok(None);
                    }
                    n = match n
                        .checked_mul(10)
                        .and_then(|n| n.checked_add(u64::from(d - b'0')))
                    {
                        Some(n) => n,
                        None => return Ok(None),
                    };
                }
                Ok(Some(n))
            }
            _ => self.skip_value(depth).map(|()| None),
        }
    }

    /// Like [`value_u64`](Self::value_u64) for a possibly negative `i64`.
    fn value_i64(&mut self, depth: usize) -> Result<Option<i64>, ScanError> {
        match self.peek_some()? {
            b'-' | b'0'..=b'9' => {
                let tok = self.scalar()?;
                let (neg, digits) = match tok.split_first() {
                    Some((b'-', rest)) => (true, rest),
                    _ => (false, tok),
                };
                if digits.is_empty() {
                    return Ok(None);
                }
                // Accumulate negatively so that i64::MIN is representable.
                let mut n: i64 = 0;
                for &d in digits {
                    if !d.is_ascii_digit() {
                        return Ok(None);
                    }
                    n = match n
                        .checked_mul(10)
                        .and_then(|n| n.checked_sub(i64::from(d - b'0')))
                    {
                        Some(n) => n,
                        None => return Ok(None),
                    };
                }
                Ok(if neg { Some(n) } else { n.checked_neg() })
            }
            _ => self.skip_value(depth).map(|()| None),
        }
    }

    /// A value that is extracted as raw string text when it is a string;
    /// any other value is skipped and yields `None`.
    fn value_str(&mut self, depth: usize) -> Result<Option<&'a str>, ScanError> {
        if self.peek_some()? == b'"' {
            let start = self.pos;
            let raw = self.string()?;
            match core::str::from_utf8(raw) {
                Ok(s) => Ok(Some(s)),
                Err(e) => Err(ScanError::Invalid {
                    offset: start + 1 + e.valid_up_to(),
                }),
            }
        } else {
            self.skip_value(depth).map(|()| None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(s: &str) -> JsonRpcView<'_> {
        match scan(s.as_bytes()) {
            Ok(v) => v,
            Err(e) => panic!("scan failed on {s}: {e:?}"),
        }
    }

    #[test]
    fn deribit_response_with_result() {
        let v = ok(
            r#"{"jsonrpc":"2.0","id":9929,"result":{"trades":[{"trade_seq":30289432,"price":8955.0,"direction":"buy","amount":10.0,"label":"a\"b{c}"}],"has_more":true},"usIn":1590479,"usOut":1590480,"usDiff":1,"testnet":false}"#,
        );
        assert_eq!(v.id, Some(9929));
        assert!(v.has_result && !v.has_error && v.is_response());
        assert_eq!(v.method, None);
    }

    #[test]
    fn deribit_error_with_code() {
        let v = ok(
            r#"{"jsonrpc":"2.0","id":8163,"error":{"message":"bad_request","code":11050,"data":{"reason":"x","param":"y"}},"testnet":false,"usIn":1,"usOut":2,"usDiff":1}"#,
        );
        assert_eq!(v.id, Some(8163));
        assert!(v.has_error && !v.has_result);
        assert_eq!(v.error_code, Some(11050));
        let v = ok(r#"{"id":1,"error":{"code":-32602,"message":"Invalid params"}}"#);
        assert_eq!(v.error_code, Some(-32602));
        let v = ok(r#"{"id":1,"error":"boom"}"#);
        assert!(v.has_error);
        assert_eq!(v.error_code, None);
    }

    #[test]
    fn deribit_subscription_nested_arrays() {
        let v = ok(
            r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"book.BTC-PERPETUAL.100ms","data":{"type":"change","timestamp":1554373911330,"prev_change_id":297217,"instrument_name":"BTC-PERPETUAL","change_id":297218,"bids":[["delete",5042.64,0],["change",5042.34,10]],"asks":[["new",5043.5,[[1,[2,[3]]]]]]}}}"#,
        );
        assert!(v.is_deribit_subscription() && v.is_notification());
        assert_eq!(v.params_channel, Some("book.BTC-PERPETUAL.100ms"));
        // `type` inside params.data is not params.type.
        assert_eq!(v.params_type, None);
        assert_eq!(v.id, None);
    }

    #[test]
    fn deribit_heartbeats() {
        let v = ok(r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#);
        assert!(v.is_deribit_test_request() && is_deribit_test_request(&v));
        let v = ok(r#"{"params":{"type":"heartbeat"},"method":"heartbeat","jsonrpc":"2.0"}"#);
        assert!(v.is_deribit_heartbeat() && !v.is_deribit_test_request());
        let v = ok(r#"{"jsonrpc":"2.0","id":3,"result":"ok","usIn":1}"#);
        assert!(!v.is_deribit_heartbeat());
        // A request we send: public/test with an id.
        let v = ok(
            r#" {"jsonrpc":"2.0","id":18446744073709551615,"method":"public/test","params":{}} "#,
        );
        assert_eq!(v.id, Some(u64::MAX));
        assert_eq!(v.method, Some("public/test"));
    }

    #[test]
    fn strings_with_braces_quotes_escapes() {
        let v =
            ok(r#"{"x":"}{][\"\\","y":["\"}",{"z":"\u00e9\/\b\f\n\r\t"}],"method":"a\"b","id":5}"#);
        assert_eq!(v.method, Some(r#"a\"b"#));
        assert_eq!(v.id, Some(5));
        let v = ok("{\"method\":\"h\u{e9}llo\"}");
        assert_eq!(v.method, Some("h\u{e9}llo"));
    }

    #[test]
    fn id_forms() {
        assert_eq!(ok(r#"{"id":"7"}"#).id, None);
        assert_eq!(ok(r#"{"id":-7}"#).id, None);
        assert_eq!(ok(r#"{"id":7.0}"#).id, None);
        assert_eq!(ok(r#"{"id":7e2}"#).id, None);
        assert_eq!(ok(r#"{"id":null}"#).id, None);
        assert_eq!(ok(r#"{"id":18446744073709551616}"#).id, None);
        assert_eq!(ok(r#"{"id":[1]}"#).id, None);
        assert_eq!(ok(r#"{"id" : 0 }"#).id, Some(0));
        assert_eq!(
            ok(r#"{"error":{"code":-9223372036854775808}}"#).error_code,
            Some(i64::MIN)
        );
        assert_eq!(
            ok(r#"{"error":{"code":9223372036854775808}}"#).error_code,
            None
        );
        assert_eq!(ok(r#"{"error":{"code":"1"}}"#).error_code, None);
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let v = ok(r#"{"id":1,"method":"a","id":2,"method":"b"}"#);
        assert_eq!((v.id, v.method), (Some(2), Some("b")));
        let v = ok(r#"{"id":1,"id":"x"}"#);
        assert_eq!(v.id, None);
        let v = ok(r#"{"params":{"type":"a","channel":"c"},"params":{"type":"b"}}"#);
        assert_eq!((v.params_type, v.params_channel), (Some("b"), None));
        let v = ok(r#"{"params":{"type":"a","type":"b"}}"#);
        assert_eq!(v.params_type, Some("b"));
    }

    #[test]
    fn non_object_params_and_result_forms() {
        let v = ok(r#"{"method":"m","params":["type","x"],"result":null}"#);
        assert_eq!(v.params_type, None);
        assert!(v.has_result);
        let v = ok(r#"{}"#);
        assert_eq!(v, JsonRpcView::default());
        let v = ok("{ \"a\" : [ ] , \"b\" : { } , \"c\" : true , \"d\" : false }\n");
        assert_eq!(v, JsonRpcView::default());
    }

    #[test]
    fn errors() {
        assert_eq!(scan(b""), Err(ScanError::NotAnObject));
        assert_eq!(scan(b"   "), Err(ScanError::NotAnObject));
        assert_eq!(scan(b"\"x\""), Err(ScanError::NotAnObject));
        assert_eq!(scan(b"{"), Err(ScanError::Unterminated));
        assert_eq!(scan(b"{\"a"), Err(ScanError::Unterminated));
        assert_eq!(scan(b"{\"a\":"), Err(ScanError::Unterminated));
        assert_eq!(scan(b"{\"a\":[1,{"), Err(ScanError::Unterminated));
        assert_eq!(scan(b"{\"a\":\"\\"), Err(ScanError::Unterminated));
        assert_eq!(scan(b"{\"a\":1} x"), Err(ScanError::Invalid { offset: 8 }));
        assert_eq!(scan(b"{\"a\":1}{}"), Err(ScanError::Invalid { offset: 7 }));
        assert_eq!(scan(b"{a:1}"), Err(ScanError::Invalid { offset: 1 }));
        assert_eq!(scan(b"{\"a\" 1}"), Err(ScanError::Invalid { offset: 5 }));
        assert_eq!(scan(b"{\"a\":[}"), Err(ScanError::Invalid { offset: 6 }));
        assert_eq!(scan(b"{\"a\":{]}"), Err(ScanError::Invalid { offset: 6 }));
        assert_eq!(scan(b"{\"a\":}"), Err(ScanError::Invalid { offset: 5 }));
        assert_eq!(scan(b"{\"a\":tru}"), Err(ScanError::Invalid { offset: 8 }));
        assert_eq!(
            scan(b"{\"a\":\"\\x\"}"),
            Err(ScanError::Invalid { offset: 7 })
        );
        assert_eq!(
            scan(b"{\"a\":\"\\u12g4\"}"),
            Err(ScanError::Invalid { offset: 10 })
        );
        assert_eq!(
            scan(b"{\"a\":\"\n\"}"),
            Err(ScanError::Invalid { offset: 6 })
        );
        assert_eq!(scan(b"{\"a\":1,}"), Err(ScanError::Invalid { offset: 7 }));
        assert_eq!(
            scan(b"{\"a\":1 \"b\":2}"),
            Err(ScanError::Invalid { offset: 7 })
        );
        assert_eq!(
            scan(b"{\"method\":\"\xff\"}"),
            Err(ScanError::Invalid { offset: 11 })
        );
        assert_eq!(scan(b"{\"a\":@}"), Err(ScanError::Invalid { offset: 5 }));
    }

    #[test]
    fn depth_limit() {
        // Top-level object is depth 1; the value may nest MAX_DEPTH - 1 more.
        let ok_depth = MAX_DEPTH - 1;
        let s = format!("{{\"a\":{}{}}}", "[".repeat(ok_depth), "]".repeat(ok_depth));
        assert!(scan(s.as_bytes()).is_ok());
        let s = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(ok_depth + 1),
            "]".repeat(ok_depth + 1)
        );
        assert_eq!(scan(s.as_bytes()), Err(ScanError::TooDeep));
        // Hostile depth is rejected quickly, no stack growth.
        let s = format!("{{\"a\":{}", "[{\"x\":".repeat(100_000));
        assert_eq!(scan(s.as_bytes()), Err(ScanError::TooDeep));
        // Deep inside params is counted from params' depth.
        let s = format!(
            "{{\"params\":{{\"x\":{}{}}}}}",
            "[".repeat(ok_depth - 1),
            "]".repeat(ok_depth - 1)
        );
        assert!(scan(s.as_bytes()).is_ok());
        let s = format!(
            "{{\"params\":{{\"x\":{}{}}}}}",
            "[".repeat(ok_depth),
            "]".repeat(ok_depth)
        );
        assert_eq!(scan(s.as_bytes()), Err(ScanError::TooDeep));
    }

    #[test]
    fn display() {
        assert_eq!(
            format!("{}", ScanError::Invalid { offset: 3 }),
            "invalid JSON at byte 3"
        );
    }

    /// A random JSON value as text (no id/method keys inside, any depth ≤ 4).
    fn json_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            (any::<i32>(), 0u32..1000).prop_map(|(a, b)| format!("{a}.{b}e-3")),
            json_string(),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec((json_string(), inner), 0..6).prop_map(|v| {
                    let members: Vec<String> =
                        v.into_iter().map(|(k, v)| format!("{k} : {v}")).collect();
                    format!("{{ {} }}", members.join(",\n"))
                }),
            ]
        })
    }

    /// A random JSON string literal (with quotes), with escapes and
    /// structural characters inside.
    fn json_string() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("\\\"".to_string()),
                Just("\\\\".to_string()),
                Just("\\u00e9".to_string()),
                Just("\\n".to_string()),
                Just("{".to_string()),
                Just("}".to_string()),
                Just("[".to_string()),
                Just(":".to_string()),
                Just(",".to_string()),
                "[a-z\u{e9}\u{1F600} ]{0,3}",
            ],
            0..5,
        )
        .prop_map(|parts| format!("\"{}\"", parts.concat()))
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = scan(&bytes);
        }

        #[test]
        fn never_panics_on_jsonish(parts in proptest::collection::vec(
            prop_oneof![
                Just("{"), Just("}"), Just("["), Just("]"), Just("\""), Just("\\"),
                Just(":"), Just(","), Just("1"), Just("-"), Just("true"), Just("null"),
                Just("\"id\""), Just("\"method\""), Just("\"params\""), Just("\"error\""),
                Just("\"type\""), Just("\"code\""), Just(" "), Just("\\u"), Just("e"),
            ], 0..64)) {
            let s: String = parts.concat();
            let _ = scan(s.as_bytes());
        }

        #[test]
        fn finds_placed_id_and_method(
            before in proptest::collection::vec(("[a-z]{1,6}", json_value()), 0..5),
            after in proptest::collection::vec(("[a-z]{1,6}", json_value()), 0..5),
            id in any::<u64>(),
            method in "[a-z/_.]{0,20}",
            params in json_value(),
        ) {
            // Random keys never collide with the ones we extract.
            let skip = |k: &str| matches!(k, "id" | "method" | "params" | "result" | "error");
            let mut members: Vec<String> = before.iter().filter(|(k, _)| !skip(k))
                .map(|(k, v)| format!("\"{k}\":{v}")).collect();
            members.push(format!("\"id\":{id}"));
            members.push(format!("\"params\":{{\"data\":{params},\"type\":\"t\"}}"));
            members.push(format!("\"method\": \"{method}\""));
            members.extend(after.iter().filter(|(k, _)| !skip(k))
                .map(|(k, v)| format!("\"{k}\":{v}")));
            let text = format!("{{{}}}", members.join(","));
            let v = scan(text.as_bytes());
            prop_assert!(v.is_ok(), "{:?} on {}", v, text);
            let v = v.unwrap();
            prop_assert_eq!(v.id, Some(id));
            prop_assert_eq!(v.method, Some(method.as_str()));
            prop_assert_eq!(v.params_type, Some("t"));
            prop_assert!(!v.has_result && !v.has_error);
        }

        #[test]
        fn random_values_scan_as_object_or_reject(v in json_value()) {
            // Any generated value is valid JSON: an object scans, others are NotAnObject.
            let r = scan(v.as_bytes());
            if v.starts_with('{') {
                prop_assert!(r.is_ok(), "{:?} on {}", r, v);
            } else {
                prop_assert_eq!(r, Err(ScanError::NotAnObject));
            }
        }
    }
}
