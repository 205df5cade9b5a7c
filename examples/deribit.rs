//! A production-style Deribit client: supervised connection, Deribit
//! heartbeat, `public/auth` + subscriptions restored after every reconnect
//! and restart, JSON-RPC request correlation, credit-based rate limiting.
//!
//! ```text
//! cargo run --example deribit -- [URL] [--ca-file PEM] [--duration SECS]
//!                                [--every SECS] [--burst N]
//!                                [--cancel-on-disconnect] [--json]
//! ```
//!
//! - `URL` defaults to `wss://test.deribit.com/ws/api/v2`.
//! - `DERIBIT_CLIENT_ID` / `DERIBIT_CLIENT_SECRET` in the environment enable
//!   `public/auth` and the private `user.orders.BTC-PERPETUAL.raw` channel;
//!   without them it runs public-only.
//! - `--duration` (default 30 s) how long to run; `--every` (default 5 s)
//!   the `public/get_time` period; `--burst N` (default 0) sends N
//!   `public/test` requests once subscribed, as fast as Deribit's credit
//!   bucket allows (a rate-limited send waits `retry_after`).
//! - `--cancel-on-disconnect` (with credentials): enable Deribit's
//!   cancel-on-disconnect (`private/enable_cancel_on_disconnect`, scope
//!   `connection`) after every authentication, on every connection.
//! - `--json`: also print one JSON object per line on stderr for every
//!   lifecycle and session event, each with an `"event"` field
//!   (`connecting`, `connected`, `authenticated` with the `grant` used,
//!   `token_refreshed`, `cancel_on_disconnect`, `subscribed` with the
//!   `granted` channels, `subscription_rejected` with the `channel` and
//!   `reason` / `code`, `heartbeat_setup_failed`, `rate_limited`,
//!   `reconnecting`, `restarted`, `failed`, ...; see
//!   [`event_json`](zenws_examples::deribit_session::event_json)). The
//!   human lines stay on stdout. No token or secret is ever printed.
//!
//! Try it against the loopback test server: `cargo test -p zenws-examples
//! --test deribit_session` does exactly that.

use std::time::{Duration, Instant};
use zenws_core::supervisor::SupervisorConfig;
use zenws_examples::deribit_session::{connecting_json, event_json, DeribitApp, DeribitSetup};
use zenws_mio::{ClientEvent, ClientSupervisor};

struct Args {
    url: String,
    ca_file: Option<String>,
    duration: Duration,
    every: Duration,
    burst: u32,
    cancel_on_disconnect: bool,
    json: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: deribit [URL] [--ca-file PEM] [--duration SECS] [--every SECS] [--burst N] [--cancel-on-disconnect] [--json]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        url: "wss://test.deribit.com/ws/api/v2".into(),
        ca_file: None,
        duration: Duration::from_secs(30),
        every: Duration::from_secs(5),
        burst: 0,
        cancel_on_disconnect: false,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    let secs = |v: Option<String>| -> Duration {
        match v.as_deref().map(str::parse::<f64>) {
            Some(Ok(s)) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s),
            _ => usage(),
        }
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--ca-file" => a.ca_file = Some(it.next().unwrap_or_else(|| usage())),
            "--duration" => a.duration = secs(it.next()),
            "--every" => a.every = secs(it.next()),
            "--burst" => {
                a.burst = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--cancel-on-disconnect" => a.cancel_on_disconnect = true,
            "--json" => a.json = true,
            "-h" | "--help" => usage(),
            s if s.starts_with("--") => usage(),
            url => a.url = url.into(),
        }
    }
    a
}

fn main() {
    let args = parse_args();
    let setup = DeribitSetup {
        cancel_on_disconnect: args.cancel_on_disconnect,
        ..DeribitSetup::from_env()
    };
    if !setup.authenticated() {
        println!(
            "note: DERIBIT_CLIENT_ID / DERIBIT_CLIENT_SECRET not set: public-only, skipping {}",
            setup.private_channel()
        );
        if args.cancel_on_disconnect {
            println!("note: --cancel-on-disconnect needs credentials: ignored");
        }
    }
    let mut config = setup.client_config();
    if let Some(ca) = &args.ca_file {
        config = config.ca_file(ca);
    }
    // Give up on a client only after its own retries, then restart it once a
    // second at most: 10 restarts a minute before the supervisor escalates.
    let mut sup = ClientSupervisor::with_config(
        SupervisorConfig::default().with_restart_delay(Duration::from_secs(1)),
    )
    .unwrap_or_else(|e| {
        eprintln!("event loop: {e}");
        std::process::exit(1)
    });
    let id = match sup.start_client(&args.url, config) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("{}: {e}", args.url);
            std::process::exit(2)
        }
    };
    let mut app = DeribitApp::new(id);
    app.request_every = Some(args.every);
    app.burst = args.burst;
    println!(
        "{}",
        app.stamp(&format!(
            "connecting to {} ({}), channels {:?}, heartbeat {} s, for {:.0?}",
            args.url,
            if setup.authenticated() {
                "authenticated"
            } else {
                "public"
            },
            setup.channels(),
            setup.heartbeat_secs,
            args.duration
        ))
    );

    if args.json {
        json_line(&connecting_json(&zenws_mio::redact_url(&args.url), &setup));
    }
    // Every event: its JSON line on stderr (with --json), its human line on stdout.
    let json = args.json;
    let show = move |app: &mut DeribitApp, ev: &ClientEvent| {
        if json {
            if let Some(line) = event_json(ev) {
                json_line(&line);
            }
        }
        if let Some(line) = app.on_event(ev) {
            println!("{}", app.stamp(&line));
        }
    };

    let end = Instant::now() + args.duration;
    while Instant::now() < end && !app.is_done() && !sup.is_terminated() {
        let now = Instant::now();
        let wake = app.next_wakeup().map_or(end, |t| t.min(end));
        let wait = wake
            .saturating_duration_since(now)
            .min(Duration::from_millis(250));
        if let Err(e) = sup.run_once(Some(wait)) {
            eprintln!("event loop: {e}");
            break;
        }
        while let Some(ev) = sup.poll_event() {
            show(&mut app, &ev);
        }
        for line in app.tick(&mut sup) {
            println!("{}", app.stamp(&line));
        }
    }

    // Close handshake, bounded.
    if sup.stop_client(id).is_ok() {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !sup.is_empty() && Instant::now() < deadline {
            let _ = sup.run_once(Some(Duration::from_millis(50)));
            while let Some(ev) = sup.poll_event() {
                show(&mut app, &ev);
            }
        }
    }
    print!("{}", app.summary());
    if app.stats.failed.is_some() {
        std::process::exit(1);
    }
}

/// One JSON object per line on stderr, flushed (scripts read it live).
fn json_line(line: &str) {
    use std::io::Write as _;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
    let _ = err.flush();
}
