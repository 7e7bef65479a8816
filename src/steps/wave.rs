//! Waves: how the workloads after the canary are split (growing waves), how many restart at
//! once (parallelism, a count or a share of the wave), and the gate after every wave.
//!
//! ```text
//!  canary wave ─▶ gate ─▶ [promote] ─▶ tag moves ─▶ wave 2 ─▶ gate ─▶ wave 3 ─▶ gate ─▶ …
//!  gate = every workload of the wave rolled out (kubectl's rules)
//!       ─▶ every proxy of the wave's namespaces SYNCED, continuously for the wave's soak
//!       ─▶ judge_wave (the further check: the analysis gate plugs in here)
//! ```
//!
//! The pure parts (growth, parallelism, the default canary) are unit-tested here; the
//! restart steps ([`super::restart`]) and the plan ([`super::plan`]) call them, so the plan
//! shows exactly the waves a run restarts.

use std::time::{Duration, Instant};

use asm_canary_engine::duration::parse_duration;
use asm_canary_engine::{ActionCtx, GateStatus, StepError};
use serde_json::Value;

use super::Env;
use crate::k8s::WorkloadRef;

/// The default growth: each wave after the canary twice the size of the one before.
pub const DEFAULT_GROWTH: &str = "x2";
const DEFAULT_WAVE_SOAK: Duration = Duration::from_secs(30);
const DEFAULT_WAVE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DEFAULT_POLL: Duration = Duration::from_secs(10);

/// How the waves after the canary grow (the `waves` param).
#[derive(Clone, Debug, PartialEq)]
pub enum Growth {
    /// `x2`: each wave `factor` times the workloads of the one before (the first: times the
    /// canary's).
    Factor(u32),
    /// `10%,30%,100%`: each wave ends where this share of the remaining workloads is reached
    /// (cumulative); the last is 100.
    Percents(Vec<u32>),
}

impl Growth {
    /// Parses `x2` (or `2x`, `×2`) and `10%,30%,100%` (increasing, each 1..=100; a last step
    /// below 100 gets 100 added).
    pub fn parse(raw: &str) -> Result<Growth, String> {
        let s = raw.trim();
        let bad = || {
            format!(
                "waves {raw:?}: expected a growth factor such as x2, or increasing percentages of the remaining workloads such as 10%,30%,100%"
            )
        };
        if s.contains('%') {
            let mut out: Vec<u32> = Vec::new();
            for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let n: u32 = part
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse().ok())
                    .ok_or_else(bad)?;
                if n == 0 || n > 100 || out.last().is_some_and(|&l| n <= l) {
                    return Err(bad());
                }
                out.push(n);
            }
            if out.is_empty() {
                return Err(bad());
            }
            if out.last() != Some(&100) {
                out.push(100);
            }
            return Ok(Growth::Percents(out));
        }
        let digits = s
            .strip_prefix('x')
            .or_else(|| s.strip_prefix('×'))
            .or_else(|| s.strip_suffix('x'))
            .ok_or_else(bad)?;
        match digits.trim().parse::<u32>() {
            Ok(n) if (2..=100).contains(&n) => Ok(Growth::Factor(n)),
            _ => Err(bad()),
        }
    }

    /// The growth of the step's input `waves` (absent: [`DEFAULT_GROWTH`]).
    pub fn of_input(v: Option<String>) -> Result<Growth, StepError> {
        Growth::parse(v.as_deref().unwrap_or(DEFAULT_GROWTH)).map_err(StepError::msg)
    }
}

/// Splits `namespaces` (in order, each with the workloads it would restart) into waves that
/// grow as `growth` says, starting from a canary of `canary_size` workloads. Every namespace
/// lands in exactly one wave, in order; a wave is never empty; namespaces with nothing to
/// restart ride along with the wave they fall in.
pub fn grow_waves(
    namespaces: &[(String, usize)],
    canary_size: usize,
    growth: &Growth,
) -> Vec<Vec<String>> {
    let total: usize = namespaces.iter().map(|(_, n)| n).sum();
    let mut waves: Vec<Vec<String>> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let (mut in_wave, mut done) = (0usize, 0usize);
    let mut previous = canary_size.max(1);
    let mut index = 0usize;
    let target = |index: usize, previous: usize| -> usize {
        match growth {
            Growth::Factor(f) => previous.saturating_mul(*f as usize),
            Growth::Percents(ps) => {
                let p = *ps.get(index).unwrap_or(&100) as usize;
                // Cumulative: where this wave ends, as a count of the remaining workloads.
                total.saturating_mul(p).div_ceil(100).max(1)
            }
        }
    };
    for (ns, n) in namespaces {
        current.push(ns.clone());
        in_wave += n;
        let reached = match growth {
            Growth::Factor(_) => in_wave >= target(index, previous),
            Growth::Percents(_) => done + in_wave >= target(index, previous),
        };
        if reached && in_wave > 0 {
            waves.push(std::mem::take(&mut current));
            done += in_wave;
            previous = in_wave;
            in_wave = 0;
            index += 1;
        }
    }
    if !current.is_empty() {
        match waves.last_mut() {
            // Only namespaces with nothing to restart are left: they join the last wave.
            Some(last) if in_wave == 0 => last.extend(current),
            _ => waves.push(current),
        }
    }
    waves
}

/// How many workloads of a wave of `wave_size` restart at once: a count, or a percentage of
/// the wave (rounded up), at least 1. Anything unreadable is 1 (the safest).
pub fn parallelism_for(spec: &Value, wave_size: usize) -> usize {
    match spec {
        Value::Number(n) => n.as_u64().unwrap_or(1).max(1) as usize,
        Value::String(s) => match s.trim().strip_suffix('%') {
            Some(p) => {
                let p: usize = p.trim().parse().unwrap_or(1);
                wave_size.saturating_mul(p.min(100)).div_ceil(100).max(1)
            }
            None => s.trim().parse::<usize>().unwrap_or(1).max(1),
        },
        _ => 1,
    }
}

/// The parallelism as the plan says it: `4`, or `50% (3 at once)`.
pub fn parallelism_line(spec: &Value, wave_size: usize) -> String {
    let n = parallelism_for(spec, wave_size);
    match spec {
        Value::String(s) if s.ends_with('%') => format!("{s} of the wave ({n} at once)"),
        _ => format!("{n} at once"),
    }
}

/// The canary when none is named: the namespace with the fewest workloads to restart (at
/// least one), the first by name among equals. `None` when nothing is to restart.
pub fn default_canary(namespaces: &[(String, usize)]) -> Option<String> {
    namespaces
        .iter()
        .filter(|(_, n)| *n > 0)
        .min_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)))
        .map(|(ns, _)| ns.clone())
}

/// The namespace label that marks a team's canary namespaces (`asm-canary/canary=true`), taken
/// when `--canary-namespaces` names none this run migrates.
pub const CANARY_LABEL: &str = "asm-canary/canary";

/// How the canary namespaces were chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CanaryChoice {
    /// `--canary-namespaces`.
    Flag,
    /// The namespaces labelled [`CANARY_LABEL`]`=true`.
    Label,
    /// Neither: the [`default_canary`].
    Default,
}

impl CanaryChoice {
    /// Why the plan and the events name these namespaces (nothing when the user named them).
    pub fn why(self) -> Option<String> {
        match self {
            Self::Flag => None,
            Self::Label => Some(format!("chosen by the namespace label {CANARY_LABEL}=true")),
            Self::Default => Some(format!(
                "chosen by default: the namespace with the fewest workloads to move; --canary-namespaces or the namespace label {CANARY_LABEL}=true chooses"
            )),
        }
    }
}

/// The canary namespaces: those `requested` that this run migrates (in the order given), else
/// those `marked` with [`CANARY_LABEL`] that it migrates, else the [`default_canary`].
pub fn choose_canary(
    requested: &[String],
    marked: &[String],
    namespaces: &[(String, usize)],
) -> (Vec<String>, CanaryChoice) {
    let among = |names: &[String]| {
        names
            .iter()
            .filter(|r| namespaces.iter().any(|(n, _)| n == *r))
            .fold(Vec::<String>::new(), |mut acc, r| {
                if !acc.contains(r) {
                    acc.push(r.clone());
                }
                acc
            })
    };
    let given = among(requested);
    if !given.is_empty() {
        return (given, CanaryChoice::Flag);
    }
    // A marked namespace with nothing to move would make an empty canary: not a canary.
    let with_work: Vec<String> = marked
        .iter()
        .filter(|m| namespaces.iter().any(|(n, c)| n == *m && *c > 0))
        .cloned()
        .collect();
    let labelled = among(&with_work);
    if !labelled.is_empty() {
        return (labelled, CanaryChoice::Label);
    }
    (
        default_canary(namespaces).into_iter().collect(),
        CanaryChoice::Default,
    )
}

/// Waves for a restart without a canary revision (a patch restart, an onboarding): the first
/// wave is the [`default_canary`] namespace (the fewest workloads to restart), the rest grow
/// from it as `growth` says. Namespaces with nothing to restart are left out.
pub fn first_then_growing(namespaces: &[(String, usize)], growth: &Growth) -> Vec<Vec<String>> {
    let Some(first) = default_canary(namespaces) else {
        return Vec::new();
    };
    let first_size = namespaces
        .iter()
        .find(|(n, _)| *n == first)
        .map_or(1, |(_, c)| *c);
    let rest: Vec<(String, usize)> = namespaces
        .iter()
        .filter(|(n, c)| *n != first && *c > 0)
        .cloned()
        .collect();
    let mut waves = vec![vec![first]];
    waves.extend(grow_waves(&rest, first_size, growth));
    waves
}

/// A wave as the gate after it sees it: what restarted, where, and when.
#[derive(Clone, Debug)]
pub struct WaveScope {
    /// `canary`, or `wave 3/5`.
    pub label: String,
    /// The revision the wave moved to.
    pub revision: String,
    pub namespaces: Vec<String>,
    pub workloads: Vec<WorkloadRef>,
    /// The `restartedAt` stamp the wave's workloads got (the earliest): the analysis's
    /// baseline window ends here.
    pub restarted_at: Option<String>,
}

/// What the further check says about a wave.
#[derive(Clone, Debug, PartialEq)]
pub enum WaveVerdict {
    Pass {
        detail: String,
    },
    Fail {
        reason: String,
    },
    /// No data, or NaN: never a pass.
    Inconclusive {
        reason: String,
    },
}

/// The further check after a wave has rolled out and its proxies stayed SYNCED for the soak:
/// the one place where an application-health judgement of the wave is made — the analysis
/// ([`crate::analysis`]) of the wave's workloads on the run's Prometheus, from the run's
/// `analysis_*` params, each measurement an event. Without a Prometheus, the wave passes on
/// rollout and proxy sync alone (a run that had one and lost it on resume is inconclusive).
pub async fn judge_wave(
    env: &Env,
    ctx: &ActionCtx,
    scope: &WaveScope,
) -> Result<WaveVerdict, StepError> {
    let label = &scope.label;
    let Some(source) = env.metrics.clone() else {
        let url = ctx.params.get("prometheus").and_then(|v| v.as_str());
        return Ok(match url.filter(|u| !u.is_empty()) {
            Some(url) => WaveVerdict::Inconclusive {
                reason: format!(
                    "this run judges its waves on Prometheus {url}, and none is configured now: resume with --prometheus {url}"
                ),
            },
            None => WaveVerdict::Pass {
                detail: format!("{label}: no analysis configured; rollout and proxy sync passed"),
            },
        });
    };
    let spec = super::analysis::spec_from(&ctx.params, "analysis_", "param")?;
    let judged = crate::analysis::WaveScope {
        namespaces: scope.namespaces.clone(),
        workloads: scope
            .workloads
            .iter()
            .map(|w| format!("{}/{}", w.namespace, w.name))
            .collect(),
        restarted_at: scope
            .restarted_at
            .as_deref()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&chrono::Utc)),
    };
    let judgement = crate::analysis::Analysis::new(source, spec)
        .judge(&judged)
        .await
        .map_err(|e| StepError::with_source("the analysis could not query its metrics", e))?;
    for m in &judgement.measurements {
        ctx.events.emit(asm_canary_engine::Event::Measurement {
            step: ctx.step.clone(),
            check: label.clone(),
            measurement: m.record(),
        });
    }
    let reason = judgement.reason;
    Ok(match judgement.verdict {
        crate::analysis::Verdict::Pass => WaveVerdict::Pass { detail: reason },
        crate::analysis::Verdict::Fail => WaveVerdict::Fail { reason },
        crate::analysis::Verdict::Inconclusive => WaveVerdict::Inconclusive { reason },
    })
}

fn duration_param(ctx: &ActionCtx, name: &str, default: Duration) -> Duration {
    ctx.params
        .get(name)
        .and_then(|v| v.as_str())
        .and_then(|s| parse_duration(s).ok())
        .unwrap_or(default)
}

/// The gate after a wave whose workloads have rolled out: every proxy of its namespaces
/// SYNCED on the wave's revision, continuously for `wave_soak`, within `verify_timeout`
/// (both params), then [`judge_wave`]. A wave that fails its gate fails the step (the runbook
/// rolls back).
pub async fn gate_wave(env: &Env, ctx: &ActionCtx, scope: &WaveScope) -> Result<(), StepError> {
    let soak = duration_param(ctx, "wave_soak", DEFAULT_WAVE_SOAK);
    let timeout = duration_param(ctx, "verify_timeout", DEFAULT_WAVE_TIMEOUT);
    let poll = duration_param(ctx, "poll_interval", DEFAULT_POLL).max(Duration::from_millis(50));
    let started = Instant::now();
    let mut since: Option<Instant> = None;
    let mut last: String;
    loop {
        let now = Instant::now();
        let passed =
            match super::verify::synced_status(env, &scope.revision, scope.namespaces.to_vec())
                .await
            {
                Ok(GateStatus::Passed { detail }) => {
                    last = detail.unwrap_or_default();
                    true
                }
                Ok(GateStatus::Waiting { detail, progress }) => {
                    if let Some(p) = progress {
                        ctx.events.progress(
                            format!("{} gate: {detail}", scope.label),
                            p.done,
                            p.total,
                        );
                    }
                    last = detail;
                    false
                }
                Ok(GateStatus::Failed { reason }) => {
                    return Err(StepError::msg(format!(
                        "{}: gate proxies-synced failed: {reason}",
                        scope.label
                    )));
                }
                Ok(GateStatus::Inconclusive { reason }) => {
                    return Err(StepError::Inconclusive(format!(
                        "{}: gate proxies-synced: {reason}",
                        scope.label
                    )));
                }
                Err(e) => {
                    last = format!("could not check: {e}");
                    false
                }
            };
        if passed {
            let from = *since.get_or_insert(now);
            if now - from >= soak {
                break;
            }
        } else {
            since = None;
        }
        if started.elapsed() >= timeout {
            return Err(StepError::msg(format!(
                "{}: gate proxies-synced timed out after {} (verify_timeout): {last}",
                scope.label,
                asm_canary_engine::duration::format_duration(timeout)
            )));
        }
        let wait = match since {
            Some(from) => poll.min((from + soak).saturating_duration_since(now)),
            None => poll,
        };
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Err(StepError::Cancelled),
            _ = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
        }
    }
    ctx.events.info(format!(
        "{} gate: {last}, for {}",
        scope.label,
        asm_canary_engine::duration::format_duration(soak)
    ));
    match judge_wave(env, ctx, scope).await? {
        WaveVerdict::Pass { detail } => {
            ctx.events.info(format!("{} passed: {detail}", scope.label));
            Ok(())
        }
        WaveVerdict::Fail { reason } => Err(StepError::msg(format!(
            "{} failed its analysis: {reason}",
            scope.label
        ))),
        // Not a failure: the run pauses (exit 4), and a resume judges the wave again.
        WaveVerdict::Inconclusive { reason } => Err(StepError::Inconclusive(format!(
            "{} analysis inconclusive: {reason}",
            scope.label
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn mk_ns(sizes: &[usize]) -> Vec<(String, usize)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("ns-{i:03}"), *n))
            .collect()
    }

    fn sizes(nss: &[(String, usize)], waves: &[Vec<String>]) -> Vec<usize> {
        waves
            .iter()
            .map(|w| {
                w.iter()
                    .map(|ns| nss.iter().find(|(n, _)| n == ns).unwrap().1)
                    .sum()
            })
            .collect()
    }

    #[test]
    fn growth_parses_factors_and_percentages() {
        assert_eq!(Growth::parse("x2"), Ok(Growth::Factor(2)));
        assert_eq!(Growth::parse("3x"), Ok(Growth::Factor(3)));
        assert_eq!(Growth::parse("×4"), Ok(Growth::Factor(4)));
        assert_eq!(
            Growth::parse("10%, 30%,100%"),
            Ok(Growth::Percents(vec![10, 30, 100]))
        );
        assert_eq!(
            Growth::parse("25%,50%"),
            Ok(Growth::Percents(vec![25, 50, 100]))
        );
        for bad in ["", "x1", "x0", "2", "30%,10%", "0%", "150%", "x", "10%,10%"] {
            assert!(Growth::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn waves_double_from_the_canary() {
        // 200 namespaces of 10 workloads after a canary of 10: 20, 40, 80, … and the rest.
        let nss = mk_ns(&[10; 199]);
        let waves = grow_waves(&nss, 10, &Growth::Factor(2));
        assert_eq!(
            sizes(&nss, &waves),
            vec![20, 40, 80, 160, 320, 640, 730],
            "{waves:?}"
        );
    }

    #[test]
    fn percentages_are_cumulative_shares_of_the_remaining_workloads() {
        let nss = mk_ns(&[1; 100]);
        let waves = grow_waves(&nss, 1, &Growth::Percents(vec![10, 30, 100]));
        assert_eq!(sizes(&nss, &waves), vec![10, 20, 70]);
    }

    #[test]
    fn a_small_mesh_gets_few_waves() {
        // The simulator's default after a canary of frontend (1): logging 1, orders 2, payments 2.
        let nss = vec![
            ("logging".to_string(), 1),
            ("orders".to_string(), 2),
            ("payments".to_string(), 2),
        ];
        let waves = grow_waves(&nss, 1, &Growth::Factor(2));
        assert_eq!(
            waves,
            vec![
                vec!["logging".to_string(), "orders".to_string()],
                vec!["payments".to_string()]
            ]
        );
        assert!(grow_waves(&[], 1, &Growth::Factor(2)).is_empty());
        // Nothing to restart anywhere: one wave, so label mode still relabels them.
        assert_eq!(grow_waves(&mk_ns(&[0, 0]), 1, &Growth::Factor(2)).len(), 1);
    }

    #[test]
    fn parallelism_is_a_count_or_a_share_of_the_wave() {
        assert_eq!(parallelism_for(&json!(4), 100), 4);
        assert_eq!(parallelism_for(&json!("4"), 100), 4);
        assert_eq!(parallelism_for(&json!("50%"), 5), 3);
        assert_eq!(parallelism_for(&json!("100%"), 640), 640);
        assert_eq!(parallelism_for(&json!("10%"), 1), 1);
        assert_eq!(parallelism_for(&json!("10%"), 0), 1);
        assert_eq!(parallelism_for(&json!(0), 10), 1);
        assert_eq!(parallelism_for(&Value::Null, 10), 1);
        assert_eq!(
            parallelism_line(&json!("50%"), 5),
            "50% of the wave (3 at once)"
        );
        assert_eq!(parallelism_line(&json!(4), 5), "4 at once");
    }

    #[test]
    fn the_default_canary_is_the_smallest_namespace_with_work() {
        let nss = vec![
            ("payments".to_string(), 2),
            ("logging".to_string(), 1),
            ("empty".to_string(), 0),
            ("frontend".to_string(), 1),
        ];
        assert_eq!(default_canary(&nss).as_deref(), Some("frontend"));
        assert_eq!(default_canary(&mk_ns(&[0, 0])), None);
        let s = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let named = |r: &[&str]| choose_canary(&s(r), &[], &nss);
        assert_eq!(
            named(&["payments", "nope", "payments"]),
            (vec!["payments".to_string()], CanaryChoice::Flag)
        );
        assert_eq!(
            named(&["nope"]),
            (vec!["frontend".to_string()], CanaryChoice::Default)
        );
        assert_eq!(
            named(&[]),
            (vec!["frontend".to_string()], CanaryChoice::Default)
        );
        // The label chooses when the flag names none; the flag wins over the label.
        assert_eq!(
            choose_canary(&[], &s(&["logging", "nope"]), &nss),
            (vec!["logging".to_string()], CanaryChoice::Label)
        );
        assert_eq!(
            choose_canary(&s(&["payments"]), &s(&["logging"]), &nss),
            (vec!["payments".to_string()], CanaryChoice::Flag)
        );
        assert_eq!(
            choose_canary(&[], &s(&["nope"]), &nss),
            (vec!["frontend".to_string()], CanaryChoice::Default)
        );
        // A marked namespace with nothing left to move is no canary: the default is taken.
        assert_eq!(
            choose_canary(&[], &s(&["empty"]), &nss),
            (vec!["frontend".to_string()], CanaryChoice::Default)
        );
    }

    #[test]
    fn without_a_canary_revision_the_smallest_namespace_goes_first() {
        let nss = vec![
            ("payments".to_string(), 2),
            ("frontend".to_string(), 1),
            ("empty".to_string(), 0),
            ("orders".to_string(), 2),
        ];
        assert_eq!(
            first_then_growing(&nss, &Growth::Factor(2)),
            vec![
                vec!["frontend".to_string()],
                vec!["payments".to_string()],
                vec!["orders".to_string()]
            ]
        );
        assert!(first_then_growing(&[], &Growth::Factor(2)).is_empty());
    }

    proptest! {
        #[test]
        fn waves_partition_the_namespaces_in_order_and_grow(
            counts in proptest::collection::vec(0usize..30, 0..60),
            canary in 1usize..20,
            factor in 2u32..5,
            percents in proptest::collection::btree_set(1u32..=100, 1..5),
        ) {
            let nss = mk_ns(&counts);
            let percents: Vec<u32> = percents.into_iter().collect();
            for growth in [Growth::Factor(factor), Growth::Percents(percents.clone())] {
                let waves = grow_waves(&nss, canary, &growth);
                // Every namespace once, in order.
                let flat: Vec<String> = waves.iter().flatten().cloned().collect();
                let names: Vec<String> = nss.iter().map(|(n, _)| n.clone()).collect();
                prop_assert_eq!(&flat, &names);
                prop_assert!(waves.iter().all(|w| !w.is_empty()));
                let s = sizes(&nss, &waves);
                let total: usize = counts.iter().sum();
                if total > 0 {
                    // No wave without work, but the last may carry empty namespaces along.
                    prop_assert!(s.iter().all(|&n| n > 0), "{:?}", s);
                }
                if let Growth::Factor(f) = growth {
                    // Each wave but the last reaches f × the one before (the first: the canary).
                    let mut previous = canary;
                    for &n in s.iter().take(s.len().saturating_sub(1)) {
                        prop_assert!(n >= previous * f as usize, "{:?}", s);
                        previous = n;
                    }
                }
            }
        }
    }
}
