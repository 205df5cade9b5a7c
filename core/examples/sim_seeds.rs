//! Run the deterministic simulation over many seeds, or replay one.
//!
//! ```text
//! SEEDS=100000 cargo run --release -p zenws-core --features sim --example sim_seeds   # seeds 0..100000
//! SEEDS=1000 START=5000 cargo run --release -p zenws-core --features sim --example sim_seeds
//! SEED=42 cargo run --release -p zenws-core --features sim --example sim_seeds        # replay one, full trace
//! ```
//!
//! Every seed runs twice and the two trace hashes must match. A failing
//! seed prints the broken invariant, the tail of its trace and the command
//! that replays it. `MINUTES` sets the virtual time per seed (default 10).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zenws_core::sim::{replay_command, run_seed, SimConfig, SimReport};

/// Sums of the counters of every seed's report.
fn add(total: &mut SimReport, r: &SimReport) {
    total.restores += r.restores;
    total.channels_granted += r.channels_granted;
    total.channels_rejected += r.channels_rejected;
    total.authentications += r.authentications;
    total.token_refreshes += r.token_refreshes;
    total.auth_retries += r.auth_retries;
    total.heartbeat_setup_failures += r.heartbeat_setup_failures;
    total.rate_limit_holds += r.rate_limit_holds;
    total.requests_resolved += r.requests_resolved;
    total.requests_errored += r.requests_errored;
    total.requests_timed_out += r.requests_timed_out;
    total.requests_failed += r.requests_failed;
    total.sends_accepted += r.sends_accepted;
    total.sends_rejected += r.sends_rejected;
    total.sends_failed += r.sends_failed;
    let mut f = total.faults;
    let g = r.faults;
    macro_rules! sum {
        ($($field:ident),*) => { $(f.$field += g.$field;)* };
    }
    sum!(
        refreshes,
        refresh_refused,
        auth_transient,
        auth_ignored,
        auth_slow,
        auth_rejected,
        private_on_expired_token,
        rate_limited,
        channels_omitted,
        raw_unauthorized,
        subscribe_errors,
        subscribe_unauthorized,
        subscribe_ignored,
        heartbeat_setup_errors,
        cod_acks,
        cod_errors,
        cod_ignored,
        test_request_closes,
        unsubscribes,
        unsubscribe_ignored,
        unsubscribe_errors
    );
    total.faults = f;
    let (a, b) = (&mut total.actions, r.actions);
    a.subscribes += b.subscribes;
    a.resubscribes += b.resubscribes;
    a.resubscribes_leaving += b.resubscribes_leaving;
    a.unsubscribes += b.unsubscribes;
    a.unsubscribes_in_flight += b.unsubscribes_in_flight;
    a.unsubscribes_granted += b.unsubscribes_granted;
    a.quiet_checks += b.quiet_checks;
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn config() -> SimConfig {
    SimConfig {
        duration: Duration::from_secs(60 * env("MINUTES").unwrap_or(10)),
        ..SimConfig::default()
    }
}

fn replay(seed: u64) -> ! {
    let cfg = SimConfig {
        keep_trace: true,
        ..config()
    };
    match run_seed(seed, &cfg) {
        Ok(r) => {
            for line in &r.trace {
                println!("{line}");
            }
            println!(
                "seed {seed}: ok, hash {:016x}, {:.1} min virtual, {} steps, {} opens, {} reconnects, {} restarts, {} escalations, {} heartbeat failures",
                r.trace_hash,
                r.virtual_time.as_secs_f64() / 60.0,
                r.steps,
                r.opens,
                r.reconnects,
                r.restarts,
                r.escalations,
                r.heartbeat_failures
            );
            std::process::exit(0)
        }
        Err(v) => {
            for line in &v.trace {
                println!("{line}");
            }
            eprintln!("{v}");
            std::process::exit(1)
        }
    }
}

fn main() {
    if let Some(seed) = env("SEED") {
        replay(seed);
    }
    let count = env("SEEDS").unwrap_or(1000);
    let start = env("START").unwrap_or(0);
    let cfg = config();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let next = AtomicU64::new(start);
    let failed = AtomicBool::new(false);
    let totals: [AtomicU64; 7] = Default::default();
    let sums = Mutex::new(SimReport::default());
    let began = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= start + count || failed.load(Ordering::Relaxed) {
                    break;
                }
                let outcome = run_seed(seed, &cfg).and_then(|a| {
                    run_seed(seed, &cfg).map(|b| (a.trace_hash == b.trace_hash, a))
                });
                match outcome {
                    Ok((true, r)) => {
                        add(&mut sums.lock().unwrap(), &r);
                        for (t, v) in totals.iter().zip([
                            1,
                            r.virtual_time.as_nanos() as u64 / 1_000_000,
                            r.opens,
                            r.reconnects,
                            r.restarts,
                            r.escalations,
                            r.heartbeat_failures,
                        ]) {
                            t.fetch_add(v, Ordering::Relaxed);
                        }
                    }
                    Ok((false, _)) => {
                        failed.store(true, Ordering::Relaxed);
                        eprintln!(
                            "seed {seed}: NOT DETERMINISTIC (two runs, two trace hashes)\nreplay: {}",
                            replay_command(seed)
                        );
                    }
                    Err(_) => {
                        failed.store(true, Ordering::Relaxed);
                        let v = run_seed(
                            seed,
                            &SimConfig {
                                keep_trace: true,
                                ..cfg.clone()
                            },
                        )
                        .expect_err("fails again");
                        eprintln!("{v}");
                    }
                }
            });
        }
    });
    let secs = began.elapsed().as_secs_f64();
    let [n, ms, opens, reconnects, restarts, escalations, hb] =
        totals.map(|t| t.load(Ordering::Relaxed));
    let hours = ms as f64 / 3_600_000.0;
    println!(
        "{n} seeds ({start}..{}) in {secs:.1} s on {threads} threads: {:.0} seeds/s, {hours:.0} h virtual ({:.1} simulated hours/s, each seed run twice)",
        start + n,
        n as f64 / secs,
        2.0 * hours / secs
    );
    println!(
        "opens {opens}, reconnects {reconnects}, restarts {restarts}, escalations {escalations}, heartbeat failures {hb}"
    );
    let t = sums.into_inner().unwrap();
    println!(
        "session: {} authentications, {} token refreshes, {} auth retries, {} restores ({} channels granted, {} rejected), {} heartbeat setup failures, {} connects held by a 10028",
        t.authentications,
        t.token_refreshes,
        t.auth_retries,
        t.restores,
        t.channels_granted,
        t.channels_rejected,
        t.heartbeat_setup_failures,
        t.rate_limit_holds
    );
    println!(
        "user: {} sends accepted, {} rejected, {} failed; requests {} resolved, {} errors, {} timed out, {} failed",
        t.sends_accepted,
        t.sends_rejected,
        t.sends_failed,
        t.requests_resolved,
        t.requests_errored,
        t.requests_timed_out,
        t.requests_failed
    );
    let faults: Vec<String> = t
        .faults
        .named()
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    println!("server faults drawn: {}", faults.join(", "));
    let actions: Vec<String> = t
        .actions
        .named()
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    println!("user subscription actions: {}", actions.join(", "));
    if failed.load(Ordering::Relaxed) {
        std::process::exit(1);
    }
}
