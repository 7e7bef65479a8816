//! The user-facing contract, in one place: exit codes, the documents people and pipelines
//! parse (plan, status, events) and their schema names. Anything here changes only with a
//! CHANGELOG entry; each document has a snapshot test, so a change in what users see is a
//! reviewed change.
//!
//! | what | type | schema |
//! |---|---|---|
//! | exit codes | [`exit`] (defined once, in the engine, which computes them) | README "Exit codes" |
//! | `plan --output json` | [`Plan`] | [`PLAN_SCHEMA`] |
//! | `status --output json` | [`status::StatusDoc`] | [`status::STATUS_SCHEMA`] |
//! | `--output json` events | [`Event`], [`EventRecord`] | [`EVENTS_SCHEMA`], `docs/events.md` |
//! | the checkpoint | [`Checkpoint`] | [`CHECKPOINT_SCHEMA_VERSION`] |
//! | `fleet run` checkpoint and events, `fleet plan`/`fleet status --output json` | [`fleet::FleetState`], [`fleet::FleetEvent`], [`fleet::FleetPlanDoc`], [`fleet::FleetStatusDoc`] | [`fleet::FLEET_STATE_SCHEMA`]… |
//! | `doctor --output json`, its exit codes | [`doctor::DoctorDoc`], [`doctor::DOCTOR_OK`]… | [`doctor::DOCTOR_SCHEMA`] |

pub use asm_canary_engine::checkpoint::SCHEMA_VERSION as CHECKPOINT_SCHEMA_VERSION;
pub use asm_canary_engine::exit;
pub use asm_canary_engine::{Checkpoint, EVENTS_SCHEMA, Event, EventRecord, Outcome};

pub mod doctor;
pub mod fleet;
pub mod status;
