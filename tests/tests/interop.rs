//! Interop: our driver against independent WebSocket servers — Python
//! `websockets` and Node `ws` (tests/peers/), plain and TLS.
//!
//! Each test spawns one peer (`--port 0`, reads `LISTENING <port>`), opens one
//! supervised client and runs every case on it in order: text and binary echo
//! (1 B, 64 KiB, 1 MiB, 16 MiB), a server-initiated ping (`__ping:abc`: the
//! peer waits for our automatic pong, then says `pinged`), the upgrade headers
//! (`__headers`), and server closes (`__close:4001`, `__close:1001`) after
//! which the client must report the right reason and reconnect. The matrix
//! (peer × tls × case → ok) goes to stdout.
//!
//! The peers need `tests/peers/setup.sh` (a venv with `websockets`, `npm ci`
//! for `ws`); it is run once here if their folders are missing. If it cannot
//! run because python3 or node/npm is not installed, that peer's tests are
//! skipped with a loud message; any other setup failure fails the tests.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use zenws_core::retry::{Jitter, RetryCount};
use zenws_core::{Error as Reason, HeartbeatConfig};
use zenws_mio::{ClientConfig, ClientEvent, ClientId, ClientSupervisor, Message};
use zenws_tests::{serde_json, TestPki};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn venv_python() -> PathBuf {
    match std::env::var_os("ZENWS_PEERS_VENV") {
        Some(v) => PathBuf::from(v).join("bin/python"),
        None => repo_root().join(".venv-peers/bin/python"),
    }
}

fn node_dir() -> PathBuf {
    repo_root().join("tests/peers/node")
}

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn python_ready() -> bool {
    venv_python().is_file()
}

fn node_ready() -> bool {
    node_dir().join("node_modules/ws/package.json").is_file()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeerKind {
    Python,
    Node,
}

impl PeerKind {
    fn name(self) -> &'static str {
        match self {
            PeerKind::Python => "python",
            PeerKind::Node => "node",
        }
    }
}

/// Which peers can run here: `Err(why)` means skip (tool missing).
struct Availability {
    python: Result<(), String>,
    node: Result<(), String>,
}

/// Run tests/peers/setup.sh once if a peer's folder is missing.
fn availability() -> &'static Availability {
    static AVAIL: OnceLock<Availability> = OnceLock::new();
    AVAIL.get_or_init(|| {
        let has_python = have("python3");
        let has_node = have("node") && have("npm");
        if (has_python && !python_ready()) || (has_node && !node_ready()) {
            let script = repo_root().join("tests/peers/setup.sh");
            eprintln!(
                "interop: running {} (peers not installed yet)",
                script.display()
            );
            let mut cmd = Command::new("bash");
            cmd.arg(&script);
            if !has_node {
                cmd.env("ZENWS_PEERS_SKIP_NODE", "1");
            }
            let out = cmd.output().expect("run bash tests/peers/setup.sh");
            if !out.status.success() {
                panic!(
                    "tests/peers/setup.sh failed although python3{} is installed:\n{}{}",
                    if has_node { " and node/npm" } else { "" },
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let python = if python_ready() {
            Ok(())
        } else if !has_python {
            Err("python3 not found".into())
        } else {
            panic!("setup.sh ran but {} is missing", venv_python().display())
        };
        let node = if has_node && node_ready() {
            Ok(())
        } else if !has_node {
            Err("node/npm not found".into())
        } else {
            panic!(
                "setup.sh ran but {}/node_modules/ws is missing",
                node_dir().display()
            )
        };
        Availability { python, node }
    })
}

/// A throwaway directory holding the peer's certificate, key and our CA file.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!(
            "zenws-interop-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running peer process; dropping it closes its stdin (it exits) and reaps it.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
}

impl Peer {
    fn spawn(kind: PeerKind, tls: Option<(&Path, &Path)>) -> Peer {
        let mut cmd = match kind {
            PeerKind::Python => {
                let mut c = Command::new(venv_python());
                c.arg(repo_root().join("tests/peers/python/ws_peer.py"));
                c
            }
            PeerKind::Node => {
                let mut c = Command::new("node");
                c.arg(node_dir().join("ws_peer.js"));
                c
            }
        };
        cmd.args(["--port", "0"]);
        if let Some((cert, key)) = tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {kind:?} peer: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut peer = Peer {
            child,
            stdin,
            port: 0,
        };
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        peer.port = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!("{kind:?} peer printed {line:?} instead of LISTENING <port>")
            });
        peer
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.stdin.take()); // EOF: the peer closes its connections and exits
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One supervised client and the events it produced, consumed in order.
struct Session {
    sup: ClientSupervisor,
    id: ClientId,
}

impl Session {
    /// Next event matching `want` within `secs`. A disconnect or exit that
    /// `want` does not accept ends the wait at once.
    fn wait_for(
        &mut self,
        secs: u64,
        mut want: impl FnMut(&ClientEvent) -> bool,
    ) -> Result<ClientEvent, String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut skipped = Vec::new();
        loop {
            while let Some(ev) = self.sup.poll_event() {
                if want(&ev) {
                    return Ok(ev);
                }
                match ev {
                    ClientEvent::Disconnected { .. }
                    | ClientEvent::Failed { .. }
                    | ClientEvent::Stopped { .. } => {
                        return Err(format!("unexpected {ev:?} (skipped before: {skipped:?})"));
                    }
                    ClientEvent::Message { message, .. } => {
                        skipped.push(format!("message of {} bytes", message.as_bytes().len()))
                    }
                    other => skipped.push(format!("{other:?}")),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("timed out after {secs} s (skipped: {skipped:?})"));
            }
            self.sup
                .run_once(Some(left.min(Duration::from_millis(50))))
                .map_err(|e| format!("event loop: {e}"))?;
        }
    }

    fn message(&mut self, secs: u64) -> Result<Message, String> {
        match self.wait_for(secs, |e| matches!(e, ClientEvent::Message { .. }))? {
            ClientEvent::Message { message, .. } => Ok(message),
            _ => unreachable!(),
        }
    }

    fn echo(&mut self, msg: Message, secs: u64) -> Result<(), String> {
        self.sup
            .send_message(self.id, msg.clone())
            .map_err(|e| format!("send: {e}"))?;
        let got = self.message(secs)?;
        if got == msg {
            Ok(())
        } else {
            Err(format!(
                "echo differs: sent {} bytes ({}), got {} bytes ({})",
                msg.as_bytes().len(),
                kind(&msg),
                got.as_bytes().len(),
                kind(&got)
            ))
        }
    }

    fn request_text(&mut self, text: &str, secs: u64) -> Result<String, String> {
        self.sup
            .send_text(self.id, text)
            .map_err(|e| format!("send: {e}"))?;
        match self.message(secs)? {
            Message::Text(t) => Ok(t.as_str().to_string()),
            other => Err(format!(
                "expected text, got {} binary bytes",
                other.as_bytes().len()
            )),
        }
    }

    /// The peer closes with `code`: we must see `expected` and reconnect.
    fn server_close(&mut self, code: u16, expected: Reason) -> Result<(), String> {
        self.sup
            .send_text(self.id, format!("__close:{code}"))
            .map_err(|e| format!("send: {e}"))?;
        let ev = self.wait_for(10, |e| matches!(e, ClientEvent::Disconnected { .. }))?;
        let ClientEvent::Disconnected { reason, .. } = ev else {
            unreachable!()
        };
        if reason != expected {
            return Err(format!(
                "close {code}: reason {reason:?}, expected {expected:?}"
            ));
        }
        self.wait_for(10, |e| matches!(e, ClientEvent::Opened { .. }))?;
        // The new connection works.
        self.echo(Message::Text(format!("after {code}").into()), 10)
    }
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Text(_) => "text",
        Message::Binary(_) => "binary",
    }
}

/// `n` bytes of valid UTF-8 ending in a two-byte character.
fn text_of(n: usize) -> Message {
    let s = if n < 2 {
        "x".repeat(n)
    } else {
        let mut s: String = (0..n - 2)
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect();
        s.push('é');
        s
    };
    assert_eq!(s.len(), n);
    Message::Text(s.into())
}

/// `n` pseudo-random bytes (xorshift), so a shifted or truncated echo shows.
fn binary_of(n: usize) -> Message {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ n as u64;
    let v: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Message::Binary(v.into())
}

fn config(ca: Option<&Path>) -> ClientConfig {
    let mut c = ClientConfig::default()
        .header("X-Zenws-Test", "hello")
        .header("Authorization", "Bearer t0k");
    if let Some(ca) = ca {
        c = c.ca_file(ca);
    }
    c.connection.heartbeat = HeartbeatConfig::none();
    c.connection.connect_timeout = Duration::from_secs(10);
    c.connection.retry.retry_count = RetryCount::Limited(5);
    c.connection.retry.retry_delay = Duration::from_millis(50);
    c.connection.retry.max_backoff = Duration::from_millis(500);
    c.connection.retry.jitter = Jitter::None;
    // Limits stay at their defaults (16 MiB messages): the 16 MiB cases test them.
    c
}

type Case = (
    &'static str,
    Box<dyn FnOnce(&mut Session) -> Result<(), String>>,
);

fn cases() -> Vec<Case> {
    let mut v: Vec<Case> = Vec::new();
    v.push((
        "text echo (unicode)",
        Box::new(|s| s.echo(Message::Text("héllo wörld ✓ 𝄞".into()), 10)),
    ));
    for (label, n, secs) in [
        ("1 B", 1, 10),
        ("64 KiB", 64 * KIB, 10),
        ("1 MiB", MIB, 20),
        ("16 MiB", 16 * MIB, 60),
    ] {
        let name: &'static str = Box::leak(format!("text echo {label}").into_boxed_str());
        v.push((name, Box::new(move |s| s.echo(text_of(n), secs))));
        let name: &'static str = Box::leak(format!("binary echo {label}").into_boxed_str());
        v.push((name, Box::new(move |s| s.echo(binary_of(n), secs))));
    }
    v.push((
        "server ping -> auto pong",
        Box::new(|s| match s.request_text("__ping:abc", 15)?.as_str() {
            "pinged" => Ok(()),
            other => Err(format!("peer said {other:?}")),
        }),
    ));
    v.push((
        "custom headers",
        Box::new(|s| {
            let json = s.request_text("__headers", 10)?;
            let h: serde_json::Value =
                serde_json::from_str(&json).map_err(|e| format!("{e}: {json}"))?;
            let get = |k: &str| h.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            if get("x-zenws-test") != "hello" || get("authorization") != "Bearer t0k" {
                return Err(format!("headers seen by the peer: {json}"));
            }
            if !get("upgrade").eq_ignore_ascii_case("websocket") {
                return Err(format!("no upgrade header: {json}"));
            }
            Ok(())
        }),
    ));
    v.push((
        "server close 4001 -> reconnect",
        Box::new(|s| s.server_close(4001, Reason::AbnormalClose { code: 4001 })),
    ));
    v.push((
        "server close 1001 -> reconnect",
        Box::new(|s| s.server_close(1001, Reason::GoingAway)),
    ));
    v
}

/// Print rows atomically to the real stdout (visible without --nocapture).
fn print_matrix(rows: &[String]) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(rows.join("").as_bytes());
    let _ = out.flush();
}

fn run_peer(kind: PeerKind, tls: bool) {
    let avail = availability();
    let ready = match kind {
        PeerKind::Python => &avail.python,
        PeerKind::Node => &avail.node,
    };
    if let Err(why) = ready {
        eprintln!(
            "\n!!!!! interop: SKIPPING {} peer ({}): {why}; install it and run tests/peers/setup.sh !!!!!\n",
            kind.name(),
            if tls { "wss" } else { "ws" }
        );
        return;
    }
    let dir = TempDir::new(kind.name());
    let pki = TestPki::generate();
    let (peer, ca) = if tls {
        let cert = dir.0.join("cert.pem");
        let key = dir.0.join("key.pem");
        std::fs::write(&cert, pki.server_cert_pem()).expect("write cert");
        std::fs::write(&key, pki.server_key_pem()).expect("write key");
        let ca = pki.write_ca_file(&dir.0).expect("write CA");
        (Peer::spawn(kind, Some((&cert, &key))), Some(ca))
    } else {
        (Peer::spawn(kind, None), None)
    };
    let scheme = if tls { "wss" } else { "ws" };
    let url = format!("{scheme}://127.0.0.1:{}/interop/path?x=1", peer.port);

    let started = Instant::now();
    let mut sup = ClientSupervisor::new().expect("supervisor");
    let id = sup
        .start_client(&url, config(ca.as_deref()))
        .expect("start client");
    let mut s = Session { sup, id };
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let row = |case: &str, result: &str| {
        format!(
            "interop  {:<6}  {:<3}  {:<32}  {result}\n",
            kind.name(),
            scheme,
            case
        )
    };
    match s.wait_for(15, |e| matches!(e, ClientEvent::Opened { .. })) {
        Ok(_) => rows.push(row("connect", "ok")),
        Err(e) => {
            rows.push(row("connect", "FAIL"));
            print_matrix(&rows);
            panic!("{} {scheme}: connect: {e}", kind.name());
        }
    }
    for (name, case) in cases() {
        match case(&mut s) {
            Ok(()) => rows.push(row(name, "ok")),
            Err(e) => {
                rows.push(row(name, "FAIL"));
                failures.push(format!("{name}: {e}"));
                if s.sup.is_empty() {
                    break; // the client is gone: the remaining cases cannot run
                }
            }
        }
    }
    if !s.sup.is_empty() {
        let _ = s.sup.stop_client(id);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !s.sup.is_empty() && Instant::now() < deadline {
            let _ = s.sup.run_once(Some(Duration::from_millis(50)));
            while s.sup.poll_event().is_some() {}
        }
    }
    rows.push(format!(
        "interop  {:<6}  {:<3}  ({} cases in {:.1} s)\n",
        kind.name(),
        scheme,
        rows.len(),
        started.elapsed().as_secs_f64()
    ));
    print_matrix(&rows);
    drop(peer);
    assert!(
        failures.is_empty(),
        "{} {scheme}: {failures:#?}",
        kind.name()
    );
}

#[test]
fn python_websockets_plain() {
    run_peer(PeerKind::Python, false);
}

#[test]
fn python_websockets_tls() {
    run_peer(PeerKind::Python, true);
}

#[test]
fn node_ws_plain() {
    run_peer(PeerKind::Node, false);
}

#[test]
fn node_ws_tls() {
    run_peer(PeerKind::Node, true);
}
