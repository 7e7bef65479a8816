//! `asm-canary state show` and `state archive`: the checkpoint kept in the cluster
//! (`--state-backend kubernetes`, the ConfigMap `asm-canary-run-<cluster>`), shown as it is
//! stored, even when it cannot be used, and set aside so that a new run can start.

use asm_canary_engine::{Access, Checkpoint};
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::ConfigMap;

use super::args::ClusterArgs;
use super::connect::{Pace, connect};
use super::error::CliError;
use super::state::{StateArgs, StateBackend};
use crate::contract::exit;
use crate::k8s::lock::{Holder, LockError, LockOptions, RunLock};
use crate::k8s::state::{ConfigMapStore, STATE_KEY, STATE_KEY_GZ, STATE_NAMESPACE, stored_text};

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print the checkpoint kept in the cluster as it is stored (stdout), even when it cannot
    /// be used; where it is and whether it is usable go to stderr.
    Show(StoredArgs),
    /// Set the checkpoint kept in the cluster aside: copy it to
    /// `asm-canary-run-<cluster>-archived-<time>`, then delete it (only if unchanged since it
    /// was read), so that a new run can start. Asks first; `--yes` when unattended.
    Archive {
        #[command(flatten)]
        args: StoredArgs,
        /// Archive without asking.
        #[arg(long)]
        yes: bool,
    },
}

/// The cluster, and `--state-backend kubernetes`.
#[derive(Debug, Clone, Args)]
pub struct StoredArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub checkpoint: StateArgs,
}

pub async fn state(command: StateCommand) -> Result<u8, CliError> {
    match command {
        StateCommand::Show(args) => {
            let (_, store, cm) = read(&args).await?;
            describe(&store, &cm);
            let raw = stored_text(&cm).ok().flatten();
            super::print_stdout(&raw.unwrap_or_default());
            Ok(exit::OK)
        }
        StateCommand::Archive { args, yes } => archive(&args, yes).await,
    }
}

/// Connects and reads the stored ConfigMap; none is bad input.
async fn read(
    args: &StoredArgs,
) -> Result<(std::sync::Arc<crate::steps::Env>, ConfigMapStore, ConfigMap), CliError> {
    if args.checkpoint.state_backend != StateBackend::Kubernetes {
        return Err(CliError::bad(
            "asm-canary state shows and archives the checkpoint kept in the cluster: give --state-backend kubernetes and the cluster flags (a checkpoint file is read and moved like any file)",
        ));
    }
    let env = connect(&args.cluster, Pace::Real).await?.env;
    let store = ConfigMapStore::new(env.kube.clone(), &env.cluster.name);
    let location = format!("configmap {STATE_NAMESPACE}/{}", store.name());
    match store.stored().await {
        Ok(Some(cm)) => Ok((env, store, cm)),
        Ok(None) => Err(CliError::bad(format!(
            "no checkpoint in {location} (cluster {}); nothing to show or archive",
            env.cluster
        ))),
        Err(e) => Err(CliError::connect(format!("cannot read {location}"), e)),
    }
}

/// Where the checkpoint is, and whether a run could use it, on stderr.
fn describe(store: &ConfigMapStore, cm: &ConfigMap) {
    let rv = cm.metadata.resource_version.as_deref().unwrap_or("?");
    let usable = match stored_text(cm) {
        Ok(None) => format!("it holds neither {STATE_KEY} nor {STATE_KEY_GZ}"),
        Err(e) => format!("unusable: {e}"),
        Ok(Some(text)) => {
            match Checkpoint::from_json(text.as_bytes(), STATE_KEY, Access::ReadWrite) {
                Ok(cp) => format!("run {} is {:?}", cp.run_id, cp.state),
                Err(e) => format!("unusable: {e}"),
            }
        }
    };
    crate::say!(
        "configmap {STATE_NAMESPACE}/{} (resourceVersion {rv}): {usable}",
        store.name()
    );
}

async fn archive(args: &StoredArgs, yes: bool) -> Result<u8, CliError> {
    let (env, store, cm) = read(args).await?;
    describe(&store, &cm);
    if !yes {
        let at_terminal = std::io::IsTerminal::is_terminal(&std::io::stdin())
            && std::io::IsTerminal::is_terminal(&std::io::stderr());
        if !at_terminal {
            return Err(CliError::bad(
                "archiving the checkpoint needs confirmation: run it at a terminal, or add --yes; nothing was changed",
            ));
        }
        if !super::confirm("Archive this checkpoint (a new run can then start)?") {
            return Err(CliError::bad("not confirmed; nothing was changed"));
        }
    }
    // Under the cluster lock: a live run keeps its checkpoint.
    let opts = LockOptions {
        duration: std::time::Duration::from_secs(60),
        break_lock: false,
        confirmed: false,
    };
    let holder = Holder::this_process(&format!("archive-{}", uuid::Uuid::new_v4()));
    let lock = match RunLock::acquire(&env.kube, holder, &opts).await {
        Ok(l) => l,
        Err(e @ (LockError::Held { .. } | LockError::NotConfirmed { .. })) => {
            return Err(CliError::locked(
                format!("{e}; the checkpoint of a live run is not archived"),
                Some(e.into()),
            ));
        }
        Err(e) => return Err(CliError::connect("cannot take the cluster lock", e)),
    };
    let result = store.archive(&cm, chrono::Utc::now()).await;
    if let Err(e) = lock.release().await {
        crate::say!("asm-canary: warning: {e}; it expires by itself");
    }
    let archived = result.map_err(|e| CliError::connect("cannot archive the checkpoint", e))?;
    // The archived run can no longer be continued: its owner record goes too.
    let run_id = stored_text(&cm)
        .ok()
        .flatten()
        .and_then(|text| Checkpoint::from_json(text.as_bytes(), STATE_KEY, Access::ReadOnly).ok())
        .map(|cp| cp.run_id);
    if let Some(run_id) = run_id {
        match crate::k8s::owner::release(&env.kube, &run_id).await {
            Ok(true) => crate::say!("released the owner record of run {run_id}"),
            Ok(false) => {}
            Err(e) => crate::say!("asm-canary: warning: {e}"),
        }
    }
    crate::say!(
        "archived to configmap {STATE_NAMESPACE}/{archived}; a new run can start (asm-canary upgrade --state-backend kubernetes)"
    );
    Ok(exit::OK)
}
