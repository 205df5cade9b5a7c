//! [`ClientId`]: how the driver names a client.

use std::fmt;

/// Identifies a client of a [`ClientSupervisor`](crate::ClientSupervisor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client#{}", self.0)
    }
}
