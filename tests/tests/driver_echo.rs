//! The mio driver against real loopback servers: echo, many clients, reconnects.

mod common;

use common::{echoed, opened, quiet, run_until};

use std::time::{Duration, Instant};

use zenws_mio::{ClientEvent, ClientId, ClientSupervisor};
use zenws_tests::{EchoOptions, EchoServer, TestPki};

#[test]
fn plain_echo_and_custom_header() {
    let server = EchoServer::plain().unwrap();
    let mut sup = ClientSupervisor::new().unwrap();
    let id = sup
        .start_client(
            &server.url_with_path("/feed?x=1"),
            quiet().header("Authorization", "Bearer t0k"),
        )
        .unwrap();
    run_until(&mut sup, 10, |_, ev| opened(ev, id) == 1);
    sup.send_text(id, "hello").unwrap();
    sup.send_binary(id, vec![1u8, 2, 3]).unwrap();
    run_until(&mut sup, 10, |_, ev| echoed(ev, id, "hello"));
    assert_eq!(
        server.last_request_header("authorization").as_deref(),
        Some("Bearer t0k")
    );
    assert_eq!(server.last_request_path().as_deref(), Some("/feed?x=1"));
    sup.stop_client(id).unwrap();
    let ev = run_until(&mut sup, 10, |s, _| s.is_empty());
    assert!(
        ev.iter().any(|e| matches!(e, ClientEvent::Stopped { .. })),
        "{ev:?}"
    );
}

#[test]
fn tls_echo_with_generated_ca() {
    let pki = TestPki::generate();
    let server = EchoServer::start(EchoOptions::tls(pki.server_config())).unwrap();
    let ca = pki.write_ca_temp_file().unwrap();
    let mut sup = ClientSupervisor::new().unwrap();
    let id = sup
        .start_client(&server.url(), quiet().ca_file(&ca))
        .unwrap();
    run_until(&mut sup, 10, |_, ev| opened(ev, id) == 1);
    sup.send_text(id, "secure").unwrap();
    run_until(&mut sup, 10, |_, ev| echoed(ev, id, "secure"));
}

#[test]
fn hundred_clients_echo_then_reconnect_after_server_kill() {
    let server = EchoServer::plain().unwrap();
    let mut sup = ClientSupervisor::new().unwrap();
    let mut cfg = quiet();
    cfg.connection.retry.retry_delay = Duration::from_millis(50);
    let ids: Vec<ClientId> = (0..120)
        .map(|_| sup.start_client(&server.url(), cfg.clone()).unwrap())
        .collect();
    run_until(&mut sup, 20, |_, ev| {
        ids.iter().all(|&id| opened(ev, id) == 1)
    });
    for &id in &ids {
        sup.send_text(id, format!("m{}", id.0)).unwrap();
    }
    run_until(&mut sup, 20, |_, ev| {
        ids.iter().all(|&id| echoed(ev, id, &format!("m{}", id.0)))
    });
    server.kill_connections();
    // Each client notices the dead socket, reconnects and echoes again.
    run_until(&mut sup, 30, |_, ev| {
        ids.iter().all(|&id| opened(ev, id) == 1)
    });
    for &id in &ids {
        sup.send_text(id, format!("again{}", id.0)).unwrap();
    }
    run_until(&mut sup, 20, |_, ev| {
        ids.iter()
            .all(|&id| echoed(ev, id, &format!("again{}", id.0)))
    });
    assert!(ids
        .iter()
        .all(|&id| sup.metrics(id).unwrap().reconnects >= 1));
}

#[test]
fn handler_answers_each_echo_within_the_turn() {
    // `run_turn` (and so `run`) hands each event to the handler as soon as
    // its socket was read; the handler's sends go out in the same turn and
    // nothing is left queued. 20 clients each bounce a counter 50 times;
    // every echo must come back, in order.
    let server = EchoServer::plain().unwrap();
    let mut sup = ClientSupervisor::new().unwrap();
    let ids: Vec<ClientId> = (0..20)
        .map(|_| sup.start_client(&server.url(), quiet()).unwrap())
        .collect();
    let mut rounds = vec![0u32; ids.len()];
    let deadline = Instant::now() + Duration::from_secs(20);
    while rounds.iter().any(|&r| r < 50) {
        assert!(Instant::now() < deadline, "rounds so far: {rounds:?}");
        let mut handler = |sup: &mut ClientSupervisor, ev: ClientEvent| match ev {
            ClientEvent::Opened { id } => sup.send_text(id, "0").unwrap(),
            ClientEvent::Message { id, message } => {
                let i = ids.iter().position(|&x| x == id).unwrap();
                assert_eq!(message.as_text(), Some(rounds[i].to_string().as_str()));
                rounds[i] += 1;
                if rounds[i] < 50 {
                    sup.send_text(id, rounds[i].to_string()).unwrap();
                }
            }
            _ => {}
        };
        sup.run_turn(Some(Duration::from_millis(50)), &mut handler)
            .unwrap();
        assert!(sup.poll_event().is_none(), "run_turn left an event queued");
    }
}
