//! tls_echo_peer: a wss:// echo peer for benchmarks (rustls + tungstenite,
//! one blocking thread per connection, 64 KiB stacks).
//!
//! Makes a throwaway CA and server certificate (`zenws_tests::TestPki`),
//! writes the CA PEM to a temp file, then prints two lines:
//! `CA <path>` and `LISTENING <port>`. Exits when stdin reaches EOF.
//!
//! ```text
//! cargo run --release --example tls_echo_peer -- [PORT]
//! ```

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use zenws_tests::tungstenite::{self, Message};
use zenws_tests::TestPki;

fn serve(tcp: TcpStream, cfg: Arc<rustls::ServerConfig>) {
    let _ = tcp.set_nodelay(true);
    let Ok(conn) = rustls::ServerConnection::new(cfg) else {
        return;
    };
    let tls = rustls::StreamOwned::new(conn, tcp);
    let wcfg = tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let Ok(mut ws) = tungstenite::accept_with_config(tls, Some(wcfg)) else {
        return;
    };
    loop {
        match ws.read() {
            // Pongs to pings are queued by tungstenite and written by the next read.
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

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .map_or(0, |p| p.parse().expect("PORT"));
    let pki = TestPki::generate();
    let ca = pki.write_ca_temp_file().expect("write CA file");
    let cfg = pki.server_config();
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    println!("CA {}", ca.display());
    println!("LISTENING {}", listener.local_addr().expect("addr").port());
    let ca_path = ca.clone();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = std::fs::remove_file(&ca_path);
        std::process::exit(0);
    });
    for tcp in listener.incoming() {
        let Ok(tcp) = tcp else { continue };
        let cfg = cfg.clone();
        if let Err(e) = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || serve(tcp, cfg))
        {
            eprintln!("spawn: {e}");
        }
    }
}
