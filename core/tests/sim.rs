//! The deterministic simulation over thousands of seeds (feature `sim`).
//!
//! Every seed runs twice: both runs must hold every invariant and produce
//! the same trace hash. A failing seed panics with the broken invariant,
//! the tail of its trace and the command that replays it.
#![cfg(feature = "sim")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use zenws_core::exchange::deribit::Deribit;
use zenws_core::session::{Session, SessionConfig, SessionEvent, Signal};
use zenws_core::sim::{run_seed, Faults, SimConfig, Violation};
use zenws_core::Instant;

/// Seeds `cargo test` runs (`SEEDS=30000` overrides; the 10-minute sweep
/// is `SEEDS=30000 cargo run --release -p zenws-core --features sim --example sim_seeds`).
fn seeds() -> u64 {
    std::env::var("SEEDS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(2_000)
}

/// Virtual time per seed in `cargo test` (the example defaults to 10 min).
fn config() -> SimConfig {
    // Short enough for a debug build (the faults are squeezed into the
    // minute accordingly); `sim_seeds` runs the long ones in release.
    SimConfig {
        duration: Duration::from_secs(60),
        faults: Faults {
            fault_within: Duration::from_secs(40),
            ..Faults::default()
        },
        ..SimConfig::default()
    }
}

fn explain(seed: u64, cfg: &SimConfig) -> Violation {
    let traced = SimConfig {
        keep_trace: true,
        ..cfg.clone()
    };
    run_seed(seed, &traced).expect_err("a failing seed fails again")
}

#[test]
fn two_thousand_seeds_hold_every_invariant_deterministically() {
    let cfg = config();
    let seeds = seeds();
    let next = AtomicU64::new(0);
    let virtual_ms = AtomicU64::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let began = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds {
                    break;
                }
                let a = run_seed(seed, &cfg).unwrap_or_else(|_| panic!("{}", explain(seed, &cfg)));
                let b = run_seed(seed, &cfg).unwrap_or_else(|_| panic!("{}", explain(seed, &cfg)));
                assert_eq!(
                    a.trace_hash,
                    b.trace_hash,
                    "seed {seed} is not deterministic; replay: {}",
                    zenws_core::sim::replay_command(seed)
                );
                virtual_ms.fetch_add(a.virtual_time.as_millis() as u64, Ordering::Relaxed);
            });
        }
    });
    let secs = began.elapsed().as_secs_f64();
    let hours = virtual_ms.load(Ordering::Relaxed) as f64 / 3_600_000.0;
    println!(
        "{seeds} seeds × 2 runs in {secs:.1} s: {:.0} seeds/s, {hours:.1} h virtual ({:.1} simulated h/s)",
        seeds as f64 / secs,
        2.0 * hours / secs
    );
}

#[test]
fn same_seed_same_trace_line_by_line() {
    let cfg = SimConfig {
        keep_trace: true,
        ..config()
    };
    let a = run_seed(3, &cfg).unwrap();
    let b = run_seed(3, &cfg).unwrap();
    assert!(a.trace.len() > 100, "a real trace: {} lines", a.trace.len());
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.trace_hash, b.trace_hash);
    let other = run_seed(4, &cfg).unwrap();
    assert_ne!(
        a.trace_hash, other.trace_hash,
        "different seeds, different runs"
    );
}

#[test]
fn the_simulation_exercises_the_faults() {
    let cfg = config();
    let (mut opens, mut reconnects, mut restarts, mut escalations, mut dead) = (0, 0, 0, 0, 0);
    let (mut failed, mut timed_out, mut rejected) = (0, 0, 0);
    let (mut refreshed, mut retried, mut restores, mut refused, mut holds, mut setup) =
        (0, 0, 0, 0, 0, 0);
    let mut faults = std::collections::BTreeMap::new();
    let mut actions = std::collections::BTreeMap::new();
    for seed in 0..200 {
        let r = run_seed(seed, &cfg).unwrap_or_else(|_| panic!("{}", explain(seed, &cfg)));
        opens += r.opens;
        reconnects += r.reconnects;
        restarts += r.restarts;
        escalations += r.escalations;
        dead += r.heartbeat_failures;
        failed += r.sends_failed + r.requests_failed;
        timed_out += r.requests_timed_out;
        rejected += r.sends_rejected;
        refreshed += r.token_refreshes;
        retried += r.auth_retries;
        restores += r.restores;
        refused += r.channels_rejected;
        holds += r.rate_limit_holds;
        setup += r.heartbeat_setup_failures;
        for (name, n) in r.faults.named() {
            *faults.entry(name).or_insert(0) += n;
        }
        for (name, n) in r.actions.named() {
            *actions.entry(name).or_insert(0) += n;
        }
    }
    for (what, n) in [
        ("opens", opens),
        ("reconnects", reconnects),
        ("restarts", restarts),
        ("escalations", escalations),
        ("heartbeat failures", dead),
        ("failed sends/requests", failed),
        ("timed-out requests", timed_out),
        ("rejected sends", rejected),
        ("token refreshes", refreshed),
        ("auth retries", retried),
        ("restores", restores),
        ("rejected channels", refused),
        ("connects held by a 10028", holds),
        ("heartbeat setup failures", setup),
    ] {
        assert!(n > 0, "200 seeds never produced any {what}");
    }
    println!("server faults over 200 seeds: {faults:?}");
    for (name, n) in faults {
        assert!(n > 0, "200 seeds never drew the server fault {name}");
    }
    // Runtime subscription changes: unsubscribing while the subscribe is in
    // flight, re-subscribing (also while being let go), and quiet moments
    // where the subscriptions are compared with the server's.
    println!("user subscription actions over 200 seeds: {actions:?}");
    for (name, n) in actions {
        assert!(n > 0, "200 seeds never made the user action {name}");
    }
}

// ---- regressions: bugs the simulation found ----

/// Seeds that failed before the fixes (the long default run of the example).
#[test]
fn regression_seeds() {
    let cfg = SimConfig::default();
    for seed in [20, 69] {
        run_seed(seed, &cfg).unwrap_or_else(|_| panic!("{}", explain(seed, &cfg)));
    }
}

/// Bug 1: an unanswered auth request (stalled link, busy server) was
/// reported as `AuthRejected`, which fails the client fatally: a transient
/// fault killed it for good. It is now `AuthTimedOut` (the driver reconnects).
#[test]
fn auth_timeout_is_not_a_rejection() {
    let deribit = Deribit::with_credentials("id", "secret").unwrap();
    let mut s: Session =
        Session::new(SessionConfig::default().with_request_timeout(Duration::from_secs(5)));
    s.on_open(Instant::ZERO, 1, &deribit);
    assert!(s
        .poll_transmit(Instant::ZERO, &deribit, &mut String::new())
        .is_some());
    s.handle_timeout(Instant::from_millis(5_000));
    assert_eq!(
        s.poll_event(),
        Some(SessionEvent::AuthTimedOut { epoch: 1 })
    );
    assert_eq!(s.poll_event(), None);
    // Transient: the client reconnects.
    match s.take_signal() {
        Some(Signal::Drop(e)) => assert!(e.is_transient(), "{e:?}"),
        other => panic!("{other:?}"),
    }
}

/// Bug 2: a disconnect during authentication reported `RequestFailed` for
/// the session's own auth id, a request the user never made.
#[test]
fn disconnect_during_auth_reports_no_foreign_request() {
    let deribit = Deribit::with_credentials("id", "secret").unwrap();
    let mut s: Session = Session::new(SessionConfig::default());
    s.track_request(Instant::ZERO, 100).unwrap();
    s.on_open(Instant::ZERO, 1, &deribit);
    assert!(s
        .poll_transmit(Instant::ZERO, &deribit, &mut String::new())
        .is_some());
    s.on_disconnect();
    assert_eq!(
        s.poll_event(),
        Some(SessionEvent::RequestFailed { id: 100 })
    );
    assert_eq!(s.poll_event(), None);
    assert_eq!(s.pending_requests(), 0);
}

/// Bug 3: a disconnect (or a timeout) with more than 8 requests in flight
/// overflowed the session's 8-entry event queue and dropped the oldest
/// `RequestFailed`/`RequestTimedOut`: those requests were never resolved.
#[test]
fn every_pending_request_is_reported_on_disconnect_and_timeout() {
    let mut s: Session = Session::new(SessionConfig::default());
    for id in 1..=32 {
        s.track_request(Instant::ZERO, id).unwrap();
    }
    s.on_disconnect();
    let mut failed: Vec<u64> = std::iter::from_fn(|| s.poll_event())
        .map(|e| match e {
            SessionEvent::RequestFailed { id } => id,
            e => panic!("{e:?}"),
        })
        .collect();
    failed.sort_unstable();
    assert_eq!(failed, (1..=32).collect::<Vec<_>>());

    for id in 1..=20 {
        s.track_request(Instant::ZERO, id).unwrap();
    }
    s.handle_timeout(Instant::from_millis(60_000));
    let n = std::iter::from_fn(|| s.poll_event())
        .filter(|e| matches!(e, SessionEvent::RequestTimedOut { .. }))
        .count();
    assert_eq!(n, 20);
    assert_eq!(s.pending_requests(), 0);
}

/// `SEED=n cargo test -p zenws-core --features sim --test sim replay_one -- --ignored --nocapture`:
/// the full trace of one seed with the `cargo test` configuration.
#[test]
#[ignore]
fn replay_one() {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let cfg = SimConfig {
        keep_trace: true,
        ..config()
    };
    match run_seed(seed, &cfg) {
        Ok(r) => r.trace.iter().for_each(|l| println!("{l}")),
        Err(v) => {
            v.trace.iter().for_each(|l| println!("{l}"));
            panic!("{v}");
        }
    }
}
