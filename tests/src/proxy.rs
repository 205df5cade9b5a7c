//! A TCP fault proxy: sits between a client and an upstream server on
//! loopback and forwards bytes both ways, with a [`ProxyMode`] that can be
//! switched at runtime and affects live and new connections alike.
//!
//! It works below TLS and WebSocket, so it serves `ws://` and `wss://`
//! upstreams equally ([`FaultProxy::url`], [`FaultProxy::tls_url`]). Each
//! client connection gets its own upstream connection, opened when the
//! client connects; if the upstream refuses, the client connection is closed.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::acceptor::{lock, wait_until, Acceptor, Conn};
use crate::ws_util::{garbage_bytes, POLL};

/// What the proxy does with traffic. Set with [`FaultProxy::set_mode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward everything unchanged (the default).
    PassThrough,
    /// Hold every chunk read (either direction) for this long before
    /// forwarding it: added latency, and throughput drops accordingly.
    Delay(Duration),
    /// Stop forwarding both ways; sockets stay open. Bytes wait in the
    /// kernel buffers (a stall, not a loss): switching back to another mode
    /// delivers them.
    Blackhole,
    /// Reset (RST via SO_LINGER 0) both sides of every live connection, and
    /// every new one as soon as it is accepted.
    Reset,
    /// Close (FIN) both sides of every live connection, and every new one
    /// as soon as it is accepted.
    Close,
    /// Limit the server→client direction to about this many bytes per second.
    Throttle(u64),
    /// Forward this many more server→client bytes (counted from when the
    /// mode is set, or from accept for new connections), then close both
    /// sides: cuts a frame, or the upgrade response, in half.
    TruncateAfter(usize),
    /// Write 64 garbage bytes (see [`crate::garbage_bytes`]) to each client
    /// once — at once for live connections, right at accept for new ones
    /// (which breaks their upgrade) — then pass through.
    InjectGarbage,
    /// Stop listening (connects are refused); live connections keep passing
    /// through. Any other mode listens again on the same port.
    Refuse,
}

struct Pair {
    client: TcpStream,
    upstream: TcpStream,
    done: AtomicBool,
}

impl Pair {
    fn close(&self) {
        self.done.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }

    /// Arrange for RST on both sides: the pumps notice `done` and drop the sockets.
    fn reset(&self) {
        let _ = socket2::SockRef::from(&self.client).set_linger(Some(Duration::ZERO));
        let _ = socket2::SockRef::from(&self.upstream).set_linger(Some(Duration::ZERO));
        self.done.store(true, Ordering::SeqCst);
    }
}

struct State {
    mode: Mutex<(ProxyMode, u64)>,
    upstream: Mutex<SocketAddr>,
    pairs: Mutex<HashMap<usize, Arc<Pair>>>,
    to_server: AtomicU64,
    to_client: AtomicU64,
    upstream_failures: AtomicUsize,
}

impl State {
    fn mode(&self) -> (ProxyMode, u64) {
        lock(&self.mode).clone()
    }
}

/// The fault proxy (see the module docs). Stops when dropped.
pub struct FaultProxy {
    acceptor: Acceptor,
    state: Arc<State>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("mode", &self.mode())
            .field("upstream", &self.upstream())
            .field("acceptor", &self.acceptor)
            .finish()
    }
}

impl FaultProxy {
    /// Listen on `127.0.0.1:0` and forward to `upstream`, in [`ProxyMode::PassThrough`].
    pub fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let state = Arc::new(State {
            mode: Mutex::new((ProxyMode::PassThrough, 0)),
            upstream: Mutex::new(upstream),
            pairs: Mutex::new(HashMap::new()),
            to_server: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            upstream_failures: AtomicUsize::new(0),
        });
        let st = state.clone();
        let acceptor = Acceptor::start("proxy", move |tcp, conn| serve(tcp, conn, &st))?;
        Ok(FaultProxy { acceptor, state })
    }

    /// `127.0.0.1:PORT` (stable across [`ProxyMode::Refuse`]).
    pub fn addr(&self) -> SocketAddr {
        self.acceptor.addr()
    }

    /// `ws://127.0.0.1:PORT{path}`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr())
    }

    /// `wss://localhost:PORT{path}`, for a TLS upstream.
    pub fn tls_url(&self, path: &str) -> String {
        format!("wss://localhost:{}{path}", self.addr().port())
    }

    /// The upstream address.
    pub fn upstream(&self) -> SocketAddr {
        *lock(&self.state.upstream)
    }

    /// Forward new connections to another upstream (live ones keep theirs).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.state.upstream) = upstream;
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        self.state.mode().0
    }

    /// Switch mode; takes effect on live connections within a few ms.
    pub fn set_mode(&self, mode: ProxyMode) {
        {
            let mut m = lock(&self.state.mode);
            m.0 = mode.clone();
            m.1 += 1;
        }
        log::debug!("proxy {}: mode {mode:?}", self.addr());
        if mode == ProxyMode::Refuse {
            self.acceptor.pause_listening();
        } else if let Err(e) = self.acceptor.resume_listening() {
            log::warn!("proxy {}: cannot listen again: {e}", self.addr());
        }
        match mode {
            ProxyMode::Reset => lock(&self.state.pairs).values().for_each(|p| p.reset()),
            ProxyMode::Close => lock(&self.state.pairs).values().for_each(|p| p.close()),
            _ => {}
        }
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> usize {
        self.acceptor.connections_accepted()
    }

    /// Client connections currently open.
    pub fn live_connections(&self) -> usize {
        self.acceptor.live_connections()
    }

    /// Wait up to `timeout` until `n` client connections are open.
    pub fn wait_live_connections(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.live_connections() == n)
    }

    /// Close (FIN) both sides of every live connection; mode unchanged.
    pub fn kill_connections(&self) {
        lock(&self.state.pairs).values().for_each(|p| p.close());
        self.acceptor.kill_connections();
    }

    /// Bytes forwarded client→server so far.
    pub fn bytes_to_server(&self) -> u64 {
        self.state.to_server.load(Ordering::SeqCst)
    }

    /// Bytes forwarded server→client so far.
    pub fn bytes_to_client(&self) -> u64 {
        self.state.to_client.load(Ordering::SeqCst)
    }

    /// Client connections closed because the upstream could not be reached.
    pub fn upstream_failures(&self) -> usize {
        self.state.upstream_failures.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.acceptor.pause_listening();
        lock(&self.state.pairs).values().for_each(|p| p.close());
        // The acceptor field's own drop then kills and waits for handlers.
    }
}

struct PairGuard<'a> {
    state: &'a State,
    index: usize,
}

impl Drop for PairGuard<'_> {
    fn drop(&mut self) {
        lock(&self.state.pairs).remove(&self.index);
    }
}

fn serve(client: TcpStream, conn: Conn, st: &Arc<State>) {
    match st.mode().0 {
        ProxyMode::Reset => {
            let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
            return;
        }
        ProxyMode::Close | ProxyMode::Refuse => return,
        _ => {}
    }
    let upstream_addr = *lock(&st.upstream);
    let upstream = match TcpStream::connect_timeout(&upstream_addr, Duration::from_secs(1)) {
        Ok(u) => u,
        Err(e) => {
            log::debug!("proxy conn {}: upstream {upstream_addr}: {e}", conn.index());
            st.upstream_failures.fetch_add(1, Ordering::SeqCst);
            return;
        }
    };
    for s in [&client, &upstream] {
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(POLL));
    }
    let pair = Arc::new(Pair {
        client,
        upstream,
        done: AtomicBool::new(false),
    });
    lock(&st.pairs).insert(conn.index(), pair.clone());
    let _guard = PairGuard {
        state: st,
        index: conn.index(),
    };
    let (p2, st2, c2) = (pair.clone(), st.clone(), conn.clone());
    let up = thread::Builder::new()
        .name(format!("proxy-up-{}", conn.index()))
        .spawn(move || pump(&p2, &st2, false, &c2));
    pump(&pair, st, true, &conn);
    match up {
        Ok(h) => {
            let _ = h.join();
        }
        Err(_) => pair.close(),
    }
}

/// Per-direction pump state.
struct Pump<'a> {
    pair: &'a Pair,
    st: &'a State,
    conn: &'a Conn,
    down: bool,
    seen_epoch: u64,
    truncate_left: Option<usize>,
}

impl Pump<'_> {
    fn stopped(&self) -> bool {
        self.pair.done.load(Ordering::SeqCst) || self.conn.is_killed()
    }

    /// Current mode; applies one-shot effects when it changed. `None` = stop.
    fn sync_mode(&mut self) -> Option<ProxyMode> {
        let (mode, epoch) = self.st.mode();
        if self.down && epoch != self.seen_epoch {
            self.seen_epoch = epoch;
            self.truncate_left = match mode {
                ProxyMode::TruncateAfter(n) => Some(n),
                _ => None,
            };
            if mode == ProxyMode::InjectGarbage
                && (&self.pair.client).write_all(&garbage_bytes(64)).is_err()
            {
                self.pair.close();
                return None;
            }
        }
        if self.truncate_left == Some(0) {
            self.pair.close();
            return None;
        }
        match mode {
            ProxyMode::Reset | ProxyMode::Close => None,
            m => Some(m),
        }
    }

    /// Current mode once it is not Blackhole (waits it out). `None` = stop.
    fn mode_unblocked(&mut self) -> Option<ProxyMode> {
        loop {
            if self.stopped() {
                return None;
            }
            match self.sync_mode()? {
                ProxyMode::Blackhole => thread::sleep(POLL),
                m => return Some(m),
            }
        }
    }
}

/// Forward one direction: `down` = server→client.
fn pump(pair: &Pair, st: &State, down: bool, conn: &Conn) {
    let (mut src, mut dst) = if down {
        (&pair.upstream, &pair.client)
    } else {
        (&pair.client, &pair.upstream)
    };
    let counter = if down { &st.to_client } else { &st.to_server };
    let mut p = Pump {
        pair,
        st,
        conn,
        down,
        seen_epoch: u64::MAX,
        truncate_left: None,
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Some(mode) = p.mode_unblocked() else {
            return;
        };
        let mut limit = buf.len();
        if let (ProxyMode::Throttle(bps), true) = (&mode, down) {
            limit = ((bps / 50) as usize).clamp(1, buf.len());
        }
        let n = match src.read(&mut buf[..limit]) {
            Ok(0) => {
                // Propagate the half-close.
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => {
                pair.close();
                return;
            }
        };
        // The mode may have changed while the read was waiting.
        let Some(mode) = p.mode_unblocked() else {
            return;
        };
        if let ProxyMode::Delay(d) = mode {
            thread::sleep(d);
        }
        let n = p.truncate_left.map_or(n, |left| n.min(left));
        let chunk = match mode {
            ProxyMode::Throttle(bps) if down => ((bps / 50) as usize).max(1),
            _ => n.max(1),
        };
        for piece in buf[..n].chunks(chunk) {
            if let ProxyMode::Throttle(bps) = mode {
                if down && bps > 0 {
                    thread::sleep(Duration::from_secs_f64(piece.len() as f64 / bps as f64));
                }
            }
            if p.stopped() || dst.write_all(piece).is_err() {
                pair.close();
                return;
            }
            counter.fetch_add(piece.len() as u64, Ordering::SeqCst);
        }
        if let Some(left) = p.truncate_left.as_mut() {
            *left -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocking_client::{connect, connect_with, is_timeout, read_data, read_text};
    use crate::{EchoOptions, EchoServer, TestPki};
    use std::time::Instant;
    use tungstenite::{Error, Message};

    const T: Duration = Duration::from_secs(2);

    fn setup() -> (EchoServer, FaultProxy) {
        let echo = EchoServer::plain().unwrap();
        let proxy = FaultProxy::start(echo.addr()).unwrap();
        (echo, proxy)
    }

    #[test]
    fn passthrough_echo() {
        let (echo, proxy) = setup();
        let mut ws = connect(&proxy.url("/p?q=1"), None).unwrap();
        ws.send(Message::text("via proxy")).unwrap();
        assert_eq!(read_text(&mut ws).unwrap(), "via proxy");
        assert_eq!(proxy.connections(), 1);
        assert_eq!(echo.last_request_path().unwrap(), "/p?q=1");
        assert!(proxy.bytes_to_server() > 0 && proxy.bytes_to_client() > 0);
    }

    #[test]
    fn passthrough_tls() {
        let pki = TestPki::generate();
        let echo = EchoServer::start(EchoOptions::tls(pki.server_config())).unwrap();
        let proxy = FaultProxy::start(echo.addr()).unwrap();
        let mut ws = connect(&proxy.tls_url("/"), Some(pki.client_config())).unwrap();
        ws.send(Message::text("tls via proxy")).unwrap();
        assert_eq!(read_text(&mut ws).unwrap(), "tls via proxy");
    }

    #[test]
    fn blackhole_stalls_then_recovers() {
        let (_echo, proxy) = setup();
        let mut ws = connect_with(&proxy.url("/"), None, &[], Duration::from_millis(150)).unwrap();
        ws.send(Message::text("a")).unwrap();
        assert_eq!(read_text(&mut ws).unwrap(), "a");
        proxy.set_mode(ProxyMode::Blackhole);
        thread::sleep(Duration::from_millis(20));
        ws.send(Message::text("b")).unwrap();
        let err = ws.read().unwrap_err();
        assert!(is_timeout(&err), "{err:?}");
        assert_eq!(proxy.live_connections(), 1);
        proxy.set_mode(ProxyMode::PassThrough);
        assert_eq!(read_text(&mut ws).unwrap(), "b");
    }

    #[test]
    fn reset_live_and_new_connections() {
        let (_echo, proxy) = setup();
        let mut ws = connect(&proxy.url("/"), None).unwrap();
        proxy.set_mode(ProxyMode::Reset);
        match ws.read().unwrap_err() {
            Error::Io(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            other => panic!("{other:?}"),
        }
        assert!(connect(&proxy.url("/"), None).is_err());
        assert_eq!(proxy.connections(), 2);
        proxy.set_mode(ProxyMode::PassThrough);
        assert!(connect(&proxy.url("/"), None).is_ok());
    }

    #[test]
    fn close_live_connections() {
        let (_echo, proxy) = setup();
        let mut ws = connect(&proxy.url("/"), None).unwrap();
        proxy.set_mode(ProxyMode::Close);
        let err = ws.read().unwrap_err();
        assert!(matches!(err, Error::Protocol(_) | Error::Io(_)), "{err:?}");
        assert!(proxy.wait_live_connections(0, T));
    }

    #[test]
    fn truncate_cuts_a_frame() {
        let (_echo, proxy) = setup();
        let mut ws = connect(&proxy.url("/"), None).unwrap();
        proxy.set_mode(ProxyMode::TruncateAfter(100));
        ws.send(Message::binary(vec![5u8; 10_000])).unwrap();
        let res = read_data(&mut ws);
        assert!(
            matches!(res, Err(Error::Protocol(_)) | Err(Error::Io(_))),
            "expected a cut frame, got {:?}",
            res.map(|m| m.len())
        );
        assert!(proxy.bytes_to_client() < 1000);
    }

    #[test]
    fn inject_garbage_breaks_the_stream() {
        let (_echo, proxy) = setup();
        let mut ws = connect(&proxy.url("/"), None).unwrap();
        proxy.set_mode(ProxyMode::InjectGarbage);
        let err = ws.read().unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");
        // New connections get garbage before the upgrade response.
        assert!(connect(&proxy.url("/"), None).is_err());
    }

    #[test]
    fn refuse_stops_listening_keeps_live() {
        let (_echo, proxy) = setup();
        let mut ws = connect(&proxy.url("/"), None).unwrap();
        proxy.set_mode(ProxyMode::Refuse);
        assert!(TcpStream::connect(proxy.addr()).is_err());
        ws.send(Message::text("live")).unwrap();
        assert_eq!(read_text(&mut ws).unwrap(), "live");
        proxy.set_mode(ProxyMode::PassThrough);
        assert!(connect(&proxy.url("/"), None).is_ok());
    }

    #[test]
    fn delay_and_throttle_slow_things_down() {
        let (_echo, proxy) = setup();
        let mut ws = connect(&proxy.url("/"), None).unwrap();
        proxy.set_mode(ProxyMode::Delay(Duration::from_millis(60)));
        let t0 = Instant::now();
        ws.send(Message::text("slow")).unwrap();
        assert_eq!(read_text(&mut ws).unwrap(), "slow");
        assert!(
            t0.elapsed() >= Duration::from_millis(120),
            "{:?}",
            t0.elapsed()
        );

        proxy.set_mode(ProxyMode::Throttle(50_000));
        let t0 = Instant::now();
        ws.send(Message::binary(vec![1u8; 10_000])).unwrap();
        assert_eq!(read_data(&mut ws).unwrap().len(), 10_000);
        assert!(
            t0.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn upstream_down_closes_client() {
        let (echo, proxy) = setup();
        echo.stop();
        assert!(connect(&proxy.url("/"), None).is_err());
        assert_eq!(proxy.upstream_failures(), 1);
        echo.restart().unwrap();
        assert!(connect(&proxy.url("/"), None).is_ok());
    }
}
