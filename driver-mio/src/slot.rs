//! One client inside the loop: glue between its cores (connection, session)
//! and its transport. The cores decide; this file only carries out actions
//! and feeds results back, until both sides are quiet.

use crate::config::ClientConfig;
use crate::dial::Dial;
use crate::error::ClientId;
use crate::event::{ClientEvent, Message};
use crate::resolve::Resolver;
use crate::transport::{EventSink, Transport, TransportConfig, TransportEvent};
use crate::url::Target;
use mio::Registry;
use std::collections::VecDeque;
use std::sync::Arc;
use zenws_core::session::{Session, SessionEvent, Step};
use zenws_core::{
    Action, Connection, Delivery, Epoch, Error as Reason, Event, ExitReason, Instant,
};

/// Takes the transport's events as they are decoded (see `on_ready`).
struct Direct<'a> {
    /// Still handling events here (false once one went to `rest`: order).
    direct: bool,
    conn: &'a mut Connection,
    id: ClientId,
    now: Instant,
    epoch: Epoch,
    events: &'a mut VecDeque<ClientEvent>,
    rest: &'a mut Vec<TransportEvent>,
}

impl EventSink for Direct<'_> {
    fn event(&mut self, ev: TransportEvent) {
        if !self.direct {
            return self.rest.push(ev);
        }
        let (now, epoch) = (self.now, self.epoch);
        let message = match ev {
            TransportEvent::Text(t) => Message::Text(t),
            TransportEvent::Binary(b) => Message::Binary(b),
            TransportEvent::Open => return self.conn.handle_open(now, epoch),
            // The transport queues the pong itself; the core only notes it.
            TransportEvent::Ping(p) => {
                self.conn.handle_ping(now, epoch, &p);
                return;
            }
            TransportEvent::Pong(p) => return self.conn.handle_pong(now, epoch, &p),
            ev @ (TransportEvent::Closed { .. } | TransportEvent::Failed { .. }) => {
                self.direct = false;
                return self.rest.push(ev);
            }
        };
        if self.conn.handle_message(now, epoch, message.as_bytes()) == Delivery::Deliver {
            self.events.push_back(ClientEvent::Message {
                id: self.id,
                message,
            });
        }
    }
}

/// The session type the driver uses: 64 channels of ≤ 96 bytes, 64 requests in flight.
pub(crate) type DriverSession = Session<64, 96, 64>;

/// Shared loop state a slot needs while it runs.
pub(crate) struct Ctx<'a> {
    pub registry: &'a Registry,
    pub resolver: &'a mut Option<Resolver>,
    pub waker: &'a Arc<mio::Waker>,
    pub events: &'a mut VecDeque<ClientEvent>,
    pub scratch: &'a mut Vec<TransportEvent>,
}

pub(crate) struct Slot {
    pub id: ClientId,
    pub token: usize,
    pub target: Target,
    pub config: Arc<ClientConfig>,
    pub tcfg: Arc<TransportConfig>,
    pub conn: Connection,
    /// Boxed and created only when the session layer is used: idle clients stay small.
    pub session: Option<Box<DriverSession>>,
    pub transport: Option<Transport>,
    /// DNS lookup and addresses of the current attempt (see `dial.rs`).
    pub dial: Dial,
    /// The deadline currently in the timer heap.
    pub deadline: Option<Instant>,
    /// Last transport failure text, for events.
    pub detail: String,
    /// The user asked for a stop: never restart.
    pub stopping: bool,
}

impl Slot {
    pub(crate) fn new(
        id: ClientId,
        key: usize,
        target: Target,
        config: Arc<ClientConfig>,
        tcfg: Arc<TransportConfig>,
    ) -> Slot {
        // Each client its own jitter seed, so a server restart doesn't get a
        // thundering herd of reconnects at the same instant.
        let mut cc = config.connection;
        cc.seed ^= id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let conn = Connection::new(cc);
        let session = if config.hooks.is_some() || !config.subscriptions.is_empty() {
            let mut s: Box<DriverSession> = Box::new(Session::new(config.session));
            for c in &config.subscriptions {
                if let Err(e) = s.subscribe(c) {
                    log::warn!("{id}: subscription {c:?} not tracked: {e:?}");
                }
            }
            Some(s)
        } else {
            None
        };
        Slot {
            id,
            token: key,
            target,
            config,
            tcfg,
            conn,
            session,
            transport: None,
            dial: Dial::default(),
            deadline: None,
            detail: String::new(),
            stopping: false,
        }
    }

    pub(crate) fn session_mut(&mut self) -> &mut DriverSession {
        let cfg = self.config.session;
        self.session
            .get_or_insert_with(|| Box::new(Session::new(cfg)))
    }

    fn drop_transport(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(mut t) = self.transport.take() {
            t.abort(ctx.registry);
        }
    }

    fn exec(&mut self, now: Instant, action: Action, ctx: &mut Ctx<'_>) {
        match action {
            Action::Connect { epoch } => self.dial(now, epoch, ctx),
            Action::Send { epoch, frame } if epoch == self.conn.epoch() => {
                let enc = frame.encode();
                if let Some(t) = self.transport.as_mut() {
                    if let Err(e) = t.send_core_frame(ctx.registry, enc.kind, &enc.bytes) {
                        log::debug!("{}: core frame not sent: {e:?}", self.id);
                    }
                }
            }
            Action::Close { epoch, code } if epoch == self.conn.epoch() => {
                if let Some(t) = self.transport.as_mut() {
                    t.close(ctx.registry, code, "");
                }
            }
            Action::Abort { epoch, .. } if epoch == self.conn.epoch() => self.drop_transport(ctx),
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
        let Some(t) = self.transport.as_mut() else {
            return;
        };
        ctx.scratch.clear();
        let epoch = self.conn.epoch();
        // Without a session, what the transport decodes goes straight to the
        // core and the event queue; the end of the connection (and, with a
        // session, everything: its events may drop the transport) comes
        // back through `scratch`.
        let mut sink = Direct {
            direct: self.session.is_none(),
            conn: &mut self.conn,
            id: self.id,
            now,
            epoch,
            events: ctx.events,
            rest: ctx.scratch,
        };
        t.handle_event_into(ctx.registry, readable, writable, &mut sink);
        if ctx.scratch.is_empty() {
            return;
        }
        let mut events = std::mem::take(ctx.scratch);
        for ev in events.drain(..) {
            match ev {
                TransportEvent::Open => self.conn.handle_open(now, epoch),
                TransportEvent::Text(t) => self.deliver(now, epoch, Message::Text(t), ctx),
                TransportEvent::Binary(b) => self.deliver(now, epoch, Message::Binary(b), ctx),
                TransportEvent::Ping(p) => {
                    // The transport queues the pong itself; the core only notes it.
                    self.conn.handle_ping(now, epoch, &p);
                }
                TransportEvent::Pong(p) => self.conn.handle_pong(now, epoch, &p),
                TransportEvent::Closed { code, reason } => {
                    self.detail = reason;
                    self.drop_transport(ctx);
                    self.conn.handle_closed(now, epoch, code);
                }
                TransportEvent::Failed { error, detail } => {
                    if self.dial_failed(now, epoch, error, &detail, ctx) {
                        continue; // the next address is being tried
                    }
                    self.detail = detail;
                    self.drop_transport(ctx);
                    self.conn.handle_error(now, epoch, error);
                }
            }
        }
        *ctx.scratch = events;
    }

    fn deliver(&mut self, now: Instant, epoch: Epoch, message: Message, ctx: &mut Ctx<'_>) {
        if self.conn.handle_message(now, epoch, message.as_bytes()) != Delivery::Deliver {
            return;
        }
        if let Some(s) = self.session.as_mut() {
            s.on_message(now, message.as_bytes());
        }
        ctx.events.push_back(ClientEvent::Message {
            id: self.id,
            message,
        });
        // Drain at once: one read can carry more responses than the
        // session's event queue holds (RequestResolved would be dropped).
        self.session_events(now, ctx);
    }

    fn send_step(&mut self, now: Instant, step: Step, ctx: &mut Ctx<'_>) {
        let Some(hooks) = self.config.hooks.clone() else {
            return;
        };
        let (text, epoch) = match &step {
            Step::Authenticate { epoch, id } => match hooks.authenticate(*id) {
                Some(t) => (t, *epoch),
                None => {
                    self.session_mut().skip_authentication(now);
                    return;
                }
            },
            Step::Subscribe { epoch, id, range } => {
                let s = self.session.as_ref().expect("steps come from the session");
                let chans: Vec<&str> = range.clone().filter_map(|i| s.channel(i)).collect();
                (hooks.subscribe(*id, &chans), *epoch)
            }
        };
        if epoch != self.conn.epoch() {
            return;
        }
        // Session messages pass the same admission as user sends (the server
        // charges them too); a refused step comes back later, never lost.
        let pending = self
            .transport
            .as_ref()
            .map_or(0, |t| t.pending_write_bytes());
        let retry_at = match self.conn.handle_send(now, text.as_bytes(), pending) {
            Ok(()) => match self
                .transport
                .as_mut()
                .map(|t| t.send(ctx.registry, tungstenite::Message::text(text)))
            {
                Some(Ok(())) | None => return,
                Some(Err(e)) => {
                    log::debug!("{}: session step deferred: {e:?}", self.id);
                    now + std::time::Duration::from_millis(20)
                }
            },
            Err(zenws_core::SendError::RateLimited { retry_after }) => now + retry_after,
            Err(zenws_core::SendError::QueueFull) => now + std::time::Duration::from_millis(20),
            Err(e) => {
                log::warn!("{}: session step not sent: {e}", self.id);
                return;
            }
        };
        if let Some(s) = self.session.as_mut() {
            s.step_failed(&step, retry_at);
        }
    }

    /// Turn the session's events into client events (acting on auth
    /// failures). Returns whether there were any.
    fn session_events(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> bool {
        let id = self.id;
        let mut any = false;
        while let Some(e) = self.session.as_mut().and_then(|s| s.poll_event()) {
            any = true;
            let out = match e {
                SessionEvent::Authenticated { .. } => ClientEvent::Authenticated { id },
                SessionEvent::AuthRejected { epoch } => {
                    self.detail = "authentication rejected".into();
                    self.drop_transport(ctx);
                    self.conn.handle_error(now, epoch, Reason::AuthRejected);
                    continue;
                }
                SessionEvent::AuthTimedOut { epoch } => {
                    // No answer is not a rejection: reconnect (transient).
                    self.detail = "authentication timed out".into();
                    self.drop_transport(ctx);
                    self.conn.handle_error(now, epoch, Reason::ConnectTimeout);
                    continue;
                }
                SessionEvent::Restored { channels, .. } => ClientEvent::Restored { id, channels },
                SessionEvent::RequestResolved { id: r } => {
                    ClientEvent::RequestResolved { id, request: r }
                }
                SessionEvent::RequestTimedOut { id: r } => {
                    ClientEvent::RequestTimedOut { id, request: r }
                }
                SessionEvent::RequestFailed { id: r } => {
                    ClientEvent::RequestFailed { id, request: r }
                }
            };
            ctx.events.push_back(out);
        }
        any
    }

    /// Run the cores until quiet. Returns the exit reason if this
    /// incarnation ended.
    pub(crate) fn drive(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<ExitReason> {
        let id = self.id;
        let mut exit = None;
        loop {
            let mut busy = false;
            if let Some(s) = self.session.as_mut() {
                s.handle_timeout(now);
            }
            while let Some(a) = self.conn.poll_action() {
                busy = true;
                self.exec(now, a, ctx);
            }
            while let Some(e) = self.conn.poll_event() {
                busy = true;
                let detail = || self.detail.clone();
                let out = match e {
                    Event::Connecting { .. } => None,
                    Event::Opened { epoch } => {
                        if let Some(s) = self.session.as_mut() {
                            s.on_open(now, epoch);
                        }
                        Some(ClientEvent::Opened { id })
                    }
                    Event::Disconnected { reason, .. } => {
                        if let Some(s) = self.session.as_mut() {
                            s.on_disconnect();
                        }
                        Some(ClientEvent::Disconnected {
                            id,
                            reason,
                            detail: detail(),
                        })
                    }
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
                    Event::Exited(reason) => {
                        if let Some(s) = self.session.as_mut() {
                            s.on_disconnect();
                        }
                        self.drop_transport(ctx);
                        exit = Some(reason);
                        None
                    }
                };
                ctx.events.extend(out);
            }
            if self.session.is_some() && self.conn.is_open() {
                while let Some(step) = self.session.as_mut().and_then(|s| s.poll_step(now)) {
                    busy = true;
                    self.send_step(now, step, ctx);
                }
            }
            if self.session.is_some() {
                busy |= self.session_events(now, ctx);
            }
            if !busy {
                return exit;
            }
        }
    }

    /// The earliest deadline of this slot's cores.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let s = self.session.as_ref().and_then(|s| s.poll_timeout());
        zenws_core::time::earliest(self.conn.poll_timeout(), s)
    }
}
