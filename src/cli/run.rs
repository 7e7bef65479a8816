//! `upgrade`, `resume`, `rollback` and `demo`: build the clients, load the runbook, wire the
//! renderers, approvals and Ctrl-C into the engine, run, and turn the outcome into an exit code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use asm_canary_engine::{
    Access, Approver, CancellationToken, Checkpoint, CheckpointError, CheckpointStore, EngineError,
    EventSink, Executor, FailureDecider, FanOut, FileStore, PreApproved, ResumeOptions, RunRequest,
    RunState, RunbookPolicy,
};
use clap::Args;
use serde_json::{Map, Value};

use super::args::{ClusterArgs, OutputArg};
use super::confirm;
use super::connect::{Pace, connect};
use super::error::CliError;
use super::owner::{
    TakeOver, announce, checkpoint_flags, claim_owner, refuse_if_owned, settle_owner,
};
use super::request::{UpgradeOptions, check_approvals, load_runbook};
use super::state::{RunLocation, StateArgs, StateBackend, cluster_from_checkpoint};
use super::validate::{NewRun, validate_new_run};
use crate::k8s::lock::{
    Acquired, Holder, LOCK_NAME, LOCK_NAMESPACE, LockError, LockOptions, RunLock,
};
use crate::k8s::owner::Owner;
use crate::steps::Env;
use crate::ui;

/// `--lock-duration`: a Lease of 0 s was taken as 1 s and one of 2^64 s as 68 years (a dead
/// run's lock that never expires).
pub const LOCK_SECONDS: std::ops::RangeInclusive<u64> = 1..=3600;

/// Flags shared by everything that runs the runbook.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Never prompt: a step that needs approval pauses the run (exit 4) unless `--approve` names it.
    #[arg(long)]
    pub unattended: bool,
    /// Approve a step in advance (repeatable): `start`, `complete`, …
    #[arg(long = "approve", value_name = "STEP")]
    pub approve: Vec<String>,
    #[command(flatten)]
    pub checkpoint: StateArgs,
    /// `text` for people (stderr), `json` for pipelines (JSON Lines on stdout).
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
    /// Use this runbook instead of the built-in canary runbook.
    #[arg(long, value_name = "FILE")]
    pub runbook: Option<PathBuf>,
    /// Take the cluster's lock even though another run holds it (asks first; `--yes` when
    /// unattended). Only when that run is known to be dead.
    #[arg(long)]
    pub break_lock: bool,
    /// Adopt the upgrade of another, unfinished run that owns this cluster (its agent gone, its
    /// checkpoint lost): asks first; `--yes` when unattended. Said in the events and report.
    #[arg(long)]
    pub take_over: bool,
    /// Answer yes to the confirmation of `--break-lock` and `--take-over`.
    #[arg(long)]
    pub yes: bool,
    /// How long the cluster lock lasts without renewal, in seconds (renewed every third;
    /// 1 to 3600).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60,
        env = "ASM_CANARY_LOCK_DURATION",
        value_parser = clap::value_parser!(u64).range(LOCK_SECONDS)
    )]
    pub lock_duration: u64,
    #[command(flatten)]
    pub prometheus: super::metrics::PrometheusArgs,
    /// The built-in runbook this command runs (without `--runbook`); `resume` and `rollback`
    /// take the checkpoint's.
    #[arg(skip)]
    pub builtin: super::request::Builtin,
}

#[derive(Debug, Clone, Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub upgrade: UpgradeOptions,
    #[command(flatten)]
    pub run: RunArgs,
    /// Exit 0, changing nothing, when the cluster is not ready (an operation runs, or the last
    /// one failed) or no upgrade is offered — for pipelines that try again on a schedule.
    #[arg(long)]
    pub skip_if_not_ready: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Continue even though the runbook changed since the checkpoint was written.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub resume: ResumeArgs,
    /// No checkpoint: roll back the canary the cluster runs (two revisions, no run owning
    /// them) onto the older revision — tags and labels back, the workloads on the newer
    /// restarted, the newer removed. Starts a new checkpoint at `--state` (default
    /// `asm-canary-<cluster>.json`, which must not exist), itself resumable with `rollback`.
    #[arg(long)]
    pub from_cluster: bool,
    /// With `--from-cluster`: a runbook param of the new checkpoint, KEY=VALUE (repeatable),
    /// e.g. `soak=30s`.
    #[arg(long = "param", value_name = "KEY=VALUE", requires = "from_cluster")]
    pub params: Vec<String>,
}

/// Prompts only when a person can answer: stdin and stderr are terminals, and not unattended.
pub fn interactive(run: &RunArgs) -> bool {
    !run.unattended && run.output == OutputArg::Text && terminal_at_hand()
}

/// stdin and stderr are terminals: a person can be asked.
pub fn terminal_at_hand() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

fn default_state(cluster: &str) -> PathBuf {
    PathBuf::from(format!("asm-canary-{cluster}.json"))
}

/// What a run is asked to do.
pub enum Mode {
    Run(Map<String, Value>),
    Resume { force: bool },
    Rollback { force: bool },
}

/// Runs the runbook against `env` and returns the exit code. Guided (a person at a terminal):
/// approvals are prompted, and a failed step asks whether to roll back, retry or halt.
/// Every run appends its events to `<state>.events.jsonl` and ends by writing the Markdown
/// report `<state>.report.md` (path printed on stderr).
///
/// Everything that can be refused is checked first (the `--state` path, the checkpoint, the
/// runbook, params and approvals): a refused invocation takes no Lease and creates no file.
pub async fn execute(
    env: Arc<Env>,
    run: &RunArgs,
    mode: Mode,
    location: RunLocation,
) -> Result<u8, CliError> {
    execute_with(env, run, mode, location, None).await
}

/// A run that is one cluster of a fleet: its events go to the fleet's sink, its run id was
/// chosen (and saved) by the fleet, Ctrl-C is the fleet's, and nothing is asked of a person.
pub struct MemberRun {
    pub sink: Arc<dyn EventSink>,
    pub run_id: String,
    pub cancel: CancellationToken,
}

/// [`execute`], for a fleet's member when `member` is given.
pub async fn execute_with(
    env: Arc<Env>,
    run: &RunArgs,
    mode: Mode,
    location: RunLocation,
    member: Option<MemberRun>,
) -> Result<u8, CliError> {
    let target = env.cluster.to_string();
    let guided = member.is_none() && interactive(run);
    // Whether the analysis gate judges anything, said before the run starts.
    let (env, analysis_line) = super::metrics::attach_metrics(env, &run.prometheus)?;
    if member.is_none() {
        crate::say!("asm-canary: {analysis_line}");
    }
    let (runbook, registry) = runbook_for(run, &mode, &location, env.clone()).await?;
    check_approvals(&runbook, &run.approve)?;
    let mode = remember_prometheus(mode, &runbook, &run.prometheus);
    if let Some(file) = &location.file {
        check_state_path(file)?;
    }
    let owner_checkpoint = checkpoint_flags(&location);
    let executor = Executor::new(runbook, registry, location.store);
    // The run this process acts for: a new id, or the checkpoint's. `None` for a finished
    // run, which is only reported again: then the cluster lock is not taken.
    let mut lock_run_id = preflight(&executor, &mode, &target)
        .await
        .map_err(|e| finish_instead(e, &location.flags))?;
    let token = match &member {
        Some(m) => {
            if matches!(mode, Mode::Run(_)) {
                lock_run_id = Some(m.run_id.clone());
            }
            m.cancel.child_token()
        }
        None => {
            let token = CancellationToken::new();
            asm_canary_engine::signals::cancel_on_signals(token.clone())
                .map_err(|e| CliError::internal("cannot install the Ctrl-C handler", e))?;
            token
        }
    };
    let (lock, owner, took_over) = match &lock_run_id {
        Some(id) => {
            let (lock, me, note) = hold_cluster(&env, run, id, owner_checkpoint, &executor).await?;
            (Some(lock), Some(me), note)
        }
        None => (None, None, None),
    };
    if let Some(lock) = &lock {
        let lost = lock.lost();
        let token = token.clone();
        tokio::spawn(async move {
            lost.cancelled().await;
            token.cancel();
        });
    }
    let (sink, approver, decider) = match member {
        Some(m) => member_renderers(run, m.sink),
        None => renderers(run, guided, &location.file, &location.flags),
    };
    if let (Some(text), Some(id)) = (took_over, &lock_run_id) {
        announce(sink.as_ref(), id, text);
    }
    let executor = executor
        .with_events(sink)
        .with_approver(approver)
        .with_failure_decider(decider)
        .with_cancellation(token.clone());
    let outcome = drive(&executor, mode, &target, lock_run_id)
        .await
        .map_err(|e| finish_instead(e, &location.flags));
    if let Some(me) = owner {
        settle_owner(&env, &executor, me).await;
    }
    if let Some(lock) = lock
        && let Err(e) = lock.release().await
    {
        crate::say!("asm-canary: warning: {e}; it expires by itself");
    }
    let (run_id, code) = outcome?;
    let code = rolled_back_to_one_revision(&env, &executor, code).await;
    if let Some(file) = &location.file {
        write_report(&executor, file, &run_id).await;
    }
    Ok(code)
}

/// The runbook the run goes on with ([`super::request::load_for_resume`]): for a resume or a
/// rollback without `--force`, the checkpoint's copy of an older built-in runbook, said on
/// stderr.
async fn runbook_for(
    run: &RunArgs,
    mode: &Mode,
    location: &RunLocation,
    env: Arc<Env>,
) -> Result<(asm_canary_engine::Runbook, asm_canary_engine::Registry), CliError> {
    let kept = match mode {
        Mode::Resume { force: false } | Mode::Rollback { force: false } => location
            .store
            .load(Access::ReadOnly)
            .await
            .ok()
            .flatten()
            .map(|cp| cp.runbook),
        _ => None,
    };
    let (runbook, registry, note) =
        super::request::load_for_resume(run.runbook.as_deref(), run.builtin, kept.as_ref(), env)?;
    if let Some(note) = note {
        crate::say!("asm-canary: {note}");
    }
    Ok((runbook, registry))
}

/// The cluster lock for run `id`, then the upgrade's owner record, claimed under the lock
/// before the first change (a refused claim lets the lock go again). The note says that the
/// run took another's over.
async fn hold_cluster(
    env: &Env,
    run: &RunArgs,
    id: &str,
    owner_checkpoint: String,
    executor: &Executor,
) -> Result<(RunLock, Owner, Option<String>), CliError> {
    let lock = take_lock(env, run, id).await?;
    let known = executor.checkpoint().await.ok();
    let ask = TakeOver {
        asked: run.take_over,
        yes: run.yes,
        can_prompt: interactive(run),
    };
    let runbook = &executor.runbook().name;
    match claim_owner(env, ask, runbook, id, owner_checkpoint, known.as_ref()).await {
        Ok((me, note)) => Ok((lock, me, note)),
        Err(e) => {
            let _ = lock.release().await;
            Err(e)
        }
    }
}

/// What the engine would refuse, checked before the Lease and before any file is created
/// (exit 2 for a corrupt, newer, foreign or existing checkpoint, bad params, a changed
/// runbook). The run id to take the cluster lock for, `None` for a finished run.
async fn preflight(
    executor: &Executor,
    mode: &Mode,
    target: &str,
) -> Result<Option<String>, CliError> {
    let opts = |force: &bool| ResumeOptions {
        expect_target: Some(target.to_string()),
        force: *force,
    };
    let cp = match mode {
        Mode::Run(params) => {
            let req = RunRequest {
                target: target.to_string(),
                params: params.clone(),
                run_id: None,
            };
            executor.check_run(&req).await?;
            return Ok(Some(uuid::Uuid::new_v4().to_string()));
        }
        Mode::Resume { force } => executor.check_resume(&opts(force), false).await?,
        Mode::Rollback { force } => executor.check_resume(&opts(force), true).await?,
    };
    if matches!(mode, Mode::Rollback { .. })
        && !finished(&cp)
        && executor.runbook().rollback.is_empty()
    {
        return Err(CliError::bad(format!(
            "run {} ({}) has nothing to roll back: its runbook has no rollback steps (a patch restart only restarts workloads onto the revision they already use); continue it with `asm-canary resume` and the same checkpoint flags, or leave it as it is; nothing was changed",
            cp.run_id, cp.runbook.name
        )));
    }
    Ok((!finished(&cp)).then_some(cp.run_id))
}

/// The `--state` path must name a file in a folder this process can write: the checkpoint,
/// its lock, event log and report go there. Checked before anything is taken or created (the
/// probe file is removed at once).
pub fn check_state_path(file: &Path) -> Result<(), CliError> {
    let shown = file.display();
    // A link would be replaced by the first checkpoint written (the file it names left as it
    // was, a stale copy), and the lock beside it is per path: two names, two runs.
    if std::fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_symlink()) {
        let target = std::fs::canonicalize(file)
            .map(|t| format!(" to {}", t.display()))
            .unwrap_or_default();
        return Err(CliError::bad(format!(
            "--state {shown} is a symbolic link{target}; pass the checkpoint file itself"
        )));
    }
    if let Ok(m) = std::fs::metadata(file)
        && !m.is_file()
        && !m.is_dir()
    {
        return Err(CliError::bad(format!(
            "--state {shown} is not a regular file (a device, FIFO or socket); give the path of a checkpoint file"
        )));
    }
    if file.is_dir() {
        return Err(CliError::bad(format!(
            "--state {shown} is a directory; give the path of a checkpoint file, e.g. {}",
            file.join("asm-canary-<cluster>.json").display()
        )));
    }
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(CliError::bad(format!(
            "--state {shown}: the folder {} does not exist; create it or choose another --state path",
            dir.display()
        )));
    }
    tempfile::Builder::new()
        .prefix(".asm-canary-probe.")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| {
            CliError::bad_because(
                format!(
                    "--state {shown}: cannot create files in {} ({e}); choose a folder this user can write",
                    dir.display()
                ),
                e,
            )
        })
}

/// The event sinks (terminal or JSON Lines, and the event log beside the checkpoint file),
/// the approver and the failure decider: a person at a terminal is asked; otherwise
/// `--approve` approves and the runbook's `on_failure` decides.
fn renderers(
    run: &RunArgs,
    guided: bool,
    file: &Option<PathBuf>,
    flags: &str,
) -> (
    Arc<dyn EventSink>,
    Arc<dyn Approver>,
    Arc<dyn FailureDecider>,
) {
    let hint = Some(flags.to_string());
    let mut terminal = ui::Terminal::stderr(hint.clone());
    if guided {
        terminal = terminal.prompting();
    }
    let terminal = Arc::new(terminal);
    let mut sinks: Vec<Arc<dyn EventSink>> = vec![terminal.clone()];
    if run.output == OutputArg::Json {
        // Next to JSON Lines, the text on stderr is plain lines, never bars.
        sinks = vec![
            Arc::new(ui::JsonLines::stdout()),
            Arc::new(ui::Terminal::plain_stderr(hint)),
        ];
    }
    // The event log lives next to a checkpoint file; a checkpoint kept in the cluster
    // (`--state-backend kubernetes` without `--state`) leaves no file on the agent.
    if let Some(file) = file {
        let path = crate::report::events_path(file);
        match open_event_log(&path) {
            Ok(log) => sinks.push(Arc::new(ui::JsonLines::new(log))),
            Err(e) if is_symlink(&path) => crate::say!(
                "asm-canary: warning: the event log {} is a symbolic link; asm-canary does not write through one, so this run's events are not logged ({e}) — remove it; the report will lack gate details",
                path.display()
            ),
            Err(e) => crate::say!(
                "asm-canary: warning: cannot append to the event log {}: {e}; the report will lack gate details",
                path.display()
            ),
        }
    }
    let (approver, decider): (Arc<dyn Approver>, Arc<dyn FailureDecider>) = if guided {
        (Arc::new(terminal.approver()), Arc::new(terminal.decider()))
    } else {
        (
            Arc::new(PreApproved::new(run.approve.iter().cloned())),
            Arc::new(RunbookPolicy),
        )
    };
    (Arc::new(FanOut(sinks)), approver, decider)
}

/// A fleet member's: the fleet's sink, `--approve` approves, the runbook's `on_failure` decides.
fn member_renderers(
    run: &RunArgs,
    sink: Arc<dyn EventSink>,
) -> (
    Arc<dyn EventSink>,
    Arc<dyn Approver>,
    Arc<dyn FailureDecider>,
) {
    (
        sink,
        Arc::new(PreApproved::new(run.approve.iter().cloned())),
        Arc::new(RunbookPolicy),
    )
}

/// A refused rollback says how to finish the run instead, as this checkpoint is named.
fn finish_instead(e: CliError, flags: &str) -> CliError {
    match e {
        CliError::Engine(EngineError::RollbackRefused { ref step, .. }) => CliError::bad_because(
            format!(
                "{}. Finish the run instead: asm-canary resume {flags} --approve {step} (the checkpoint was left untouched)",
                e.chain()
            ),
            e,
        ),
        e => e,
    }
}

/// Runs, resumes or rolls back; the run id and the exit code.
async fn drive(
    executor: &Executor,
    mode: Mode,
    target: &str,
    run_id: Option<String>,
) -> Result<(String, u8), CliError> {
    let resume_opts = |force| ResumeOptions {
        expect_target: Some(target.to_string()),
        force,
    };
    let report = match mode {
        Mode::Run(params) => {
            executor
                .run(RunRequest {
                    target: target.to_string(),
                    params,
                    run_id,
                })
                .await?
        }
        Mode::Resume { force } => executor.resume(resume_opts(force)).await?,
        Mode::Rollback { force } => executor.rollback(resume_opts(force)).await?,
    };
    Ok((report.run_id.clone(), report.exit_code()))
}

/// Opens `<state>.events.jsonl` for appending; never through a symbolic link planted there.
fn open_event_log(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    asm_canary_engine::checkpoint::no_follow(&mut opts);
    opts.open(path)
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Writes `<file>.report.md` from the checkpoint as its store holds it, and names it on
/// stderr; a failure to write is a warning, since the checkpoint is the record and
/// `asm-canary report` can rebuild it.
async fn write_report(executor: &Executor, file: &Path, run_id: &str) {
    let Ok(cp) = executor.checkpoint().await else {
        return;
    };
    let events = crate::report::read_events(file, run_id);
    let md = crate::report::markdown(&crate::report::Timeline::build(cp, &events));
    let path = crate::report::report_path(file);
    match asm_canary_engine::checkpoint::write_atomic(&path, md.as_bytes()) {
        Ok(()) => crate::say!("report: {}", path.display()),
        Err((_, e)) => crate::say!(
            "asm-canary: warning: cannot write the report {}: {e}; run asm-canary report --state {}",
            path.display(),
            file.display()
        ),
    }
}

/// A rolled-back run undid what its journal says it did; if the cluster still runs two
/// revisions, the canary was not this run's to remove, and "rolled back" is not the end of
/// it: exit 6, a person must look.
async fn rolled_back_to_one_revision(env: &Env, executor: &Executor, code: u8) -> u8 {
    match executor.checkpoint().await {
        Ok(cp) if cp.state == RunState::RolledBack => {}
        _ => return code,
    }
    let revisions = match env.arm.get_cluster(&env.cluster).await {
        Ok(doc) => doc.revisions(),
        Err(e) => {
            crate::say!("asm-canary: warning: cannot check the revisions after the rollback: {e}");
            return code;
        }
    };
    if revisions.len() < 2 {
        return code;
    }
    crate::say!(
        "asm-canary: this run's changes are rolled back, but {} still runs [{}]: this run did not install that canary, so it left it; a person must look (finish or roll it back where it was started, or az aks mesh upgrade complete|rollback) (exit {})",
        env.cluster.name,
        revisions.join(", "),
        asm_canary_engine::exit::ROLLBACK_FAILED
    );
    asm_canary_engine::exit::ROLLBACK_FAILED
}

fn finished(cp: &Checkpoint) -> bool {
    matches!(cp.state, RunState::Completed | RunState::RolledBack)
}

/// Takes the cluster's Lease for `run_id`, asking before breaking a live one.
async fn take_lock(env: &Env, run: &RunArgs, run_id: &str) -> Result<RunLock, CliError> {
    let mut opts = LockOptions {
        duration: std::time::Duration::from_secs(run.lock_duration),
        break_lock: run.break_lock,
        confirmed: run.break_lock && run.yes,
    };
    let holder = Holder::this_process(run_id);
    let lock = loop {
        match RunLock::acquire(&env.kube, holder.clone(), &opts).await {
            Ok(l) => break l,
            Err(LockError::NotConfirmed {
                holder: theirs,
                expires,
            }) if interactive(run) && !opts.confirmed => {
                if confirm(&format!(
                    "Break the cluster lock held by {theirs} (expires {expires})? Only if that run is dead."
                )) {
                    opts.confirmed = true;
                } else {
                    return Err(CliError::locked(
                        format!("the lock held by {theirs} was not broken (not confirmed)"),
                        None,
                    ));
                }
            }
            Err(e @ (LockError::Held { .. } | LockError::NotConfirmed { .. })) => {
                return Err(CliError::locked(e.to_string(), Some(e.into())));
            }
            Err(e) => return Err(CliError::connect("cannot take the cluster lock", e)),
        }
    };
    match &lock.acquired {
        Acquired::Created | Acquired::OwnStale(_) => {}
        Acquired::Expired(h) => crate::say!(
            "asm-canary: warning: took over the expired cluster lock of {h} (Lease {LOCK_NAMESPACE}/{LOCK_NAME})"
        ),
        Acquired::Broken(h) => crate::say!(
            "asm-canary: warning: broke the live cluster lock of {h} (Lease {LOCK_NAMESPACE}/{LOCK_NAME}) on --break-lock"
        ),
    }
    Ok(lock)
}

pub async fn upgrade(args: UpgradeArgs) -> Result<u8, CliError> {
    let UpgradeArgs {
        cluster,
        upgrade,
        run,
        skip_if_not_ready,
    } = args;
    let params = upgrade.params()?;
    // Bad local input is refused before connecting: the params (when the runbook is the
    // built-in one), then a checkpoint file given.
    if run.runbook.is_none() {
        run.builtin.check_params(&params)?;
    }
    if let (StateBackend::File, Some(file)) = (run.checkpoint.state_backend, &run.checkpoint.state)
    {
        check_state_path(file)?;
        refuse_existing(&FileStore::new(file)).await?;
    }
    let connected = connect(&cluster, Pace::Real).await?;
    let env = connected.env;
    let location = run
        .checkpoint
        .locate(&env, Some(default_state(&env.cluster.name)));
    if let Some(file) = &location.file {
        check_state_path(file)?;
    }
    refuse_existing(&location.store).await?;
    refuse_if_owned(&env, run.take_over).await?;
    if let NewRun::Skip(why) = validate_new_run(&env, &upgrade, skip_if_not_ready).await? {
        crate::say!("asm-canary: skipped, nothing changed (--skip-if-not-ready): {why}");
        return Ok(asm_canary_engine::exit::OK);
    }
    if interactive(&run) {
        super::plan::show_plan(&env, &upgrade, &params, run.runbook.as_deref()).await?;
    }
    execute(env, &run, Mode::Run(params), location).await
}

/// A new run records `--prometheus` in its params (when the runbook declares `prometheus`), so
/// that a resume without it does not pass the analysis gate as "off".
fn remember_prometheus(
    mode: Mode,
    runbook: &asm_canary_engine::Runbook,
    args: &super::metrics::PrometheusArgs,
) -> Mode {
    match mode {
        Mode::Run(mut params) => {
            if let Some(url) = args.prometheus.as_deref().filter(|u| !u.is_empty())
                && runbook.params.iter().any(|p| p.name == "prometheus")
            {
                params.insert("prometheus".into(), serde_json::json!(url));
            }
            Mode::Run(params)
        }
        other => other,
    }
}

/// A new run never replaces a checkpoint: one in the store (even a corrupt one) is refused.
pub(super) async fn refuse_existing(store: &dyn CheckpointStore) -> Result<(), CliError> {
    if let Some(cp) = store
        .load(Access::ReadOnly)
        .await
        .map_err(EngineError::from)?
    {
        return Err(EngineError::from(CheckpointError::AlreadyExists {
            path: store.location(),
            run_id: cp.run_id,
        })
        .into());
    }
    Ok(())
}

pub async fn resume(args: ResumeArgs, rollback: bool) -> Result<u8, CliError> {
    let ResumeArgs {
        mut cluster,
        mut run,
        force,
    } = args;
    // With a checkpoint file, the cluster defaults to the checkpoint's; in the cluster, the
    // cluster flags (or environment) say which.
    if let Some(file) = run.checkpoint.existing_file("of the run to continue")? {
        check_state_path(file)?;
        cluster_from_checkpoint(&mut cluster, file)?;
    }
    let env = connect(&cluster, Pace::Real).await?.env;
    let location = run.checkpoint.locate(&env, None);
    // The built-in runbook the checkpoint was written by (the upgrade, or a day-2 job).
    if let Ok(Some(cp)) = location.store.load(Access::ReadOnly).await
        && let Some(b) = super::request::Builtin::named(&cp.runbook.name)
    {
        run.builtin = b;
    }
    let mode = if rollback {
        Mode::Rollback { force }
    } else {
        Mode::Resume { force }
    };
    execute(env, &run, mode, location).await
}

/// `rollback --from-cluster`: the canary is read from the cluster (refused while another run
/// owns it: exit 5), a new checkpoint records its adoption, and the runbook's rollback
/// sequence undoes it. One revision installed: nothing to do (exit 0); a cluster busy, or
/// with more than two revisions: exit 2.
pub async fn rollback_from_cluster(args: RollbackArgs) -> Result<u8, CliError> {
    let ResumeArgs { cluster, run, .. } = args.resume;
    let given = super::request::param_pairs(&args.params)?;
    if run.runbook.is_none() {
        run.builtin.check_params(&given)?;
    }
    if let (StateBackend::File, Some(file)) = (run.checkpoint.state_backend, &run.checkpoint.state)
    {
        check_state_path(file)?;
        refuse_existing(&FileStore::new(file)).await?;
    }
    let env = connect(&cluster, Pace::Real).await?.env;
    let location = run
        .checkpoint
        .locate(&env, Some(default_state(&env.cluster.name)));
    if let Some(file) = &location.file {
        check_state_path(file)?;
    }
    refuse_existing(&location.store).await?;
    refuse_if_owned(&env, run.take_over).await?;
    let ask = TakeOver {
        asked: run.take_over,
        yes: run.yes,
        can_prompt: interactive(&run),
    };
    super::owner::refuse_unconfirmed_take_over(&env, ask).await?;
    use crate::steps::recover::{FromCluster, from_cluster, rollback_seed};
    let found = from_cluster(&env)
        .await
        .map_err(|e| CliError::connect("cannot read the cluster", e))?;
    let adoption = match found {
        FromCluster::Nothing(revisions) => {
            crate::say!(
                "asm-canary: nothing to roll back: {} runs only [{}]; nothing was changed",
                env.cluster.name,
                revisions.join(", ")
            );
            return Ok(asm_canary_engine::exit::OK);
        }
        FromCluster::Refused(why) => {
            return Err(CliError::bad(format!("{why}; nothing was changed")));
        }
        FromCluster::Canary(a) => a,
    };
    crate::say!(
        "asm-canary: rolling back from the cluster: {}",
        adoption.describe()
    );
    let (runbook, _) = load_runbook(run.runbook.as_deref(), env.clone())?;
    let params = runbook.bind_params(&given).map_err(CliError::bad)?;
    let run_id = uuid::Uuid::new_v4().to_string();
    let seed = rollback_seed(
        &runbook,
        params,
        &run_id,
        &env.cluster.to_string(),
        &adoption,
        chrono::Utc::now(),
    )
    .map_err(|e| CliError::internal("cannot build the checkpoint", e))?;
    location
        .store
        .write(&seed.to_json())
        .await
        .map_err(EngineError::from)?;
    execute(env, &run, Mode::Rollback { force: false }, location).await
}
