//! Refusals before a new run starts: input that can never succeed is bad input (exit 2), and
//! is refused before anything is written — no checkpoint, no lock, no cluster change.
//!
//! The refusals are the plan's ([`crate::steps::plan::refusals`]): `--to` older than (or
//! equal to) the installed revision, a `--to` that ARM does not offer, and a shared ConfigMap
//! the add-on's admission would reject when copied to the target (a server-side dry-run
//! create, so the real webhook decides), and a `--tag` nothing uses (without `--create-tag`). Everything else (cluster not ready, mid-upgrade, …)
//! is preflight's, with its own outcome.

use super::error::CliError;
use crate::istio::Revision;
use crate::steps::Env;
use crate::steps::plan::{PlanError, TagRequest, refusals};

/// Refuses a new upgrade that cannot succeed; `Ok` when preflight should decide. `tag`: the
/// tag of a tag-mode run (`None` in label mode).
pub async fn validate_new_run(
    env: &Env,
    to: Option<&str>,
    tag: Option<&TagRequest>,
) -> Result<(), CliError> {
    let to = to
        .map(str::parse::<Revision>)
        .transpose()
        .map_err(|e| CliError::bad_because(format!("--to: {e}"), e))?;
    match refusals(env, to, tag).await {
        Ok(found) => match found.into_iter().next() {
            Some(refusal) => Err(CliError::bad(format!("{refusal}; nothing was changed"))),
            None => Ok(()),
        },
        // An installed revision that is not asm-X-Y: get-upgrades fails on it in the run.
        Err(PlanError::InstalledRevision { .. }) => Ok(()),
        Err(e) => Err(CliError::connect(e.to_string(), e)),
    }
}
