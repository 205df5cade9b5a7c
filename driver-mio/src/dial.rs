//! A slot's way from `Action::Connect` to a connecting socket: resolve the
//! host (inline or on the [`Resolver`]), then try the addresses one after
//! the other until one connects.
//!
//! - Every DNS answer is matched to the request that asked for it (its
//!   [`LookupId`], host and port, and the connection epoch): an answer for
//!   a client that was stopped, or for an earlier attempt, reaches nobody.
//! - A new attempt or a stop cancels the lookup still out (no duplicates
//!   pile up in the resolver's queue on retries).
//! - Addresses are ordered as RFC 8305 §4 does (families interleaved, see
//!   [`interleave_families`]) and tried in turn: a failure *before* the TCP
//!   connection is established (refused, unreachable, no route for this
//!   family) moves on to the next address within the same attempt; only
//!   the last address's failure reaches the core. Attempts are sequential
//!   (no 250 ms racing): the core's connect timeout bounds the whole attempt.

use crate::resolve::{interleave_families, resolve_inline, Answer, LookupId, Resolver};
use crate::slot::{Ctx, Slot};
use crate::transport::Transport;
use mio::Token;
use std::collections::VecDeque;
use std::net::SocketAddr;
use zenws_core::{Epoch, Error as Reason, Instant};

/// A slot's connection attempt state (see the [module docs](self)).
#[derive(Debug, Default)]
pub(crate) struct Dial {
    /// The lookup this slot waits for, and the epoch it is for.
    lookup: Option<(Epoch, LookupId)>,
    /// Addresses not yet tried in the current attempt, and its epoch.
    rest: VecDeque<SocketAddr>,
    epoch: Option<Epoch>,
}

impl Dial {
    /// The lookup still out, if any.
    pub(crate) fn lookup(&self) -> Option<LookupId> {
        self.lookup.map(|l| l.1)
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

    /// Withdraw the lookup still out, if any (a new attempt, a stop).
    pub(crate) fn dial_cancel(&mut self, ctx: &mut Ctx<'_>) {
        if let Some((_, id)) = self.dial.lookup.take() {
            if let Some(r) = ctx.resolver.as_mut() {
                r.cancel(id);
            }
        }
        self.dial.rest.clear();
        self.dial.epoch = None;
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
        self.dial.rest = interleave_families(addrs).into();
        self.dial.epoch = Some(epoch);
        self.dial_next(now, epoch, ctx);
    }

    /// Connect to the next address; when none is left, report the last failure.
    fn dial_next(&mut self, now: Instant, epoch: Epoch, ctx: &mut Ctx<'_>) {
        while let Some(addr) = self.dial.rest.pop_front() {
            let token = Token(self.token);
            match Transport::connect(ctx.registry, token, &self.target, addr, &self.tcfg) {
                Ok(t) => {
                    self.transport = Some(t);
                    return;
                }
                Err((e, detail)) => {
                    self.detail = detail;
                    // A bad configuration fails the same at every address.
                    if self.dial.rest.is_empty() || !address_specific(e) {
                        self.dial.rest.clear();
                        self.client.handle_error(now, epoch, e);
                        return;
                    }
                    log::debug!("{}: {}; trying the next address", self.id, self.detail);
                }
            }
        }
    }

    /// The transport of attempt `epoch` failed with `error`: if that was
    /// before its TCP connection was established and another address is
    /// left, try it and return `true` (the failure is handled). Call before
    /// dropping the transport.
    pub(crate) fn dial_failed(
        &mut self,
        now: Instant,
        epoch: Epoch,
        error: Reason,
        detail: &str,
        ctx: &mut Ctx<'_>,
    ) -> bool {
        let connecting = self
            .transport
            .as_ref()
            .is_some_and(|t| !t.tcp_established());
        if !connecting
            || self.dial.epoch != Some(epoch)
            || self.dial.rest.is_empty()
            || !address_specific(error)
        {
            return false;
        }
        log::debug!("{}: {detail}; trying the next address", self.id);
        if let Some(mut t) = self.transport.take() {
            t.abort(ctx.registry);
        }
        self.dial_next(now, epoch, ctx);
        true
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
