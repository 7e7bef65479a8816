//! Refusals before a new run starts: input that can never succeed is bad input (exit 2), and
//! is refused before anything is written — no checkpoint, no lock, no cluster change.
//!
//! The refusals are the plan's ([`crate::steps::plan::refusals`]): `--to` older than (or
//! equal to) the installed revision, a `--to` that ARM does not offer, and a shared ConfigMap
//! the add-on's admission would reject when copied to the target (a server-side dry-run
//! create, so the real webhook decides), a `--tag` nothing uses (without `--create-tag`), and
//! `--canary-namespaces` naming a namespace the run would not migrate.
//! Everything else (cluster not ready, mid-upgrade, …) is preflight's, with its own outcome. A
//! mesh no new run can start from (two revisions that no run owns, the add-on disabled) is
//! refused here too: waiting or resuming cannot help.

use super::error::CliError;
use super::request::UpgradeOptions;
use crate::istio::Revision;
use crate::steps::Env;
use crate::steps::plan::{Decisions, PlanError, RunClass, decide, refusals_of};
use crate::steps::tag::mode_of;
use crate::steps::traps::TrapRequest;

/// What the check before a new run found.
#[derive(Debug, PartialEq, Eq)]
pub enum NewRun {
    /// Preflight decides the rest.
    Go,
    /// `--skip-if-not-ready` and the cluster is not ready or nothing is offered: why.
    Skip(String),
}

/// Refuses a new upgrade that cannot succeed — the plan's refusals, then what would block
/// `complete` later (see [`traps`]); with `skip_if_not_ready`, a cluster that is busy,
/// failed or offers no upgrade is [`NewRun::Skip`] instead (a pipeline on a schedule tries
/// again later). The cluster is read once.
pub async fn validate_new_run(
    env: &Env,
    upgrade: &UpgradeOptions,
    skip_if_not_ready: bool,
) -> Result<NewRun, CliError> {
    let to = (upgrade.to.as_deref())
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
    let tag = upgrade.tag_request();
    let found = refusals_of(&decisions, env, tag.as_ref())
        .await
        .map_err(|e| CliError::connect(e.to_string(), e))?;
    if let Some(refusal) = found.into_iter().next() {
        return Err(CliError::bad(format!("{refusal}; nothing was changed")));
    }
    traps(env, upgrade, &decisions).await?;
    unknown_canaries(env, upgrade, &decisions).await?;
    Ok(NewRun::Go)
}

/// [`unknown_canaries`] on its own, for a run that skips the other refusals (`demo`, whose
/// scenarios show traps on purpose). A cluster that cannot be read is preflight's to report.
pub async fn refuse_unknown_canaries(env: &Env, upgrade: &UpgradeOptions) -> Result<(), CliError> {
    let to = (upgrade.to.as_deref()).and_then(|t| t.parse::<Revision>().ok());
    match decide(env, to, false).await {
        Ok(decisions) => unknown_canaries(env, upgrade, &decisions).await,
        Err(_) => Ok(()),
    }
}

/// Refuses a new upgrade whose `--canary-namespaces` name a namespace it would not migrate
/// (a typo, or a namespace on another revision): the canary step would otherwise warn and
/// choose another canary after the control plane was installed. Only a fresh upgrade: a
/// canary resumed from the cluster has its namespaces relabelled already.
async fn unknown_canaries(
    env: &Env,
    upgrade: &UpgradeOptions,
    decisions: &Decisions,
) -> Result<(), CliError> {
    let (Some(u), RunClass::Upgrade) = (&decisions.upgrade, decisions.class()) else {
        return Ok(());
    };
    // as the runbook reads it: a list, or a comma-separated `--param` string
    let requested: Vec<String> = upgrade
        .params()?
        .get("canary_namespaces")
        .and_then(|v| asm_canary_engine::ParamType::StringList.coerce(v).ok())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let mode = mode_of(Some(upgrade.mode.clone())).map_err(|e| CliError::bad(e.to_string()))?;
    let label = crate::steps::restart::label_before(mode, &upgrade.tag, &u.source);
    match crate::steps::restart::unknown_canaries(env, &label, &requested).await {
        Ok(None) => Ok(()),
        Ok(Some(why)) => Err(CliError::bad(format!(
            "{why}; nothing was changed: name one of them, or leave --canary-namespaces out to let the run choose"
        ))),
        Err(e) => Err(CliError::connect(
            "cannot read the namespaces to migrate",
            e,
        )),
    }
}

/// Refuses a new run whose namespaces hold what would block `complete` later (paused
/// Deployments, `OnDelete` workloads without `--restart-ondelete`, namespaces labelled with
/// the source revision in tag mode): exit 2 before anything is written. An upgrade, a canary
/// resumed from the cluster and a stale canary consolidated are all checked (see
/// [`Decisions::migration`]); `Ok` when there is nothing to check (preflight decides).
async fn traps(env: &Env, upgrade: &UpgradeOptions, decisions: &Decisions) -> Result<(), CliError> {
    let Some((source, target)) = decisions.migration() else {
        return Ok(());
    };
    let req = TrapRequest {
        mode: mode_of(Some(upgrade.mode.clone())).map_err(|e| CliError::bad(e.to_string()))?,
        tag: &upgrade.tag,
        source: &source,
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
