//! The plan of a day-2 run (patch restart, onboarding): what it would restart, in which
//! waves, behind which gates; read-only. `asm-canary patch-restart --plan` and
//! `asm-canary onboard --plan` print it; guided runs show it before they start.

use serde::Serialize;
use serde_json::{Map, Value};

use super::patch::{Drifted, counts_by_namespace, single_revision};
use super::plan::{GateLine, gate_lines};
use super::wave::{Growth, first_then_growing, parallelism_line};
use super::{Env, k8s_err, kube_err};
use crate::istio::REV_LABEL;
use crate::k8s::pods::is_application_namespace;
use asm_canary_engine::{Runbook, StepError};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ListParams, ResourceExt};

/// The schema of `patch-restart --plan --output json` and `onboard --plan --output json`.
pub const DAY2_PLAN_SCHEMA: &str = "asm-canary.day2-plan/1.0";

/// One wave of a day-2 plan.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Day2Wave {
    pub namespaces: Vec<String>,
    pub workloads: usize,
    pub parallelism: String,
}

/// A day-2 run's plan.
#[derive(Debug, Serialize)]
pub struct Day2Plan {
    pub schema: &'static str,
    /// `asm-canary-patch-restart` or `asm-canary-onboard`.
    pub runbook: String,
    pub cluster: String,
    pub revision: String,
    /// What the plan found, in a sentence (the drift, the namespaces to onboard).
    pub verdict: String,
    /// Nothing to restart or label: a run would change nothing.
    pub nothing_to_do: bool,
    /// Patch restart: the drifted workloads.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drifted: Vec<Drifted>,
    pub waves: Vec<Day2Wave>,
    pub gates: Vec<GateLine>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn waves_of(
    counts: &[(String, usize)],
    params: &Map<String, Value>,
) -> Result<Vec<Day2Wave>, StepError> {
    let growth = Growth::of_input(
        params
            .get("waves")
            .and_then(Value::as_str)
            .map(str::to_string),
    )?;
    let spec = params
        .get("parallelism")
        .cloned()
        .unwrap_or(Value::String("100%".into()));
    Ok(first_then_growing(counts, &growth)
        .into_iter()
        .map(|nss| {
            let workloads = nss
                .iter()
                .filter_map(|n| counts.iter().find(|(c, _)| c == n).map(|(_, k)| *k))
                .sum();
            Day2Wave {
                parallelism: parallelism_line(&spec, workloads),
                namespaces: nss,
                workloads,
            }
        })
        .collect())
}

/// The patch restart's plan: the drifted workloads and their waves.
pub async fn patch_plan(
    env: &Env,
    runbook: &Runbook,
    params: &Map<String, Value>,
) -> Result<Day2Plan, StepError> {
    let revision = single_revision(env).await?;
    let only: Vec<String> = params
        .get("namespaces")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    refuse_unmeshed(env, &only).await?;
    let scope = (!only.is_empty()).then_some(only.as_slice());
    let drift =
        crate::k8s::patch::find_patch_drift(&env.kube, std::slice::from_ref(&revision), scope)
            .await
            .map_err(|e| k8s_err("finding sidecars behind their injector", e))?;
    let drifted: Vec<Drifted> = drift.workloads.iter().map(Drifted::of).collect();
    Ok(Day2Plan {
        schema: DAY2_PLAN_SCHEMA,
        runbook: runbook.name.clone(),
        cluster: env.cluster.to_string(),
        verdict: super::patch::drift_line(&drift, &revision),
        nothing_to_do: drift.workloads.is_empty(),
        waves: waves_of(&counts_by_namespace(&drifted), params)?,
        drifted,
        revision,
        gates: gate_lines(runbook, params),
        warnings: drift
            .unmovable
            .iter()
            .map(|u| format!("will not restart {u}"))
            .collect(),
    })
}

/// `-n` of a patch restart names namespaces in the mesh, each: a typo, a system namespace or
/// one never onboarded is refused, never read as "no sidecar there is behind".
async fn refuse_unmeshed(env: &Env, only: &[String]) -> Result<(), StepError> {
    if only.is_empty() {
        return Ok(());
    }
    let api: Api<Namespace> = Api::all(env.kube.clone());
    let all = api
        .list(&ListParams::default())
        .await
        .map_err(|e| kube_err("listing namespaces", e))?;
    for ns in only {
        let why = if !crate::k8s::is_namespace_name(ns) {
            format!("{ns:?} is not a namespace name")
        } else if !is_application_namespace(ns) {
            format!(
                "namespace {ns} belongs to the cluster or the mesh add-on; patch-restart restarts application workloads"
            )
        } else {
            let found = all
                .items
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(ns.as_str()));
            match found.map(|n| n.labels().contains_key(REV_LABEL)) {
                None => format!("namespace {ns} does not exist in {}", env.cluster.name),
                Some(false) => format!(
                    "namespace {ns} is not in the mesh (no {REV_LABEL} label): no sidecar there can be behind; bring it in with asm-canary onboard -n {ns}"
                ),
                Some(true) => continue,
            }
        };
        return Err(StepError::msg(format!("-n {why}")));
    }
    Ok(())
}

/// The onboarding's plan: the namespaces to label and their waves; `Ok(Err)` is a refusal.
pub async fn onboard_plan(
    env: &Env,
    runbook: &Runbook,
    params: &Map<String, Value>,
) -> Result<Result<Day2Plan, String>, StepError> {
    let namespaces: Vec<String> = params
        .get("namespaces")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let tag = params.get("tag").and_then(Value::as_str).unwrap_or("prod");
    let revision = params
        .get("revision")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty());
    let scope = match super::onboard::onboard_scope(env, &namespaces, tag, revision).await? {
        Ok(s) => s,
        Err(why) => return Ok(Err(why)),
    };
    let counts: Vec<(String, usize)> =
        super::restart::plan_each(env, &scope.namespaces, &scope.revision)
            .await?
            .into_iter()
            .map(|(ns, p)| (ns, p.workloads.len()))
            .collect();
    let mut warnings = Vec::new();
    if !scope.already.is_empty() {
        warnings.push(super::onboard::already_line(&scope.already));
    }
    Ok(Ok(Day2Plan {
        schema: DAY2_PLAN_SCHEMA,
        runbook: runbook.name.clone(),
        cluster: env.cluster.to_string(),
        verdict: if scope.namespaces.is_empty() {
            "nothing to onboard: every namespace named is in the mesh already".to_string()
        } else {
            format!(
                "label {} istio.io/rev={} (injected by {}), then restart their workloads",
                scope.namespaces.join(", "),
                scope.label,
                scope.revision
            )
        },
        nothing_to_do: scope.namespaces.is_empty(),
        drifted: Vec::new(),
        waves: waves_of(&counts, params)?,
        revision: scope.revision,
        gates: gate_lines(runbook, params),
        warnings,
    }))
}

/// The plan as text, as `--plan` prints it.
pub fn render(plan: &Day2Plan, render_gate: impl Fn(&GateLine) -> String) -> String {
    let mut lines = vec![
        format!("Runbook     {}", plan.runbook),
        format!("Cluster     {}", plan.cluster),
        format!("Revision    {}", plan.revision),
        format!("Plan        {}", plan.verdict),
    ];
    if plan.waves.is_empty() {
        lines.push("Waves       none: nothing to restart".to_string());
    }
    for (i, w) in plan.waves.iter().enumerate() {
        lines.push(format!(
            "Wave {:<6} {} workload(s), {}: {}",
            format!("{}/{}", i + 1, plan.waves.len()),
            w.workloads,
            w.parallelism,
            super::first_few(&w.namespaces, 8, "namespaces")
        ));
    }
    lines.push("Steps and gates".to_string());
    lines.extend(plan.gates.iter().map(render_gate));
    lines.extend(plan.warnings.iter().map(|w| format!("Warning     {w}")));
    let mut s = lines.join("\n");
    s.push('\n');
    s
}
