//! Runnable zenws examples live in this package; see `examples/*.rs` and the README.

pub mod deribit_session;

/// The README's Rust snippets compile (and the runnable ones run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
