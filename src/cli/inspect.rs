//! The read-only commands `status`, `proxy-status` and `report` (`plan` is in
//! [`super::plan`]). They change nothing.

use std::path::PathBuf;

use clap::Args;

use super::args::{ClusterArgs, OutputArg};
use super::connect::{Pace, connect};
use super::error::CliError;

#[derive(Debug, Clone, Args)]
pub struct ProxyStatusArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Ask only this revision's istiod (default: every installed revision).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Only proxies of this namespace.
    #[arg(long, short = 'n', value_parser = super::args::namespace_name)]
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
    if let Some(r) = &revision {
        r.parse::<crate::istio::Revision>()
            .map_err(|e| CliError::bad_because(format!("--revision {r:?}: {e}"), e))?;
    }
    let env = connect(&cluster, Pace::Real).await?.env;
    if let Some(ns) = &namespace {
        refuse_missing_namespace(&env, ns).await?;
    }
    let installed = env
        .arm
        .get_cluster(&env.cluster)
        .await
        .map_err(|e| CliError::connect(format!("cannot read the cluster {}", env.cluster.name), e))?
        .revisions();
    let revisions = match revision {
        Some(r) if !installed.contains(&r) => {
            return Err(CliError::bad(format!(
                "--revision {r}: not installed in {} (installed: {})",
                env.cluster.name,
                installed.join(", ")
            )));
        }
        Some(r) => vec![r],
        None => installed,
    };
    let mut rows = Vec::new();
    for rev in &revisions {
        // bounded: a crash-looping istiod may accept the port-forward and never answer
        let mut r = crate::k8s::mesh::proxy_status_within(
            &env.kube,
            rev,
            namespace.as_deref(),
            crate::k8s::mesh::SYNCZ_TIMEOUT,
        )
        .await
        .map_err(|e| {
            CliError::connect(format!("cannot read the proxy status from istiod-{rev}"), e)
        })?;
        rows.append(&mut r);
    }
    match output {
        OutputArg::Json => super::print_document("proxy status", &rows)?,
        OutputArg::Text => super::print_stdout(&crate::istio::syncz::render_table(&rows)),
    }
    Ok(if rows.iter().all(|r| r.is_synced()) {
        crate::contract::exit::OK
    } else {
        crate::contract::exit::PAUSED
    })
}

/// `--namespace` naming no namespace (a typo) is bad input, not an empty table.
async fn refuse_missing_namespace(env: &crate::steps::Env, ns: &str) -> Result<(), CliError> {
    match crate::k8s::pods::namespace_exists(&env.kube, ns).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(CliError::bad(format!(
            "--namespace {ns}: no such namespace in {}",
            env.cluster.name
        ))),
        Err(e) => Err(CliError::connect(format!("cannot read namespace {ns}"), e)),
    }
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
            refuse_run_file(&path, &state)?;
            asm_canary_engine::checkpoint::write_atomic(&path, text.as_bytes()).map_err(
                |(_, e)| {
                    CliError::bad_because(
                        format!("--out {}: cannot write it: {e}", path.display()),
                        e,
                    )
                },
            )?;
            crate::say!("report: {}", path.display());
        }
        None => super::print_stdout(&text),
    }
    Ok(crate::contract::exit::OK)
}

/// `report --out` never replaces a file of a run: the checkpoint, its event log or lock (`--out
/// run.json` replaced the run's checkpoint with Markdown, exit 0), nor any file that holds JSON
/// (a report is Markdown, HTML or SVG; JSON there is another run's checkpoint or events).
fn refuse_run_file(out: &std::path::Path, state: &std::path::Path) -> Result<(), CliError> {
    let same = |a: &std::path::Path, b: &std::path::Path| match (
        std::fs::canonicalize(a),
        std::fs::canonicalize(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let mut siblings = vec![state.to_path_buf()];
    for suffix in [".events.jsonl", ".lock"] {
        let mut p = state.as_os_str().to_owned();
        p.push(suffix);
        siblings.push(p.into());
    }
    let shown = out.display();
    if siblings.iter().any(|s| same(out, s)) {
        return Err(CliError::bad(format!(
            "--out {shown} is a file of the run itself (its checkpoint, event log or lock); write the report elsewhere, e.g. --out {}.report.md",
            state.display()
        )));
    }
    let mut head = [0u8; 64];
    // Only a regular file is opened (a FIFO would block the open).
    let read = match std::fs::metadata(out) {
        Ok(m) if m.is_file() => std::fs::File::open(out)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .unwrap_or(0),
        _ => 0,
    };
    if head[..read]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{' || *b == b'[')
    {
        return Err(CliError::bad(format!(
            "--out {shown} holds JSON (a checkpoint or an event log?), not a report; nothing was written: name another file"
        )));
    }
    Ok(())
}
