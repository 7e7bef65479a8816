//! Application-health analysis of a wave: metric checks against Prometheus, judged like
//! Flagger's and Argo Rollouts' analyses.
//!
//! - **Checks**: PromQL templates with `{{ namespace }}`, `{{ workloads }}` and
//!   `{{ interval }}`, and a `min` and/or `max`. [`default_checks`] are Flagger's Istio checks
//!   (`request-success-rate` ≥ 99 %, `request-duration` p99 ≤ 500 ms), grouped by workload so
//!   that one bad workload is not averaged away by the healthy ones beside it.
//! - **Baseline**: each check's query evaluated at the time the wave restarted (so over the
//!   window before it); with `relative`, a workload is also allowed to be as bad as it was
//!   then, plus that fraction.
//! - **Counting** (Argo Rollouts' semantics): `count` measurements `interval` apart; a check
//!   fails when its failed measurements exceed `failure_limit`, is inconclusive when its
//!   inconclusive ones exceed `inconclusive_limit`, passes when `count` were taken without
//!   either. No data and NaN are inconclusive, never a pass.

pub mod local;
pub mod prometheus;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use prometheus::{AZURE_MONITOR_SCOPE, PrometheusAuth, PrometheusClient};

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("Prometheus URL {url:?} is not usable: {message}")]
    Endpoint { url: String, message: String },
    #[error("cannot reach Prometheus at {url}: {message}")]
    Http { url: String, message: String },
    #[error("Prometheus refused the query {query:?}: {message}")]
    Query { query: String, message: String },
    #[error("cannot get an Entra token for {scope} (Azure Monitor): {message}")]
    Token { scope: String, message: String },
    #[error("check {check:?}: {message}")]
    Check { check: String, message: String },
}

/// One series of a query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Where metrics come from (Prometheus; a fake in tests).
#[async_trait]
pub trait MetricSource: Send + Sync {
    /// The instant query `promql` evaluated at `at`.
    async fn query(&self, promql: &str, at: DateTime<Utc>) -> Result<Vec<Sample>, AnalysisError>;
    /// For messages: the endpoint and how it is reached (never a secret).
    fn describe(&self) -> String;
}

/// What one wave put at risk: the namespaces and workloads (`namespace/name`) it restarted,
/// and when it restarted them (the baseline is the window before).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WaveScope {
    pub namespaces: Vec<String>,
    pub workloads: Vec<String>,
    #[serde(default)]
    pub restarted_at: Option<DateTime<Utc>>,
}

/// A metric check: a PromQL template and its bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub name: String,
    /// PromQL with `{{ namespace }}`, `{{ workloads }}` (regex alternations, for `=~`) and
    /// `{{ interval }}` (the window, e.g. `1m`).
    pub query: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    /// With a baseline: a value may also be as bad as the baseline plus this fraction of it
    /// (`0.1`: a p99 up to 10 % over its baseline, a success rate down to 90 % of it).
    #[serde(default)]
    pub relative: Option<f64>,
}

/// The label of a series that names its workload in the default checks' answers.
const NS_LABEL: &str = "destination_workload_namespace";
const WL_LABEL: &str = "destination_workload";

/// Flagger's Istio checks (fluxcd/flagger `pkg/metrics/observers/istio.go`), for every
/// workload of the wave: the share of non-5xx requests in percent, at least 99; the p99 of
/// the request duration in milliseconds, at most 500.
pub fn default_checks() -> Vec<Check> {
    let selector = |extra: &str| {
        format!(
            "reporter=\"destination\", destination_workload_namespace=~\"{{{{ namespace }}}}\", destination_workload=~\"{{{{ workloads }}}}\"{extra}"
        )
    };
    let by = "destination_workload_namespace, destination_workload";
    vec![
        Check {
            name: "request-success-rate".into(),
            query: format!(
                "sum by ({by}) (rate(istio_requests_total{{{}}}[{{{{ interval }}}}])) / sum by ({by}) (rate(istio_requests_total{{{}}}[{{{{ interval }}}}])) * 100",
                selector(", response_code!~\"5.*\""),
                selector("")
            ),
            min: Some(99.0),
            max: None,
            relative: None,
        },
        Check {
            name: "request-duration".into(),
            query: format!(
                "histogram_quantile(0.99, sum by (le, {by}) (rate(istio_request_duration_milliseconds_bucket{{{}}}[{{{{ interval }}}}])))",
                selector("")
            ),
            min: None,
            max: Some(500.0),
            relative: None,
        },
    ]
}

/// How a wave is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisSpec {
    pub checks: Vec<Check>,
    /// The range of the queries' rates (`{{ interval }}`), e.g. `1m`.
    pub window: String,
    /// Between two measurements.
    pub interval: Duration,
    /// Measurements per judgement (at least 1).
    pub count: u32,
    /// A check fails when more of its measurements than this failed.
    pub failure_limit: u32,
    /// A check is inconclusive when more of its measurements than this were inconclusive.
    pub inconclusive_limit: u32,
    /// Measure each check at the wave's restart time too, and judge against it.
    pub baseline: bool,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            checks: default_checks(),
            window: "1m".into(),
            interval: Duration::from_secs(30),
            count: 3,
            failure_limit: 0,
            inconclusive_limit: 0,
            baseline: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Inconclusive,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Fail => "fail",
        }
    }
}

/// One value of one check (one series of its answer, or its lack of data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub check: String,
    /// The series (`namespace/workload` for the default checks), when the answer had one.
    pub series: Option<String>,
    pub query: String,
    /// `None`: no data, or not a number.
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    /// The bounds the value was held to (the baseline may have loosened them).
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub verdict: Verdict,
    pub at: DateTime<Utc>,
}

impl Measurement {
    /// The measurement as the engine's event carries it.
    pub fn record(&self) -> asm_canary_engine::MeasurementRecord {
        asm_canary_engine::MeasurementRecord {
            name: self.check.clone(),
            series: self.series.clone(),
            query: self.query.clone(),
            value: self.value,
            baseline: self.baseline,
            min: self.min,
            max: self.max,
            verdict: self.verdict.as_str().into(),
            at: self.at,
        }
    }

    /// `request-success-rate payments/api = 95.00 (min 99, baseline 100.00)`.
    pub fn describe(&self) -> String {
        let mut s = self.check.clone();
        if let Some(series) = &self.series {
            s.push_str(&format!(" {series}"));
        }
        match self.value {
            Some(v) => s.push_str(&format!(" = {v:.2}")),
            None => s.push_str(" = no data"),
        }
        let mut bounds = Vec::new();
        if let Some(m) = self.min {
            bounds.push(format!("min {m}"));
        }
        if let Some(m) = self.max {
            bounds.push(format!("max {m}"));
        }
        if let Some(b) = self.baseline {
            bounds.push(format!("baseline {b:.2}"));
        }
        if !bounds.is_empty() {
            s.push_str(&format!(" ({})", bounds.join(", ")));
        }
        s
    }
}

/// The outcome of [`Analysis::judge`]: the verdict, why, and every measurement taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// One line naming the deciding check and its numbers (and query, when inconclusive).
    pub reason: String,
    pub measurements: Vec<Measurement>,
}

/// An analysis: a metric source and how to judge.
#[derive(Clone)]
pub struct Analysis {
    pub source: Arc<dyn MetricSource>,
    pub spec: AnalysisSpec,
}

impl std::fmt::Debug for Analysis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analysis")
            .field("source", &self.source.describe())
            .field("spec", &self.spec)
            .finish()
    }
}

/// A Kubernetes name as a regex literal in a PromQL string (`.` escaped; anything outside
/// a DNS name's characters escaped too, so a name cannot end the string).
fn regex_literal(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            out.push(c);
        } else if c.is_ascii_punctuation() && c != '"' && c != '\\' {
            out.push_str("\\\\");
            out.push(c);
        }
    }
    out
}

/// The placeholders a check's query may hold (see [`render`]).
pub const PLACEHOLDERS: [&str; 3] = ["namespace", "workloads", "interval"];

/// Checks written by a person (the runbook, `--analysis-checks`): each has a name, a query and
/// a bound, the names differ, and the queries hold only the known placeholders. The message
/// names the check and what to write.
pub fn validate_checks(checks: &[Check]) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in checks.iter().enumerate() {
        let which = if c.name.trim().is_empty() {
            format!("check {}", i + 1)
        } else {
            format!("check {:?}", c.name)
        };
        if c.name.trim().is_empty() {
            return Err(format!("{which}: give it a name"));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(format!("{which}: the name is used twice"));
        }
        if c.query.trim().is_empty() {
            return Err(format!("{which}: give it a PromQL query"));
        }
        if c.min.is_none() && c.max.is_none() {
            return Err(format!(
                "{which}: give it a bound (min, max or both): a check without one always passes"
            ));
        }
        if let (Some(lo), Some(hi)) = (c.min, c.max)
            && lo > hi
        {
            return Err(format!("{which}: min {lo} is greater than max {hi}"));
        }
        let mut rest = c.query.as_str();
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err(format!(
                    "{which}: a \"{{{{\" without its \"}}}}\" in the query"
                ));
            };
            let name = after[..end].trim();
            if !PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "{which}: unknown placeholder {{{{ {name} }}}} (use {{{{ namespace }}}}, {{{{ workloads }}}} or {{{{ interval }}}})"
                ));
            }
            rest = &after[end + 2..];
        }
    }
    Ok(())
}

/// Custom checks from a param's value: a list, or its JSON (as `--param` gives it); checked
/// with [`validate_checks`].
pub fn checks_from_value(v: &serde_json::Value) -> Result<Vec<Check>, String> {
    let checks: Vec<Check> = match v {
        serde_json::Value::String(s) => serde_json::from_str(s),
        other => serde_json::from_value(other.clone()),
    }
    .map_err(|e| format!("not a list of checks: {e}"))?;
    validate_checks(&checks)?;
    Ok(checks)
}

/// `template` with `{{ namespace }}`, `{{ workloads }}` and `{{ interval }}` replaced.
pub fn render(template: &str, scope: &WaveScope, window: &str) -> String {
    let alternation = |items: &mut dyn Iterator<Item = String>| {
        let mut v: Vec<String> = items.map(|s| regex_literal(&s)).collect();
        v.sort();
        v.dedup();
        if v.is_empty() {
            ".*".to_string()
        } else {
            v.join("|")
        }
    };
    let namespaces = alternation(
        &mut scope.namespaces.iter().cloned().chain(
            scope
                .workloads
                .iter()
                .filter_map(|w| w.split_once('/').map(|(n, _)| n.to_string())),
        ),
    );
    let workloads = alternation(
        &mut scope
            .workloads
            .iter()
            .map(|w| w.split_once('/').map_or(w.as_str(), |(_, n)| n).to_string()),
    );
    let window: String = window
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut out = template.to_string();
    for (names, value) in [
        (["{{ namespace }}", "{{namespace}}"], namespaces.as_str()),
        (["{{ workloads }}", "{{workloads}}"], workloads.as_str()),
        (["{{ interval }}", "{{interval}}"], window.as_str()),
    ] {
        for name in names {
            out = out.replace(name, value);
        }
    }
    out
}

/// The series a sample is (`namespace/workload` for the default checks' labels, else its
/// labels), `None` for a scalar or a sample without labels.
fn series_of(s: &Sample) -> Option<String> {
    match (s.labels.get(NS_LABEL), s.labels.get(WL_LABEL)) {
        (Some(n), Some(w)) => Some(format!("{n}/{w}")),
        _ if s.labels.is_empty() => None,
        _ => Some(
            s.labels
                .iter()
                .filter(|(k, _)| k.as_str() != "__name__")
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
    }
}

/// The bounds `check` holds a value to, loosened by a finite `baseline` when it is relative.
fn bounds(check: &Check, baseline: Option<f64>) -> (Option<f64>, Option<f64>) {
    match (check.relative, baseline.filter(|b| b.is_finite())) {
        (Some(rel), Some(b)) => (
            check.min.map(|m| m.min(b * (1.0 - rel))),
            check.max.map(|m| m.max(b * (1.0 + rel))),
        ),
        _ => (check.min, check.max),
    }
}

/// The verdict on one value: not a number is inconclusive, never a pass.
fn verdict_of(value: Option<f64>, min: Option<f64>, max: Option<f64>) -> Verdict {
    match value {
        Some(v) if v.is_nan() => Verdict::Inconclusive,
        None => Verdict::Inconclusive,
        Some(v) => {
            if min.is_some_and(|m| v < m) || max.is_some_and(|m| v > m) {
                Verdict::Fail
            } else {
                Verdict::Pass
            }
        }
    }
}

/// One check's tally over the measurements taken so far (Argo's `MetricResult`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub taken: u32,
    pub failed: u32,
    pub inconclusive: u32,
}

impl Tally {
    pub fn add(&mut self, v: Verdict) {
        self.taken += 1;
        match v {
            Verdict::Fail => self.failed += 1,
            Verdict::Inconclusive => self.inconclusive += 1,
            Verdict::Pass => {}
        }
    }

    /// Argo Rollouts' assessment: failed beyond the limit is a failure, inconclusive beyond
    /// its limit inconclusive, `count` measurements without either a pass; `None` while
    /// more measurements are due.
    pub fn assess(&self, spec: &AnalysisSpec) -> Option<Verdict> {
        if self.failed > spec.failure_limit {
            Some(Verdict::Fail)
        } else if self.inconclusive > spec.inconclusive_limit {
            Some(Verdict::Inconclusive)
        } else if self.taken >= spec.count.max(1) {
            Some(Verdict::Pass)
        } else {
            None
        }
    }
}

impl Analysis {
    pub fn new(source: Arc<dyn MetricSource>, spec: AnalysisSpec) -> Self {
        Self { source, spec }
    }

    /// One measurement of `check` at `at`: a value per series of the answer (or one without
    /// a value when the answer is empty), and the check's verdict for this round (the worst).
    pub async fn measure(
        &self,
        check: &Check,
        scope: &WaveScope,
        at: DateTime<Utc>,
        baselines: &BTreeMap<Option<String>, f64>,
    ) -> Result<(Verdict, Vec<Measurement>), AnalysisError> {
        let query = render(&check.query, scope, &self.spec.window);
        let samples = self.source.query(&query, at).await?;
        let mut out = Vec::new();
        for s in &samples {
            let series = series_of(s);
            let baseline = baselines.get(&series).copied();
            let (min, max) = bounds(check, baseline);
            let value = Some(s.value).filter(|v| !v.is_nan());
            out.push(Measurement {
                check: check.name.clone(),
                series,
                query: query.clone(),
                value,
                baseline,
                min,
                max,
                verdict: verdict_of(value, min, max),
                at,
            });
        }
        if out.is_empty() {
            out.push(Measurement {
                check: check.name.clone(),
                series: None,
                query,
                value: None,
                baseline: None,
                min: check.min,
                max: check.max,
                verdict: Verdict::Inconclusive,
                at,
            });
        }
        let worst = out
            .iter()
            .map(|m| m.verdict)
            .max()
            .unwrap_or(Verdict::Inconclusive);
        Ok((worst, out))
    }

    /// Each check's baseline per series: its query at the wave's restart time (empty when
    /// the spec has no baseline or the scope no restart time).
    async fn baselines(
        &self,
        scope: &WaveScope,
    ) -> Result<BTreeMap<String, BTreeMap<Option<String>, f64>>, AnalysisError> {
        let mut all = BTreeMap::new();
        let Some(at) = scope.restarted_at.filter(|_| self.spec.baseline) else {
            return Ok(all);
        };
        for check in &self.spec.checks {
            let query = render(&check.query, scope, &self.spec.window);
            let by_series = self
                .source
                .query(&query, at)
                .await?
                .iter()
                .filter(|s| s.value.is_finite())
                .map(|s| (series_of(s), s.value))
                .collect();
            all.insert(check.name.clone(), by_series);
        }
        Ok(all)
    }

    /// Judges the wave: `count` rounds of every check, `interval` apart, stopping as soon as
    /// a check fails or is inconclusive beyond its limit. The worst check decides.
    pub async fn judge(&self, scope: &WaveScope) -> Result<Judgement, AnalysisError> {
        let baselines = self.baselines(scope).await?;
        let empty = BTreeMap::new();
        let mut tallies: Vec<Tally> = vec![Tally::default(); self.spec.checks.len()];
        let mut measurements = Vec::new();
        let mut decided: Vec<Option<Verdict>> = vec![None; self.spec.checks.len()];
        for round in 0..self.spec.count.max(1) {
            if round > 0 {
                tokio::time::sleep(self.spec.interval).await;
            }
            let at = Utc::now();
            for (i, check) in self.spec.checks.iter().enumerate() {
                if decided[i].is_some() {
                    continue;
                }
                let base = baselines.get(&check.name).unwrap_or(&empty);
                let (verdict, ms) = self.measure(check, scope, at, base).await?;
                tallies[i].add(verdict);
                measurements.extend(ms);
                decided[i] = tallies[i].assess(&self.spec);
            }
            if decided
                .iter()
                .any(|d| d.is_some_and(|v| v != Verdict::Pass))
            {
                break;
            }
        }
        Ok(self.conclude(&tallies, &decided, measurements))
    }

    fn conclude(
        &self,
        tallies: &[Tally],
        decided: &[Option<Verdict>],
        measurements: Vec<Measurement>,
    ) -> Judgement {
        // The first check with the worst verdict decides (checks in the spec's order).
        let (worst_i, verdict) = decided
            .iter()
            .enumerate()
            .map(|(i, d)| (i, d.unwrap_or(Verdict::Pass)))
            .fold(
                (0, Verdict::Pass),
                |best, (i, v)| {
                    if v > best.1 { (i, v) } else { best }
                },
            );
        let Some(check) = self.spec.checks.get(worst_i) else {
            return Judgement {
                verdict: Verdict::Pass,
                reason: "no check configured".into(),
                measurements,
            };
        };
        let t = tallies[worst_i];
        let worst_ms: Vec<&Measurement> = measurements
            .iter()
            .filter(|m| m.check == check.name && m.verdict == verdict)
            .collect();
        let shown = worst_ms
            .iter()
            .rev()
            .take(3)
            .map(|m| m.describe())
            .collect::<Vec<_>>()
            .join("; ");
        let reason = match verdict {
            Verdict::Pass => format!(
                "every check passed {} measurement(s): {}",
                t.taken,
                measurements
                    .iter()
                    .rev()
                    .take(self.spec.checks.len().max(1) * 2)
                    .map(|m| m.describe())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Verdict::Fail => format!(
                "{} failed {} of {} measurement(s) (failure limit {}): {shown}",
                check.name, t.failed, t.taken, self.spec.failure_limit
            ),
            Verdict::Inconclusive => format!(
                "{} was inconclusive in {} of {} measurement(s) (no data or NaN): {shown}; query {}",
                check.name,
                t.inconclusive,
                t.taken,
                worst_ms.first().map(|m| m.query.as_str()).unwrap_or("")
            ),
        };
        Judgement {
            verdict,
            reason,
            measurements,
        }
    }
}

#[cfg(test)]
mod tests;
