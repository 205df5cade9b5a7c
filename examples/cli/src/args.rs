//! Command-line arguments (clap derive) and their translation into the
//! client and supervisor configurations.
//!
//! Values that may carry credentials (header values, the URL's query and
//! userinfo) are checked here, after clap has parsed them, so that no error
//! message ever repeats them.

use crate::usage_error;
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;
use zenws_core::retry::RetryCount;
use zenws_core::supervisor::SupervisorConfig;
use zenws_core::HeartbeatConfig;
use zenws_mio::{ClientConfig, TlsRoots};

const ABOUT: &str = "\
A WebSocket client that stays connected (heartbeats, retries, supervisor restarts)

Sends each stdin line as a text message (-b: as a binary message). Stdin is read
once the first connection is open; a line read while disconnected is not sent
(a send_failed event says why). Prints each received message to stdout, one per
line (binary as hex; -b: the raw bytes, then '\\n'). Prints lifecycle events to
stderr as JSON lines with an \"event\" field (-q: only failed, budget_exhausted
and send_failed). On stdin EOF: closes with code 1000, prints what arrives until
the close completes, exits 0 (-n: keeps running until the peer closes with a
close frame, --max-messages is reached or a signal ends the process).";

const AFTER: &str = "\
EXIT CODES:
    0  normal end (stdin EOF, peer close with -n, --max-messages or -1 reached)
    2  bad usage or URL
    3  fatal: TLS rejected, upgrade refused, restart budget exhausted, client failed

Set RUST_LOG=debug (or error|warn|info|trace) for driver logs on stderr.";

/// `zenws [OPTIONS] <URL>`: see `--help`.
#[derive(Parser, Debug)]
#[command(
    name = "zenws",
    version,
    about = ABOUT,
    after_help = AFTER
)]
pub struct Cli {
    // (help text as attributes: brackets in doc comments read as rustdoc links)
    #[arg(value_name = "URL", help = "ws://host[:port]/path or wss://...")]
    pub url: String,

    /// At stdin EOF keep running until the peer closes, --max-messages or a signal
    #[arg(short = 'n', long)]
    pub no_close: bool,

    /// Send stdin lines as binary messages; print received binary raw
    #[arg(short = 'b', long)]
    pub binary: bool,

    /// Send stdin lines as text messages (the default)
    #[arg(short = 't', long, conflicts_with = "binary")]
    pub text: bool,

    /// Send one line, print one message, then close and exit 0 (implies -n)
    #[arg(short = '1', long)]
    pub one_message: bool,

    /// Exit 0 after N messages were received
    #[arg(long, visible_alias = "count", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_messages: Option<u64>,

    /// No JSON events on stderr but errors
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Extra upgrade header 'Name: value' (repeatable)
    #[arg(short = 'H', long = "header", value_name = "'K: V'")]
    pub headers: Vec<String>,

    /// Trust the CA certificates in this PEM file (wss://)
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// TCP + TLS + upgrade deadline, milliseconds
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub connect_timeout: u64,

    /// Retries per outage after the first failed attempt; 0 = never retry
    #[arg(long, value_name = "N|inf", default_value = "3", value_parser = parse_retry_count)]
    pub retry_count: RetryCount,

    /// First retry delay, milliseconds
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub retry_delay: u64,

    /// Retry delay ceiling, milliseconds
    #[arg(long, value_name = "MS", default_value_t = 30000)]
    pub max_backoff: u64,

    /// Supervisor restart budget ...
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_restarts: u32,

    /// ... within this window, seconds
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub restart_window: u64,

    #[arg(
        long,
        value_name = "SPEC",
        default_value = "ping:15000:10000",
        value_parser = parse_heartbeat,
        help = "none | ping:INTERVAL_MS[:TIMEOUT_MS] | deribit:INTERVAL_S"
    )]
    pub heartbeat: HeartbeatConfig,

    /// Consecutive heartbeat misses that declare the peer dead
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub heartbeat_threshold: u32,
}

/// What the run loop needs, validated.
pub struct Options {
    pub url: String,
    pub config: ClientConfig,
    pub supervisor: SupervisorConfig,
    /// Exit 0 after this many received messages (`--max-messages`, `-1`).
    pub max_messages: Option<u64>,
    /// Stdin EOF does not close (`-n`, `-1`).
    pub no_close: bool,
    /// Send at most one line (`-1`).
    pub one_message: bool,
    /// Stdin lines go out as binary messages; binary is printed raw (`-b`).
    pub binary: bool,
    /// Only error events on stderr (`-q`).
    pub quiet: bool,
}

fn parse_retry_count(v: &str) -> Result<RetryCount, String> {
    if v == "inf" {
        return Ok(RetryCount::Infinite);
    }
    v.parse()
        .map(RetryCount::Limited)
        .map_err(|_| "expected a non-negative integer or inf".to_string())
}

fn parse_heartbeat(v: &str) -> Result<HeartbeatConfig, String> {
    let bad = || "expected none, ping:INTERVAL_MS[:TIMEOUT_MS] or deribit:INTERVAL_S".to_string();
    let ms = |s: &str| match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_millis(n)),
        _ => Err(bad()),
    };
    let parts: Vec<&str> = v.split(':').collect();
    match parts.as_slice() {
        ["none"] => Ok(HeartbeatConfig::none()),
        ["ping", i] => Ok(HeartbeatConfig::ping(ms(i)?, ms(i)?)),
        ["ping", i, t] => Ok(HeartbeatConfig::ping(ms(i)?, ms(t)?)),
        ["deribit", s] => match s.parse::<u32>() {
            Ok(n) if n > 0 => Ok(HeartbeatConfig::deribit(n)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// One `--header` value as (name, value). Never echoes the value: it may be a credential.
fn parse_header(h: &str) -> (String, String) {
    let (k, v) = h
        .split_once(':')
        .unwrap_or_else(|| usage_error("--header: expected 'Name: value' (no ':' found)"));
    let k = k.trim();
    if k.is_empty() || k.contains(char::is_whitespace) {
        usage_error(format_args!("--header: bad header name {k:?}"));
    }
    if v.contains(['\r', '\n', '\0']) {
        usage_error(format_args!(
            "--header: the value of {k:?} contains a control character"
        ));
    }
    (k.to_string(), v.trim().to_string())
}

impl Cli {
    /// Parse `std::env::args`; `--help`/`--version` print and exit 0, usage
    /// errors print `zenws: ...` and exit 2.
    pub fn parse_or_exit() -> Cli {
        match Cli::try_parse() {
            Ok(cli) => cli,
            Err(e) => {
                use clap::error::ErrorKind;
                if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                    let _ = e.print();
                    std::process::exit(0);
                }
                // clap's own text, which ends with its `--help` hint.
                let msg = e.render().to_string();
                eprintln!(
                    "zenws: {}",
                    msg.trim_end().strip_prefix("error: ").unwrap_or(&msg)
                );
                std::process::exit(2)
            }
        }
    }

    /// The configurations of the run.
    pub fn into_options(self) -> Options {
        let mut config = ClientConfig::default();
        for h in &self.headers {
            config.headers.push(parse_header(h));
        }
        if let Some(ca) = self.ca_file {
            config.tls = TlsRoots::CaFile(ca);
        }
        let c = &mut config.connection;
        c.connect_timeout = Duration::from_millis(self.connect_timeout);
        c.retry.retry_count = self.retry_count;
        c.retry.retry_delay = Duration::from_millis(self.retry_delay);
        c.retry.max_backoff = Duration::from_millis(self.max_backoff).max(c.retry.retry_delay);
        c.heartbeat = self.heartbeat;
        c.heartbeat.failure_threshold = self.heartbeat_threshold;
        let mut supervisor = SupervisorConfig::default();
        supervisor.intensity.max_restarts = self.max_restarts;
        supervisor.intensity.max_seconds = Duration::from_secs(self.restart_window);
        let max_messages = if self.one_message {
            Some(1)
        } else {
            self.max_messages
        };
        Options {
            url: self.url,
            config,
            supervisor,
            max_messages,
            no_close: self.no_close || self.one_message,
            one_message: self.one_message,
            binary: self.binary,
            quiet: self.quiet,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("zenws").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn short_and_long_flags() {
        let c = parse(&["-n", "-b", "-q", "-H", "A: b", "--header=C:d", "ws://h/"]).unwrap();
        assert!(c.no_close && c.binary && c.quiet);
        assert_eq!(c.headers, ["A: b", "C:d"]);
        let o = parse(&["-1", "ws://h/"]).unwrap().into_options();
        assert_eq!(o.max_messages, Some(1));
        assert!(o.no_close && o.one_message);
        let o = parse(&["--count", "4", "--", "ws://h/"])
            .unwrap()
            .into_options();
        assert_eq!(o.max_messages, Some(4));
        assert!(!o.no_close);
        assert!(parse(&["--max-messages", "0", "ws://h/"]).is_err());
        assert!(parse(&["-b", "-t", "ws://h/"]).is_err());
    }

    #[test]
    fn values() {
        let o = parse(&[
            "--retry-count=inf",
            "--retry-delay",
            "500",
            "--max-backoff",
            "100",
            "--heartbeat",
            "ping:100:50",
            "--heartbeat-threshold",
            "3",
            "--max-restarts",
            "4",
            "--restart-window",
            "9",
            "wss://h/",
        ])
        .unwrap()
        .into_options();
        let c = &o.config.connection;
        assert_eq!(c.retry.retry_count, RetryCount::Infinite);
        assert_eq!(c.retry.max_backoff, Duration::from_millis(500));
        assert_eq!(c.heartbeat.failure_threshold, 3);
        assert_eq!(o.supervisor.intensity.max_restarts, 4);
        assert_eq!(o.supervisor.intensity.max_seconds, Duration::from_secs(9));
        for bad in [
            &["--retry-count", "many", "ws://h/"][..],
            &["--heartbeat", "ping:", "ws://h/"],
            &["--heartbeat", "deribit:0", "ws://h/"],
            &["--heartbeat-threshold", "0", "ws://h/"],
            &["--restart-window", "0", "ws://h/"],
            &["ws://a/", "ws://b/"],
            &[],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
