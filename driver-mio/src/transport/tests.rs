//! Transport tests against real servers on 127.0.0.1 (std threads, blocking
//! tungstenite, rustls with rcgen certificates), driven by a real mio loop.

use super::*;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream as StdTcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tungstenite::protocol::CloseFrame;

const TOKEN: Token = Token(1);
const DEADLINE: Duration = Duration::from_secs(5);

fn init_log() {
    // Tests may enable logging with RUST_LOG in the future; keep it silent.
}

struct Harness {
    poll: mio::Poll,
    events: mio::Events,
    seen: Vec<TransportEvent>,
}

impl Harness {
    fn new() -> Harness {
        init_log();
        Harness {
            poll: mio::Poll::new().unwrap(),
            events: mio::Events::with_capacity(64),
            seen: Vec::new(),
        }
    }

    fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    fn connect(&self, url: &str, addr: SocketAddr, cfg: &TransportConfig) -> Transport {
        let target = Target::parse(url).unwrap();
        Transport::connect(self.registry(), TOKEN, &target, addr, cfg).unwrap()
    }

    /// A `ws://127.0.0.1` transport to `addr` with the default config.
    fn connect_ws(&self, addr: SocketAddr) -> Transport {
        self.connect(
            &url("ws", "127.0.0.1", addr, "/"),
            addr,
            &TransportConfig::default(),
        )
    }

    /// A `wss://{host}` transport to `addr` trusting the CA in `ca_pem`.
    fn connect_wss(&self, host: &str, addr: SocketAddr, ca_pem: &str) -> Transport {
        self.connect(&url("wss", host, addr, "/"), addr, &tls_cfg(ca_pem))
    }

    /// Poll and feed events until `done(new events)` holds; returns the
    /// events seen since the last call.
    fn drive(
        &mut self,
        t: &mut Transport,
        mut done: impl FnMut(&[TransportEvent]) -> bool,
    ) -> Vec<TransportEvent> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if done(&self.seen) {
                return mem::take(&mut self.seen);
            }
            assert!(
                Instant::now() < deadline,
                "timed out; events so far: {:?}",
                self.seen
            );
            // Unread data (read budget used up): no event will announce it.
            let wait = if t.has_unread() {
                Duration::ZERO
            } else {
                Duration::from_millis(50)
            };
            self.poll.poll(&mut self.events, Some(wait)).unwrap();
            for ev in self.events.iter() {
                assert_eq!(ev.token(), TOKEN);
                let r = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                let w = ev.is_writable() || ev.is_write_closed() || ev.is_error();
                t.handle_event(self.poll.registry(), r, w, &mut self.seen);
            }
            if t.has_unread() {
                t.handle_event(self.poll.registry(), false, false, &mut self.seen);
            }
        }
    }

    /// Close with 1000 and expect the close handshake to end in `Closed`
    /// with 1000.
    fn close_normally(&mut self, t: &mut Transport) {
        t.close(self.registry(), 1000, "");
        let evs = self.drive_until_final(t);
        assert!(
            matches!(
                evs.last(),
                Some(TransportEvent::Closed {
                    code: Some(1000),
                    ..
                })
            ),
            "{evs:?}"
        );
    }

    fn drive_until_final(&mut self, t: &mut Transport) -> Vec<TransportEvent> {
        let evs = self.drive(t, |e| e.iter().any(is_final));
        assert!(t.is_finished());
        assert!(!t.is_open());
        evs
    }
}

fn is_final(e: &TransportEvent) -> bool {
    matches!(
        e,
        TransportEvent::Closed { .. } | TransportEvent::Failed { .. }
    )
}

fn failure(evs: &[TransportEvent]) -> Error {
    match evs.last() {
        Some(TransportEvent::Failed { error, .. }) => *error,
        other => panic!("expected Failed, got {other:?} in {evs:?}"),
    }
}

/// How a `ws://` connection to `addr` ends (it must fail).
fn ws_failure(addr: SocketAddr) -> Error {
    let mut h = Harness::new();
    let mut t = h.connect_ws(addr);
    failure(&h.drive_until_final(&mut t))
}

/// How a `wss://{host}` connection to `addr` trusting `ca_pem` ends (it must
/// fail).
fn wss_failure(host: &str, addr: SocketAddr, ca_pem: &str) -> Error {
    let mut h = Harness::new();
    let mut t = h.connect_wss(host, addr, ca_pem);
    failure(&h.drive_until_final(&mut t))
}

fn has(evs: &[TransportEvent], want: &TransportEvent) -> bool {
    evs.iter().any(|e| e == want)
}

/// One-connection server on 127.0.0.1:0 running `f` on a thread.
fn server<F>(f: F) -> SocketAddr
where
    F: FnOnce(StdTcpStream) + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            s.set_read_timeout(Some(DEADLINE)).ok();
            s.set_write_timeout(Some(DEADLINE)).ok();
            f(s);
        }
    });
    addr
}

/// Echo data messages and pings back until the connection ends.
fn echo<S: Read + Write>(mut ws: tungstenite::WebSocket<S>) {
    loop {
        match ws.read() {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(m).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

fn url(scheme: &str, host: &str, addr: SocketAddr, path: &str) -> String {
    format!("{scheme}://{host}:{}{path}", addr.port())
}

// ---------------------------------------------------------------- plain

#[test]
#[allow(clippy::result_large_err)] // tungstenite's accept_hdr callback signature
fn plain_echo_headers_ping_big_message_and_close() {
    let (hdr_tx, hdr_rx) = mpsc::channel();
    let addr = server(move |s| {
        let ws =
            tungstenite::accept_hdr(s, |req: &tungstenite::handshake::server::Request, resp| {
                let h = |n: &str| {
                    req.headers()
                        .get(n)
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default()
                };
                hdr_tx
                    .send((
                        req.uri().to_string(),
                        h("host"),
                        h("authorization"),
                        h("x-trace"),
                    ))
                    .unwrap();
                Ok(resp)
            })
            .unwrap();
        echo(ws);
    });
    let mut h = Harness::new();
    let cfg = TransportConfig {
        headers: vec![
            ("Authorization".into(), "Bearer s3cret".into()),
            ("X-Trace".into(), "abc".into()),
        ],
        ..TransportConfig::default()
    };
    assert!(!format!("{cfg:?}").contains("s3cret"));
    let mut t = h.connect(&url("ws", "127.0.0.1", addr, "/feed?sub=1&b=2"), addr, &cfg);
    assert!(!t.is_open());
    // Not open yet: a send is handed back.
    let back = t.send(h.registry(), Message::text("early")).unwrap_err();
    assert!(matches!(back, SendFailure::NotOpen(Message::Text(_))));

    let evs = h.drive(&mut t, |e| has(e, &TransportEvent::Open));
    assert_eq!(evs, vec![TransportEvent::Open]);
    assert!(t.is_open());
    assert_eq!(
        t.interest,
        Some(Interest::READABLE),
        "WRITABLE only while bytes wait"
    );
    let (uri, host, auth, trace) = hdr_rx.recv_timeout(DEADLINE).unwrap();
    assert_eq!(uri, "/feed?sub=1&b=2");
    assert_eq!(host, format!("127.0.0.1:{}", addr.port()));
    assert_eq!(auth, "Bearer s3cret");
    assert_eq!(trace, "abc");

    t.send(h.registry(), Message::text("hello")).unwrap();
    t.send(h.registry(), Message::binary(vec![1u8, 2, 3]))
        .unwrap();
    t.send(h.registry(), Message::Ping(Bytes::from_static(b"p1")))
        .unwrap();
    let evs = h.drive(&mut t, |e| e.len() >= 3);
    assert_eq!(
        evs,
        vec![
            TransportEvent::Text("hello".into()),
            TransportEvent::Binary(Bytes::from_static(&[1, 2, 3])),
            TransportEvent::Pong(Bytes::from_static(b"p1")),
        ]
    );

    let big: Vec<u8> = (0..(1usize << 20)).map(|i| (i * 7 % 251) as u8).collect();
    t.send(h.registry(), Message::binary(big.clone())).unwrap();
    let evs = h.drive(&mut t, |e| !e.is_empty());
    assert_eq!(evs, vec![TransportEvent::Binary(Bytes::from(big))]);
    assert_eq!(t.pending_write_bytes(), 0);

    t.close(h.registry(), 1000, "bye");
    assert!(!t.is_open());
    assert!(matches!(
        t.send(h.registry(), Message::text("late")),
        Err(SendFailure::NotOpen(_))
    ));
    let evs = h.drive_until_final(&mut t);
    assert_eq!(
        evs.last(),
        Some(&TransportEvent::Closed {
            code: Some(1000),
            reason: "bye".into()
        })
    );
    // Idempotent after the end.
    t.close(h.registry(), 1000, "");
    t.abort(h.registry());
    let mut more = Vec::new();
    t.handle_event(h.registry(), true, true, &mut more);
    assert!(more.is_empty());
}

#[test]
fn refused_port() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut h = Harness::new();
    let mut t = h.connect(
        &url("ws", "127.0.0.1", port, "/"),
        port,
        &TransportConfig::default(),
    );
    let evs = h.drive_until_final(&mut t);
    assert_eq!(failure(&evs), Error::ConnectionRefused);
}

fn http_answer(status_line: &'static str) -> SocketAddr {
    server(move |mut s| {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let resp = format!("{status_line}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nnope\n");
        s.write_all(resp.as_bytes()).ok();
        thread::sleep(Duration::from_millis(200));
    })
}

#[test]
fn upgrade_401_is_rejected() {
    let addr = http_answer("HTTP/1.1 401 Unauthorized");
    assert_eq!(ws_failure(addr), Error::UpgradeRejected { status: 401 });
}

#[test]
fn upgrade_503_is_unavailable() {
    let addr = http_answer("HTTP/1.1 503 Service Unavailable");
    assert_eq!(ws_failure(addr), Error::UpgradeUnavailable { status: 503 });
}

#[test]
fn garbage_instead_of_http_is_protocol_error() {
    let addr = server(|mut s| {
        let mut chunk = [0u8; 1024];
        let _ = s.read(&mut chunk);
        s.write_all(b"\x00\x01garbage\r\n\r\n").ok();
        thread::sleep(Duration::from_millis(200));
    });
    assert_eq!(ws_failure(addr), Error::Protocol);
}

#[test]
fn eof_during_upgrade_is_reset() {
    let addr = server(|mut s| {
        let mut chunk = [0u8; 1024];
        let _ = s.read(&mut chunk);
    });
    assert_eq!(ws_failure(addr), Error::ConnectionReset);
}

/// One-connection server that reads the upgrade request and answers with
/// `respond(request head, the Sec-WebSocket-Accept for its key)`, then holds
/// the socket until the client closes it (or the deadline). The request head
/// is sent on the returned channel.
fn raw_upgrade_server<F>(respond: F) -> (SocketAddr, mpsc::Receiver<String>)
where
    F: FnOnce(&str, &str) -> Vec<u8> + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let addr = server(move |mut s| {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap_or_default()
            .trim()
            .to_string();
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        // One write: the response and anything after it share a segment.
        s.write_all(&respond(&head, &accept)).ok();
        tx.send(head).ok();
        while matches!(s.read(&mut chunk), Ok(n) if n > 0) {}
    });
    (addr, rx)
}

fn raw_upgrade_result<F>(respond: F) -> Vec<TransportEvent>
where
    F: FnOnce(&str, &str) -> Vec<u8> + Send + 'static,
{
    let (addr, _) = raw_upgrade_server(respond);
    let mut h = Harness::new();
    let mut t = h.connect_ws(addr);
    h.drive_until_final(&mut t)
}

#[test]
fn bad_accept_key_is_protocol_error() {
    let evs = raw_upgrade_result(|_, _| {
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            .to_vec()
    });
    assert_eq!(failure(&evs), Error::Protocol);
    assert!(!has(&evs, &TransportEvent::Open));
    let TransportEvent::Failed { detail, .. } = evs.last().unwrap() else {
        unreachable!()
    };
    assert!(!detail.contains("dGhl"), "header value leaked: {detail}");
}

#[test]
fn missing_upgrade_header_is_protocol_error() {
    let evs = raw_upgrade_result(|_, accept| {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes()
    });
    assert_eq!(failure(&evs), Error::Protocol);
    assert!(!has(&evs, &TransportEvent::Open));
}

#[test]
fn missing_connection_upgrade_is_protocol_error() {
    let evs = raw_upgrade_result(|_, accept| {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes()
    });
    assert_eq!(failure(&evs), Error::Protocol);
}

#[test]
fn oversized_response_headers_are_protocol_error() {
    let evs = raw_upgrade_result(|_, accept| {
        let mut r = String::from("HTTP/1.1 101 Switching Protocols\r\n");
        // 40 lines of 500 bytes: 20 KB, over the 16 KiB limit, with few enough
        // lines that only the size limit can trip.
        for i in 0..40 {
            r.push_str(&format!("X-Filler-{i}: {}\r\n", "a".repeat(500)));
        }
        r.push_str(&format!(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        ));
        r.into_bytes()
    });
    assert_eq!(failure(&evs), Error::Protocol);
    let TransportEvent::Failed { detail, .. } = evs.last().unwrap() else {
        unreachable!()
    };
    assert!(detail.contains("too large"), "{detail}");
}

#[test]
fn frame_in_the_same_segment_as_the_101_is_delivered() {
    let (addr, head) = raw_upgrade_server(|_, accept| {
        // Mixed-case, list-valued Connection, whitespace around values.
        let mut r = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade:  WebSocket \r\n\
             CONNECTION: keep-alive, Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        // Unmasked text "first", then binary [1, 2, 3].
        r.extend_from_slice(&[0x81, 0x05]);
        r.extend_from_slice(b"first");
        r.extend_from_slice(&[0x82, 0x03, 1, 2, 3]);
        r
    });
    let mut h = Harness::new();
    let cfg = TransportConfig {
        headers: vec![
            ("X-Api-Key".into(), "k1".into()),
            ("Host".into(), "example.test".into()),
        ],
        ..TransportConfig::default()
    };
    let mut t = h.connect(&url("ws", "127.0.0.1", addr, "/p?q=1"), addr, &cfg);
    let evs = h.drive(&mut t, |e| e.len() >= 3);
    assert_eq!(
        evs,
        vec![
            TransportEvent::Open,
            TransportEvent::Text("first".into()),
            TransportEvent::Binary(Bytes::from_static(&[1, 2, 3])),
        ]
    );
    let head = head.recv_timeout(DEADLINE).unwrap();
    let lines: Vec<&str> = head.split("\r\n").collect();
    assert_eq!(lines[0], "GET /p?q=1 HTTP/1.1");
    assert!(lines.contains(&"Host: example.test"), "{head}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("Host:")).count(), 1);
    assert!(lines.contains(&"Upgrade: websocket"), "{head}");
    assert!(lines.contains(&"Connection: Upgrade"), "{head}");
    assert!(lines.contains(&"Sec-WebSocket-Version: 13"), "{head}");
    assert!(lines.contains(&"X-Api-Key: k1"), "{head}");
    assert!(head.ends_with("\r\n\r\n"));
    t.abort(h.registry());
}

#[test]
fn subprotocol_is_checked() {
    fn run(asked: Option<&'static str>, chosen: Option<&'static str>) -> Vec<TransportEvent> {
        let (addr, _) = raw_upgrade_server(move |_, accept| {
            let p = chosen.map_or(String::new(), |p| {
                format!("Sec-WebSocket-Protocol: {p}\r\n")
            });
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n{p}\r\n"
            )
            .into_bytes()
        });
        let mut h = Harness::new();
        let cfg = TransportConfig {
            headers: asked
                .map(|a| ("Sec-WebSocket-Protocol".to_string(), a.to_string()))
                .into_iter()
                .collect(),
            ..TransportConfig::default()
        };
        let mut t = h.connect(&url("ws", "127.0.0.1", addr, "/"), addr, &cfg);
        let evs = h.drive(&mut t, |e| {
            e.iter().any(|e| is_final(e) || *e == TransportEvent::Open)
        });
        t.abort(h.registry());
        evs
    }
    assert_eq!(
        run(Some("a, chat"), Some("chat")),
        vec![TransportEvent::Open]
    );
    assert_eq!(failure(&run(Some("chat"), None)), Error::Protocol);
    assert_eq!(failure(&run(None, Some("chat"))), Error::Protocol);
    assert_eq!(failure(&run(Some("a"), Some("b"))), Error::Protocol);
}

#[test]
fn peer_close_code_is_reported() {
    let addr = server(|s| {
        let mut ws = tungstenite::accept(s).unwrap();
        ws.close(Some(CloseFrame {
            code: CloseCode::from(4001),
            reason: Utf8Bytes::from_static("maintenance"),
        }))
        .unwrap();
        // Drive the close handshake: wait for the client's reply.
        while ws.read().is_ok() {}
    });
    let mut h = Harness::new();
    let mut t = h.connect_ws(addr);
    let evs = h.drive_until_final(&mut t);
    assert_eq!(
        evs,
        vec![
            TransportEvent::Open,
            TransportEvent::Closed {
                code: Some(4001),
                reason: "maintenance".into()
            }
        ]
    );
}

#[test]
fn peer_drop_without_close_is_reset() {
    let addr = server(|s| {
        let mut ws = tungstenite::accept(s).unwrap();
        ws.send(Message::text("last words")).unwrap();
        // Dropping closes TCP without a close frame.
    });
    let mut h = Harness::new();
    let mut t = h.connect_ws(addr);
    let evs = h.drive_until_final(&mut t);
    assert_eq!(
        evs[..2],
        [
            TransportEvent::Open,
            TransportEvent::Text("last words".into())
        ]
    );
    assert_eq!(failure(&evs), Error::ConnectionReset);
}

#[test]
fn bad_frame_is_protocol_error_and_peer_hears_1002() {
    let (tx, rx) = mpsc::channel();
    let addr = server(move |s| {
        let mut ws = tungstenite::accept(s).unwrap();
        // FIN + reserved opcode 0x3, empty payload.
        ws.get_mut().write_all(&[0x83, 0x00]).unwrap();
        let mut raw = [0u8; 64];
        let n = ws.get_mut().read(&mut raw).unwrap_or(0);
        tx.send(raw[..n].to_vec()).ok();
    });
    assert_eq!(ws_failure(addr), Error::Protocol);
    let raw = rx.recv_timeout(DEADLINE).unwrap();
    // Masked close frame: 0x88, 0x80|len, 4-byte mask, masked payload.
    assert_eq!(raw[0], 0x88, "{raw:?}");
    let mask = &raw[2..6];
    let code = u16::from_be_bytes([raw[6] ^ mask[0], raw[7] ^ mask[1]]);
    assert_eq!(code, 1002);
}

#[test]
fn message_before_bad_frame_can_still_be_answered() {
    // Autobahn 3.2 / 5.15 style: a text message and a bad frame in one
    // write. The application sees the message and its answer goes out
    // before our 1002 close frame.
    let (tx, rx) = mpsc::channel();
    let addr = server(move |s| {
        let mut ws = tungstenite::accept(s).unwrap();
        // Unmasked text "hi", then FIN + reserved opcode 0x3.
        ws.get_mut()
            .write_all(&[0x81, 0x02, b'h', b'i', 0x83, 0x00])
            .unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = ws.get_mut().read(&mut buf) {
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        tx.send(raw).ok();
    });
    let mut h = Harness::new();
    let mut t = h.connect_ws(addr);
    let text = TransportEvent::Text("hi".into());
    h.drive(&mut t, |e| has(e, &text));
    t.send(h.registry(), Message::text("hi")).unwrap();
    let evs = h.drive_until_final(&mut t);
    assert_eq!(failure(&evs), Error::Protocol);
    let raw = rx.recv_timeout(DEADLINE).unwrap();
    // First our masked echo (0x81, 0x82, mask, 2 bytes), then the close frame.
    assert_eq!(raw[0], 0x81, "{raw:?}");
    assert_eq!(raw[1], 0x82, "{raw:?}");
    let mask = &raw[2..6];
    assert_eq!([raw[6] ^ mask[0], raw[7] ^ mask[1]], *b"hi");
    assert_eq!(raw[8], 0x88, "{raw:?}");
}

#[test]
fn oversize_message_is_message_too_large() {
    let addr = server(|s| {
        let mut ws = tungstenite::accept(s).unwrap();
        ws.send(Message::binary(vec![0u8; 100 * 1024])).ok();
        while ws.read().is_ok() {}
    });
    let mut h = Harness::new();
    let cfg = TransportConfig {
        max_message_size: 64 * 1024,
        max_frame_size: 64 * 1024,
        ..TransportConfig::default()
    };
    let mut t = h.connect(&url("ws", "127.0.0.1", addr, "/"), addr, &cfg);
    let evs = h.drive_until_final(&mut t);
    assert_eq!(failure(&evs), Error::MessageTooLarge);
}

#[test]
fn slow_reader_hits_backpressure() {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let addr = server(move |s| {
        let _ws = tungstenite::accept(s).unwrap();
        // Never read again; hold the socket until told to stop.
        let _ = stop_rx.recv_timeout(Duration::from_secs(10));
    });
    let mut h = Harness::new();
    let cap = 256 * 1024;
    let cfg = TransportConfig {
        max_write_buffer_size: cap,
        ..TransportConfig::default()
    };
    let mut t = h.connect(&url("ws", "127.0.0.1", addr, "/"), addr, &cfg);
    h.drive(&mut t, |e| has(e, &TransportEvent::Open));
    let chunk = vec![7u8; 64 * 1024];
    let mut refused = None;
    for i in 0..4000 {
        match t.send(h.registry(), Message::binary(chunk.clone())) {
            Ok(()) => assert!(t.pending_write_bytes() < cap + chunk.len() + 64),
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (i, e) = refused.expect("the write buffer never filled");
    assert!(i > 0);
    assert!(
        matches!(e, SendFailure::Backpressure(Message::Binary(_))),
        "{e:?}"
    );
    let pending = t.pending_write_bytes();
    assert!(
        pending >= cap && pending < cap + chunk.len() + 64,
        "{pending}"
    );
    // Still refused, and the buffer did not grow.
    assert!(matches!(
        t.send(h.registry(), Message::text("x")),
        Err(SendFailure::Backpressure(_))
    ));
    assert_eq!(t.pending_write_bytes(), pending);
    assert!(t.is_open());
    assert_eq!(t.interest, Some(Interest::READABLE | Interest::WRITABLE));
    // WRITABLE is registered: an event loop tick does not fail anything.
    let mut evs = Vec::new();
    t.handle_event(h.registry(), false, true, &mut evs);
    assert!(evs.is_empty());
    t.abort(h.registry());
    assert!(t.is_finished());
    stop_tx.send(()).ok();
}

/// The server talks first, right after the 101 (likely in the same TCP
/// segments as the response): nothing new arrives afterwards, so the client
/// must drain everything without another readiness edge. Also: a server ping
/// is reported and answered automatically.
fn server_speaks_first(tls: bool) {
    let (pong_tx, pong_rx) = mpsc::channel();
    fn burst<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>) {
        for i in 0..3u8 {
            ws.write(Message::binary(vec![i; 10 * 1024])).unwrap();
        }
        ws.write(Message::Ping(Bytes::from_static(b"hb"))).unwrap();
        ws.flush().unwrap();
    }
    let mut h = Harness::new();
    let (mut t, _pki);
    if tls {
        let p = pki(&["localhost"]);
        let cfg = p.server_config();
        let addr = server(move |s| {
            let conn = rustls::ServerConnection::new(cfg).unwrap();
            let mut ws = tungstenite::accept(rustls::StreamOwned::new(conn, s)).unwrap();
            burst(&mut ws);
            while let Ok(m) = ws.read() {
                if let Message::Pong(p) = m {
                    pong_tx.send(p).ok();
                }
            }
        });
        t = h.connect_wss("localhost", addr, &p.ca_pem);
        _pki = Some(p);
    } else {
        let addr = server(move |s| {
            let mut ws = tungstenite::accept(s).unwrap();
            burst(&mut ws);
            while let Ok(m) = ws.read() {
                if let Message::Pong(p) = m {
                    pong_tx.send(p).ok();
                }
            }
        });
        t = h.connect_ws(addr);
        _pki = None;
    }
    let evs = h.drive(&mut t, |e| e.len() >= 5);
    assert_eq!(evs[0], TransportEvent::Open);
    for i in 0..3u8 {
        assert_eq!(
            evs[1 + i as usize],
            TransportEvent::Binary(Bytes::from(vec![i; 10 * 1024]))
        );
    }
    assert_eq!(evs[4], TransportEvent::Ping(Bytes::from_static(b"hb")));
    assert_eq!(
        pong_rx.recv_timeout(DEADLINE).unwrap(),
        Bytes::from_static(b"hb")
    );
    t.close(h.registry(), 1001, "");
    h.drive_until_final(&mut t);
}

#[test]
fn server_speaks_first_plain() {
    server_speaks_first(false);
}

#[test]
fn server_speaks_first_tls() {
    server_speaks_first(true);
}

#[test]
fn transport_stays_small() {
    let size = mem::size_of::<Transport>();
    assert!(size <= 512, "Transport is {size} bytes");
}

// ---------------------------------------------------------------- TLS

struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Pki {
    /// A rustls server configuration presenting this certificate.
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config_for(rustls::DEFAULT_VERSIONS)
    }

    /// The same, speaking only `versions`.
    fn server_config_for(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ServerConfig> {
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            self.chain.clone(),
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
        )
        .unwrap();
        Arc::new(cfg)
    }
}

fn pki(names: &[&str]) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "zenws test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        chain: vec![leaf.der().clone()],
        key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
    }
}

/// TLS echo server; reports the SNI it saw (or the handshake error).
fn tls_server(pki: &Pki) -> (SocketAddr, mpsc::Receiver<Result<Option<String>, String>>) {
    tls_server_with(pki.server_config())
}

fn tls_server_with(
    cfg: Arc<rustls::ServerConfig>,
) -> (SocketAddr, mpsc::Receiver<Result<Option<String>, String>>) {
    let (tx, rx) = mpsc::channel();
    let addr = server(move |mut s| {
        let mut conn = rustls::ServerConnection::new(cfg).unwrap();
        if let Err(e) = conn.complete_io(&mut s) {
            tx.send(Err(e.to_string())).ok();
            return;
        }
        tx.send(Ok(conn.server_name().map(str::to_string))).ok();
        let stream = rustls::StreamOwned::new(conn, s);
        if let Ok(ws) = tungstenite::accept(stream) {
            echo(ws);
        }
    });
    (addr, rx)
}

/// A `wss://localhost` transport to `addr` trusting `pki`'s CA, driven
/// until it is open.
fn open_wss(addr: SocketAddr, pki: &Pki) -> (Harness, Transport) {
    let mut h = Harness::new();
    let mut t = h.connect_wss("localhost", addr, &pki.ca_pem);
    h.drive(&mut t, |e| has(e, &TransportEvent::Open));
    (h, t)
}

fn tls_cfg(ca_pem: &str) -> TransportConfig {
    let tls = crate::tls::client_config(&TlsRoots::CaPem(ca_pem.as_bytes().to_vec())).unwrap();
    TransportConfig {
        tls: Some(tls),
        ..TransportConfig::default()
    }
}

#[test]
fn tls_echo_with_sni() {
    let pki = pki(&["localhost"]);
    let (addr, sni) = tls_server(&pki);
    let mut h = Harness::new();
    let mut t = h.connect(
        &url("wss", "localhost", addr, "/tls?x=1"),
        addr,
        &tls_cfg(&pki.ca_pem),
    );
    h.drive(&mut t, |e| has(e, &TransportEvent::Open));
    assert_eq!(
        sni.recv_timeout(DEADLINE).unwrap(),
        Ok(Some("localhost".into()))
    );
    t.send(h.registry(), Message::text("over tls")).unwrap();
    let big = vec![0x5au8; 300 * 1024];
    t.send(h.registry(), Message::binary(big.clone())).unwrap();
    let evs = h.drive(&mut t, |e| e.len() >= 2);
    assert_eq!(
        evs,
        vec![
            TransportEvent::Text("over tls".into()),
            TransportEvent::Binary(Bytes::from(big))
        ]
    );
    h.close_normally(&mut t);
}

#[test]
fn tls12_echo() {
    // A TLS 1.2-only server: the unbuffered client handles both versions.
    let pki = pki(&["localhost"]);
    let (addr, _) = tls_server_with(pki.server_config_for(&[&rustls::version::TLS12]));
    let (mut h, mut t) = open_wss(addr, &pki);
    t.send(h.registry(), Message::text("over tls 1.2")).unwrap();
    let evs = h.drive(&mut t, |e| !e.is_empty());
    assert_eq!(evs, vec![TransportEvent::Text("over tls 1.2".into())]);
    h.close_normally(&mut t);
}

#[test]
fn tls_close_notify_after_data_ends_the_stream() {
    // The server sends a message, then close_notify and FIN (no WebSocket
    // close frame): the message arrives, then the end is seen (as a drop
    // without a close frame) instead of a hang or a TLS error.
    let pki = pki(&["localhost"]);
    let cfg = pki.server_config();
    let addr = server(move |mut s| {
        let mut conn = rustls::ServerConnection::new(cfg).unwrap();
        conn.complete_io(&mut s).unwrap();
        let mut ws = tungstenite::accept(rustls::StreamOwned::new(conn, s)).unwrap();
        ws.send(Message::text("last words")).unwrap();
        let stream = ws.get_mut();
        stream.conn.send_close_notify();
        stream.conn.complete_io(&mut stream.sock).unwrap();
        stream.sock.shutdown(std::net::Shutdown::Write).ok();
        thread::sleep(Duration::from_millis(200));
    });
    let mut h = Harness::new();
    let mut t = h.connect_wss("localhost", addr, &pki.ca_pem);
    let evs = h.drive_until_final(&mut t);
    assert!(
        has(&evs, &TransportEvent::Text("last words".into())),
        "{evs:?}"
    );
    assert_eq!(failure(&evs), Error::ConnectionReset);
}

/// Raw bytes on the socket where records belong: a TLS failure (alert
/// queued, connection ends), not a panic and not a hang. Debug builds run
/// rustls's own assertions on this path.
fn garbage_after_the_tls_handshake(garbage: &'static [u8]) {
    let pki = pki(&["localhost"]);
    let cfg = pki.server_config();
    let addr = server(move |mut s| {
        let mut conn = rustls::ServerConnection::new(cfg).unwrap();
        conn.complete_io(&mut s).unwrap();
        let mut ws = tungstenite::accept(rustls::StreamOwned::new(conn, s)).unwrap();
        assert!(matches!(ws.read(), Ok(Message::Text(_))));
        ws.get_mut().sock.write_all(garbage).unwrap();
        thread::sleep(Duration::from_millis(300));
    });
    let (mut h, mut t) = open_wss(addr, &pki);
    t.send(h.registry(), Message::text("go")).unwrap();
    let evs = h.drive_until_final(&mut t);
    assert_eq!(failure(&evs), Error::Tls, "{evs:?}");
}

#[test]
fn record_that_fails_decryption_is_a_tls_error() {
    // A well-formed application-data record header, 32 bytes of noise.
    const RECORD: &[u8] = &[
        0x17, 0x03, 0x03, 0x00, 0x20, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB,
        0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB,
        0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB,
    ];
    garbage_after_the_tls_handshake(RECORD);
}

#[test]
fn bytes_that_are_not_a_record_are_a_tls_error() {
    garbage_after_the_tls_handshake(&[0xFF; 64]);
}

#[test]
fn tls_unknown_ca_is_certificate_error() {
    let server_pki = pki(&["localhost"]);
    let other = pki(&["localhost"]);
    let (addr, _) = tls_server(&server_pki);
    assert_eq!(
        wss_failure("localhost", addr, &other.ca_pem),
        Error::TlsCertificate
    );
}

#[test]
fn tls_name_mismatch_is_certificate_error() {
    let pki = pki(&["localhost"]);
    let (addr, _) = tls_server(&pki);
    assert_eq!(
        wss_failure("wrong.example", addr, &pki.ca_pem),
        Error::TlsCertificate
    );
}

#[test]
fn tls_to_plain_server_is_tls_error() {
    // A plain HTTP server answering the ClientHello with text.
    let addr = server(|mut s| {
        let mut chunk = [0u8; 1024];
        let _ = s.read(&mut chunk);
        s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .ok();
        thread::sleep(Duration::from_millis(200));
    });
    let pki = pki(&["localhost"]);
    assert_eq!(wss_failure("localhost", addr, &pki.ca_pem), Error::Tls);
}

/// A socket that writes at most `chunk` bytes per call (and pauses now and
/// then), so TLS records and handshake messages reach the client in pieces.
struct Trickle {
    socket: StdTcpStream,
    chunk: usize,
    writes: usize,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.read(buf)
    }
}

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes += 1;
        if self.writes.is_multiple_of(64) {
            thread::sleep(Duration::from_millis(1));
        }
        self.socket.write(&buf[..buf.len().min(self.chunk)])
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

/// Every server byte (certificate flight included) arrives in `chunk`-byte
/// writes: partial records and handshake messages must be carried over
/// between reads. Then the server drops TCP without close_notify: the data
/// comes first, then a reset (a truncation is not a clean close).
fn tls_in_pieces_then_eof_without_close_notify(chunk: usize, size: u32) {
    let pki = pki(&["localhost"]);
    let cfg = pki.server_config();
    let big: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let sent = big.clone();
    let addr = server(move |s| {
        s.set_nodelay(true).unwrap();
        let mut trickle = Trickle {
            socket: s,
            chunk,
            writes: 0,
        };
        let mut conn = rustls::ServerConnection::new(cfg).unwrap();
        conn.complete_io(&mut trickle).unwrap();
        let mut ws = tungstenite::accept(rustls::StreamOwned::new(conn, trickle)).unwrap();
        // Wait for the client's go, answer, then vanish.
        assert!(matches!(ws.read(), Ok(Message::Text(_))));
        ws.send(Message::binary(sent)).unwrap();
        ws.send(Message::text("after")).unwrap();
        let stream = ws.into_inner();
        stream.sock.socket.shutdown(std::net::Shutdown::Both).ok();
    });
    let (mut h, mut t) = open_wss(addr, &pki);
    t.send(h.registry(), Message::text("go")).unwrap();
    let evs = h.drive_until_final(&mut t);
    assert_eq!(
        &evs[..2],
        &[
            TransportEvent::Binary(Bytes::from(big)),
            TransportEvent::Text("after".into())
        ],
        "{evs:?}"
    );
    assert_eq!(failure(&evs), Error::ConnectionReset);
}

#[test]
fn tls_byte_by_byte_then_eof_without_close_notify_is_reset() {
    tls_in_pieces_then_eof_without_close_notify(1, 5_000);
}

#[test]
fn tls_in_7_byte_pieces_then_eof_without_close_notify_is_reset() {
    tls_in_pieces_then_eof_without_close_notify(7, 40_000);
}

#[test]
fn tls_in_1000_byte_pieces_then_eof_without_close_notify_is_reset() {
    tls_in_pieces_then_eof_without_close_notify(1000, 100_000);
}

#[test]
fn bad_header_is_rejected_at_connect() {
    let mut h = Harness::new();
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let target = Target::parse("ws://127.0.0.1:9/").unwrap();
    for headers in [
        vec![("Bad Name".to_string(), "v".to_string())],
        vec![("X-Ok".to_string(), "line\nbreak".to_string())],
        vec![("Upgrade".to_string(), "h2c".to_string())],
    ] {
        let cfg = TransportConfig {
            headers,
            ..TransportConfig::default()
        };
        let (e, detail) = Transport::connect(h.registry(), TOKEN, &target, addr, &cfg).unwrap_err();
        assert_eq!(e, Error::InvalidUrl);
        assert!(!detail.contains("line"), "value leaked: {detail}");
    }
    let _ = &mut h;
}

#[test]
fn close_before_open_reports_closed_via_handle_event() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = Harness::new();
    let mut t = h.connect_ws(addr);
    t.close(h.registry(), 1000, "");
    assert!(t.is_finished());
    let mut evs = Vec::new();
    t.handle_event(h.registry(), false, false, &mut evs);
    assert_eq!(
        evs,
        vec![TransportEvent::Closed {
            code: None,
            reason: String::new()
        }]
    );
    t.handle_event(h.registry(), true, true, &mut evs);
    assert_eq!(evs.len(), 1, "the final event is reported once");
    drop(listener);
}

// ------------------------------------------------------- own frame codec

/// Read what the client sent until it closes or `DEADLINE`.
fn read_all(s: &mut StdTcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    raw
}

/// Unmask the client frames in `raw`: `(opcode, payload)` each.
fn client_frames(raw: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 <= raw.len() {
        assert_ne!(raw[i + 1] & 0x80, 0, "client frame not masked");
        let (len, mut h) = match raw[i + 1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([raw[i + 2], raw[i + 3]])), 4),
            127 => panic!("unexpected 64-bit length"),
            n => (usize::from(n), 2),
        };
        let key = [raw[i + h], raw[i + h + 1], raw[i + h + 2], raw[i + h + 3]];
        h += 4;
        let p = raw[i + h..i + h + len]
            .iter()
            .enumerate()
            .map(|(j, b)| b ^ key[j % 4])
            .collect();
        out.push((raw[i] & 0x0F, p));
        i += h + len;
    }
    out
}

#[test]
fn invalid_utf8_fails_before_the_frame_ends() {
    // Strict Autobahn 6.4.3/6.4.4: the frame announces 20 bytes, the bad
    // sequence comes at byte 6, the rest never comes. We must not wait.
    let (tx, rx) = mpsc::channel();
    let addr = server(move |s| {
        let mut ws = tungstenite::accept(s).unwrap();
        ws.get_mut()
            .write_all(b"\x81\x14hello\xF4\x90\x80\x80")
            .unwrap();
        tx.send(read_all(ws.get_mut())).ok();
    });
    assert_eq!(ws_failure(addr), Error::Protocol);
    let frames = client_frames(&rx.recv_timeout(DEADLINE).unwrap());
    assert_eq!(frames[0].0, 0x8, "{frames:?}");
    assert_eq!(frames[0].1[..2], 1007u16.to_be_bytes());
}

#[test]
fn pong_goes_out_first_and_text_split_across_reads_is_reassembled() {
    let (tx, rx) = mpsc::channel();
    let addr = server(move |s| {
        let mut ws = tungstenite::accept(s).unwrap();
        let s = ws.get_mut();
        s.set_nodelay(true).ok();
        // A ping, then "κόσμε ✓" in two fragments, one byte per write.
        let text = "κόσμε ✓".as_bytes();
        let mut bytes = vec![0x89, 0x02, b'p', b'1', 0x01, 0x05];
        bytes.extend_from_slice(&text[..5]);
        bytes.extend_from_slice(&[0x80, (text.len() - 5) as u8]);
        bytes.extend_from_slice(&text[5..]);
        for b in bytes {
            s.write_all(&[b]).unwrap();
            thread::sleep(Duration::from_millis(1));
        }
        // Then a close, and collect what the client sent.
        s.write_all(&[0x88, 0x02, 0x03, 0xE8]).unwrap();
        tx.send(read_all(s)).ok();
    });
    let mut h = Harness::new();
    let mut t = h.connect_ws(addr);
    let evs = h.drive(&mut t, |e| {
        e.iter().any(|e| matches!(e, TransportEvent::Text(_)))
    });
    assert!(has(&evs, &TransportEvent::Ping(Bytes::from_static(b"p1"))));
    assert!(
        has(&evs, &TransportEvent::Text("κόσμε ✓".into())),
        "{evs:?}"
    );
    let State::Open(c) = &t.state else {
        panic!("not open")
    };
    assert_eq!(c.buffered(), 0, "buffer kept after the message");
    let evs = h.drive_until_final(&mut t);
    assert!(has(
        &evs,
        &TransportEvent::Closed {
            code: Some(1000),
            reason: String::new()
        }
    ));
    let frames = client_frames(&rx.recv_timeout(DEADLINE).unwrap());
    assert_eq!(frames[0], (0xA, b"p1".to_vec()), "{frames:?}");
    assert_eq!(frames[1], (0x8, 1000u16.to_be_bytes().to_vec()));
}

// ---------------------------------------------------------- inbound bounds

/// A sink with room for `room` data messages.
struct Bounded {
    seen: Vec<TransportEvent>,
    data: usize,
    room: usize,
}

impl EventSink for Bounded {
    fn event(&mut self, ev: TransportEvent) {
        if matches!(ev, TransportEvent::Text(_) | TransportEvent::Binary(_)) {
            self.data += 1;
        }
        self.seen.push(ev);
    }
    fn full(&self) -> bool {
        self.data >= self.room
    }
}

/// The server sends `n` numbered binary messages in one burst, then a
/// ping, and keeps the connection open. The client reads `budget` bytes per
/// call into a sink that is full every 37 messages: it never gets more than
/// it has room for, it stops with `has_unread` (no readiness event will
/// come), and once given room it gets every message, in order.
fn full_sink_and_read_budget(tls: bool, budget: usize) {
    const N: u32 = 1000;
    fn burst<S: Read + Write>(mut ws: tungstenite::WebSocket<S>) {
        for i in 0..N {
            ws.write(Message::binary(i.to_be_bytes().to_vec())).unwrap();
        }
        ws.write(Message::Ping(Bytes::from_static(b"end"))).unwrap();
        ws.flush().unwrap();
        while ws.read().is_ok() {}
    }
    let mut h = Harness::new();
    let (mut t, _pki);
    if tls {
        let p = pki(&["localhost"]);
        let cfg = p.server_config();
        let addr = server(move |s| {
            let conn = rustls::ServerConnection::new(cfg).unwrap();
            burst(tungstenite::accept(rustls::StreamOwned::new(conn, s)).unwrap());
        });
        let mut c = tls_cfg(&p.ca_pem);
        c.read_budget = budget;
        t = h.connect(&url("wss", "localhost", addr, "/"), addr, &c);
        _pki = Some(p);
    } else {
        let addr = server(|s| burst(tungstenite::accept(s).unwrap()));
        let c = TransportConfig {
            read_budget: budget,
            ..TransportConfig::default()
        };
        t = h.connect(&url("ws", "127.0.0.1", addr, "/"), addr, &c);
        _pki = None;
    }
    let mut sink = Bounded {
        seen: Vec::new(),
        data: 0,
        room: 37,
    };
    let deadline = Instant::now() + DEADLINE * 4;
    let ping = TransportEvent::Ping(Bytes::from_static(b"end"));
    while !has(&sink.seen, &ping) {
        assert!(Instant::now() < deadline, "stuck at {} messages", sink.data);
        let wait = if t.has_unread() {
            Duration::ZERO
        } else {
            Duration::from_millis(50)
        };
        h.poll.poll(&mut h.events, Some(wait)).unwrap();
        for ev in h.events.iter() {
            let r = ev.is_readable() || ev.is_read_closed() || ev.is_error();
            let w = ev.is_writable() || ev.is_write_closed() || ev.is_error();
            t.handle_event_into(h.poll.registry(), r, w, &mut sink);
        }
        if t.has_unread() {
            t.handle_event_into(h.poll.registry(), false, false, &mut sink);
        }
        assert!(sink.data <= sink.room, "{} > {}", sink.data, sink.room);
        if sink.full() {
            assert!(t.has_unread() || sink.data == N as usize);
            sink.room += 37;
        }
    }
    let got: Vec<u32> = sink
        .seen
        .iter()
        .filter_map(|e| match e {
            TransportEvent::Binary(b) => Some(u32::from_be_bytes(b[..].try_into().unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert!(!t.has_unread());
    t.close(h.registry(), 1000, "");
    h.drive_until_final(&mut t);
}

#[test]
fn full_sink_keeps_the_rest_in_order_plain() {
    full_sink_and_read_budget(false, 256 << 10);
}

#[test]
fn full_sink_keeps_the_rest_in_order_tls() {
    full_sink_and_read_budget(true, 256 << 10);
}

#[test]
fn tiny_read_budget_plain() {
    full_sink_and_read_budget(false, 7);
}

#[test]
fn tiny_read_budget_tls() {
    full_sink_and_read_budget(true, 7);
}
