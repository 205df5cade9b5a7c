//! The simulated network: one [`Link`] per socket.
//!
//! A link is a TCP connection as the application sees it: bytes arrive in
//! order or not at all (no reordering, no loss of single messages), after a
//! per-message latency. Faults are decided when the socket is created, from
//! the seeded [`Rng`]:
//!
//! - at connect time ([`ConnectOutcome`]): refused, black-holed (no answer:
//!   the connect timeout must fire), a server that crashes during the
//!   handshake, an upgrade answered 503 or 401, a handshake slower than the
//!   connect timeout, or success;
//! - once open ([`Fault`]): a stall (half-open: nothing flows either way,
//!   forever or for a while, and no close), a reset, a server close (normal,
//!   going away, abnormal), a server crash (EOF without a close frame), a
//!   server that stops answering heartbeats, an oversized message.

extern crate std;

use std::collections::VecDeque;
use std::time::Duration;

use crate::rng::Rng;
use crate::time::Instant;

use super::Faults;

/// What happens to a connection attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectOutcome {
    /// The handshake completes after this long.
    Open(Duration),
    /// TCP connection refused.
    Refuse,
    /// No answer at all.
    Blackhole,
    /// The server accepts TCP and dies during the handshake; `true` = RST
    /// (an error), `false` = EOF (a close without a frame).
    HandshakeCrash(bool),
    /// The upgrade is answered with this HTTP status.
    Upgrade(u16),
}

/// The one fault an open socket may suffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Half-open from `at` until `until` (`Instant::NEVER`: for good).
    Stall { at: Instant, until: Instant },
    /// The connection is reset at `at`.
    Reset { at: Instant },
    /// The server closes with `code` at `at`.
    Close { at: Instant, code: u16 },
    /// The server process dies at `at`: EOF without a close frame.
    Crash { at: Instant },
    /// From `at` the server stops answering pings and sending heartbeats.
    Silence { at: Instant },
    /// The server sends a message larger than the client's limit at `at`.
    Oversized { at: Instant },
}

impl Fault {
    pub(crate) fn at(&self) -> Instant {
        match *self {
            Fault::Stall { at, .. }
            | Fault::Reset { at }
            | Fault::Close { at, .. }
            | Fault::Crash { at }
            | Fault::Silence { at }
            | Fault::Oversized { at } => at,
        }
    }
}

/// Pick `true` with probability `permille / 1000`.
pub(crate) fn chance(rng: &mut Rng, permille: u16) -> bool {
    rng.below(1000) < u64::from(permille)
}

/// A uniformly drawn duration in `lo..=hi`.
pub(crate) fn between(rng: &mut Rng, lo: Duration, hi: Duration) -> Duration {
    Duration::from_nanos(rng.in_range(lo.as_nanos() as u64, hi.as_nanos() as u64))
}

/// Decide a connection attempt. `latency` is the one-way latency,
/// `connect_timeout` the client's, `outage` a server outage at this time
/// (`Some(true)`: black-holed, `Some(false)`: refused).
pub(crate) fn connect_outcome(
    rng: &mut Rng,
    f: &Faults,
    latency: Duration,
    connect_timeout: Duration,
    outage: Option<bool>,
) -> ConnectOutcome {
    match outage {
        Some(true) => return ConnectOutcome::Blackhole,
        Some(false) => return ConnectOutcome::Refuse,
        None => {}
    }
    let mut roll = rng.below(1000) as u16;
    let mut pick = |p: u16| {
        let hit = roll < p;
        roll = roll.saturating_sub(p);
        hit
    };
    if pick(f.refuse) {
        ConnectOutcome::Refuse
    } else if pick(f.blackhole) {
        ConnectOutcome::Blackhole
    } else if pick(f.handshake_crash) {
        ConnectOutcome::HandshakeCrash(rng.below(2) == 0)
    } else if pick(f.upgrade_unavailable) {
        ConnectOutcome::Upgrade(503)
    } else if pick(f.upgrade_rejected) {
        ConnectOutcome::Upgrade(401)
    } else if pick(f.slow_handshake) {
        ConnectOutcome::Open(between(
            rng,
            connect_timeout / 2,
            connect_timeout + connect_timeout / 2,
        ))
    } else {
        ConnectOutcome::Open(latency * 2 + between(rng, Duration::ZERO, latency))
    }
}

/// Decide the fault of a socket that opened at `now`.
pub(crate) fn draw_fault(rng: &mut Rng, f: &Faults, now: Instant) -> Option<Fault> {
    if !chance(rng, f.socket_fault) {
        return None;
    }
    let at = now + between(rng, Duration::ZERO, f.fault_within);
    Some(match rng.below(100) {
        0..=24 => Fault::Stall {
            at,
            until: Instant::NEVER,
        },
        25..=34 => Fault::Stall {
            at,
            until: at + between(rng, Duration::from_millis(100), Duration::from_secs(20)),
        },
        35..=49 => Fault::Reset { at },
        50..=59 => Fault::Close { at, code: 1000 },
        60..=67 => Fault::Close { at, code: 1001 },
        68..=75 => Fault::Close {
            at,
            code: [1011, 1012, 1013, 4000][rng.below(4) as usize],
        },
        76..=85 => Fault::Crash { at },
        86..=97 => Fault::Silence { at },
        _ if f.fatal => Fault::Oversized { at },
        _ => Fault::Crash { at },
    })
}

/// Which way a message travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    ToServer,
    ToClient,
}

/// One socket's transport: latency, in-order delivery, an optional stall.
#[derive(Debug)]
pub(crate) struct Link {
    latency: Duration,
    jitter: Duration,
    stall: Option<(Instant, Instant)>,
    last_to_server: Instant,
    last_to_client: Instant,
    /// Client → server bytes not yet delivered: (delivery time, length).
    unsent: VecDeque<(Instant, usize)>,
}

impl Link {
    pub(crate) fn new(latency: Duration, jitter: Duration) -> Self {
        Link {
            latency,
            jitter,
            stall: None,
            last_to_server: Instant::ZERO,
            last_to_client: Instant::ZERO,
            unsent: VecDeque::new(),
        }
    }

    /// From `at` until `until` nothing flows (half-open).
    pub(crate) fn stall(&mut self, at: Instant, until: Instant) {
        self.stall = Some((at, until));
    }

    /// When a message of `len` bytes sent now arrives; `None`: never.
    /// Never earlier than the previous message in the same direction.
    pub(crate) fn delivery(
        &mut self,
        rng: &mut Rng,
        now: Instant,
        dir: Dir,
        len: usize,
    ) -> Option<Instant> {
        let mut at = now + self.latency + between(rng, Duration::ZERO, self.jitter);
        let last = match dir {
            Dir::ToServer => &mut self.last_to_server,
            Dir::ToClient => &mut self.last_to_client,
        };
        at = at.max(*last);
        if let Some((from, until)) = self.stall {
            if at >= from && at < until {
                at = until;
            }
        }
        *last = at;
        if dir == Dir::ToServer {
            self.unsent.push_back((at, len));
        }
        (at != Instant::NEVER).then_some(at)
    }

    /// Bytes the client wrote that have not reached the server yet.
    pub(crate) fn pending_bytes(&mut self, now: Instant) -> usize {
        while self.unsent.front().is_some_and(|&(at, _)| at <= now) {
            self.unsent.pop_front();
        }
        self.unsent.iter().map(|&(_, n)| n).sum()
    }
}
