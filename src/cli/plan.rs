//! `asm-canary plan`: the plan of the canary upgrade, read-only, and the same plan guided
//! `upgrade` and `demo` show before their first prompt. The decisions are
//! [`crate::steps::plan`]'s; this file parses, loads the runbook, and renders.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use serde_json::{Map, Value};

use super::args::{ClusterArgs, OutputArg};
use super::connect::{Pace, connect};
use super::error::CliError;
use super::request::{UpgradeOptions, load_runbook};
use crate::steps::Env;
use crate::steps::plan::{GateLine, Plan, PlanRequest, RunClass, Wave};
use crate::steps::tag::mode_of;

#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub upgrade: UpgradeOptions,
    /// Plan with this runbook's gates instead of the built-in canary runbook's (the runbook
    /// `upgrade --runbook FILE` would follow).
    #[arg(long, value_name = "FILE")]
    pub runbook: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

pub async fn plan(args: PlanArgs) -> Result<u8, CliError> {
    let PlanArgs {
        cluster,
        upgrade,
        runbook,
        output,
    } = args;
    let params = upgrade.params()?;
    let connected = connect(&cluster, Pace::Real).await?;
    let plan = full_plan(&connected.env, &upgrade, &params, runbook.as_deref()).await?;
    match output {
        OutputArg::Json => super::print_document("plan", &plan)?,
        OutputArg::Text => super::print_stdout(&render_plan(&plan)),
    }
    Ok(crate::contract::exit::OK)
}

/// Guided mode: the plan on stderr before the first prompt, with the gates of the runbook
/// the run follows (`runbook`: `--runbook`, else the built-in one).
pub async fn show_plan(
    env: &Arc<Env>,
    upgrade: &UpgradeOptions,
    params: &Map<String, Value>,
    runbook: Option<&Path>,
) -> Result<(), CliError> {
    let plan = full_plan(env, upgrade, params, runbook).await?;
    crate::say!("{}", render_plan(&plan));
    Ok(())
}

/// The plan with the gates of `runbook` (`None`: the built-in canary runbook).
pub async fn full_plan(
    env: &Arc<Env>,
    upgrade: &UpgradeOptions,
    params: &Map<String, Value>,
    runbook: Option<&Path>,
) -> Result<Plan, CliError> {
    let (runbook, _) = load_runbook(runbook, env.clone())?;
    let request = plan_request(upgrade, runbook, params)?;
    crate::steps::plan::build(env, &request)
        .await
        .map_err(|e| CliError::connect(e.to_string(), e))
}

/// The checked request: the flags that shape the plan, and the params for the gates.
fn plan_request(
    upgrade: &UpgradeOptions,
    runbook: asm_canary_engine::Runbook,
    params: &Map<String, Value>,
) -> Result<PlanRequest, CliError> {
    let UpgradeOptions {
        to,
        tag,
        create_tag,
        mode,
        canary_namespaces,
        force,
        restart_ondelete,
        // these reach the plan through `params` (the gates' durations)
        parallelism: _,
        waves: _,
        promote_approval: _,
        soak: _,
        analysis_checks: _,
        params: _,
    } = upgrade;
    let to = match to {
        Some(t) => Some(
            t.parse()
                .map_err(|e| CliError::bad(format!("--to {t:?}: {e}")))?,
        ),
        None => None,
    };
    Ok(PlanRequest {
        to,
        tag: tag.clone(),
        create_tag: *create_tag,
        mode: mode_of(Some(mode.clone())).map_err(|e| CliError::bad(e.to_string()))?,
        canary_namespaces: canary_namespaces.clone(),
        force: *force,
        restart_ondelete: *restart_ondelete,
        runbook,
        params: params.clone(),
    })
}

pub fn render_plan(plan: &Plan) -> String {
    let mut lines = vec![
        format!("Cluster     {}", plan.cluster),
        format!(
            "Installed   {} (Kubernetes {})",
            plan.installed.join(", "),
            plan.kubernetes_version.as_deref().unwrap_or("?")
        ),
        format!("Class       {}", plan.class.as_str()),
        format!("Preflight   {}", plan.verdict),
    ];
    match (&plan.source, &plan.target) {
        (Some(src), Some(tgt)) => render_upgrade(plan, src, tgt, &mut lines),
        // The canary steps are planned by the run once the canary is adopted (or consolidated).
        _ if matches!(plan.class, RunClass::ResumeCanary | RunClass::Consolidate) => {}
        _ => lines.push("Nothing to do: see the preflight verdict above.".to_string()),
    }
    lines.extend(plan.pod_by_pod.iter().map(|p| format!("Pod by pod  {p}")));
    lines.extend(plan.warnings.iter().map(|w| format!("Warning     {w}")));
    lines.extend(plan.refused.iter().map(|r| format!("Refused     {r}")));
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

fn render_upgrade(plan: &Plan, src: &str, tgt: &str, lines: &mut Vec<String>) {
    lines.push(format!(
        "Upgrade     {src} → {tgt}: {} (offered: {})",
        plan.target_reason.as_deref().unwrap_or(""),
        plan.offered.join(", ")
    ));
    if let Some(cm) = &plan.configmap {
        lines.push(format!("ConfigMap   {cm}"));
    }
    if let Some(t) = &plan.tag_move {
        lines.push(format!("Injection   {t}"));
    }
    if let Some(c) = &plan.canary {
        lines.push(format!(
            "Canary      {}{}{}",
            c.namespaces.join(", "),
            c.chosen_by
                .why()
                .map(|w| format!(" ({w})"))
                .unwrap_or_default(),
            if c.promote_approval {
                "; approval \"promote\" before the tag moves"
            } else {
                ""
            }
        ));
    }
    for (i, o) in plan.order.iter().enumerate() {
        let head = if i == 0 { "Order" } else { "" };
        lines.push(format!("{head:<11} {}. {o}", i + 1));
    }
    if plan.waves.is_empty() {
        lines.push("Waves       none: no namespace uses the tag; nothing to restart".to_string());
    }
    for (i, w) in plan.waves.iter().enumerate() {
        lines.push(render_wave(i, plan.waves.len(), w));
    }
    lines.push("Steps and gates".to_string());
    lines.extend(plan.gates.iter().map(render_gate));
}

fn render_wave(i: usize, of: usize, w: &Wave) -> String {
    // hundreds of namespaces: the first few (`--output json` has all)
    let nss = crate::steps::first_few(
        w.namespaces.iter().map(|n| match n.without_sidecar.len() {
            0 => format!("{} ({})", n.namespace, n.workloads),
            bare => format!(
                "{} ({}, {bare} without a sidecar)",
                n.namespace, n.workloads
            ),
        }),
        8,
        "namespaces",
    );
    format!(
        "Wave {:<6} {}{} workload(s), {}% of the mesh ({}% done), {} at once: {nss}",
        format!("{}/{of}", i + 1),
        if w.canary { "canary: " } else { "" },
        w.workloads,
        w.percent_of_mesh,
        w.cumulative_percent,
        w.parallelism
    )
}

pub(super) fn render_gate(g: &GateLine) -> String {
    let mut extra = vec![];
    if let Some(st) = &g.stable_for {
        extra.push(format!("stable for {st}"));
    }
    if g.approval {
        extra.push("asks approval first".to_string());
    }
    extra.push(format!("on failure: {}", g.on_failure));
    if g.gate.is_empty() {
        return format!("  {:<15} {:<41} {}", g.step, "no gate", extra.join(", "));
    }
    format!(
        "  {:<15} gate {:<22} timeout {:<5} {}",
        g.step,
        g.gate,
        g.timeout,
        extra.join(", ")
    )
}
