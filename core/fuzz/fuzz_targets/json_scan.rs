//! Feeds arbitrary bytes to the JSON-RPC scanner and the Deribit cost function.
//! Neither may panic, loop or read out of bounds; extracted strings must
//! borrow from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zenws_core::json::scan;
use zenws_core::ratelimit::{deribit_cost, DERIBIT_REQUEST_COST};

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
    }
    assert_eq!(deribit_cost(data), DERIBIT_REQUEST_COST);
});
