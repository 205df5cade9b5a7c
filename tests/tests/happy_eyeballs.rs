//! Issue 11 item 7: every address is tried, raced as RFC 8305 §5 does (a
//! Connection Attempt Delay of 250 ms), against real loopback sockets.
//!
//! A host name resolves (a [`PinnedResolver`]) to one or more "blackhole"
//! addresses — a listener whose accept queue is full and never drained, so
//! Linux drops further SYNs and `connect` hangs — and then to an echo
//! server. With a 30 s connect timeout, trying the addresses one after the
//! other would sit on the blackhole for the whole timeout; racing them
//! opens via the good address within the same attempt (no `Reconnecting`,
//! no `Disconnected`). The losing attempts are dropped once one wins.
//!
//! No timing thresholds: the waits are bounds well below the connect
//! timeout, never measurements.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use socket2::{Domain, Socket, Type};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zenws_mio::{ClientEvent, ClientSupervisor, PinnedResolver};
use zenws_tests::EchoServer;

/// A loopback address whose SYNs are dropped: a listener (backlog 0) whose
/// accept queue is filled by a few connections nobody accepts.
struct Blackhole {
    addr: SocketAddr,
    _listener: Socket,
    _fillers: Vec<Socket>,
}

impl Blackhole {
    fn new() -> Blackhole {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let bind = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0);
        listener.bind(&bind.into()).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..8 {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&addr.into()); // EINPROGRESS
            fillers.push(s);
            // Does a connect hang now? (Verified before relying on it.)
            let probe = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
            if probe
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
            {
                return Blackhole {
                    addr,
                    _listener: listener,
                    _fillers: fillers,
                };
            }
        }
        panic!("could not make a listener that drops SYNs at {addr}");
    }

    /// Our sockets still trying to connect to it (SYN_SENT), from
    /// /proc/net/tcp: the fillers, plus the client's attempts in flight.
    fn syn_sent(&self) -> usize {
        let port = format!(":{:04X}", self.addr.port());
        std::fs::read_to_string("/proc/net/tcp")
            .unwrap()
            .lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[2] == format!("0100007F{port}") && f[3] == "02"
            })
            .count()
    }
}

/// Open a client to `feed.test`, pinned to `addrs`, with a 30 s connect
/// timeout; it must open (within a bound far below the timeout) without
/// a reconnect, and echo.
fn opens_via_the_good_address(addrs: &[SocketAddr], hole: &Blackhole) {
    let mut sup = ClientSupervisor::new().unwrap();
    let mut pins = PinnedResolver::new();
    for a in addrs {
        pins = pins.pin("feed.test", *a);
    }
    sup.set_resolver(Arc::new(pins));
    let mut cfg = quiet();
    cfg.connection.connect_timeout = Duration::from_secs(30);
    let baseline = hole.syn_sent();
    let id = sup.start_client("ws://feed.test/happy", cfg).unwrap();
    let mut ev = run_until(&mut sup, 15, |_, ev| {
        opened(ev, id) == 1
            || ev.iter().any(|e| {
                matches!(
                    e,
                    ClientEvent::Reconnecting { .. } | ClientEvent::Disconnected { .. }
                )
            })
    });
    sup.send_text(id, "through the good one").unwrap();
    ev.extend(run_until(&mut sup, 10, |_, ev| {
        echoed(ev, id, "through the good one")
    }));
    assert_eq!(opened(&ev, id), 1, "{ev:#?}");
    assert!(
        !ev.iter().any(|e| matches!(
            e,
            ClientEvent::Reconnecting { .. } | ClientEvent::Disconnected { .. }
        )),
        "the good address opens within the first attempt: {ev:#?}"
    );
    // The attempts still hanging on the blackhole were dropped at the win.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hole.syn_sent() > baseline {
        assert!(
            Instant::now() < deadline,
            "losing attempts still connecting: {} > {baseline}",
            hole.syn_sent()
        );
        let _ = run_for(&mut sup, Duration::from_millis(20));
    }
    sup.stop_client(id).unwrap();
    let ev = run_until(&mut sup, 10, |_, ev| exit_of(ev, id).is_some());
    assert!(
        matches!(exit_of(&ev, id), Some(ClientEvent::Stopped { .. })),
        "{ev:#?}"
    );
}

#[test]
fn an_address_that_never_answers_does_not_hold_up_the_next() {
    let hole = Blackhole::new();
    let server = EchoServer::plain().unwrap();
    opens_via_the_good_address(&[hole.addr, server.addr()], &hole);
    assert_eq!(server.last_request_path().as_deref(), Some("/happy"));
}

#[test]
fn two_silent_addresses_are_raced_past() {
    let hole = Blackhole::new();
    let server = EchoServer::plain().unwrap();
    opens_via_the_good_address(&[hole.addr, hole.addr, server.addr()], &hole);
    assert_eq!(server.last_request_path().as_deref(), Some("/happy"));
}

#[test]
fn a_refused_address_starts_the_next_at_once_beside_a_silent_one() {
    // [silent, refused, good]: the refused attempt (started after 250 ms)
    // fails at once and starts the good one.
    let hole = Blackhole::new();
    let server = EchoServer::plain().unwrap();
    let refused = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), refused_port());
    opens_via_the_good_address(&[hole.addr, refused, server.addr()], &hole);
    assert_eq!(server.last_request_path().as_deref(), Some("/happy"));
}
