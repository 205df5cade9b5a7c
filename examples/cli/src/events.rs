//! The JSON event lines on stderr, and the `RUST_LOG` logger.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use zenws_core::ExitReason;

/// `-q`: only error events are written.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Write only error events from now on (`-q`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// JSON string escaping (quotes included).
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One JSON line for stderr, built field by field.
pub struct JsonLine {
    line: String,
    error: bool,
}

impl JsonLine {
    /// A lifecycle event: not written under `-q`.
    pub fn new(event: &str) -> Self {
        let mut line = String::from("{\"event\":");
        json_str(&mut line, event);
        JsonLine { line, error: false }
    }

    /// An error event: written even under `-q`.
    pub fn error(event: &str) -> Self {
        JsonLine {
            error: true,
            ..JsonLine::new(event)
        }
    }

    pub fn str(mut self, k: &str, v: &str) -> Self {
        self.line.push(',');
        json_str(&mut self.line, k);
        self.line.push(':');
        json_str(&mut self.line, v);
        self
    }

    pub fn num(mut self, k: &str, v: u128) -> Self {
        self.line.push(',');
        json_str(&mut self.line, k);
        let _ = write!(self.line, ":{v}");
        self
    }

    pub fn detail(self, d: &str) -> Self {
        if d.is_empty() {
            self
        } else {
            self.str("detail", d)
        }
    }

    pub fn reason(self, e: zenws_core::Error) -> Self {
        self.str("reason", e.name()).str("message", &e.to_string())
    }

    pub fn exit_reason(self, r: &ExitReason) -> Self {
        let s = match r.error() {
            Some(e) => self.str("reason", e.name()),
            None => self.str("reason", "normal"),
        };
        let kind = match r {
            ExitReason::Normal => "normal",
            ExitReason::RetriesExhausted { .. } => "retries_exhausted",
            ExitReason::Fatal(_) => "fatal",
        };
        s.str("exit", kind).str("message", &r.to_string())
    }

    pub fn emit(mut self) {
        if !self.error && QUIET.load(Ordering::Relaxed) {
            return;
        }
        self.line.push_str("}\n");
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(self.line.as_bytes());
        let _ = err.flush();
    }
}

/// Logs to stderr, only when `RUST_LOG` is set (its value picks the level).
struct StderrLogger(log::LevelFilter);

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("[{} {}] {}", r.level(), r.target(), r.args());
        }
    }
    fn flush(&self) {}
}

pub fn init_logger() {
    let Ok(v) = std::env::var("RUST_LOG") else {
        return;
    };
    let level = v
        .to_ascii_lowercase()
        .parse()
        .unwrap_or(log::LevelFilter::Info);
    if log::set_boxed_logger(Box::new(StderrLogger(level))).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escaping() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd\u{1}✓");
        assert_eq!(s, r#""a\"b\\c\nd\u0001✓""#);
        let j = JsonLine::new("x").str("k", "v").num("n", 3).detail("");
        assert_eq!(j.line, r#"{"event":"x","k":"v","n":3"#);
    }
}
