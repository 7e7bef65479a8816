//! `upgrade`, `resume`, `rollback` and `demo`: build the clients, load the runbook, wire the
//! renderers, approvals and Ctrl-C into the engine, run, and turn the outcome into an exit code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use asm_canary_engine::checkpoint::StoreLock;
use asm_canary_engine::{
    Approver, CancellationToken, CheckpointError, CheckpointStore, Executor, FileStore,
    PreApproved, ResumeOptions, RunReport, RunRequest, Runbook,
};
use clap::Args;
use serde_json::{Map, Value, json};

use super::args::{ClusterArgs, OutputArg};
use super::connect::{Pace, connect};
use super::error::CliError;
use crate::k8s::lock::{Acquired, Holder, LockError, LockOptions, RunLock};
use crate::k8s::state::ConfigMapStore;
use crate::steps::Env;
use crate::ui::{self, OutputFormat};

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
    /// The checkpoint file of this run.
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

/// Runs the runbook against `env` and returns the report (the exit code comes from it).
pub async fn execute(
    env: Arc<Env>,
    run: &RunArgs,
    mode: Mode,
    state: PathBuf,
) -> Result<RunReport, CliError> {
    let target = env.cluster.to_string();
    let (runbook, registry) = load_runbook(run.runbook.as_deref(), env.clone())?;
    let format = match run.output {
        OutputArg::Text => OutputFormat::Text,
        OutputArg::Json => OutputFormat::Json,
    };
    let hint = Some(state.display().to_string());
    let sink = ui::sink_for(format, hint);
    let approver: Arc<dyn Approver> = if interactive(run) {
        Arc::new(ui::terminal::TerminalApprover::new())
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
        .with_cancellation(token);
    let result = match mode {
        Mode::Run(params) => {
            executor
                .run(RunRequest {
                    target,
                    params,
                    run_id: lock_run_id,
                })
                .await
        }
        Mode::Resume { force } => {
            executor
                .resume(ResumeOptions {
                    expect_target: Some(target),
                    force,
                })
                .await
        }
        Mode::Rollback { force } => {
            executor
                .rollback(ResumeOptions {
                    expect_target: Some(target),
                    force,
                })
                .await
        }
    };
    if let Some(lock) = lock
        && let Err(e) = lock.release().await
    {
        eprintln!("asm-canary: warning: {e}; it expires by itself");
    }
    Ok(result?)
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
    let how = match run.state_backend {
        StateBackend::File => format!("--state {}", state.display()),
        StateBackend::Kubernetes => "--state-backend kubernetes".to_string(),
    };
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
    let report = execute(connected.env, &run, Mode::Run(params), state).await?;
    Ok(report.exit_code())
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
    let report = execute(connected.env, &run, mode, state).await?;
    Ok(report.exit_code())
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
