//! The human sentences for events, shared by the terminal's bar and plain modes.

use asm_canary_engine::{Event, Level, Outcome, Phase};
use serde_json::Value;

use crate::exit;

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

/// The line for `event`, or `None` for events that only move a progress bar.
/// `state_hint` is the `--state` path, named where a person must act.
pub fn line(event: &Event, state_hint: Option<&str>) -> Option<String> {
    let state = state_hint.unwrap_or("FILE");
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
        } => {
            let mut s = format!("▶ {}{step}", phase_tag(*phase));
            if let Some(d) = description {
                s.push_str(&format!(": {d}"));
            }
            if *attempt > 1 {
                s.push_str(&format!(" (attempt {attempt})"));
            }
            s
        }
        Event::StepSkipped { step, reason, .. } => format!("- {step} skipped: {reason}"),
        Event::ActionFinished {
            step,
            already_done: true,
            detail,
            ..
        } => format!(
            "  {step}: already done{}",
            detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ),
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
        } => {
            let mut s = format!(
                "  {step}: waiting for {check} (timeout {}",
                fmt_ms(*timeout_ms)
            );
            if *stable_for_ms > 0 {
                s.push_str(&format!(", stable for {}", fmt_ms(*stable_for_ms)));
            }
            s.push(')');
            s
        }
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
        } => match progress.and_then(|p| p.total.map(|t| (p.done, t))) {
            Some((d, t)) => format!("  {step}: {detail} [{d}/{t}]"),
            None => format!("  {step}: {detail}"),
        },
        Event::GatePassed {
            step,
            check,
            detail,
        } => format!(
            "  {step}: {check} passed{}",
            detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ),
        Event::GateFailed {
            step,
            check,
            reason,
            ..
        } => format!("  {step}: {check} failed: {reason}"),
        Event::StepSucceeded {
            step,
            phase,
            already_done,
        } => format!(
            "✔ {}{step}{}",
            phase_tag(*phase),
            if *already_done { " (already done)" } else { "" }
        ),
        Event::StepFailed {
            step,
            phase,
            error,
            on_failure,
        } => match on_failure.as_deref() {
            Some("rollback") => format!("✘ {step}: {error}; rolling back"),
            Some("halt") => format!("✘ {step}: {error}; halting"),
            _ => format!("✘ {}{step}: {error}", phase_tag(*phase)),
        },
        Event::StepInterrupted { step, .. } => format!("⏸ {step} interrupted"),
        Event::ApprovalNeeded { step, prompt } => format!(
            "? {step} needs approval{}",
            prompt
                .as_deref()
                .map(|p| format!(": {p}"))
                .unwrap_or_default()
        ),
        Event::ApprovalGiven { step, by } => format!("  {step}: approved ({by})"),
        Event::ApprovalDenied { step, reason } => format!("  {step}: not approved ({reason})"),
        Event::RollbackStarted { reason, .. } => format!("↩ rolling back: {reason}"),
        Event::RollbackFinished { ok: true, .. } => "↩ rollback finished".to_string(),
        Event::RollbackFinished { ok: false, error } => format!(
            "✘ rollback failed{}",
            error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
        Event::Message { step, level, text } => {
            let who = step
                .as_deref()
                .map(|s| format!("{s}: "))
                .unwrap_or_default();
            match level {
                Level::Info => format!("  {who}{text}"),
                Level::Warn => format!("  warning: {who}{text}"),
            }
        }
        Event::RunFinished {
            outcome,
            reason,
            exit_code,
            summary,
        } => {
            let source = summary_str(summary, "source");
            let target = summary_str(summary, "target");
            let why = reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            match outcome {
                Outcome::Completed => match (source, target) {
                    (Some(s), Some(t)) => format!("completed: {s} → {t}"),
                    (None, Some(t)) => format!("completed: on {t}"),
                    _ => "completed".to_string(),
                },
                Outcome::RolledBack => format!(
                    "rolled back{}{why} (exit {exit_code})",
                    source.map(|s| format!(" to {s}")).unwrap_or_default()
                ),
                Outcome::Paused => format!(
                    "paused{why} (exit {exit_code}); continue with: asm-canary resume --state {state}"
                ),
                Outcome::Failed if *exit_code == exit::ROLLBACK_FAILED => format!(
                    "FAILED{why} (exit {exit_code}); see: asm-canary status --state {state}"
                ),
                Outcome::Failed => format!("failed{why} (exit {exit_code})"),
            }
        }
    })
}
