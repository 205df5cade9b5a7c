//! `Client`: one connection without a supervisor, driven by blocking calls.

use crate::config::ClientConfig;
use crate::error::Error;
use crate::event::ClientEvent;
use crate::id::ClientId;
use crate::message::Message;
use crate::supervisor::ClientSupervisor;
use std::collections::VecDeque;
use std::time::Duration;
use zenws_core::supervisor::RestartType;
use zenws_core::{Health, State};

/// One WebSocket connection with reconnects and heartbeats but no
/// supervisor restarts. Its loop runs inside its own calls (no thread):
/// [`Client::recv`] waits for the next event.
///
/// ```no_run
/// use zenws_mio::{Client, ClientConfig};
/// use std::time::Duration;
/// let mut client = Client::connect("ws://127.0.0.1:9001/", ClientConfig::default()).unwrap();
/// client.send_text("hello").unwrap();
/// if let Some(msg) = client.recv_message(Duration::from_secs(5)).unwrap() {
///     println!("{:?}", msg.as_text());
/// }
/// client.close().unwrap();
/// ```
pub struct Client {
    sup: ClientSupervisor,
    id: ClientId,
    backlog: VecDeque<ClientEvent>,
}

impl Client {
    /// Connect and wait until open (or until the connection fails for good:
    /// fatal error, retries exhausted).
    pub fn connect(url: &str, mut config: ClientConfig) -> Result<Client, Error> {
        config.restart = RestartType::Temporary;
        let mut sup = ClientSupervisor::new()?;
        let id = sup.start_client(url, config)?;
        let mut client = Client {
            sup,
            id,
            backlog: VecDeque::new(),
        };
        loop {
            client.sup.run_once(Some(Duration::from_millis(100)))?;
            while let Some(ev) = client.sup.poll_event() {
                match ev {
                    ClientEvent::Opened { .. } => {
                        client.backlog.push_back(ev);
                        return Ok(client);
                    }
                    ClientEvent::Failed { reason, detail, .. } => {
                        return Err(Error::Failed(reason, detail))
                    }
                    other => client.backlog.push_back(other),
                }
            }
        }
    }

    /// The id under which events are reported.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// Send text (refused with a typed error while not open).
    pub fn send_text(&mut self, text: impl Into<String>) -> Result<(), Error> {
        self.sup.send_text(self.id, text)
    }

    /// Send binary data.
    pub fn send_binary(&mut self, data: impl Into<bytes::Bytes>) -> Result<(), Error> {
        self.sup.send_binary(self.id, data)
    }

    /// Send a tracked JSON-RPC request; see [`ClientSupervisor::request`].
    pub fn request(&mut self, text: impl Into<String>) -> Result<u64, Error> {
        self.sup.request(self.id, text)
    }

    /// Next event, waiting at most `timeout`; `Ok(None)` on timeout.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<ClientEvent>, Error> {
        if let Some(ev) = self.backlog.pop_front() {
            return Ok(Some(ev));
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(ev) = self.sup.poll_event() {
                return Ok(Some(ev));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.sup.run_once(Some(left))?;
        }
    }

    /// Next data message, waiting at most `timeout` (lifecycle events in
    /// between are skipped; a final failure is returned as an error).
    pub fn recv_message(&mut self, timeout: Duration) -> Result<Option<Message>, Error> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.recv(left)? {
                Some(ClientEvent::Message { message, .. }) => return Ok(Some(message)),
                Some(ClientEvent::Failed { reason, detail, .. }) => {
                    return Err(Error::Failed(reason, detail))
                }
                Some(ClientEvent::Stopped { .. }) => return Ok(None),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    /// Close (1000) and wait for the close handshake (bounded by the close timeout).
    pub fn close(mut self) -> Result<(), Error> {
        self.sup.stop_client(self.id)?;
        while !self.sup.is_empty() {
            self.sup.run_once(Some(Duration::from_millis(100)))?;
            while self.sup.poll_event().is_some() {}
        }
        Ok(())
    }

    /// Heartbeat health.
    pub fn health(&self) -> Option<Health> {
        self.sup.health(self.id)
    }

    /// Lifecycle state (`None` once stopped or failed).
    pub fn state(&self) -> Option<State> {
        self.sup.state(self.id)
    }

    /// The supervisor underneath, for everything else.
    pub fn supervisor(&mut self) -> &mut ClientSupervisor {
        &mut self.sup
    }
}
