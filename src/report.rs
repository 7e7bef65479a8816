//! The run report a change-review board reads: what ran, when, what each gate waited for and
//! for how long, what changed, and a picture of the timeline. Built from the checkpoint (step
//! times, journal, approvals) and, when present, the run's event log (`<state>.events.jsonl`,
//! written next to the checkpoint by every run) for the gates' details.
//!
//! ```text
//! <state>               checkpoint ─┐
//! <state>.events.jsonl  events     ─┴─▶ Timeline ─▶ markdown() → <state>.report.md
//!                                                └─▶ html()     (embeds svg(), no external assets)
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use asm_canary_engine::{
    Checkpoint, EntryStatus, Event, EventRecord, MeasurementRecord, Phase, StepStatus,
};
use chrono::{DateTime, Utc};

/// `<state>.events.jsonl`: every event of every invocation on this checkpoint, appended.
pub fn events_path(state: &Path) -> PathBuf {
    suffixed(state, ".events.jsonl")
}

/// `<state>.report.md`: the Markdown report, rewritten at the end of every run.
pub fn report_path(state: &Path) -> PathBuf {
    suffixed(state, ".report.md")
}

fn suffixed(state: &Path, suffix: &str) -> PathBuf {
    let mut s = state.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Reads the event log of `run_id` (missing file: none; unparsable lines are skipped, since
/// the log is an aid and the checkpoint is the record).
pub fn read_events(state: &Path, run_id: &str) -> Vec<EventRecord> {
    let Ok(text) = std::fs::read_to_string(events_path(state)) else {
        return vec![];
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<EventRecord>(l).ok())
        .filter(|r| r.run_id == run_id)
        .collect()
}

/// One bar of the timeline.
#[derive(Debug, Clone)]
pub struct Row {
    pub step: String,
    pub phase: Phase,
    pub status: StepStatus,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub attempts: u32,
    /// The gate's check, when it ran.
    pub gate: Option<GateSpan>,
    /// Side effects made by this step (kind and target).
    pub changes: Vec<String>,
    /// Why it failed or was skipped.
    pub note: Option<String>,
}

#[derive(Debug, Clone)]
pub struct GateSpan {
    pub check: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub timeout_ms: u64,
    /// The last thing it reported waiting for.
    pub waited_for: Option<String>,
    /// How it ended: the pass detail or the failure reason.
    pub result: Option<String>,
    pub passed: Option<bool>,
}

/// The whole run, ready to render.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub cp: Checkpoint,
    pub rows: Vec<Row>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Warnings about the run as a whole (not of a step), such as a `--take-over`.
    pub notes: Vec<String>,
    /// Every measurement a gate took (the analysis gate's), in order: (step, gate, value).
    pub measurements: Vec<(String, String, MeasurementRecord)>,
}

impl Timeline {
    pub fn build(cp: Checkpoint, events: &[EventRecord]) -> Timeline {
        let mut rows = Vec::new();
        let seqs = [
            (Phase::Forward, cp.steps.clone()),
            (Phase::Rollback, cp.rollback.clone()),
        ];
        for (phase, records) in seqs {
            for r in records {
                let Some(start) = r.started_at else { continue };
                let end = r.finished_at.unwrap_or(cp.updated_at).max(start);
                let changes = cp
                    .journal
                    .iter()
                    .filter(|j| j.step == r.id && j.phase == phase)
                    .map(|j| {
                        format!(
                            "{} {}{}",
                            j.kind,
                            j.target,
                            if j.status == EntryStatus::Intent {
                                " (in flight: not confirmed)"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect();
                rows.push(Row {
                    gate: gate_span(events, &r.id, start, end),
                    step: r.id.clone(),
                    phase,
                    status: r.status,
                    start,
                    end,
                    attempts: r.attempts,
                    changes,
                    note: r.error.clone().or(r.skip_reason.clone()),
                });
            }
        }
        rows.sort_by_key(|r| r.start);
        let start = rows.first().map(|r| r.start).unwrap_or(cp.created_at);
        let end = rows
            .iter()
            .map(|r| r.end)
            .max()
            .unwrap_or(cp.updated_at)
            .max(start);
        let notes = events
            .iter()
            .filter_map(|r| match &r.event {
                Event::Message {
                    step: None,
                    level: asm_canary_engine::Level::Warn,
                    text,
                } => Some(text.clone()),
                _ => None,
            })
            .collect();
        let measurements = events
            .iter()
            .filter_map(|r| match &r.event {
                Event::Measurement {
                    step,
                    check,
                    measurement,
                } => Some((step.clone(), check.clone(), measurement.clone())),
                _ => None,
            })
            .collect();
        Timeline {
            cp,
            rows,
            start,
            end,
            notes,
            measurements,
        }
    }
}

/// The last gate of `step` that ran within [start, end] (a resumed step's latest attempt).
fn gate_span(
    events: &[EventRecord],
    step: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Option<GateSpan> {
    let mut span: Option<GateSpan> = None;
    for rec in events {
        if rec.ts < start - chrono::Duration::seconds(1)
            || rec.ts > end + chrono::Duration::seconds(1)
        {
            continue;
        }
        match &rec.event {
            Event::GateStarted {
                step: s,
                check,
                timeout_ms,
                ..
            } if s == step => {
                span = Some(GateSpan {
                    check: check.clone(),
                    start: rec.ts,
                    end: rec.ts,
                    timeout_ms: *timeout_ms,
                    waited_for: None,
                    result: None,
                    passed: None,
                })
            }
            Event::GateProgress {
                step: s, detail, ..
            } if s == step => {
                if let Some(g) = span.as_mut() {
                    g.waited_for = Some(detail.clone());
                    g.end = rec.ts;
                }
            }
            Event::GatePassed {
                step: s, detail, ..
            } if s == step => {
                if let Some(g) = span.as_mut() {
                    g.result = detail.clone();
                    g.passed = Some(true);
                    g.end = rec.ts;
                }
            }
            Event::GateFailed {
                step: s, reason, ..
            } if s == step => {
                if let Some(g) = span.as_mut() {
                    g.result = Some(reason.clone());
                    g.passed = Some(false);
                    g.end = rec.ts;
                }
            }
            _ => {}
        }
    }
    span
}

fn secs(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds().max(0) as f64 / 1000.0
}

fn fmt_secs(s: f64) -> String {
    if s >= 120.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{s:.1}s")
    }
}

fn status_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Pending => "pending",
        StepStatus::AwaitingApproval => "awaiting approval",
        StepStatus::Acting => "acting",
        StepStatus::Gating => "gating",
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
        StepStatus::Interrupted => "interrupted",
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn summary_str(cp: &Checkpoint, key: &str) -> String {
    cp.summary
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_string()
}

/// The Markdown report.
pub fn markdown(t: &Timeline) -> String {
    let mut s = String::new();
    md_facts(&mut s, t);
    for note in &t.notes {
        let _ = writeln!(s, "\n> **Note:** {note}");
    }
    md_timeline(&mut s, t);
    md_measurements(&mut s, t);
    md_changes(&mut s, &t.cp);
    md_final_check(&mut s, &t.cp);
    md_approvals(&mut s, &t.cp);
    s
}

/// The groups of measurements, one per step and gate, in the order they were first taken.
fn measurement_groups(t: &Timeline) -> Vec<((&str, &str), Vec<&MeasurementRecord>)> {
    let mut groups: Vec<((&str, &str), Vec<&MeasurementRecord>)> = Vec::new();
    for (step, check, m) in &t.measurements {
        let key = (step.as_str(), check.as_str());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(m),
            None => groups.push((key, vec![m])),
        }
    }
    groups
}

/// The cells of one measurement: time, name, series, value, baseline, bounds, verdict.
fn measurement_cells(m: &MeasurementRecord) -> [String; 7] {
    let num = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "—".into());
    let mut bounds = Vec::new();
    if let Some(v) = m.min {
        bounds.push(format!("≥ {v}"));
    }
    if let Some(v) = m.max {
        bounds.push(format!("≤ {v}"));
    }
    [
        m.at.format("%H:%M:%S").to_string(),
        m.name.clone(),
        m.series.clone().unwrap_or_default(),
        m.value
            .map(|v| format!("{v:.2}"))
            .unwrap_or_else(|| "no data".into()),
        num(m.baseline),
        bounds.join(", "),
        m.verdict.clone(),
    ]
}

/// A line chart of one measurement (`name`) of a gate over time: one polyline per series, the
/// bound as a dashed line. Empty when nothing of that name was measured.
fn measurement_chart(ms: &[&MeasurementRecord], name: &str, title: &str) -> String {
    let points: Vec<&MeasurementRecord> = ms
        .iter()
        .copied()
        .filter(|m| m.name == name && m.value.is_some_and(f64::is_finite))
        .collect();
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return String::new();
    };
    let (w, h, pad) = (480.0, 160.0, 30.0);
    let t0 = first.at;
    let span = secs(t0, last.at).max(1.0);
    let bound = points.iter().find_map(|m| m.min.or(m.max));
    let values = points.iter().filter_map(|m| m.value).chain(bound);
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if hi - lo < 1e-9 {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo, hi)
    };
    let x = |m: &MeasurementRecord| pad + (w - 2.0 * pad) * secs(t0, m.at) / span;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * (v - lo) / (hi - lo);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" data-chart=\"{}\"><text x=\"{pad}\" y=\"16\" font-size=\"12\">{} ({lo:.1} – {hi:.1})</text>",
        xml(name),
        xml(title)
    );
    if let Some(b) = bound {
        let _ = write!(
            s,
            "<line x1=\"{pad}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#c00\" stroke-dasharray=\"4 3\"/>",
            w - pad,
            y = y(b)
        );
    }
    let mut series: Vec<&str> = points
        .iter()
        .map(|m| m.series.as_deref().unwrap_or(""))
        .collect();
    series.sort();
    series.dedup();
    for (i, name) in series.iter().enumerate() {
        let pts: Vec<String> = points
            .iter()
            .filter(|m| m.series.as_deref().unwrap_or("") == *name)
            .map(|m| format!("{:.1},{:.1}", x(m), y(m.value.unwrap_or(lo))))
            .collect();
        let colour = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"][i % 5];
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" points=\"{}\"><title>{}</title></polyline>",
            pts.join(" "),
            xml(name)
        );
    }
    s.push_str("</svg>");
    s
}

/// One table per gate that measured (the analysis gate): every value, its bounds, its verdict.
fn md_measurements(s: &mut String, t: &Timeline) {
    for ((step, check), ms) in measurement_groups(t) {
        let _ = writeln!(s, "\n## Measurements: {step} ({check})\n");
        s.push_str("| at | measurement | series | value | baseline | bounds | verdict |\n|---|---|---|---|---|---|---|\n");
        for m in ms {
            let cells = measurement_cells(m).map(|c| md_cell(&c));
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
        if let Some(q) = t
            .measurements
            .iter()
            .find(|(st, c, _)| st == step && c == check)
            .map(|(_, _, m)| &m.query)
        {
            let _ = writeln!(s, "\nFirst query: `{}`", q.replace('`', "'"));
        }
    }
}

/// The final check after `complete` (its `final_check` output), when it ran.
fn md_final_check(s: &mut String, cp: &Checkpoint) {
    let Some(check) = cp
        .steps
        .iter()
        .filter_map(|r| r.outputs.as_ref()?.get("final_check"))
        .next_back()
        .and_then(|v| {
            serde_json::from_value::<crate::steps::finalcheck::FinalCheck>(v.clone()).ok()
        })
    else {
        return;
    };
    let _ = writeln!(
        s,
        "\n## Final check\n\n{}\n",
        if check.ok {
            "Passed: the cluster is as the upgrade should leave it."
        } else {
            "**Problems found** after the upgrade completed:"
        }
    );
    for p in &check.problems {
        let _ = writeln!(s, "- ✗ {}", md_cell(p));
    }
    for p in &check.passed {
        let _ = writeln!(s, "- ✓ {}", md_cell(p));
    }
}

/// The title and the table of facts: cluster, upgrade, outcome, times, runbook.
fn md_facts(s: &mut String, t: &Timeline) {
    let cp = &t.cp;
    let _ = writeln!(s, "# asm-canary run {}\n", cp.run_id);
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| Cluster | `{}` |", cp.target);
    let _ = writeln!(
        s,
        "| Upgrade | {} → {} |",
        summary_str(cp, "source"),
        summary_str(cp, "target")
    );
    let _ = writeln!(s, "| Outcome | {} |", state_word(cp));
    if let Some(r) = &cp.reason {
        let _ = writeln!(s, "| Reason | {} |", md_cell(r));
    }
    let _ = writeln!(
        s,
        "| Started | {} |\n| Last change | {} |\n| Duration | {} |",
        cp.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        cp.updated_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        fmt_secs(secs(t.start, t.end))
    );
    let _ = writeln!(
        s,
        "| Runbook | {} (sha256 {}) |",
        cp.runbook.name,
        &cp.runbook.sha256.get(..12).unwrap_or(&cp.runbook.sha256)
    );
}

/// A row's gate columns: the check, how long it waited, and how it ended or what it last
/// waited for (else why the step failed or was skipped).
fn gate_cells(r: &Row) -> (String, String, String) {
    let (gate, waited, what) = match &r.gate {
        Some(g) => (
            g.check.clone(),
            fmt_secs(secs(g.start, g.end)),
            g.result
                .clone()
                .or(g.waited_for.clone())
                .unwrap_or_default(),
        ),
        None => Default::default(),
    };
    let what = match &r.note {
        Some(n) if what.is_empty() => n.clone(),
        _ => what,
    };
    (gate, waited, what)
}

fn md_timeline(s: &mut String, t: &Timeline) {
    let _ = writeln!(s, "\n## Timeline\n");
    let _ = writeln!(
        s,
        "| Step | Phase | Status | Start (+s) | Took | Gate | Gate waited | Waited for / result |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for r in &t.rows {
        let (gate, waited, what) = gate_cells(r);
        let _ = writeln!(
            s,
            "| {} | {} | {}{} | {:.1} | {} | {} | {} | {} |",
            r.step,
            phase_word(r.phase),
            status_word(r.status),
            if r.attempts > 1 {
                format!(" ({} attempts)", r.attempts)
            } else {
                String::new()
            },
            secs(t.start, r.start),
            fmt_secs(secs(r.start, r.end)),
            gate,
            waited,
            md_cell(&what)
        );
    }
}

fn md_changes(s: &mut String, cp: &Checkpoint) {
    let _ = writeln!(s, "\n## What changed\n");
    if cp.journal.is_empty() {
        let _ = writeln!(s, "Nothing: no side effect was made.");
    }
    for j in &cp.journal {
        let _ = writeln!(
            s,
            "- `{}` {} `{}`{}{} — {} ({})",
            j.step,
            j.kind,
            j.target,
            workloads_of(j),
            if j.status == EntryStatus::Intent {
                " **in flight, not confirmed**"
            } else {
                ""
            },
            j.done_at
                .unwrap_or(j.recorded_at)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            phase_word(j.phase)
        );
    }
}

fn md_approvals(s: &mut String, cp: &Checkpoint) {
    let _ = writeln!(s, "\n## Approvals\n");
    if cp.approvals.is_empty() {
        let _ = writeln!(s, "None recorded.");
    }
    for a in &cp.approvals {
        let _ = writeln!(
            s,
            "- `{}` approved by {} at {}",
            a.step,
            a.by,
            a.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
}

fn phase_word(p: Phase) -> &'static str {
    match p {
        Phase::Forward => "forward",
        Phase::Rollback => "rollback",
    }
}

fn state_word(cp: &Checkpoint) -> String {
    serde_json::to_value(cp.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", cp.state))
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The CSS classes of a step's bar: failed, skipped and rollback steps stand out.
fn svg_class(r: &Row) -> &'static str {
    match (r.status, r.phase) {
        (StepStatus::Failed, _) => "step failed",
        (StepStatus::Skipped, _) => "step skipped",
        (_, Phase::Rollback) => "step rollback",
        _ => "step",
    }
}

/// A bar's tooltip: the step, how it ended and took, its gate's wait and what it changed.
fn svg_title(r: &Row) -> String {
    let mut title = format!(
        "{} ({}): {}, {}",
        r.step,
        phase_word(r.phase),
        status_word(r.status),
        fmt_secs(secs(r.start, r.end))
    );
    if let Some(g) = &r.gate {
        let _ = write!(
            title,
            "; gate {} waited {}",
            g.check,
            fmt_secs(secs(g.start, g.end))
        );
        if let Some(w) = g.result.as_ref().or(g.waited_for.as_ref()) {
            let _ = write!(title, ": {w}");
        }
    }
    if !r.changes.is_empty() {
        let _ = write!(title, "; changed: {}", r.changes.join(", "));
    }
    title
}

/// The timeline as a standalone SVG: one `rect.step` per step that ran, a `rect.gate` inside
/// it for the time its gate waited, and each bar's `<title>` saying what it waited for.
pub fn svg(t: &Timeline) -> String {
    const LABEL: f64 = 170.0;
    const WIDTH: f64 = 640.0;
    const ROW: f64 = 24.0;
    let total = secs(t.start, t.end).max(0.001);
    let x = |at: DateTime<Utc>| LABEL + secs(t.start, at) / total * WIDTH;
    let height = ROW * (t.rows.len() as f64 + 2.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" font-family="sans-serif" font-size="12">"#,
        w = LABEL + WIDTH + 80.0
    );
    s.push_str(
        "<style>.step{fill:#9ecae1}.failed{fill:#fb6a4a}.skipped{fill:#d9d9d9}.rollback{fill:#fdd0a2}.gate{fill:#3182bd;opacity:.6}</style>",
    );
    for (i, r) in t.rows.iter().enumerate() {
        let y = ROW * i as f64 + 4.0;
        let x0 = x(r.start);
        let w = (x(r.end) - x0).max(1.0);
        let class = svg_class(r);
        let title = svg_title(r);
        let _ = write!(
            s,
            r#"<text x="4" y="{ty}">{label}</text><rect class="{class}" data-step="{step}" x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}"><title>{title}</title></rect>"#,
            ty = y + 13.0,
            label = xml(&format!(
                "{}{}",
                if r.phase == Phase::Rollback {
                    "↩ "
                } else {
                    ""
                },
                r.step
            )),
            step = xml(&r.step),
            h = ROW - 8.0,
            title = xml(&title),
        );
        if let Some(g) = &r.gate {
            let gx = x(g.start);
            let gw = (x(g.end) - gx).max(1.0);
            let _ = write!(
                s,
                r#"<rect class="gate" x="{gx:.1}" y="{gy:.1}" width="{gw:.1}" height="{gh:.1}"/>"#,
                gy = y + 4.0,
                gh = ROW - 16.0,
            );
        }
        let _ = write!(
            s,
            r#"<text x="{tx:.1}" y="{ty}">{d}</text>"#,
            tx = x0 + w + 4.0,
            ty = y + 13.0,
            d = xml(&fmt_secs(secs(r.start, r.end)))
        );
    }
    let axis_y = ROW * t.rows.len() as f64 + 12.0;
    let _ = write!(
        s,
        r#"<line x1="{LABEL}" y1="{axis_y}" x2="{x2}" y2="{axis_y}" stroke="black"/><text x="{LABEL}" y="{ty}">0s</text><text x="{x2}" y="{ty}" text-anchor="end">{d}</text></svg>"#,
        x2 = LABEL + WIDTH,
        ty = axis_y + 14.0,
        d = xml(&fmt_secs(total))
    );
    s
}

/// A standalone HTML page: the Markdown report's facts as tables, with the SVG inline.
pub fn html(t: &Timeline) -> String {
    let cp = &t.cp;
    let mut s = String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    let _ = write!(
        s,
        "<title>asm-canary run {}</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}</style></head><body>",
        xml(&cp.run_id)
    );
    let _ = write!(
        s,
        "<h1>asm-canary run {}</h1><p>Cluster <code>{}</code><br>Upgrade {} → {}<br>Outcome <b>{}</b>{}</p>",
        xml(&cp.run_id),
        xml(&cp.target),
        xml(&summary_str(cp, "source")),
        xml(&summary_str(cp, "target")),
        xml(&state_word(cp)),
        cp.reason
            .as_ref()
            .map(|r| format!("<br>Reason: {}", xml(r)))
            .unwrap_or_default()
    );
    s.push_str("<h2>Timeline</h2>");
    s.push_str(&svg(t));
    s.push_str("<table><tr><th>Step</th><th>Phase</th><th>Status</th><th>Took</th><th>Gate</th><th>Gate waited</th><th>Waited for / result</th><th>Changed</th></tr>");
    for r in &t.rows {
        let (gate, waited, what) = gate_cells(r);
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            xml(&r.step),
            phase_word(r.phase),
            status_word(r.status),
            fmt_secs(secs(r.start, r.end)),
            xml(&gate),
            waited,
            xml(&what),
            xml(&r.changes.join("; "))
        );
    }
    s.push_str("</table>");
    for ((step, check), ms) in measurement_groups(t) {
        let _ = write!(
            s,
            "<h2>Measurements: {} ({})</h2><p>{}{}</p><table><tr><th>At</th><th>Measurement</th><th>Series</th><th>Value</th><th>Baseline</th><th>Bounds</th><th>Verdict</th></tr>",
            xml(step),
            xml(check),
            measurement_chart(&ms, "request-success-rate", "success rate, % (min dashed)"),
            measurement_chart(&ms, "request-duration", "p99 latency, ms (max dashed)"),
        );
        for m in ms {
            s.push_str("<tr>");
            for c in measurement_cells(m) {
                let _ = write!(s, "<td>{}</td>", xml(&c));
            }
            s.push_str("</tr>");
        }
        s.push_str("</table>");
    }
    s.push_str("<h2>Approvals</h2><ul>");
    for a in &cp.approvals {
        let _ = write!(
            s,
            "<li><code>{}</code> by {} at {}</li>",
            xml(&a.step),
            xml(&a.by),
            a.at.to_rfc3339()
        );
    }
    s.push_str("</ul></body></html>\n");
    s
}

/// For an entry that covers many workloads (a restart wave): ` (Deployment payments/api, …)`.
fn workloads_of(j: &asm_canary_engine::JournalEntry) -> String {
    let Some(list) = j.details.get("workloads").and_then(|w| w.as_array()) else {
        return String::new();
    };
    let names: Vec<String> = list
        .iter()
        .map(|w| {
            format!(
                "{} {}/{}",
                w["kind"].as_str().unwrap_or("?"),
                w["namespace"].as_str().unwrap_or("?"),
                w["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    format!(": {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use asm_canary_engine::EVENTS_SCHEMA;
    use serde_json::json;

    fn at(hms: &str) -> DateTime<Utc> {
        match format!("2026-01-01T{hms}Z").parse() {
            Ok(t) => t,
            Err(e) => panic!("{hms}: {e}"),
        }
    }

    fn rec(ts: &str, event: Event) -> EventRecord {
        EventRecord {
            schema: EVENTS_SCHEMA.into(),
            ts: at(ts),
            run_id: "run-1".into(),
            event,
        }
    }

    fn step(id: &str, status: &str, from: &str, to: &str) -> serde_json::Value {
        json!({
            "id": id, "status": status, "attempts": 1,
            "started_at": format!("2026-01-01T{from}Z"),
            "finished_at": format!("2026-01-01T{to}Z"),
        })
    }

    fn entry(
        seq: u64,
        step: &str,
        phase: &str,
        status: &str,
        kind: &str,
        target: &str,
    ) -> serde_json::Value {
        json!({
            "seq": seq, "step": step, "phase": phase, "attempt": 1, "kind": kind,
            "target": target, "details": {}, "status": status,
            "recorded_at": "2026-01-01T00:00:03Z",
        })
    }

    fn checkpoint(fields: serde_json::Value) -> Checkpoint {
        let mut cp = json!({
            "schema_version": "1.0",
            "kind": "asm-canary/checkpoint",
            "run_id": "run-1",
            "target": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks-sim",
            "runbook": {"name": "asm-canary-upgrade", "sha256": "76594c0e9ac618150f52f9fefb253b24f560a7ac217446955b2459adb7a2ea38"},
            "params": {"to": "asm-1-28"},
            "state": "rolled_back",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:27:00Z",
            "steps": [],
            "summary": {"source": "asm-1-27", "target": "asm-1-28"},
        });
        if let (Some(cp), Some(fields)) = (cp.as_object_mut(), fields.as_object()) {
            cp.extend(fields.clone());
        }
        match serde_json::from_value(cp) {
            Ok(cp) => cp,
            Err(e) => panic!("{e}"),
        }
    }

    /// A run whose restart timed out and was rolled back: gates that passed, failed and were
    /// left waiting, a retried step, a skipped one, a change in flight and an approval.
    fn rolled_back_run() -> Timeline {
        let mut restart = step("restart", "failed", "00:03:10", "00:25:00");
        restart["attempts"] = json!(2);
        restart["error"] = json!("gate \"workloads-on-revision\" failed: timed out | 3 pods left");
        let mut skipped = step("rollback-configmap", "skipped", "00:27:00", "00:27:00");
        skipped["skip_reason"] = json!("nothing to undo");
        let mut wave = entry(
            2,
            "restart",
            "forward",
            "intent",
            "restart-wave",
            "wave 1/2",
        );
        wave["details"] = json!({"workloads": [
            {"kind": "Deployment", "namespace": "payments", "name": "api"},
            {"kind": "StatefulSet", "namespace": "payments", "name": "db"},
        ]});
        let mut put = entry(
            1,
            "start",
            "forward",
            "done",
            "arm-put-revisions",
            "asm-1-27,asm-1-28",
        );
        put["done_at"] = json!("2026-01-01T00:00:04Z");
        let cp = checkpoint(json!({
            "reason": "step \"restart\" failed | rolled back",
            "steps": [
                step("preflight", "succeeded", "00:00:00", "00:00:02"),
                step("start", "succeeded", "00:00:02", "00:03:10"),
                restart,
                {"id": "complete", "status": "pending"},
            ],
            "rollback": [step("rollback-start", "succeeded", "00:25:00", "00:27:00"), skipped],
            "journal": [
                put,
                wave,
                entry(3, "rollback-start", "rollback", "done", "arm-put-revisions", "asm-1-27"),
            ],
            "approvals": [{"step": "start", "by": "terminal:alice", "at": "2026-01-01T00:00:02Z"}],
        }));
        Timeline::build(cp, &gate_events())
    }

    /// What the gates of [`rolled_back_run`] said: passed, timed out, left waiting.
    fn gate_events() -> Vec<EventRecord> {
        let gate = |ts: &str, step: &str, check: &str| {
            rec(
                ts,
                Event::GateStarted {
                    step: step.into(),
                    check: check.into(),
                    timeout_ms: 1_200_000,
                    stable_for_ms: 0,
                },
            )
        };
        let progress = |ts: &str, step: &str, detail: &str| {
            rec(
                ts,
                Event::GateProgress {
                    step: step.into(),
                    check: "c".into(),
                    detail: detail.into(),
                    progress: None,
                },
            )
        };
        vec![
            gate("00:00:05", "start", "control-planes-ready"),
            progress("00:01:00", "start", "istiod-asm-1-28 1/2 available"),
            rec(
                "00:03:10",
                Event::GatePassed {
                    step: "start".into(),
                    check: "control-planes-ready".into(),
                    detail: Some("istiod-asm-1-28 2/2 available".into()),
                },
            ),
            gate("00:03:20", "restart", "workloads-on-revision"),
            progress(
                "00:10:00",
                "restart",
                "3 pods in payments still run asm-1-27",
            ),
            rec(
                "00:23:20",
                Event::GateFailed {
                    step: "restart".into(),
                    check: "workloads-on-revision".into(),
                    reason: "timed out after 20m: 3 pods in payments still run asm-1-27".into(),
                    timed_out: true,
                },
            ),
            gate("00:25:10", "rollback-start", "control-planes-ready"),
            progress(
                "00:26:00",
                "rollback-start",
                "istiod-asm-1-28 <still> running",
            ),
        ]
    }

    #[test]
    fn the_analysis_gates_measurements_are_a_table_per_gate() {
        let mut events = gate_events();
        let m = |value: Option<f64>, verdict: &str| asm_canary_engine::MeasurementRecord {
            name: "request-success-rate".into(),
            series: Some("payments/api".into()),
            query: "sum(rate(istio_requests_total[1m]))".into(),
            value,
            baseline: Some(100.0),
            min: Some(99.0),
            max: None,
            verdict: verdict.into(),
            at: at("00:04:00"),
        };
        for (v, verdict) in [(Some(95.0), "fail"), (None, "inconclusive")] {
            events.push(rec(
                "00:04:00",
                Event::Measurement {
                    step: "analysis".into(),
                    check: "analysis".into(),
                    measurement: m(v, verdict),
                },
            ));
        }
        let t = Timeline::build(rolled_back_run().cp, &events);
        let md = markdown(&t);
        assert!(md.contains("## Measurements: analysis (analysis)"), "{md}");
        assert!(
            md.contains(
                "| 00:04:00 | request-success-rate | payments/api | 95.00 | 100.00 | ≥ 99 | fail |"
            ),
            "{md}"
        );
        assert!(md.contains("| no data |"), "{md}");
        assert!(md.contains("First query: `sum(rate(istio_requests_total[1m]))`"));
        let page = html(&t);
        assert!(page.contains("<h2>Measurements: analysis (analysis)</h2>"));
        assert!(page.contains("<td>95.00</td>"));
        // The chart of the success rate, its bound dashed; no p99 was measured.
        assert!(
            page.contains("data-chart=\"request-success-rate\""),
            "{page}"
        );
        assert!(page.contains("stroke-dasharray"));
        assert!(!page.contains("data-chart=\"request-duration\""));
    }

    #[test]
    fn markdown_of_a_rolled_back_run() {
        insta::assert_snapshot!(markdown(&rolled_back_run()));
    }

    #[test]
    fn svg_of_a_rolled_back_run() {
        insta::assert_snapshot!(svg(&rolled_back_run()));
    }

    #[test]
    fn html_of_a_rolled_back_run() {
        insta::assert_snapshot!(html(&rolled_back_run()));
    }

    #[test]
    fn markdown_of_a_run_that_changed_nothing() {
        let cp = checkpoint(json!({
            "state": "completed",
            "steps": [step("preflight", "succeeded", "00:00:00", "00:00:01")],
        }));
        insta::assert_snapshot!(markdown(&Timeline::build(cp, &[])));
    }

    #[test]
    fn the_final_check_after_complete_is_in_the_report() {
        let mut complete = step("complete", "succeeded", "00:10:00", "00:11:00");
        complete["outputs"] = json!({"final_check": {
            "ok": false,
            "passed": ["tag prod points at asm-1-28"],
            "problems": ["1 pod(s) run a revision that is no longer installed: orders/db-0 (asm-1-27); restart their workloads"],
        }});
        let cp = checkpoint(json!({"state": "completed", "steps": [complete]}));
        let md = markdown(&Timeline::build(cp, &[]));
        assert!(
            md.contains("## Final check\n\n**Problems found** after the upgrade completed:\n\n- ✗ 1 pod(s) run a revision that is no longer installed: orders/db-0 (asm-1-27); restart their workloads\n- ✓ tag prod points at asm-1-28\n"),
            "{md}"
        );
        let without = markdown(&Timeline::build(
            checkpoint(json!({"state": "completed", "steps": []})),
            &[],
        ));
        assert!(!without.contains("Final check"), "{without}");
    }
}
