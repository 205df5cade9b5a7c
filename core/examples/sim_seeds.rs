//! Run the deterministic simulation over many seeds, or replay one.
//!
//! ```text
//! SEEDS=100000 cargo run --release -p zenws-core --example sim_seeds   # seeds 0..100000
//! SEEDS=1000 START=5000 cargo run --release -p zenws-core --example sim_seeds
//! SEED=42 cargo run --release -p zenws-core --example sim_seeds        # replay one, full trace
//! ```
//!
//! Every seed runs twice and the two trace hashes must match. A failing
//! seed prints the broken invariant, the tail of its trace and the command
//! that replays it. `MINUTES` sets the virtual time per seed (default 10).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use zenws_core::sim::{replay_command, run_seed, SimConfig};

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
    if failed.load(Ordering::Relaxed) {
        std::process::exit(1);
    }
}
