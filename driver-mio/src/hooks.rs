//! How the session layer's steps become messages: authentication and
//! subscription requests are protocol-specific, so the user renders them.

use std::fmt;

/// Renders the session's on-open messages. Called on the driver thread after
/// every open (first connect, reconnect, restart).
pub trait SessionHooks: Send + Sync {
    /// The authentication request with JSON-RPC id `id`, or `None` to skip
    /// (then restoration starts at once). Its response (matched by `id`)
    /// decides: a JSON-RPC `error` fails the client with `AuthRejected`.
    fn authenticate(&self, id: u64) -> Option<String>;
    /// One subscribe request for `channels` with JSON-RPC id `id`.
    fn subscribe(&self, id: u64, channels: &[&str]) -> String;
}

/// Deribit's JSON-RPC session: `public/auth` with client credentials, and
/// `public/subscribe` (or `private/subscribe` when any channel is private,
/// i.e. `user.*`). Credentials never appear in `Debug` output.
#[derive(Clone)]
pub struct DeribitSession {
    /// `client_id`, or `None` for a public-only session.
    pub client_id: Option<String>,
    /// `client_secret`.
    pub client_secret: Option<String>,
}

impl fmt::Debug for DeribitSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeribitSession")
            .field("client_id", &self.client_id.as_ref().map(|_| "<redacted>"))
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// JSON string escaping for values we put in requests.
pub fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

impl SessionHooks for DeribitSession {
    fn authenticate(&self, id: u64) -> Option<String> {
        let (cid, secret) = (self.client_id.as_ref()?, self.client_secret.as_ref()?);
        Some(format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"public/auth","params":{{"grant_type":"client_credentials","client_id":"{}","client_secret":"{}"}}}}"#,
            json_escape(cid),
            json_escape(secret)
        ))
    }

    fn subscribe(&self, id: u64, channels: &[&str]) -> String {
        let private = channels.iter().any(|c| c.starts_with("user."));
        let list: Vec<String> = channels
            .iter()
            .map(|c| format!("\"{}\"", json_escape(c)))
            .collect();
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"{}/subscribe","params":{{"channels":[{}]}}}}"#,
            if private { "private" } else { "public" },
            list.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deribit_messages_and_redaction() {
        let s = DeribitSession {
            client_id: Some("id".into()),
            client_secret: Some("sec\"ret".into()),
        };
        let auth = s.authenticate(1).unwrap();
        assert!(auth.contains(r#""client_secret":"sec\"ret""#), "{auth}");
        // The field name `client_secret` is printed; its value never is.
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("ret\\\"") && !dbg.contains("\"id\"") && dbg.contains("<redacted>"),
            "{dbg}"
        );
        let sub = s.subscribe(
            2,
            &["book.BTC-PERPETUAL.raw", "user.orders.BTC-PERPETUAL.raw"],
        );
        assert!(sub.contains("private/subscribe"));
        assert!(s
            .subscribe(3, &["trades.BTC-PERPETUAL.raw"])
            .contains("public/subscribe"));
    }
}
