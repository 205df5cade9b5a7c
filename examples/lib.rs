//! Runnable zenws examples live in this package; see `examples/*.rs` and the README.

pub mod deribit_session;
