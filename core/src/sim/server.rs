//! The simulated server behind each socket.
//!
//! It speaks just enough of a Deribit-like JSON-RPC API to exercise every
//! path of the core: it answers WebSocket pings and the custom text ping
//! (`"ping"` → `"pong"`), honours `public/set_heartbeat` by sending
//! `heartbeat` and `test_request` notifications (and remembers whether each
//! `test_request` got its `public/test`), answers or ignores `public/auth`,
//! `public/subscribe` and `public/get_time`, streams a feed on subscribed
//! channels, echoes a close, and carries out the socket's [`Fault`].
//! It also checks what it receives: subscriptions must arrive as an
//! in-order prefix of the tracked channels, each exactly once per socket.

extern crate std;

use std::format;
use std::string::String;
use std::time::Duration;
use std::vec::Vec;

use crate::json;
use crate::rng::Rng;

use super::network::{between, chance, Fault};
use super::Faults;

/// A message on the wire, in either direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Wire {
    /// A data message (text).
    Text(Vec<u8>),
    /// A ping control frame.
    Ping(Vec<u8>),
    /// A pong control frame.
    Pong(Vec<u8>),
    /// A close frame.
    Close(u16),
    /// EOF without a close frame (the server process died).
    Eof,
    /// TCP reset.
    Reset,
}

impl Wire {
    pub(crate) fn len(&self) -> usize {
        match self {
            Wire::Text(b) | Wire::Ping(b) | Wire::Pong(b) => b.len() + 2,
            Wire::Close(_) => 4,
            Wire::Eof | Wire::Reset => 0,
        }
    }
}

/// A timer the server set for itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Send the next Deribit heartbeat.
    Heartbeat,
    /// Send the next feed notification.
    Feed,
    /// Carry out the socket's fault.
    Fault(Fault),
}

/// What the server wants done.
#[derive(Debug)]
pub(crate) enum Out {
    /// Send to the client after `after`.
    Send(Duration, Wire),
    /// Wake the server after `after`.
    Timer(Duration, Timer),
    /// The user data message with this sequence number arrived.
    Data(u64),
    /// A check failed.
    Violation(String),
}

/// Per-socket server state.
#[derive(Debug)]
pub(crate) struct Server {
    /// Deribit heartbeat interval, once `set_heartbeat` arrived.
    heartbeat: Option<Duration>,
    /// `test_request`s sent and `public/test` answers received.
    pub(crate) tests_sent: u32,
    pub(crate) tests_answered: u32,
    /// Stopped answering pings and sending heartbeats.
    silent: bool,
    /// Closed or crashed: ignores everything.
    pub(crate) closed: bool,
    /// Channel indices received in subscribe requests, in order.
    restored: usize,
    feeding: bool,
    feed_every: Duration,
    feed_seq: u64,
    max_message_size: usize,
}

fn response(id: u64) -> Wire {
    Wire::Text(format!(r#"{{"jsonrpc":"2.0","id":{id},"result":"ok"}}"#).into_bytes())
}

/// `"interval":N` in a set_heartbeat request.
fn interval_of(data: &str) -> Option<u64> {
    let rest = &data[data.find(r#""interval":"#)? + 11..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// The channel names of a subscribe request rendered by the driver.
pub(crate) fn channels_of(data: &str) -> Vec<&str> {
    let Some(start) = data.find(r#""channels":["#) else {
        return Vec::new();
    };
    let rest = &data[start + 12..];
    let Some(end) = rest.find(']') else {
        return Vec::new();
    };
    rest[..end]
        .split(',')
        .map(|c| c.trim_matches('"'))
        .filter(|c| !c.is_empty())
        .collect()
}

impl Server {
    pub(crate) fn new(max_message_size: usize) -> Self {
        Server {
            heartbeat: None,
            tests_sent: 0,
            tests_answered: 0,
            silent: false,
            closed: false,
            restored: 0,
            feeding: false,
            feed_every: Duration::ZERO,
            feed_seq: 0,
            max_message_size,
        }
    }

    /// A message from the client arrived.
    pub(crate) fn on_wire(
        &mut self,
        rng: &mut Rng,
        f: &Faults,
        channels: &[String],
        wire: Wire,
        out: &mut Vec<Out>,
    ) {
        if self.closed {
            return;
        }
        match wire {
            Wire::Ping(p) => {
                if !self.silent {
                    out.push(Out::Send(Duration::ZERO, Wire::Pong(p)));
                }
            }
            Wire::Close(code) => {
                self.closed = true;
                out.push(Out::Send(Duration::ZERO, Wire::Close(code)));
            }
            Wire::Text(data) => self.on_text(rng, f, channels, &data, out),
            Wire::Pong(_) | Wire::Eof | Wire::Reset => {}
        }
    }

    fn on_text(
        &mut self,
        rng: &mut Rng,
        f: &Faults,
        channels: &[String],
        data: &[u8],
        out: &mut Vec<Out>,
    ) {
        if data == b"ping" {
            if !self.silent {
                out.push(Out::Send(Duration::ZERO, Wire::Text(b"pong".to_vec())));
            }
            return;
        }
        let text = core::str::from_utf8(data).unwrap_or("");
        let Ok(view) = json::scan(data) else {
            out.push(Out::Violation(format!("server got invalid JSON: {text}")));
            return;
        };
        let id = view.id.unwrap_or(0);
        let quick = between(rng, Duration::ZERO, Duration::from_millis(50));
        match view.method {
            Some("public/set_heartbeat") => {
                let secs = interval_of(text).unwrap_or(10);
                let every = Duration::from_secs(secs);
                out.push(Out::Send(Duration::ZERO, response(id)));
                if self.heartbeat.replace(every).is_none() {
                    out.push(Out::Timer(every, Timer::Heartbeat));
                }
            }
            Some("public/test") => self.tests_answered += 1,
            Some("public/auth") => {
                if chance(rng, f.ignore_request) {
                } else if f.fatal && chance(rng, f.auth_reject) {
                    out.push(Out::Send(
                        quick,
                        Wire::Text(
                            format!(
                                r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":13004,"message":"invalid_credentials"}}}}"#
                            )
                            .into_bytes(),
                        ),
                    ));
                } else {
                    out.push(Out::Send(quick, response(id)));
                }
            }
            Some("public/subscribe") => {
                for name in channels_of(text) {
                    let want = channels.get(self.restored).map(String::as_str);
                    if want != Some(name) {
                        out.push(Out::Violation(format!(
                            "subscription out of order or repeated on one socket: got {name}, expected {want:?}"
                        )));
                    }
                    self.restored += 1;
                }
                if !chance(rng, f.ignore_subscribe) {
                    out.push(Out::Send(quick, response(id)));
                }
                if !self.feeding && f.feed_every > Duration::ZERO {
                    self.feeding = true;
                    self.feed_every = f.feed_every;
                    out.push(Out::Timer(f.feed_every, Timer::Feed));
                }
            }
            Some("public/get_time") => {
                if !chance(rng, f.ignore_request) {
                    let after = if chance(rng, f.slow_answer) {
                        between(rng, Duration::from_secs(1), Duration::from_secs(40))
                    } else {
                        quick
                    };
                    out.push(Out::Send(after, response(id)));
                }
            }
            _ => match text
                .strip_prefix(r#"{"seq":"#)
                .and_then(|r| r.split(',').next())
                .and_then(|n| n.parse().ok())
            {
                Some(seq) => out.push(Out::Data(seq)),
                None => out.push(Out::Violation(format!("server got unknown message {text}"))),
            },
        }
    }

    /// A server timer fired.
    pub(crate) fn on_timer(&mut self, rng: &mut Rng, timer: Timer, out: &mut Vec<Out>) {
        if self.closed {
            return;
        }
        match timer {
            Timer::Heartbeat => {
                let Some(every) = self.heartbeat else { return };
                if self.silent {
                    return;
                }
                let kind = if rng.below(2) == 0 {
                    self.tests_sent += 1;
                    "test_request"
                } else {
                    "heartbeat"
                };
                out.push(Out::Send(
                    Duration::ZERO,
                    Wire::Text(
                        format!(
                            r#"{{"jsonrpc":"2.0","method":"heartbeat","params":{{"type":"{kind}"}}}}"#
                        )
                        .into_bytes(),
                    ),
                ));
                out.push(Out::Timer(every, Timer::Heartbeat));
            }
            Timer::Feed => {
                self.feed_seq += 1;
                out.push(Out::Send(
                    Duration::ZERO,
                    Wire::Text(
                        format!(
                            r#"{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":"feed","data":{}}}}}"#,
                            self.feed_seq
                        )
                        .into_bytes(),
                    ),
                ));
                let every = between(rng, self.feed_every / 2, self.feed_every * 3 / 2);
                out.push(Out::Timer(every, Timer::Feed));
            }
            Timer::Fault(fault) => match fault {
                Fault::Stall { .. } => {}
                Fault::Silence { .. } => self.silent = true,
                Fault::Reset { .. } => {
                    self.closed = true;
                    out.push(Out::Send(Duration::ZERO, Wire::Reset));
                }
                Fault::Close { code, .. } => {
                    self.closed = true;
                    out.push(Out::Send(Duration::ZERO, Wire::Close(code)));
                }
                Fault::Crash { .. } => {
                    self.closed = true;
                    out.push(Out::Send(Duration::ZERO, Wire::Eof));
                }
                Fault::Oversized { .. } => {
                    out.push(Out::Send(
                        Duration::ZERO,
                        Wire::Text(std::vec![b'x'; self.max_message_size + 1]),
                    ));
                }
            },
        }
    }
}
