//! `asm-canary fleet run`: the fleet's rings from one process. The scheduler
//! ([`crate::fleet::schedule`]) decides the order; this file gives it a cluster runner (each
//! cluster's upgrade through the same runbook, lock, owner record and checkpoint in that
//! cluster's ConfigMap as `upgrade --state-backend kubernetes`), the fleet checkpoint file,
//! the output and the approvals between stages.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use asm_canary_engine::{
    Access, CancellationToken, CheckpointStore, EngineError, FileStore, RunState,
};
use async_trait::async_trait;
use clap::{Args, Parser};

use super::args::{ClusterArgs, OutputArg};
use super::connect::{Azure, Pace};
use super::error::CliError;
use super::request::UpgradeOptions;
use super::run::{MemberRun, Mode, RunArgs, execute_with};
use super::state::{StateArgs, StateBackend};
use crate::contract::exit;
use crate::contract::fleet::{ClusterStatus, FleetEvent, FleetState, Verdict};
use crate::fleet::schedule::{ClusterJob, ClusterResult, ClusterRunner, FleetIo};
use crate::fleet::verdict::{FoundRun, Judged, judge, startable};
use crate::fleet::{FleetFile, Member, Rings, Source, UpgradeSettings, assign, members_of};
use crate::steps::Env;
use crate::ui::fleet::FleetOutput;

#[derive(Debug, Clone, Args)]
pub struct FleetRunArgs {
    /// The fleet file (see docs/fleet.md).
    #[arg(long, value_name = "FILE")]
    pub fleet: PathBuf,
    /// The fleet checkpoint: created by the first run, continued by the next (its event log
    /// and report are written next to it).
    #[arg(long, value_name = "FILE", default_value = "asm-canary-fleet.json")]
    pub state: PathBuf,
    /// Approve the stage after NAME in advance: `stage:NAME` (repeatable).
    #[arg(long = "approve", value_name = "stage:NAME")]
    pub approve: Vec<String>,
    /// Never prompt: an approval between stages pauses the fleet (exit 4).
    #[arg(long)]
    pub unattended: bool,
    /// `text` for people (stderr), `json` for pipelines (JSON Lines on stdout).
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
    /// How long each cluster's lock lasts without renewal, in seconds (1 to 3600).
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(super::run::LOCK_SECONDS))]
    pub lock_duration: u64,
    #[command(flatten)]
    pub azure: ClusterArgs,
}

/// The flags of one `upgrade` a fleet stage stands for, parsed as `upgrade` parses them.
#[derive(Parser)]
#[command(no_binary_name = true)]
struct StageFlags {
    #[command(flatten)]
    upgrade: UpgradeOptions,
    #[arg(long = "approve")]
    approve: Vec<String>,
}

/// A stage's upgrade settings as `upgrade` flags: the same options the generated pipelines
/// pass, parsed the same way.
pub fn stage_options(
    settings: &UpgradeSettings,
) -> Result<(UpgradeOptions, Vec<String>), CliError> {
    let flags = StageFlags::try_parse_from(settings.upgrade_flags()).map_err(|e| {
        CliError::bad(format!(
            "the fleet file's upgrade settings: {}",
            e.to_string().trim()
        ))
    })?;
    Ok((flags.upgrade, flags.approve))
}

/// Every stage's upgrade settings, as the runs of its clusters will get them (over `base`),
/// checked against the upgrade runbook's params before ARM is asked anything: a name or value
/// the runbook refuses (`nonsense_param: 3`, `soak: abc`) halted the fleet at its first
/// cluster, for good.
pub fn check_stage_params(
    file: &FleetFile,
    base: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), CliError> {
    for stage in &file.stages {
        let mut params = base.clone();
        params.extend(stage_options(&stage.upgrade)?.0.params()?);
        super::request::Builtin::Upgrade
            .check_params(&params)
            .map_err(|e| {
                CliError::bad(format!(
                    "{}: stage {:?}: the upgrade settings: {}; nothing was started",
                    file.origin,
                    stage.name,
                    e.chain()
                ))
            })?;
    }
    Ok(())
}

/// The stages `--approve stage:NAME` names; anything else is refused.
pub fn stage_approvals(given: &[String], file: &FleetFile) -> Result<Vec<String>, CliError> {
    given
        .iter()
        .map(|a| {
            let name = a.strip_prefix("stage:").ok_or_else(|| {
                let hint = if file.stages.iter().any(|s| &s.name == a) {
                    format!("; did you mean --approve stage:{a}?")
                } else {
                    String::new()
                };
                CliError::bad(format!(
                    "--approve {a:?}: fleet run approves stages: --approve stage:NAME (the stage after which the next may start; a cluster's steps are approved by the fleet file's upgrade.approve){hint}"
                ))
            })?;
            if !file.stages.iter().any(|s| s.name == name) {
                let names: Vec<&str> = file.stages.iter().map(|s| s.name.as_str()).collect();
                return Err(CliError::bad(format!(
                    "--approve {a:?}: {} has no stage {name:?} (stages: {})",
                    file.origin,
                    names.join(", ")
                )));
            }
            // No stage follows the last one: approving it holds nothing back (a typo for an
            // earlier stage, most likely), as the file refuses an approval after it.
            if file.stages.last().is_some_and(|s| s.name == name) {
                return Err(CliError::bad(format!(
                    "--approve {a:?}: {name} is the last stage of {}; --approve stage:NAME lets the stage after NAME start, and none follows it",
                    file.origin
                )));
            }
            Ok(name.to_string())
        })
        .collect()
}

/// The fleet's clusters: ARM's list for each subscription source (paged), and the clusters
/// the file names by id.
pub async fn discover(azure: &Azure, file: &FleetFile) -> Result<Vec<Member>, CliError> {
    let mut listed = Vec::new();
    for source in &file.sources {
        if let Source::Subscription {
            subscription,
            resource_group,
        } = source
        {
            let found = azure
                .arm
                .list_managed_clusters(subscription, resource_group.as_deref())
                .await
                .map_err(|e| {
                    CliError::connect(
                        format!("cannot list the managed clusters of subscription {subscription}"),
                        e,
                    )
                })?;
            listed.extend(found.into_iter().map(|c| Member {
                id: c.id,
                tags: c.tags,
            }));
        }
    }
    Ok(members_of(file, &listed))
}

/// The fleet file and the SHA-256 of its bytes (a fleet run continues only with the same).
pub fn read_fleet(path: &Path) -> Result<(FleetFile, String), CliError> {
    let bytes = std::fs::read(path).map_err(|e| {
        CliError::bad_because(
            format!(
                "cannot read fleet file {}: {e}; check the path",
                path.display()
            ),
            e,
        )
    })?;
    let file = FleetFile::load(path).map_err(|e| CliError::bad_because(e.to_string(), e))?;
    Ok((file, asm_canary_engine::sha256_hex(&bytes)))
}

/// The rings of the clusters ARM lists for the fleet's sources.
pub async fn rings_of(file: &FleetFile, azure: &Azure) -> Result<Rings, CliError> {
    let members = discover(azure, file).await?;
    assign(file, &members).map_err(|e| CliError::bad_because(e.to_string(), e))
}

/// `fleet run`.
pub async fn run(args: FleetRunArgs) -> Result<u8, CliError> {
    reject_cluster_flags(&args.azure)?;
    let flags = args.azure.clone();
    let connect = move || super::connect::connect_azure(&flags, Pace::Real, None);
    run_fleet(args, connect, serde_json::Map::new()).await
}

/// A fleet names its clusters; flags for one cluster would be ignored, so they are refused.
fn reject_cluster_flags(azure: &ClusterArgs) -> Result<(), CliError> {
    if azure.kubeconfig.is_some() {
        return Err(CliError::bad(
            "--kubeconfig: a fleet run reaches each cluster with the kubeconfig ARM gives for it (listClusterUserCredential); one kubeconfig cannot serve many clusters — drop it",
        ));
    }
    Ok(())
}

/// `fleet run` (the demo's fleet comes in here too): the local checks, then `connect` to ARM.
/// `params` are runbook params every cluster's run gets unless its stage sets them (the
/// demo's timings).
pub async fn run_fleet(
    args: FleetRunArgs,
    connect: impl FnOnce() -> Result<Azure, CliError>,
    params: serde_json::Map<String, serde_json::Value>,
) -> Result<u8, CliError> {
    // What can be refused locally is, before ARM is asked anything.
    let (file, digest) = read_fleet(&args.fleet)?;
    let approved = stage_approvals(&args.approve, &file)?;
    check_stage_params(&file, &params)?;
    super::run::check_state_path(&args.state)?;
    let store = FileStore::new(&args.state);
    let _lock = store.lock().await.map_err(EngineError::from)?;
    let known = read_state(&args.state)?;
    if let Some(state) = &known {
        check_same_fleet(state, &args, &digest)?;
    }
    let azure = connect()?;
    let rings = rings_of(&file, &azure).await?;
    let resumed = known.is_some();
    let mut state = known.unwrap_or_else(|| {
        crate::fleet::schedule::new_state(&rings, &args.fleet.display().to_string(), &digest)
    });
    crate::fleet::schedule::merge(&mut state, &rings);
    let output = FleetOutput::new(
        args.output == OutputArg::Json,
        open_log(&crate::report::events_path(&args.state)),
    );
    let cancel = CancellationToken::new();
    asm_canary_engine::signals::cancel_on_signals(cancel.clone())
        .map_err(|e| CliError::internal("cannot install the Ctrl-C handler", e))?;
    output.fleet_event(
        &state.fleet_run_id,
        FleetEvent::FleetStarted {
            fleet_run_id: state.fleet_run_id.clone(),
            resumed,
            stages: rings.rings.iter().map(|r| r.stage.name.clone()).collect(),
            clusters: rings.rings.iter().map(|r| r.clusters.len()).sum(),
        },
    );
    let io = CliIo {
        path: args.state.clone(),
        output: output.clone(),
        approved,
        guided: !args.unattended
            && args.output == OutputArg::Text
            && super::run::terminal_at_hand(),
    };
    let runner = Arc::new(CliRunner {
        azure: Arc::new(azure),
        output,
        lock_duration: args.lock_duration,
        cancel: cancel.clone(),
        params,
    });
    let code = crate::fleet::schedule::run_rings(&rings, &mut state, runner, &io, &cancel)
        .await
        .map_err(|e| CliError::internal("the fleet checkpoint", e))?;
    write_fleet_report(&args.state, &state);
    Ok(code)
}

fn write_fleet_report(path: &Path, state: &FleetState) {
    let md = crate::fleet::report::markdown(state);
    let report = crate::report::report_path(path);
    match asm_canary_engine::checkpoint::write_atomic(&report, md.as_bytes()) {
        Ok(()) => crate::say!("fleet report: {}", report.display()),
        Err((_, e)) => crate::say!(
            "asm-canary: warning: cannot write the fleet report {}: {e}; asm-canary fleet status --state {} shows the same",
            report.display(),
            path.display()
        ),
    }
}

/// The fleet checkpoint at `path`, if there is one; one that cannot be read is bad input.
pub fn read_state(path: &Path) -> Result<Option<FleetState>, CliError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CliError::bad_because(
                format!(
                    "--state {}: cannot read the fleet checkpoint: {e}",
                    path.display()
                ),
                e,
            ));
        }
    };
    let state: FleetState = serde_json::from_slice(&bytes).map_err(|e| {
        CliError::bad_because(
            format!(
                "--state {}:{}:{}: not a fleet checkpoint ({e}); give the file a fleet run wrote, or a new path to start a new fleet run (it was left untouched)",
                path.display(),
                e.line(),
                e.column()
            ),
            e,
        )
    })?;
    if state.schema != crate::contract::fleet::FLEET_STATE_SCHEMA {
        return Err(CliError::bad(format!(
            "--state {}: schema {:?}, this asm-canary reads {:?}; use the asm-canary that wrote it (it was left untouched)",
            path.display(),
            state.schema,
            crate::contract::fleet::FLEET_STATE_SCHEMA
        )));
    }
    Ok(Some(state))
}

/// A fleet run continues only with the fleet file it began with.
fn check_same_fleet(state: &FleetState, args: &FleetRunArgs, digest: &str) -> Result<(), CliError> {
    if state.fleet_digest != digest {
        return Err(CliError::bad(format!(
            "--state {}: this fleet run began with another version of the fleet file ({}); run it with that file, or start a new fleet run with another --state (nothing was changed)",
            args.state.display(),
            state.fleet_file
        )));
    }
    Ok(())
}

fn open_log(path: &Path) -> Option<Box<dyn Write + Send>> {
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    asm_canary_engine::checkpoint::no_follow(&mut opts);
    match opts.open(path) {
        Ok(f) => Some(Box::new(f)),
        Err(e) => {
            crate::say!(
                "asm-canary: warning: cannot append to the fleet event log {}: {e}",
                path.display()
            );
            None
        }
    }
}

/// The fleet checkpoint file, the output, and the approvals between stages.
struct CliIo {
    path: PathBuf,
    output: Arc<FleetOutput>,
    approved: Vec<String>,
    guided: bool,
}

#[async_trait]
impl FleetIo for CliIo {
    fn save(&self, state: &FleetState) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
        asm_canary_engine::checkpoint::write_atomic(&self.path, &bytes)
            .map_err(|(op, e)| format!("{}: cannot {op}: {e}", self.path.display()))
    }

    fn event(&self, fleet_run_id: &str, event: FleetEvent) {
        self.output.fleet_event(fleet_run_id, event);
    }

    async fn approve(&self, stage: &str, next: &str) -> Option<String> {
        let who = || {
            crate::ui::terminal::approver_name(
                &crate::azure::auth::process_env,
                crate::ui::terminal::effective_user,
            )
        };
        if self.approved.iter().any(|s| s == stage) {
            return Some(format!("--approve stage:{stage} ({})", who()));
        }
        if self.guided {
            let question = format!("Stage {stage} is done. Start stage {next}?");
            let yes = tokio::task::spawn_blocking(move || super::confirm(&question))
                .await
                .unwrap_or(false);
            return yes.then(|| format!("{} at the prompt", who()));
        }
        None
    }
}

/// Each cluster's upgrade, as `upgrade --state-backend kubernetes --unattended` runs it.
struct CliRunner {
    azure: Arc<Azure>,
    output: Arc<FleetOutput>,
    lock_duration: u64,
    cancel: CancellationToken,
    params: serde_json::Map<String, serde_json::Value>,
}

/// A cluster's upgrade starts, resumes, or is already decided.
enum Prepared {
    Go(Mode),
    Done(ClusterResult),
}

#[async_trait]
impl ClusterRunner for CliRunner {
    async fn run(&self, job: ClusterJob) -> ClusterResult {
        match self.upgrade(&job).await {
            Ok(r) => r,
            // The cluster could not be reached, or another run holds it: nothing of this run
            // changed it, and running the fleet again tries again. Anything else needs a person.
            Err(e) => ClusterResult {
                status: match e.exit_code() {
                    exit::INTERNAL | exit::LOCKED => ClusterStatus::Paused,
                    _ => ClusterStatus::Failed,
                },
                exit_code: Some(e.exit_code()),
                reason: Some(e.chain()),
            },
        }
    }
}

impl CliRunner {
    async fn upgrade(&self, job: &ClusterJob) -> Result<ClusterResult, CliError> {
        // A member ARM answers 404 for is bad input to a single-cluster command; in a fleet it
        // is a cluster that cannot be reached now (deleted, or not yet there): it pauses the
        // fleet, as any unreachable cluster does, rather than end it as bad input.
        let env = match self.azure.cluster(job.cluster.clone()).await {
            Err(CliError::BadInput { message, source }) => {
                return Err(CliError::Connect {
                    context: message,
                    source,
                });
            }
            r => r?,
        };
        let (upgrade, approve) = stage_options(&job.stage.upgrade)?;
        let run = RunArgs {
            unattended: true,
            approve,
            checkpoint: StateArgs {
                state: None,
                state_backend: StateBackend::Kubernetes,
            },
            output: OutputArg::Json,
            runbook: None,
            break_lock: false,
            take_over: false,
            yes: false,
            lock_duration: self.lock_duration,
            prometheus: Default::default(),
            builtin: Default::default(),
        };
        let location = run.checkpoint.locate(&env, None);
        let mode = match prepare(&env, job, &upgrade, &run.approve, location.store.as_ref()).await?
        {
            Prepared::Go(Mode::Run(params)) => {
                let mut all = self.params.clone();
                all.extend(params);
                Mode::Run(all)
            }
            Prepared::Go(mode) => mode,
            Prepared::Done(result) => return Ok(result),
        };
        let id = job.cluster.to_string();
        let sink = self
            .output
            .cluster_sink(&id, &job.cluster.name, &job.stage.name);
        let member = MemberRun {
            sink: sink.clone(),
            run_id: job.run_id.clone(),
            cancel: self.cancel.clone(),
        };
        let code = execute_with(env, &run, mode, location, Some(member)).await?;
        let reason = sink.finished().and_then(|(_, r)| r);
        Ok(result_of(code, reason))
    }
}

/// Resume the fleet's own run of this cluster, or judge a new one.
async fn prepare(
    env: &Env,
    job: &ClusterJob,
    upgrade: &UpgradeOptions,
    approve: &[String],
    store: &dyn CheckpointStore,
) -> Result<Prepared, CliError> {
    let stored = store
        .load(Access::ReadOnly)
        .await
        .map_err(EngineError::from)?;
    if let Some(cp) = &stored
        && cp.run_id == job.run_id
    {
        return Ok(match cp.state {
            RunState::Completed => Prepared::Done(result_of(exit::OK, None)),
            RunState::RolledBack => Prepared::Done(result_of(exit::ROLLED_BACK, cp.reason.clone())),
            _ => Prepared::Go(Mode::Resume { force: false }),
        });
    }
    let found = match stored {
        Some(cp) => Some(FoundRun {
            finished: matches!(cp.state, RunState::Completed | RunState::RolledBack),
            run_id: cp.run_id,
        }),
        None => owner_run(env, &job.run_id).await?,
    };
    let judged = judged(env, upgrade, found.as_ref()).await?;
    if !startable(&judged, approve) {
        let status = match judged.verdict {
            Verdict::AtTarget => ClusterStatus::UpToDate,
            _ => ClusterStatus::Blocked,
        };
        return Ok(Prepared::Done(ClusterResult {
            status,
            exit_code: None,
            reason: Some(judged.detail),
        }));
    }
    match super::validate::validate_new_run(env, upgrade, false).await {
        Ok(_) => Ok(Prepared::Go(Mode::Run(upgrade.params()?))),
        Err(e) if e.exit_code() == exit::BAD_INPUT => Ok(Prepared::Done(ClusterResult {
            status: ClusterStatus::Blocked,
            exit_code: None,
            reason: Some(e.chain()),
        })),
        Err(e) => Err(e),
    }
}

/// The single-cluster preflight's verdict on a new upgrade.
pub async fn judged(
    env: &Env,
    upgrade: &UpgradeOptions,
    found: Option<&FoundRun>,
) -> Result<Judged, CliError> {
    let to = (upgrade.to.as_deref())
        .map(str::parse::<crate::istio::Revision>)
        .transpose()
        .map_err(|e| CliError::bad_because(format!("the fleet's target: {e}"), e))?;
    let decisions = crate::steps::plan::decide(env, to, false)
        .await
        .map_err(|e| CliError::connect(e.to_string(), e))?;
    Ok(judge(&decisions, &env.cluster.name, found))
}

/// An unfinished run that owns the cluster (other than `mine`), from its owner record.
pub async fn owner_run(env: &Env, mine: &str) -> Result<Option<FoundRun>, CliError> {
    match crate::k8s::owner::read(&env.kube).await {
        Ok(Some((theirs, _))) if theirs.run_id != mine => {
            if super::owner::checkpoint_gone(env, &theirs).await.is_some() {
                return Ok(None);
            }
            Ok(Some(FoundRun {
                run_id: theirs.run_id,
                finished: false,
            }))
        }
        Ok(_) => Ok(None),
        Err(e) => Err(CliError::connect(
            "cannot read the cluster's owner record",
            e,
        )),
    }
}

/// A cluster's upgrade's exit code as its standing in the fleet.
fn result_of(code: u8, reason: Option<String>) -> ClusterResult {
    let status = match code {
        exit::OK => ClusterStatus::Completed,
        exit::ROLLED_BACK => ClusterStatus::RolledBack,
        exit::PAUSED | exit::LOCKED => ClusterStatus::Paused,
        _ => ClusterStatus::Failed,
    };
    ClusterResult {
        status,
        exit_code: Some(code),
        reason,
    }
}
