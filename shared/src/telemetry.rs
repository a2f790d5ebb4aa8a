//! Structured logs for every process: human-readable on a terminal, JSON lines
//! otherwise (`EBB_LOG_FORMAT=json|text` overrides), filtered by `EBB_LOG`
//! (`ebb_worker=debug,info` style directives; the default is `info` for
//! long-running processes and `warn` for one-shot commands).

use std::io::IsTerminal;
use tracing_subscriber::{fmt, EnvFilter};

pub fn init_logging(default_level: &str) {
    let filter = EnvFilter::try_from_env("EBB_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let json = match std::env::var("EBB_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = if json {
        builder.json().with_current_span(false).try_init()
    } else {
        builder.compact().try_init()
    };
    // A second init (tests, embedded use) keeps the first subscriber.
    let _ = result;
}
