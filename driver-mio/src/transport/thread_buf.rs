//! Per-thread scratch buffers. The loop thread owns one buffer of each kind
//! and every connection borrows it for the length of one call, so an idle
//! connection owns none of them: received bytes ([`READ`]), frames being
//! built ([`FRAME`]), ciphertext being decrypted ([`CIPHER`]) and TLS
//! records on their way to a socket ([`SEALED`]).
//!
//! A buffer keeps up to [`KEEP`] bytes between calls. One buffer per thread,
//! so generous: releasing it after every large message gives its pages back
//! to the OS and faults them in again on the next one (measured with 64 KiB:
//! +60 % CPU per 100 KB `wss://` message).

use std::cell::RefCell;
use std::thread::LocalKey;

/// Capacity a buffer keeps between calls; more (after a larger message) is
/// released.
pub(super) const KEEP: usize = 4 << 20;

thread_local! {
    /// Bytes read from sockets (the plain path, and TLS plaintext).
    pub(super) static READ: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Outgoing WebSocket frames while they are built.
    pub(super) static FRAME: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Ciphertext read from a socket, decrypted in place by rustls.
    pub(super) static CIPHER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// TLS records sealed for a socket with nothing queued.
    pub(super) static SEALED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` with this thread's `buf` (a fresh one in the unexpected case that
/// it is already in use further up the stack), then release it if it grew
/// past [`KEEP`].
pub(super) fn with<R>(
    buf: &'static LocalKey<RefCell<Vec<u8>>>,
    f: impl FnOnce(&mut Vec<u8>) -> R,
) -> R {
    buf.with(|cell| {
        let mut fresh = Vec::new();
        let mut guard = cell.try_borrow_mut();
        let buf = match guard.as_mut() {
            Ok(b) => &mut **b,
            Err(_) => &mut fresh,
        };
        let r = f(buf);
        if buf.capacity() > KEEP {
            *buf = Vec::new();
        }
        r
    })
}
