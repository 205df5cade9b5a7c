//! The byte stream under the WebSocket layer: a mio `TcpStream`, optionally
//! wrapped in TLS ([`TlsSession`]), with our own outgoing buffer.
//!
//! Writes never block and never fail with `WouldBlock`: bytes that the
//! socket does not take now (plaintext, or TLS records) are kept in `out`
//! and pushed on the next [`Stream::flush_out`]. `flush()` returns
//! `WouldBlock` while anything is left, which is how the transport learns
//! that WRITABLE interest is needed. Every wire byte the kernel has not
//! taken sits in `out` (with nothing queued, a write — plaintext, or TLS
//! records sealed in a per-thread buffer — goes to the socket at once and
//! only the rest is kept), so [`Stream::pending`] is the exact number of
//! wire bytes not yet handed to the kernel — the backpressure measure.
//! (Before the TLS handshake finishes, written plaintext waits inside the
//! [`TlsSession`] and is not counted: that is the HTTP upgrade request.)

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use zenws_core::Error;

use super::thread_buf;
use super::tls_session::{classify_tls, Sealed, TlsFailure, TlsSession};

/// Bytes worth compacting the buffer for (we keep a read offset instead of
/// shifting the vector after every partial write).
const COMPACT_AT: usize = 64 * 1024;

pub(crate) struct Stream {
    tcp: TcpStream,
    tls: Option<Box<TlsSession>>,
    /// Wire bytes not yet written to the socket: `out[head..]`.
    out: Vec<u8>,
    head: usize,
    /// Capacity kept after the buffer drains; more is released.
    retain: usize,
    /// The last socket read returned fewer bytes than asked for, so
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
    /// A plain stream, or (with `tls`) a TLS client for `name` whose
    /// ClientHello is ready to go.
    pub(crate) fn new(
        tcp: TcpStream,
        tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
        retain: usize,
    ) -> Result<Stream, rustls::Error> {
        let mut out = Vec::new();
        let tls = match tls {
            Some((config, name)) => Some(Box::new(TlsSession::new(config, name, &mut out)?)),
            None => None,
        };
        Ok(Stream {
            tcp,
            tls,
            out,
            head: 0,
            retain,
            drained: false,
            short_reads: false,
            read_closed: false,
        })
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
            && self.short_read_rule()
            && !self.tls.as_ref().is_some_and(|t| t.has_plaintext())
    }

    fn short_read_rule(&self) -> bool {
        self.short_reads && !self.read_closed && cfg!(not(windows))
    }

    /// Wire bytes waiting for the socket.
    pub(crate) fn pending(&self) -> usize {
        self.out.len() - self.head
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

    /// Hand `bytes` to the socket if nothing is queued before them; keep
    /// what it does not take (all of it, if something is queued).
    fn write_through(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            // (TLS before the handshake: the plaintext waits in the session.)
            return Ok(());
        }
        if self.pending() == 0 {
            loop {
                match self.tcp.write(bytes) {
                    Ok(n) => {
                        self.out.extend_from_slice(&bytes[n..]);
                        return Ok(());
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    /// Best effort on the way out: TLS close_notify, one write attempt, FIN.
    pub(crate) fn shutdown(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.close_notify(&mut self.out);
        }
        let _ = self.flush_out();
        let _ = self.tcp.shutdown(Shutdown::Both);
        self.out = Vec::new();
        self.head = 0;
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut socket = SocketReader {
            rule: self.short_read_rule(),
            tcp: &mut self.tcp,
            drained: &mut self.drained,
        };
        let Some(tls) = self.tls.as_mut() else {
            return socket.read(buf);
        };
        let read = tls.read(&mut socket, &mut self.out, buf);
        // Handshake replies, key updates, alerts: push them out.
        if self.pending() > 0 {
            match self.flush_out() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock && read.is_ok() => return Err(e),
                _ => {}
            }
        }
        read
    }
}

/// The socket as both read paths (plain and TLS) see it: after a short read
/// (fewer bytes than asked), `WouldBlock` without a syscall until the next
/// readable event, when `rule` allows (see [`Stream`]'s `drained`).
struct SocketReader<'s> {
    tcp: &'s mut TcpStream,
    drained: &'s mut bool,
    rule: bool,
}

impl Read for SocketReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rule && *self.drained {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        loop {
            match self.tcp.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(n) if n > 0 && n < buf.len() => {
                    *self.drained = true;
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
        if self.tls.is_none() {
            self.write_through(buf)?;
        } else if self.pending() > 0 {
            if let Some(tls) = self.tls.as_mut() {
                tls.write(buf, &mut self.out)?;
            }
        } else {
            // Nothing queued: seal into this thread's buffer and hand the
            // records to the socket at once, so an idle connection owns no
            // outgoing buffer (the plain path's rule, for records).
            thread_buf::with(&thread_buf::SEALED, |scratch| {
                let mut sealed = Sealed::new(scratch);
                let r = match self.tls.as_mut() {
                    Some(tls) => tls.write(buf, &mut sealed),
                    None => Ok(()),
                };
                r.and_then(|()| self.write_through(sealed.bytes()))
            })?;
        }
        Ok(buf.len())
    }

    /// `Ok` once every byte is in the kernel; `WouldBlock` while some wait.
    fn flush(&mut self) -> io::Result<()> {
        if self.pending() == 0 {
            // Nothing queued (and `flush_out` compacted when it drained).
            return Ok(());
        }
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
