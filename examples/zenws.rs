//! `zenws`: a websocat-like command-line client that stays connected.
//!
//! ```text
//! cargo run --release --example zenws -- [OPTIONS] <URL>
//! ```
//!
//! Each stdin line is sent as a text message; each received message is
//! printed to stdout (one line; binary as hex). Lifecycle events go to
//! stderr as JSON lines (`{"event":"connected",...}`). See `--help`.
//!
//! The loop runs the supervisor *embedded* in a `mio::Poll` this program
//! owns, sharing one `mio::Waker` with it (`embedded_with_waker`: mio allows
//! one per `Poll`): the stdin thread wakes the loop for every line, so a
//! line is sent at once (no polling interval), on every platform mio runs.

use mio::{Events, Poll, Token, Waker};
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::process::exit;
use std::sync::{mpsc, Arc};
use std::time::Duration;
use zenws_core::retry::RetryCount;
use zenws_core::supervisor::{RestartIntensity, SupervisorConfig};
use zenws_core::{ExitReason, HeartbeatConfig};
use zenws_mio::{ClientConfig, ClientEvent, ClientSupervisor, Error, Message};

const USAGE: &str = "\
zenws: a WebSocket client that stays connected (heartbeats, retries, supervisor restarts)

USAGE:
    zenws [OPTIONS] <URL>                  URL: ws://host[:port]/path or wss://...

Sends each stdin line as a text message (stdin is read once the first connection
is open; a line read while disconnected is not sent: a send_failed event says why).
Prints each received message to stdout, one per line (binary as hex). Prints
lifecycle events to stderr as JSON lines with an \"event\" field. On stdin EOF:
closes with code 1000, prints what arrives until the close completes, exits 0.

OPTIONS:
    --ca-file PATH               trust the CA certificates in this PEM file (wss://)
    --header 'K: V'              extra upgrade header (repeatable)
    --connect-timeout MS         TCP + TLS + upgrade deadline [5000]
    --retry-count N|inf          retries per outage after the first failed attempt;
                                 0 = never retry [3]
    --retry-delay MS             first retry delay [1000]
    --max-backoff MS             retry delay ceiling [30000]
    --max-restarts N             supervisor restart budget ... [10]
    --restart-window SECS        ... within this window [60]
    --heartbeat SPEC             none | ping:INTERVAL_MS[:TIMEOUT_MS] | deribit:INTERVAL_S
                                 [ping:15000:10000]
    --heartbeat-threshold N      consecutive misses that declare the peer dead [2]
    --count N                    exit 0 after N messages were received
    -h, --help                   this text

EXIT CODES:
    0  normal end (stdin EOF, --count reached)
    2  bad usage or URL
    3  fatal: TLS rejected, upgrade refused, restart budget exhausted, client failed

Set RUST_LOG=debug (or error|warn|info|trace) for driver logs on stderr.";

const WAKE: Token = Token(0);

struct Options {
    url: String,
    config: ClientConfig,
    supervisor: SupervisorConfig,
    count: Option<u64>,
}

fn usage_error(msg: impl std::fmt::Display) -> ! {
    eprintln!("zenws: {msg}\nTry 'zenws --help' for usage.");
    exit(2)
}

fn number<T: std::str::FromStr>(opt: &str, v: &str) -> T {
    v.parse().unwrap_or_else(|_| {
        usage_error(format_args!(
            "{opt}: expected a non-negative integer, got {v:?}"
        ))
    })
}

fn parse_heartbeat(v: &str) -> HeartbeatConfig {
    let bad = || -> ! {
        usage_error(format_args!(
            "--heartbeat: expected none, ping:INTERVAL_MS[:TIMEOUT_MS] or deribit:INTERVAL_S, got {v:?}"
        ))
    };
    let parts: Vec<&str> = v.split(':').collect();
    let ms = |s: &str| -> Duration {
        match s.parse::<u64>() {
            Ok(n) if n > 0 => Duration::from_millis(n),
            _ => bad(),
        }
    };
    match parts.as_slice() {
        ["none"] => HeartbeatConfig::none(),
        ["ping", i] => HeartbeatConfig::ping(ms(i), ms(i)),
        ["ping", i, t] => HeartbeatConfig::ping(ms(i), ms(t)),
        ["deribit", s] => match s.parse::<u32>() {
            Ok(n) if n > 0 => HeartbeatConfig::deribit(n),
            _ => bad(),
        },
        _ => bad(),
    }
}

fn parse_args(args: Vec<String>) -> Options {
    let mut config = ClientConfig::default();
    let mut supervisor = SupervisorConfig::default();
    let mut threshold = None;
    let mut count = None;
    let mut url = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            exit(0);
        }
        if arg == "--" {
            if let Some(u) = it.next() {
                if url.replace(u).is_some() {
                    usage_error("more than one URL given");
                }
            }
            continue;
        }
        if !arg.starts_with("--") || arg == "-" {
            if url.replace(arg).is_some() {
                usage_error("more than one URL given");
            }
            continue;
        }
        // --opt=value or --opt value
        let (opt, inline) = match arg.split_once('=') {
            Some((o, v)) => (o.to_string(), Some(v.to_string())),
            None => (arg, None),
        };
        let known = [
            "--ca-file",
            "--header",
            "--connect-timeout",
            "--retry-count",
            "--retry-delay",
            "--max-backoff",
            "--max-restarts",
            "--restart-window",
            "--heartbeat",
            "--heartbeat-threshold",
            "--count",
        ];
        if !known.contains(&opt.as_str()) {
            usage_error(format_args!("unknown option {opt}"));
        }
        let v = inline
            .or_else(|| it.next())
            .unwrap_or_else(|| usage_error(format_args!("{opt} needs a value")));
        let retry = &mut config.connection.retry;
        match opt.as_str() {
            "--ca-file" => config.tls = zenws_mio::TlsRoots::CaFile(v.into()),
            "--header" => {
                let (k, val) = v.split_once(':').unwrap_or_else(|| {
                    usage_error("--header: expected 'Name: value' (no ':' found)")
                });
                let k = k.trim();
                if k.is_empty() || k.contains(char::is_whitespace) {
                    usage_error(format_args!("--header: bad header name {k:?}"));
                }
                // Never echo the value: it may be a credential.
                if val.contains(['\r', '\n', '\0']) {
                    usage_error(format_args!(
                        "--header: the value of {k:?} contains a control character"
                    ));
                }
                config.headers.push((k.to_string(), val.trim().to_string()));
            }
            "--connect-timeout" => {
                config.connection.connect_timeout = Duration::from_millis(number(&opt, &v))
            }
            "--retry-count" => {
                retry.retry_count = if v == "inf" {
                    RetryCount::Infinite
                } else {
                    RetryCount::Limited(number(&opt, &v))
                }
            }
            "--retry-delay" => retry.retry_delay = Duration::from_millis(number(&opt, &v)),
            "--max-backoff" => retry.max_backoff = Duration::from_millis(number(&opt, &v)),
            "--max-restarts" => supervisor.intensity.max_restarts = number(&opt, &v),
            "--restart-window" => {
                supervisor.intensity.max_seconds = Duration::from_secs(number(&opt, &v))
            }
            "--heartbeat" => config.connection.heartbeat = parse_heartbeat(&v),
            "--heartbeat-threshold" => threshold = Some(number::<u32>(&opt, &v)),
            "--count" => count = Some(number(&opt, &v)),
            _ => unreachable!("checked against the known options"),
        }
    }
    if let Some(t) = threshold {
        if t == 0 {
            usage_error("--heartbeat-threshold must be at least 1");
        }
        config.connection.heartbeat.failure_threshold = t;
    }
    if config.connection.retry.max_backoff < config.connection.retry.retry_delay {
        config.connection.retry.max_backoff = config.connection.retry.retry_delay;
    }
    let RestartIntensity { max_seconds, .. } = supervisor.intensity;
    if max_seconds.is_zero() {
        usage_error("--restart-window must be at least 1");
    }
    if count == Some(0) {
        usage_error("--count must be at least 1");
    }
    let url = url.unwrap_or_else(|| usage_error("missing <URL>"));
    Options {
        url,
        config,
        supervisor,
        count,
    }
}

/// JSON string escaping (quotes included).
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    out.push_str(&zenws_examples::json_escape(s));
    out.push('"');
}

/// One JSON line for stderr, built field by field.
struct JsonLine(String);

impl JsonLine {
    fn new(event: &str) -> Self {
        let mut s = String::from("{\"event\":");
        json_str(&mut s, event);
        JsonLine(s)
    }
    fn str(mut self, k: &str, v: &str) -> Self {
        self.0.push(',');
        json_str(&mut self.0, k);
        self.0.push(':');
        json_str(&mut self.0, v);
        self
    }
    fn num(mut self, k: &str, v: u128) -> Self {
        self.0.push(',');
        json_str(&mut self.0, k);
        let _ = write!(self.0, ":{v}");
        self
    }
    fn detail(self, d: &str) -> Self {
        if d.is_empty() {
            self
        } else {
            self.str("detail", d)
        }
    }
    fn reason(self, e: zenws_core::Error) -> Self {
        self.str("reason", e.name()).str("message", &e.to_string())
    }
    fn exit_reason(self, r: &ExitReason) -> Self {
        let s = match r.error() {
            Some(e) => self.str("reason", e.name()),
            None => self.str("reason", "normal"),
        };
        let kind = match r {
            ExitReason::Normal => "normal",
            ExitReason::RetriesExhausted { .. } => "retries_exhausted",
            ExitReason::Fatal(_) => "fatal",
        };
        s.str("exit", kind).str("message", &r.to_string())
    }
    fn emit(mut self) {
        self.0.push_str("}\n");
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(self.0.as_bytes());
        let _ = err.flush();
    }
}

/// Logs to stderr, only when `RUST_LOG` is set (its value picks the level).
struct StderrLogger(log::LevelFilter);

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("[{} {}] {}", r.level(), r.target(), r.args());
        }
    }
    fn flush(&self) {}
}

fn init_logger() {
    let Ok(v) = std::env::var("RUST_LOG") else {
        return;
    };
    let level = v
        .to_ascii_lowercase()
        .parse()
        .unwrap_or(log::LevelFilter::Info);
    if log::set_boxed_logger(Box::new(StderrLogger(level))).is_ok() {
        log::set_max_level(level);
    }
}

enum Input {
    Line(String),
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
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdin.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if buf.ends_with(b"\n") {
                        buf.pop();
                        if buf.ends_with(b"\r") {
                            buf.pop();
                        }
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if tx.send(Input::Line(line)).is_err() {
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

fn main() {
    init_logger();
    let opts = parse_args(std::env::args().skip(1).collect());
    let code = match run(opts) {
        Ok(code) => code,
        Err(e) => {
            JsonLine::new("failed")
                .str("reason", "io")
                .str("message", &e.to_string())
                .emit();
            3
        }
    };
    let _ = std::io::stdout().flush();
    exit(code);
}

fn run(opts: Options) -> Result<i32, Error> {
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
    let shown_url = zenws_mio::url::redact(&opts.url);
    JsonLine::new("connecting").str("url", &shown_url).emit();

    let (tx, rx) = mpsc::channel();
    let mut tx = Some(tx);
    let mut events = Events::with_capacity(256);
    let mut received: u64 = 0;
    let mut closing = false; // stop_client was called (EOF or --count)
    let mut stdout = std::io::stdout().lock();
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
                Input::Line(_) if closing => {}
                Input::Line(line) => {
                    if let Err(e) = sup.send_text(id, line.as_str()) {
                        let j = JsonLine::new("send_failed").num("bytes", line.len() as u128);
                        match e {
                            Error::Send(s) => {
                                j.str("reason", s.name()).str("message", &s.to_string())
                            }
                            other => j.str("reason", "error").str("message", &other.to_string()),
                        }
                        .emit();
                    }
                }
                Input::Eof => {
                    if !closing {
                        closing = true;
                        JsonLine::new("closing").str("reason", "stdin_eof").emit();
                        if sup.stop_client(id).is_err() {
                            return Ok(0); // already gone
                        }
                    }
                }
            }
        }

        let mut exit_code = None;
        while let Some(ev) = sup.poll_event() {
            match ev {
                ClientEvent::Message { message, .. } => {
                    if opts.count.is_some_and(|n| received >= n) {
                        continue; // --count reached: the rest is not printed
                    }
                    received += 1;
                    let r = match &message {
                        Message::Text(t) => writeln!(stdout, "{}", t.as_str()),
                        Message::Binary(b) => writeln!(stdout, "{}", hex(b)),
                    };
                    if r.is_err() {
                        // stdout is gone (closed pipe): nobody is listening any more.
                        return Ok(0);
                    }
                    if opts.count.is_some_and(|n| received >= n) && !closing {
                        closing = true;
                        JsonLine::new("closing")
                            .str("reason", "count_reached")
                            .emit();
                        let _ = sup.stop_client(id);
                    }
                }
                ClientEvent::Opened { .. } => {
                    JsonLine::new("connected").str("url", &shown_url).emit();
                    if let (Some(tx), Some(w)) = (tx.take(), stdin_waker.take()) {
                        spawn_stdin(tx, w);
                    }
                }
                ClientEvent::Disconnected { reason, detail, .. } => JsonLine::new("disconnected")
                    .reason(reason)
                    .detail(&detail)
                    .emit(),
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
                    JsonLine::new("failed")
                        .exit_reason(&reason)
                        .detail(&detail)
                        .emit();
                    // After our own close request the end is a normal one.
                    exit_code.get_or_insert(if closing { 0 } else { 3 });
                }
                ClientEvent::BudgetExhausted { restarts, window } => {
                    JsonLine::new("budget_exhausted")
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
