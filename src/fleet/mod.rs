//! Fleets: every AKS cluster of an organisation, upgraded in rings.
//!
//! This module owns the fleet file and the decisions that need no network: which clusters the
//! file names, which stage each one belongs to, how many run at once, and the CI pipeline that
//! runs the stages elsewhere. Discovery (ARM's list of managed clusters) and running the
//! upgrades live outside it; they hand [`Member`]s in and take [`Rings`] out.
//!
//! ```text
//! fleet.yaml ──▶ FleetFile::load ──▶ FleetFile ─┐
//!                                                ├─▶ assign ──▶ Rings ──▶ pipeline::render ──▶ YAML
//! ARM list / --clusters FILE ──▶ [Member] ──────┘                  └──▶ fleet plan / run (cli)
//! ```

mod assign;
mod file;
pub mod pipeline;
pub mod report;
pub mod schedule;
pub mod verdict;

pub use assign::{AssignError, Member, Ring, Rings, assign, members_of};
pub use file::{
    APPROVABLE_STEPS, Concurrency, FLEET_API_VERSION, FleetError, FleetFile, Selector, Source,
    Stage, Target, UpgradeSettings,
};
