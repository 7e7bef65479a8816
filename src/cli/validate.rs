//! Refusals before a new run starts: input that can never succeed is bad input (exit 2), and
//! is refused before anything is written — no checkpoint, no lock, no cluster change.
//!
//! The refusals are the plan's ([`crate::steps::plan::refusals`]): `--to` older than (or
//! equal to) the installed revision, a `--to` that ARM does not offer, and a shared ConfigMap
//! the add-on's admission would reject when copied to the target (a server-side dry-run
//! create, so the real webhook decides). Everything else (cluster not ready, mid-upgrade, …)
//! is preflight's, with its own outcome.

use super::error::CliError;
use crate::istio::Revision;
use crate::steps::Env;
use crate::steps::plan::{PlanError, refusals};
use crate::steps::tag::mode_of;
use crate::steps::traps::TrapRequest;

/// Refuses a new upgrade that cannot succeed; `Ok` when preflight should decide.
pub async fn validate_new_run(env: &Env, to: Option<&str>) -> Result<(), CliError> {
    let to = to
        .map(str::parse::<Revision>)
        .transpose()
        .map_err(|e| CliError::bad_because(format!("--to: {e}"), e))?;
    match refusals(env, to).await {
        Ok(found) => match found.into_iter().next() {
            Some(refusal) => Err(CliError::bad(format!("{refusal}; nothing was changed"))),
            None => Ok(()),
        },
        // An installed revision that is not asm-X-Y: get-upgrades fails on it in the run.
        Err(PlanError::InstalledRevision { .. }) => Ok(()),
        Err(e) => Err(CliError::connect(e.to_string(), e)),
    }
}

/// Refuses a new upgrade whose namespaces hold what would block `complete` later (paused
/// Deployments, `OnDelete` workloads without `--restart-ondelete`, namespaces labelled with
/// the source revision in tag mode): exit 2 before anything is written. `Ok` when there is
/// no upgrade to check (preflight decides).
pub async fn validate_traps(
    env: &Env,
    upgrade: &super::request::UpgradeOptions,
) -> Result<(), CliError> {
    let to = upgrade
        .to
        .as_deref()
        .map(str::parse::<Revision>)
        .transpose()
        .map_err(|e| CliError::bad_because(format!("--to: {e}"), e))?;
    let decisions = match crate::steps::plan::decide(env, to, false).await {
        Ok(d) => d,
        Err(PlanError::InstalledRevision { .. }) => return Ok(()),
        Err(e) => return Err(CliError::connect(e.to_string(), e)),
    };
    let Some((source, Ok(target))) = decisions
        .upgrade
        .as_ref()
        .map(|u| (u.source.as_str(), u.choice.target.as_ref()))
    else {
        return Ok(());
    };
    let target = target.to_string();
    let req = TrapRequest {
        mode: mode_of(Some(upgrade.mode.clone())).map_err(|e| CliError::bad(e.to_string()))?,
        tag: &upgrade.tag,
        source,
        target: &target,
        restart_ondelete: upgrade.restart_ondelete,
    };
    match crate::steps::traps::refusals(env, &req).await {
        Ok(found) => match found.into_iter().next() {
            Some(refusal) => Err(CliError::bad(format!("{refusal}; nothing was changed"))),
            None => Ok(()),
        },
        Err(e) => Err(CliError::connect(
            "cannot read the namespaces to migrate",
            e,
        )),
    }
}
