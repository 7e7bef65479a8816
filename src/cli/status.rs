//! `asm-canary status`: where a run stands, what the cluster says now, and the next command.
//! Gathering ([`gather`]) builds the typed [`StatusDoc`]; rendering prints it as JSON or text.

use asm_canary_engine::StepStatus;
use clap::Args;
use serde::Serialize;

use super::args::{ClusterArgs, OutputArg};
use super::connect::{Pace, connect};
use super::error::CliError;
use super::state::{StateArgs, cluster_from_checkpoint, read_checkpoint_file};
use crate::contract::exit;
use crate::contract::status::{ClusterNow, OwnerNow, StatusDoc};
use crate::steps::Env;

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub checkpoint: StateArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Read only the checkpoint; do not ask the cluster.
    #[arg(long)]
    pub offline: bool,
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

pub async fn status(args: StatusArgs) -> Result<u8, CliError> {
    let output = args.output;
    let doc = gather(args).await?;
    match output {
        OutputArg::Json => super::print_document("status", &doc)?,
        OutputArg::Text => super::print_stdout(&render_text(&doc)),
    }
    Ok(exit::OK)
}

/// Reads the checkpoint (a file, or the cluster's ConfigMap) and, unless `--offline`, the
/// cluster as ARM shows it now.
pub async fn gather(args: StatusArgs) -> Result<StatusDoc, CliError> {
    let StatusArgs {
        checkpoint,
        mut cluster,
        offline,
        output: _,
    } = args;
    let file = checkpoint.existing_file("a run wrote")?;
    let Some(file) = file else {
        if offline {
            return Err(CliError::bad(
                "--offline reads a checkpoint file; with --state-backend kubernetes the checkpoint is in the cluster",
            ));
        }
        let env = connect(&cluster, Pace::Real).await?.env;
        let location = checkpoint.locate(&env, None);
        let cp = asm_canary_engine::read_checkpoint(location.store.as_ref()).await?;
        let now = cluster_now(&env).await;
        let report = location.file.as_deref().map(crate::report::report_path);
        return Ok(StatusDoc::new(
            &cp,
            &location.flags,
            true,
            Some(now),
            report,
        ));
    };
    if !file.exists() {
        return Err(CliError::bad(format!(
            "--state {}: no such file; give the checkpoint a run wrote (upgrade --state FILE, default asm-canary-<cluster>.json)",
            file.display()
        )));
    }
    let cp = read_checkpoint_file(file)?;
    let now = if offline {
        None
    } else {
        cluster_from_checkpoint(&mut cluster, file)?;
        Some(match connect(&cluster, Pace::Real).await {
            Ok(c) => cluster_now(&c.env).await,
            Err(e) => ClusterNow::Unreadable { error: e.chain() },
        })
    };
    let flags = format!("--state {}", file.display());
    let report = Some(crate::report::report_path(file));
    Ok(StatusDoc::new(&cp, &flags, false, now, report))
}

async fn cluster_now(env: &Env) -> ClusterNow {
    match env.arm.get_cluster(&env.cluster).await {
        Ok(doc) => ClusterNow::Read {
            revisions: doc.revisions(),
            provisioning_state: doc.provisioning_state().map(str::to_string),
            owner: owner_now(env).await,
        },
        Err(e) => ClusterNow::Unreadable {
            error: e.to_string(),
        },
    }
}

async fn owner_now(env: &Env) -> OwnerNow {
    match crate::k8s::owner::read(&env.kube).await {
        Ok(None) => OwnerNow::None,
        Ok(Some((o, _))) => OwnerNow::Run {
            run_id: o.run_id,
            host: o.host,
            phase: o.phase,
            since: o.since,
            checkpoint: o.checkpoint,
        },
        Err(e) => OwnerNow::Unreadable {
            error: e.to_string(),
        },
    }
}

fn owner_line(doc: &StatusDoc, owner: &OwnerNow) -> String {
    match owner {
        OwnerNow::None => "Owner      no run owns the cluster's upgrade".into(),
        OwnerNow::Run {
            run_id,
            host,
            phase,
            since,
            checkpoint,
        } => format!(
            "Owner      {} (host {host}, {phase} since {since}; {checkpoint})",
            if *run_id == doc.run_id {
                "this run".to_string()
            } else {
                format!("another run, {run_id}")
            }
        ),
        OwnerNow::Unreadable { error } => format!("Owner      cannot read it: {error}"),
    }
}

/// The status as a person reads it.
pub fn render_text(doc: &StatusDoc) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "Run        {} — {}",
        doc.run_id,
        word(&doc.state).replace('_', " ")
    ));
    line(format!("Cluster    {}", doc.target));
    if let (Some(s), Some(t)) = (doc.summary.get("source"), doc.summary.get("target")) {
        line(format!(
            "Upgrade    {} → {}",
            s.as_str().unwrap_or("?"),
            t.as_str().unwrap_or("?")
        ));
    }
    if let Some(r) = &doc.reason {
        line(format!("Reason     {r}"));
    }
    line("Steps".into());
    for s in &doc.steps {
        line(step_row(
            &s.id,
            s.status,
            s.started_at,
            s.finished_at,
            &s.error,
        ));
    }
    let rb: Vec<_> = doc
        .rollback
        .iter()
        .filter(|s| s.status != StepStatus::Pending)
        .collect();
    if !rb.is_empty() {
        line("Rollback".into());
        for s in rb {
            line(step_row(
                &s.id,
                s.status,
                s.started_at,
                s.finished_at,
                &s.error,
            ));
        }
    }
    match &doc.cluster_now {
        None => {}
        Some(ClusterNow::Unreadable { error }) => {
            line(format!("Cluster    now: cannot read it: {error}"))
        }
        Some(ClusterNow::Read {
            revisions,
            provisioning_state,
            owner,
        }) => {
            line(format!(
                "Cluster    now: {}, revisions [{}]",
                provisioning_state.as_deref().unwrap_or("?"),
                revisions.join(", ")
            ));
            line(owner_line(doc, owner));
        }
    }
    if let Some(report) = doc.report.as_deref().filter(|r| r.exists()) {
        line(format!("Report     {}", report.display()));
    }
    match &doc.next.command {
        Some(c) => line(format!(
            "Next       {c}\n           ({})",
            doc.next.explanation
        )),
        None => line(format!("Next       {}", doc.next.explanation)),
    }
    out
}

fn step_row(
    id: &str,
    status: StepStatus,
    started: Option<chrono::DateTime<chrono::Utc>>,
    finished: Option<chrono::DateTime<chrono::Utc>>,
    error: &Option<String>,
) -> String {
    format!(
        "  {:<16} {:<18} {:>8}{}",
        id,
        word(&status).replace('_', " "),
        took(started, finished),
        error
            .as_deref()
            .map(|e| format!("  {e}"))
            .unwrap_or_default()
    )
}

/// A serde enum as its wire word (`rolled_back`, `awaiting_approval`).
fn word<T: Serialize + std::fmt::Debug>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{v:?}"))
}

fn took(
    started: Option<chrono::DateTime<chrono::Utc>>,
    finished: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    match (started, finished) {
        (Some(a), Some(b)) => {
            asm_canary_engine::duration::format_duration((b - a).to_std().unwrap_or_default())
        }
        _ => String::new(),
    }
}
