//! asm-canary: canary upgrades of the AKS managed Istio add-on, gated, checkpointed and resumable.
//!
//! ```text
//! main.rs ─▶ cli ─▶ engine (crates/engine) ─▶ steps ─▶ azure (ARM) / k8s / istio
//!              └──▶ ui (terminal, JSON Lines) ◀── engine events
//!              └──▶ sim (crates/sim): the simulated AKS cluster behind `demo` and `sim serve`
//! ```

#![forbid(unsafe_code)]

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
