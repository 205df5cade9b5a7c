//! `zenws`: a websocat-like command-line client that stays connected.
//!
//! ```text
//! cargo install --path examples/cli      # or: cargo run --release -p zenws -- [OPTIONS] <URL>
//! zenws [OPTIONS] <URL>
//! ```
//!
//! Each stdin line is sent as a text message (`-b`: binary); each received
//! message is printed to stdout (one line; binary as hex, `-b`: raw).
//! Lifecycle events go to stderr as JSON lines (`{"event":"connected",...}`).
//! Exit codes: 0 normal end, 2 bad usage or URL, 3 fatal. See `--help`.
//!
//! The loop runs the supervisor *embedded* in a `mio::Poll` this program
//! owns, sharing one `mio::Waker` with it (`embedded_with_waker`: mio allows
//! one per `Poll`): the stdin thread wakes the loop for every line, so a
//! line is sent at once (no polling interval), on every platform mio runs.

mod args;
mod events;

use events::JsonLine;
use mio::{Events, Poll, Token, Waker};
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::process::exit;
use std::sync::{mpsc, Arc};
use zenws_mio::{ClientEvent, ClientSupervisor, Error, Message};

const WAKE: Token = Token(0);

/// Print `zenws: <msg>` and a hint on stderr, exit 2.
pub(crate) fn usage_error(msg: impl std::fmt::Display) -> ! {
    eprintln!("zenws: {msg}\nTry 'zenws --help' for usage.");
    exit(2)
}

enum Input {
    /// One line without its '\n'.
    Line(Vec<u8>),
    Eof,
}

/// Read stdin on its own thread; each line (or EOF) wakes the loop.
fn spawn_stdin(tx: mpsc::Sender<Input>, waker: Arc<Waker>) {
    // A failed wake-up leaves the line for the next turn (at most the
    // supervisor's next deadline away): nothing is lost.
    let wake = move || {
        let _ = waker.wake();
    };
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut buf = Vec::new();
            match stdin.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if buf.ends_with(b"\n") {
                        buf.pop();
                    }
                    if tx.send(Input::Line(buf)).is_err() {
                        return;
                    }
                    wake();
                }
            }
        }
        let _ = tx.send(Input::Eof);
        wake();
    });
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// A close frame from the peer (what ends a `-n` run after stdin EOF).
fn peer_closed(reason: zenws_core::Error) -> bool {
    use zenws_core::Error as E;
    matches!(
        reason,
        E::ClosedByPeer | E::GoingAway | E::AbnormalClose { .. }
    ) && !matches!(reason, E::AbnormalClose { code: 1006 })
}

fn main() {
    events::init_logger();
    let opts = args::Cli::parse_or_exit().into_options();
    events::set_quiet(opts.quiet);
    let code = match run(opts) {
        Ok(code) => code,
        Err(e) => {
            JsonLine::error("failed")
                .str("reason", "io")
                .str("message", &e.to_string())
                .emit();
            3
        }
    };
    let _ = std::io::stdout().flush();
    exit(code);
}

fn run(opts: args::Options) -> Result<i32, Error> {
    let mut poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    // The supervisor's tokens start at 1: token 0 is the shared waker.
    let mut sup =
        ClientSupervisor::embedded_with_waker(poll.registry(), 1, opts.supervisor, waker.clone())?;
    let mut stdin_waker = Some(waker);
    let id = match sup.start_client(&opts.url, opts.config) {
        Ok(id) => id,
        Err(e @ (Error::InvalidUrl(_) | Error::TlsSetup(_) | Error::InvalidConfig(_))) => {
            eprintln!("zenws: {e}");
            return Ok(2);
        }
        Err(e) => return Err(e),
    };
    // The query and userinfo may carry credentials: events show the rest.
    let shown_url = zenws_mio::redact_url(&opts.url);
    JsonLine::new("connecting").str("url", &shown_url).emit();

    let (tx, rx) = mpsc::channel();
    let mut tx = Some(tx);
    let mut events = Events::with_capacity(256);
    let mut received: u64 = 0;
    let mut sent: u64 = 0;
    let mut stdin_eof = false;
    let mut closing = false; // stop_client was called (EOF, peer close with -n, --max-messages)
    let mut stdout = std::io::stdout().lock();
    let close = |sup: &mut ClientSupervisor, closing: &mut bool, why: &str| -> bool {
        if *closing {
            return true;
        }
        *closing = true;
        JsonLine::new("closing").str("reason", why).emit();
        sup.stop_client(id).is_ok()
    };
    loop {
        // `poll_timeout` is zero while events wait (e.g. the client's end,
        // queued by `start_client` itself): never block on them.
        match poll.poll(&mut events, sup.poll_timeout()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
        for ev in events.iter() {
            // A wake-up (stdin line, DNS answer) needs no handling of its
            // own: `process` below and the stdin queue cover it.
            if ev.token() != WAKE {
                sup.handle_mio_event(ev);
            }
        }
        sup.process();

        // Lines from stdin: send now, or report why not (nothing is queued).
        while let Ok(input) = rx.try_recv() {
            match input {
                Input::Line(_) if closing || (opts.one_message && sent >= 1) => {}
                Input::Line(mut line) => {
                    let len = line.len();
                    let r = if opts.binary {
                        sup.send_binary(id, line)
                    } else {
                        if line.ends_with(b"\r") {
                            line.pop();
                        }
                        let text = match String::from_utf8(line) {
                            Ok(s) => s,
                            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
                        };
                        sup.send_text(id, text)
                    };
                    match r {
                        Ok(()) => sent += 1,
                        Err(e) => {
                            let j = JsonLine::error("send_failed").num("bytes", len as u128);
                            match e {
                                Error::Send(s) => {
                                    j.str("reason", s.name()).str("message", &s.to_string())
                                }
                                other => {
                                    j.str("reason", "error").str("message", &other.to_string())
                                }
                            }
                            .emit();
                        }
                    }
                }
                Input::Eof => {
                    stdin_eof = true;
                    if !opts.no_close && !close(&mut sup, &mut closing, "stdin_eof") {
                        return Ok(0); // already gone
                    }
                }
            }
        }

        let mut exit_code = None;
        while let Some(ev) = sup.poll_event() {
            match ev {
                ClientEvent::Message { message, .. } => {
                    if opts.max_messages.is_some_and(|n| received >= n) {
                        continue; // --max-messages reached: the rest is not printed
                    }
                    received += 1;
                    let r = match &message {
                        Message::Text(t) => writeln!(stdout, "{}", t.as_str()),
                        Message::Binary(b) if opts.binary => {
                            stdout.write_all(b).and_then(|()| stdout.write_all(b"\n"))
                        }
                        Message::Binary(b) => writeln!(stdout, "{}", hex(b)),
                    };
                    if r.is_err() {
                        // stdout is gone (closed pipe): nobody is listening any more.
                        return Ok(0);
                    }
                    if opts.max_messages.is_some_and(|n| received >= n) {
                        close(&mut sup, &mut closing, "count_reached");
                    }
                }
                ClientEvent::Opened { .. } => {
                    JsonLine::new("connected").str("url", &shown_url).emit();
                    if let (Some(tx), Some(w)) = (tx.take(), stdin_waker.take()) {
                        spawn_stdin(tx, w);
                    }
                }
                ClientEvent::Disconnected { reason, detail, .. } => {
                    JsonLine::new("disconnected")
                        .reason(reason)
                        .detail(&detail)
                        .emit();
                    // -n after stdin EOF: the peer's close ends the run.
                    if opts.no_close
                        && stdin_eof
                        && peer_closed(reason)
                        && !close(&mut sup, &mut closing, "peer_closed")
                    {
                        exit_code.get_or_insert(0);
                    }
                }
                ClientEvent::Reconnecting { .. } if closing => {}
                ClientEvent::Reconnecting {
                    attempt,
                    delay,
                    reason,
                    detail,
                    ..
                } => JsonLine::new("reconnecting")
                    .num("attempt", attempt.into())
                    .num("delay_ms", delay.as_millis())
                    .reason(reason)
                    .detail(&detail)
                    .emit(),
                ClientEvent::Restarted {
                    restarts, reason, ..
                } => JsonLine::new("restarted")
                    .num("restarts", restarts.into())
                    .exit_reason(&reason)
                    .emit(),
                ClientEvent::HeartbeatMissed { consecutive, .. } => {
                    JsonLine::new("heartbeat_missed")
                        .num("consecutive", consecutive.into())
                        .emit()
                }
                ClientEvent::HeartbeatFailed { .. } => JsonLine::new("heartbeat_failed")
                    .reason(zenws_core::Error::HeartbeatFailed)
                    .emit(),
                ClientEvent::Stopped { .. } => {
                    JsonLine::new("stopped").emit();
                    exit_code.get_or_insert(0);
                }
                ClientEvent::Failed { reason, detail, .. } => {
                    // After our own close request the end is a normal one.
                    let code = if closing { 0 } else { 3 };
                    let j = if code == 0 {
                        JsonLine::new("failed")
                    } else {
                        JsonLine::error("failed")
                    };
                    j.exit_reason(&reason).detail(&detail).emit();
                    exit_code.get_or_insert(code);
                }
                ClientEvent::BudgetExhausted { restarts, window } => {
                    JsonLine::error("budget_exhausted")
                        .num("restarts", restarts.into())
                        .num("window_ms", window.as_millis())
                        .str("reason", "restart_budget_exhausted")
                        .emit();
                    exit_code = Some(3);
                }
                other => JsonLine::new("other")
                    .str("debug", &format!("{other:?}"))
                    .emit(),
            }
        }
        let _ = stdout.flush();
        if let Some(code) = exit_code {
            return Ok(code);
        }
    }
}
