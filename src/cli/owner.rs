//! The run's side of the cluster's owner record ([`crate::k8s::owner`]): claimed (or, on
//! `--take-over`, taken over) under the lock before the engine runs, and settled after it —
//! kept with the run's phase while the run is unfinished, removed once it is finished.

use asm_canary_engine::{
    Checkpoint, EVENTS_SCHEMA, Event, EventRecord, EventSink, Executor, Level, RunState,
};

use super::confirm;
use super::error::CliError;
use super::state::{RunLocation, StateBackend};
use crate::k8s::lock::Holder;
use crate::k8s::owner::{self, Claimed, Owner, OwnerError};
use crate::k8s::state::{ConfigMapStore, STATE_NAMESPACE};
use crate::steps::Env;

/// How another agent names this run's checkpoint: an absolute `--state` path, or the
/// kubernetes backend.
pub fn checkpoint_flags(location: &RunLocation) -> String {
    match (location.backend, &location.file) {
        (StateBackend::File, Some(file)) => {
            let abs = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            format!("--state {}", abs.display())
        }
        _ => location.flags.clone(),
    }
}

fn summary(cp: Option<&Checkpoint>, key: &str) -> Option<String> {
    cp.and_then(|cp| cp.summary.get(key))
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

fn phase(state: RunState) -> &'static str {
    match state {
        RunState::Running => "running",
        RunState::Paused => "paused",
        RunState::Completed => "completed",
        RunState::RollingBack => "rolling-back",
        RunState::RolledBack => "rolled-back",
        RunState::Failed => "failed",
    }
}

/// Before a new run is validated: another run's owner record is exit 5, whatever the mesh
/// looks like (its canary would otherwise read as "an upgrade no run owns"). `--take-over`
/// skips this, and so does a record whose checkpoint is gone ([`checkpoint_gone`]); the claim
/// under the lock decides for good.
pub async fn refuse_if_owned(env: &Env, take_over: bool) -> Result<(), CliError> {
    if take_over {
        return Ok(());
    }
    match owner::read(&env.kube).await {
        Ok(None) => Ok(()),
        Ok(Some((theirs, _))) if checkpoint_gone(env, &theirs).await.is_some() => Ok(()),
        Ok(Some((theirs, _))) => {
            let e = OwnerError::Owned { owner: theirs };
            Err(CliError::locked(e.to_string(), Some(e.into())))
        }
        Err(e) => Err(CliError::connect(
            "cannot read the cluster's owner record",
            e,
        )),
    }
}

/// `--take-over` that cannot be confirmed (no `--yes`, no person to ask) while another run's
/// record stands: refused (exit 5) before anything is written — `rollback --from-cluster`
/// wrote its adoption's checkpoint first and left it behind when the claim was refused.
pub async fn refuse_unconfirmed_take_over(env: &Env, ask: TakeOver) -> Result<(), CliError> {
    if !ask.asked || ask.yes || ask.can_prompt {
        return Ok(());
    }
    match owner::read(&env.kube).await {
        Ok(Some((theirs, _))) if checkpoint_gone(env, &theirs).await.is_none() => {
            ask.confirm(theirs)
        }
        Ok(_) => Ok(()),
        Err(e) => Err(CliError::connect(
            "cannot read the cluster's owner record",
            e,
        )),
    }
}

/// Why `theirs` is a record no command can continue, if it is: its checkpoint does not exist
/// (the run was stopped between its claim and its first checkpoint, or its checkpoint was
/// archived). Only what this process can see is judged: a checkpoint file on another host,
/// or one that cannot be read, is never taken for gone.
pub async fn checkpoint_gone(env: &Env, theirs: &Owner) -> Option<String> {
    if theirs.checkpoint.starts_with("--state-backend kubernetes") {
        let store = ConfigMapStore::new(env.kube.clone(), &env.cluster.name);
        return match store.stored().await {
            Ok(None) => Some(format!(
                "its checkpoint (configmap {STATE_NAMESPACE}/{}) does not exist",
                store.name()
            )),
            _ => None,
        };
    }
    let path = theirs.checkpoint.strip_prefix("--state ")?;
    let here = Holder::this_process(&theirs.run_id).host;
    if theirs.host != here {
        return None;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some(format!("its checkpoint ({path}) does not exist on {here}"))
        }
        _ => None,
    }
}

/// `--take-over` as asked: given, confirmed with `--yes`, and whether a person can be asked.
#[derive(Debug, Clone, Copy)]
pub struct TakeOver {
    pub asked: bool,
    pub yes: bool,
    pub can_prompt: bool,
}

impl TakeOver {
    /// Whether `theirs` may be taken over: `--take-over` given and confirmed (at the prompt,
    /// or `--yes`); otherwise the refusal (exit 5).
    fn confirm(&self, theirs: Owner) -> Result<(), CliError> {
        if !self.asked {
            let e = OwnerError::Owned { owner: theirs };
            return Err(CliError::locked(e.to_string(), Some(e.into())));
        }
        if !self.can_prompt {
            return Err(CliError::locked(
                format!(
                    "--take-over: the upgrade belongs to {theirs}; not taken over without confirmation — pass --yes to take it over unattended"
                ),
                None,
            ));
        }
        if !confirm(&format!(
            "Take over the upgrade of {theirs}? Only if that run is gone for good."
        )) {
            return Err(CliError::locked(
                format!("the upgrade of {theirs} was not taken over (not confirmed)"),
                None,
            ));
        }
        Ok(())
    }
}

/// Claims the cluster's upgrade for `run_id` (its checkpoint named by `checkpoint`); another
/// run's record is refused (exit 5) unless `--take-over` was given and confirmed, or its
/// checkpoint is gone. With a take-over, the sentence saying so (for stderr, said here, and
/// the run's events).
pub async fn claim_owner(
    env: &Env,
    ask: TakeOver,
    runbook: &str,
    run_id: &str,
    checkpoint: String,
    known: Option<&Checkpoint>,
) -> Result<(Owner, Option<String>), CliError> {
    let mut me = Owner {
        run_id: run_id.to_string(),
        host: Holder::this_process(run_id).host,
        checkpoint,
        source: summary(known, "source"),
        target: summary(known, "target"),
        phase: "running".into(),
        since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        took_over: None,
        runbook: Some(runbook.to_string()),
    };
    // The record is read first even with --take-over --yes: whose run it is decides whether
    // this one may adopt it at all.
    let mut confirmed = false;
    let mut gone = None;
    loop {
        match owner::claim(&env.kube, &mut me, confirmed).await {
            Ok(Claimed::TookOver(prev)) => {
                let text = match gone.take() {
                    Some(why) => format!(
                        "took over the upgrade of {prev}: {why}, so no command can continue that run"
                    ),
                    None => format!(
                        "took over the upgrade of {prev} on --take-over; its checkpoint ({}) is no longer the run of record",
                        prev.checkpoint
                    ),
                };
                crate::say!("asm-canary: warning: {text}");
                return Ok((me, Some(text)));
            }
            Ok(Claimed::New | Claimed::Own) => return Ok((me, None)),
            Err(OwnerError::Owned { owner: theirs }) if !confirmed => {
                // A record whose checkpoint is gone is dead: any run adopts it, as before.
                gone = checkpoint_gone(env, &theirs).await;
                if gone.is_none() {
                    refuse_foreign(&me, &theirs)?;
                    if !(ask.asked && ask.yes) {
                        ask.confirm(theirs)?;
                    }
                }
                confirmed = true;
            }
            Err(e @ OwnerError::Owned { .. }) => {
                return Err(CliError::locked(e.to_string(), Some(e.into())));
            }
            Err(e) => return Err(CliError::connect("cannot claim the cluster's upgrade", e)),
        }
    }
}

/// The day-2 runbooks: each finishes and gives the cluster up, so it adopts only a run of its
/// own kind.
const DAY2_RUNBOOKS: [&str; 2] = ["asm-canary-onboard", "asm-canary-patch-restart"];

/// A run adopts only a run of its own runbook when either is a day-2 one (unless that run's
/// checkpoint is gone): an onboarding that took over a paused upgrade finished, gave the
/// cluster up and left that upgrade half done with no owner. A record without a runbook
/// (written before it was kept) is an upgrade's.
fn refuse_foreign(me: &Owner, theirs: &Owner) -> Result<(), CliError> {
    let mine = me.runbook.as_deref().unwrap_or("asm-canary-upgrade");
    let their = theirs.runbook.as_deref().unwrap_or("asm-canary-upgrade");
    if mine == their || !(DAY2_RUNBOOKS.contains(&mine) || DAY2_RUNBOOKS.contains(&their)) {
        return Ok(());
    }
    let e = OwnerError::Owned {
        owner: theirs.clone(),
    };
    Err(CliError::locked(
        format!("{e}; a run of {mine} never takes over a run of {their}, --take-over or not"),
        None,
    ))
}

/// A warning of the run `run_id` in its events (the take-over), before the engine's own.
pub fn announce(sink: &dyn EventSink, run_id: &str, text: String) {
    sink.emit(&EventRecord {
        schema: EVENTS_SCHEMA.to_string(),
        ts: chrono::Utc::now(),
        run_id: run_id.to_string(),
        event: Event::Message {
            step: None,
            level: Level::Warn,
            text,
        },
    });
}

/// After the engine: a finished run gives the cluster up; an unfinished one keeps it, with
/// its phase, source and target brought up to date. A run that changed nothing and is not
/// waiting for an approval (it halted before its first change) gives it up too. Failures
/// are warnings: the checkpoint is the record of the run.
pub async fn settle_owner(env: &Env, executor: &Executor, mut me: Owner) {
    // No checkpoint: the engine refused the run before writing one, so it changed nothing.
    let Ok(cp) = executor.checkpoint().await else {
        if let Err(e) = owner::release(&env.kube, &me.run_id).await {
            crate::say!("asm-canary: warning: {e}");
        }
        return;
    };
    let finished = matches!(cp.state, RunState::Completed | RunState::RolledBack);
    let changed_nothing = cp.journal.is_empty() && cp.failed_step.is_some();
    let result = if finished || changed_nothing {
        owner::release(&env.kube, &me.run_id).await
    } else {
        me.phase = phase(cp.state).to_string();
        me.source = summary(Some(&cp), "source").or(me.source);
        me.target = summary(Some(&cp), "target").or(me.target);
        owner::update(&env.kube, &me).await
    };
    if let Err(e) = result {
        crate::say!("asm-canary: warning: {e}");
    }
}
