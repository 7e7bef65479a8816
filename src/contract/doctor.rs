//! The doctor document (`doctor --output json`, schema [`DOCTOR_SCHEMA`]) and the doctor's exit
//! codes. Built by [`crate::doctor`] from the cluster as it is; rendered as JSON as it is, or as
//! a table by `cli::doctor`.
//!
//! Every check reports a status and its findings; a finding says what was found, about which
//! objects, and the exact fix (a command, or an action when no command does it).

use serde::Serialize;

use super::exit;

/// The doctor document's schema name.
pub const DOCTOR_SCHEMA: &str = "asm-canary.doctor/1.0";

/// Nothing is wrong: every check passed.
pub const DOCTOR_OK: u8 = exit::OK;
/// Something is broken (at least one check failed): the same code as a run that failed
/// and rolled back, 3.
pub const DOCTOR_BROKEN: u8 = exit::ROLLED_BACK;
/// Only warnings: the same code as a paused run, 4.
pub const DOCTOR_WARNINGS: u8 = exit::PAUSED;

/// How bad a finding is; a check takes its worst finding's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// ✓: as it should be.
    Ok,
    /// !: not broken now, but a person should look (it will bite, or it is waste).
    Warning,
    /// ✗: broken now: traffic, injection or policy does not work as configured.
    Broken,
}

impl Severity {
    /// The mark `flutter doctor` would print.
    pub fn mark(self) -> &'static str {
        match self {
            Severity::Ok => "✓",
            Severity::Warning => "!",
            Severity::Broken => "✗",
        }
    }
}

/// One thing a check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// What was found, in a sentence.
    pub message: String,
    /// The objects it concerns (`namespace/name`, or a name for cluster-scoped ones).
    pub objects: Vec<String>,
    /// The exact fix: a command to run, or the action to take. `None` for ✓ findings.
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(message: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Ok,
            message: message.into(),
            objects: Vec::new(),
            fix: None,
        }
    }

    pub fn warning(
        message: impl Into<String>,
        objects: Vec<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            severity: Severity::Warning,
            message: message.into(),
            objects,
            fix: Some(fix.into()),
        }
    }

    pub fn broken(
        message: impl Into<String>,
        objects: Vec<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            severity: Severity::Broken,
            message: message.into(),
            objects,
            fix: Some(fix.into()),
        }
    }
}

/// One check and what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Stable id (`sidecars`, `revision-labels`, …): scripts key on it.
    pub id: &'static str,
    /// What the check looks at, for people.
    pub title: &'static str,
    /// The worst severity of its findings (`ok` when it found nothing wrong).
    pub status: Severity,
    pub findings: Vec<Finding>,
}

impl CheckResult {
    /// A check's result from its findings; none at all reads as one ✓ `all_clear`.
    pub fn new(
        id: &'static str,
        title: &'static str,
        mut findings: Vec<Finding>,
        all_clear: &str,
    ) -> Self {
        if findings.is_empty() {
            findings.push(Finding::ok(all_clear));
        }
        let status = findings
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Ok);
        CheckResult {
            id,
            title,
            status,
            findings,
        }
    }
}

/// Counts of checks by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DoctorSummary {
    pub ok: usize,
    pub warning: usize,
    pub broken: usize,
}

/// `doctor --output json`: one document.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorDoc {
    pub schema: &'static str,
    /// The cluster's ARM id.
    pub cluster: String,
    /// The revisions ARM says are installed.
    pub revisions: Vec<String>,
    pub checks: Vec<CheckResult>,
    pub summary: DoctorSummary,
    /// The worst status over all checks.
    pub status: Severity,
    /// What the process exits with: [`DOCTOR_OK`], [`DOCTOR_WARNINGS`] or [`DOCTOR_BROKEN`].
    pub exit_code: u8,
}

impl DoctorDoc {
    pub fn new(cluster: String, revisions: Vec<String>, checks: Vec<CheckResult>) -> Self {
        let mut summary = DoctorSummary::default();
        for c in &checks {
            match c.status {
                Severity::Ok => summary.ok += 1,
                Severity::Warning => summary.warning += 1,
                Severity::Broken => summary.broken += 1,
            }
        }
        let status = checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Severity::Ok);
        DoctorDoc {
            schema: DOCTOR_SCHEMA,
            cluster,
            revisions,
            checks,
            summary,
            status,
            exit_code: exit_code(status),
        }
    }
}

/// The exit code for the worst status found.
pub fn exit_code(worst: Severity) -> u8 {
    match worst {
        Severity::Ok => DOCTOR_OK,
        Severity::Warning => DOCTOR_WARNINGS,
        Severity::Broken => DOCTOR_BROKEN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_code_follows_the_worst_check() {
        let ok = CheckResult::new("a", "A", vec![], "fine");
        assert_eq!(ok.status, Severity::Ok);
        assert_eq!(ok.findings[0].message, "fine");
        let warn = CheckResult::new("b", "B", vec![Finding::warning("w", vec![], "do x")], "");
        let broken = CheckResult::new("c", "C", vec![Finding::broken("b", vec![], "do y")], "");
        let doc = DoctorDoc::new("id".into(), vec![], vec![ok.clone()]);
        assert_eq!(doc.exit_code, 0);
        let doc = DoctorDoc::new("id".into(), vec![], vec![ok.clone(), warn.clone()]);
        assert_eq!(doc.exit_code, 4);
        let doc = DoctorDoc::new("id".into(), vec![], vec![ok, warn, broken]);
        assert_eq!(doc.exit_code, 3);
        assert_eq!(
            doc.summary,
            DoctorSummary {
                ok: 1,
                warning: 1,
                broken: 1
            }
        );
    }
}
