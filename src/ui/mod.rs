//! Renderers fed by engine events: the terminal (indicatif progress, or plain lines when stderr
//! is not a terminal) and JSON Lines (`--output json`). Both implement the engine's
//! [`EventSink`]; the event types and the JSON schema live in the engine
//! (`asm_canary_engine::events`, documented in `docs/events.md`).
//!
//! ```text
//! Executor ──EventRecord──▶ FanOut ─┬─▶ JsonLines (stdout, one object per line)
//!                                   └─▶ Terminal  (stderr: bars and spinners, or plain lines)
//! ```

pub mod fleet;
pub mod json;
pub mod terminal;
pub mod text;

pub use json::JsonLines;
pub use terminal::{Terminal, TerminalApprover, TerminalDecider};
