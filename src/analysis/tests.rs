use std::sync::Mutex;

use super::*;

/// Per check: how many answers were given, and the script of answers.
type Script = BTreeMap<String, (usize, Vec<Vec<Sample>>)>;

/// Answers by the check a query belongs to: a script of answers per check (the last repeats),
/// and a fixed answer at the baseline time.
#[derive(Default)]
struct Fake {
    script: Mutex<Script>,
    baseline: BTreeMap<String, Vec<Sample>>,
    baseline_at: Option<DateTime<Utc>>,
    asked: Mutex<Vec<(String, DateTime<Utc>)>>,
}

fn key(query: &str) -> String {
    if query.contains("histogram_quantile") {
        "request-duration".into()
    } else if query.contains("istio_requests_total") {
        "request-success-rate".into()
    } else {
        "custom".into()
    }
}

#[async_trait]
impl MetricSource for Fake {
    async fn query(&self, promql: &str, at: DateTime<Utc>) -> Result<Vec<Sample>, AnalysisError> {
        self.asked.lock().unwrap().push((promql.to_string(), at));
        let k = key(promql);
        if Some(at) == self.baseline_at {
            return Ok(self.baseline.get(&k).cloned().unwrap_or_default());
        }
        let mut script = self.script.lock().unwrap();
        let Some((n, answers)) = script.get_mut(&k) else {
            return Ok(vec![]);
        };
        let a = answers[(*n).min(answers.len() - 1)].clone();
        *n += 1;
        Ok(a)
    }
    fn describe(&self) -> String {
        "fake".into()
    }
}

fn wl(ns: &str, name: &str, value: f64) -> Sample {
    Sample {
        labels: [
            ("destination_workload_namespace".to_string(), ns.to_string()),
            ("destination_workload".to_string(), name.to_string()),
        ]
        .into(),
        value,
    }
}

fn fake(rate: Vec<Vec<Sample>>, p99: Vec<Vec<Sample>>) -> Fake {
    let f = Fake::default();
    {
        let mut s = f.script.lock().unwrap();
        s.insert("request-success-rate".into(), (0, rate));
        s.insert("request-duration".into(), (0, p99));
    }
    f
}

fn spec(count: u32, failure_limit: u32) -> AnalysisSpec {
    AnalysisSpec {
        interval: Duration::from_millis(1),
        count,
        failure_limit,
        baseline: false,
        ..AnalysisSpec::default()
    }
}

fn scope() -> WaveScope {
    WaveScope {
        namespaces: vec!["payments".into()],
        workloads: vec!["payments/api".into(), "payments/worker".into()],
        restarted_at: None,
    }
}

#[tokio::test]
async fn healthy_numbers_pass_after_count_measurements() {
    let f = fake(
        vec![vec![
            wl("payments", "api", 100.0),
            wl("payments", "worker", 99.5),
        ]],
        vec![vec![wl("payments", "api", 210.0)]],
    );
    let a = Analysis::new(Arc::new(f), spec(3, 0));
    let j = a.judge(&scope()).await.unwrap();
    assert_eq!(j.verdict, Verdict::Pass, "{}", j.reason);
    // 3 rounds: 2 success-rate series + 1 duration series each.
    assert_eq!(j.measurements.len(), 9);
    assert!(j.measurements.iter().all(|m| m.verdict == Verdict::Pass));
}

#[tokio::test]
async fn failures_are_counted_against_the_failure_limit() {
    // One bad measurement of three is tolerated with failure_limit 1 …
    let answers = vec![
        vec![wl("payments", "api", 97.0)],
        vec![wl("payments", "api", 99.9)],
        vec![wl("payments", "api", 99.9)],
    ];
    let ok_p99 = vec![vec![wl("payments", "api", 100.0)]];
    let a = Analysis::new(Arc::new(fake(answers.clone(), ok_p99.clone())), spec(3, 1));
    assert_eq!(a.judge(&scope()).await.unwrap().verdict, Verdict::Pass);
    // … and fails at once with failure_limit 0, naming the check and the number.
    let a = Analysis::new(Arc::new(fake(answers, ok_p99)), spec(3, 0));
    let j = a.judge(&scope()).await.unwrap();
    assert_eq!(j.verdict, Verdict::Fail);
    assert!(
        j.reason
            .contains("request-success-rate failed 1 of 1 measurement(s)"),
        "{}",
        j.reason
    );
    assert!(
        j.reason.contains("payments/api = 97.00 (min 99)"),
        "{}",
        j.reason
    );
    // Stopped after the first round.
    assert_eq!(
        j.measurements
            .iter()
            .filter(|m| m.check == "request-success-rate")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_slow_p99_fails_the_duration_check() {
    let a = Analysis::new(
        Arc::new(fake(
            vec![vec![wl("payments", "api", 100.0)]],
            vec![vec![wl("payments", "api", 860.0)]],
        )),
        spec(2, 0),
    );
    let j = a.judge(&scope()).await.unwrap();
    assert_eq!(j.verdict, Verdict::Fail);
    assert!(
        j.reason.starts_with("request-duration failed"),
        "{}",
        j.reason
    );
    assert!(j.reason.contains("860.00 (max 500)"), "{}", j.reason);
}

#[tokio::test]
async fn no_data_is_inconclusive_never_a_pass() {
    let a = Analysis::new(Arc::new(fake(vec![vec![]], vec![vec![]])), spec(3, 0));
    let j = a.judge(&scope()).await.unwrap();
    assert_eq!(j.verdict, Verdict::Inconclusive);
    assert!(j.reason.contains("no data"), "{}", j.reason);
    // The first check in order decides a tie, and its query is shown.
    assert!(
        j.reason
            .starts_with("request-success-rate was inconclusive"),
        "{}",
        j.reason
    );
    assert!(j.reason.contains("query sum by ("), "{}", j.reason);
    assert!(j.measurements.iter().all(|m| m.value.is_none()));
}

#[tokio::test]
async fn nan_is_inconclusive_never_a_pass() {
    let a = Analysis::new(
        Arc::new(fake(
            vec![vec![wl("payments", "api", f64::NAN)]],
            vec![vec![wl("payments", "api", 100.0)]],
        )),
        spec(3, 0),
    );
    let j = a.judge(&scope()).await.unwrap();
    assert_eq!(j.verdict, Verdict::Inconclusive);
    assert_eq!(j.measurements[0].value, None);
    // An inconclusive limit tolerates it, like Argo's inconclusiveLimit.
    let a = Analysis::new(
        Arc::new(fake(
            vec![
                vec![wl("payments", "api", f64::NAN)],
                vec![wl("payments", "api", 100.0)],
            ],
            vec![vec![wl("payments", "api", 100.0)]],
        )),
        AnalysisSpec {
            inconclusive_limit: 1,
            ..spec(3, 0)
        },
    );
    assert_eq!(a.judge(&scope()).await.unwrap().verdict, Verdict::Pass);
}

#[tokio::test]
async fn a_relative_baseline_judges_a_workload_against_itself() {
    let restarted = Utc::now() - chrono::Duration::minutes(5);
    let mut f = fake(
        vec![vec![
            wl("payments", "api", 97.9),
            wl("payments", "worker", 97.9),
        ]],
        vec![vec![wl("payments", "api", 100.0)]],
    );
    // api already failed 2 % before the wave; worker did not.
    f.baseline.insert(
        "request-success-rate".into(),
        vec![wl("payments", "api", 98.0), wl("payments", "worker", 100.0)],
    );
    f.baseline_at = Some(restarted);
    let mut checks = default_checks();
    checks[0].relative = Some(0.01);
    let a = Analysis::new(
        Arc::new(f),
        AnalysisSpec {
            checks,
            baseline: true,
            ..spec(1, 0)
        },
    );
    let j = a
        .judge(&WaveScope {
            restarted_at: Some(restarted),
            ..scope()
        })
        .await
        .unwrap();
    let by: BTreeMap<_, _> = j
        .measurements
        .iter()
        .filter(|m| m.check == "request-success-rate")
        .map(|m| (m.series.clone().unwrap(), m))
        .collect();
    let api = by["payments/api"];
    assert_eq!(api.baseline, Some(98.0));
    assert!((api.min.unwrap() - 97.02).abs() < 1e-9, "{:?}", api.min);
    assert_eq!(api.verdict, Verdict::Pass);
    // worker was at 100 %: its bound stays 99, so 97.9 fails.
    assert_eq!(by["payments/worker"].min, Some(99.0));
    assert_eq!(by["payments/worker"].verdict, Verdict::Fail);
    assert_eq!(j.verdict, Verdict::Fail);
}

#[test]
fn templates_get_the_waves_names_as_regexes_and_the_window() {
    let q = render(
        "x{ns=~\"{{ namespace }}\",w=~\"{{workloads}}\"}[{{ interval }}]",
        &WaveScope {
            namespaces: vec!["payments".into(), "a.b".into()],
            workloads: vec!["payments/api".into(), "orders/web\"}".into()],
            restarted_at: None,
        },
        "1m",
    );
    assert_eq!(
        q,
        "x{ns=~\"a\\\\.b|orders|payments\",w=~\"api|web\\\\}\"}[1m]"
    );
    // An empty scope matches everything rather than nothing.
    assert_eq!(render("{{ workloads }}", &WaveScope::default(), "1m"), ".*");
}

#[test]
fn default_checks_are_flaggers_istio_queries_by_workload() {
    let scope = scope();
    let checks = default_checks();
    let rate = render(&checks[0].query, &scope, "1m");
    assert!(rate.contains("istio_requests_total{reporter=\"destination\", destination_workload_namespace=~\"payments\", destination_workload=~\"api|worker\", response_code!~\"5.*\"}[1m]"), "{rate}");
    assert!(rate.ends_with("* 100"));
    assert_eq!(checks[0].min, Some(99.0));
    let p99 = render(&checks[1].query, &scope, "1m");
    assert!(
        p99.starts_with("histogram_quantile(0.99, sum by (le, "),
        "{p99}"
    );
    assert!(p99.contains("istio_request_duration_milliseconds_bucket{reporter=\"destination\""));
    assert_eq!(checks[1].max, Some(500.0));
}

#[test]
fn written_checks_need_a_name_a_query_a_bound_and_known_placeholders() {
    let check = |name: &str, query: &str, min: Option<f64>, max: Option<f64>| Check {
        name: name.into(),
        query: query.into(),
        min,
        max,
        relative: None,
    };
    let ok = check(
        "volume",
        "sum(rate(x{ns=~\"{{ namespace }}\", w=~\"{{workloads}}\"}[{{ interval }}]))",
        Some(1.0),
        None,
    );
    assert_eq!(validate_checks(std::slice::from_ref(&ok)), Ok(()));
    assert_eq!(validate_checks(&default_checks()), Ok(()));
    let cases = [
        (check("", "up", Some(1.0), None), "check 1: give it a name"),
        (
            check("a", " ", Some(1.0), None),
            "check \"a\": give it a PromQL query",
        ),
        (check("a", "up", None, None), "give it a bound"),
        (
            check("a", "up", Some(2.0), Some(1.0)),
            "min 2 is greater than max 1",
        ),
        (
            check("a", "x{{ ns }}", Some(1.0), None),
            "unknown placeholder {{ ns }}",
        ),
        (check("a", "x{{ namespace", Some(1.0), None), "without its"),
    ];
    for (c, want) in cases {
        let err = validate_checks(std::slice::from_ref(&c)).unwrap_err();
        assert!(err.contains(want), "{c:?}: {err}");
    }
    let twice = validate_checks(&[ok.clone(), ok.clone()]).unwrap_err();
    assert!(twice.contains("the name is used twice"), "{twice}");
    // A param's value: the list, or its JSON as --param gives it; unknown fields refused.
    let v = serde_json::to_value(vec![ok.clone()]).unwrap();
    assert_eq!(checks_from_value(&v), Ok(vec![ok.clone()]));
    assert_eq!(
        checks_from_value(&serde_json::Value::String(v.to_string())),
        Ok(vec![ok])
    );
    let typo = serde_json::json!([{"name": "a", "query": "up", "maximum": 1}]);
    assert!(checks_from_value(&typo).unwrap_err().contains("maximum"));
}
