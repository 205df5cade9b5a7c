//! Name resolution off the event loop.
//!
//! `getaddrinfo` blocks, so a [`Resolver`] hands lookups to a small pool of
//! background threads (at most [`MAX_THREADS`], started on demand) and the
//! answers come back through a channel; the event loop is woken with the
//! `mio::Waker` it handed in. IP literals and `localhost` never touch the
//! pool: see [`resolve_inline`].
//!
//! - **Matched answers.** Every lookup gets a fresh [`LookupId`]; an
//!   [`Answer`] carries it together with the host and port it is for, so the
//!   caller can check that an answer belongs to the request it is waiting
//!   for (a slab slot reused by another client never takes an old answer).
//! - **Concurrent, bounded.** Up to [`MAX_THREADS`] lookups run at once:
//!   one slow name does not hold up the others; more wait in a queue.
//! - **Coalesced.** A lookup for a `host:port` already queued or running
//!   joins it instead of queuing a duplicate (1,000 clients to one feed, or
//!   a client retrying while its previous lookup is still out, cost one
//!   `getaddrinfo`).
//! - **Cancellable.** [`Resolver::cancel`] withdraws a lookup: a queued one
//!   is dropped when nobody else waits for it, a running one's answer is no
//!   longer sent to the canceller.
//! - **Pluggable.** [`Resolve`] replaces the system resolver (a pinned
//!   address per host: [`PinnedResolver`]); TLS still verifies the server
//!   certificate against the URL's host name, whatever address it connects to.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use zenws_core::Error;

/// Most lookups running at once (one thread each, started on demand).
pub const MAX_THREADS: usize = 4;

/// Identifies one lookup request of a [`Resolver`]: never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(pub u64);

/// A finished lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The caller's key given to [`Resolver::resolve`] (e.g. its mio token).
    pub key: usize,
    /// The request this answers.
    pub id: LookupId,
    /// The host that was looked up.
    pub host: String,
    /// The port that was asked for.
    pub port: u16,
    /// The addresses, in the resolver's order, or [`Error::Dns`].
    pub result: Result<Vec<SocketAddr>, Error>,
}

/// How host names become addresses: the system resolver by default
/// ([`SystemResolver`]), or the user's (pinned addresses, a DNS-over-HTTPS
/// client, a cache, a test double).
pub trait Resolve: Send + Sync + 'static {
    /// Look `host` up for `port`; may block (it runs on a resolver thread,
    /// never on the event loop). Addresses in order of preference.
    fn lookup(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;

    /// Answer at once if that is possible without blocking (IP literals,
    /// pinned addresses); `None` sends the lookup to the resolver threads.
    /// Runs on the event loop: must not block.
    fn lookup_now(&self, host: &str, port: u16) -> Option<Vec<SocketAddr>> {
        resolve_inline(host, port)
    }
}

/// The system resolver (`getaddrinfo` through `std`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Some(addrs) = resolve_inline(host, port) {
            return Ok(addrs);
        }
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

/// Pinned addresses per host name, the rest through another resolver (the
/// system's by default). A pinned host never touches DNS; with `wss://` the
/// certificate is still verified against the URL's host name.
///
/// ```
/// use zenws_mio::{PinnedResolver, Resolve};
/// let r = PinnedResolver::new().pin("feed.example", "10.0.0.7:9443".parse().unwrap());
/// assert_eq!(r.lookup_now("Feed.Example", 443), Some(vec!["10.0.0.7:9443".parse().unwrap()]));
/// assert_eq!(r.lookup_now("other.example", 443), None);
/// ```
#[derive(Clone)]
pub struct PinnedResolver {
    pins: HashMap<String, Vec<SocketAddr>>,
    fallback: Arc<dyn Resolve>,
}

impl std::fmt::Debug for PinnedResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedResolver")
            .field("pins", &self.pins)
            .finish_non_exhaustive()
    }
}

impl Default for PinnedResolver {
    fn default() -> Self {
        Self::new()
    }
}

impl PinnedResolver {
    /// No pins; every name goes to the system resolver.
    pub fn new() -> Self {
        PinnedResolver {
            pins: HashMap::new(),
            fallback: Arc::new(SystemResolver),
        }
    }

    /// Connect to `addr` (its IP and port, whatever the URL's port) for
    /// `host` (case-insensitive). Pinning a host again adds an address
    /// (tried in order).
    pub fn pin(mut self, host: &str, addr: SocketAddr) -> Self {
        self.pins
            .entry(host.to_ascii_lowercase())
            .or_default()
            .push(addr);
        self
    }

    /// Resolve unpinned names with `fallback` instead of the system resolver.
    pub fn fallback(mut self, fallback: Arc<dyn Resolve>) -> Self {
        self.fallback = fallback;
        self
    }

    fn pinned(&self, host: &str) -> Option<Vec<SocketAddr>> {
        let host = host.strip_suffix('.').unwrap_or(host);
        if let Some(a) = self.pins.get(host) {
            return Some(a.clone());
        }
        self.pins
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(host))
            .map(|(_, a)| a.clone())
    }
}

impl Resolve for PinnedResolver {
    fn lookup(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        match self.pinned(host) {
            Some(a) => Ok(a),
            None => self.fallback.lookup(host, port),
        }
    }

    fn lookup_now(&self, host: &str, port: u16) -> Option<Vec<SocketAddr>> {
        self.pinned(host)
            .or_else(|| self.fallback.lookup_now(host, port))
    }
}

/// A queued or running lookup of one `host:port`, with everyone waiting for it.
struct Job {
    host: String,
    port: u16,
    waiters: Vec<(LookupId, usize)>,
}

#[derive(Default)]
struct Pool {
    queued: VecDeque<Job>,
    /// Lookups running now, by a per-job number (the worker holds the number).
    running: HashMap<u64, Job>,
    next_job: u64,
    threads: usize,
    idle: usize,
    closed: bool,
}

struct Shared {
    pool: Mutex<Pool>,
    work: Condvar,
    resolve: Arc<dyn Resolve>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pool> {
        // A panicking user resolver must not take the others down with it.
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// DNS resolution for one event loop: a bounded pool of threads, answers
/// matched to their requests. See the [module docs](self).
///
/// Dropping it stops the threads after their lookup in progress, if any
/// (they are detached: drop never blocks the event loop).
pub struct Resolver {
    shared: Arc<Shared>,
    next_id: u64,
    tx: mpsc::Sender<Answer>,
    answers: mpsc::Receiver<Answer>,
    waker: Arc<mio::Waker>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver using the system's `getaddrinfo`. `waker` is woken after
    /// every answer. No thread starts before the first lookup that needs one.
    pub fn new(waker: Arc<mio::Waker>) -> Resolver {
        Self::with_resolve(waker, Arc::new(SystemResolver))
    }

    /// A resolver using `resolve` (see [`Resolve`]).
    pub fn with_resolve(waker: Arc<mio::Waker>, resolve: Arc<dyn Resolve>) -> Resolver {
        let (tx, answers) = mpsc::channel();
        Resolver {
            shared: Arc::new(Shared {
                pool: Mutex::new(Pool::default()),
                work: Condvar::new(),
                resolve,
            }),
            next_id: 1,
            tx,
            answers,
            waker,
        }
    }

    /// Answer without blocking if the resolution allows it (IP literals,
    /// `localhost`, pinned hosts): see [`Resolve::lookup_now`].
    pub fn lookup_now(&self, host: &str, port: u16) -> Option<Vec<SocketAddr>> {
        self.shared.resolve.lookup_now(host, port)
    }

    /// Ask for `host:port` on behalf of `key`; the [`Answer`] arrives via
    /// [`Resolver::try_recv`] with the returned id (and the waker fires).
    pub fn resolve(&mut self, key: usize, host: String, port: u16) -> LookupId {
        let id = LookupId(self.next_id);
        self.next_id += 1;
        if let Some(addrs) = self.lookup_now(&host, port) {
            self.answer_locally(Answer {
                key,
                id,
                host,
                port,
                result: nonempty(addrs),
            });
            return id;
        }
        let mut pool = self.shared.lock();
        let same = |j: &&mut Job| j.port == port && j.host == host;
        if let Some(job) = pool.running.values_mut().find(same) {
            job.waiters.push((id, key));
            return id;
        }
        if let Some(job) = pool.queued.iter_mut().find(same) {
            job.waiters.push((id, key));
            return id;
        }
        pool.queued.push_back(Job {
            host,
            port,
            waiters: vec![(id, key)],
        });
        if pool.idle == 0 && pool.threads < MAX_THREADS && self.spawn_worker() {
            pool.threads += 1;
        } else {
            self.shared.work.notify_one();
        }
        if pool.threads == 0 {
            // Not even one thread: answer rather than leave the caller waiting.
            let job = pool.queued.pop_back().expect("just queued");
            drop(pool);
            log::error!("dns: no resolver thread; failing lookup {}", id.0);
            self.answer_locally(Answer {
                key,
                id,
                host: job.host,
                port: job.port,
                result: Err(Error::Dns),
            });
        }
        id
    }

    /// Withdraw lookup `id`: its answer will not be delivered (one already
    /// in the answer queue still is; match answers by id). A queued lookup
    /// nobody else waits for is dropped before it runs.
    pub fn cancel(&mut self, id: LookupId) {
        let mut pool = self.shared.lock();
        for job in pool.running.values_mut() {
            job.waiters.retain(|w| w.0 != id);
        }
        for job in pool.queued.iter_mut() {
            job.waiters.retain(|w| w.0 != id);
        }
        pool.queued.retain(|j| !j.waiters.is_empty());
    }

    /// Lookups queued or running (for tests).
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        let pool = self.shared.lock();
        pool.queued.len() + pool.running.len()
    }

    fn spawn_worker(&self) -> bool {
        let shared = self.shared.clone();
        let tx = self.tx.clone();
        let waker = self.waker.clone();
        thread::Builder::new()
            .name("zenws-dns".into())
            .spawn(move || worker(&shared, &tx, &waker))
            .map_err(|e| log::error!("dns: cannot start a resolver thread: {e}"))
            .is_ok()
    }

    fn answer_locally(&self, answer: Answer) {
        // Cannot fail: we own the receiver.
        let _ = self.tx.send(answer);
        if let Err(e) = self.waker.wake() {
            log::warn!("dns: waking the event loop failed: {e}");
        }
    }

    /// Take one finished lookup, if any. Call until `None` after each
    /// waker event.
    pub fn try_recv(&self) -> Option<Answer> {
        self.answers.try_recv().ok()
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let mut pool = self.shared.lock();
        pool.closed = true;
        pool.queued.clear();
        drop(pool);
        self.shared.work.notify_all();
    }
}

fn nonempty(addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Error> {
    if addrs.is_empty() {
        Err(Error::Dns)
    } else {
        Ok(addrs)
    }
}

fn worker(shared: &Shared, tx: &mpsc::Sender<Answer>, waker: &mio::Waker) {
    let mut pool = shared.lock();
    loop {
        if pool.closed {
            break;
        }
        let Some(job) = pool.queued.pop_front() else {
            pool.idle += 1;
            pool = shared.work.wait(pool).unwrap_or_else(|p| p.into_inner());
            pool.idle -= 1;
            continue;
        };
        let (host, port) = (job.host.clone(), job.port);
        let n = pool.next_job;
        pool.next_job += 1;
        pool.running.insert(n, job);
        drop(pool);
        let result = match shared.resolve.lookup(&host, port) {
            Ok(a) => nonempty(a),
            Err(e) => {
                log::debug!("dns: {host}: {e}");
                Err(Error::Dns)
            }
        };
        pool = shared.lock();
        let job = pool.running.remove(&n).expect("the running job");
        if pool.closed {
            break;
        }
        let mut sent = false;
        for (id, key) in job.waiters {
            let answer = Answer {
                key,
                id,
                host: job.host.clone(),
                port,
                result: result.clone(),
            };
            sent |= tx.send(answer).is_ok();
        }
        if sent {
            if let Err(e) = waker.wake() {
                log::warn!("dns: waking the event loop failed: {e}");
            }
        }
    }
    pool.threads -= 1;
    log::debug!("dns: resolver thread exits");
}

/// Resolve without a lookup when possible: IP literals (IPv6 with or without
/// brackets) and `localhost` (→ `127.0.0.1`). `None` means "ask the resolver".
pub fn resolve_inline(host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(vec![SocketAddr::new(ip, port)]);
    }
    let name = bare.strip_suffix('.').unwrap_or(bare);
    if name.eq_ignore_ascii_case("localhost") {
        return Some(vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)]);
    }
    None
}

/// Order addresses for connection attempts as RFC 8305 §4 does: starting
/// with the family of the resolver's first answer, alternate IPv6 and IPv4,
/// each family keeping the resolver's order. A broken family then costs one
/// failed attempt before the other is tried, not all of its addresses.
pub fn interleave_families(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return addrs;
    };
    let first_v6 = first.is_ipv6();
    let (mut a, mut b): (VecDeque<_>, VecDeque<_>) =
        addrs.into_iter().partition(|x| x.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(a.len() + b.len());
    loop {
        match (a.pop_front(), b.pop_front()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn inline_literals() {
        assert_eq!(
            resolve_inline("127.0.0.1", 80),
            Some(vec!["127.0.0.1:80".parse().unwrap()])
        );
        assert_eq!(
            resolve_inline("::1", 443),
            Some(vec!["[::1]:443".parse().unwrap()])
        );
        assert_eq!(
            resolve_inline("[::1]", 443),
            Some(vec!["[::1]:443".parse().unwrap()])
        );
        assert_eq!(
            resolve_inline("LocalHost.", 9),
            Some(vec!["127.0.0.1:9".parse().unwrap()])
        );
        assert_eq!(resolve_inline("example.com", 80), None);
        assert_eq!(resolve_inline("", 80), None);
    }

    #[test]
    fn interleaves_families_starting_with_the_first() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let got = interleave_families(vec![
            a("[::1]:1"),
            a("[::2]:1"),
            a("[::3]:1"),
            a("10.0.0.1:1"),
            a("10.0.0.2:1"),
        ]);
        assert_eq!(
            got,
            vec![
                a("[::1]:1"),
                a("10.0.0.1:1"),
                a("[::2]:1"),
                a("10.0.0.2:1"),
                a("[::3]:1")
            ]
        );
        let v4_first = interleave_families(vec![a("10.0.0.1:1"), a("10.0.0.2:1"), a("[::1]:1")]);
        assert_eq!(
            v4_first,
            vec![a("10.0.0.1:1"), a("[::1]:1"), a("10.0.0.2:1")]
        );
        assert!(interleave_families(vec![]).is_empty());
    }

    fn waker() -> (mio::Poll, Arc<mio::Waker>) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(7)).unwrap());
        (poll, waker)
    }

    fn collect(poll: &mut mio::Poll, r: &Resolver, n: usize) -> Vec<Answer> {
        let mut events = mio::Events::with_capacity(8);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < n {
            assert!(
                Instant::now() < deadline,
                "resolver did not answer: {got:?}"
            );
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            while let Some(a) = r.try_recv() {
                got.push(a);
            }
        }
        got.sort_by_key(|a| a.id);
        got
    }

    #[test]
    fn thread_answers_and_wakes() {
        let (mut poll, waker) = waker();
        let mut resolver = Resolver::new(waker);
        let i1 = resolver.resolve(1, "127.0.0.1".into(), 1234);
        // `.invalid` is reserved (RFC 6761): guaranteed not to resolve, and
        // resolvers answer it locally without a network round trip.
        let i2 = resolver.resolve(2, "name.invalid".into(), 80);
        let i3 = resolver.resolve(3, "localhost".into(), 5);
        assert!(i1 < i2 && i2 < i3, "fresh ids");
        let got = collect(&mut poll, &resolver, 3);
        assert_eq!(
            (got[0].key, got[0].id, &got[0].result),
            (1, i1, &Ok(vec!["127.0.0.1:1234".parse().unwrap()]))
        );
        assert_eq!(
            (got[1].key, got[1].id, &got[1].result),
            (2, i2, &Err(Error::Dns))
        );
        assert_eq!((got[1].host.as_str(), got[1].port), ("name.invalid", 80));
        assert_eq!(
            (got[2].key, got[2].id, &got[2].result),
            (3, i3, &Ok(vec!["127.0.0.1:5".parse().unwrap()]))
        );
    }

    /// A resolver whose lookups block until released; counts lookups.
    struct Gate {
        open: Mutex<Vec<String>>,
        cv: Condvar,
        started: AtomicUsize,
        running: AtomicUsize,
        max_running: AtomicUsize,
    }

    impl Gate {
        fn new() -> Arc<Gate> {
            Arc::new(Gate {
                open: Mutex::new(Vec::new()),
                cv: Condvar::new(),
                started: AtomicUsize::new(0),
                running: AtomicUsize::new(0),
                max_running: AtomicUsize::new(0),
            })
        }
        fn release(&self, host: &str) {
            self.open.lock().unwrap().push(host.to_string());
            self.cv.notify_all();
        }
        fn wait_started(&self, n: usize) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.started.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "lookups did not start");
                thread::yield_now();
            }
        }
    }

    impl Resolve for Gate {
        fn lookup(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
            self.started.fetch_add(1, Ordering::SeqCst);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            let mut open = self.open.lock().unwrap();
            while !open.iter().any(|h| h == host) {
                open = self.cv.wait(open).unwrap();
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
            Ok(vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)])
        }
    }

    #[test]
    fn slow_name_does_not_block_others_and_pool_is_bounded() {
        let (mut poll, waker) = waker();
        let gate = Gate::new();
        let mut r = Resolver::with_resolve(waker, gate.clone());
        let slow = r.resolve(0, "slow.test".into(), 1);
        for i in 1..=6 {
            r.resolve(i, format!("h{i}.test"), 1);
        }
        // The slow one and three others run; two wait for a thread.
        gate.wait_started(MAX_THREADS);
        assert_eq!(r.pending(), 7);
        for i in 1..=6 {
            gate.release(&format!("h{i}.test"));
        }
        let got = collect(&mut poll, &r, 6);
        assert!(got.iter().all(|a| a.id != slow), "{got:?}");
        assert!(gate.max_running.load(Ordering::SeqCst) <= MAX_THREADS);
        assert_eq!(r.pending(), 1, "only the slow lookup is left");
        gate.release("slow.test");
        let got = collect(&mut poll, &r, 1);
        assert_eq!(got[0].id, slow);
    }

    #[test]
    fn duplicates_coalesce_and_cancelled_lookups_are_not_answered() {
        let (mut poll, waker) = waker();
        let gate = Gate::new();
        let mut r = Resolver::with_resolve(waker, gate.clone());
        // Occupy every thread so the next lookups stay queued.
        for i in 0..MAX_THREADS {
            r.resolve(100 + i, format!("busy{i}.test"), 1);
        }
        gate.wait_started(MAX_THREADS);
        let a = r.resolve(1, "same.test".into(), 443);
        let b = r.resolve(2, "same.test".into(), 443);
        let c = r.resolve(3, "same.test".into(), 80); // another port: another lookup
        let d = r.resolve(4, "gone.test".into(), 443);
        assert_eq!(r.pending(), MAX_THREADS + 3, "a and b share one lookup");
        r.cancel(d);
        assert_eq!(
            r.pending(),
            MAX_THREADS + 2,
            "a cancelled queued lookup is dropped"
        );
        r.cancel(b);
        for h in ["same.test", "gone.test"] {
            gate.release(h);
        }
        for i in 0..MAX_THREADS {
            gate.release(&format!("busy{i}.test"));
        }
        let got = collect(&mut poll, &r, MAX_THREADS + 2);
        let ids: Vec<LookupId> = got.iter().map(|x| x.id).collect();
        assert!(ids.contains(&a) && ids.contains(&c), "{got:?}");
        assert!(!ids.contains(&b) && !ids.contains(&d), "{got:?}");
        let ac = got.iter().find(|x| x.id == a).unwrap();
        assert_eq!((ac.key, ac.host.as_str(), ac.port), (1, "same.test", 443));
        // Only one lookup ran for a and b; none for the cancelled d.
        assert_eq!(gate.started.load(Ordering::SeqCst), MAX_THREADS + 2);
        // Nothing else arrives.
        let mut events = mio::Events::with_capacity(8);
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .unwrap();
        assert!(r.try_recv().is_none());
    }

    #[test]
    fn pinned_hosts_answer_inline_and_others_fall_back() {
        let pin: SocketAddr = "127.0.0.1:4444".parse().unwrap();
        let r = PinnedResolver::new().pin("Pinned.Test", pin);
        assert_eq!(r.lookup_now("pinned.test", 1), Some(vec![pin]));
        assert_eq!(r.lookup_now("pinned.test.", 1), Some(vec![pin]));
        assert_eq!(r.lookup("PINNED.test", 1).unwrap(), vec![pin]);
        assert_eq!(r.lookup_now("other.test", 1), None);
        assert_eq!(
            r.lookup_now("127.0.0.2", 9),
            Some(vec!["127.0.0.2:9".parse().unwrap()])
        );
        assert!(r.lookup("name.invalid", 1).is_err());
    }
}
