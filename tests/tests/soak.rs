//! The soak test (issue 11, item 9): many supervised connections through
//! fault proxies for minutes of random faults (resets, stalls, closes,
//! garbage, truncated frames, refused connects, server restarts, floods),
//! every client sending numbered messages to an echo server. Then:
//!
//! - **nothing lost silently:** every message a send accepted was either
//!   echoed back or followed by a `Disconnected` event of its client (the
//!   sender was told its connection dropped with it in flight);
//! - **no leak:** the process's RSS after the faults stop is within 10 % of
//!   its level after warm-up;
//! - **recovery:** every client is open and healthy again once the faults
//!   stop.
//!
//! The clients are spread over fault proxies (25 each) and a network fault
//! hits one proxy at a time, as a flaky link or middlebox would; server
//! restarts and floods hit everyone. Garbage and truncated frames are
//! protocol violations, which fail a client for good by design (no retry
//! storm against a broken peer): the clients are `Permanent` children, so
//! the supervisor restarts them, within a restart intensity sized for one
//! proxy's worth at once (at most 64 restarts a second). The servers run in
//! a child process, so the RSS measured is the client's alone.
//!
//! Not part of `scripts/test.sh` (it runs for minutes): `scripts/soak.sh`,
//! with `SOAK_CONNS` (default 1000) and `SOAK_SECS` (default 600).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use zenws_core::retry::RetryCount;
use zenws_core::supervisor::{RestartIntensity, RestartType, SupervisorConfig};
use zenws_core::HealthStatus;
use zenws_core::HeartbeatConfig;
use zenws_mio::{ClientConfig, ClientEvent, ClientId, ClientSupervisor};
use zenws_tests::{EchoServer, FaultProxy, ProxyMode};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// xorshift64*: the fault schedule is reproducible from `SOAK_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Ledger {
    next_seq: u64,
    /// Sent (accepted by `send_text`), not yet echoed.
    outstanding: BTreeMap<u64, ()>,
    accepted: u64,
    echoed: u64,
    /// Outstanding when a `Disconnected` told the sender.
    reported_failed: u64,
    refused: u64,
    open: bool,
}

#[derive(Default)]
struct Totals {
    faults: BTreeMap<&'static str, u64>,
    disconnects: u64,
    reconnects: u64,
    restarts: u64,
    failed_clients: u64,
}

struct Soak {
    sup: ClientSupervisor,
    ledgers: HashMap<ClientId, Ledger>,
    totals: Totals,
}

impl Soak {
    fn pump(&mut self, wait: Duration) {
        self.sup.run_once(Some(wait)).unwrap();
        while let Some(ev) = self.sup.poll_event() {
            match ev {
                ClientEvent::Opened { id } => self.ledgers.entry(id).or_default().open = true,
                ClientEvent::Message { id, message } => {
                    let l = self.ledgers.entry(id).or_default();
                    let seq = message
                        .as_text()
                        .and_then(|t| t.rsplit(':').next())
                        .and_then(|s| s.parse::<u64>().ok());
                    if let Some(seq) = seq {
                        if l.outstanding.remove(&seq).is_some() {
                            l.echoed += 1;
                        }
                    }
                }
                ClientEvent::Disconnected { id, .. } => {
                    self.totals.disconnects += 1;
                    let l = self.ledgers.entry(id).or_default();
                    l.open = false;
                    l.reported_failed += l.outstanding.len() as u64;
                    l.outstanding.clear();
                }
                ClientEvent::Reconnecting { .. } => self.totals.reconnects += 1,
                ClientEvent::Restarted { .. } => self.totals.restarts += 1,
                ClientEvent::Failed { id, .. } | ClientEvent::Stopped { id } => {
                    // The sender is told: what was in flight failed with it.
                    self.totals.failed_clients += 1;
                    let l = self.ledgers.entry(id).or_default();
                    l.open = false;
                    l.reported_failed += l.outstanding.len() as u64;
                    l.outstanding.clear();
                }
                ClientEvent::BudgetExhausted { .. } => self.totals.failed_clients += 1,
                _ => {}
            }
        }
    }

    fn send_round(&mut self, ids: &[ClientId]) {
        for &id in ids {
            let l = self.ledgers.entry(id).or_default();
            if !l.open {
                continue;
            }
            let seq = l.next_seq;
            l.next_seq += 1;
            match self.sup.send_text(id, format!("c:{}:{seq}", id.0)) {
                Ok(()) => {
                    l.accepted += 1;
                    l.outstanding.insert(seq, ());
                }
                // Refused with a typed error: the sender knows.
                Err(_) => l.refused += 1,
            }
        }
    }
}

/// Clients behind one fault proxy.
const PER_PROXY: usize = 25;

/// The servers' side, in a child process (`SOAK_ROLE=servers`): an echo
/// server and `n` fault proxies in front of it, driven by commands on stdin,
/// so that the RSS the test measures is the client's alone.
fn serve(n: usize) {
    use std::io::BufRead;
    let echo = EchoServer::plain().unwrap();
    let proxies: Vec<FaultProxy> = (0..n)
        .map(|_| FaultProxy::start(echo.addr()).unwrap())
        .collect();
    let ports: Vec<String> = proxies
        .iter()
        .map(|p| p.addr().port().to_string())
        .collect();
    println!("SOAK-READY {}", ports.join(" "));
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap_or_default();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["mode", i, mode, arg] => {
                let arg: u64 = arg.parse().unwrap_or(0);
                let mode = match *mode {
                    "reset" => ProxyMode::Reset,
                    "stall" => ProxyMode::Blackhole,
                    "close" => ProxyMode::Close,
                    "garbage" => ProxyMode::InjectGarbage,
                    "truncate" => ProxyMode::TruncateAfter(arg as usize),
                    "refuse" => ProxyMode::Refuse,
                    "delay" => ProxyMode::Delay(Duration::from_millis(arg)),
                    _ => ProxyMode::PassThrough,
                };
                let i: usize = i.parse().unwrap_or(0);
                if i == usize::MAX || *words.get(1).unwrap_or(&"") == "all" {
                    proxies.iter().for_each(|p| p.set_mode(mode.clone()));
                } else if let Some(p) = proxies.get(i) {
                    p.set_mode(mode);
                }
            }
            ["restart"] => echo.restart().unwrap(),
            ["flood"] => {
                for k in 0..50 {
                    echo.broadcast_text(&format!("flood:{k}"));
                }
            }
            _ => return,
        }
    }
}

#[test]
#[ignore = "minutes long: run with scripts/soak.sh"]
fn soak() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let conns = env("SOAK_CONNS", 1000) as usize;
    let nproxies = conns.div_ceil(PER_PROXY);
    if std::env::var("SOAK_ROLE").as_deref() == Ok("servers") {
        return serve(nproxies);
    }
    let secs = env("SOAK_SECS", 600);
    let mut rng = Rng(env("SOAK_SEED", 0x5eed_50a4) | 1);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "soak",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SOAK_ROLE", "servers")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut control = child.stdin.take().unwrap();
    let ports: Vec<u16> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split_once("SOAK-READY ").map(|(_, p)| {
                p.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
        })
        .expect("the servers' process starts");
    let mut send = |cmd: String| {
        let _ = writeln!(control, "{cmd}");
    };

    let mut config = ClientConfig::default();
    config.connection.retry.retry_count = RetryCount::Infinite;
    config.connection.retry.retry_delay = Duration::from_millis(200);
    config.connection.retry.max_backoff = Duration::from_secs(5);
    config.connection.heartbeat =
        HeartbeatConfig::ping(Duration::from_secs(2), Duration::from_secs(1));
    config.restart = RestartType::Permanent;
    let sup_config = SupervisorConfig::default()
        .with_intensity(RestartIntensity::new(64, Duration::from_secs(1)))
        .with_restart_delay(Duration::from_secs(2));
    let mut soak = Soak {
        sup: ClientSupervisor::with_config(sup_config).unwrap(),
        ledgers: HashMap::new(),
        totals: Totals::default(),
    };
    let ids: Vec<ClientId> = (0..conns)
        .map(|i| {
            let url = format!("ws://127.0.0.1:{}/soak", ports[i / PER_PROXY]);
            soak.sup.start_client(&url, config.clone()).unwrap()
        })
        .collect();

    // Warm-up: everyone open, a few rounds of traffic, then the baseline RSS.
    let warm_end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < warm_end {
        soak.pump(Duration::from_millis(100));
        if soak.ledgers.values().filter(|l| l.open).count() == conns {
            break;
        }
    }
    // One of each kind of load first (a flood, a reset and a garbage fault
    // on one proxy each), so that buffers that grow once to their working
    // size (the per-thread read and frame buffers) are in the baseline.
    for round in 0..10 {
        match round {
            1 => send("flood".into()),
            2 => send("mode 0 reset 0".into()),
            3 => send("mode 1 garbage 0".into()),
            4 => send("mode all pass 0".into()),
            _ => {}
        }
        soak.send_round(&ids);
        let t = Instant::now() + Duration::from_secs(1);
        while Instant::now() < t {
            soak.pump(Duration::from_millis(50));
        }
    }
    let rss_warm = rss_kib();
    eprintln!("soak: {conns} connections open, client RSS after warm-up {rss_warm} KiB");

    // Faults: a network fault hits one proxy (25 clients) at a time.
    let end = Instant::now() + Duration::from_secs(secs);
    let mut next_fault = Instant::now();
    let mut next_round = Instant::now();
    let mut heal_at: Option<Instant> = None;
    while Instant::now() < end {
        let now = Instant::now();
        if heal_at.is_some_and(|t| now >= t) {
            send("mode all pass 0".into());
            heal_at = None;
        }
        if now >= next_fault {
            let p = rng.below(nproxies as u64);
            let (name, hold) = match rng.below(10) {
                0 => ("reset", 1),
                1 => ("stall", 4),
                2 => ("close", 1),
                3 => ("garbage", 1),
                4 => ("truncate", 1),
                5 => ("refuse", 2),
                6 => ("delay", 3),
                7 => ("server_restart", 0),
                8 => ("flood", 0),
                _ => ("none", 0),
            };
            match name {
                "server_restart" => send("restart".into()),
                "flood" => send("flood".into()),
                "none" => {}
                "truncate" => send(format!("mode {p} truncate {}", rng.below(200))),
                "delay" => send(format!("mode {p} delay 100")),
                mode => send(format!("mode {p} {mode} 0")),
            }
            *soak.totals.faults.entry(name).or_default() += 1;
            if hold > 0 {
                heal_at = Some(now + Duration::from_secs(hold));
            }
            next_fault = now + Duration::from_secs(2 + rng.below(4));
        }
        if now >= next_round {
            soak.send_round(&ids);
            next_round = now + Duration::from_secs(1);
        }
        soak.pump(Duration::from_millis(50));
    }

    // Heal and settle: every client open and healthy, the last sends echoed.
    send("mode all pass 0".into());
    let settle_end = Instant::now() + Duration::from_secs(60);
    let mut healthy = 0;
    while Instant::now() < settle_end {
        soak.pump(Duration::from_millis(100));
        healthy = ids
            .iter()
            .filter(|&&id| {
                soak.sup
                    .health(id)
                    .is_some_and(|h| h.status == HealthStatus::Healthy)
            })
            .count();
        if healthy == conns {
            break;
        }
    }
    for _ in 0..3 {
        soak.send_round(&ids);
        let t = Instant::now() + Duration::from_secs(1);
        while Instant::now() < t {
            soak.pump(Duration::from_millis(50));
        }
    }
    let drain_end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < drain_end && soak.ledgers.values().any(|l| !l.outstanding.is_empty()) {
        soak.pump(Duration::from_millis(50));
    }
    let rss_end = rss_kib();

    let (mut accepted, mut echoed, mut failed, mut refused, mut lost) = (0, 0, 0, 0, 0);
    for l in soak.ledgers.values() {
        accepted += l.accepted;
        echoed += l.echoed;
        failed += l.reported_failed;
        refused += l.refused;
        lost += l.outstanding.len() as u64;
    }
    let t = &soak.totals;
    eprintln!(
        "soak report: {conns} connections, {secs} s of faults {:?}; {} disconnects, {} reconnect attempts, {} restarts, {} clients failed; \
         messages: {accepted} accepted, {echoed} echoed, {failed} reported failed with their connection, {refused} refused at send, {lost} unaccounted; \
         healthy at the end: {healthy}/{conns}; RSS {rss_warm} KiB after warm-up, {rss_end} KiB at the end ({:+.1} %)",
        t.faults,
        t.disconnects,
        t.reconnects,
        t.restarts,
        t.failed_clients,
        (rss_end as f64 - rss_warm as f64) * 100.0 / rss_warm.max(1) as f64
    );
    assert_eq!(accepted, echoed + failed + lost, "ledger arithmetic");
    assert_eq!(
        lost, 0,
        "messages accepted, never echoed, and no disconnect reported"
    );
    assert_eq!(t.failed_clients, 0, "no client may give up");
    assert_eq!(healthy, conns, "every client healthy after the faults stop");
    send("quit".into());
    let _ = child.wait();
    assert!(
        rss_end * 10 <= rss_warm * 11,
        "RSS grew more than 10 %: {rss_warm} -> {rss_end} KiB"
    );
}
