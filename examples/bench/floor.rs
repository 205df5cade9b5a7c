//! `bench --baseline floor`: the least a ping-pong WebSocket client can do
//! per message with the syscalls every client here makes (one `epoll_wait`
//! per turn, one `recv` and one `send` per message). No library: one mio
//! `Poll`, the upgrade written by hand, client frames built once (zero mask
//! key, so the payload goes out as is), echoes counted by length rather than
//! parsed, no heartbeat, no supervision, no allocation per message.
//!
//! It is not a client anyone should use; it answers "how much of a client's
//! CPU per message is the kernel's": whatever any client spends above this
//! line is its own user-space work.

use std::io::{self, Read, Write};
use std::net::{TcpStream as StdTcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::{connect_each, report, Args, Extra, Mode, Recorder, WindowSampler};

struct FloorConn {
    socket: TcpStream,
    /// Bytes of the current echo received so far.
    got: usize,
    sent_at: Instant,
}

/// `ws://host:port/path` → (`host:port`, `/path`).
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("ws://").unwrap_or_else(|| {
        eprintln!("--baseline floor takes ws:// URLs only");
        std::process::exit(2)
    });
    match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    }
}

/// Blocking connect and upgrade; the socket is handed back non-blocking.
fn open(host: &str, path: &str, nodelay: bool) -> io::Result<StdTcpStream> {
    let addr = host
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("no address"))?;
    let mut s = StdTcpStream::connect(addr)?;
    s.set_nodelay(nodelay)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    // Byte by byte up to the blank line, so no frame byte is eaten.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(io::Error::other("upgrade refused"));
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// One masked text frame (mask key 0) carrying `payload`.
fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Size of the server's (unmasked) echo of a `size`-byte message.
fn echo_len(size: usize) -> usize {
    size + match size {
        n if n < 126 => 2,
        n if n <= 0xffff => 4,
        _ => 10,
    }
}

pub(super) fn run_floor(a: Args) {
    if a.mode != Mode::PingPong {
        eprintln!("--baseline floor supports --mode pingpong only");
        std::process::exit(2);
    }
    let (host, path) = split_url(&a.url);
    let frame = client_frame(&super::make_payload(a.size).into_bytes());
    let expect = echo_len(a.size);
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(1024);

    // Tokens index `conns`, which holds only the connections that opened.
    let mut next_token = 0;
    let (mut conns, cs) = connect_each(a.conns, |_| {
        let std_socket = open(&host, &path, a.nodelay).map_err(|e| e.to_string())?;
        let mut socket = TcpStream::from_std(std_socket);
        poll.registry()
            .register(&mut socket, Token(next_token), Interest::READABLE)
            .map_err(|e| e.to_string())?;
        next_token += 1;
        Ok(FloorConn {
            socket,
            got: 0,
            sent_at: Instant::now(),
        })
    });

    let start = Instant::now();
    let mut rec = Recorder::new(start, a.warmup, a.duration);
    let mut buf = vec![0u8; 64 << 10];
    for c in &mut conns {
        c.sent_at = Instant::now();
        if c.socket.write(&frame).ok() != Some(frame.len()) {
            rec.errors += 1;
        }
    }
    let mut sampler = WindowSampler::default();
    let (cpu_window, rss_window) = loop {
        if let Some(end) = sampler.tick(&rec, Instant::now()) {
            break end;
        }
        if poll
            .poll(&mut events, Some(Duration::from_millis(10)))
            .is_err()
        {
            continue;
        }
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            // Edge-triggered: read until a short read (the queue is empty).
            loop {
                match c.socket.read(&mut buf) {
                    Ok(0) => {
                        rec.errors += 1;
                        break;
                    }
                    Ok(n) => {
                        c.got += n;
                        if n < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        rec.errors += 1;
                        break;
                    }
                }
            }
            if c.got >= expect {
                c.got -= expect;
                let now = Instant::now();
                rec.record(now, (now - c.sent_at).as_nanos() as u64);
                if now < rec.measure_end {
                    c.sent_at = now;
                    if c.socket.write(&frame).ok() != Some(frame.len()) {
                        rec.errors += 1;
                    }
                }
            }
        }
    };
    report(
        &a,
        "floor",
        &rec,
        &cs,
        cpu_window,
        rss_window,
        &Extra::default(),
    );
}
