//! One client inside the loop: I/O plumbing around its per-client machine
//! ([`zenws_core::client::Client`]). The machine decides everything —
//! lifecycle, heartbeats, pongs, the session (authentication, token refresh,
//! subscriptions, requests) — and this file only carries out its actions,
//! writes its transmits, feeds the transport's events in (one inbound path)
//! and turns the machine's events into [`ClientEvent`]s.

use crate::config::ClientConfig;
use crate::dial::Dial;
use crate::event::ClientEvent;
use crate::id::ClientId;
use crate::message::Message;
use crate::resolve::Resolver;
use crate::supervisor::{Inbox, Owner};
use crate::transport::{EventSink, Transport, TransportConfig, TransportEvent};
use crate::url::Target;
use mio::Registry;
use std::sync::Arc;
use std::time::Duration;
use zenws_core::client::{Client, ClientEvent as CoreEvent};
use zenws_core::exchange::Protocol;
use zenws_core::frame::FrameKind;
use zenws_core::session::SessionEvent;
use zenws_core::{Action, Delivery, Epoch, Event, ExitReason, Instant};

/// The exchange protocol a driver client runs (`None`: a plain WebSocket).
pub(crate) type Proto = Option<Arc<dyn Protocol + Send + Sync>>;

/// The per-client machine the driver uses: 64 channels of ≤ 96 bytes, 64
/// requests in flight; the session is boxed and created only when used.
pub(crate) type DriverClient = Client<Proto, 64, 96, 64>;

/// A session message the transport refused (write queue full) is tried
/// again after this.
const TRANSMIT_RETRY: Duration = Duration::from_millis(20);

/// Shared loop state a slot needs while it runs.
pub(crate) struct Ctx<'a> {
    pub registry: &'a Registry,
    pub resolver: &'a mut Option<Resolver>,
    pub waker: &'a Arc<mio::Waker>,
    pub events: &'a mut Inbox,
    /// Scratch for rendering session messages (never logged: it may hold
    /// credentials).
    pub text: &'a mut String,
}

pub(crate) struct Slot {
    pub id: ClientId,
    pub token: usize,
    pub target: Target,
    pub config: Arc<ClientConfig>,
    pub tcfg: Arc<TransportConfig>,
    pub client: DriverClient,
    pub transport: Option<Transport>,
    /// The connection attempt: DNS lookup, addresses racing and left to try.
    pub dial: Dial,
    /// The deadline currently in the timer heap.
    pub deadline: Option<Instant>,
    /// Last transport failure text, for events.
    pub detail: String,
    /// The user asked for a stop: never restart.
    pub stopping: bool,
    /// This slot's account in the event queue (the inbound bound).
    pub owner: Owner,
    /// The incarnation ended while events were drained inside a read.
    exit: Option<ExitReason>,
}

/// Feeds what the transport decodes straight into the machine: the only
/// inbound path. Data messages go to the event queue in order with the
/// lifecycle events before them.
struct Sink<'a> {
    slot: Core<'a>,
    now: Instant,
    epoch: Epoch,
    events: &'a mut Inbox,
    /// The connection's end (closed or failed), handled after the read.
    end: Option<TransportEvent>,
}

/// The parts of a slot that turn the machine's events into client events,
/// borrowed apart from the transport.
struct Core<'a> {
    id: ClientId,
    owner: Owner,
    client: &'a mut DriverClient,
    detail: &'a mut String,
    exit: &'a mut Option<ExitReason>,
}

impl EventSink for Sink<'_> {
    fn ping(&mut self, payload: &[u8]) -> bool {
        self.slot.client.handle_ping(self.now, self.epoch, payload)
    }

    fn event(&mut self, ev: TransportEvent) {
        let (now, epoch) = (self.now, self.epoch);
        let client = &mut *self.slot.client;
        let message = match ev {
            TransportEvent::Text(t) => Message::Text(t.into()),
            TransportEvent::Binary(b) => Message::Binary(b),
            TransportEvent::Open => return client.handle_open(now, epoch),
            // Answered (or not) through `ping` above.
            TransportEvent::Ping(_) => return,
            TransportEvent::Pong(p) => return client.handle_pong(now, epoch, &p),
            ev @ (TransportEvent::Closed { .. } | TransportEvent::Failed { .. }) => {
                self.end = Some(ev);
                return;
            }
        };
        let delivery = client.handle_message(now, epoch, message.as_bytes());
        // Drained after every message, as the machine's call order says:
        // lifecycle (Opened) and session events come before the message, and
        // a read full of answers the machine consumes (session answers,
        // heartbeat replies) never piles up in its bounded queues.
        self.slot.emit(self.events);
        if delivery == Delivery::Deliver {
            let ev = ClientEvent::Message {
                id: self.slot.id,
                message,
            };
            self.events.push(self.slot.owner, ev);
        }
    }

    fn full(&self) -> bool {
        self.events.is_full(self.slot.owner)
    }
}

impl Core<'_> {
    /// Turn the machine's events into client events. Returns whether there
    /// were any.
    fn emit(&mut self, events: &mut Inbox) -> bool {
        let id = self.id;
        let mut any = false;
        while let Some(e) = self.client.poll_event() {
            any = true;
            let detail = || self.detail.clone();
            let out = match e {
                CoreEvent::Connection(e) => match e {
                    Event::Connecting { .. } => None,
                    Event::Opened { .. } => Some(ClientEvent::Opened { id }),
                    Event::Disconnected { reason, .. } => Some(ClientEvent::Disconnected {
                        id,
                        reason,
                        detail: detail(),
                    }),
                    Event::Reconnecting {
                        attempt,
                        delay,
                        reason,
                    } => Some(ClientEvent::Reconnecting {
                        id,
                        attempt,
                        delay,
                        reason,
                        detail: detail(),
                    }),
                    Event::HeartbeatMissed { consecutive } => {
                        Some(ClientEvent::HeartbeatMissed { id, consecutive })
                    }
                    Event::HeartbeatFailed => Some(ClientEvent::HeartbeatFailed { id }),
                    Event::HeartbeatSetupFailed { code } => {
                        Some(ClientEvent::HeartbeatSetupFailed { id, code })
                    }
                    Event::Exited(reason) => {
                        *self.exit = Some(reason);
                        None
                    }
                    // `Event` is non_exhaustive: a newer core may say more.
                    other => {
                        log::debug!("{id}: core event not reported: {other:?}");
                        None
                    }
                },
                CoreEvent::Session(e) => self.session_event(e),
                other => {
                    log::debug!("{id}: core event not reported: {other:?}");
                    None
                }
            };
            if let Some(ev) = out {
                events.push(self.owner, ev);
            }
        }
        any
    }

    fn session_event(&mut self, e: SessionEvent) -> Option<ClientEvent> {
        let id = self.id;
        let channel = |i: usize| -> String {
            self.client
                .session()
                .and_then(|s| s.channel(i))
                .unwrap_or_default()
                .to_string()
        };
        Some(match e {
            SessionEvent::Authenticated {
                refresh,
                expires_in,
                ..
            } => ClientEvent::Authenticated {
                id,
                refresh,
                expires_in,
            },
            SessionEvent::TokenRefreshed { expires_in, .. } => {
                ClientEvent::TokenRefreshed { id, expires_in }
            }
            SessionEvent::AuthRejected { code, .. } => {
                *self.detail = match code {
                    Some(c) => format!("authentication rejected (error {c})"),
                    None => "authentication rejected".into(),
                };
                return None; // the machine fails the client: `Failed` follows
            }
            SessionEvent::AuthRetrying { code, delay, .. } => {
                ClientEvent::AuthRetrying { id, code, delay }
            }
            SessionEvent::AuthTimedOut { .. } => {
                *self.detail = "authentication timed out".into();
                return None; // the machine reconnects: `Reconnecting` follows
            }
            SessionEvent::RateLimited { code } => ClientEvent::RateLimited { id, code },
            SessionEvent::AfterAuth { step, error, .. } => {
                ClientEvent::AfterAuth { id, step, error }
            }
            SessionEvent::SubscriptionRejected { index, reason, .. } => {
                ClientEvent::SubscriptionRejected {
                    id,
                    channel: channel(index),
                    reason,
                }
            }
            SessionEvent::Restored { rejected, .. } => ClientEvent::Restored {
                id,
                granted: self
                    .client
                    .session()
                    .map(|s| s.granted().map(str::to_string).collect())
                    .unwrap_or_default(),
                rejected,
            },
            SessionEvent::RequestResolved { id: r } => {
                ClientEvent::RequestResolved { id, request: r }
            }
            SessionEvent::RequestError { id: r, error } => ClientEvent::RequestError {
                id,
                request: r,
                code: error.code,
                message: error.message.as_str().to_string(),
            },
            SessionEvent::RequestTimedOut { id: r } => {
                ClientEvent::RequestTimedOut { id, request: r }
            }
            SessionEvent::RequestFailed { id: r } => ClientEvent::RequestFailed { id, request: r },
            // `SessionEvent` is non_exhaustive: a newer core may say more.
            other => {
                log::debug!("{id}: session event not reported: {other:?}");
                return None;
            }
        })
    }
}

impl Slot {
    pub(crate) fn new(
        id: ClientId,
        key: usize,
        target: Target,
        config: Arc<ClientConfig>,
        tcfg: Arc<TransportConfig>,
        owner: Owner,
    ) -> Slot {
        // Each client its own jitter seed, so a server restart doesn't get a
        // thundering herd of reconnects at the same instant.
        let mut cc = config.connection;
        cc.seed ^= id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut client = Client::new(cc, config.session, config.protocol.clone());
        for c in &config.subscriptions {
            if let Err(e) = client.subscribe(c) {
                log::warn!("{id}: subscription {c:?} not tracked: {e:?}");
            }
        }
        Slot {
            id,
            token: key,
            target,
            config,
            tcfg,
            client,
            transport: None,
            dial: Dial::default(),
            deadline: None,
            detail: String::new(),
            stopping: false,
            owner,
            exit: None,
        }
    }

    /// Drop the transport and any attempts racing it.
    pub(crate) fn drop_transport(&mut self, registry: &Registry) {
        self.dial_stop(registry);
        if let Some(mut t) = self.transport.take() {
            t.abort(registry);
        }
    }

    fn exec(&mut self, now: Instant, action: Action, ctx: &mut Ctx<'_>) {
        match action {
            Action::Connect { epoch } => self.dial(now, epoch, ctx),
            Action::Send { epoch, frame } if epoch == self.client.epoch() => {
                let enc = frame.encode();
                if let Some(t) = self.transport.as_mut() {
                    if let Err(e) = t.send_core_frame(ctx.registry, enc.kind, &enc.bytes) {
                        log::debug!("{}: core frame not sent: {e:?}", self.id);
                    }
                }
            }
            Action::Close { epoch, code } if epoch == self.client.epoch() => {
                // Still connecting: the attempts racing it end too.
                self.dial_stop(ctx.registry);
                if let Some(t) = self.transport.as_mut() {
                    t.close(ctx.registry, code, "");
                }
            }
            Action::Abort { epoch, .. } if epoch == self.client.epoch() => {
                self.drop_transport(ctx.registry)
            }
            _ => {}
        }
    }

    /// Readiness on this slot's token.
    pub(crate) fn on_ready(
        &mut self,
        now: Instant,
        readable: bool,
        writable: bool,
        ctx: &mut Ctx<'_>,
    ) {
        let epoch = self.client.epoch();
        if self.dialing(epoch) {
            // Addresses racing (RFC 8305): every attempt is driven.
            return self.dial_ready(now, epoch, readable, writable, ctx);
        }
        let Slot {
            id,
            owner,
            client,
            transport,
            detail,
            exit,
            ..
        } = self;
        let Some(t) = transport.as_mut() else {
            return;
        };
        let mut sink = Sink {
            slot: Core {
                id: *id,
                owner: *owner,
                client,
                detail,
                exit,
            },
            now,
            epoch,
            events: ctx.events,
            end: None,
        };
        t.handle_event_into(ctx.registry, readable, writable, &mut sink);
        let end = sink.end.take();
        self.on_end(now, epoch, end, ctx);
    }

    /// Drive `t`, a transport taken out of this slot (a racing attempt),
    /// feeding what it decodes to the machine; returns its end event.
    pub(crate) fn pump(
        &mut self,
        t: &mut Transport,
        now: Instant,
        epoch: Epoch,
        readable: bool,
        writable: bool,
        ctx: &mut Ctx<'_>,
    ) -> Option<TransportEvent> {
        let mut sink = Sink {
            slot: self.core(),
            now,
            epoch,
            events: ctx.events,
            end: None,
        };
        t.handle_event_into(ctx.registry, readable, writable, &mut sink);
        sink.end
    }

    /// The slot's transport ended with `end` (if it did).
    pub(crate) fn on_end(
        &mut self,
        now: Instant,
        epoch: Epoch,
        end: Option<TransportEvent>,
        ctx: &mut Ctx<'_>,
    ) {
        match end {
            Some(TransportEvent::Closed { code, reason }) => {
                self.detail = reason;
                self.drop_transport(ctx.registry);
                self.client.handle_closed(now, epoch, code);
            }
            Some(TransportEvent::Failed { error, detail }) => {
                self.detail = detail;
                self.drop_transport(ctx.registry);
                self.client.handle_error(now, epoch, error);
            }
            _ => {}
        }
    }

    fn core(&mut self) -> Core<'_> {
        Core {
            id: self.id,
            owner: self.owner,
            client: &mut self.client,
            detail: &mut self.detail,
            exit: &mut self.exit,
        }
    }

    /// Run the machine until quiet. Returns the exit reason if this
    /// incarnation ended.
    pub(crate) fn drive(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<ExitReason> {
        loop {
            let mut busy = false;
            while let Some(a) = self.client.poll_action() {
                busy = true;
                self.exec(now, a, ctx);
            }
            busy |= self.transmit(now, ctx);
            busy |= self.core().emit(ctx.events);
            if self.exit.is_some() {
                self.drop_transport(ctx.registry);
            }
            if !busy {
                return self.exit.take();
            }
        }
    }

    /// Write the session's due messages. Returns whether there were any.
    fn transmit(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> bool {
        let mut any = false;
        loop {
            let Some(t) = self.transport.as_mut() else {
                return any;
            };
            ctx.text.clear();
            let pending = t.pending_write_bytes();
            let Some(tx) = self.client.poll_transmit(now, pending, ctx.text) else {
                ctx.text.clear();
                return any;
            };
            any = true;
            log::debug!("{}: session {:?}", self.id, tx.kind);
            if let Err(e) = t.send_core_frame(ctx.registry, FrameKind::Text, ctx.text.as_bytes()) {
                log::debug!("{}: session message deferred: {e:?}", self.id);
                self.client.transmit_failed(&tx, now + TRANSMIT_RETRY);
                ctx.text.clear();
                return any;
            }
            ctx.text.clear();
        }
    }

    /// The earliest deadline of this slot: its machine's, or the timer of
    /// its address race (see [`crate::dial`]).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match (self.client.poll_timeout(), self.dial.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
