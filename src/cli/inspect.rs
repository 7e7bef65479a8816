//! The read-only commands `status`, `proxy-status` and `report` (`plan` is in
//! [`super::plan`]). They change nothing.

use std::path::PathBuf;

use asm_canary_engine::{Checkpoint, RunState, StepStatus};
use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::args::{ClusterArgs, OutputArg};
use super::connect::{Pace, connect};
use super::error::CliError;
use super::run::cluster_from_checkpoint;

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The checkpoint file of the run (with `--state-backend file`, the default).
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Where the checkpoint lives: `file` (`--state`), or `kubernetes` (the ConfigMap
    /// `asm-canary-run-<cluster>` in aks-istio-system; the cluster flags say which cluster).
    #[arg(long, value_enum, default_value_t = super::run::StateBackend::File, env = "ASM_CANARY_STATE_BACKEND")]
    pub state_backend: super::run::StateBackend,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Read only the checkpoint; do not ask the cluster.
    #[arg(long)]
    pub offline: bool,
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

/// The next thing to do: a command to run (when there is one) and a sentence.
#[derive(Debug, Serialize)]
pub struct Next {
    pub command: Option<String>,
    pub explanation: String,
}

/// `state` is how the commands name the checkpoint: `--state FILE` or
/// `--state-backend kubernetes` (`in_cluster`).
fn next_command(cp: &Checkpoint, state: &str, in_cluster: bool) -> Next {
    let cmd = |c: String, e: &str| Next {
        command: Some(c),
        explanation: e.to_string(),
    };
    match cp.state {
        RunState::Completed => Next {
            command: None,
            explanation: "nothing: the run completed".into(),
        },
        RunState::RolledBack => cmd(
            if in_cluster {
                "asm-canary upgrade --state-backend kubernetes".into()
            } else {
                "asm-canary upgrade --state NEW-FILE".into()
            },
            "the run was rolled back to the source revision; fix the cause (see the reason), check with asm-canary plan, then start a new upgrade (with a new checkpoint file, when the checkpoint is a file)",
        ),
        RunState::Paused => match awaiting_approval(cp) {
            Some(step) => cmd(
                format!("asm-canary resume {state} --approve {step}"),
                &format!(
                    "the run waits for approval of step {step:?}; or roll it back with asm-canary rollback {state}"
                ),
            ),
            None => match cp.failed_step.as_ref().filter(|id| {
                cp.steps
                    .iter()
                    .any(|s| &s.id == *id && s.status == StepStatus::Failed)
            }) {
                Some(step) => cmd(
                    format!("asm-canary rollback {state}"),
                    &format!(
                        "step {step:?} failed and the run halted; roll back, or fix the cause and retry the step with asm-canary resume {state}"
                    ),
                ),
                None => cmd(
                    format!("asm-canary resume {state}"),
                    &format!(
                        "the run is paused; resume continues where it stopped, or roll back with asm-canary rollback {state}"
                    ),
                ),
            },
        },
        RunState::Running | RunState::RollingBack => cmd(
            format!("asm-canary resume {state}"),
            "the checkpoint says a run is in progress; if no process is running it (it died), resume continues it without repeating a side effect",
        ),
        RunState::Failed => cmd(
            format!("asm-canary rollback {state}"),
            "the rollback itself failed: a person must look at the reason first, then retry the rollback",
        ),
    }
}

fn awaiting_approval(cp: &Checkpoint) -> Option<String> {
    cp.steps
        .iter()
        .find(|s| s.status == StepStatus::AwaitingApproval)
        .map(|s| s.id.clone())
}

/// A serde enum as its wire word (`rolled_back`, `awaiting_approval`).
fn word<T: Serialize + std::fmt::Debug>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{v:?}"))
}

fn took(s: &asm_canary_engine::StepRecord) -> String {
    match (s.started_at, s.finished_at) {
        (Some(a), Some(b)) => {
            asm_canary_engine::duration::format_duration((b - a).to_std().unwrap_or_default())
        }
        _ => String::new(),
    }
}

pub async fn status(args: StatusArgs) -> Result<u8, CliError> {
    let StatusArgs {
        state,
        state_backend,
        mut cluster,
        offline,
        output,
    } = args;
    let (cp, hint, state, env) = match (state_backend, state) {
        (super::run::StateBackend::File, None) => {
            return Err(CliError::bad(
                "--state FILE is required: the checkpoint a run wrote (or --state-backend kubernetes with the cluster flags)",
            ));
        }
        (super::run::StateBackend::File, Some(state)) => {
            if !state.exists() {
                return Err(CliError::bad(format!(
                    "--state {}: no such file; give the checkpoint a run wrote (upgrade --state FILE, default asm-canary-<cluster>.json)",
                    state.display()
                )));
            }
            let store = asm_canary_engine::FileStore::new(&state);
            let cp = asm_canary_engine::read_checkpoint(&store).await?;
            let env = if offline {
                None
            } else {
                cluster_from_checkpoint(&mut cluster, &state)?;
                Some(connect(&cluster, Pace::Real).await.map(|c| c.env))
            };
            (cp, format!("--state {}", state.display()), Some(state), env)
        }
        (super::run::StateBackend::Kubernetes, state) => {
            if offline {
                return Err(CliError::bad(
                    "--offline reads a checkpoint file; with --state-backend kubernetes the checkpoint is in the cluster",
                ));
            }
            let env = connect(&cluster, Pace::Real).await?.env;
            let store = crate::k8s::state::ConfigMapStore::new(env.kube.clone(), &env.cluster.name);
            let cp = asm_canary_engine::read_checkpoint(&store).await?;
            (
                cp,
                "--state-backend kubernetes".to_string(),
                state,
                Some(Ok(env)),
            )
        }
    };
    let mut now = serde_json::Value::Null;
    match env {
        None => {}
        Some(Ok(env)) => match env.arm.get_cluster(&env.cluster).await {
            Ok(doc) => {
                now = json!({
                    "revisions": doc.revisions(),
                    "provisioning_state": doc.provisioning_state(),
                })
            }
            Err(e) => now = json!({ "error": e.to_string() }),
        },
        Some(Err(e)) => now = json!({ "error": e.to_string() }),
    }
    let next = next_command(
        &cp,
        &hint,
        state_backend == super::run::StateBackend::Kubernetes,
    );
    match output {
        OutputArg::Json => {
            let doc = json!({
                "schema": "asm-canary.status/1.0",
                "run_id": cp.run_id,
                "target": cp.target,
                "state": cp.state,
                "reason": cp.reason,
                "failed_step": cp.failed_step,
                "awaiting_approval": awaiting_approval(&cp),
                "summary": cp.summary,
                "steps": cp.steps.iter().map(|s| json!({"id": s.id, "status": s.status, "attempts": s.attempts, "started_at": s.started_at, "finished_at": s.finished_at, "error": s.error})).collect::<Vec<_>>(),
                "rollback": cp.rollback.iter().map(|s| json!({"id": s.id, "status": s.status, "started_at": s.started_at, "finished_at": s.finished_at, "error": s.error})).collect::<Vec<_>>(),
                "cluster_now": now,
                "next": next,
                "report": state.as_deref().map(crate::report::report_path),
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&doc)
                    .map_err(|e| CliError::Internal(e.to_string()))?
            );
        }
        OutputArg::Text => {
            println!(
                "Run        {} — {}",
                cp.run_id,
                word(&cp.state).replace('_', " ")
            );
            println!("Cluster    {}", cp.target);
            if let (Some(s), Some(t)) = (cp.summary.get("source"), cp.summary.get("target")) {
                println!(
                    "Upgrade    {} → {}",
                    s.as_str().unwrap_or("?"),
                    t.as_str().unwrap_or("?")
                );
            }
            if let Some(r) = &cp.reason {
                println!("Reason     {r}");
            }
            println!("Steps");
            for s in &cp.steps {
                println!(
                    "  {:<16} {:<18} {:>8}{}",
                    s.id,
                    word(&s.status).replace('_', " "),
                    took(s),
                    s.error
                        .as_deref()
                        .map(|e| format!("  {e}"))
                        .unwrap_or_default()
                );
            }
            let rb: Vec<_> = cp
                .rollback
                .iter()
                .filter(|s| s.status != StepStatus::Pending)
                .collect();
            if !rb.is_empty() {
                println!("Rollback");
                for s in rb {
                    println!(
                        "  {:<16} {:<18} {:>8}{}",
                        s.id,
                        word(&s.status).replace('_', " "),
                        took(s),
                        s.error
                            .as_deref()
                            .map(|e| format!("  {e}"))
                            .unwrap_or_default()
                    );
                }
            }
            match &now {
                serde_json::Value::Null => {}
                v if v.get("error").is_some() => println!(
                    "Cluster    now: cannot read it: {}",
                    v["error"].as_str().unwrap_or("")
                ),
                v => println!(
                    "Cluster    now: {}, revisions [{}]",
                    v["provisioning_state"].as_str().unwrap_or("?"),
                    v["revisions"]
                        .as_array()
                        .map(|a| a
                            .iter()
                            .filter_map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default()
                ),
            }
            if let Some(report) = state.as_deref().map(crate::report::report_path)
                && report.exists()
            {
                println!("Report     {}", report.display());
            }
            match &next.command {
                Some(c) => println!("Next       {c}\n           ({})", next.explanation),
                None => println!("Next       {}", next.explanation),
            }
        }
    }
    Ok(crate::exit::OK)
}

#[derive(Debug, Clone, Args)]
pub struct ProxyStatusArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Ask only this revision's istiod (default: every installed revision).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Only proxies of this namespace.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

pub async fn proxy_status(args: ProxyStatusArgs) -> Result<u8, CliError> {
    let ProxyStatusArgs {
        cluster,
        revision,
        namespace,
        output,
    } = args;
    let env = connect(&cluster, Pace::Real).await?.env;
    let revisions = match revision {
        Some(r) => vec![r],
        None => env
            .arm
            .get_cluster(&env.cluster)
            .await
            .map_err(|e| CliError::Connect(e.to_string()))?
            .revisions(),
    };
    let mut rows = Vec::new();
    for rev in &revisions {
        let mut r = crate::k8s::mesh::proxy_status(&env.kube, rev, namespace.as_deref())
            .await
            .map_err(|e| CliError::Connect(e.to_string()))?;
        rows.append(&mut r);
    }
    match output {
        OutputArg::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(|e| CliError::Internal(e.to_string()))?
        ),
        OutputArg::Text => print!("{}", crate::istio::syncz::render_table(&rows)),
    }
    Ok(if rows.iter().all(|r| r.is_synced()) {
        crate::exit::OK
    } else {
        crate::exit::PAUSED
    })
}

#[derive(Debug, Clone, Copy, clap::ValueEnum, Default, PartialEq, Eq)]
pub enum ReportFormat {
    /// Markdown (what every run writes to `<state>.report.md`).
    #[default]
    Md,
    /// A standalone HTML page with the timeline as an inline SVG.
    Html,
    /// The timeline picture alone.
    Svg,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The checkpoint file of the run.
    #[arg(long, value_name = "FILE")]
    pub state: PathBuf,
    #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
    pub format: ReportFormat,
    /// Write it to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub async fn report(args: ReportArgs) -> Result<u8, CliError> {
    let ReportArgs { state, format, out } = args;
    let cp = asm_canary_engine::read_checkpoint(&asm_canary_engine::FileStore::new(&state)).await?;
    let events = crate::report::read_events(&state, &cp.run_id);
    let t = crate::report::Timeline::build(cp, &events);
    let text = match format {
        ReportFormat::Md => crate::report::markdown(&t),
        ReportFormat::Html => crate::report::html(&t),
        ReportFormat::Svg => crate::report::svg(&t) + "\n",
    };
    match out {
        Some(path) => {
            std::fs::write(&path, text).map_err(|e| {
                CliError::bad(format!("--out {}: cannot write it: {e}", path.display()))
            })?;
            eprintln!("report: {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(crate::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(state: &str, steps: serde_json::Value) -> Checkpoint {
        serde_json::from_value(json!({
            "schema_version": "1.0", "kind": "asm-canary/checkpoint", "run_id": "r-1",
            "target": "/subscriptions/s/resourceGroups/rg-sim/providers/Microsoft.ContainerService/managedClusters/aks-sim",
            "runbook": {"name": "asm-canary-upgrade", "sha256": "abc"},
            "params": {}, "state": state,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "steps": steps, "rollback": [], "journal": [], "summary": {}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn next_commands_name_the_checkpoint_as_its_backend_holds_it() {
        let paused = checkpoint(
            "paused",
            json!([{"id": "complete", "status": "awaiting_approval"}]),
        );
        let n = next_command(&paused, "--state run.json", false);
        assert_eq!(
            n.command.as_deref(),
            Some("asm-canary resume --state run.json --approve complete")
        );
        let n = next_command(&paused, "--state-backend kubernetes", true);
        assert_eq!(
            n.command.as_deref(),
            Some("asm-canary resume --state-backend kubernetes --approve complete")
        );
        assert!(
            n.explanation
                .contains("asm-canary rollback --state-backend kubernetes")
        );
        let rolled_back = checkpoint("rolled_back", json!([]));
        assert_eq!(
            next_command(&rolled_back, "--state run.json", false)
                .command
                .as_deref(),
            Some("asm-canary upgrade --state NEW-FILE")
        );
        assert_eq!(
            next_command(&rolled_back, "--state-backend kubernetes", true)
                .command
                .as_deref(),
            Some("asm-canary upgrade --state-backend kubernetes")
        );
        let completed = checkpoint("completed", json!([]));
        assert_eq!(
            next_command(&completed, "--state run.json", false).command,
            None
        );
    }
}
