//! Where a run lives: `--state FILE` and `--state-backend`, declared once ([`StateArgs`]) and
//! resolved once into a [`RunLocation`]: the checkpoint store, the file its event log and
//! report go next to (if any), and how commands name it (`--state FILE` or
//! `--state-backend kubernetes`).

use std::path::{Path, PathBuf};

use asm_canary_engine::{Access, Checkpoint, CheckpointStore, FileStore};
use clap::Args;

use super::args::ClusterArgs;
use super::error::CliError;
use crate::k8s::state::ConfigMapStore;
use crate::steps::Env;

/// Where the checkpoint lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StateBackend {
    #[default]
    File,
    Kubernetes,
}

/// The checkpoint flags of every command that reads or writes a run.
#[derive(Debug, Clone, Default, Args)]
pub struct StateArgs {
    /// The checkpoint file of the run (`upgrade` default: asm-canary-<cluster>.json). Its event
    /// log and report are written next to it (<FILE>.events.jsonl, <FILE>.report.md).
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Where the checkpoint lives: `file` (`--state`), or `kubernetes` (the ConfigMap
    /// `asm-canary-run-<cluster>` in aks-istio-system, so any agent can resume; the cluster
    /// flags say which cluster).
    #[arg(long, value_enum, default_value_t = StateBackend::File, env = "ASM_CANARY_STATE_BACKEND")]
    pub state_backend: StateBackend,
}

/// A run's checkpoint, resolved: the store the engine reads and writes, and the files beside it.
pub struct RunLocation {
    pub store: Box<dyn CheckpointStore>,
    /// The checkpoint file, or (with the kubernetes backend) the `--state` path given for the
    /// event log and report; `None` when the checkpoint lives in the cluster alone.
    pub file: Option<PathBuf>,
    /// How commands name this checkpoint: `--state FILE` or `--state-backend kubernetes`.
    pub flags: String,
    pub backend: StateBackend,
}

impl StateArgs {
    /// The checkpoint file a command that continues a run must be given (with the file
    /// backend); `None` with the kubernetes backend. `what` names the command's purpose.
    pub fn existing_file(&self, what: &str) -> Result<Option<&Path>, CliError> {
        match (self.state_backend, self.state.as_deref()) {
            (StateBackend::Kubernetes, _) => Ok(None),
            (StateBackend::File, Some(path)) => Ok(Some(path)),
            (StateBackend::File, None) => Err(CliError::bad(format!(
                "--state FILE is required: the checkpoint {what} (or --state-backend kubernetes with the cluster flags)"
            ))),
        }
    }

    /// Resolves against the connected cluster; `default_file` is the file an `upgrade` uses
    /// when `--state` is not given.
    pub fn locate(&self, env: &Env, default_file: Option<PathBuf>) -> RunLocation {
        match self.state_backend {
            StateBackend::File => {
                let file = self.state.clone().or(default_file).unwrap_or_else(|| {
                    // Unreachable through the commands: each gives a file or a default.
                    PathBuf::from(format!("asm-canary-{}.json", env.cluster.name))
                });
                RunLocation {
                    store: Box::new(FileStore::new(&file)),
                    flags: format!("--state {}", file.display()),
                    file: Some(file),
                    backend: StateBackend::File,
                }
            }
            StateBackend::Kubernetes => RunLocation {
                store: Box::new(ConfigMapStore::new(env.kube.clone(), &env.cluster.name)),
                file: self.state.clone(),
                flags: "--state-backend kubernetes".into(),
                backend: StateBackend::Kubernetes,
            },
        }
    }
}

impl RunLocation {
    pub fn in_cluster(&self) -> bool {
        self.backend == StateBackend::Kubernetes
    }
}

/// Reads a checkpoint file for a command that takes only `--state`: corrupt, foreign or newer
/// files are bad input, and the file is left untouched.
pub fn read_checkpoint_file(path: &Path) -> Result<Checkpoint, CliError> {
    let bytes = std::fs::read(path).map_err(|e| {
        CliError::bad_because(
            format!(
                "--state {}: cannot read it; give the checkpoint a run wrote (upgrade --state FILE, default asm-canary-<cluster>.json)",
                path.display()
            ),
            e,
        )
    })?;
    Checkpoint::from_json(&bytes, &path.display().to_string(), Access::ReadOnly)
        .map_err(|e| CliError::Engine(e.into()))
}

/// `resume`, `rollback` and `status` take their cluster from the checkpoint file. Cluster flags
/// (or `ASM_CANARY_*` variables) that name another cluster are refused: the command would read
/// or change a cluster the checkpoint is not about.
pub fn cluster_from_checkpoint(cluster: &mut ClusterArgs, path: &Path) -> Result<(), CliError> {
    let cp = read_checkpoint_file(path)?;
    let recorded: crate::azure::ClusterId = cp.target.parse().map_err(|e| {
        CliError::bad(format!(
            "--state {}: its target {:?}: {e}",
            path.display(),
            cp.target
        ))
    })?;
    if cluster.cluster_id.is_some() || cluster.cluster.is_some() {
        let given = super::connect::cluster_id(cluster)?;
        // ARM ids compare case-insensitively.
        if !given
            .to_string()
            .eq_ignore_ascii_case(&recorded.to_string())
        {
            return Err(CliError::bad(format!(
                "--state {}: the checkpoint is about cluster {recorded}, but the cluster flags (or ASM_CANARY_* variables) name {given}; drop those flags, or give the checkpoint of {given}",
                path.display()
            )));
        }
    }
    cluster.cluster_id = Some(recorded.to_string());
    cluster.subscription = None;
    cluster.resource_group = None;
    cluster.cluster = None;
    Ok(())
}
