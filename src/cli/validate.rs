//! Refusals before a new run starts: input that can never succeed is bad input (exit 2), and
//! is refused before anything is written — no checkpoint, no lock, no cluster change.
//!
//! The refusals are the plan's ([`crate::steps::plan::refusals`]): `--to` older than (or
//! equal to) the installed revision, a `--to` that ARM does not offer, and a shared ConfigMap
//! the add-on's admission would reject when copied to the target (a server-side dry-run
//! create, so the real webhook decides), and a `--tag` nothing uses (without `--create-tag`).
//! Everything else (cluster not ready, mid-upgrade, …) is preflight's, with its own outcome. A
//! mesh no new run can start from (two revisions that no run owns, the add-on disabled) is
//! refused here too: waiting or resuming cannot help.

use super::error::CliError;
use crate::istio::Revision;
use crate::steps::Env;
use crate::steps::plan::{PlanError, TagRequest, decide, refusals_of};

/// What the check before a new run found.
#[derive(Debug, PartialEq, Eq)]
pub enum NewRun {
    /// Preflight decides the rest.
    Go,
    /// `--skip-if-not-ready` and the cluster is not ready or nothing is offered: why.
    Skip(String),
}

/// Refuses a new upgrade that cannot succeed; with `skip_if_not_ready`, a cluster that is
/// busy, failed or offers no upgrade is [`NewRun::Skip`] instead (a pipeline on a schedule
/// tries again later). `tag`: the tag of a tag-mode run (`None` in label mode).
pub async fn validate_new_run(
    env: &Env,
    to: Option<&str>,
    tag: Option<&TagRequest>,
    skip_if_not_ready: bool,
) -> Result<NewRun, CliError> {
    let to = to
        .map(str::parse::<Revision>)
        .transpose()
        .map_err(|e| CliError::bad_because(format!("--to: {e}"), e))?;
    let decisions = match decide(env, to, false).await {
        Ok(d) => d,
        // An installed revision that is not asm-X-Y: get-upgrades fails on it in the run.
        Err(PlanError::InstalledRevision { .. }) => return Ok(NewRun::Go),
        Err(e) => return Err(CliError::connect(e.to_string(), e)),
    };
    if skip_if_not_ready && let Some(why) = decisions.not_ready() {
        return Ok(NewRun::Skip(why));
    }
    match refusals_of(&decisions, env, tag).await {
        Ok(found) => match found.into_iter().next() {
            Some(refusal) => Err(CliError::bad(format!("{refusal}; nothing was changed"))),
            None => Ok(NewRun::Go),
        },
        Err(e) => Err(CliError::connect(e.to_string(), e)),
    }
}
