//! The TLS client session (`transport/tls_session.rs`) fed ciphertext in
//! random splits, with random read-buffer sizes.
//!
//! * Raw mode (flags bit 0): a fresh session (ClientHello sent) reads the
//!   input's bytes as the server's answer. Never panics; a failure is final
//!   (every later read and write fails too).
//! * Handshake mode: a real handshake in memory with a rustls server (TLS
//!   1.3, or 1.2 with flags bit 1), then the server sends the input's
//!   payload as application data (optionally close_notify, optionally EOF).
//!   The server→client bytes can be bit-flipped at fuzzer-chosen offsets
//!   (handshake or records). Checks: never panics; the plaintext received is
//!   always a prefix of what the server sent (tampering makes it fail, never
//!   lie); untampered, the exchange completes with every byte, whatever the
//!   splits; a failure is final.
//!
//! Input: `[flags] [read buffer] [n] [n split sizes] [m] [m × (offset u16 LE,
//! xor)] [payload...]` (raw mode: no mutations, the rest is ciphertext).
#![no_main]

use std::io::{self, Read, Write};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use zenws_mio::fuzzing::TlsClient;
use zenws_mio::tls::{client_config, TlsRoots};
use zenws_tests::certs::TestPki;

struct Setup {
    client: Arc<rustls::ClientConfig>,
    /// TLS 1.3, TLS 1.2.
    servers: [Arc<rustls::ServerConfig>; 2],
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let pki = TestPki::generate();
        let client = client_config(&TlsRoots::CaPem(pki.ca_pem().into_bytes())).unwrap();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pki.server_cert_pem().as_bytes())
                .map(|c| c.unwrap())
                .collect();
        let server = |v: &'static rustls::SupportedProtocolVersion| {
            let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem().as_bytes()).unwrap();
            let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[v])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs.clone(), key)
            .unwrap();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(cfg)
        };
        Setup {
            client,
            servers: [
                server(&rustls::version::TLS13),
                server(&rustls::version::TLS12),
            ],
        }
    })
}

/// The socket as the session sees it: the bytes so far, handed out in the
/// input's split sizes, then `WouldBlock` (or EOF once `eof`).
struct Wire<'a> {
    data: Vec<u8>,
    pos: usize,
    sizes: &'a [u8],
    i: usize,
    eof: bool,
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.data.len() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let step = if self.sizes.is_empty() {
            usize::MAX
        } else {
            let s = self.sizes[self.i % self.sizes.len()];
            self.i += 1;
            // 0 → a large read.
            if s == 0 {
                1 << 16
            } else {
                usize::from(s)
            }
        };
        let n = step.min(self.data.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Read until the session blocks; `Some(error)` when it ended (`Ok(0)` → `None` inside).
fn drain(
    client: &mut TlsClient,
    wire: &mut Wire<'_>,
    out: &mut Vec<u8>,
    buf: &mut [u8],
    received: &mut Vec<u8>,
) -> Option<Option<io::Error>> {
    loop {
        match client.read(wire, out, buf) {
            Ok(0) => return Some(None),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) => return Some(Some(e)),
        }
    }
}

/// A session that failed keeps failing.
fn assert_final(client: &mut TlsClient, wire: &mut Wire<'_>, out: &mut Vec<u8>, buf: &mut [u8]) {
    assert!(!client.has_plaintext());
    let again = client.read(wire, out, buf);
    assert!(again.is_err(), "read after a failure: {again:?}");
}

fuzz_target!(|data: &[u8]| {
    let [flags, bufsize, n, rest @ ..] = data else {
        return;
    };
    let n = usize::from(n & 15).min(rest.len());
    let (sizes, rest) = rest.split_at(n);
    const BUF: [usize; 6] = [1, 5, 100, 4096, 17 << 10, 70 << 10];
    let mut buf = vec![0u8; BUF[usize::from(*bufsize) % BUF.len()]];
    let setup = setup();
    let name = ServerName::try_from("localhost").unwrap();
    let mut c_out = Vec::new();
    let mut client = TlsClient::new(setup.client.clone(), name, &mut c_out).unwrap();
    assert!(!c_out.is_empty(), "no ClientHello");
    // The HTTP upgrade request, written before the handshake (kept early).
    client.write(b"GET / HTTP/1.1\r\n\r\n", &mut c_out).unwrap();

    if flags & 1 != 0 {
        let mut wire = Wire {
            data: rest.to_vec(),
            pos: 0,
            sizes,
            i: 0,
            eof: flags & 4 != 0,
        };
        let mut received = Vec::new();
        if let Some(Some(_)) = drain(&mut client, &mut wire, &mut c_out, &mut buf, &mut received) {
            assert_final(&mut client, &mut wire, &mut c_out, &mut buf);
        }
        // Nothing a forger sends can be application data.
        assert!(received.is_empty(), "plaintext without a handshake");
        return;
    }

    let Some((&m, rest)) = rest.split_first() else {
        return;
    };
    let m = usize::from(m & 7).min(rest.len() / 3);
    let (muts, payload) = rest.split_at(3 * m);
    let muts: Vec<(usize, u8)> = muts
        .chunks(3)
        .map(|c| (usize::from(u16::from_le_bytes([c[0], c[1]])), c[2]))
        .filter(|&(_, x)| x != 0)
        .collect();
    let close = flags & 8 != 0;
    let eof = flags & 4 != 0;
    let mut server =
        rustls::ServerConnection::new(setup.servers[usize::from(flags >> 1 & 1)].clone()).unwrap();
    let mut wire = Wire {
        data: Vec::new(),
        pos: 0,
        sizes,
        i: 0,
        eof: false,
    };
    let mut sent = Vec::new();
    let mut received = Vec::new();
    let mut ended: Option<Option<io::Error>> = None;
    let mut server_failed = false;
    let mut app_written = false;
    let mut wrote_after = false;
    for _round in 0..32 {
        let mut progress = false;
        // Client → server.
        if !c_out.is_empty() {
            progress = true;
            if !server_failed {
                let mut rd = &c_out[..];
                while !rd.is_empty() {
                    if server.read_tls(&mut rd).is_err() || server.process_new_packets().is_err() {
                        server_failed = true;
                        break;
                    }
                }
                let mut tmp = [0u8; 1024];
                while let Ok(k) = server.reader().read(&mut tmp) {
                    if k == 0 {
                        break;
                    }
                }
            }
            c_out.clear();
        }
        if !server.is_handshaking() && !app_written && !server_failed {
            app_written = true;
            let mut p = payload;
            let mut j = 0;
            while !p.is_empty() {
                let k = if sizes.is_empty() {
                    p.len()
                } else {
                    (usize::from(sizes[j % sizes.len()]) * 97)
                        .max(1)
                        .min(p.len())
                };
                j += 1;
                // rustls may take less (or nothing, e.g. once the client's
                // corrupted records made it give up): only what it took was sent.
                let took = server.writer().write(&p[..k]).unwrap_or(0);
                sent.extend_from_slice(&p[..took]);
                if took == 0 {
                    break;
                }
                p = &p[took..];
            }
            if close {
                server.send_close_notify();
            }
        }
        // Server → wire, bit flips applied as the bytes appear.
        while server.wants_write() {
            let start = wire.data.len();
            server.write_tls(&mut wire.data).unwrap();
            for &(at, x) in &muts {
                if (start..wire.data.len()).contains(&at) {
                    wire.data[at] ^= x;
                }
            }
            progress = true;
        }
        if eof && app_written && !server.wants_write() {
            wire.eof = true;
        }
        // The client reads.
        if ended.is_none() {
            let before = (wire.pos, received.len());
            ended = drain(&mut client, &mut wire, &mut c_out, &mut buf, &mut received);
            progress |= before != (wire.pos, received.len()) || ended.is_some();
            if ended.is_none() && app_written && !wrote_after && !client.has_plaintext() {
                // Application data from the client, once the server has spoken.
                wrote_after = true;
                if client.write(b"ping", &mut c_out).is_ok() {
                    progress = true;
                }
            }
        }
        if !progress {
            break;
        }
    }
    // Tampering makes the session fail, never lie.
    assert!(
        sent.starts_with(&received),
        "received bytes the server never sent"
    );
    let tampered = muts.iter().any(|&(at, _)| at < wire.pos);
    if let Some(Some(e)) = &ended {
        assert_final(&mut client, &mut wire, &mut c_out, &mut buf);
        if e.kind() == io::ErrorKind::InvalidData {
            // A session that failed (TLS) writes nothing more.
            assert!(client.write(b"x", &mut c_out).is_err());
        }
    }
    if !tampered && !server_failed {
        match &ended {
            Some(Some(e)) => assert!(
                e.kind() == io::ErrorKind::UnexpectedEof && !close,
                "untampered session failed: {e}"
            ),
            Some(None) => assert!(close, "Ok(0) without close_notify"),
            None => assert!(!close && !eof, "close_notify/EOF not seen"),
        }
        assert!(app_written, "handshake did not complete");
        assert_eq!(received.len(), sent.len(), "lost plaintext");
    }
});
