//! Name resolution off the event loop.
//!
//! `getaddrinfo` blocks, so a [`Resolver`] owns one background thread fed by
//! a channel; answers come back through another channel and the event loop
//! is woken with the `mio::Waker` it handed in. IP literals and `localhost`
//! never touch the thread: see [`resolve_inline`].
//!
//! Lookups are answered in the order they were asked (one thread): a slow
//! lookup delays the ones queued behind it, which the connect timeout
//! bounds. There is no cancellation: an answer for a key that is no longer
//! interested must be ignored by the caller, so make keys unique per request
//! (e.g. slab key plus a generation counter), not just per slot.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use zenws_core::Error;

type Answer = (usize, Result<Vec<SocketAddr>, Error>);

/// A DNS resolver running on one background thread.
///
/// Dropping it closes the request channel; the thread exits after the lookup
/// in progress, if any (it is detached, so drop never blocks the event loop).
pub struct Resolver {
    requests: Option<mpsc::Sender<(usize, String, u16)>>,
    /// A second sender for answers produced on the caller's thread (inline
    /// literals, a dead resolver thread).
    local: mpsc::Sender<Answer>,
    answers: mpsc::Receiver<Answer>,
    waker: Arc<mio::Waker>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// Start the resolver thread. `waker` is woken after every answer.
    ///
    /// Panics only if the OS cannot spawn a thread.
    pub fn new(waker: Arc<mio::Waker>) -> Resolver {
        let (req_tx, req_rx) = mpsc::channel::<(usize, String, u16)>();
        let (ans_tx, ans_rx) = mpsc::channel::<Answer>();
        let local = ans_tx.clone();
        let thread_waker = waker.clone();
        thread::Builder::new()
            .name("zenws-dns".into())
            .spawn(move || {
                while let Ok((key, host, port)) = req_rx.recv() {
                    let answer = lookup(&host, port);
                    if ans_tx.send((key, answer)).is_err() {
                        break;
                    }
                    if let Err(e) = thread_waker.wake() {
                        log::warn!("dns: waking the event loop failed: {e}");
                    }
                }
                log::debug!("dns: resolver thread exits");
            })
            .expect("spawn the DNS resolver thread");
        Resolver {
            requests: Some(req_tx),
            local,
            answers: ans_rx,
            waker,
        }
    }

    /// Ask for `host:port`; the answer arrives via [`Resolver::try_recv`]
    /// under `key` (and the waker fires). IP literals and `localhost` are
    /// answered at once without the thread; call [`resolve_inline`] first to
    /// skip the round trip entirely.
    pub fn resolve(&self, key: usize, host: String, port: u16) {
        if let Some(addrs) = resolve_inline(&host, port) {
            self.answer_locally(key, Ok(addrs));
            return;
        }
        let sent = match &self.requests {
            Some(tx) => tx.send((key, host, port)).is_ok(),
            None => false,
        };
        if !sent {
            // Only if the thread died: answer rather than leave the caller waiting.
            log::error!("dns: resolver thread is gone; failing lookup {key}");
            self.answer_locally(key, Err(Error::Dns));
        }
    }

    fn answer_locally(&self, key: usize, answer: Result<Vec<SocketAddr>, Error>) {
        // Cannot fail: we own the receiver.
        let _ = self.local.send((key, answer));
        if let Err(e) = self.waker.wake() {
            log::warn!("dns: waking the event loop failed: {e}");
        }
    }

    /// Take one finished lookup, if any: `(key, addresses)` or
    /// `(key, Err(Error::Dns))`. Call until `None` after each waker event.
    pub fn try_recv(&self) -> Option<(usize, Result<Vec<SocketAddr>, Error>)> {
        self.answers.try_recv().ok()
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        // Closing the request channel ends the thread's loop.
        self.requests.take();
    }
}

fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
    if let Some(addrs) = resolve_inline(host, port) {
        return Ok(addrs);
    }
    match (host, port).to_socket_addrs() {
        Ok(it) => {
            let addrs: Vec<SocketAddr> = it.collect();
            if addrs.is_empty() {
                log::debug!("dns: {host}: no addresses");
                Err(Error::Dns)
            } else {
                Ok(addrs)
            }
        }
        Err(e) => {
            log::debug!("dns: {host}: {e}");
            Err(Error::Dns)
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
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
    fn thread_answers_and_wakes() {
        const WAKE: mio::Token = mio::Token(7);
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE).unwrap());
        let resolver = Resolver::new(waker);
        resolver.resolve(1, "127.0.0.1".into(), 1234);
        // `.invalid` is reserved (RFC 6761): guaranteed not to resolve, and
        // resolvers answer it locally without a network round trip.
        resolver.resolve(2, "name.invalid".into(), 80);
        resolver.resolve(3, "localhost".into(), 5);

        let mut events = mio::Events::with_capacity(8);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < 3 {
            assert!(
                Instant::now() < deadline,
                "resolver did not answer: {got:?}"
            );
            poll.poll(&mut events, Some(Duration::from_millis(200)))
                .unwrap();
            for ev in events.iter() {
                assert_eq!(ev.token(), WAKE);
            }
            while let Some(a) = resolver.try_recv() {
                got.push(a);
            }
        }
        got.sort_by_key(|a| a.0);
        assert_eq!(got[0], (1, Ok(vec!["127.0.0.1:1234".parse().unwrap()])));
        assert_eq!(got[1], (2, Err(Error::Dns)));
        assert_eq!(got[2], (3, Ok(vec!["127.0.0.1:5".parse().unwrap()])));
        drop(resolver);
    }
}
