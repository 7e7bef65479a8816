//! Renderers fed by engine events: the terminal (indicatif progress, or plain lines when stderr
//! is not a terminal) and JSON Lines (`--output json`). Both implement the engine's
//! [`EventSink`]; the event types and the JSON schema live in the engine
//! (`asm_canary_engine::events`, documented in `docs/events.md`).
//!
//! ```text
//! Executor ──EventRecord──▶ FanOut ─┬─▶ JsonLines (stdout, one object per line)
//!                                   └─▶ Terminal  (stderr: bars and spinners, or plain lines)
//! ```

pub mod json;
pub mod terminal;
pub mod text;

use std::sync::Arc;

use asm_canary_engine::{EventSink, FanOut};

pub use json::JsonLines;
pub use terminal::{Terminal, TerminalApprover};

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Human-readable progress on stderr.
    #[default]
    Text,
    /// JSON Lines on stdout; plain human-readable lines on stderr.
    Json,
}

/// The sink for a command's events: the terminal renderer on stderr, plus JSON Lines on stdout
/// with `--output json`. `state_hint` (the `--state` path) is named in the final sentence.
pub fn sink_for(format: OutputFormat, state_hint: Option<String>) -> Arc<dyn EventSink> {
    match format {
        OutputFormat::Text => Arc::new(Terminal::stderr(state_hint)),
        OutputFormat::Json => Arc::new(FanOut(vec![
            Arc::new(JsonLines::stdout()),
            Arc::new(Terminal::plain_stderr(state_hint)),
        ])),
    }
}
