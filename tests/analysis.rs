//! The analysis gate against a real Prometheus scraping the simulator's sidecar metrics
//! (Debian's `prometheus` package; these tests fail, never skip, without it), and the Azure
//! Monitor provider against a loopback stand-in of a workspace's query endpoint.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use asm_canary::analysis::{
    AZURE_MONITOR_SCOPE, Analysis, AnalysisSpec, PrometheusAuth, PrometheusClient, Verdict,
    WaveScope,
};
use asm_canary::azure::{AuthMode, AuthSettings, build_credential, build_http_client};
use base64::Engine;
use common::{TestSim, events, last_event, stderr};
use serde_json::{Value, json};

/// Fast analysis params for the simulator: Prometheus scrapes every second.
const ANALYSIS: &[&str] = &[
    "--param",
    "analysis_interval=1s",
    "--param",
    "analysis_count=2",
    "--param",
    "analysis_window=5s",
    "--param",
    "analysis_timeout=60s",
];

fn spec() -> AnalysisSpec {
    AnalysisSpec {
        window: "5s".into(),
        interval: Duration::from_secs(1),
        count: 2,
        baseline: false,
        ..AnalysisSpec::default()
    }
}

fn payments() -> WaveScope {
    WaveScope {
        namespaces: vec!["payments".into()],
        workloads: vec!["payments/api".into(), "payments/worker".into()],
        restarted_at: None,
    }
}

/// A Prometheus scraping `sim`'s sidecars, once it has their traffic (on a loaded machine a
/// fast upgrade would otherwise be judged before the first scrapes).
async fn scraping(sim: &TestSim) -> asm_canary::analysis::local::LocalPrometheus {
    let prom = common::prometheus::start(&sim.handle.info.metrics_url).await;
    common::prometheus::wait_for(
        &prom,
        "sum(rate(istio_requests_total{reporter=\"destination\"}[5s]))",
        Duration::from_secs(30),
    )
    .await;
    prom
}

async fn upgrade_with_prometheus(sim: &TestSim, url: &str) -> std::process::Output {
    let mut extra = vec![
        "--approve",
        "start",
        "--approve",
        "complete",
        "--prometheus",
        url,
    ];
    extra.extend_from_slice(ANALYSIS);
    sim.upgrade(&extra).await
}

/// Why the analysis failed the run: a wave's judgement inside the canary or restart step
/// (`step_failed`), or the `analysis` step's gate (`gate_failed`).
fn analysis_failure(out: &std::process::Output) -> String {
    let wave = |e: &Value| {
        e["event"] == "step_failed"
            && e["error"]
                .as_str()
                .is_some_and(|t| t.contains("failed its analysis: "))
    };
    let found = events(out)
        .into_iter()
        .find(|e| wave(e) || (e["event"] == "gate_failed" && e["check"] == "analysis"));
    let e = found.unwrap_or_else(|| panic!("no analysis failure; stderr:\n{}", stderr(out)));
    match e["error"].as_str() {
        Some(t) => t.split("failed its analysis: ").nth(1).unwrap().to_string(),
        None => e["reason"].as_str().unwrap().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_workloads_pass_on_real_prometheus() {
    let sim = TestSim::start("healthy").await;
    let prom = common::prometheus::start(&sim.handle.info.metrics_url).await;
    common::prometheus::wait_for(
        &prom,
        "sum(rate(istio_requests_total{reporter=\"destination\"}[5s]))",
        Duration::from_secs(30),
    )
    .await;
    let source = Arc::new(common::prometheus::client(&prom));
    let j = Analysis::new(source, spec())
        .judge(&payments())
        .await
        .unwrap();
    assert_eq!(j.verdict, Verdict::Pass, "{}", j.reason);
    let api = j
        .measurements
        .iter()
        .find(|m| m.check == "request-success-rate" && m.series.as_deref() == Some("payments/api"))
        .expect("a success rate for payments/api");
    assert_eq!(api.value, Some(100.0));
    let p99 = j
        .measurements
        .iter()
        .find(|m| m.check == "request-duration")
        .unwrap();
    assert!(p99.value.unwrap() < 500.0, "{p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_is_inconclusive_on_real_prometheus() {
    let sim = TestSim::start("healthy").await;
    let prom = common::prometheus::start(&sim.handle.info.metrics_url).await;
    common::prometheus::wait_for(&prom, "up", Duration::from_secs(30)).await;
    let source = Arc::new(common::prometheus::client(&prom));
    let j = Analysis::new(source, spec())
        .judge(&WaveScope {
            namespaces: vec!["no-such-namespace".into()],
            workloads: vec!["no-such-namespace/ghost".into()],
            restarted_at: None,
        })
        .await
        .unwrap();
    assert_eq!(j.verdict, Verdict::Inconclusive, "{}", j.reason);
    assert!(j.reason.contains("no data"), "{}", j.reason);
    assert!(
        j.reason.contains("no-such-namespace"),
        "the query is shown: {}",
        j.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_canary_fails_the_gate_with_the_success_rate_and_rolls_back() {
    let sim = TestSim::start("bad-canary").await;
    let prom = scraping(&sim).await;
    let out = upgrade_with_prometheus(&sim, &prom.url).await;
    assert_eq!(out.status.code(), Some(3), "stderr:\n{}", stderr(&out));
    let reason = analysis_failure(&out);
    assert!(
        reason.starts_with("request-success-rate failed"),
        "{reason}"
    );
    assert!(reason.contains("payments/api = 9"), "{reason}");
    // The measurement that failed is in the events, with its query and number.
    let bad: Vec<Value> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "measurement" && e["verdict"] == "fail")
        .collect();
    assert!(!bad.is_empty());
    assert_eq!(bad[0]["name"], "request-success-rate");
    assert_eq!(bad[0]["series"], "payments/api");
    assert!(bad[0]["value"].as_f64().unwrap() < 99.0, "{}", bad[0]);
    assert_eq!(bad[0]["min"], json!(99.0));
    assert!(
        bad[0]["query"]
            .as_str()
            .unwrap()
            .contains("istio_requests_total{reporter=\"destination\"")
    );
    assert_eq!(last_event(&out)["outcome"], "rolled_back");
    assert_eq!(sim.revisions().await, vec!["asm-1-27".to_string()]);
}

/// The canary wave is judged on the application's health before the tag moves: with
/// `payments` as the canary, bad-canary's 5% of 503s stop the run at step `canary`; nothing
/// else ever ran the target's proxy, and the rollback puts every pod back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_canary_wave_is_stopped_by_the_analysis_before_the_tag_moves() {
    let sim = TestSim::start("bad-canary").await;
    let prom = scraping(&sim).await;
    let before = sim.pods_by_revision().await;
    let mut extra = vec!["--canary-namespaces", "payments", "--prometheus", &prom.url];
    extra.extend_from_slice(&["--approve", "start", "--approve", "complete"]);
    extra.extend_from_slice(ANALYSIS);
    let out = sim.upgrade(&extra).await;
    assert_eq!(out.status.code(), Some(3), "stderr:\n{}", stderr(&out));
    let failed: Vec<Value> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "step_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["step"], "canary", "{failed:?}");
    let reason = analysis_failure(&out);
    assert!(reason.contains("payments/api = 9"), "{reason}");
    let started = |step: &str| {
        events(&out)
            .iter()
            .any(|e| e["event"] == "step_started" && e["step"] == step)
    };
    assert!(
        !started("repoint-tag") && !started("restart"),
        "the tag never moved"
    );
    assert!(
        events(&out)
            .iter()
            .all(|e| e["event"] != "side_effect" || e["kind"] != "tag-move"),
        "no tag move journaled"
    );
    assert_eq!(last_event(&out)["outcome"], "rolled_back");
    assert_eq!(sim.revisions().await, vec!["asm-1-27".to_string()]);
    assert_eq!(sim.pods_by_revision().await, before);
}

/// As a user first meets it: `demo --scenario bad-canary` with a Prometheus on PATH stops in
/// the canary wave — `payments`, chosen by its `asm-canary/canary=true` label — on the success
/// rate, and rolls back: the tag never moved, no other wave ever restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_bad_canary_stops_in_the_canary_wave_chosen_by_its_label() {
    common::prometheus::require().await;
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
        .args([
            "demo",
            "--scenario",
            "bad-canary",
            "--unattended",
            "--output",
            "json",
        ])
        .current_dir(dir.path())
        .env_remove("ASM_CANARY_LOG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(3), "stderr:\n{}", stderr(&out));
    let all = events(&out);
    let chosen = all.iter().any(|e| {
        e["event"] == "message"
            && e["text"].as_str().is_some_and(|m| {
                m.starts_with(
                    "canary: payments (chosen by the namespace label asm-canary/canary=true)",
                )
            })
    });
    assert!(chosen, "stderr:\n{}", stderr(&out));
    let failed: Vec<&Value> = all.iter().filter(|e| e["event"] == "step_failed").collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["step"], "canary", "{failed:?}");
    let reason = analysis_failure(&out);
    assert!(
        reason.starts_with("request-success-rate failed"),
        "{reason}"
    );
    assert!(reason.contains("payments/api = 9"), "{reason}");
    let started = |step: &str| {
        all.iter()
            .any(|e| e["event"] == "step_started" && e["step"] == step)
    };
    assert!(
        !started("repoint-tag") && !started("restart"),
        "only the canary wave ran"
    );
    assert_eq!(last_event(&out)["outcome"], "rolled_back");
}

/// Without `--state`, the demo's checkpoint and report live in a temporary directory removed at
/// the end. With `--output json` the report's path was printed on stderr and nothing said it was
/// gone: the note follows the path in every output mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_in_json_says_its_printed_report_path_was_removed() {
    common::prometheus::require().await;
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_asm-canary"))
        .args(["demo", "--scenario", "bad-canary", "--unattended"])
        .args(["--output", "json"])
        .current_dir(dir.path())
        .env_remove("ASM_CANARY_LOG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(3), "stderr:\n{}", stderr(&out));
    let err = stderr(&out);
    let report = err
        .lines()
        .position(|l| l.starts_with("report: "))
        .expect("the report's path is printed");
    let path = err
        .lines()
        .nth(report)
        .unwrap()
        .trim_start_matches("report: ");
    assert!(!std::path::Path::new(path).exists(), "{path} was removed");
    assert!(
        err.lines()
            .skip(report + 1)
            .any(|l| l.contains("in a temporary directory, removed now")
                && l.contains("--state FILE")),
        "stderr:\n{err}"
    );
}

/// `--analysis-checks FILE`: the user's own PromQL checks judge every wave instead of the
/// default two. A request-volume ceiling the healthy canary's traffic exceeds fails the canary
/// wave under the custom check's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_checks_from_a_file_judge_the_canary_wave() {
    let sim = TestSim::start("healthy").await;
    let prom = scraping(&sim).await;
    let file = sim.dir.path().join("checks.yaml");
    std::fs::write(
        &file,
        "- name: request-volume\n  query: sum(rate(istio_requests_total{reporter=\"destination\", destination_workload_namespace=~\"{{ namespace }}\"}[{{ interval }}]))\n  max: 0.001\n",
    )
    .unwrap();
    let mut extra = vec!["--analysis-checks", file.to_str().unwrap()];
    extra.extend_from_slice(&["--prometheus", &prom.url, "--approve", "start"]);
    extra.extend_from_slice(ANALYSIS);
    let out = sim.upgrade(&extra).await;
    assert_eq!(out.status.code(), Some(3), "stderr:\n{}", stderr(&out));
    let reason = analysis_failure(&out);
    assert!(reason.starts_with("request-volume failed"), "{reason}");
    let failed: Vec<Value> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "step_failed")
        .collect();
    assert_eq!(failed[0]["step"], "canary", "{failed:?}");
    let names: std::collections::BTreeSet<String> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "measurement")
        .map(|e| e["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["request-volume"]
    );
}

/// A bad checks file is refused before anything is written, saying where and what.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_analysis_checks_file_is_refused_with_its_place() {
    let sim = TestSim::start("healthy").await;
    let file = sim.dir.path().join("checks.yaml");
    for (text, want) in [
        ("- name: a\n  query: up\n  maximum: 1\n", "checks.yaml:3:"),
        (
            "- name: a\n  query: up{x=\"{{ ns }}\"}\n  max: 1\n",
            "unknown placeholder {{ ns }}",
        ),
        ("- name: a\n  query: up\n", "give it a bound"),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = sim
            .upgrade(&["--analysis-checks", file.to_str().unwrap()])
            .await;
        assert_eq!(out.status.code(), Some(2), "{text}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{want}: {}", stderr(&out));
        assert!(
            !sim.state_file().exists(),
            "no checkpoint for a refused run"
        );
    }
    assert_eq!(sim.revisions().await, vec!["asm-1-27".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_canary_fails_the_gate_on_p99() {
    let sim = TestSim::start("slow-canary").await;
    let prom = scraping(&sim).await;
    let out = upgrade_with_prometheus(&sim, &prom.url).await;
    assert_eq!(out.status.code(), Some(3), "stderr:\n{}", stderr(&out));
    let reason = analysis_failure(&out);
    assert!(reason.starts_with("request-duration failed"), "{reason}");
    assert!(reason.contains("max 500"), "{reason}");
    // The wave is judged soon after its restart, over a window that may still hold the old
    // pods' requests: the p99 is above the bound, not yet the full ×5.
    let p99: f64 = reason
        .split("payments/api = ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no p99 of payments/api in {reason}"));
    assert!(p99 > 500.0, "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_upgrade_completes_with_the_gate_on() {
    let sim = TestSim::start("healthy").await;
    let prom = scraping(&sim).await;
    let out = upgrade_with_prometheus(&sim, &prom.url).await;
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    assert!(stderr(&out).contains("analysis gate on: Prometheus http://127.0.0.1:"));
    let passed = events(&out)
        .into_iter()
        .any(|e| e["event"] == "gate_passed" && e["check"] == "analysis");
    assert!(passed, "stderr:\n{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_pauses_the_run_with_the_query_shown() {
    let sim = TestSim::start("healthy").await;
    // A Prometheus whose only target answers nothing: every query is empty.
    let prom = common::prometheus::start("http://127.0.0.1:9/metrics").await;
    let out = upgrade_with_prometheus(&sim, &prom.url).await;
    assert_eq!(out.status.code(), Some(4), "stderr:\n{}", stderr(&out));
    let last = last_event(&out);
    assert_eq!(last["outcome"], "paused");
    let reason = last["reason"].as_str().unwrap();
    assert!(reason.contains("inconclusive"), "{reason}");
    assert!(reason.contains("query sum by ("), "{reason}");
    // The canary wave's judgement was inconclusive: the canary step paused, nothing failed.
    assert!(
        reason.contains("step \"canary\" was inconclusive"),
        "{reason}"
    );
    assert!(
        !events(&out)
            .iter()
            .any(|e| e["event"] == "step_failed" || e["event"] == "rollback_started"),
        "stderr:\n{}",
        stderr(&out)
    );
    // Nothing was rolled back: the canary is still installed, waiting for a person.
    assert_eq!(sim.revisions().await.len(), 2);
    // A resume without --prometheus does not pass the gate as "off": it pauses again and
    // names the Prometheus the run judges on.
    let again = sim.resume(&[]).await;
    assert_eq!(again.status.code(), Some(4), "stderr:\n{}", stderr(&again));
    let reason = last_event(&again)["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains(&format!("resume with --prometheus {}", prom.url)),
        "{reason}"
    );
}

#[test]
fn the_analysis_gate_is_off_and_says_so_without_prometheus() {
    assert!(asm_canary::steps::analysis::GATE_OFF.contains("analysis gate off"));
    assert!(asm_canary::steps::analysis::GATE_OFF.contains("--prometheus URL"));
}

/// The stand-in of an Azure Monitor workspace's query endpoint: records the Authorization
/// header of every query, answers one sample.
async fn query_endpoint(seen: Arc<Mutex<Vec<String>>>) -> String {
    use axum::http::HeaderMap;
    let app = axum::Router::new().route(
        "/api/v1/query",
        axum::routing::post(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                seen.lock().unwrap().push(auth);
                axum::Json(json!({
                    "status": "success",
                    "data": {"resultType": "vector", "result": [
                        {"metric": {"destination_workload_namespace": "payments", "destination_workload": "api"},
                         "value": [1700000000.0, "99.9"]}
                    ]}
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_monitor_provider_sends_an_entra_token_for_the_prometheus_scope() {
    let sim = TestSim::start("healthy").await;
    let info = &sim.handle.info;
    let http = build_http_client(Some(("sim CA", info.ca_pem.as_bytes()))).unwrap();
    let settings = AuthSettings {
        mode: AuthMode::ClientSecret,
        tenant_id: Some(info.tenant_id.clone()),
        client_id: Some(info.client_id.clone()),
        client_secret: Some(info.client_secret.clone()),
        authority_host: Some(info.authority_host.clone()),
    };
    let (credential, _) = build_credential(&settings, &http, &|_: &str| None).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let url = query_endpoint(seen.clone()).await;
    let client =
        PrometheusClient::new(&url, PrometheusAuth::AzureMonitor(credential), http).unwrap();
    let samples = client.query("up", chrono::Utc::now()).await.unwrap();
    assert_eq!(samples[0].value, 99.9);
    let auth = seen.lock().unwrap()[0].clone();
    let token = auth.strip_prefix("Bearer ").expect("a bearer token");
    // The token the simulator's Entra endpoint minted names its audience: the scope asked.
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        format!("{}/.default", claims["aud"].as_str().unwrap()),
        AZURE_MONITOR_SCOPE
    );
}

/// The egress series of `registry-only` reach a real Prometheus as Istio's do: the blackholed
/// calls of payments/api to api.stripe.com are queryable by `destination_service_name`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_sees_blackholed_egress_as_istio_reports_it() {
    common::prometheus::require().await;
    let sim = TestSim::start("registry-only").await;
    let prom = common::prometheus::start(&sim.handle.info.metrics_url).await;
    common::prometheus::wait_for(
        &prom,
        "sum(istio_requests_total{reporter=\"source\",source_workload=\"api\",source_workload_namespace=\"payments\",destination_service=\"api.stripe.com\",destination_service_name=\"BlackHoleCluster\",response_code=\"502\"})",
        Duration::from_secs(30),
    )
    .await;
}
