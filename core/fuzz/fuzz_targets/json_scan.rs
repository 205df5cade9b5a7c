//! Feeds arbitrary bytes to the JSON-RPC scanner, the exchange protocols'
//! answer readers (auth answers, subscribe results) and the Deribit cost
//! function.
//! Neither may panic, loop or read out of bounds; extracted strings must
//! borrow from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zenws_core::exchange::deribit::{cost, Deribit, REQUEST_COST, SUBSCRIBE_COST};
use zenws_core::exchange::{binance::Binance, result_lists, Protocol};
use zenws_core::json::{self, scan};

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = scan(data) {
        let range = data.as_ptr_range();
        for s in [view.method, view.params_type, view.params_channel]
            .into_iter()
            .flatten()
        {
            assert!(range.contains(&s.as_ptr()));
        }
        let _ = view.is_deribit_test_request();
        if let Some(result) = view.result {
            let a = Deribit::public().auth_answer(result);
            if let Some(t) = a.refresh_token {
                assert!(range.contains(&t.as_ptr()) || t.is_empty());
            }
            let _ = json::strings(result, |s| assert!(range.contains(&s.as_ptr()) || s.is_empty()));
        }
        let _ = result_lists(&view, "x.1.100ms");
        let _ = Deribit::public().granted(&view, "user.a");
        let _ = Binance.granted(&view, "btcusdt@trade");
    }
    let c = cost(data);
    assert!(
        matches!(c, [0, 1, 0] | [0, 0, SUBSCRIBE_COST] | [REQUEST_COST, 0, 0]),
        "cost {c:?}"
    );
});
