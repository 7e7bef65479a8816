//! The analysis gate (`analysis`, after action `analysis-scope`): the application health of
//! the workloads a wave restarted, judged on Prometheus metrics by [`crate::analysis`].
//!
//! Inputs (gate): `namespaces`, `workloads` (`namespace/name` strings, or the restart step's
//! records with `namespace`, `name` and `restarted_at`), `restarted_at` (optional, RFC 3339;
//! else the earliest in `workloads`), `interval`, `count`, `failure_limit`,
//! `inconclusive_limit`, `window`, `baseline`, `checks` (custom checks; default: Flagger's
//! Istio checks). Without a Prometheus configured the gate passes and says it is off.
//!
//! Pass → passed; fail → failed (the runbook's `on_failure`, rollback); inconclusive (no
//! data, NaN) → the run pauses (exit 4) with the query and numbers. Every measurement is an
//! event (`measurement`).

use std::sync::Arc;

use asm_canary_engine::{
    Action, ActionCtx, ActionOutcome, Event, Gate, GateCtx, GateStatus, StepError,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::Env;
use crate::analysis::{Analysis, AnalysisSpec, Verdict, WaveScope, default_checks};

pub struct AnalysisScope(pub Arc<Env>);
pub struct AnalysisGate(pub Arc<Env>);

/// The sentence a run shows when no Prometheus is configured.
pub const GATE_OFF: &str = "analysis gate off: no Prometheus configured (give --prometheus URL to judge success rate and p99 latency)";

/// The wave's scope from the gate's (or action's) inputs.
fn scope_of(inputs: &serde_json::Map<String, Value>) -> Result<WaveScope, StepError> {
    let mut scope = WaveScope {
        namespaces: inputs
            .get("namespaces")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        ..WaveScope::default()
    };
    let mut earliest: Option<DateTime<Utc>> = None;
    for w in inputs
        .get("workloads")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match w {
            Value::String(s) => scope.workloads.push(s.clone()),
            Value::Object(o) => {
                let (Some(ns), Some(name)) = (o["namespace"].as_str(), o["name"].as_str()) else {
                    continue;
                };
                scope.workloads.push(format!("{ns}/{name}"));
                if let Some(t) = o
                    .get("restarted_at")
                    .and_then(Value::as_str)
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                {
                    let t = t.with_timezone(&Utc);
                    earliest = Some(earliest.map_or(t, |e| e.min(t)));
                }
            }
            _ => {}
        }
    }
    scope.restarted_at = match inputs.get("restarted_at").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|e| StepError::msg(format!("input \"restarted_at\" {s:?}: {e}")))?
                .with_timezone(&Utc),
        ),
        _ => earliest,
    };
    Ok(scope)
}

/// How to judge, from `values` — the gate's inputs (`interval`, `count`, …) or, with the
/// prefix `analysis_`, the run's params (what every wave's gate reads). Unset or null values
/// keep [`AnalysisSpec::default`]; no (or an empty) `checks` list means Flagger's
/// [`default_checks`]. `origin` names the values in errors (`input`, `param`).
pub fn spec_from(
    values: &serde_json::Map<String, Value>,
    prefix: &str,
    origin: &str,
) -> Result<AnalysisSpec, StepError> {
    let get = |name: &str| {
        let key = format!("{prefix}{name}");
        let v = values.get(&key).filter(|v| !v.is_null()).cloned();
        (key, v)
    };
    let bad = |key: &str, v: &Value, e: &dyn std::fmt::Display| {
        StepError::msg(format!("{origin} \"{key}\" {v}: {e}"))
    };
    let mut spec = AnalysisSpec::default();
    if let (key, Some(v)) = get("interval") {
        let s = v.as_str().unwrap_or_default();
        spec.interval =
            asm_canary_engine::duration::parse_duration(s).map_err(|e| bad(&key, &v, &e))?;
    }
    for (name, field) in [
        ("count", &mut spec.count),
        ("failure_limit", &mut spec.failure_limit),
        ("inconclusive_limit", &mut spec.inconclusive_limit),
    ] {
        if let (key, Some(v)) = get(name) {
            let n = v
                .as_u64()
                .ok_or_else(|| bad(&key, &v, &"not a whole number"))?;
            *field = u32::try_from(n).unwrap_or(u32::MAX);
        }
    }
    spec.count = spec.count.max(1);
    if let (key, Some(v)) = get("window") {
        spec.window = v
            .as_str()
            .ok_or_else(|| bad(&key, &v, &"not a string"))?
            .to_string();
    }
    if let (key, Some(v)) = get("baseline") {
        spec.baseline = v
            .as_bool()
            .ok_or_else(|| bad(&key, &v, &"not true or false"))?;
    }
    spec.checks = match get("checks") {
        (key, Some(v)) => crate::analysis::checks_from_value(&v).map_err(|e| bad(&key, &v, &e))?,
        (_, None) => Vec::new(),
    };
    if spec.checks.is_empty() {
        spec.checks = default_checks();
    }
    Ok(spec)
}

#[async_trait]
impl Action for AnalysisScope {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let scope = scope_of(&ctx.inputs)?;
        match &self.0.metrics {
            Some(source) => ctx.events.info(format!(
                "analysis gate on: {} ({} namespace(s), {} workload(s))",
                source.describe(),
                scope.namespaces.len(),
                scope.workloads.len()
            )),
            None => ctx.events.info(GATE_OFF),
        }
        Ok(ActionOutcome::done_json(json!({
            "enabled": self.0.metrics.is_some(),
            "namespaces": scope.namespaces,
            "workloads": scope.workloads,
            "restarted_at": scope.restarted_at.map(|t| t.to_rfc3339()),
        })))
    }
}

#[async_trait]
impl Gate for AnalysisGate {
    async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        let Some(source) = self.0.metrics.clone() else {
            // A run started with a Prometheus is not judged "off" by a resume without it.
            if let Some(url) = ctx
                .input_opt::<String>("prometheus")?
                .filter(|u| !u.is_empty())
            {
                return Ok(GateStatus::inconclusive(format!(
                    "this run's analysis gate judges on Prometheus {url}, and none is configured now: resume with --prometheus {url}"
                )));
            }
            return Ok(GateStatus::Passed {
                detail: Some(GATE_OFF.into()),
            });
        };
        let scope = scope_of(&ctx.inputs)?;
        if scope.namespaces.is_empty() && scope.workloads.is_empty() {
            return Ok(GateStatus::Passed {
                detail: Some("no workload restarted: nothing to judge".into()),
            });
        }
        let spec = spec_from(&ctx.inputs, "", "input")?;
        let judgement = Analysis::new(source, spec)
            .judge(&scope)
            .await
            .map_err(|e| StepError::with_source("the analysis could not query its metrics", e))?;
        for m in &judgement.measurements {
            ctx.events.emit(Event::Measurement {
                step: ctx.step.clone(),
                check: ctx.check.clone(),
                measurement: m.record(),
            });
        }
        Ok(match judgement.verdict {
            Verdict::Pass => GateStatus::Passed {
                detail: Some(judgement.reason),
            },
            Verdict::Fail => GateStatus::failed(judgement.reason),
            Verdict::Inconclusive => GateStatus::inconclusive(judgement.reason),
        })
    }
}
