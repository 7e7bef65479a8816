//! asm-canary: canary upgrades of the AKS managed Istio add-on, gated, checkpointed and resumable.
//!
//! ```text
//! main.rs ─▶ cli ─▶ engine (crates/engine) ─▶ steps ─▶ azure (ARM) / k8s / istio
//!              └──▶ ui (terminal, JSON Lines) ◀── engine events
//!              └──▶ sim (crates/sim): the simulated AKS cluster behind `demo` and `sim serve`
//! ```

#![forbid(unsafe_code)]
// Lines to stderr go through `say!`: `eprintln!` panics when stderr is closed.
#![deny(clippy::print_stderr)]

/// A line on stderr, as `eprintln!` writes it, but a closed or full stderr (`2>&1 | head`) is
/// ignored: `eprintln!` panics there, which in the middle of a run left a cluster's upgrade
/// half done. Every human-facing line of the tool goes through it.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// [`say!`] without the newline (a prompt).
#[macro_export]
macro_rules! say_part {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut err = std::io::stderr();
        let _ = write!(err, $($arg)*);
        let _ = err.flush();
    }};
}

pub mod analysis;
pub mod azure;
pub mod cli;
pub mod contract;
pub mod doctor;
pub mod fleet;
pub mod istio;
pub mod k8s;
pub mod report;
pub mod steps;
pub mod tls;
pub mod ui;
