//! The `zenws` CLI as scripts use it: the built binary as a real child
//! process against loopback servers, stdin/stdout/stderr piped, exit codes.
//!
//! Every wait has a deadline; a child still running at its deadline is
//! killed and the test fails with its output.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zenws_tests::{serde_json, Behavior, EchoOptions, EchoServer, MisbehavingServer, TestPki};

fn zenws() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_zenws"))
}

/// A running child with its stdout and stderr collected by threads.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
}

fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

impl Proc {
    fn spawn(exe: &Path, args: &[&str]) -> Proc {
        let mut child = Command::new(exe)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let out = collect(child.stdout.take().unwrap());
        let err = collect(child.stderr.take().unwrap());
        Proc {
            stdin: child.stdin.take(),
            child,
            out,
            err,
        }
    }

    fn cli(args: &[&str]) -> Proc {
        Proc::spawn(zenws(), args)
    }

    fn write_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to the child's stdin");
        stdin.flush().unwrap();
    }

    fn write_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(bytes).expect("write to the child's stdin");
        stdin.flush().unwrap();
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn stdout_bytes(&self) -> Vec<u8> {
        self.out.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    fn report(&self) -> String {
        format!(
            "--- stdout:\n{}\n--- stderr:\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// Wait until `cond(stdout, stderr)` holds; kill the child and fail after `secs`.
    fn wait_for(&mut self, secs: u64, what: &str, cond: impl Fn(&str, &str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond(&self.stdout(), &self.stderr()) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("timed out waiting for {what}\n{}", self.report());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait for the exit (killing the child after `secs`); the output readers
    /// get a moment to drain the pipes.
    fn finish(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                std::thread::sleep(Duration::from_millis(50));
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the child did not exit within {secs} s\n{}", self.report());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON event lines on stderr, parsed (other lines skipped).
fn events(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("event").is_some())
        .collect()
}

fn has_event(stderr: &str, name: &str) -> bool {
    events(stderr).iter().any(|e| e["event"] == name)
}

#[test]
fn piped_lines_echo_in_order_and_eof_exits_zero() {
    let server = EchoServer::plain().unwrap();
    let mut p = Proc::cli(&[&server.url()]);
    // Written before the connection is open: stdin is read only once it is.
    let lines: Vec<String> = (0..50)
        .map(|i| format!("line {i} \"quoted\" \\ ✓"))
        .collect();
    for l in &lines {
        p.write_line(l);
    }
    p.close_stdin();
    let st = p.finish(20);
    assert_eq!(st.code(), Some(0), "{}", p.report());
    let out = p.stdout();
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got, lines, "{}", p.report());
    let err = p.stderr();
    let names: Vec<String> = events(&err)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"connected".to_string()), "{err}");
    assert_eq!(names.last().map(String::as_str), Some("stopped"), "{err}");
    assert_eq!(server.messages_echoed(), 50);
}

#[test]
fn bad_usage_and_bad_urls_exit_two() {
    for args in [
        &["http://example.com/"][..],
        &["ws://"],
        &[],
        &["--bogus", "ws://127.0.0.1:1/"],
        &["--retry-count", "many", "ws://127.0.0.1:1/"],
        &["--heartbeat", "ping:", "ws://127.0.0.1:1/"],
        &["--count", "0", "ws://127.0.0.1:1/"],
        &["--header", "no-colon", "ws://127.0.0.1:1/"],
        &["ws://127.0.0.1:1/", "ws://127.0.0.1:2/"],
    ] {
        let mut p = Proc::cli(args);
        let st = p.finish(10);
        assert_eq!(st.code(), Some(2), "args {args:?}\n{}", p.report());
        assert!(
            p.stderr().contains("zenws:"),
            "args {args:?}: no message\n{}",
            p.report()
        );
    }
    let mut p = Proc::cli(&["--help"]);
    assert_eq!(p.finish(10).code(), Some(0));
    assert!(p.stdout().contains("--retry-count"), "{}", p.report());
}

#[test]
fn tls_unknown_ca_is_fatal_and_ca_file_works() {
    let pki = TestPki::generate();
    let server = EchoServer::start(EchoOptions::tls(pki.server_config())).unwrap();
    // No --ca-file: the webpki roots don't know the test CA.
    let mut p = Proc::cli(&["--retry-delay", "50", &server.url()]);
    let st = p.finish(20);
    assert_eq!(st.code(), Some(3), "{}", p.report());
    let ev = events(&p.stderr());
    assert!(
        ev.iter()
            .any(|e| e["event"] == "failed" && e["reason"] == "tls_certificate"),
        "{}",
        p.report()
    );
    assert!(
        !has_event(&p.stderr(), "restarted"),
        "a certificate error is not retried\n{}",
        p.report()
    );

    let ca = pki.write_ca_temp_file().unwrap();
    let mut p = Proc::cli(&["--ca-file", ca.to_str().unwrap(), &server.url()]);
    p.write_line("over tls");
    p.close_stdin();
    assert_eq!(p.finish(20).code(), Some(0), "{}", p.report());
    assert_eq!(p.stdout(), "over tls\n");
    let _ = std::fs::remove_file(ca);
}

#[test]
fn count_exits_after_n_messages() {
    let server = EchoServer::plain().unwrap();
    let mut p = Proc::cli(&["--count", "2", &server.url()]);
    for i in 0..5 {
        p.write_line(&format!("m{i}"));
    }
    // stdin stays open: --count alone ends the run.
    let st = p.finish(20);
    assert_eq!(st.code(), Some(0), "{}", p.report());
    assert_eq!(p.stdout(), "m0\nm1\n", "{}", p.report());
}

#[test]
fn header_reaches_the_server() {
    let server = EchoServer::plain().unwrap();
    let mut p = Proc::cli(&[
        "--header",
        "X-Api-Key: s3cr3t",
        "-H",
        "X-Trace:1",
        &server.url(),
    ]);
    p.wait_for(10, "connected", |_, err| has_event(err, "connected"));
    assert_eq!(
        server.last_request_header("x-api-key").as_deref(),
        Some("s3cr3t")
    );
    assert_eq!(server.last_request_header("x-trace").as_deref(), Some("1"));
    p.close_stdin();
    assert_eq!(p.finish(20).code(), Some(0), "{}", p.report());
    assert!(
        !p.stderr().contains("s3cr3t"),
        "a header value leaked\n{}",
        p.report()
    );
}

#[test]
fn silent_server_fails_the_heartbeat() {
    let server = MisbehavingServer::start(Behavior::Silent).unwrap();
    let mut p = Proc::cli(&[
        "--heartbeat",
        "ping:100:50",
        "--retry-delay",
        "50",
        &server.url(),
    ]);
    p.wait_for(20, "heartbeat_failed", |_, err| {
        has_event(err, "heartbeat_failed")
    });
    let err = p.stderr();
    assert!(has_event(&err, "heartbeat_missed"), "{err}");
    assert!(
        events(&err)
            .iter()
            .any(|e| e["event"] == "disconnected" && e["reason"] == "heartbeat_failed"),
        "{err}"
    );
}

#[test]
fn line_while_disconnected_is_refused_not_queued() {
    let server = EchoServer::plain().unwrap();
    // A long retry delay keeps the client in backoff after the server stops.
    let mut p = Proc::cli(&[
        "--heartbeat",
        "none",
        "--retry-delay",
        "30000",
        &server.url(),
    ]);
    p.write_line("before");
    p.wait_for(10, "the first echo", |out, _| out == "before\n");
    server.stop();
    p.wait_for(10, "reconnecting", |_, err| has_event(err, "reconnecting"));
    p.write_line("while down");
    p.wait_for(10, "send_failed", |_, err| has_event(err, "send_failed"));
    let ev = events(&p.stderr());
    let failed = ev.iter().find(|e| e["event"] == "send_failed").unwrap();
    assert_eq!(failed["reason"], "not_connected", "{}", p.report());
    p.close_stdin();
    assert_eq!(p.finish(20).code(), Some(0), "{}", p.report());
    assert_eq!(p.stdout(), "before\n");
}

#[test]
fn refused_connection_exhausts_the_restart_budget() {
    // Nothing listens on the port of a stopped server.
    let server = EchoServer::plain().unwrap();
    server.stop();
    let mut p = Proc::cli(&[
        "--retry-count",
        "1",
        "--retry-delay",
        "10",
        "--max-restarts",
        "2",
        &server.url(),
    ]);
    assert_eq!(p.finish(20).code(), Some(3), "{}", p.report());
    let ev = events(&p.stderr());
    assert_eq!(
        ev.iter().filter(|e| e["event"] == "restarted").count(),
        2,
        "{}",
        p.report()
    );
    assert!(
        ev.iter().any(|e| e["event"] == "budget_exhausted"),
        "{}",
        p.report()
    );
    assert!(
        ev.iter().any(|e| e["reason"] == "connection_refused"),
        "{}",
        p.report()
    );
}

#[test]
fn refused_upgrade_is_fatal() {
    let server = MisbehavingServer::start(Behavior::HttpStatus(401)).unwrap();
    let mut p = Proc::cli(&[&server.url()]);
    assert_eq!(p.finish(20).code(), Some(3), "{}", p.report());
    let ev = events(&p.stderr());
    assert!(
        ev.iter().any(|e| e["event"] == "failed"
            && e["reason"] == "upgrade_rejected"
            && e["exit"] == "fatal"),
        "{}",
        p.report()
    );
}

#[test]
fn bad_header_inputs_exit_two_with_a_message() {
    // Each used to leave the CLI blocked forever with nothing printed: the
    // client failed inside start_client and the loop waited for I/O.
    for header in [
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Connection: close",
        "X-Ctl: a\u{1}b-hdr-secret",
        "X-Crlf: a\r\nInjected: hdr-secret",
        "Bad(Name): v",
    ] {
        let mut p = Proc::cli(&["--header", header, "ws://127.0.0.1:1/"]);
        let st = p.finish(10);
        assert_eq!(st.code(), Some(2), "header {header:?}\n{}", p.report());
        let err = p.stderr();
        assert!(
            err.contains("zenws:"),
            "{header:?}: no message\n{}",
            p.report()
        );
        assert!(
            !err.contains("hdr-secret"),
            "{header:?}: the value was echoed\n{}",
            p.report()
        );
    }
}

#[test]
fn url_query_and_userinfo_never_reach_stderr() {
    let server = EchoServer::plain().unwrap();
    let url = format!("{}?token=url-secret", server.url_with_path("/feed"));
    let mut p = Proc::cli(&[&url]);
    p.wait_for(10, "connected", |_, err| has_event(err, "connected"));
    assert_eq!(
        server.last_request_path().as_deref(),
        Some("/feed?token=url-secret")
    );
    p.close_stdin();
    assert_eq!(p.finish(20).code(), Some(0), "{}", p.report());
    let ev = events(&p.stderr());
    let connecting = ev.iter().find(|e| e["event"] == "connecting").unwrap();
    assert_eq!(
        connecting["url"],
        format!("{}?<redacted>", server.url_with_path("/feed"))
    );
    assert!(!p.stderr().contains("url-secret"), "{}", p.report());

    // Refused URLs (userinfo) are shown without their secrets.
    let mut p = Proc::cli(&["ws://user:pw-secret@127.0.0.1:1/?token=url-secret"]);
    assert_eq!(p.finish(10).code(), Some(2), "{}", p.report());
    assert!(p.stderr().contains("zenws:"), "{}", p.report());
    assert!(
        !p.stderr().contains("pw-secret") && !p.stderr().contains("url-secret"),
        "{}",
        p.report()
    );
}

#[test]
fn no_close_prints_the_echo_after_stdin_eof_and_exits_on_peer_close() {
    let server = EchoServer::plain().unwrap();
    // `printf 'x\n' | zenws -n URL`: stdin ends at once, the echo still arrives.
    let mut p = Proc::cli(&["-n", &server.url()]);
    p.write_line("x");
    p.close_stdin();
    p.wait_for(10, "the echo", |out, _| out == "x\n");
    // Still running past stdin EOF: no close of our own.
    std::thread::sleep(Duration::from_millis(300));
    assert!(p.child.try_wait().unwrap().is_none(), "{}", p.report());
    assert!(!has_event(&p.stderr(), "closing"), "{}", p.report());
    // Pushed by the server after stdin EOF: printed too.
    assert_eq!(server.broadcast_text("later"), 1);
    p.wait_for(10, "the pushed message", |out, _| out == "x\nlater\n");
    // The peer's close ends the run, normally.
    assert_eq!(server.close_all(1000, "bye"), 1);
    assert_eq!(p.finish(20).code(), Some(0), "{}", p.report());
    let ev = events(&p.stderr());
    assert!(
        ev.iter()
            .any(|e| e["event"] == "closing" && e["reason"] == "peer_closed"),
        "{}",
        p.report()
    );
    assert_eq!(
        ev.last().map(|e| e["event"].clone()),
        Some("stopped".into()),
        "{}",
        p.report()
    );
    assert!(!has_event(&p.stderr(), "restarted"), "{}", p.report());
}

#[test]
fn one_message_sends_one_line_prints_one_message_and_exits() {
    let server = EchoServer::plain().unwrap();
    let mut p = Proc::cli(&["-1", &server.url()]);
    p.write_line("first");
    p.write_line("second");
    p.close_stdin();
    assert_eq!(p.finish(20).code(), Some(0), "{}", p.report());
    assert_eq!(p.stdout(), "first\n", "{}", p.report());
    assert_eq!(server.messages_echoed(), 1, "{}", p.report());

    // Receive-only: stdin already at EOF, the first pushed message ends the run.
    let mut p = Proc::cli(&["--one-message", &server.url()]);
    p.close_stdin();
    p.wait_for(10, "connected", |_, err| has_event(err, "connected"));
    std::thread::sleep(Duration::from_millis(100));
    server.broadcast_text("pushed 1");
    server.broadcast_text("pushed 2");
    assert_eq!(p.finish(20).code(), Some(0), "{}", p.report());
    assert_eq!(p.stdout(), "pushed 1\n", "{}", p.report());
}

#[test]
fn binary_round_trips_bytes() {
    let server = EchoServer::plain().unwrap();
    let mut p = Proc::cli(&["-b", "-n", &server.url()]);
    // Not UTF-8, a NUL, a CR kept as data: each line is one binary message.
    let input: &[u8] = b"\x00\x01\xff\xfe bin\r\n\x80\n\n";
    p.write_raw(input);
    p.close_stdin();
    p.wait_for(10, "the raw bytes", |_, _| server.messages_echoed() == 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.stdout_bytes().len() < input.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.close_all(1000, "bye");
    assert_eq!(p.finish(20).code(), Some(0), "{}", p.report());
    assert_eq!(p.stdout_bytes(), input, "{}", p.report());

    // -t: text, the default.
    let mut p = Proc::cli(&["-t", &server.url()]);
    p.write_line("plain");
    p.close_stdin();
    assert_eq!(p.finish(20).code(), Some(0), "{}", p.report());
    assert_eq!(p.stdout(), "plain\n", "{}", p.report());
}

#[test]
fn max_messages_exits_zero_after_n() {
    let server = EchoServer::plain().unwrap();
    let mut p = Proc::cli(&["--max-messages", "3", &server.url()]);
    p.wait_for(10, "connected", |_, err| has_event(err, "connected"));
    // stdin stays open: the received count alone ends the run.
    for i in 0..5 {
        server.broadcast_text(&format!("m{i}"));
    }
    assert_eq!(p.finish(20).code(), Some(0), "{}", p.report());
    assert_eq!(p.stdout(), "m0\nm1\nm2\n", "{}", p.report());
    assert!(
        events(&p.stderr())
            .iter()
            .any(|e| e["event"] == "closing" && e["reason"] == "count_reached"),
        "{}",
        p.report()
    );
}

#[test]
fn quiet_prints_no_events_but_errors() {
    let server = EchoServer::plain().unwrap();
    let mut p = Proc::cli(&["-q", &server.url()]);
    p.write_line("hush");
    p.close_stdin();
    assert_eq!(p.finish(20).code(), Some(0), "{}", p.report());
    assert_eq!(p.stdout(), "hush\n", "{}", p.report());
    assert_eq!(p.stderr(), "", "{}", p.report());

    // An error still shows.
    let refused = MisbehavingServer::start(Behavior::HttpStatus(401)).unwrap();
    let mut p = Proc::cli(&["--quiet", &refused.url()]);
    assert_eq!(p.finish(20).code(), Some(3), "{}", p.report());
    let ev = events(&p.stderr());
    assert_eq!(ev.len(), 1, "{}", p.report());
    assert_eq!(ev[0]["event"], "failed", "{}", p.report());
}

#[test]
fn version_and_help() {
    for flag in ["--version", "-V"] {
        let mut p = Proc::cli(&[flag]);
        assert_eq!(p.finish(10).code(), Some(0), "{}", p.report());
        assert_eq!(
            p.stdout(),
            format!("zenws {}\n", env!("CARGO_PKG_VERSION")),
            "{}",
            p.report()
        );
    }
    let mut p = Proc::cli(&["-h"]);
    assert_eq!(p.finish(10).code(), Some(0), "{}", p.report());
    for needle in [
        "--no-close",
        "--binary",
        "--one-message",
        "--max-messages",
        "--quiet",
        "-H, --header",
        "EXIT CODES",
    ] {
        assert!(p.stdout().contains(needle), "{needle}\n{}", p.report());
    }
}
