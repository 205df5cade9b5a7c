//! Drives one `client::Client<Deribit>` (connection + session + protocol,
//! exactly what drivers run) with an arbitrary sequence of inputs
//! (open / message / pong / ping / error / closed of current and stale
//! epochs, sends, close, timeouts, restarts, time jumps) and checks the
//! invariants a driver relies on:
//!
//! - nothing panics;
//! - after `Exited` (and before a `restart`) no `Connect` comes out, and a
//!   terminated connection emits no actions at all;
//! - every action names the socket of the latest `Connect` (the current
//!   epoch), `Connect` epochs strictly grow,
//!   and after `Close`/`Abort` of an epoch nothing more is sent on it;
//! - input tagged with a stale epoch produces no action and no event;
//! - after `handle_timeout(now)`, `poll_timeout()` is not in the past;
//! - `handle_send` succeeds only while open; the state agrees with health;
//! - every session transmit belongs to the open socket and is valid JSON;
//! - the session's requests are bounded and all fail on disconnect.
#![no_main]

use core::time::Duration;
use libfuzzer_sys::fuzz_target;
use zenws_core::client::{Client, ClientEvent};
use zenws_core::error::{Error, SendError};
use zenws_core::exchange::deribit::Deribit;
use zenws_core::frame::{Frame, FrameKind};
use zenws_core::heartbeat::{HeartbeatConfig, Strategy};
use zenws_core::ratelimit::RateLimit;
use zenws_core::retry::{Jitter, RetryCount, RetryPolicy};
use zenws_core::session::{SessionConfig, SessionEvent};
use zenws_core::{Action, ConnectionConfig, Delivery, Event, HealthStatus, Instant, State};

/// A cursor over the fuzz input; reads past the end give zeros.
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) << 8 | u16::from(self.u8())
    }
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    fn slice(&mut self, max: usize) -> &[u8] {
        let n = usize::from(self.u8()).min(max);
        let start = self.pos.min(self.data.len());
        let end = (start + n).min(self.data.len());
        self.pos = end;
        &self.data[start..end]
    }
}

const MESSAGES: &[&[u8]] = &[
    br#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}"#,
    br#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#,
    br#"{"jsonrpc":"2.0","id":1,"result":"ok"}"#,
    br#"{"jsonrpc":"2.0","id":2,"error":{"code":13004}}"#,
    br#"{"jsonrpc":"2.0","id":9000000000000,"result":"ok"}"#,
    br#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"a","data":1}}"#,
    // Answers to the session's own requests (its ids start at 9.5e12).
    br#"{"jsonrpc":"2.0","id":9500000000000,"result":{"access_token":"a","expires_in":1,"refresh_token":"r"}}"#,
    br#"{"jsonrpc":"2.0","id":9500000000001,"result":["x.1.100ms","user.a"]}"#,
    br#"{"jsonrpc":"2.0","id":9500000000001,"result":[]}"#,
    br#"{"jsonrpc":"2.0","id":9500000000002,"result":"ok"}"#,
    br#"{"jsonrpc":"2.0","id":9500000000000,"error":{"code":13028,"message":"temporarily_unavailable"}}"#,
    br#"{"jsonrpc":"2.0","id":9500000000003,"error":{"code":13004,"message":"invalid_credentials"}}"#,
    br#"{"jsonrpc":"2.0","id":9500000000002,"error":{"code":13009,"message":"unauthorized"}}"#,
    br#"{"jsonrpc":"2.0","id":3,"error":{"code":10028,"message":"too_many_requests"}}"#,
    br#"{"jsonrpc":"2.0","id":9000000000000,"error":{"code":10028}}"#,
    br#"{"jsonrpc":"2.0","id":9000000000001,"error":{"code":11050}}"#,
    b"pong",
    b"hello",
    b"",
];

const ERRORS: &[Error] = &[
    Error::ConnectionRefused,
    Error::ConnectionReset,
    Error::ConnectTimeout,
    Error::Dns,
    Error::Io,
    Error::AbnormalClose { code: 1011 },
    Error::UpgradeUnavailable { status: 503 },
    Error::TlsCertificate,
    Error::UpgradeRejected { status: 401 },
    Error::Protocol,
    Error::MessageTooLarge,
];

fn config(b: &mut Bytes) -> ConnectionConfig {
    let ms = |n: u64| Duration::from_millis(n);
    let interval = ms(1 + u64::from(b.u8()) * 10);
    let timeout = ms(u64::from(b.u8()) * 10);
    let failure_threshold = u32::from(b.u8() % 4);
    let strategy = match b.u8() % 4 {
        0 => Strategy::None,
        1 => Strategy::Ping { interval, timeout },
        2 => Strategy::Application {
            dialect: &zenws_core::exchange::deribit::DIALECT,
            interval_secs: u32::from(b.u8() % 20),
            grace: timeout,
        },
        _ => Strategy::Custom {
            interval,
            timeout,
            payload: b"ping",
            kind: match b.u8() % 3 {
                0 => FrameKind::Text,
                1 => FrameKind::Binary,
                _ => FrameKind::Ping,
            },
            is_reply: |m| m == b"pong",
        },
    };
    let flags = b.u8();
    ConnectionConfig::default()
        .with_connect_timeout(ms(u64::from(b.u8()) * 20))
        .with_close_timeout(ms(u64::from(b.u8()) * 20))
        .with_retry(
            RetryPolicy::default()
                .with_retry_count(match b.u8() % 5 {
                    4 => RetryCount::Infinite,
                    n => RetryCount::Limited(u32::from(n)),
                })
                .with_retry_delay(ms(u64::from(b.u8()) * 10))
                .with_multiplier(u32::from(b.u8() % 4))
                .with_max_backoff(ms(u64::from(b.u16())))
                .with_jitter(match b.u8() % 4 {
                    0 => Jitter::None,
                    1 => Jitter::Full,
                    2 => Jitter::Equal,
                    _ => Jitter::Proportional { permille: 200 },
                })
                .with_reset_after(ms(u64::from(b.u16()))),
        )
        .with_heartbeat(
            HeartbeatConfig::default()
                .with_strategy(strategy)
                .with_failure_threshold(failure_threshold),
        )
        .with_idle_timeout((flags & 1 != 0).then(|| ms(u64::from(b.u16()))))
        .with_max_message_size(usize::from(b.u8()))
        .with_max_pending_bytes(usize::from(b.u16()))
        .with_rate_limit((flags & 2 != 0).then(|| RateLimit::flat(u32::from(b.u8()), 3)))
        .with_seed(u64::from(b.u16()))
}

struct Harness {
    client: Client<Deribit, 4, 16, 4>,
    now: Instant,
    exited: bool,
    last_connect: u32,
    /// Epoch whose socket got `Close`/`Abort`: nothing more may be sent on it.
    shut: Option<u32>,
    last_token: u64,
}

impl Harness {
    /// Drain and check everything the last input produced; returns how many
    /// actions and events came out.
    fn drain(&mut self) -> usize {
        let mut n = 0;
        let terminated = self.client.is_terminated();
        while let Some(a) = self.client.poll_action() {
            n += 1;
            match a {
                Action::Connect { epoch } => {
                    assert!(!self.exited, "Connect after Exited");
                    assert!(epoch > self.last_connect, "epochs must grow");
                    self.last_connect = epoch;
                    self.shut = None;
                }
                Action::Send { epoch, frame } => {
                    assert_ne!(self.shut, Some(epoch), "send after close/abort");
                    if let Frame::Ping { token } = frame {
                        self.last_token = token;
                    }
                    let e = frame.encode();
                    assert!(!e.bytes.is_empty() || matches!(frame, Frame::Custom { .. }));
                }
                Action::Close { epoch, .. } | Action::Abort { epoch, .. } => {
                    self.shut = Some(epoch);
                }
                _ => panic!("an action this harness does not know: {a:?}"),
            }
            // In order, every action names the socket of the latest Connect
            // (a restart emits `Abort` of the old socket, then `Connect`).
            let epoch = match a {
                Action::Connect { epoch }
                | Action::Send { epoch, .. }
                | Action::Close { epoch, .. }
                | Action::Abort { epoch, .. } => epoch,
                _ => unreachable!(),
            };
            assert_eq!(epoch, self.last_connect, "action for a non-current epoch");
        }
        if self.last_connect != 0 {
            assert_eq!(self.last_connect, self.client.epoch());
        }
        let mut out = String::new();
        while let Some(t) = self.client.poll_transmit(self.now, 0, &mut out) {
            n += 1;
            assert!(self.client.is_open(), "transmit while not open");
            assert_eq!(t.epoch, self.client.epoch(), "transmit for another socket");
            assert_ne!(self.shut, Some(t.epoch), "transmit after close/abort");
            assert!(
                zenws_core::json::scan(out.as_bytes()).is_ok(),
                "transmit is not JSON"
            );
            out.clear();
        }
        while let Some(e) = self.client.poll_event() {
            n += 1;
            match e {
                ClientEvent::Connection(Event::Disconnected { .. }) => {
                    let pending = self.client.session().map_or(0, |s| s.pending_requests());
                    assert_eq!(pending, 0);
                }
                ClientEvent::Connection(Event::Exited(_)) => {
                    assert!(terminated, "Exited but not terminated");
                    self.exited = true;
                }
                ClientEvent::Session(SessionEvent::AuthRejected { .. }) => {
                    // The client fails itself (a fatal Drop): nothing to do.
                }
                _ => {}
            }
        }
        let pending = self.client.session().map_or(0, |s| s.pending_requests());
        assert!(pending <= 4);
        // State and health agree.
        let h = self.client.health();
        match self.client.state() {
            State::Open => assert!(matches!(
                h.status,
                HealthStatus::Healthy | HealthStatus::Degraded
            )),
            State::Stopped => assert_eq!(h.status, HealthStatus::Stopped),
            State::Failed(r) => {
                assert_eq!(h.status, HealthStatus::Failed);
                assert!(r.is_abnormal());
            }
            _ => assert_eq!(h.status, HealthStatus::Disconnected),
        }
        n
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes { data, pos: 0 };
    let cfg = config(&mut b);
    let session_cfg = SessionConfig::default()
        .with_batch_size(usize::from(b.u8() % 3))
        .with_pacing(Duration::from_millis(u64::from(b.u8())))
        .with_request_timeout(Duration::from_millis(u64::from(b.u16())))
        .with_refresh_margin(Duration::from_millis(u64::from(b.u16())))
        .with_retry_delay(Duration::from_millis(u64::from(b.u8())));
    let flags = b.u8();
    let protocol = if flags & 1 == 1 {
        Deribit::with_credentials("id", "secret")
            .unwrap()
            .cancel_on_disconnect(flags & 2 == 2)
    } else {
        Deribit::public()
    };
    let mut h = Harness {
        client: Client::new(cfg, session_cfg, protocol),
        now: Instant::from_millis(u64::from(b.u16())),
        exited: false,
        last_connect: 0,
        shut: None,
        last_token: 0,
    };
    let _ = h.client.subscribe("x.1.100ms");
    let _ = h.client.subscribe("x.2.raw");
    let _ = h.client.subscribe("user.a");
    let mut steps = 0;
    while !b.done() && steps < 4_096 {
        steps += 1;
        let op = b.u8();
        // Epoch: the current one most of the time, else an older or newer one.
        let sel = b.u8();
        let cur = h.client.epoch();
        let epoch = match sel % 4 {
            0 => cur.wrapping_sub(u32::from(sel >> 2) % 3 + 1),
            1 => cur.wrapping_add(1),
            _ => cur,
        };
        let stale = epoch != cur;
        let was_terminated = h.client.is_terminated();
        let now = h.now;
        match op % 14 {
            0 => h.client.connect(now),
            1 => h.client.handle_open(now, epoch),
            2 | 3 => {
                let owned;
                let msg: &[u8] = match b.u8() {
                    i @ 0..=199 => MESSAGES[usize::from(i) % MESSAGES.len()],
                    _ => {
                        owned = b.slice(64).to_vec();
                        &owned
                    }
                };
                let d = h.client.handle_message(now, epoch, msg);
                if stale {
                    assert_eq!(d, Delivery::Stale);
                }
            }
            4 => {
                let payload = match b.u8() % 3 {
                    0 => h.last_token.to_be_bytes(),
                    1 => h.last_token.wrapping_sub(1).to_be_bytes(),
                    _ => [0; 8],
                };
                h.client.handle_pong(now, epoch, &payload);
            }
            5 => {
                let e = ERRORS[usize::from(b.u8()) % ERRORS.len()];
                h.client.handle_error(now, epoch, e);
            }
            6 => {
                let code = match b.u8() % 6 {
                    0 => None,
                    1 => Some(1000),
                    2 => Some(1001),
                    3 => Some(1011),
                    4 => Some(1002),
                    _ => Some(4000),
                };
                h.client.handle_closed(now, epoch, code);
            }
            7 => {
                let msg = b.slice(255).to_vec();
                let pending = usize::from(b.u16());
                let open = h.client.is_open();
                match h.client.handle_send(now, &msg, pending) {
                    Ok(()) => assert!(open, "send accepted while not open"),
                    Err(SendError::Stopped) => assert!(h.client.is_terminated()),
                    Err(SendError::NotConnected) => {
                        assert!(!open && !h.client.is_terminated())
                    }
                    Err(SendError::RateLimited { retry_after }) => {
                        assert!(retry_after > Duration::ZERO)
                    }
                    Err(_) => assert!(open),
                }
                if open && h.client.track_request(now, u64::from(b.u8() % 8)).is_ok() {
                    // tracked; resolved by a later response message
                }
            }
            8 => h.client.close(now),
            9 | 10 => {
                // Fire the due timer (or a spurious early one).
                if op % 14 == 9 {
                    if let Some(t) = h.client.poll_timeout() {
                        h.now = h.now.max(t);
                    }
                }
                let now = h.now;
                h.client.handle_timeout(now);
                if let Some(t) = h.client.connection().poll_timeout() {
                    assert!(t >= now, "poll_timeout {t:?} in the past of {now:?}");
                }
            }
            11 => {
                let at = h.now + Duration::from_millis(u64::from(b.u8()));
                h.client.restart(now, at);
                h.exited = false;
                // A restart may abort the old socket: that is not a stale-input effect.
                h.drain();
                continue;
            }
            12 => {
                let payload = b.slice(130).to_vec();
                let pong = h.client.handle_ping(now, epoch, &payload);
                assert!(!pong || (!stale && payload.len() <= 125));
            }
            _ => {
                h.now = h.now + Duration::from_millis(u64::from(b.u16()));
                if b.u8() == 0xff {
                    h.now = h.now + Duration::from_secs(3_600 * 24 * 365);
                }
            }
        }
        let out = h.drain();
        let is_input = matches!(op % 14, 1..=6 | 12);
        if is_input && stale {
            assert_eq!(out, 0, "stale epoch {epoch} (current {cur}) acted");
        }
        if was_terminated && !matches!(op % 14, 11) {
            assert!(
                h.client.is_terminated(),
                "left a terminal state without restart"
            );
            assert_eq!(out, 0, "a terminated connection acted");
        }
    }
});
