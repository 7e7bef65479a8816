//! `asm-canary doctor`: the add-on's traps, checked; read-only. The checks are
//! [`crate::doctor`]'s; this file parses, connects, and renders the document as a table
//! (`flutter doctor` style: ✓ / ! / ✗, what was found, the fix) or as JSON.

use clap::Args;

use super::args::{ClusterArgs, OutputArg};
use super::connect::{Pace, connect};
use super::error::CliError;
use crate::contract::doctor::{DoctorDoc, Severity};

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// `json`: one document (schema asm-canary.doctor/1.0) on stdout.
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

/// Exit code: 0 nothing wrong, 4 warnings only, 3 something broken (see
/// [`crate::contract::doctor`]).
pub async fn doctor(args: DoctorArgs) -> Result<u8, CliError> {
    let DoctorArgs { cluster, output } = args;
    let env = connect(&cluster, Pace::Real).await?.env;
    let doc = crate::doctor::diagnose(&env)
        .await
        .map_err(|e| CliError::connect("asm-canary doctor could not read the cluster", e))?;
    match output {
        OutputArg::Json => super::print_document("doctor", &doc)?,
        OutputArg::Text => super::print_stdout(&render(&doc)),
    }
    Ok(doc.exit_code)
}

/// The table: one line per check with its mark, then each finding that is not ✓ with its
/// objects and fix, indented under it.
pub fn render(doc: &DoctorDoc) -> String {
    let mut lines = vec![format!(
        "Doctor summary for {} ({})",
        doc.cluster,
        doc.revisions.join(", ")
    )];
    for check in &doc.checks {
        lines.push(format!("[{}] {}", check.status.mark(), check.title));
        for f in &check.findings {
            lines.push(format!("    {} {}", f.severity.mark(), f.message));
            if !f.objects.is_empty() && f.severity != Severity::Ok {
                lines.push(format!(
                    "      objects: {}",
                    crate::steps::first_few(f.objects.iter(), 8, "objects")
                ));
            }
            if let Some(fix) = &f.fix {
                lines.push(format!("      fix: {fix}"));
            }
        }
    }
    let s = &doc.summary;
    lines.push(String::new());
    lines.push(match doc.status {
        Severity::Ok => format!("• No issues found ({} checks).", s.ok),
        _ => format!(
            "• {} broken, {} warning(s), {} fine.",
            s.broken, s.warning, s.ok
        ),
    });
    let mut out = lines.join("\n");
    out.push('\n');
    out
}
