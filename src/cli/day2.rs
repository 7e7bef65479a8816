//! The day-2 commands: `patch-restart` (restart the workloads whose proxy is older than their
//! revision's injector) and `onboard -n NS…` (bring namespaces into the mesh). Each runs its
//! built-in runbook on the same engine as `upgrade`: the same checkpoint, events, report,
//! approvals, lock and exit codes; `--plan` prints the plan and changes nothing.

use std::sync::Arc;

use clap::Args;
use serde_json::{Map, Value, json};

use super::args::{ClusterArgs, OutputArg};
use super::connect::{Pace, connect};
use super::error::CliError;
use super::request::{Builtin, load_builtin_or};
use super::run::{Mode, RunArgs, execute, interactive};
use crate::steps::Env;
use crate::steps::day2::Day2Plan;

/// How the day-2 restarts go: waves, parallelism, soak, and any runbook param.
#[derive(Debug, Clone, Args)]
pub struct Day2Options {
    /// Workloads restarted at once within a wave: a count (4) or a percentage of the wave (25%).
    #[arg(long, value_name = "N|P%")]
    pub parallelism: Option<String>,
    /// How the waves after the first (the namespace with the fewest workloads) grow: a
    /// factor (x2, the default) or cumulative percentages of the rest (10%,30%,100%).
    #[arg(long, value_name = "xN|P%,…")]
    pub waves: Option<String>,
    /// How long every proxy must stay SYNCED before verify passes (e.g. 2m).
    #[arg(long)]
    pub soak: Option<String>,
    /// Restart the pods of `OnDelete` StatefulSets and DaemonSets one at a time.
    #[arg(long)]
    pub restart_ondelete: bool,
    /// Set any runbook param: KEY=VALUE (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Print the plan (what would be restarted, in which waves, behind which gates) and
    /// change nothing.
    #[arg(long)]
    pub plan: bool,
}

impl Day2Options {
    /// The runbook params these options set (only those given: the runbook's defaults otherwise).
    pub fn params(&self) -> Result<Map<String, Value>, CliError> {
        let Day2Options {
            parallelism,
            waves,
            soak,
            restart_ondelete,
            params,
            plan: _,
        } = self;
        let mut map = Map::new();
        if let Some(p) = parallelism {
            map.insert("parallelism".into(), json!(p));
        }
        if let Some(w) = waves {
            crate::steps::wave::Growth::parse(w).map_err(CliError::bad)?;
            map.insert("waves".into(), json!(w));
        }
        if let Some(s) = soak {
            map.insert("soak".into(), json!(s));
        }
        if *restart_ondelete {
            map.insert("restart_ondelete".into(), json!(true));
        }
        map.extend(super::request::param_pairs(params)?);
        Ok(map)
    }
}

#[derive(Debug, Clone, Args)]
pub struct PatchRestartArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Only these namespaces (comma-separated or repeated); default: every application namespace.
    #[arg(
        short = 'n',
        long = "namespace",
        value_delimiter = ',',
        value_name = "NS",
        value_parser = super::args::namespace_name
    )]
    pub namespaces: Vec<String>,
    #[command(flatten)]
    pub options: Day2Options,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, Args)]
pub struct OnboardArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The namespaces to bring into the mesh (comma-separated or repeated).
    #[arg(
        short = 'n',
        long = "namespace",
        value_delimiter = ',',
        value_name = "NS",
        value_parser = super::args::namespace_name,
        required = true
    )]
    pub namespaces: Vec<String>,
    /// The revision tag to label them with (`istio.io/rev=<tag>`).
    #[arg(long, default_value = "prod", conflicts_with = "revision")]
    pub tag: String,
    /// Label them with this revision (asm-X-Y) instead of the tag.
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    #[command(flatten)]
    pub options: Day2Options,
    #[command(flatten)]
    pub run: RunArgs,
}

pub async fn patch_restart(args: PatchRestartArgs) -> Result<u8, CliError> {
    let PatchRestartArgs {
        cluster,
        namespaces,
        options,
        mut run,
    } = args;
    let mut params = options.params()?;
    if !namespaces.is_empty() {
        params.insert("namespaces".into(), json!(namespaces));
    }
    run.builtin = Builtin::PatchRestart;
    if run.runbook.is_none() {
        run.builtin.check_params(&params)?;
    }
    let env = connect(&cluster, Pace::Real).await?.env;
    start(env, run, params, options.plan).await
}

pub async fn onboard(args: OnboardArgs) -> Result<u8, CliError> {
    let OnboardArgs {
        cluster,
        namespaces,
        tag,
        revision,
        options,
        mut run,
    } = args;
    if let Some(r) = &revision {
        r.parse::<crate::istio::Revision>()
            .map_err(|e| CliError::bad_because(format!("--revision {r:?}: {e}"), e))?;
    }
    let mut params = options.params()?;
    params.insert("namespaces".into(), json!(namespaces));
    params.insert("tag".into(), json!(tag));
    params.insert("revision".into(), json!(revision.unwrap_or_default()));
    run.builtin = Builtin::Onboard;
    if run.runbook.is_none() {
        run.builtin.check_params(&params)?;
    }
    let env = connect(&cluster, Pace::Real).await?.env;
    start(env, run, params, options.plan).await
}

/// The plan of `run.builtin` with `params`; a refusal is bad input (exit 2).
pub async fn day2_plan(
    env: &Arc<Env>,
    run: &RunArgs,
    params: &Map<String, Value>,
) -> Result<Day2Plan, CliError> {
    let (runbook, _) = load_builtin_or(run.runbook.as_deref(), run.builtin, env.clone())?;
    let failed = |e: asm_canary_engine::StepError| CliError::connect("cannot plan", e);
    match run.builtin {
        Builtin::Onboard => crate::steps::day2::onboard_plan(env, &runbook, params)
            .await
            .map_err(failed)?
            .map_err(|why| CliError::bad(format!("{why}; nothing was changed"))),
        _ => crate::steps::day2::patch_plan(env, &runbook, params)
            .await
            .map_err(|e| CliError::bad(format!("{e}; nothing was changed"))),
    }
}

/// `--plan`: the plan, nothing changed. Otherwise the plan is made first (a refusal exits 2
/// before anything is taken or written; nothing to do exits 0), shown to a person, then the
/// runbook runs.
async fn start(
    env: Arc<Env>,
    run: RunArgs,
    params: Map<String, Value>,
    plan_only: bool,
) -> Result<u8, CliError> {
    let plan = day2_plan(&env, &run, &params).await?;
    let text = crate::steps::day2::render(&plan, super::plan::render_gate);
    if plan_only {
        match run.output {
            OutputArg::Json => super::print_document("plan", &plan)?,
            OutputArg::Text => super::print_stdout(&text),
        }
        return Ok(crate::contract::exit::OK);
    }
    if plan.nothing_to_do {
        for w in &plan.warnings {
            crate::say!("asm-canary: {w}");
        }
        crate::say!("asm-canary: {}; nothing was changed", plan.verdict);
        return Ok(crate::contract::exit::OK);
    }
    if interactive(&run) {
        crate::say!("{text}");
    }
    let location = run.checkpoint.locate(
        &env,
        Some(std::path::PathBuf::from(format!(
            "asm-canary-{}-{}.json",
            match run.builtin {
                Builtin::Onboard => "onboard",
                _ => "patch",
            },
            env.cluster.name
        ))),
    );
    if let Some(file) = &location.file {
        super::run::check_state_path(file)?;
    }
    super::run::refuse_existing(&location.store).await?;
    execute(env, &run, Mode::Run(params), location).await
}
