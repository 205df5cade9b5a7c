//! zenws-mio (work in progress)
#![deny(missing_docs)]

pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod event;
pub mod handle;
pub mod hooks;
pub mod resolve;
mod slot;
pub mod supervisor;
mod timers;
pub mod tls;
pub mod transport;
pub mod url;

pub use client::Client;
pub use clock::{Clock, ManualClock, MonotonicClock};
pub use config::ClientConfig;
pub use error::{ClientId, Error};
pub use event::{ClientEvent, Handler, Message};
pub use handle::Handle;
pub use hooks::{DeribitSession, SessionHooks};
pub use supervisor::ClientSupervisor;
pub use tls::TlsRoots;
pub use zenws_core as core;
