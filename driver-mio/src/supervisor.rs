//! `ClientSupervisor`: many supervised clients on one thread.
//!
//! One `mio::Poll`, a `slab` of clients keyed by `Token`, one timer heap.
//! Each loop turn reads the clock once, handles readiness, due timers, DNS
//! answers and cross-thread commands, and lets every touched client's cores
//! decide. Exits go to the OTP-style supervisor core: one-for-one restarts,
//! restart intensity, escalation.
//!
//! # Inbound bounds
//!
//! Reads are bounded twice, so a peer flooding messages cannot fill memory
//! nor starve the other clients:
//!
//! - per readiness event: at most [`ClientConfig::read_budget`] bytes
//!   (256 KiB) per client per turn. mio is edge-triggered, so a client left
//!   with unread data goes on a *ready list* and is read again next turn
//!   without a new event (the poll does not block meanwhile);
//! - per queued bytes: every event in the queue counts its payload plus
//!   [`EVENT_OVERHEAD`]. A client at or above its
//!   [`ClientConfig::inbound_queue_limit`] (8 MiB), or any client while the
//!   whole queue is at or above the supervisor's bound
//!   ([`ClientSupervisor::set_inbound_queue_limit`], 64 MiB), is not read:
//!   the bytes stay in the kernel and TCP backpressure slows the peer.
//!   Decoding stops between two messages; a message already decoded is
//!   always queued, so a bound may be exceeded by one message. Reading
//!   resumes once the application has drained ([`ClientSupervisor::poll_event`],
//!   a [`Handler`]) the client's queue to half its bound and the whole queue
//!   to half the supervisor's. Nothing is dropped: every message is
//!   delivered, in order, later.
//!
//! While a client is not read because of these bounds its heartbeat pongs
//! are not read either, so on an open connection its timers are held
//! (no heartbeat miss, idle or request timeout is counted): a peer slowed
//! by our own backpressure is not declared dead because *we* stopped
//! reading. The timers run again, late, right after the next read. A
//! consumer that drains slowly but steadily keeps reading, so its pongs
//! arrive behind the queued data: if draining the bound takes longer than
//! the pong timeout, that counts as a miss (lower the bound or raise the
//! timeout for such consumers).

use crate::clock::{Clock, MonotonicClock};
use crate::config::ClientConfig;
use crate::error::Error;
use crate::event::ClientEvent;
use crate::handle::{Command, Handle};
use crate::id::ClientId;
use crate::message::Message;
use crate::resolve::Resolver;
use crate::slot::{Ctx, Slot};
use crate::timers::Timers;
use crate::tls::{client_config, TlsRoots};
use crate::transport::Transport;
use crate::transport::{SendFailure, TransportConfig};
use crate::url::Target;
use mio::{Events, Poll, Registry, Token, Waker};
use slab::Slab;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use zenws_core::requests::TrackError;
use zenws_core::supervisor::{Decision, Supervisor, SupervisorConfig};
use zenws_core::{ExitReason, Health, Instant, Metrics, SendError, State};

/// The loop state a slot needs, borrowed field by field so that
/// `self.slots` stays free for the slot itself.
macro_rules! ctx {
    ($s:ident) => {
        Ctx {
            registry: &$s.registry,
            resolver: &mut $s.resolver,
            waker: &$s.waker,
            events: &mut $s.inbox,
            text: &mut $s.text,
        }
    };
}

/// Hasher for the `ClientId → slab key` map, looked up on every send.
/// Ids are counters or the caller's static ids, not attacker input, so
/// SipHash's flooding resistance buys nothing: one multiply (Fibonacci
/// hashing, like FxHash), with the high half folded into the low bits so
/// that ids sharing low bits (multiples of 1024, say) still spread over
/// the buckets.
#[derive(Clone, Copy, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap = HashMap<ClientId, usize, BuildHasherDefault<IdHasher>>;

/// Receives events as they happen, with the supervisor at hand to react
/// (send, stop, start). Used by [`ClientSupervisor::run`].
pub trait Handler {
    /// One event.
    fn on_event(&mut self, sup: &mut ClientSupervisor, event: ClientEvent);
}

impl<F: FnMut(&mut ClientSupervisor, ClientEvent)> Handler for F {
    fn on_event(&mut self, sup: &mut ClientSupervisor, event: ClientEvent) {
        self(sup, event)
    }
}

/// Bytes each queued event is charged on top of its payload (the queue
/// entry plus allocator bookkeeping) in the inbound bounds
/// ([`ClientConfig::inbound_queue_limit`]).
pub const EVENT_OVERHEAD: usize = std::mem::size_of::<Queued>() + 16;

/// The supervisor-wide bound on queued inbound bytes: 64 MiB.
pub const DEFAULT_INBOUND_QUEUE_LIMIT: usize = 64 << 20;

/// Whose account a queued event is charged to: a slot (its key and the
/// serial of this incarnation of the key), or nobody.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    key: u32,
    serial: u32,
}

impl Owner {
    const NONE: Owner = Owner {
        key: u32::MAX,
        serial: 0,
    };
}

struct Queued {
    event: ClientEvent,
    owner: Owner,
}

fn cost(ev: &ClientEvent) -> usize {
    EVENT_OVERHEAD
        + match ev {
            ClientEvent::Message { message, .. } => message.as_bytes().len(),
            _ => 0,
        }
}

/// One client's share of the event queue.
#[derive(Default)]
struct Account {
    /// 0: no client.
    serial: u32,
    bytes: usize,
    limit: usize,
    /// Not read: the bound was reached with bytes left unread.
    blocked: bool,
    /// On the ready list.
    listed: bool,
    /// A core deadline came due while blocked on an open connection: the
    /// timeout runs after the next read.
    held: bool,
    /// The last turn in which it was read.
    turn: u32,
}

/// The event queue with its inbound accounting (see the module docs).
pub(crate) struct Inbox {
    queue: VecDeque<Queued>,
    bytes: usize,
    limit: usize,
    /// By slab key.
    accounts: Vec<Account>,
    next_serial: u32,
    /// Accounts with `blocked`.
    blocked: usize,
    /// Clients to read again without a readiness event.
    ready: Vec<Owner>,
    /// Counts ready passes (a client is read once per turn).
    turn: u32,
}

impl Inbox {
    fn new() -> Inbox {
        Inbox {
            queue: VecDeque::new(),
            bytes: 0,
            limit: DEFAULT_INBOUND_QUEUE_LIMIT,
            accounts: Vec::new(),
            next_serial: 1,
            blocked: 0,
            ready: Vec::new(),
            turn: 0,
        }
    }

    /// An account for a new slot at `key`.
    fn open(&mut self, key: usize, limit: usize) -> Owner {
        if self.accounts.len() <= key {
            self.accounts.resize_with(key + 1, Account::default);
        }
        let serial = self.next_serial;
        self.next_serial = self.next_serial.checked_add(1).unwrap_or(1);
        self.close_key(key);
        self.accounts[key] = Account {
            serial,
            limit: limit.max(1),
            ..Account::default()
        };
        Owner {
            key: key as u32,
            serial,
        }
    }

    /// The slot is gone: its events still queued count only overall.
    fn close(&mut self, owner: Owner) {
        if self.account(owner).is_some() {
            self.close_key(owner.key as usize);
        }
    }

    fn close_key(&mut self, key: usize) {
        if let Some(a) = self.accounts.get_mut(key) {
            if a.blocked {
                self.blocked -= 1;
            }
            *a = Account::default();
        }
    }

    fn account(&self, owner: Owner) -> Option<&Account> {
        self.accounts
            .get(owner.key as usize)
            .filter(|a| a.serial == owner.serial && a.serial != 0)
    }

    fn account_mut(&mut self, owner: Owner) -> Option<&mut Account> {
        self.accounts
            .get_mut(owner.key as usize)
            .filter(|a| a.serial == owner.serial && a.serial != 0)
    }

    /// Queue `event`, charged to `owner`. Never refused: the bounds stop
    /// reading, not delivery.
    pub(crate) fn push(&mut self, owner: Owner, event: ClientEvent) {
        let c = cost(&event);
        self.bytes += c;
        if let Some(a) = self.account_mut(owner) {
            a.bytes += c;
        }
        self.queue.push_back(Queued { event, owner });
    }

    /// `owner` may not read more now.
    pub(crate) fn is_full(&self, owner: Owner) -> bool {
        self.bytes >= self.limit || self.account(owner).is_some_and(|a| a.bytes >= a.limit)
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn pop(&mut self) -> Option<ClientEvent> {
        let Queued { event, owner } = self.queue.pop_front()?;
        let c = cost(&event);
        let before = self.bytes;
        self.bytes -= c;
        let half = self.limit / 2;
        let overall = self.bytes <= half;
        if let Some(a) = self.account_mut(owner) {
            a.bytes -= c;
            if a.blocked && overall && a.bytes <= a.limit / 2 {
                self.resume(owner.key as usize);
            }
        }
        if self.blocked > 0 && before > half && overall {
            self.resume_all();
        }
        Some(event)
    }

    /// Reading may resume for every blocked client under half its bound
    /// (the overall queue is under half its bound).
    fn resume_all(&mut self) {
        for key in 0..self.accounts.len() {
            let a = &self.accounts[key];
            if a.blocked && a.bytes <= a.limit / 2 {
                self.resume(key);
            }
        }
    }

    fn resume(&mut self, key: usize) {
        let a = &mut self.accounts[key];
        a.blocked = false;
        self.blocked -= 1;
        let owner = Owner {
            key: key as u32,
            serial: a.serial,
        };
        self.list(owner);
    }

    fn list(&mut self, owner: Owner) {
        if let Some(a) = self.account_mut(owner) {
            if !a.listed {
                a.listed = true;
                self.ready.push(owner);
            }
        }
    }

    fn block(&mut self, owner: Owner) {
        if let Some(a) = self.account_mut(owner) {
            if !a.blocked {
                a.blocked = true;
                self.blocked += 1;
            }
        }
    }

    fn is_blocked(&self, owner: Owner) -> bool {
        self.account(owner).is_some_and(|a| a.blocked)
    }

    fn is_held(&self, owner: Owner) -> bool {
        self.account(owner).is_some_and(|a| a.held)
    }

    fn set_held(&mut self, owner: Owner, held: bool) {
        if let Some(a) = self.account_mut(owner) {
            a.held = held;
        }
    }

    fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
        if self.blocked > 0 && self.bytes <= self.limit / 2 {
            self.resume_all();
        }
    }
}

/// Tokens a supervisor uses: its waker at the offset, then one per client.
pub const TOKEN_SPAN: usize = 1 << 24;

/// Many supervised WebSocket clients driven by one thread.
///
/// ```no_run
/// use zenws_mio::{ClientConfig, ClientEvent, ClientSupervisor};
/// let mut sup = ClientSupervisor::new().unwrap();
/// let id = sup.start_client("ws://127.0.0.1:9001/", ClientConfig::default()).unwrap();
/// loop {
///     // Events first: `start_client` may already have queued some (a
///     // client that failed at once), and `run_once(None)` only returns on I/O,
///     // a deadline or a queued event.
///     while let Some(ev) = sup.poll_event() {
///         match ev {
///             ClientEvent::Opened { .. } => sup.send_text(id, "hello").unwrap(),
///             ClientEvent::Message { message, .. } => println!("{:?}", message.as_text()),
///             other => eprintln!("{other:?}"),
///         }
///     }
///     if sup.is_empty() {
///         break; // every client has ended: nothing would ever wake the loop
///     }
///     sup.run_once(None).unwrap();
/// }
/// ```
pub struct ClientSupervisor {
    poll: Option<Poll>,
    /// Taken out while a turn iterates it (`None` only then).
    mio_events: Option<Events>,
    registry: Registry,
    waker: Arc<Waker>,
    token_offset: usize,
    clock: Box<dyn Clock>,
    /// The time of the latest clock read by the loop (see `send`).
    last_now: Instant,
    slots: Slab<Slot>,
    ids: IdMap,
    next_id: Arc<AtomicU64>,
    core: Supervisor<64>,
    timers: Timers,
    resolver: Option<Resolver>,
    /// Events for the application, with the inbound accounting.
    inbox: Inbox,
    /// Scratch for rendering session messages.
    text: String,
    /// Scratch for the timer entries due in one turn.
    due: Vec<(Instant, usize)>,
    commands: mpsc::Receiver<Command>,
    command_tx: mpsc::Sender<Command>,
    webpki: Option<Arc<rustls::ClientConfig>>,
    ca_files: HashMap<PathBuf, Arc<rustls::ClientConfig>>,
}

impl ClientSupervisor {
    /// A supervisor with its own `mio::Poll`, default intensity (10 restarts
    /// in 60 s) and the monotonic clock.
    pub fn new() -> Result<Self, Error> {
        Self::with_config(SupervisorConfig::default())
    }

    /// A supervisor with its own `mio::Poll` and this restart policy.
    pub fn with_config(config: SupervisorConfig) -> Result<Self, Error> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let mut s = Self::build(registry, 0, config, None)?;
        s.poll = Some(poll);
        Ok(s)
    }

    /// A supervisor living in the caller's event loop: it registers its
    /// sockets in `registry` with tokens `token_offset ..= token_offset +
    /// 2^24` ([`TOKEN_SPAN`]). Feed it with [`ClientSupervisor::handle_mio_event`] and call
    /// [`ClientSupervisor::process`] once per loop turn; wait at most
    /// [`ClientSupervisor::poll_timeout`].
    ///
    /// It registers a `mio::Waker` at `token_offset`. mio allows one waker
    /// per `Poll`: if the loop has its own, or runs several supervisors, use
    /// [`ClientSupervisor::embedded_with_waker`].
    pub fn embedded(
        registry: &Registry,
        token_offset: usize,
        config: SupervisorConfig,
    ) -> Result<Self, Error> {
        Self::build(registry.try_clone()?, token_offset, config, None)
    }

    /// Like [`ClientSupervisor::embedded`], but handles and DNS answers wake
    /// the loop through the caller's `waker` (shared with the caller's own
    /// uses and other supervisors): call [`ClientSupervisor::process`] after
    /// every wake-up.
    pub fn embedded_with_waker(
        registry: &Registry,
        token_offset: usize,
        config: SupervisorConfig,
        waker: Arc<Waker>,
    ) -> Result<Self, Error> {
        Self::build(registry.try_clone()?, token_offset, config, Some(waker))
    }

    fn build(
        registry: Registry,
        token_offset: usize,
        config: SupervisorConfig,
        waker: Option<Arc<Waker>>,
    ) -> Result<Self, Error> {
        let waker = match waker {
            Some(w) => w,
            None => Arc::new(Waker::new(&registry, Token(token_offset))?),
        };
        let core = Supervisor::new(config).map_err(|e| Error::InvalidConfig(e.to_string()))?;
        let (command_tx, commands) = mpsc::channel();
        let clock: Box<dyn Clock> = Box::new(MonotonicClock::new());
        Ok(ClientSupervisor {
            poll: None,
            mio_events: Some(Events::with_capacity(1024)),
            registry,
            waker,
            token_offset,
            last_now: clock.now(),
            clock,
            slots: Slab::new(),
            ids: IdMap::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            core,
            timers: Timers::default(),
            resolver: None,
            inbox: Inbox::new(),
            text: String::new(),
            due: Vec::new(),
            commands,
            command_tx,
            webpki: None,
            ca_files: HashMap::new(),
        })
    }

    /// The bound on the bytes of received events waiting in this
    /// supervisor's queue, all clients together (see the [module
    /// docs](self)): at or above it no client is read until the application
    /// has drained the queue to half of it. Default 64 MiB
    /// ([`DEFAULT_INBOUND_QUEUE_LIMIT`]); 0 counts as 1. Each client also
    /// has its own bound, [`ClientConfig::inbound_queue_limit`].
    pub fn set_inbound_queue_limit(&mut self, bytes: usize) {
        self.inbox.set_limit(bytes);
    }

    /// The supervisor-wide bound ([`ClientSupervisor::set_inbound_queue_limit`]).
    pub fn inbound_queue_limit(&self) -> usize {
        self.inbox.limit
    }

    /// Bytes of events waiting in [`ClientSupervisor::poll_event`]'s queue,
    /// as the inbound bounds count them (payload plus [`EVENT_OVERHEAD`]
    /// per event).
    pub fn queued_inbound_bytes(&self) -> usize {
        self.inbox.bytes
    }

    /// [`ClientSupervisor::queued_inbound_bytes`] of one client (`None`:
    /// no such live client).
    pub fn queued_inbound_bytes_of(&self, id: ClientId) -> Option<usize> {
        let slot = &self.slots[*self.ids.get(&id)?];
        self.inbox.account(slot.owner).map(|a| a.bytes)
    }

    /// Resolve host names with `resolve` instead of the system resolver,
    /// e.g. a [`PinnedResolver`](crate::resolve::PinnedResolver) with an
    /// address per host. TLS still verifies the certificate against the
    /// URL's host name. Applies to connection attempts started from now on.
    pub fn set_resolver(&mut self, resolve: Arc<dyn crate::resolve::Resolve>) {
        self.resolver = Some(Resolver::with_resolve(self.waker.clone(), resolve));
    }

    /// Replace the clock (tests: [`ManualClock`](crate::clock::ManualClock)).
    pub fn set_clock(&mut self, clock: Box<dyn Clock>) {
        self.last_now = clock.now();
        self.clock = clock;
    }

    /// Read the clock (and remember the reading for `send`).
    fn read_clock(&mut self) -> Instant {
        self.last_now = self.clock.now();
        self.last_now
    }

    /// The current time on the supervisor's clock.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// A handle other threads use to send and to start/stop clients.
    pub fn handle(&self) -> Handle {
        Handle::new(
            self.command_tx.clone(),
            self.waker.clone(),
            self.next_id.clone(),
        )
    }

    /// `true` once the restart budget was exhausted: every child was
    /// stopped and no client can be started.
    pub fn is_terminated(&self) -> bool {
        self.core.is_terminated()
    }

    fn tls_for(&mut self, roots: &TlsRoots) -> Result<Arc<rustls::ClientConfig>, Error> {
        match roots {
            TlsRoots::WebPki => {
                if let Some(c) = &self.webpki {
                    return Ok(c.clone());
                }
                let c = client_config(roots).map_err(Error::TlsSetup)?;
                self.webpki = Some(c.clone());
                Ok(c)
            }
            TlsRoots::CaFile(p) => {
                if let Some(c) = self.ca_files.get(p) {
                    return Ok(c.clone());
                }
                let c = client_config(roots).map_err(Error::TlsSetup)?;
                self.ca_files.insert(p.clone(), c.clone());
                Ok(c)
            }
            other => client_config(other).map_err(Error::TlsSetup),
        }
    }

    /// Start a client with a fresh id; it connects at once.
    pub fn start_client(&mut self, url: &str, config: ClientConfig) -> Result<ClientId, Error> {
        let id = ClientId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.start_child(id, url, config)?;
        Ok(id)
    }

    /// Start a client with an id of the caller's choosing (static children).
    pub fn start_child(
        &mut self,
        id: ClientId,
        url: &str,
        config: ClientConfig,
    ) -> Result<(), Error> {
        if self.core.is_terminated() {
            return Err(Error::SupervisorTerminated);
        }
        if self.ids.contains_key(&id) {
            return Err(Error::DuplicateClient(id));
        }
        // Keep generated ids clear of static ones.
        self.next_id.fetch_max(id.0 + 1, Ordering::Relaxed);
        let target = Target::parse(url).map_err(|_| Error::InvalidUrl(crate::url::redact(url)))?;
        crate::transport::check_headers(&target, &config.headers).map_err(Error::InvalidConfig)?;
        let tls = if target.secure {
            Some(self.tls_for(&config.tls)?)
        } else {
            None
        };
        let max = config.connection.max_message_size;
        let tcfg = Arc::new(TransportConfig {
            max_message_size: max,
            max_frame_size: max,
            // Writes are batched by the loop; the bound is the core's max_pending_bytes
            // plus one maximal message, so an admitted send always fits.
            max_write_buffer_size: config.connection.max_pending_bytes.saturating_add(max),
            read_budget: config.read_budget.max(1),
            headers: config.headers.clone(),
            tls,
            ..TransportConfig::default()
        });
        let entry = self.slots.vacant_entry();
        let key = entry.key();
        let owner = self.inbox.open(key, config.inbound_queue_limit);
        let slot = entry.insert(Slot::new(
            id,
            key + self.token_offset + 1,
            target,
            Arc::new(config),
            tcfg,
            owner,
        ));
        self.ids.insert(id, key);
        let now = self.clock.now();
        self.last_now = now;
        slot.client.connect(now);
        log::debug!("{id}: started, url {}", slot.target);
        self.drive(key, now);
        Ok(())
    }

    fn key_of(&self, id: ClientId) -> Result<usize, Error> {
        // `ok_or_else`: an eager `Error` would be built and dropped (drop
        // glue of a non-trivial enum) on every successful lookup.
        self.ids
            .get(&id)
            .copied()
            .ok_or_else(|| Error::UnknownClient(id))
    }

    /// Stop a client: close handshake (1000), a normal exit, never restarted.
    pub fn stop_client(&mut self, id: ClientId) -> Result<(), Error> {
        let key = self.key_of(id)?;
        let now = self.read_clock();
        let slot = &mut self.slots[key];
        slot.stopping = true;
        slot.client.close(now);
        self.drive(key, now);
        Ok(())
    }

    /// Ids of the live clients, in id order.
    pub fn list_clients(&self) -> Vec<ClientId> {
        let mut v: Vec<ClientId> = self.ids.keys().copied().collect();
        v.sort();
        v
    }

    /// Heartbeat health of a client.
    pub fn health(&self, id: ClientId) -> Option<Health> {
        Some(self.slots[*self.ids.get(&id)?].client.health())
    }

    /// Counters of a client (messages in/out, reconnects, restarts); RTT
    /// percentiles are in [`ClientSupervisor::health`].
    pub fn metrics(&self, id: ClientId) -> Option<Metrics> {
        Some(self.slots[*self.ids.get(&id)?].client.metrics())
    }

    /// Lifecycle state of a client.
    pub fn state(&self, id: ClientId) -> Option<State> {
        Some(self.slots[*self.ids.get(&id)?].client.state())
    }

    /// Send a text message. Refused with a typed error (nothing queued)
    /// while not open, when the write queue is full, too large or rate limited.
    pub fn send_text(&mut self, id: ClientId, text: impl Into<String>) -> Result<(), Error> {
        self.send(id, tungstenite::Message::text(text.into()))
    }

    /// Send a binary message (same rules as [`ClientSupervisor::send_text`]).
    pub fn send_binary(
        &mut self,
        id: ClientId,
        data: impl Into<bytes::Bytes>,
    ) -> Result<(), Error> {
        self.send(id, tungstenite::Message::Binary(data.into()))
    }

    /// Send a [`Message`].
    pub fn send_message(&mut self, id: ClientId, message: Message) -> Result<(), Error> {
        self.send(id, message.into_tungstenite())
    }

    fn send(&mut self, id: ClientId, msg: tungstenite::Message) -> Result<(), Error> {
        let key = self.key_of(id)?;
        let slot = &mut self.slots[key];
        // The core reads `now` in `handle_send` only for the rate limiter:
        // without one, the loop's latest reading does (no clock read per send).
        let now = if slot.config.connection.rate_limit.is_some() {
            self.last_now = self.clock.now();
            self.last_now
        } else {
            self.last_now
        };
        let pending = slot
            .transport
            .as_ref()
            .map_or(0, |t| t.pending_write_bytes());
        let payload: &[u8] = match &msg {
            tungstenite::Message::Text(t) => t.as_bytes(),
            tungstenite::Message::Binary(b) => b,
            _ => &[],
        };
        slot.client.handle_send(now, payload, pending)?;
        let t = slot
            .transport
            .as_mut()
            .ok_or_else(|| Error::Send(SendError::NotConnected))?;
        match t.send(&self.registry, msg) {
            // No `reschedule`: `handle_send` moves no core deadline (it
            // checks the phase, counts and charges the rate limiter, whose
            // refill is not a timer); every path that can runs `drive`.
            Ok(()) => Ok(()),
            Err(SendFailure::Backpressure(_)) => Err(Error::Send(SendError::QueueFull)),
            Err(SendFailure::NotOpen(_)) => Err(Error::Send(SendError::NotConnected)),
            Err(SendFailure::Failed) => {
                // The socket is gone: collect its failure event now.
                let now = self.read_clock();
                let mut ctx = ctx!(self);
                self.slots[key].on_ready(now, false, false, &mut ctx);
                self.drive(key, now);
                self.after_read(key);
                Err(Error::Send(SendError::NotConnected))
            }
        }
    }

    /// Send a JSON-RPC request (text with an integer `"id"`) and track it:
    /// its response yields [`ClientEvent::RequestResolved`] (or
    /// [`ClientEvent::RequestError`] for an error answer), silence
    /// [`ClientEvent::RequestTimedOut`], a disconnect [`ClientEvent::RequestFailed`].
    ///
    /// Ids from 9,000,000,000,000 up are reserved for the client's own
    /// requests (session, heartbeat) and refused here
    /// ([`next_request_id`](Self::next_request_id) gives free ones); a raw
    /// [`send_text`](Self::send_text) with such an id is not checked, and
    /// its answer is taken for the client's own and not delivered.
    pub fn request(&mut self, id: ClientId, text: impl Into<String>) -> Result<u64, Error> {
        let text = text.into();
        let rid = zenws_core::json::scan(text.as_bytes())
            .ok()
            .and_then(|v| v.id)
            .ok_or(Error::Request("the request has no integer \"id\""))?;
        let key = self.key_of(id)?;
        let now = self.read_clock();
        self.slots[key]
            .client
            .track_request(now, rid)
            .map_err(|e| {
                Error::Request(match e {
                    TrackError::DuplicateId => "duplicate id in flight",
                    TrackError::Full => "too many requests in flight",
                    TrackError::Reserved => {
                        "request id in the reserved range (>= 9,000,000,000,000): use next_request_id"
                    }
                })
            })?;
        if let Err(e) = self.send_text(id, text) {
            self.slots[key].client.untrack_request(rid);
            return Err(e);
        }
        self.reschedule(key);
        Ok(rid)
    }

    /// A fresh JSON-RPC id for this client's requests (never in the range
    /// the session and the heartbeat use for their own).
    pub fn next_request_id(&mut self, id: ClientId) -> Result<u64, Error> {
        let key = self.key_of(id)?;
        Ok(self.slots[key].client.next_request_id())
    }

    /// Track `channel` for this client: subscribed after every (re)connect
    /// and restart, confirmed from the server's answer
    /// ([`ClientEvent::Restored`] / [`ClientEvent::SubscriptionRejected`]).
    /// If the client is open, the subscribe request goes out now.
    pub fn subscribe(&mut self, id: ClientId, channel: &str) -> Result<(), Error> {
        let key = self.key_of(id)?;
        self.slots[key]
            .client
            .subscribe(channel)
            .map_err(|_| Error::Request("subscription set full or channel name too long"))?;
        let now = self.read_clock();
        self.drive(key, now);
        Ok(())
    }

    /// Stop tracking `channel`; if it is subscribed on the open socket, the
    /// unsubscribe request goes out now. `false` if it was not tracked.
    pub fn unsubscribe(&mut self, id: ClientId, channel: &str) -> Result<bool, Error> {
        let key = self.key_of(id)?;
        let removed = self.slots[key].client.unsubscribe(channel);
        let now = self.read_clock();
        self.drive(key, now);
        Ok(removed)
    }

    /// Next event, if any. Draining makes room: a client paused by the
    /// inbound bounds is read again in the next turn.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.inbox.pop()
    }

    /// How long the caller's loop may sleep before calling
    /// [`ClientSupervisor::process`] (embedded mode). Zero while events wait
    /// in [`ClientSupervisor::poll_event`] (a start can queue one at once)
    /// and while clients have unread data (the ready list: no readiness
    /// event will announce it).
    pub fn poll_timeout(&self) -> Option<Duration> {
        if !self.inbox.is_empty() || !self.inbox.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = self.timers.peek()?;
        Some(next - self.clock.now())
    }

    /// Does this mio token belong to this supervisor?
    pub fn owns_token(&self, token: Token) -> bool {
        (self.token_offset..=self.token_offset + TOKEN_SPAN).contains(&token.0)
    }

    /// Feed one readiness event (embedded mode). Returns `false` if the
    /// token is not ours.
    pub fn handle_mio_event(&mut self, event: &mio::event::Event) -> bool {
        if !self.owns_token(event.token()) {
            return false;
        }
        let now = self.read_clock();
        self.on_mio_event(event, now);
        true
    }

    /// One readiness event of ours, at `now` (read once per loop turn).
    fn on_mio_event(&mut self, event: &mio::event::Event, now: Instant) {
        let t = event.token().0;
        if t == self.token_offset {
            return; // the waker: commands and DNS answers are handled in process()
        }
        let key = t - self.token_offset - 1;
        if !self.slots.contains(key) {
            return; // a late event for a removed client
        }
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        let writable = event.is_writable() || event.is_write_closed() || event.is_error();
        if let Some(t) = self.slots[key].transport.as_mut() {
            t.read_hint(event.is_read_closed() || event.is_error());
        }
        let mut ctx = ctx!(self);
        self.slots[key].on_ready(now, readable, writable, &mut ctx);
        self.drive(key, now);
        self.after_read(key);
    }

    /// After a read of slot `key`: if it stopped with bytes unread, read
    /// again next turn (ready list), or once there is room (blocked).
    fn after_read(&mut self, key: usize) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let owner = slot.owner;
        let turn = self.inbox.turn;
        if let Some(a) = self.inbox.account_mut(owner) {
            a.turn = turn;
        }
        if slot.transport.as_ref().is_some_and(Transport::has_unread) {
            if self.inbox.is_full(owner) {
                self.inbox.block(owner);
            } else {
                self.inbox.list(owner);
            }
        }
    }

    /// Read the clients on the ready list once each (those read in this
    /// turn already wait for the next), calling `dispatch` after each.
    fn run_ready(&mut self, now: Instant, dispatch: &mut impl FnMut(&mut Self)) {
        if self.inbox.ready.is_empty() {
            self.inbox.turn = self.inbox.turn.wrapping_add(1);
            return;
        }
        let mut ready = std::mem::take(&mut self.inbox.ready);
        let turn = self.inbox.turn;
        for owner in ready.drain(..) {
            let Some(a) = self.inbox.account_mut(owner) else {
                continue; // the client is gone
            };
            a.listed = false;
            if a.blocked {
                continue; // resumed by `poll_event`
            }
            if a.turn == turn {
                self.inbox.list(owner); // read in this turn already
                continue;
            }
            let key = owner.key as usize;
            let mut ctx = ctx!(self);
            self.slots[key].on_ready(now, false, false, &mut ctx);
            self.drive(key, now);
            self.after_read(key);
            dispatch(self);
        }
        if self.inbox.ready.is_empty() {
            self.inbox.ready = ready; // keep the allocation
        }
        self.inbox.turn = self.inbox.turn.wrapping_add(1);
    }

    /// Timers, DNS answers, cross-thread commands and the clients with
    /// unread data (call once per loop turn).
    pub fn process(&mut self) {
        let now = self.read_clock();
        self.process_at(now, true);
        self.run_ready(now, &mut |_| {});
    }

    /// Timers at `now`; the command and DNS queues too if `queues` (their
    /// senders wake the waker, so `run_once` drains them only after its
    /// waker fired).
    fn process_at(&mut self, now: Instant, queues: bool) {
        if queues {
            self.drain_queues(now);
        }
        self.run_timers(now);
    }

    fn drain_queues(&mut self, now: Instant) {
        while let Ok(cmd) = self.commands.try_recv() {
            self.command(cmd);
        }
        let answers: Vec<_> = self
            .resolver
            .as_ref()
            .map(|r| std::iter::from_fn(|| r.try_recv()).collect())
            .unwrap_or_default();
        for answer in answers {
            // The slot checks that the answer is for its current lookup.
            if let Some(slot) = self.slots.get_mut(answer.key - self.token_offset - 1) {
                let mut ctx = ctx!(self);
                slot.on_resolved(now, answer, &mut ctx);
                let k = slot.token - self.token_offset - 1;
                self.drive(k, now);
            }
        }
    }

    fn run_timers(&mut self, now: Instant) {
        // The entries due now, taken first: a machine that keeps asking to
        // be woken "now" is served once per turn (the next turn polls
        // without waiting), never in a loop that keeps this turn from ending.
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        while let Some(entry) = self.timers.pop_due(now) {
            due.push(entry);
        }
        for &(at, key) in &due {
            let Some(slot) = self.slots.get_mut(key) else {
                continue;
            };
            if slot.deadline != Some(at) {
                continue; // stale entry
            }
            slot.deadline = None;
            if self.inbox.is_blocked(slot.owner)
                && slot.transport.as_ref().is_some_and(Transport::is_open)
            {
                // Not read because of the inbound bounds: its pongs and
                // answers may be waiting unread. Run the timeout after the
                // next read (`drive`).
                self.inbox.set_held(slot.owner, true);
                continue;
            }
            let mut ctx = ctx!(self);
            slot.dial_timeout(now, &mut ctx); // the address race's timer (RFC 8305)
            slot.client.handle_timeout(now);
            self.drive(key, now);
        }
        self.due = due;
        let slots = &self.slots;
        self.timers
            .compact(slots.len(), |k| slots.get(k).and_then(|s| s.deadline));
    }

    fn command(&mut self, cmd: Command) {
        let result = match cmd {
            Command::Start { id, url, config } => self.start_child(id, &url, *config).map(|_| ()),
            Command::Stop(id) => self.stop_client(id),
            Command::SendText(id, t) => self.send_text(id, t),
            Command::SendBinary(id, b) => self.send_binary(id, b),
        };
        if let Err(e) = result {
            log::warn!("command from handle failed: {e}");
        }
    }

    /// One loop turn with the supervisor's own `Poll`: wait for readiness
    /// (at most `max_wait`, never past the next core deadline, and not at all
    /// while events wait in [`ClientSupervisor::poll_event`]), then
    /// handle it all. Events are then ready in [`ClientSupervisor::poll_event`].
    /// An [embedded](ClientSupervisor::embedded) supervisor has no `Poll` of
    /// its own: this returns [`Error::InvalidConfig`].
    pub fn run_once(&mut self, max_wait: Option<Duration>) -> Result<(), Error> {
        self.turn(max_wait, |_| {})
    }

    /// One loop turn like [`ClientSupervisor::run_once`], handing each event
    /// to `handler` as soon as the socket readiness that caused it has been
    /// handled, before the next socket's. An answer sent from the handler
    /// goes out while that connection's state (ours and the kernel's) is
    /// still in cache: with many busy connections this costs less CPU per
    /// message than queueing a whole turn's events and answering afterwards.
    pub fn run_turn<H: Handler>(
        &mut self,
        max_wait: Option<Duration>,
        handler: &mut H,
    ) -> Result<(), Error> {
        self.turn(max_wait, |sup| {
            while let Some(ev) = sup.poll_event() {
                handler.on_event(sup, ev);
            }
        })
    }

    /// Run until `done` says so, handing every event to `handler` (turn by
    /// turn, as [`ClientSupervisor::run_turn`]).
    pub fn run<H: Handler>(
        &mut self,
        handler: &mut H,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Result<(), Error> {
        while !done(self) {
            self.run_turn(Some(Duration::from_millis(100)), handler)?;
        }
        Ok(())
    }

    /// Wait, handle every readiness (calling `dispatch` after each), then
    /// timers and commands (and `dispatch` once more).
    fn turn(
        &mut self,
        max_wait: Option<Duration>,
        mut dispatch: impl FnMut(&mut Self),
    ) -> Result<(), Error> {
        let Some(mut poll) = self.poll.take() else {
            return Err(Error::InvalidConfig(
                "run_once/run_turn on an embedded supervisor: drive it with handle_mio_event and process"
                    .into(),
            ));
        };
        let wait = match (self.poll_timeout(), max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut events = self
            .mio_events
            .take()
            .unwrap_or_else(|| Events::with_capacity(1024));
        // Put the Poll back before anything can call into us again.
        let res = poll.poll(&mut events, wait);
        self.poll = Some(poll);
        let result = match res {
            Ok(()) => {
                // One clock read for the whole turn.
                let now = self.read_clock();
                let mut woken = false;
                for ev in events.iter() {
                    if ev.token().0 == self.token_offset {
                        woken = true;
                    } else if self.owns_token(ev.token()) {
                        self.on_mio_event(ev, now);
                        dispatch(self);
                    }
                }
                self.process_at(now, woken);
                self.run_ready(now, &mut dispatch);
                dispatch(self);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(Error::Io(e)),
        };
        self.mio_events = Some(events);
        result
    }

    fn reschedule(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if self.inbox.is_held(slot.owner) {
            return; // its timeout runs after the next read
        }
        let next = slot.next_deadline();
        if next != slot.deadline {
            slot.deadline = next;
            if let Some(at) = next {
                self.timers.schedule(at, key);
            }
        }
    }

    /// Let slot `key`'s cores run, then act on an exit.
    fn drive(&mut self, key: usize, now: Instant) {
        let mut ctx = ctx!(self);
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if ctx.events.is_held(slot.owner)
            && !(ctx.events.is_blocked(slot.owner)
                && slot.transport.as_ref().is_some_and(Transport::is_open))
        {
            // Read again (or closing, or gone): the held timeout runs now.
            ctx.events.set_held(slot.owner, false);
            slot.client.handle_timeout(now);
        }
        let exit = slot.drive(now, &mut ctx);
        match exit {
            Some(reason) => self.on_exit(key, reason, now),
            None => self.reschedule(key),
        }
    }

    fn on_exit(&mut self, key: usize, reason: ExitReason, now: Instant) {
        let slot = &mut self.slots[key];
        let decision = if slot.stopping || self.core.is_terminated() {
            Decision::Remove
        } else {
            self.core.handle_exit(now, slot.config.restart, &reason)
        };
        match decision {
            Decision::Restart { at } => {
                let slot = &mut self.slots[key];
                log::info!("{}: restarting after {reason}", slot.id);
                slot.client.restart(now, at);
                let ev = ClientEvent::Restarted {
                    id: slot.id,
                    restarts: slot.client.metrics().restarts,
                    reason,
                };
                self.inbox.push(slot.owner, ev);
                self.drive(key, now);
            }
            Decision::Remove | Decision::Terminated => self.remove(key, reason),
            Decision::Escalate { restarts, window } => {
                log::error!("restart budget exhausted: {restarts} restarts in {window:?}; stopping all children");
                self.remove(key, reason);
                self.inbox.push(
                    Owner::NONE,
                    ClientEvent::BudgetExhausted { restarts, window },
                );
                let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
                for k in keys {
                    let slot = &mut self.slots[k];
                    slot.stopping = true;
                    slot.client.close(now);
                    self.drive(k, now);
                }
            }
        }
    }

    fn remove(&mut self, key: usize, reason: ExitReason) {
        let mut slot = self.slots.remove(key);
        slot.drop_transport(&self.registry);
        if let (Some(r), Some(lookup)) = (self.resolver.as_mut(), slot.dial.lookup()) {
            r.cancel(lookup); // a stopped client's lookup reaches nobody
        }
        self.ids.remove(&slot.id);
        self.inbox.close(slot.owner);
        let id = slot.id;
        let ev = match reason {
            ExitReason::Normal => ClientEvent::Stopped { id },
            reason => ClientEvent::Failed {
                id,
                reason,
                detail: std::mem::take(&mut slot.detail),
            },
        };
        self.inbox.push(Owner::NONE, ev);
    }

    /// Number of live clients.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// No live clients.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}
