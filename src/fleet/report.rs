//! The fleet report (`<state>.report.md`): the fleet's outcome, each stage with its clusters
//! (status, run id, times, why), and a timeline picture — a Mermaid Gantt chart, which GitHub,
//! Azure DevOps and most Markdown viewers draw — of when each cluster ran, stage by stage.

use std::fmt::Write;

use crate::contract::fleet::{ClusterRecord, ClusterStatus, FleetState};

pub fn markdown(state: &FleetState) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Fleet run {}\n", state.fleet_run_id);
    let _ = writeln!(
        out,
        "- fleet file: `{}`\n- state: **{:?}**{}\n- started {}, last change {}\n",
        state.fleet_file,
        state.state,
        state
            .reason
            .as_deref()
            .map(|r| format!(" — {r}"))
            .unwrap_or_default(),
        state.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        state.updated_at.format("%Y-%m-%d %H:%M:%S UTC"),
    );
    for stage in &state.stages {
        let _ = writeln!(out, "## Stage {}\n", stage.name);
        if let Some(until) = stage.soak_until {
            let _ = writeln!(out, "- soak until {}", until.format("%H:%M:%S UTC"));
        }
        if let Some(a) = &stage.approved {
            let _ = writeln!(
                out,
                "- next stage approved by {} at {}",
                a.by,
                a.at.format("%H:%M:%S UTC")
            );
        }
        if stage.soak_until.is_some() || stage.approved.is_some() {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "| cluster | status | run id | started | finished | why |\n|---|---|---|---|---|---|"
        );
        for c in state.clusters.iter().filter(|c| c.stage == stage.name) {
            let _ = writeln!(out, "{}", row(c));
        }
        out.push('\n');
    }
    out.push_str(&timeline(state));
    out
}

fn row(c: &ClusterRecord) -> String {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%H:%M:%S").to_string())
            .unwrap_or_else(|| "–".into())
    };
    format!(
        "| `{}` | {} | {} | {} | {} | {} |",
        c.id.rsplit('/').next().unwrap_or(&c.id),
        crate::ui::fleet::status_word(c.status),
        c.run_id.as_deref().unwrap_or("–"),
        time(c.started_at),
        time(c.finished_at),
        c.reason.as_deref().unwrap_or("").replace('|', "\\|")
    )
}

/// A Mermaid Gantt chart: one section per stage, one bar per cluster that ran.
fn timeline(state: &FleetState) -> String {
    let mut out = String::from(
        "## Timeline\n\n```mermaid\ngantt\n    dateFormat HH:mm:ss\n    axisFormat %H:%M:%S\n",
    );
    for stage in &state.stages {
        let _ = writeln!(out, "    section {}", stage.name);
        for c in state.clusters.iter().filter(|c| c.stage == stage.name) {
            let (Some(start), Some(end)) = (c.started_at, c.finished_at.or(Some(state.updated_at)))
            else {
                continue;
            };
            let tag = match c.status {
                ClusterStatus::RolledBack | ClusterStatus::Failed => "crit, ",
                ClusterStatus::Running | ClusterStatus::Paused => "active, ",
                _ => "",
            };
            let _ = writeln!(
                out,
                "    {} :{tag}{}, {}",
                c.id.rsplit('/').next().unwrap_or(&c.id),
                start.format("%H:%M:%S"),
                end.max(start + chrono::Duration::seconds(1))
                    .format("%H:%M:%S")
            );
        }
    }
    out.push_str("```\n");
    out
}
