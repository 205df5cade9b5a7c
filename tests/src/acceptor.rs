//! The listener machinery every server in this crate is built on.
//!
//! An [`Acceptor`] binds `127.0.0.1:0`, accepts connections on a background
//! thread (non-blocking accept polled every few milliseconds, so stopping is
//! prompt and never needs a self-connect), and runs a handler on one thread
//! per connection. It counts connections, keeps a handle on every live one
//! so it can kill them, can stop listening (freeing the port) and listen
//! again on the same port, and cleans all of that up when dropped.
//!
//! Handlers should poll [`Conn::is_killed`] at least every few tens of
//! milliseconds (typically by giving their socket a short read timeout) and
//! return promptly once it is true.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often the accept loop polls its non-blocking listener.
const ACCEPT_POLL: Duration = Duration::from_millis(2);
/// How long [`Acceptor::restart`] retries binding the old port.
const REBIND_FOR: Duration = Duration::from_secs(3);
/// How long dropping an [`Acceptor`] waits for connection threads.
const DROP_WAIT: Duration = Duration::from_secs(2);

/// Lock a mutex, ignoring poisoning (a panicking test thread must not
/// cascade into every other user of a server).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a connection handler knows about its connection.
#[derive(Debug, Clone)]
pub struct Conn {
    index: usize,
    peer: SocketAddr,
    killed: Arc<AtomicBool>,
}

impl Conn {
    /// 0-based position of this connection in accept order (stable across
    /// [`Acceptor::restart`]): the first connection ever accepted is 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// True once the server has killed this connection or is stopping:
    /// the handler should return.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}

/// A connection handler: gets the accepted (blocking) stream and its [`Conn`].
pub type Handler = dyn Fn(TcpStream, Conn) + Send + Sync + 'static;

struct Live {
    stream: TcpStream,
    killed: Arc<AtomicBool>,
}

struct Shared {
    name: String,
    handler: Box<Handler>,
    accepted: AtomicUsize,
    live: Mutex<HashMap<usize, Live>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct ListenerThread {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

/// A loopback TCP listener that runs a handler per connection (see the
/// module docs). Stops listening and kills its connections when dropped.
pub struct Acceptor {
    shared: Arc<Shared>,
    addr: SocketAddr,
    listener: Mutex<Option<ListenerThread>>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .field("listening", &self.is_listening())
            .field("accepted", &self.connections_accepted())
            .field("live", &self.live_connections())
            .finish()
    }
}

/// Bind a listener with SO_REUSEADDR (so a restarted server can take its old
/// port back while old connections sit in TIME_WAIT), non-blocking.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

impl Acceptor {
    /// Bind `127.0.0.1:0` and start accepting; `name` names the threads.
    pub fn start(
        name: &str,
        handler: impl Fn(TcpStream, Conn) + Send + Sync + 'static,
    ) -> io::Result<Acceptor> {
        let listener = bind(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: name.to_string(),
            handler: Box::new(handler),
            accepted: AtomicUsize::new(0),
            live: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
        });
        let acceptor = Acceptor {
            shared,
            addr,
            listener: Mutex::new(None),
        };
        acceptor.spawn_listener(listener)?;
        log::debug!("{name}: listening on {addr}");
        Ok(acceptor)
    }

    fn spawn_listener(&self, listener: TcpListener) -> io::Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = self.shared.clone();
        let stop2 = stop.clone();
        let handle = thread::Builder::new()
            .name(format!("{}-accept", self.shared.name))
            .spawn(move || accept_loop(listener, shared, stop2))?;
        *lock(&self.listener) = Some(ListenerThread { stop, handle });
        Ok(())
    }

    /// The bound address (always `127.0.0.1:PORT`; the port survives restarts).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Total connections accepted since start (including killed ones).
    pub fn connections_accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections whose handler is still running.
    pub fn live_connections(&self) -> usize {
        lock(&self.shared.live).len()
    }

    /// Whether the listening socket is open.
    pub fn is_listening(&self) -> bool {
        lock(&self.listener).is_some()
    }

    /// Abruptly shut down (FIN both ways, no WebSocket close frame) every
    /// live connection; the listener keeps accepting.
    pub fn kill_connections(&self) {
        for live in lock(&self.shared.live).values() {
            live.killed.store(true, Ordering::SeqCst);
            let _ = live.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Reset (TCP RST via SO_LINGER 0) every live connection: the handler
    /// sees [`Conn::is_killed`] and returns, and the final close of the
    /// socket sends RST instead of FIN. Takes effect within the handler's
    /// poll interval.
    pub fn reset_connections(&self) {
        for live in lock(&self.shared.live).values() {
            let _ = socket2::SockRef::from(&live.stream).set_linger(Some(Duration::ZERO));
            live.killed.store(true, Ordering::SeqCst);
        }
    }

    /// Stop listening (the port is freed: connects are refused) but leave
    /// live connections alone.
    pub fn pause_listening(&self) {
        let taken = lock(&self.listener).take();
        if let Some(t) = taken {
            t.stop.store(true, Ordering::SeqCst);
            let _ = t.handle.join();
            log::debug!("{}: stopped listening on {}", self.shared.name, self.addr);
        }
    }

    /// Listen again on the same port (no-op if already listening). Retries
    /// the bind for a few seconds in case the port is briefly unavailable.
    pub fn resume_listening(&self) -> io::Result<()> {
        if self.is_listening() {
            return Ok(());
        }
        let deadline = Instant::now() + REBIND_FOR;
        let listener = loop {
            match bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    log::debug!(
                        "{}: rebind {} failed: {e}; retrying",
                        self.shared.name,
                        self.addr
                    );
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        self.spawn_listener(listener)?;
        log::debug!("{}: listening again on {}", self.shared.name, self.addr);
        Ok(())
    }

    /// Stop listening and kill every live connection. The port is freed.
    pub fn stop(&self) {
        self.pause_listening();
        self.kill_connections();
    }

    /// Listen again on the same port after [`Acceptor::stop`].
    pub fn restart(&self) -> io::Result<()> {
        self.resume_listening()
    }

    /// Wait until no connection is live, up to `timeout`. True if none is.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.live_connections() == 0)
    }
}

/// Poll `cond` every millisecond until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop();
        let handles: Vec<JoinHandle<()>> = lock(&self.shared.threads).drain(..).collect();
        let deadline = Instant::now() + DROP_WAIT;
        for h in handles {
            while !h.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                log::warn!(
                    "{}: a connection thread did not stop in time",
                    self.shared.name
                );
            }
        }
    }
}

/// Removes a connection from the live set when its handler ends (even by panic).
struct LiveGuard {
    shared: Arc<Shared>,
    index: usize,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        lock(&self.shared.live).remove(&self.index);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => spawn_connection(&shared, stream, peer),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(e) => {
                log::debug!("{}: accept error: {e}", shared.name);
                thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

fn spawn_connection(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let index = shared.accepted.fetch_add(1, Ordering::SeqCst);
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let clone = match stream.try_clone() {
        Ok(c) => c,
        Err(e) => {
            log::warn!("{}: cannot clone accepted socket: {e}", shared.name);
            return;
        }
    };
    let killed = Arc::new(AtomicBool::new(false));
    lock(&shared.live).insert(
        index,
        Live {
            stream: clone,
            killed: killed.clone(),
        },
    );
    let conn = Conn {
        index,
        peer,
        killed,
    };
    let shared2 = shared.clone();
    let spawned = thread::Builder::new()
        .name(format!("{}-conn-{index}", shared.name))
        .spawn(move || {
            let _guard = LiveGuard {
                shared: shared2.clone(),
                index,
            };
            (shared2.handler)(stream, conn);
        });
    match spawned {
        Ok(h) => {
            let mut threads = lock(&shared.threads);
            threads.retain(|t| !t.is_finished());
            threads.push(h);
        }
        Err(e) => {
            log::warn!("{}: cannot spawn connection thread: {e}", shared.name);
            lock(&shared.live).remove(&index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_kills_connections_and_waits_for_handlers() {
        let running = Arc::new(AtomicUsize::new(0));
        let r = running.clone();
        let acceptor = Acceptor::start("t", move |_tcp, conn| {
            r.fetch_add(1, Ordering::SeqCst);
            while !conn.is_killed() {
                thread::sleep(Duration::from_millis(2));
            }
            r.fetch_sub(1, Ordering::SeqCst);
        })
        .unwrap();
        let addr = acceptor.addr();
        let _clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        assert!(wait_until(Duration::from_secs(2), || running
            .load(Ordering::SeqCst)
            == 3));
        assert_eq!(acceptor.connections_accepted(), 3);
        drop(acceptor);
        assert_eq!(running.load(Ordering::SeqCst), 0);
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn pause_and_resume_keep_the_port() {
        let acceptor = Acceptor::start("t", |_tcp, _conn| {}).unwrap();
        let addr = acceptor.addr();
        acceptor.pause_listening();
        assert!(!acceptor.is_listening());
        assert!(TcpStream::connect(addr).is_err());
        acceptor.resume_listening().unwrap();
        assert!(TcpStream::connect(addr).is_ok());
        assert_eq!(acceptor.addr(), addr);
    }
}
