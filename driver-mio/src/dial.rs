//! A slot's way from `Action::Connect` to a connecting socket: resolve the
//! host (inline or on the [`Resolver`]), then race the addresses as RFC 8305
//! (Happy Eyeballs v2) does until one establishes TCP.
//!
//! - Every DNS answer is matched to the request that asked for it (its
//!   [`LookupId`], host and port, and the connection epoch): an answer for
//!   a client that was stopped, or for an earlier attempt, reaches nobody.
//! - A new attempt or a stop cancels the lookup still out (no duplicates
//!   pile up in the resolver's queue on retries).
//! - Addresses are ordered as RFC 8305 §4 does (families interleaved, see
//!   [`interleave_families`]).
//! - They are raced as RFC 8305 §5 does: the first address is connected to;
//!   if it has not established TCP within [`CONNECTION_ATTEMPT_DELAY`]
//!   (250 ms), the next one is started *in parallel*, the earlier attempts
//!   kept, and so on, at most [`MAX_IN_FLIGHT`] attempts at a time. An
//!   attempt that fails before its TCP connection is established (refused,
//!   unreachable, no route for this family, reset) starts the next address
//!   at once. The first attempt to establish TCP wins: it becomes the
//!   slot's transport (TLS and the upgrade go on on it alone) and every
//!   other attempt in flight is dropped (deregistered and closed). So an
//!   address whose SYNs vanish costs 250 ms, not the whole connect timeout.
//! - All of it happens inside one core `Connect` action (one epoch) and its
//!   connect timeout: the core never sees the race. Only when every address
//!   failed does the last failure reach it; a failure that no other address
//!   would avoid (a bad request header, TLS setup) reaches it at once.
//! - Racing attempts share the slot's mio token: on readiness every attempt
//!   of the slot is driven (a connecting socket that is not ready yet just
//!   waits for its own event). The oldest attempt still in flight sits in
//!   `Slot::transport` (so `Close`/`Abort`/sends see a connecting transport
//!   as before), the others in the dial state. The race's timer is part of
//!   the slot's deadline ([`Slot::next_deadline`]).
//! - With [`MAX_IN_FLIGHT`] addresses that all hang, a further address
//!   starts only when one of them fails or the core's connect timeout ends
//!   the attempt.

use crate::resolve::{interleave_families, resolve_inline, Answer, LookupId, Resolver};
use crate::slot::{Ctx, Slot};
use crate::transport::{Transport, TransportEvent};
use mio::{Registry, Token};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use zenws_core::{Epoch, Error as Reason, Instant};

/// RFC 8305 §5's Connection Attempt Delay: how long an attempt may go
/// without establishing TCP before the next address is started beside it
/// (the RFC's recommended default).
pub(crate) const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// At most this many connection attempts of one slot in flight at a time.
pub(crate) const MAX_IN_FLIGHT: usize = 3;

/// A slot's connection attempt state (see the [module docs](self)).
#[derive(Debug, Default)]
pub(crate) struct Dial {
    /// The lookup this slot waits for, and the epoch it is for.
    lookup: Option<(Epoch, LookupId)>,
    /// Addresses not yet tried in the current attempt.
    rest: VecDeque<SocketAddr>,
    /// The epoch whose addresses are being raced (`None`: no race; the
    /// slot's transport, if any, has established TCP or is on its own).
    epoch: Option<Epoch>,
    /// Attempts in flight besides `Slot::transport` (the oldest), none of
    /// them with TCP established, in start order.
    racing: Vec<Transport>,
    /// When the next address starts in parallel (the race's timer).
    next_at: Option<Instant>,
    /// The latest address failure of this race (reported when none is left).
    failed: Option<Reason>,
}

impl Dial {
    /// The lookup still out, if any.
    pub(crate) fn lookup(&self) -> Option<LookupId> {
        self.lookup.map(|l| l.1)
    }

    /// The race's timer, if one runs.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.next_at
    }
}

impl Slot {
    /// `Action::Connect`: start attempt `epoch`.
    pub(crate) fn dial(&mut self, now: Instant, epoch: Epoch, ctx: &mut Ctx<'_>) {
        self.detail.clear();
        self.dial_cancel(ctx);
        if let Some(mut t) = self.transport.take() {
            t.abort(ctx.registry);
        }
        let (host, port) = (self.target.host.as_str(), self.target.port);
        let inline = match ctx.resolver.as_ref() {
            Some(r) => r.lookup_now(host, port),
            None => resolve_inline(host, port),
        };
        match inline {
            Some(addrs) if !addrs.is_empty() => self.dial_addrs(now, epoch, addrs, ctx),
            Some(_) => self.dial_unresolved(now, epoch),
            None => {
                let waker = ctx.waker.clone();
                let id = ctx
                    .resolver
                    .get_or_insert_with(|| Resolver::new(waker))
                    .resolve(self.token, self.target.host.clone(), port);
                self.dial.lookup = Some((epoch, id));
            }
        }
    }

    /// Withdraw the lookup still out, if any, and end the race (a new
    /// attempt, a stop).
    pub(crate) fn dial_cancel(&mut self, ctx: &mut Ctx<'_>) {
        if let Some((_, id)) = self.dial.lookup.take() {
            if let Some(r) = ctx.resolver.as_mut() {
                r.cancel(id);
            }
        }
        self.dial_stop(ctx.registry);
    }

    /// End the race: drop the attempts racing `Slot::transport` (which is
    /// left alone) and the addresses not tried.
    pub(crate) fn dial_stop(&mut self, registry: &Registry) {
        for mut t in self.dial.racing.drain(..) {
            t.abort(registry);
        }
        self.dial.rest.clear();
        self.dial.epoch = None;
        self.dial.next_at = None;
        self.dial.failed = None;
    }

    /// Are the addresses of attempt `epoch` being raced?
    pub(crate) fn dialing(&self, epoch: Epoch) -> bool {
        self.dial.epoch == Some(epoch)
    }

    /// A DNS answer for this slot's token. Ignored unless it answers the
    /// lookup this slot is waiting for, for the current epoch.
    pub(crate) fn on_resolved(&mut self, now: Instant, answer: Answer, ctx: &mut Ctx<'_>) {
        let Some((epoch, id)) = self.dial.lookup else {
            log::debug!("{}: DNS answer {:?} nobody waits for", self.id, answer.id);
            return;
        };
        if answer.id != id
            || answer.host != self.target.host
            || answer.port != self.target.port
            || epoch != self.client.epoch()
        {
            log::debug!("{}: stale DNS answer {:?} ignored", self.id, answer.id);
            return;
        }
        self.dial.lookup = None;
        match answer.result {
            Ok(addrs) if !addrs.is_empty() => self.dial_addrs(now, epoch, addrs, ctx),
            _ => self.dial_unresolved(now, epoch),
        }
    }

    fn dial_unresolved(&mut self, now: Instant, epoch: Epoch) {
        self.detail = format!("could not resolve {}", self.target.host);
        self.client.handle_error(now, epoch, Reason::Dns);
    }

    fn dial_addrs(
        &mut self,
        now: Instant,
        epoch: Epoch,
        addrs: Vec<SocketAddr>,
        ctx: &mut Ctx<'_>,
    ) {
        self.dial_stop(ctx.registry);
        self.dial.rest = interleave_families(addrs).into();
        self.dial.epoch = Some(epoch);
        if self.dial_start(ctx) {
            self.dial_settle(now, epoch, ctx);
        } else {
            self.dial_fail(now, epoch, ctx);
        }
    }

    /// Attempts in flight (while racing).
    fn in_flight(&self) -> usize {
        usize::from(self.transport.is_some()) + self.dial.racing.len()
    }

    /// Start connecting to the next address that does not fail at once.
    /// `false`: a failure no other address would avoid (a bad request, TLS
    /// setup); the race is to end with it.
    fn dial_start(&mut self, ctx: &mut Ctx<'_>) -> bool {
        while let Some(addr) = self.dial.rest.pop_front() {
            let token = Token(self.token);
            match Transport::connect(ctx.registry, token, &self.target, addr, &self.tcfg) {
                Ok(t) => {
                    if self.transport.is_none() {
                        self.transport = Some(t);
                    } else {
                        log::debug!("{}: racing {addr} beside the earlier attempts", self.id);
                        self.dial.racing.push(t);
                    }
                    return true;
                }
                Err((e, detail)) => {
                    self.detail = detail;
                    self.dial.failed = Some(e);
                    if !address_specific(e) {
                        return false;
                    }
                    log::debug!("{}: {}; trying the next address", self.id, self.detail);
                }
            }
        }
        true
    }

    /// After attempts started or ended: arm the race's timer, or, with no
    /// attempt in flight and no address left, report the last failure.
    fn dial_settle(&mut self, now: Instant, epoch: Epoch, ctx: &mut Ctx<'_>) {
        let in_flight = self.in_flight();
        if in_flight == 0 && self.dial.rest.is_empty() {
            return self.dial_fail(now, epoch, ctx);
        }
        self.dial.next_at = (in_flight < MAX_IN_FLIGHT && !self.dial.rest.is_empty())
            .then(|| now + CONNECTION_ATTEMPT_DELAY);
    }

    /// The race is lost: every attempt ends, the last failure reaches the core.
    fn dial_fail(&mut self, now: Instant, epoch: Epoch, ctx: &mut Ctx<'_>) {
        let error = self.dial.failed.unwrap_or(Reason::Io);
        self.dial_stop(ctx.registry);
        if let Some(mut t) = self.transport.take() {
            t.abort(ctx.registry);
        }
        self.client.handle_error(now, epoch, error);
    }

    /// The slot's timer fired: if the race's timer is due, start the next
    /// address beside the attempts in flight.
    pub(crate) fn dial_timeout(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        if self.dial.next_at.is_none_or(|at| at > now) {
            return;
        }
        self.dial.next_at = None;
        let epoch = self.client.epoch();
        if !self.dialing(epoch) || self.in_flight() >= MAX_IN_FLIGHT {
            return;
        }
        log::debug!(
            "{}: no TCP connection within {CONNECTION_ATTEMPT_DELAY:?}; starting the next address",
            self.id
        );
        if self.dial_start(ctx) {
            self.dial_settle(now, epoch, ctx);
        } else {
            self.dial_fail(now, epoch, ctx);
        }
    }

    /// Readiness on the slot's token while attempt `epoch` races its
    /// addresses: drive every attempt in flight. The first to establish TCP
    /// becomes the slot's transport (the others are dropped); one that
    /// failed before starts the next address.
    pub(crate) fn dial_ready(
        &mut self,
        now: Instant,
        epoch: Epoch,
        readable: bool,
        writable: bool,
        ctx: &mut Ctx<'_>,
    ) {
        let mut attempts = std::mem::take(&mut self.dial.racing);
        if let Some(t) = self.transport.take() {
            attempts.insert(0, t);
        }
        let mut failures = 0;
        let mut i = 0;
        while i < attempts.len() {
            let end = self.pump(&mut attempts[i], now, epoch, readable, writable, ctx);
            let won = attempts[i].tcp_established();
            match end {
                None if !won => {
                    i += 1;
                    continue;
                }
                Some(TransportEvent::Failed { error, detail })
                    if !won && address_specific(error) =>
                {
                    log::debug!("{}: {detail}; trying the next address", self.id);
                    attempts.remove(i).abort(ctx.registry);
                    self.detail = detail;
                    self.dial.failed = Some(error);
                    failures += 1;
                    continue;
                }
                end => {
                    // TCP is up (the winner), or a failure no other address
                    // would avoid: the race ends with this attempt.
                    let t = attempts.remove(i);
                    if won && !attempts.is_empty() {
                        log::debug!(
                            "{}: TCP connected; {} other attempts dropped",
                            self.id,
                            attempts.len()
                        );
                    }
                    for mut other in attempts {
                        other.abort(ctx.registry);
                    }
                    self.dial_stop(ctx.registry);
                    self.transport = Some(t);
                    self.on_end(now, epoch, end, ctx);
                    return;
                }
            }
        }
        let mut left = attempts.into_iter();
        self.transport = left.next();
        self.dial.racing.extend(left);
        for _ in 0..failures {
            if self.in_flight() >= MAX_IN_FLIGHT || self.dial.rest.is_empty() {
                break;
            }
            if !self.dial_start(ctx) {
                return self.dial_fail(now, epoch, ctx);
            }
        }
        if failures > 0 {
            self.dial_settle(now, epoch, ctx);
        }
    }
}

/// Failures that another address of the same host may not have.
fn address_specific(e: Reason) -> bool {
    matches!(
        e,
        Reason::ConnectionRefused
            | Reason::Unreachable
            | Reason::ConnectionReset
            | Reason::ConnectTimeout
            | Reason::Io
    )
}
