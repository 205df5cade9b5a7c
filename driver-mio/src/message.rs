//! The data messages a client sends and receives: [`Message`] and its
//! UTF-8 payload type [`Text`].
//!
//! Both are this crate's own types over [`bytes::Bytes`] (cheap to clone,
//! sliceable, the buffer type of the Rust networking ecosystem), so a new
//! version of the WebSocket helpers used inside never changes them. A
//! received message is handed over without a copy.

use bytes::Bytes;
use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::Utf8Error;

/// A data message: text or binary.
///
/// ```
/// use zenws_mio::{Message, Text};
/// let m = Message::text("hello");
/// assert_eq!(m.as_text(), Some("hello"));
/// assert_eq!(m.as_bytes(), b"hello");
/// let b = Message::binary(vec![1u8, 2, 3]);
/// assert!(b.is_binary());
/// let Message::Text(t) = m else { unreachable!() };
/// assert_eq!(t, "hello");
/// let copy: Text = t.clone(); // a reference count, no copy of the bytes
/// assert_eq!(copy.as_str(), "hello");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(Text),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Text>) -> Message {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Message {
        Message::Binary(data.into())
    }

    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(t) => Some(t.as_str()),
            Message::Binary(_) => None,
        }
    }

    /// `true` for a text message.
    pub fn is_text(&self) -> bool {
        matches!(self, Message::Text(_))
    }

    /// `true` for a binary message.
    pub fn is_binary(&self) -> bool {
        matches!(self, Message::Binary(_))
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// `true` if the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    /// The payload as [`Bytes`] (no copy; a text message's UTF-8 bytes).
    pub fn into_bytes(self) -> Bytes {
        match self {
            Message::Text(t) => t.into_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// Into the transport's message (no copy).
    pub(crate) fn into_tungstenite(self) -> tungstenite::Message {
        match self {
            Message::Text(t) => tungstenite::Message::Text(t.into()),
            Message::Binary(b) => tungstenite::Message::Binary(b),
        }
    }
}

impl From<Text> for Message {
    fn from(t: Text) -> Message {
        Message::Text(t)
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Message {
        Message::Binary(b)
    }
}

/// Valid UTF-8 over [`Bytes`]: a `str` that clones by reference count.
///
/// Built from a `String` (no copy), a `&'static str` (no copy) or checked
/// bytes ([`Text::from_utf8`], no copy); never re-checked afterwards. Reads as a `&str` through
/// [`as_str`](Text::as_str) or `Deref`.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text(Bytes);

impl Text {
    /// A text of a `&'static str` (no copy, usable in `const`).
    pub const fn from_static(s: &'static str) -> Text {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// Check that `bytes` are UTF-8 and wrap them (no copy).
    pub fn from_utf8(bytes: impl Into<Bytes>) -> Result<Text, Utf8Error> {
        let bytes = bytes.into();
        std::str::from_utf8(&bytes)?;
        Ok(Text(bytes))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor of `Text` takes a `str`, a `String`, a
        // `tungstenite::Utf8Bytes` (all valid UTF-8) or checks the bytes
        // (`from_utf8`); the field is private and `Bytes` is immutable.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `true` if empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The underlying bytes (no copy).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Bytes::from(s))
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Text {
        Text::from_static(s)
    }
}

impl From<Text> for Bytes {
    fn from(t: Text) -> Bytes {
        t.0
    }
}

impl TryFrom<Bytes> for Text {
    type Error = Utf8Error;
    fn try_from(b: Bytes) -> Result<Text, Utf8Error> {
        Text::from_utf8(b)
    }
}

impl TryFrom<Vec<u8>> for Text {
    type Error = Utf8Error;
    fn try_from(v: Vec<u8>) -> Result<Text, Utf8Error> {
        Text::from_utf8(v)
    }
}

// The transport's text type is valid UTF-8 over the same `Bytes`: moving
// between the two is a move of the buffer, never a copy.
impl From<tungstenite::Utf8Bytes> for Text {
    fn from(t: tungstenite::Utf8Bytes) -> Text {
        Text(Bytes::from(t))
    }
}

impl From<Text> for tungstenite::Utf8Bytes {
    fn from(t: Text) -> tungstenite::Utf8Bytes {
        // SAFETY: `Text` holds valid UTF-8 (see `Text::as_str`).
        unsafe { tungstenite::Utf8Bytes::from_bytes_unchecked(t.0) }
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Shows the length only: a message body may carry secrets (an order, a
/// token) and `Debug` output ends up in logs. Use [`Text::as_str`] to see it.
impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Text({} bytes)", self.len())
    }
}

/// Shows the kind and length only (see [`Text`]'s `Debug`).
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Text(t) => write!(f, "Text({} bytes)", t.len()),
            Message::Binary(b) => write!(f, "Binary({} bytes)", b.len()),
        }
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_checked_and_shares_its_buffer() {
        let b = Bytes::from(String::from("héllo"));
        let t = Text::from_utf8(b.clone()).unwrap();
        assert_eq!(t.as_bytes().as_ptr(), b.as_ptr(), "no copy");
        assert_eq!(t.as_str(), "héllo");
        assert_eq!(t.to_string(), "héllo");
        assert_eq!(format!("{t:?}"), "Text(6 bytes)", "no body in Debug");
        assert!(Text::from_utf8(vec![0xff, b'a']).is_err());
        assert!(Text::try_from(vec![0xc3]).is_err());
        assert_eq!(Text::from("x"), "x");
        assert_eq!(Text::from(String::from("y")), *"y");
        const S: Text = Text::from_static("const");
        assert_eq!(S.len(), 5);
    }

    #[test]
    fn tungstenite_conversions_copy_nothing() {
        let u = tungstenite::Utf8Bytes::from(String::from("abc"));
        let ptr = u.as_str().as_ptr();
        let t = Text::from(u);
        assert_eq!(t.as_bytes().as_ptr(), ptr);
        let back = tungstenite::Utf8Bytes::from(t);
        assert_eq!(back.as_str().as_ptr(), ptr);
        assert_eq!(back.as_str(), "abc");

        let m = Message::binary(vec![1u8, 2]);
        let ptr = m.as_bytes().as_ptr();
        let tungstenite::Message::Binary(b) = m.into_tungstenite() else {
            panic!("binary expected")
        };
        assert_eq!(b.as_ptr(), ptr);
    }
}
