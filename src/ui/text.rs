//! The human sentences for events, shared by the terminal's bar and plain modes.

use asm_canary_engine::{Event, Level, Outcome, Phase, Progress};
use serde_json::Value;

use crate::contract::exit;

fn fmt_ms(ms: u64) -> String {
    asm_canary_engine::duration::format_duration(std::time::Duration::from_millis(ms))
}

fn phase_tag(phase: Phase) -> &'static str {
    match phase {
        Phase::Forward => "",
        Phase::Rollback => "rollback ",
    }
}

fn summary_str<'a>(summary: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a str> {
    summary.get(key).and_then(Value::as_str)
}

/// `": {value}"`, or nothing without a value: the tail of a sentence that may say more.
fn colon(value: Option<&str>) -> String {
    value.map(|v| format!(": {v}")).unwrap_or_default()
}

/// `" ({value})"`, or nothing without a value.
fn parens(value: Option<&str>) -> String {
    value.map(|v| format!(" ({v})")).unwrap_or_default()
}

/// The line for `event`, or `None` for events that only move a progress bar.
/// `state_hint` names the checkpoint as the commands take it (`--state run.json`, or
/// `--state-backend kubernetes`), where a person must act.
pub fn line(event: &Event, state_hint: Option<&str>) -> Option<String> {
    Some(match event {
        Event::RunStarted {
            runbook,
            target,
            resumed,
            ..
        } => format!(
            "{} runbook {runbook} on {target}",
            if *resumed { "resuming" } else { "running" }
        ),
        Event::StepStarted {
            step,
            phase,
            attempt,
            description,
        } => step_started(step, *phase, *attempt, description.as_deref()),
        Event::StepSkipped { step, reason, .. } => format!("- {step} skipped: {reason}"),
        Event::ActionFinished {
            step,
            already_done: true,
            detail,
            ..
        } => format!("  {step}: already done{}", parens(detail.as_deref())),
        Event::ActionFinished { .. } => return None,
        Event::SideEffect {
            step,
            kind,
            target,
            done: false,
        } => format!("  {step}: {kind} {target}"),
        Event::SideEffect { .. } => return None,
        Event::GateStarted {
            step,
            check,
            timeout_ms,
            stable_for_ms,
        } => gate_started(step, check, *timeout_ms, *stable_for_ms),
        Event::GateProgress {
            step,
            detail,
            progress,
            ..
        }
        | Event::StepProgress {
            step,
            detail,
            progress,
        } => progress_line(step, detail, *progress),
        Event::GatePassed {
            step,
            check,
            detail,
        } => format!("  {step}: {check} passed{}", colon(detail.as_deref())),
        Event::GateFailed {
            step,
            check,
            reason,
            ..
        } => format!("  {step}: {check} failed: {reason}"),
        Event::GateInconclusive {
            step,
            check,
            reason,
        } => format!("⏸ {step}: {check} inconclusive: {reason}"),
        Event::Measurement {
            step, measurement, ..
        } => measurement_line(step, measurement),
        Event::StepSucceeded {
            step,
            phase,
            already_done,
        } => step_succeeded(step, *phase, *already_done),
        Event::StepFailed {
            step,
            phase,
            error,
            on_failure,
        } => step_failed(step, *phase, error, on_failure.as_deref()),
        Event::StepInterrupted { step, .. } => format!("⏸ {step} interrupted"),
        Event::ApprovalNeeded { step, prompt } => {
            format!("? {step} needs approval{}", colon(prompt.as_deref()))
        }
        Event::ApprovalGiven { step, by } => format!("  {step}: approved ({by})"),
        Event::ApprovalDenied { step, reason } => format!("  {step}: not approved ({reason})"),
        Event::RollbackStarted { reason, .. } => format!("↩ rolling back: {reason}"),
        Event::RollbackFinished { ok: true, .. } => "↩ rollback finished".to_string(),
        Event::RollbackFinished { ok: false, error } => {
            format!("✘ rollback failed{}", colon(error.as_deref()))
        }
        Event::Message { step, level, text } => message(step.as_deref(), *level, text),
        Event::RunFinished {
            outcome,
            reason,
            exit_code,
            summary,
        } => run_finished(*outcome, reason.as_deref(), *exit_code, summary, state_hint),
    })
}

/// `  analysis: request-success-rate payments/api = 95.00 (baseline 100.00) → fail`.
fn measurement_line(step: &str, m: &asm_canary_engine::MeasurementRecord) -> String {
    format!(
        "  {step}: {} {}{} = {} → {}",
        m.name,
        m.series.as_deref().unwrap_or(""),
        m.baseline
            .map(|b| format!(" (baseline {b:.2})"))
            .unwrap_or_default(),
        m.value
            .map(|v| format!("{v:.2}"))
            .unwrap_or_else(|| "no data".into()),
        m.verdict
    )
}

fn step_succeeded(step: &str, phase: Phase, already_done: bool) -> String {
    let done = if already_done { " (already done)" } else { "" };
    format!("✔ {}{step}{done}", phase_tag(phase))
}

fn step_started(step: &str, phase: Phase, attempt: u32, description: Option<&str>) -> String {
    let mut s = format!("▶ {}{step}", phase_tag(phase));
    if let Some(d) = description {
        s.push_str(&format!(": {d}"));
    }
    if attempt > 1 {
        s.push_str(&format!(" (attempt {attempt})"));
    }
    s
}

fn step_failed(step: &str, phase: Phase, error: &str, on_failure: Option<&str>) -> String {
    match on_failure {
        Some("rollback") => format!("✘ {step}: {error}; rolling back"),
        Some("halt") => format!("✘ {step}: {error}; halting"),
        Some("retry") => format!("✘ {step}: {error}; retrying"),
        _ => format!("✘ {}{step}: {error}", phase_tag(phase)),
    }
}

fn gate_started(step: &str, check: &str, timeout_ms: u64, stable_for_ms: u64) -> String {
    let mut s = format!(
        "  {step}: waiting for {check} (timeout {}",
        fmt_ms(timeout_ms)
    );
    if stable_for_ms > 0 {
        s.push_str(&format!(", stable for {}", fmt_ms(stable_for_ms)));
    }
    s.push(')');
    s
}

fn progress_line(step: &str, detail: &str, progress: Option<Progress>) -> String {
    match progress.and_then(|p| p.total.map(|t| (p.done, t))) {
        Some((d, t)) => format!("  {step}: {detail} [{d}/{t}]"),
        None => format!("  {step}: {detail}"),
    }
}

fn message(step: Option<&str>, level: Level, text: &str) -> String {
    let who = step.map(|s| format!("{s}: ")).unwrap_or_default();
    match level {
        Level::Info => format!("  {who}{text}"),
        Level::Warn => format!("  warning: {who}{text}"),
    }
}

/// The run's last sentence; where a person must act, it names the command with `state_hint`.
fn run_finished(
    outcome: Outcome,
    reason: Option<&str>,
    exit_code: u8,
    summary: &serde_json::Map<String, Value>,
    state_hint: Option<&str>,
) -> String {
    let state = state_hint.unwrap_or("--state FILE");
    let source = summary_str(summary, "source");
    let target = summary_str(summary, "target");
    let why = colon(reason);
    match outcome {
        Outcome::Completed => match (source, target) {
            // A run that stays on its revision (a patch restart, onboarding) moved nothing.
            (Some(s), Some(t)) if s != t => format!("completed: {s} → {t}"),
            (_, Some(t)) => format!("completed: on {t}"),
            _ => "completed".to_string(),
        },
        Outcome::RolledBack => format!(
            "rolled back{}{why} (exit {exit_code})",
            source.map(|s| format!(" to {s}")).unwrap_or_default()
        ),
        Outcome::Paused => {
            format!("paused{why} (exit {exit_code}); continue with: asm-canary resume {state}")
        }
        Outcome::Failed if exit_code == exit::ROLLBACK_FAILED => {
            format!("FAILED{why} (exit {exit_code}); see: asm-canary status {state}")
        }
        Outcome::Failed => format!("failed{why} (exit {exit_code})"),
        Outcome::Refused => format!(
            "refused{why} (exit {exit_code}); after fixing the cause: asm-canary resume {state}"
        ),
    }
}
fn duration_spec(
    d: &asm_canary_engine::DurationSpec,
    params: &serde_json::Map<String, Value>,
) -> String {
    match d {
        asm_canary_engine::DurationSpec::Fixed(d) => {
            asm_canary_engine::duration::format_duration(*d)
        }
        asm_canary_engine::DurationSpec::Param(p) => match d.resolve(params) {
            Ok(v) => asm_canary_engine::duration::format_duration(v),
            Err(_) => format!("${{params.{p}}}"),
        },
    }
}

fn step_plan_line(
    out: &mut String,
    label: &str,
    step: &asm_canary_engine::StepSpec,
    params: &serde_json::Map<String, Value>,
    forward: bool,
) {
    use asm_canary_engine::{ApprovalMode, OnFailure};
    out.push_str(&format!("{label} {}", step.id));
    if let Some(d) = &step.description {
        out.push_str(&format!(" — {d}"));
    }
    out.push('\n');
    let mut parts = vec![format!("action {}", step.action)];
    if let Some(g) = &step.gate {
        let mut gate = format!(
            "gate {} (timeout {}",
            g.check,
            duration_spec(&g.timeout, params)
        );
        if g.watch {
            gate.push_str(", watch");
        }
        let stable = duration_spec(&g.stable_for, params);
        if stable != "0s" {
            gate.push_str(&format!(", stable for {stable}"));
        }
        gate.push(')');
        parts.push(gate);
    } else {
        parts.push("no gate".into());
    }
    if step.approval == ApprovalMode::Required {
        parts.push("needs approval".into());
    }
    if forward {
        parts.push(match step.on_failure {
            OnFailure::Rollback => "on failure: roll back".into(),
            OnFailure::Halt => "on failure: halt".into(),
        });
    }
    if step.when.is_some() {
        parts.push("conditional".into());
    }
    out.push_str(&format!("     {}\n", parts.join("; ")));
}

/// The plan of a runbook for `params` (already bound): what will run, in order, with its gates.
pub fn plan(
    runbook: &asm_canary_engine::Runbook,
    params: &serde_json::Map<String, Value>,
    target: &str,
) -> String {
    let mut out = format!(
        "plan: runbook {} (sha256 {}) on {target}\n",
        runbook.name,
        &runbook.sha256[..runbook.sha256.len().min(12)]
    );
    if !params.is_empty() {
        let ps: Vec<String> = params
            .iter()
            .map(|(k, v)| match v {
                Value::Null => format!("{k}=(unset)"),
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        out.push_str(&format!("params: {}\n", ps.join(", ")));
    }
    for (i, s) in runbook.steps.iter().enumerate() {
        step_plan_line(&mut out, &format!("{:>2}.", i + 1), s, params, true);
    }
    if !runbook.rollback.is_empty() {
        out.push_str("rollback sequence (after a failed step with on failure: roll back):\n");
        for s in &runbook.rollback {
            step_plan_line(&mut out, "  ↩", s, params, false);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use asm_canary_engine::Runbook;

    fn canary() -> Runbook {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("runbooks/asm-canary-upgrade.yaml");
        match Runbook::load(&path, &crate::steps::names_only()) {
            Ok(rb) => rb,
            Err(e) => panic!("{e}"),
        }
    }

    /// Regression: a patch restart (source and target the same revision) ended with
    /// "completed: asm-1-27 → asm-1-27", as if it had upgraded.
    #[test]
    fn a_run_that_stays_on_its_revision_completes_on_it_not_from_it_to_itself() {
        let summary = |s: &str, t: &str| {
            let mut m = serde_json::Map::new();
            m.insert("source".into(), s.into());
            m.insert("target".into(), t.into());
            m
        };
        let line =
            |s: &str, t: &str| run_finished(Outcome::Completed, None, 0, &summary(s, t), None);
        assert_eq!(line("asm-1-27", "asm-1-27"), "completed: on asm-1-27");
        assert_eq!(
            line("asm-1-27", "asm-1-28"),
            "completed: asm-1-27 → asm-1-28"
        );
    }

    #[test]
    fn plan_of_the_canary_runbook() {
        let rb = canary();
        let mut given = serde_json::Map::new();
        given.insert("to".into(), "asm-1-28".into());
        let params = match rb.bind_params(&given) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let text = plan(&rb, &params, "aks-sim").replace(&rb.sha256[..12], "<sha256>");
        insta::assert_snapshot!(text);
    }
}
