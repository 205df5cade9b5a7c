//! The byte stream under tungstenite: a mio `TcpStream`, optionally wrapped
//! in a rustls client, with our own outgoing buffer.
//!
//! Writes never block and never fail with `WouldBlock`: bytes that the
//! socket does not take now (plaintext, or TLS records) are kept in `out`
//! and pushed on the next [`Stream::flush_out`]. `flush()` returns
//! `WouldBlock` while anything is left, which is how tungstenite (and the
//! transport) learn that WRITABLE interest is needed. Because every byte on
//! its way out sits in `out` (tungstenite's own buffer is drained into it on
//! every write), [`Stream::pending`] is the exact number of wire bytes not
//! yet handed to the kernel — the backpressure measure.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;
use rustls::ClientConnection;
use zenws_core::Error;

/// Bytes worth compacting the buffer for (we keep a read offset instead of
/// shifting the vector after every partial write).
const COMPACT_AT: usize = 64 * 1024;

pub(crate) struct Stream {
    tcp: TcpStream,
    tls: Option<Box<ClientConnection>>,
    /// Wire bytes not yet written to the socket: `out[head..]`.
    out: Vec<u8>,
    head: usize,
    /// Capacity kept after the buffer drains; more is released.
    retain: usize,
    /// Plain TCP only: the last read returned fewer bytes than asked for, so
    /// the socket's receive queue is empty until the next readable event
    /// ([`Stream::set_readable`]). With `short_reads` on, reads return
    /// `WouldBlock` without a syscall meanwhile. Safe with epoll/kqueue edge
    /// triggering (new data is a new edge) as long as the peer's FIN was not
    /// already announced (`read_closed`: then reads go to the socket to see
    /// EOF); this is tokio's rule too. Saves one `read` per wake.
    drained: bool,
    /// The owner reports `read_closed` readiness (the supervisor does).
    short_reads: bool,
    /// A read-closed/error readiness was seen: always ask the socket.
    read_closed: bool,
}

impl Stream {
    pub(crate) fn new(tcp: TcpStream, tls: Option<Box<ClientConnection>>, retain: usize) -> Stream {
        let mut tls = tls;
        if let Some(t) = tls.as_mut() {
            // Plaintext written before the handshake ends (the HTTP upgrade
            // request) waits inside rustls; afterwards we drain every record
            // into `out` at once, so rustls's limit would only get in the way.
            t.set_buffer_limit(None);
        }
        let mut s = Stream {
            tcp,
            tls,
            out: Vec::new(),
            head: 0,
            retain,
            drained: false,
            short_reads: false,
            read_closed: false,
        };
        // The ClientHello is ready as soon as the connection exists.
        s.drain_tls();
        s
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub(crate) fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// A readable event arrived: the next read goes to the socket.
    pub(crate) fn set_readable(&mut self) {
        self.drained = false;
    }

    /// Opt in to the short-read rule; `read_closed` = the event that is about
    /// to be handled had read-closed or error readiness.
    pub(crate) fn read_hint(&mut self, read_closed: bool) {
        self.short_reads = true;
        self.read_closed |= read_closed;
    }

    /// The next read would return `WouldBlock` without asking the socket
    /// (see `drained`): the reader may stop now.
    pub(crate) fn known_drained(&self) -> bool {
        self.drained
            && self.short_reads
            && !self.read_closed
            && self.tls.is_none()
            && cfg!(not(windows))
    }

    /// Wire bytes waiting for the socket.
    pub(crate) fn pending(&self) -> usize {
        self.out.len() - self.head
    }

    /// Move every TLS record rustls has ready into `out` (never blocks).
    fn drain_tls(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            while tls.wants_write() {
                match tls.write_tls(&mut self.out) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }

    /// Write `out` to the socket until it is empty (`Ok`) or the socket would
    /// block (`Err(WouldBlock)`). Other errors are the connection's end.
    pub(crate) fn flush_out(&mut self) -> io::Result<()> {
        while self.head < self.out.len() {
            match self.tcp.write(&self.out[self.head..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.head += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.compact();
                    return Err(e);
                }
            }
        }
        self.compact();
        Ok(())
    }

    fn compact(&mut self) {
        if self.head == self.out.len() {
            self.out.clear();
            self.head = 0;
            if self.out.capacity() > self.retain {
                self.out = Vec::with_capacity(self.retain);
            }
        } else if self.head >= COMPACT_AT && self.head * 2 >= self.out.len() {
            self.out.drain(..self.head);
            self.head = 0;
        }
    }

    /// Best effort on the way out: TLS close_notify, one write attempt, FIN.
    pub(crate) fn shutdown(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
        }
        self.drain_tls();
        let _ = self.flush_out();
        let _ = self.tcp.shutdown(Shutdown::Both);
        self.out = Vec::new();
        self.head = 0;
    }

    fn read_tls(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(tls) = self.tls.as_mut() else {
                return Err(io::ErrorKind::NotConnected.into());
            };
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // No plaintext buffered: pull more records off the socket.
            match tls.read_tls(&mut self.tcp) {
                Ok(_) => {} // Ok(0) = EOF: rustls remembers, the reader reports it
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = tls.process_new_packets() {
                log::debug!("tls: {e}");
                // Send the alert rustls queued, best effort.
                self.drain_tls();
                let _ = self.flush_out();
                return Err(io::Error::new(io::ErrorKind::InvalidData, TlsFailure(e)));
            }
            // Handshake replies, key updates, early plaintext: push them out.
            self.drain_tls();
            match self.flush_out() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The rustls error, carried inside the io::Error we hand to tungstenite so
/// that [`classify_io`] can recover it even after tungstenite dropped us.
#[derive(Debug)]
struct TlsFailure(rustls::Error);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS: {}", self.0)
    }
}

impl std::error::Error for TlsFailure {}

/// Certificate problems are fatal and distinct; everything else is `Tls`.
pub(crate) fn classify_tls(e: &rustls::Error) -> Error {
    match e {
        rustls::Error::InvalidCertificate(_) => Error::TlsCertificate,
        _ => Error::Tls,
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tls.is_some() {
            return self.read_tls(buf);
        }
        if self.known_drained() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        loop {
            match self.tcp.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(n) if n > 0 && n < buf.len() => {
                    self.drained = true;
                    return Ok(n);
                }
                r => return r,
            }
        }
    }
}

impl Write for Stream {
    /// Accepts all of `buf` (buffering what the socket does not take now).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.tls.is_some() {
            let mut done = 0;
            while done < buf.len() {
                let n = match self.tls.as_mut() {
                    Some(tls) => tls.writer().write(&buf[done..])?,
                    None => break,
                };
                // Encrypted records go to `out` at once, so rustls's own
                // buffer never fills and never holds bytes we cannot count.
                self.drain_tls();
                if n == 0 {
                    break;
                }
                done += n;
            }
            if done == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            return Ok(done);
        }
        if self.pending() == 0 {
            // Nothing queued: write straight from the caller's buffer.
            loop {
                match self.tcp.write(buf) {
                    Ok(n) => {
                        self.out.extend_from_slice(&buf[n..]);
                        return Ok(buf.len());
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    /// `Ok` once every byte is in the kernel; `WouldBlock` while some wait.
    fn flush(&mut self) -> io::Result<()> {
        if self.tls.is_none() && self.pending() == 0 {
            // Nothing queued (and `flush_out` compacted when it drained).
            return Ok(());
        }
        self.drain_tls();
        self.flush_out()
    }
}

/// Map an I/O error (possibly carrying a TLS failure) to the core's
/// classification.
pub(crate) fn classify_io(e: &io::Error) -> Error {
    use io::ErrorKind as K;
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsFailure>())
    {
        return classify_tls(&tls.0);
    }
    match e.kind() {
        K::ConnectionRefused => Error::ConnectionRefused,
        K::ConnectionReset
        | K::ConnectionAborted
        | K::BrokenPipe
        | K::UnexpectedEof
        | K::NotConnected
        | K::WriteZero => Error::ConnectionReset,
        K::TimedOut => Error::ConnectTimeout,
        _ if is_unreachable(e) => Error::Unreachable,
        _ => Error::Io,
    }
}

/// `ErrorKind::{HostUnreachable, NetworkUnreachable}` need Rust 1.83; the
/// workspace's MSRV is older, so look at the OS codes.
fn is_unreachable(e: &io::Error) -> bool {
    let Some(code) = e.raw_os_error() else {
        return false;
    };
    if cfg!(any(target_os = "linux", target_os = "android")) {
        matches!(code, 101 | 113) // ENETUNREACH, EHOSTUNREACH
    } else if cfg!(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd"
    )) {
        matches!(code, 51 | 65)
    } else if cfg!(windows) {
        matches!(code, 10051 | 10065) // WSAENETUNREACH, WSAEHOSTUNREACH
    } else {
        false
    }
}
