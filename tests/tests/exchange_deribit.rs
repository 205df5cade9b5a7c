//! Deribit, complete (issue 10, point 3): the mio driver running the
//! per-client machine with the Deribit protocol against the loopback
//! `DeribitServer` (plain ws on 127.0.0.1). One test per rule:
//!
//! - `client_credentials` first, then the `refresh_token` grant;
//! - the token refreshed before it expires, on the same connection, private
//!   data continuing; a refused refresh falls back to the credentials;
//! - transient auth errors retried, never fatal; invalid credentials fatal
//!   without a retry storm;
//! - subscriptions confirmed per channel (partial rejection), public and
//!   private channels in separate requests, `.raw` only after auth;
//! - cancel-on-disconnect after every authentication, reconnects included;
//! - a 10028 holds the reconnect until the credits refilled;
//! - `set_heartbeat` errors typed and retried;
//! - user request ids in the reserved range refused; JSON-RPC errors typed.
//!
//! Real time, every wait bounded; no tight timing thresholds.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use zenws_core::exchange::deribit::Deribit;
use zenws_core::json;
use zenws_core::ratelimit::RateLimit as ClientRateLimit;
use zenws_core::session::Rejection;
use zenws_core::{Error as Reason, ExitReason, HeartbeatConfig};
use zenws_mio::{ClientConfig, ClientEvent, ClientId, ClientSupervisor, Error};
use zenws_tests::{DeribitOptions, DeribitServer, RateLimit};

const BOOK_RAW: &str = "book.BTC-PERPETUAL.raw";
const TRADES_RAW: &str = "trades.BTC-PERPETUAL.raw";
const BOOK_100: &str = "book.BTC-PERPETUAL.100ms";
const TICKER_100: &str = "ticker.BTC-PERPETUAL.100ms";
const ORDERS: &str = "user.orders.BTC-PERPETUAL.raw";
const USER_TRADES: &str = "user.trades.BTC-PERPETUAL.raw";

fn creds() -> Deribit {
    Deribit::with_credentials("test-client", "test-secret").unwrap()
}

/// Fast retries, no heartbeat (its traffic would only add noise), fast
/// session retries.
fn config(protocol: Deribit, channels: &[&str]) -> ClientConfig {
    let mut c = ClientConfig::default().protocol(protocol);
    for ch in channels {
        c = c.subscribe(*ch);
    }
    c.connection.heartbeat = HeartbeatConfig::none();
    c.connection.retry.retry_delay = Duration::from_millis(50);
    c.connection.retry.max_backoff = Duration::from_millis(200);
    c.connection.connect_timeout = Duration::from_secs(2);
    c.session.retry_delay = Duration::from_millis(50);
    c
}

fn server_with(f: impl FnOnce(&mut DeribitOptions)) -> DeribitServer {
    let mut o = DeribitOptions::default();
    f(&mut o);
    DeribitServer::start(o).unwrap()
}

/// One supervisor, one client, every event kept with the time it was seen.
struct Run {
    sup: ClientSupervisor,
    id: ClientId,
    events: Vec<(Instant, ClientEvent)>,
}

impl Run {
    fn start(server: &DeribitServer, config: ClientConfig) -> Run {
        let mut sup = ClientSupervisor::new().unwrap();
        let id = sup.start_client(&server.url(), config).unwrap();
        Run {
            sup,
            id,
            events: Vec::new(),
        }
    }

    fn turn(&mut self) {
        self.sup.run_once(Some(Duration::from_millis(5))).unwrap();
        let now = Instant::now();
        while let Some(ev) = self.sup.poll_event() {
            self.events.push((now, ev));
        }
    }

    /// Run until `cond` holds; panic with the last events after `secs`.
    fn until(&mut self, secs: u64, what: &str, mut cond: impl FnMut(&Run) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            self.turn();
            if cond(self) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{what}: not reached in {secs} s; last events: {:#?}",
                    self.tail(30)
                );
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.turn();
        }
    }

    fn tail(&self, n: usize) -> Vec<&ClientEvent> {
        self.events[self.events.len().saturating_sub(n)..]
            .iter()
            .map(|(_, e)| e)
            .collect()
    }

    fn all(&self) -> impl Iterator<Item = &ClientEvent> {
        self.events.iter().map(|(_, e)| e)
    }

    fn count(&self, f: impl Fn(&ClientEvent) -> bool) -> usize {
        self.all().filter(|e| f(e)).count()
    }

    fn restored(&self) -> Vec<(Vec<String>, usize)> {
        self.all()
            .filter_map(|e| match e {
                ClientEvent::Restored {
                    granted, rejected, ..
                } => Some((granted.clone(), *rejected)),
                _ => None,
            })
            .collect()
    }

    fn rejected(&self) -> Vec<(String, Rejection)> {
        self.all()
            .filter_map(|e| match e {
                ClientEvent::SubscriptionRejected {
                    channel, reason, ..
                } => Some((channel.clone(), *reason)),
                _ => None,
            })
            .collect()
    }

    fn opened(&self) -> usize {
        self.count(|e| matches!(e, ClientEvent::Opened { .. }))
    }

    fn lost(&self) -> usize {
        self.count(|e| {
            matches!(
                e,
                ClientEvent::Disconnected { .. } | ClientEvent::Reconnecting { .. }
            )
        })
    }

    fn failed(&self) -> Option<ExitReason> {
        self.all().find_map(|e| match e {
            ClientEvent::Failed { reason, .. } => Some(*reason),
            _ => None,
        })
    }

    fn refreshed(&self) -> usize {
        self.count(|e| matches!(e, ClientEvent::TokenRefreshed { .. }))
    }

    /// Subscription notifications per channel seen after `since`.
    fn data_since(&self, since: Instant) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (t, e) in &self.events {
            if *t < since {
                continue;
            }
            if let ClientEvent::Message { message, .. } = e {
                if let Ok(v) = json::scan(message.as_bytes()) {
                    if v.is_deribit_subscription() {
                        if let Some(ch) = v.params_channel {
                            *m.entry(ch.to_string()).or_default() += 1;
                        }
                    }
                }
            }
        }
        m
    }

    /// Delivered messages that are JSON-RPC errors with `code`.
    fn error_messages(&self, code: i64) -> usize {
        self.count(|e| match e {
            ClientEvent::Message { message, .. } => json::scan(message.as_bytes())
                .is_ok_and(|v| v.has_error && v.error_code == Some(code)),
            _ => false,
        })
    }

    fn request(&mut self, method: &str) -> u64 {
        let rid = self.sup.next_request_id(self.id).unwrap();
        let text = format!(r#"{{"jsonrpc":"2.0","id":{rid},"method":"{method}","params":{{}}}}"#);
        self.sup.request(self.id, text).unwrap()
    }

    fn resolved(&self, request: u64) -> bool {
        self.all()
            .any(|e| matches!(e, ClientEvent::RequestResolved { request: r, .. } if *r == request))
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn grants_on(server: &DeribitServer, conn: usize) -> Vec<String> {
    server
        .auth_grants()
        .into_iter()
        .filter(|(c, _)| *c == conn)
        .map(|(_, g)| g)
        .collect()
}

// ---------------------------------------------------------------------------

#[test]
fn client_credentials_first_then_refresh_token_grant() {
    let server = server_with(|o| o.token_lifetime = Some(Duration::from_secs(2)));
    let mut cfg = config(creds(), &[ORDERS]);
    cfg.session.refresh_margin = Duration::from_millis(800);
    let mut run = Run::start(&server, cfg);
    run.until(10, "refreshed", |r| r.refreshed() >= 1);
    let auth = run
        .all()
        .find_map(|e| match e {
            ClientEvent::Authenticated {
                refresh,
                expires_in,
                ..
            } => Some((*refresh, *expires_in)),
            _ => None,
        })
        .expect("Authenticated");
    assert_eq!(auth, (false, Some(Duration::from_secs(2))));
    assert_eq!(
        grants_on(&server, 0),
        ["client_credentials", "refresh_token"],
        "{:?}",
        server.auth_grants()
    );
    // The refresh used the refresh token the first answer carried.
    let refresh = server
        .received()
        .into_iter()
        .find(|r| r.method == "public/auth" && r.params["grant_type"] == "refresh_token")
        .unwrap();
    assert_eq!(refresh.params["refresh_token"], "dbt-refresh-0");
    assert_eq!(server.connections_accepted(), 1);
    // The auth answers (tokens) never reach the application.
    assert!(!run
        .all()
        .any(|e| matches!(e, ClientEvent::Message { message, .. }
        if message.as_text().is_some_and(|t| t.contains("access_token")))));
}

#[test]
fn token_refreshed_before_expiry_on_the_same_connection_private_data_continues() {
    // Tokens live 2 s; refresh 1 s before expiry: over ~5 s that is at
    // least three refreshes, all on the first connection.
    let server = server_with(|o| o.token_lifetime = Some(Duration::from_secs(2)));
    let mut cfg = config(creds(), &[ORDERS, BOOK_RAW]);
    cfg.session.refresh_margin = Duration::from_secs(1);
    let mut run = Run::start(&server, cfg);
    run.until(10, "restored", |r| !r.restored().is_empty());
    let t0 = Instant::now();
    run.until(10, "three refreshes", |r| r.refreshed() >= 3);
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "refreshed too early"
    );
    // Past three lifetimes of the first token: private data keeps coming,
    // and a private request is authorized.
    let since = Instant::now();
    let rid = run.request("private/get_account_summary");
    run.until(5, "private data and request", |r| {
        r.data_since(since).get(ORDERS).copied().unwrap_or(0) >= 5 && r.resolved(rid)
    });
    assert_eq!(server.connections_accepted(), 1, "no reconnect");
    assert_eq!(run.opened(), 1);
    assert_eq!(run.lost(), 0, "{:#?}", run.tail(20));
    assert_eq!(run.error_messages(13009), 0, "never unauthorized");
    let grants = grants_on(&server, 0);
    assert_eq!(grants[0], "client_credentials");
    assert!(
        grants[1..].iter().all(|g| g == "refresh_token"),
        "{grants:?}"
    );
    assert_eq!(
        run.count(|e| matches!(e, ClientEvent::Authenticated { .. })),
        1,
        "a refresh is TokenRefreshed, not a new authentication"
    );
    // Every refresh came before the token it replaced expired: user.*
    // notifications stop on an expired token, so a gap of a whole lifetime
    // would show; none longer than one second.
    let times: Vec<Instant> = run
        .events
        .iter()
        .filter(|(_, e)| {
            matches!(e, ClientEvent::Message { message, .. }
            if message.as_text().is_some_and(|t| t.contains(ORDERS)))
        })
        .map(|(t, _)| *t)
        .collect();
    let gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(gap < Duration::from_secs(1), "private data gap {gap:?}");
}

#[test]
fn refused_refresh_falls_back_to_client_credentials_on_the_same_connection() {
    let server = server_with(|o| o.token_lifetime = Some(Duration::from_secs(2)));
    server.set_refuse_refresh(true);
    let mut cfg = config(creds(), &[ORDERS]);
    cfg.session.refresh_margin = Duration::from_secs(1);
    let mut run = Run::start(&server, cfg);
    run.until(10, "renewed after a refused refresh", |r| {
        r.refreshed() >= 1
    });
    let grants = grants_on(&server, 0);
    assert_eq!(
        &grants[..3],
        ["client_credentials", "refresh_token", "client_credentials"],
        "{grants:?}"
    );
    let since = Instant::now();
    run.until(5, "private data after the fallback", |r| {
        r.data_since(since).get(ORDERS).copied().unwrap_or(0) >= 3
    });
    assert_eq!(server.connections_accepted(), 1, "same connection");
    assert_eq!(run.lost(), 0, "{:#?}", run.tail(20));
    assert!(run.failed().is_none());
    assert!(!run
        .all()
        .any(|e| matches!(e, ClientEvent::AuthRetrying { .. })));
}

#[test]
fn transient_auth_errors_are_retried_never_fatal() {
    for code in [13028, 10040, 11051] {
        let server = DeribitServer::plain().unwrap();
        server.fail_next_auths(2, code);
        let mut run = Run::start(&server, config(creds(), &[ORDERS]));
        run.until(10, "authenticated after retries", |r| {
            !r.restored().is_empty()
        });
        let retries: Vec<(Option<i64>, Duration)> = run
            .all()
            .filter_map(|e| match e {
                ClientEvent::AuthRetrying { code, delay, .. } => Some((*code, *delay)),
                _ => None,
            })
            .collect();
        assert_eq!(retries.len(), 2, "code {code}: {retries:?}");
        assert!(retries.iter().all(|(c, _)| *c == Some(code)));
        assert!(retries[1].1 > retries[0].1, "backoff grows: {retries:?}");
        let pos = |f: &dyn Fn(&ClientEvent) -> bool| run.all().position(f).unwrap();
        assert!(
            pos(&|e| matches!(e, ClientEvent::AuthRetrying { .. }))
                < pos(&|e| matches!(e, ClientEvent::Authenticated { .. }))
        );
        assert_eq!(run.restored(), vec![(strings(&[ORDERS]), 0)]);
        assert!(run.failed().is_none(), "code {code}");
        assert_eq!(server.auth_grants().len(), 3, "code {code}");
        assert_eq!(
            server.subscriptions(server.connections_accepted() - 1),
            [ORDERS]
        );
    }
}

#[test]
fn invalid_credentials_fail_without_a_retry_storm() {
    let server = DeribitServer::plain().unwrap();
    let proto = Deribit::with_credentials("test-client", "wrong").unwrap();
    let mut run = Run::start(&server, config(proto, &[ORDERS]));
    run.until(10, "failed", |r| r.failed().is_some());
    assert_eq!(run.failed(), Some(ExitReason::Fatal(Reason::AuthRejected)));
    let detail = run
        .all()
        .find_map(|e| match e {
            ClientEvent::Failed { detail, .. } => Some(detail.clone()),
            _ => None,
        })
        .unwrap();
    assert!(detail.contains("13004"), "{detail}");
    // Nothing more happens.
    run.run_for(Duration::from_millis(700));
    assert_eq!(server.connections_accepted(), 1);
    assert_eq!(server.auth_grants().len(), 1, "{:?}", server.auth_grants());
    assert_eq!(server.count_method("private/subscribe"), 0);
    assert!(!run.all().any(|e| matches!(
        e,
        ClientEvent::AuthRetrying { .. }
            | ClientEvent::Reconnecting { .. }
            | ClientEvent::Restarted { .. }
    )));
    assert!(run.sup.is_empty(), "not restarted");
}

#[test]
fn partial_subscription_rejection_reported_per_channel() {
    let server = DeribitServer::plain().unwrap();
    server.reject_channels(&[TRADES_RAW]);
    let channels = [BOOK_RAW, TRADES_RAW, TICKER_100, ORDERS];
    let mut run = Run::start(&server, config(creds(), &channels));
    run.until(10, "restored", |r| !r.restored().is_empty());
    assert_eq!(
        run.rejected(),
        vec![(TRADES_RAW.to_string(), Rejection::Refused { code: None })]
    );
    let (granted, rejected) = run.restored().remove(0);
    assert_eq!(rejected, 1);
    let on_server = server.subscriptions(0);
    assert_eq!(sorted(granted.clone()), sorted(on_server.clone()));
    assert_eq!(
        sorted(granted),
        sorted(strings(&[BOOK_RAW, TICKER_100, ORDERS]))
    );
    // The refused channel was asked for (and left out by the server).
    assert!(server.received().iter().any(|r| r.params["channels"]
        .as_array()
        .is_some_and(|a| a.iter().any(|c| c == TRADES_RAW))));
    // Data flows on the granted ones, not on the rejected one.
    let since = Instant::now();
    run.until(5, "data", |r| {
        let d = r.data_since(since);
        [BOOK_RAW, TICKER_100, ORDERS]
            .iter()
            .all(|c| d.get(*c).copied().unwrap_or(0) >= 2)
    });
    assert_eq!(run.data_since(since).get(TRADES_RAW), None);

    // After a reconnect: the same confirmation, the rejection reported again.
    server.kill_connections();
    run.until(10, "restored again", |r| r.restored().len() == 2);
    assert_eq!(run.rejected().len(), 2);
    let (granted, _) = run.restored().remove(1);
    assert_eq!(sorted(granted), sorted(server.subscriptions(1)));
}

#[test]
fn public_and_private_channels_in_separate_requests() {
    let server = DeribitServer::plain().unwrap();
    // Interleaved on purpose.
    let channels = [ORDERS, BOOK_RAW, USER_TRADES, TICKER_100, TRADES_RAW];
    let mut run = Run::start(&server, config(creds(), &channels));
    run.until(10, "restored", |r| !r.restored().is_empty());
    let (granted, rejected) = run.restored().remove(0);
    assert_eq!(rejected, 0);
    assert_eq!(sorted(granted), sorted(strings(&channels)));
    let subs: Vec<_> = server
        .received()
        .into_iter()
        .filter(|r| r.method.ends_with("/subscribe"))
        .collect();
    assert_eq!(subs.len(), 2, "{subs:?}");
    let mut asked = Vec::new();
    for r in &subs {
        let chs: Vec<String> = r.params["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        let private = chs.iter().filter(|c| c.starts_with("user.")).count();
        match r.method.as_str() {
            "public/subscribe" => assert_eq!(private, 0, "{r:?}"),
            "private/subscribe" => assert_eq!(private, chs.len(), "{r:?}"),
            m => panic!("{m}"),
        }
        asked.extend(chs);
    }
    assert_eq!(
        sorted(asked),
        sorted(strings(&channels)),
        "each channel once"
    );
}

#[test]
fn raw_channels_only_after_authentication() {
    let server = DeribitServer::plain().unwrap();
    assert!(server.options().raw_requires_auth);
    // Public-only: `.raw` and `user.*` are reported, never sent.
    let mut run = Run::start(
        &server,
        config(Deribit::public(), &[BOOK_RAW, BOOK_100, ORDERS]),
    );
    run.until(10, "restored", |r| !r.restored().is_empty());
    assert_eq!(
        sorted(
            run.rejected()
                .into_iter()
                .map(|(c, r)| format!("{c} {r:?}"))
                .collect()
        ),
        sorted(vec![
            format!("{BOOK_RAW} {:?}", Rejection::NeedsAuth),
            format!("{ORDERS} {:?}", Rejection::NeedsAuth),
        ])
    );
    assert_eq!(run.restored(), vec![(strings(&[BOOK_100]), 2)]);
    let received = server.received();
    assert!(!received.iter().any(|r| r.method == "public/auth"));
    for r in &received {
        let s = r.params.to_string();
        assert!(
            !s.contains(".raw"),
            "a .raw channel was sent unauthenticated: {r:?}"
        );
    }
    assert_eq!(server.subscriptions(0), [BOOK_100]);

    // Authenticated: the `.raw` subscribe goes out only after the auth answer.
    let server = DeribitServer::plain().unwrap();
    let mut run = Run::start(&server, config(creds(), &[BOOK_RAW]));
    run.until(10, "restored", |r| !r.restored().is_empty());
    assert_eq!(run.restored(), vec![(strings(&[BOOK_RAW]), 0)]);
    assert_eq!(server.methods_on(0), ["public/auth", "public/subscribe"]);
}

#[test]
fn cancel_on_disconnect_after_every_authentication() {
    let server = DeribitServer::plain().unwrap();
    let cfg = config(creds().cancel_on_disconnect(true), &[ORDERS]);
    let mut run = Run::start(&server, cfg);
    let cod_ok = |r: &Run| {
        r.count(|e| {
            matches!(
                e,
                ClientEvent::AfterAuth {
                    step: 0,
                    error: None,
                    ..
                }
            )
        })
    };
    run.until(10, "first session", |r| {
        cod_ok(r) == 1 && !r.restored().is_empty()
    });
    assert!(server.cod_enabled_on(0));
    assert_eq!(
        server.methods_on(0),
        [
            "public/auth",
            "private/enable_cancel_on_disconnect",
            "private/subscribe"
        ]
    );
    let cod_req = server
        .received()
        .into_iter()
        .find(|r| r.method == "private/enable_cancel_on_disconnect")
        .unwrap();
    assert_eq!(cod_req.params["scope"], "connection");

    // The server drops the connection: it cancels (cancel-on-disconnect in
    // force); the client reconnects and enables it again on the new one.
    server.kill_connections();
    run.until(10, "second session", |r| {
        cod_ok(r) == 2 && r.restored().len() == 2
    });
    assert_eq!(server.cancel_events(), [(0, "connection".to_string())]);
    assert!(server.cod_enabled_on(1));
    assert_eq!(
        server.methods_on(1),
        [
            "public/auth",
            "private/enable_cancel_on_disconnect",
            "private/subscribe"
        ]
    );

    // The client stops: that connection's end cancels too.
    run.sup.stop_client(run.id).unwrap();
    run.until(5, "stopped", |r| {
        r.all().any(|e| matches!(e, ClientEvent::Stopped { .. }))
    });
    assert!(server_wait(|| server.cancels_on_disconnect() == 2));
    assert_eq!(server.cancel_events()[1].0, 1);
}

/// Wait (bounded, 5 s) for a server-side condition.
fn server_wait(cond: impl Fn() -> bool) -> bool {
    zenws_tests::wait_until(Duration::from_secs(5), cond)
}

#[test]
fn too_many_requests_holds_the_reconnect_until_the_credits_refilled() {
    // The server's bucket: 10 credits, 5 per second (full again 2 s after
    // it emptied); `public/get_time` costs 4 there but 1 in the client's
    // bucket of the same shape — the two are out of step, so the server
    // answers 10028 and closes the session.
    let server = server_with(|o| {
        o.rate_limit = RateLimit {
            cost: 1,
            max_credits: 10,
            refill_per_sec: 5,
        };
        o.method_costs.insert("public/get_time".into(), 4);
    });
    let refill = Duration::from_secs(2);
    let mut cfg = config(creds(), &[]);
    cfg.connection.rate_limit = Some(ClientRateLimit::flat(5, 10));
    let mut run = Run::start(&server, cfg);
    run.until(10, "open", |r| {
        r.all()
            .any(|e| matches!(e, ClientEvent::Authenticated { .. }))
    });
    run.run_for(Duration::from_millis(50));
    for _ in 0..3 {
        run.request("public/get_time");
    }
    run.until(5, "rate limited", |r| {
        r.all()
            .any(|e| matches!(e, ClientEvent::RateLimited { code: 10028, .. }))
    });
    let limited_at = run
        .events
        .iter()
        .find(|(_, e)| matches!(e, ClientEvent::RateLimited { .. }))
        .unwrap()
        .0;
    // Until the reconnect: sends are refused, and the moment the server
    // sees the second connection is taken.
    let mut reconnected_at = None;
    run.until(10, "reconnected", |r| {
        if reconnected_at.is_none() && server.connections_accepted() >= 2 {
            reconnected_at = Some(Instant::now());
        }
        r.opened() >= 2
    });
    let waited = reconnected_at.unwrap() - limited_at;
    // Without the hold it would reconnect after ~50 ms (retry_delay).
    assert!(
        waited >= refill.mul_f64(0.75),
        "reconnected {waited:?} after the 10028; the bucket refills in {refill:?}"
    );
    assert_eq!(server.rate_limit_closes(), 1);
    // After the refill, the new session works: no second 10028.
    let rid = run.request("public/get_time");
    run.until(5, "answered", |r| r.resolved(rid));
    assert_eq!(server.rate_limit_closes(), 1);
    assert_eq!(
        run.count(|e| matches!(e, ClientEvent::RateLimited { .. })),
        1
    );
    assert!(run.failed().is_none());
}

#[test]
fn set_heartbeat_errors_are_reported_and_retried() {
    // heartbeat unit 10 ms: once set up, a test_request every 100 ms.
    let server = server_with(|o| o.heartbeat_unit = Duration::from_millis(10));
    server.fail_next_set_heartbeats(2, 11050);
    let mut cfg = config(creds(), &[ORDERS]);
    cfg.connection.heartbeat = HeartbeatConfig::deribit(10);
    let mut run = Run::start(&server, cfg);
    run.until(15, "heartbeat running", |_| {
        server.count_method("public/set_heartbeat") == 3 && server.count_method("public/test") >= 3
    });
    let codes: Vec<i64> = run
        .all()
        .filter_map(|e| match e {
            ClientEvent::HeartbeatSetupFailed { code, .. } => Some(*code),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [11050, 11050]);
    run.run_for(Duration::from_millis(300));
    assert_eq!(
        server.count_method("public/set_heartbeat"),
        3,
        "no more once it worked"
    );
    assert!(!run.all().any(|e| matches!(
        e,
        ClientEvent::HeartbeatFailed { .. } | ClientEvent::HeartbeatMissed { .. }
    )));
    assert_eq!(server.heartbeat_closes(), 0);
    assert_eq!(server.connections_accepted(), 1);
    assert_eq!(run.lost(), 0);
}

#[test]
fn user_request_ids_in_the_reserved_range_are_refused() {
    let server = DeribitServer::plain().unwrap();
    let mut run = Run::start(&server, config(creds(), &[]));
    run.until(10, "authenticated", |r| {
        r.all()
            .any(|e| matches!(e, ClientEvent::Authenticated { .. }))
    });
    for id in [
        9_000_000_000_000u64,
        9_000_000_000_001,
        18_446_744_073_709_551_615,
    ] {
        let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"public/test","params":{{}}}}"#);
        match run.sup.request(run.id, text) {
            Err(Error::Request(why)) => assert!(why.contains("reserved"), "{why}"),
            other => panic!("id {id}: {other:?}"),
        }
    }
    // Just below the range: accepted and answered.
    let id = 8_999_999_999_999u64;
    let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"public/test","params":{{}}}}"#);
    assert_eq!(run.sup.request(run.id, text).unwrap(), id);
    run.until(5, "answered", |r| r.resolved(id));
    // The refused ones never went out.
    let ids: Vec<_> = server
        .received()
        .into_iter()
        .filter(|r| r.method == "public/test")
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [serde_json::json!(id)]);
    // Ids the client hands out are below the range.
    let fresh = run.sup.next_request_id(run.id).unwrap();
    assert!(fresh < 9_000_000_000_000);
}

use zenws_tests::serde_json;

#[test]
fn jsonrpc_error_answers_reach_the_user_typed() {
    let server = DeribitServer::plain().unwrap();
    let mut run = Run::start(&server, config(Deribit::public(), &[]));
    run.until(10, "open", |r| r.opened() == 1);
    let a = run.request("public/no_such_method");
    let b = run.request("private/get_account_summary"); // unauthenticated: 13009
    let c = run.request("public/get_time");
    run.until(5, "answers", |r| {
        r.resolved(c) && r.count(|e| matches!(e, ClientEvent::RequestError { .. })) == 2
    });
    let errors: Vec<(u64, i64, String)> = run
        .all()
        .filter_map(|e| match e {
            ClientEvent::RequestError {
                request,
                code,
                message,
                ..
            } => Some((*request, *code, message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        errors,
        [
            (a, -32601, "Method not found".to_string()),
            (b, 13009, "unauthorized".to_string())
        ]
    );
    assert!(
        !run.resolved(a) && !run.resolved(b),
        "errors are not RequestResolved"
    );
    // The answers themselves are delivered too (just before).
    assert_eq!(run.error_messages(-32601), 1);
    assert_eq!(run.error_messages(13009), 1);
    assert!(run.failed().is_none());
}
