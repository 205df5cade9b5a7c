//! bench: zenws-mio's side of the performance comparison (baselines in scripts/bench/baselines).
//!
//! Same flags and the same one-line JSON as the kit's `wsbench`, every field
//! computed the same way (see the kit's `src/common.rs`): latency from send
//! to echo per connection, counted only inside the measurement window; client
//! CPU (user+sys from `/proc/self/stat`) over that window; VmRSS/VmHWM from
//! `/proc/self/status` sampled at the window's end.
//!
//! It uses the public API the way a user would: one [`ClientSupervisor`],
//! every connection a supervised client with a ping heartbeat (1 s by
//! default), echoes answered from `ClientEvent::Message` with `send_text`.
//!
//! ```text
//! cargo build --release --example bench
//! target/release/examples/bench --url ws://127.0.0.1:9003/ --conns 100 --mode pingpong
//! target/release/examples/bench --url wss://127.0.0.1:PORT/ --ca-file ca.pem --conns 1000 --mode idle
//! cargo build --profile profiling --example bench   # same code with line tables (perf, callgrind):
//!                                                   # target/profiling/examples/bench
//! ```
//!
//! Extra flags: `--ca-file PEM` (wss://), `--ping-interval SECS` (0 = no
//! heartbeat), `--read-buf BYTES` (read buffer of the tung-rustls baseline only; zenws reads through one shared 64 KiB buffer),
//! `--connect-concurrency C` (handshakes in flight, like the kit),
//! `--baseline tung-rustls` (not zenws: blocking tungstenite + rustls
//! connections held idle, the wss RSS baseline; `--mode idle` only),
//! `--baseline floor` (not zenws: the syscall floor of a ping-pong client,
//! see `bench/floor.rs`; `--mode pingpong`, ws:// only).
//! Extra JSON fields: `idle_cpu_pct` (CPU % of one core over the window in
//! idle mode), `healthy` (clients healthy at the window's end),
//! `heartbeat_missed`, `reconnects`.
//!
//! Latency percentiles come from a log-linear histogram (256 sub-buckets per
//! power of two, ≤ 0.4 % error, reported as the bucket's upper bound like
//! HdrHistogram's `value_at_quantile`): fixed 74 KB, so a 5 s run at 200k
//! msgs/s does not grow RSS the way a sorted vector of samples would, and no
//! extra dependency.

#[path = "bench/floor.rs"]
mod floor;

use std::time::{Duration, Instant};
use zenws_mio::core::heartbeat::{HeartbeatConfig, Strategy};
use zenws_mio::core::HealthStatus;
use zenws_mio::{ClientConfig, ClientEvent, ClientId, ClientSupervisor, Message};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    PingPong,
    Stream,
    Idle,
}

#[derive(Clone, Debug)]
struct Args {
    url: String,
    conns: usize,
    size: usize,
    duration: f64,
    warmup: f64,
    mode: Mode,
    window: usize,
    connect_concurrency: usize,
    read_buf: Option<usize>,
    write_buf: Option<usize>,
    nodelay: bool,
    label: String,
    ca_file: Option<String>,
    ping_interval: f64,
    baseline: Option<String>,
}

const USAGE: &str = "usage: bench --url ws://127.0.0.1:PORT/ [--conns N] [--size BYTES] \
[--duration SECS] [--warmup SECS] [--mode pingpong|stream|idle] [--window W] \
[--connect-concurrency C] [--read-buf BYTES] [--label TEXT] [--ca-file PEM] \
[--ping-interval SECS] [--baseline tung-rustls|floor]";

impl Args {
    fn parse() -> Args {
        let mut a = Args {
            url: "ws://127.0.0.1:9001/".into(),
            conns: 1,
            size: 64,
            duration: 5.0,
            warmup: 1.0,
            mode: Mode::PingPong,
            window: 32,
            connect_concurrency: 64,
            read_buf: None,
            write_buf: None,
            nodelay: true,
            label: String::new(),
            ca_file: None,
            ping_interval: 1.0,
            baseline: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut val = || {
                it.next().unwrap_or_else(|| {
                    eprintln!("missing value for {flag}\n{USAGE}");
                    std::process::exit(2)
                })
            };
            match flag.as_str() {
                // The kit passes --client only for its own clients; accept and ignore.
                "--client" => {
                    val();
                }
                "--url" => a.url = val(),
                "--conns" => a.conns = val().parse().expect("--conns"),
                "--size" => a.size = val().parse().expect("--size"),
                "--duration" => a.duration = val().parse().expect("--duration"),
                "--warmup" => a.warmup = val().parse().expect("--warmup"),
                "--window" => a.window = val().parse().expect("--window"),
                "--connect-concurrency" => {
                    a.connect_concurrency = val().parse().expect("--connect-concurrency")
                }
                "--read-buf" => a.read_buf = Some(val().parse().expect("--read-buf")),
                "--write-buf" => a.write_buf = Some(val().parse().expect("--write-buf")),
                "--no-nodelay" => a.nodelay = false,
                "--label" => a.label = val(),
                "--ca-file" => a.ca_file = Some(val()),
                "--ping-interval" => a.ping_interval = val().parse().expect("--ping-interval"),
                "--baseline" => a.baseline = Some(val()),
                "--mode" => {
                    a.mode = match val().as_str() {
                        "pingpong" => Mode::PingPong,
                        "stream" => Mode::Stream,
                        "idle" => Mode::Idle,
                        m => {
                            eprintln!("unknown mode {m}\n{USAGE}");
                            std::process::exit(2)
                        }
                    }
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0)
                }
                f => {
                    eprintln!("unknown flag {f}\n{USAGE}");
                    std::process::exit(2)
                }
            }
        }
        if a.mode == Mode::Stream && a.size < 16 {
            eprintln!("--mode stream needs --size >= 16 (timestamp is embedded in payload)");
            std::process::exit(2)
        }
        a
    }
}

/// Payload template: printable ASCII so it is valid UTF-8 for text frames.
fn make_payload(size: usize) -> String {
    (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

/// Write a 16-hex-digit nanosecond timestamp (relative to `base`) into buf[0..16].
fn stamp(buf: &mut [u8], base: Instant) {
    let ns = base.elapsed().as_nanos() as u64;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().take(16).enumerate() {
        *b = HEX[((ns >> ((15 - i) * 4)) & 0xf) as usize];
    }
}

fn read_stamp(buf: &[u8]) -> Option<u64> {
    if buf.len() < 16 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in &buf[..16] {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

/// Log-linear latency histogram (ns): exact below 256, then 256 buckets per power of two.
struct Hist {
    counts: Vec<u64>,
    len: u64,
    max: u64,
}

const SUB_BITS: u32 = 8;
const SUB: u64 = 1 << SUB_BITS;

impl Hist {
    fn new() -> Hist {
        Hist {
            counts: vec![0; (64 - SUB_BITS as usize + 1) * SUB as usize],
            len: 0,
            max: 0,
        }
    }
    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let e = 63 - v.leading_zeros(); // >= SUB_BITS
        let shift = e - SUB_BITS;
        let sub = (v >> shift) & (SUB - 1);
        ((shift as u64 + 1) * SUB + sub) as usize
    }
    /// Largest value that lands in bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let shift = i / SUB - 1;
        let sub = i % SUB;
        (((SUB | sub) + 1) << shift) - 1
    }
    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.len += 1;
        self.max = self.max.max(v);
    }
    /// Like HdrHistogram: the (upper bound of the) value at or below which `q` of samples fall.
    fn value_at_quantile(&self, q: f64) -> u64 {
        let target = ((q * self.len as f64).ceil() as u64).clamp(1, self.len);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }
}

/// Per-run recorder: latency histogram (ns) + counters, only inside the measure window.
struct Recorder {
    hist: Hist,
    msgs: u64,
    errors: u64,
    measure_start: Instant,
    measure_end: Instant,
}

impl Recorder {
    fn new(start: Instant, warmup: f64, duration: f64) -> Self {
        let ms = start + Duration::from_secs_f64(warmup);
        Recorder {
            hist: Hist::new(),
            msgs: 0,
            errors: 0,
            measure_start: ms,
            measure_end: ms + Duration::from_secs_f64(duration),
        }
    }
    fn record(&mut self, now: Instant, lat_ns: u64) {
        if now >= self.measure_start && now < self.measure_end {
            self.msgs += 1;
            self.hist.record(lat_ns.max(1));
        }
    }
}

/// (VmRSS kB, VmHWM kB) of this process.
fn rss_kb() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

/// Process CPU time (user+sys) in seconds, from /proc/self/stat.
fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tck = 100.0; // CLK_TCK on Linux x86_64
    let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (ut + st) / tck
}

/// Samples CPU time when the measurement window opens, and CPU and RSS when
/// it closes.
#[derive(Default)]
struct WindowSampler {
    cpu_at_start: Option<f64>,
}

impl WindowSampler {
    /// Call every loop turn; once the window is over: `Some((CPU seconds
    /// spent inside it, (VmRSS, VmHWM) kB))`.
    fn tick(&mut self, rec: &Recorder, now: Instant) -> Option<(f64, (u64, u64))> {
        if self.cpu_at_start.is_none() && now >= rec.measure_start {
            self.cpu_at_start = Some(cpu_secs());
        }
        if now < rec.measure_end {
            return None;
        }
        let end = cpu_secs();
        Some((end - self.cpu_at_start.unwrap_or(end), rss_kb()))
    }

    fn started(&self) -> bool {
        self.cpu_at_start.is_some()
    }
}

struct ConnectStats {
    connected: usize,
    failed: usize,
    secs: f64,
    rss_before_kb: u64,
}

#[derive(Default)]
struct Extra {
    healthy: Option<usize>,
    heartbeat_missed: u64,
    reconnects: u64,
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn json_num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x}"),
        _ => "null".into(),
    }
}

fn json_str(s: &str) -> String {
    format!("\"{}\"", zenws_examples::json_escape(s))
}

fn report(
    a: &Args,
    client: &str,
    rec: &Recorder,
    cs: &ConnectStats,
    cpu_measure: f64,
    rss_window: (u64, u64),
    x: &Extra,
) {
    let (rss, hwm) = rss_window;
    let empty = rec.hist.len == 0;
    let q = |p: f64| {
        if empty {
            None
        } else {
            Some(round1(rec.hist.value_at_quantile(p) as f64 / 1000.0))
        }
    };
    let mode = match a.mode {
        Mode::PingPong => "pingpong",
        Mode::Stream => "stream",
        Mode::Idle => "idle",
    };
    let per_conn = if cs.connected > 0 {
        rss.saturating_sub(cs.rss_before_kb) as f64 / cs.connected as f64
    } else {
        0.0
    };
    let idle = a.mode == Mode::Idle;
    let cpu_per_msg = if idle || rec.msgs == 0 {
        None
    } else {
        Some(((cpu_measure * 1e6 / rec.msgs as f64) * 100.0).round() / 100.0)
    };
    let cpu_pct = Some(((cpu_measure / a.duration) * 1000.0).round() / 10.0);
    let hs = if cs.secs > 0.0 {
        (cs.connected as f64 / cs.secs).round()
    } else {
        0.0
    };
    let opt_usize = |v: Option<usize>| v.map_or("null".to_string(), |v| v.to_string());
    let fields: Vec<(&str, String)> = vec![
        ("label", json_str(&a.label)),
        ("client", json_str(client)),
        ("mode", json_str(mode)),
        ("url", json_str(&a.url)),
        ("conns", a.conns.to_string()),
        ("connected", cs.connected.to_string()),
        ("connect_failed", cs.failed.to_string()),
        (
            "connect_secs",
            json_num(Some((cs.secs * 1000.0).round() / 1000.0)),
        ),
        ("handshakes_per_sec", json_num(Some(hs))),
        ("size", a.size.to_string()),
        (
            "window",
            (if a.mode == Mode::Stream { a.window } else { 1 }).to_string(),
        ),
        ("duration_s", json_num(Some(a.duration))),
        ("msgs", rec.msgs.to_string()),
        (
            "msgs_per_sec",
            json_num(Some((rec.msgs as f64 / a.duration).round())),
        ),
        ("p50_us", json_num(q(0.50))),
        ("p90_us", json_num(q(0.90))),
        ("p99_us", json_num(q(0.99))),
        ("p999_us", json_num(q(0.999))),
        (
            "max_us",
            json_num(if empty {
                None
            } else {
                Some(rec.hist.max as f64 / 1000.0)
            }),
        ),
        ("errors", rec.errors.to_string()),
        ("client_cpu_us_per_msg", json_num(cpu_per_msg)),
        (
            "client_cpu_pct",
            json_num(if idle { None } else { cpu_pct }),
        ),
        ("idle_cpu_pct", json_num(if idle { cpu_pct } else { None })),
        ("rss_kb", rss.to_string()),
        ("peak_rss_kb", hwm.to_string()),
        ("rss_before_connect_kb", cs.rss_before_kb.to_string()),
        ("rss_per_conn_kb", json_num(Some(round1(per_conn)))),
        ("read_buf", opt_usize(a.read_buf)),
        ("write_buf", opt_usize(a.write_buf)),
        ("nodelay", a.nodelay.to_string()),
        ("ping_interval_s", json_num(Some(a.ping_interval))),
        ("healthy", opt_usize(x.healthy)),
        ("heartbeat_missed", x.heartbeat_missed.to_string()),
        ("reconnects", x.reconnects.to_string()),
    ];
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    println!("{{{}}}", body.join(","));
}

fn client_config(a: &Args) -> ClientConfig {
    let mut c = ClientConfig::default();
    c.connection.heartbeat = if a.ping_interval > 0.0 {
        let interval = Duration::from_secs_f64(a.ping_interval);
        HeartbeatConfig::default().with_strategy(Strategy::Ping {
            interval,
            timeout: interval,
        })
    } else {
        HeartbeatConfig::none()
    };
    if let Some(ca) = &a.ca_file {
        c = c.ca_file(ca);
    }
    c
}

/// Per-connection state, indexed by `ClientId - first_id`.
struct Conn {
    id: ClientId,
    open: bool,
    sent_at: Instant,
}

fn run(a: Args) {
    let mut sup = ClientSupervisor::new().expect("supervisor");
    let cfg = client_config(&a);
    let payload = make_payload(a.size);
    // The ping-pong payload as a `Message` built once: each send clones it
    // (a reference count), no allocation or copy per message.
    let payload_msg = Message::Text(payload.clone().into());
    let (rss_before, _) = rss_kb();

    // Connect, at most `connect_concurrency` handshakes in flight (like the kit).
    let t0 = Instant::now();
    let mut conns: Vec<Conn> = Vec::with_capacity(a.conns);
    // `start_client` hands out consecutive ids: index by `id - first id`
    // (checked against the stored id), no hashing per message.
    let mut first_id: Option<u64> = None;
    let slot_of = |conns: &[Conn], first: Option<u64>, id: ClientId| -> Option<usize> {
        let i = usize::try_from(id.0.checked_sub(first?)?).ok()?;
        (conns.get(i)?.id == id).then_some(i)
    };
    let (mut connected, mut failed, mut in_flight, mut started) = (0usize, 0usize, 0usize, 0usize);
    let connect_deadline = t0 + Duration::from_secs(60);
    while connected + failed < a.conns && Instant::now() < connect_deadline {
        while started < a.conns && in_flight < a.connect_concurrency.max(1) {
            match sup.start_client(&a.url, cfg.clone()) {
                Ok(id) => {
                    let first = *first_id.get_or_insert(id.0);
                    if id.0 != first + conns.len() as u64 {
                        eprintln!("client ids are not consecutive");
                        std::process::exit(1);
                    }
                    conns.push(Conn {
                        id,
                        open: false,
                        sent_at: t0,
                    });
                    in_flight += 1;
                }
                Err(e) => {
                    if failed == 0 {
                        eprintln!("start error: {e}");
                    }
                    failed += 1;
                }
            }
            started += 1;
        }
        sup.run_once(Some(Duration::from_millis(100)))
            .expect("poll");
        while let Some(ev) = sup.poll_event() {
            match ev {
                ClientEvent::Opened { id } => {
                    if let Some(i) = slot_of(&conns, first_id, id) {
                        if !conns[i].open {
                            conns[i].open = true;
                            connected += 1;
                            in_flight -= 1;
                        }
                    }
                }
                ClientEvent::Reconnecting {
                    attempt: 1, detail, ..
                } if failed == 0 => {
                    eprintln!("connect error: {detail}");
                }
                ClientEvent::Failed { id, detail, .. } => {
                    if let Some(i) = slot_of(&conns, first_id, id) {
                        if !conns[i].open {
                            if failed == 0 {
                                eprintln!("connect failed: {detail}");
                            }
                            failed += 1;
                            in_flight -= 1;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let cs = ConnectStats {
        connected,
        failed,
        secs: t0.elapsed().as_secs_f64(),
        rss_before_kb: rss_before,
    };

    let start = Instant::now();
    let mut rec = Recorder::new(start, a.warmup, a.duration);
    let mut x = Extra::default();
    let mut buf = payload.clone().into_bytes();
    let mk = |buf: &mut Vec<u8>| {
        stamp(buf, start);
        String::from_utf8(buf.clone()).expect("ascii")
    };
    // Start the traffic.
    for c in conns.iter_mut().filter(|c| c.open) {
        match a.mode {
            Mode::PingPong => {
                c.sent_at = Instant::now();
                if sup.send_message(c.id, payload_msg.clone()).is_err() {
                    rec.errors += 1;
                }
            }
            Mode::Stream => {
                for _ in 0..a.window {
                    if sup.send_text(c.id, mk(&mut buf)).is_err() {
                        rec.errors += 1;
                    }
                }
            }
            Mode::Idle => {}
        }
    }
    let mut sampler = WindowSampler::default();
    let (cpu_window, rss_window) = loop {
        let now = Instant::now();
        if let Some(end) = sampler.tick(&rec, now) {
            break end;
        }
        let wait = if a.mode == Mode::Idle {
            let next = if !sampler.started() {
                rec.measure_start
            } else {
                rec.measure_end
            };
            next.saturating_duration_since(now)
                .min(Duration::from_millis(100))
        } else {
            Duration::from_millis(10)
        };
        // Each event is answered as soon as its socket has been read
        // (`run_turn`), as a user's handler would.
        let mut on_event = |sup: &mut ClientSupervisor, ev: ClientEvent| match ev {
            ClientEvent::Message { id, message } => {
                let Some(i) = slot_of(&conns, first_id, id) else {
                    return;
                };
                let now = Instant::now();
                match a.mode {
                    Mode::PingPong => {
                        let c = &mut conns[i];
                        rec.record(now, (now - c.sent_at).as_nanos() as u64);
                        if now < rec.measure_end {
                            // One clock read per message: the echo's arrival is the next send's start.
                            c.sent_at = now;
                            if sup.send_message(id, payload_msg.clone()).is_err() {
                                rec.errors += 1;
                            }
                        }
                    }
                    Mode::Stream => {
                        let sent = read_stamp(message.as_bytes()).unwrap_or(0);
                        rec.record(now, ((now - start).as_nanos() as u64).saturating_sub(sent));
                        if now < rec.measure_end && sup.send_text(id, mk(&mut buf)).is_err() {
                            rec.errors += 1;
                        }
                    }
                    Mode::Idle => {}
                }
            }
            ClientEvent::Disconnected { detail, .. } | ClientEvent::Failed { detail, .. } => {
                if rec.errors == 0 {
                    eprintln!("conn error: {detail}");
                }
                rec.errors += 1;
            }
            ClientEvent::HeartbeatMissed { .. } => x.heartbeat_missed += 1,
            ClientEvent::Reconnecting { .. } => x.reconnects += 1,
            // A reconnect: pingpong needs a message in flight again.
            ClientEvent::Opened { id } if a.mode == Mode::PingPong => {
                if let Some(i) = slot_of(&conns, first_id, id) {
                    conns[i].sent_at = Instant::now();
                    let _ = sup.send_message(id, payload_msg.clone());
                }
            }
            _ => {}
        };
        sup.run_turn(Some(wait), &mut on_event).expect("poll");
    };
    x.healthy = Some(
        conns
            .iter()
            .filter(|c| {
                sup.health(c.id)
                    .is_some_and(|h| h.status == HealthStatus::Healthy)
            })
            .count(),
    );
    report(&a, "zenws", &rec, &cs, cpu_window, rss_window, &x);
    // Close politely, bounded.
    for c in &conns {
        let _ = sup.stop_client(c.id);
    }
    let end = Instant::now() + Duration::from_secs(2);
    while !sup.is_empty() && Instant::now() < end {
        let _ = sup.run_once(Some(Duration::from_millis(50)));
        while sup.poll_event().is_some() {}
    }
}

/// The baselines' connect phase: `open(i)` for each of `n` connections in
/// turn (blocking), timed, failures counted (the first one printed).
fn connect_each<T>(
    n: usize,
    mut open: impl FnMut(usize) -> Result<T, String>,
) -> (Vec<T>, ConnectStats) {
    let (rss_before, _) = rss_kb();
    let t0 = Instant::now();
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    for i in 0..n {
        match open(i) {
            Ok(c) => held.push(c),
            Err(e) => {
                if failed == 0 {
                    eprintln!("connect error: {e}");
                }
                failed += 1;
            }
        }
    }
    let cs = ConnectStats {
        connected: held.len(),
        failed,
        secs: t0.elapsed().as_secs_f64(),
        rss_before_kb: rss_before,
    };
    (held, cs)
}

/// Baseline for idle wss:// RSS: blocking tungstenite over rustls (what
/// tokio-tungstenite + rustls holds per connection, minus the task), with a
/// 4 KiB read buffer unless `--read-buf` says otherwise.
fn run_tung_rustls(a: Args) {
    use std::net::TcpStream;
    use zenws_tests::tungstenite;
    if a.mode != Mode::Idle {
        eprintln!("--baseline tung-rustls supports --mode idle only");
        std::process::exit(2);
    }
    let ca = std::fs::read(
        a.ca_file
            .as_deref()
            .expect("--ca-file is required for tung-rustls"),
    )
    .expect("read CA");
    let mut roots = rustls::RootCertStore::empty();
    let der = pem_to_der(&ca);
    roots
        .add(rustls::pki_types::CertificateDer::from(der))
        .expect("CA");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tcfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tcfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcfg = std::sync::Arc::new(tcfg);
    let rest = a.url.strip_prefix("wss://").expect("wss:// URL");
    let hp = rest.split('/').next().unwrap_or(rest);
    let (host, _) = hp.rsplit_once(':').expect("host:port");
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).expect("server name");
    let wcfg = tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(a.read_buf.unwrap_or(4096));

    let (held, cs) = connect_each(a.conns, |_| {
        let tcp = TcpStream::connect(hp).map_err(|e| e.to_string())?;
        tcp.set_nodelay(a.nodelay).map_err(|e| e.to_string())?;
        let conn =
            rustls::ClientConnection::new(tcfg.clone(), name.clone()).map_err(|e| e.to_string())?;
        let tls = rustls::StreamOwned::new(conn, tcp);
        let (ws, _) = tungstenite::client::client_with_config(a.url.as_str(), tls, Some(wcfg))
            .map_err(|e| e.to_string())?;
        Ok(ws)
    });
    let start = Instant::now();
    let rec = Recorder::new(start, a.warmup, a.duration);
    std::thread::sleep(rec.measure_start.saturating_duration_since(Instant::now()));
    let c0 = cpu_secs();
    std::thread::sleep(rec.measure_end.saturating_duration_since(Instant::now()));
    let c1 = cpu_secs();
    let rss_window = rss_kb();
    report(
        &a,
        "tung-rustls",
        &rec,
        &cs,
        c1 - c0,
        rss_window,
        &Extra::default(),
    );
    for mut ws in held {
        let _ = ws.close(None);
        let _ = ws.flush();
    }
}

/// The first certificate of a PEM file, as DER.
fn pem_to_der(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).expect("PEM is text");
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in b64.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn main() {
    let a = Args::parse();
    match a.baseline.as_deref() {
        None => run(a),
        Some("tung-rustls") => run_tung_rustls(a),
        Some("floor") => floor::run_floor(a),
        Some(b) => {
            eprintln!("unknown --baseline {b} (tung-rustls, floor)");
            std::process::exit(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Hist;

    #[test]
    fn hist_buckets_bound_their_values() {
        for v in [
            0u64,
            1,
            255,
            256,
            257,
            511,
            512,
            1000,
            4_500,
            1_000_000,
            123_456_789,
            u64::MAX / 2,
        ] {
            let i = Hist::index(v);
            assert!(Hist::upper(i) >= v, "{v}");
            assert!(i == 0 || Hist::upper(i - 1) < v, "{v}");
        }
        let mut h = Hist::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.value_at_quantile(0.5);
        assert!((500_000..=502_000).contains(&p50), "{p50}");
        assert_eq!(h.value_at_quantile(1.0), 1_000_000);
    }
}
