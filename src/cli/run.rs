//! `upgrade`, `resume`, `rollback` and `demo`: build the clients, load the runbook, wire the
//! renderers, approvals and Ctrl-C into the engine, run, and turn the outcome into an exit code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use asm_canary_engine::checkpoint::StoreLock;
use asm_canary_engine::{
    Access, Approver, CancellationToken, Checkpoint, CheckpointError, CheckpointStore, Event,
    EventRecord, EventSink, Executor, FanOut, FileStore, OnFailure, Outcome, PreApproved,
    ResumeOptions, RunRequest, Runbook, StepStatus,
};
use clap::Args;
use serde_json::{Map, Value, json};

use super::args::{ClusterArgs, OutputArg};
use super::connect::{Pace, connect};
use super::error::CliError;
use crate::k8s::lock::{Acquired, Holder, LockError, LockOptions, RunLock};
use crate::k8s::state::ConfigMapStore;
use crate::steps::Env;
use crate::ui::{self, terminal::FailureChoice};

/// The canary runbook, compiled in; `--runbook FILE` replaces it.
pub const EMBEDDED_RUNBOOK: &str = include_str!("../../runbooks/asm-canary-upgrade.yaml");
const EMBEDDED_RUNBOOK_NAME: &str = "runbooks/asm-canary-upgrade.yaml";

/// Flags shared by everything that runs the runbook.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Never prompt: a step that needs approval pauses the run (exit 4) unless `--approve` names it.
    #[arg(long)]
    pub unattended: bool,
    /// Approve a step in advance (repeatable): `start`, `complete`, …
    #[arg(long = "approve", value_name = "STEP")]
    pub approve: Vec<String>,
    /// The checkpoint file of this run (upgrade default: asm-canary-<cluster>.json). Its event
    /// log and report are written next to it (<FILE>.events.jsonl, <FILE>.report.md).
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// `text` for people (stderr), `json` for pipelines (JSON Lines on stdout).
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
    /// Use this runbook instead of the built-in canary runbook.
    #[arg(long, value_name = "FILE")]
    pub runbook: Option<PathBuf>,
    /// Where the checkpoint lives: `file` (`--state`), or `kubernetes` (the ConfigMap
    /// `asm-canary-run-<cluster>` in aks-istio-system, so any agent can resume).
    #[arg(long, value_enum, default_value_t = StateBackend::File, env = "ASM_CANARY_STATE_BACKEND")]
    pub state_backend: StateBackend,
    /// Take the cluster's lock even though another run holds it (asks first; `--yes` when
    /// unattended). Only when that run is known to be dead.
    #[arg(long)]
    pub break_lock: bool,
    /// Answer yes to `--break-lock`'s confirmation.
    #[arg(long)]
    pub yes: bool,
    /// How long the cluster lock lasts without renewal, in seconds (renewed every third).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60,
        env = "ASM_CANARY_LOCK_DURATION"
    )]
    pub lock_duration: u64,
}

/// Where the checkpoint lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateBackend {
    File,
    Kubernetes,
}

/// How the commands name this run's checkpoint: `--state FILE`, or
/// `--state-backend kubernetes` when it lives in the cluster.
fn state_flags(run: &RunArgs, state: &Path) -> String {
    match run.state_backend {
        StateBackend::File => format!("--state {}", state.display()),
        StateBackend::Kubernetes => "--state-backend kubernetes".to_string(),
    }
}

/// The checkpoint store chosen by `--state-backend`.
pub enum Store {
    File(FileStore),
    Kube(Box<ConfigMapStore>),
}

#[async_trait::async_trait]
impl CheckpointStore for Store {
    fn location(&self) -> String {
        match self {
            Store::File(s) => s.location(),
            Store::Kube(s) => s.location(),
        }
    }
    async fn lock(&self) -> Result<Box<dyn StoreLock>, CheckpointError> {
        match self {
            Store::File(s) => s.lock().await,
            Store::Kube(s) => s.lock().await,
        }
    }
    async fn read(&self) -> Result<Option<Vec<u8>>, CheckpointError> {
        match self {
            Store::File(s) => s.read().await,
            Store::Kube(s) => s.read().await,
        }
    }
    async fn write(&self, bytes: &[u8]) -> Result<(), CheckpointError> {
        match self {
            Store::File(s) => s.write(bytes).await,
            Store::Kube(s) => s.write(bytes).await,
        }
    }
}

/// What to upgrade to and how.
#[derive(Debug, Clone, Args)]
pub struct UpgradeOptions {
    /// Target revision (asm-X-Y); default: the newest upgrade ARM offers.
    #[arg(long, value_name = "REV")]
    pub to: Option<String>,
    /// The revision tag to move (istioctl tag set compatible).
    #[arg(long, default_value = "prod")]
    pub tag: String,
    /// `tag`: move the revision tag; `label`: relabel namespaces istio.io/rev=<target>.
    #[arg(long, default_value = "tag", value_parser = ["tag", "label"])]
    pub mode: String,
    /// Namespaces restarted in the first wave (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_name = "NS")]
    pub canary_namespaces: Vec<String>,
    /// Workloads restarted at once within a wave.
    #[arg(long, default_value_t = 4)]
    pub parallelism: u32,
    /// How long every proxy must stay SYNCED before verify passes (e.g. 2m).
    #[arg(long)]
    pub soak: Option<String>,
    /// Overwrite a different existing shared ConfigMap of the target revision.
    #[arg(long)]
    pub force: bool,
    /// Set any runbook param: KEY=VALUE (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub upgrade: UpgradeOptions,
    #[command(flatten)]
    pub run: RunArgs,
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

impl UpgradeOptions {
    pub fn params(&self) -> Result<Map<String, Value>, CliError> {
        let UpgradeOptions {
            to,
            tag,
            mode,
            canary_namespaces,
            parallelism,
            soak,
            force,
            params,
        } = self;
        let mut map = Map::new();
        if let Some(to) = to {
            to.parse::<crate::istio::Revision>()
                .map_err(|e| CliError::bad(format!("--to {to:?}: {e}")))?;
            map.insert("to".into(), json!(to));
        }
        map.insert("tag".into(), json!(tag));
        map.insert("injection_mode".into(), json!(mode));
        map.insert("canary_namespaces".into(), json!(canary_namespaces));
        map.insert("parallelism".into(), json!(parallelism));
        if let Some(soak) = soak {
            map.insert("soak".into(), json!(soak));
        }
        map.insert("force".into(), json!(force));
        for p in params {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| CliError::bad(format!("--param {p:?}: expected KEY=VALUE")))?;
            map.insert(k.trim().to_string(), json!(v));
        }
        Ok(map)
    }
}

/// Loads the runbook (embedded or `--runbook`) against the canary registry.
pub fn load_runbook(
    path: Option<&Path>,
    env: Arc<Env>,
) -> Result<(Runbook, asm_canary_engine::Registry), CliError> {
    let registry = crate::steps::registry(env);
    let runbook = match path {
        Some(p) => Runbook::load(p, &registry).map_err(|e| CliError::bad(e.to_string()))?,
        None => Runbook::parse(EMBEDDED_RUNBOOK, EMBEDDED_RUNBOOK_NAME, &registry)
            .map_err(|e| CliError::Internal(format!("the built-in runbook does not load: {e}")))?,
    };
    Ok((runbook, registry))
}

/// Prompts only when a person can answer: stdin and stderr are terminals, and not unattended.
pub fn interactive(run: &RunArgs) -> bool {
    !run.unattended
        && run.output == OutputArg::Text
        && std::io::stdin().is_terminal()
        && std::io::stderr().is_terminal()
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
pub async fn execute(
    env: Arc<Env>,
    run: &RunArgs,
    mode: Mode,
    state: PathBuf,
) -> Result<u8, CliError> {
    let target = env.cluster.to_string();
    let guided = interactive(run);
    let (mut runbook, registry) = load_runbook(run.runbook.as_deref(), env.clone())?;
    // Guided: the engine would roll back on its own when a step fails; a person is asked
    // instead, so such a step halts (pauses) and the question below decides. The checkpoint
    // records the runbook's hash from its text, which this does not change; a later `resume`
    // without a terminal rolls back as the runbook says.
    let mut ask_on_failure = std::collections::BTreeSet::new();
    if guided {
        for step in &mut runbook.steps {
            if step.on_failure == OnFailure::Rollback {
                step.on_failure = OnFailure::Halt;
                ask_on_failure.insert(step.id.clone());
            }
        }
    }
    let hint = Some(state_flags(run, &state));
    let terminal = Arc::new(ui::Terminal::stderr(hint.clone()));
    let guided_view = Arc::new(GuidedView {
        inner: terminal.clone(),
        guided,
        ask: ask_on_failure.clone(),
    });
    let mut sinks: Vec<Arc<dyn EventSink>> = vec![guided_view.clone()];
    if run.output == OutputArg::Json {
        // Next to JSON Lines, the text on stderr is plain lines, never bars.
        sinks = vec![
            Arc::new(ui::JsonLines::stdout()),
            Arc::new(ui::Terminal::plain_stderr(hint.clone())),
        ];
    }
    // The event log and report live next to a checkpoint file; a checkpoint kept in the
    // cluster (`--state-backend kubernetes` without `--state`) leaves no file on the agent.
    let files = run.state_backend == StateBackend::File || run.state.is_some();
    if files {
        match open_event_log(&state) {
            Ok(log) => sinks.push(Arc::new(ui::JsonLines::new(log))),
            Err(e) => eprintln!(
                "asm-canary: warning: cannot append to the event log {}: {e}; the report will lack gate details",
                crate::report::events_path(&state).display()
            ),
        }
    }
    let sink: Arc<dyn EventSink> = Arc::new(FanOut(sinks));
    let approver: Arc<dyn Approver> = if guided {
        Arc::new(terminal.approver())
    } else {
        Arc::new(PreApproved::new(run.approve.iter().cloned()))
    };
    let token = CancellationToken::new();
    asm_canary_engine::signals::cancel_on_signals(token.clone())
        .map_err(|e| CliError::Internal(format!("cannot install the Ctrl-C handler: {e}")))?;
    let store = match run.state_backend {
        StateBackend::File => Store::File(FileStore::new(&state)),
        StateBackend::Kubernetes => Store::Kube(Box::new(ConfigMapStore::new(
            env.kube.clone(),
            &env.cluster.name,
        ))),
    };
    // The run this process acts for: a new id, or the checkpoint's. `None` when the engine is
    // about to refuse (no checkpoint, another cluster's, finished, or one already exists for
    // a new run): then the cluster lock is not taken, so bad input changes nothing.
    let existing = peek_checkpoint(&store).await;
    if let (Mode::Rollback { .. }, Some(p)) = (&mode, &existing)
        && p.target == target
        && !p.finished
        && let Some(asked) = &p.complete_put
    {
        refuse_rollback_while_completing(&env, run, &state, asked).await?;
    }
    let lock_run_id = match (&mode, existing) {
        (Mode::Run(_), None) => Some(uuid::Uuid::new_v4().to_string()),
        (Mode::Run(_), Some(_)) => None,
        (_, Some(p)) if p.target == target && !p.finished => Some(p.run_id),
        (_, _) => None,
    };
    let lock = match &lock_run_id {
        Some(id) => Some(take_lock(&env, run, id).await?),
        None => None,
    };
    if let Some(lock) = &lock {
        let lost = lock.lost();
        let token = token.clone();
        tokio::spawn(async move {
            lost.cancelled().await;
            token.cancel();
        });
    }
    let executor = Executor::new(runbook, registry, store)
        .with_events(sink)
        .with_approver(approver)
        .with_cancellation(token.clone());
    let outcome = drive(
        &executor,
        mode,
        &target,
        lock_run_id,
        guided,
        &ask_on_failure,
        &token,
        &state_flags(run, &state),
    )
    .await;
    if let Some(lock) = lock
        && let Err(e) = lock.release().await
    {
        eprintln!("asm-canary: warning: {e}; it expires by itself");
    }
    let (run_id, code) = outcome?;
    if files {
        write_report(&state, &run_id);
    }
    Ok(code)
}

/// Runs, resumes or rolls back, then (guided) asks what to do after a failed step.
#[allow(clippy::too_many_arguments)]
async fn drive(
    executor: &Executor,
    mode: Mode,
    target: &str,
    run_id: Option<String>,
    guided: bool,
    ask_on_failure: &std::collections::BTreeSet<String>,
    token: &CancellationToken,
    state_flags: &str,
) -> Result<(String, u8), CliError> {
    let target = target.to_string();
    let resume_opts = |force| ResumeOptions {
        expect_target: Some(target.clone()),
        force,
        after_failure: false,
    };
    let mut report = match mode {
        Mode::Run(params) => {
            executor
                .run(RunRequest {
                    target: target.clone(),
                    params,
                    run_id,
                })
                .await?
        }
        Mode::Resume { force } => executor.resume(resume_opts(force)).await?,
        Mode::Rollback { force } => executor.rollback(resume_opts(force)).await?,
    };
    let mut code = report.exit_code();
    while guided && !token.is_cancelled() && report.outcome == Outcome::Paused {
        let Some(failed) = failed_step(executor).await else {
            break;
        };
        if !ask_on_failure.contains(&failed.0) {
            break;
        }
        match ui::terminal::ask_after_failure(&failed.0, &failed.1) {
            FailureChoice::Retry => {
                report = executor.resume(resume_opts(false)).await?;
                code = report.exit_code();
            }
            FailureChoice::Rollback => {
                // The failure's rollback, not one asked for on a healthy run: exit 3, as
                // unattended, in the exit code and in the events alike.
                report = executor
                    .rollback(ResumeOptions {
                        after_failure: true,
                        ..resume_opts(false)
                    })
                    .await?;
                code = report.exit_code();
            }
            FailureChoice::Halt => {
                eprintln!(
                    "halted: step {:?} failed and nothing more was changed (exit 4); retry it with: asm-canary resume {s}   or roll back with: asm-canary rollback {s}",
                    failed.0,
                    s = state_flags
                );
                break;
            }
        }
    }
    Ok((report.run_id.clone(), code))
}

/// The terminal view of a guided run: a failure that will be put to the person is shown as
/// a failure (not as the runbook's `halt`), the pause it causes is left to the question, and a
/// rollback chosen after a failure reports exit 3, as an unattended run would.
struct GuidedView {
    inner: Arc<ui::Terminal>,
    /// A person answers prompts: the prompt itself says what needs approval.
    guided: bool,
    ask: std::collections::BTreeSet<String>,
}

impl EventSink for GuidedView {
    fn emit(&self, record: &EventRecord) {
        let mut record = record.clone();
        match &mut record.event {
            Event::ApprovalNeeded { .. } if self.guided => return,
            Event::StepFailed {
                step, on_failure, ..
            } if self.ask.contains(step.as_str()) => *on_failure = None,
            Event::RunFinished {
                outcome: Outcome::Paused,
                reason: Some(reason),
                ..
            } if self
                .ask
                .iter()
                .any(|s| reason.starts_with(&format!("step {s:?} failed"))) =>
            {
                return;
            }
            _ => {}
        }
        self.inner.emit(&record);
    }
}

/// The forward step that failed and left the run paused (guided mode halts on failures), with
/// its error.
async fn failed_step(executor: &Executor) -> Option<(String, String)> {
    let cp = executor.checkpoint().await.ok()?;
    let id = cp.failed_step.clone()?;
    let rec = cp
        .steps
        .iter()
        .find(|s| s.id == id && s.status == StepStatus::Failed)?;
    Some((id, rec.error.clone().unwrap_or_default()))
}

fn open_event_log(state: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(crate::report::events_path(state))
}

/// Writes `<state>.report.md` and names it on stderr; a failure to write is a warning, since
/// the checkpoint is the record and `asm-canary report` can rebuild it.
fn write_report(state: &Path, run_id: &str) {
    let cp = match std::fs::read(state).ok().and_then(|b| {
        Checkpoint::from_json(&b, &state.display().to_string(), Access::ReadOnly).ok()
    }) {
        Some(cp) => cp,
        None => return,
    };
    let events = crate::report::read_events(state, run_id);
    let md = crate::report::markdown(&crate::report::Timeline::build(cp, &events));
    let path = crate::report::report_path(state);
    match std::fs::write(&path, md) {
        Ok(()) => eprintln!("report: {}", path.display()),
        Err(e) => eprintln!(
            "asm-canary: warning: cannot write the report {}: {e}; run asm-canary report --state {}",
            path.display(),
            state.display()
        ),
    }
}

/// What `execute` needs to know of an existing checkpoint before the engine reads it.
struct Peek {
    run_id: String,
    target: String,
    finished: bool,
    /// The revisions the `complete` step journaled asking ARM for (its PUT may have landed).
    complete_put: Option<Vec<String>>,
}

/// The step whose ARM PUT removes the source revision: past it, a rollback cannot work.
const COMPLETE_STEP: &str = "complete";

async fn peek_checkpoint(store: &Store) -> Option<Peek> {
    let bytes = store.read().await.ok()??;
    let doc: Value = serde_json::from_slice(&bytes).ok()?;
    let complete_put = doc["journal"].as_array().and_then(|j| {
        j.iter()
            .filter(|e| e["step"] == COMPLETE_STEP && e["kind"] == "arm-put-revisions")
            .filter_map(|e| serde_json::from_value(e["details"]["revisions"].clone()).ok())
            .next_back()
    });
    Some(Peek {
        run_id: doc["run_id"].as_str()?.to_string(),
        target: doc["target"].as_str()?.to_string(),
        finished: matches!(doc["state"].as_str(), Some("completed" | "rolled_back")),
        complete_put,
    })
}

/// A run killed after its complete PUT was sent cannot be rolled back: the source revision
/// is gone (or going), and moving the tag back to it would break injection. Refuses (exit 2,
/// nothing written) unless the cluster shows the PUT never landed (both revisions, idle).
async fn refuse_rollback_while_completing(
    env: &Env,
    run: &RunArgs,
    state: &Path,
    asked: &[String],
) -> Result<(), CliError> {
    let doc = env
        .arm
        .get_cluster(&env.cluster)
        .await
        .map_err(|e| CliError::Connect(e.to_string()))?;
    let now = doc.revisions();
    if doc.is_idle() && !crate::azure::same_revisions(&now, asked) {
        return Ok(());
    }
    let how = state_flags(run, state);
    Err(CliError::bad(format!(
        "cannot roll back: this run was completing — its complete step asked ARM for revisions [{}] and the cluster now has [{}]{}; the source revision is gone or going, so a rollback would leave workloads without a control plane. Finish the run instead: asm-canary resume {how} --approve complete (the checkpoint was left untouched)",
        asked.join(", "),
        now.join(", "),
        if doc.is_idle() {
            ""
        } else {
            " (an update is still running)"
        },
    )))
}

/// Takes the cluster's Lease for `run_id`, asking before breaking a live one.
async fn take_lock(env: &Env, run: &RunArgs, run_id: &str) -> Result<RunLock, CliError> {
    let mut opts = LockOptions {
        duration: std::time::Duration::from_secs(run.lock_duration.max(1)),
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
                    return Err(CliError::Locked(format!(
                        "the lock held by {theirs} was not broken (not confirmed)"
                    )));
                }
            }
            Err(e @ (LockError::Held { .. } | LockError::NotConfirmed { .. })) => {
                return Err(CliError::Locked(e.to_string()));
            }
            Err(e) => return Err(CliError::Connect(e.to_string())),
        }
    };
    match &lock.acquired {
        Acquired::Created | Acquired::OwnStale(_) => {}
        Acquired::Expired(h) => eprintln!(
            "asm-canary: warning: took over the expired cluster lock of {h} (Lease aks-istio-system/asm-canary-lock)"
        ),
        Acquired::Broken(h) => eprintln!(
            "asm-canary: warning: broke the live cluster lock of {h} (Lease aks-istio-system/asm-canary-lock) on --break-lock"
        ),
    }
    Ok(lock)
}

pub async fn upgrade(args: UpgradeArgs) -> Result<u8, CliError> {
    let UpgradeArgs {
        cluster,
        upgrade,
        run,
    } = args;
    let params = upgrade.params()?;
    let connected = connect(&cluster, Pace::Real).await?;
    let state = run
        .state
        .clone()
        .unwrap_or_else(|| default_state(&connected.env.cluster.name));
    // A new run only: an existing checkpoint is refused by the engine as it stands.
    if run.state_backend == StateBackend::Kubernetes || !state.exists() {
        super::validate::validate_new_run(&connected.env, upgrade.to.as_deref()).await?;
    }
    if interactive(&run) {
        super::plan::show_plan(&connected.env, &upgrade, &params, run.runbook.as_deref()).await?;
    }
    execute(connected.env, &run, Mode::Run(params), state).await
}

/// The checkpoint's target, for commands that take only `--state`.
pub fn checkpoint_cluster(state: &Path) -> Result<crate::azure::ClusterId, CliError> {
    let text = std::fs::read_to_string(state)
        .map_err(|e| CliError::bad(format!("--state {}: cannot read it: {e}", state.display())))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| {
        CliError::bad(format!(
            "--state {}: not a checkpoint (invalid JSON at line {}, column {}); it was left untouched",
            state.display(),
            e.line(),
            e.column()
        ))
    })?;
    let target = doc["target"].as_str().ok_or_else(|| {
        CliError::bad(format!(
            "--state {}: no target cluster recorded in it",
            state.display()
        ))
    })?;
    target
        .parse()
        .map_err(|e| CliError::bad(format!("--state {}: its target: {e}", state.display())))
}

/// `resume` and `rollback` default their cluster to the checkpoint's.
pub fn cluster_from_checkpoint(cluster: &mut ClusterArgs, state: &Path) -> Result<(), CliError> {
    if cluster.cluster_id.is_none() && cluster.cluster.is_none() {
        cluster.cluster_id = Some(checkpoint_cluster(state)?.to_string());
        cluster.subscription = None;
        cluster.resource_group = None;
    }
    Ok(())
}

pub async fn resume(args: ResumeArgs, rollback: bool) -> Result<u8, CliError> {
    let ResumeArgs {
        mut cluster,
        run,
        force,
    } = args;
    let state = match (run.state.clone(), run.state_backend) {
        (Some(state), StateBackend::File) => {
            cluster_from_checkpoint(&mut cluster, &state)?;
            state
        }
        // The checkpoint is in the cluster: the cluster flags (or environment) say which.
        (state, StateBackend::Kubernetes) => state.unwrap_or_default(),
        (None, StateBackend::File) => {
            return Err(CliError::bad(
                "--state FILE is required: the checkpoint of the run to continue (or --state-backend kubernetes)",
            ));
        }
    };
    let connected = connect(&cluster, Pace::Real).await?;
    let mode = if rollback {
        Mode::Rollback { force }
    } else {
        Mode::Resume { force }
    };
    execute(connected.env, &run, mode, state).await
}

/// Asks a yes/no question on the terminal; anything but y/yes is no.
fn confirm(question: &str) -> bool {
    use std::io::Write;
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}
