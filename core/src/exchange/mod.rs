//! Exchange protocols: everything one exchange's session does differently.
//!
//! The [`Client`](crate::client::Client) runs the same session for every
//! exchange — authenticate after each open, run the steps that follow
//! authentication, restore subscriptions in paced batches and confirm them
//! channel by channel, refresh the token before it expires, correlate
//! requests — and asks a [`Protocol`] for the parts that differ: how each
//! request is rendered, how its answer is read, and what an error code means.
//!
//! A protocol is plain configuration (`&self` everywhere): per-connection
//! state such as the current refresh token lives in the session, so one
//! protocol value can be shared by many clients.
//!
//! Adding an exchange is one file: implement [`Protocol`] (see
//! [`deribit`] and [`binance`] for two very different ones).
//!
//! ```
//! use core::fmt::{self, Write};
//! use zenws_core::exchange::{ErrorClass, Protocol, Request};
//!
//! /// `{"op":"subscribe","args":[...]}` with a numeric `id`; errors 429 are rate limits.
//! struct MyExchange;
//!
//! impl Protocol for MyExchange {
//!     fn render(&self, id: u64, req: &Request<'_>, out: &mut dyn Write) -> fmt::Result {
//!         let (op, channels) = match req {
//!             Request::Subscribe { channels, .. } => ("subscribe", *channels),
//!             Request::Unsubscribe { channels, .. } => ("unsubscribe", *channels),
//!             _ => return Err(fmt::Error), // no authentication on this exchange
//!         };
//!         write!(out, r#"{{"id":{id},"op":"{op}","args":["#)?;
//!         for (i, c) in channels.iter().enumerate() {
//!             write!(out, r#"{}"{c}""#, if i > 0 { "," } else { "" })?;
//!         }
//!         out.write_str("]}")
//!     }
//!     fn classify(&self, code: i64) -> ErrorClass {
//!         if code == 429 { ErrorClass::RateLimited } else { ErrorClass::Fatal }
//!     }
//! }
//!
//! let mut out = String::new();
//! MyExchange.render(7, &Request::Subscribe { channels: &["trades.BTC"], private: false }, &mut out).unwrap();
//! assert_eq!(out, r#"{"id":7,"op":"subscribe","args":["trades.BTC"]}"#);
//! ```

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod binance;
pub mod deribit;

use crate::json::{self, JsonRpcView};
use crate::ratelimit::RateLimit;
use core::fmt;
use core::time::Duration;

/// How a connection authenticates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Grant<'a> {
    /// With the configured credentials (client id and secret).
    Credentials,
    /// With the refresh token of an earlier authentication.
    Refresh(&'a str),
}

impl fmt::Debug for Grant<'_> {
    /// Never prints the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Grant<'_> {
    /// `client_credentials` or `refresh_token`, as Deribit names them.
    pub fn name(&self) -> &'static str {
        match self {
            Grant::Credentials => "client_credentials",
            Grant::Refresh(_) => "refresh_token",
        }
    }
}

/// A session request for a [`Protocol`] to render.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    /// Authenticate this connection.
    Authenticate(Grant<'a>),
    /// Step `n` (0-based, below [`Protocol::after_auth_steps`]) after a
    /// successful authentication, e.g. Deribit's `enable_cancel_on_disconnect`.
    AfterAuth(u8),
    /// Subscribe to `channels` (all public, or all private: never mixed).
    Subscribe {
        /// The channel names, in restoration order.
        channels: &'a [&'a str],
        /// Whether these are private channels ([`ChannelKind::Private`]).
        private: bool,
    },
    /// Unsubscribe from `channels`.
    Unsubscribe {
        /// The channel names.
        channels: &'a [&'a str],
        /// Whether these are private channels.
        private: bool,
    },
}

/// What a JSON-RPC error code means for the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// A passing condition (busy, maintenance): retry with backoff.
    Transient,
    /// The server's rate limit: wait for the credits to refill first.
    RateLimited,
    /// Retrying cannot help (bad credentials, bad request).
    Fatal,
}

/// Who may subscribe to a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    /// Anyone.
    Public,
    /// Public data that needs an authenticated connection (Deribit `.raw`):
    /// subscribed with public requests, but only once authenticated.
    NeedsAuth,
    /// Account data (Deribit `user.*`): private requests, authenticated.
    Private,
}

/// What an authentication answer says about the token.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthAnswer<'a> {
    /// How long the access token lives (`expires_in`).
    pub expires_in: Option<Duration>,
    /// The token to refresh with later, if the exchange issues one.
    pub refresh_token: Option<&'a str>,
}

impl fmt::Debug for AuthAnswer<'_> {
    /// Never prints the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthAnswer")
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token.map(|_| "<redacted>"))
            .finish()
    }
}

/// One exchange's session protocol. Only [`Protocol::render`] is required;
/// the defaults describe an exchange without authentication whose answers
/// are JSON-RPC-like (`id` + `result` or `error.code`).
pub trait Protocol {
    /// Render `request` with JSON-RPC id `id` into `out`. An `Err` means
    /// the protocol has no such request (the session skips it) or `out` is
    /// full.
    fn render(&self, id: u64, request: &Request<'_>, out: &mut dyn fmt::Write) -> fmt::Result;

    /// Whether this connection should authenticate after each open
    /// (credentials configured). Default: no.
    fn authenticates(&self) -> bool {
        false
    }

    /// How many [`Request::AfterAuth`] steps follow each authentication.
    fn after_auth_steps(&self) -> u8 {
        0
    }

    /// Read a successful authentication answer (`result` is the raw
    /// `result` value).
    fn auth_answer<'a>(&self, result: &'a [u8]) -> AuthAnswer<'a> {
        let _ = result;
        AuthAnswer::default()
    }

    /// Did the successful answer to a subscribe request grant `channel`?
    /// Default: every requested channel (e.g. `result: null`).
    fn granted(&self, answer: &JsonRpcView<'_>, channel: &str) -> bool {
        let _ = (answer, channel);
        true
    }

    /// What an error code means. Default: fatal.
    fn classify(&self, code: i64) -> ErrorClass {
        let _ = code;
        ErrorClass::Fatal
    }

    /// Who may subscribe to `channel`. Default: anyone.
    fn channel_kind(&self, channel: &str) -> ChannelKind {
        let _ = channel;
        ChannelKind::Public
    }

    /// The exchange's published rate limit, used when the connection has
    /// none configured (`ConnectionConfig::rate_limit: None`), so a server
    /// rate-limit answer can hold the client until the credits refill.
    /// Default: none.
    fn rate_limit(&self) -> Option<RateLimit> {
        None
    }
}

/// No exchange session: the client is a plain supervised WebSocket. Its
/// subscriptions (if any) cannot be rendered and are reported rejected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoProtocol;

impl Protocol for NoProtocol {
    fn render(&self, _: u64, _: &Request<'_>, _: &mut dyn fmt::Write) -> fmt::Result {
        Err(fmt::Error)
    }
}

/// Delegates every method to `**self`.
macro_rules! delegate {
    ($($ty:ty),*) => {$(
        impl<P: Protocol + ?Sized> Protocol for $ty {
            fn render(&self, id: u64, r: &Request<'_>, out: &mut dyn fmt::Write) -> fmt::Result {
                (**self).render(id, r, out)
            }
            fn authenticates(&self) -> bool {
                (**self).authenticates()
            }
            fn after_auth_steps(&self) -> u8 {
                (**self).after_auth_steps()
            }
            fn auth_answer<'a>(&self, result: &'a [u8]) -> AuthAnswer<'a> {
                (**self).auth_answer(result)
            }
            fn granted(&self, answer: &JsonRpcView<'_>, channel: &str) -> bool {
                (**self).granted(answer, channel)
            }
            fn classify(&self, code: i64) -> ErrorClass {
                (**self).classify(code)
            }
            fn channel_kind(&self, channel: &str) -> ChannelKind {
                (**self).channel_kind(channel)
            }
            fn rate_limit(&self) -> Option<RateLimit> {
                (**self).rate_limit()
            }
        }
    )*};
}

delegate!(&P);
#[cfg(feature = "alloc")]
delegate!(alloc::boxed::Box<P>, alloc::sync::Arc<P>);

/// An optional protocol: `None` behaves as [`NoProtocol`].
impl<P: Protocol> Protocol for Option<P> {
    fn render(&self, id: u64, r: &Request<'_>, out: &mut dyn fmt::Write) -> fmt::Result {
        match self {
            Some(p) => p.render(id, r, out),
            None => Err(fmt::Error),
        }
    }
    fn authenticates(&self) -> bool {
        self.as_ref().is_some_and(|p| p.authenticates())
    }
    fn after_auth_steps(&self) -> u8 {
        self.as_ref().map_or(0, |p| p.after_auth_steps())
    }
    fn auth_answer<'a>(&self, result: &'a [u8]) -> AuthAnswer<'a> {
        self.as_ref()
            .map(|p| p.auth_answer(result))
            .unwrap_or_default()
    }
    fn granted(&self, answer: &JsonRpcView<'_>, channel: &str) -> bool {
        self.as_ref().is_none_or(|p| p.granted(answer, channel))
    }
    fn classify(&self, code: i64) -> ErrorClass {
        self.as_ref()
            .map_or(ErrorClass::Fatal, |p| p.classify(code))
    }
    fn channel_kind(&self, channel: &str) -> ChannelKind {
        self.as_ref()
            .map_or(ChannelKind::Public, |p| p.channel_kind(channel))
    }
    fn rate_limit(&self) -> Option<RateLimit> {
        self.as_ref().and_then(|p| p.rate_limit())
    }
}

/// Whether a raw JSON `result` array lists `channel` (Deribit's subscribe
/// answer). Escaped names are compared raw, as the scanner returns them.
pub fn result_lists(answer: &JsonRpcView<'_>, channel: &str) -> bool {
    let mut found = false;
    if let Some(r) = answer.result {
        json::strings(r, |s| found |= s == channel);
    }
    found
}

/// Writes JSON string content with `"`, `\` and control characters escaped.
pub(crate) fn write_escaped(out: &mut dyn fmt::Write, s: &str) -> fmt::Result {
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

/// Writes `"a","b",…` (escaped) for a channel list.
pub(crate) fn write_list(out: &mut dyn fmt::Write, channels: &[&str]) -> fmt::Result {
    for (i, c) in channels.iter().enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        out.write_char('"')?;
        write_escaped(out, c)?;
        out.write_char('"')?;
    }
    Ok(())
}
