//! `asm-canary fleet …`: the fleet file's commands. Each parses its flags, calls
//! [`crate::fleet`] and renders the result; the decisions live there.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};

use super::error::CliError;
use crate::contract::exit;
use crate::fleet::pipeline::{self, PipelineFormat};
use crate::fleet::{FleetFile, Member, assign, members_of};

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Every cluster of the fleet with its revisions, target, stage and preflight verdict
    /// (ready, at target, stale canary, in progress, blocked and why). Reads only.
    Plan(super::fleet_view::FleetPlanArgs),
    /// Upgrade the fleet from this process: the stages in order, each cluster through the
    /// same runbook, lock and in-cluster checkpoint as `upgrade --state-backend kubernetes`;
    /// a failed cluster halts what follows. Run it again to resume.
    Run(super::fleet_run::FleetRunArgs),
    /// Where a fleet run stands: each cluster's state and the next command. Reads the fleet
    /// checkpoint only.
    Status(super::fleet_view::FleetStatusArgs),
    /// Write a CI pipeline that upgrades the fleet: each stage a ring, each cluster a parallel
    /// job running `asm-canary upgrade` (max-parallel = the stage's max_concurrency), the rings
    /// in order, the soak a wait job, the approval the CI environment's.
    Pipeline(PipelineArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum FormatArg {
    /// A GitHub Actions workflow (.github/workflows/).
    Github,
    /// An Azure Pipelines YAML pipeline.
    AzurePipelines,
}

#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// The fleet file (see docs/fleet.md).
    #[arg(long, value_name = "FILE")]
    pub fleet: PathBuf,
    /// Which CI system to write for.
    #[arg(long, value_enum)]
    pub format: FormatArg,
    /// The clusters of the fleet's subscription sources, with their tags: a JSON list of
    /// `{"id": …, "tags": {…}}`, e.g. from `az aks list --query "[].{id:id,tags:tags}"`. Not needed when
    /// the fleet file lists every cluster by id.
    #[arg(long, value_name = "FILE")]
    pub clusters: Option<PathBuf>,
    /// Write the pipeline to this file (replaced whole, never half-written) instead of stdout
    /// (`-`: stdout). A device, FIFO, folder or read-only file there is refused.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

pub async fn fleet(command: FleetCommand) -> Result<u8, CliError> {
    match command {
        FleetCommand::Pipeline(a) => pipeline_command(a),
        FleetCommand::Plan(a) => super::fleet_view::plan(a).await,
        FleetCommand::Run(a) => super::fleet_run::run(a).await,
        FleetCommand::Status(a) => super::fleet_view::status(a),
    }
}

fn pipeline_command(args: PipelineArgs) -> Result<u8, CliError> {
    let PipelineArgs {
        fleet,
        format,
        clusters,
        output,
    } = args;
    let file = FleetFile::load(&fleet).map_err(|e| CliError::bad_because(e.to_string(), e))?;
    let members = members(&file, clusters.as_deref())?;
    let rings = assign(&file, &members).map_err(|e| CliError::bad_because(e.to_string(), e))?;
    let (format, name) = match format {
        FormatArg::Github => (PipelineFormat::Github, "github"),
        FormatArg::AzurePipelines => (PipelineFormat::AzurePipelines, "azure-pipelines"),
    };
    let mut command = format!(
        "asm-canary fleet pipeline --fleet {} --format {name}",
        fleet.display()
    );
    if let Some(c) = &clusters {
        command += &format!(" --clusters {}", c.display());
    }
    let yaml = pipeline::render(&rings, format, &command)
        .map_err(|e| CliError::bad_because(e.to_string(), e))?;
    match output.filter(|p| p.as_os_str() != "-") {
        None => super::print_stdout(&yaml),
        Some(path) => {
            write_output(&path, &yaml)?;
            let clusters: usize = rings.rings.iter().map(|r| r.clusters.len()).sum();
            let mut said = format!(
                "wrote {}: {} stages, {clusters} clusters",
                path.display(),
                rings.rings.len()
            );
            if !rings.unassigned.is_empty() {
                said += &format!("; {} in no stage (left alone)", rings.unassigned.len());
            }
            let empty = rings.empty_stages();
            if !empty.is_empty() {
                said += &format!("; stages with no cluster: {}", empty.join(", "));
            }
            crate::say!("{said}");
        }
    }
    Ok(exit::OK)
}

/// The fleet's clusters: those listed by id in the fleet file, and those of `--clusters` its
/// sources cover (a listed cluster takes its tags from there).
fn members(file: &FleetFile, clusters: Option<&Path>) -> Result<Vec<Member>, CliError> {
    let listed: Vec<Member> = match clusters {
        Some(path) => read_clusters(path)?,
        None if file.needs_discovery() => {
            return Err(CliError::bad(format!(
                "{}: a source lists every cluster of a subscription or resource group, which only ARM knows; give --clusters FILE (a JSON list of {{\"id\", \"tags\"}}, e.g. from `az aks list --subscription SUB --query \"[].{{id:id,tags:tags}}\"`), or list the clusters by id",
                file.origin
            )));
        }
        None => Vec::new(),
    };
    Ok(members_of(file, &listed))
}

fn read_clusters(path: &Path) -> Result<Vec<Member>, CliError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::bad_because(format!("--clusters {shown}: {e}"), e))?;
    serde_json::from_str(&text).map_err(|e| {
        CliError::bad_because(
            format!(
                "--clusters {shown}:{}:{}: {e}; expected a JSON list of {{\"id\": \"/subscriptions/…\", \"tags\": {{…}}}}",
                e.line(),
                e.column()
            ),
            e,
        )
    })
}

/// Replaces `path` whole (a temp file renamed over it): a reader never sees half a pipeline,
/// and a folder that does not exist is an error, not a file somewhere else.
fn write_output(path: &Path, text: &str) -> Result<(), CliError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(CliError::bad(format!(
            "--output {}: the folder {} does not exist; create it first",
            path.display(),
            dir.display()
        )));
    }
    let fail = |op: &str, e: std::io::Error| {
        CliError::bad_because(format!("--output {}: cannot {op}: {e}", path.display()), e)
    };
    asm_canary_engine::checkpoint::replaceable(path).map_err(|e| fail("replace it", e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".asm-canary-pipeline.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| fail("create a temp file beside it", e))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| fail("write the temp file", e))?;
    // A pipeline is committed and read by CI: the usual permissions, not the temp file's 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(|e| fail("set the permissions", e))?;
    }
    tmp.persist(path)
        .map_err(|e| fail("rename the temp file over it", e.error))?;
    Ok(())
}
